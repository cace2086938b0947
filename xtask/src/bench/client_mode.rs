//! Part 9 of the bench: what client mode (`watch --remote-port`) costs the host
//! it runs on, an application host connecting to Redis.
//!
//! The same connect/close churn (`redis-benchmark -k 0`, a new connection per
//! request) runs with no agent, with the agent in server mode on the Redis port
//! (`-p PORT --no-redis`) and in client mode (`--remote-port PORT`), in rotating
//! order over the rounds, with `kernel.bpf_stats_enabled=1`. Each round gives the
//! churn's throughput against the detached run of the same round, the kernel
//! program's ns/run, and the agent's CPU per connection. On one machine the Redis
//! server is on the same host as the clients, so the client-mode agent sees both
//! ends' state changes (as it would on an application host) and ignores the
//! server's.

use super::*;

/// `redis-benchmark -t ping -k 0 -n` this many per test (two tests: 2× connections).
pub const CHURN_REQUESTS: u32 = 30_000;

/// The three sides of each round.
const SIDES: [Side; 3] = [Side::Detached, Side::Server, Side::Client];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Detached,
    Server,
    Client,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Detached => "detached",
            Side::Server => "server mode, `-p PORT --no-redis`",
            Side::Client => "client mode, `--remote-port PORT`",
        }
    }
}

/// One side's figures over the rounds.
#[derive(Debug, Default)]
pub struct SideSamples {
    /// Connections per second of the churn (both tests' mean).
    pub rate: Vec<f64>,
    /// Rate over the detached run's of the same round.
    pub ratio: Vec<f64>,
    /// `inet_sock_set_state`'s ns/run.
    pub ns_per_run: Vec<f64>,
    /// Its runs per connection.
    pub runs_per_conn: Vec<f64>,
    /// The agent's CPU, µs per connection.
    pub agent_us: Vec<f64>,
    /// The most connections the agent's reports counted as opened (`totals.opened`).
    pub opened: Option<u64>,
    pub lost: u64,
}

#[derive(Debug, Default)]
pub struct ClientModeCosts {
    pub rounds: usize,
    pub sides: BTreeMap<Side, SideSamples>,
    /// Connections per churn run.
    pub connections: u64,
}

/// The heading of part 9 in docs/PERFORMANCE.md.
pub const HEADING: &str = "## 9. Client mode on an application host";

/// Target: client mode keeps at least this share of the churn's throughput.
pub const TARGET_RATIO: f64 = 0.95;

pub fn measure(
    bin: &Path,
    port: u16,
    rounds: usize,
    mut agent_file: impl FnMut() -> PathBuf,
) -> anyhow::Result<ClientModeCosts> {
    let _stats = BpfStats::enable()?;
    let mut out = ClientModeCosts {
        rounds,
        ..ClientModeCosts::default()
    };
    for round in 0..rounds {
        let mut detached_rate = None;
        let mut pending: Vec<(Side, f64)> = Vec::new();
        for i in 0..SIDES.len() {
            check_interrupted()?;
            let side = SIDES[(i + round) % SIDES.len()];
            say(&format!(
                "bench: part 9 round {} ({})",
                round + 1,
                side.label()
            ));
            let agent = match side {
                Side::Detached => None,
                Side::Server => Some(Agent::start(bin, port, agent_file())?),
                Side::Client => Some(Agent::start_client(bin, port, agent_file())?),
            };
            let pid = agent.as_ref().map(Agent::pid);
            let progs0 = pid.map(cost::prog_ids).unwrap_or_default();
            let ticks0 = pid.and_then(cpu_ticks);
            let rows = redis_benchmark(port, &["-t", "ping"], 0, CHURN_REQUESTS)?;
            let ticks1 = pid.and_then(cpu_ticks);
            let progs1 = pid.map(cost::prog_ids).unwrap_or_default();
            let conns = u64::from(CHURN_REQUESTS) * rows.len() as u64;
            out.connections = conns;
            let rate = median(&rows.iter().map(|r| r.rps).collect::<Vec<_>>()).unwrap_or(0.0);
            let s = out.sides.entry(side).or_default();
            s.rate.push(rate);
            if let Some((a, b)) = ticks0.zip(ticks1)
                && conns > 0
            {
                s.agent_us
                    .push(b.saturating_sub(a) as f64 / clock_ticks() * 1e6 / conns as f64);
            }
            for (id, (ns, cnt)) in progs1 {
                let (ns0, cnt0) = progs0.get(&id).copied().unwrap_or((0, 0));
                let runs = cnt.saturating_sub(cnt0);
                let name = cost::prog_name(id)
                    .and_then(|n| cost::match_program(&n, &["inet_sock_set_state"]));
                if runs == 0 || name.is_none() {
                    continue;
                }
                s.ns_per_run
                    .push(ns.saturating_sub(ns0) as f64 / runs as f64);
                s.runs_per_conn.push(runs as f64 / conns.max(1) as f64);
            }
            if let Some(agent) = agent {
                // One more interval, so the last report counts the whole churn.
                std::thread::sleep(Duration::from_millis(1200));
                let ndjson = agent.stop()?;
                s.opened = s.opened.max(max_field(&ndjson, "opened"));
                s.lost += max_field(&ndjson, "lost_events").unwrap_or(0);
            }
            match side {
                Side::Detached => detached_rate = Some(rate),
                _ => pending.push((side, rate)),
            }
        }
        if let Some(d) = detached_rate.filter(|&d| d > 0.0) {
            for (side, rate) in pending {
                out.sides.entry(side).or_default().ratio.push(rate / d);
            }
        }
    }
    Ok(out)
}

impl ClientModeCosts {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{HEADING}\n");
        let _ = writeln!(
            s,
            "An application host runs `connwatch watch --remote-port 6379` to see its own \
             connections to Redis by process (README, \"Which process leaks?\"). What that costs \
             the host: `redis-benchmark -p PORT -t ping -c {CLIENTS} -n {CHURN_REQUESTS} -k 0` (a new \
             connection per request, {} connections per run) with no agent, with the agent in \
             server mode on the Redis port (`-p PORT --no-redis`) and in client mode \
             (`--remote-port PORT`), in rotating order, {} rounds, with \
             `kernel.bpf_stats_enabled=1`. Throughput is connections per second (the median of \
             redis-benchmark's two tests); **ratio** is the median over the rounds of each side's \
             throughput over the detached run of the same round. On this one machine the load \
             generator and Redis share the host, so each connection changes state at both ends \
             under both modes: client mode reports the clients' ends and drops the server's, \
             server mode the reverse (and, as by default, notes the local connecting process). \
             Target: client mode keeps ≥ {TARGET_RATIO} of the churn's throughput.\n",
            self.connections, self.rounds,
        );
        let _ = writeln!(
            s,
            "| side | conn/s (median) | **ratio** | `inet_sock_set_state` ns/run | runs per connection | agent µs per connection | connwatch opened (max per run) | lost_events | target |\n\
             |---|---|---|---|---|---|---|---|---|"
        );
        for side in SIDES {
            let Some(x) = self.sides.get(&side) else {
                continue;
            };
            let ratio = median(&x.ratio);
            let target = match (side, ratio) {
                (Side::Client, Some(r)) if r >= TARGET_RATIO => format!("≥ {TARGET_RATIO}: met"),
                (Side::Client, Some(_)) => format!("≥ {TARGET_RATIO}: NOT met"),
                _ => "—".into(),
            };
            let dash = |v: Option<f64>, d: usize| v.map_or("—".into(), |v| format!("{v:.d$}"));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {target} |",
                side.label(),
                dash(median(&x.rate), 0),
                if side == Side::Detached {
                    "1".into()
                } else {
                    format!("**{}**", dash(ratio, 3))
                },
                dash(median(&x.ns_per_run), 1),
                dash(median(&x.runs_per_conn), 1),
                dash(median(&x.agent_us), 2),
                x.opened.map_or("—".into(), |o| o.to_string()),
                if side == Side::Detached {
                    "—".into()
                } else {
                    x.lost.to_string()
                },
            );
        }
        if let Some(c) = self.sides.get(&Side::Client) {
            let us = median(&c.agent_us).map_or("—".into(), |u| format!("{u:.2}"));
            let _ = writeln!(
                s,
                "\nThe client-mode agent counted up to {} connections opened in a run of {} \
                 (redis-benchmark opens a few of its own besides): it saw the churn from the \
                 clients' side. Two shared cores carry the load generator, \
                 Redis, the programs and the agent here; on an application host the agent's share \
                 is what the per-connection figures say: {us} µs of the agent's CPU per \
                 connection is {us} % of a core per 10,000 connections/s.",
                c.opened.map_or("—".into(), |o| o.to_string()),
                self.connections,
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_says_met_only_for_a_client_ratio_at_or_above_the_target() {
        let mut c = ClientModeCosts {
            rounds: 2,
            connections: 60_000,
            ..ClientModeCosts::default()
        };
        c.sides.insert(
            Side::Detached,
            SideSamples {
                rate: vec![10_000.0, 12_000.0],
                ..SideSamples::default()
            },
        );
        c.sides.insert(
            Side::Client,
            SideSamples {
                rate: vec![9_600.0, 11_600.0],
                ratio: vec![0.96, 0.966],
                ns_per_run: vec![80.0, 90.0],
                runs_per_conn: vec![10.0, 10.0],
                agent_us: vec![1.5, 1.7],
                opened: Some(60_000),
                lost: 0,
            },
        );
        let md = c.markdown();
        assert!(md.starts_with(HEADING), "{md}");
        assert!(md.contains("| client mode, `--remote-port PORT` | 10600 | **0.963** | 85.0 | 10.0 | 1.60 | 60000 | 0 | ≥ 0.95: met |"), "{md}");
        assert!(
            md.contains("| detached | 11000 | 1 | — | — | — | — | — | — |"),
            "{md}"
        );
        c.sides.get_mut(&Side::Client).unwrap().ratio = vec![0.90, 0.91];
        assert!(c.markdown().contains("≥ 0.95: NOT met"));
    }
}
