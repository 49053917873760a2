//! Kubelet's restart back-off: 10 s doubling to 5 min, forgotten after a
//! container ran for 10 min (base and cap configurable for tests).

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct BackoffPolicy {
    pub base: Duration,
    pub max: Duration,
    /// Running this long resets the back-off.
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy { base: Duration::from_secs(10), max: Duration::from_secs(300), reset_after: Duration::from_secs(600) }
    }
}

/// Back-off state of one container (or one image pull).
#[derive(Clone, Debug, Default)]
pub struct Backoff {
    delay: Option<Duration>,
    until: Option<Instant>,
}

impl Backoff {
    /// Records a failure at `now`; returns the delay before the next try.
    pub fn failed(&mut self, policy: &BackoffPolicy, now: Instant, ran_for: Option<Duration>) -> Duration {
        if ran_for.is_some_and(|r| r >= policy.reset_after) {
            self.delay = None;
        }
        let d = match self.delay {
            None => policy.base,
            Some(d) => (d * 2).min(policy.max),
        };
        self.delay = Some(d);
        self.until = Some(now + d);
        d
    }

    /// Time left before the next try, if still backing off.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.until.and_then(|u| u.checked_duration_since(now)).filter(|d| !d.is_zero())
    }

    /// The current window, once a failure was recorded.
    pub fn delay(&self) -> Option<Duration> {
        self.delay
    }

    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_cap_and_resets() {
        let p = BackoffPolicy::default();
        let mut b = Backoff::default();
        let now = Instant::now();
        let seq: Vec<u64> = (0..7).map(|_| b.failed(&p, now, Some(Duration::from_secs(1))).as_secs()).collect();
        assert_eq!(seq, vec![10, 20, 40, 80, 160, 300, 300]);
        assert!(b.remaining(now).is_some());
        assert_eq!(b.failed(&p, now, Some(Duration::from_secs(601))).as_secs(), 10);
    }
}
