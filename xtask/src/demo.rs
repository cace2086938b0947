//! `cargo xtask demo`: connwatch watching a scratch redis-server while a
//! recognizable traffic mix runs against it (see traffic.rs).

use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::process::{self, describe_status};
use crate::redis::ScratchRedis;
use crate::traffic::{self, Report};

/// Time for connwatch to load and attach its probes before the traffic starts.
const START_DELAY: Duration = Duration::from_millis(1500);
/// How long past `--duration` connwatch may take to print its last report before
/// the demo gives up on it and kills it (so a stuck agent cannot hang the demo).
const EXIT_GRACE: Duration = Duration::from_secs(30);
/// How long connwatch may take to exit after Ctrl-C.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

pub fn run(seconds: u64) -> anyhow::Result<()> {
    process::catch_interrupts()?;
    let bin = process::target_dir().join("debug").join("connwatch");
    if !bin.is_file() {
        bail!("{} is missing after the build", bin.display());
    }

    // Drop order on every exit path (also errors and Ctrl-C): connwatch is
    // killed if still running, the traffic stops, then redis-server is killed
    // and its temp dir removed.
    let redis = ScratchRedis::start().context("starting the scratch redis-server")?;
    let port = redis.port();
    println!(
        "demo: scratch redis-server on 127.0.0.1:{port} (dir {}); traffic from \
         127.0.0.2-127.0.0.7 starts in {:.1} s; connwatch watches for {seconds} s (Ctrl-C stops early)",
        redis.dir().display(),
        START_DELAY.as_secs_f64()
    );

    let duration = Duration::from_secs(seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let handle = traffic::spawn(
        port,
        START_DELAY,
        duration + Duration::from_secs(5),
        Arc::clone(&stop),
    )
    .context("starting the traffic thread")?;
    let traffic = TrafficGuard {
        stop,
        handle: Some(handle),
    };

    let mut watch = Command::new(&bin);
    watch.args(["watch", "--port", &port.to_string(), "--interval", "1s"]);
    watch.args(["--duration", &format!("{seconds}s")]);
    println!("demo: {}", process::display(&watch));
    // Inherits stdio: on a terminal connwatch draws its refreshing table.
    let child = watch
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut connwatch = ChildGuard(Some(child));
    let status = connwatch.wait(duration + EXIT_GRACE)?;

    let report = traffic.finish();
    drop(redis);
    if !status.success() {
        bail!(
            "connwatch exited with {} (its own error is above)",
            describe_status(status)
        );
    }
    println!();
    if process::interrupted() {
        println!("demo: stopped early by Ctrl-C");
    }
    println!("{}", traffic::explain(&report));
    Ok(())
}

/// Stops the traffic thread and waits for it (also on drop).
struct TrafficGuard {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Report>>,
}

impl TrafficGuard {
    fn finish(mut self) -> Report {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(report)) => report,
            Some(Err(_)) => {
                eprintln!("demo: warning: the traffic thread panicked");
                Report::default()
            }
            None => Report::default(),
        }
    }
}

impl Drop for TrafficGuard {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// connwatch; killed on drop unless it exited.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    /// Waits for exit; kills it after `limit`, or `INTERRUPT_GRACE` after Ctrl-C
    /// (Ctrl-C reaches connwatch directly; it should print a last report and exit).
    fn wait(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let start = Instant::now();
        let mut interrupted_at = None;
        let Some(child) = self.0.as_mut() else {
            bail!("connwatch was already waited for");
        };
        loop {
            if let Some(status) = child.try_wait().context("waiting for connwatch")? {
                self.0 = None;
                return Ok(status);
            }
            if process::interrupted() && interrupted_at.is_none() {
                interrupted_at = Some(Instant::now());
            }
            if interrupted_at.is_some_and(|t| t.elapsed() > INTERRUPT_GRACE) {
                bail!("connwatch did not exit within {INTERRUPT_GRACE:?} of Ctrl-C; killed it");
            }
            if start.elapsed() > limit {
                bail!("connwatch was still running after {limit:?}; killed it");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
