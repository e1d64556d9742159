//! The state nodes share, kept in the index so that every node of a
//! cluster sees it (the rules are in `crate::model::shared`). There is no
//! global fence: a commit checks in its own transaction that no sweep took
//! the blob it writes since it read the blob's generation, and a sweep
//! only ever conflicts with transactions on the rows it deletes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Closed, Coordination, FenceCounts, Pass, UploadLock};
use crate::clock::Clock;
use crate::db::Db;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::index::{UnreferencedBlob, Upload};
use crate::model::{counters, shared};
use crate::observe::Observer;

/// How long an upload session's lease lasts without being renewed: longer
/// than any one request may take.
const UPLOAD_LEASE: Duration = Duration::from_secs(15 * 60);
/// How long a request waits for another node's request on the same upload.
const UPLOAD_WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Counters {
    sweeps: AtomicU64,
    refused: AtomicU64,
}

/// Coordination through the index, for several nodes.
pub struct Shared {
    db: Db,
    /// This node, as lease holders are named.
    node: String,
    started_ms: u64,
    counters: Counters,
    /// Told how long each sweep lasted and about each write refused.
    observer: Arc<dyn Observer>,
}

impl Shared {
    pub fn new(db: Db, clock: &Clock, observer: Arc<dyn Observer>) -> Shared {
        Shared {
            started_ms: clock.now_ms(),
            node: uuid::Uuid::new_v4().simple().to_string(),
            db,
            counters: Counters::default(),
            observer,
        }
    }

    fn names(digests: &[Digest]) -> Vec<String> {
        digests.iter().map(Digest::to_string).collect()
    }

    fn digests(names: Vec<String>) -> Result<Vec<Digest>> {
        names.iter().map(|d| d.parse()).collect()
    }
}

/// Reports, when a sweep ends, how long it held what it took: a cluster's
/// "fence" is the sweep itself, closed to nobody but the writes of the
/// blobs it dooms.
struct Sweeping {
    observer: Arc<dyn Observer>,
    since: Instant,
}

impl Drop for Sweeping {
    fn drop(&mut self) {
        self.observer.fence_closed(self.since.elapsed());
    }
}

/// Gives an upload session's lease up when dropped.
struct LeaseGuard {
    db: Db,
    name: String,
    holder: String,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let (db, name, holder) = (self.db.clone(), self.name.clone(), self.holder.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = db
                    .write(move |tx| shared::give_up(tx, &name, &holder))
                    .await;
            });
        }
    }
}

#[async_trait]
impl Coordination for Shared {
    async fn pass(&self, digests: &[Digest]) -> Result<Pass> {
        let names = Shared::names(digests);
        let conditions = self
            .db
            .read(move |r| {
                names
                    .into_iter()
                    .map(|d| Ok((d.clone(), shared::generation(r, &d)?)))
                    .collect::<Result<Vec<_>>>()
            })
            .await?;
        Ok(Pass {
            _held: Box::new(()),
            conditions,
        })
    }

    async fn close(&self) -> Result<Closed> {
        self.counters.sweeps.fetch_add(1, Ordering::Relaxed);
        let since = Instant::now();
        Ok(Closed {
            since,
            _held: Box::new(Sweeping {
                observer: self.observer.clone(),
                since,
            }),
        })
    }

    async fn confirm(&self, digest: &Digest) -> Result<bool> {
        let d = digest.to_string();
        let probe = d.clone();
        if !self
            .db
            .read(move |r| shared::needs_confirming(r, &probe))
            .await?
        {
            return Ok(true);
        }
        self.db.write(move |tx| shared::confirm(tx, &d)).await
    }

    async fn doom(
        &self,
        candidates: &[UnreferencedBlob],
        grace: Duration,
        _since_start: bool,
        dry_run: bool,
    ) -> Result<Vec<Digest>> {
        let cutoff = self.db.clock().ms_before(grace);
        let list = candidates.to_vec();
        let names = match dry_run {
            true => {
                self.db
                    .read(move |r| shared::collectable(r, &list, cutoff))
                    .await?
            }
            false => {
                self.db
                    .write(move |tx| shared::doom(tx, &list, cutoff))
                    .await?
            }
        };
        Shared::digests(names)
    }

    async fn hold(&self, digests: &[Digest]) -> Result<()> {
        let names = Shared::names(digests);
        self.db.write(move |tx| shared::hold(tx, &names)).await
    }

    async fn release(&self, digests: &[Digest]) -> Result<()> {
        let names = Shared::names(digests);
        self.db.write(move |tx| shared::release(tx, &names)).await
    }

    async fn refused(&self) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        self.observer.write_fenced(true);
        // Counted in the index too, so that a run's report counts the
        // refusals of every node. Rare (only while a sweep holds what a
        // commit writes), so one more transaction is cheap; a count that
        // cannot be written is only a count.
        let counted = self
            .db
            .write(|tx| counters::bump(tx, counters::WRITES_REFUSED, 1))
            .await;
        if let Err(e) = counted {
            tracing::warn!(error = %e, "could not count a refused write in the index");
        }
    }

    async fn writes_refused(&self) -> Result<u64> {
        self.db
            .read(|r| counters::total(r, counters::WRITES_REFUSED))
            .await
    }

    async fn prune(&self, grace: Duration) -> Result<()> {
        let cutoff = self.db.clock().ms_before(grace);
        self.db
            .write(move |tx| shared::prune(tx, cutoff, 10_000).map(|_| ()))
            .await
    }

    fn fence_counts(&self) -> FenceCounts {
        FenceCounts {
            closed: self.counters.sweeps.load(Ordering::Relaxed),
            writes_waited: 0,
            writes_refused: self.counters.refused.load(Ordering::Relaxed),
        }
    }

    fn fence_wait(&self) -> Duration {
        Duration::ZERO
    }

    fn started_ms(&self) -> u64 {
        self.started_ms
    }

    fn solitary(&self) -> bool {
        false
    }

    fn empty_uploads_in_index(&self) -> bool {
        true
    }

    async fn put_empty_upload(&self, id: &str, upload: Upload) -> Result<()> {
        let id = id.to_owned();
        self.db
            .write(move |tx| shared::put_empty_upload(tx, &id, &upload))
            .await
    }

    async fn empty_upload(&self, id: &str) -> Result<Option<Upload>> {
        let id = id.to_owned();
        self.db.read(move |r| shared::empty_upload(r, &id)).await
    }

    async fn take_empty_upload(&self, id: &str) -> Result<Option<Upload>> {
        let id = id.to_owned();
        self.db
            .write(move |tx| shared::take_empty_upload(tx, &id))
            .await
    }

    async fn idle_empty_uploads(&self, cutoff_ms: u64) -> Result<Vec<String>> {
        self.db
            .read(move |r| shared::idle_empty_uploads(r, cutoff_ms))
            .await
    }

    async fn empty_upload_count(&self) -> Result<u64> {
        self.db.read(|r| shared::empty_upload_count(r)).await
    }

    async fn lock_upload(&self, id: &str) -> Result<UploadLock> {
        let name = format!("upload/{id}");
        let deadline = Instant::now() + UPLOAD_WAIT;
        while !self.lease(&name, UPLOAD_LEASE).await? {
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "upload {id} is busy with another request; retry"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(UploadLock {
            _held: Box::new(LeaseGuard {
                db: self.db.clone(),
                name,
                holder: self.node.clone(),
            }),
        })
    }

    async fn lease(&self, name: &str, ttl: Duration) -> Result<bool> {
        let (name, holder) = (name.to_owned(), self.node.clone());
        let ttl = ttl.as_millis() as u64;
        self.db
            .write(move |tx| shared::acquire(tx, &name, &holder, ttl))
            .await
    }

    async fn end_lease(&self, name: &str) -> Result<()> {
        let (name, holder) = (name.to_owned(), self.node.clone());
        self.db
            .write(move |tx| shared::give_up(tx, &name, &holder))
            .await
    }
}
