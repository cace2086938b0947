//! The only code that touches BPF: mounting tracefs, loading and attaching the
//! kernel programs, filling their filter maps, and reading what they report
//! (ring-buffer records, per-CPU counters, the per-connection map).

mod decode;
mod loader;
mod privileges;
mod tracefs;

pub use decode::{activity_of, decode};
pub use loader::{EventReader, Probe};
pub use privileges::{MissingPrivileges, check_privileges};
pub use tracefs::{TRACEFS, ensure_tracefs};
