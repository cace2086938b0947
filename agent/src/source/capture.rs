//! Capture files: the raw event stream of a live run, to replay later.
//!
//! Format (version 1), documented in docs/CAPTURE.md: a gzip stream of text lines.
//! The first line is a JSON [`Header`]; every other line is one [`Event`] as JSON,
//! in the order the live pipeline applied them, ticks included. gzip is flushed at
//! every tick, so a capture cut short (a crash, a full disk) is readable up to its
//! last interval; the reader reports where it ended and why.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use crate::model::{Clock, ConnKey, Event, Nanos};

pub const FORMAT: &str = "connwatch-capture";
pub const VERSION: u32 = 1;
/// A line longer than this is corrupt, not an event (the largest events, Redis
/// snapshots with many replicas, are a few KiB).
const MAX_LINE: usize = 1 << 20;

/// The first line of a capture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub host: String,
    pub kernel: String,
    pub ports: Vec<u16>,
    /// RFC 3339, for people; `clock` is what replay uses.
    pub started_at: String,
    pub clock: HeaderClock,
    pub interval_ms: u64,
    /// Client addresses were replaced with pseudonyms.
    pub redacted: bool,
    pub connwatch_version: String,
    /// The instance reported even with nothing listening (the agent's network
    /// namespace, or the one it was told to watch); absent in captures made before
    /// connwatch told namespaces apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<crate::model::Instance>,
    /// What the kernel programs could see (absent in captures made before
    /// connwatch recorded it: a replay then reports `probe` as unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<crate::model::Features>,
    /// Which end of the connections was recorded: `client` for client mode
    /// (`--remote-port`, `--remote`), whose replay judges them as a client's.
    /// Absent for a server, and in captures made before client mode was recorded
    /// (which were all of a server).
    #[serde(default, skip_serializing_if = "crate::model::Role::is_server")]
    pub role: crate::model::Role,
    /// Client mode: the remote ports watched with `--remote-port` (every server on
    /// them), and the servers named with `--remote`. Events of other servers were
    /// not recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<SocketAddr>,
}

/// A monotonic reading and the wall-clock time (ns since the Unix epoch) taken with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderClock {
    pub mono_ns: u64,
    pub wall_unix_ns: u64,
}

impl HeaderClock {
    pub fn of(clock: &Clock) -> Self {
        let wall = clock
            .wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        HeaderClock {
            mono_ns: clock.mono,
            wall_unix_ns: u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    pub fn clock(&self) -> Clock {
        Clock {
            mono: self.mono_ns,
            wall: UNIX_EPOCH + Duration::from_nanos(self.wall_unix_ns),
        }
    }
}

impl Header {
    pub fn new(ports: Vec<u16>, clock: &Clock, interval: Duration, redacted: bool) -> Self {
        Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            host: read_trimmed("/proc/sys/kernel/hostname"),
            kernel: kernel_release().unwrap_or_default(),
            ports,
            started_at: humantime::format_rfc3339_millis(clock.wall).to_string(),
            clock: HeaderClock::of(clock),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            redacted,
            connwatch_version: env!("CARGO_PKG_VERSION").to_owned(),
            home: None,
            features: None,
            role: crate::model::Role::Server,
            remote_ports: Vec::new(),
            remotes: Vec::new(),
        }
    }

    /// What a replay's reports say of the probe: this header's kernel and features,
    /// or nothing when the capture did not record them.
    pub fn probe(&self) -> Option<crate::model::ProbeReport> {
        Some(crate::model::ProbeReport {
            kernel: Some(self.kernel.clone()).filter(|k| !k.is_empty()),
            features: self.features?,
        })
    }
}

/// The running kernel's release (`uname -r`), if readable.
pub fn kernel_release() -> Option<String> {
    Some(read_trimmed("/proc/sys/kernel/osrelease")).filter(|k| !k.is_empty())
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Counts the bytes that reach the file (after compression).
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a capture. The file is created new with mode 0600: it holds client
/// addresses (unless redacted), and an existing file is never overwritten.
pub struct Writer {
    gz: GzEncoder<Counting<File>>,
    line: Vec<u8>,
    events: u64,
    redactor: Option<Redactor>,
}

impl Writer {
    pub fn create(path: &Path, header: &Header) -> anyhow::Result<Writer> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create capture file {}", path.display()))?;
        let mut w = Writer {
            gz: GzEncoder::new(
                Counting {
                    inner: file,
                    written: 0,
                },
                Compression::fast(),
            ),
            line: Vec::with_capacity(512),
            events: 0,
            redactor: header.redacted.then(Redactor::default),
        };
        serde_json::to_writer(&mut w.line, header).context("encoding the capture header")?;
        w.line.push(b'\n');
        w.gz.write_all(&w.line)
            .context("writing the capture header")?;
        w.line.clear();
        Ok(w)
    }

    /// Appends one event (redacted if the capture is). A tick flushes, so what was
    /// written survives a crash.
    pub fn write(&mut self, ev: &Event) -> io::Result<()> {
        let redacted;
        let ev = match self.redactor.as_mut() {
            Some(r) => {
                redacted = r.event(ev);
                &redacted
            }
            None => ev,
        };
        self.line.clear();
        serde_json::to_writer(&mut self.line, ev).map_err(io::Error::other)?;
        self.line.push(b'\n');
        self.gz.write_all(&self.line)?;
        self.events += 1;
        if matches!(ev, Event::Tick { .. }) {
            self.gz.flush()?;
        }
        Ok(())
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// Compressed bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.gz.get_ref().written
    }

    /// Ends the gzip stream and syncs the file.
    pub fn finish(self) -> io::Result<u64> {
        let counting = self.gz.finish()?;
        counting.inner.sync_all()?;
        Ok(counting.written)
    }
}

/// Why reading stopped before the end of a capture.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadError {
    /// 1-based line number (the header is line 1).
    pub line: u64,
    /// Byte offset of that line in the decompressed stream.
    pub offset: u64,
    pub reason: String,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "capture damaged at record {} (byte {} of the decompressed stream): {}",
            self.line, self.offset, self.reason
        )
    }
}

impl std::error::Error for ReadError {}

/// Reads a capture: the header at open, then events one at a time.
pub struct Reader {
    input: BufReader<Box<dyn Read>>,
    pub header: Header,
    line: Vec<u8>,
    line_no: u64,
    offset: u64,
    redactor: Option<Redactor>,
}

impl Reader {
    /// Opens a capture and checks its header. A file that is not a connwatch
    /// capture, or of a version this build cannot read, is an error here.
    pub fn open(path: &Path, redact: bool) -> anyhow::Result<Reader> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Reader::from_read(Box::new(file), redact)
            .with_context(|| format!("{} is not a readable connwatch capture", path.display()))
    }

    pub fn from_read(input: Box<dyn Read>, redact: bool) -> anyhow::Result<Reader> {
        let mut input = BufReader::new(input);
        let magic = input.fill_buf().context("reading the file")?;
        if magic.len() < 2 || magic[..2] != [0x1f, 0x8b] {
            bail!("no gzip header (a capture is a gzip stream written by `connwatch capture`)");
        }
        let decoder: Box<dyn Read> = Box::new(MultiGzDecoder::new(input));
        let mut r = Reader {
            input: BufReader::new(decoder),
            header: Header::new(Vec::new(), &Clock::now(), Duration::ZERO, false),
            line: Vec::new(),
            line_no: 0,
            offset: 0,
            redactor: None,
        };
        let first = match r.next_line() {
            Ok(Some(())) => &r.line,
            Ok(None) => bail!("empty capture: no header"),
            Err(e) => return Err(e.into()),
        };
        let header: Header =
            serde_json::from_slice(first).map_err(|e| anyhow::anyhow!("bad header: {e}"))?;
        if header.format != FORMAT {
            bail!("format {:?}, not {FORMAT:?}", header.format);
        }
        if header.version != VERSION {
            bail!(
                "capture format version {} (this connwatch reads version {VERSION})",
                header.version
            );
        }
        r.redactor = (redact && !header.redacted).then(Redactor::default);
        r.header = header;
        if redact {
            r.header.redacted = true;
        }
        Ok(r)
    }

    fn next_line(&mut self) -> Result<Option<()>, ReadError> {
        self.offset += self.line.len() as u64;
        self.line.clear();
        self.line_no += 1;
        let mut limited = (&mut self.input).take(MAX_LINE as u64 + 1);
        match limited.read_until(b'\n', &mut self.line) {
            Ok(0) => Ok(None),
            Ok(_) if self.line.last() != Some(&b'\n') => {
                Err(self.error(if self.line.len() > MAX_LINE {
                    "a line longer than 1 MiB".to_owned()
                } else {
                    "the file ends in the middle of a record (cut short)".to_owned()
                }))
            }
            Ok(_) => Ok(Some(())),
            Err(e) => Err(self.error(match e.kind() {
                io::ErrorKind::UnexpectedEof => {
                    "the file is cut short (incomplete gzip stream)".to_owned()
                }
                _ => format!("corrupt data: {e}"),
            })),
        }
    }

    fn error(&self, reason: String) -> ReadError {
        ReadError {
            line: self.line_no,
            offset: self.offset,
            reason,
        }
    }

    /// The next event, `Ok(None)` at the end. After an error, reading stops: what
    /// came before it is all there is.
    pub fn next_event(&mut self) -> Result<Option<Event>, ReadError> {
        if self.next_line()?.is_none() {
            return Ok(None);
        }
        let ev: Event = serde_json::from_slice(&self.line)
            .map_err(|e| self.error(format!("not an event: {e}")))?;
        Ok(Some(match self.redactor.as_mut() {
            Some(r) => r.event(&ev),
            None => ev,
        }))
    }
}

/// Replaces client addresses with stable pseudonyms: the n-th distinct IPv4 client
/// becomes 198.18.0.0/15 + n (a range reserved for benchmarks, never routed), the
/// n-th IPv6 one 2001:db8::n (documentation). Server addresses are kept.
#[derive(Debug, Default)]
pub struct Redactor {
    map: HashMap<IpAddr, IpAddr>,
    v4: u32,
    v6: u128,
}

impl Redactor {
    pub fn ip(&mut self, ip: IpAddr) -> IpAddr {
        if let Some(p) = self.map.get(&ip) {
            return *p;
        }
        let pseudonym = match ip {
            IpAddr::V4(_) => {
                self.v4 += 1;
                let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
                IpAddr::V4(Ipv4Addr::from(base + (self.v4 & 0x1_ffff)))
            }
            IpAddr::V6(_) => {
                self.v6 += 1;
                let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0));
                IpAddr::V6(Ipv6Addr::from(base + self.v6))
            }
        };
        self.map.insert(ip, pseudonym);
        pseudonym
    }

    fn addr(&mut self, a: SocketAddr) -> SocketAddr {
        SocketAddr::new(self.ip(a.ip()), a.port())
    }

    fn key(&mut self, k: &ConnKey) -> ConnKey {
        ConnKey {
            remote: self.addr(k.remote),
            ..*k
        }
    }

    /// The event with every client address replaced.
    pub fn event(&mut self, ev: &Event) -> Event {
        let mut ev = ev.clone();
        match &mut ev {
            Event::Opened { key, .. }
            | Event::Refused { key, .. }
            | Event::ConnectFailed { key, .. }
            | Event::Seeded { key, .. }
            | Event::Closed { key, .. } => {
                *key = self.key(key);
            }
            Event::Activity { conns, gone, .. } => {
                for (key, _) in conns.iter_mut() {
                    *key = self.key(key);
                }
                for key in gone.iter_mut() {
                    *key = self.key(key);
                }
            }
            Event::Redis { snapshot, .. } => {
                if let Some(own) = snapshot.own_addr {
                    snapshot.own_addr = Some(self.addr(own));
                }
                if let Some(info) = snapshot.info.as_mut() {
                    for r in info.replicas.iter_mut() {
                        *r = self.addr(*r);
                    }
                }
                // An error text may quote an address; keep only its status then.
                if snapshot.error.is_some() {
                    snapshot.error = Some("(redacted)".to_owned());
                }
            }
            // The process (pid, name, cgroup) is kept: it names no address.
            Event::Connector { client, .. } => *client = self.addr(*client),
            Event::Host { .. } | Event::Counters { .. } | Event::Tick { .. } => {}
        }
        ev
    }
}

/// Monotonic time of a capture's first and last events.
pub fn span(first: Nanos, last: Nanos) -> Duration {
    Duration::from_nanos(last.saturating_sub(first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::model::{Activity, CloseKind};

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "connwatch-capture-test-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&dir);
        dir
    }

    fn key(remote: &str) -> ConnKey {
        ConnKey::new("127.0.0.1:6379".parse().unwrap(), remote.parse().unwrap())
    }

    fn events() -> Vec<Event> {
        vec![
            Event::Opened {
                ts: 10,
                key: key("127.0.0.5:4000"),
            },
            Event::Closed {
                ts: 20,
                key: key("127.0.0.5:4000"),
                how: CloseKind::Server,
                activity: Some(Activity {
                    bytes_in: 0,
                    bytes_out: 36,
                    last_active: Some(15),
                    queued: None,
                }),
            },
            Event::Refused {
                ts: 25,
                key: key("[::1]:5000"),
            },
            Event::Connector {
                ts: 26,
                client: "127.0.0.5:4001".parse().unwrap(),
                server: "127.0.0.1:6379".parse().unwrap(),
                process: crate::model::Process {
                    pid: 4242,
                    comm: "gunicorn".into(),
                    stack: None,
                    cgroup: Some("/system.slice/app.service".into()),
                },
                failed: false,
                err: None,
            },
            Event::Tick { ts: 1_000 },
        ]
    }

    fn write(path: &Path, redacted: bool) -> Header {
        let header = Header::new(vec![6379], &Clock::now(), Duration::from_secs(1), redacted);
        let mut w = Writer::create(path, &header).unwrap();
        for ev in events() {
            w.write(&ev).unwrap();
        }
        assert_eq!(w.events(), 5);
        w.finish().unwrap();
        header
    }

    fn read_all(r: &mut Reader) -> (Vec<Event>, Option<ReadError>) {
        let mut out = Vec::new();
        loop {
            match r.next_event() {
                Ok(Some(ev)) => out.push(ev),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn round_trip_keeps_every_event_and_the_header() {
        let path = tmp("roundtrip");
        let header = write(&path, false);
        let mut r = Reader::open(&path, false).unwrap();
        assert_eq!(r.header, header);
        assert_eq!(read_all(&mut r), (events(), None));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Never overwritten.
        assert!(Writer::create(&path, &header).is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_truncated_capture_reads_up_to_the_cut_and_says_where() {
        let path = tmp("truncated");
        write(&path, false);
        let bytes = std::fs::read(&path).unwrap();
        // Cut inside the gzip trailer and then deeper: never a panic, always an error
        // naming a record, and the events before the cut are there.
        for cut in [bytes.len() - 4, bytes.len() - 12, bytes.len() / 2] {
            let r = Reader::from_read(Box::new(io::Cursor::new(bytes[..cut].to_vec())), false);
            let Ok(mut r) = r else { continue };
            let (got, err) = read_all(&mut r);
            let err = err.expect("a cut file ends in an error");
            assert!(err.line >= 2, "{err}");
            assert_eq!(got, events()[..got.len()].to_vec());
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn foreign_and_damaged_files_are_clear_errors() {
        let err = Reader::from_read(Box::new(io::Cursor::new(b"hello world".to_vec())), false)
            .err()
            .unwrap();
        assert!(err.to_string().contains("no gzip header"), "{err}");

        let gz = |text: &str| {
            let mut e = GzEncoder::new(Vec::new(), Compression::fast());
            e.write_all(text.as_bytes()).unwrap();
            e.finish().unwrap()
        };
        let err = Reader::from_read(
            Box::new(io::Cursor::new(gz("{\"format\":\"other\"}\n"))),
            false,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("bad header"), "{err}");

        let mut header = Header::new(vec![6379], &Clock::now(), Duration::from_secs(1), false);
        header.version = 99;
        let text = serde_json::to_string(&header).unwrap() + "\n";
        let err = Reader::from_read(Box::new(io::Cursor::new(gz(&text))), false)
            .err()
            .unwrap();
        assert!(err.to_string().contains("version 99"), "{err}");

        header.version = VERSION;
        let text =
            serde_json::to_string(&header).unwrap() + "\n{\"ev\":\"tick\",\"ts\":5}\nnot json\n";
        let mut r = Reader::from_read(Box::new(io::Cursor::new(gz(&text))), false).unwrap();
        let (got, err) = read_all(&mut r);
        assert_eq!(got, vec![Event::Tick { ts: 5 }]);
        let err = err.unwrap();
        assert_eq!(
            (err.line, err.offset),
            (3, (text.find("not json").unwrap()) as u64)
        );
        assert!(err.to_string().contains("record 3"), "{err}");
    }

    #[test]
    fn a_header_without_a_role_reads_as_a_server_and_a_client_header_round_trips() {
        let gz = |text: &str| {
            let mut e = GzEncoder::new(Vec::new(), Compression::fast());
            e.write_all(text.as_bytes()).unwrap();
            e.finish().unwrap()
        };
        // A header as connwatch wrote it before client mode was recorded.
        let old = r#"{"format":"connwatch-capture","version":1,"host":"h","kernel":"6.1.0","ports":[6379],"started_at":"2026-11-01T10:00:00.000Z","clock":{"mono_ns":5,"wall_unix_ns":6},"interval_ms":1000,"redacted":false,"connwatch_version":"0.1.0"}"#;
        let r =
            Reader::from_read(Box::new(io::Cursor::new(gz(&format!("{old}\n")))), false).unwrap();
        assert_eq!(r.header.role, Role::Server);
        assert_eq!(r.header.ports, [6379]);
        assert!(r.header.remote_ports.is_empty() && r.header.remotes.is_empty());

        let mut header = Header::new(vec![6379, 7000], &Clock::now(), Duration::ZERO, false);
        // A server's header says nothing of roles (older readers see what they knew).
        let text = serde_json::to_string(&header).unwrap();
        assert!(!text.contains("role") && !text.contains("remote"), "{text}");
        header.role = Role::Client;
        header.remote_ports = vec![6379];
        header.remotes = vec!["10.0.0.7:7000".parse().unwrap()];
        let text = serde_json::to_string(&header).unwrap();
        assert!(
            text.contains(r#""role":"client","remote_ports":[6379],"remotes":["10.0.0.7:7000"]"#),
            "{text}"
        );
        let r =
            Reader::from_read(Box::new(io::Cursor::new(gz(&format!("{text}\n")))), false).unwrap();
        assert_eq!(r.header, header);
    }

    /// A failed connect's cause travels in the capture; a connector written before
    /// it was recorded reads as unknown.
    #[test]
    fn a_connects_cause_round_trips_and_old_connectors_read_as_unknown() {
        let old = r#"{"ev":"connector","ts":26,"client":"127.0.0.5:4001","server":"127.0.0.1:6379","process":{"pid":9,"comm":"app"},"failed":true}"#;
        match serde_json::from_str::<Event>(old).unwrap() {
            Event::Connector {
                failed: true,
                err: None,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        let failed = Event::ConnectFailed {
            ts: 27,
            key: key("127.0.0.5:4002"),
            err: Some(110),
        };
        let text = serde_json::to_string(&failed).unwrap();
        assert_eq!(
            text,
            r#"{"ev":"connect_failed","ts":27,"key":{"local":"127.0.0.1:6379","remote":"127.0.0.5:4002"},"err":110}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), failed);
        let unknown = text.replace(r#","err":110"#, "");
        assert!(matches!(
            serde_json::from_str::<Event>(&unknown).unwrap(),
            Event::ConnectFailed { err: None, .. }
        ));
        // Redaction replaces this host's client end, keeps the server and the cause.
        let Event::ConnectFailed { key: k, err, .. } = Redactor::default().event(&failed) else {
            panic!()
        };
        assert_eq!(
            (k.remote, k.local, err),
            (
                "198.18.0.1:4002".parse().unwrap(),
                "127.0.0.1:6379".parse().unwrap(),
                Some(110)
            )
        );
    }

    #[test]
    fn redaction_is_stable_and_keeps_server_addresses() {
        let path = tmp("redacted");
        write(&path, true);
        let mut r = Reader::open(&path, false).unwrap();
        assert!(r.header.redacted);
        let (got, _) = read_all(&mut r);
        let Event::Opened { key: a, .. } = &got[0] else {
            panic!()
        };
        let Event::Closed { key: b, .. } = &got[1] else {
            panic!()
        };
        let Event::Refused { key: c, .. } = &got[2] else {
            panic!()
        };
        assert_eq!(a.remote, "198.18.0.1:4000".parse().unwrap());
        assert_eq!(a.remote, b.remote, "the same client, the same pseudonym");
        assert_eq!(c.remote, "[2001:db8::1]:5000".parse().unwrap());
        assert_eq!(a.local, "127.0.0.1:6379".parse().unwrap());
        // A local client's end gets its address's pseudonym; its process is kept.
        let Event::Connector {
            client, process, ..
        } = &got[3]
        else {
            panic!()
        };
        assert_eq!(*client, "198.18.0.1:4001".parse().unwrap());
        assert_eq!((process.pid, &*process.comm), (4242, "gunicorn"));
        let text = format!("{got:?}");
        assert!(
            !text.contains("127.0.0.5") && !text.contains("remote: [::1]"),
            "{text}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn analyze_can_redact_an_unredacted_capture() {
        let path = tmp("late-redaction");
        write(&path, false);
        let mut r = Reader::open(&path, true).unwrap();
        assert!(r.header.redacted);
        let (got, _) = read_all(&mut r);
        let Event::Opened { key, .. } = &got[0] else {
            panic!()
        };
        assert_eq!(key.remote.ip(), "198.18.0.1".parse::<IpAddr>().unwrap());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..300 {
            let mut bytes = vec![0x1f, 0x8b];
            for _ in 0..(seed % 400) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(seed as u8);
            }
            if let Ok(mut r) = Reader::from_read(Box::new(io::Cursor::new(bytes)), false) {
                let _ = read_all(&mut r);
            }
        }
    }
}
