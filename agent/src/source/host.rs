//! Facts about the host from `/proc`: which processes hold the listening sockets of
//! the watched ports, their file-descriptor limits and usage, and the kernel's cap
//! on accept-queue backlogs.
//!
//! Processes come and go while we read `/proc`; one that vanishes or that we may
//! not inspect is skipped, not an error. Errors name the file they came from.
//!
//! Per-process files (the process listing, fd targets, limits, fd counts) are read
//! through the `procfs` crate. Our own readers remain where it has none:
//! `net.core.somaxconn` and the TcpExt counters of `/proc/net/netstat`; and
//! `/proc/sys/fs/file-nr`, whose procfs reader reads only the real file and
//! takes a fourth field, where ours parses text and rejects one (see
//! [`parse_file_nr`]).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use procfs::ProcError;
use procfs::process::{FDInfo, FDTarget, Limit, LimitValue, Process};

use crate::model::{HostSnapshot, Instance, Listener};
use crate::source::netns::{self, Netns};
use crate::source::sock_diag::{self, DiagSocket, StateMask};

/// The listening sockets on `ports` in `netns` and the pids holding each, sorted
/// by address (pids as the host's PID namespace numbers them).
pub fn try_listener_pids(netns: &Netns, ports: &[u16]) -> io::Result<Vec<Listener>> {
    let sockets = sock_diag::tcp_sockets(netns, ports, StateMask::LISTEN)?;
    Ok(listeners_of(&sockets, Path::new("/proc")))
}

/// The LISTEN sockets among `sockets` (one sock_diag dump) with the pids under
/// `proc_root` holding each, sorted by address.
fn listeners_of(sockets: &[DiagSocket], proc_root: &Path) -> Vec<Listener> {
    listeners_cached(sockets, proc_root, &mut OwnerCache::default())
}

/// [`listeners_of`], reusing the owners `cache` found before while they still hold
/// their sockets.
fn listeners_cached(
    sockets: &[DiagSocket],
    proc_root: &Path,
    cache: &mut OwnerCache,
) -> Vec<Listener> {
    let listening = || {
        sockets
            .iter()
            .filter(|s| s.state == sock_diag::state::LISTEN)
    };
    let inodes: HashSet<u64> = listening().map(|s| s.inode).filter(|&i| i != 0).collect();
    let mut owners = cache.pids(proc_root, &inodes);
    let mut listeners: Vec<Listener> = listening()
        .map(|s| Listener {
            port: s.local.port(),
            addr: s.local,
            inode: s.inode,
            pids: owners.remove(&s.inode).unwrap_or_default(),
        })
        .collect();
    listeners.sort_by_key(|l| l.addr);
    listeners
}

/// The listeners' owners found by the last full scan of /proc, reused while each
/// still holds its socket: a full scan reads the link of every descriptor of every
/// process — tens of thousands on a busy Redis host, every interval — where
/// checking a known owner is one readlink.
#[derive(Debug, Default)]
pub struct OwnerCache {
    /// inode → (pid, fd) holding it, as of `scanned_at`.
    owners: HashMap<u64, Vec<(u32, u32)>>,
    scanned_at: Option<std::time::Instant>,
    /// Full scans done (for tests and debugging).
    scans: u64,
    /// What /proc said of the listener's process (name, inner pid, container),
    /// read again only when the pid changes.
    facts: Option<(u32, netns::ProcessFacts)>,
}

impl OwnerCache {
    /// Past this, a full scan runs anyway, to find processes that began to share a
    /// listener (a fork) since the last one.
    const RESCAN_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

    /// The pids under `proc_root` holding each of `inodes`, sorted; inodes nobody
    /// holds are left out.
    fn pids(&mut self, proc_root: &Path, inodes: &HashSet<u64>) -> HashMap<u64, Vec<u32>> {
        let fresh = self
            .scanned_at
            .is_some_and(|at| at.elapsed() < Self::RESCAN_AFTER);
        let same_set =
            inodes.len() == self.owners.len() && inodes.iter().all(|i| self.owners.contains_key(i));
        // One readlink (and an lstat, which procfs adds for the fd's mode) per
        // known owner.
        let still_held = || {
            self.owners.iter().all(|(inode, owners)| {
                owners.iter().all(|&(pid, fd)| {
                    let (Ok(pid), Ok(fd)) = (i32::try_from(pid), i32::try_from(fd)) else {
                        return false;
                    };
                    FDInfo::from_raw_fd_with_root(proc_root, pid, fd)
                        .ok()
                        .and_then(|info| socket_inode(&info.target))
                        == Some(*inode)
                })
            })
        };
        if !(fresh && same_set && still_held()) {
            self.owners = owners_by_inode(proc_root, inodes);
            for inode in inodes {
                self.owners.entry(*inode).or_default();
            }
            self.scanned_at = Some(std::time::Instant::now());
            self.scans += 1;
        }
        self.owners
            .iter()
            .filter(|(_, owners)| !owners.is_empty())
            .map(|(inode, owners)| (*inode, owners.iter().map(|&(pid, _)| pid).collect()))
            .collect()
    }
}

/// For each of `inodes`, the (pid, fd) pairs under `proc_root` holding that socket,
/// one per process (its lowest fd), sorted by pid. Each process's fd directory is
/// read once, for all inodes together.
fn owners_by_inode(proc_root: &Path, inodes: &HashSet<u64>) -> HashMap<u64, Vec<(u32, u32)>> {
    let mut owners: HashMap<u64, Vec<(u32, u32)>> = HashMap::new();
    if inodes.is_empty() {
        return owners;
    }
    let Ok(processes) = procfs::process::all_processes_with_root(proc_root) else {
        return owners;
    };
    // A process that exited or that we may not inspect has nothing to say.
    for process in processes.flatten() {
        let Ok(pid) = u32::try_from(process.pid) else {
            continue;
        };
        let Ok(fds) = process.fd() else {
            continue;
        };
        let mut held: Vec<(u64, u32)> = fds
            .flatten()
            .filter_map(|fd| {
                let inode = socket_inode(&fd.target)?;
                let n = u32::try_from(fd.fd).ok()?;
                inodes.contains(&inode).then_some((inode, n))
            })
            .collect();
        // A process holding the same socket twice (dup) is one owner.
        held.sort_unstable();
        held.dedup_by_key(|(inode, _)| *inode);
        for (inode, fd) in held {
            owners.entry(inode).or_default().push((pid, fd));
        }
    }
    for list in owners.values_mut() {
        list.sort_unstable();
    }
    owners
}

/// The inode of a socket fd's target (`socket:[12345]`), or `None` for anything else.
fn socket_inode(target: &FDTarget) -> Option<u64> {
    match target {
        FDTarget::Socket(inode) => Some(*inode),
        _ => None,
    }
}

/// RLIMIT_NOFILE of process `pid` as (soft, hard); `None` means unlimited.
pub fn nofile_limit(pid: u32) -> io::Result<(Option<u64>, Option<u64>)> {
    let path = format!("/proc/{pid}/limits");
    let limits = process(pid, &path)?
        .limits()
        .map_err(|e| proc_error(e, &path))?;
    Ok(soft_and_hard(&limits.max_open_files))
}

/// A limit as (soft, hard); `None` means unlimited.
fn soft_and_hard(limit: &Limit) -> (Option<u64>, Option<u64>) {
    let value = |v: LimitValue| match v {
        LimitValue::Unlimited => None,
        LimitValue::Value(n) => Some(n),
    };
    (value(limit.soft_limit), value(limit.hard_limit))
}

/// How many file descriptors process `pid` has open.
///
/// Linux 6.2 and later report the count as the size of `/proc/PID/fd`: one stat
/// instead of listing tens of thousands of entries every interval. Older kernels
/// report 0 there, and the directory is counted. Ours, not procfs's `fd_count`:
/// that one opens `/proc/PID` first, which needs ptrace access to the process
/// where a stat of its `fd` directory does not (a process between fork and exec,
/// or one that changed credentials, is not ptrace-readable by its own user).
pub fn open_fds(pid: u32) -> io::Result<usize> {
    let path = format!("/proc/{pid}/fd");
    let size = fs::metadata(&path).map_err(|e| with_path(e, &path))?.len();
    if size > 0 {
        return usize::try_from(size).map_err(|_| io::Error::other("fd count out of range"));
    }
    let entries = fs::read_dir(&path).map_err(|e| with_path(e, &path))?;
    let mut count = 0;
    for entry in entries {
        entry.map_err(|e| with_path(e, &path))?;
        count += 1;
    }
    Ok(count)
}

/// `/proc/PID` of `pid`; errors name `path`, the file the caller means to read.
fn process(pid: u32, path: &str) -> io::Result<Process> {
    let pid = i32::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{path}: no such pid")))?;
    Process::new(pid).map_err(|e| proc_error(e, path))
}

/// A procfs error as an [`io::Error`] of the same kind, naming `path` first (procfs
/// names the directory it opened, or nothing).
fn proc_error(err: ProcError, path: &str) -> io::Error {
    match err {
        ProcError::NotFound(_) => {
            io::Error::new(io::ErrorKind::NotFound, format!("{path}: not found"))
        }
        ProcError::PermissionDenied(_) => io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{path}: permission denied"),
        ),
        ProcError::Io(e, _) => with_path(e, path),
        other => io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {other}")),
    }
}

/// `net.core.somaxconn`: the cap the kernel puts on any listen() backlog.
pub fn somaxconn() -> io::Result<u32> {
    let path = "/proc/sys/net/core/somaxconn";
    let text = read(path)?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: not a number: {:?}", text.trim()),
        )
    })
}

fn read(path: &str) -> io::Result<String> {
    fs::read_to_string(path).map_err(|e| with_path(e, path))
}

fn with_path(err: io::Error, path: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{path}: {err}"))
}

/// Reads everything a [`HostSnapshot`] holds for the listeners on `ports` in
/// `netns`. One sock_diag LISTEN dump serves the listeners, their pids and the
/// accept queues. A source that fails (a process that just exited, a file we may
/// not read) leaves its fields `None` and is logged at debug level: the next
/// interval tries again. With `instance` set, the snapshot carries it, completed
/// with what `/proc` says of the listener's process.
pub fn snapshot(
    netns: &Netns,
    ports: &[u16],
    owners: &mut OwnerCache,
    instance: Option<Instance>,
) -> HostSnapshot {
    let mut snap = HostSnapshot::default();

    match sock_diag::tcp_sockets(netns, ports, StateMask::LISTEN) {
        Ok(sockets) => {
            snap.listeners = listeners_cached(&sockets, Path::new("/proc"), owners);
            snap.accept_queue = accept_queue(&sockets);
        }
        Err(e) => log::debug!("listing the listeners of ports {ports:?}: {e}"),
    }

    snap.pid = snap
        .listeners
        .iter()
        .flat_map(|l| l.pids.iter().copied())
        .min();
    if let Some(pid) = snap.pid {
        match nofile_limit(pid) {
            Ok((soft, hard)) => {
                snap.nofile_soft = soft;
                snap.nofile_hard = hard;
                snap.nofile_unlimited = soft.is_none() || hard.is_none();
            }
            Err(e) => log::debug!("{e}"),
        }
        match open_fds(pid) {
            Ok(n) => snap.open_fds = Some(n as u64),
            Err(e) => log::debug!("{e}"),
        }
    }

    snap.file_nr = read_parsed(FILE_NR, parse_file_nr);
    // somaxconn and the TcpExt counters are per network namespace: read as the
    // namespace's own processes see them.
    match netns.enter(somaxconn) {
        Ok(n) => snap.somaxconn = Some(n),
        Err(e) => log::debug!("{e}"),
    }
    let netstat = match (netns.is_own(), snap.pid) {
        (true, _) => Some(NETSTAT.to_string()),
        (false, Some(pid)) => Some(format!("/proc/{pid}/net/netstat")),
        (false, None) => None,
    };
    if let Some(path) = netstat
        && let Some((overflows, drops)) = read_parsed(&path, |t| Some(parse_listen_counters(t)))
    {
        if overflows.is_none() || drops.is_none() {
            log::debug!("{path}: TcpExt ListenOverflows or ListenDrops missing or unreadable");
        }
        snap.listen_overflows = overflows;
        snap.listen_drops = drops;
    }
    snap.instance = instance.map(|mut i| {
        i.pid = snap.pid;
        let facts = match snap.pid {
            Some(pid) => {
                if owners.facts.as_ref().is_none_or(|(p, _)| *p != pid) {
                    owners.facts = Some((pid, netns::process_facts(Path::new("/proc"), pid)));
                }
                owners
                    .facts
                    .as_ref()
                    .map(|(_, f)| f.clone())
                    .unwrap_or_default()
            }
            None => netns::ProcessFacts::default(),
        };
        i.comm = facts.comm;
        i.ns_pid = facts.ns_pid;
        i.container_id = facts.container_id;
        i.pod_uid = facts.pod_uid;
        i
    });
    snap
}

const FILE_NR: &str = "/proc/sys/fs/file-nr";
/// Per network namespace: the agent's own; another's is `/proc/PID/net/netstat`
/// of a process in it.
const NETSTAT: &str = "/proc/net/netstat";

/// `parse` applied to the text of `path`; `None`, logged, if either fails.
fn read_parsed<T>(path: &str, parse: impl FnOnce(&str) -> Option<T>) -> Option<T> {
    let text = read(path).map_err(|e| log::debug!("{e}")).ok()?;
    let parsed = parse(&text);
    if parsed.is_none() {
        log::debug!("{path}: unexpected contents: {:?}", text.trim());
    }
    parsed
}

/// Summed (queued connections, backlog) of the LISTEN sockets among `sockets`;
/// `None` when there are none (no queue to speak of, rather than a backlog of 0).
///
/// For a LISTEN socket `idiag_rqueue` is the accept-queue depth and `idiag_wqueue`
/// its backlog (already capped by somaxconn). A dual-stack setup has one listener
/// per address, each with its own queue, hence the sums.
fn accept_queue(sockets: &[DiagSocket]) -> Option<(u64, u64)> {
    sockets
        .iter()
        .filter(|s| s.state == sock_diag::state::LISTEN)
        .fold(None, |sum, s| {
            let (queued, backlog) = sum.unwrap_or((0, 0));
            Some((queued + u64::from(s.rqueue), backlog + u64::from(s.wqueue)))
        })
}

/// `/proc/sys/fs/file-nr` — `allocated unused max`, e.g. `1696\t0\t9223372036854775807`
/// — as (allocated, max). (`unused` has been 0 since Linux 2.6.)
fn parse_file_nr(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let allocated = fields.next()?.ok()?;
    let _unused = fields.next()?.ok()?;
    let max = fields.next()?.ok()?;
    fields.next().is_none().then_some((allocated, max))
}

/// TcpExt `ListenOverflows` and `ListenDrops` of a `/proc/net/netstat` text, each
/// `None` when missing or unreadable.
fn parse_listen_counters(text: &str) -> (Option<u64>, Option<u64>) {
    (
        netstat_counter(text, "TcpExt", "ListenOverflows"),
        netstat_counter(text, "TcpExt", "ListenDrops"),
    )
}

/// Counter `name` of `group` in the `/proc/net/netstat` (or `/proc/net/snmp`)
/// format: per group, a line of column names then a line of values, both starting
/// with `Group:`. Columns are matched by name: kernels add, and sometimes reorder,
/// them.
fn netstat_counter(text: &str, group: &str, name: &str) -> Option<u64> {
    let mut lines = text
        .lines()
        .filter_map(|l| l.strip_prefix(group)?.strip_prefix(':'));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    // Misaligned columns would pair a name with another counter's value.
    if names.len() != values.len() {
        return None;
    }
    let column = names.iter().position(|&n| n == name)?;
    values.get(column)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::capacity::effective_maxclients;
    use crate::model::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::{MetadataExt, symlink};
    use std::os::unix::io::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::{Mutex, MutexGuard};

    /// A whole `/proc/PID/limits` as the kernel writes it (procfs wants every line;
    /// the two priority lines have no units).
    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max data size             unlimited            unlimited            bytes     
Max stack size            8388608              unlimited            bytes     
Max core file size        0                    unlimited            bytes     
Max resident set          unlimited            unlimited            bytes     
Max processes             63448                63448                processes 
Max open files            10032                524288               files     
Max locked memory         8388608              8388608              bytes     
Max address space         unlimited            unlimited            bytes     
Max file locks            unlimited            unlimited            locks     
Max pending signals       63448                63448                signals   
Max msgqueue size         819200               819200               bytes     
Max nice priority         0                    0                    
Max realtime priority     0                    0                    
Max realtime timeout      unlimited            unlimited            us        
";

    /// The open-file limits of a limits text, as [`nofile_limit`] reads them.
    fn parse_nofile_limit(text: &str) -> procfs::ProcResult<(Option<u64>, Option<u64>)> {
        use procfs::FromBufRead;
        procfs::process::Limits::from_buf_read(text.as_bytes())
            .map(|limits| soft_and_hard(&limits.max_open_files))
    }

    #[test]
    fn nofile_limit_from_limits_text() {
        assert_eq!(
            parse_nofile_limit(LIMITS).unwrap(),
            (Some(10032), Some(524288))
        );
        let unlimited = LIMITS.replace(
            "10032                524288",
            "unlimited            unlimited",
        );
        assert_eq!(parse_nofile_limit(&unlimited).unwrap(), (None, None));
        let soft_only = LIMITS.replace("524288", "unlimited");
        assert_eq!(parse_nofile_limit(&soft_only).unwrap(), (Some(10032), None));
    }

    #[test]
    fn malformed_limits_text_is_an_error() {
        assert!(parse_nofile_limit("").is_err());
        let without = LIMITS.replace("Max open files", "Max open filez");
        assert!(parse_nofile_limit(&without).is_err());
        let garbage = LIMITS.replace("10032", "lots");
        assert!(parse_nofile_limit(&garbage).is_err());
        let soft_only = LIMITS.replace("10032                524288               files", "1024");
        assert!(parse_nofile_limit(&soft_only).is_err());
        let negative = LIMITS.replace("10032                524288", "-1                   5     ");
        assert!(parse_nofile_limit(&negative).is_err());
    }

    #[test]
    fn socket_inode_from_fd_link() {
        let inode = |link: &str| {
            link.parse::<FDTarget>()
                .ok()
                .and_then(|target| socket_inode(&target))
        };
        assert_eq!(inode("socket:[123456]"), Some(123456));
        assert_eq!(inode("socket:[]"), None);
        assert_eq!(inode("socket:[12x]"), None);
        assert_eq!(inode("pipe:[123456]"), None);
        assert_eq!(inode("/dev/null"), None);
        assert_eq!(inode("anon_inode:[eventpoll]"), None);
    }

    /// A throwaway directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("connwatch-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// `<pid>/fd/<fd>` → `target`, like /proc.
        fn fd(&self, pid: &str, fd: u32, target: &str) {
            let dir = self.0.join(pid).join("fd");
            fs::create_dir_all(&dir).unwrap();
            symlink(target, dir.join(fd.to_string())).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn owners_are_found_in_a_proc_tree() {
        let proc = TempDir::new("proc");
        proc.fd("100", 0, "/dev/null");
        proc.fd("100", 3, "socket:[42]");
        proc.fd("100", 4, "socket:[7]");
        proc.fd("100", 5, "socket:[42]"); // dup of 3: still one owner
        proc.fd("20", 9, "socket:[42]"); // sorts before 100
        proc.fd("300", 1, "socket:[99]"); // not asked for
        proc.fd("self", 1, "socket:[42]"); // not a pid
        fs::create_dir_all(proc.0.join("400")).unwrap(); // vanished: no fd dir
        fs::write(proc.0.join("500"), "").unwrap(); // not even a directory

        let inodes: HashSet<u64> = [42, 7, 8].into_iter().collect();
        let owners = OwnerCache::default().pids(&proc.0, &inodes);
        let expected: HashMap<u64, Vec<u32>> =
            [(42, vec![20, 100]), (7, vec![100])].into_iter().collect();
        assert_eq!(owners, expected);

        assert!(
            OwnerCache::default()
                .pids(&proc.0, &HashSet::new())
                .is_empty()
        );
        assert!(
            OwnerCache::default()
                .pids(&proc.0.join("missing"), &inodes)
                .is_empty()
        );
    }

    #[test]
    fn known_owners_are_checked_not_searched_for_again() {
        let proc = TempDir::new("proc-cache");
        proc.fd("100", 3, "socket:[42]");
        proc.fd("100", 8, "socket:[42]"); // a dup: the lowest fd is remembered
        proc.fd("20", 9, "socket:[42]");
        proc.fd("300", 1, "socket:[7]");
        let mut cache = OwnerCache::default();
        let inodes: HashSet<u64> = [42, 7, 5].into_iter().collect();
        let want: HashMap<u64, Vec<u32>> =
            [(42, vec![20, 100]), (7, vec![300])].into_iter().collect();
        assert_eq!(cache.pids(&proc.0, &inodes), want);
        assert_eq!(cache.scans, 1);
        // Nothing moved: answered from the cache.
        assert_eq!(cache.pids(&proc.0, &inodes), want);
        assert_eq!(cache.scans, 1);
        // Pid 20 let go of the socket (Redis restarted): found out, searched again.
        fs::remove_file(proc.0.join("20/fd/9")).unwrap();
        let want: HashMap<u64, Vec<u32>> = [(42, vec![100]), (7, vec![300])].into_iter().collect();
        assert_eq!(cache.pids(&proc.0, &inodes), want);
        assert_eq!(cache.scans, 2);
        // A different set of listeners: searched again.
        let fewer: HashSet<u64> = [42].into_iter().collect();
        assert_eq!(
            cache.pids(&proc.0, &fewer),
            [(42, vec![100])].into_iter().collect()
        );
        assert_eq!(cache.scans, 3);
    }

    #[test]
    fn listener_pids_finds_this_process() {
        let _no_fork = fork_lock();
        let own = Netns::own().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let inode = fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd()))
            .unwrap()
            .ino();
        // Tests elsewhere in this binary may fork: poll past a child that briefly
        // holds our descriptors between its fork and exec.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let found = loop {
            let found = try_listener_pids(&own, &[addr.port()]).unwrap();
            let only_us = found.iter().all(|l| l.pids == [std::process::id()]);
            if only_us || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(
            found,
            vec![Listener {
                port: addr.port(),
                addr,
                inode,
                pids: vec![std::process::id()],
            }]
        );
        assert_eq!(try_listener_pids(&own, &[addr.port()]).unwrap(), found);
        drop(listener);
        assert_eq!(try_listener_pids(&own, &[addr.port()]).unwrap(), vec![]);
    }

    /// Tests that fork and tests that look for the owners of a socket run one at a
    /// time: between fork and exec a child holds all of its parent's descriptors.
    static FORK_LOCK: Mutex<()> = Mutex::new(());

    fn fork_lock() -> MutexGuard<'static, ()> {
        FORK_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `sleep` with stdio on /dev/null and no other descriptor, killed on drop.
    struct Sleeper(Child);

    impl Sleeper {
        fn spawn() -> Sleeper {
            let mut cmd = Command::new("sleep");
            cmd.arg("60")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: the closure runs in the child between fork and exec and only
            // makes close_range(2), an async-signal-safe system call that touches no
            // memory. It closes descriptors a test runner may leak to us without
            // close-on-exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                });
            }
            Sleeper(cmd.spawn().unwrap())
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// The child's open descriptors once they equal `want`, or after 2 s as they are:
    /// right after exec the dynamic loader briefly holds ld.so.cache and libc open.
    fn settled_open_fds(pid: u32, want: usize) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            // Until the child execs it is not readable by an unprivileged parent
            // (it still has the forking thread's credentials state): retry.
            let n = open_fds(pid).ok();
            if n == Some(want) || std::time::Instant::now() > deadline {
                return n.unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn open_fds_and_nofile_limit_of_a_child() {
        let child = {
            let _forking = fork_lock();
            Sleeper::spawn()
        };
        let pid = child.0.id();
        // Only 0, 1 and 2 survived the exec (once the dynamic loader has closed
        // the libraries it opens for a moment after it).
        assert_eq!(settled_open_fds(pid, 3), 3);

        let lowered = libc::rlimit {
            rlim_cur: 100,
            rlim_max: 200,
        };
        // SAFETY: `lowered` is a valid rlimit that outlives the call; the old-limit
        // pointer may be null. `pid` is our own child, still running (not yet waited).
        let rc = unsafe {
            libc::prlimit(
                pid as libc::pid_t,
                libc::RLIMIT_NOFILE,
                &lowered,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        assert_eq!(nofile_limit(pid).unwrap(), (Some(100), Some(200)));
    }

    #[test]
    fn nofile_limit_of_this_process_matches_getrlimit() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit that outlives the call.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        let limit = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
        assert_eq!(
            nofile_limit(std::process::id()).unwrap(),
            (limit(lim.rlim_cur), limit(lim.rlim_max))
        );
    }

    #[test]
    fn missing_process_is_an_error_naming_the_file() {
        // Above the kernel's PID_MAX_LIMIT (2^22): no such process can exist.
        let pid = 5_000_000;
        let err = nofile_limit(pid).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().starts_with("/proc/5000000/limits: "),
            "{err}"
        );
        let err = open_fds(pid).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().starts_with("/proc/5000000/fd: "), "{err}");
    }

    #[test]
    fn somaxconn_is_read() {
        let n = somaxconn().unwrap();
        assert!(n >= 1, "{n}");
        // The backlog a listener gets is capped by it (what a diagnosis relies on).
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        s.listen(i32::MAX).unwrap();
        let port = s.local_addr().unwrap().as_socket().unwrap().port();
        let dump =
            sock_diag::tcp_sockets(&Netns::own().unwrap(), &[port], StateMask::LISTEN).unwrap();
        assert_eq!(dump.iter().map(|l| l.wqueue).collect::<Vec<_>>(), vec![n]);
    }

    #[test]
    fn file_nr_from_text() {
        assert_eq!(
            parse_file_nr("1696\t0\t9223372036854775807\n"),
            Some((1696, 9_223_372_036_854_775_807))
        );
        assert_eq!(parse_file_nr("169\t0\t2466174\n"), Some((169, 2_466_174)));
        assert_eq!(parse_file_nr(""), None);
        assert_eq!(parse_file_nr("169\t0\n"), None);
        assert_eq!(parse_file_nr("169\t0\t2466174\t7\n"), None);
        assert_eq!(parse_file_nr("many\t0\t2466174\n"), None);
        assert_eq!(parse_file_nr("-1\t0\t2466174\n"), None);
    }

    /// Shaped like a real /proc/net/netstat: MPTcpExt (which ends in "TcpExt:")
    /// comes first here to catch a sloppy prefix match.
    const NETSTAT_TEXT: &str = "\
MPTcpExt: MPCapableSYNRX ListenOverflows ListenDrops
MPTcpExt: 5 6 7
TcpExt: SyncookiesSent SyncookiesRecv EmbryonicRsts PruneCalled DelayedACKs ListenOverflows ListenDrops TCPHPHits TCPTimeouts
TcpExt: 0 0 12 0 4711 1234 1301 987654 3
IpExt: InNoRoutes InTruncatedPkts InOctets OutOctets
IpExt: 0 0 123456789 98765432
";

    #[test]
    fn listen_counters_from_netstat() {
        assert_eq!(
            parse_listen_counters(NETSTAT_TEXT),
            (Some(1234), Some(1301))
        );
        // Another column order: matched by name, not position.
        let reordered = "\
TcpExt: ListenDrops TCPHPHits ListenOverflows SyncookiesSent
TcpExt: 88 5 77 0
IpExt: InNoRoutes
IpExt: 0
";
        assert_eq!(parse_listen_counters(reordered), (Some(77), Some(88)));
        // An old or trimmed kernel without ListenDrops.
        let missing = "\
TcpExt: SyncookiesSent ListenOverflows TCPHPHits
TcpExt: 0 42 9
";
        assert_eq!(parse_listen_counters(missing), (Some(42), None));
        // The other groups are not TcpExt.
        assert_eq!(
            netstat_counter(NETSTAT_TEXT, "IpExt", "InOctets"),
            Some(123456789)
        );
        assert_eq!(
            netstat_counter(NETSTAT_TEXT, "MPTcpExt", "ListenDrops"),
            Some(7)
        );
    }

    #[test]
    fn garbage_netstat_gives_nothing() {
        for text in [
            "",
            "garbage\n",
            "TcpExt: ListenOverflows ListenDrops\n", // no values line
            "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1\n", // misaligned
            "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1 2 3\n",
            "TcpExt: ListenOverflows ListenDrops\nTcpExt: x -2\n",
            "IpExt: ListenOverflows ListenDrops\nIpExt: 1 2\n",
            "TcpExtra: ListenOverflows ListenDrops\nTcpExtra: 1 2\n",
        ] {
            assert_eq!(parse_listen_counters(text), (None, None), "{text:?}");
        }
        // One bad value spoils only its own column.
        assert_eq!(
            parse_listen_counters(
                "TcpExt: ListenOverflows ListenDrops\nTcpExt: 18446744073709551616 2\n"
            ),
            (None, Some(2))
        );
    }

    fn diag(state: u8, local: &str, inode: u64, rqueue: u32, wqueue: u32) -> DiagSocket {
        DiagSocket {
            local: local.parse().unwrap(),
            remote: "0.0.0.0:0".parse().unwrap(),
            state,
            inode,
            uid: 0,
            ifindex: 0,
            rqueue,
            wqueue,
            last_data_recv_ms: None,
            last_data_sent_ms: None,
            bytes_received: None,
            bytes_acked: None,
        }
    }

    #[test]
    fn accept_queue_sums_the_listeners() {
        use sock_diag::state::{ESTABLISHED, LISTEN};
        // Dual stack: one listener per address, each with its own queue.
        let dump = [
            diag(LISTEN, "0.0.0.0:6379", 11, 3, 511),
            diag(LISTEN, "[::]:6379", 12, 2, 511),
            diag(ESTABLISHED, "127.0.0.1:6379", 13, 100, 200), // not a listener
        ];
        assert_eq!(accept_queue(&dump), Some((5, 1022)));
        assert_eq!(accept_queue(&dump[2..]), None);
        assert_eq!(accept_queue(&[]), None);
        assert_eq!(
            accept_queue(&vec![
                diag(LISTEN, "127.0.0.1:6379", 11, u32::MAX, u32::MAX);
                2
            ]),
            Some((2 * u64::from(u32::MAX), 2 * u64::from(u32::MAX)))
        );
    }

    #[test]
    fn listeners_of_keeps_only_listen_sockets() {
        use sock_diag::state::{ESTABLISHED, LISTEN};
        let proc = TempDir::new("proc-listeners");
        proc.fd("300", 4, "socket:[12]");
        proc.fd("200", 3, "socket:[11]");
        proc.fd("200", 5, "socket:[13]");
        let dump = [
            diag(LISTEN, "[::]:6379", 12, 0, 511),
            diag(LISTEN, "0.0.0.0:6379", 11, 0, 511),
            diag(ESTABLISHED, "127.0.0.1:6379", 13, 0, 0),
        ];
        let listener = |addr: &str, inode, pids| Listener {
            port: 6379,
            addr: addr.parse().unwrap(),
            inode,
            pids,
        };
        assert_eq!(
            listeners_of(&dump, &proc.0),
            vec![
                listener("0.0.0.0:6379", 11, vec![200]),
                listener("[::]:6379", 12, vec![300]),
            ]
        );
        assert_eq!(listeners_of(&[], &proc.0), vec![]);
    }

    /// A listener on 127.0.0.1 with `backlog` and `clients` connected, none accepted.
    fn listener_with_queue(backlog: i32, clients: usize) -> (socket2::Socket, Vec<TcpStream>) {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        s.listen(backlog).unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        let conns = (0..clients)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        (s, conns)
    }

    /// Snapshots until `done` holds (the kernel finishes handshakes, and forked
    /// children of other tests release our descriptors, a moment later), at most 3 s.
    fn snapshot_until(port: u16, done: impl Fn(&HostSnapshot) -> bool) -> HostSnapshot {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let snap = snapshot(
                &Netns::own().unwrap(),
                &[port],
                &mut OwnerCache::default(),
                None,
            );
            if done(&snap) || std::time::Instant::now() > deadline {
                return snap;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn rlimit_nofile() -> (Option<u64>, Option<u64>) {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit that outlives the call.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        let limit = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
        (limit(lim.rlim_cur), limit(lim.rlim_max))
    }

    #[test]
    fn snapshot_of_this_process() {
        let _no_fork = fork_lock();
        let me = std::process::id();
        let (listener, _clients) = listener_with_queue(8, 3);
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let inode = fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd()))
            .unwrap()
            .ino();
        let snap = snapshot_until(addr.port(), |s| {
            s.accept_queue == Some((3, 8)) && s.listeners.iter().all(|l| l.pids == [me])
        });
        assert_eq!(
            snap.listeners,
            vec![Listener {
                port: addr.port(),
                addr,
                inode,
                pids: vec![me],
            }]
        );
        assert_eq!(snap.pid, Some(me));
        assert_eq!(snap.accept_queue, Some((3, 8)));
        let (soft, hard) = rlimit_nofile();
        assert_eq!((snap.nofile_soft, snap.nofile_hard), (soft, hard));
        assert_eq!(snap.nofile_unlimited, soft.is_none() || hard.is_none());
        assert!(snap.open_fds.is_some_and(|n| n > 0), "{snap:?}");
        assert_eq!(snap.somaxconn, Some(somaxconn().unwrap()));
        let (allocated, max) = snap.file_nr.unwrap();
        assert!(allocated > 0 && max >= allocated, "{snap:?}");
        assert!(snap.listen_overflows.is_some(), "{snap:?}");
        assert!(snap.listen_drops.is_some(), "{snap:?}");
    }

    #[test]
    fn snapshot_of_nothing_listening() {
        // A port we held a moment ago: nothing listens there now.
        let port = {
            let (l, _) = listener_with_queue(1, 0);
            l.local_addr().unwrap().as_socket().unwrap().port()
        };
        let snap = snapshot(
            &Netns::own().unwrap(),
            &[port],
            &mut OwnerCache::default(),
            None,
        );
        assert_eq!(
            (&snap.listeners, snap.pid, snap.accept_queue),
            (&vec![], None, None)
        );
        assert_eq!(
            (snap.nofile_soft, snap.nofile_hard, snap.open_fds),
            (None, None, None)
        );
        assert!(!snap.nofile_unlimited);
        // Host-wide figures are still there.
        assert!(
            snap.file_nr.is_some() && snap.somaxconn.is_some(),
            "{snap:?}"
        );
        assert_eq!(
            snapshot(
                &Netns::own().unwrap(),
                &[],
                &mut OwnerCache::default(),
                None
            )
            .listeners,
            vec![]
        );
    }

    #[test]
    fn snapshot_follows_the_process_holding_the_listener() {
        let _no_fork = fork_lock();
        let (listener, _clients) = listener_with_queue(5, 2);
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new("sleep");
        cmd.arg("30")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // dup2/fcntl/close_range system calls, which are async-signal-safe and touch
        // no memory of ours. It moves the listener to descriptor 3 without
        // close-on-exec (dup2 clears the flag on its copy; fcntl when it is already
        // 3) and closes everything above.
        unsafe {
            cmd.pre_exec(move || {
                let rc = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if rc < 0 || libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = Sleeper(cmd.spawn().unwrap());
        let pid = child.0.id();
        let inode = fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino();
        drop(listener);

        let lowered = libc::rlimit {
            rlim_cur: 100,
            rlim_max: 200,
        };
        // SAFETY: `lowered` is a valid rlimit that outlives the call; the old-limit
        // pointer may be null. `pid` is our own child, still running (not yet waited).
        let rc = unsafe {
            libc::prlimit(
                pid as libc::pid_t,
                libc::RLIMIT_NOFILE,
                &lowered,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());

        // stdin, stdout, stderr and the listener, once the loader is done.
        settled_open_fds(pid, 4);
        // The loader opens and closes its files after the exec: 4 may be seen
        // before it starts, so the snapshot waits for 4 too.
        let snap = snapshot_until(addr.port(), |s| {
            s.accept_queue == Some((2, 5)) && s.pid == Some(pid) && s.open_fds == Some(4)
        });
        assert_eq!(
            snap.listeners,
            vec![Listener {
                port: addr.port(),
                addr,
                inode,
                pids: vec![pid],
            }]
        );
        assert_eq!(snap.pid, Some(pid));
        assert_eq!((snap.nofile_soft, snap.nofile_hard), (Some(100), Some(200)));
        assert!(!snap.nofile_unlimited);
        // stdin, stdout, stderr and the listener.
        assert_eq!(snap.open_fds, Some(4));
        assert_eq!(snap.accept_queue, Some((2, 5)));
        assert_eq!(
            effective_maxclients(Some(10000), snap.nofile_soft).0,
            Some(68)
        );
    }
}
