//! The steps of a garbage collection, each proportional to the garbage
//! (reconciliation, which lists the store, runs off the fence in pages).
//!
//! A sweep of blobs: close the fence; doom the candidates no client
//! confirmed within the grace period (a HEAD of a doomed blob now answers
//! 404); in one index transaction, re-check each is still unreferenced and
//! not uploaded or mounted within the grace period and remove its rows;
//! then delete the bytes of those removed; reopen the fence. A crash
//! between the commit and the deletes leaves files without rows, and so
//! does a power cut after them (deletes are not synced), which
//! reconciliation removes: it lists the store a page at a time, and
//! deletes, behind the fence, files with no row that are older than the
//! grace period.
//!
//! **Architecture Invariant:** a blob's bytes are deleted only after the
//! index transaction that removed its row committed, and only inside the
//! fence, so no commit can put the same digest back in between.

use std::collections::HashSet;
use std::time::Duration;

use super::Registry;
use crate::coord::FenceCounts;
use crate::digest::Digest;
use crate::error::Result;
use crate::index::{Collected, DanglingManifest, UnreferencedBlob};
use crate::names::RepoName;

/// What one sweep removed, and how long the fence was closed for it.
#[derive(Debug, Clone)]
pub struct Swept {
    pub removed: Vec<(Digest, u64)>,
    pub fence: Duration,
}

/// What one page of reconciliation found and removed.
#[derive(Debug, Clone, Default)]
pub struct Reconciled {
    /// Files without a row, older than the grace period (removed unless a
    /// dry run).
    pub orphans: Vec<(Digest, u64)>,
    /// How long the fence was closed to remove them.
    pub fence: Option<Duration>,
    /// Where the next page starts; `None` when the store is done.
    pub next: Option<Digest>,
}

impl Registry {
    /// Dangling manifests in (repository, digest) order, after `after`.
    pub async fn dangling_manifests(
        &self,
        after: Option<(&RepoName, &Digest)>,
        limit: usize,
    ) -> Result<Vec<DanglingManifest>> {
        self.index.dangling_manifests(after, limit).await
    }

    /// Deletes the given manifests if they are still dangling and have been
    /// since their cutoff (unix ms) or earlier (with `dry_run`, says what
    /// that would do).
    pub async fn collect_manifests(
        &self,
        targets: &[(RepoName, Digest, u64)],
        dry_run: bool,
    ) -> Result<Collected> {
        self.index.collect_manifests(targets, dry_run).await
    }

    /// Unreferenced blobs in digest order, after `after`.
    pub async fn unreferenced_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<UnreferencedBlob>> {
        self.index.unreferenced_blobs(after, limit).await
    }

    /// Of `page`, the blobs a sweep would take now: not uploaded or mounted
    /// since `seen_cutoff_ms`, and not confirmed by a client within `grace`
    /// (nor, when `online`, within `grace` of this node starting).
    pub async fn collectable(
        &self,
        page: Vec<UnreferencedBlob>,
        seen_cutoff_ms: u64,
        grace: Duration,
        online: bool,
    ) -> Result<Vec<UnreferencedBlob>> {
        let old: Vec<UnreferencedBlob> = page
            .into_iter()
            .filter(|b| b.seen_ms <= seen_cutoff_ms)
            .collect();
        let free: HashSet<Digest> = self
            .node
            .doom(&old, grace, online, true)
            .await?
            .into_iter()
            .collect();
        Ok(old
            .into_iter()
            .filter(|b| free.contains(&b.digest))
            .collect())
    }

    /// Blobs and bytes a collection with `grace` would take now: a walk of
    /// the unreferenced table, proportional to the garbage.
    pub async fn collectable_now(&self, grace: Duration) -> Result<(u64, u64)> {
        let cutoff = self.clock.ms_before(grace);
        let (mut blobs, mut bytes) = (0, 0);
        let mut after: Option<Digest> = None;
        loop {
            let page = self.unreferenced_blobs(after.as_ref(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.digest.clone());
            for b in self.collectable(page, cutoff, grace, true).await? {
                blobs += 1;
                bytes += b.size;
            }
        }
        Ok((blobs, bytes))
    }

    /// One fenced batch: removes the candidates that still qualify (see the
    /// module documentation) and returns them.
    pub async fn sweep(
        &self,
        candidates: &[UnreferencedBlob],
        seen_cutoff_ms: u64,
        grace: Duration,
        online: bool,
    ) -> Result<Swept> {
        let closed = self.node.close().await?;
        let doomed = self.node.doom(candidates, grace, online, false).await?;
        let removed = self.index.remove_blobs(&doomed, seen_cutoff_ms).await;
        let removed = match removed {
            Ok(r) => r,
            Err(e) => {
                let _ = self.node.release(&doomed).await;
                return Err(e);
            }
        };
        let gone: Vec<Digest> = removed.iter().map(|(d, _)| d.clone()).collect();
        if let Err(e) = self.blobs.delete(&gone).await {
            // The rows are gone: the files left are orphans, which the next
            // reconciliation removes.
            tracing::warn!(error = %e, "could not delete swept blobs; reconciliation will");
        }
        self.node.release(&doomed).await?;
        let fence = closed.elapsed();
        drop(closed);
        Ok(Swept { removed, fence })
    }

    /// Reconciles one page of the blob store with the index: files no row
    /// names, last written before `cutoff_ms`, are deleted behind the fence
    /// after a last look at the index (with `dry_run`, only reported).
    pub async fn reconcile(
        &self,
        after: Option<&Digest>,
        limit: usize,
        cutoff_ms: u64,
        dry_run: bool,
    ) -> Result<Reconciled> {
        let listed = self.blobs.list(after, limit).await?;
        let next = (listed.len() == limit)
            .then(|| listed.last().map(|b| b.digest.clone()))
            .flatten();
        let mut orphans = self.without_rows(listed, cutoff_ms).await?;
        if orphans.is_empty() || dry_run {
            return Ok(Reconciled {
                orphans,
                fence: None,
                next,
            });
        }
        let closed = self.node.close().await?;
        let held: Vec<Digest> = orphans.iter().map(|(d, _)| d.clone()).collect();
        self.node.hold(&held).await?;
        // A commit in flight when the page was read has finished now (the
        // fence waited for it, or will be refused): look again.
        let mut still = Vec::with_capacity(orphans.len());
        for (d, size) in orphans {
            if self.index.blob(&d).await?.is_none() {
                still.push((d, size));
            }
        }
        orphans = still;
        let digests: Vec<Digest> = orphans.iter().map(|(d, _)| d.clone()).collect();
        let deleted = self.blobs.delete(&digests).await;
        self.node.release(&held).await?;
        deleted?;
        let fence = closed.elapsed();
        drop(closed);
        Ok(Reconciled {
            orphans,
            fence: Some(fence),
            next,
        })
    }

    async fn without_rows(
        &self,
        listed: Vec<crate::blob::StoredBlob>,
        cutoff_ms: u64,
    ) -> Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        for b in listed {
            if b.modified_ms <= cutoff_ms && self.index.blob(&b.digest).await?.is_none() {
                out.push((b.digest, b.size));
            }
        }
        Ok(out)
    }

    /// Forgets client confirmations older than `grace`.
    pub async fn prune_confirmations(&self, grace: Duration) -> Result<()> {
        self.node.prune(grace).await
    }

    /// Counters of the write fence since this node started.
    pub fn fence_counts(&self) -> FenceCounts {
        self.node.fence_counts()
    }

    /// Commits refused because a sweep held what they wrote: on this node
    /// since it started, or on every node when several share the store
    /// (see [`crate::coord::Coordination::writes_refused`]).
    pub async fn writes_refused(&self) -> Result<u64> {
        self.node.writes_refused().await
    }
}
