//! The agent's unit tests, proven hermetic: the library's test binary runs as
//! `nobody`, with no capabilities, in a network namespace of its own (loopback
//! only) and with an empty PATH, so a test that needs root, the network or a
//! `redis-server` fails here instead of passing by luck on a developer's machine.
//! What needs those belongs in tests/ (the root integration tests).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::process;

/// The unprivileged user and group the tests run as.
const NOBODY: u32 = 65534;

/// Tests the ordinary unit-test run covers that cannot run as `nobody` here: the
/// first reads the repository's committed packaging files, which `nobody` may not
/// reach in a clone under /root; the other two read a child's `/proc/PID/fd`
/// after `prlimit`, which an unprivileged parent is not reliably allowed to here
/// (the agent keeps CAP_SYS_PTRACE for such reads).
const SKIPPED: &[&str] = &[
    "committed_packaging_files_are_up_to_date",
    "snapshot_follows_the_process_holding_the_listener",
    "open_fds_and_nofile_limit_of_a_child",
];

/// Builds the library's unit-test binary and returns its path.
fn build_lib_tests() -> anyhow::Result<PathBuf> {
    let mut cmd = process::cargo();
    cmd.args([
        "test",
        "-p",
        "connwatch",
        "--lib",
        "--no-run",
        "--message-format=json",
    ]);
    let out = cmd.output().context("cargo test --no-run")?;
    if !out.status.success() {
        bail!(
            "building the unit tests failed ({}): {}",
            process::describe_status(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    executable(&String::from_utf8_lossy(&out.stdout))
        .context("cargo printed no test executable for the connwatch library")
}

/// The `"executable"` of the connwatch library's test artifact in cargo's JSON
/// messages (one object per line).
fn executable(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter(|l| l.contains(r#""reason":"compiler-artifact""#))
        .filter(|l| l.contains(r#""name":"connwatch""#) && l.contains(r#""kind":["lib"]"#))
        .find_map(|l| {
            let start = l.find(r#""executable":""#)? + r#""executable":""#.len();
            let end = start + l[start..].find('"')?;
            Some(PathBuf::from(&l[start..end]))
        })
}

/// Runs the unit tests as described in the module doc. Needs root (to make the
/// namespace and to change user).
pub fn run() -> anyhow::Result<()> {
    let bin = build_lib_tests()?;
    let dir = tempdir()?;
    let copy = dir.join("connwatch-unit-tests");
    fs::copy(&bin, &copy).with_context(|| format!("copying {}", bin.display()))?;
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))?;
    let mut script = String::from(
        "ip link set lo up && cd \"$1\" && shift && exec setpriv --reuid=$0 --regid=$0 \
         --clear-groups --inh-caps=-all --bounding-set=-all env -i PATH=/nonexistent \"$@\"",
    );
    script.push('\n');
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "--", "sh", "-c", &script, &NOBODY.to_string()]);
    cmd.arg(&dir).arg(&copy).arg("-q");
    for name in SKIPPED {
        cmd.args(["--skip", name]);
    }
    let result = process::run_checked(&mut cmd);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = Path::new("/tmp").join(format!("connwatch-hermetic-{}", std::process::id()));
    // A fresh directory (create_dir fails on anything already there, a planted
    // symlink included), readable and searchable by `nobody`, writable by root only.
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_test_executable_is_found_in_cargo_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"connwatch"},"executable":"/t/debug/deps/connwatch-bin"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"connwatch"},"profile":{},"executable":"/t/debug/deps/connwatch-0abc"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            executable(messages),
            Some(PathBuf::from("/t/debug/deps/connwatch-0abc"))
        );
        assert_eq!(executable(r#"{"reason":"build-finished"}"#), None);
    }
}
