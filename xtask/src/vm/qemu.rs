//! One bounded qemu boot: the serial console read line by line (echoed and
//! logged), qemu killed when init does not start in time or the whole run
//! overstays.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};

use super::console;

/// How qemu runs the guest's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM if /dev/kvm is usable and the guest reaches init within a few seconds, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// How a boot ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// qemu exited (the guest powered off, or qemu failed).
    Exited(String),
    /// The guest printed no init line in time; qemu was killed.
    NoInit(Duration),
    /// The run overstayed; qemu was killed.
    TimedOut(Duration),
}

pub struct Boot {
    pub lines: Vec<String>,
    /// From qemu's start to the guest's init line.
    pub init_after: Option<Duration>,
    pub took: Duration,
    pub end: End,
    /// qemu's own stderr (its errors).
    pub stderr: String,
}

pub struct Machine<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
}

/// The qemu command line for `accel` (KVM or TCG only).
pub fn command(machine: &Machine<'_>, kvm: bool) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-m",
        "1G",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
    ]);
    if kvm {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        cmd.args(["-accel", "tcg", "-cpu", "max"]);
    }
    cmd.arg("-kernel").arg(machine.vmlinuz);
    cmd.arg("-initrd").arg(machine.initrd);
    cmd.args(["-append", "console=ttyS0 panic=-1 quiet"]);
    cmd
}

/// Boots once. Lines go to `log` and, prefixed, to standard output as they come.
pub fn boot(
    mut cmd: Command,
    init_timeout: Duration,
    total_timeout: Duration,
    log: &mut File,
) -> anyhow::Result<Boot> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!("qemu-system-x86_64 not found (cargo xtask setup installs qemu-system-x86)")
            } else {
                anyhow!("cannot start qemu-system-x86_64: {e}")
            }
        })?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("qemu's stdout was not piped"))?;
    let mut stderr_pipe = child
        .stderr
        .take()
        .ok_or_else(|| anyhow!("qemu's stderr was not piped"))?;
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    let line = console::strip_escapes(text.trim_end_matches(['\r', '\n']));
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let mut lines = Vec::new();
    let mut init_after = None;
    let end = loop {
        let elapsed = started.elapsed();
        let deadline = if init_after.is_none() {
            init_timeout.min(total_timeout)
        } else {
            total_timeout
        };
        if elapsed >= deadline {
            kill(&mut child);
            break if init_after.is_none() {
                End::NoInit(init_timeout)
            } else {
                End::TimedOut(total_timeout)
            };
        }
        match rx.recv_timeout((deadline - elapsed).min(Duration::from_millis(500))) {
            Ok(line) => {
                writeln!(log, "{line}").context("writing the console log")?;
                println!("vm| {line}");
                if init_after.is_none() && console::is_init(&line) {
                    init_after = Some(started.elapsed());
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break End::Exited(wait_bounded(&mut child, Duration::from_secs(10)));
            }
        }
    };
    let stderr = stderr_reader.join().unwrap_or_default();
    Ok(Boot {
        lines,
        init_after,
        took: started.elapsed(),
        end,
        stderr,
    })
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits up to `timeout` for qemu to exit after its output closed; kills it then.
fn wait_bounded(child: &mut Child, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return crate::process::describe_status(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                kill(child);
                return format!("killed: still running {timeout:?} after its output closed");
            }
            Err(e) => return format!("wait failed: {e}"),
        }
    }
}

/// Whether this user may open /dev/kvm read-write.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}
