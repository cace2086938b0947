//! Field offsets of kernel structures, from the running kernel's BTF.
//!
//! The programs are not CO-RE (aya-ebpf has no field relocations), so the few
//! `struct tcp_sock` fields read at a connection's close are located here, in
//! `/sys/kernel/btf/vmlinux`, and handed to the programs as a global before they
//! load. Only what that needs is parsed: the type section's records are walked to
//! find a struct by name, and its members (through anonymous structs and unions)
//! to find a field's byte offset and size. Every length is checked; a malformed
//! blob is an error, never a panic.

use std::fmt;

use connwatch_common::{NetnsOffsets, SockOffsets, TcpSockOffsets};

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

/// BTF kinds (`BTF_KIND_*` in `include/uapi/linux/btf.h`).
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

#[derive(Debug, PartialEq, Eq)]
pub enum BtfError {
    Malformed(&'static str),
    NoStruct(String),
    NoField(String, String),
    /// The field exists but is not a plain integer of the expected size.
    WrongField(String, String),
}

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BtfError::Malformed(what) => write!(f, "malformed BTF: {what}"),
            BtfError::NoStruct(s) => write!(f, "BTF has no struct {s}"),
            BtfError::NoField(s, m) => write!(f, "struct {s} has no field {m} in BTF"),
            BtfError::WrongField(s, m) => {
                write!(
                    f,
                    "struct {s} field {m} is not an integer of the expected size"
                )
            }
        }
    }
}

impl std::error::Error for BtfError {}

/// One type record: where its fixed part starts in the type section.
#[derive(Clone, Copy)]
struct Record {
    at: usize,
}

/// A parsed BTF blob: the type and string sections and an index of type records
/// (type id `n` is `records[n - 1]`).
pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    records: Vec<Record>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    /// Indexes a little-endian BTF blob (the only byte order our targets use).
    pub fn parse(blob: &'a [u8]) -> Result<Btf<'a>, BtfError> {
        let bad = BtfError::Malformed;
        if u16_at(blob, 0) != Some(MAGIC) {
            return Err(bad("bad magic (not little-endian BTF)"));
        }
        let field = |at| {
            u32_at(blob, at)
                .map(|v| v as usize)
                .ok_or(bad("short header"))
        };
        let hdr_len = field(4)?;
        let (type_off, type_len) = (field(8)?, field(12)?);
        let (str_off, str_len) = (field(16)?, field(20)?);
        if hdr_len < HEADER_LEN {
            return Err(bad("header too short"));
        }
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            blob.get(start..start.checked_add(len)?)
        };
        let types = section(type_off, type_len).ok_or(bad("type section out of bounds"))?;
        let strings = section(str_off, str_len).ok_or(bad("string section out of bounds"))?;
        let mut records = Vec::new();
        let mut at = 0;
        while at < types.len() {
            let info = u32_at(types, at + 4).ok_or(bad("truncated type record"))?;
            let vlen = (info & 0xffff) as usize;
            let trailing = match (info >> 24) & 0x1f {
                kind::INT | kind::VAR | kind::DECL_TAG => 4,
                kind::PTR
                | kind::FWD
                | kind::TYPEDEF
                | kind::VOLATILE
                | kind::CONST
                | kind::RESTRICT
                | kind::FUNC
                | kind::FLOAT
                | kind::TYPE_TAG => 0,
                kind::ARRAY => 12,
                kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * vlen,
                kind::ENUM | kind::FUNC_PROTO => 8 * vlen,
                _ => return Err(bad("unknown type kind")),
            };
            records.push(Record { at });
            at += 12 + trailing;
        }
        if at != types.len() {
            return Err(bad("truncated type record"));
        }
        Ok(Btf {
            types,
            strings,
            records,
        })
    }

    fn name(&self, offset: u32) -> Option<&'a [u8]> {
        let rest = self.strings.get(offset as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..end])
    }

    fn record(&self, id: u32) -> Option<Record> {
        self.records.get((id as usize).checked_sub(1)?).copied()
    }

    /// (name offset, info, size-or-type) of type `id`.
    fn head(&self, id: u32) -> Option<(u32, u32, u32)> {
        let at = self.record(id)?.at;
        Some((
            u32_at(self.types, at)?,
            u32_at(self.types, at + 4)?,
            u32_at(self.types, at + 8)?,
        ))
    }

    /// The id of the struct named `name`, skipping forward declarations.
    fn struct_id(&self, name: &str) -> Option<u32> {
        (1..=self.records.len() as u32).find(|&id| {
            self.head(id).is_some_and(|(name_off, info, _)| {
                (info >> 24) & 0x1f == kind::STRUCT && self.name(name_off) == Some(name.as_bytes())
            })
        })
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let (_, info, next) = self.head(id)?;
            match (info >> 24) & 0x1f {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = next
                }
                _ => return Some(id),
            }
        }
        None
    }

    /// Bit offset and type of member `field` of struct/union `id`, looking through
    /// anonymous struct and union members.
    fn member(&self, id: u32, field: &str, depth: u32) -> Option<(u64, u32)> {
        if depth > 8 {
            return None;
        }
        let (_, info, _) = self.head(id)?;
        let kind = (info >> 24) & 0x1f;
        if kind != kind::STRUCT && kind != kind::UNION {
            return None;
        }
        let kind_flag = info >> 31 == 1;
        let at = self.record(id)?.at + 12;
        for i in 0..(info & 0xffff) as usize {
            let m = at + 12 * i;
            let (name_off, ty, raw) = (
                u32_at(self.types, m)?,
                u32_at(self.types, m + 4)?,
                u32_at(self.types, m + 8)?,
            );
            // With kind_flag the low 24 bits are the offset, the high 8 a bitfield size.
            let (bit_offset, bitfield) = if kind_flag {
                (raw & 0x00ff_ffff, raw >> 24)
            } else {
                (raw, 0)
            };
            if bitfield != 0 {
                continue;
            }
            if name_off == 0 {
                if let Some((inner, found)) = self
                    .resolve(ty)
                    .and_then(|inner| self.member(inner, field, depth + 1))
                {
                    return Some((bit_offset as u64 + inner, found));
                }
            } else if self.name(name_off) == Some(field.as_bytes()) {
                return Some((bit_offset as u64, ty));
            }
        }
        None
    }

    /// Byte offset of `strukt.field`, which must be an integer of `size` bytes.
    pub fn field_offset(&self, strukt: &str, field: &str, size: u32) -> Result<u32, BtfError> {
        self.path_offset(strukt, &[field], Leaf::Int(size))
    }

    /// Byte offset of `strukt.a.b.c` (`path` = `["a", "b", "c"]`): every member but
    /// the last is a struct or union embedded in its parent (not a pointer), and the
    /// last is `leaf`.
    pub fn path_offset(&self, strukt: &str, path: &[&str], leaf: Leaf) -> Result<u32, BtfError> {
        let dotted = path.join(".");
        let wrong = || BtfError::WrongField(strukt.to_owned(), dotted.clone());
        let mut id = self
            .struct_id(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        let mut bits = 0u64;
        for (i, field) in path.iter().enumerate() {
            let (at, ty) = self
                .member(id, field, 0)
                .ok_or_else(|| BtfError::NoField(strukt.to_owned(), dotted.clone()))?;
            bits += at;
            id = self.resolve(ty).ok_or_else(wrong)?;
            if i + 1 < path.len() {
                let (_, info, _) = self.head(id).ok_or_else(wrong)?;
                let k = (info >> 24) & 0x1f;
                if k != kind::STRUCT && k != kind::UNION {
                    return Err(wrong());
                }
            }
        }
        let fits = match (self.head(id), leaf) {
            (Some((_, info, size)), Leaf::Int(want)) => {
                (info >> 24) & 0x1f == kind::INT && size == want
            }
            (Some((_, info, _)), Leaf::Ptr) => (info >> 24) & 0x1f == kind::PTR,
            (Some((_, info, size)), Leaf::Struct(want)) => {
                let k = (info >> 24) & 0x1f;
                (k == kind::STRUCT || k == kind::UNION) && size == want
            }
            (None, _) => false,
        };
        if !fits || !bits.is_multiple_of(8) {
            return Err(wrong());
        }
        u32::try_from(bits / 8).map_err(|_| wrong())
    }
}

/// What the last member of a [`Btf::path_offset`] path must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// An integer of this many bytes.
    Int(u32),
    /// A pointer (8 bytes on our targets).
    Ptr,
    /// A struct or union of this many bytes (an IPv6 address).
    Struct(u32),
}

/// The way from a socket, and from a received packet, to its network namespace's
/// inode number, from a BTF blob (see [`NetnsOffsets`]).
pub fn netns_offsets(blob: &[u8]) -> Result<NetnsOffsets, BtfError> {
    let btf = Btf::parse(blob)?;
    Ok(NetnsOffsets {
        sock_net: btf.path_offset("sock", &["__sk_common", "skc_net", "net"], Leaf::Ptr)?,
        net_inum: btf.path_offset("net", &["ns", "inum"], Leaf::Int(4))?,
        skb_dev: btf.path_offset("sk_buff", &["dev"], Leaf::Ptr)?,
        dev_net: btf.path_offset("net_device", &["nd_net", "net"], Leaf::Ptr)?,
    })
}

/// Where a packet's buffer and its network and transport headers are in
/// `struct sk_buff` (`head`, `network_header`, `transport_header`), from a BTF blob.
pub fn skb_header_offsets(blob: &[u8]) -> Result<(u32, u32, u32), BtfError> {
    let btf = Btf::parse(blob)?;
    Ok((
        btf.path_offset("sk_buff", &["head"], Leaf::Ptr)?,
        btf.field_offset("sk_buff", "network_header", 2)?,
        btf.field_offset("sk_buff", "transport_header", 2)?,
    ))
}

/// Offset of `int sk_err` in `struct sock` (why a connect failed), from a BTF blob.
pub fn sk_err_offset(blob: &[u8]) -> Result<u32, BtfError> {
    Btf::parse(blob)?.field_offset("sock", "sk_err", 4)
}

/// Where a socket's ports, family, protocol and addresses are in `struct sock`,
/// from a BTF blob (see [`SockOffsets`]).
pub fn sock_offsets(blob: &[u8]) -> Result<SockOffsets, BtfError> {
    let btf = Btf::parse(blob)?;
    let common = |field, leaf| btf.path_offset("sock", &["__sk_common", field], leaf);
    Ok(SockOffsets {
        num: common("skc_num", Leaf::Int(2))?,
        dport: common("skc_dport", Leaf::Int(2))?,
        family: common("skc_family", Leaf::Int(2))?,
        protocol: btf.field_offset("sock", "sk_protocol", 2)?,
        rcv_saddr: common("skc_rcv_saddr", Leaf::Int(4))?,
        daddr: common("skc_daddr", Leaf::Int(4))?,
        v6_rcv_saddr: common("skc_v6_rcv_saddr", Leaf::Struct(16))?,
        v6_daddr: common("skc_v6_daddr", Leaf::Struct(16))?,
        inet_sport: btf.field_offset("inet_sock", "inet_sport", 2)?,
    })
}

/// The `struct tcp_sock` fields the close record reads, from a BTF blob.
pub fn tcp_sock_offsets(blob: &[u8]) -> Result<TcpSockOffsets, BtfError> {
    let btf = Btf::parse(blob)?;
    let at = |field, size| btf.field_offset("tcp_sock", field, size);
    Ok(TcpSockOffsets {
        bytes_received: at("bytes_received", 8)?,
        bytes_acked: at("bytes_acked", 8)?,
        rcv_nxt: at("rcv_nxt", 4)?,
        copied_seq: at("copied_seq", 4)?,
        write_seq: at("write_seq", 4)?,
        snd_una: at("snd_una", 4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob from type records (each: name, info, size/type, trailing words).
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
            }
        }
        fn string(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let at = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            at
        }
        fn record(
            &mut self,
            name: &str,
            kind: u32,
            vlen: u32,
            flag: bool,
            size: u32,
            tail: &[u32],
        ) {
            let name = self.string(name);
            let info = (kind << 24) | vlen | if flag { 1 << 31 } else { 0 };
            for w in [name, info, size].iter().chain(tail) {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }
        fn int(&mut self, name: &str, bytes: u32) {
            self.record(name, kind::INT, 0, false, bytes, &[bytes * 8]);
        }
        /// Members as (name, type, bit offset).
        fn strukt(&mut self, name: &str, kind: u32, size: u32, members: &[(&str, u32, u32)]) {
            let mut tail = Vec::new();
            for (n, ty, off) in members {
                tail.extend([self.string(n), *ty, *off]);
            }
            self.record(name, kind, members.len() as u32, false, size, &tail);
        }
        fn blob(&self) -> Vec<u8> {
            let mut b = Vec::new();
            b.extend_from_slice(&MAGIC.to_le_bytes());
            b.extend_from_slice(&[1, 0]);
            for w in [
                HEADER_LEN as u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            b.extend_from_slice(&self.types);
            b.extend_from_slice(&self.strings);
            b
        }
    }

    /// A miniature tcp_sock: id 1 u64, 2 u32, 3 typedef u32, 4 anonymous union,
    /// 5 tcp_sock.
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        b.int("long long unsigned int", 8); // 1
        b.int("unsigned int", 4); // 2
        b.record("u32", kind::TYPEDEF, 0, false, 2, &[]); // 3
        b.strukt("", kind::UNION, 4, &[("write_seq", 3, 0), ("alias", 2, 0)]); // 4
        b.strukt(
            "tcp_sock",
            kind::STRUCT,
            64,
            &[
                ("bytes_received", 1, 8 * 8),
                ("bytes_acked", 1, 16 * 8),
                ("rcv_nxt", 3, 24 * 8),
                ("copied_seq", 2, 28 * 8),
                ("", 4, 32 * 8),
                ("snd_una", 3, 36 * 8),
                ("narrow", 2, 40 * 8 + 4),
            ],
        ); // 5
        b.blob()
    }

    #[test]
    fn finds_fields_through_typedefs_and_anonymous_members() {
        let offsets = tcp_sock_offsets(&sample()).unwrap();
        assert_eq!(
            offsets,
            TcpSockOffsets {
                bytes_received: 8,
                bytes_acked: 16,
                rcv_nxt: 24,
                copied_seq: 28,
                write_seq: 32,
                snd_una: 36,
            }
        );
    }

    #[test]
    fn wrong_sizes_missing_fields_and_unaligned_offsets_are_errors() {
        let blob = sample();
        let btf = Btf::parse(&blob).unwrap();
        assert_eq!(
            btf.field_offset("tcp_sock", "rcv_nxt", 8),
            Err(BtfError::WrongField("tcp_sock".into(), "rcv_nxt".into()))
        );
        assert_eq!(
            btf.field_offset("tcp_sock", "nope", 4),
            Err(BtfError::NoField("tcp_sock".into(), "nope".into()))
        );
        assert!(matches!(
            btf.field_offset("tcp_sock", "narrow", 4),
            Err(BtfError::WrongField(..))
        ));
        assert_eq!(
            btf.field_offset("udp_sock", "x", 4),
            Err(BtfError::NoStruct("udp_sock".into()))
        );
    }

    #[test]
    fn damaged_blobs_are_errors_not_panics() {
        let blob = sample();
        assert!(matches!(
            Btf::parse(&blob[..10]),
            Err(BtfError::Malformed(_))
        ));
        for cut in [HEADER_LEN + 5, blob.len() - 3] {
            assert!(tcp_sock_offsets(&blob[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong_magic = blob.clone();
        wrong_magic[0] = 0;
        assert!(Btf::parse(&wrong_magic).is_err());
        // Every single-byte corruption parses or fails cleanly.
        for i in 0..blob.len() {
            let mut b = blob.clone();
            b[i] ^= 0xff;
            let _ = tcp_sock_offsets(&b);
        }
    }

    #[test]
    fn nested_paths_end_in_an_integer_or_a_pointer() {
        let mut b = Builder::new();
        b.int("unsigned int", 4); // 1
        b.record("", kind::PTR, 0, false, 4, &[]); // 2: a pointer to id 4
        b.strukt(
            "ns_common",
            kind::STRUCT,
            16,
            &[("count", 1, 0), ("inum", 1, 64)],
        ); // 3
        b.strukt("net", kind::STRUCT, 64, &[("pad", 1, 0), ("ns", 3, 32 * 8)]); // 4
        b.strukt("", kind::STRUCT, 8, &[("net", 2, 0)]); // 5: possible_net_t
        b.record("possible_net_t", kind::TYPEDEF, 0, false, 5, &[]); // 6
        b.strukt("sock_common", kind::STRUCT, 64, &[("skc_net", 6, 48 * 8)]); // 7
        b.strukt("sock", kind::STRUCT, 128, &[("__sk_common", 7, 0)]); // 8
        let blob = b.blob();
        let btf = Btf::parse(&blob).unwrap();
        let path = ["__sk_common", "skc_net", "net"];
        assert_eq!(btf.path_offset("sock", &path, Leaf::Ptr), Ok(48));
        assert_eq!(
            btf.path_offset("net", &["ns", "inum"], Leaf::Int(4)),
            Ok(40)
        );
        // A pointer is not an integer, an integer not a pointer, and a pointer is
        // not followed as if the struct were embedded.
        let wrong = |s: &str, p: &str| Err(BtfError::WrongField(s.into(), p.into()));
        assert_eq!(
            btf.path_offset("sock", &path, Leaf::Int(8)),
            wrong("sock", "__sk_common.skc_net.net")
        );
        assert_eq!(
            btf.path_offset("net", &["ns", "inum"], Leaf::Ptr),
            wrong("net", "ns.inum")
        );
        assert_eq!(
            btf.path_offset("sock_common", &["skc_net", "net", "ns"], Leaf::Int(4)),
            wrong("sock_common", "skc_net.net.ns")
        );
        assert_eq!(
            btf.path_offset("net", &["ns", "level"], Leaf::Int(4)),
            Err(BtfError::NoField("net".into(), "ns.level".into()))
        );
        // A struct leaf must have the size asked for.
        assert_eq!(
            btf.path_offset("sock", &["__sk_common"], Leaf::Struct(64)),
            Ok(0)
        );
        assert_eq!(
            btf.path_offset("sock", &["__sk_common"], Leaf::Struct(16)),
            wrong("sock", "__sk_common")
        );
        assert_eq!(
            btf.path_offset("net", &["pad"], Leaf::Struct(4)),
            wrong("net", "pad")
        );
    }

    #[test]
    fn the_running_kernel_says_where_a_sockets_tuple_is() {
        let blob = std::fs::read(VMLINUX_BTF).expect("the kernel publishes its BTF");
        let o = sock_offsets(&blob).unwrap();
        // struct sock_common opens with the address pair, then the hash, the port
        // pair (remote port first) and the family; the IPv6 addresses follow the
        // bound-node and namespace fields. The same on every 64-bit kernel since 4.x.
        assert_eq!(
            (o.daddr, o.rcv_saddr, o.dport, o.num, o.family),
            (0, 4, 12, 14, 16),
            "{o:?}"
        );
        assert_eq!((o.v6_daddr, o.v6_rcv_saddr), (56, 72), "{o:?}");
        // inet_sock embeds struct sock first: its own port is past it.
        assert!(
            o.inet_sport > o.protocol && o.inet_sport.is_multiple_of(2),
            "{o:?}"
        );
        // sk_protocol is struct sock's own (past sock_common), a u16 of its own.
        assert!((136..1024).contains(&o.protocol), "{o:?}");
        assert!(o.protocol.is_multiple_of(2));
    }

    #[test]
    fn the_running_kernel_leads_from_sockets_and_packets_to_their_namespace() {
        let blob = std::fs::read(VMLINUX_BTF).expect("the kernel publishes its BTF");
        let o = netns_offsets(&blob).unwrap();
        // skc_net sits in the first cache line of struct sock, dev early in sk_buff.
        assert!(o.sock_net > 0 && o.sock_net < 64, "{o:?}");
        assert!(o.skb_dev > 0 && o.skb_dev < 64, "{o:?}");
        assert!(o.net_inum > 0 && o.dev_net > 0, "{o:?}");
        assert_eq!(o.sock_net % 8, 0);
        assert_eq!(o.dev_net % 8, 0);
    }

    #[test]
    fn the_running_kernel_says_where_a_packets_headers_are() {
        let blob = std::fs::read(VMLINUX_BTF).expect("the kernel publishes its BTF");
        let (head, network, transport) = skb_header_offsets(&blob).unwrap();
        // The three sit together near the end of struct sk_buff's fixed part, head
        // 8-aligned, the header offsets 2 bytes each, network before transport.
        assert_eq!(head % 8, 0);
        assert!(head > 100 && head < 512, "{head}");
        assert!(transport > 100 && transport < 512, "{transport}");
        assert_eq!(network, transport + 2);
    }

    #[test]
    fn the_running_kernel_says_where_a_sockets_error_is() {
        let blob = std::fs::read(VMLINUX_BTF).expect("the kernel publishes its BTF");
        let at = sk_err_offset(&blob).unwrap();
        // Past struct sock_common (at least 136 bytes), inside struct sock, an int.
        assert!((136..1024).contains(&at), "{at}");
        assert_eq!(at % 4, 0);
        // tcp_sock embeds struct sock first: not one of its own fields.
        assert!(tcp_sock_offsets(&blob).unwrap().bytes_received > at);
    }

    /// The kernels we support publish BTF (a world-readable file).
    #[test]
    fn the_running_kernel_has_the_fields() {
        let blob = std::fs::read(VMLINUX_BTF).expect("the kernel publishes its BTF");
        let o = tcp_sock_offsets(&blob).unwrap();
        // Sequence numbers and counters sit well past the embedded struct sock.
        for v in [
            o.bytes_received,
            o.bytes_acked,
            o.rcv_nxt,
            o.copied_seq,
            o.write_seq,
            o.snd_una,
        ] {
            assert!(v > 512 && v < 4096, "{o:?}");
        }
        assert_eq!(o.bytes_received % 8, 0);
    }
}
