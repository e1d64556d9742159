//! Failed-login rate limiting per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

pub struct Limiter {
    max: u32,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Limiter {
    /// At most `max` failed logins per client per minute (0: no limit).
    pub fn new(max: u32) -> Limiter {
        Limiter {
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(wait)` if `ip` must wait before trying again.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        if self.max == 0 {
            return None;
        }
        let map = self.failures.lock().expect("limiter");
        match map.get(&ip) {
            Some((n, since)) if *n >= self.max && since.elapsed() < WINDOW => {
                Some(WINDOW - since.elapsed())
            }
            _ => None,
        }
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut map = self.failures.lock().expect("limiter");
        if map.len() > 10_000 {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.failures.lock().expect("limiter").remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures() {
        let l = Limiter::new(3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.blocked(ip).is_none());
            l.failed(ip);
        }
        assert!(l.blocked(ip).is_some());
        assert!(l.blocked("10.0.0.2".parse().unwrap()).is_none());
        l.succeeded(ip);
        assert!(l.blocked(ip).is_none());
        assert!(Limiter::new(0).blocked(ip).is_none());
    }
}
