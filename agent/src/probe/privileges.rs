//! Up-front check of the privileges loading the probes needs, so a user without
//! them reads one clear line instead of an EPERM from deep inside the loader.

use std::fmt;

/// CAP_PERFMON and CAP_BPF, numbered as in `linux/capability.h`.
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
const CAP_SYS_ADMIN: u32 = 21;

#[derive(Debug)]
pub struct MissingPrivileges(pub String);

impl fmt::Display for MissingPrivileges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MissingPrivileges {}

/// Checks the effective capabilities of this process: CAP_SYS_ADMIN (which implies
/// everything), or CAP_BPF with CAP_PERFMON.
pub fn check_privileges() -> Result<(), MissingPrivileges> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = effective_caps(&status).unwrap_or(0);
    if has_needed(caps) {
        Ok(())
    } else {
        Err(MissingPrivileges(
            "connwatch needs root, or the capabilities CAP_BPF and CAP_PERFMON (plus CAP_SYS_ADMIN if tracefs is not mounted): run it with sudo".into(),
        ))
    }
}

fn has_needed(caps: u64) -> bool {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// The `CapEff:` mask of a `/proc/PID/status` text.
fn effective_caps(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_effective_capabilities() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("Name: x\n"), None);
    }

    #[test]
    fn root_or_bpf_and_perfmon_suffice() {
        assert!(has_needed(0x1ff_ffff_ffff));
        assert!(has_needed(1 << CAP_SYS_ADMIN));
        assert!(has_needed((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!has_needed(1 << CAP_BPF));
        assert!(!has_needed(0));
    }
}
