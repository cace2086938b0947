//! `cargo xtask vm-test [--kernel 6.1]`: boots Debian's cloud kernel of that
//! series in qemu with an initramfs holding the release `connwatch`,
//! `redis-server` and the guest runner (vm-guest/), which runs a smoke set of
//! cases as `/init` and powers off. Passes when the guest printed a summary line
//! and every case passed.
//!
//! Everything it fetches or makes stays under `target/vm/`: the kernel package
//! and its unpacked image (reused by later runs), the initramfs, the console log
//! and the tracepoint format files the guest printed.

mod console;
mod cpio;
mod initrd;
mod kernel;
mod qemu;

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

pub use qemu::Accel;

use crate::process::{self, display, run_checked};

/// The guest runner's package (vm-guest/) and binary.
const GUEST_PACKAGE: &str = "connwatch-vm-guest";
/// KVM that works reaches init in about a second; one that hangs never does.
const KVM_INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// TCG reaches init in a few seconds here.
const TCG_INIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The whole boot, cases included.
const RUN_TIMEOUT: Duration = Duration::from_secs(360);

pub struct Options {
    pub series: String,
    pub accel: Accel,
}

fn say(message: &str) {
    eprintln!("vm-test: {message}");
}

/// Runs the VM test; `Err` is one line saying why it failed.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    kernel::check_series(&options.series)?;
    let vm_dir = process::target_dir().join("vm");
    fs::create_dir_all(&vm_dir).with_context(|| format!("creating {}", vm_dir.display()))?;

    // The kernel first: a series apt does not offer fails before minutes of builds.
    let kernel = kernel::ensure(&vm_dir, &options.series)?;
    process::build_agent(true)?;
    let mut guest_build = process::cargo();
    guest_build.args(["build", "--release", "-p", GUEST_PACKAGE]);
    let shown = display(&guest_build);
    say(&shown);
    run_checked(&mut guest_build).with_context(|| format!("build failed: {shown}"))?;
    let release_dir = process::target_dir().join("release");

    let initrd_path = vm_dir.join(format!("initrd-{}.cpio", kernel.release));
    let size = initrd::build(
        &initrd::Inputs {
            guest: &release_dir.join(GUEST_PACKAGE),
            connwatch: &release_dir.join("connwatch"),
            modules: &kernel.modules,
        },
        &initrd_path,
    )
    .context("building the initramfs")?;
    say(&format!(
        "initramfs {} ({:.1} MB)",
        initrd_path.display(),
        size as f64 / 1e6
    ));
    let prepared = started.elapsed();

    let log_path = vm_dir.join(format!("console-{}.log", kernel.release));
    let mut log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let machine = qemu::Machine {
        vmlinuz: &kernel.vmlinuz,
        initrd: &initrd_path,
    };
    let try_kvm = match options.accel {
        Accel::Kvm => true,
        Accel::Tcg => false,
        Accel::Auto => qemu::kvm_usable(),
    };
    let mut boot = None;
    let mut accel = "tcg";
    if try_kvm {
        let cmd = qemu::command(&machine, true);
        say(&format!("booting with KVM: {}", display(&cmd)));
        let kvm = qemu::boot(cmd, KVM_INIT_TIMEOUT, RUN_TIMEOUT, &mut log)?;
        // Auto falls back to TCG whenever the guest never reached init under KVM:
        // it hung (no init line in time) or qemu itself failed (a host whose KVM
        // refuses the CPU's MSRs aborts qemu before the guest runs).
        match (&kvm.end, options.accel) {
            (qemu::End::NoInit(after), Accel::Auto) => say(&format!(
                "KVM: no init line within {after:?}; booting with TCG instead{}",
                qemu_error(&kvm.stderr)
            )),
            (qemu::End::Exited(how), Accel::Auto) if kvm.init_after.is_none() => say(&format!(
                "KVM: qemu {how} before the guest's init; booting with TCG instead{}",
                qemu_error(&kvm.stderr)
            )),
            _ => {
                accel = "kvm";
                boot = Some(kvm);
            }
        }
    }
    let boot = match boot {
        Some(boot) => boot,
        None => {
            let cmd = qemu::command(&machine, false);
            say(&format!("booting with TCG: {}", display(&cmd)));
            qemu::boot(cmd, TCG_INIT_TIMEOUT, RUN_TIMEOUT, &mut log)?
        }
    };

    let console = console::parse(&boot.lines);
    let formats_path = vm_dir.join(format!("tracepoint-formats-{}.txt", kernel.release));
    if !console.formats.is_empty() {
        let text: String = console
            .formats
            .iter()
            .map(|(path, text)| format!("== {path}\n{text}\n"))
            .collect();
        fs::write(&formats_path, text)
            .with_context(|| format!("writing {}", formats_path.display()))?;
    }

    println!("\nvm-test summary ({}, {accel}):", kernel.release);
    for (name, why) in &console.cases {
        match why {
            None => println!("  PASS {name}"),
            Some(why) => println!("  FAIL {name}: {why}"),
        }
    }
    println!(
        "  prepare (builds, kernel, initramfs) {:.1} s; qemu start to init {}; VM run {:.1} s; total {:.1} s",
        prepared.as_secs_f64(),
        boot.init_after
            .map_or("never".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
        boot.took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!("  console log: {}", log_path.display());
    if !console.formats.is_empty() {
        println!("  tracepoint formats: {}", formats_path.display());
    }

    let kernel_name = &kernel.release;
    let how_it_ended = match &boot.end {
        qemu::End::Exited(status) => format!("qemu exited ({status})"),
        qemu::End::NoInit(after) => {
            format!("the guest printed no init line within {after:?}; qemu killed")
        }
        qemu::End::TimedOut(after) => format!("the VM ran over {after:?}; qemu killed"),
    };
    match console.verdict() {
        Ok(passed) => {
            if !matches!(boot.end, qemu::End::Exited(_)) {
                bail!("vm-test on {kernel_name}: every case passed but {how_it_ended}");
            }
            println!("vm-test: all {passed} passed on {kernel_name}");
            Ok(())
        }
        Err(why) => Err(anyhow!(
            "vm-test failed on {kernel_name} ({accel}): {why}; {how_it_ended}{}",
            qemu_error(&boot.stderr)
        )),
    }
}

/// qemu's own complaint, as a suffix for a one-line error.
fn qemu_error(stderr: &str) -> String {
    let text = stderr.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(" (qemu: {})", text.lines().collect::<Vec<_>>().join(" / "))
    }
}
