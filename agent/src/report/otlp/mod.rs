//! OTLP: the report as OpenTelemetry protocol messages (protobuf), for
//! `watch --otlp`. The metrics are those `/metrics` serves, with the same names,
//! labels and values ([`metrics`]); the verdict transitions are log records
//! ([`logs`]); each instance is a resource ([`common`]). Pure: the command layer
//! (`crate::cmd::otlp`) queues and sends the bytes over OTLP/HTTP.

mod common;
mod logs;
mod metrics;
pub mod proto;

pub use common::{Origin, SERVICE_NAME, instance_id};
pub use logs::{EVENT_NAME, logs_request, severity};
pub use metrics::{metrics_request, unit_of};

/// The media type of OTLP/HTTP requests with protobuf bodies.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// Where metrics and logs go, under the collector's base URL.
pub const METRICS_PATH: &str = "v1/metrics";
pub const LOGS_PATH: &str = "v1/logs";

/// A message's protobuf encoding: the body of a request.
pub fn encode(message: &impl prost::Message) -> Vec<u8> {
    message.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::proto::*;
    use super::*;
    use crate::diagnose::transitions::Transitions;
    use crate::model::{Instance, InstanceKey, Severity, VerdictKind};
    use crate::report::prometheus;
    use crate::testing::{full_report, verdict};
    use prost::Message as _;
    use serde_json::json;
    use std::collections::BTreeSet;
    use std::time::UNIX_EPOCH;

    fn origin() -> Origin {
        Origin {
            host_name: "cache-7".into(),
        }
    }

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn text(attrs: &[KeyValue], key: &str) -> String {
        match attr(attrs, key) {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            other => panic!("{key}: {other:?}"),
        }
    }

    /// A decoded data point in the text exposition's spelling.
    fn sample_line(name: &str, p: &NumberDataPoint) -> String {
        let labels: Vec<String> = p
            .attributes
            .iter()
            .map(|kv| format!("{}=\"{}\"", kv.key, text(&p.attributes, &kv.key)))
            .collect();
        let value = match p.value {
            Some(number_data_point::Value::AsInt(i)) => i.to_string(),
            Some(number_data_point::Value::AsDouble(f)) if f == f64::INFINITY => "+Inf".into(),
            Some(number_data_point::Value::AsDouble(f)) => format!("{f}"),
            None => panic!("{name}: no value"),
        };
        if labels.is_empty() {
            format!("{name} {value}")
        } else {
            format!("{name}{{{}}} {value}", labels.join(","))
        }
    }

    fn decode_metrics(bytes: &[u8]) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest::decode(bytes).unwrap()
    }

    #[test]
    fn every_sample_of_the_exposition_round_trips_with_its_type_and_times() {
        let report = full_report();
        let exposition = prometheus::render(&report, 2);
        let req = decode_metrics(&encode(&metrics_request(
            &origin(),
            std::slice::from_ref(&report),
            2,
        )));
        assert_eq!(req.resource_metrics.len(), 1);
        let rm = &req.resource_metrics[0];
        let res = &rm.resource.as_ref().unwrap().attributes;
        assert_eq!(text(res, "host.name"), "cache-7");
        assert_eq!(text(res, "service.name"), "connwatch");
        assert_eq!(text(res, "service.instance.id"), "cache-7:6379");
        assert_eq!(
            rm.scope_metrics[0].scope.as_ref().unwrap().name,
            "connwatch"
        );

        let time = report.ts.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        let start = time - report.uptime.as_nanos() as u64;
        let mut lines = BTreeSet::new();
        let mut types = BTreeSet::new();
        for m in &rm.scope_metrics[0].metrics {
            assert!(!m.description.is_empty(), "{}", m.name);
            let (points, kind) = match m.data.as_ref().unwrap() {
                metric::Data::Gauge(g) => (&g.data_points, "gauge"),
                metric::Data::Sum(s) => {
                    assert!(s.is_monotonic, "{}", m.name);
                    assert_eq!(
                        s.aggregation_temporality,
                        AggregationTemporality::Cumulative as i32
                    );
                    (&s.data_points, "counter")
                }
            };
            types.insert(format!("# TYPE {} {kind}", m.name));
            for p in points {
                assert_eq!(p.time_unix_nano, time, "{}", m.name);
                let want_start = if kind == "counter" { start } else { 0 };
                assert_eq!(p.start_time_unix_nano, want_start, "{}", m.name);
                lines.insert(sample_line(&m.name, p));
            }
        }
        let want_types: BTreeSet<String> = exposition
            .lines()
            .filter(|l| l.starts_with("# TYPE "))
            .map(str::to_owned)
            .collect();
        let want_lines: BTreeSet<String> = exposition
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        assert_eq!(types, want_types);
        assert_eq!(lines, want_lines);
        // A few by hand, so the comparison above cannot pass on two empty sets.
        assert!(lines.contains("connwatch_open_connections 32"));
        assert!(lines.contains("connwatch_connections_opened_total 439"));
        assert!(lines.contains("connwatch_uptime_seconds 12.5"));
        assert!(lines.contains(r#"connwatch_client_open{addr="10.0.0.5"} 30"#));
        assert!(lines.len() > 100, "{}", lines.len());
    }

    #[test]
    fn units_come_from_the_names_and_big_counts_stay_exact_enough() {
        assert_eq!(unit_of("connwatch_uptime_seconds"), "s");
        assert_eq!(unit_of("connwatch_client_idle_max_seconds"), "s");
        assert_eq!(unit_of("connwatch_sent_bytes_total"), "By");
        assert_eq!(unit_of("connwatch_capacity_ratio"), "1");
        assert_eq!(unit_of("connwatch_open_connections"), "");
        let mut report = full_report();
        report.totals.opened = u64::MAX;
        let req = decode_metrics(&encode(&metrics_request(&origin(), &[report], 2)));
        let opened = req.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == "connwatch_connections_opened_total")
            .unwrap();
        let Some(metric::Data::Sum(s)) = &opened.data else {
            panic!("{opened:?}")
        };
        assert_eq!(
            s.data_points[0].value,
            Some(number_data_point::Value::AsDouble(u64::MAX as f64))
        );
        let uptime = req.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == "connwatch_uptime_seconds")
            .unwrap();
        assert_eq!(uptime.unit, "s");
    }

    #[test]
    fn each_instance_is_a_resource_and_its_label_moves_there() {
        let home = full_report();
        let mut boxed = full_report();
        boxed.totals.open = 3;
        boxed.instance = Some(Instance {
            container_id: Some(format!("3f1c9e2d5b7a{}", "0".repeat(52))),
            ..Instance::bare(
                InstanceKey {
                    netns: 4_026_532_500,
                },
                false,
            )
        });
        let req = decode_metrics(&encode(&metrics_request(&origin(), &[home, boxed], 2)));
        assert_eq!(req.resource_metrics.len(), 2);
        let res = &req.resource_metrics[1]
            .resource
            .as_ref()
            .unwrap()
            .attributes;
        assert_eq!(
            text(res, "service.instance.id"),
            "cache-7:6379/3f1c9e2d5b7a"
        );
        assert_eq!(text(res, "connwatch.redis_instance"), "3f1c9e2d5b7a");
        assert_eq!(text(res, "container.id").len(), 64);
        let metrics = &req.resource_metrics[1].scope_metrics[0].metrics;
        let open = metrics
            .iter()
            .find(|m| m.name == "connwatch_open_connections")
            .unwrap();
        let Some(metric::Data::Gauge(g)) = &open.data else {
            panic!("{open:?}")
        };
        assert_eq!(g.data_points.len(), 1);
        assert!(g.data_points[0].attributes.is_empty(), "no redis_instance");
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsInt(3))
        );
    }

    #[test]
    fn transitions_are_log_records_with_severity_and_flat_evidence() {
        let mut report = full_report();
        let mut leak = verdict(VerdictKind::Leak, Severity::Critical, Some("10.0.0.5"));
        leak.summary = "10.0.0.5 leaks".into();
        leak.evidence = json!({
            "open": 30,
            "idle_p50_s": 40.5,
            "growing": true,
            "window": {"span_s": 120, "growth": 12},
            "ports": [6379, 6380],
            "top": [{"addr": "10.0.0.5"}],
            "exhaustion_in_s": null,
        })
        .as_object()
        .unwrap()
        .clone();
        let mut cap = verdict(VerdictKind::CapacityWarning, Severity::Warning, None);
        cap.summary = "capacity at 82 %".into();
        report.verdicts = vec![leak, cap];
        let mut t = Transitions::default();
        let lines = t.update(&report);
        let req = logs_request(&origin(), &[(&report, lines)]).unwrap();
        let req = ExportLogsServiceRequest::decode(encode(&req).as_slice()).unwrap();
        let records = &req.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(records.len(), 2);
        let r = &records[0];
        assert_eq!(r.severity_number, SeverityNumber::Error as i32);
        assert_eq!(r.severity_text, "critical");
        assert_eq!(r.event_name, EVENT_NAME);
        assert_eq!(
            r.body.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("10.0.0.5 leaks".into()))
        );
        let a = &r.attributes;
        assert_eq!(text(a, "connwatch.event"), "raised");
        assert_eq!(text(a, "connwatch.verdict.kind"), "leak");
        assert_eq!(text(a, "connwatch.verdict.severity"), "critical");
        assert_eq!(text(a, "client.address"), "10.0.0.5");
        assert_eq!(
            attr(a, "connwatch.evidence.open"),
            Some(&any_value::Value::IntValue(30))
        );
        assert_eq!(
            attr(a, "connwatch.evidence.idle_p50_s"),
            Some(&any_value::Value::DoubleValue(40.5))
        );
        assert_eq!(
            attr(a, "connwatch.evidence.growing"),
            Some(&any_value::Value::BoolValue(true))
        );
        assert_eq!(
            attr(a, "connwatch.evidence.window.growth"),
            Some(&any_value::Value::IntValue(12))
        );
        let Some(any_value::Value::ArrayValue(ports)) = attr(a, "connwatch.evidence.ports") else {
            panic!("{a:?}")
        };
        assert_eq!(ports.values.len(), 2);
        assert_eq!(
            text(a, "connwatch.evidence.top"),
            r#"[{"addr":"10.0.0.5"}]"#
        );
        assert_eq!(attr(a, "connwatch.evidence.exhaustion_in_s"), None);
        assert_eq!(records[1].severity_number, SeverityNumber::Warn as i32);
        assert_eq!(records[1].severity_text, "warning");
        assert_eq!(attr(&records[1].attributes, "client.address"), None);

        // Nothing changed: no request. Then both clear, as INFO "cleared".
        assert!(logs_request(&origin(), &[(&report, t.update(&report))]).is_none());
        report.verdicts.clear();
        let req = logs_request(&origin(), &[(&report, t.update(&report))]).unwrap();
        let records = &req.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(records.len(), 2);
        for r in records {
            assert_eq!(r.severity_number, SeverityNumber::Info as i32);
            assert_eq!(r.severity_text, "cleared");
            assert_eq!(text(&r.attributes, "connwatch.event"), "cleared");
        }
        // The cleared leak still carries its evidence.
        let leak = records
            .iter()
            .find(|r| text(&r.attributes, "connwatch.verdict.kind") == "leak")
            .unwrap();
        assert_eq!(
            attr(&leak.attributes, "connwatch.evidence.open"),
            Some(&any_value::Value::IntValue(30))
        );
    }
}
