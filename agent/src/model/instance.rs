//! Which Redis a report is about: the watched ports in one network namespace.
//!
//! A host runs Redis in its own network namespace, in containers and in pods, often
//! several of them on the same port. Each namespace's listeners on the watched
//! ports are an *instance*, counted and reported on its own. (Not each port: a Redis
//! with a plaintext and a TLS port is one server with one `maxclients`.) Plain data.

use serde::{Deserialize, Serialize};

/// The identity of an instance. `netns` is the inode number of its network
/// namespace (what `stat -L /proc/PID/ns/net` shows); 0 means unknown (a kernel
/// whose layout we could not read), in which case every namespace's connections on
/// the port are one instance.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct InstanceKey {
    pub netns: u32,
}

impl std::fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "netns {}", self.netns)
    }
}

/// What is known of an instance, as every report carries it (`instance`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Network namespace inode (0: unknown).
    pub netns: u32,
    /// The namespace is the agent's own (the host's, usually).
    pub host_netns: bool,
    /// The process holding the listener, as the host's PID namespace numbers it.
    pub pid: Option<u32>,
    /// The same process as its own PID namespace numbers it (`NSpid`): what Redis
    /// reports as `process_id` in INFO. Equal to `pid` outside containers.
    pub ns_pid: Option<u32>,
    /// The process's name (`comm`).
    pub comm: Option<String>,
    /// The container id (64 hex digits) from the process's cgroup path, when it
    /// runs under Docker, containerd, CRI-O or Podman.
    pub container_id: Option<String>,
    /// The Kubernetes pod UID from the cgroup path, when it runs in a pod.
    pub pod_uid: Option<String>,
}

impl Instance {
    pub fn key(&self) -> InstanceKey {
        InstanceKey { netns: self.netns }
    }

    /// An instance known only by its key.
    pub fn bare(key: InstanceKey, host_netns: bool) -> Self {
        Instance {
            netns: key.netns,
            host_netns,
            ..Instance::default()
        }
    }

    /// The value of the `redis_instance` metric label: the container (12 digits),
    /// else the pod, else `netns:<inode>`; `None` for a Redis in the agent's own
    /// namespace (its series carry no such label, as before containers were told
    /// apart).
    pub fn metric_label(&self) -> Option<String> {
        if self.host_netns {
            return None;
        }
        Some(match (&self.container_id, &self.pod_uid) {
            (Some(c), _) => c[..c.len().min(12)].to_string(),
            (None, Some(p)) => format!("pod:{p}"),
            (None, None) => format!("netns:{}", self.netns),
        })
    }

    /// A short name for logs and the text view: the container (12 digits, as
    /// `docker ps` shows it) or the pod, else the namespace.
    pub fn label(&self) -> String {
        let place = match (&self.container_id, &self.pod_uid) {
            (Some(c), _) => format!("container {}", &c[..c.len().min(12)]),
            (None, Some(p)) => format!("pod {p}"),
            (None, None) if self.host_netns => "host".to_string(),
            (None, None) => format!("netns {}", self.netns),
        };
        match &self.comm {
            Some(comm) => format!("{comm} ({place})"),
            None => place,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_container_the_pod_or_the_namespace() {
        let key = InstanceKey { netns: 4026532300 };
        let mut i = Instance::bare(key, false);
        assert_eq!(i.label(), "netns 4026532300");
        i.comm = Some("redis-server".into());
        i.pod_uid = Some("0b7c9b2e-1111-2222-3333-444455556666".into());
        assert_eq!(
            i.label(),
            "redis-server (pod 0b7c9b2e-1111-2222-3333-444455556666)"
        );
        i.container_id = Some("a".repeat(64));
        assert_eq!(i.label(), "redis-server (container aaaaaaaaaaaa)");
        assert_eq!(Instance::bare(key, true).label(), "host");
        assert_eq!(i.metric_label().as_deref(), Some("aaaaaaaaaaaa"));
        assert_eq!(Instance::bare(key, true).metric_label(), None);
        assert_eq!(
            Instance::bare(key, false).metric_label().as_deref(),
            Some("netns:4026532300")
        );
        assert_eq!(i.key(), key);
    }
}
