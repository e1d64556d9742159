//! The deliverer of one endpoint: while this node holds the endpoint's
//! lease, it reads the activity log after the endpoint's cursor, POSTs each
//! event it wants in id order (retrying one until it is delivered or too
//! old), and moves the cursor in the index after each. Nothing here runs
//! on a request's path: a push only wrote its activity entry.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry_core::index::Activity;
use registry_core::model::hooks::Advance;
use registry_core::{Error, Registry};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Endpoint, EventKind};
use crate::error::HookError;
use crate::event::cloud_event;
use crate::order::{Horizon, Plan, plan};
use crate::{HookObserver, NodeStatus, deliver};

/// How long an endpoint's lease outlives a node that stopped renewing it,
/// and how often the holder renews it.
const LEASE_TTL: Duration = Duration::from_secs(30);
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How often a node that does not deliver an endpoint asks for its lease.
const STANDBY: Duration = Duration::from_secs(5);
/// How often the log is read when nothing signalled a change (entries
/// other nodes write signal nothing here).
const POLL: Duration = Duration::from_secs(2);
/// Entries read at once.
const BATCH: usize = 100;
/// Entries looked at to count the pending ones (beyond, each counts), and
/// how often they are counted at most.
pub(crate) const PENDING_CAP: usize = 10_000;
const PENDING_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct Worker {
    pub registry: Arc<Registry>,
    pub endpoint: Arc<Endpoint>,
    pub client: reqwest::Client,
    /// The CloudEvents `source`.
    pub source: String,
    pub observer: Arc<dyn HookObserver>,
    pub status: Arc<Mutex<NodeStatus>>,
    pub stop: CancellationToken,
    /// When the pending events were last counted.
    pub counted: Mutex<Option<Instant>>,
}

/// How one event ended.
enum Sent {
    Delivered,
    /// Older than the endpoint's maximum age before it could be delivered.
    TooOld,
    /// The lease was lost (or the node is stopping): another node goes on.
    Lost,
}

impl Worker {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn lease(&self) -> String {
        format!("webhook:{}", self.name())
    }

    fn set(&self, f: impl FnOnce(&mut NodeStatus)) {
        f(&mut self.status.lock().expect("status"));
    }

    /// Delivers while this node holds the lease, until the node stops.
    pub async fn run(self) {
        let mut changes = self.registry.activity_changes();
        while !self.stop.is_cancelled() {
            let pause = match self.registry.lease(&self.lease(), LEASE_TTL).await {
                Ok(true) => {
                    let held = self.hold();
                    let outcome = self.deliver(&mut changes, &held).await;
                    held.cancel();
                    self.set(|s| s.delivering = false);
                    match outcome {
                        Ok(()) => STANDBY,
                        Err(e) => {
                            tracing::warn!(webhook = self.name(), error = %e, "webhook delivery paused");
                            Duration::from_secs(1)
                        }
                    }
                }
                Ok(false) => {
                    // Another node delivers: the pending gauge is its.
                    self.observer.pending(self.name(), 0);
                    STANDBY
                }
                Err(e) => {
                    tracing::warn!(webhook = self.name(), error = %e, "could not take the webhook lease");
                    STANDBY
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        if let Err(e) = self.registry.end_lease(&self.lease()).await {
            tracing::debug!(webhook = self.name(), error = %e, "could not give the webhook lease up");
        }
    }

    /// Renews the lease in the background; the token is cancelled when the
    /// lease is lost or the node stops (and by the caller when it is done).
    fn hold(&self) -> CancellationToken {
        let held = self.stop.child_token();
        let (registry, lease, token) = (self.registry.clone(), self.lease(), held.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(LEASE_RENEW) => {}
                }
                match registry.lease(&lease, LEASE_TTL).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(lease, "webhook lease lost to another node");
                        token.cancel();
                    }
                    Err(e) => {
                        tracing::warn!(lease, error = %e, "could not renew the webhook lease")
                    }
                }
            }
        });
        self.set(|s| s.delivering = true);
        held
    }

    /// The delivery loop; returns when the lease is lost.
    async fn deliver(
        &self,
        changes: &mut watch::Receiver<u64>,
        held: &CancellationToken,
    ) -> Result<(), HookError> {
        let e = &self.endpoint;
        let mut cursor = self
            .registry
            .renew_hook(&e.name, e.max_age)
            .await?
            .delivered_to;
        let mut horizon = Horizon::new(self.registry.activity_id_lag());
        while !held.is_cancelled() {
            changes.borrow_and_update();
            let at = Instant::now();
            let batch = self.registry.activity_after(cursor, BATCH).await?;
            if let Some(last) = batch.last() {
                horizon.saw(at, last.id);
            }
            let wake = match plan(cursor, batch, &mut horizon, Instant::now()) {
                Plan::Go(entries) => {
                    cursor = match self.handle(cursor, entries, held).await {
                        Err(HookError::Core(Error::Conflict(why))) => {
                            tracing::warn!(webhook = e.name, why, "webhook cursor moved elsewhere");
                            return Ok(());
                        }
                        other => other?,
                    };
                    self.count_pending(cursor).await;
                    continue;
                }
                Plan::Idle => {
                    self.observer.pending(&e.name, 0);
                    Instant::now() + POLL
                }
                Plan::Wait(t) => t.min(Instant::now() + POLL),
            };
            tokio::select! {
                _ = held.cancelled() => {}
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        Ok(())
    }

    /// Handles entries in order; returns the new cursor.
    async fn handle(
        &self,
        cursor: u64,
        entries: Vec<Activity>,
        held: &CancellationToken,
    ) -> Result<u64, HookError> {
        let mut step = Advance {
            from: cursor,
            to: cursor,
            ..Advance::default()
        };
        for a in entries {
            if !self.endpoint.wants(&a) {
                step.to = a.id;
                continue;
            }
            let sent = match self.too_old(&a) {
                true => Sent::TooOld,
                false => self.send(&a, held).await,
            };
            match sent {
                Sent::Delivered => step.delivered = Some(a.id),
                Sent::TooOld => {
                    tracing::warn!(
                        webhook = self.name(),
                        event = a.id,
                        action = a.action,
                        "webhook event dropped: older than max_age"
                    );
                    step.dropped += 1;
                }
                Sent::Lost => break,
            }
            step.to = a.id;
            let moved = self.advance(step).await?;
            step = Advance {
                from: moved,
                to: moved,
                ..Advance::default()
            };
        }
        match step.to > step.from {
            true => self.advance(step).await,
            false => Ok(step.from),
        }
    }

    /// Moves the cursor in the index; returns where it is.
    async fn advance(&self, step: Advance) -> Result<u64, HookError> {
        let row = self.registry.advance_hook(self.name(), step).await?;
        if step.delivered.is_some() {
            self.observer.delivered(self.name());
            self.set(|s| s.delivered += 1);
        }
        if step.dropped > 0 {
            self.observer.dropped(self.name(), step.dropped);
            self.set(|s| s.dropped += step.dropped);
        }
        Ok(row.delivered_to)
    }

    fn too_old(&self, a: &Activity) -> bool {
        let age = self.registry.clock().now_ms().saturating_sub(a.time_ms);
        u128::from(age) > self.endpoint.max_age.as_millis()
    }

    /// How long until `a` is too old to deliver.
    fn time_left(&self, a: &Activity) -> Duration {
        let age = self.registry.clock().now_ms().saturating_sub(a.time_ms);
        self.endpoint
            .max_age
            .saturating_sub(Duration::from_millis(age))
    }

    /// Delivers one event, retrying with backoff.
    async fn send(&self, a: &Activity, held: &CancellationToken) -> Sent {
        let e = &self.endpoint;
        let kind = EventKind::of_action(&a.action).expect("an event the endpoint wants");
        let body = serde_json::to_vec(&cloud_event(a, kind, &self.source)).expect("json");
        let mut failures = 0u32;
        loop {
            // Signed with the real time: receivers compare it with theirs.
            let now_secs = chrono::Utc::now().timestamp();
            let attempt = deliver::attempt(&self.client, e, &body, now_secs);
            let why = tokio::select! {
                _ = held.cancelled() => return Sent::Lost,
                r = attempt => match r {
                    Ok(()) => {
                        if failures > 0 {
                            tracing::info!(webhook = e.name, event = a.id, failures, "webhook endpoint answers again");
                        }
                        self.set(|s| s.retrying = None);
                        return Sent::Delivered;
                    }
                    Err(why) => why,
                },
            };
            failures += 1;
            let pause = deliver::backoff(e, failures).min(self.time_left(a));
            self.failed(a, &why, failures, pause).await;
            tokio::select! {
                _ = held.cancelled() => return Sent::Lost,
                _ = tokio::time::sleep(pause) => {}
            }
            if self.too_old(a) {
                self.set(|s| s.retrying = None);
                return Sent::TooOld;
            }
        }
    }

    /// Counts and records a failed attempt.
    async fn failed(&self, a: &Activity, why: &str, failures: u32, pause: Duration) {
        let name = self.name();
        self.observer.failed(name);
        let next_ms = self.registry.clock().now_ms() + pause.as_millis() as u64;
        self.set(|s| {
            s.failures += 1;
            s.retrying = Some(a.id);
            s.next_attempt_ms = Some(next_ms);
        });
        match failures {
            1 => tracing::warn!(
                webhook = name,
                event = a.id,
                error = why,
                "webhook delivery failed; retrying"
            ),
            _ => tracing::debug!(
                webhook = name,
                event = a.id,
                failures,
                error = why,
                "webhook delivery failed again"
            ),
        }
        if let Err(e) = self.registry.hook_failed(name, why).await {
            tracing::warn!(webhook = name, error = %e, "could not record a failed webhook delivery");
        }
        self.count_pending(a.id - 1).await;
    }

    /// Reports how many events after `cursor` wait for the endpoint (at
    /// most once per [`PENDING_EVERY`]).
    async fn count_pending(&self, cursor: u64) {
        {
            let mut counted = self.counted.lock().expect("counted");
            if counted.is_some_and(|t| t.elapsed() < PENDING_EVERY) {
                return;
            }
            *counted = Some(Instant::now());
        }
        let e = self.endpoint.clone();
        let n = self
            .registry
            .count_activity_after(cursor, PENDING_CAP, move |a| e.wants(a))
            .await;
        match n {
            Ok(n) => self.observer.pending(self.name(), n),
            Err(e) => {
                tracing::debug!(webhook = self.name(), error = %e, "could not count pending events")
            }
        }
    }
}
