//! The shared state of a single node, in this process's memory.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use super::{Closed, Coordination, FenceCounts, Pass, UploadLock};
use crate::clock::Clock;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::index::{UnreferencedBlob, Upload};
use crate::observe::Observer;

#[derive(Default)]
struct Protection {
    /// [`seen_key`] of a digest -> unix ms of its last confirmation
    confirmed: HashMap<u128, u64>,
    doomed: HashSet<Digest>,
}

/// What the confirmations are keyed by: the first 128 bits of a digest's
/// hash. A busy node confirms hundreds of thousands of blobs per grace
/// period (every HEAD and GET of an unreferenced blob), and this keeps an
/// entry at 32 bytes with no allocation of its own (the digest string
/// alone took 80). Two blobs sharing those bits would only protect each
/// other, never expose one.
fn seen_key(digest: &Digest) -> u128 {
    let hex = digest.encoded();
    hex.get(..32)
        .and_then(|h| u128::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| {
            // Not reached for the digests `Digest` accepts (hex, 64 or 128
            // digits); any stable hash keeps the rule.
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            hex.hash(&mut h);
            u128::from(h.finish())
        })
}

#[derive(Default)]
struct Counters {
    closed: AtomicU64,
    writes_waited: AtomicU64,
    writes_refused: AtomicU64,
}

/// The shared state of a single node, in memory.
pub struct InProcess {
    clock: Clock,
    observer: Arc<dyn Observer>,
    fence: Arc<RwLock<()>>,
    wait: Duration,
    protection: Arc<Mutex<Protection>>,
    started_ms: u64,
    counters: Arc<Counters>,
    empty: Mutex<HashMap<String, Upload>>,
    upload_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// name -> until when (this node is the only holder there is).
    leases: Mutex<HashMap<String, u64>>,
}

/// Reopens the fence when dropped: forgets the doomed set, reports how long
/// it was closed.
struct Reopen {
    _guard: OwnedRwLockWriteGuard<()>,
    protection: Arc<Mutex<Protection>>,
    observer: Arc<dyn Observer>,
    since: Instant,
}

impl Drop for Reopen {
    fn drop(&mut self) {
        self.protection.lock().expect("protection").doomed.clear();
        self.observer.fence_closed(self.since.elapsed());
    }
}

/// Releases an upload lock; forgets its entry when the last holder goes.
struct Unlock {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    id: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for Unlock {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.locks.lock().expect("upload locks");
        // Only the map's own reference left: nobody else waits.
        if locks
            .get(&self.id)
            .is_some_and(|l| Arc::strong_count(l) <= 1)
        {
            locks.remove(&self.id);
        }
    }
}

impl InProcess {
    /// Lets commits wait up to `wait` for a closed fence (0: refuse at once).
    pub fn new(wait: Duration, clock: Clock, observer: Arc<dyn Observer>) -> InProcess {
        InProcess {
            started_ms: clock.now_ms(),
            clock,
            observer,
            fence: Arc::new(RwLock::new(())),
            wait,
            protection: Arc::default(),
            counters: Arc::default(),
            empty: Mutex::default(),
            upload_locks: Arc::default(),
            leases: Mutex::default(),
        }
    }

    fn unprotected(
        &self,
        p: &Protection,
        candidates: &[Digest],
        grace: Duration,
        since_start: bool,
    ) -> Vec<Digest> {
        let now = self.clock.now_ms();
        let grace = grace.as_millis() as u64;
        if since_start && now < self.started_ms + grace {
            return Vec::new();
        }
        candidates
            .iter()
            .filter(|d| {
                p.confirmed
                    .get(&seen_key(d))
                    .is_none_or(|t| now >= t + grace)
            })
            .cloned()
            .collect()
    }

    fn pass_guard(guard: OwnedRwLockReadGuard<()>) -> Pass {
        Pass {
            _held: Box::new(guard),
            conditions: Vec::new(),
        }
    }
}

#[async_trait]
impl Coordination for InProcess {
    async fn pass(&self, _digests: &[Digest]) -> Result<Pass> {
        if let Ok(guard) = self.fence.clone().try_read_owned() {
            return Ok(InProcess::pass_guard(guard));
        }
        if !self.wait.is_zero() {
            self.counters.writes_waited.fetch_add(1, Ordering::Relaxed);
            let waiting = self.fence.clone().read_owned();
            if let Ok(guard) = tokio::time::timeout(self.wait, waiting).await {
                self.observer.write_fenced(false);
                return Ok(InProcess::pass_guard(guard));
            }
        }
        self.counters.writes_refused.fetch_add(1, Ordering::Relaxed);
        self.observer.write_fenced(true);
        Err(Error::Unavailable(
            "garbage collection is sweeping; retry in a moment".into(),
        ))
    }

    async fn close(&self) -> Result<Closed> {
        let guard = self.fence.clone().write_owned().await;
        self.counters.closed.fetch_add(1, Ordering::Relaxed);
        let since = Instant::now();
        Ok(Closed {
            since,
            _held: Box::new(Reopen {
                _guard: guard,
                protection: self.protection.clone(),
                observer: self.observer.clone(),
                since,
            }),
        })
    }

    async fn confirm(&self, digest: &Digest) -> Result<bool> {
        let mut p = self.protection.lock().expect("protection");
        if p.doomed.contains(digest) {
            return Ok(false);
        }
        p.confirmed.insert(seen_key(digest), self.clock.now_ms());
        Ok(true)
    }

    async fn doom(
        &self,
        candidates: &[UnreferencedBlob],
        grace: Duration,
        since_start: bool,
        dry_run: bool,
    ) -> Result<Vec<Digest>> {
        let candidates: Vec<Digest> = candidates.iter().map(|c| c.digest.clone()).collect();
        let mut p = self.protection.lock().expect("protection");
        let out = self.unprotected(&p, &candidates, grace, since_start);
        if !dry_run {
            p.doomed.extend(out.iter().cloned());
        }
        Ok(out)
    }

    async fn hold(&self, _digests: &[Digest]) -> Result<()> {
        // The closed fence holds every commit already.
        Ok(())
    }

    async fn release(&self, _digests: &[Digest]) -> Result<()> {
        // Reopening the fence (dropping `Closed`) forgets the doomed set.
        Ok(())
    }

    async fn prune(&self, grace: Duration) -> Result<()> {
        let cutoff = self.clock.ms_before(grace);
        self.protection
            .lock()
            .expect("protection")
            .confirmed
            .retain(|_, t| *t > cutoff);
        Ok(())
    }

    fn fence_counts(&self) -> FenceCounts {
        FenceCounts {
            closed: self.counters.closed.load(Ordering::Relaxed),
            writes_waited: self.counters.writes_waited.load(Ordering::Relaxed),
            writes_refused: self.counters.writes_refused.load(Ordering::Relaxed),
        }
    }

    fn fence_wait(&self) -> Duration {
        self.wait
    }

    fn started_ms(&self) -> u64 {
        self.started_ms
    }

    async fn put_empty_upload(&self, id: &str, upload: Upload) -> Result<()> {
        self.empty
            .lock()
            .expect("empty uploads")
            .insert(id.to_owned(), upload);
        Ok(())
    }

    async fn empty_upload(&self, id: &str) -> Result<Option<Upload>> {
        Ok(self.empty.lock().expect("empty uploads").get(id).cloned())
    }

    async fn take_empty_upload(&self, id: &str) -> Result<Option<Upload>> {
        Ok(self.empty.lock().expect("empty uploads").remove(id))
    }

    async fn idle_empty_uploads(&self, cutoff_ms: u64) -> Result<Vec<String>> {
        Ok(self
            .empty
            .lock()
            .expect("empty uploads")
            .iter()
            .filter(|(_, u)| u.updated_ms <= cutoff_ms)
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn empty_upload_count(&self) -> Result<u64> {
        Ok(self.empty.lock().expect("empty uploads").len() as u64)
    }

    async fn lease(&self, name: &str, ttl: Duration) -> Result<bool> {
        let now = self.clock.now_ms();
        let mut leases = self.leases.lock().expect("leases");
        leases.retain(|_, until| *until > now);
        leases.insert(name.to_owned(), now + ttl.as_millis() as u64);
        Ok(true)
    }

    async fn end_lease(&self, name: &str) -> Result<()> {
        self.leases.lock().expect("leases").remove(name);
        Ok(())
    }

    async fn lock_upload(&self, id: &str) -> Result<UploadLock> {
        let lock = self
            .upload_locks
            .lock()
            .expect("upload locks")
            .entry(id.to_owned())
            .or_default()
            .clone();
        let guard = lock.lock_owned().await;
        Ok(UploadLock {
            _held: Box::new(Unlock {
                locks: self.upload_locks.clone(),
                id: id.to_owned(),
                guard: Some(guard),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::NoObserver;

    fn d(b: &[u8]) -> Digest {
        Digest::sha256_of(b)
    }

    fn blobs(ds: &[Digest]) -> Vec<UnreferencedBlob> {
        ds.iter()
            .map(|d| UnreferencedBlob {
                digest: d.clone(),
                size: 1,
                since_ms: 0,
                seen_ms: 0,
            })
            .collect()
    }

    fn node(wait: Duration, clock: &Clock) -> InProcess {
        InProcess::new(wait, clock.clone(), Arc::new(NoObserver))
    }

    #[tokio::test]
    async fn confirmed_blobs_are_not_doomed_and_doomed_ones_read_as_gone() {
        let clock = Clock::frozen_at(1_000_000);
        let f = node(Duration::ZERO, &clock);
        let minute = Duration::from_secs(60);
        assert!(f.confirm(&d(b"a")).await.unwrap());
        let doomed = f
            .doom(&blobs(&[d(b"a"), d(b"b")]), minute, false, false)
            .await
            .unwrap();
        assert_eq!(doomed, vec![d(b"b")]);
        assert!(
            !f.confirm(&d(b"b")).await.unwrap(),
            "a doomed blob reads as gone"
        );
        // Nothing at all within the grace period after start.
        let early = f
            .doom(&blobs(&[d(b"c")]), minute, true, false)
            .await
            .unwrap();
        assert!(early.is_empty());
        // Once the grace period has passed, the confirmation protects no more.
        clock.advance(minute);
        let late = f
            .doom(&blobs(&[d(b"a")]), minute, true, false)
            .await
            .unwrap();
        assert_eq!(late, vec![d(b"a")]);
        // A dry run marks nothing.
        let g = node(Duration::ZERO, &clock);
        assert_eq!(
            g.doom(&blobs(&[d(b"x")]), Duration::ZERO, false, true)
                .await
                .unwrap(),
            vec![d(b"x")]
        );
        assert!(g.confirm(&d(b"x")).await.unwrap());
    }

    #[test]
    fn confirmation_keys_tell_digests_apart() {
        assert_ne!(seen_key(&d(b"a")), seen_key(&d(b"b")));
        let long: Digest = format!("sha512:{}", "ab".repeat(64)).parse().unwrap();
        assert_eq!(seen_key(&long), 0xabab_abab_abab_abab_abab_abab_abab_abab);
    }

    #[tokio::test]
    async fn closed_fence_refuses_or_delays_writes() {
        let clock = Clock::system();
        let f = node(Duration::ZERO, &clock);
        {
            let _closed = f.close().await.unwrap();
            assert!(matches!(f.pass(&[]).await, Err(Error::Unavailable(_))));
        }
        assert!(f.pass(&[]).await.is_ok());
        assert_eq!(f.fence_counts().writes_refused, 1);
        assert_eq!(f.fence_counts().closed, 1);

        let f = Arc::new(node(Duration::from_secs(5), &clock));
        let f2 = f.clone();
        let closer = tokio::spawn(async move {
            let _c = f2.close().await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let t = Instant::now();
        assert!(f.pass(&[]).await.is_ok(), "waits for the fence to open");
        assert!(t.elapsed() >= Duration::from_millis(20));
        closer.await.unwrap();
        assert_eq!(f.fence_counts().writes_waited, 1);
        // The doomed set is forgotten when the fence opens.
        let closed = f.close().await.unwrap();
        let _ = f
            .doom(&blobs(&[d(b"x")]), Duration::ZERO, false, false)
            .await
            .unwrap();
        drop(closed);
        assert!(f.confirm(&d(b"x")).await.unwrap());
    }

    #[tokio::test]
    async fn upload_locks_serialize_and_are_forgotten() {
        let f = Arc::new(node(Duration::ZERO, &Clock::system()));
        let held = f.lock_upload("u1").await.unwrap();
        let f2 = f.clone();
        let waiter = tokio::spawn(async move { f2.lock_upload("u1").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the second request waits");
        drop(held);
        waiter.await.unwrap().unwrap();
        assert!(f.upload_locks.lock().unwrap().is_empty());
    }
}
