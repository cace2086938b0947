//! A real Prometheus server (Debian's `prometheus`, installed by `cargo xtask
//! setup`) scraping the agent's `/metrics` on loopback, and plain HTTP/1.0 GETs to
//! read the agent's endpoint and Prometheus's query API. Every wait is bounded.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Background, TempDir, free_port, pause};

pub const PROMTOOL: &str = "/usr/bin/promtool";
pub const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Prometheus takes a few seconds to start, then scrapes every second.
pub const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);

/// One HTTP/1.0 exchange (so no chunked encoding comes back): status code,
/// header block and body. `None` when nothing answers (yet).
pub fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).expect("the response is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, head.to_owned(), body.to_owned()))
}

/// Percent-encodes a PromQL query (or any query-string value) for a URL.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server on a free loopback port, scraping `target` every second
/// (job `connwatch`) and evaluating its rule files every second, its data in a
/// scratch directory; killed (with its process group) on drop.
pub struct Prometheus {
    pub addr: SocketAddr,
    process: Background,
    _dir: TempDir,
}

impl Prometheus {
    pub fn start(target: SocketAddr) -> Prometheus {
        Prometheus::start_with_rules(target, &[])
    }

    /// Also loads `rule_files` (alerting or recording rules), which must load.
    pub fn start_with_rules(target: SocketAddr, rule_files: &[&Path]) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: cargo xtask setup installs Debian's prometheus"
        );
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        let mut text = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: connwatch\n    static_configs:\n      - targets: ['{target}']\n"
        );
        if !rule_files.is_empty() {
            text.push_str("rule_files:\n");
            for file in rule_files {
                text.push_str(&format!("  - '{}'\n", file.display()));
            }
        }
        std::fs::write(&config, text).expect("write prometheus.yml");
        let data = dir.0.join("data");
        let addr = SocketAddr::new([127, 0, 0, 1].into(), free_port());
        let process = Background::command(
            PROMETHEUS,
            &[
                &format!("--config.file={}", config.display()),
                &format!("--storage.tsdb.path={}", data.display()),
                &format!("--web.listen-address={addr}"),
                "--log.level=warn",
            ],
        );
        Prometheus {
            addr,
            process,
            _dir: dir,
        }
    }

    /// GET `path` of the HTTP API: its `data`, or why not (no answer, an HTTP
    /// error or a query error, with Prometheus's message).
    pub fn api(&self, path: &str) -> Result<Value, String> {
        let (status, _, body) =
            try_get(self.addr, path).ok_or_else(|| format!("no answer to {path}"))?;
        let json: Value = serde_json::from_str(&body)
            .map_err(|e| format!("{path}: HTTP {status}, not JSON ({e}): {body}"))?;
        if status != 200 || json["status"] != "success" {
            return Err(format!(
                "{path}: HTTP {status}: {} {}",
                json["errorType"], json["error"]
            ));
        }
        Ok(json["data"].clone())
    }

    /// The series an instant query returns now.
    pub fn instant(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(promql)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The series a range query returns over `[start, end]` (Unix seconds) at
    /// `step_s`: what a dashboard panel over that time range shows.
    pub fn range(
        &self,
        promql: &str,
        start: f64,
        end: f64,
        step_s: u32,
    ) -> Result<Vec<Value>, String> {
        let data = self.api(&format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step_s}",
            url_encode(promql)
        ))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The value of the single series an instant query returns, if exactly one.
    pub fn query(&self, promql: &str) -> Option<String> {
        match self.instant(promql).ok()?.as_slice() {
            [one] => one["value"][1].as_str().map(str::to_owned),
            _ => None,
        }
    }

    /// Waits until `promql` returns one series of value `want`.
    pub fn wait_for(&mut self, promql: &str, want: &str) {
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        loop {
            let got = self.query(promql);
            if got.as_deref() == Some(want) {
                return;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "prometheus: {promql} is {got:?}, want {want:?} after {PROMETHEUS_WAIT:?}; stderr:\n{}",
                self.process.stderr()
            );
            pause(250);
        }
    }

    /// Panics with its stderr if the server has exited (a bad config or rule file).
    pub fn assert_running(&mut self) {
        assert!(
            self.process.running(),
            "prometheus exited; stderr:\n{}",
            self.process.stderr()
        );
    }

    pub fn stderr(&self) -> String {
        self.process.stderr()
    }
}
