//! Which activity entries after a cursor may be delivered now, in order.
//!
//! Ids are handed out before their transaction commits. Where one writer
//! numbers and commits in the same order (the embedded index), an id
//! missing below a visible one will never appear. Where transactions run
//! side by side (PostgreSQL sequences), id 10 may commit after id 11: a
//! deliverer that moved past 10 on seeing 11 would lose it. The back end
//! promises a bound, its `id_lag`: an id becomes visible within that long
//! of being handed out, or never.
//!
//! Ids are handed out in increasing order, so a missing id below one seen
//! at time `t` was handed out before `t`: once `t + lag` has passed, it is
//! given up. [`Horizon`] keeps those observations; [`plan`] takes the
//! entries up to the first gap that may still fill.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use registry_core::index::Activity;

/// Most observations kept: dropping the oldest only makes gaps wait longer.
const KEPT: usize = 4096;

/// When which ids were seen.
#[derive(Debug)]
pub struct Horizon {
    lag: Duration,
    /// Every id up to this one is visible or never will be.
    settled: u64,
    /// (when, highest id visible then), both increasing, within `lag`.
    recent: VecDeque<(Instant, u64)>,
}

impl Horizon {
    pub fn new(lag: Duration) -> Horizon {
        Horizon {
            lag,
            settled: 0,
            recent: VecDeque::new(),
        }
    }

    /// Ids up to `newest` were visible to a read that started at `at`.
    pub fn saw(&mut self, at: Instant, newest: u64) {
        if newest <= self.recent.back().map_or(self.settled, |r| r.1) {
            return;
        }
        self.recent.push_back((at, newest));
        if self.recent.len() > KEPT {
            self.recent.pop_front();
        }
    }

    /// When a missing `id` may be given up (in the past: now).
    pub fn settles_at(&mut self, id: u64, now: Instant) -> Option<Instant> {
        while let Some(&(at, newest)) = self.recent.front() {
            if at + self.lag > now {
                break;
            }
            self.settled = self.settled.max(newest);
            self.recent.pop_front();
        }
        if id <= self.settled {
            return Some(now);
        }
        // The first observation that saw past `id`; none yet: unknown.
        self.recent
            .iter()
            .find(|(_, newest)| *newest > id)
            .map(|(at, _)| *at + self.lag)
    }
}

/// What to do with the entries read after a cursor.
#[derive(Debug)]
pub enum Plan {
    /// Nothing after the cursor.
    Idle,
    /// The next id is missing and may still appear: look again then.
    Wait(Instant),
    /// These entries, in order, may be handled now (ids before each are
    /// delivered or given up).
    Go(Vec<Activity>),
}

/// Takes the entries read after `cursor` (in id order) up to the first gap
/// that may still fill.
pub fn plan(cursor: u64, batch: Vec<Activity>, horizon: &mut Horizon, now: Instant) -> Plan {
    let mut expect = cursor + 1;
    let mut out = Vec::new();
    for e in batch {
        if e.id > expect {
            // The highest missing id settles last.
            let missing = e.id - 1;
            match horizon.settles_at(missing, now) {
                Some(t) if t <= now => {}
                Some(t) if out.is_empty() => return Plan::Wait(t),
                None if out.is_empty() => return Plan::Wait(now + horizon.lag),
                _ => break,
            }
        }
        expect = e.id + 1;
        out.push(e);
    }
    match out.is_empty() {
        true => Plan::Idle,
        false => Plan::Go(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(ids: &[u64]) -> Vec<Activity> {
        ids.iter()
            .map(|&id| Activity {
                id,
                time_ms: 1,
                actor: "a".into(),
                action: "push".into(),
                repository: None,
                reference: None,
                digest: None,
                detail: serde_json::Value::Null,
            })
            .collect()
    }

    fn ids(p: &Plan) -> Vec<u64> {
        match p {
            Plan::Go(v) => v.iter().map(|a| a.id).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn one_writer_gives_gaps_up_at_once() {
        let mut h = Horizon::new(Duration::ZERO);
        let now = Instant::now();
        h.saw(now, 5);
        assert_eq!(ids(&plan(1, entries(&[2, 4, 5]), &mut h, now)), [2, 4, 5]);
        assert!(matches!(plan(5, Vec::new(), &mut h, now), Plan::Idle));
    }

    #[test]
    fn a_gap_waits_for_the_lag_from_when_a_later_id_was_seen() {
        let lag = Duration::from_secs(30);
        let mut h = Horizon::new(lag);
        let t0 = Instant::now();
        h.saw(t0, 12);
        // 11 is missing: 10 goes, 12 waits.
        let p = plan(9, entries(&[10, 12]), &mut h, t0);
        assert_eq!(ids(&p), [10]);
        // The cursor at 10: nothing to deliver until t0 + lag.
        let mut h2 = h;
        match plan(10, entries(&[12]), &mut h2, t0 + Duration::from_secs(5)) {
            Plan::Wait(t) => assert_eq!(t, t0 + lag),
            other => panic!("{other:?}"),
        }
        // 11 arrives in time: all in order.
        let p = plan(10, entries(&[11, 12]), &mut h2, t0 + Duration::from_secs(6));
        assert_eq!(ids(&p), [11, 12]);
        // Or it never does: given up after the lag.
        let p = plan(10, entries(&[12]), &mut h2, t0 + lag);
        assert_eq!(ids(&p), [12]);
    }

    #[test]
    fn later_observations_never_shorten_an_older_gap() {
        let lag = Duration::from_secs(10);
        let mut h = Horizon::new(lag);
        let t0 = Instant::now();
        h.saw(t0, 3);
        h.saw(t0 + Duration::from_secs(4), 8);
        // 2 was handed out before t0; 6 only before t0 + 4s.
        assert_eq!(h.settles_at(2, t0), Some(t0 + lag));
        assert_eq!(h.settles_at(6, t0), Some(t0 + Duration::from_secs(4) + lag));
        assert_eq!(h.settles_at(9, t0), None);
        let later = t0 + Duration::from_secs(11);
        assert_eq!(h.settles_at(2, later), Some(later));
        assert!(h.settles_at(6, later).unwrap() > later);
    }
}
