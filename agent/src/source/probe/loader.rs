//! Loading the kernel programs, attaching them, and reading their maps.

use std::os::fd::AsRawFd as _;

use anyhow::{Context as _, anyhow, bail};
use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use connwatch_common::{
    ConnEvent, KERNEL_LOG_TARGET, MAX_ERRNO, MAX_LISTENER_PIDS, TcpSockOffsets, counter,
};
use tokio::io::unix::AsyncFd;

use super::btf::{VMLINUX_BTF, tcp_sock_offsets};
use super::decode::decode;
use crate::model::{Event, KernelCounters};

/// The compiled kernel programs, built by build.rs from `agent-ebpf`.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/connwatch"));

/// (program, tracepoint category, tracepoint name); tracefs checks that each exists.
pub(super) const ATTACHMENTS: &[(&str, &str, &str)] = &[
    ("inet_sock_set_state", "sock", "inet_sock_set_state"),
    ("sys_exit_accept4", "syscalls", "sys_exit_accept4"),
    ("sys_exit_accept", "syscalls", "sys_exit_accept"),
    ("tcp_send_reset", "tcp", "tcp_send_reset"),
    ("tcp_retransmit_synack", "tcp", "tcp_retransmit_synack"),
];

/// Where this kernel keeps the byte counters the close record reads. Without BTF
/// the programs still run, and closes carry no byte counts (rejections cannot be
/// told from closes then): said once, not fatal.
fn tcp_offsets() -> TcpSockOffsets {
    let found = std::fs::read(VMLINUX_BTF)
        .map_err(|e| e.to_string())
        .and_then(|blob| tcp_sock_offsets(&blob).map_err(|e| e.to_string()));
    match found {
        Ok(offsets) => offsets,
        Err(e) => {
            log::warn!(
                "cannot locate struct tcp_sock's byte counters ({VMLINUX_BTF}: {e}); closes will carry no byte counts and rejections cannot be told apart"
            );
            TcpSockOffsets::default()
        }
    }
}

/// The loaded and attached probes. Dropping it detaches everything: the links are
/// owned by this process, so nothing stays attached if the agent dies.
pub struct Probe {
    // Owns the programs and their links; must outlive the maps' use.
    _ebpf: Ebpf,
    /// The programs' diagnostics (aya-log), read only with `--debug-probes`.
    kernel_log: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pids: HashMap<MapData, u32, u8>,
    accept_errors: PerCpuArray<MapData, u64>,
    counters: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    listener_pids: Vec<u32>,
}

impl Probe {
    /// Loads the programs, fills the watched ports, and attaches the tracepoints.
    /// tracefs must be mounted (see [`super::ensure_tracefs`]). With `debug_probes`
    /// the programs send diagnostics, which [`Probe::flush_kernel_log`] logs.
    pub fn load(ports: &[u16], debug_probes: bool) -> anyhow::Result<Probe> {
        if PROGRAMS.is_empty() {
            bail!(
                "this connwatch was built without its BPF programs (AYA_BUILD_SKIP); rebuild it with `cargo xtask build`"
            );
        }
        raise_memlock_limit();
        let offsets = tcp_offsets();
        // Read-only globals: with diagnostics off the verifier drops their code.
        let debug_flag = u8::from(debug_probes);
        let log_level = if debug_probes {
            aya_log::Level::Debug as u8
        } else {
            0
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("TCP_SOCK_OFFSETS", &offsets, true)
            .override_global("DEBUG_PROBES", &debug_flag, true)
            .override_global(aya_log::LEVEL, &log_level, true)
            .load(PROGRAMS)
            .context("loading the BPF programs into the kernel failed")?;

        let mut watched: HashMap<MapData, u16, u8> = take(&mut ebpf, "WATCHED_PORTS")?;
        for port in ports {
            watched
                .insert(port, 1, 0)
                .with_context(|| format!("adding port {port} to the watched ports"))?;
        }

        for (program, category, name) in ATTACHMENTS {
            let tp: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| anyhow!("program {program} missing from the BPF object"))?
                .try_into()
                .with_context(|| format!("program {program} is not a tracepoint"))?;
            tp.load()
                .with_context(|| format!("the kernel refused program {program}"))?;
            tp.attach(category, name)
                .with_context(|| format!("attaching to tracepoint {category}:{name} failed"))?;
        }
        // The ports map stays referenced by the programs; our handle is not needed.
        drop(watched);
        // Without --debug-probes the log ring stays in `ebpf`, unread: the programs
        // never write to it then.
        let kernel_log = if debug_probes {
            let logger = aya_log::EbpfLogger::init(&mut ebpf)
                .context("reading the BPF programs' diagnostics (--debug-probes)")?;
            log::info!("probe diagnostics on: logged at debug level as {KERNEL_LOG_TARGET}");
            Some(logger)
        } else {
            None
        };
        release_load_memory();

        Ok(Probe {
            kernel_log,
            pids: take(&mut ebpf, "LISTENER_PIDS")?,
            accept_errors: take(&mut ebpf, "ACCEPT_ERRORS")?,
            counters: take(&mut ebpf, "COUNTERS")?,
            events: Some(take(&mut ebpf, "EVENTS")?),
            _ebpf: ebpf,
            listener_pids: Vec::new(),
        })
    }

    /// Sets the processes whose failed accepts are counted (the listeners' owners).
    pub fn set_listener_pids(&mut self, pids: &[u32]) -> anyhow::Result<()> {
        let mut wanted: Vec<u32> = pids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        wanted.truncate(MAX_LISTENER_PIDS as usize);
        if wanted == self.listener_pids {
            return Ok(());
        }
        for pid in self.listener_pids.iter().filter(|p| !wanted.contains(p)) {
            // A pid that is already gone from the map is not an error.
            let _ = self.pids.remove(pid);
        }
        for pid in &wanted {
            self.pids
                .insert(pid, 1, 0)
                .with_context(|| format!("adding pid {pid} to the listener pids"))?;
        }
        self.listener_pids = wanted;
        Ok(())
    }

    pub fn listener_pids(&self) -> &[u32] {
        &self.listener_pids
    }

    /// The kernel's counters, summed over CPUs (totals since the probes attached).
    pub fn counters(&self) -> anyhow::Result<KernelCounters> {
        let sum = |array: &PerCpuArray<MapData, u64>, index: u32| -> anyhow::Result<u64> {
            let values = array
                .get(&index, 0)
                .with_context(|| format!("reading kernel counter {index}"))?;
            Ok(values.iter().sum())
        };
        let mut accept_errors = Vec::new();
        for errno in 0..MAX_ERRNO {
            let n = sum(&self.accept_errors, errno)?;
            if n > 0 {
                accept_errors.push((errno as i32, n));
            }
        }
        Ok(KernelCounters {
            lost_events: sum(&self.counters, counter::LOST_EVENTS)?,
            bytes_unreadable: sum(&self.counters, counter::BYTES_UNREADABLE)?,
            synack_retransmits: sum(&self.counters, counter::SYNACK_RETRANSMITS)?,
            accept_errors,
        })
    }

    /// Logs the diagnostics the programs sent since the last call (`--debug-probes`).
    pub fn flush_kernel_log(&mut self) {
        if let Some(logger) = &mut self.kernel_log {
            logger.flush();
        }
    }

    /// Hands out the ring-buffer reader (once).
    pub fn take_events(&mut self) -> anyhow::Result<EventReader> {
        let ring = self
            .events
            .take()
            .ok_or_else(|| anyhow!("the event reader was already taken"))?;
        // SAFETY: the RingBuf owns its map fd, keeps it open until it is dropped, and
        // always returns that same fd; the AsyncFd owns the RingBuf from here on.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow!("registering the ring buffer with the event loop: {e}"))?;
        Ok(EventReader { fd, undecodable: 0 })
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the BPF object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

/// Loading parses the kernel's BTF (megabytes, twice: aya and [`tcp_offsets`]); once
/// loaded, that memory is free but glibc keeps it in the heap, where it would count
/// in the agent's RSS for its whole run. Hands it back to the system.
fn release_load_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the kernel; it has no
    // preconditions and does not touch live allocations.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it where we can.
/// Newer kernels use memory-cgroup accounting and ignore it, so failure is harmless.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct we own; it has no other effects.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if rc != 0 {
        log::debug!(
            "could not lift RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Reads connection records from the ring buffer as they arrive.
pub struct EventReader {
    fd: AsyncFd<RingBuf<MapData>>,
    undecodable: u64,
}

impl EventReader {
    /// Waits until records are available, then appends all of them to `out`.
    pub async fn read(&mut self, out: &mut Vec<Event>) -> anyhow::Result<()> {
        let mut guard = self
            .fd
            .readable_mut()
            .await
            .context("waiting on the ring buffer")?;
        drain_ring(guard.get_inner_mut(), out, &mut self.undecodable);
        guard.clear_ready();
        Ok(())
    }

    /// Appends the records queued now, without waiting.
    pub fn drain(&mut self, out: &mut Vec<Event>) {
        drain_ring(self.fd.get_mut(), out, &mut self.undecodable);
    }

    /// Records that could not be interpreted (should stay 0).
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.get_ref().as_raw_fd()
    }
}

/// Every record in `ring` as an event, counting those that cannot be interpreted.
fn drain_ring(ring: &mut RingBuf<MapData>, out: &mut Vec<Event>, undecodable: &mut u64) {
    while let Some(item) = ring.next() {
        match parse_record(&item) {
            Some(ev) => out.push(ev),
            None => *undecodable += 1,
        }
    }
}

fn parse_record(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < size_of::<ConnEvent>() {
        return None;
    }
    // SAFETY: the slice holds at least size_of::<ConnEvent>() bytes, ConnEvent is a
    // #[repr(C)] plain-old-data type valid for any bit pattern, and read_unaligned
    // makes no alignment assumption about the ring buffer's memory.
    let ev = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ConnEvent>()) };
    decode(&ev)
}
