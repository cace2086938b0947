//! `cargo xtask test`: unit tests, then the root integration tests, then the smoke
//! set inside a VM booting Debian's 6.1 kernel; every part runs even when an
//! earlier one failed, and a summary says what ran.

use std::process::{Command, ExitCode};

use crate::process::{self, display};

/// The package holding the root integration tests (tests/).
const INTEGRATION_PACKAGE: &str = "connwatch-tests";
/// The kernel programs only build for the BPF target (agent/build.rs does that).
const BPF_PACKAGE: &str = "connwatch-ebpf";
/// The records and constants the kernel programs and userspace share (no_std).
const COMMON_PACKAGE: &str = "connwatch-common";
/// The kernel series the VM part boots (Debian 12's).
const VM_KERNEL: &str = "6.1";

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed(String),
    Skipped(&'static str),
}

struct Part {
    name: &'static str,
    command: String,
    outcome: Outcome,
}

pub fn run() -> anyhow::Result<ExitCode> {
    let mut parts = Vec::new();

    // Unit tests of every package except the BPF programs and the integration
    // tests, which need root, share kernel state and run serially below.
    let mut unit = process::cargo();
    unit.args(["test", "--workspace", "--no-fail-fast"]);
    unit.args(["--exclude", BPF_PACKAGE, "--exclude", INTEGRATION_PACKAGE]);
    parts.push(run_part("unit tests", unit));

    // The library's unit tests again, as nobody in a network namespace of their own
    // with no PATH: proof that they need no root, no network and no redis-server.
    if process::is_root() {
        let outcome = match crate::hermetic::run() {
            Ok(()) => Outcome::Passed,
            Err(e) => Outcome::Failed(format!("{e:#}")),
        };
        parts.push(Part {
            name: "hermetic unit tests",
            command: "connwatch lib tests as nobody, unshare --net, PATH=/nonexistent".into(),
            outcome,
        });
    } else {
        parts.push(Part {
            name: "hermetic unit tests",
            command: String::new(),
            outcome: Outcome::Skipped("needs root to drop to nobody in a new namespace"),
        });
    }

    // The shared record layouts as the kernel programs compile them (without the
    // `user` feature the unit tests above build them with).
    let mut layouts = process::cargo();
    layouts.args(["test", "-p", COMMON_PACKAGE]);
    parts.push(run_part("record layouts", layouts));

    // The integration tests run the connwatch binary; build it first so a build
    // failure reads as one.
    let mut build = process::cargo();
    build.args(["build", "-p", "connwatch"]);
    let built = run_part("build connwatch", build);
    let build_ok = built.outcome == Outcome::Passed;
    parts.push(built);

    let mut integration = process::cargo();
    // Every suite runs even when one fails: a failure does not hide the others'.
    integration.args([
        "test",
        "-p",
        INTEGRATION_PACKAGE,
        "--no-fail-fast",
        "--",
        "--test-threads=1",
    ]);
    if build_ok {
        parts.push(run_part("integration tests", integration));
    } else {
        parts.push(Part {
            name: "integration tests",
            command: display(&integration),
            outcome: Outcome::Skipped("connwatch did not build"),
        });
    }

    // Last: the smoke set on Debian 12's own kernel, in qemu (it builds the release
    // binary itself).
    let vm_command = format!("cargo xtask vm-test --kernel {VM_KERNEL}");
    let outcome = if build_ok {
        println!("\ntest: vm test: {vm_command}");
        let options = crate::vm::Options {
            series: VM_KERNEL.to_owned(),
            accel: crate::vm::Accel::Auto,
        };
        match crate::vm::run(&options) {
            Ok(()) => Outcome::Passed,
            Err(e) => Outcome::Failed(format!("{e:#}")),
        }
    } else {
        Outcome::Skipped("connwatch did not build")
    };
    parts.push(Part {
        name: "vm test (6.1)",
        command: vm_command,
        outcome,
    });

    println!("\ntest summary:");
    for part in &parts {
        let outcome = match &part.outcome {
            Outcome::Passed => "passed".to_owned(),
            Outcome::Failed(why) => format!("FAILED ({why})"),
            Outcome::Skipped(why) => format!("skipped ({why})"),
        };
        println!("  {:<18} {outcome:<24} {}", part.name, part.command);
    }
    let all_passed = parts.iter().all(|p| p.outcome == Outcome::Passed);
    println!("test: {}", if all_passed { "all passed" } else { "FAILED" });
    Ok(if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_part(name: &'static str, mut cmd: Command) -> Part {
    let command = display(&cmd);
    println!("\ntest: {name}: {command}");
    let outcome = match process::run_checked(&mut cmd) {
        Ok(()) => Outcome::Passed,
        Err(e) => Outcome::Failed(format!("{e:#}")),
    };
    Part {
        name,
        command,
        outcome,
    }
}
