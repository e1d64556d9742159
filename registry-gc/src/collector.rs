//! The collector: runs, one at a time, on demand or on a schedule; their
//! history; housekeeping. What a run does is in [`crate::run`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use registry_core::Registry;
use registry_core::index::Activity;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::config::{GcConfig, Policy, UntaggedRule};
use crate::error::GcError;
use crate::report::{Deleted, RunReport, RunSettings, RunState};
use crate::schedule::Schedule;

/// Setting that overrides the configured schedule ("off" disables).
const SCHEDULE_SETTING: &str = "gc_schedule";
/// How many run reports the history keeps.
pub const HISTORY: usize = 200;
/// The cluster-wide lease a run holds: one collection at a time.
const RUN_LEASE: &str = "gc-run";
/// The lease a scheduled start takes: one start per scheduled time.
const SCHEDULE_LEASE: &str = "gc-schedule";
/// How often a running collection saves its progress and renews its lease.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long the run lease outlives a node that stopped renewing it.
const RUN_LEASE_TTL: Duration = Duration::from_secs(30);
/// How many of the newest runs a start looks at for runs a stopped node
/// abandoned.
const ABANDONED_LOOKBACK: usize = 8;

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
    /// Run the retention rules first (default: the configured
    /// `retention_first`).
    pub retention: Option<bool>,
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
    pub(crate) registry: Arc<Registry>,
    pub(crate) config: GcConfig,
    /// Serving requests (a restart forgot confirmations, so blobs are
    /// protected for one grace period after start) or working on a stopped
    /// store (nothing to protect).
    pub(crate) online: bool,
    running: Mutex<Option<Running>>,
    schedule: watch::Sender<Option<String>>,
    observer: Option<Arc<dyn GcObserver>>,
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
        let schedule = match registry.setting(SCHEDULE_SETTING).await? {
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
            schedule: tx,
            observer,
        }))
    }

    pub fn config(&self) -> &GcConfig {
        &self.config
    }

    /// Starts a run in the background on behalf of `actor`; its id, or the
    /// id of the run already in progress.
    pub async fn start(
        self: &Arc<Self>,
        request: RunRequest,
        trigger: &str,
        actor: &str,
    ) -> Result<u64, GcError> {
        self.launch(request, trigger, actor).await.map(|(id, _)| id)
    }

    /// Runs to the end and returns the report.
    pub async fn run_to_end(
        self: &Arc<Self>,
        request: RunRequest,
        trigger: &str,
    ) -> Result<RunReport, GcError> {
        let (_, handle) = self.launch(request, trigger, trigger).await?;
        handle
            .await
            .map_err(|e| GcError::Invalid(format!("run task failed: {e}")))
    }

    /// The settings a request asks for, over the configured ones.
    fn settings(&self, request: &RunRequest) -> RunSettings {
        let untagged = match (&request.untagged, request.delete_untagged) {
            (_, true) => vec![UntaggedRule {
                repositories: "**".into(),
                older_than: Duration::ZERO,
            }],
            (Some(rules), false) => rules.clone(),
            (None, false) => self.config.untagged.clone(),
        };
        RunSettings {
            grace_seconds: request.grace.unwrap_or(self.config.grace).as_secs_f64(),
            upload_max_age_seconds: request
                .upload_max_age
                .unwrap_or(self.config.upload_max_age)
                .as_secs_f64(),
            untagged,
            orphaned_referrers: request
                .orphaned_referrers
                .unwrap_or(self.config.orphaned_referrers),
            retention: request.retention.unwrap_or(self.config.retention_first),
        }
    }

    fn new_report(&self, id: u64, request: &RunRequest, trigger: &str, actor: &str) -> RunReport {
        let started = self.registry.clock().now();
        RunReport {
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
            settings: self.settings(request),
            blobs_deleted: 0,
            bytes_freed: 0,
            manifests_deleted: 0,
            uploads_deleted: 0,
            orphans_deleted: 0,
            orphan_bytes: 0,
            protected_blobs: 0,
            protected_bytes: 0,
            next_collectable_ms: None,
            fences: 0,
            fence_total_ms: 0.0,
            fence_max_ms: 0.0,
            fence_durations_ms: Vec::new(),
            writes_waited: 0,
            writes_refused: 0,
            stored_bytes: 0,
            remaining_unreferenced_bytes: 0,
            retention: None,
            deleted: Deleted::default(),
        }
    }

    /// Claims the run slot, then starts the run.
    async fn launch(
        self: &Arc<Self>,
        request: RunRequest,
        trigger: &str,
        actor: &str,
    ) -> Result<(u64, tokio::task::JoinHandle<RunReport>), GcError> {
        let settings = self.settings(&request);
        let policy = Policy::new(&settings.untagged, settings.orphaned_referrers)?;
        // Hold the slot while the id is reserved, so two starts cannot race.
        let placeholder = Arc::new(Mutex::new(self.new_report(0, &request, trigger, actor)));
        {
            let mut running = self.running.lock().expect("running");
            if let Some(r) = running.as_ref() {
                return Err(GcError::Running(r.id));
            }
            *running = Some(Running {
                id: 0,
                report: placeholder.clone(),
            });
        }
        let id = match self.claim().await {
            Ok(id) => id,
            Err(e) => {
                *self.running.lock().expect("running") = None;
                return Err(e);
            }
        };
        let initial = self.new_report(id, &request, trigger, actor);
        // Every node shows the run, and names it to a start it refuses,
        // from the moment its id is answered.
        let json = serde_json::to_vec(&initial).expect("report serializes");
        if let Err(e) = self.registry.save_gc_progress(id, json).await {
            tracing::warn!(run = id, error = %e, "could not save the run's progress");
        }
        let report = Arc::new(Mutex::new(initial));
        *self.running.lock().expect("running") = Some(Running {
            id,
            report: report.clone(),
        });
        let this = self.clone();
        let handle = tokio::spawn(async move {
            let t = Instant::now();
            tracing::info!(
                run = id,
                dry_run = request.dry_run,
                "garbage collection started"
            );
            let heartbeat = this.clone().heartbeat(report.clone());
            let outcome = this.execute(&report, &policy, request.dry_run).await;
            heartbeat.abort();
            let _ = heartbeat.await;
            this.conclude(&report, outcome, t.elapsed()).await
        });
        Ok((id, handle))
    }

    /// Takes the cluster-wide run lease and reserves a run id.
    async fn claim(&self) -> Result<u64, GcError> {
        if !self.registry.lease(RUN_LEASE, RUN_LEASE_TTL).await? {
            // Its report is in the history, so the caller can follow it
            // on any node.
            return Err(match self.running_elsewhere().await {
                Some(id) => GcError::Running(id),
                None => GcError::RunningElsewhere,
            });
        }
        if let Err(e) = self.close_abandoned().await {
            tracing::warn!(error = %e, "could not close runs abandoned by a stopped node");
        }
        match self.registry.begin_gc_run(HISTORY as u64).await {
            Ok(id) => Ok(id),
            Err(e) => {
                let _ = self.registry.end_lease(RUN_LEASE).await;
                Err(e.into())
            }
        }
    }

    /// The run another node is running, as its saved report says (none
    /// before its first save).
    async fn running_elsewhere(&self) -> Option<u64> {
        let runs = self.registry.gc_runs(ABANDONED_LOOKBACK).await.ok()?;
        runs.into_iter().find_map(|(id, json)| {
            let r = serde_json::from_slice::<RunReport>(&json).ok()?;
            (r.state == RunState::Running).then_some(id)
        })
    }

    /// Marks failed the runs whose saved report still says "running" when
    /// this node holds the run lease: the node running them stopped (killed,
    /// or cut off) and its lease expired. Only the newest few can be such
    /// runs: each start closes those before it.
    async fn close_abandoned(&self) -> Result<(), GcError> {
        for (id, json) in self.registry.gc_runs(ABANDONED_LOOKBACK).await? {
            let Ok(mut r) = serde_json::from_slice::<RunReport>(&json) else {
                continue;
            };
            if r.state != RunState::Running || self.running_id() == Some(id) {
                continue;
            }
            r.state = RunState::Failed;
            r.phase = "done".into();
            r.error = Some(
                "the node running it stopped before the run finished (its lease expired)".into(),
            );
            tracing::warn!(
                run = id,
                "garbage collection run abandoned by a stopped node"
            );
            let json = serde_json::to_vec(&r).expect("report serializes");
            // Saved only if still "running": a slow node that finished
            // meanwhile keeps its own report.
            self.registry.save_gc_progress(id, json).await?;
        }
        Ok(())
    }

    /// While a run goes on: saves its report for the other nodes to show,
    /// and renews its lease.
    fn heartbeat(self: Arc<Self>, report: Arc<Mutex<RunReport>>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.tick().await;
            loop {
                tick.tick().await;
                let r = report.lock().expect("report").clone();
                let json = serde_json::to_vec(&r).expect("report serializes");
                if let Err(e) = self.registry.save_gc_progress(r.id, json).await {
                    tracing::warn!(run = r.id, error = %e, "could not save the run's progress");
                }
                if let Err(e) = self.registry.lease(RUN_LEASE, RUN_LEASE_TTL).await {
                    tracing::warn!(run = r.id, error = %e, "could not renew the run lease");
                }
            }
        })
    }

    /// Records how a run ended and frees the slot.
    async fn conclude(
        &self,
        report: &Mutex<RunReport>,
        outcome: Result<(), GcError>,
        took: Duration,
    ) -> RunReport {
        let totals = self.registry.totals().await.ok();
        // The live report keeps saying "running" until the final one is in
        // the history and the slot is free, so a client that sees the run
        // finished can start the next one at once.
        let mut r = report.lock().expect("report").clone();
        r.duration_ms = took.as_millis() as u64;
        r.finished_at = Some(self.registry.clock().now().to_rfc3339());
        r.phase = "done".into();
        if let Some(t) = totals {
            r.stored_bytes = t.blob_bytes;
            r.remaining_unreferenced_bytes = t.unreferenced_bytes;
        }
        match &outcome {
            Ok(()) => {
                r.state = RunState::Succeeded;
                tracing::info!(
                    run = r.id,
                    dry_run = r.dry_run,
                    blobs = r.blobs_deleted,
                    bytes = r.bytes_freed,
                    manifests = r.manifests_deleted,
                    uploads = r.uploads_deleted,
                    orphans = r.orphans_deleted,
                    fences = r.fences,
                    fence_max_ms = r.fence_max_ms,
                    duration_ms = r.duration_ms,
                    "garbage collection finished"
                );
            }
            Err(e) => {
                r.state = RunState::Failed;
                r.error = Some(e.to_string());
                tracing::error!(run = r.id, error = %e, "garbage collection failed");
            }
        }
        if let Some(o) = &self.observer {
            o.run_finished(&r);
        }
        let json = serde_json::to_vec(&r).expect("report serializes");
        if let Err(e) = self
            .registry
            .finish_gc_run(r.id, json, activity_of(&r))
            .await
        {
            tracing::error!(run = r.id, error = %e, "could not record the run");
        }
        if let Err(e) = self.registry.end_lease(RUN_LEASE).await {
            tracing::warn!(run = r.id, error = %e, "could not give the run lease up");
        }
        let mut running = self.running.lock().expect("running");
        *report.lock().expect("report") = r.clone();
        *running = None;
        r
    }

    /// A run's report: the live one, or from the history.
    pub async fn run(&self, id: u64) -> Result<Option<RunReport>, GcError> {
        if let Some(r) = self.live().filter(|r| r.id == id) {
            return Ok(Some(r));
        }
        Ok(self
            .history(HISTORY)
            .await?
            .into_iter()
            .find(|r| r.id == id))
    }

    fn live(&self) -> Option<RunReport> {
        let running = self.running.lock().expect("running");
        running
            .as_ref()
            .filter(|r| r.id != 0)
            .map(|r| r.report.lock().expect("report").clone())
    }

    /// The id of the run in progress.
    pub fn running_id(&self) -> Option<u64> {
        self.live().map(|r| r.id)
    }

    /// The newest runs first (the one in progress included).
    pub async fn history(&self, limit: usize) -> Result<Vec<RunReport>, GcError> {
        let mut out: Vec<RunReport> = self.live().into_iter().collect();
        let live = out.first().map(|r| r.id);
        for (id, json) in self.registry.gc_runs(limit).await? {
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
        self.last_of(false).await
    }

    /// The last finished run that was (or was not) a dry run.
    pub async fn last_of(&self, dry_run: bool) -> Result<Option<RunReport>, GcError> {
        Ok(self
            .history(HISTORY)
            .await?
            .into_iter()
            .find(|r| r.is_finished() && r.dry_run == dry_run))
    }

    // ---- schedule ----

    pub fn schedule(&self) -> Option<String> {
        self.schedule.borrow().clone()
    }

    /// When the next scheduled run starts.
    pub fn next_scheduled(&self) -> Option<chrono::DateTime<Utc>> {
        crate::schedule::next_time(self.schedule().as_deref(), self.registry.clock())
    }

    /// Sets (and keeps across restarts) the schedule; `None` disables it.
    pub async fn set_schedule(&self, expression: Option<&str>) -> Result<(), GcError> {
        let normalized = match expression {
            Some(e) => Some(Schedule::parse(e)?.expression),
            None => None,
        };
        self.registry
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
        let clock = self.registry.clock().clone();
        crate::schedule::spawn_cron(clock, self.schedule.subscribe(), move || {
            let this = this.clone();
            async move { this.scheduled_start().await }
        })
    }

    /// Starts the scheduled run, unless another node of the cluster already
    /// did for this scheduled time.
    async fn scheduled_start(self: &Arc<Self>) {
        match self
            .registry
            .lease(SCHEDULE_LEASE, Duration::from_secs(90))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!("scheduled garbage collection started by another node");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "scheduled garbage collection skipped");
                return;
            }
        }
        match self
            .start(RunRequest::default(), "schedule", "scheduler")
            .await
        {
            Ok(id) => tracing::info!(run = id, "scheduled garbage collection"),
            Err(e) => tracing::warn!(error = %e, "scheduled garbage collection skipped"),
        }
    }

    /// Forgets, once a minute, HEAD/GET confirmations older than the
    /// configured grace period: they protect nothing any more, and without
    /// this a server that never collects would keep one per blob ever
    /// confirmed. A run prunes for itself when it starts. Also writes the
    /// manifest pulls noted since the last minute (for retention rules).
    pub fn spawn_housekeeping(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = this.registry.prune_confirmations(this.config.grace).await {
                    tracing::warn!(error = %e, "could not prune confirmations");
                }
                if let Err(e) = this.registry.flush_pulls().await {
                    tracing::warn!(error = %e, "could not record pulls");
                }
            }
        })
    }
}

/// The activity entry of a finished run.
fn activity_of(r: &RunReport) -> Activity {
    Activity {
        id: 0,
        time_ms: 0,
        actor: r.actor.clone(),
        action: "gc_run".into(),
        repository: None,
        reference: None,
        digest: None,
        detail: json!({
            "run": r.id,
            "trigger": r.trigger,
            "dry_run": r.dry_run,
            "state": r.state,
            "blobs_deleted": r.blobs_deleted,
            "bytes_freed": r.bytes_freed,
            "manifests_deleted": r.manifests_deleted,
            "uploads_deleted": r.uploads_deleted,
            "orphans_deleted": r.orphans_deleted,
        }),
    }
}
