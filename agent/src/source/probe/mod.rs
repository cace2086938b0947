//! The only code that touches BPF: mounting tracefs, loading and attaching the
//! kernel programs, filling their filter maps, and reading what they report
//! (ring-buffer records, per-CPU counters); and finding the kernel fields the
//! programs read, in the kernel's BTF.

mod abi;
mod btf;
mod decode;
mod layouts;
mod loader;
mod privileges;
mod ring;
mod tracefs;

pub use decode::decode;
pub use loader::{Probe, WatchSpec};
pub use privileges::{
    MAP_READ_CAPS, MissingPrivileges, NETNS_CAPS, check_privileges, drop_capabilities, kept_names,
    kernel_version, map_reads_need_cap_bpf,
};
pub use ring::EventReader;
pub use tracefs::{TRACEFS, ensure_tracefs};
