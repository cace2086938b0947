//! The processes behind client connections: who called `connect()` (taken in the
//! kernel when a process of this host connects to a watched port), and what its
//! cgroup path says of its container and Kubernetes pod.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A process that opened connections, as the kernel saw it at `connect()`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Process {
    /// Process id (tgid) in the host's PID namespace.
    pub pid: u32,
    /// The calling thread's name (`comm`, at most 15 bytes).
    pub comm: Arc<str>,
    /// Its cgroup (v2) path under /sys/fs/cgroup, e.g.
    /// `/system.slice/docker-3f2a….scope`; `None` when it could not be found
    /// (the cgroup was gone before the agent looked, or cgroup v2 is not mounted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Arc<str>>,
    /// The id of its user stack at `connect()` in the kernel's stack map
    /// (`--stacks`); `None` without one. Meaningful only while that map lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<u32>,
}

impl Process {
    /// The container id and pod uid its cgroup path names.
    pub fn identity(&self) -> Identity {
        self.cgroup.as_deref().map(Identity::of).unwrap_or_default()
    }
}

/// A container id and a Kubernetes pod uid, as a cgroup path names them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The 64-hex container id (Docker, Podman, containerd, CRI-O).
    pub container: Option<Arc<str>>,
    /// The pod's uid (8-4-4-4-12 hex).
    pub pod: Option<Arc<str>>,
}

impl Identity {
    /// What one cgroup path names, as the common runtimes and cgroup drivers
    /// write them:
    ///
    /// - Docker: `/docker/<id>` (cgroupfs), `/system.slice/docker-<id>.scope` (systemd);
    /// - Podman: `/machine.slice/libpod-<id>.scope`, `…/libpod-payload-<id>`;
    /// - containerd and CRI-O under Kubernetes: `/kubepods/burstable/pod<uid>/<id>`
    ///   (cgroupfs), `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid
    ///   with _ for ->.slice/cri-containerd-<id>.scope` or `crio-<id>.scope` (systemd).
    ///
    /// A container id is 64 hex digits (given in lower case); the pod UID is given
    /// with dashes. A systemd service or a user session names neither.
    pub fn of(path: &str) -> Identity {
        let mut id = Identity::default();
        for part in path.split('/') {
            let part = part.strip_suffix(".scope").unwrap_or(part);
            let part = part.strip_suffix(".slice").unwrap_or(part);
            if let Some(uid) = pod_uid_of(part) {
                id.pod = Some(uid.into());
            }
            let hex = part.rsplit(['-', ':']).next().unwrap_or(part);
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                id.container = Some(hex.to_ascii_lowercase().into());
            }
        }
        id
    }
}

/// The pod UID in one cgroup path component: `pod<uid>` or `kubepods-…-pod<uid>`.
fn pod_uid_of(part: &str) -> Option<String> {
    let at = part.rfind("pod")?;
    if at > 0 && !part[..at].ends_with('-') {
        return None;
    }
    let uid = part[at + 3..].replace('_', "-");
    let groups: Vec<usize> = uid.split('-').map(str::len).collect();
    let hex = uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    (groups == [8, 4, 4, 4, 12] && hex).then(|| uid.to_ascii_lowercase())
}

/// The short form of a container id people read (`docker ps` shows 12).
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c0d1e4b5a6978877665544332211000ffeeddccbbaa9988776655443322";
    const UID: &str = "0b6f1c2e-3d4a-4b5c-8d9e-0f1a2b3c4d5e";

    fn of(path: &str) -> (Option<String>, Option<String>) {
        let id = Identity::of(path);
        (
            id.container.map(|c| c.to_string()),
            id.pod.map(|p| p.to_string()),
        )
    }

    #[test]
    fn docker_with_the_systemd_and_the_cgroupfs_driver() {
        assert_eq!(
            of(&format!("/system.slice/docker-{ID}.scope")),
            (Some(ID.into()), None)
        );
        assert_eq!(of(&format!("/docker/{ID}")), (Some(ID.into()), None));
    }

    #[test]
    fn podman_rootful_and_rootless() {
        assert_eq!(
            of(&format!("/machine.slice/libpod-{ID}.scope")),
            (Some(ID.into()), None)
        );
        let rootless = format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
        );
        assert_eq!(of(&rootless), (Some(ID.into()), None));
        assert_eq!(
            of(&format!(
                "/machine.slice/libpod-{ID}.scope/libpod-payload-{ID}"
            )),
            (Some(ID.into()), None)
        );
    }

    #[test]
    fn kubernetes_containerd_and_crio_with_their_pod() {
        let uid_ = UID.replace('-', "_");
        let containerd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(of(&containerd), (Some(ID.into()), Some(UID.into())));
        let crio = format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope");
        assert_eq!(of(&crio), (Some(ID.into()), Some(UID.into())));
        let cgroupfs = format!("/kubepods/besteffort/pod{UID}/{ID}");
        assert_eq!(of(&cgroupfs), (Some(ID.into()), Some(UID.into())));
        // The pod's own cgroup (its pause container's parent): a pod, no container.
        assert_eq!(
            of(&format!("/kubepods/besteffort/pod{UID}")),
            (None, Some(UID.into()))
        );
    }

    #[test]
    fn systemd_slices_services_and_odd_names_name_nothing() {
        for path in [
            "/",
            "/system.slice/nginx.service",
            "/user.slice/user-1000.slice/session-3.scope",
            "/system.slice/docker.service",
            "/kubepods.slice/kubepods-besteffort.slice",
            "/docker/3f2a",
            "/system.slice/docker-XYZ.scope",
            "/podcast.slice/pod-not-a-uid",
        ] {
            assert_eq!(of(path), (None, None), "{path}");
        }
    }

    #[test]
    fn a_process_without_a_cgroup_path_has_no_identity() {
        let p = Process {
            pid: 7,
            comm: "redis-cli".into(),
            stack: None,
            cgroup: None,
        };
        assert_eq!(p.identity(), Identity::default());
        assert_eq!(short_id(ID), "3f2a9c0d1e4b");
        assert_eq!(short_id("abc"), "abc");
    }
}
