//! `/init` of the initramfs `cargo xtask vm-test` boots: sets the machine up as
//! an init must (proc, sys, dev, loopback, the sock_diag modules), runs a smoke
//! set of connwatch cases against a real redis-server, prints each as
//! `PASS`/`FAIL` and a summary line (see [`protocol`]), prints the format files
//! of the tracepoints connwatch attaches to, and powers the machine off.
//!
//! Run as an ordinary root process (not PID 1) it skips the init duties and the
//! power-off, so the same cases can be compared on the host.

mod cases;
mod protocol;
mod system;

use std::io::Write as _;
use std::panic;
use std::process::ExitCode;
use std::time::Instant;

/// The tracepoints connwatch attaches to (README, *Requirements*).
const TRACEPOINTS: [&str; 6] = [
    "tcp/tcp_send_reset",
    "skb/kfree_skb",
    "sock/inet_sock_set_state",
    "tcp/tcp_retransmit_synack",
    "syscalls/sys_exit_accept4",
    "syscalls/sys_exit_accept",
];
const TRACEFS: &str = "/sys/kernel/tracing";

fn main() -> ExitCode {
    let is_init = std::process::id() == 1;
    say(protocol::INIT);
    let failed = if is_init {
        match init() {
            Ok(()) => run_cases(),
            Err(e) => {
                say(&format!("connwatch-vm: init failed: {e}"));
                1
            }
        }
    } else {
        run_cases()
    };
    if is_init {
        print_formats();
        trace_a_refusal();
        say(protocol::DONE);
        let err = system::power_off();
        say(&format!("connwatch-vm: power-off failed: {err}"));
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One line on the console, flushed at once (the power-off does not wait).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn init() -> Result<(), String> {
    system::mount_pseudo_filesystems()?;
    say(&format!(
        "connwatch-vm: kernel {}, init at {:.2} s uptime",
        system::kernel_release(),
        system::uptime().unwrap_or(f64::NAN)
    ));
    system::loopback_up()?;
    let modules = system::load_modules()?;
    say(&format!(
        "connwatch-vm: lo up; modules loaded: {}",
        if modules.is_empty() {
            "none".to_owned()
        } else {
            modules.join(", ")
        }
    ));
    // SAFETY: no other thread exists yet, so nothing reads the environment while
    // it changes.
    unsafe {
        std::env::set_var("PATH", "/usr/bin:/usr/sbin:/bin:/sbin");
        std::env::set_var("TMPDIR", "/tmp");
        std::env::set_var("CONNWATCH_BIN", "/usr/bin/connwatch");
        std::env::set_var("HOME", "/tmp");
    }
    Ok(())
}

/// Runs every case; a panic (the fixtures' way to fail) is that case's FAIL.
/// Returns how many failed.
fn run_cases() -> usize {
    cases::note_tracefs_before(std::path::Path::new(TRACEFS).join("events").is_dir());
    // The fixtures fail by panicking: the case's FAIL line carries the message, so
    // the default hook's copy would only repeat it. Other threads' panics (a
    // fixture's reader thread) are shown, as they explain a later failure.
    panic::set_hook(Box::new(|info| {
        if std::thread::current().name() != Some("main") {
            say(&format!("connwatch-vm: a thread panicked: {info}"));
        }
    }));
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in cases::ALL {
        let started = Instant::now();
        match panic::catch_unwind(case) {
            Ok(note) => {
                passed += 1;
                say(&protocol::pass(name, started.elapsed(), note.as_deref()));
            }
            Err(payload) => {
                failed += 1;
                let why = payload
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| payload.downcast_ref::<&str>().copied())
                    .unwrap_or("panicked");
                for line in protocol::fail(name, why) {
                    say(&line);
                }
            }
        }
    }
    let _ = panic::take_hook();
    say(&protocol::summary(passed, failed));
    failed
}

/// Prints the format file of each tracepoint connwatch attaches to, mounting
/// tracefs first if connwatch did not leave it mounted.
fn print_formats() {
    let events = std::path::Path::new(TRACEFS).join("events");
    if !events.is_dir() {
        let rc = {
            let (s, t) = (c"tracefs", c"/sys/kernel/tracing");
            // SAFETY: NUL-terminated literals; no data argument.
            unsafe { libc::mount(s.as_ptr(), t.as_ptr(), s.as_ptr(), 0, std::ptr::null()) }
        };
        if rc != 0 {
            say(&format!(
                "connwatch-vm: mount tracefs: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    for tracepoint in TRACEPOINTS {
        let path = events.join(tracepoint).join("format");
        say(&format!("{}{}", protocol::FORMAT_BEGIN, path.display()));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines() {
                    say(line);
                }
            }
            Err(e) => say(&format!("(unreadable: {e})")),
        }
        say(protocol::FORMAT_END);
    }
}

/// Whether this kernel fires tcp:tcp_send_reset for the RST that refuses a
/// connection to a port nothing listens on (the record connwatch counts refusals
/// from): the tracepoint enabled in tracefs, one refused connect, the records shown.
fn trace_a_refusal() {
    let base = std::path::Path::new(TRACEFS);
    let enable = base.join("events/tcp/tcp_send_reset/enable");
    let set = |path: &std::path::Path, value: &str| {
        std::fs::write(path, value)
            .map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
    };
    let result = (|| -> Result<Vec<String>, String> {
        set(&base.join("trace"), "")?;
        set(&enable, "1")?;
        let port = connwatch_tests::free_port();
        let refused = std::net::TcpStream::connect(("127.0.0.1", port))
            .err()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
        std::thread::sleep(std::time::Duration::from_millis(200));
        set(&enable, "0")?;
        let trace = std::fs::read_to_string(base.join("trace"))
            .map_err(|e| format!("reading trace: {e}"))?;
        let mut lines = vec![format!(
            "connwatch-vm: tcp_send_reset on a refused connect to 127.0.0.1:{port} (refused: {refused}): {} record(s)",
            trace.lines().filter(|l| !l.starts_with('#')).count()
        )];
        lines.extend(
            trace
                .lines()
                .filter(|l| !l.starts_with('#'))
                .take(5)
                .map(|l| format!("  {}", l.trim())),
        );
        Ok(lines)
    })();
    match result {
        Ok(lines) => lines.iter().for_each(|l| say(l)),
        Err(e) => say(&format!("connwatch-vm: tracing a refusal failed: {e}")),
    }
}
