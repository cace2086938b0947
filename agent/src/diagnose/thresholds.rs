//! The thresholds behind every verdict, with their defaults (docs/DIAGNOSIS.md).

use std::time::Duration;

use crate::model::{Budget, Cidr};

/// The thresholds behind every verdict. Defaults are documented in docs/DIAGNOSIS.md.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// How far back trends (leaks, pools, fan-out) look.
    pub window: Duration,
    /// A leak: open connections from one address grew by at least this many over the window…
    pub leak_min_growth: u64,
    /// …are still growing, and at least `leak_min_stale` of them idle this long.
    pub leak_idle: Duration,
    pub leak_min_stale: u64,
    /// A slow leak: over up to this long (at least a thirtieth of it), open
    /// connections from one address grew in each third of the span…
    pub leak_slow_window: Duration,
    /// …by at least this many in all.
    pub leak_slow_min_growth: u64,
    /// A retry storm: at least this many failed attempts in the short window…
    pub storm_min_failures: u64,
    /// …with a median gap to the next attempt below this, not growing.
    pub storm_max_gap: Duration,
    /// How far back storms and "happening now" look: a few intervals.
    pub short_window: Duration,
    /// With too few gaps to see their shape, retrying at least this far apart is
    /// backing off.
    pub backoff_min_gap: Duration,
    /// A retry storm across clients: at least this many addresses retrying without
    /// backoff…
    pub fleet_storm_min_addresses: usize,
    /// …that together fail at least this many times a second…
    pub fleet_storm_min_rate: f64,
    /// …over this window.
    pub fleet_storm_window: Duration,
    /// An address holding this share of the limit is pool-heavy.
    pub pool_heavy_share: f64,
    /// Pool oversize: at least this many addresses hold a similar, steady number of
    /// connections that together take this share of the limit.
    pub pool_min_instances: usize,
    pub pool_share: f64,
    /// Instance fan-out: at least this many addresses, each with at most two
    /// short-lived connections, active within the window.
    pub fanout_min_addresses: usize,
    /// A slow consumer: an address with at least this many bytes of replies not
    /// taken…
    pub slow_consumer_min_bytes: u64,
    /// …and at least this share of all the replies queued, for the short window.
    pub slow_consumer_share: f64,
    /// Slots to keep free for replicas, cluster bus and sentinels.
    pub internal_reserve: u64,
    /// Addresses that are internal (`--internal`): Sentinels, replicas on other
    /// hosts, exporters, admin hosts. Never judged; counted in the internal headroom.
    pub internal: Vec<Cidr>,
    /// Connection budgets (`--budget CIDR=N`).
    pub budgets: Vec<Budget>,
    /// Blocked clients holding this share of the limit.
    pub blocked_share: f64,
    pub capacity_warning: f64,
    pub capacity_critical: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            window: Duration::from_secs(60),
            leak_min_growth: 10,
            leak_idle: Duration::from_secs(30),
            leak_min_stale: 5,
            leak_slow_window: Duration::from_secs(3600),
            leak_slow_min_growth: 3,
            storm_min_failures: 10,
            storm_max_gap: Duration::from_millis(100),
            short_window: Duration::from_secs(3),
            backoff_min_gap: Duration::from_secs(1),
            fleet_storm_min_addresses: 2,
            fleet_storm_min_rate: 5.0,
            fleet_storm_window: Duration::from_secs(10),
            pool_heavy_share: 0.25,
            pool_min_instances: 3,
            pool_share: 0.7,
            fanout_min_addresses: 100,
            slow_consumer_min_bytes: 1 << 20,
            slow_consumer_share: 0.5,
            internal_reserve: 100,
            internal: Vec::new(),
            budgets: Vec::new(),
            blocked_share: 0.3,
            capacity_warning: 0.8,
            capacity_critical: 0.9,
        }
    }
}
