//! Retention runs: on demand, on their own schedule, or as the first phase
//! of a collection (see [`crate::GcConfig::retention_first`]). What a run
//! deletes is decided in `registry_core::registry::retention`; this module
//! decides when, and keeps two nodes of a cluster from running at once.

use std::sync::Arc;
use std::time::Duration;

use registry_core::Registry;
use registry_core::policy::RetentionRule;
use registry_core::registry::retention::RetentionReport;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::GcError;
use crate::schedule::{self, Schedule};

/// Setting that overrides the configured schedule ("off" disables).
const SCHEDULE_SETTING: &str = "retention_schedule";
/// The cluster-wide lease a run that deletes holds.
const RUN_LEASE: &str = "retention-run";
/// The lease a scheduled start takes: one start per scheduled time.
const SCHEDULE_LEASE: &str = "retention-schedule";
/// How long the run lease outlives a node that stopped renewing it, and
/// how often a running node renews it.
const RUN_LEASE_TTL: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_secs(10);
/// How often a node re-reads the schedule another node may have changed.
const REFRESH: Duration = Duration::from_secs(60);

/// `[retention]`: the rules and when they run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Cron expression (as for collections, UTC) for runs of their own.
    pub schedule: Option<String>,
    /// The rules (a tag survives if any rule that applies to it keeps it).
    pub rules: Vec<RetentionRule>,
}

pub struct Retainer {
    registry: Arc<Registry>,
    schedule: watch::Sender<Option<String>>,
    /// Held by this node's run that deletes.
    busy: tokio::sync::Mutex<()>,
}

impl Retainer {
    pub async fn new(
        registry: Arc<Registry>,
        configured: Option<String>,
    ) -> Result<Arc<Retainer>, GcError> {
        if let Some(s) = &configured {
            Schedule::parse(s)?;
        }
        let schedule = stored_schedule(&registry, configured.clone()).await?;
        Ok(Arc::new(Retainer {
            registry,
            schedule: watch::channel(schedule).0,
            busy: tokio::sync::Mutex::new(()),
        }))
    }

    /// Runs the rules in force (or `rules`, which a dry run may try before
    /// they are saved) and returns what it deleted or would delete. One run
    /// that deletes at a time, cluster-wide.
    pub async fn run(
        &self,
        dry_run: bool,
        rules: Option<Vec<RetentionRule>>,
        trigger: &str,
        actor: &str,
    ) -> Result<RetentionReport, GcError> {
        if dry_run {
            let r = self.registry.run_retention(true, rules, trigger, actor);
            return Ok(r.await?);
        }
        if rules.is_some() {
            return Err(GcError::Invalid(
                "a run that deletes uses the rules in force: save them first".into(),
            ));
        }
        let _busy = self
            .busy
            .try_lock()
            .map_err(|_| GcError::RetentionRunning)?;
        if !self.registry.lease(RUN_LEASE, RUN_LEASE_TTL).await? {
            return Err(GcError::RetentionRunning);
        }
        let registry = self.registry.clone();
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if let Err(e) = registry.lease(RUN_LEASE, RUN_LEASE_TTL).await {
                    tracing::warn!(error = %e, "could not renew the retention lease");
                }
            }
        });
        let outcome = self
            .registry
            .run_retention(false, None, trigger, actor)
            .await;
        heartbeat.abort();
        let _ = heartbeat.await;
        if let Err(e) = self.registry.end_lease(RUN_LEASE).await {
            tracing::warn!(error = %e, "could not give the retention lease up");
        }
        let report = outcome?;
        tracing::info!(
            trigger,
            tags = report.tags_deleted,
            bytes = report.bytes,
            "retention run finished"
        );
        Ok(report)
    }

    pub fn schedule(&self) -> Option<String> {
        self.schedule.borrow().clone()
    }

    pub fn next_scheduled(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        schedule::next_time(self.schedule().as_deref(), self.registry.clock())
    }

    /// Sets (and keeps, for every node) the schedule; `None` disables it.
    pub async fn set_schedule(&self, expression: Option<&str>) -> Result<(), GcError> {
        let normalized = expression
            .map(|e| Schedule::parse(e).map(|s| s.expression))
            .transpose()?;
        let stored = normalized.as_deref().unwrap_or("off");
        self.registry
            .set_setting(SCHEDULE_SETTING, Some(stored))
            .await?;
        self.schedule.send_replace(normalized);
        Ok(())
    }

    /// Runs the schedule (and follows changes other nodes make to it) until
    /// the process ends.
    pub fn spawn_scheduler(self: &Arc<Self>, configured: Option<String>) {
        let this = self.clone();
        let clock = self.registry.clock().clone();
        schedule::spawn_cron(clock, self.schedule.subscribe(), move || {
            let this = this.clone();
            async move { this.scheduled_run().await }
        });
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                match stored_schedule(&this.registry, configured.clone()).await {
                    Ok(s) => {
                        this.schedule.send_if_modified(|old| {
                            let changed = *old != s;
                            *old = s;
                            changed
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "could not read the retention schedule"),
                }
            }
        });
    }

    async fn scheduled_run(&self) {
        match self
            .registry
            .lease(SCHEDULE_LEASE, Duration::from_secs(90))
            .await
        {
            Ok(true) => {}
            Ok(false) => return, // another node started this one
            Err(e) => {
                tracing::warn!(error = %e, "scheduled retention run skipped");
                return;
            }
        }
        if let Err(e) = self.run(false, None, "schedule", "scheduler").await {
            tracing::warn!(error = %e, "scheduled retention run failed");
        }
    }
}

/// The schedule in force: the one set at run time, else the configured one.
async fn stored_schedule(
    registry: &Registry,
    configured: Option<String>,
) -> Result<Option<String>, GcError> {
    Ok(match registry.setting(SCHEDULE_SETTING).await? {
        Some(s) if s == "off" => None,
        Some(s) => Some(s),
        None => configured,
    })
}
