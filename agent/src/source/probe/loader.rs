//! Loading the kernel programs, attaching them, and reading their maps.

use anyhow::{Context as _, anyhow, bail};
use std::collections::BTreeMap;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf, StackTraceMap};
use aya::programs::{BtfTracePoint, RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use connwatch_common::tracepoints::LAYOUTS;
use connwatch_common::{
    KERNEL_LOG_TARGET, MAX_ERRNO, MAX_INSTANCE_SLOTS, MAX_LISTENER_PIDS, MAX_STACKS,
    MAX_WATCHED_INSTANCES, MAX_WATCHED_PORTS, PacketOffsets, TcpSockOffsets, WatchKey, counter,
    watch_mode,
};

use super::btf::VMLINUX_BTF;
use super::layouts::{Btf, netns_layout, packet_offsets, sk_err_layout, sock_layout, tcp_offsets};
use super::ring::{EventReader, FLUSH_PROGRAM, Stager, UNSTAGED};
use crate::model::{InstanceKey, KernelCounters};

/// Which connections the programs report: on these ports, in every network
/// namespace (`netns` empty) or only in the namespaces listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchSpec {
    pub ports: Vec<u16>,
    /// Namespace inodes; empty: all of them.
    pub netns: Vec<u32>,
    /// The agent's home namespace (0: none): the first of `netns`, or its own
    /// when `netns` is empty. The caller must hold it (run in it, or keep it
    /// open) for as long as the programs run: they keep its `struct net`'s
    /// address, which must not be reused for another namespace.
    pub home_netns: u32,
    /// Note which local process connects to a watched port (off: `--no-processes`).
    pub local_processes: bool,
    /// Client mode (`--remote-port`): this host's connections to these remote
    /// ports, in the same namespaces; empty: off.
    pub remote_ports: Vec<u16>,
    /// Take the user stack of each process noted at `connect()` (`--stacks`).
    pub stacks: bool,
}

/// The compiled kernel programs, built by build.rs from `agent-ebpf`.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/connwatch"));

/// The program every count comes from: without it (or with its record laid out
/// otherwise) the agent stops. Without one of the others
/// (`connwatch_common::tracepoints::LAYOUTS` lists them all) it runs, and says
/// what it cannot see.
pub(super) const CONNECTIONS_PROGRAM: &str = "inet_sock_set_state";

/// The same program as a BTF (raw) tracepoint, attached instead of
/// [`CONNECTIONS_PROGRAM`] where the kernel's BTF locates the socket's fields:
/// direct loads from the socket, cheaper per run than the tracepoint's record
/// and `bpf_probe_read_kernel`.
const CONNECTIONS_BTF_PROGRAM: &str = "inet_sock_set_state_btf";

/// Said when [`CONNECTIONS_BTF_PROGRAM`] cannot serve.
const RECORD_READ: &str = "connections are read from the tracepoint's record instead";

/// The programs that see refusals, best first; at most one is attached, so a
/// refusal is counted once. `tcp:tcp_send_reset` reports resets sent without a
/// socket on recent kernels (6.10+); older ones (6.1) report them only as a drop
/// with reason `NO_SOCKET` on `skb:kfree_skb` (5.17+), whose record has two layouts.
pub(super) const REFUSAL_PROGRAMS: &[&str] = &["tcp_send_reset", "kfree_skb_rx_sk", "kfree_skb"];

/// What is not seen without each optional program.
fn lost_without(program: &str) -> &'static str {
    match program {
        "sys_exit_accept4" | "sys_exit_accept" => {
            "failed accepts (EMFILE, ENFILE: the fd-limit verdict) of the programs that call it"
        }
        p if REFUSAL_PROGRAMS.contains(&p) => {
            "connections refused because nothing listened (refused)"
        }
        "tcp_retransmit_synack" => "SYN-ACK retransmits of the watched listeners",
        _ => "its records",
    }
}

/// The programs whose tracepoint record is laid out as they read it, with one
/// refusal program at most (the first of [`REFUSAL_PROGRAMS`] that fits; the
/// `kfree_skb` ones only with `packets` known). Stops when the connection
/// program's record is not as it reads it; says what is lost for each other one.
fn programs_to_attach(
    tracefs: &std::path::Path,
    packets: Option<PacketOffsets>,
) -> anyhow::Result<Vec<&'static str>> {
    let mut attach = Vec::new();
    // Why each refusal program that does not fit does not.
    let mut unfit: Vec<(&str, String)> = Vec::new();
    let mut refusal_fits: Vec<&str> = Vec::new();
    for (layout, result) in super::abi::check_all(tracefs) {
        let tracepoint = format!("{}:{}", layout.category, layout.name);
        let result = match result {
            Ok(()) if layout.category == "skb" && packets.is_none() => Err(
                "the packet layout or the NO_SOCKET drop reason is unknown on this kernel"
                    .to_owned(),
            ),
            r => r.map_err(|why| why.to_string()),
        };
        let refusal = REFUSAL_PROGRAMS.contains(&layout.program);
        match result {
            Ok(()) if refusal => refusal_fits.push(layout.program),
            Ok(()) => attach.push(layout.program),
            Err(why) if layout.program == CONNECTIONS_PROGRAM => bail!(
                "tracepoint {tracepoint}: {why}; connwatch cannot read this kernel's connection records"
            ),
            // Two programs read kfree_skb's two layouts: one of them never fits.
            Err(_) if layout.program == "kfree_skb_rx_sk" => {}
            Err(why) if refusal => {
                unfit.push((layout.program, format!("tracepoint {tracepoint}: {why}")));
            }
            Err(why) => log::warn!(
                "tracepoint {tracepoint}: {why}; not attached: {} will not be seen on this kernel",
                lost_without(layout.program)
            ),
        }
    }
    // Why the programs preferred to the `rank`-th one do not serve.
    let why_not = |rank: usize| {
        unfit
            .iter()
            .filter(|(p, _)| REFUSAL_PROGRAMS[..rank].contains(p))
            .map(|(_, why)| why.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    match REFUSAL_PROGRAMS
        .iter()
        .position(|p| refusal_fits.contains(p))
    {
        Some(rank) => {
            if rank > 0 {
                log::info!(
                    "{}; refusals are read from skb:kfree_skb instead (drops with reason NO_SOCKET)",
                    why_not(rank)
                );
            }
            attach.push(REFUSAL_PROGRAMS[rank]);
        }
        None => log::warn!(
            "{}; not attached: {} will not be seen on this kernel",
            why_not(REFUSAL_PROGRAMS.len()),
            lost_without(REFUSAL_PROGRAMS[0])
        ),
    }
    Ok(attach)
}

/// The programs' first filter on a port: bit `port % 64` set for each of `ports`.
fn port_bits(ports: &[u16]) -> u64 {
    ports.iter().fold(0, |bits, port| bits | 1 << (port % 64))
}

/// Loads and attaches [`CONNECTIONS_BTF_PROGRAM`].
fn attach_btf_connections(ebpf: &mut Ebpf, btf: &aya::Btf) -> anyhow::Result<()> {
    let program = CONNECTIONS_BTF_PROGRAM;
    let tp: &mut BtfTracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program {program} missing from the BPF object"))?
        .try_into()
        .with_context(|| format!("program {program} is not a BTF tracepoint"))?;
    tp.load("inet_sock_set_state", btf)
        .with_context(|| format!("the kernel refused program {program}"))?;
    tp.attach()
        .with_context(|| format!("attaching {program} to sock:inet_sock_set_state failed"))?;
    Ok(())
}

/// The loaded and attached probes. Dropping it detaches everything: the links are
/// owned by this process, so nothing stays attached if the agent dies.
pub struct Probe {
    // Owns the programs and their links; must outlive the maps' use.
    ebpf: Ebpf,
    /// The programs' diagnostics (aya-log), read only with `--debug-probes`.
    kernel_log: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pids: HashMap<MapData, u32, u8>,
    accept_errors: PerCpuHashMap<MapData, u32, u64>,
    counters: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    /// The user stacks at `connect()` (`--stacks` only).
    stacks: Option<StackTraceMap<MapData>>,
    /// pid → instance slot, as the kernel's map holds them.
    listener_pids: BTreeMap<u32, u8>,
    /// The programs read each socket's network namespace.
    netns_aware: bool,
    /// The programs attached (those whose record this kernel lays out as they read it).
    attached: Vec<&'static str>,
    /// Closes carry byte counts (`struct tcp_sock` found in BTF).
    byte_counts: bool,
    /// Turns record staging on, and flushes the CPUs.
    stager: Stager,
}

impl Probe {
    /// Loads the programs, fills the watched ports, and attaches the tracepoints.
    /// tracefs must be mounted (see [`super::ensure_tracefs`]). With `debug_probes`
    /// the programs send diagnostics, which [`Probe::flush_kernel_log`] logs.
    pub fn load(spec: &WatchSpec, debug_probes: bool) -> anyhow::Result<Probe> {
        if PROGRAMS.is_empty() {
            bail!(
                "this connwatch was built without its BPF programs (AYA_BUILD_SKIP); rebuild it with `cargo xtask build`"
            );
        }
        let tracefs = std::path::Path::new(super::TRACEFS);
        // The kernel's BTF, read once for every offset the programs need.
        let btf: Btf = std::fs::read(VMLINUX_BTF).map_err(|e| e.to_string());
        let packets = packet_offsets(tracefs, &btf);
        let attach = programs_to_attach(tracefs, packets)?;
        raise_memlock_limit();
        let offsets = tcp_offsets(&btf);
        let netns_layout = netns_layout(&btf);
        let sk_err = sk_err_layout(&btf);
        let sock_offsets = sock_layout(&btf);
        // aya's view of the same BTF, to attach the BTF version of the state-change
        // program; only when that program can read the socket.
        let kernel_btf = match (&btf, sock_offsets) {
            (Ok(blob), Some(_)) => match aya::Btf::parse(blob, aya::Endianness::default()) {
                Ok(parsed) => Some(parsed),
                Err(e) => {
                    log::info!("cannot parse {VMLINUX_BTF} ({e}); {RECORD_READ}");
                    None
                }
            },
            _ => None,
        };
        drop(btf);
        if netns_layout.is_none() && !spec.netns.is_empty() {
            bail!(
                "this kernel's BTF does not say where a socket's network namespace is: connwatch cannot watch one namespace only (drop --netns/--pid to watch every namespace as one)"
            );
        }
        let all_ports = || spec.ports.iter().chain(&spec.remote_ports);
        if spec.netns.len() * all_ports().count() > MAX_WATCHED_INSTANCES as usize {
            bail!("too many namespaces and ports to watch: at most {MAX_WATCHED_INSTANCES} pairs");
        }
        let netns_offsets = netns_layout.unwrap_or_default();
        // Read-only globals: with diagnostics off the verifier drops their code.
        let debug_flag = u8::from(debug_probes);
        let local_processes = u8::from(spec.local_processes);
        let client_mode = u8::from(!spec.remote_ports.is_empty());
        let user_stacks = u8::from(spec.stacks);
        // Every listed namespace watches every port: the first one's records can
        // skip the map lookup.
        if spec
            .netns
            .first()
            .is_some_and(|&first| first != spec.home_netns)
        {
            bail!("the home namespace must be the first one watched");
        }
        let home_netns = spec.home_netns;
        let log_level = if debug_probes {
            aya_log::Level::Debug as u8
        } else {
            0
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("TCP_SOCK_OFFSETS", &offsets, true)
            .override_global("NETNS_OFFSETS", &netns_offsets, true)
            .override_global("PACKET_OFFSETS", &packets.unwrap_or_default(), true)
            .override_global("SK_ERR_OFFSET", &sk_err, true)
            .override_global("SOCK_OFFSETS", &sock_offsets.unwrap_or_default(), true)
            .override_global("DEBUG_PROBES", &debug_flag, true)
            .override_global("LOCAL_PROCESSES", &local_processes, true)
            .override_global("CLIENT_MODE", &client_mode, true)
            .override_global("USER_STACKS", &user_stacks, true)
            .override_global("HOME_NETNS", &home_netns, true)
            .override_global("WATCHED_PORT_BITS", &port_bits(&spec.ports), true)
            .override_global("REMOTE_PORT_BITS", &port_bits(&spec.remote_ports), true)
            // Unused without --stacks: one entry, not a megabyte.
            .map_max_entries("STACKS", if spec.stacks { MAX_STACKS } else { 1 })
            .override_global(aya_log::LEVEL, &log_level, true)
            .load(PROGRAMS)
            .context("loading the BPF programs into the kernel failed")?;

        if spec.ports.len() > MAX_WATCHED_PORTS as usize
            || spec.remote_ports.len() > MAX_WATCHED_PORTS as usize
        {
            bail!("too many ports to watch: at most {MAX_WATCHED_PORTS}");
        }
        let mut watched: Array<MapData, u8> = take(&mut ebpf, "WATCHED_PORTS")?;
        let mode = if spec.netns.is_empty() {
            watch_mode::ANY_NETNS
        } else {
            watch_mode::LISTED_NETNS
        };
        for port in &spec.ports {
            watched
                .set(u32::from(*port), mode, 0)
                .with_context(|| format!("adding port {port} to the watched ports"))?;
        }
        let mut remote: Array<MapData, u8> = take(&mut ebpf, "REMOTE_PORTS")?;
        for port in &spec.remote_ports {
            remote
                .set(u32::from(*port), mode, 0)
                .with_context(|| format!("adding port {port} to the watched remote ports"))?;
        }
        let mut instances: HashMap<MapData, WatchKey, u8> = take(&mut ebpf, "WATCHED_INSTANCES")?;
        for &netns in &spec.netns {
            for &port in all_ports() {
                let key = WatchKey {
                    netns,
                    port,
                    _pad: 0,
                };
                instances.insert(key, 1, 0).with_context(|| {
                    format!("adding port {port} of network namespace {netns} to the watched ones")
                })?;
            }
        }

        let btf_connections = match kernel_btf {
            Some(kernel_btf) => match attach_btf_connections(&mut ebpf, &kernel_btf) {
                Ok(()) => true,
                Err(e) => {
                    log::warn!("{e:#}; {RECORD_READ}");
                    false
                }
            },
            None => false,
        };
        for layout in LAYOUTS.iter().filter(|l| attach.contains(&l.program)) {
            let (program, category, name) = (layout.program, layout.category, layout.name);
            if btf_connections && program == CONNECTIONS_PROGRAM {
                continue;
            }
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
        let flush: &mut RawTracePoint = ebpf
            .program_mut(FLUSH_PROGRAM)
            .ok_or_else(|| anyhow!("program {FLUSH_PROGRAM} missing from the BPF object"))?
            .try_into()
            .with_context(|| format!("program {FLUSH_PROGRAM} is not a raw tracepoint"))?;
        // Loaded, never attached: run on each CPU by `flush_staged`. Without it each
        // record is written at once, as before staging.
        let flush_loaded = match flush.load() {
            Ok(()) => true,
            Err(e) => {
                log::warn!("the kernel refused program {FLUSH_PROGRAM} ({e}): {UNSTAGED}");
                false
            }
        };
        // The ports map stays referenced by the programs; our handle is not needed.
        drop(watched);
        drop(remote);
        drop(instances);
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
            stager: Stager::new(take(&mut ebpf, "STAGE_LEN")?, flush_loaded),
            stacks: if spec.stacks {
                Some(take(&mut ebpf, "STACKS")?)
            } else {
                None
            },
            ebpf,
            listener_pids: BTreeMap::new(),
            netns_aware: netns_layout.is_some(),
            attached: attach,
            byte_counts: offsets != TcpSockOffsets::default(),
        })
    }

    /// What the programs see on this kernel.
    pub fn features(&self) -> crate::model::Features {
        let attached = |p: &str| self.attached.contains(&p);
        crate::model::Features {
            connections: true,
            byte_counts: self.byte_counts,
            netns: self.netns_aware,
            accept_errors: attached("sys_exit_accept4") || attached("sys_exit_accept"),
            refusals: REFUSAL_PROGRAMS.iter().any(|p| attached(p)),
            synack_retransmits: attached("tcp_retransmit_synack"),
        }
    }

    /// Whether `program` is attached.
    pub fn attached(&self, program: &str) -> bool {
        self.attached.contains(&program)
    }

    /// Whether records carry their socket's network namespace (else netns 0).
    pub fn netns_aware(&self) -> bool {
        self.netns_aware
    }

    /// Sets the processes whose failed accepts are counted (the listeners' owners),
    /// each with the slot of its instance (1 ..= MAX_INSTANCE_SLOTS - 1; a pid
    /// whose instance has no slot counts in slot 0, read by nobody).
    pub fn set_listener_pids(&mut self, pids: &BTreeMap<u32, u8>) -> anyhow::Result<()> {
        let wanted: BTreeMap<u32, u8> = pids
            .iter()
            .take(MAX_LISTENER_PIDS as usize)
            .map(|(&pid, &slot)| {
                (
                    pid,
                    if u32::from(slot) < MAX_INSTANCE_SLOTS {
                        slot
                    } else {
                        0
                    },
                )
            })
            .collect();
        if wanted == self.listener_pids {
            return Ok(());
        }
        for pid in self
            .listener_pids
            .keys()
            .filter(|p| !wanted.contains_key(p))
        {
            // A pid that is already gone from the map is not an error.
            let _ = self.pids.remove(pid);
        }
        for (pid, slot) in &wanted {
            self.pids
                .insert(pid, slot, 0)
                .with_context(|| format!("adding pid {pid} to the listener pids"))?;
        }
        self.listener_pids = wanted;
        Ok(())
    }

    pub fn listener_pids(&self) -> Vec<u32> {
        self.listener_pids.keys().copied().collect()
    }

    /// The kernel's counters, summed over CPUs (totals since the probes attached),
    /// for each instance of `slots`: its failed accepts, and the counters shared
    /// by all. An instance without a slot (`None`) gets the shared ones only.
    pub fn counters(
        &self,
        slots: &[(Option<InstanceKey>, Option<u8>)],
    ) -> anyhow::Result<Vec<KernelCounters>> {
        let sum = |array: &PerCpuArray<MapData, u64>, index: u32| -> anyhow::Result<u64> {
            let values = array
                .get(&index, 0)
                .with_context(|| format!("reading kernel counter {index}"))?;
            Ok(values.iter().sum())
        };
        let shared = KernelCounters {
            lost_events: sum(&self.counters, counter::LOST_EVENTS)?,
            bytes_unreadable: sum(&self.counters, counter::BYTES_UNREADABLE)?,
            synack_retransmits: sum(&self.counters, counter::SYNACK_RETRANSMITS)?,
            accept_errors: Vec::new(),
            instance: None,
        };
        // slot → errno → count; only the keys that exist (usually none).
        let mut errors: BTreeMap<u32, BTreeMap<i32, u64>> = BTreeMap::new();
        for item in self.accept_errors.iter() {
            let (key, values) = item.context("reading the failed-accept counters")?;
            let n: u64 = values.iter().sum();
            if n > 0 {
                let errno = i32::try_from(key % MAX_ERRNO).unwrap_or(0);
                *errors
                    .entry(key / MAX_ERRNO)
                    .or_default()
                    .entry(errno)
                    .or_default() += n;
            }
        }
        Ok(slots
            .iter()
            .map(|&(instance, slot)| KernelCounters {
                accept_errors: slot
                    .and_then(|s| errors.get(&u32::from(s)))
                    .map(|by_errno| by_errno.iter().map(|(&e, &n)| (e, n)).collect())
                    .unwrap_or_default(),
                instance,
                ..shared.clone()
            })
            .collect())
    }

    /// Logs the diagnostics the programs sent since the last call (`--debug-probes`).
    pub fn flush_kernel_log(&mut self) {
        if let Some(logger) = &mut self.kernel_log {
            logger.flush();
        }
    }

    /// Writes the records each online CPU has staged to the ring buffer, so that
    /// every record stamped before the call is there once it returns (see
    /// [`Stager::flush`]).
    pub fn flush_staged(&mut self) {
        self.stager.flush(&self.ebpf);
    }

    /// Hands out the map of user stacks at `connect()` (once; `None` without
    /// `--stacks`).
    pub fn take_stacks(&mut self) -> Option<StackTraceMap<MapData>> {
        self.stacks.take()
    }

    /// Hands out the ring-buffer reader (once).
    pub fn take_events(&mut self) -> anyhow::Result<EventReader> {
        let ring = self
            .events
            .take()
            .ok_or_else(|| anyhow!("the event reader was already taken"))?;
        Ok(EventReader::new(ring))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bits_set_one_bit_per_port_modulo_64() {
        assert_eq!(port_bits(&[]), 0);
        // 6379 % 64 = 43, 26379 % 64 = 11, 6443 % 64 = 43 (shares 6379's bit).
        assert_eq!(port_bits(&[6379]), 1 << 43);
        assert_eq!(port_bits(&[6379, 26379, 6443]), 1 << 43 | 1 << 11);
        assert_eq!(port_bits(&[0, 63, 64]), 1 | 1 << 63);
    }
}
