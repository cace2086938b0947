//! Formatting shared by every output: timestamps, durations, sizes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// A duration to microsecond resolution, the precision reports promise.
pub fn micros(nanos: u64) -> Duration {
    Duration::from_micros(nanos / 1_000)
}

/// Formats a wall-clock time as RFC 3339 UTC with milliseconds. Times outside
/// what RFC 3339 can show (before 1970, after 9999) are clamped, since the
/// formatter would panic or fail on them.
pub fn format_ts(ts: SystemTime) -> humantime::Rfc3339Timestamp {
    // 9999-12-31T23:59:59.999Z
    const LAST: Duration = Duration::from_millis(253_402_300_799_999);
    let since_epoch = ts.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch.min(LAST))
}

pub(crate) fn rfc3339_millis<S: Serializer>(ts: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_ts(*ts))
}

pub(crate) fn as_secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    (d.as_micros() as f64 / 1e6).serialize(s)
}

pub(crate) fn as_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    (d.as_micros() as f64 / 1e3).serialize(s)
}

/// A duration in the largest unit that keeps it short: `850µs`, `1.5ms`, `12ms`,
/// `3.2s`, `42s`, `5m10s`, `2h05m`, `3d04h`. One decimal below 10 of a unit,
/// rounded to the nearest shown digit.
pub fn human_duration(d: Duration) -> String {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    if us < 1_000 {
        return format!("{us}µs");
    }
    // Each step is chosen by the rounded figure, so 999.7ms shows as 1.0s, not 1000ms.
    let ms_tenths = rounded_div(us, 100);
    if ms_tenths < 100 {
        return format!("{}.{}ms", ms_tenths / 10, ms_tenths % 10);
    }
    let ms = rounded_div(us, 1_000);
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let s_tenths = rounded_div(us, 100_000);
    if s_tenths < 100 {
        return format!("{}.{}s", s_tenths / 10, s_tenths % 10);
    }
    let s = rounded_div(us, 1_000_000);
    if s < 60 {
        return format!("{s}s");
    }
    if s < 3_600 {
        return format!("{}m{:02}s", s / 60, s % 60);
    }
    let m = rounded_div(s, 60);
    if m < 24 * 60 {
        return format!("{}h{:02}m", m / 60, m % 60);
    }
    let h = rounded_div(m, 60);
    format!("{}d{:02}h", h / 24, h % 24)
}

/// A byte count in binary units: `512B`, `1.2KiB`, `30.5MiB`, `512KiB`. One decimal
/// below 100 of a unit.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut scale: u128 = 1;
    for unit in UNITS {
        scale *= 1024;
        let tenths = rounded_div_u128(u128::from(n) * 10, scale);
        if tenths < 1_000 {
            return format!("{}.{}{unit}", tenths / 10, tenths % 10);
        }
        let whole = rounded_div_u128(u128::from(n), scale);
        if whole < 1024 {
            return format!("{whole}{unit}");
        }
    }
    // Unreachable: u64::MAX is 16 EiB.
    format!("{n}B")
}

fn rounded_div(n: u64, d: u64) -> u64 {
    n / d + u64::from(n % d >= d.div_ceil(2))
}

fn rounded_div_u128(n: u128, d: u128) -> u128 {
    n / d + u128::from(n % d >= d.div_ceil(2))
}
