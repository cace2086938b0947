//! The text exposition format's writer: sample values in Prometheus's spelling,
//! escaping, and families whose HELP and TYPE lines come with their first sample.

use std::fmt::Write as _;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
}

impl MetricType {
    fn name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        }
    }
}

/// A sample value: integers print exactly, floats in Prometheus's spelling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl From<u64> for Num {
    fn from(v: u64) -> Self {
        Num::U(v)
    }
}

impl From<u32> for Num {
    fn from(v: u32) -> Self {
        Num::U(u64::from(v))
    }
}

impl From<i64> for Num {
    fn from(v: i64) -> Self {
        Num::I(v)
    }
}

impl From<f64> for Num {
    fn from(v: f64) -> Self {
        Num::F(v)
    }
}

impl From<bool> for Num {
    fn from(v: bool) -> Self {
        Num::U(u64::from(v))
    }
}

impl From<usize> for Num {
    fn from(v: usize) -> Self {
        Num::U(v as u64)
    }
}

fn write_num(out: &mut String, n: Num) {
    // Writing to a String cannot fail.
    let _ = match n {
        Num::U(v) => write!(out, "{v}"),
        Num::I(v) => write!(out, "{v}"),
        Num::F(v) if v.is_nan() => write!(out, "NaN"),
        Num::F(v) if v == f64::INFINITY => write!(out, "+Inf"),
        Num::F(v) if v == f64::NEG_INFINITY => write!(out, "-Inf"),
        // Rust prints f64 without an exponent and with the shortest digits that
        // read back to the same value: "0.5", "4.21", "0.000001".
        Num::F(v) => write!(out, "{v}"),
    };
}

/// A duration in seconds at microsecond resolution, the precision reports promise
/// (and the same figure as the JSON report's `_s` keys).
pub(super) fn seconds(d: Duration) -> f64 {
    d.as_micros() as f64 / 1e6
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(out: &mut String, value: &str) {
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Escapes HELP text: backslash and line feed.
pub(super) fn escape_help(out: &mut String, text: &str) {
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The label naming a Redis that is not the host's own. Not `instance`: Prometheus
/// gives that one to the scrape target and would rename ours.
pub(super) const INSTANCE_LABEL: &str = "redis_instance";

/// Merges expositions rendered one by one into one text: each family's HELP and
/// TYPE once, then every text's samples of it, families in order of first
/// appearance (the text format wants a family's samples together).
pub(super) fn merge(texts: &[String]) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut families: std::collections::HashMap<&str, (String, String)> =
        std::collections::HashMap::new();
    for text in texts {
        let mut current: Option<&str> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or(rest);
                current = Some(name);
                families.entry(name).or_insert_with(|| {
                    order.push(name);
                    (String::new(), String::new())
                });
                let head = &mut families.entry(name).or_default().0;
                if head.is_empty() {
                    head.push_str(line);
                    head.push('\n');
                }
            } else if line.starts_with("# TYPE ") {
                if let Some(name) = current {
                    let head = &mut families.entry(name).or_default().0;
                    if head.lines().count() == 1 {
                        head.push_str(line);
                        head.push('\n');
                    }
                }
            } else if let Some(name) = current {
                let samples = &mut families.entry(name).or_default().1;
                samples.push_str(line);
                samples.push('\n');
            }
        }
    }
    let mut out = String::with_capacity(texts.iter().map(String::len).sum());
    for name in order {
        if let Some((head, samples)) = families.get(name) {
            out.push_str(head);
            out.push_str(samples);
        }
    }
    out
}

/// One family as data rather than text: what [`super::families`] returns for the
/// OTLP encoder. It is filled by the very calls that write the text, so the two
/// cannot disagree.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricFamily {
    pub name: &'static str,
    pub kind: MetricType,
    pub help: &'static str,
    pub samples: Vec<Sample>,
}

/// One sample of a [`MetricFamily`]: its labels (without `redis_instance`, which
/// names the report's instance, not the sample) and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: Num,
}

/// The text being built, or the families collected.
pub(super) struct Exposition {
    pub(super) out: String,
    /// The `redis_instance` label every sample carries (a Redis in a container or
    /// a pod); `None` for the host's own.
    pub(super) instance: Option<String>,
    /// `Some`: collect the families as data instead of writing text.
    pub(super) collected: Option<Vec<MetricFamily>>,
}

impl Exposition {
    /// A family whose HELP and TYPE lines are written with its first sample, so
    /// a family with nothing known is absent altogether.
    pub(super) fn family(
        &mut self,
        name: &'static str,
        kind: MetricType,
        help: &'static str,
    ) -> Family<'_> {
        Family {
            out: &mut self.out,
            collected: self.collected.as_mut(),
            instance: self.instance.as_deref(),
            name,
            kind,
            help,
            started: false,
        }
    }

    /// A family with one unlabelled sample, or nothing when the value is unknown.
    fn single(
        &mut self,
        name: &'static str,
        kind: MetricType,
        help: &'static str,
        value: Option<impl Into<Num>>,
    ) {
        if let Some(v) = value {
            self.family(name, kind, help).sample(&[], v);
        }
    }

    pub(super) fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        value: Option<impl Into<Num>>,
    ) {
        self.single(name, MetricType::Gauge, help, value);
    }

    pub(super) fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        value: Option<impl Into<Num>>,
    ) {
        self.single(name, MetricType::Counter, help, value);
    }
}

pub(super) struct Family<'a> {
    out: &'a mut String,
    collected: Option<&'a mut Vec<MetricFamily>>,
    instance: Option<&'a str>,
    name: &'static str,
    kind: MetricType,
    help: &'static str,
    started: bool,
}

impl Family<'_> {
    pub(super) fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Num>) {
        if let Some(families) = self.collected.as_deref_mut() {
            if !self.started {
                self.started = true;
                families.push(MetricFamily {
                    name: self.name,
                    kind: self.kind,
                    help: self.help,
                    samples: Vec::new(),
                });
            }
            if let Some(family) = families.last_mut() {
                family.samples.push(Sample {
                    labels: labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    value: value.into(),
                });
            }
            return;
        }
        let out = &mut *self.out;
        if !self.started {
            self.started = true;
            out.push_str("# HELP ");
            out.push_str(self.name);
            out.push(' ');
            escape_help(out, self.help);
            out.push_str("\n# TYPE ");
            out.push_str(self.name);
            out.push(' ');
            out.push_str(self.kind.name());
            out.push('\n');
        }
        out.push_str(self.name);
        let instance = self.instance.map(|v| (INSTANCE_LABEL, v));
        if !labels.is_empty() || instance.is_some() {
            out.push('{');
            for (i, (key, value)) in instance.iter().chain(labels).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(key);
                out.push_str("=\"");
                escape_label(out, value);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        write_num(out, value.into());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_prometheus_spelling() {
        let mut out = String::new();
        for n in [
            Num::U(u64::MAX),
            Num::I(-3),
            Num::F(0.5),
            Num::F(1e-6),
            Num::F(2.0),
            Num::F(f64::INFINITY),
            Num::F(f64::NEG_INFINITY),
            Num::F(f64::NAN),
        ] {
            write_num(&mut out, n);
            out.push(' ');
        }
        assert_eq!(out, "18446744073709551615 -3 0.5 0.000001 2 +Inf -Inf NaN ");
    }
}
