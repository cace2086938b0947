//! [`parse_info`]: a pure, tolerant parser of INFO text.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::model::InfoFields;
use crate::model::normalize;

/// The reply was not INFO text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoError {
    /// The first bytes of the text, for the log.
    pub start: String,
}

impl fmt::Display for InfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reply is not INFO text (no key:value line; starts with {:?})",
            self.start
        )
    }
}

impl std::error::Error for InfoError {}

/// Parses INFO text (one or several sections, CRLF or LF). Unknown keys are ignored;
/// a value that does not parse leaves its field `None`. Fails only when there is
/// no `key:value` line at all.
pub fn parse_info(text: &str) -> Result<InfoFields, InfoError> {
    let mut f = InfoFields::default();
    let mut lines = 0usize;
    let mut redis_version = None;
    let mut valkey_version = None;
    let mut server_name = None;
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            continue;
        }
        lines += 1;
        let value = value.trim();
        let text = || (!value.is_empty()).then(|| value.to_string());
        let num = || value.parse::<u64>().ok();
        match key {
            "redis_version" => redis_version = text(),
            "valkey_version" => valkey_version = text(),
            "server_name" => server_name = text(),
            "process_id" => f.process_id = value.parse().ok(),
            "tcp_port" => f.tcp_port = value.parse().ok(),
            "role" => f.role = text(),
            "connected_clients" => f.connected_clients = num(),
            "blocked_clients" => f.blocked_clients = num(),
            "maxclients" => f.maxclients = num(),
            "cluster_connections" => f.cluster_connections = num(),
            "connected_slaves" => f.connected_slaves = num(),
            "rejected_connections" => f.rejected_connections = num(),
            "total_connections_received" => f.total_connections_received = num(),
            "mem_clients_normal" => f.mem_clients_normal = num(),
            "client_output_buffer_limit_disconnections" => {
                f.client_output_buffer_limit_disconnections = num()
            }
            "master_link_status" => {
                f.master_link_up = match value {
                    "up" => Some(true),
                    "down" => Some(false),
                    _ => None,
                }
            }
            "cluster_enabled" => {
                f.cluster_enabled = match value {
                    "0" => Some(false),
                    "1" => Some(true),
                    _ => None,
                }
            }
            _ => {
                if let Some(n) = key.strip_prefix("slave")
                    && !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && let Some(addr) = parse_replica(value)
                {
                    f.replicas.push(addr);
                }
            }
        }
    }
    if lines == 0 {
        return Err(InfoError {
            start: text.chars().take(40).collect(),
        });
    }
    f.server = server_name.or_else(|| {
        if valkey_version.is_some() {
            Some("valkey".to_string())
        } else {
            redis_version.as_ref().map(|_| "redis".to_string())
        }
    });
    f.version = valkey_version.or(redis_version);
    Ok(f)
}

/// `ip=10.0.0.2,port=6380,state=online,offset=…,lag=0` → 10.0.0.2:6380.
fn parse_replica(value: &str) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for part in value.split(',') {
        match part.split_once('=') {
            Some(("ip", v)) => ip = v.parse::<IpAddr>().ok(),
            Some(("port", v)) => port = v.parse::<u16>().ok(),
            _ => {}
        }
    }
    Some(normalize(SocketAddr::new(ip?, port?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RedisSnapshot;

    const INFO_REDIS_62: &str = "# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone\r\n\
        os:Linux 6.1.0 x86_64\r\nprocess_id:4242\r\ntcp_port:6379\r\nuptime_in_seconds:99\r\n\
        \r\n# Clients\r\nconnected_clients:17\r\ncluster_connections:oops\r\n\
        client_recent_max_input_buffer:16\r\nblocked_clients:2\r\ntracking_clients:0\r\n\
        \r\n# Stats\r\ntotal_connections_received:1234\r\ntotal_commands_processed:99999\r\n\
        rejected_connections:7\r\n\r\n# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
        slave0:ip=10.0.0.5,port=6380,state=online,offset=123,lag=0\r\n\
        slave1:ip=::1,port=6381,state=wait_bgsave,offset=0,lag=1\r\n\
        master_failover_state:no-failover\r\nmaster_repl_offset:123\r\n\
        \r\n# Cluster\r\ncluster_enabled:0\r\n";

    #[test]
    fn info_redis_6_2() {
        let info = parse_info(INFO_REDIS_62).unwrap();
        assert_eq!(
            info,
            InfoFields {
                version: Some("6.2.14".into()),
                server: Some("redis".into()),
                process_id: Some(4242),
                tcp_port: Some(6379),
                role: Some("master".into()),
                connected_clients: Some(17),
                blocked_clients: Some(2),
                // Redis 6.2 has no maxclients in INFO; the malformed value is None.
                maxclients: None,
                cluster_connections: None,
                connected_slaves: Some(2),
                rejected_connections: Some(7),
                total_connections_received: Some(1234),
                mem_clients_normal: None,
                client_output_buffer_limit_disconnections: None,
                cluster_enabled: Some(false),
                master_link_up: None,
                replicas: vec![
                    "10.0.0.5:6380".parse().unwrap(),
                    "[::1]:6381".parse().unwrap()
                ],
            }
        );
        // LF-only line ends give the same result.
        assert_eq!(
            parse_info(&INFO_REDIS_62.replace("\r\n", "\n")).unwrap(),
            info
        );
    }

    #[test]
    fn info_redis_7_0_replica() {
        let text = "# Server\nredis_version:7.0.15\nprocess_id:1\ntcp_port:7000\n\n# Clients\n\
            connected_clients:3\ncluster_connections:4\nmaxclients:10000\n\
            client_recent_max_output_buffer:0\nblocked_clients:0\n\n# Stats\n\
            total_connections_received:5\nrejected_connections:0\n\n# Replication\n\
            role:slave\nmaster_host:10.0.0.1\nmaster_port:7000\nslave_read_only:1\n\
            slave_priority:100\nslave_repl_offset:555\nconnected_slaves:0\n\n# Cluster\n\
            cluster_enabled:1\n";
        let info = parse_info(text).unwrap();
        assert_eq!(info.version.as_deref(), Some("7.0.15"));
        assert_eq!(info.server.as_deref(), Some("redis"));
        assert_eq!(info.role.as_deref(), Some("slave"));
        assert_eq!(info.maxclients, Some(10000));
        assert_eq!(info.cluster_connections, Some(4));
        assert_eq!(info.connected_clients, Some(3));
        assert_eq!(info.connected_slaves, Some(0));
        assert_eq!(info.cluster_enabled, Some(true));
        assert_eq!(info.tcp_port, Some(7000));
        assert_eq!(info.master_link_up, None, "no master_link_status line");
        let linked = parse_info(&text.replace(
            "master_port:7000\n",
            "master_port:7000\nmaster_link_status:up\n",
        ))
        .unwrap();
        assert_eq!(linked.master_link_up, Some(true));
        // slave_read_only, slave_priority… are not replica lines.
        assert!(info.replicas.is_empty());
    }

    #[test]
    fn info_valkey_8() {
        let text = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\n\
            valkey_version:8.0.2\r\nvalkey_release_stage:ga\r\nprocess_id:77\r\n\r\n\
            # Clients\r\nconnected_clients:1\r\nmaxclients:4064\r\n\r\n# Replication\r\n\
            role:master\r\nconnected_slaves:1\r\n\
            slave0:ip=192.168.1.9,port=6379,state=online,offset=1,lag=0,type=replica\r\n";
        let info = parse_info(text).unwrap();
        assert_eq!(info.version.as_deref(), Some("8.0.2"));
        assert_eq!(info.server.as_deref(), Some("valkey"));
        assert_eq!(info.maxclients, Some(4064));
        assert_eq!(info.process_id, Some(77));
        assert_eq!(
            info.replicas,
            vec!["192.168.1.9:6379".parse::<SocketAddr>().unwrap()]
        );
        assert!(
            RedisSnapshot {
                info: Some(info),
                ..RedisSnapshot::disabled()
            }
            .is_replica("192.168.1.9".parse().unwrap())
        );
    }

    /// INFO server, clients, memory, stats, replication and cluster of Debian 12's
    /// redis-server 7.0.15 and of Valkey 8.1.8, as the poller asks them, captured
    /// with a client holding 192 KiB of unread replies after another was dropped for
    /// its output buffer (`client-output-buffer-limit normal 256kb 0 0`).
    const INFO_REDIS_7_0_15: &str = include_str!("testdata/info-redis-7.0.15.txt");
    const INFO_VALKEY_8_1_8: &str = include_str!("testdata/info-valkey-8.1.8.txt");

    #[test]
    fn info_captured_from_redis_7_0_15_has_no_output_buffer_disconnections() {
        let info = parse_info(INFO_REDIS_7_0_15).unwrap();
        assert_eq!(info.server.as_deref(), Some("redis"));
        assert_eq!(info.version.as_deref(), Some("7.0.15"));
        assert_eq!(info.connected_clients, Some(2));
        assert_eq!(info.maxclients, Some(10000));
        assert_eq!(info.total_connections_received, Some(3));
        assert_eq!(info.rejected_connections, Some(0));
        assert_eq!(info.mem_clients_normal, Some(22272));
        // Redis 7.0 does not count output-buffer drops: unknown, not 0.
        assert_eq!(info.client_output_buffer_limit_disconnections, None);
    }

    #[test]
    fn info_captured_from_valkey_8_1_8_counts_output_buffer_disconnections() {
        let info = parse_info(INFO_VALKEY_8_1_8).unwrap();
        assert_eq!(info.server.as_deref(), Some("valkey"));
        assert_eq!(info.version.as_deref(), Some("8.1.8"));
        assert_eq!(info.connected_clients, Some(2));
        assert_eq!(info.maxclients, Some(10000));
        assert_eq!(info.total_connections_received, Some(3));
        assert_eq!(info.mem_clients_normal, Some(1552));
        assert_eq!(info.client_output_buffer_limit_disconnections, Some(1));
    }

    #[test]
    fn info_malformed_values_are_none_not_errors() {
        let text = "connected_clients:-3\nprocess_id:99999999999\ntcp_port:70000\n\
            cluster_enabled:yes\nrejected_connections:\nblocked_clients: 4 \n\
            slave0:ip=not-an-ip,port=1\nslave1:port=5\nslave2:ip=10.1.1.1,port=x\n\
            no colon here\nbad key:1\n";
        let info = parse_info(text).unwrap();
        assert_eq!(info.connected_clients, None);
        assert_eq!(info.process_id, None);
        assert_eq!(info.tcp_port, None);
        assert_eq!(info.cluster_enabled, None);
        assert_eq!(info.rejected_connections, None);
        assert_eq!(info.blocked_clients, Some(4));
        assert!(info.replicas.is_empty());
        assert_eq!(info.version, None);
        assert_eq!(info.server, None);
    }

    #[test]
    fn info_rejects_text_that_is_not_info() {
        for text in [
            "",
            "\r\n",
            "# Server\r\n",
            "hello world\n",
            "<html>\n<body>oops</body>\n",
        ] {
            assert!(parse_info(text).is_err(), "{text:?}");
        }
        let e = parse_info("not info at all").unwrap_err();
        assert_eq!(e.start, "not info at all");
    }
}
