//! Network namespaces: the agent's own, a container's, a pod's.
//!
//! A socket belongs for life to the namespace it was created in, whichever thread
//! later uses it. So to dump a container's sockets (sock_diag) or to reach its Redis
//! at its own `127.0.0.1`, only the `socket()` call has to happen inside that
//! namespace: [`Netns::socket`] makes it on a short-lived thread that first
//! `setns`es there (the namespace is per thread; the agent's other threads never
//! leave its own). Entering another namespace takes `CAP_SYS_ADMIN`; the agent
//! keeps it after loading only when it watches namespaces other than its own
//! (see `probe::privileges`).
//!
//! Also here: which namespaces have processes in them (to find instances), and what
//! `/proc` says of a listener's process — its name, its pid inside its own PID
//! namespace (`NSpid`), and the container or pod its cgroup path names.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::model::Identity;

/// One network namespace, held open (so its inode stays meaningful while we use it).
#[derive(Debug)]
pub struct Netns {
    inode: u32,
    /// Where it was opened from, for messages.
    path: PathBuf,
    /// `None`: the agent's own namespace (nothing to enter).
    file: Option<File>,
}

/// The inode number of a namespace file, as the kernel's `ns.inum` holds it.
fn ns_inode(meta: &std::fs::Metadata, path: &Path) -> io::Result<u32> {
    u32::try_from(meta.ino()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: inode {} is not a namespace inode",
                path.display(),
                meta.ino()
            ),
        )
    })
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl Netns {
    /// The agent's own network namespace.
    pub fn own() -> io::Result<Netns> {
        let path = PathBuf::from("/proc/self/ns/net");
        let meta = std::fs::metadata(&path).map_err(|e| with_path(e, &path))?;
        Ok(Netns {
            inode: ns_inode(&meta, &path)?,
            path,
            file: None,
        })
    }

    /// The namespace at `path` (`/run/netns/NAME`, `/proc/PID/ns/net`, or a bind
    /// mount a runtime made). The agent's own namespace, when it is that one.
    pub fn open(path: &Path) -> io::Result<Netns> {
        let file = File::open(path).map_err(|e| with_path(e, path))?;
        let meta = file.metadata().map_err(|e| with_path(e, path))?;
        let inode = ns_inode(&meta, path)?;
        let own = Netns::own()?;
        // A namespace file is an nsfs inode; anything else is a usage error.
        if meta.dev() != std::fs::metadata(&own.path).map(|m| m.dev()).unwrap_or(0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a network namespace file", path.display()),
            ));
        }
        if inode == own.inode {
            return Ok(own);
        }
        Ok(Netns {
            inode,
            path: path.to_path_buf(),
            file: Some(file),
        })
    }

    /// The network namespace of process `pid`.
    pub fn of_pid(pid: u32) -> io::Result<Netns> {
        Netns::open(&PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    pub fn inode(&self) -> u32 {
        self.inode
    }

    pub fn is_own(&self) -> bool {
        self.file.is_none()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` inside this namespace: here for the agent's own, else on a thread
    /// that enters it first and ends with `f`. Keep `f` to creating sockets (and
    /// reading per-namespace files): everything else belongs on the caller's thread.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        let Some(file) = &self.file else {
            return f();
        };
        let fd = file.as_raw_fd();
        let path = &self.path;
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("connwatch-netns".into())
                .spawn_scoped(scope, move || {
                    // SAFETY: `fd` is an open namespace file owned by `self`, which
                    // outlives this scoped thread; setns only changes this thread's
                    // namespace.
                    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                        let e = io::Error::last_os_error();
                        let hint = if e.raw_os_error() == Some(libc::EPERM) {
                            " (entering another network namespace needs CAP_SYS_ADMIN)"
                        } else {
                            ""
                        };
                        return Err(io::Error::new(
                            e.kind(),
                            format!("entering network namespace {}: {e}{hint}", path.display()),
                        ));
                    }
                    f()
                })
                .map_err(|e| io::Error::other(format!("starting a namespace thread: {e}")))?;
            thread
                .join()
                .map_err(|_| io::Error::other("the namespace thread panicked"))?
        })
    }

    /// A new socket (`socket(2)` arguments) that belongs to this namespace.
    pub fn socket(&self, domain: i32, ty: i32, protocol: i32) -> io::Result<OwnedFd> {
        self.enter(|| {
            // SAFETY: a plain socket(2) call; it reads no memory of ours.
            let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just returned by socket(2), valid and owned by nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
    }
}

/// Every network namespace that has a process in it, by inode, with the lowest pid
/// in each (through which it can be opened). Processes that vanish or that we may
/// not inspect are skipped.
pub fn namespaces(proc_root: &Path) -> BTreeMap<u32, u32> {
    let mut found = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        let Ok(inode) = u32::try_from(meta.ino()) else {
            continue;
        };
        found
            .entry(inode)
            .and_modify(|p: &mut u32| *p = (*p).min(pid))
            .or_insert(pid);
    }
    found
}

/// What `/proc` says of the process behind an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessFacts {
    pub comm: Option<String>,
    pub ns_pid: Option<u32>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
}

/// The name, inner pid and container of process `pid` under `proc_root`; what
/// cannot be read stays `None`.
pub fn process_facts(proc_root: &Path, pid: u32) -> ProcessFacts {
    let dir = proc_root.join(pid.to_string());
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let (container_id, pod_uid) = read("cgroup")
        .map(|text| container_of_cgroup(&text))
        .unwrap_or_default();
    ProcessFacts {
        comm: read("comm").map(|c| c.trim_end_matches('\n').to_string()),
        ns_pid: read("status").and_then(|s| ns_pid(&s)),
        container_id,
        pod_uid,
    }
}

/// The innermost pid of `NSpid:` in a `/proc/PID/status` text: the pid the process
/// has in its own PID namespace (what Redis reports as `process_id`).
pub fn ns_pid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// The container id and the Kubernetes pod UID named by a `/proc/PID/cgroup`
/// text (see [`Identity::of`] for the paths understood).
pub fn container_of_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let mut container = None;
    let mut pod = None;
    for line in text.lines() {
        // hierarchy-ID:controllers:path; the path may itself hold ':'.
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let id = Identity::of(path);
        container = id.container.or(container);
        pod = id.pod.or(pod);
    }
    (container.map(|c| c.to_string()), pod.map(|p| p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c9e2d5b7a4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6";
    const UID: &str = "0b7c9b2e-5d1f-4a7e-9c3b-2e8f1a6d4c90";

    #[test]
    fn containers_and_pods_from_cgroup_paths() {
        let cases = [
            (
                format!("0::/system.slice/docker-{ID}.scope\n"),
                Some(ID),
                None,
            ),
            (
                format!("12:memory:/docker/{ID}\n0::/docker/{ID}\n"),
                Some(ID),
                None,
            ),
            (
                format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
                Some(ID),
                None,
            ),
            (
                format!("0::/kubepods/burstable/pod{UID}/{ID}\n"),
                Some(ID),
                Some(UID),
            ),
            (
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope\n",
                    UID.replace('-', "_")
                ),
                Some(ID),
                Some(UID),
            ),
            (
                format!(
                    "0::/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope\n",
                    UID.replace('-', "_")
                ),
                Some(ID),
                Some(UID),
            ),
            (
                "0::/user.slice/user-0.slice/session-3.scope\n".to_string(),
                None,
                None,
            ),
            ("0::/\n".to_string(), None, None),
            // Not 64 hex digits, or a "pod" that is no UID: nothing.
            (format!("0::/docker/{}\n", &ID[..63]), None, None),
            ("0::/system.slice/podman.service\n".to_string(), None, None),
            ("garbage without colons\n".to_string(), None, None),
        ];
        for (text, id, uid) in cases {
            let got = container_of_cgroup(&text);
            assert_eq!(
                got,
                (id.map(str::to_string), uid.map(str::to_string)),
                "{text}"
            );
        }
    }

    #[test]
    fn ns_pid_is_the_innermost() {
        assert_eq!(ns_pid("Name:\tredis\nNSpid:\t81234\t1\n"), Some(1));
        assert_eq!(ns_pid("NSpid:\t4242\n"), Some(4242));
        assert_eq!(ns_pid("Name:\tx\n"), None);
        assert_eq!(ns_pid("NSpid:\t\n"), None);
    }

    #[test]
    fn this_process_facts_and_namespace() {
        let me = std::process::id();
        let facts = process_facts(Path::new("/proc"), me);
        assert_eq!(facts.ns_pid, Some(me));
        assert!(facts.comm.is_some());
        let own = Netns::own().unwrap();
        assert!(own.is_own());
        assert_eq!(
            namespaces(Path::new("/proc"))
                .get(&own.inode())
                .copied()
                .map(|p| p <= me),
            Some(true)
        );
        // Opening our own namespace by path gives the own handle: nothing to enter.
        let again = Netns::of_pid(me).unwrap();
        assert!(again.is_own());
        assert_eq!(again.inode(), own.inode());
        assert_eq!(own.enter(|| Ok(7)).unwrap(), 7);
        let err = Netns::open(Path::new("/proc/self/status")).unwrap_err();
        assert!(
            err.to_string().contains("not a network namespace file"),
            "{err}"
        );
    }
}
