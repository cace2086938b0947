//! [`Reconnect`]: exponential backoff with full jitter plus a circuit breaker, pure
//! and driven by an injected time so it is unit-tested deterministically.

use std::time::Duration;

use crate::model::Nanos;

/// Reconnect pacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Ceiling of the first delay; it doubles per consecutive failure…
    pub base: Duration,
    /// …up to this.
    pub cap: Duration,
    /// Consecutive failures that open the breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker allows no attempt at all.
    pub breaker_open: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            breaker_threshold: 5,
            breaker_open: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Attempts allowed, paced by backoff.
    Closed,
    /// No attempt before `until`.
    Open { until: Nanos },
    /// One trial attempt allowed; its outcome closes or reopens the breaker.
    HalfOpen,
}

/// A small, seedable PRNG (SplitMix64): jitter needs no more.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    fn up_to(&mut self, max: u64) -> u64 {
        let range = u128::from(max) + 1;
        ((u128::from(self.next()) * range) >> 64) as u64
    }
}

pub(super) fn dur_nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// When the next connection attempt may happen. Pure: time comes in as `now`.
///
/// Closed: after the n-th consecutive failure the next attempt waits a uniformly
/// random delay in `[0, min(cap, base·2ⁿ⁻¹)]` ("full jitter", so a fleet of agents
/// does not reconnect in step). At `breaker_threshold` consecutive failures the
/// breaker opens: no attempt for `breaker_open`. Then one trial (half-open): success
/// closes it and resets the count, failure reopens it for another `breaker_open`.
#[derive(Clone, Debug)]
pub struct Reconnect {
    policy: BackoffPolicy,
    failures: u32,
    retry_at: Option<Nanos>,
    state: BreakerState,
    trial_taken: bool,
    rng: SplitMix64,
}

impl Reconnect {
    pub fn new(policy: BackoffPolicy, seed: u64) -> Self {
        Reconnect {
            policy,
            failures: 0,
            retry_at: None,
            state: BreakerState::Closed,
            trial_taken: false,
            rng: SplitMix64(seed),
        }
    }

    /// Whether an attempt may start at `now`; if so, the caller makes exactly one and
    /// reports it with [`on_success`](Self::on_success) or
    /// [`on_failure`](Self::on_failure).
    pub fn try_acquire(&mut self, now: Nanos) -> bool {
        match self.state {
            BreakerState::Closed => self.retry_at.is_none_or(|t| now >= t),
            BreakerState::Open { until } => {
                if now >= until {
                    self.state = BreakerState::HalfOpen;
                    self.trial_taken = true;
                    true
                } else {
                    false
                }
            }
            BreakerState::HalfOpen => !std::mem::replace(&mut self.trial_taken, true),
        }
    }

    pub fn on_success(&mut self) {
        self.failures = 0;
        self.retry_at = None;
        self.state = BreakerState::Closed;
        self.trial_taken = false;
    }

    pub fn on_failure(&mut self, now: Nanos) {
        self.failures = self.failures.saturating_add(1);
        let open = match self.state {
            BreakerState::Closed => self.failures >= self.policy.breaker_threshold,
            BreakerState::Open { .. } | BreakerState::HalfOpen => true,
        };
        if open {
            let until = now.saturating_add(dur_nanos(self.policy.breaker_open));
            self.state = BreakerState::Open { until };
            self.retry_at = Some(until);
            self.trial_taken = false;
        } else {
            let ceiling = dur_nanos(self.ceiling(self.failures));
            self.retry_at = Some(now.saturating_add(self.rng.up_to(ceiling)));
        }
    }

    /// The largest delay after `failures` consecutive failures.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.policy.base.saturating_mul(factor).min(self.policy.cap)
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The earliest time of the next attempt (`None`: now).
    pub fn retry_at(&self) -> Option<Nanos> {
        self.retry_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;
    const SEC: Nanos = 1_000_000_000;

    fn policy() -> BackoffPolicy {
        BackoffPolicy::default()
    }

    #[test]
    fn backoff_ceilings_double_up_to_the_cap() {
        let r = Reconnect::new(policy(), 1);
        let ms = |n| r.ceiling(n).as_millis();
        assert_eq!(
            [
                ms(1),
                ms(2),
                ms(3),
                ms(4),
                ms(5),
                ms(6),
                ms(7),
                ms(8),
                ms(40),
                ms(u32::MAX)
            ],
            [
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
        );
    }

    #[test]
    fn backoff_full_jitter_spans_zero_to_ceiling() {
        // High threshold so the breaker stays closed; look at the first delay.
        let p = BackoffPolicy {
            breaker_threshold: u32::MAX,
            ..policy()
        };
        for failures in [1u32, 3, 10] {
            let ceiling = dur_nanos(Reconnect::new(p, 0).ceiling(failures));
            let (mut lo, mut hi) = (u64::MAX, 0);
            for seed in 0..2000 {
                let mut r = Reconnect::new(p, seed);
                for _ in 0..failures {
                    r.on_failure(1000 * SEC);
                }
                let delay = r.retry_at().unwrap() - 1000 * SEC;
                assert!(delay <= ceiling, "{delay} > {ceiling}");
                lo = lo.min(delay);
                hi = hi.max(delay);
            }
            assert!(lo < ceiling / 50, "failures {failures}: min {lo}");
            assert!(hi > ceiling - ceiling / 50, "failures {failures}: max {hi}");
        }
        // Same seed, same delays; another seed, other delays.
        let delays = |seed| {
            let mut r = Reconnect::new(p, seed);
            (0..6)
                .map(|_| {
                    r.on_failure(0);
                    r.retry_at().unwrap()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(delays(42), delays(42));
        assert_ne!(delays(42), delays(43));
    }

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let mut r = Reconnect::new(policy(), 9);
        let mut now = 10 * SEC;
        assert!(r.try_acquire(now));
        for n in 1..=4 {
            r.on_failure(now);
            assert_eq!(r.state(), BreakerState::Closed);
            assert_eq!(r.failures(), n);
            let at = r.retry_at().unwrap();
            assert!(at >= now && at - now <= dur_nanos(r.ceiling(n)));
            if at > now {
                assert!(!r.try_acquire(at - 1), "attempt before the delay");
            }
            assert!(r.try_acquire(at));
            now = at;
        }
        r.on_failure(now);
        let until = now + 60 * SEC;
        assert_eq!(r.state(), BreakerState::Open { until });
        assert_eq!(r.retry_at(), Some(until));
        assert!(!r.try_acquire(now));
        assert!(!r.try_acquire(until - 1));
        // Half-open: exactly one trial.
        assert!(r.try_acquire(until));
        assert_eq!(r.state(), BreakerState::HalfOpen);
        assert!(!r.try_acquire(until));
        assert!(!r.try_acquire(until + 100 * SEC));
        // The trial fails: open again for the full period.
        r.on_failure(until + SEC);
        let until2 = until + 61 * SEC;
        assert_eq!(r.state(), BreakerState::Open { until: until2 });
        assert!(!r.try_acquire(until2 - 1));
        assert!(r.try_acquire(until2));
        // The trial succeeds: closed, count reset, attempts free.
        r.on_success();
        assert_eq!(r.state(), BreakerState::Closed);
        assert_eq!(r.failures(), 0);
        assert_eq!(r.retry_at(), None);
        assert!(r.try_acquire(until2));
        // A new failure starts from the base delay again.
        r.on_failure(until2);
        assert!(r.retry_at().unwrap() - until2 <= 500 * MS);
    }
}
