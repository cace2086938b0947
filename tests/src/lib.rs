//! Fixtures for the root integration tests: a scratch `redis-server`, the real
//! `connwatch` binary with its real probes, and real clients bound to distinct
//! 127.0.0.x source addresses. Each fixture cleans up on drop; helpers panic with
//! a clear message instead of returning errors, so a test reads like a sentence.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::{Domain, Socket, Type};

pub mod prometheus;

/// The integration tests load BPF programs: they need root. Fail loudly otherwise,
/// so a run that could not test anything never looks green.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the root integration tests load BPF programs and must run as root (cargo xtask test)"
    );
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `connwatch` binary under test: `$CONNWATCH_BIN`, else the workspace's debug build.
pub fn connwatch_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CONNWATCH_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("debug").join("connwatch");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build -p connwatch)",
        bin.display()
    );
    bin
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Which server a [`Redis`] fixture runs: Debian 12's `redis-server` (7.0), or the
/// `valkey-server` 8 that `cargo xtask setup` puts in `target/valkey/`
/// (`$CONNWATCH_VALKEY` names another).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Redis,
    Valkey,
}

impl Server {
    pub fn program(self) -> PathBuf {
        match self {
            Server::Redis => PathBuf::from("redis-server"),
            Server::Valkey => std::env::var_os("CONNWATCH_VALKEY")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target/valkey/valkey-server")),
        }
    }
}

/// A scratch redis-server on a free port of 127.0.0.1 and ::1, killed on drop;
/// or one inside a network namespace (a "container") the test made.
pub struct Redis {
    pub port: u16,
    child: Child,
    _dir: TempDir,
    /// The server's pid (as the host numbers it); the child's, unless it runs
    /// under `unshare --fork`.
    server_pid: u32,
    /// The network namespace it listens in; `None`: the host's.
    pub netns: Option<PathBuf>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Redis {
        Redis::start_on(free_port(), extra)
    }

    /// A redis-server on `port` (e.g. the port of one that was just killed: a
    /// restart with a new pid and a new listener).
    pub fn start_on(port: u16, extra: &[&str]) -> Redis {
        Redis::spawn(Server::Redis, port, extra)
    }

    /// `server` (Redis 7.0 or Valkey 8) on a free port, with `extra` arguments.
    pub fn start_server(server: Server, extra: &[&str]) -> Redis {
        Redis::spawn(server, free_port(), extra)
    }

    fn spawn(server: Server, port: u16, extra: &[&str]) -> Redis {
        let dir = TempDir::new("redis");
        let program = server.program();
        let child = Command::new(&program)
            .args(redis_args(port, &dir, extra))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} must be installed (cargo xtask setup): {e}",
                    program.display()
                )
            });
        let server_pid = child.id();
        Redis::ready(Redis {
            port,
            child,
            _dir: dir,
            server_pid,
            netns: None,
        })
    }

    /// A redis-server on `port` inside the network namespace `netns` (made by the
    /// test), as a container's: only clients inside reach it.
    pub fn start_in(netns: &NetNs, port: u16, extra: &[&str]) -> Redis {
        let dir = TempDir::new("redis");
        let child = Command::new("ip")
            .args(["netns", "exec", &netns.name, "redis-server"])
            .args(redis_args(port, &dir, extra))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip netns exec redis-server");
        let server_pid = child.id();
        Redis::ready(Redis {
            port,
            child,
            _dir: dir,
            server_pid,
            netns: Some(netns.path()),
        })
    }

    /// A redis-server on `port` in new network, PID and mount namespaces, as a
    /// container runtime makes them (`unshare --fork --pid --net --mount-proc`): it
    /// is pid 1 inside. `setup` is shell run inside first (e.g. `ulimit -n 4000`).
    pub fn start_contained(port: u16, setup: &str, extra: &[&str]) -> Redis {
        let dir = TempDir::new("redis");
        let args: Vec<String> = redis_args(port, &dir, extra)
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let script = format!(
            "ip link set lo up && {setup} exec redis-server {}",
            args.join(" ")
        );
        let child = Command::new("unshare")
            .args(["--fork", "--kill-child", "--pid", "--net", "--mount-proc"])
            .args(["sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare (util-linux)");
        // The server is unshare's child: wait until it has exec'd redis-server.
        let deadline = Instant::now() + Duration::from_secs(10);
        let server_pid = loop {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
                    .unwrap_or_default();
            if let Some(pid) = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "redis-server")
            {
                break pid;
            }
            assert!(
                Instant::now() < deadline,
                "the contained redis-server did not start"
            );
            thread::sleep(Duration::from_millis(20));
        };
        Redis::ready(Redis {
            port,
            child,
            _dir: dir,
            server_pid,
            netns: Some(PathBuf::from(format!("/proc/{server_pid}/ns/net"))),
        })
    }

    /// Waits until the server answers PING.
    fn ready(redis: Redis) -> Redis {
        let port = redis.port;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Ready when it answers; with requirepass the answer is -NOAUTH.
            let addr = SocketAddr::new([127, 0, 0, 1].into(), port);
            let conn = match &redis.netns {
                None => Client::try_connect(None, addr),
                Some(netns) => Client::try_connect_in(netns, addr),
            };
            if let Ok(mut c) = conn
                && c.command(&["PING"])
                    .is_ok_and(|r| r.starts_with("+PONG") || r.starts_with("-NOAUTH"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer PING within 10 s"
            );
            thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    /// A redis-server serving TLS only, on a free `--tls-port` (the returned
    /// `port`; `--port 0`), with `certs`' server certificate and CA (which, by
    /// Redis's default `tls-auth-clients yes`, also checks client certificates).
    /// Ready when `redis-cli --tls` gets a PONG.
    pub fn start_tls(certs: &TlsCerts, extra: &[&str]) -> Redis {
        let port = free_port();
        let dir = TempDir::new("redis-tls");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1 ::1"])
            .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--tls-cert-file")
            .arg(&certs.server_cert)
            .arg("--tls-key-file")
            .arg(&certs.server_key)
            .arg("--tls-ca-cert-file")
            .arg(&certs.ca)
            .arg("--dir")
            .arg(&dir.0)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (cargo xtask setup)");
        let server_pid = child.id();
        let redis = Redis {
            port,
            child,
            _dir: dir,
            server_pid,
            netns: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while certs.redis_cli(port, &["PING"]).as_deref() != Some("PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server on tls-port {port} did not answer PING within 10 s"
            );
            thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    /// The server's pid, as the host numbers it.
    pub fn pid(&self) -> u32 {
        self.server_pid
    }

    /// Leaves the server no file descriptor to accept with, and returns the limit set.
    /// RLIMIT_NOFILE bounds descriptor *numbers* and the kernel hands out the lowest
    /// free one; Redis may hold a high one besides 0..N (inherited here), so the
    /// count of its descriptors would leave a number free. The lowest free number
    /// itself leaves none.
    pub fn leave_no_free_descriptor(&self) -> u64 {
        let taken: std::collections::BTreeSet<u64> =
            std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
                .expect("read the server's fd directory")
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
        let limit = (0..)
            .find(|n| !taken.contains(n))
            .expect("a free descriptor number");
        let status = Command::new("prlimit")
            .arg(format!("--pid={}", self.pid()))
            .arg(format!("--nofile={limit}:{limit}"))
            .status()
            .expect("prlimit (util-linux)");
        assert!(status.success(), "prlimit failed");
        limit
    }

    /// Freezes the server (SIGSTOP): its event loop stops, so it accepts nothing and
    /// answers nothing, while the kernel still completes connections into its
    /// accept queue.
    pub fn stop_process(&self) {
        // SAFETY: kill(2) with the pid of the server this fixture started.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, libc::SIGSTOP) }, 0);
    }

    /// Lets a server frozen by [`Redis::stop_process`] run again (SIGCONT).
    pub fn continue_process(&self) {
        // SAFETY: kill(2) with the pid of the server this fixture started.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, libc::SIGCONT) }, 0);
    }

    /// Stops the server (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new([127, 0, 0, 1].into(), self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.server_pid != self.child.id() {
            // SAFETY: kill(2) with a pid; at worst it names a process already gone.
            unsafe { libc::kill(self.server_pid as i32, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Certificates made with `openssl` for a TLS test, in a directory removed on drop:
/// a CA; a server certificate it signs for 127.0.0.1 and localhost (in its
/// subjectAltName: connwatch checks the name); a client certificate it signs (X.509
/// v3: rustls takes no v1); and a second CA that signs none of them.
pub struct TlsCerts {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub wrong_ca: PathBuf,
    dir: TempDir,
}

impl TlsCerts {
    pub fn make() -> TlsCerts {
        let dir = TempDir::new("tls");
        let at = |name: &str| dir.0.join(name);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir.0)
                .output()
                .expect("openssl must be installed");
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let self_signed = |name: &str, subject: &str| {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                subject,
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
            ]);
        };
        self_signed("ca", "/CN=connwatch test CA");
        self_signed("wrong-ca", "/CN=another CA");
        let signed = |name: &str, subject: &str, extensions: &str| {
            std::fs::write(at(&format!("{name}.ext")), extensions).expect("write extensions");
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                subject,
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            openssl(&[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ]);
        };
        signed(
            "server",
            "/CN=localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        signed("client", "/CN=connwatch", "extendedKeyUsage=clientAuth\n");
        TlsCerts {
            ca: at("ca.crt"),
            server_cert: at("server.crt"),
            server_key: at("server.key"),
            client_cert: at("client.crt"),
            client_key: at("client.key"),
            wrong_ca: at("wrong-ca.crt"),
            dir,
        }
    }

    /// A path in the certificates' directory (for files a test writes there).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    /// `redis-cli --tls` with these certificates: the reply's first line, or `None`
    /// when it could not connect.
    pub fn redis_cli(&self, port: u16, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["--tls", "-h", "127.0.0.1", "-p", &port.to_string()])
            .arg("--cacert")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.client_cert)
            .arg("--key")
            .arg(&self.client_key)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli must be installed (cargo xtask setup)");
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next()?.trim().to_owned();
        (out.status.success() && !first.starts_with("Could not connect")).then_some(first)
    }

    /// The TLS arguments of `connwatch` for a server made with these certificates.
    pub fn agent_args(&self) -> Vec<String> {
        [
            ("--cacert", &self.ca),
            ("--cert", &self.client_cert),
            ("--key", &self.client_key),
        ]
        .iter()
        .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
        .collect()
    }
}

fn redis_args(port: u16, dir: &TempDir, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1 ::1",
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
        "--dir",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.push(dir.0.display().to_string());
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// A network namespace made for a test (`ip netns add`, loopback up), deleted on
/// drop: what a container's network looks like to the host.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        let name = format!("cwtest-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("ip")
                .args(["-n", &name, "link", "set", "lo", "up"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name} (iproute2) failed");
        NetNs { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The inode of the network namespace file at `path`: what connwatch reports as
/// `instance.netns`.
pub fn netns_inode(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .ino()
}

/// Runs `f` on a thread that entered the network namespace at `path`: a socket it
/// makes belongs there for life, whichever thread uses it later.
pub fn in_netns<T: Send>(path: &std::path::Path, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsRawFd as _;
            // SAFETY: setns with a namespace fd we hold open; it changes only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "setns {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            f()
        })
        .join()
        .expect("the namespace thread panicked")
    })
}

/// A cgroup v2 directory named as Docker's systemd driver names a container's
/// (`system.slice/docker-<id>.scope`), removed on drop (after the processes in it
/// are gone).
pub struct ContainerCgroup(pub PathBuf);

impl ContainerCgroup {
    pub fn new(id: &str) -> ContainerCgroup {
        let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .find(|p| std::path::Path::new(p).join("cgroup.procs").exists())
            .expect("a cgroup v2 hierarchy");
        let dir = std::path::Path::new(root).join(format!("system.slice/docker-{id}.scope"));
        std::fs::create_dir_all(&dir).expect("create the container's cgroup");
        ContainerCgroup(dir)
    }

    /// The pids in it.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.0.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            pause(20);
        }
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("connwatch-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Redis client connection from a chosen source address, speaking RESP.
pub struct Client {
    stream: TcpStream,
}

impl Client {
    fn try_connect(source: Option<IpAddr>, server: SocketAddr) -> std::io::Result<Client> {
        let socket = Socket::new(Domain::for_address(server), Type::STREAM, None)?;
        if let Some(ip) = source {
            socket.bind(&SocketAddr::new(ip, 0).into())?;
        }
        socket.connect_timeout(&server.into(), Duration::from_secs(5))?;
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_nodelay(true)?;
        Ok(Client { stream })
    }

    /// A connection made from inside the network namespace at `netns`.
    fn try_connect_in(netns: &std::path::Path, server: SocketAddr) -> std::io::Result<Client> {
        in_netns(netns, || Client::try_connect(None, server))
    }

    /// Connects from inside the network namespace at `netns` (a "container") and
    /// checks the server answers PING.
    pub fn connect_in(netns: &std::path::Path, server: SocketAddr) -> Client {
        let mut c = Client::try_connect_in(netns, server)
            .unwrap_or_else(|e| panic!("connect in {} to {server}: {e}", netns.display()));
        c.ping();
        c
    }

    /// Many connections from inside the namespace at `netns`, each answered.
    pub fn many_in(netns: &std::path::Path, server: SocketAddr, n: usize) -> Vec<Client> {
        (0..n).map(|_| Client::connect_in(netns, server)).collect()
    }

    /// Connects from `source` (e.g. "127.0.0.5") and checks the server answers PING,
    /// so Redis has accepted the connection when this returns.
    pub fn connect(source: &str, server: SocketAddr) -> Client {
        let ip: IpAddr = source.parse().expect("source address");
        let mut c = Client::try_connect(Some(ip), server)
            .unwrap_or_else(|e| panic!("connect from {source} to {server}: {e}"));
        c.ping();
        c
    }

    /// Tries to connect from `source` and run a PING: tells whether Redis served the
    /// connection, turned it away, or nothing listened.
    pub fn attempt(source: &str, server: SocketAddr) -> Attempt {
        let ip: IpAddr = source.parse().expect("source address");
        let mut c = match Client::try_connect(Some(ip), server) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Attempt::Refused,
            Err(e) => panic!("connect from {source} to {server}: {e}"),
        };
        match c.command(&["PING"]) {
            Ok(reply) if reply == "+PONG\r\n" => Attempt::Served(c),
            // "-ERR max number of clients reached", or the RST/EOF that replaces it
            // when Redis closed with our PING unread.
            Ok(_) | Err(_) => Attempt::Rejected,
        }
    }

    /// Many connections that authenticate with `password` first.
    pub fn many_authed(source: &str, server: SocketAddr, n: usize, password: &str) -> Vec<Client> {
        (0..n)
            .map(|_| {
                let ip: IpAddr = source.parse().expect("source address");
                let mut c = Client::try_connect(Some(ip), server).expect("connect");
                assert_eq!(c.command(&["AUTH", password]).expect("AUTH"), "+OK\r\n");
                c.ping();
                c
            })
            .collect()
    }

    /// Many connections from one source address, each answered.
    pub fn many(source: &str, server: SocketAddr, n: usize) -> Vec<Client> {
        (0..n).map(|_| Client::connect(source, server)).collect()
    }

    fn try_ping(&mut self) -> bool {
        self.command(&["PING"])
            .map(|r| r == "+PONG\r\n")
            .unwrap_or(false)
    }

    pub fn ping(&mut self) {
        assert!(self.try_ping(), "PING got no +PONG");
    }

    /// Connects from `source` and sends `args` without waiting for the reply: the
    /// kernel completes the connection whether or not Redis accepts it. Read the
    /// reply with [`Client::reply`] (within 30 s).
    pub fn send_only(source: &str, server: SocketAddr, args: &[&str]) -> Client {
        let ip: IpAddr = source.parse().expect("source address");
        let mut c = Client::try_connect(Some(ip), server)
            .unwrap_or_else(|e| panic!("connect from {source} to {server}: {e}"));
        c.stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        c.send(args)
            .unwrap_or_else(|e| panic!("send from {source} to {server}: {e}"));
        c
    }

    fn send(&mut self, args: &[&str]) -> std::io::Result<()> {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.stream.write_all(req.as_bytes())
    }

    /// Sends one command and returns the first reply line (with its CRLF).
    pub fn command(&mut self, args: &[&str]) -> std::io::Result<String> {
        self.send(args)?;
        self.reply()
    }

    /// The first line of the next reply (with its CRLF).
    pub fn reply(&mut self) -> std::io::Result<String> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if self.stream.read(&mut byte)? == 0 {
                break;
            }
            line.push(byte[0]);
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    /// The client closes first (FIN from the client).
    pub fn close(self) {
        drop(self.stream);
    }

    /// QUIT: the server replies and closes first; we wait for its FIN, then close.
    pub fn quit(mut self) {
        let reply = self.command(&["QUIT"]).expect("QUIT");
        assert_eq!(reply, "+OK\r\n");
        let mut rest = [0u8; 16];
        let _ = self.stream.read(&mut rest); // 0 bytes: the server's FIN
        drop(self.stream);
    }

    /// The client aborts with a RST (SO_LINGER 0).
    pub fn reset(self) {
        let socket = Socket::from(self.stream);
        socket
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0");
        drop(socket);
    }
}

/// What became of one connection attempt.
pub enum Attempt {
    Served(Client),
    Rejected,
    Refused,
}

/// Connects from `source` until Redis turns one away: every free slot is then held.
pub fn fill(source: &str, server: SocketAddr) -> Vec<Client> {
    let mut held = Vec::new();
    loop {
        match Client::attempt(source, server) {
            Attempt::Served(c) => held.push(c),
            Attempt::Rejected => return held,
            Attempt::Refused => panic!("redis-server is not listening"),
        }
        assert!(held.len() <= 10_000, "Redis never said maxclients");
    }
}

/// The real `connwatch watch --format json --clients all` running with its
/// probes, its reports collected as they come.
pub struct Agent {
    child: Child,
    reports: Arc<Mutex<Vec<Value>>>,
    /// The verdict transition lines (`"type":"verdict"`), in order.
    verdict_lines: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
}

pub const AGENT_INTERVAL: &str = "200ms";

impl Agent {
    /// Starts watching `ports` and waits for the first report, so the probes are
    /// attached when this returns.
    pub fn watch(ports: &[u16]) -> Agent {
        Agent::watch_with(ports, &[], &[])
    }

    /// [`Agent::watch`] with more arguments and environment variables.
    ///
    /// With `--clients all`: the fixtures look at whole reports (every address's
    /// row in every report). The default stream, which writes a row only when it
    /// changed, is tested in tests/tests/ndjson.rs.
    pub fn watch_with(ports: &[u16], args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new(connwatch_bin());
        cmd.args(Agent::watch_args(ports, args));
        // The test's own environment must not lend the agent a password.
        cmd.env_remove("REDISCLI_AUTH");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Agent::start(cmd)
    }

    /// The arguments [`Agent::watch_with`] runs connwatch with.
    pub fn watch_args(ports: &[u16], args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = ["watch", "--format", "json", "--interval", AGENT_INTERVAL]
            .into_iter()
            .chain(["--clients", "all"])
            .map(String::from)
            .collect();
        for p in ports {
            all.extend(["--port".to_owned(), p.to_string()]);
        }
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    /// Runs `cmd` (connwatch with [`Agent::watch_args`], or a wrapper that runs
    /// it) and waits for the first report.
    pub fn start(mut cmd: Command) -> Agent {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start connwatch");
        let reports = Arc::new(Mutex::new(Vec::new()));
        let verdict_lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&reports);
        let verdict_sink = Arc::clone(&verdict_lines);
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("connwatch printed a line that is not JSON ({e}): {line}")
                });
                // Verdict transition lines go with the reports' own verdicts; the
                // fixtures look at reports.
                if value["type"] == "report" {
                    sink.lock().expect("reports lock").push(value);
                } else {
                    assert_eq!(value["type"], "verdict", "unknown line type: {line}");
                    verdict_sink.lock().expect("verdicts lock").push(value);
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        let err_sink = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                err_sink
                    .lock()
                    .expect("stderr lock")
                    .push_str(&(line + "\n"));
            }
        });
        let mut agent = Agent {
            child,
            reports,
            verdict_lines,
            stderr,
        };
        agent.wait_for("the first report", Duration::from_secs(20), |_| true);
        agent
    }

    /// The verdict transition lines so far, in order.
    pub fn verdict_lines(&self) -> Vec<Value> {
        self.verdict_lines.lock().expect("verdicts lock").clone()
    }

    /// The latest report.
    pub fn latest(&self) -> Option<Value> {
        self.reports.lock().expect("reports lock").last().cloned()
    }

    /// The latest report of the instance in network namespace `netns` (inode).
    pub fn latest_of(&self, netns: u64) -> Option<Value> {
        self.reports
            .lock()
            .expect("reports lock")
            .iter()
            .rev()
            .find(|r| r["instance"]["netns"] == netns)
            .cloned()
    }

    /// Waits until the latest report of the instance in `netns` satisfies `pred`.
    pub fn wait_for_instance(
        &mut self,
        what: &str,
        netns: u64,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let which = format!("last report of netns {netns}");
        self.wait_until(what, &which, timeout, |a| a.latest_of(netns), pred)
    }

    /// Waits until a report satisfies `pred`, and returns it. Panics with the last
    /// report and the agent's stderr after `timeout`.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_until(what, "last report", timeout, Agent::latest, pred)
    }

    /// Waits until `latest` (`which` report) satisfies `pred`; panics with it and
    /// the agent's stderr after `timeout`, or when the agent exits.
    fn wait_until(
        &mut self,
        what: &str,
        which: &str,
        timeout: Duration,
        latest: impl Fn(&Agent) -> Option<Value>,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = latest(self)
                && pred(&r)
            {
                return r;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "connwatch exited ({status}) while waiting for {what}; stderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; {which}:\n{}\nstderr:\n{}",
                    latest(self)
                        .map(|r| serde_json::to_string(&r).unwrap_or_default())
                        .unwrap_or_default(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the agent gets no chance to clean up; waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// How many reports have come so far.
    pub fn report_count(&self) -> usize {
        self.reports.lock().expect("reports lock").len()
    }

    /// Every report so far, oldest first.
    pub fn reports(&self) -> Vec<Value> {
        self.reports.lock().expect("reports lock").clone()
    }

    /// SIGTERM, then the exit status and every report.
    pub fn stop(mut self) -> (std::process::ExitStatus, Vec<Value>) {
        // SAFETY: kill with a pid we spawned and still own (not yet reaped).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for connwatch");
        thread::sleep(Duration::from_millis(100)); // let the reader threads drain
        let reports = self.reports.lock().expect("reports lock").clone();
        (status, reports)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last JSON line of a command's output (a report or an `analyze` line).
pub fn last_json(out: &[u8]) -> Value {
    let text = String::from_utf8_lossy(out);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in the output:\n{text}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// The `clients[]` entry for `addr` in a report, whole: a sparse row (the
/// default stream's) with the keys it left out put back ([`densify`]).
pub fn client(report: &Value, addr: &str) -> Option<Value> {
    report["clients"]
        .as_array()?
        .iter()
        .find(|c| c["addr"] == addr)
        .map(densify)
}

/// A client row as a reader puts it back (docs/REPORT.md, *Sparse rows*): every
/// key it leaves out, and every key a process of its `processes` leaves out, with
/// its `default` from docs/report.schema.json. A whole row is as it was.
pub fn densify(row: &Value) -> Value {
    static DEFAULTS: std::sync::OnceLock<[Vec<(String, Value)>; 2]> = std::sync::OnceLock::new();
    let [client, process] = DEFAULTS.get_or_init(|| {
        // Compiled in: the VM test runs this binary where the repository is not.
        let text = include_str!("../../docs/report.schema.json");
        let schema: Value = serde_json::from_str(text).expect("the schema is JSON");
        ["client", "process"].map(|def| {
            let props = schema["$defs"][def]["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("no properties of {def}"));
            props
                .iter()
                .filter_map(|(k, p)| Some((k.clone(), p.get("default")?.clone())))
                .collect()
        })
    });
    let fill = |v: &mut Value, defaults: &[(String, Value)]| {
        let obj = v.as_object_mut().expect("a row is an object");
        for (k, d) in defaults {
            obj.entry(k.clone()).or_insert_with(|| d.clone());
        }
    };
    let mut row = row.clone();
    fill(&mut row, client);
    if let Some(Value::Array(ps)) = row.get_mut("processes") {
        ps.iter_mut().for_each(|p| fill(p, process));
    }
    row
}

/// What a reader of the NDJSON stream holds, rebuilt line by line as
/// docs/REPORT.md says: a `full` report replaces an instance's rows; a `changed`
/// one drops `clients_gone` and replaces the rows it carries (sparse: put back
/// with [`densify`]), the rest stay as they were.
#[derive(Default)]
pub struct Rebuilt {
    /// Per instance (`instance.netns`, 0 for null): address → its last row.
    rows: std::collections::BTreeMap<u64, std::collections::BTreeMap<String, Value>>,
}

impl Rebuilt {
    /// Applies one report line; returns the report as the reader rebuilds it: every
    /// known address's row (in address order), `clients_mode` `full`. Panics when
    /// the rebuilt rows are not exactly `totals.clients` addresses, or a `changed`
    /// line comes before a `full` one of its instance.
    pub fn apply(&mut self, line: &Value) -> Value {
        assert_eq!(line["type"], "report", "not a report line: {line}");
        let netns = line["instance"]["netns"].as_u64().unwrap_or(0);
        let carried = line["clients"].as_array().expect("clients[]");
        let mode = line["clients_mode"].as_str().expect("clients_mode");
        let rows = match mode {
            "full" => {
                let rows = self.rows.entry(netns).or_default();
                rows.clear();
                rows
            }
            "changed" => {
                let rows = self
                    .rows
                    .get_mut(&netns)
                    .unwrap_or_else(|| panic!("a changed line before a full one: {line}"));
                for gone in line["clients_gone"].as_array().expect("clients_gone[]") {
                    let gone = gone.as_str().expect("an address");
                    assert!(rows.remove(gone).is_some(), "{gone} gone but never held");
                }
                rows
            }
            other => panic!("unknown clients_mode {other:?}"),
        };
        for c in carried {
            let addr = c["addr"].as_str().expect("addr").to_owned();
            rows.insert(addr, densify(c));
        }
        assert_eq!(
            Some(rows.len() as u64),
            line["totals"]["clients"].as_u64(),
            "rebuilt rows against totals.clients at uptime {}",
            line["uptime_s"]
        );
        let mut whole = line.clone();
        whole["clients"] = Value::Array(rows.values().cloned().collect());
        whole["clients_mode"] = Value::from("full");
        whole["clients_omitted"] = Value::from(0);
        whole["clients_gone"] = Value::Array(Vec::new());
        whole
    }
}

/// A count field of the client `addr` (0 when the address is absent).
pub fn count(report: &Value, addr: &str, field: &str) -> u64 {
    client(report, addr)
        .and_then(|c| c[field].as_u64())
        .unwrap_or(0)
}

/// Pauses the test; wraps sleep so waits stay visible and bounded.
pub fn pause(ms: u64) {
    thread::sleep(Duration::from_millis(ms));
}

/// Serializes the tests of one binary: each loads probes and runs a Redis, and the
/// machines have two cores. Hold the guard for the whole test.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    require_root();
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Debian's interpreter, which has `python3-redis`; a `python3` earlier on PATH
/// (pyenv) may not.
pub const PYTHON: &str = "/usr/bin/python3";

/// A client program running beside the test (a script from tests/clients/ or a
/// tool such as redis-benchmark) in its own process group, killed with all its
/// children on drop. Its stdout lines are collected as they come.
pub struct Background {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Background {
    /// Runs `tests/clients/<script>` with Debian's python3 and `python3-redis`.
    pub fn python(script: &str, args: &[&str]) -> Background {
        let path = workspace_root().join("tests").join("clients").join(script);
        assert!(path.exists(), "{} does not exist", path.display());
        assert!(
            std::path::Path::new(PYTHON).exists(),
            "{PYTHON} is missing: cargo xtask setup installs python3 and python3-redis"
        );
        let mut cmd = Command::new(PYTHON);
        // -u: lines as they come; -B: no __pycache__ in the source tree.
        cmd.args(["-u", "-B"]).arg(&path).args(args);
        Background::spawn(script, cmd)
    }

    /// Runs `tests/clients/<script>` like [`Background::python`], as a process
    /// named `comm` (what the kernel reports as its name): python3 is started
    /// through a symbolic link of that name in `dir`.
    pub fn python_named(dir: &TempDir, comm: &str, script: &str, args: &[&str]) -> Background {
        let path = workspace_root().join("tests").join("clients").join(script);
        let link = dir.0.join(comm);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(PYTHON, &link).expect("link python3 under another name");
        let mut cmd = Command::new(&link);
        cmd.args(["-u", "-B"]).arg(&path).args(args);
        Background::spawn(script, cmd)
    }

    /// [`Background::python_named`] inside the network namespace `netns` (`ip
    /// netns exec` enters it and execs the program: the pid is the program's).
    pub fn python_named_in(
        netns: &NetNs,
        dir: &TempDir,
        comm: &str,
        script: &str,
        args: &[&str],
    ) -> Background {
        let path = workspace_root().join("tests").join("clients").join(script);
        let link = dir.0.join(comm);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(PYTHON, &link).expect("link python3 under another name");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &netns.name])
            .arg(&link)
            .args(["-u", "-B"])
            .arg(&path)
            .args(args);
        Background::spawn(script, cmd)
    }

    /// The program's process id (on the host).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `tests/clients/node/<script>` with Node.js and the client libraries
    /// `cargo xtask setup` installed beside it (ioredis, node-redis).
    pub fn node(script: &str, args: &[&str]) -> Background {
        let dir = workspace_root().join("tests").join("clients").join("node");
        assert!(
            dir.join("node_modules").join("ioredis").is_dir(),
            "{} has no node_modules: cargo xtask setup installs them (npm ci)",
            dir.display()
        );
        let mut cmd = Command::new("node");
        cmd.arg(dir.join(script)).args(args);
        Background::spawn(script, cmd)
    }

    /// Runs `program` with `args`.
    pub fn command(program: &str, args: &[&str]) -> Background {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Background::spawn(program, cmd)
    }

    fn spawn(name: &str, mut cmd: Command) -> Background {
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("lines lock").push(line);
            }
        });
        let err = child.stderr.take().expect("stderr");
        let err_sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(err).read_to_string(&mut text);
            err_sink.lock().expect("stderr lock").push_str(&text);
        });
        Background {
            name: name.to_owned(),
            child,
            lines,
            stderr,
        }
    }

    /// The stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    /// Waits until a stdout line equals `line` (e.g. "started"). Panics with the
    /// program's stderr if it exits first or `timeout` passes.
    pub fn wait_for_line(&mut self, line: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.lines().iter().any(|l| l == line) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                pause(100); // let the readers drain
                if self.lines().iter().any(|l| l == line) {
                    return;
                }
                panic!(
                    "{} exited ({status}) before printing {line:?}; stdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.lines().join("\n"),
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print {line:?} within {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Panics (with its stderr) if the program has exited with a failure; a program
    /// that failed early would leave a test watching no load at all.
    pub fn assert_ok(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            assert!(
                status.success(),
                "{} failed ({status}); stderr:\n{}",
                self.name,
                self.stderr()
            );
        }
    }

    /// Whether the program still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the program to end by itself, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                pause(100); // let the readers drain
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still runs after {timeout:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // SAFETY: kill with the process group of a child we spawned as its leader
        // (process_group(0)) and have not reaped yet, so the group id is still ours.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Opens and closes `total` connections to `server`, split over `threads` threads,
/// thread `t` from addresses 127.(base+t).x.y (y never 0, each used once so no
/// client port is still in TIME_WAIT). Bounded: each thread stops after 60 s.
/// Returns how many were made.
pub fn burst(server: SocketAddr, base: u8, threads: u32, total: u32) -> u32 {
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            thread::spawn(move || {
                let per_thread = total / threads;
                for i in 0..per_thread {
                    if started.elapsed() > Duration::from_secs(60) {
                        return i;
                    }
                    let from = IpAddr::V4(std::net::Ipv4Addr::new(
                        127,
                        base + t as u8,
                        (i / 250 % 250) as u8,
                        (i % 250 + 1) as u8,
                    ));
                    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
                    socket
                        .bind(&SocketAddr::new(from, 0).into())
                        .expect("bind the source address");
                    socket
                        .connect_timeout(&server.into(), Duration::from_secs(5))
                        .unwrap_or_else(|e| panic!("connect from {from}: {e}"));
                }
                per_thread
            })
        })
        .collect();
    workers
        .into_iter()
        .map(|w| w.join().expect("burst thread"))
        .sum()
}
