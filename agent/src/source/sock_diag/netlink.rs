//! The netlink side of sock_diag: the kernel ABI (include/uapi/linux/{netlink,
//! sock_diag,inet_diag,tcp}.h), the request and its port filter, the socket, and
//! the parser of the replies. Every length is checked; a malformed reply is an
//! `InvalidData` error, never a panic.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use super::{DiagSocket, StateMask};
use crate::model::normalize;
use crate::source::netns::Netns;

// ---------------------------------------------------------------------------------
// Kernel ABI: include/uapi/linux/{netlink,sock_diag,inet_diag,tcp}.h. All integers
// are in host byte order except ports and addresses, which are big-endian.

pub(super) const NLMSG_HDRLEN: usize = 16;
pub(super) const NLMSG_NOOP: u16 = 1;
pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
pub(super) const NLMSG_OVERRUN: u16 = 4;
pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_DUMP: u16 = 0x300;
pub(super) const NLM_F_DUMP_INTR: u16 = 0x10;
pub(super) const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then a sockid.
pub(super) const INET_DIAG_REQ_V2_LEN: usize = 56;
/// `struct inet_diag_msg`: family, state, timer, retrans, a 48-byte sockid, then
/// expires, rqueue, wqueue, uid, inode (u32 each).
pub(super) const INET_DIAG_MSG_LEN: usize = 72;
pub(super) const INET_DIAG_REQ_BYTECODE: u16 = 1;
pub(super) const INET_DIAG_INFO: u16 = 2;
pub(super) const NLA_TYPE_MASK: u16 = 0x3fff;

/// Bytecode op codes (`enum { INET_DIAG_BC_NOP, INET_DIAG_BC_JMP, INET_DIAG_BC_S_GE, … }`).
/// Only the three of Linux 2.6 are used, so the filter works on every kernel.
pub(super) const BC_JMP: u8 = 1;
pub(super) const BC_S_GE: u8 = 2;
pub(super) const BC_S_LE: u8 = 3;
/// The same comparisons of the peer's (destination) port, Linux 2.6's too.
pub(super) const BC_D_GE: u8 = 4;
pub(super) const BC_D_LE: u8 = 5;
/// Bytes of bytecode per port: `S_GE port`, `S_LE port` (two ops each), `JMP`.
pub(super) const BC_PER_PORT: usize = 20;
/// The kernel runs the filter for every socket, one block per port; beyond a few
/// hundred ports filtering in userspace costs no more. (The hard limit is the
/// 16-bit attribute length: 3276 ports.)
pub(super) const MAX_FILTER_PORTS: usize = 256;

/// Offsets in `struct tcp_info`. Each field is read only if the kernel's struct is
/// long enough to hold it.
pub(super) const TCPI_LAST_DATA_SENT: usize = 44;
pub(super) const TCPI_LAST_DATA_RECV: usize = 52;
pub(super) const TCPI_BYTES_ACKED: usize = 120;
pub(super) const TCPI_BYTES_RECEIVED: usize = 128;

/// Large enough for any dump message the kernel builds (it sizes them from the
/// reader's buffer, at most 32 KiB); a truncated read is detected and an error.
pub(super) const RECV_BUF_LEN: usize = 64 * 1024;

/// How often a dump is repeated when the kernel flags it as inconsistent.
pub(super) const DUMP_ATTEMPTS: usize = 3;

/// The netlink socket of one [`tcp_sockets`] call and its receive buffer.
pub(super) struct NetlinkSocket {
    pub(super) fd: OwnedFd,
    /// The sequence number of the last request sent.
    pub(super) seq: u32,
    pub(super) buf: Vec<u8>,
}

impl NetlinkSocket {
    /// A sock_diag socket of namespace `netns`: its dumps list that namespace's sockets.
    pub(super) fn open(netns: &Netns) -> io::Result<Self> {
        let fd = netns
            .socket(libc::AF_NETLINK, libc::SOCK_DGRAM, libc::NETLINK_SOCK_DIAG)
            .map_err(|e| context(e, "opening a NETLINK_SOCK_DIAG socket"))?;
        // A dump the kernel never ends would hang the poller forever; give up instead.
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: `timeout` is a valid timeval that outlives the call, and the length
        // passed is its exact size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(context(
                io::Error::last_os_error(),
                "setting SO_RCVTIMEO on the sock_diag socket",
            ));
        }
        Ok(NetlinkSocket {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    /// Appends the sockets of one family to `out`, repeating the dump if the kernel
    /// says it was interrupted by concurrent changes.
    pub(super) fn dump(
        &mut self,
        family: u8,
        ports: &[u16],
        states: StateMask,
        out: &mut Vec<DiagSocket>,
    ) -> io::Result<()> {
        let req = |seq| request(family, states, ports, seq);
        self.dump_with(req, out, |s| {
            states.contains(s.state) && ports.binary_search(&s.local.port()).is_ok()
        })
    }

    /// [`Self::dump`] of the sockets whose *peer's* port is one of `ports`: this
    /// host's client sockets towards them (client mode).
    pub(super) fn dump_by_peer_port(
        &mut self,
        family: u8,
        ports: &[u16],
        states: StateMask,
        out: &mut Vec<DiagSocket>,
    ) -> io::Result<()> {
        let req = |seq| request_with(family, states, port_filter_of(ports, true), seq);
        self.dump_with(req, out, |s| {
            states.contains(s.state) && ports.binary_search(&s.remote.port()).is_ok()
        })
    }

    fn dump_with(
        &mut self,
        request: impl Fn(u32) -> Vec<u8>,
        out: &mut Vec<DiagSocket>,
        keep: impl Fn(&DiagSocket) -> bool,
    ) -> io::Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            let mut batch = Vec::new();
            self.send(&request(seq))?;
            let interrupted = self.receive(seq, &mut batch)?;
            if !interrupted || attempt >= DUMP_ATTEMPTS {
                out.extend(batch.into_iter().filter(|s| keep(s)));
                return Ok(());
            }
        }
    }

    pub(super) fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain old data, for which all-zero bytes are valid.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: `msg` is valid for reads of `msg.len()` bytes and `kernel` is a
            // valid sockaddr_nl of the length passed; both outlive the call.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&raw const kernel).cast(),
                    size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                return if n as usize == msg.len() {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "sock_diag request sent partially",
                    ))
                };
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(context(err, "sending the sock_diag request"));
            }
        }
    }

    /// Reads replies to request `seq` until NLMSG_DONE. Returns whether the kernel
    /// flagged the dump as interrupted.
    pub(super) fn receive(&mut self, seq: u32, out: &mut Vec<DiagSocket>) -> io::Result<bool> {
        let mut interrupted = false;
        loop {
            let n = recv(&self.fd, &mut self.buf)?;
            let chunk = self.buf.get(..n).ok_or_else(|| {
                invalid(format!("sock_diag reply of {n} bytes overflows the buffer"))
            })?;
            let status = parse_chunk(chunk, seq, out)?;
            interrupted |= status.interrupted;
            if status.done {
                return Ok(interrupted);
            }
        }
    }
}

/// One datagram from the kernel, waiting for it (up to the socket's timeout); an
/// error if it did not fit in `buf`.
pub(super) fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    match recv_with(fd, buf, 0)? {
        Received::Datagram(n) => Ok(n),
        Received::Nothing => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "sock_diag dump: no reply from the kernel",
        )),
        Received::Overrun => Err(context(
            io::Error::from_raw_os_error(libc::ENOBUFS),
            "receiving the sock_diag reply",
        )),
    }
}

/// What one read of the socket found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Received {
    /// A datagram of this many bytes, now at the start of the buffer.
    Datagram(usize),
    /// Nothing queued (with `MSG_DONTWAIT`), or nothing before the timeout.
    Nothing,
    /// ENOBUFS: the receive buffer was full and the kernel dropped replies. Said
    /// once; the replies queued before are still there to read.
    Overrun,
}

/// One datagram the kernel has already queued, without waiting.
pub(super) fn recv_queued(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Received> {
    recv_with(fd, buf, libc::MSG_DONTWAIT)
}

fn recv_with(fd: &OwnedFd, buf: &mut [u8], flags: i32) -> io::Result<Received> {
    loop {
        // SAFETY: sockaddr_nl is plain old data, for which all-zero bytes are valid.
        let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        let mut from_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `from` and
        // `from_len` are valid for writes and describe `from`'s real size. With
        // MSG_TRUNC the kernel still writes at most `buf.len()` bytes and returns
        // the datagram's full length.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC | flags,
                (&raw mut from).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOBUFS) {
                return Ok(Received::Overrun);
            }
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    return Ok(Received::Nothing);
                }
                _ => return Err(context(err, "receiving the sock_diag reply")),
            }
        }
        let n = n as usize;
        if n > buf.len() {
            return Err(invalid(format!(
                "sock_diag reply of {n} bytes truncated to {}",
                buf.len()
            )));
        }
        // Only the kernel (port id 0) answers; ignore anything else.
        if from.nl_pid != 0 {
            continue;
        }
        return Ok(Received::Datagram(n));
    }
}

/// The dump request: `nlmsghdr`, `inet_diag_req_v2`, and a port filter attribute.
pub(super) fn request(family: u8, states: StateMask, ports: &[u16], seq: u32) -> Vec<u8> {
    request_with(family, states, port_filter(ports), seq)
}

/// The dump request with `bytecode` as its filter (none: every socket).
fn request_with(family: u8, states: StateMask, bytecode: Option<Vec<u8>>, seq: u32) -> Vec<u8> {
    let attr_len = bytecode.as_ref().map_or(0, |bc| 4 + bc.len());
    let total = NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN + attr_len;
    let mut msg = Vec::with_capacity(total);
    // nlmsghdr
    msg.extend_from_slice(&(total as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: let the kernel pick
    // inet_diag_req_v2
    msg.push(family);
    msg.push(libc::IPPROTO_TCP as u8);
    msg.push(1 << (INET_DIAG_INFO - 1)); // idiag_ext: ask for tcp_info
    msg.push(0); // pad
    msg.extend_from_slice(&states.bits().to_ne_bytes());
    msg.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: unused by dumps
    // INET_DIAG_REQ_BYTECODE (its length is a multiple of 4: no padding)
    if let Some(bc) = bytecode {
        msg.extend_from_slice(&((4 + bc.len()) as u16).to_ne_bytes());
        msg.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        msg.extend_from_slice(&bc);
    }
    msg
}

/// A bytecode program accepting sockets whose local port is one of `ports`, or
/// `None` for more than [`MAX_FILTER_PORTS`] ports (userspace filters then).
///
/// The kernel runs ops from the start: a true condition advances by `yes` bytes, a
/// false one by `no`; ending exactly at the end accepts, jumping past it rejects.
/// Its verifier also demands that every `no` target lies on the chain of `yes`
/// jumps from the start. Per port p, each block reads:
///
/// ```text
///   S_GE p  yes → S_LE        no → next block (past the end for the last: reject)
///   S_LE p  yes → JMP         no → next block
///   JMP     yes → next block  no → end (accept)        JMP is never "yes"
/// ```
pub(super) fn port_filter(ports: &[u16]) -> Option<Vec<u8>> {
    port_filter_of(ports, false)
}

/// [`port_filter`] of the sockets' local ports, or (`peer`) their peers' ports.
pub(super) fn port_filter_of(ports: &[u16], peer: bool) -> Option<Vec<u8>> {
    let (ge, le) = if peer {
        (BC_D_GE, BC_D_LE)
    } else {
        (BC_S_GE, BC_S_LE)
    };
    if ports.is_empty() || ports.len() > MAX_FILTER_PORTS {
        return None;
    }
    let len = ports.len() * BC_PER_PORT;
    let mut bc = Vec::with_capacity(len);
    let op = |bc: &mut Vec<u8>, code: u8, yes: usize, no: usize| {
        bc.push(code);
        bc.push(yes as u8);
        bc.extend_from_slice(&(no as u16).to_ne_bytes());
    };
    for (i, &port) in ports.iter().enumerate() {
        // Bytes from this block's start to the end of the program.
        let left = len - i * BC_PER_PORT;
        // Where a non-matching port goes: the next block, i.e. past the end when
        // this is the last one (remaining length + 4 is the verifier's limit).
        let next = BC_PER_PORT;
        let miss = if left == BC_PER_PORT { left + 4 } else { next };
        op(&mut bc, ge, 8, miss);
        op(&mut bc, 0, 0, usize::from(port));
        op(&mut bc, le, 8, miss - 8);
        op(&mut bc, 0, 0, usize::from(port));
        op(&mut bc, BC_JMP, 4, left - 16);
    }
    Some(bc)
}

/// What one datagram of a dump said.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ChunkStatus {
    /// NLMSG_DONE was seen: the dump is complete.
    pub(super) done: bool,
    /// Some message carried NLM_F_DUMP_INTR.
    pub(super) interrupted: bool,
}

/// Parses one datagram of netlink messages answering request `seq`, appending the
/// sockets to `out`. Messages of other sequence numbers (stale replies) are skipped;
/// the dump ends with NLMSG_DONE or an NLMSG_ERROR.
pub(super) fn parse_chunk(
    mut buf: &[u8],
    seq: u32,
    out: &mut Vec<DiagSocket>,
) -> io::Result<ChunkStatus> {
    let mut status = ChunkStatus::default();
    while let Some(msg) = next_message(&mut buf)? {
        if msg.seq != seq {
            continue;
        }
        status.interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
        match msg.kind {
            NLMSG_NOOP => {}
            NLMSG_ERROR => {
                let errno = error_code(msg.payload)?;
                if errno != 0 {
                    return Err(context(
                        io::Error::from_raw_os_error(errno),
                        dump_what(errno),
                    ));
                }
                // errno 0 is an acknowledgement, which a dump does not need.
            }
            NLMSG_DONE => {
                // A dump's DONE carries its final status; negative means it failed.
                if let Some(errno) = i32_at(msg.payload, 0).filter(|e| *e < 0) {
                    let errno = errno.saturating_neg();
                    return Err(context(
                        io::Error::from_raw_os_error(errno),
                        dump_what(errno),
                    ));
                }
                status.done = true;
                return Ok(status);
            }
            NLMSG_OVERRUN => return Err(invalid("netlink overrun: data lost".into())),
            SOCK_DIAG_BY_FAMILY => out.push(parse_diag_msg(msg.payload)?),
            other => return Err(invalid(format!("unexpected netlink message type {other}"))),
        }
    }
    Ok(status)
}

/// One netlink message: its header's fields and its payload.
pub(super) struct Message<'a> {
    pub(super) kind: u16,
    pub(super) flags: u16,
    pub(super) seq: u32,
    pub(super) payload: &'a [u8],
}

/// Takes the first message off `buf` (and its padding), checking its length;
/// `None` at the end.
pub(super) fn next_message<'a>(buf: &mut &'a [u8]) -> io::Result<Option<Message<'a>>> {
    if buf.is_empty() {
        return Ok(None);
    }
    let len = u32_at(buf, 0)
        .ok_or_else(|| invalid(format!("netlink header truncated: {} bytes", buf.len())))?
        as usize;
    if len < NLMSG_HDRLEN || len > buf.len() {
        return Err(invalid(format!(
            "netlink message length {len} out of range ({} bytes left)",
            buf.len()
        )));
    }
    let (msg, rest) = buf.split_at(len);
    *buf = rest.get(align4(len) - len..).unwrap_or(&[]);
    Ok(Some(Message {
        kind: u16_at(msg, 4).unwrap_or(0),
        flags: u16_at(msg, 6).unwrap_or(0),
        seq: u32_at(msg, 8).unwrap_or(0),
        payload: &msg[NLMSG_HDRLEN..],
    }))
}

/// The errno of an NLMSG_ERROR payload (`struct nlmsgerr`: the negative errno,
/// then the request's header), as a positive number; 0 is an acknowledgement.
pub(super) fn error_code(payload: &[u8]) -> io::Result<i32> {
    let code =
        i32_at(payload, 0).ok_or_else(|| invalid("NLMSG_ERROR without an error code".into()))?;
    Ok(code.saturating_neg())
}

/// Parses the payload of a SOCK_DIAG_BY_FAMILY message: `inet_diag_msg` + attributes.
pub(super) fn parse_diag_msg(p: &[u8]) -> io::Result<DiagSocket> {
    if p.len() < INET_DIAG_MSG_LEN {
        return Err(invalid(format!(
            "inet_diag_msg truncated: {} bytes",
            p.len()
        )));
    }
    let family = p[0];
    let state = p[1];
    // inet_diag_sockid at 4: sport, dport (big-endian), src[16], dst[16], if (at
    // 40), cookie.
    let sport = u16::from_be_bytes([p[4], p[5]]);
    let dport = u16::from_be_bytes([p[6], p[7]]);
    let ip = |off: usize| -> io::Result<IpAddr> {
        let a: [u8; 16] =
            bytes_at(p, off).ok_or_else(|| invalid("inet_diag_msg address".into()))?;
        match i32::from(family) {
            libc::AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
            libc::AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(a))),
            f => Err(invalid(format!("inet_diag_msg of unexpected family {f}"))),
        }
    };
    let local = normalize(SocketAddr::new(ip(8)?, sport));
    let remote = normalize(SocketAddr::new(ip(24)?, dport));
    let field = |off| u32_at(p, off).ok_or_else(|| invalid("inet_diag_msg field".into()));
    let mut sock = DiagSocket {
        local,
        remote,
        state,
        rqueue: field(56)?,
        wqueue: field(60)?,
        uid: field(64)?,
        inode: u64::from(field(68)?),
        ifindex: field(40)?,
        last_data_recv_ms: None,
        last_data_sent_ms: None,
        bytes_received: None,
        bytes_acked: None,
    };
    if let Some(info) = find_attr(&p[INET_DIAG_MSG_LEN..], INET_DIAG_INFO)? {
        apply_tcp_info(&mut sock, info);
    }
    Ok(sock)
}

/// The payload of the first attribute of type `kind`, checking every attribute's
/// length on the way.
pub(super) fn find_attr(mut attrs: &[u8], kind: u16) -> io::Result<Option<&[u8]>> {
    let mut found = None;
    while !attrs.is_empty() {
        let len = usize::from(
            u16_at(attrs, 0).ok_or_else(|| invalid("attribute header truncated".into()))?,
        );
        let ty = u16_at(attrs, 2).ok_or_else(|| invalid("attribute header truncated".into()))?;
        if len < 4 || len > attrs.len() {
            return Err(invalid(format!(
                "attribute length {len} out of range ({} bytes left)",
                attrs.len()
            )));
        }
        if found.is_none() && ty & NLA_TYPE_MASK == kind {
            found = Some(&attrs[4..len]);
        }
        attrs = attrs.get(align4(len)..).unwrap_or(&[]);
    }
    Ok(found)
}

/// Reads the `tcp_info` fields that `info` is long enough to hold; older kernels
/// send a shorter struct, and the fields they lack stay `None`.
///
/// `tcpi_state` (offset 0) is not used: `idiag_state` carries the same value, read
/// a moment earlier, and the two may differ when the state changes in between.
pub(super) fn apply_tcp_info(sock: &mut DiagSocket, info: &[u8]) {
    sock.last_data_sent_ms = u32_at(info, TCPI_LAST_DATA_SENT);
    sock.last_data_recv_ms = u32_at(info, TCPI_LAST_DATA_RECV);
    sock.bytes_acked = u64_at(info, TCPI_BYTES_ACKED);
    sock.bytes_received = u64_at(info, TCPI_BYTES_RECEIVED);
}

pub(super) const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

pub(super) fn bytes_at<const N: usize>(buf: &[u8], off: usize) -> Option<[u8; N]> {
    buf.get(off..off.checked_add(N)?)?.try_into().ok()
}

pub(super) fn u16_at(buf: &[u8], off: usize) -> Option<u16> {
    bytes_at(buf, off).map(u16::from_ne_bytes)
}

pub(super) fn u32_at(buf: &[u8], off: usize) -> Option<u32> {
    bytes_at(buf, off).map(u32::from_ne_bytes)
}

pub(super) fn i32_at(buf: &[u8], off: usize) -> Option<i32> {
    bytes_at(buf, off).map(i32::from_ne_bytes)
}

pub(super) fn u64_at(buf: &[u8], off: usize) -> Option<u64> {
    bytes_at(buf, off).map(u64::from_ne_bytes)
}

pub(super) fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

pub(super) fn context(err: io::Error, what: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// What a failed dump was, and why when the reason is a module not loaded: the
/// kernel answers ENOENT when no handler serves the family, which Debian's cloud
/// kernels (6.1) build as the `inet_diag` and `tcp_diag` modules.
fn dump_what(errno: i32) -> &'static str {
    if errno == libc::ENOENT {
        "sock_diag dump (no TCP diag handler: load the inet_diag and tcp_diag modules, `modprobe tcp_diag`)"
    } else {
        "sock_diag dump"
    }
}
