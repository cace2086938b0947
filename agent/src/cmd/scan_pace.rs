//! How often the live source scans the open connections with sock_diag.

use std::time::Duration;

/// The sock_diag scan of open connections costs in proportion to them (a lookup
/// and a `tcp_info` each): past this many per scan, it runs every few intervals
/// instead of every one…
const SCAN_CONNS_PER_INTERVAL: usize = 2_000;
/// …but at least this often. Idle thresholds are tens of seconds.
const SCAN_MAX_PERIOD: Duration = Duration::from_secs(10);

/// How many intervals apart the scans run with `open` connections open.
pub fn scan_stride(open: usize, interval: Duration) -> u32 {
    let most = SCAN_MAX_PERIOD.as_nanos() / interval.as_nanos().max(1);
    let most = u32::try_from(most).unwrap_or(u32::MAX).max(1);
    u32::try_from(open / SCAN_CONNS_PER_INTERVAL)
        .unwrap_or(u32::MAX)
        .saturating_add(1)
        .min(most)
}
