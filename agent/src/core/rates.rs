//! Per-address rates over the last interval: opens, closes, rejections and
//! refusals per second, from the difference of cumulative counts between reports.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::model::Nanos;
use crate::model::{ClientReport, Rates, Report};

#[derive(Clone, Copy, Debug)]
struct Counts {
    ts: Nanos,
    opened: u64,
    closed: u64,
    rejected: u64,
    refused: u64,
}

impl Counts {
    fn of(ts: Nanos, c: &ClientReport) -> Self {
        Counts {
            ts,
            opened: c.opened,
            closed: c.closed,
            rejected: c.rejected,
            refused: c.refused,
        }
    }
}

/// Remembers each address's counts at the previous report (one small entry per
/// address the report holds; addresses that leave the report are forgotten).
#[derive(Debug, Default)]
pub struct RateMeter {
    last: HashMap<IpAddr, Counts>,
}

impl RateMeter {
    /// Fills `clients[].rates` of a report taken at `now`. An address seen for the
    /// first time has no rate yet (`None`).
    pub fn fill(&mut self, now: Nanos, report: &mut Report) {
        let mut next = HashMap::with_capacity(report.clients.len());
        for c in report.clients.iter_mut() {
            let counts = Counts::of(now, c);
            c.rates = self
                .last
                .get(&c.addr)
                .and_then(|before| rates(before, &counts));
            next.insert(c.addr, counts);
        }
        self.last = next;
    }
}

fn rates(before: &Counts, now: &Counts) -> Option<Rates> {
    let secs = now.ts.checked_sub(before.ts).filter(|&d| d > 0)? as f64 / 1e9;
    let per_s = |a: u64, b: u64| (b.saturating_sub(a) as f64 / secs * 10.0).round() / 10.0;
    Some(Rates {
        opened_per_s: per_s(before.opened, now.opened),
        closed_per_s: per_s(before.closed, now.closed),
        rejected_per_s: per_s(before.rejected, now.rejected),
        refused_per_s: per_s(before.refused, now.refused),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::testing::client;

    const SEC: Nanos = 1_000_000_000;

    fn report(clients: Vec<ClientReport>) -> Report {
        let mut r = crate::core::tracker::Tracker::new(vec![6379]).report(
            SEC,
            &crate::model::Clock {
                mono: 0,
                wall: std::time::UNIX_EPOCH,
            },
        );
        r.clients = clients;
        r
    }

    #[test]
    fn rates_are_per_second_over_the_last_interval() {
        let mut meter = RateMeter::default();
        let mut a = client("10.0.0.2", 0, 0, 10);
        a.closed = 10;
        let mut first = report(vec![a.clone()]);
        meter.fill(SEC, &mut first);
        assert_eq!(first.clients[0].rates, None, "no rate before a second look");

        a.opened = 40;
        a.closed = 30;
        a.rejected = 12;
        a.refused = 2;
        let mut second = report(vec![a]);
        meter.fill(3 * SEC, &mut second);
        assert_eq!(
            second.clients[0].rates,
            Some(Rates {
                opened_per_s: 15.0,
                closed_per_s: 10.0,
                rejected_per_s: 6.0,
                refused_per_s: 1.0
            })
        );
    }

    #[test]
    fn addresses_that_leave_the_report_are_forgotten() {
        let mut meter = RateMeter::default();
        meter.fill(SEC, &mut report(vec![client("10.0.0.2", 1, 0, 1)]));
        meter.fill(2 * SEC, &mut report(vec![client("10.0.0.3", 1, 0, 1)]));
        assert_eq!(meter.last.len(), 1);
        let mut back = report(vec![client("10.0.0.2", 1, 0, 5)]);
        meter.fill(3 * SEC, &mut back);
        assert_eq!(back.clients[0].rates, None);
    }
}
