//! What a run did (or, for a dry run, would do), as the admin API shows it
//! and the index keeps it.

use serde::{Deserialize, Serialize};

use crate::config::UntaggedRule;

/// Longest list of deleted items a report carries.
pub const MAX_LISTED: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobItem {
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestItem {
    pub repository: String,
    pub digest: String,
    pub size: u64,
}

/// The settings a run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub grace_seconds: f64,
    pub upload_max_age_seconds: f64,
    pub untagged: Vec<UntaggedRule>,
    pub orphaned_referrers: bool,
    /// The retention rules ran first.
    #[serde(default)]
    pub retention: bool,
}

/// What the retention phase of a run deleted (or would).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPhase {
    pub tags_deleted: u64,
    pub repositories: u64,
    /// Exclusive bytes of what it deleted: this run's later phases free
    /// them unless a client confirmed them within the grace period. (A dry
    /// run's later phases do not count them.)
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub id: u64,
    /// `api`, `schedule`, or `offline`.
    pub trigger: String,
    /// Who started it (a user or client address for `api` runs).
    #[serde(default)]
    pub actor: String,
    pub dry_run: bool,
    pub state: RunState,
    pub error: Option<String>,
    /// What the run is doing now: `uploads`, `manifests`, `blobs`,
    /// `reconcile`, `done`.
    pub phase: String,
    pub started_at: String,
    pub started_ms: u64,
    pub finished_at: Option<String>,
    pub duration_ms: u64,
    pub settings: RunSettings,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    pub manifests_deleted: u64,
    pub uploads_deleted: u64,
    /// Unreferenced blobs kept because they were uploaded, mounted or
    /// confirmed by a client within the grace period, and their bytes.
    #[serde(default)]
    pub protected_blobs: u64,
    #[serde(default)]
    pub protected_bytes: u64,
    /// When the first of them becomes collectable (unix ms), at the latest.
    #[serde(default)]
    pub next_collectable_ms: Option<u64>,
    /// Files no index row named (left by a crash), found by reconciliation
    /// and deleted, and their bytes.
    #[serde(default)]
    pub orphans_deleted: u64,
    #[serde(default)]
    pub orphan_bytes: u64,
    /// Times the write fence was closed, and for how long.
    pub fences: u64,
    pub fence_total_ms: f64,
    pub fence_max_ms: f64,
    pub fence_durations_ms: Vec<f64>,
    /// Pushes that waited for this run's fences (this node).
    pub writes_waited: u64,
    /// Commits refused because a sweep held what they wrote, while the run
    /// lasted: on this node alone, or on every node of a cluster (counted
    /// when each refusal is recorded, so a refusal of a concurrent run on
    /// another node counts too).
    pub writes_refused: u64,
    /// Blob bytes stored when the run ended.
    pub stored_bytes: u64,
    /// Blobs still unreferenced (in their grace period, or confirmed by a
    /// client) when the run ended.
    pub remaining_unreferenced_bytes: u64,
    /// The retention phase, when the run had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionPhase>,
    pub deleted: Deleted,
}

/// What was (or, in a dry run, would be) deleted; at most [`MAX_LISTED`]
/// of each kind, `truncated` if there were more.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub blobs: Vec<BlobItem>,
    pub manifests: Vec<ManifestItem>,
    pub uploads: Vec<String>,
    pub truncated: bool,
}

impl Deleted {
    pub fn push<T>(list: &mut Vec<T>, truncated: &mut bool, item: T) {
        if list.len() < MAX_LISTED {
            list.push(item);
        } else {
            *truncated = true;
        }
    }
}

impl RunReport {
    pub fn is_finished(&self) -> bool {
        self.state != RunState::Running
    }

    /// Counts one fence closing of `ms` milliseconds.
    pub fn fenced(&mut self, ms: f64) {
        self.fences += 1;
        self.fence_total_ms += ms;
        self.fence_max_ms = self.fence_max_ms.max(ms);
        if self.fence_durations_ms.len() < MAX_LISTED {
            self.fence_durations_ms.push(ms);
        }
    }
}
