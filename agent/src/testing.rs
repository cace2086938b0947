//! Builders the unit tests share (one copy, not one per test module).

use std::time::Duration;

use crate::model::{ClientReport, ClientVerdict, Kind, Limits, RedisReport, Report, Totals};

/// A report of `clients` with plausible totals, for rendering tests.
pub fn report_with(clients: Vec<ClientReport>) -> Report {
    Report {
        kind: Kind::Report,
        ts: std::time::UNIX_EPOCH + Duration::from_millis(1_795_986_000_123),
        uptime: Duration::from_secs(310),
        ports: vec![6379],
        totals: Totals {
            open: 3,
            opened: 10,
            closed: 7,
            closed_by_server: 1,
            closed_by_client: 5,
            reset: 1,
            clients: clients.len() as u64,
            ..Totals::default()
        },
        redis: RedisReport::default(),
        limits: Limits::default(),
        capacity: crate::core::capacity::capacity(None, &Limits::default(), 3),
        verdicts: Vec::new(),
        clients,
    }
}

/// A client row with counts only, for ordering and rendering tests.
pub fn client(addr: &str, open: u64, lost: u64, opened: u64) -> ClientReport {
    ClientReport {
        rejected: 0,
        refused: 0,
        failed: 0,
        internal: false,
        verdict: ClientVerdict::Healthy,
        retry: None,
        rates: None,
        addr: addr.parse().unwrap(),
        open,
        seeded: 0,
        opened,
        closed: lost,
        closed_by_server: lost,
        closed_by_client: 0,
        reset: 0,
        lifetime: None,
        age: None,
        idle: None,
        bytes_in: 0,
        bytes_out: 0,
    }
}
