//! What the loader hands the programs from the running kernel's BTF (and a
//! tracepoint's format file): each layout, or a warning said once and the
//! feature it costs when BTF does not have it.

use connwatch_common::{NetnsOffsets, PacketOffsets, SockOffsets, TcpSockOffsets};

use super::btf::{
    BtfError, VMLINUX_BTF, netns_offsets, sk_err_offset, skb_header_offsets, sock_offsets,
    tcp_sock_offsets,
};

pub(super) type Btf = Result<Vec<u8>, String>;

/// What `find` reads from the BTF blob, or why it could not (no blob, or the
/// blob does not have it).
fn locate<T>(btf: &Btf, find: impl FnOnce(&[u8]) -> Result<T, BtfError>) -> Result<T, String> {
    btf.as_ref()
        .map_err(String::clone)
        .and_then(|blob| find(blob).map_err(|e| e.to_string()))
}

/// What the `kfree_skb` refusal programs need: `struct sk_buff`'s header offsets
/// from BTF and this kernel's number for the drop reason `NO_SOCKET` from the
/// tracepoint's format file. `None` (those programs not attached) when either
/// is unknown, or the kernel's drop records carry no reason (before 5.17).
pub(super) fn packet_offsets(tracefs: &std::path::Path, btf: &Btf) -> Option<PacketOffsets> {
    let (head, network_header, transport_header) = btf
        .as_ref()
        .ok()
        .and_then(|blob| skb_header_offsets(blob).ok())?;
    let text = super::abi::format_text(tracefs, "skb", "kfree_skb").ok()?;
    let no_socket_reason = super::abi::symbol_value(&text, "NO_SOCKET")?;
    Some(PacketOffsets {
        head,
        network_header,
        transport_header,
        no_socket_reason,
    })
}

/// Where this kernel keeps the byte counters the close record reads. Without BTF
/// the programs still run, and closes carry no byte counts (rejections cannot be
/// told from closes then): said once, not fatal.
pub(super) fn tcp_offsets(btf: &Btf) -> TcpSockOffsets {
    match locate(btf, tcp_sock_offsets) {
        Ok(offsets) => offsets,
        Err(e) => {
            log::warn!(
                "cannot locate struct tcp_sock's byte counters ({VMLINUX_BTF}: {e}); closes will carry no byte counts and rejections cannot be told apart"
            );
            TcpSockOffsets::default()
        }
    }
}

/// How the programs find a socket's network namespace. Without it every record
/// carries netns 0: connections of all namespaces on a port are one instance,
/// which is said once; watching only some namespaces is then impossible.
pub(super) fn netns_layout(btf: &Btf) -> Option<NetnsOffsets> {
    match locate(btf, netns_offsets) {
        Ok(offsets) => Some(offsets),
        Err(e) => {
            log::warn!(
                "cannot locate a socket's network namespace ({VMLINUX_BTF}: {e}); connections of every namespace on a watched port are counted as one instance"
            );
            None
        }
    }
}

/// Where a socket's error is: why a connect failed (refused, timed out, abandoned).
/// Without it failed connects carry no cause (reported as unknown): said once.
pub(super) fn sk_err_layout(btf: &Btf) -> u32 {
    match locate(btf, sk_err_offset) {
        Ok(offset) => offset,
        Err(e) => {
            log::warn!(
                "cannot locate struct sock's sk_err ({VMLINUX_BTF}: {e}); why a connect failed (refused, timed out, abandoned) is unknown"
            );
            0
        }
    }
}

/// Where a socket's ports, family, protocol and addresses are, for the BTF version
/// of the state-change program. Without them the tracepoint version runs, which
/// reads them from its record and costs more per run: said once, at info level.
pub(super) fn sock_layout(btf: &Btf) -> Option<SockOffsets> {
    match locate(btf, sock_offsets) {
        Ok(offsets) => Some(offsets),
        Err(e) => {
            log::info!(
                "cannot locate a socket's ports and addresses ({VMLINUX_BTF}: {e}); connections are read from the tracepoint's record instead"
            );
            None
        }
    }
}
