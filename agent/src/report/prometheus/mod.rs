//! Prometheus: the report in the text exposition format (version 0.0.4). The
//! command layer serves the latest one at `/metrics` (`crate::cmd::metrics_http`);
//! nothing here touches the network.
//!
//! Every family is prefixed `connwatch_`; counters end in `_total`; durations are
//! in seconds. A figure the report does not know (Redis unreachable, a /proc file
//! unreadable) is not emitted at all, never as 0. Label sets that alerts select on
//! are stable: every rejection reason, every Redis status, every verdict kind and
//! severity is emitted, with 0 when it does not apply, so an alert never depends on
//! a series appearing.
//!
//! Per-address series are capped: the first `top` client rows, in the report's
//! order (worst first), each with its own `addr` label, and one `addr="other"`
//! row that sums the rest, always present. Cardinality is therefore bounded by
//! `top + 1` whatever the number of clients. A caveat of the cap: when an address
//! moves between the top rows and `other`, the `other` counters can go down, which
//! Prometheus reads as a counter reset; per-address counters only go down when an
//! address is forgotten (see `evicted_clients`) and comes back.
//!
//! The writer and its escaping are in `exposition`, the host-level families in
//! `families`, the per-address ones in `clients`.

mod clients;
mod exposition;
mod families;

use crate::model::Report;

use self::clients::client_families;
use self::exposition::Exposition;
use self::families::{
    agent_families, capacity_families, connection_families, limit_families, otlp_families,
    redis_families, verdict_families,
};

pub use clients::OTHER;
pub use exposition::{MetricFamily, MetricType, Num, Sample};

/// The media type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `report` in the Prometheus text exposition format 0.0.4. Per-address
/// series are limited to the first `top` client rows plus one `addr="other"`
/// aggregate of the rest.
pub fn render(report: &Report, top: usize) -> String {
    let mut x = Exposition {
        out: String::with_capacity(8 * 1024 + report.clients.len().min(top) * 1024),
        instance: report
            .instance
            .as_ref()
            .and_then(crate::model::Instance::metric_label),
        collected: None,
    };
    all_families(&mut x, report, top);
    x.out
}

/// The families [`render`] writes, as data (for the OTLP encoder): the same names,
/// types, labels and values, through the same calls. The `redis_instance` label
/// is left out: it names the report's instance, which OTLP carries in its resource.
pub fn families(report: &Report, top: usize) -> Vec<MetricFamily> {
    let mut x = Exposition {
        out: String::new(),
        instance: None,
        collected: Some(Vec::with_capacity(64)),
    };
    all_families(&mut x, report, top);
    x.collected.unwrap_or_default()
}

fn all_families(x: &mut Exposition, report: &Report, top: usize) {
    instance_family(x, report);
    probe_family(x, report);
    agent_families(x, report);
    otlp_families(x, report);
    connection_families(x, report);
    capacity_families(x, report);
    limit_families(x, report);
    redis_families(x, report);
    verdict_families(x, report);
    client_families(x, report, top);
}

/// The reports of every instance of one interval in one exposition: each
/// instance's series carry its `redis_instance` label (none for the host's own
/// Redis), so the label set is bounded by the number of Redis instances.
pub fn render_all(reports: &[Report], top: usize) -> String {
    let texts: Vec<String> = reports.iter().map(|r| render(r, top)).collect();
    exposition::merge(&texts)
}

/// `connwatch_probe_feature`: each source of facts, 1 when the kernel offers it.
fn probe_family(x: &mut Exposition, r: &Report) {
    let Some(p) = &r.probe else {
        return;
    };
    let kernel = p.kernel.as_deref().unwrap_or("");
    let mut family = x.family(
        "connwatch_probe_feature",
        exposition::MetricType::Gauge,
        "Whether the kernel programs can see this source of facts on this kernel \
         (1) or not (0: its figures are unknown, not 0); the kernel release as a label.",
    );
    for (feature, on) in p.features.each() {
        family.sample(&[("feature", feature), ("kernel", kernel)], u64::from(on));
    }
}

/// `connwatch_instance_info`: what the report knows of its instance, as labels.
fn instance_family(x: &mut Exposition, r: &Report) {
    let Some(i) = &r.instance else {
        return;
    };
    let netns = i.netns.to_string();
    let pid = i.pid.map(|p| p.to_string()).unwrap_or_default();
    let ns_pid = i.ns_pid.map(|p| p.to_string()).unwrap_or_default();
    x.family(
        "connwatch_instance_info",
        exposition::MetricType::Gauge,
        "The Redis these series are about (always 1): its network namespace inode, \
         its pid as the host and as its own PID namespace number it, its process \
         name, and the container id and pod UID of its cgroup (empty when none); \
         role: server (the Redis host) or client (client mode, --remote-port: this \
         host's own connections, the instance its client namespace).",
    )
    .sample(
        &[
            ("netns", &netns),
            ("host_netns", if i.host_netns { "true" } else { "false" }),
            ("pid", &pid),
            ("ns_pid", &ns_pid),
            ("comm", i.comm.as_deref().unwrap_or("")),
            ("container_id", i.container_id.as_deref().unwrap_or("")),
            ("pod_uid", i.pod_uid.as_deref().unwrap_or("")),
            ("role", r.role.as_str()),
        ],
        1u64,
    );
}

#[cfg(test)]
mod tests {
    use crate::model::*;
    use std::collections::HashSet;
    use std::net::IpAddr;
    use std::time::{Duration, UNIX_EPOCH};

    use super::exposition::escape_help;
    use super::*;
    use crate::testing::{client, full_report};

    /// A report of a host that knows nothing: no Redis, /proc unreadable.
    fn bare_report() -> Report {
        Report {
            kind: Kind::Report,
            ts: UNIX_EPOCH + Duration::from_secs(1),
            uptime: Duration::ZERO,
            ports: vec![6379],
            role: Role::Server,
            instance: None,
            probe: None,
            otlp: None,
            totals: Totals::default(),
            redis: RedisReport::default(),
            limits: Limits::default(),
            capacity: Capacity {
                source: CapacitySource::Kernel,
                connected_clients: None,
                connected_slaves: None,
                cluster_connections: None,
                blocked_clients: None,
                unix_clients: None,
                used: 0,
                limit: None,
                ratio: None,
                headroom: None,
            },
            verdicts: Vec::new(),
            recommendations: Vec::new(),
            clients_mode: ClientsMode::Full,
            clients_omitted: 0,
            clients_gone: Vec::new(),
            clients: Vec::new().into(),
            evicted: Vec::new(),
        }
    }

    #[track_caller]
    fn has(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in:\n{text}"
        );
    }

    #[track_caller]
    fn lacks(text: &str, prefix: &str) {
        assert!(
            !text.lines().any(|l| l.starts_with(prefix)),
            "unexpected {prefix:?} in:\n{text}"
        );
    }

    /// The structure the format requires: HELP then TYPE then the samples of each
    /// family, families contiguous and never repeated, names and label syntax
    /// valid, every line ending in a newline.
    #[track_caller]
    fn check_format(text: &str) {
        assert!(text.ends_with('\n'));
        let mut seen = HashSet::new();
        let mut current: Option<&str> = None;
        let mut typed = false;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(seen.insert(name), "family {name} repeated");
                assert!(name.starts_with("connwatch_"), "{name}");
                assert!(
                    name.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                    "{name}"
                );
                current = Some(name);
                typed = false;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(Some(name), current, "TYPE right after HELP");
                assert!(kind == "counter" || kind == "gauge");
                assert_eq!(
                    name.ends_with("_total"),
                    kind == "counter",
                    "{name}: _total on counters only"
                );
                typed = true;
            } else {
                let name_end = line.find(['{', ' ']).unwrap();
                assert_eq!(
                    Some(&line[..name_end]),
                    current,
                    "sample outside its family"
                );
                assert!(typed);
                let value = line.rsplit(' ').next().unwrap();
                assert!(
                    value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
                    "value {value:?}"
                );
            }
        }
    }

    #[test]
    fn the_probes_sources_are_one_series_each_and_absent_when_unknown() {
        let mut r = full_report();
        assert!(!render(&r, 2).contains("connwatch_probe_feature"));
        r.probe = Some(ProbeReport {
            kernel: Some("6.1.0-28-cloud-amd64".into()),
            features: Features {
                refusals: false,
                ..Features::ALL
            },
        });
        let text = render(&r, 2);
        check_format(&text);
        has(
            &text,
            r#"connwatch_probe_feature{feature="refusals",kernel="6.1.0-28-cloud-amd64"} 0"#,
        );
        has(
            &text,
            r#"connwatch_probe_feature{feature="connections",kernel="6.1.0-28-cloud-amd64"} 1"#,
        );
        let series = text
            .lines()
            .filter(|l| l.starts_with("connwatch_probe_feature{"))
            .count();
        assert_eq!(series, 6);
    }

    #[test]
    fn instances_share_families_and_containers_carry_a_label() {
        let host = InstanceKey {
            netns: 4_026_531_840,
        };
        let mut home = full_report();
        home.instance = Some(Instance::bare(host, true));
        let mut boxed = full_report();
        boxed.totals.open = 3;
        boxed.instance = Some(Instance {
            netns: 4_026_532_500,
            host_netns: false,
            pid: Some(8123),
            ns_pid: Some(1),
            comm: Some("redis-server".into()),
            container_id: Some(format!("3f1c9e2d5b7a{}", "0".repeat(52))),
            pod_uid: None,
        });
        let text = render_all(&[home.clone(), boxed], 2);
        check_format(&text);
        // The host's Redis keeps its unlabelled series; the container's are labelled.
        has(
            &text,
            &format!("connwatch_open_connections {}", home.totals.open),
        );
        has(
            &text,
            r#"connwatch_open_connections{redis_instance="3f1c9e2d5b7a"} 3"#,
        );
        has(
            &text,
            r#"connwatch_client_open{redis_instance="3f1c9e2d5b7a",addr="other"} 1"#,
        );
        has(
            &text,
            &format!(
                r#"connwatch_instance_info{{redis_instance="3f1c9e2d5b7a",netns="4026532500",host_netns="false",pid="8123",ns_pid="1",comm="redis-server",container_id="3f1c9e2d5b7a{}",pod_uid="",role="server"}} 1"#,
                "0".repeat(52)
            ),
        );
        has(
            &text,
            r#"connwatch_instance_info{netns="4026531840",host_netns="true",pid="",ns_pid="",comm="",container_id="",pod_uid="",role="server"} 1"#,
        );
        // One instance alone renders as before, plus its info line.
        assert_eq!(render_all(&[home.clone()], 2), render(&home, 2));
        assert_eq!(render_all(&[], 2), "");
    }

    #[test]
    fn host_series_have_exact_values() {
        let text = render(&full_report(), 2);
        check_format(&text);
        has(&text, "# TYPE connwatch_open_connections gauge");
        has(&text, "connwatch_open_connections 32");
        has(&text, "# TYPE connwatch_connections_opened_total counter");
        has(&text, "connwatch_connections_opened_total 439");
        has(&text, "connwatch_connections_closed_total 408");
        has(&text, "connwatch_connections_closed_by_server_total 150");
        for (reason, n) in [
            ("rejection", 120),
            ("idle_timeout", 20),
            ("output_buffer", 4),
            ("other", 6),
        ] {
            has(
                &text,
                &format!("connwatch_server_closes_total{{reason=\"{reason}\"}} {n}"),
            );
        }
        has(&text, "connwatch_connections_closed_by_client_total 200");
        has(&text, "connwatch_connections_reset_total 58");
        has(
            &text,
            r#"connwatch_connections_rejected_total{reason="maxclients"} 148"#,
        );
        has(
            &text,
            r#"connwatch_connections_rejected_total{reason="protected_mode"} 0"#,
        );
        has(
            &text,
            r#"connwatch_connections_rejected_total{reason="tls"} 2"#,
        );
        has(
            &text,
            r#"connwatch_connections_rejected_total{reason="unknown"} 7"#,
        );
        has(&text, "connwatch_connections_refused_total 51");
        has(
            &text,
            r#"connwatch_accept_errors_total{errno="EMFILE"} 812"#,
        );
        has(&text, r#"connwatch_accept_errors_total{errno="ENFILE"} 0"#);
        has(
            &text,
            r#"connwatch_accept_errors_total{errno="ECONNABORTED"} 2"#,
        );
        has(&text, "connwatch_lost_events_total 3");
        has(&text, "connwatch_listen_overflows_total 4");
        has(&text, "connwatch_listen_drops_total 4");
        has(&text, "connwatch_synack_retransmits_total 9");
        has(&text, "connwatch_accept_queue_depth 5");
        has(&text, "connwatch_accept_queue_backlog 511");
        has(&text, "connwatch_report_timestamp_seconds 1795986000.123");
        has(&text, "connwatch_uptime_seconds 12.5");
        // Capacity and limits.
        has(&text, r#"connwatch_capacity_source{source="info"} 1"#);
        has(&text, r#"connwatch_capacity_source{source="kernel"} 0"#);
        has(&text, "connwatch_capacity_used 32");
        has(&text, "connwatch_capacity_limit 32");
        has(&text, "connwatch_capacity_ratio 1");
        has(&text, "connwatch_capacity_headroom 0");
        has(&text, "connwatch_capacity_unix_clients 4");
        has(&text, "connwatch_maxclients 10000");
        has(&text, "connwatch_effective_maxclients 32");
        has(&text, "connwatch_nofile_soft_limit 64");
        has(&text, "connwatch_nofile_hard_limit 524288");
        has(&text, "connwatch_open_fds 63");
        has(&text, "connwatch_somaxconn 4096");
        has(&text, "connwatch_file_handles_max 9223372036854775807");
        // Redis.
        has(&text, "connwatch_redis_up 1");
        has(&text, r#"connwatch_redis_status{status="ok"} 1"#);
        has(&text, r#"connwatch_redis_status{status="unreachable"} 0"#);
        has(&text, r#"connwatch_redis_config_status{status="ok"} 1"#);
        has(
            &text,
            r#"connwatch_redis_info{server="redis",version="7.0.15",role="master"} 1"#,
        );
        has(&text, "connwatch_redis_connected_clients 31");
        has(&text, "connwatch_redis_rejected_connections_total 207");
        has(&text, "connwatch_redis_connections_received_total 1000");
        has(&text, "connwatch_redis_timeout_seconds 0");
        has(&text, "connwatch_redis_mem_clients_normal_bytes 20504");
        // Redis 7.0 does not count output-buffer drops: no series, not 0.
        lacks(&text, "connwatch_redis_output_buffer_disconnections_total");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("connwatch_redis_status{"))
                .count(),
            RedisStatus::ALL.len()
        );
        has(&text, r#"connwatch_redis_status{status="tls_failed"} 0"#);
        has(&text, r#"connwatch_redis_status{status="noperm"} 0"#);
    }

    #[test]
    fn valkeys_output_buffer_disconnections_are_a_counter() {
        let mut r = full_report();
        r.redis.server = Some("valkey".into());
        r.redis.client_output_buffer_limit_disconnections = Some(9);
        r.redis.client_output_buffer_limit_disconnections_delta = Some(3);
        let text = render(&r, 2);
        has(
            &text,
            "# TYPE connwatch_redis_output_buffer_disconnections_total counter",
        );
        has(
            &text,
            "connwatch_redis_output_buffer_disconnections_total 9",
        );
    }

    #[test]
    fn verdicts_are_a_gauge_per_kind_and_severity() {
        let text = render(&full_report(), 2);
        has(
            &text,
            r#"connwatch_verdict{kind="fd_limit",severity="critical"} 1"#,
        );
        has(
            &text,
            r#"connwatch_verdict{kind="fd_limit",severity="warning"} 0"#,
        );
        has(
            &text,
            r#"connwatch_verdict{kind="leak",severity="warning"} 1"#,
        );
        has(
            &text,
            r#"connwatch_verdict{kind="retry_storm",severity="warning"} 0"#,
        );
        has(
            &text,
            r#"connwatch_verdict{kind="capacity_critical",severity="critical"} 0"#,
        );
        let series = text
            .lines()
            .filter(|l| l.starts_with("connwatch_verdict{"))
            .count();
        assert_eq!(series, VerdictKind::ALL.len() * Severity::ALL.len());
        // Nothing active: every series is there, at 0.
        let bare = render(&bare_report(), 2);
        assert_eq!(
            bare.lines()
                .filter(|l| l.starts_with("connwatch_verdict{") && l.ends_with(" 0"))
                .count(),
            series
        );
    }

    #[test]
    fn the_nearest_exhaustion_forecast_is_a_gauge_absent_without_one() {
        let mut r = full_report();
        assert!(!render(&r, 2).contains("connwatch_exhaustion_seconds "));
        for (v, s) in r.verdicts.iter_mut().zip([7_200.0, 900.0]) {
            v.evidence
                .insert("exhaustion_in_s".into(), serde_json::json!(s));
        }
        assert!(r.verdicts.len() >= 2);
        has(&render(&r, 2), "connwatch_exhaustion_seconds 900");
    }

    #[test]
    fn label_names_match_the_json_report() {
        for &kind in VerdictKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        let distinct: HashSet<_> = VerdictKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(distinct.len(), VerdictKind::ALL.len());
        for &s in Severity::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for &v in ClientVerdict::ALL {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
        for &s in RedisStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for &s in ConfigStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn clients_are_capped_to_the_top_n_plus_other() {
        let report = full_report();
        let order: Vec<String> = report.clients.iter().map(|c| c.addr.to_string()).collect();
        assert_eq!(order, ["10.0.0.5", "2001:db8::7", "10.0.0.9", "10.0.0.10"]);
        let text = render(&report, 2);
        check_format(&text);
        // The two worst, by name.
        has(&text, r#"connwatch_client_open{addr="10.0.0.5"} 30"#);
        has(&text, r#"connwatch_client_open{addr="2001:db8::7"} 1"#);
        has(
            &text,
            r#"connwatch_client_opened_total{addr="2001:db8::7"} 400"#,
        );
        has(
            &text,
            r#"connwatch_client_closed_total{addr="2001:db8::7"} 200"#,
        );
        has(
            &text,
            r#"connwatch_client_rejected_total{addr="2001:db8::7"} 150"#,
        );
        has(
            &text,
            r#"connwatch_client_refused_total{addr="2001:db8::7"} 50"#,
        );
        has(
            &text,
            r#"connwatch_client_idle_max_seconds{addr="10.0.0.5"} 95.25"#,
        );
        has(
            &text,
            r#"connwatch_client_lifetime_p99_seconds{addr="2001:db8::7"} 0.001204"#,
        );
        has(
            &text,
            r#"connwatch_client_verdict{addr="10.0.0.5",verdict="leak"} 1"#,
        );
        has(
            &text,
            r#"connwatch_client_verdict{addr="10.0.0.5",verdict="healthy"} 0"#,
        );
        has(
            &text,
            r#"connwatch_client_verdict{addr="2001:db8::7",verdict="retry_storm"} 1"#,
        );
        // The other two, summed.
        lacks(&text, r#"connwatch_client_open{addr="10.0.0.9"}"#);
        lacks(&text, r#"connwatch_client_open{addr="10.0.0.10"}"#);
        has(&text, r#"connwatch_client_open{addr="other"} 1"#);
        has(&text, r#"connwatch_client_opened_total{addr="other"} 9"#);
        has(&text, r#"connwatch_client_closed_total{addr="other"} 8"#);
        has(&text, r#"connwatch_client_rejected_total{addr="other"} 7"#);
        has(&text, r#"connwatch_client_refused_total{addr="other"} 1"#);
        has(
            &text,
            r#"connwatch_client_idle_max_seconds{addr="other"} 7.5"#,
        );
        lacks(
            &text,
            r#"connwatch_client_lifetime_p99_seconds{addr="other"}"#,
        );
        has(
            &text,
            r#"connwatch_client_verdict{addr="other",verdict="healthy"} 1"#,
        );
        has(
            &text,
            r#"connwatch_client_verdict{addr="other",verdict="backing_off"} 1"#,
        );
        has(
            &text,
            r#"connwatch_client_verdict{addr="other",verdict="leak"} 0"#,
        );
        // Bounded: top + 1 addresses per family.
        let open = text
            .lines()
            .filter(|l| l.starts_with("connwatch_client_open{"))
            .count();
        assert_eq!(open, 3);
        let verdicts = text
            .lines()
            .filter(|l| l.starts_with("connwatch_client_verdict{"))
            .count();
        assert_eq!(verdicts, 3 * ClientVerdict::ALL.len());
    }

    #[test]
    fn local_processes_of_the_top_addresses_with_the_rest_as_other() {
        let mut report = full_report();
        let proc = |pid: u32, comm: &str, open: u64| crate::model::ProcessReport {
            pid,
            comm: comm.into(),
            container: (pid == 4242).then(|| "3f2a".repeat(16).into()),
            pod: None,
            open,
            opened: open + 1,
            failed: u64::from(pid == 7),
            failed_by: crate::model::FailedBy {
                timed_out: u64::from(pid == 7),
                ..crate::model::FailedBy::default()
            },
        };
        let clients = report.clients.to_vec();
        let mut clients = clients;
        clients[0].processes = vec![proc(4242, "gunicorn", 30), proc(7, "cron", 0)].into();
        clients[0].processes_other = Some(Box::new(crate::model::OtherProcesses {
            open: 1,
            opened: 4,
            failed: 2,
            failed_by: crate::model::FailedBy {
                unknown: 2,
                ..crate::model::FailedBy::default()
            },
        }));
        // Beyond the top: not shown, whatever its processes.
        let last = clients.len() - 1;
        clients[last].processes = vec![proc(99, "hidden", 1)].into();
        let addr = clients[0].addr.to_string();
        report.clients = clients.into();
        let text = render(&report, 2);
        check_format(&text);
        let id = "3f2a".repeat(16);
        has(
            &text,
            &format!(
                r#"connwatch_client_process_open{{addr="{addr}",pid="4242",comm="gunicorn",container="{id}",pod=""}} 30"#
            ),
        );
        has(
            &text,
            &format!(
                r#"connwatch_client_process_failed_total{{addr="{addr}",pid="7",comm="cron",container="",pod=""}} 1"#
            ),
        );
        has(
            &text,
            &format!(
                r#"connwatch_client_process_opened_total{{addr="{addr}",pid="other",comm="",container="",pod=""}} 4"#
            ),
        );
        has(
            &text,
            &format!(
                r#"connwatch_client_process_failed_by_total{{addr="{addr}",pid="7",comm="cron",container="",pod="",cause="timed_out"}} 1"#
            ),
        );
        has(
            &text,
            &format!(
                r#"connwatch_client_process_failed_by_total{{addr="{addr}",pid="7",comm="cron",container="",pod="",cause="refused"}} 0"#
            ),
        );
        // Six causes per process whose causes are known; none for pid="other",
        // whose causes are not.
        let by = text
            .lines()
            .filter(|l| l.starts_with("connwatch_client_process_failed_by_total{"))
            .count();
        assert_eq!(by, 12);
        lacks(&text, "failed_by_total{addr=\"{addr}\",pid=\"other\"");
        lacks(&text, "connwatch_client_process_open{addr=\"other\"");
        assert!(!text.contains("hidden"));
        let open = text
            .lines()
            .filter(|l| l.starts_with("connwatch_client_process_open{"))
            .count();
        assert_eq!(open, 3);
        // Without processes, no family at all.
        lacks(&render(&full_report(), 2), "connwatch_client_process_open");
    }

    #[test]
    fn top_zero_and_top_beyond_the_clients() {
        let report = full_report();
        let none = render(&report, 0);
        check_format(&none);
        has(&none, r#"connwatch_client_open{addr="other"} 32"#);
        has(&none, r#"connwatch_client_opened_total{addr="other"} 439"#);
        has(
            &none,
            r#"connwatch_client_idle_max_seconds{addr="other"} 95.25"#,
        );
        let all = render(&report, 100);
        check_format(&all);
        has(&all, r#"connwatch_client_open{addr="10.0.0.10"} 0"#);
        has(&all, r#"connwatch_client_open{addr="other"} 0"#);
        lacks(&all, r#"connwatch_client_idle_max_seconds{addr="other"}"#);
        lacks(
            &all,
            r#"connwatch_client_idle_max_seconds{addr="10.0.0.10"}"#,
        );
    }

    #[test]
    fn unknown_values_are_not_emitted() {
        let text = render(&bare_report(), 20);
        check_format(&text);
        for absent in [
            "connwatch_listen_overflows_total",
            "connwatch_listen_drops_total",
            "connwatch_accept_queue_depth",
            "connwatch_accept_queue_backlog",
            "connwatch_capacity_limit",
            "connwatch_capacity_ratio",
            "connwatch_capacity_headroom",
            "connwatch_capacity_unix_clients",
            "connwatch_maxclients",
            "connwatch_effective_maxclients",
            "connwatch_nofile_soft_limit",
            "connwatch_nofile_hard_limit",
            "connwatch_open_fds",
            "connwatch_somaxconn",
            "connwatch_file_handles_",
            "connwatch_redis_info",
            "connwatch_redis_connected_clients",
            "connwatch_redis_rejected_connections_total",
            "connwatch_redis_timeout_seconds",
            "connwatch_client_idle_max_seconds",
            "connwatch_client_lifetime_p99_seconds",
            // No HELP/TYPE for a family without samples either.
            "# HELP connwatch_client_idle_max_seconds",
            "# TYPE connwatch_accept_queue_depth",
        ] {
            lacks(&text, absent);
        }
        has(&text, "connwatch_capacity_used 0");
        has(&text, "connwatch_redis_up 0");
        has(&text, r#"connwatch_redis_status{status="disabled"} 1"#);
        has(
            &text,
            r#"connwatch_redis_config_status{status="unknown"} 1"#,
        );
        has(&text, r#"connwatch_accept_errors_total{errno="EMFILE"} 0"#);
        has(&text, r#"connwatch_client_open{addr="other"} 0"#);
    }

    #[test]
    fn unlimited_fd_limits_are_infinite() {
        let mut report = bare_report();
        report.limits.nofile_unlimited = true;
        report.limits.nofile_hard = Some(4096);
        let text = render(&report, 1);
        check_format(&text);
        has(&text, "connwatch_nofile_soft_limit +Inf");
        has(&text, "connwatch_nofile_hard_limit 4096");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut report = bare_report();
        report.redis.server = Some("va\"lk\\ey\nx".into());
        report.redis.version = Some("8.0".into());
        let text = render(&report, 1);
        check_format(&text);
        has(
            &text,
            r#"connwatch_redis_info{server="va\"lk\\ey\nx",version="8.0",role=""} 1"#,
        );
        let mut help = String::new();
        escape_help(&mut help, "a\\b\nc \"d\"");
        assert_eq!(help, r#"a\\b\nc "d""#);
    }

    #[test]
    fn ipv6_clients_and_empty_reports_render() {
        let mut report = bare_report();
        report.clients = vec![client("::1", 2, 0, 2)].into();
        let addr: IpAddr = "::1".parse().unwrap();
        assert_eq!(report.clients[0].addr, addr);
        let text = render(&report, 5);
        check_format(&text);
        has(&text, r#"connwatch_client_open{addr="::1"} 2"#);
    }

    #[test]
    fn the_otlp_exporters_counts_only_when_exporting() {
        let mut r = full_report();
        lacks(&render(&r, 2), "connwatch_otlp_");
        r.otlp = Some(OtlpStatus {
            sent: 40,
            dropped: 5,
            retries: 9,
            queued: 3,
            failing_since: Some(r.ts),
            error: Some("HTTP 503".into()),
        });
        let text = render(&r, 2);
        check_format(&text);
        has(&text, "connwatch_otlp_sent_total 40");
        has(&text, "connwatch_otlp_dropped_total 5");
        has(&text, "connwatch_otlp_retries_total 9");
        has(&text, "connwatch_otlp_queued 3");
        has(&text, "connwatch_otlp_failing 1");
        r.otlp = Some(OtlpStatus::default());
        has(&render(&r, 2), "connwatch_otlp_failing 0");
    }
}
