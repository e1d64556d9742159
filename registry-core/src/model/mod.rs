//! The rules of the index, written once over the table interface
//! ([`crate::db`]) so every back end keeps them the same way.
//!
//! This module declares the schema: the tables, and the rows stored in
//! them. The rules live in the submodules:
//!
//! - [`counters`]: repository counters and the sharded running totals;
//! - [`refs`]: blobs, the links that make a blob visible in a repository,
//!   and their reference counts;
//! - [`manifests`]: storing manifests, tags, and deleting them;
//! - [`dangling`]: which manifests nothing keeps;
//! - [`cascade`]: the one engine for deletions that take what they leave
//!   dangling with them (previews, GC, repository removal, repairs);
//! - [`uploads`]: upload sessions;
//! - [`log`]: activity log, GC run history and settings;
//! - [`recount`]: recomputing every derived record (integrity check);
//! - [`views`]: what listings and the web UI read;
//! - [`shared`]: what the nodes of a cluster share (confirmations, sweeps,
//!   empty upload sessions, leases);
//! - [`hooks`]: webhook delivery cursors over the activity log.
//!
//! **Architecture Invariant:** reference counts change only in [`refs`],
//! called from the transaction that stores or deletes the referencing
//! manifest.
//!
//! **Architecture Invariant:** a mutation checks everything before it
//! changes anything, so a refused request leaves its transaction as it
//! found it (a request that fails after writing is taken out of its group
//! commit by the back end, see [`crate::db::JobEnd::Poisoned`]).

pub mod cascade;
pub mod counters;
pub mod dangling;
pub mod hooks;
pub mod log;
pub mod manifests;
pub mod recount;
pub mod refs;
pub mod shared;
pub mod uploads;
pub mod views;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::db::Table;
use crate::db::codec::Row;
use crate::index::Upload;
use crate::manifest::Kind;

/// repository -> when it appeared, and the base of its counters: the row
/// exists exactly while the repository holds anything (see [`counters`])
pub const REPOS: Table<String, RepoRow> = Table::new("repos");
/// (repository, shard) -> this shard's part of the repository's counters
pub const REPO_COUNTS: Table<(String, u64), RepoCounts> = Table::new("repo_counts");
/// (repository, tag) -> where it points
pub const TAGS: Table<(String, String), TagRow> = Table::new("tags");
/// (repository, manifest digest, tag): the tags pointing at a manifest
pub const TAGS_BY_MANIFEST: Table<(String, String, String), ()> = Table::new("tags_by_manifest");
/// (repository, manifest digest) -> the manifest as stored there
pub const MANIFESTS: Table<(String, String), ManifestRow> = Table::new("manifests");
/// manifest digest -> the exact bytes pushed (shared by every repository)
pub const MANIFEST_BODIES: Table<String, Vec<u8>> = Table::new("manifest_bodies");
/// manifest digest -> number of repositories storing it
pub const MANIFEST_BODY_REFS: Table<String, u64> = Table::new("manifest_body_refs");
/// blob digest -> size, reference count, times
pub const BLOBS: Table<String, BlobRow> = Table::new("blobs");
/// blob digest -> the bytes of a small blob kept in the index instead of
/// the blob store (see `registry::blobs`): durable with the commit that
/// records it, no file, no fsync of its own. Goes with its `blobs` row.
pub const BLOB_DATA: Table<String, Vec<u8>> = Table::new("blob_data");
/// blob digest -> unix ms since when its reference count is zero: the only
/// place garbage collection looks for candidates.
pub const UNREFERENCED: Table<String, u64> = Table::new("unreferenced");
/// (repository, blob digest): the blob is visible in the repository
pub const LINKS: Table<(String, String), LinkRow> = Table::new("links");
/// (blob digest, repository): the same links, by blob
pub const LINKS_BY_BLOB: Table<(String, String), ()> = Table::new("links_by_blob");
/// upload id -> the session
pub const UPLOADS: Table<String, Upload> = Table::new("uploads");
/// (repository, subject digest, referrer digest)
pub const REFERRERS: Table<(String, String, String), ()> = Table::new("referrers");
/// (total's name, shard) -> this shard's part of the total
pub const TOTALS: Table<(String, u64), i64> = Table::new("totals");
/// (repository, manifest digest) -> manifests nothing keeps (no tag, no
/// index in the repository lists them, not attached to a stored subject).
pub const DANGLING: Table<(String, String), DanglingRow> = Table::new("dangling");
/// run id -> the collector's report of that run (JSON)
pub const GC_RUNS: Table<u64, Vec<u8>> = Table::new("gc_runs");
/// name -> value: settings changed at run time (e.g. the GC schedule)
pub const SETTINGS: Table<String, String> = Table::new("settings");
/// sequence number -> an activity entry (JSON), oldest first
pub const ACTIVITY: Table<u64, Vec<u8>> = Table::new("activity");
/// blob digest -> unix ms a client last confirmed it while unreferenced
/// (cluster mode; see [`shared`])
pub const CONFIRMED: Table<String, u64> = Table::new("confirmed");
/// blob digest -> its sweep generation and whether a sweep is deleting it
pub const SWEEPS: Table<String, shared::SweepRow> = Table::new("sweeps");
/// upload id -> a session that holds no data yet (cluster mode)
pub const EMPTY_UPLOADS: Table<String, Upload> = Table::new("empty_uploads");
/// name -> who holds the lease, until when
pub const LEASES: Table<String, shared::LeaseRow> = Table::new("leases");
/// (repository, manifest digest) -> unix ms it was last pulled (coarse:
/// pulls are counted in memory and written about once a minute)
pub const PULLS: Table<(String, String), u64> = Table::new("pulls");
/// webhook endpoint name -> its delivery cursor (JSON, see [`hooks`])
pub const HOOK_CURSORS: Table<String, Vec<u8>> = Table::new("hook_cursors");

/// Every table of the schema (back ends create them up front).
pub const TABLES: &[&str] = &[
    REPOS.name,
    TAGS.name,
    TAGS_BY_MANIFEST.name,
    MANIFESTS.name,
    MANIFEST_BODIES.name,
    MANIFEST_BODY_REFS.name,
    BLOBS.name,
    UNREFERENCED.name,
    LINKS.name,
    LINKS_BY_BLOB.name,
    UPLOADS.name,
    REFERRERS.name,
    TOTALS.name,
    DANGLING.name,
    GC_RUNS.name,
    SETTINGS.name,
    ACTIVITY.name,
    CONFIRMED.name,
    SWEEPS.name,
    EMPTY_UPLOADS.name,
    LEASES.name,
    PULLS.name,
    BLOB_DATA.name,
    HOOK_CURSORS.name,
    REPO_COUNTS.name,
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RepoRow {
    pub created_ms: u64,
    pub manifests: u64,
    pub tags: u64,
    pub links: u64,
    pub uploads: u64,
    /// Bytes of the blobs linked into the repository.
    pub link_bytes: u64,
}

impl RepoRow {
    fn is_empty(&self) -> bool {
        self.manifests == 0 && self.tags == 0 && self.links == 0 && self.uploads == 0
    }
}

/// A change to a repository's counters, and a shard's part of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoCounts {
    pub manifests: i64,
    pub tags: i64,
    pub links: i64,
    pub uploads: i64,
    pub link_bytes: i64,
}

impl RepoCounts {
    pub fn manifests(n: i64) -> RepoCounts {
        RepoCounts {
            manifests: n,
            ..RepoCounts::default()
        }
    }

    pub fn tags(n: i64) -> RepoCounts {
        RepoCounts {
            tags: n,
            ..RepoCounts::default()
        }
    }

    pub fn uploads(n: i64) -> RepoCounts {
        RepoCounts {
            uploads: n,
            ..RepoCounts::default()
        }
    }

    /// `n` links of `bytes` in all.
    pub fn links(n: i64, bytes: i64) -> RepoCounts {
        RepoCounts {
            links: n,
            link_bytes: bytes,
            ..RepoCounts::default()
        }
    }

    /// A row's counts as a shard.
    fn of(row: &RepoRow) -> RepoCounts {
        let i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        RepoCounts {
            manifests: i(row.manifests),
            tags: i(row.tags),
            links: i(row.links),
            uploads: i(row.uploads),
            link_bytes: i(row.link_bytes),
        }
    }

    fn add(&mut self, d: &RepoCounts) {
        self.manifests += d.manifests;
        self.tags += d.tags;
        self.links += d.links;
        self.uploads += d.uploads;
        self.link_bytes += d.link_bytes;
    }

    /// Whether the change adds content (so the repository must exist).
    fn grows(&self) -> bool {
        self.manifests > 0 || self.tags > 0 || self.links > 0 || self.uploads > 0
    }

    /// A sum of shards as counters (a sum below 0 reads as 0).
    fn into_row(self, created_ms: u64) -> RepoRow {
        let u = |n: i64| n.max(0) as u64;
        RepoRow {
            created_ms,
            manifests: u(self.manifests),
            tags: u(self.tags),
            links: u(self.links),
            uploads: u(self.uploads),
            link_bytes: u(self.link_bytes),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagRow {
    pub digest: String,
    pub updated_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestRow {
    pub media_type: String,
    pub size: u64,
    pub kind: Kind,
    pub blobs: Vec<String>,
    pub children: Vec<String>,
    pub subject: Option<String>,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
    pub created_ms: u64,
    /// Indexes in the same repository listing this manifest.
    pub parents: u64,
    /// Tags in the same repository pointing at this manifest.
    pub tags: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobRow {
    pub size: u64,
    /// Manifest rows (any repository) referencing this blob.
    pub refs: u64,
    pub created_ms: u64,
    /// Last time the blob was uploaded or mounted: the grace period of
    /// garbage collection runs from here (or from a later HEAD/GET).
    pub seen_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DanglingRow {
    pub since_ms: u64,
    /// It has a `subject` that is not stored in the repository.
    pub orphaned_referrer: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkRow {
    /// Manifests in this repository referencing the blob.
    pub refs: u64,
    pub linked_ms: u64,
}

impl Row for RepoRow {}
impl Row for RepoCounts {}
impl Row for TagRow {}
impl Row for ManifestRow {}
impl Row for BlobRow {}
impl Row for DanglingRow {}
impl Row for LinkRow {}
impl Row for Upload {}

/// An invariant the rules rely on does not hold: a bug, or a damaged
/// index. The request fails alone (see the module documentation).
pub(crate) fn broken(what: impl std::fmt::Display) -> crate::Error {
    crate::Error::Bug(format!("index invariant broken: {what}"))
}
