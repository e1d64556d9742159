//! The write fence and the protection of recently confirmed blobs: the two
//! pieces of state that online garbage collection shares with requests.
//!
//! Why a fence at all, when the index is transactional? Storing a blob is
//! two steps on two systems: rename the bytes into their content address,
//! then commit the index row. A sweep is the same two steps backwards (move
//! the file to the trash, commit the row's removal). If the two interleave,
//! an upload can rename its file into place just before the sweep trashes it
//! and then commit a row naming bytes that are gone. So every request that
//! commits a blob or a manifest passes the fence (shared), and a sweep closes
//! it (exclusive) for one bounded batch. Reads never touch the fence.
//!
//! Why protection? The docker push sequence is HEAD blob -> skip the upload
//! -> PUT manifest. A blob nothing references yet must survive the gap. A
//! HEAD or GET "confirms" a blob (recorded here, in memory; a restart instead
//! protects everything for one grace period), and a sweep only takes blobs
//! not confirmed within the grace period. Marking the sweep's batch
//! "doomed" and checking confirmations happen under one lock, so a HEAD
//! either protects a blob before the sweep looks, or answers 404 for it
//! (the client then uploads it again, after the fence).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::observe::{NoObserver, Observer};

/// Counters about the fence since start.
#[derive(Debug, Default)]
pub struct FenceStats {
    /// Times the fence was closed.
    pub closed: AtomicU64,
    pub closed_nanos_total: AtomicU64,
    pub closed_nanos_max: AtomicU64,
    /// Writes that found the fence closed and waited for it.
    pub writes_waited: AtomicU64,
    /// Writes refused because the fence stayed closed past the wait bound.
    pub writes_refused: AtomicU64,
}

#[derive(Default)]
struct Protection {
    confirmed: HashMap<Digest, Instant>,
    doomed: HashSet<Digest>,
}

pub struct Fence {
    observer: Arc<dyn Observer>,
    lock: RwLock<()>,
    wait: Duration,
    protection: Mutex<Protection>,
    started: Instant,
    pub stats: FenceStats,
}

/// Held by a request while it commits a blob or a manifest.
pub struct Pass<'a> {
    _guard: RwLockReadGuard<'a, ()>,
}

/// Held by a sweep while the fence is closed. Dropping it reopens the
/// fence, forgets the doomed set, and records how long it was closed.
pub struct Closed<'a> {
    fence: &'a Fence,
    since: Instant,
    _guard: RwLockWriteGuard<'a, ()>,
}

impl Closed<'_> {
    pub fn elapsed(&self) -> Duration {
        self.since.elapsed()
    }
}

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.fence
            .protection
            .lock()
            .expect("protection")
            .doomed
            .clear();
        let took = self.since.elapsed();
        self.fence.observer.fence_closed(took);
        let nanos = took.as_nanos() as u64;
        let s = &self.fence.stats;
        s.closed.fetch_add(1, Ordering::Relaxed);
        s.closed_nanos_total.fetch_add(nanos, Ordering::Relaxed);
        s.closed_nanos_max.fetch_max(nanos, Ordering::Relaxed);
    }
}

impl Fence {
    /// A fence that lets writes wait up to `wait` for it to open (0: refuse
    /// at once).
    pub fn new(wait: Duration) -> Fence {
        Fence::observed(wait, Arc::new(NoObserver))
    }

    /// A fence that reports closings and fenced writes to `observer`.
    pub fn observed(wait: Duration, observer: Arc<dyn Observer>) -> Fence {
        Fence {
            observer,
            lock: RwLock::new(()),
            wait,
            protection: Mutex::new(Protection::default()),
            started: Instant::now(),
            stats: FenceStats::default(),
        }
    }

    pub fn wait_bound(&self) -> Duration {
        self.wait
    }

    /// Passes the fence for one commit, waiting for it to open up to the
    /// bound; past that, a retryable `Unavailable`.
    pub async fn pass(&self) -> Result<Pass<'_>> {
        if let Ok(guard) = self.lock.try_read() {
            return Ok(Pass { _guard: guard });
        }
        if !self.wait.is_zero() {
            self.stats.writes_waited.fetch_add(1, Ordering::Relaxed);
            if let Ok(guard) = tokio::time::timeout(self.wait, self.lock.read()).await {
                self.observer.write_fenced(false);
                return Ok(Pass { _guard: guard });
            }
        }
        self.stats.writes_refused.fetch_add(1, Ordering::Relaxed);
        self.observer.write_fenced(true);
        Err(Error::Unavailable(
            "garbage collection is sweeping; retry in a moment".into(),
        ))
    }

    /// Closes the fence: waits for commits in flight, then holds new ones.
    pub async fn close(&self) -> Closed<'_> {
        let guard = self.lock.write().await;
        Closed {
            fence: self,
            since: Instant::now(),
            _guard: guard,
        }
    }

    /// Records that a client confirmed `digest` exists. `false` if the blob
    /// is being swept right now: the caller must answer as if it were gone.
    pub fn confirm(&self, digest: &Digest) -> bool {
        let mut p = self.protection.lock().expect("protection");
        if p.doomed.contains(digest) {
            return false;
        }
        p.confirmed.insert(digest.clone(), Instant::now());
        true
    }

    /// Of `candidates`, marks as doomed (and returns) those no client
    /// confirmed within `grace`. With `since_start`, nothing is taken within
    /// `grace` of this process starting, because confirmations made before a
    /// restart were not kept.
    pub fn doom(&self, candidates: &[Digest], grace: Duration, since_start: bool) -> Vec<Digest> {
        let mut p = self.protection.lock().expect("protection");
        let out = self.unprotected(&p, candidates, grace, since_start);
        p.doomed.extend(out.iter().cloned());
        out
    }

    /// What [`Fence::doom`] would take, without marking anything (dry runs).
    pub fn unconfirmed(
        &self,
        candidates: &[Digest],
        grace: Duration,
        since_start: bool,
    ) -> Vec<Digest> {
        let p = self.protection.lock().expect("protection");
        self.unprotected(&p, candidates, grace, since_start)
    }

    fn unprotected(
        &self,
        p: &Protection,
        candidates: &[Digest],
        grace: Duration,
        since_start: bool,
    ) -> Vec<Digest> {
        if since_start && self.started.elapsed() < grace {
            return Vec::new();
        }
        let now = Instant::now();
        candidates
            .iter()
            .filter(|d| {
                p.confirmed
                    .get(*d)
                    .is_none_or(|t| now.duration_since(*t) >= grace)
            })
            .cloned()
            .collect()
    }

    /// Forgets confirmations older than `grace` (they protect nothing).
    pub fn prune(&self, grace: Duration) {
        let now = Instant::now();
        self.protection
            .lock()
            .expect("protection")
            .confirmed
            .retain(|_, t| now.duration_since(*t) < grace);
    }

    /// When protection after start ends.
    pub fn protected_until(&self, grace: Duration) -> Instant {
        self.started + grace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: &[u8]) -> Digest {
        Digest::sha256_of(b)
    }

    #[tokio::test]
    async fn confirmed_blobs_are_not_doomed_and_doomed_ones_read_as_gone() {
        let f = Fence::new(Duration::ZERO);
        assert!(f.confirm(&d(b"a")));
        let doomed = f.doom(&[d(b"a"), d(b"b")], Duration::from_secs(60), false);
        assert_eq!(doomed, vec![d(b"b")]);
        assert!(!f.confirm(&d(b"b")), "a doomed blob reads as gone");
        // Nothing at all within the grace period after start.
        assert!(f.doom(&[d(b"c")], Duration::from_secs(60), true).is_empty());
        // Zero grace: even a just-confirmed blob goes.
        assert_eq!(f.doom(&[d(b"a")], Duration::ZERO, false), vec![d(b"a")]);
    }

    #[tokio::test]
    async fn closed_fence_refuses_or_delays_writes() {
        let f = Fence::new(Duration::ZERO);
        {
            let closed = f.close().await;
            assert!(matches!(f.pass().await, Err(Error::Unavailable(_))));
            drop(closed);
        }
        assert!(f.pass().await.is_ok());
        assert_eq!(f.stats.writes_refused.load(Ordering::Relaxed), 1);
        assert_eq!(f.stats.closed.load(Ordering::Relaxed), 1);

        let f = std::sync::Arc::new(Fence::new(Duration::from_secs(5)));
        let closed_for = Duration::from_millis(50);
        let f2 = f.clone();
        let closer = tokio::spawn(async move {
            let _c = f2.close().await;
            tokio::time::sleep(closed_for).await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let t = Instant::now();
        assert!(f.pass().await.is_ok(), "waits for the fence to open");
        assert!(t.elapsed() >= Duration::from_millis(20));
        closer.await.unwrap();
        assert_eq!(f.stats.writes_waited.load(Ordering::Relaxed), 1);
        // The doomed set is forgotten when the fence opens.
        let _ = f.doom(&[d(b"x")], Duration::ZERO, false);
        drop(f.close().await);
        assert!(f.confirm(&d(b"x")));
    }
}
