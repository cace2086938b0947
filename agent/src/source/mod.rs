//! Where events come from. Each source turns what it reads into
//! [`crate::model::Event`]s or snapshots; none of them judges anything.
//!
//! - [`probe`]: the only code that touches BPF (tracepoints, ring buffer, counters).
//! - [`sock_diag`]: netlink socket dumps: open connections, listeners, queues.
//! - [`netns`]: network namespaces (entering a container's to make sockets there),
//!   and what `/proc` says of a listener's process and container.
//! - [`host`]: `/proc` joins: who owns the listeners, their fd limits and usage.
//! - [`redis`]: the one persistent INFO/CONFIG connection to Redis, on the `redis` crate.
//! - [`cgroup`]: a cgroup's path from its id (the cgroup v2 tree's directory inodes).
//! - [`capture`]: capture files, written by `capture` and read by `analyze`.
//! - [`stacks`]: user stacks at `connect()` (`--stacks`), symbolized from `/proc`.

pub mod capture;
pub mod cgroup;
pub mod host;
pub mod netns;
pub mod probe;
pub mod redis;
pub mod sock_diag;
pub mod stacks;
