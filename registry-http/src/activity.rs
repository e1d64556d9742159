//! The activity log as the HTTP layer writes it: who pushed or deleted what,
//! and every garbage collection run. Entries are appended in their own
//! index write right after the action succeeded (group-committed with the
//! traffic around it); a failure to record is logged, never turned into a
//! failed request.

use std::sync::Arc;

use registry_core::index::{Activity, Index};
use registry_core::{Digest, RepoName};
use registry_gc::RunReport;
use registry_gc::collector::GcObserver;
use serde_json::{Value, json};

/// Who made a request: the client address, or the user name once the
/// request is authenticated. The server puts it in the request's extensions.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

pub struct ActivityLog {
    index: Arc<dyn Index>,
    retain: u64,
}

impl ActivityLog {
    pub fn new(index: Arc<dyn Index>, retain: u64) -> ActivityLog {
        ActivityLog { index, retain }
    }

    pub async fn record(
        &self,
        actor: &str,
        action: &str,
        repository: Option<&RepoName>,
        reference: Option<String>,
        digest: Option<&Digest>,
        detail: Value,
    ) {
        let entry = Activity {
            id: 0,
            time_ms: 0,
            actor: actor.to_owned(),
            action: action.to_owned(),
            repository: repository.map(|r| r.to_string()),
            reference,
            digest: digest.map(|d| d.to_string()),
            detail,
        };
        if let Err(e) = self.index.record_activity(entry, self.retain).await {
            tracing::error!(error = %e, action, "could not record activity");
        }
    }
}

impl GcObserver for ActivityLog {
    fn run_finished(&self, r: &RunReport) {
        let entry = Activity {
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
            }),
        };
        let (index, retain) = (self.index.clone(), self.retain);
        tokio::spawn(async move {
            if let Err(e) = index.record_activity(entry, retain).await {
                tracing::error!(error = %e, "could not record the GC run in the activity log");
            }
        });
    }
}

/// Several observers of garbage-collection runs.
pub struct GcEvents(pub Vec<Arc<dyn GcObserver>>);

impl GcObserver for GcEvents {
    fn run_finished(&self, r: &RunReport) {
        for o in &self.0 {
            o.run_finished(r);
        }
    }
}
