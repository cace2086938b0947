//! Facts about the host from `/proc`: which processes hold the listening sockets of
//! the watched ports, their file-descriptor limits and usage, and the kernel's cap
//! on accept-queue backlogs.
//!
//! Processes come and go while we read `/proc`; one that vanishes or that we may
//! not inspect is skipped, not an error. Errors name the file they came from.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use crate::sock_diag::{self, StateMask};

/// A listening socket on a watched port and the processes holding it (several after
/// a fork, or none that we can see — another PID namespace, or no permission).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub port: u16,
    pub addr: SocketAddr,
    pub inode: u64,
    /// Sorted ascending.
    pub pids: Vec<u32>,
}

/// The listening sockets on `ports` and the pids holding each, sorted by address.
///
/// A failed sock_diag dump is logged and yields no listeners: callers poll this
/// every interval and have nothing better to do than try again. Use
/// [`try_listener_pids`] to see the error.
pub fn listener_pids(ports: &[u16]) -> Vec<Listener> {
    try_listener_pids(ports).unwrap_or_else(|e| {
        log::warn!("listing the listeners of ports {ports:?}: {e}");
        Vec::new()
    })
}

/// [`listener_pids`], with the sock_diag error if the dump failed.
pub fn try_listener_pids(ports: &[u16]) -> io::Result<Vec<Listener>> {
    let sockets = sock_diag::tcp_sockets(ports, StateMask::LISTEN)?;
    let inodes: HashSet<u64> = sockets
        .iter()
        .map(|s| s.inode)
        .filter(|&i| i != 0)
        .collect();
    let mut owners = pids_by_inode(Path::new("/proc"), &inodes);
    let mut listeners: Vec<Listener> = sockets
        .into_iter()
        .map(|s| Listener {
            port: s.local.port(),
            addr: s.local,
            inode: s.inode,
            pids: owners.remove(&s.inode).unwrap_or_default(),
        })
        .collect();
    listeners.sort_by_key(|l| l.addr);
    Ok(listeners)
}

/// For each of `inodes`, the pids under `proc_root` with a file descriptor on that
/// socket. Each process's fd directory is read once, for all inodes together.
fn pids_by_inode(proc_root: &Path, inodes: &HashSet<u64>) -> HashMap<u64, Vec<u32>> {
    let mut owners: HashMap<u64, Vec<u32>> = HashMap::new();
    if inodes.is_empty() {
        return owners;
    }
    let Ok(entries) = fs::read_dir(proc_root) else {
        return owners;
    };
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        // A process that exited or that we may not inspect has nothing to say.
        let Ok(fds) = fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
            continue;
        };
        let mut held: Vec<u64> = fds
            .flatten()
            .filter_map(|fd| socket_inode(&fs::read_link(fd.path()).ok()?))
            .filter(|inode| inodes.contains(inode))
            .collect();
        // A process holding the same socket twice (dup) is one owner.
        held.sort_unstable();
        held.dedup();
        for inode in held {
            owners.entry(inode).or_default().push(pid);
        }
    }
    for pids in owners.values_mut() {
        pids.sort_unstable();
    }
    owners
}

/// The inode of an fd symlink target `socket:[12345]`, or `None` for anything else.
fn socket_inode(target: &Path) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// RLIMIT_NOFILE of process `pid` as (soft, hard); `None` means unlimited.
pub fn nofile_limit(pid: u32) -> io::Result<(Option<u64>, Option<u64>)> {
    let path = format!("/proc/{pid}/limits");
    let text = read(&path)?;
    parse_nofile_limit(&text)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))
}

/// The "Max open files" line of a `/proc/PID/limits` text:
/// `Max open files            1024                 524288               files`.
fn parse_nofile_limit(text: &str) -> Result<(Option<u64>, Option<u64>), String> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .ok_or("no \"Max open files\" line")?;
    let mut fields = line.split_whitespace();
    let mut limit = |which: &str| -> Result<Option<u64>, String> {
        match fields.next() {
            Some("unlimited") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{which} limit of open files is not a number: {v:?}")),
            None => Err(format!("{which} limit of open files missing")),
        }
    };
    let soft = limit("soft")?;
    let hard = limit("hard")?;
    Ok((soft, hard))
}

/// How many file descriptors process `pid` has open.
pub fn open_fds(pid: u32) -> io::Result<usize> {
    let path = format!("/proc/{pid}/fd");
    let entries = fs::read_dir(&path).map_err(|e| with_path(e, &path))?;
    let mut count = 0;
    for entry in entries {
        entry.map_err(|e| with_path(e, &path))?;
        count += 1;
    }
    Ok(count)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::unix::fs::{MetadataExt, symlink};
    use std::os::unix::io::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::{Mutex, MutexGuard};

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max processes             63448                63448                processes 
Max open files            10032                524288               files     
Max locked memory         8388608              8388608              bytes     
";

    #[test]
    fn nofile_limit_from_limits_text() {
        assert_eq!(parse_nofile_limit(LIMITS), Ok((Some(10032), Some(524288))));
        let unlimited = LIMITS.replace(
            "10032                524288",
            "unlimited            unlimited",
        );
        assert_eq!(parse_nofile_limit(&unlimited), Ok((None, None)));
        let soft_only = LIMITS.replace("524288", "unlimited");
        assert_eq!(parse_nofile_limit(&soft_only), Ok((Some(10032), None)));
    }

    #[test]
    fn malformed_limits_text_is_an_error() {
        assert_eq!(
            parse_nofile_limit(""),
            Err("no \"Max open files\" line".to_string())
        );
        let without = LIMITS.replace("Max open files", "Max open filez");
        assert!(parse_nofile_limit(&without).is_err());
        let garbage = LIMITS.replace("10032", "lots");
        assert_eq!(
            parse_nofile_limit(&garbage),
            Err("soft limit of open files is not a number: \"lots\"".to_string())
        );
        assert_eq!(
            parse_nofile_limit("Max open files            1024\n"),
            Err("hard limit of open files missing".to_string())
        );
        assert!(parse_nofile_limit("Max open files            -1    5   files\n").is_err());
    }

    #[test]
    fn socket_inode_from_fd_link() {
        assert_eq!(socket_inode(Path::new("socket:[123456]")), Some(123456));
        assert_eq!(socket_inode(Path::new("socket:[]")), None);
        assert_eq!(socket_inode(Path::new("socket:[12x]")), None);
        assert_eq!(socket_inode(Path::new("pipe:[123456]")), None);
        assert_eq!(socket_inode(Path::new("/dev/null")), None);
        assert_eq!(socket_inode(Path::new("anon_inode:[eventpoll]")), None);
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
    fn pids_by_inode_reads_a_proc_tree() {
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
        let owners = pids_by_inode(&proc.0, &inodes);
        let expected: HashMap<u64, Vec<u32>> =
            [(42, vec![20, 100]), (7, vec![100])].into_iter().collect();
        assert_eq!(owners, expected);

        assert!(pids_by_inode(&proc.0, &HashSet::new()).is_empty());
        assert!(pids_by_inode(&proc.0.join("missing"), &inodes).is_empty());
    }

    #[test]
    fn listener_pids_finds_this_process() {
        let _no_fork = fork_lock();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let inode = fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd()))
            .unwrap()
            .ino();
        // Tests elsewhere in this binary may fork: poll past a child that briefly
        // holds our descriptors between its fork and exec.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let found = loop {
            let found = try_listener_pids(&[addr.port()]).unwrap();
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
        assert_eq!(listener_pids(&[addr.port()]), found);
        drop(listener);
        assert_eq!(listener_pids(&[addr.port()]), vec![]);
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

    #[test]
    fn open_fds_and_nofile_limit_of_a_child() {
        let child = {
            let _forking = fork_lock();
            Sleeper::spawn()
        };
        let pid = child.0.id();
        // Only 0, 1 and 2 survived the exec.
        assert_eq!(open_fds(pid).unwrap(), 3);

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
        let dump = sock_diag::tcp_sockets(&[port], StateMask::LISTEN).unwrap();
        assert_eq!(dump.iter().map(|l| l.wqueue).collect::<Vec<_>>(), vec![n]);
    }
}
