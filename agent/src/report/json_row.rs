//! The client rows of an NDJSON line, written by hand.
//!
//! A line of a busy host is almost all client rows (2,000 new addresses a second
//! make 2,000 rows of ~440 bytes), and serde_json spends about 30 instructions a
//! byte on them: every key is scanned for escapes and every token is a separate
//! write. Here each row is written into one buffer with its keys as constant
//! bytes, its numbers through serde_json's own formatter, so the text is the one
//! the derive writes, byte for byte (a test compares them over every shape of
//! row, so a field added to [`ClientReport`] and not here fails it).
//!
//! The default stream (`--clients changed`) writes rows *sparse*: without the
//! keys whose value is their `default` in the schema (counts at 0, `false`,
//! figures that are `null`), which a reader puts back. A one-shot client's row
//! (most rows of a flood) is then ~40 % of its full size, and so is the work of
//! writing it. `--clients all` writes every key, as before.

use std::io::Write as _;

use serde_json::ser::{CompactFormatter, Formatter};

use std::net::IpAddr;

use crate::model::{ClientReport, FailedBy, Lifetime, ProcessReport, ServerCloses};

/// Appends `c` as the JSON object serde's derive makes of it; `sparse`: without
/// the keys whose value is their `default` in docs/report.schema.json (a test
/// checks the two agree over every shape of row).
pub fn write_row(out: &mut Vec<u8>, c: &ClientReport, sparse: bool) {
    // A key and its value, unless sparse and at its default.
    let count = |out: &mut Vec<u8>, key: &[u8], v: u64| {
        if !sparse || v != 0 {
            out.extend_from_slice(key);
            u64(out, v);
        }
    };
    out.extend_from_slice(b"{\"addr\":\"");
    addr(out, c.addr);
    out.push(b'"');
    count(out, b",\"open\":", c.open);
    count(out, b",\"seeded\":", c.seeded);
    count(out, b",\"opened\":", c.opened);
    count(out, b",\"closed\":", c.closed);
    count(out, b",\"closed_by_server\":", c.closed_by_server);
    let s = &c.server_closes;
    if !sparse || *s != ServerCloses::default() {
        out.extend_from_slice(b",\"server_closes\":{\"rejection\":");
        u64(out, s.rejection);
        out.extend_from_slice(b",\"idle_timeout\":");
        u64(out, s.idle_timeout);
        out.extend_from_slice(b",\"output_buffer\":");
        u64(out, s.output_buffer);
        out.extend_from_slice(b",\"other\":");
        u64(out, s.other);
        out.push(b'}');
    }
    count(out, b",\"closed_by_client\":", c.closed_by_client);
    count(out, b",\"reset\":", c.reset);
    count(out, b",\"rejected\":", c.rejected);
    match c.refused {
        Some(v) => count(out, b",\"refused\":", v),
        None => out.extend_from_slice(b",\"refused\":null"),
    }
    if c.internal {
        out.extend_from_slice(b",\"internal\":true");
    } else if !sparse {
        out.extend_from_slice(b",\"internal\":false");
    }
    out.extend_from_slice(b",\"verdict\":\"");
    out.extend_from_slice(c.verdict.as_str().as_bytes());
    out.push(b'"');
    // An object, or `null` (its default: left out when sparse).
    let null = |out: &mut Vec<u8>, key: &[u8]| {
        if !sparse {
            out.extend_from_slice(key);
            out.extend_from_slice(b"null");
        }
    };
    match &c.lifetime {
        Some(l) => {
            out.extend_from_slice(b",\"lifetime_ms\":");
            lifetime(out, l);
        }
        None => null(out, b",\"lifetime_ms\":"),
    }
    match &c.age {
        Some(a) => {
            out.extend_from_slice(b",\"age_s\":{\"max\":");
            secs(out, a.max);
            out.extend_from_slice(if a.lower_bound {
                b",\"lower_bound\":true}"
            } else {
                b",\"lower_bound\":false}"
            });
        }
        None => null(out, b",\"age_s\":"),
    }
    match &c.idle {
        Some(i) => {
            out.extend_from_slice(b",\"idle_s\":{\"p50\":");
            secs(out, i.p50);
            out.extend_from_slice(b",\"max\":");
            secs(out, i.max);
            out.push(b'}');
        }
        None => null(out, b",\"idle_s\":"),
    }
    match &c.send_queue {
        Some(q) => {
            out.extend_from_slice(b",\"send_queue\":{\"bytes\":");
            u64(out, q.bytes);
            out.extend_from_slice(b",\"max\":");
            u64(out, q.max);
            out.push(b'}');
        }
        None => null(out, b",\"send_queue\":"),
    }
    count(out, b",\"bytes_in\":", c.bytes_in);
    count(out, b",\"bytes_out\":", c.bytes_out);
    match &c.retry {
        Some(r) => {
            out.extend_from_slice(b",\"retry\":{\"gaps\":");
            u64(out, r.gaps);
            out.extend_from_slice(b",\"p50_ms\":");
            f64(out, r.p50_ms);
            out.extend_from_slice(b",\"last_ms\":");
            f64(out, r.last_ms);
            out.extend_from_slice(b",\"start_ms\":");
            f64(out, r.start_ms);
            out.extend_from_slice(b",\"trend\":\"");
            out.extend_from_slice(r.trend.as_str().as_bytes());
            out.extend_from_slice(b"\"}");
        }
        None => null(out, b",\"retry\":"),
    }
    match &c.rates {
        Some(r) => {
            out.extend_from_slice(b",\"rates\":{\"opened_per_s\":");
            f64(out, r.opened_per_s);
            out.extend_from_slice(b",\"closed_per_s\":");
            f64(out, r.closed_per_s);
            out.extend_from_slice(b",\"rejected_per_s\":");
            f64(out, r.rejected_per_s);
            out.extend_from_slice(b",\"refused_per_s\":");
            match r.refused_per_s {
                Some(v) => f64(out, v),
                None => out.extend_from_slice(b"null"),
            }
            out.push(b'}');
        }
        None => null(out, b",\"rates\":"),
    }
    // Local processes: only rows of clients on this host have them.
    if !c.processes.is_empty() {
        out.extend_from_slice(b",\"processes\":[");
        for (i, p) in c.processes.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            process(out, p, sparse);
        }
        out.push(b']');
    }
    if let Some(o) = &c.processes_other {
        out.extend_from_slice(b",\"processes_other\":{\"open\":");
        u64(out, o.open);
        out.extend_from_slice(b",\"opened\":");
        u64(out, o.opened);
        out.extend_from_slice(b",\"failed\":");
        u64(out, o.failed);
        failed_by(out, &o.failed_by);
        out.push(b'}');
    }
    // Client mode's failed connects by cause: only rows that have some.
    if let Some(f) = &c.failed_connects {
        out.extend_from_slice(b",\"failed_connects\":");
        match f {
            Some(f) => {
                out.extend_from_slice(b"{\"refused\":");
                u64(out, f.refused);
                out.extend_from_slice(b",\"timed_out\":");
                u64(out, f.timed_out);
                out.extend_from_slice(b",\"abandoned\":");
                u64(out, f.abandoned);
                out.extend_from_slice(b",\"other\":");
                u64(out, f.other);
                out.push(b'}');
            }
            None => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
}

/// An address as `Display` writes it; IPv4 (nearly every row) digit by digit.
fn addr(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                u64(out, u64::from(octet));
            }
        }
        // Writing to a Vec cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn process(out: &mut Vec<u8>, p: &ProcessReport, sparse: bool) {
    out.extend_from_slice(b"{\"pid\":");
    u64(out, u64::from(p.pid));
    out.extend_from_slice(b",\"comm\":");
    string(out, &p.comm);
    for (key, v) in [
        (&b",\"container\":"[..], &p.container),
        (b",\"pod\":", &p.pod),
    ] {
        if !sparse || v.is_some() {
            out.extend_from_slice(key);
            opt_string(out, v.as_deref());
        }
    }
    for (key, v) in [
        (&b",\"open\":"[..], p.open),
        (b",\"opened\":", p.opened),
        (b",\"failed\":", p.failed),
    ] {
        if !sparse || v != 0 {
            out.extend_from_slice(key);
            u64(out, v);
        }
    }
    if !sparse || p.failed_by != FailedBy::default() {
        failed_by(out, &p.failed_by);
    }
    out.push(b'}');
}

/// `,"failed_by":{…}` in the JSON's order and names, `null` when a cause is unknown.
fn failed_by(out: &mut Vec<u8>, f: &FailedBy) {
    out.extend_from_slice(b",\"failed_by\":");
    match f.known() {
        Some(f) => {
            for (i, (k, n)) in f.causes().into_iter().enumerate() {
                out.extend_from_slice(if i == 0 { b"{\"" } else { b",\"" });
                out.extend_from_slice(k.as_bytes());
                out.extend_from_slice(b"\":");
                u64(out, n);
            }
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string, escaped as serde_json escapes it (a process picks its own name).
fn string(out: &mut Vec<u8>, v: &str) {
    if v.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, v);
    }
}

fn opt_string(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(v) => string(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn lifetime(out: &mut Vec<u8>, l: &Lifetime) {
    out.extend_from_slice(b"{\"p50\":");
    millis(out, l.p50);
    out.extend_from_slice(b",\"p90\":");
    millis(out, l.p90);
    out.extend_from_slice(b",\"p99\":");
    millis(out, l.p99);
    out.extend_from_slice(b",\"max\":");
    millis(out, l.max);
    out.push(b'}');
}

fn u64(out: &mut Vec<u8>, v: u64) {
    // Writing to a Vec cannot fail.
    let _ = CompactFormatter.write_u64(out, v);
}

/// As serde_json writes an f64: its shortest form, `null` when not finite.
fn f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let _ = CompactFormatter.write_f64(out, v);
    } else {
        out.extend_from_slice(b"null");
    }
}

/// As `model::format::as_millis` and `as_secs` write a duration.
fn millis(out: &mut Vec<u8>, d: std::time::Duration) {
    f64(out, d.as_micros() as f64 / 1e3);
}

fn secs(out: &mut Vec<u8>, d: std::time::Duration) {
    f64(out, d.as_micros() as f64 / 1e6);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::testing::client;
    use serde_json::Value;
    use std::time::Duration;

    /// Written whole, the row is the derive's text; sparse, it is the same once
    /// every key left out is put back with the schema's `default` (and no key
    /// at its default is written).
    fn same(c: &ClientReport) {
        let mut fast = Vec::new();
        write_row(&mut fast, c, false);
        let derived = serde_json::to_string(c).unwrap();
        assert_eq!(String::from_utf8(fast).unwrap(), derived);
        let mut sparse = Vec::new();
        write_row(&mut sparse, c, true);
        let sparse: Value = serde_json::from_slice(&sparse).unwrap();
        let dense: Value = serde_json::from_str(&derived).unwrap();
        assert_eq!(densify(&sparse), dense, "{sparse}");
    }

    /// The `default` of each property of the schema's definition `def`.
    fn defaults(def: &str) -> Vec<(String, Value)> {
        let schema: Value =
            serde_json::from_str(include_str!("../../../docs/report.schema.json")).unwrap();
        let props = schema["$defs"][def]["properties"].as_object().unwrap();
        props
            .iter()
            .filter_map(|(k, p)| Some((k.clone(), p.get("default")?.clone())))
            .collect()
    }

    /// A sparse row as a reader puts it back: each key left out, with its
    /// default; a key written at its default fails (it should have been left out).
    fn densify(row: &Value) -> Value {
        let fill = |obj: &Value, def: &str| {
            let mut obj = obj.as_object().unwrap().clone();
            for (k, d) in defaults(def) {
                match obj.get(&k) {
                    Some(v) => assert_ne!(v, &d, "{k} written at its default"),
                    None => {
                        obj.insert(k, d);
                    }
                }
            }
            obj
        };
        let mut obj = fill(row, "client");
        if let Some(Value::Array(ps)) = obj.get_mut("processes") {
            for p in ps.iter_mut() {
                *p = Value::Object(fill(p, "process"));
            }
        }
        // In the derive's key order, as the whole row has them.
        let order = [
            "addr",
            "open",
            "seeded",
            "opened",
            "closed",
            "closed_by_server",
            "server_closes",
            "closed_by_client",
            "reset",
            "rejected",
            "refused",
            "internal",
            "verdict",
            "lifetime_ms",
            "age_s",
            "idle_s",
            "send_queue",
            "bytes_in",
            "bytes_out",
            "retry",
            "rates",
            "processes",
            "processes_other",
            "failed_connects",
        ];
        let mut sorted = serde_json::Map::new();
        for k in order {
            if let Some(v) = obj.remove(k) {
                sorted.insert(k.into(), v);
            }
        }
        assert!(obj.is_empty(), "keys not known here: {obj:?}");
        Value::Object(sorted)
    }

    #[test]
    fn a_one_shot_clients_sparse_row_is_under_half_its_whole_size() {
        let ms = Duration::from_micros(84);
        let row = ClientReport {
            addr: "127.250.234.69".parse().unwrap(),
            closed: 1,
            closed_by_server: 0,
            server_closes: ServerCloses::default(),
            closed_by_client: 1,
            lifetime: Some(crate::testing::flat_lifetime(ms)),
            bytes_in: 14,
            bytes_out: 7,
            processes: vec![crate::testing::process(10274, "python3", 0, 1)].into(),
            ..client("127.250.234.69", 0, 0, 1)
        };
        same(&row);
        let (mut whole, mut sparse) = (Vec::new(), Vec::new());
        write_row(&mut whole, &row, false);
        write_row(&mut sparse, &row, true);
        assert_eq!(
            String::from_utf8(sparse.clone()).unwrap(),
            r#"{"addr":"127.250.234.69","opened":1,"closed":1,"closed_by_client":1,"verdict":"healthy","lifetime_ms":{"p50":0.084,"p90":0.084,"p99":0.084,"max":0.084},"bytes_in":14,"bytes_out":7,"processes":[{"pid":10274,"comm":"python3","opened":1}]}"#
        );
        assert!(
            sparse.len() * 5 < whole.len() * 2,
            "{} of {}",
            sparse.len(),
            whole.len()
        );
    }

    #[test]
    fn every_shape_of_row_is_written_as_the_derive_writes_it() {
        let bare = client("10.0.0.1", 0, 0, 0);
        same(&bare);
        let mut full = client("2001:db8::7", 3, 2, 10);
        full.seeded = 1;
        full.closed = 7;
        full.closed_by_server = 4;
        full.server_closes = ServerCloses {
            rejection: 1,
            idle_timeout: 2,
            output_buffer: 3,
            other: u64::MAX,
        };
        full.closed_by_client = 5;
        full.reset = 6;
        full.rejected = 8;
        full.refused = Some(9);
        full.internal = true;
        full.lifetime = Some(Lifetime {
            p50: Duration::from_micros(850),
            p90: Duration::from_micros(12_345),
            p99: Duration::from_micros(1_500_000),
            max: Duration::from_secs(86_400 * 30),
        });
        full.age = Some(Age {
            max: Duration::from_micros(310_123_456),
            lower_bound: true,
        });
        full.idle = Some(Idle {
            p50: Duration::from_millis(3_200),
            max: Duration::from_nanos(1),
        });
        full.send_queue = Some(SendQueue {
            bytes: 262_144,
            max: 131_072,
        });
        full.bytes_in = 1_234;
        full.bytes_out = 56_789;
        full.rates = Some(Rates {
            opened_per_s: 0.1,
            closed_per_s: 1.0 / 3.0,
            rejected_per_s: 1e21,
            refused_per_s: Some(0.0),
        });
        for &trend in Trend::ALL {
            for &verdict in ClientVerdict::ALL {
                full.verdict = verdict;
                full.retry = Some(RetryReport {
                    gaps: 17,
                    p50_ms: 250.5,
                    last_ms: f64::NAN,
                    start_ms: 1e-7,
                    trend,
                });
                same(&full);
            }
        }
        full.refused = None;
        full.internal = false;
        full.age = Some(Age {
            max: Duration::ZERO,
            lower_bound: false,
        });
        full.rates = Some(Rates {
            refused_per_s: None,
            opened_per_s: f64::INFINITY,
            ..Rates::ZERO
        });
        same(&full);
        full.addr = "::ffff:127.0.0.1".parse().unwrap();
        same(&full);
        // Local processes, a name that needs escaping, and the rest summed.
        full.processes = vec![ProcessReport {
            pid: 4242,
            comm: "a\"b\\c".into(),
            container: Some("3f2a".repeat(16).into()),
            pod: None,
            open: 2,
            opened: 5,
            failed: 1,
            failed_by: FailedBy {
                timed_out: 1,
                ..FailedBy::default()
            },
        }]
        .into();
        same(&full);
        full.processes_other = Some(Box::new(OtherProcesses {
            open: 0,
            opened: 1,
            failed: 1,
            failed_by: FailedBy {
                unknown: 1,
                ..FailedBy::default()
            },
        }));
        same(&full);
        // Client mode's failed connects by cause, and unknown causes.
        full.failed_connects = Some(Some(ConnectFailures {
            refused: 1,
            timed_out: 2,
            abandoned: 3,
            other: u64::MAX,
        }));
        same(&full);
        full.failed_connects = Some(None);
        same(&full);
    }
}
