//! connwatch's kernel programs. Tracepoints only: kprobes do not exist on the kernels
//! we run on and fentry is refused, and tracepoints are a stable ABI besides.
//!
//! The kernel side stays small and dumb: it filters early (watched ports and pids
//! live in maps userspace fills), keeps per-connection byte counts and activity
//! times in an LRU map, counts floods (failed accepts) in per-CPU arrays, and sends
//! one compact record per connection transition through a ring buffer. All judgment
//! happens in userspace, where it can be tested.
//!
//! Field offsets come from `/sys/kernel/tracing/events/<category>/<name>/format`
//! (kernel 6.18); they are part of the tracepoints' ABI. `sport`/`dport` there are
//! already in host byte order.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use connwatch_ebpf::{
    AF_INET, AF_INET6, CONN_TRACKED, ConnEvent, ConnInfo, DEFAULT_MAX_CONNS, MAX_ERRNO,
    MAX_LISTENER_PIDS, MAX_WATCHED_PORTS, counter, event_kind, tcp_state,
};

const IPPROTO_TCP: u16 = 6;
/// `MSG_PEEK`: a peek does not consume data, so it is not activity.
const MSG_PEEK: i32 = 2;

/// Local ports whose server-side connections are observed (value unused).
#[map]
static WATCHED_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_WATCHED_PORTS, 0);

/// Processes (tgid) that own a watched listener: their failed accepts are counted.
#[map]
static LISTENER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_LISTENER_PIDS, 0);

/// Open connections on watched ports, keyed by the socket's kernel address. LRU so a
/// lost close can never fill it; userspace may resize it at load time.
#[map]
static CONNS: LruHashMap<u64, ConnInfo> = LruHashMap::with_max_entries(DEFAULT_MAX_CONNS, 0);

/// Failed accept()/accept4() of listener processes, per errno (slot 0: errno ≥ MAX_ERRNO).
#[map]
static ACCEPT_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_ERRNO, 0);

/// Health counters, see `connwatch_ebpf::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Connection transitions for userspace.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Adds one to a per-CPU counter. Per-CPU slots are only touched by programs on this
/// CPU, and a tracepoint program is not re-entered on one CPU, so a plain add is safe.
#[inline(always)]
fn bump(array: &PerCpuArray<u64>, index: u32) {
    if let Some(slot) = array.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup, so it points
        // to this CPU's valid, aligned u64 slot, which nothing else writes concurrently.
        unsafe { *slot += 1 };
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock userspace converts from.
#[inline(always)]
fn ktime_ns() -> u64 {
    // SAFETY: bpf_ktime_get_ns takes no arguments and has no preconditions.
    unsafe { bpf_ktime_get_ns() }
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
// Later transitions (FIN_WAIT2, LAST_ACK, final CLOSE) carry nothing new for us.
// ---------------------------------------------------------------------------------
mod set_state {
    pub const SKADDR: usize = 8;
    pub const OLDSTATE: usize = 16;
    pub const NEWSTATE: usize = 20;
    pub const SPORT: usize = 24;
    pub const DPORT: usize = 26;
    pub const FAMILY: usize = 28;
    pub const PROTOCOL: usize = 30;
    pub const SADDR: usize = 32;
    pub const DADDR: usize = 36;
    pub const SADDR_V6: usize = 40;
    pub const DADDR_V6: usize = 56;
}

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_set_state(&ctx);
    0
}

fn try_set_state(ctx: &TracePointContext) -> Option<()> {
    if field::<u16>(ctx, set_state::PROTOCOL)? != IPPROTO_TCP {
        return None;
    }
    let sport: u16 = field(ctx, set_state::SPORT)?;
    // SAFETY: a read-only lookup; the value is not dereferenced.
    unsafe { WATCHED_PORTS.get(sport) }?;
    let old: i32 = field(ctx, set_state::OLDSTATE)?;
    let new: i32 = field(ctx, set_state::NEWSTATE)?;
    let kind = match (old, new) {
        (tcp_state::SYN_RECV, tcp_state::ESTABLISHED) => event_kind::OPENED,
        (tcp_state::ESTABLISHED, tcp_state::FIN_WAIT1) => event_kind::CLOSED_BY_SERVER,
        (tcp_state::ESTABLISHED, tcp_state::CLOSE_WAIT) => event_kind::CLOSED_BY_CLIENT,
        (tcp_state::ESTABLISHED, tcp_state::CLOSE) => event_kind::RESET,
        _ => return None,
    };
    let sk: u64 = field(ctx, set_state::SKADDR)?;
    let now = ktime_ns();

    let info = if kind == event_kind::OPENED {
        let info = read_tuple(ctx, sport, now)?;
        if CONNS.insert(sk, info, 0).is_err() {
            bump(&COUNTERS, counter::CONN_INSERT_FAILED);
        }
        info
    } else {
        // SAFETY: the value is copied out at once; a concurrent delete of the same
        // socket cannot happen because its state transitions are serialized.
        match unsafe { CONNS.get(sk) } {
            Some(info) => {
                let info = *info;
                let _ = CONNS.remove(sk);
                info
            }
            None => {
                bump(&COUNTERS, counter::CLOSED_UNTRACKED);
                let mut info = read_tuple(ctx, sport, 0)?;
                info.flags = 0;
                info
            }
        }
    };
    send(sk, kind, now, &info);
    Some(())
}

/// The connection's addresses from the tracepoint record, as a fresh `ConnInfo`.
#[inline(always)]
fn read_tuple(ctx: &TracePointContext, sport: u16, opened_ns: u64) -> Option<ConnInfo> {
    let family: u16 = field(ctx, set_state::FAMILY)?;
    let mut info = ConnInfo {
        opened_ns,
        lport: sport,
        rport: field(ctx, set_state::DPORT)?,
        family,
        flags: CONN_TRACKED,
        ..ConnInfo::default()
    };
    if family == AF_INET {
        let l: [u8; 4] = field(ctx, set_state::SADDR)?;
        let r: [u8; 4] = field(ctx, set_state::DADDR)?;
        info.laddr[..4].copy_from_slice(&l);
        info.raddr[..4].copy_from_slice(&r);
    } else if family == AF_INET6 {
        info.laddr = field(ctx, set_state::SADDR_V6)?;
        info.raddr = field(ctx, set_state::DADDR_V6)?;
    } else {
        return None;
    }
    Some(info)
}

#[inline(always)]
fn send(sk: u64, kind: u8, ts_ns: u64, info: &ConnInfo) {
    match EVENTS.reserve::<ConnEvent>(0) {
        Some(mut entry) => {
            entry.write(ConnEvent {
                ts_ns,
                sk,
                kind,
                _pad: [0; 7],
                info: *info,
            });
            entry.submit(0);
        }
        None => bump(&COUNTERS, counter::LOST_EVENTS),
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
mod send_reset {
    pub const SKADDR: usize = 16;
    pub const SADDR: usize = 32;
    pub const DADDR: usize = 60;
    pub const SIN_PORT: usize = 2;
    pub const SIN_ADDR: usize = 4;
    pub const SIN6_ADDR: usize = 8;
}

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
    // SAFETY: a read-only lookup; the value is not dereferenced.
    unsafe { WATCHED_PORTS.get(lport) }?;
    let family: u16 = field(ctx, send_reset::SADDR)?;
    let mut info = ConnInfo {
        lport,
        rport: u16::from_be(field(ctx, send_reset::DADDR + send_reset::SIN_PORT)?),
        family,
        ..ConnInfo::default()
    };
    if family == AF_INET {
        let l: [u8; 4] = field(ctx, send_reset::SADDR + send_reset::SIN_ADDR)?;
        let r: [u8; 4] = field(ctx, send_reset::DADDR + send_reset::SIN_ADDR)?;
        info.laddr[..4].copy_from_slice(&l);
        info.raddr[..4].copy_from_slice(&r);
    } else if family == AF_INET6 {
        info.laddr = field(ctx, send_reset::SADDR + send_reset::SIN6_ADDR)?;
        info.raddr = field(ctx, send_reset::DADDR + send_reset::SIN6_ADDR)?;
    } else {
        return None;
    }
    send(0, event_kind::REFUSED, ktime_ns(), &info);
    Some(())
}

// ---------------------------------------------------------------------------------
// tcp:tcp_retransmit_synack
//   TP_PROTO(const struct sock *sk, const struct request_sock *req)
//   skaddr@8 req@16 sport@24 dport@26 family@28 ...
// A listener re-sending its SYN-ACK: the handshake is not completing. Counted only.
// ---------------------------------------------------------------------------------
const SYNACK_SPORT: usize = 24;

#[tracepoint(category = "tcp", name = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    if let Some(sport) = field::<u16>(&ctx, SYNACK_SPORT) {
        // SAFETY: a read-only lookup; the value is not dereferenced.
        if unsafe { WATCHED_PORTS.get(sport) }.is_some() {
            bump(&COUNTERS, counter::SYNACK_RETRANSMITS);
        }
    }
    0
}

// ---------------------------------------------------------------------------------
// sock:sock_recv_length / sock:sock_send_length
//   TP_PROTO(struct sock *sk, int ret, int flags)
//   sk@8 family@16 protocol@18 ret@20 flags@24
// Fired for every socket read/write on the host: one hash lookup decides, nothing
// else happens for sockets we do not track.
// ---------------------------------------------------------------------------------
mod length {
    pub const SK: usize = 8;
    pub const PROTOCOL: usize = 18;
    pub const RET: usize = 20;
    pub const FLAGS: usize = 24;
}

#[tracepoint(category = "sock", name = "sock_recv_length")]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    let _ = account(&ctx, true);
    0
}

#[tracepoint(category = "sock", name = "sock_send_length")]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    let _ = account(&ctx, false);
    0
}

fn account(ctx: &TracePointContext, inbound: bool) -> Option<()> {
    if field::<u16>(ctx, length::PROTOCOL)? != IPPROTO_TCP {
        return None;
    }
    let ret: i32 = field(ctx, length::RET)?;
    if ret <= 0 || field::<i32>(ctx, length::FLAGS)? & MSG_PEEK != 0 {
        return None;
    }
    let sk: u64 = field(ctx, length::SK)?;
    let info = CONNS.get_ptr_mut(sk)?;
    let now = ktime_ns();
    // SAFETY: `info` points into a live, aligned CONNS value. The counters are updated
    // with plain adds: the BPF target has no atomic read-modify-write in `core`, and
    // a socket's reads (and its writes) come from one Redis I/O thread at a time, so
    // two CPUs racing on the same counter is rare and would lose one increment, never
    // corrupt memory. The activity time is a plain store; the last writer wins.
    unsafe {
        if inbound {
            (*info).bytes_in += ret as u64;
            (*info).last_recv_ns = now;
        } else {
            (*info).bytes_out += ret as u64;
            (*info).last_send_ns = now;
        }
    }
    Some(())
}

// ---------------------------------------------------------------------------------
// syscalls:sys_exit_accept4 / syscalls:sys_exit_accept
//   __syscall_nr@8 ret@16 (long)
// Failed accepts come in floods (an EMFILE spin is ~20k/s): counted per errno in a
// per-CPU array, never sent one by one.
// ---------------------------------------------------------------------------------
const SYSCALL_RET: usize = 16;

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
    let ret: i64 = field(ctx, SYSCALL_RET)?;
    if ret >= 0 {
        return None;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a read-only lookup; the value is not dereferenced.
    unsafe { LISTENER_PIDS.get(tgid) }?;
    let errno = ret.unsigned_abs();
    let slot = if errno < MAX_ERRNO as u64 {
        errno as u32
    } else {
        0
    };
    bump(&ACCEPT_ERRORS, slot);
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
