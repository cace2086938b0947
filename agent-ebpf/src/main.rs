//! connwatch's kernel programs. Tracepoints only: kprobes do not exist on the kernels
//! we run on and fentry is refused, and tracepoints are a stable ABI besides. The
//! one that runs most, `sock:inet_sock_set_state`, comes in two versions with one
//! body: a BTF tracepoint that reads the socket with plain loads (attached where
//! the kernel's BTF locates its fields), and the tracepoint program that reads
//! the record (attached otherwise).
//!
//! The kernel side stays small and dumb: it filters early (watched ports, the
//! network namespaces watched on them, and pids live in maps userspace fills; a
//! socket's namespace is read only for connections on a watched port), counts floods (failed accepts) in per-CPU arrays,
//! and sends one compact record per connection transition through a ring buffer.
//! It keeps no per-connection state and runs nothing per message: a connection
//! costs two records (open, close), and its byte counts are read from the socket
//! once, at the close. The one exception is a local client's handshake: the
//! process calling `connect()` towards a watched port is kept in an LRU map by
//! socket address until its source port is known, then sent once (a third record).
//! In client mode (`--remote-port`) the same handshake record opens this host's own
//! connections to a remote Redis port, and their close is sent from the client's
//! socket. With `--stacks` the handshake also takes the caller's user stack
//! (`bpf_get_stackid`, one map entry per distinct call path). Idle times of open
//! connections come from sock_diag in userspace. All judgment happens in userspace, where it can be tested.
//!
//! Field offsets come from `/sys/kernel/tracing/events/<category>/<name>/format`
//! (kernel 6.18) and live in `connwatch_common::tracepoints`, where the loader
//! checks them against the running kernel's format files before attaching. `sport`/`dport` there are
//! already in host byte order. Each program's section below quotes the kernel
//! prototype and the record layout it relies on.
//!
//! What else the programs need from the kernel: BPF ring buffers and
//! `bpf_ringbuf_query` (5.8), `bpf_probe_read_kernel` (5.5), and for the byte counts
//! the `struct tcp_sock` fields named in [`TcpSockOffsets`], and for the network
//! namespace the path in [`NetnsOffsets`], and for why a connect failed `struct
//! sock`'s `sk_err` ([`SK_ERR_OFFSET`]), located at load time in the kernel's BTF
//! (`/sys/kernel/btf/vmlinux`).
//!
//! Diagnostics (aya-log) go out only on rare paths (a record the ring buffer had no
//! room for, an address family or a TCP state the programs do not know) and only
//! when userspace set [`DEBUG_PROBES`] (`--debug-probes`). It is a read-only global,
//! so with it off the verifier knows every diagnostic branch is dead and removes it.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_USER_STACK, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_ns, bpf_probe_read_kernel, generated::bpf_skc_to_tcp_sock,
    },
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
    programs::{
        BtfTracePointContext, RawTracePointContext, TracePointContext, tracing::StackIdContext,
    },
};
use connwatch_common::tracepoints::{
    kfree_skb, kfree_skb_rx_sk, send_reset, set_state, synack, sys_exit,
};
use connwatch_common::{
    AF_INET, AF_INET6, BATCH_HEADER, BATCH_LEN, BYTES_KNOWN, CLIENT_SIDE, CONNECT_ERR_UNKNOWN,
    ConnBatch, ConnEvent, Connector, ConnectorEvent, KERNEL_LOG_TARGET, MAX_CONNECTING, MAX_ERRNO,
    MAX_INSTANCE_SLOTS, MAX_LISTENER_PIDS, MAX_STACKS, MAX_WATCHED_INSTANCES, NetnsOffsets,
    PORT_COUNT, PacketOffsets, SockOffsets, TcpSockOffsets, WatchKey, counter, event_kind,
    tcp_state, watch_mode,
};

const IPPROTO_TCP: u16 = 6;

/// Where the byte counters live in this kernel's `struct tcp_sock`; set by userspace
/// at load time (all zero: unknown).
// SAFETY: the only symbol of this name in the object; the loader finds it by name.
#[unsafe(no_mangle)]
static TCP_SOCK_OFFSETS: TcpSockOffsets = TcpSockOffsets {
    bytes_received: 0,
    bytes_acked: 0,
    rcv_nxt: 0,
    copied_seq: 0,
    write_seq: 0,
    snd_una: 0,
};

/// The way from a socket or a packet to its network namespace's inode number; set
/// by userspace at load time (all zero: unknown, records carry netns 0).
// SAFETY: the only symbol of this name in the object; the loader finds it by name.
#[unsafe(no_mangle)]
static NETNS_OFFSETS: NetnsOffsets = NetnsOffsets {
    sock_net: 0,
    net_inum: 0,
    skb_dev: 0,
    dev_net: 0,
};

/// How the refusal program on `skb:kfree_skb` reads a dropped packet; set by
/// userspace at load time (all zero: unknown, that program reports nothing).
// SAFETY: the only symbol of this name in the object; the loader finds it by name.
#[unsafe(no_mangle)]
static PACKET_OFFSETS: PacketOffsets = PacketOffsets {
    head: 0,
    network_header: 0,
    transport_header: 0,
    no_socket_reason: 0,
};

/// Where the socket's ports, family, protocol and addresses are in this kernel's
/// `struct sock`, for [`inet_sock_set_state_btf`]; set by userspace at load time
/// (all zero: unknown, and userspace attaches [`inet_sock_set_state`] instead).
// SAFETY: the only symbol of this name in the object; the loader finds it by name.
#[unsafe(no_mangle)]
static SOCK_OFFSETS: SockOffsets = SockOffsets {
    num: 0,
    dport: 0,
    family: 0,
    protocol: 0,
    rcv_saddr: 0,
    daddr: 0,
    v6_rcv_saddr: 0,
    v6_daddr: 0,
    inet_sport: 0,
};

/// Offset of `int sk_err` in this kernel's `struct sock`; set by userspace at load
/// time from BTF (0: unknown, a failed connect's cause is sent as unknown).
// SAFETY: the only symbol of this name in the object; the loader finds it by name.
#[unsafe(no_mangle)]
static SK_ERR_OFFSET: u32 = 0;

/// Non-zero: send diagnostics through aya-log (`--debug-probes`); set by userspace
/// at load time. Zero (the default) makes every diagnostic dead code.
// SAFETY: the only symbol of this name in the object; the loader finds it by name.
#[unsafe(no_mangle)]
static DEBUG_PROBES: u8 = 0;

/// Non-zero: note which local process connects to a watched port (the default);
/// set by userspace at load time. Zero (`--no-processes`) makes the client-side
/// transitions cost one compare, like any other transition.
// SAFETY: the only symbol of this name in the object; the loader finds it by name.
#[unsafe(no_mangle)]
static LOCAL_PROCESSES: u8 = 0;

#[inline(always)]
fn local_processes() -> bool {
    // SAFETY: a read of a plain global that userspace set before load; volatile so
    // the compiler does not fold the zero initializer into the code.
    unsafe { core::ptr::read_volatile(&LOCAL_PROCESSES) != 0 }
}

/// Non-zero: client mode (`--remote-port`): this host's own connections to the
/// ports in [`REMOTE_PORTS`] are reported, from the client's socket. Zero (the
/// default) makes that code dead: the server-side path costs what it did.
// SAFETY: the only symbol of this name in the object; the loader finds it by name.
#[unsafe(no_mangle)]
static CLIENT_MODE: u8 = 0;

#[inline(always)]
fn client_mode() -> bool {
    // SAFETY: a read of a plain global that userspace set before load; volatile so
    // the compiler does not fold the zero initializer into the code.
    unsafe { core::ptr::read_volatile(&CLIENT_MODE) != 0 }
}

/// Non-zero: take the user stack of each process noted at `connect()`
/// (`--stacks`); set by userspace at load time. Zero (the default) makes that call
/// dead code: the verifier drops it, and a connect costs what it did.
// SAFETY: the only symbol of this name in the object; the loader finds it by name.
#[unsafe(no_mangle)]
static USER_STACKS: u8 = 0;

#[inline(always)]
fn user_stacks() -> bool {
    // SAFETY: a read of a plain global that userspace set before load; volatile so
    // the compiler does not fold the zero initializer into the code.
    unsafe { core::ptr::read_volatile(&USER_STACKS) != 0 }
}

/// Whether diagnostics are on; see [`DEBUG_PROBES`].
#[inline(always)]
fn debug_probes() -> bool {
    // SAFETY: a read of a plain global that userspace set before load; volatile so
    // the compiler does not fold the zero initializer into the code.
    unsafe { core::ptr::read_volatile(&DEBUG_PROBES) != 0 }
}

/// A read-only global set by userspace before load (`GLOBAL`), or one field of one
/// (`GLOBAL.field`), read alone: a volatile read of a whole struct loads every
/// field each time.
macro_rules! global_field {
    ($global:ident $(. $field:ident)?) => {
        // SAFETY: a read of a plain global (or a field of one) that userspace set
        // before load; volatile so the compiler does not fold the zero initializer
        // into the code.
        unsafe { core::ptr::read_volatile(&raw const $global$(.$field)?) }
    };
}

/// A diagnostic line for `--debug-probes`, at debug level under [`KERNEL_LOG_TARGET`].
/// Only for rare paths: it costs a ring-buffer record when on, nothing when off.
macro_rules! diag {
    ($ctx:expr, $($arg:tt)+) => {
        if debug_probes() {
            aya_log_ebpf::debug!($ctx, target: KERNEL_LOG_TARGET, $($arg)+);
        }
    };
}

/// Local ports whose server-side connections are observed, each with a
/// `watch_mode` (0: not watched): in every network namespace, or only in those
/// listed in [`WATCHED_INSTANCES`]. An array indexed by port, not a hash: the
/// verifier turns an array lookup into a bounds check and a load, where a hash
/// lookup is a call, and this one runs for every TCP state change of the host.
#[map]
static WATCHED_PORTS: Array<u8> = Array::with_max_entries(PORT_COUNT, 0);

/// Remote ports whose connections from this host are observed in client mode, each
/// with a `watch_mode` like [`WATCHED_PORTS`] (the namespace is the client
/// socket's). Looked up only with [`CLIENT_MODE`] set.
#[map]
static REMOTE_PORTS: Array<u8> = Array::with_max_entries(PORT_COUNT, 0);

/// Bit `port % 64` set for each port of [`WATCHED_PORTS`] (and of [`REMOTE_PORTS`]
/// in `REMOTE_PORT_BITS`); set by userspace at load time. A port whose bit is
/// clear is not watched, known without touching the array: a lookup there is a
/// cache miss for each client's new ephemeral port, the largest single cost of
/// the state-change program before this filter.
// SAFETY: the only symbol of this name in the object; the loader finds it by name.
#[unsafe(no_mangle)]
static WATCHED_PORT_BITS: u64 = 0;

/// [`WATCHED_PORT_BITS`] for [`REMOTE_PORTS`].
// SAFETY: the only symbol of this name in the object; the loader finds it by name.
#[unsafe(no_mangle)]
static REMOTE_PORT_BITS: u64 = 0;

/// Whether `port`'s bit is set in `bits` (a read-only global).
#[inline(always)]
fn port_bit(bits: &u64, port: u16) -> bool {
    // SAFETY: a read of a plain global that userspace set before load; volatile so
    // the compiler does not fold the zero initializer into the code.
    let bits = unsafe { core::ptr::read_volatile(bits) };
    (bits >> (port & 63)) & 1 != 0
}

/// The agent's home network namespace: the first one it watches, or its own when
/// it watches every namespace. Set by userspace at load time; 0 (no namespace has
/// inode 0): none. When watching listed namespaces, it is watched on every
/// `LISTED_NETNS` port, checked before [`WATCHED_INSTANCES`]: its records skip
/// the hash lookup. The agent holds it (it runs in it, or keeps it open) for as
/// long as the programs run, so its `struct net` is not freed: see [`HOME_NET`].
// SAFETY: the only symbol of this name in the object; the loader finds it by name.
#[unsafe(no_mangle)]
static HOME_NETNS: u32 = 0;

/// The address of [`HOME_NETNS`]'s `struct net`, learnt the first time a program
/// reads a socket of it (0: not yet). A socket whose `struct net` is this one is
/// in the home namespace, known without reading `ns.inum` (a cache line nothing
/// else in the network stack touches: a miss for most sockets). The address
/// cannot be reused for another namespace while the agent holds the home one.
#[map]
static HOME_NET: Array<u64> = Array::with_max_entries(1, 0);

/// The inode number of the namespace whose `struct net` is at `net` (not 0), read
/// by `read_inum` unless `net` is [`HOME_NET`]'s.
#[inline(always)]
fn net_netns(net: u64, read_inum: impl FnOnce(u64) -> u32) -> u32 {
    // Read first, once: loaded in the branch below, it was merged by the compiler
    // with `read_inum`'s load into one instruction reading from two kinds of
    // pointer, which the 6.1 verifier refuses.
    let home_inum = global_field!(HOME_NETNS);
    let home = HOME_NET.get_ptr_mut(0);
    if let Some(home) = home {
        // SAFETY: a successful lookup of the one-entry array: a valid, aligned u64.
        // Written only with the same value by any CPU (an aligned 8-byte store is
        // atomic), so a read sees 0 or that value.
        if unsafe { core::ptr::read_volatile(home) } == net {
            return home_inum;
        }
    }
    let inum = read_inum(net);
    if let Some(home) = home {
        if inum != 0 && inum == home_inum {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(home, net) };
        }
    }
    inum
}

/// (network namespace, port) pairs watched on a `LISTED_NETNS` port (value unused).
#[map]
static WATCHED_INSTANCES: HashMap<WatchKey, u8> =
    HashMap::with_max_entries(MAX_WATCHED_INSTANCES, 0);

/// Processes (tgid, as the host's PID namespace numbers them) that own a watched
/// listener, each with its instance slot: their failed accepts are counted there.
#[map]
static LISTENER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_LISTENER_PIDS, 0);

/// Failed accept()/accept4() of listener processes, keyed `slot * MAX_ERRNO + errno`
/// (errno 0 of a slot: errno ≥ MAX_ERRNO). A hash, not an array: userspace reads
/// the few keys that exist instead of every possible one.
#[map]
static ACCEPT_ERRORS: PerCpuHashMap<u32, u64> =
    PerCpuHashMap::with_max_entries(MAX_INSTANCE_SLOTS * MAX_ERRNO, 0);

/// Health counters, see `connwatch_common::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Sockets in SYN_SENT towards a watched port, by their address (`skaddr`), with
/// the process that called `connect()`. LRU: a socket whose end was never seen
/// (the agent started during its handshake) is pushed out by newer ones.
#[map]
static CONNECTING: LruHashMap<u64, Connector> = LruHashMap::with_max_entries(MAX_CONNECTING, 0);

/// User stacks at `connect()` (`--stacks`), by the id `bpf_get_stackid` gives: one
/// entry per distinct call path, never removed (a full map refuses new paths, which
/// then go without a stack). Userspace sizes it to one entry without `--stacks`.
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(MAX_STACKS, 0);

/// Connection transitions for userspace: batches of connection records
/// ([`ConnBatch`]) and connect records ([`ConnectorEvent`]).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Connection records made on this CPU and not yet in the ring buffer.
#[map]
static STAGED: PerCpuArray<ConnBatch> = PerCpuArray::with_max_entries(1, 0);

/// How many records a CPU stages before it writes them (entry 0): `BATCH_LEN` once
/// userspace has run [`flush_staged`] on every CPU; until then (or if a flush
/// fails) 0, and every record is written at once, a batch of one.
#[map]
static STAGE_LEN: Array<u32> = Array::with_max_entries(1, 0);

/// Adds one to a per-CPU counter and returns its new value on this CPU (0 if the
/// slot could not be looked up).
#[inline(always)]
fn bump(array: &PerCpuArray<u64>, index: u32) -> u64 {
    add(array, index, 1)
}

/// Adds `n` to a per-CPU counter and returns its new value on this CPU (0 if the
/// slot could not be looked up). Per-CPU slots are only touched by programs on this
/// CPU, and a tracepoint program is not re-entered on one CPU, so a plain add is safe.
#[inline(always)]
fn add(array: &PerCpuArray<u64>, index: u32, n: u64) -> u64 {
    match array.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup, so it points
        // to this CPU's valid, aligned u64 slot, which nothing else writes concurrently.
        Some(slot) => unsafe {
            *slot += n;
            *slot
        },
        None => 0,
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock userspace converts from.
#[inline(always)]
fn ktime_ns() -> u64 {
    // SAFETY: bpf_ktime_get_ns takes no arguments and has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// Reads a field of the tracepoint record at `offset` directly: a plain load from
/// the context, which the verifier bounds-checks at load time, instead of a
/// `bpf_probe_read_kernel` call per field (the difference is most of a
/// program's cost). `T` must be an integer whose size divides `offset` (the
/// verifier refuses unaligned context loads); for the hot path only.
#[inline(always)]
fn ctx_load<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: `offset` is a field offset from the tracepoint's format file, inside
    // the record the kernel passes and aligned for `T`; the verifier rejects the
    // program at load time if a load falls outside the record.
    unsafe { core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
}

/// Reads a field of the tracepoint record at `offset`.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: usize) -> Option<T> {
    // SAFETY: `offset` is a field offset from the tracepoint's format file, within the
    // record the kernel passes; bpf_probe_read_kernel validates the read regardless.
    unsafe { ctx.read_at::<T>(offset) }.ok()
}

// ---------------------------------------------------------------------------------
// sock:inet_sock_set_state
//   TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
//   skaddr@8 oldstate@16 newstate@20 sport@24 dport@26 family@28 protocol@30
//   saddr[4]@32 daddr[4]@36 saddr_v6[16]@40 daddr_v6[16]@56
// Server side of a watched port: the local (source) port is the listener's.
//   SYN_RECV → ESTABLISHED      a client connection was accepted by the kernel
//   ESTABLISHED → FIN_WAIT1     the server closed first
//   ESTABLISHED → CLOSE_WAIT    the client closed first
//   ESTABLISHED → CLOSE         reset
// Client side (a process of this host connecting to a watched port, the remote
// (destination) port): tcp_v4_connect/tcp_v6_connect set SYN_SENT in the caller's
// context, *before* inet_hash_connect picks the source port (sport is still 0 then;
// the same on 6.1 and 6.18), so the caller is kept by socket address and sent with
// the full 4-tuple when the socket leaves SYN_SENT (in softirq context):
//   CLOSE → SYN_SENT            connect(): note tgid, comm, cgroup id
//   SYN_SENT → ESTABLISHED      connected: a ConnectorEvent
//   SYN_SENT → CLOSE            the connect failed: a ConnectorEvent with the
//                               socket's sk_err (why: refused, timed out, 0 when
//                               the application closed it while connecting)
// Later transitions (FIN_WAIT2, LAST_ACK, final CLOSE) carry nothing new for us.
// Client mode (CLIENT_MODE, `--remote-port`): the same client-side transitions for
// a remote (destination) port in REMOTE_PORTS make the connection's open and
// failed connect (a ConnectorEvent flagged CLIENT_SIDE), and its close, from the
// client's socket (a ConnEvent flagged CLIENT_SIDE):
//   ESTABLISHED → FIN_WAIT1     this client closed first
//   ESTABLISHED → CLOSE_WAIT    the server closed first
//   ESTABLISHED → CLOSE         reset
// The fields read are the ones the server side reads (skaddr, states, ports,
// family, protocol, addresses), at the same offsets on 6.1 and 6.18.
// ---------------------------------------------------------------------------------

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_set_state(&ctx);
    0
}

// The same tracepoint as a BTF (raw) tracepoint: `TP_PROTO(const struct sock *sk,
// const int oldstate, const int newstate)` as its three arguments, and the rest
// read from the socket by plain loads at the offsets in [`SOCK_OFFSETS`] (the
// verifier checks each against the kernel's `struct sock` and turns it into a
// fault-safe load), where the tracepoint version reads its record and calls
// `bpf_probe_read_kernel` for the namespace and the byte counts. Userspace
// attaches this one when the kernel's BTF has every offset, the other otherwise;
// never both. Unlike tracepoint programs, a raw tracepoint program may interrupt
// another program on its CPU (the kernel only keeps it from interrupting itself),
// which `Emitting` allows for.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> i32 {
    let change = SockChange {
        sk: ctx.arg::<u64>(0),
        old: ctx.arg::<i32>(1),
        new: ctx.arg::<i32>(2),
        ctx,
    };
    let _ = try_set_state(&change);
    0
}

/// A TCP state change as one version of the state-change program sees it: the
/// tracepoint's record, or the socket itself.
trait StateChange {
    /// The program's context, for diagnostics and stacks.
    type Ctx: EbpfContext + StackIdContext;
    fn ctx(&self) -> &Self::Ctx;
    /// (old state, new state).
    fn states(&self) -> (i32, i32);
    /// The socket's local port.
    fn sport(&self) -> u16;
    /// The socket's remote port.
    fn dport(&self) -> u16;
    fn family(&self) -> u16;
    fn protocol(&self) -> u16;
    /// The socket's address (what the programs key its connect by).
    fn skaddr(&self) -> u64;
    /// Copies the local and remote addresses; false for a family other than IPv4
    /// and IPv6.
    fn addrs(&self, family: u16, laddr: &mut [u8; 16], raddr: &mut [u8; 16]) -> bool;
    /// The socket's network namespace; 0 if unknown.
    fn netns(&self) -> u32;
    /// The socket's byte counters; `None` if unknown.
    fn bytes(&self) -> Option<SockBytes>;
    /// Why its connect failed (see [`ConnectorEvent::err`]).
    fn connect_err(&self) -> u32;
}

impl StateChange for TracePointContext {
    type Ctx = TracePointContext;
    #[inline(always)]
    fn ctx(&self) -> &TracePointContext {
        self
    }
    #[inline(always)]
    fn states(&self) -> (i32, i32) {
        (
            ctx_load(self, set_state::OLDSTATE),
            ctx_load(self, set_state::NEWSTATE),
        )
    }
    #[inline(always)]
    fn sport(&self) -> u16 {
        ctx_load(self, set_state::SPORT)
    }
    #[inline(always)]
    fn dport(&self) -> u16 {
        ctx_load(self, set_state::DPORT)
    }
    #[inline(always)]
    fn family(&self) -> u16 {
        ctx_load(self, set_state::FAMILY)
    }
    #[inline(always)]
    fn protocol(&self) -> u16 {
        ctx_load(self, set_state::PROTOCOL)
    }
    #[inline(always)]
    fn skaddr(&self) -> u64 {
        ctx_load(self, set_state::SKADDR)
    }
    #[inline(always)]
    fn addrs(&self, family: u16, laddr: &mut [u8; 16], raddr: &mut [u8; 16]) -> bool {
        // Addresses as whole words (the record keeps them in network order, as
        // bytes: a load and a store of the same width keeps that order).
        if family == AF_INET {
            laddr[..4].copy_from_slice(&ctx_load::<u32>(self, set_state::SADDR).to_ne_bytes());
            raddr[..4].copy_from_slice(&ctx_load::<u32>(self, set_state::DADDR).to_ne_bytes());
            true
        } else if family == AF_INET6 {
            for half in [0, 8] {
                laddr[half..half + 8].copy_from_slice(
                    &ctx_load::<u64>(self, set_state::SADDR_V6 + half).to_ne_bytes(),
                );
                raddr[half..half + 8].copy_from_slice(
                    &ctx_load::<u64>(self, set_state::DADDR_V6 + half).to_ne_bytes(),
                );
            }
            true
        } else {
            false
        }
    }
    #[inline(always)]
    fn netns(&self) -> u32 {
        sock_netns(self.skaddr())
    }
    #[inline(always)]
    fn bytes(&self) -> Option<SockBytes> {
        sock_bytes(self.skaddr())
    }
    #[inline(always)]
    fn connect_err(&self) -> u32 {
        connect_err(self.skaddr())
    }
}

/// The arguments of the BTF tracepoint: the socket (a pointer the verifier knows
/// as a `struct sock`) and the two states.
struct SockChange {
    ctx: BtfTracePointContext,
    sk: u64,
    old: i32,
    new: i32,
}

/// Loads a `T` at `offset` bytes into the kernel object at `base`, directly: for
/// objects the verifier knows the type of (BTF pointers), with an offset it knows
/// the value of (a read-only global), which it checks against that type at load
/// time. It makes the load fault-safe (a bad address reads as 0).
#[inline(always)]
fn btf_load<T: Copy>(base: u64, offset: u32) -> T {
    // SAFETY: `base` is a BTF pointer the verifier tracks (the tracepoint's socket,
    // or a pointer loaded from it) and `offset` a constant from a frozen read-only
    // global; the verifier rejects the program at load time unless the load lands
    // on a field of `T`'s size in the object's type, and the JIT makes it
    // fault-safe at run time.
    unsafe { core::ptr::read_volatile((base as *const u8).add(offset as usize).cast::<T>()) }
}

impl StateChange for SockChange {
    type Ctx = BtfTracePointContext;
    #[inline(always)]
    fn ctx(&self) -> &BtfTracePointContext {
        &self.ctx
    }
    #[inline(always)]
    fn states(&self) -> (i32, i32) {
        (self.old, self.new)
    }
    #[inline(always)]
    fn sport(&self) -> u16 {
        let num: u16 = btf_load(self.sk, global_field!(SOCK_OFFSETS.num));
        if num != 0 {
            return num;
        }
        // Going to CLOSE (a reset, a failed connect), the socket has given its
        // port back; `inet_sport`, which the tracepoint's record carries, keeps it.
        // Past `struct sock`, so not a load the verifier allows from this pointer.
        kernel_read::<u16>(self.sk, global_field!(SOCK_OFFSETS.inet_sport))
            .map(u16::from_be)
            .unwrap_or(0)
    }
    #[inline(always)]
    fn dport(&self) -> u16 {
        u16::from_be(btf_load(self.sk, global_field!(SOCK_OFFSETS.dport)))
    }
    #[inline(always)]
    fn family(&self) -> u16 {
        btf_load(self.sk, global_field!(SOCK_OFFSETS.family))
    }
    #[inline(always)]
    fn protocol(&self) -> u16 {
        btf_load(self.sk, global_field!(SOCK_OFFSETS.protocol))
    }
    #[inline(always)]
    fn skaddr(&self) -> u64 {
        self.sk
    }
    #[inline(always)]
    fn addrs(&self, family: u16, laddr: &mut [u8; 16], raddr: &mut [u8; 16]) -> bool {
        // As words, in the socket's (network) byte order, like the record's.
        if family == AF_INET {
            let (l, r) = (
                global_field!(SOCK_OFFSETS.rcv_saddr),
                global_field!(SOCK_OFFSETS.daddr),
            );
            laddr[..4].copy_from_slice(&btf_load::<u32>(self.sk, l).to_ne_bytes());
            raddr[..4].copy_from_slice(&btf_load::<u32>(self.sk, r).to_ne_bytes());
            true
        } else if family == AF_INET6 {
            let (l, r) = (
                global_field!(SOCK_OFFSETS.v6_rcv_saddr),
                global_field!(SOCK_OFFSETS.v6_daddr),
            );
            for word in 0..4 {
                let at = word * 4;
                laddr[at..at + 4]
                    .copy_from_slice(&btf_load::<u32>(self.sk, l + at as u32).to_ne_bytes());
                raddr[at..at + 4]
                    .copy_from_slice(&btf_load::<u32>(self.sk, r + at as u32).to_ne_bytes());
            }
            true
        } else {
            false
        }
    }
    #[inline(always)]
    fn netns(&self) -> u32 {
        let inum = global_field!(NETNS_OFFSETS.net_inum);
        if inum == 0 {
            return 0;
        }
        let net: u64 = btf_load(self.sk, global_field!(NETNS_OFFSETS.sock_net));
        if net == 0 {
            return 0;
        }
        net_netns(net, |net| btf_load(net, inum))
    }
    #[inline(always)]
    fn bytes(&self) -> Option<SockBytes> {
        let off = tcp_sock_offsets();
        if off.bytes_received == 0 {
            return None;
        }
        // SAFETY: the helper takes any socket pointer and returns it as a
        // `struct tcp_sock` only if it is one (a full TCP socket), null otherwise.
        let tp = unsafe { bpf_skc_to_tcp_sock(self.sk as *mut core::ffi::c_void) } as u64;
        if tp == 0 {
            return None;
        }
        Some(SockBytes::from_seq(
            btf_load(tp, off.bytes_received),
            btf_load(tp, off.bytes_acked),
            btf_load(tp, off.rcv_nxt),
            btf_load(tp, off.copied_seq),
            btf_load(tp, off.write_seq),
            btf_load(tp, off.snd_una),
        ))
    }
    #[inline(always)]
    fn connect_err(&self) -> u32 {
        // SAFETY: as in `connect_err`.
        let off = unsafe { core::ptr::read_volatile(&SK_ERR_OFFSET) };
        if off == 0 {
            return CONNECT_ERR_UNKNOWN;
        }
        let err: i32 = btf_load(self.sk, off);
        if err >= 0 {
            err as u32
        } else {
            CONNECT_ERR_UNKNOWN
        }
    }
}

fn try_set_state<S: StateChange>(ch: &S) -> Option<()> {
    // Cheapest first: plain loads of the record, the transitions we report (five
    // of the ten a connection goes through), the protocol, and only then a map
    // lookup and reads of kernel memory. Server-side transitions come first and
    // cost what they cost before the client side was watched.
    let ctx = ch.ctx();
    let (old, new) = ch.states();
    let kind = match (old, new) {
        (tcp_state::SYN_RECV, tcp_state::ESTABLISHED) => event_kind::OPENED,
        (tcp_state::ESTABLISHED, tcp_state::FIN_WAIT1) => event_kind::CLOSED_BY_SERVER,
        (tcp_state::ESTABLISHED, tcp_state::CLOSE_WAIT) => event_kind::CLOSED_BY_CLIENT,
        (tcp_state::ESTABLISHED, tcp_state::CLOSE) => event_kind::RESET,
        (tcp_state::CLOSE, tcp_state::SYN_SENT) if local_processes() || client_mode() => {
            return note_connector(ch);
        }
        (tcp_state::SYN_SENT, tcp_state::ESTABLISHED) if local_processes() || client_mode() => {
            return send_connector(ch, event_kind::CONNECTED);
        }
        (tcp_state::SYN_SENT, tcp_state::CLOSE) if local_processes() || client_mode() => {
            return send_connector(ch, event_kind::CONNECT_FAILED);
        }
        _ => {
            if debug_probes() && unexpected_transition(old, new) {
                let sport = ch.sport();
                if watch_mode_of(sport) != 0 {
                    diag!(
                        ctx,
                        "sock:inet_sock_set_state: unexpected TCP state change {} -> {} on watched port {}, not recorded",
                        old,
                        new,
                        sport
                    );
                }
            }
            return None;
        }
    };
    if ch.protocol() != IPPROTO_TCP {
        return None;
    }
    let sport = ch.sport();
    let mode = watch_mode_of(sport);
    if mode == 0 {
        if client_mode() && kind != event_kind::OPENED {
            return send_client_close(ch, sport, kind);
        }
        return None;
    }
    let netns = ch.netns();
    if !watched_in(mode, netns, sport) {
        return None;
    }
    let out = Emitting::begin()?;
    let mut ev = read_tuple(ch, sport, kind, ktime_ns())?;
    ev.netns = netns;
    if kind != event_kind::OPENED {
        match ch.bytes().map(|b| b.app()) {
            Some((read, written, unsent)) => {
                ev.bytes_in = read;
                ev.bytes_out = written;
                ev.unsent = unsent.min(u64::from(u32::MAX)) as u32;
                ev.flags = BYTES_KNOWN;
            }
            None => {
                bump(&COUNTERS, counter::BYTES_UNREADABLE);
            }
        }
    }
    out.stage(ctx, &ev);
    Some(())
}

/// Client mode: an ESTABLISHED client socket of this host towards a watched remote
/// port began to close or was reset. The record keeps the socket's own view
/// (see `CLIENT_SIDE`); userspace turns it round.
#[inline(always)]
fn send_client_close<S: StateChange>(ch: &S, sport: u16, kind: u8) -> Option<()> {
    let dport = ch.dport();
    let mode = remote_mode_of(dport);
    if mode == 0 {
        return None;
    }
    let netns = ch.netns();
    if !watched_in(mode, netns, dport) {
        return None;
    }
    let out = Emitting::begin()?;
    let mut ev = read_tuple(ch, sport, kind, ktime_ns())?;
    ev.netns = netns;
    ev.flags = CLIENT_SIDE;
    match ch.bytes() {
        Some(b) => {
            ev.bytes_in = b.received;
            ev.bytes_out = b.acked + b.queued;
            ev.unsent = b.queued.min(u64::from(u32::MAX)) as u32;
            ev.flags |= BYTES_KNOWN;
        }
        None => {
            bump(&COUNTERS, counter::BYTES_UNREADABLE);
        }
    }
    out.stage(ch.ctx(), &ev);
    Some(())
}

/// The `watch_mode` of remote port `port` in client mode; 0: not watched (always,
/// out of client mode: the lookup is dead code then).
#[inline(always)]
fn remote_mode_of(port: u16) -> u8 {
    if !client_mode() || !port_bit(&REMOTE_PORT_BITS, port) {
        return 0;
    }
    REMOTE_PORTS.get(u32::from(port)).copied().unwrap_or(0)
}

/// Whether a connect to `dport` is one whose caller is noted: a local client of a
/// watched server port (unless `--no-processes`), or a watched remote port.
#[inline(always)]
fn connector_wanted(dport: u16) -> bool {
    remote_mode_of(dport) != 0 || (local_processes() && watch_mode_of(dport) != 0)
}

/// CLOSE → SYN_SENT, in the context of the process calling `connect()`: if the
/// destination port is watched, note who calls (the source port is not chosen yet).
#[inline(always)]
fn note_connector<S: StateChange>(ch: &S) -> Option<()> {
    let dport = ch.dport();
    if !connector_wanted(dport) || ch.protocol() != IPPROTO_TCP {
        return None;
    }
    let sk = ch.skaddr();
    // The caller's user stack, walked by frame pointers: its id plus one, 0 for none
    // (the map full of other call paths, or no user stack to walk).
    let stack = if user_stacks() {
        match ch.ctx().get_stackid(&STACKS, u64::from(BPF_F_USER_STACK)) {
            Ok(id) => (id as u32).wrapping_add(1),
            Err(_) => 0,
        }
    } else {
        0
    };
    let who = Connector {
        // SAFETY: bpf_get_current_cgroup_id takes no arguments and has no preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        stack,
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    // A full LRU map pushes out its oldest entry; an error loses this one only.
    let _ = CONNECTING.insert(&sk, &who, 0);
    Some(())
}

/// SYN_SENT → ESTABLISHED or CLOSE of a socket noted by [`note_connector`]: the
/// caller with the connection's 4-tuple, now complete.
#[inline(always)]
fn send_connector<S: StateChange>(ch: &S, kind: u8) -> Option<()> {
    let dport = ch.dport();
    if !connector_wanted(dport) {
        return None;
    }
    let sk = ch.skaddr();
    // SAFETY: a lookup whose value is copied out at once, before the removal.
    let who = *unsafe { CONNECTING.get(&sk) }?;
    // Removed at once: the LRU only pushes out the entries of sockets whose end
    // was missed.
    let _ = CONNECTING.remove(&sk);
    // Client mode: the record opens (or fails) the connection itself, so it
    // carries the namespace the connection is counted in.
    let mode = remote_mode_of(dport);
    let (flags, netns) = if mode != 0 {
        let netns = ch.netns();
        if !watched_in(mode, netns, dport) {
            return None;
        }
        (CLIENT_SIDE, netns)
    } else {
        (0, 0)
    };
    let family = ch.family();
    let out = Emitting::begin()?;
    let mut ev = ConnectorEvent {
        ts_ns: ktime_ns(),
        cgroup_id: who.cgroup_id,
        lport: ch.sport(),
        rport: dport,
        family,
        kind,
        flags,
        netns,
        tgid: who.tgid,
        comm: who.comm,
        stack: who.stack,
        ..ConnectorEvent::default()
    };
    if kind == event_kind::CONNECT_FAILED {
        ev.err = ch.connect_err();
    }
    if !ch.addrs(family, &mut ev.laddr, &mut ev.raddr) {
        return None;
    }
    out.send(ch.ctx(), &ev);
    Some(())
}

/// Why the connect of the socket at `sk` failed, read as the socket leaves
/// SYN_SENT: its `sk_err` (see `ConnectorEvent::err`). The kernel sets it before
/// the state change when a reset refuses the SYN (`tcp_reset`) and when the SYN
/// retries run out (`tcp_write_err`); a close by the application leaves it 0.
#[inline(always)]
fn connect_err(sk: u64) -> u32 {
    // SAFETY: a read of a plain global that userspace set before load; volatile so
    // the compiler does not fold the zero initializer into the code.
    let off = unsafe { core::ptr::read_volatile(&SK_ERR_OFFSET) };
    if off == 0 || sk == 0 {
        return CONNECT_ERR_UNKNOWN;
    }
    match kernel_read::<i32>(sk, off) {
        Some(err) if err >= 0 => err as u32,
        _ => CONNECT_ERR_UNKNOWN,
    }
}

/// A state this build does not know, or a way out of ESTABLISHED other than the three
/// recorded (a connection whose end would go unseen until the next sock_diag scan).
#[inline(always)]
fn unexpected_transition(old: i32, new: i32) -> bool {
    let known = |state: i32| (tcp_state::ESTABLISHED..=tcp_state::BOUND_INACTIVE).contains(&state);
    !known(old) || !known(new) || old == tcp_state::ESTABLISHED
}

/// The layout of [`NETNS_OFFSETS`], read once per program run.
#[inline(always)]
fn netns_offsets() -> NetnsOffsets {
    // SAFETY: a read of a plain global that userspace set before load; volatile so
    // the compiler does not fold the all-zero initializer into the code.
    unsafe { core::ptr::read_volatile(&NETNS_OFFSETS) }
}

/// The inode number of the network namespace of `net` (a `struct net *`); 0 if unknown.
#[inline(always)]
fn net_inum(net: u64, off: &NetnsOffsets) -> u32 {
    if net == 0 {
        return 0;
    }
    net_netns(net, |net| {
        kernel_read::<u32>(net, off.net_inum).unwrap_or(0)
    })
}

/// The network namespace of the socket at `sk`; 0 if unknown.
#[inline(always)]
fn sock_netns(sk: u64) -> u32 {
    let off = netns_offsets();
    if off.net_inum == 0 || sk == 0 {
        return 0;
    }
    net_inum(kernel_read::<u64>(sk, off.sock_net).unwrap_or(0), &off)
}

/// The network namespace of the device the packet at `skb` arrived on; 0 if unknown.
#[inline(always)]
fn skb_netns(skb: u64) -> u32 {
    let off = netns_offsets();
    if off.net_inum == 0 || off.skb_dev == 0 || skb == 0 {
        return 0;
    }
    let dev = kernel_read::<u64>(skb, off.skb_dev).unwrap_or(0);
    if dev == 0 {
        return 0;
    }
    net_inum(kernel_read::<u64>(dev, off.dev_net).unwrap_or(0), &off)
}

/// The `watch_mode` of local port `port`; 0: not watched.
#[inline(always)]
fn watch_mode_of(port: u16) -> u8 {
    if !port_bit(&WATCHED_PORT_BITS, port) {
        return 0;
    }
    WATCHED_PORTS.get(u32::from(port)).copied().unwrap_or(0)
}

/// Whether connections on `port` in namespace `netns` are watched, given the
/// port's `watch_mode`.
#[inline(always)]
fn watched_in(mode: u8, netns: u32, port: u16) -> bool {
    // SAFETY: a read of a plain global that userspace set before load; volatile so
    // the compiler does not fold the zero initializer into the code.
    if mode != watch_mode::LISTED_NETNS || netns == unsafe { core::ptr::read_volatile(&HOME_NETNS) }
    {
        return true;
    }
    let key = WatchKey {
        netns,
        port,
        _pad: 0,
    };
    // SAFETY: a read-only lookup; the value is not dereferenced.
    unsafe { WATCHED_INSTANCES.get(&key) }.is_some()
}

/// Reads a `T` at `offset` bytes into the kernel object at `base`.
#[inline(always)]
fn kernel_read<T>(base: u64, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails (we return None)
    // instead of faulting; `base` is a kernel object the tracepoint hands us (a
    // socket during its state change, a packet being freed) or a pointer read from
    // one, and `offset` comes from the kernel's BTF for that object's type.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.ok()
}

/// A socket's byte counters, from `struct tcp_sock`.
struct SockBytes {
    /// `bytes_received`: what arrived, read by the application or not.
    received: u64,
    /// `rcv_nxt - copied_seq`: arrived, not read yet.
    unread: u64,
    /// `bytes_acked`.
    acked: u64,
    /// `write_seq - snd_una`: written, not acknowledged yet.
    queued: u64,
}

impl SockBytes {
    /// From `struct tcp_sock`'s fields. Sequence numbers wrap: their differences
    /// are taken modulo 2^32.
    #[inline(always)]
    fn from_seq(
        received: u64,
        acked: u64,
        rcv_nxt: u32,
        copied_seq: u32,
        write_seq: u32,
        snd_una: u32,
    ) -> Self {
        SockBytes {
            received,
            unread: rcv_nxt.wrapping_sub(copied_seq) as u64,
            acked,
            queued: write_seq.wrapping_sub(snd_una) as u64,
        }
    }

    /// What the application read and wrote, and what is still queued.
    #[inline(always)]
    fn app(&self) -> (u64, u64, u64) {
        (
            self.received.saturating_sub(self.unread),
            self.acked + self.queued,
            self.queued,
        )
    }
}

/// The byte counters of the socket at `sk` (see [`TcpSockOffsets`]). `None` when
/// the offsets are unknown or a read fails. Runs once per connection, at its close.
#[inline(always)]
fn sock_bytes(sk: u64) -> Option<SockBytes> {
    let off = tcp_sock_offsets();
    if off.bytes_received == 0 || sk == 0 {
        return None;
    }
    Some(SockBytes::from_seq(
        kernel_read(sk, off.bytes_received)?,
        kernel_read(sk, off.bytes_acked)?,
        kernel_read(sk, off.rcv_nxt)?,
        kernel_read(sk, off.copied_seq)?,
        kernel_read(sk, off.write_seq)?,
        kernel_read(sk, off.snd_una)?,
    ))
}

/// The layout [`TCP_SOCK_OFFSETS`], read once per close.
#[inline(always)]
fn tcp_sock_offsets() -> TcpSockOffsets {
    // SAFETY: a read of a plain global that userspace set before load; volatile so
    // the compiler does not fold the all-zero initializer into the code.
    unsafe { core::ptr::read_volatile(&TCP_SOCK_OFFSETS) }
}

/// The connection's ports and addresses, as a fresh event.
#[inline(always)]
fn read_tuple<S: StateChange>(ch: &S, sport: u16, kind: u8, ts_ns: u64) -> Option<ConnEvent> {
    let family = ch.family();
    let mut ev = ConnEvent {
        ts_ns,
        lport: sport,
        rport: ch.dport(),
        family,
        kind,
        ..ConnEvent::default()
    };
    if !ch.addrs(family, &mut ev.laddr, &mut ev.raddr) {
        diag!(
            ch.ctx(),
            "sock:inet_sock_set_state: unexpected address family {} on watched port {}, not recorded",
            family,
            sport
        );
        return None;
    }
    Some(ev)
}

/// This CPU's batch, marked `making` from before a record's time is taken until the
/// record is staged or written (cleared on drop). [`flush_staged`], run by
/// userspace in an interrupt on this CPU, leaves a batch being made alone, so every
/// record stamped before a flush began is in the ring buffer once the flush has
/// worked: what lets userspace put the records of every CPU back in time order (see
/// `EventReader`). Tracepoint programs do not nest on one CPU (the kernel skips a
/// program while another runs there), but the raw tracepoint version of the
/// state-change program may interrupt one of them: a program that finds the batch
/// being made (`nested`) writes its record alone and leaves the batch and its mark
/// to the program it interrupted. So the batch has one writer at a time.
struct Emitting {
    batch: *mut ConnBatch,
    nested: bool,
}

impl Emitting {
    /// Marks this CPU's batch as being made; `None` if the map cannot be looked up.
    #[inline(always)]
    fn begin() -> Option<Self> {
        let batch = STAGED.get_ptr_mut(0)?;
        // SAFETY: the pointer comes from a successful per-CPU array lookup: this
        // CPU's valid, aligned slot, touched only by programs running on this CPU,
        // one at a time or nested (an interrupt runs to its end before the
        // program it interrupted goes on). Volatile, so the stores are neither
        // dropped nor moved past the record's making.
        let nested = unsafe { core::ptr::read_volatile(&raw const (*batch).making) } != 0;
        if !nested {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(&raw mut (*batch).making, 1) };
        }
        Some(Emitting { batch, nested })
    }

    /// Adds a connection record to the batch, and writes the batch to the ring
    /// buffer when it holds as many as userspace asked for. Writes the record alone
    /// at once while a flush runs on this CPU (this program interrupted it), or
    /// when this program interrupted another one making a record.
    #[inline(always)]
    fn stage<C: EbpfContext>(&self, ctx: &C, ev: &ConnEvent) {
        let batch = self.batch;
        // SAFETY: `batch` is this CPU's slot (see `begin`); volatile, as the flush
        // that sets it may be what this program interrupted.
        let flushing = unsafe { core::ptr::read_volatile(&raw const (*batch).flushing) };
        if flushing != 0 || self.nested {
            write_now(ctx, ev);
            return;
        }
        let len = STAGE_LEN.get(0).copied().unwrap_or(0);
        // SAFETY: `batch` is this CPU's slot (see `begin`); the index is masked
        // below BATCH_LEN, inside `events`.
        let staged = unsafe {
            let n = (*batch).count as usize & (BATCH_LEN - 1);
            (*batch).events[n] = *ev;
            n + 1
        };
        if staged as u32 >= len {
            if !write_batch(batch, staged) {
                lost(ctx, staged as u64);
            }
            // SAFETY: as above.
            unsafe { (*batch).count = 0 };
        } else {
            // SAFETY: as above.
            unsafe { (*batch).count = staged as u32 };
        }
    }

    /// Sends a connect record at once, never waking the reader (see [`write_batch`]).
    #[inline(always)]
    fn send<C: EbpfContext>(&self, ctx: &C, ev: &ConnectorEvent) {
        write_now(ctx, ev);
    }
}

/// Writes one record to the ring buffer at once, never waking the reader (see
/// [`write_batch`]), and counts it lost if the ring had no room.
#[inline(always)]
fn write_now<C: EbpfContext, T>(ctx: &C, ev: &T) {
    if EVENTS.output::<T>(ev, BPF_RB_NO_WAKEUP as u64).is_err() {
        lost(ctx, 1);
    }
}

impl Drop for Emitting {
    #[inline(always)]
    fn drop(&mut self) {
        if !self.nested {
            // SAFETY: this CPU's slot, as in `begin`.
            unsafe { core::ptr::write_volatile(&raw mut (*self.batch).making, 0) };
        }
    }
}

/// Writes the `staged` (1 to `BATCH_LEN`) records of this CPU's batch to the ring
/// buffer as one record; whether the ring had room. Never wakes the reader: it
/// drains the ring on its own timer (`RING_DRAIN_INTERVAL` in userspace, 100 ms);
/// a wakeup per record would cost the agent a context switch per connection event.
/// The 4 MiB ring holds about 3,600 full batches (57,000 connection records).
#[inline(always)]
fn write_batch(batch: *mut ConnBatch, staged: usize) -> bool {
    // 1 to BATCH_LEN records, which the verifier can see from the mask.
    let staged = ((staged - 1) & (BATCH_LEN - 1)) + 1;
    let size = BATCH_HEADER + staged * size_of::<ConnEvent>();
    // SAFETY: `batch` is this CPU's slot (see `Emitting::begin`), and `size` is at
    // most size_of::<ConnBatch>(), so the bytes are inside the map value.
    unsafe {
        (*batch).count = staged as u32;
        let bytes = core::slice::from_raw_parts(batch.cast::<u8>(), size);
        EVENTS
            .output::<[u8]>(bytes, BPF_RB_NO_WAKEUP as u64)
            .is_ok()
    }
}

/// Counts `n` records the ring buffer had no room for.
#[inline(always)]
fn lost<C: EbpfContext>(ctx: &C, n: u64) {
    let total = add(&COUNTERS, counter::LOST_EVENTS, n);
    // A line each time the total on this CPU reaches a power of two (the 1st,
    // 2nd, 4th … loss): a flood of losses stays a few lines (the total is in the
    // counter).
    let before = total.saturating_sub(n);
    if total.leading_zeros() != before.leading_zeros() {
        diag!(
            ctx,
            "ring buffer EVENTS full: records dropped, {} lost on this CPU so far",
            total
        );
    }
}

// ---------------------------------------------------------------------------------
// Flush: never attached. Userspace runs it on each CPU before it drains the ring
// (BPF_PROG_TEST_RUN with BPF_F_TEST_RUN_ON_CPU: in an interrupt on that CPU, or
// directly when the caller is on it), so the records staged there are in the ring
// when it reads. Returns 0 when they are (or there were none); 1 when a program of
// that CPU was making a record (userspace runs it again); 2 when the ring had no
// room: the records stay staged, for the next flush or the CPU's next record.
// ---------------------------------------------------------------------------------

#[raw_tracepoint(tracepoint = "connwatch_flush")]
pub fn flush_staged(_ctx: RawTracePointContext) -> i32 {
    let Some(batch) = STAGED.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot, from a successful per-CPU array lookup. In an
    // interrupt, no program of this CPU runs until the flush ends, and `making`
    // says whether one was interrupted. Run directly (the caller is on this CPU),
    // a program may interrupt the flush: `flushing`, set first, makes it write its
    // record at once and leave the batch alone. Volatile keeps that order.
    unsafe {
        core::ptr::write_volatile(&raw mut (*batch).flushing, 1);
        let mut status = 0;
        if core::ptr::read_volatile(&raw const (*batch).making) != 0 {
            status = 1;
        } else {
            let staged = core::ptr::read_volatile(&raw const (*batch).count) as usize;
            if staged != 0 {
                if write_batch(batch, staged) {
                    (*batch).count = 0;
                } else {
                    status = 2;
                }
            }
        }
        core::ptr::write_volatile(&raw mut (*batch).flushing, 0);
        status
    }
}

// ---------------------------------------------------------------------------------
// tcp:tcp_send_reset
//   TP_PROTO(const struct sock *sk, const struct sk_buff *skb, enum sk_rst_reason reason)
//   skbaddr@8 skaddr@16 state@24 reason@28 saddr[28]@32 daddr[28]@60
// saddr/daddr hold a sockaddr_in or sockaddr_in6 (family@0, port@2 big-endian,
// IPv4 address@4, IPv6 address@8). Without a socket (skaddr == 0) the reset answers
// a segment to a port nothing listens on: saddr is that local port, daddr the client.
// ---------------------------------------------------------------------------------

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let _ = try_send_reset(&ctx);
    0
}

fn try_send_reset(ctx: &TracePointContext) -> Option<()> {
    if field::<u64>(ctx, send_reset::SKADDR)? != 0 {
        return None;
    }
    let lport = u16::from_be(field(ctx, send_reset::SADDR + send_reset::SIN_PORT)?);
    let mode = watch_mode_of(lport);
    if mode == 0 {
        return None;
    }
    let netns = skb_netns(field(ctx, send_reset::SKBADDR)?);
    if !watched_in(mode, netns, lport) {
        return None;
    }
    let family: u16 = field(ctx, send_reset::SADDR)?;
    let out = Emitting::begin()?;
    let mut ev = ConnEvent {
        ts_ns: ktime_ns(),
        lport,
        rport: u16::from_be(field(ctx, send_reset::DADDR + send_reset::SIN_PORT)?),
        family,
        kind: event_kind::REFUSED,
        netns,
        ..ConnEvent::default()
    };
    if family == AF_INET {
        let l: [u8; 4] = field(ctx, send_reset::SADDR + send_reset::SIN_ADDR)?;
        let r: [u8; 4] = field(ctx, send_reset::DADDR + send_reset::SIN_ADDR)?;
        ev.laddr[..4].copy_from_slice(&l);
        ev.raddr[..4].copy_from_slice(&r);
    } else if family == AF_INET6 {
        ev.laddr = field(ctx, send_reset::SADDR + send_reset::SIN6_ADDR)?;
        ev.raddr = field(ctx, send_reset::DADDR + send_reset::SIN6_ADDR)?;
    } else {
        diag!(
            ctx,
            "tcp:tcp_send_reset: unexpected address family {} on watched port {}, not recorded",
            family,
            lport
        );
        return None;
    }
    out.stage(ctx, &ev);
    Some(())
}

// ---------------------------------------------------------------------------------
// skb:kfree_skb
//   TP_PROTO(struct sk_buff *skb, void *location, enum skb_drop_reason reason)
//   5.17 to 6.x: skbaddr@8 location@16 protocol@24 reason@28
//   with rx_sk:  skbaddr@8 location@16 rx_sk@24 protocol@32 reason@36
// Refusals where tcp:tcp_send_reset does not report resets sent without a socket
// (6.1): a TCP segment to a port nothing listens on is answered with a reset, then
// dropped with reason NO_SOCKET. The loader attaches one of the two programs, only
// when tcp_send_reset cannot serve, so a refusal is never counted twice. Every drop
// of the host comes here: the reason (a plain load) is compared first, the packet
// is read only for NO_SOCKET drops. `protocol` is the EtherType, in host order.
// ---------------------------------------------------------------------------------

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// TCP header flags (byte 13).
const TCP_RST: u8 = 0x04;

#[tracepoint(category = "skb", name = "kfree_skb")]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    let reason: u32 = ctx_load(&ctx, kfree_skb::REASON);
    let _ = try_no_socket_drop(&ctx, reason, kfree_skb::PROTOCOL, kfree_skb::SKBADDR);
    0
}

#[tracepoint(category = "skb", name = "kfree_skb")]
pub fn kfree_skb_rx_sk(ctx: TracePointContext) -> u32 {
    let reason: u32 = ctx_load(&ctx, kfree_skb_rx_sk::REASON);
    let _ = try_no_socket_drop(
        &ctx,
        reason,
        kfree_skb_rx_sk::PROTOCOL,
        kfree_skb_rx_sk::SKBADDR,
    );
    0
}

#[inline(always)]
fn try_no_socket_drop(
    ctx: &TracePointContext,
    reason: u32,
    protocol_at: usize,
    skbaddr_at: usize,
) -> Option<()> {
    // SAFETY: a read of a plain global that userspace set before load; volatile so
    // the compiler does not fold the all-zero initializer into the code.
    let off: PacketOffsets = unsafe { core::ptr::read_volatile(&PACKET_OFFSETS) };
    if reason != off.no_socket_reason || off.head == 0 {
        return None;
    }
    let protocol: u16 = ctx_load(ctx, protocol_at);
    if protocol != ETH_P_IP && protocol != ETH_P_IPV6 {
        return None;
    }
    let skb: u64 = ctx_load(ctx, skbaddr_at);
    let head: u64 = kernel_read(skb, off.head)?;
    let network: u16 = kernel_read(skb, off.network_header)?;
    let transport: u16 = kernel_read(skb, off.transport_header)?;
    // UDP drops its unclaimed datagrams with the same reason: the IP header says
    // which protocol the transport header is.
    let mut ev = ConnEvent {
        kind: event_kind::REFUSED,
        ..ConnEvent::default()
    };
    if protocol == ETH_P_IP {
        let ip: [u8; 20] = kernel_read(head, u32::from(network))?;
        if u16::from(ip[9]) != IPPROTO_TCP {
            return None;
        }
        ev.family = AF_INET;
        ev.raddr[..4].copy_from_slice(&ip[12..16]);
        ev.laddr[..4].copy_from_slice(&ip[16..20]);
    } else {
        let ip: [u8; 40] = kernel_read(head, u32::from(network))?;
        if u16::from(ip[6]) != IPPROTO_TCP {
            return None;
        }
        ev.family = AF_INET6;
        ev.raddr.copy_from_slice(&ip[8..24]);
        ev.laddr.copy_from_slice(&ip[24..40]);
    }
    let tcp: [u8; 14] = kernel_read(head, u32::from(transport))?;
    // A reset is not answered with one.
    if tcp[13] & TCP_RST != 0 {
        return None;
    }
    let lport = u16::from_be_bytes([tcp[2], tcp[3]]);
    let mode = watch_mode_of(lport);
    if mode == 0 {
        return None;
    }
    let netns = skb_netns(skb);
    if !watched_in(mode, netns, lport) {
        return None;
    }
    let out = Emitting::begin()?;
    ev.ts_ns = ktime_ns();
    ev.lport = lport;
    ev.rport = u16::from_be_bytes([tcp[0], tcp[1]]);
    ev.netns = netns;
    out.stage(ctx, &ev);
    Some(())
}

// ---------------------------------------------------------------------------------
// tcp:tcp_retransmit_synack
//   TP_PROTO(const struct sock *sk, const struct request_sock *req)
//   skaddr@8 req@16 sport@24 dport@26 family@28 ...
// A listener re-sending its SYN-ACK: the handshake is not completing. Counted only
// (one count for all watched listeners).
// ---------------------------------------------------------------------------------

#[tracepoint(category = "tcp", name = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    let _ = try_retransmit_synack(&ctx);
    0
}

fn try_retransmit_synack(ctx: &TracePointContext) -> Option<()> {
    let sport: u16 = ctx_load(ctx, synack::SPORT);
    let mode = watch_mode_of(sport);
    if mode == 0 {
        return None;
    }
    if mode == watch_mode::LISTED_NETNS {
        let netns = sock_netns(field(ctx, synack::SKADDR)?);
        if !watched_in(mode, netns, sport) {
            return None;
        }
    }
    bump(&COUNTERS, counter::SYNACK_RETRANSMITS);
    Some(())
}

// ---------------------------------------------------------------------------------
// syscalls:sys_exit_accept4 / syscalls:sys_exit_accept
//   SYSCALL_DEFINE4(accept4, int fd, struct sockaddr __user *upeer_sockaddr,
//                   int __user *upeer_addrlen, int flags)
//   SYSCALL_DEFINE3(accept, int fd, struct sockaddr __user *upeer_sockaddr,
//                   int __user *upeer_addrlen)
//   __syscall_nr@8 ret@16 (long)
// Failed accepts come in floods (an EMFILE spin is ~20k/s): counted per errno in a
// per-CPU array, never sent one by one.
// ---------------------------------------------------------------------------------

#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    let _ = count_accept_error(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = count_accept_error(&ctx);
    0
}

fn count_accept_error(ctx: &TracePointContext) -> Option<()> {
    let ret: i64 = ctx_load(ctx, sys_exit::RET);
    if ret >= 0 {
        return None;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a read-only lookup of a u8 value, copied out at once.
    let instance = *unsafe { LISTENER_PIDS.get(tgid) }? as u32;
    let instance = if instance < MAX_INSTANCE_SLOTS {
        instance
    } else {
        0
    };
    let errno = ret.unsigned_abs();
    let errno = if errno < MAX_ERRNO as u64 {
        errno as u32
    } else {
        0
    };
    let key = instance * MAX_ERRNO + errno;
    match ACCEPT_ERRORS.get_ptr_mut(&key) {
        // SAFETY: the pointer comes from a successful per-CPU hash lookup, so it points
        // to this CPU's valid, aligned u64 value, which nothing else writes concurrently.
        Some(count) => unsafe { *count += 1 },
        None => {
            // The first failure of this kind on this CPU; a full map loses the count.
            let _ = ACCEPT_ERRORS.insert(&key, &1, 0);
        }
    }
    Some(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: BPF programs cannot panic at run time; the verifier rejects any program
    // in which this is reachable, so it is never executed.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
