//! The collector: runs, one at a time, on demand or on a schedule.
//!
//! A run has three phases, each proportional to the garbage, never to the
//! store:
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
//!    on a snapshot (no lock, readers and writers go on). For each batch of
//!    at most `batch_size`: close the write fence; doom the candidates no
//!    client confirmed within the grace period (a HEAD now answers 404 for
//!    them); move their files to the trash; in one index transaction
//!    re-check each is still unreferenced and not uploaded or mounted
//!    within the grace period, and remove its rows and links; move back
//!    any file whose row stayed; reopen the fence. The trash is emptied
//!    after the fence is open. A crash anywhere leaves either the row and
//!    the file (the file is moved back from the trash at start-up) or
//!    neither (the trash is emptied at start-up).
//!
//! Why this is safe while pushes go on: a blob is deleted only if, inside
//! the fence, its reference count is 0 and nothing uploaded, mounted or
//! confirmed it within the grace period. Pushes that would add a reference
//! (manifest PUT, mount, blob commit) cannot run inside the fence; a push
//! that confirmed a blob with HEAD before the fence protected it, one that
//! tries during the fence is told it is gone and uploads it again after.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use registry_core::index::UnreferencedBlob;
use registry_core::{Digest, Registry, RepoName};
use serde::Deserialize;
use tokio::sync::watch;

use crate::config::{GcConfig, Policy, UntaggedRule};
use crate::error::GcError;
use crate::report::{BlobItem, Deleted, ManifestItem, RunReport, RunSettings, RunState};
use crate::schedule::Schedule;

/// Index setting that overrides the configured schedule ("off" disables).
const SCHEDULE_SETTING: &str = "gc_schedule";
/// How many run reports the history keeps.
pub const HISTORY: usize = 200;

/// What a caller may change for one run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunRequest {
    pub dry_run: bool,
    #[serde(with = "humantime_serde")]
    pub grace: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub upload_max_age: Option<Duration>,
    /// Replaces the configured untagged rules for this run.
    pub untagged: Option<Vec<UntaggedRule>>,
    /// Shortcut: collect untagged manifests in every repository, whatever
    /// their age.
    pub delete_untagged: bool,
    pub orphaned_referrers: Option<bool>,
}

/// Told about every finished run (the HTTP crate turns this into metrics).
pub trait GcObserver: Send + Sync + 'static {
    fn run_finished(&self, report: &RunReport);
}

struct Running {
    id: u64,
    report: Arc<Mutex<RunReport>>,
}

pub struct Collector {
    registry: Arc<Registry>,
    config: GcConfig,
    /// Serving requests (a restart forgot confirmations, so blobs are
    /// protected for one grace period after start) or working on a stopped
    /// store (nothing to protect).
    online: bool,
    running: Mutex<Option<Running>>,
    next_id: Mutex<u64>,
    schedule: watch::Sender<Option<String>>,
    observer: Option<Arc<dyn GcObserver>>,
}

fn now_ms() -> u64 {
    Utc::now().timestamp_millis().max(0) as u64
}

fn ms_before(now_ms: u64, d: Duration) -> u64 {
    now_ms.saturating_sub(d.as_millis() as u64)
}

impl Collector {
    pub async fn new(
        registry: Arc<Registry>,
        config: GcConfig,
        online: bool,
    ) -> Result<Arc<Collector>, GcError> {
        Collector::observed(registry, config, online, None).await
    }

    /// A collector that reports every finished run to `observer`.
    pub async fn observed(
        registry: Arc<Registry>,
        config: GcConfig,
        online: bool,
        observer: Option<Arc<dyn GcObserver>>,
    ) -> Result<Arc<Collector>, GcError> {
        config.validate()?;
        let index = registry.index().clone();
        let last_id = index.gc_runs(1).await?.first().map_or(0, |(id, _)| *id);
        let schedule = match index.setting(SCHEDULE_SETTING).await? {
            Some(s) if s == "off" => None,
            Some(s) => Some(s),
            None => config.schedule.clone(),
        };
        let (tx, _) = watch::channel(schedule);
        Ok(Arc::new(Collector {
            registry,
            config,
            online,
            running: Mutex::new(None),
            next_id: Mutex::new(last_id + 1),
            schedule: tx,
            observer,
        }))
    }

    pub fn config(&self) -> &GcConfig {
        &self.config
    }

    /// Starts a run in the background on behalf of `actor`; its id, or the
    /// id of the run already in progress.
    pub fn start(
        self: &Arc<Self>,
        request: RunRequest,
        trigger: &str,
        actor: &str,
    ) -> Result<u64, GcError> {
        self.launch(request, trigger, actor).map(|(id, _)| id)
    }

    /// Runs to the end and returns the report.
    pub async fn run_to_end(
        self: &Arc<Self>,
        request: RunRequest,
        trigger: &str,
    ) -> Result<RunReport, GcError> {
        let (_, handle) = self.launch(request, trigger, trigger)?;
        handle
            .await
            .map_err(|e| GcError::Invalid(format!("run task failed: {e}")))
    }

    fn launch(
        self: &Arc<Self>,
        request: RunRequest,
        trigger: &str,
        actor: &str,
    ) -> Result<(u64, tokio::task::JoinHandle<RunReport>), GcError> {
        let mut running = self.running.lock().expect("running");
        if let Some(r) = running.as_ref() {
            return Err(GcError::Running(r.id));
        }
        let untagged = match (&request.untagged, request.delete_untagged) {
            (_, true) => vec![UntaggedRule {
                repositories: "**".into(),
                older_than: Duration::ZERO,
            }],
            (Some(rules), false) => rules.clone(),
            (None, false) => self.config.untagged.clone(),
        };
        let settings = RunSettings {
            grace_seconds: request.grace.unwrap_or(self.config.grace).as_secs_f64(),
            upload_max_age_seconds: request
                .upload_max_age
                .unwrap_or(self.config.upload_max_age)
                .as_secs_f64(),
            untagged,
            orphaned_referrers: request
                .orphaned_referrers
                .unwrap_or(self.config.orphaned_referrers),
        };
        let policy = Policy::new(&settings.untagged, settings.orphaned_referrers)?;
        let id = {
            let mut next = self.next_id.lock().expect("next id");
            let id = *next;
            *next += 1;
            id
        };
        let started = Utc::now();
        let report = Arc::new(Mutex::new(RunReport {
            id,
            trigger: trigger.to_owned(),
            actor: actor.to_owned(),
            dry_run: request.dry_run,
            state: RunState::Running,
            error: None,
            phase: "starting".into(),
            started_at: started.to_rfc3339(),
            started_ms: started.timestamp_millis().max(0) as u64,
            finished_at: None,
            duration_ms: 0,
            settings,
            blobs_deleted: 0,
            bytes_freed: 0,
            manifests_deleted: 0,
            uploads_deleted: 0,
            fences: 0,
            fence_total_ms: 0.0,
            fence_max_ms: 0.0,
            fence_durations_ms: Vec::new(),
            writes_waited: 0,
            writes_refused: 0,
            stored_bytes: 0,
            remaining_unreferenced_bytes: 0,
            deleted: Deleted::default(),
        }));
        *running = Some(Running {
            id,
            report: report.clone(),
        });
        drop(running);
        let this = self.clone();
        let handle = tokio::spawn(async move {
            let t = Instant::now();
            tracing::info!(
                run = id,
                dry_run = request.dry_run,
                "garbage collection started"
            );
            let outcome = this.execute(&report, &policy, request.dry_run).await;
            let totals = this.registry.index().totals().await.ok();
            // The live report keeps saying "running" until the final one is
            // in the history and the slot is free, so a client that sees the
            // run finished can start the next one at once.
            let final_report = {
                let mut r = report.lock().expect("report").clone();
                r.duration_ms = t.elapsed().as_millis() as u64;
                r.finished_at = Some(Utc::now().to_rfc3339());
                r.phase = "done".into();
                if let Some(t) = totals {
                    r.stored_bytes = t.blob_bytes;
                    r.remaining_unreferenced_bytes = t.unreferenced_bytes;
                }
                match &outcome {
                    Ok(()) => r.state = RunState::Succeeded,
                    Err(e) => {
                        r.state = RunState::Failed;
                        r.error = Some(e.to_string());
                    }
                }
                r
            };
            match &outcome {
                Ok(()) => tracing::info!(
                    run = id,
                    dry_run = final_report.dry_run,
                    blobs = final_report.blobs_deleted,
                    bytes = final_report.bytes_freed,
                    manifests = final_report.manifests_deleted,
                    uploads = final_report.uploads_deleted,
                    fences = final_report.fences,
                    fence_max_ms = final_report.fence_max_ms,
                    duration_ms = final_report.duration_ms,
                    "garbage collection finished"
                ),
                Err(e) => tracing::error!(run = id, error = %e, "garbage collection failed"),
            }
            if let Some(o) = &this.observer {
                o.run_finished(&final_report);
            }
            if let Err(e) = this.save(&final_report).await {
                tracing::error!(run = id, error = %e, "could not record the run");
            }
            let mut running = this.running.lock().expect("running");
            *report.lock().expect("report") = final_report.clone();
            *running = None;
            final_report
        });
        Ok((id, handle))
    }

    async fn save(&self, report: &RunReport) -> Result<(), GcError> {
        let json = serde_json::to_vec(report).expect("report serializes");
        self.registry.index().save_gc_run(report.id, json).await?;
        Ok(())
    }

    /// A run's report: the live one, or from the history.
    pub async fn run(&self, id: u64) -> Result<Option<RunReport>, GcError> {
        if let Some(r) = self
            .running
            .lock()
            .expect("running")
            .as_ref()
            .filter(|r| r.id == id)
        {
            return Ok(Some(r.report.lock().expect("report").clone()));
        }
        Ok(self
            .history(HISTORY)
            .await?
            .into_iter()
            .find(|r| r.id == id))
    }

    /// The id of the run in progress.
    pub fn running_id(&self) -> Option<u64> {
        self.running.lock().expect("running").as_ref().map(|r| r.id)
    }

    /// The newest runs first (the one in progress included).
    pub async fn history(&self, limit: usize) -> Result<Vec<RunReport>, GcError> {
        let mut out = Vec::new();
        if let Some(r) = self.running.lock().expect("running").as_ref() {
            out.push(r.report.lock().expect("report").clone());
        }
        let live = out.first().map(|r| r.id);
        for (id, json) in self.registry.index().gc_runs(limit).await? {
            // A run being recorded right now is already listed live.
            if Some(id) == live || out.len() >= limit {
                continue;
            }
            if let Ok(r) = serde_json::from_slice::<RunReport>(&json) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The last finished run that was not a dry run.
    pub async fn last(&self) -> Result<Option<RunReport>, GcError> {
        Ok(self
            .history(HISTORY)
            .await?
            .into_iter()
            .find(|r| r.is_finished() && !r.dry_run))
    }

    // ---- schedule ----

    pub fn schedule(&self) -> Option<String> {
        self.schedule.borrow().clone()
    }

    /// When the next scheduled run starts.
    pub fn next_scheduled(&self) -> Option<chrono::DateTime<Utc>> {
        let s = self.schedule()?;
        Schedule::parse(&s).ok()?.next_after(Utc::now())
    }

    /// Sets (and keeps across restarts) the schedule; `None` disables it.
    pub async fn set_schedule(&self, expression: Option<&str>) -> Result<(), GcError> {
        let normalized = match expression {
            Some(e) => Some(Schedule::parse(e)?.expression),
            None => None,
        };
        self.registry
            .index()
            .set_setting(
                SCHEDULE_SETTING,
                Some(normalized.as_deref().unwrap_or("off")),
            )
            .await?;
        self.schedule.send_replace(normalized);
        Ok(())
    }

    /// Runs the schedule until the process ends.
    pub fn spawn_scheduler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let mut changes = self.schedule.subscribe();
        tokio::spawn(async move {
            loop {
                let next = this.next_scheduled();
                let Some(at) = next else {
                    if changes.changed().await.is_err() {
                        return;
                    }
                    continue;
                };
                let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {
                        match this.start(RunRequest::default(), "schedule", "scheduler") {
                            Ok(id) => tracing::info!(run = id, "scheduled garbage collection"),
                            Err(e) => tracing::warn!(error = %e, "scheduled garbage collection skipped"),
                        }
                        // Do not fire twice for the same minute.
                        tokio::time::sleep(Duration::from_millis(1100)).await;
                    }
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
        })
    }

    /// Forgets, once a minute, HEAD/GET confirmations older than the
    /// configured grace period: they protect nothing any more, and without
    /// this a server that never collects would keep one per blob ever
    /// confirmed. A run prunes for itself when it starts.
    pub fn spawn_housekeeping(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.registry.fence().prune(this.config.grace);
            }
        })
    }

    // ---- the run itself ----

    fn update(report: &Mutex<RunReport>, f: impl FnOnce(&mut RunReport)) {
        f(&mut report.lock().expect("report"));
    }

    async fn execute(
        &self,
        report: &Mutex<RunReport>,
        policy: &Policy,
        dry_run: bool,
    ) -> Result<(), GcError> {
        let settings = report.lock().expect("report").settings.clone();
        let grace = Duration::from_secs_f64(settings.grace_seconds);
        let upload_age = Duration::from_secs_f64(settings.upload_max_age_seconds);
        let now = now_ms();
        // A run asked for a shorter grace must not strip the protection
        // that later runs with the configured one still owe.
        self.registry.fence().prune(grace.max(self.config.grace));

        Self::update(report, |r| r.phase = "uploads".into());
        self.collect_uploads(report, ms_before(now, upload_age), dry_run)
            .await?;

        Self::update(report, |r| r.phase = "manifests".into());
        let mut freed_by_manifests = Vec::new();
        if policy.collects_manifests() {
            freed_by_manifests = self
                .collect_manifests(report, policy, now, grace, dry_run)
                .await?;
        }

        Self::update(report, |r| r.phase = "blobs".into());
        self.collect_blobs(
            report,
            ms_before(now_ms(), grace),
            grace,
            dry_run,
            freed_by_manifests,
        )
        .await
    }

    async fn collect_uploads(
        &self,
        report: &Mutex<RunReport>,
        cutoff_ms: u64,
        dry_run: bool,
    ) -> Result<(), GcError> {
        let recorded = self.registry.index().uploads().await?;
        let empty = self.registry.idle_empty_uploads(cutoff_ms);
        let candidates = recorded
            .into_iter()
            .filter(|(_, u)| u.updated_ms <= cutoff_ms)
            .map(|(id, _)| id)
            .chain(empty);
        for id in candidates {
            let purged = dry_run || self.registry.purge_upload_if_idle(&id, cutoff_ms).await?;
            if purged {
                Self::update(report, |r| {
                    r.uploads_deleted += 1;
                    Deleted::push(&mut r.deleted.uploads, &mut r.deleted.truncated, id);
                });
            }
        }
        Ok(())
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
        let index = self.registry.index();
        let batch = self.config.batch_size;
        let mut after: Option<(RepoName, Digest)> = None;
        let mut targets: Vec<(RepoName, Digest, u64)> = Vec::new();
        loop {
            let page = index
                .dangling_manifests(after.as_ref().map(|(r, d)| (r, d)), batch)
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
                    let cutoff = ms_before(now, age);
                    if m.since_ms <= cutoff {
                        targets.push((m.repository, m.digest, cutoff));
                    }
                }
            }
        }
        let mut freed = Vec::new();
        // A dry run is one rolled-back transaction over all targets, so what
        // it reports is exactly what the deletions would do.
        let chunk = if dry_run { targets.len().max(1) } else { batch };
        for part in targets.chunks(chunk) {
            let collected = index.collect_manifests(part, dry_run).await?;
            Self::update(report, |r| {
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
        let index = self.registry.index().clone();
        let fence = self.registry.fence();
        let waited_before = fence.stats.writes_waited.load(Ordering::Relaxed);
        let refused_before = fence.stats.writes_refused.load(Ordering::Relaxed);
        let mut after: Option<Digest> = None;
        let mut dry_extra = if dry_run {
            freed_by_manifests
        } else {
            Vec::new()
        };
        loop {
            let mut page = index
                .unreferenced_blobs(after.as_ref(), self.config.batch_size)
                .await?;
            let exhausted = page.is_empty();
            if let Some(last) = page.last() {
                after = Some(last.digest.clone());
            }
            if exhausted {
                // A dry run also counts what its manifest deletions would free.
                page = std::mem::take(&mut dry_extra);
                if page.is_empty() {
                    break;
                }
            }
            let sizes: std::collections::HashMap<Digest, u64> =
                page.iter().map(|b| (b.digest.clone(), b.size)).collect();
            let candidates: Vec<Digest> = page
                .into_iter()
                .filter(|b| b.seen_ms <= seen_cutoff_ms)
                .map(|b| b.digest)
                .collect();
            if !candidates.is_empty() {
                let removed = if dry_run {
                    fence
                        .unconfirmed(&candidates, grace, self.online)
                        .into_iter()
                        .map(|d| {
                            let size = sizes[&d];
                            (d, size)
                        })
                        .collect()
                } else {
                    self.sweep(report, &candidates, seen_cutoff_ms, grace)
                        .await?
                };
                Self::update(report, |r| {
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
            }
            if exhausted {
                break;
            }
        }
        Self::update(report, |r| {
            r.writes_waited = fence.stats.writes_waited.load(Ordering::Relaxed) - waited_before;
            r.writes_refused = fence.stats.writes_refused.load(Ordering::Relaxed) - refused_before;
        });
        if !dry_run {
            self.registry.blobs().empty_trash().await?;
        }
        Ok(())
    }

    /// One fenced batch: returns the blobs removed.
    async fn sweep(
        &self,
        report: &Mutex<RunReport>,
        candidates: &[Digest],
        seen_cutoff_ms: u64,
        grace: Duration,
    ) -> Result<Vec<(Digest, u64)>, GcError> {
        let blobs = self.registry.blobs();
        let index = self.registry.index();
        let fence = self.registry.fence();
        let closed = fence.close().await;
        let doomed = fence.doom(candidates, grace, self.online);
        // All or none of the batch goes to the trash.
        let outcome = match blobs.trash(&doomed).await {
            Ok(()) => index.remove_blobs(&doomed, seen_cutoff_ms).await,
            Err(e) => {
                drop(closed);
                return Err(e.into());
            }
        };
        let removed = match &outcome {
            Ok(removed) => removed.clone(),
            Err(_) => Vec::new(),
        };
        // Anything trashed whose row stayed goes back before the fence opens.
        let gone: std::collections::HashSet<&Digest> = removed.iter().map(|(d, _)| d).collect();
        let kept: Vec<Digest> = doomed
            .iter()
            .filter(|d| !gone.contains(d))
            .cloned()
            .collect();
        if !kept.is_empty() {
            blobs.restore(&kept).await?;
        }
        let fence_time = closed.elapsed();
        drop(closed);
        let ms = fence_time.as_secs_f64() * 1000.0;
        let bytes: u64 = removed.iter().map(|(_, s)| s).sum();
        tracing::info!(
            blobs = removed.len(),
            bytes,
            fence_ms = ms,
            "garbage collection fence lifted"
        );
        Self::update(report, |r| {
            r.fences += 1;
            r.fence_total_ms += ms;
            r.fence_max_ms = r.fence_max_ms.max(ms);
            if r.fence_durations_ms.len() < crate::report::MAX_LISTED {
                r.fence_durations_ms.push(ms);
            }
        });
        blobs.empty_trash().await?;
        Ok(outcome?)
    }
}
