//! Running child processes, locating the workspace, and Ctrl-C handling.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};

/// The workspace root: xtask lives in `<root>/xtask`.
pub fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// The cargo that runs us (`cargo xtask` sets `CARGO`), so builds use the same toolchain.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(repo_root());
    cmd
}

/// Where cargo puts build output: `CARGO_TARGET_DIR` if set, else `<root>/target`.
pub fn target_dir() -> PathBuf {
    let root = repo_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// "exit status 100" or "killed by signal 9": short enough for a one-line error.
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// `program arg arg ...` for messages.
pub fn display(cmd: &Command) -> String {
    // `cargo`, not /root/.rustup/toolchains/…/bin/cargo.
    let program = Path::new(cmd.get_program());
    let shown = match program.file_name() {
        Some(name) if name == "cargo" => name,
        _ => program.as_os_str(),
    };
    let mut parts = vec![shown.to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs a command with inherited stdout/stderr (stdin closed: CI has none) and
/// fails unless it exits with status 0.
pub fn run_checked(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| spawn_error(cmd.get_program(), e))?;
    if !status.success() {
        bail!("{}", describe_status(status));
    }
    Ok(())
}

/// Runs a command for its output. `Ok(None)` when the program does not exist.
pub fn query(program: &str, args: &[&str]) -> anyhow::Result<Option<Output>> {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => Ok(Some(out)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(spawn_error(OsStr::new(program), e)),
    }
}

fn spawn_error(program: &OsStr, e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::NotFound {
        anyhow::anyhow!("{} not found on PATH", program.to_string_lossy())
    } else {
        anyhow::anyhow!("cannot start {}: {e}", program.to_string_lossy())
    }
}

/// `cargo build -p connwatch [--release]`; agent/build.rs builds the BPF object.
pub fn build_agent(release: bool) -> anyhow::Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "connwatch"]);
    if release {
        cmd.arg("--release");
    }
    let shown = display(&cmd);
    eprintln!("build: {shown}");
    run_checked(&mut cmd).with_context(|| format!("build failed: {shown}"))
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT/SIGTERM set a flag instead of killing xtask, so the demo can
/// stop its traffic, kill its redis-server and remove its temp dir. Children get the
/// default dispositions back at exec, so Ctrl-C still reaches connwatch directly.
pub fn catch_interrupts() -> anyhow::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: an all-zero sigaction is a valid value (empty mask, no flags) that
        // we fill in before use; the handler only stores to an atomic.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: `action.sa_mask` is a valid sigset_t owned by us.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: valid signal number, valid pointer to an initialised sigaction, and a
        // null old-action pointer, which sigaction(2) allows.
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error())
                .context("installing the SIGINT/SIGTERM handler");
        }
    }
    Ok(())
}

/// Whether SIGINT/SIGTERM arrived since [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Whether we run as root (apt-get and the BPF programs need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    #[test]
    fn statuses_read_as_one_short_phrase() {
        assert_eq!(
            describe_status(ExitStatus::from_raw(100 << 8)),
            "exit status 100"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(9)),
            "killed by signal 9"
        );
    }

    #[test]
    fn failing_command_reports_its_status() {
        let err = run_checked(Command::new("sh").args(["-c", "exit 3"])).unwrap_err();
        assert_eq!(format!("{err:#}"), "exit status 3");
    }

    #[test]
    fn missing_program_is_named() {
        let err = run_checked(&mut Command::new("connwatch-no-such-program")).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "connwatch-no-such-program not found on PATH"
        );
        assert!(query("connwatch-no-such-program", &[]).unwrap().is_none());
    }

    #[test]
    fn repo_root_holds_the_workspace_manifest() {
        assert!(repo_root().join("Cargo.toml").is_file());
        assert!(repo_root().join("xtask").is_dir());
    }
}
