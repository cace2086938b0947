//! NDJSON: one report object per line, `"type"` first.
//!
//! The line's shape is [`Report`]'s serde derive: keys in declaration order,
//! counts as integers, durations as floats in the unit the key names. The client
//! rows, most of a busy host's line, are written by [`super::json_row`] (the
//! same text, several times faster), and the line goes out in one write.

use crate::model::{ClientRows, Report};
use std::io::{self, Write};

use super::json_row::write_row;

/// The report as one JSON object, every key of every row written, without the
/// trailing newline.
pub fn render_json(report: &Report) -> serde_json::Result<String> {
    let mut buf = Vec::new();
    render(&mut buf, report, false)?;
    // Only JSON text went in.
    String::from_utf8(buf).map_err(serde::ser::Error::custom)
}

/// Writes the report as one NDJSON line (newline included); `sparse`: its client
/// rows without the keys at their default (see [`super::json_row`]).
pub fn write_line<W: Write>(mut out: W, report: &Report, sparse: bool) -> io::Result<()> {
    LINE.with_borrow_mut(|buf| {
        buf.clear();
        render(buf, report, sparse)?;
        buf.push(b'\n');
        let written = out.write_all(buf);
        // A line of a flood is megabytes: the memory is kept for the next one
        // (a fresh allocation is paged in anew each time), up to a bound.
        if buf.capacity() > LINE_KEPT {
            *buf = Vec::new();
        }
        written
    })
}

/// The largest line buffer kept between lines.
const LINE_KEPT: usize = 32 << 20;

thread_local! {
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The report's object into `buf`: everything but the rows by the derive, which
/// ends with the empty rows (`clients` is the last key), then the rows.
fn render(buf: &mut Vec<u8>, report: &Report, sparse: bool) -> serde_json::Result<()> {
    const EMPTY_ROWS_END: &[u8] = b"\"clients\":[]}";
    buf.reserve(4096 + report.clients.len() * 480);
    let head = Report {
        clients: ClientRows::default(),
        evicted: Vec::new(),
        ..report.clone()
    };
    serde_json::to_writer(&mut *buf, &head)?;
    if !buf.ends_with(EMPTY_ROWS_END) {
        // Not reached while `clients` is the last key (a test checks it).
        buf.clear();
        return serde_json::to_writer(buf, report);
    }
    buf.truncate(buf.len() - 2);
    for (i, c) in report.clients.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_row(buf, c, sparse);
    }
    buf.extend_from_slice(b"]}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::testing::{client, report_with};
    use serde_json::{Value, json};
    use std::time::{Duration, UNIX_EPOCH};

    fn sample() -> Report {
        let mut busy = client("10.1.2.3", 3, 2, 10);
        busy.seeded = 1;
        busy.closed = 7;
        busy.closed_by_server = 1;
        busy.server_closes = crate::model::ServerCloses {
            idle_timeout: 1,
            ..Default::default()
        };
        busy.closed_by_client = 5;
        busy.reset = 1;
        busy.lifetime = Some(Lifetime {
            p50: Duration::from_micros(850),
            p90: Duration::from_micros(12_000),
            p99: Duration::from_micros(1_500_000),
            max: Duration::from_micros(1_500_001),
        });
        busy.age = Some(Age {
            max: Duration::from_secs(310),
            lower_bound: true,
        });
        busy.idle = Some(Idle {
            p50: Duration::from_millis(3_200),
            max: Duration::from_secs(310),
        });
        busy.bytes_in = 1_234;
        busy.bytes_out = 56_789;
        let mut r = report_with(vec![busy, client("2001:db8::1", 0, 0, 0)]);
        r.ts = UNIX_EPOCH + Duration::from_nanos(1_795_986_000_123_900_000);
        r.uptime = Duration::from_micros(42_500_000);
        r.ports = vec![6379, 6380];
        r.totals.lost_events = 4;
        r.totals.accept_errors = Some(AcceptErrors::from_kernel(&[
            (libc::EMFILE, 812),
            (libc::EAGAIN, 9),
        ]));
        r.totals.evicted_clients = 1;
        r
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    #[test]
    fn line_is_one_object_with_exact_key_order() {
        let line = render_json(&sample()).unwrap();
        assert!(!line.contains('\n'));
        assert!(line.starts_with(r#"{"type":"report","ts":"2026-11-29T21:00:00.123Z","#));
        // serde_json keeps key order with its `preserve_order` feature only, so the
        // order is checked on the text itself.
        let order = [
            r#""type""#,
            r#""ts""#,
            r#""uptime_s""#,
            r#""ports""#,
            r#""role""#,
            r#""instance""#,
            r#""probe""#,
            r#""totals""#,
            r#""open""#,
            r#""opened""#,
            r#""closed""#,
            r#""closed_by_server""#,
            r#""closed_by_client""#,
            r#""reset""#,
            r#""clients""#,
            r#""lost_events""#,
            r#""vanished""#,
            r#""closes_without_bytes""#,
            r#""accept_errors""#,
            r#""evicted_clients""#,
            r#""rejected""#,
            r#""rejected_by_reason""#,
            r#""refused""#,
            r#""accept_errors_per_s""#,
            r#""synack_retransmits""#,
            r#""redis":{"status""#,
            r#""limits""#,
            r#""capacity":{"source""#,
            r#""verdicts":[]"#,
            r#""clients_mode":"full""#,
            r#""clients_omitted":0"#,
            r#""clients_gone":[]"#,
            r#""clients":[{"addr""#,
            r#""open""#,
            r#""seeded""#,
            r#""opened""#,
            r#""closed""#,
            r#""closed_by_server""#,
            r#""closed_by_client""#,
            r#""reset""#,
            r#""rejected""#,
            r#""refused""#,
            r#""internal""#,
            r#""verdict""#,
            r#""lifetime_ms""#,
            r#""age_s""#,
            r#""idle_s""#,
            r#""bytes_in""#,
            r#""bytes_out""#,
            r#""retry""#,
            r#""rates""#,
        ];
        let mut from = 0;
        for key in order {
            let at = line[from..]
                .find(key)
                .unwrap_or_else(|| panic!("{key} missing after byte {from} in {line}"));
            from += at + key.len();
        }
    }

    #[test]
    fn line_parses_back_to_the_right_values() {
        let v: Value = serde_json::from_str(&render_json(&sample()).unwrap()).unwrap();
        assert_eq!(v["type"], "report");
        assert_eq!(v["ts"], "2026-11-29T21:00:00.123Z");
        assert_eq!(v["uptime_s"], 42.5);
        assert_eq!(v["ports"], json!([6379, 6380]));
        assert_eq!(
            v["totals"],
            json!({
                "open": 3, "opened": 10, "closed": 7, "closed_by_server": 1,
                "server_closes": {"rejection": 0, "idle_timeout": 0, "output_buffer": 0, "other": 0},
                "closed_by_client": 5, "reset": 1, "clients": 2, "lost_events": 4,
                "vanished": 0, "closes_without_bytes": 0, "accept_errors": {"EMFILE": 812},
                "evicted_clients": 1, "rejected": 0,
                "rejected_by_reason": {"maxclients": 0, "protected_mode": 0, "tls": 0, "unknown": 0},
                "refused": 0, "accept_errors_per_s": 0.0, "synack_retransmits": 0
            })
        );
        assert_eq!(
            v["clients"][0],
            json!({
                "addr": "10.1.2.3", "open": 3, "seeded": 1, "opened": 10, "closed": 7,
                "closed_by_server": 1,
                "server_closes": {"rejection": 0, "idle_timeout": 1, "output_buffer": 0, "other": 0},
                "closed_by_client": 5, "reset": 1,
                "rejected": 0, "refused": 0, "internal": false, "verdict": "healthy",
                "lifetime_ms": {"p50": 0.85, "p90": 12.0, "p99": 1500.0, "max": 1500.001},
                "age_s": {"max": 310.0, "lower_bound": true},
                "idle_s": {"p50": 3.2, "max": 310.0}, "send_queue": null,
                "bytes_in": 1234, "bytes_out": 56789, "retry": null, "rates": null
            })
        );
        // Counts are integers, not floats.
        assert!(v["totals"]["open"].is_u64());
        assert!(v["clients"][0]["bytes_out"].is_u64());
    }

    #[test]
    fn instance_names_its_namespace_process_and_container() {
        let mut r = sample();
        r.instance = Some(crate::model::Instance {
            netns: 4_026_532_500,
            host_netns: false,
            pid: Some(81_234),
            ns_pid: Some(1),
            comm: Some("redis-server".into()),
            container_id: Some("c".repeat(64)),
            pod_uid: None,
        });
        let v: Value = serde_json::from_str(&render_json(&r).unwrap()).unwrap();
        assert_eq!(
            v["instance"],
            json!({
                "netns": 4_026_532_500u32,
                "host_netns": false,
                "pid": 81_234,
                "ns_pid": 1,
                "comm": "redis-server",
                "container_id": "c".repeat(64),
                "pod_uid": null
            })
        );
    }

    #[test]
    fn absent_figures_are_null_and_ipv6_is_text() {
        let v: Value = serde_json::from_str(&render_json(&sample()).unwrap()).unwrap();
        let quiet = &v["clients"][1];
        assert_eq!(quiet["addr"], "2001:db8::1");
        assert!(quiet["lifetime_ms"].is_null());
        assert!(quiet["age_s"].is_null());
        assert!(quiet["idle_s"].is_null());
        assert_eq!(keys(quiet).len(), 21);
        assert_eq!(keys(&v).len(), 17);
        assert_eq!(v["role"], "server");
        assert!(v["instance"].is_null());
        assert!(v["probe"].is_null());
        assert_eq!(v["verdicts"], json!([]));
        // listen_overflows, listen_drops and accept_queue are absent when unknown.
        assert_eq!(keys(&v["totals"]).len(), 18);
        assert!(v["totals"].get("accept_queue").is_none());
        assert_eq!(
            v["redis"],
            json!({"status": "disabled", "config": "unknown"})
        );
        assert_eq!(v["limits"], json!({}));
    }

    #[test]
    fn a_changed_report_says_what_it_left_out_and_what_is_gone() {
        let mut r = sample();
        r.clients.truncate(1);
        r.clients_mode = ClientsMode::Changed;
        r.clients_omitted = 7;
        r.clients_gone = vec!["10.0.0.9".parse().unwrap(), "2001:db8::2".parse().unwrap()];
        let line = render_json(&r).unwrap();
        assert!(line.contains(
            r#""verdicts":[],"recommendations":[],"clients_mode":"changed","clients_omitted":7,"clients_gone":["10.0.0.9","2001:db8::2"],"clients":[{"addr":"10.1.2.3","#
        ));
    }

    #[test]
    fn write_line_ends_the_line() {
        let mut out = Vec::new();
        write_line(&mut out, &sample(), false).unwrap();
        write_line(&mut out, &sample(), false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(text.ends_with("}\n"));
        assert_eq!(lines[0], render_json(&sample()).unwrap());
    }

    #[test]
    fn the_line_is_the_derives_text_with_rows_written_by_hand() {
        for report in [
            sample(),
            Report {
                clients: Vec::new().into(),
                ..sample()
            },
        ] {
            let mut head = Vec::new();
            serde_json::to_writer(
                &mut head,
                &Report {
                    clients: Vec::new().into(),
                    ..report.clone()
                },
            )
            .unwrap();
            // `clients` is the last key: the fast path is taken.
            assert!(head.ends_with(br#""clients":[]}"#));
            assert_eq!(
                render_json(&report).unwrap(),
                serde_json::to_string(&report).unwrap()
            );
        }
    }

    #[test]
    fn empty_report_has_empty_clients_and_errors() {
        let report = Report {
            clients: Vec::new().into(),
            totals: Totals::default(),
            ..sample()
        };
        let v: Value = serde_json::from_str(&render_json(&report).unwrap()).unwrap();
        assert_eq!(v["clients"], json!([]));
        assert_eq!(v["totals"]["accept_errors"], json!({}));
    }
}
