//! The one clock of the core: every timestamp the index stores, every grace
//! period and every schedule is read from here, so a test can move time
//! instead of waiting for it. Durations that are only measured (how long a
//! fence was closed, request latencies) use `Instant`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time in unix milliseconds, optionally shifted or frozen.
#[derive(Clone, Debug, Default)]
pub struct Clock(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// Added to the system time, in ms.
    offset_ms: AtomicI64,
    /// When set (>= 0), the time is this and does not move by itself.
    frozen_ms: AtomicI64,
    frozen: std::sync::atomic::AtomicBool,
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock standing still at `ms` until it is moved.
    pub fn frozen_at(ms: u64) -> Clock {
        let c = Clock::default();
        c.0.frozen_ms.store(ms as i64, Ordering::SeqCst);
        c.0.frozen.store(true, Ordering::SeqCst);
        c
    }

    /// Now, in unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        let base = if self.0.frozen.load(Ordering::SeqCst) {
            self.0.frozen_ms.load(Ordering::SeqCst)
        } else {
            system_ms()
        };
        (base + self.0.offset_ms.load(Ordering::SeqCst)).max(0) as u64
    }

    /// Now, as a date.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_millis(self.now_ms() as i64).unwrap_or_default()
    }

    /// `ms` minus `d`, floored at 0: the cutoff of a period ending now.
    pub fn ms_before(&self, d: Duration) -> u64 {
        self.now_ms().saturating_sub(d.as_millis() as u64)
    }

    /// Moves time forward (tests).
    pub fn advance(&self, d: Duration) {
        self.0
            .offset_ms
            .fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_clocks_move_only_when_told() {
        let c = Clock::frozen_at(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance(Duration::from_secs(2));
        assert_eq!(c.now_ms(), 3_000);
        assert_eq!(c.ms_before(Duration::from_secs(5)), 0);
        let shared = c.clone();
        shared.advance(Duration::from_millis(1));
        assert_eq!(c.now_ms(), 3_001);
    }

    #[test]
    fn the_system_clock_is_close_to_now() {
        let c = Clock::system();
        let a = c.now_ms();
        c.advance(Duration::from_secs(60));
        assert!(c.now_ms() >= a + 60_000);
    }
}
