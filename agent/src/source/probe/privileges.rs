//! Up-front check of the privileges loading the probes needs, so a user without
//! them reads one clear line instead of an EPERM from deep inside the loader; and
//! giving them up once the probes are attached.

use std::fmt;
use std::io;

/// CAP_PERFMON and CAP_BPF, numbered as in `linux/capability.h`.
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
const CAP_SYS_ADMIN: u32 = 21;
/// Kept after loading: reading another user's /proc/PID/fd and limits (Redis's).
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
/// The capabilities a running agent keeps.
pub const KEPT_CAPS: u64 = (1 << CAP_DAC_READ_SEARCH) | (1 << CAP_SYS_PTRACE);
/// Kept besides when the agent watches network namespaces other than its own
/// (containers, pods): `setns(2)` into a network namespace takes CAP_SYS_ADMIN, and
/// the agent enters one to make each socket that must live there (sock_diag, the
/// INFO connection), also after a container restarts or a new one appears.
pub const NETNS_CAPS: u64 = 1 << CAP_SYS_ADMIN;

/// Kept besides on kernels whose `bpf(2)` checks the caller's capabilities on
/// every command, map reads through a descriptor already held included: before
/// 5.19 (commit "bpf: refine kernel.unprivileged_bpf_disabled behaviour"),
/// `__sys_bpf` refuses any command with EPERM when
/// `kernel.unprivileged_bpf_disabled` is set (distributions set it) and the caller
/// lacks CAP_BPF (or CAP_SYS_ADMIN). Without it the per-interval counter reads
/// (failed accepts, lost records) would fail after the drop there. From 5.19 only
/// map creation and program loading are refused: on Debian 12's 6.1 the VM test
/// reads the counters with CAP_BPF dropped.
pub const MAP_READ_CAPS: u64 = 1 << CAP_BPF;

/// (major, minor) of a kernel release (`uname -r`: `6.1.0-57-cloud-amd64`); `None`
/// when it does not start with them.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Whether reading the programs' maps needs [`MAP_READ_CAPS`] on a kernel of
/// `release` (`uname -r`) with `kernel.unprivileged_bpf_disabled` = `disabled`
/// (`None`: unreadable, taken as set). Unknown releases keep it: a capability
/// kept is a smaller harm than counters that cannot be read.
pub fn map_reads_need_cap_bpf(release: &str, disabled: Option<&str>) -> bool {
    let before_5_19 = kernel_version(release).is_none_or(|v| v < (5, 19));
    before_5_19 && disabled.is_none_or(|d| d.trim() != "0")
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`; version 3 takes two (capabilities 0–31, 32–63).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Gives up every capability but [`KEPT_CAPS`] (and `extra`) once the programs are
/// loaded and attached: the maps are used through file descriptors the agent
/// already holds, and sock_diag needs no privilege, so what stays is only what
/// reading Redis's /proc entries takes (and, with [`NETNS_CAPS`], entering other
/// network namespaces). Also sets no_new_privs, so nothing can regain them.
///
/// Capabilities are per thread: call it before any other thread starts (threads
/// started later inherit the reduced set). Returns the permitted set kept.
pub fn drop_capabilities(extra: u64) -> io::Result<u64> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData (version 3) into `data`, which holds exactly
    // two, and reads the header we own.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let permitted = u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32);
    let kept = permitted & (KEPT_CAPS | extra);
    let set = [kept as u32, (kept >> 32) as u32];
    for (d, bits) in data.iter_mut().zip(set) {
        *d = CapData {
            effective: bits,
            permitted: bits,
            inheritable: 0,
        };
    }
    // SAFETY: as above; capset only reads the header and the two CapData.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments only; failure is reported, not fatal.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
    Ok(kept)
}

/// Names of the capabilities in `mask` that a running agent keeps.
pub fn kept_names(mask: u64) -> Vec<&'static str> {
    [
        (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
        (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_BPF, "CAP_BPF"),
    ]
    .into_iter()
    .filter(|(cap, _)| mask & (1 << cap) != 0)
    .map(|(_, name)| name)
    .collect()
}

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
    fn map_reads_keep_cap_bpf_only_where_the_kernel_checks_it_on_every_command() {
        // 5.15 (Ubuntu 22.04) and 5.14 (RHEL 9) with the distributions' default
        // of 2 (or unreadable): kept.
        assert!(map_reads_need_cap_bpf("5.15.0-126-generic", Some("2\n")));
        assert!(map_reads_need_cap_bpf("5.14.0-503.el9.x86_64", None));
        // Unprivileged BPF allowed: the check passes without it.
        assert!(!map_reads_need_cap_bpf("5.15.0-126-generic", Some("0")));
        // 5.19 and later check only at map creation and program load (6.1:
        // Debian 12, Amazon Linux 2023; measured in the VM test).
        assert!(!map_reads_need_cap_bpf("6.1.0-28-cloud-amd64", Some("2")));
        assert!(!map_reads_need_cap_bpf("5.19.0-50-generic", Some("2")));
        assert!(!map_reads_need_cap_bpf("6.18.44-fc-v1045", Some("2")));
        assert!(!map_reads_need_cap_bpf("6.8.0-49-generic", Some("2")));
        assert!(!map_reads_need_cap_bpf("10.0.1", Some("2")));
        // A release it cannot read: kept.
        assert!(map_reads_need_cap_bpf("custom", Some("2")));
    }

    #[test]
    fn parses_effective_capabilities() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("Name: x\n"), None);
    }

    #[test]
    fn kept_capabilities_are_named() {
        assert_eq!(
            kept_names(KEPT_CAPS | (1 << CAP_PERFMON)),
            ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"]
        );
        assert_eq!(
            kept_names(KEPT_CAPS | MAP_READ_CAPS),
            ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_BPF"]
        );
        assert_eq!(
            kept_names(KEPT_CAPS | NETNS_CAPS),
            ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN"]
        );
        assert!(kept_names(0).is_empty());
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
