//! The metrics request: every family `/metrics` serves, as OTLP metrics of the
//! same name. They come from [`crate::report::prometheus::families`], the calls
//! that write the text exposition, so the two outputs cannot disagree: gauges as
//! Gauge, counters (`_total`) as monotonic cumulative Sum starting when the agent
//! started, labels as data point attributes, one resource per instance.

use super::common::{Origin, resource, scope, string, unix_nanos};
use super::proto::{
    AggregationTemporality, ExportMetricsServiceRequest, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use crate::model::Report;
use crate::report::prometheus::{self, MetricFamily, MetricType, Num};

/// The unit of a family, from its name's suffix (the Prometheus convention names
/// the base unit): seconds `s`, bytes `By`, ratios `1`; counts have none.
pub fn unit_of(name: &str) -> &'static str {
    let base = name.strip_suffix("_total").unwrap_or(name);
    if base.ends_with("_seconds") {
        "s"
    } else if base.ends_with("_bytes") {
        "By"
    } else if base.ends_with("_ratio") {
        "1"
    } else {
        ""
    }
}

/// A sample's value: integers as integers (those beyond `i64` as doubles), floats
/// (with infinities, which OTLP doubles carry) as doubles.
fn value(n: Num) -> number_data_point::Value {
    match n {
        Num::U(v) => match i64::try_from(v) {
            Ok(i) => number_data_point::Value::AsInt(i),
            Err(_) => number_data_point::Value::AsDouble(v as f64),
        },
        Num::I(v) => number_data_point::Value::AsInt(v),
        Num::F(v) => number_data_point::Value::AsDouble(v),
    }
}

fn metric(family: &MetricFamily, start: u64, time: u64) -> Metric {
    let points = family
        .samples
        .iter()
        .map(|s| NumberDataPoint {
            attributes: s.labels.iter().map(|(k, v)| string(k, v)).collect(),
            start_time_unix_nano: if family.kind == MetricType::Counter {
                start
            } else {
                0
            },
            time_unix_nano: time,
            value: Some(value(s.value)),
        })
        .collect();
    let data = match family.kind {
        MetricType::Gauge => metric::Data::Gauge(Gauge {
            data_points: points,
        }),
        MetricType::Counter => metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
    };
    Metric {
        name: family.name.to_owned(),
        description: family.help.to_owned(),
        unit: unit_of(family.name).to_owned(),
        data: Some(data),
    }
}

/// One report's metrics under its resource. Counters start when the agent did
/// (the report's time less its uptime).
pub fn resource_metrics(origin: &Origin, report: &Report, top: usize) -> ResourceMetrics {
    let time = unix_nanos(report.ts);
    let start = report.ts.checked_sub(report.uptime).map_or(0, unix_nanos);
    let metrics = prometheus::families(report, top)
        .iter()
        .map(|f| metric(f, start, time))
        .collect();
    ResourceMetrics {
        resource: Some(resource(origin, report)),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(scope()),
            metrics,
        }],
    }
}

/// The request of one interval: every instance's report, each its own resource.
/// `top` caps the per-address series as it does on `/metrics`.
pub fn metrics_request(
    origin: &Origin,
    reports: &[Report],
    top: usize,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: reports
            .iter()
            .map(|r| resource_metrics(origin, r, top))
            .collect(),
    }
}
