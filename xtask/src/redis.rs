//! A scratch redis-server on a free loopback port, and a minimal RESP client.

use std::fs;
use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};

use crate::process;

const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A free TCP port on loopback: bind 127.0.0.1:0, read the port, drop the listener.
/// Another process could take it before we use it; [`ScratchRedis::start`] retries.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener
        .local_addr()
        .context("reading the port of 127.0.0.1:0")?
        .port())
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// Sends one command on a new connection to 127.0.0.1:`port` and returns the reply
/// as text: simple strings and bulk strings as their content; errors as `Err`.
pub fn command(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    command_on(&mut stream, args)
}

/// Sends one command on an open connection (which should have timeouts) and reads
/// its reply, as [`command`] does. No pipelining: one reply is all there is to read.
pub fn command_on(stream: &mut TcpStream, args: &[&str]) -> anyhow::Result<String> {
    stream.write_all(&encode_command(args))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    match line.split_at_checked(1) {
        Some(("+", text)) | Some((":", text)) => Ok(text.to_owned()),
        Some(("-", error)) => bail!("redis replied {error}"),
        Some(("$", len)) => {
            let len: usize = len
                .parse()
                .with_context(|| format!("bad bulk length in reply {line:?}"))?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body)?;
            body.truncate(len);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        _ => bail!("unexpected reply {line:?}"),
    }
}

/// A numeric field of an INFO reply (`name:value` lines).
pub fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// A redis-server child in its own temp dir; killed and removed on drop (so also
/// on errors and after Ctrl-C, which the demo catches).
pub struct ScratchRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl ScratchRedis {
    /// Starts redis-server on a free loopback port and waits until it answers PING.
    #[cfg(test)]
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// As [`ScratchRedis::start`], with more configuration arguments, e.g.
    /// `["--maxclients", "60"]`.
    pub fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        let mut last_error = None;
        // The free port can be taken between our check and redis' bind; try again then.
        for _ in 0..3 {
            match Self::start_once(extra) {
                Ok(redis) => return Ok(redis),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("redis-server did not start")))
    }

    fn start_once(extra: &[&str]) -> anyhow::Result<Self> {
        let dir = make_temp_dir("connwatch-redis")?;
        // From here on, `dir` is removed on every path (the guard owns it until the
        // server runs and `ScratchRedis` takes over).
        let guard = DirGuard(Some(dir.clone()));
        let port = free_port()?;
        let log_path = dir.join("redis.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let log_err = log.try_clone().context("duplicating the log file handle")?;
        let port_s = port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port_s, "--bind", "127.0.0.1", "::1"])
            .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(["--daemonize", "no"])
            .args(extra)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: Ctrl-C in the terminal goes to connwatch and
            // xtask, and xtask stops the server itself after the traffic stopped.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    anyhow!("redis-server not found on PATH (run `cargo xtask setup`)")
                } else {
                    anyhow!("cannot start redis-server: {e}")
                }
            })?;
        let mut redis = ScratchRedis {
            child,
            port,
            dir: guard.take(),
        };
        redis.wait_ready(Duration::from_secs(10))?;
        Ok(redis)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The redis-server process id (for `/proc/PID/fd` and `prlimit`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls PING until +PONG, the server exits, or `timeout` passes.
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for redis-server")? {
                bail!(
                    "redis-server on port {} exited at startup ({}); its log:\n{}",
                    self.port,
                    process::describe_status(status),
                    self.log_tail()
                );
            }
            match command(self.port, &["PING"]) {
                Ok(reply) if reply == "PONG" => return Ok(()),
                _ if Instant::now() >= deadline => bail!(
                    "redis-server on port {} did not answer PING within {timeout:?}; its log:\n{}",
                    self.port,
                    self.log_tail()
                ),
                _ if process::interrupted() => bail!("interrupted"),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for ScratchRedis {
    fn drop(&mut self) {
        // SIGKILL: nothing to save (--save '' --appendonly no), and it cannot hang.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
    }
}

/// Removes a directory on drop unless taken.
struct DirGuard(Option<PathBuf>);

impl DirGuard {
    fn take(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// A new, empty directory under the system temp dir.
fn make_temp_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!(
            "{prefix}-{}-{nanos:09}-{attempt}",
            std::process::id()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("could not create a temp dir under {}", base.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_resp_arrays() {
        assert_eq!(encode_command(&["PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            encode_command(&["CLIENT", "LIST"]),
            b"*2\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n"
        );
    }

    #[test]
    fn info_fields_are_read_by_exact_name() {
        let info = "# Stats\r\nrejected_connections:7\r\nrejected_connections_x:9\r\nname:abc\r\n";
        assert_eq!(info_field(info, "rejected_connections"), Some(7));
        assert_eq!(info_field(info, "name"), None);
        assert_eq!(info_field(info, "missing"), None);
        assert_eq!(info_field("", "rejected_connections"), None);
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn scratch_redis_answers_and_cleans_up() {
        let redis = ScratchRedis::start().unwrap();
        let dir = redis.dir().to_path_buf();
        assert_eq!(command(redis.port(), &["PING"]).unwrap(), "PONG");
        assert_eq!(command(redis.port(), &["ECHO", "hi"]).unwrap(), "hi");
        assert!(command(redis.port(), &["NOSUCHCOMMAND"]).is_err());
        assert!(redis.pid() > 1);
        let port = redis.port();
        drop(redis);
        assert!(!dir.exists());
        assert!(command(port, &["PING"]).is_err());
    }
}
