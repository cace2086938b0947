//! The tracepoint records the kernel programs read: each field's offset and size,
//! as `/sys/kernel/tracing/events/<category>/<name>/format` publishes them.
//!
//! The programs read these fields with plain loads at constant offsets (the
//! cheapest read there is), so the offsets are compiled in. The loader compares
//! [`LAYOUTS`] with the running kernel's format files before it attaches anything:
//! a field moved, resized or missing is caught there, never read wrongly.

/// One field a program reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
}

/// A tracepoint, the program attached to it and the fields that program reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
    pub fields: &'static [Field],
}

const fn f(name: &'static str, offset: usize, size: usize) -> Field {
    Field { name, offset, size }
}

/// `sock:inet_sock_set_state`.
pub mod set_state {
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

/// `tcp:tcp_send_reset`, as kernels that report resets sent without a socket
/// write it: both addresses as a `sockaddr_in`/`sockaddr_in6` of 28 bytes.
pub mod send_reset {
    pub const SKBADDR: usize = 8;
    pub const SKADDR: usize = 16;
    pub const SADDR: usize = 32;
    pub const DADDR: usize = 60;
    /// Inside `saddr`/`daddr`: the port (big-endian) and the addresses.
    pub const SIN_PORT: usize = 2;
    pub const SIN_ADDR: usize = 4;
    pub const SIN6_ADDR: usize = 8;
}

/// `tcp:tcp_retransmit_synack`.
pub mod synack {
    pub const SKADDR: usize = 8;
    pub const SPORT: usize = 24;
}

/// `skb:kfree_skb` on kernels 5.17 to 6.x before `rx_sk` was added (Debian 12's
/// 6.1): where a refusal is seen when `tcp:tcp_send_reset` does not report resets
/// sent without a socket. A packet to a port nothing listens on is dropped with
/// reason `NO_SOCKET` after the kernel answered it with a reset.
pub mod kfree_skb {
    pub const SKBADDR: usize = 8;
    pub const PROTOCOL: usize = 24;
    pub const REASON: usize = 28;
}

/// `skb:kfree_skb` on kernels whose record has `rx_sk` (6.18 here).
pub mod kfree_skb_rx_sk {
    pub const SKBADDR: usize = 8;
    pub const PROTOCOL: usize = 32;
    pub const REASON: usize = 36;
}

/// `syscalls:sys_exit_accept4` and `syscalls:sys_exit_accept`.
pub mod sys_exit {
    pub const RET: usize = 16;
}

/// Every program's tracepoint and the fields it reads.
pub const LAYOUTS: &[Layout] = &[
    Layout {
        program: "inet_sock_set_state",
        category: "sock",
        name: "inet_sock_set_state",
        fields: &[
            f("skaddr", set_state::SKADDR, 8),
            f("oldstate", set_state::OLDSTATE, 4),
            f("newstate", set_state::NEWSTATE, 4),
            f("sport", set_state::SPORT, 2),
            f("dport", set_state::DPORT, 2),
            f("family", set_state::FAMILY, 2),
            f("protocol", set_state::PROTOCOL, 2),
            f("saddr", set_state::SADDR, 4),
            f("daddr", set_state::DADDR, 4),
            f("saddr_v6", set_state::SADDR_V6, 16),
            f("daddr_v6", set_state::DADDR_V6, 16),
        ],
    },
    Layout {
        program: "sys_exit_accept4",
        category: "syscalls",
        name: "sys_exit_accept4",
        fields: &[f("ret", sys_exit::RET, 8)],
    },
    Layout {
        program: "sys_exit_accept",
        category: "syscalls",
        name: "sys_exit_accept",
        fields: &[f("ret", sys_exit::RET, 8)],
    },
    Layout {
        program: "tcp_send_reset",
        category: "tcp",
        name: "tcp_send_reset",
        fields: &[
            f("skbaddr", send_reset::SKBADDR, 8),
            f("skaddr", send_reset::SKADDR, 8),
            f("saddr", send_reset::SADDR, 28),
            f("daddr", send_reset::DADDR, 28),
        ],
    },
    Layout {
        program: "kfree_skb",
        category: "skb",
        name: "kfree_skb",
        fields: &[
            f("skbaddr", kfree_skb::SKBADDR, 8),
            f("protocol", kfree_skb::PROTOCOL, 2),
            f("reason", kfree_skb::REASON, 4),
        ],
    },
    Layout {
        program: "kfree_skb_rx_sk",
        category: "skb",
        name: "kfree_skb",
        fields: &[
            f("skbaddr", kfree_skb_rx_sk::SKBADDR, 8),
            f("protocol", kfree_skb_rx_sk::PROTOCOL, 2),
            f("reason", kfree_skb_rx_sk::REASON, 4),
        ],
    },
    Layout {
        program: "tcp_retransmit_synack",
        category: "tcp",
        name: "tcp_retransmit_synack",
        fields: &[f("skaddr", synack::SKADDR, 8), f("sport", synack::SPORT, 2)],
    },
];
