//! tracefs: classic tracepoints are attached by the id the kernel publishes under
//! `events/`, so tracefs must be mounted. A fresh machine does not mount it.

use std::ffi::CString;
use std::io;
use std::path::Path;

use anyhow::{Context as _, bail};

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs at [`TRACEFS`] unless it is already there, then checks that the
/// tracepoint every count comes from exists (the others are optional: the loader
/// says what is lost without one). Returns whether it mounted it.
pub fn ensure_tracefs() -> anyhow::Result<bool> {
    let root = Path::new(TRACEFS);
    let mounted = if is_populated(root) {
        false
    } else if is_mounted(root) {
        return Err(super::MissingPrivileges(format!(
            "tracefs is mounted at {} but this user cannot read it (it is mode 0700): run as root or with CAP_DAC_READ_SEARCH",
            root.display()
        ))
        .into());
    } else {
        mount_tracefs(root)?;
        true
    };
    let required = connwatch_common::tracepoints::LAYOUTS
        .iter()
        .filter(|l| l.program == super::loader::CONNECTIONS_PROGRAM);
    for layout in required {
        let (category, name) = (layout.category, layout.name);
        let dir = root.join("events").join(category).join(name);
        if !dir.join("id").exists() {
            bail!(
                "this kernel has no tracepoint {category}:{name} ({} is missing); connwatch needs it",
                dir.display()
            );
        }
    }
    Ok(mounted)
}

/// Whether /proc/self/mounts lists a tracefs at `root` (readable by anyone, unlike
/// tracefs itself).
fn is_mounted(root: &Path) -> bool {
    let Some(root) = root.to_str() else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines().any(|l| {
                let mut f = l.split_whitespace().skip(1);
                (f.next(), f.next()) == (Some(root), Some("tracefs"))
            })
        })
        .unwrap_or(false)
}

fn is_populated(root: &Path) -> bool {
    root.join("events").is_dir()
}

fn mount_tracefs(root: &Path) -> anyhow::Result<()> {
    let target = CString::new(TRACEFS).context("tracefs path")?;
    let fstype = CString::new("tracefs").context("tracefs type")?;
    // SAFETY: all three strings are valid NUL-terminated C strings that outlive the
    // call; a null `data` pointer is allowed and means no mount options.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        let hint = match err.raw_os_error() {
            Some(libc::EPERM) => {
                " (mounting needs CAP_SYS_ADMIN: run as root, or mount it first with `mount -t tracefs tracefs /sys/kernel/tracing`)"
            }
            Some(libc::ENODEV) => " (this kernel has no tracefs)",
            Some(libc::ENOENT) => " (the mount point does not exist: is /sys mounted?)",
            _ => "",
        };
        bail!(
            "tracefs is not mounted and mounting it at {} failed: {err}{hint}",
            root.display()
        );
    }
    if !is_populated(root) {
        bail!(
            "mounted tracefs at {} but it has no events/ directory",
            root.display()
        );
    }
    Ok(())
}
