//! What the kernel programs can see on the kernel they run on (`probe`): its
//! release, and for each source of facts whether this kernel offers it as the
//! programs read it. A fact whose source is missing is reported as unknown, never
//! as 0; this says which ones and why a reader should not expect them.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The kernel release (`uname -r`) the programs ran on.
    pub kernel: Option<String>,
    pub features: Features,
}

/// Each source of facts, `true` when it is attached (or found) on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    /// Connections opened and closed (`sock:inet_sock_set_state`). Without it
    /// connwatch does not start: always `true` in a report.
    pub connections: bool,
    /// Byte counts at close (`struct tcp_sock` in BTF): rejections told from
    /// ordinary closes.
    pub byte_counts: bool,
    /// Each socket's network namespace (BTF): instances told apart.
    pub netns: bool,
    /// Failed accepts by errno (`syscalls:sys_exit_accept4`, `sys_exit_accept`).
    pub accept_errors: bool,
    /// Connections refused because nothing listened (`tcp:tcp_send_reset`,
    /// resets sent without a socket; else `skb:kfree_skb`, drops with reason
    /// NO_SOCKET).
    pub refusals: bool,
    /// SYN-ACK retransmits (`tcp:tcp_retransmit_synack`).
    pub synack_retransmits: bool,
}

impl Default for Features {
    fn default() -> Self {
        Features::ALL
    }
}

impl ProbeReport {
    /// "kernel 6.1.0-28: refusals, synack_retransmits not seen", or `None` when
    /// every source is there.
    pub fn unseen_line(&self) -> Option<String> {
        let missing = self.features.missing();
        if missing.is_empty() {
            return None;
        }
        let kernel = self.kernel.as_deref().unwrap_or("unknown");
        Some(format!(
            "not seen on kernel {kernel}: {} (reported as unknown)",
            missing.join(", ")
        ))
    }
}

impl Features {
    /// Every source present (a kernel like the ones connwatch is built on).
    pub const ALL: Features = Features {
        connections: true,
        byte_counts: true,
        netns: true,
        accept_errors: true,
        refusals: true,
        synack_retransmits: true,
    };

    /// Each source by its JSON name, in field order, and whether it is there.
    pub fn each(&self) -> [(&'static str, bool); 6] {
        [
            ("connections", self.connections),
            ("byte_counts", self.byte_counts),
            ("netns", self.netns),
            ("accept_errors", self.accept_errors),
            ("refusals", self.refusals),
            ("synack_retransmits", self.synack_retransmits),
        ]
    }

    /// The names of the sources missing, in field order.
    pub fn missing(&self) -> Vec<&'static str> {
        self.each()
            .into_iter()
            .filter(|(_, on)| !on)
            .map(|(name, _)| name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_sources_are_named_with_the_kernel() {
        let all = ProbeReport {
            kernel: Some("6.18.0".into()),
            features: Features::ALL,
        };
        assert_eq!(all.unseen_line(), None);
        let old = ProbeReport {
            kernel: Some("6.1.0-28-cloud-amd64".into()),
            features: Features {
                refusals: false,
                synack_retransmits: false,
                ..Features::ALL
            },
        };
        assert_eq!(
            old.unseen_line().as_deref(),
            Some(
                "not seen on kernel 6.1.0-28-cloud-amd64: refusals, synack_retransmits (reported as unknown)"
            )
        );
        assert_eq!(
            serde_json::to_string(&old.features).unwrap(),
            r#"{"connections":true,"byte_counts":true,"netns":true,"accept_errors":true,"refusals":false,"synack_retransmits":false}"#
        );
    }
}
