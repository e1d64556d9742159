//! [`Registry`]: the only door to the store. The HTTP layer parses a
//! request, calls one operation here, and renders the result; the garbage
//! collector drives its phases through the operations in [`gc`]. Nothing
//! outside this module reaches the index, the blob store or the node's
//! shared state ([`crate::coord`]) directly.
//!
//! - [`blobs`]: blob reads, mounts, monolithic pushes, blob deletes;
//! - [`uploads`]: upload sessions;
//! - [`manifests`]: manifest pushes, pulls, deletes, listings;
//! - [`admin`]: what administrators and the web UI see and do;
//! - [`gc`]: the steps of a collection: candidates, sweeps, reconciliation;
//! - `hooks`: what webhook delivery reads and writes;
//! - [`recover`]: start-up repair of what a crash leaves behind;
//! - [`space`]: free space, and whether a push may go ahead.

mod admin;
pub mod blobs;
pub mod gc;
mod hooks;
mod manifests;
pub mod policies;
mod recover;
pub mod retention;
mod space;
mod uploads;

use std::sync::Arc;

use crate::blob::BlobStore;
use crate::clock::Clock;
use crate::coord::Coordination;
use crate::digest::Digest;
use crate::index::{Activity, Index};
use crate::manifest::DEFAULT_MAX_MANIFEST_BYTES;
use crate::names::RepoName;

pub use admin::Readiness;
pub use gc::{Reconciled, Swept};
pub use recover::Recovery;

/// Largest page of tags or repositories returned at once; larger listings
/// continue through the `Link` header.
pub const MAX_PAGE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_manifest_bytes: u64,
    pub max_blob_bytes: u64,
    /// Free space pushes must leave on each filesystem the store writes to
    /// (see [`crate::space::LowWater`]): `None` for the default, `Some(0)`
    /// for no mark.
    pub min_free_bytes: Option<u64>,
    /// Blobs pushed whole up to this size are kept in the index (see
    /// [`blobs::INLINE_CEILING`]); 0 keeps every blob in the blob store.
    pub inline_blob_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            max_blob_bytes: u64::MAX,
            min_free_bytes: None,
            inline_blob_bytes: blobs::DEFAULT_INLINE_BYTES,
        }
    }
}

/// How a registry behaves.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub limits: Limits,
    /// Whether a manifest may reference blobs stored only in other
    /// repositories (they are linked in). Off when access is controlled: a
    /// digest must not be a key to another repository's content.
    pub link_foreign_blobs: bool,
    /// How many activity entries are kept.
    pub activity_retention: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            limits: Limits::default(),
            link_foreign_blobs: true,
            activity_retention: 100_000,
        }
    }
}

/// The outcome of storing a manifest.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

pub struct Registry {
    pub(crate) index: Index,
    pub(crate) blobs: Arc<dyn BlobStore>,
    node: Arc<dyn Coordination>,
    clock: Clock,
    options: Options,
    policies: policies::PolicyCell,
    /// Manifest pulls not yet written: (repository, digest) -> unix ms.
    pulls: std::sync::Mutex<std::collections::HashMap<(String, String), u64>>,
    /// The filesystems as last measured for admitting a push, and when.
    space_seen: std::sync::Mutex<Option<(std::time::Instant, Vec<crate::space::Filesystem>)>>,
}

impl Registry {
    pub fn new(
        index: Index,
        blobs: Arc<dyn BlobStore>,
        node: Arc<dyn Coordination>,
        options: Options,
    ) -> Registry {
        Registry {
            clock: index.db().clock().clone(),
            index,
            blobs,
            node,
            options,
            pulls: std::sync::Mutex::default(),
            space_seen: std::sync::Mutex::default(),
            policies: policies::PolicyCell::new(policies::TagRules::default())
                .expect("no rules compile"),
        }
    }

    /// The registry with `rules` configured (rules set through the admin
    /// API and kept in the index win over them).
    pub fn with_tag_rules(mut self, rules: policies::TagRules) -> crate::Result<Registry> {
        self.policies = policies::PolicyCell::new(rules)?;
        Ok(self)
    }

    pub fn limits(&self) -> Limits {
        self.options.limits
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Commits what is queued in the index and stops taking writes.
    pub fn close(&self) {
        self.index.close();
    }

    /// An activity entry by `actor`, dated by the index.
    pub(crate) fn activity(
        actor: &str,
        action: &str,
        repo: &RepoName,
        reference: Option<String>,
        digest: Option<&Digest>,
        detail: serde_json::Value,
    ) -> Activity {
        Activity {
            id: 0,
            time_ms: 0,
            actor: actor.to_owned(),
            action: action.to_owned(),
            repository: Some(repo.to_string()),
            reference,
            digest: digest.map(Digest::to_string),
            detail,
        }
    }
}
