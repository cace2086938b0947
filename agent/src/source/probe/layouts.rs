//! What the loader hands the programs from the running kernel's BTF (and a
//! tracepoint's format file): each layout, or a warning said once and the
//! feature it costs when BTF does not have it.

use connwatch_common::{NetnsOffsets, PacketOffsets, TcpSockOffsets};

use super::btf::{VMLINUX_BTF, netns_offsets, sk_err_offset, skb_header_offsets, tcp_sock_offsets};

pub(super) type Btf = Result<Vec<u8>, String>;

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
    let found = btf
        .as_ref()
        .map_err(String::clone)
        .and_then(|blob| tcp_sock_offsets(blob).map_err(|e| e.to_string()));
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

/// How the programs find a socket's network namespace. Without it every record
/// carries netns 0: connections of all namespaces on a port are one instance,
/// which is said once; watching only some namespaces is then impossible.
pub(super) fn netns_layout(btf: &Btf) -> Option<NetnsOffsets> {
    let found = btf
        .as_ref()
        .map_err(String::clone)
        .and_then(|blob| netns_offsets(blob).map_err(|e| e.to_string()));
    match found {
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
    let found = btf
        .as_ref()
        .map_err(String::clone)
        .and_then(|blob| sk_err_offset(blob).map_err(|e| e.to_string()));
    match found {
        Ok(offset) => offset,
        Err(e) => {
            log::warn!(
                "cannot locate struct sock's sk_err ({VMLINUX_BTF}: {e}); why a connect failed (refused, timed out, abandoned) is unknown"
            );
            0
        }
    }
}
