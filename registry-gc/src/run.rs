//! What a run does. Four phases, each proportional to the garbage, never
//! to the store (reconciliation walks the store, but off the fence, a page
//! at a time), after an optional retention phase that deletes the tags the
//! retention rules condemn (so the phases below collect what they leave):
//!
//! 1. **uploads**: sessions idle for longer than `upload_max_age` are
//!    purged with their data (under the session's lock, rechecked there).
//! 2. **manifests**: only if a policy asks. The index keeps a table of
//!    dangling manifests (untagged, listed by no index in their repository,
//!    not attached to a stored subject); the run picks the ones a policy
//!    covers and deletes them in batches, each one transaction that
//!    re-checks every manifest is still dangling and old enough. A child of
//!    an index, or a referrer of a stored subject, is never dangling, so it
//!    is never collected while what keeps it is there. Deleting a manifest
//!    drops the reference counts it held in the same transaction.
//! 3. **blobs**: candidates come from the index's unreferenced table, read
//!    on a snapshot (no lock, readers and writers go on), and are swept in
//!    fenced batches of at most `batch_size` (see
//!    `registry_core::registry::gc` for a sweep and its safety argument).
//! 4. **reconcile**: files without an index row (a crash between a sweep's
//!    commit and its deletes, or between an upload's rename and its commit;
//!    a power cut that undid deletes, which are not synced) older than the
//!    grace period are deleted; skipped by dry runs.
//!
//! Why this is safe while pushes go on: a blob is deleted only if, inside
//! the fence, its reference count is 0 and nothing uploaded, mounted or
//! confirmed it within the grace period. Pushes that would add a reference
//! (manifest PUT, mount, blob commit) cannot run inside the fence; a push
//! that confirmed a blob with HEAD before the fence protected it, one that
//! tries during the fence is told it is gone and uploads it again after.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use registry_core::index::UnreferencedBlob;
use registry_core::{Digest, RepoName};

use crate::collector::Collector;
use crate::config::Policy;
use crate::error::GcError;
use crate::report::{BlobItem, Deleted, ManifestItem, RetentionPhase, RunReport};

fn update(report: &Mutex<RunReport>, f: impl FnOnce(&mut RunReport)) {
    f(&mut report.lock().expect("report"));
}

/// Counts the unreferenced blobs of a page that stayed (uploaded, mounted
/// or confirmed within the grace period) and when the first becomes
/// collectable at the latest: a grace period after its upload or mount, or
/// after now for one a client confirmed.
fn note_protected(
    report: &Mutex<RunReport>,
    offered: &[(Digest, u64, u64)],
    removed: &[(Digest, u64)],
    seen_cutoff_ms: u64,
    grace: Duration,
) {
    let grace_ms = grace.as_millis() as u64;
    let gone: std::collections::HashSet<&Digest> = removed.iter().map(|(d, _)| d).collect();
    update(report, |r| {
        for (_, size, seen_ms) in offered.iter().filter(|(d, _, _)| !gone.contains(d)) {
            r.protected_blobs += 1;
            r.protected_bytes += size;
            let at = match *seen_ms > seen_cutoff_ms {
                true => seen_ms + grace_ms,
                false => seen_cutoff_ms + 2 * grace_ms,
            };
            r.next_collectable_ms = Some(r.next_collectable_ms.map_or(at, |t| t.min(at)));
        }
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Collector {
    pub(crate) async fn execute(
        &self,
        report: &Mutex<RunReport>,
        policy: &Policy,
        dry_run: bool,
    ) -> Result<(), GcError> {
        let settings = report.lock().expect("report").settings.clone();
        let grace = Duration::from_secs_f64(settings.grace_seconds);
        let upload_age = Duration::from_secs_f64(settings.upload_max_age_seconds);
        let clock = self.registry.clock().clone();
        let now = clock.now_ms();
        // A run asked for a shorter grace must not strip the protection
        // that later runs with the configured one still owe.
        self.registry
            .prune_confirmations(grace.max(self.config.grace))
            .await?;
        let counts_before = self.registry.fence_counts();
        let refused_before = self.registry.writes_refused().await?;

        if settings.retention {
            update(report, |r| r.phase = "retention".into());
            self.retention_phase(report, dry_run).await?;
        }

        update(report, |r| r.phase = "uploads".into());
        self.collect_uploads(report, clock.ms_before(upload_age), dry_run)
            .await?;

        update(report, |r| r.phase = "manifests".into());
        let mut freed_by_manifests = Vec::new();
        if policy.collects_manifests() {
            freed_by_manifests = self
                .collect_manifests(report, policy, now, grace, dry_run)
                .await?;
        }

        update(report, |r| r.phase = "blobs".into());
        let cutoff = clock.ms_before(grace);
        self.collect_blobs(report, cutoff, grace, dry_run, freed_by_manifests)
            .await?;

        if !dry_run {
            update(report, |r| r.phase = "reconcile".into());
            self.reconcile(report, cutoff).await?;
        }
        let counts = self.registry.fence_counts();
        let refused = self.registry.writes_refused().await?;
        update(report, |r| {
            r.writes_waited = counts.writes_waited - counts_before.writes_waited;
            r.writes_refused = refused.saturating_sub(refused_before);
        });
        Ok(())
    }

    /// Deletes the tags the retention rules condemn, so that the phases
    /// after it collect what they leave behind.
    async fn retention_phase(
        &self,
        report: &Mutex<RunReport>,
        dry_run: bool,
    ) -> Result<(), GcError> {
        let actor = report.lock().expect("report").actor.clone();
        let r = self
            .registry
            .run_retention(dry_run, None, "gc", &actor)
            .await?;
        update(report, |run| {
            run.retention = Some(RetentionPhase {
                tags_deleted: r.tags_deleted,
                repositories: r.repositories.len() as u64,
                bytes: r.bytes,
            })
        });
        Ok(())
    }

    async fn collect_uploads(
        &self,
        report: &Mutex<RunReport>,
        cutoff_ms: u64,
        dry_run: bool,
    ) -> Result<(), GcError> {
        for id in self.registry.idle_uploads(cutoff_ms).await? {
            let purged = dry_run || self.registry.purge_upload_if_idle(&id, cutoff_ms).await?;
            if purged {
                update(report, |r| {
                    r.uploads_deleted += 1;
                    Deleted::push(&mut r.deleted.uploads, &mut r.deleted.truncated, id);
                });
            }
        }
        Ok(())
    }

    /// The dangling manifests the policy covers, with their cutoffs.
    async fn manifest_targets(
        &self,
        policy: &Policy,
        now: u64,
        grace: Duration,
    ) -> Result<Vec<(RepoName, Digest, u64)>, GcError> {
        let mut after: Option<(RepoName, Digest)> = None;
        let mut targets = Vec::new();
        loop {
            let page = self
                .registry
                .dangling_manifests(after.as_ref().map(|(r, d)| (r, d)), self.config.batch_size)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some((last.repository.clone(), last.digest.clone()));
            for m in page {
                let by_untagged = policy.untagged_age(m.repository.as_str());
                let by_referrer =
                    (m.orphaned_referrer && policy.orphaned_referrers).then_some(grace);
                // The most permissive rule that covers it decides its age.
                let age = match (by_untagged, by_referrer) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if let Some(age) = age {
                    let cutoff = now.saturating_sub(age.as_millis() as u64);
                    if m.since_ms <= cutoff {
                        targets.push((m.repository, m.digest, cutoff));
                    }
                }
            }
        }
        Ok(targets)
    }

    /// Deletes the dangling manifests the policy covers; returns (for a dry
    /// run) the blobs those deletions would leave unreferenced.
    async fn collect_manifests(
        &self,
        report: &Mutex<RunReport>,
        policy: &Policy,
        now: u64,
        grace: Duration,
        dry_run: bool,
    ) -> Result<Vec<UnreferencedBlob>, GcError> {
        let targets = self.manifest_targets(policy, now, grace).await?;
        let mut freed = Vec::new();
        // A dry run is one thrown-away transaction over all targets, so what
        // it reports is exactly what the deletions would do.
        let chunk = if dry_run {
            targets.len().max(1)
        } else {
            self.config.batch_size
        };
        for part in targets.chunks(chunk) {
            let collected = self.registry.collect_manifests(part, dry_run).await?;
            update(report, |r| {
                for m in &collected.manifests {
                    r.manifests_deleted += 1;
                    let item = ManifestItem {
                        repository: m.repository.to_string(),
                        digest: m.digest.to_string(),
                        size: m.size,
                    };
                    Deleted::push(&mut r.deleted.manifests, &mut r.deleted.truncated, item);
                }
            });
            freed.extend(collected.freed);
        }
        Ok(freed)
    }

    async fn collect_blobs(
        &self,
        report: &Mutex<RunReport>,
        seen_cutoff_ms: u64,
        grace: Duration,
        dry_run: bool,
        freed_by_manifests: Vec<UnreferencedBlob>,
    ) -> Result<(), GcError> {
        let mut after: Option<Digest> = None;
        // A dry run also counts what its manifest deletions would free.
        let mut extra = if dry_run {
            freed_by_manifests
        } else {
            Vec::new()
        };
        loop {
            let mut page = self
                .registry
                .unreferenced_blobs(after.as_ref(), self.config.batch_size)
                .await?;
            let exhausted = page.is_empty();
            if let Some(last) = page.last() {
                after = Some(last.digest.clone());
            }
            if exhausted {
                page = std::mem::take(&mut extra);
                if page.is_empty() {
                    break;
                }
            }
            let offered: Vec<(Digest, u64, u64)> = page
                .iter()
                .map(|b| (b.digest.clone(), b.size, b.seen_ms))
                .collect();
            let removed: Vec<(Digest, u64)> = if dry_run {
                self.registry
                    .collectable(page, seen_cutoff_ms, grace, self.online)
                    .await?
                    .into_iter()
                    .map(|b| (b.digest, b.size))
                    .collect()
            } else {
                self.sweep(report, page, seen_cutoff_ms, grace).await?
            };
            note_protected(report, &offered, &removed, seen_cutoff_ms, grace);
            update(report, |r| {
                for (d, size) in removed {
                    r.blobs_deleted += 1;
                    r.bytes_freed += size;
                    let item = BlobItem {
                        digest: d.to_string(),
                        size,
                    };
                    Deleted::push(&mut r.deleted.blobs, &mut r.deleted.truncated, item);
                }
            });
            if exhausted {
                break;
            }
        }
        Ok(())
    }

    /// One fenced batch of a page of candidates; returns the blobs removed.
    async fn sweep(
        &self,
        report: &Mutex<RunReport>,
        page: Vec<UnreferencedBlob>,
        seen_cutoff_ms: u64,
        grace: Duration,
    ) -> Result<Vec<(Digest, u64)>, GcError> {
        let candidates: Vec<UnreferencedBlob> = page
            .into_iter()
            .filter(|b| b.seen_ms <= seen_cutoff_ms)
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let swept = self
            .registry
            .sweep(&candidates, seen_cutoff_ms, grace, self.online)
            .await?;
        let bytes: u64 = swept.removed.iter().map(|(_, s)| s).sum();
        tracing::info!(
            blobs = swept.removed.len(),
            bytes,
            fence_ms = ms(swept.fence),
            "garbage collection fence lifted"
        );
        update(report, |r| r.fenced(ms(swept.fence)));
        Ok(swept.removed)
    }

    /// Deletes files no row names that are older than the grace period.
    async fn reconcile(&self, report: &Mutex<RunReport>, cutoff_ms: u64) -> Result<(), GcError> {
        let mut after: Option<Digest> = None;
        let mut sizes: HashMap<Digest, u64> = HashMap::new();
        loop {
            let page = self
                .registry
                .reconcile(after.as_ref(), self.config.batch_size, cutoff_ms, false)
                .await?;
            if let Some(fence) = page.fence {
                tracing::info!(
                    orphans = page.orphans.len(),
                    fence_ms = ms(fence),
                    "files without an index row removed"
                );
                update(report, |r| r.fenced(ms(fence)));
            }
            sizes.extend(page.orphans);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        update(report, |r| {
            r.orphans_deleted = sizes.len() as u64;
            r.orphan_bytes = sizes.values().sum();
        });
        Ok(())
    }
}
