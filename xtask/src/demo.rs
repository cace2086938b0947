//! `cargo xtask demo`: connwatch watching a scratch redis-server while a
//! traffic mix runs against it that first leaks the server full, then storms it,
//! then runs it out of file descriptors (see traffic.rs).

use std::io::IsTerminal as _;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::process::{self, describe_status};
use crate::redis::ScratchRedis;
use crate::traffic::{self, Plan, Report, Target};

/// Time for connwatch to load and attach its probes before the traffic starts.
const START_DELAY: Duration = Duration::from_millis(1500);
/// How long past `--duration` connwatch may take to print its last report before
/// the demo gives up on it and kills it (so a stuck agent cannot hang the demo).
const EXIT_GRACE: Duration = Duration::from_secs(30);
/// How long connwatch may take to exit after Ctrl-C.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// Redis's maxclients in the demo: small, so the leak fills it within seconds.
const MAXCLIENTS: u32 = 60;
/// Diagnosis thresholds shortened for the demo, with connwatch's defaults.
/// Only the leak's idle time needs it: by default a connection counts as stale
/// after 30 s, longer than the whole leak phase. The window stays at its 60 s
/// default: the leak rule wants the open count still growing over its last third,
/// and a shorter window would drop the leak verdict soon after the server is full.
const DEMO_THRESHOLDS: &[(&str, &str, &str)] = &[("--leak-idle", "5s", "30s")];
const WINDOW_DEFAULT: &str = "60s";

/// Demo messages go to standard output on a terminal, else to standard error, so
/// `cargo xtask demo > reports.ndjson` keeps connwatch's reports apart.
macro_rules! say {
    ($($arg:tt)*) => {
        if std::io::stdout().is_terminal() {
            println!($($arg)*);
        } else {
            eprintln!($($arg)*);
        }
    };
}

pub fn run(seconds: u64) -> anyhow::Result<()> {
    process::catch_interrupts()?;
    let bin = process::target_dir().join("debug").join("connwatch");
    if !bin.is_file() {
        bail!("{} is missing after the build", bin.display());
    }

    // Drop order on every exit path (also errors and Ctrl-C): connwatch is
    // killed if still running, the traffic stops, then redis-server is killed
    // and its temp dir removed.
    let redis = ScratchRedis::start_with(&["--maxclients", &MAXCLIENTS.to_string()])
        .context("starting the scratch redis-server")?;
    let port = redis.port();
    let duration = Duration::from_secs(seconds);
    let plan = Plan::demo(duration.saturating_sub(START_DELAY));
    say!(
        "demo: scratch redis-server (pid {}) on 127.0.0.1:{port} with maxclients {MAXCLIENTS} (dir {}); \
         connwatch watches for {seconds} s (Ctrl-C stops early)",
        redis.pid(),
        redis.dir().display(),
    );
    let at = |d: Duration| format!("{:.0} s", (d + START_DELAY).as_secs_f64());
    say!(
        "demo: 0-{}: healthy baseline (127.0.0.2 pool, 127.0.0.4 calm short-lived, 127.0.0.7 idle); \
         from {}: 127.0.0.3 leaks a connection every 400 ms until maxclients is reached; \
         once full (by {} at the latest): 127.0.0.8 retry storm, 127.0.0.9 backs off; \
         from {}: open-file limit lowered (prlimit), 127.0.0.10 waits in the accept queue",
        at(plan.leak_from),
        at(plan.leak_from),
        at(plan.storm_by),
        at(plan.fd_from),
    );
    if seconds < 45 {
        say!(
            "demo: the whole story needs about 45 s (the default); with {seconds} s some phases are short or missing"
        );
    }
    let shortened: Vec<String> = DEMO_THRESHOLDS
        .iter()
        .map(|(flag, value, default)| format!("{flag} {value} (default {default})"))
        .collect();
    say!(
        "demo: diagnosis thresholds shortened for the demo: {}; the rest are connwatch's defaults (--window {WINDOW_DEFAULT}, --short-window 3s, …; see connwatch watch --help)",
        shortened.join(", ")
    );

    let stop = Arc::new(AtomicBool::new(false));
    let target = Target {
        port,
        pid: redis.pid(),
    };
    let handle = traffic::spawn(target, plan, START_DELAY, Arc::clone(&stop))
        .context("starting the traffic thread")?;
    let traffic = TrafficGuard {
        stop,
        handle: Some(handle),
    };

    let mut watch = Command::new(&bin);
    watch.args(["watch", "--port", &port.to_string(), "--interval", "1s"]);
    watch.args(["--duration", &format!("{seconds}s")]);
    for (flag, value, _) in DEMO_THRESHOLDS {
        watch.args([flag, value]);
    }
    say!("demo: {}", process::display(&watch));
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
    say!();
    if process::interrupted() {
        say!("demo: stopped early by Ctrl-C");
    }
    let leak_idle = DEMO_THRESHOLDS
        .iter()
        .find(|(flag, ..)| *flag == "--leak-idle")
        .map_or("30s", |(_, value, _)| value);
    say!(
        "{}",
        traffic::explain(&report, MAXCLIENTS, leak_idle, WINDOW_DEFAULT, START_DELAY)
    );
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
