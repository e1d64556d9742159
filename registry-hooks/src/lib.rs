//! Webhooks for Berth: every change the activity log records (pushes, tag,
//! manifest and repository deletes, finished GC and retention runs) is
//! POSTed to the configured endpoints as a CloudEvents 1.0 JSON event,
//! signed with HMAC-SHA256.
//!
//! The activity log is the outbox: each entry is written in the
//! transaction of the change it describes, so nothing here adds work to a
//! push. One deliverer per endpoint, on whichever node holds the
//! endpoint's lease, reads the log after the endpoint's cursor (kept in the
//! index, `registry_core::model::hooks`) and delivers in id order, at least
//! once: the cursor moves only after a 2xx answer, and survives restarts.
//!
//! - [`config`]: `[[webhooks]]` entries, checked at start-up;
//! - [`event`]: the CloudEvent of an entry, and the signature;
//! - [`order`]: which entries may go now when ids can commit out of order;
//! - `deliver`: one attempt, and the backoff between attempts;
//! - `worker`: the loop of one endpoint.

pub mod config;
mod deliver;
pub mod error;
pub mod event;
pub mod order;
mod worker;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use registry_core::Registry;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use config::{Endpoint, EndpointConfig, EventKind, compile_all};
pub use error::HookError;

use crate::event::rfc3339;

/// Told what deliveries do (the HTTP crate turns this into metrics).
pub trait HookObserver: Send + Sync + 'static {
    /// An endpoint is configured (its series can start at zero).
    fn endpoint(&self, _name: &str) {}
    fn delivered(&self, _name: &str) {}
    /// A delivery attempt failed (it will be retried).
    fn failed(&self, _name: &str) {}
    /// Events given up because they were older than the endpoint's
    /// `max_age`.
    fn dropped(&self, _name: &str, _n: u64) {}
    /// Events waiting for the endpoint (reported by the node delivering
    /// it; the others report 0).
    fn pending(&self, _name: &str, _n: u64) {}
}

/// Observes nothing.
pub struct NoHookObserver;

impl HookObserver for NoHookObserver {}

/// What this node knows of an endpoint's deliveries since it started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeStatus {
    /// This node holds the endpoint's lease and delivers it.
    pub delivering: bool,
    pub delivered: u64,
    pub failures: u64,
    pub dropped: u64,
    /// The event being retried, if one is, and when the next attempt is
    /// (unix ms).
    pub retrying: Option<u64>,
    pub next_attempt_ms: Option<u64>,
}

/// An endpoint as the admin API shows it (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    pub name: String,
    /// Without credentials or query.
    pub url: String,
    pub events: Vec<&'static str>,
    pub repositories: String,
    pub signed: bool,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Every activity entry up to this id is delivered, dropped or not for
    /// this endpoint; and the newest entry's id.
    pub cursor: u64,
    pub newest: u64,
    /// Events waiting (exact up to 10 000 entries looked at).
    pub pending: u64,
    /// Since the endpoint was first configured, by every node.
    pub delivered: u64,
    pub dropped: u64,
    pub failures: u64,
    pub last_delivered_id: Option<u64>,
    pub last_delivered_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub this_node: NodeStatus,
}

/// The deliverers of every configured endpoint.
pub struct Hooks {
    registry: Arc<Registry>,
    endpoints: Vec<Arc<Endpoint>>,
    status: BTreeMap<String, Arc<Mutex<NodeStatus>>>,
    stop: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Hooks {
    /// Renews every endpoint's cursor (so the log keeps their events from
    /// now on), then starts delivering in the background.
    pub async fn start(
        registry: Arc<Registry>,
        endpoints: Vec<Endpoint>,
        observer: Arc<dyn HookObserver>,
    ) -> Result<Arc<Hooks>, HookError> {
        let endpoints: Vec<Arc<Endpoint>> = endpoints.into_iter().map(Arc::new).collect();
        for e in &endpoints {
            registry.renew_hook(&e.name, e.max_age).await?;
            observer.endpoint(&e.name);
            if !e.signed() {
                tracing::warn!(
                    webhook = e.name,
                    "webhook events are sent unsigned (no secret)"
                );
            }
        }
        let hooks = Arc::new(Hooks {
            status: endpoints
                .iter()
                .map(|e| (e.name.clone(), Arc::default()))
                .collect(),
            registry: registry.clone(),
            endpoints,
            stop: CancellationToken::new(),
            tasks: Mutex::default(),
        });
        if hooks.endpoints.is_empty() {
            return Ok(hooks);
        }
        let source = format!("urn:uuid:{}", registry.instance_id().await?);
        let mut tasks = vec![tokio::spawn(hooks.clone().renew_forever())];
        for e in &hooks.endpoints {
            let worker = worker::Worker {
                registry: registry.clone(),
                client: deliver::client(e),
                endpoint: e.clone(),
                source: source.clone(),
                observer: observer.clone(),
                status: hooks.status[&e.name].clone(),
                stop: hooks.stop.clone(),
                counted: Mutex::default(),
            };
            tasks.push(tokio::spawn(worker.run()));
        }
        *hooks.tasks.lock().expect("tasks") = tasks;
        Ok(hooks)
    }

    /// Keeps every endpoint's cursor row renewed well within its maximum
    /// age, so trimming the log never takes events it still waits for.
    async fn renew_forever(self: Arc<Self>) {
        let shortest = self.endpoints.iter().map(|e| e.max_age).min();
        let every = (shortest.unwrap_or(Duration::MAX) / 4)
            .clamp(Duration::from_millis(250), Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            for e in &self.endpoints {
                if let Err(err) = self.registry.renew_hook(&e.name, e.max_age).await {
                    tracing::warn!(webhook = e.name, error = %err, "could not renew the webhook cursor");
                }
            }
        }
    }

    /// Stops delivering (an event in flight is delivered again by whoever
    /// delivers next) and gives the leases up.
    pub async fn stop(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks"));
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Every configured endpoint, with its cursor and this node's view.
    pub async fn status(&self) -> Result<Vec<EndpointStatus>, HookError> {
        let newest = self.registry.newest_activity_id().await?;
        let mut out = Vec::new();
        for e in &self.endpoints {
            let row = self
                .registry
                .hook_cursor(&e.name)
                .await?
                .unwrap_or_default();
            let wants = e.clone();
            let pending = self
                .registry
                .count_activity_after(row.delivered_to, worker::PENDING_CAP, move |a| {
                    wants.wants(a)
                })
                .await?;
            out.push(EndpointStatus {
                name: e.name.clone(),
                url: e.shown_url(),
                events: e.events.iter().map(|k| k.action()).collect(),
                repositories: e.repositories.as_str().to_owned(),
                signed: e.signed(),
                timeout: e.timeout,
                max_age: e.max_age,
                cursor: row.delivered_to,
                newest,
                pending,
                delivered: row.delivered,
                dropped: row.dropped,
                failures: row.failures,
                last_delivered_id: row.last_delivered_id,
                last_delivered_at: row.last_delivered_ms.map(rfc3339),
                last_error: row.last_error,
                last_error_at: row.last_error_ms.map(rfc3339),
                this_node: self.status[&e.name].lock().expect("status").clone(),
            });
        }
        Ok(out)
    }
}
