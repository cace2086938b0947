//! Part 7 of the bench: what one connection event costs, in the kernel and in the
//! agent, beside the bpftrace peer. Throughput ratios on two shared cores are too
//! noisy to steer by; these per-event figures are stable.
//!
//! Kernel: each side (connwatch as it runs by default, connwatch with
//! `--no-processes`, the peer) runs *alone* on the same churn with
//! `kernel.bpf_stats_enabled=1`, in alternating order over the rounds. Two programs
//! on one tracepoint run one after the other, and the first pays the cold caches of
//! the tracepoint's record for both: measured together, whichever attached first
//! looks dearer. A process's programs are found by the `prog_id`s in its
//! /proc/PID/fdinfo, their run_time_ns and run_cnt read there before and after,
//! and their names asked of bpftool.

use super::*;

/// One churn per side and round: `redis-benchmark -t ping -k 0 -n` this many.
pub const KERNEL_CHURN_REQUESTS: u32 = 30_000;

/// ns/run samples of one program, one per round.
#[derive(Debug, Default)]
pub struct ProgSamples {
    pub runs: Vec<f64>,
    pub ns_per_run: Vec<f64>,
}

/// Per tracepoint (connwatch's program names; the peer's are matched to them).
#[derive(Debug, Default)]
pub struct KernelCosts {
    /// As it runs by default: local clients' connects noted too (the bench's
    /// load generator is local, so every connection pays for it).
    pub connwatch: BTreeMap<String, ProgSamples>,
    /// With `--no-processes`: the server side only, the peer's work.
    pub server_only: BTreeMap<String, ProgSamples>,
    pub peer: BTreeMap<String, ProgSamples>,
    pub rounds: usize,
}

/// (prog_id, run_time_ns, run_cnt) of every BPF program in /proc/PID/fdinfo.
pub(super) fn prog_ids(pid: u32) -> BTreeMap<u32, (u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for entry in dir.flatten().take(10_000) {
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        if let (Some(id), Some(stats)) = (id, fdinfo_prog_stats(&text)) {
            out.insert(id, stats);
        }
    }
    out
}

/// The name bpftool gives program `id` (bpftrace's are cut to 15 characters).
pub(super) fn prog_name(id: u32) -> Option<String> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string(), "--json"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["name"].as_str().map(str::to_owned)
}

/// The program of `programs` that `name` names: exactly, or cut short to the
/// kernel's 15 characters (bpftrace's). connwatch's BTF tracepoint version of a
/// program (`NAME_btf`) counts as `NAME`: the agent attaches one or the other.
pub fn match_program(name: &str, programs: &[&str]) -> Option<String> {
    let name = name.strip_suffix("_btf").unwrap_or(name);
    let exact = programs.iter().find(|p| **p == name);
    let cut = || {
        programs
            .iter()
            .find(|p| name.len() == 15 && p.starts_with(name))
    };
    exact.or_else(cut).map(|p| (*p).to_owned())
}

/// The peer's programs (its script traces these two).
const PEER_PROGRAMS: [&str; 2] = ["inet_sock_set_state", "sys_exit_accept4"];

/// Programs connwatch attaches, by name.
const PROGRAMS: [&str; 5] = [
    "inet_sock_set_state",
    "sys_exit_accept4",
    "sys_exit_accept",
    "tcp_send_reset",
    "tcp_retransmit_synack",
];

/// Runs the churn once under `pid`'s programs and adds each program's ns/run.
fn sample(
    pid: u32,
    port: u16,
    programs: &[&str],
    into: &mut BTreeMap<String, ProgSamples>,
) -> anyhow::Result<()> {
    let before = prog_ids(pid);
    redis_benchmark(port, &["-t", "ping"], 0, KERNEL_CHURN_REQUESTS)?;
    let after = prog_ids(pid);
    for (id, (ns, cnt)) in after {
        let (ns0, cnt0) = before.get(&id).copied().unwrap_or((0, 0));
        let runs = cnt.saturating_sub(cnt0);
        if runs == 0 {
            continue;
        }
        let Some(name) = prog_name(id).and_then(|n| match_program(&n, programs)) else {
            continue;
        };
        let s = into.entry(name).or_default();
        s.runs.push(runs as f64);
        s.ns_per_run
            .push(ns.saturating_sub(ns0) as f64 / runs as f64);
    }
    Ok(())
}

/// Each side alone on the same churn, in alternating order, `rounds` times.
pub fn measure_kernel(
    bin: &Path,
    port: u16,
    rounds: usize,
    mut agent_file: impl FnMut() -> PathBuf,
) -> anyhow::Result<KernelCosts> {
    let _stats = BpfStats::enable()?;
    let mut costs = KernelCosts {
        rounds,
        ..KernelCosts::default()
    };
    const SIDES: [&str; 3] = ["connwatch", "connwatch --no-processes", "bpftrace"];
    for round in 0..rounds {
        for i in 0..SIDES.len() {
            check_interrupted()?;
            let side = (i + round) % SIDES.len();
            say(&format!(
                "bench: part 7 round {} ({})",
                round + 1,
                SIDES[side]
            ));
            match side {
                0 => {
                    let agent = Agent::start(bin, port, agent_file())?;
                    sample(agent.pid(), port, &PROGRAMS, &mut costs.connwatch)?;
                    agent.stop()?;
                }
                1 => {
                    let agent = Agent::start_args(bin, port, agent_file(), &["--no-processes"])?;
                    sample(agent.pid(), port, &PROGRAMS, &mut costs.server_only)?;
                    agent.stop()?;
                }
                _ => {
                    let peer = Bpftrace::start(port, &agent_file())?;
                    sample(peer.pid, port, &PEER_PROGRAMS, &mut costs.peer)?;
                    peer.stop()?;
                }
            }
        }
    }
    Ok(costs)
}

/// The agent's CPU per connection, and per 10,000 connections/s.
pub fn agent_cost(cpu: Option<f64>, rate: f64) -> Option<(f64, f64)> {
    let cpu = cpu?;
    (rate > 0.0).then(|| (cpu * 1e6 / rate, cpu * 100.0 * 10_000.0 / rate))
}

/// Target: connwatch's agent under 5 % of a core per 10,000 connections/s.
pub const AGENT_TARGET_PCT_PER_10K: f64 = 5.0;

impl KernelCosts {
    /// The section's kernel table (markdown).
    pub fn table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "| program | connwatch `--no-processes` ns/run | connwatch (default) ns/run | runs/round | peer ns/run | peer runs/round | `--no-processes` / peer | target (`--no-processes` ≤ peer) |\n\
             |---|---|---|---|---|---|---|---|"
        );
        for name in PROGRAMS {
            let Some(cw) = self.connwatch.get(name) else {
                continue;
            };
            let cw_ns = median(&cw.ns_per_run);
            let server_ns = self
                .server_only
                .get(name)
                .and_then(|s| median(&s.ns_per_run));
            let peer = self.peer.get(name);
            let peer_ns = peer.and_then(|p| median(&p.ns_per_run));
            let verdict = match (server_ns, peer_ns) {
                (Some(c), Some(p)) if c <= p => "met",
                (Some(_), Some(_)) => "NOT met",
                _ => "(no peer program)",
            };
            let _ = writeln!(
                s,
                "| `{name}` | {} | {} | {} | {} | {} | {} | {verdict} |",
                num(server_ns, 1),
                num(cw_ns, 1),
                num(median(&cw.runs), 0),
                num(peer_ns, 1),
                num(peer.and_then(|p| median(&p.runs)), 0),
                ratio(server_ns, peer_ns),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpftrace_names_cut_short_match_the_tracepoint() {
        assert_eq!(
            match_program("inet_sock_set_s", &PEER_PROGRAMS).as_deref(),
            Some("inet_sock_set_state")
        );
        assert_eq!(
            match_program("sys_exit_accept", &PEER_PROGRAMS).as_deref(),
            Some("sys_exit_accept4")
        );
        // The BTF tracepoint version stands for the tracepoint's program.
        assert_eq!(
            match_program("inet_sock_set_state_btf", &PROGRAMS).as_deref(),
            Some("inet_sock_set_state")
        );
        // connwatch's own are named in full.
        assert_eq!(
            match_program("sys_exit_accept", &PROGRAMS).as_deref(),
            Some("sys_exit_accept")
        );
        assert_eq!(match_program("", &PROGRAMS), None);
        assert_eq!(match_program("kprobe_x", &PROGRAMS), None);
    }

    #[test]
    fn agent_cost_per_connection_and_per_10k() {
        // 2.1 % of a core at 7,000 connections/s: 3 µs each, 3 % per 10k/s.
        let (us, pct) = agent_cost(Some(0.021), 7_000.0).unwrap();
        assert!((us - 3.0).abs() < 1e-9, "{us}");
        assert!((pct - 3.0).abs() < 1e-9, "{pct}");
        assert_eq!(agent_cost(None, 7_000.0), None);
        assert_eq!(agent_cost(Some(0.1), 0.0), None);
    }
}
