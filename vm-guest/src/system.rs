//! What an init does before anything else can run: the pseudo file systems, the
//! loopback interface, the kernel modules sock_diag needs, and the power-off.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::AsRawFd as _;
use std::path::Path;

/// Where the initramfs keeps the modules to load, and the file naming them in order.
pub const MODULE_DIR: &str = "/usr/lib/modules/connwatch";
const MODULE_ORDER: &str = "order";

/// Mounts proc, sysfs and devtmpfs (tracefs is left to connwatch, which mounts it
/// itself when it is missing).
pub fn mount_pseudo_filesystems() -> Result<(), String> {
    for (source, target, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
    ] {
        fs::create_dir_all(target).map_err(|e| format!("mkdir {target}: {e}"))?;
        mount(source, target, fstype)?;
    }
    fs::create_dir_all("/tmp").map_err(|e| format!("mkdir /tmp: {e}"))?;
    Ok(())
}

fn mount(source: &str, target: &str, fstype: &str) -> Result<(), String> {
    let c = |s: &str| CString::new(s).map_err(|e| format!("{s}: {e}"));
    let (source_c, target_c, fstype_c) = (c(source)?, c(target)?, c(fstype)?);
    // SAFETY: three NUL-terminated strings that live across the call; no data.
    let rc = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "mount -t {fstype} {source} {target}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// `struct ifreq` with the flags member of its union (40 bytes on x86_64).
#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;

/// `ip link set lo up`, with the two ioctls it comes down to.
pub fn loopback_up() -> Result<(), String> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| format!("socket for SIOCSIFFLAGS: {e}"))?;
    let mut req = IfReqFlags {
        name: [0; 16],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of the ifreq we own,
    // which is as large as the kernel's struct ifreq.
    if unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(format!("SIOCGIFFLAGS lo: {}", io::Error::last_os_error()));
    }
    req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS only reads the ifreq.
    if unsafe { libc::ioctl(socket.as_raw_fd(), SIOCSIFFLAGS, &req) } != 0 {
        return Err(format!(
            "SIOCSIFFLAGS lo up: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Loads the modules in [`MODULE_DIR`] in the order its `order` file names them
/// (the initramfs has no modprobe to load them on demand). Returns their names.
pub fn load_modules() -> Result<Vec<String>, String> {
    let dir = Path::new(MODULE_DIR);
    let order = match fs::read_to_string(dir.join(MODULE_ORDER)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{MODULE_DIR}/{MODULE_ORDER}: {e}")),
    };
    let mut loaded = Vec::new();
    for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = dir.join(name);
        let file = fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let params = c"";
        // SAFETY: finit_module with a file descriptor we hold open, an empty
        // NUL-terminated parameter string and no flags.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("loading {}: {err}", path.display()));
            }
        }
        loaded.push(name.trim_end_matches(".ko").to_owned());
    }
    Ok(loaded)
}

/// Powers the machine off (qemu exits). Only returns if the kernel refused.
pub fn power_off() -> io::Error {
    // SAFETY: sync and reboot take no pointers; as PID 1 we may power off.
    unsafe {
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF);
    }
    io::Error::last_os_error()
}

/// The kernel release (`uname -r`).
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// Seconds since boot, from /proc/uptime.
pub fn uptime() -> Option<f64> {
    fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
