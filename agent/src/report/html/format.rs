//! What every part of the page shares: the `w!` writer, HTML escaping, the
//! small number, time and duration formatters, and the colours.

use crate::model::{ClientVerdict, Severity, format_ts, human_duration};
use std::fmt;
use std::time::{Duration, SystemTime};

/// Writes into a `String`, which cannot fail.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}
pub(super) use w;

pub(super) const RED: &str = "#c62828";
pub(super) const AMBER: &str = "#d98200";
pub(super) const GREEN: &str = "#2e7d32";
pub(super) const BLUE: &str = "#1f5fa8";
pub(super) const PURPLE: &str = "#7b3fa0";
pub(super) const TEAL: &str = "#00897b";

/// Displays a text HTML-escaped, safe in element content and in quoted attributes.
pub(super) struct Esc<'a>(pub(super) &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            let entity = match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            };
            f.write_str(entity)?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// `retry_storm` → `retry storm`, for headings.
pub(super) fn words(snake: &str) -> String {
    snake.replace('_', " ")
}

/// `21:05:10` (UTC) of a wall-clock time.
pub(super) fn clock(ts: SystemTime) -> String {
    let full = format_ts(ts).to_string();
    full.get(11..19).map_or(full.clone(), str::to_owned)
}

/// A figure without trailing zeros: `12`, `3.5`, `0.25`, `20000`.
pub(super) fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_owned();
    }
    let s = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

pub(super) fn pct(ratio: f64) -> String {
    format!("{}%", num(ratio * 100.0))
}

pub(super) fn ms_duration(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return "–".to_owned();
    }
    human_duration(Duration::from_micros((ms * 1e3) as u64))
}

pub(super) fn severity_class(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
    }
}

pub(super) fn client_verdict_rank(v: ClientVerdict) -> u8 {
    match v {
        ClientVerdict::Healthy => 0,
        ClientVerdict::PoolHeavy => 1,
        ClientVerdict::BackingOff => 2,
        ClientVerdict::NoBackoff => 3,
        ClientVerdict::SlowConsumer => 4,
        ClientVerdict::Leak => 5,
        ClientVerdict::RetryStorm => 6,
    }
}

pub(super) fn client_verdict_color(v: ClientVerdict) -> &'static str {
    match v {
        ClientVerdict::Healthy => GREEN,
        ClientVerdict::PoolHeavy => TEAL,
        ClientVerdict::BackingOff => PURPLE,
        ClientVerdict::NoBackoff => AMBER,
        ClientVerdict::SlowConsumer => AMBER,
        ClientVerdict::Leak => AMBER,
        ClientVerdict::RetryStorm => RED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(Esc("a<b>&\"c'").to_string(), "a&lt;b&gt;&amp;&quot;c&#39;");
        assert_eq!(Esc("2001:db8::1 → ok").to_string(), "2001:db8::1 → ok");
    }
}
