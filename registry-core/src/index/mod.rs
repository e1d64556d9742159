//! The metadata index: the source of truth for what the registry holds.
//!
//! Repositories, tags, manifests and what each references, which blobs each
//! repository may see, upload sessions, referrers, and a reference count per
//! blob and per manifest. Every operation that stores or deletes a manifest
//! changes the counts it implies in the same transaction.
//!
//! The [`Index`] trait is the seam for other back ends (a PostgreSQL index is
//! planned): the HTTP layer and the garbage collector only use `dyn Index`.
//! [`RedbIndex`] is the embedded implementation.

mod recount;
mod redb;
mod tables;

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::Result;
use crate::manifest::{Kind, ParsedManifest};
use crate::names::{Reference, RepoName, Tag};

pub use self::redb::{DEFAULT_CACHE_BYTES, RedbIndex, now_ms};

/// A stored manifest's metadata (and, when asked for, its bytes).
#[derive(Debug, Clone)]
pub struct ManifestInfo {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub kind: Kind,
    pub body: Option<Bytes>,
}

/// One entry of a referrers listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A resumable upload session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub repo: String,
    /// Bytes received and made durable so far.
    pub offset: u64,
    /// Saved hasher state for the bytes so far (see `Hasher::save`).
    pub hasher: Vec<u8>,
    pub started_ms: u64,
    pub updated_ms: u64,
}

/// A page of names (tags or repositories) and whether more follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

/// Reference counts of one blob, as the index keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub size: u64,
    /// Manifests (counted once per repository they are stored in) that
    /// reference this blob.
    pub refs: u64,
}

/// Totals the index keeps current in every transaction (no scans).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub unreferenced_blobs: u64,
    pub unreferenced_bytes: u64,
    pub uploads: u64,
}

/// A blob no manifest references: a garbage-collection candidate once its
/// grace period is over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnreferencedBlob {
    pub digest: Digest,
    pub size: u64,
    /// Unix ms since when nothing references it.
    pub since_ms: u64,
    /// Unix ms of its last upload or mount.
    pub seen_ms: u64,
}

/// A manifest nothing keeps: untagged, listed by no index in its
/// repository, and not attached to a stored subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DanglingManifest {
    pub repository: RepoName,
    pub digest: Digest,
    pub size: u64,
    /// Unix ms since when nothing keeps it.
    pub since_ms: u64,
    /// It names a `subject` that is not stored in its repository.
    pub orphaned_referrer: bool,
}

/// A manifest removed by a collection or a repository delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedManifest {
    pub repository: RepoName,
    pub digest: Digest,
    pub size: u64,
}

/// What a manifest collection (or its dry run) removed, and the blobs that
/// nothing references as a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Collected {
    pub manifests: Vec<RemovedManifest>,
    pub freed: Vec<UnreferencedBlob>,
}

/// One entry of the activity log: who did what to which repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// Assigned by the index: increasing, newest highest.
    #[serde(default)]
    pub id: u64,
    /// Unix ms; the index fills it in when 0.
    #[serde(default)]
    pub time_ms: u64,
    /// The user name, or the client address when there is no login.
    pub actor: String,
    /// `push`, `tag_delete`, `manifest_delete`, `blob_delete`,
    /// `repository_delete`, `gc_run`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The tag, when the action named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Anything else worth keeping (e.g. a GC run's savings).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// Which activity entries to list: newest first, before `before` (an id, the
/// cursor of the previous page), at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct ActivityQuery {
    pub repository: Option<String>,
    pub action: Option<String>,
    pub since_ms: Option<u64>,
    pub before: Option<u64>,
    pub limit: usize,
}

/// A repository as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoSummary {
    pub name: String,
    pub tags: u64,
    pub manifests: u64,
    /// Bytes of the blobs visible in it.
    pub bytes: u64,
    pub created_ms: u64,
}

/// One manifest of a repository, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestView {
    pub digest: Digest,
    pub media_type: String,
    pub kind: Kind,
    pub size: u64,
    /// The manifest and every blob it references.
    pub image_bytes: u64,
    pub created_ms: u64,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    pub children: Vec<Digest>,
    /// Indexes in the repository listing it.
    pub parents: u64,
    /// What deleting it would free now (with what becomes dangling because
    /// of it); `None` while an index lists it (it cannot be deleted).
    pub freed_if_deleted: Option<u64>,
}

/// One tag of a repository, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagView {
    pub tag: String,
    pub digest: Digest,
    pub updated_ms: u64,
    /// What deleting the tag would free now: its manifest's bytes, if the
    /// tag is the last thing keeping it.
    pub freed_if_deleted: u64,
}

/// Everything a repository page shows, from one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepositoryView {
    pub name: String,
    pub bytes: u64,
    pub created_ms: u64,
    pub manifests: Vec<ManifestView>,
    pub tags: Vec<TagView>,
}

#[async_trait]
pub trait Index: Send + Sync + 'static {
    // ---- reads: never blocked by writers ----

    /// Repository names in lexical order, starting after `after`.
    async fn repositories(&self, after: Option<&str>, limit: usize) -> Result<Page>;

    /// Repositories (in lexical order after `after`) whose name contains
    /// `contains`, with their counts; and whether more follow.
    async fn repository_summaries(
        &self,
        after: Option<&str>,
        limit: usize,
        contains: Option<&str>,
    ) -> Result<(Vec<RepoSummary>, bool)>;

    /// A repository's manifests and tags, with what deleting each would
    /// free, read from one snapshot. `NameUnknown` if it does not exist.
    async fn repository_view(&self, repo: &RepoName) -> Result<RepositoryView>;

    /// Whether the repository holds anything (tags, manifests, blobs, uploads).
    async fn repository_exists(&self, repo: &RepoName) -> Result<bool>;

    /// Tags of a repository in lexical order, starting after `after`;
    /// `NameUnknown` if the repository does not exist.
    async fn tags(&self, repo: &RepoName, after: Option<&str>, limit: usize) -> Result<Page>;

    /// The manifest a tag points at.
    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>>;

    /// A manifest stored in `repo`, with its bytes if `with_body`.
    async fn manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        with_body: bool,
    ) -> Result<Option<ManifestInfo>>;

    /// The size of a blob if it is visible in `repo` (uploaded or mounted
    /// there).
    async fn blob_in_repo(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>>;

    /// Up to `limit` repositories in which a blob is visible.
    async fn blob_repositories(&self, digest: &Digest, limit: usize) -> Result<Vec<RepoName>>;

    /// A blob's size and reference count, whichever repositories link it.
    async fn blob(&self, digest: &Digest) -> Result<Option<BlobInfo>>;

    /// Manifests in `repo` whose `subject` is `subject`, optionally only
    /// those of one artifact type.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>>;

    /// An upload session.
    async fn upload(&self, id: &str) -> Result<Option<Upload>>;

    /// Every upload session (start-up recovery and purging of stale ones).
    async fn uploads(&self) -> Result<Vec<(String, Upload)>>;

    /// The running totals.
    async fn totals(&self) -> Result<Totals>;

    // ---- writes: each one transaction ----

    /// Records an upload session for `repo` that durably holds `offset`
    /// bytes hashed into `hasher`.
    async fn create_upload(
        &self,
        id: &str,
        repo: &RepoName,
        offset: u64,
        hasher: Vec<u8>,
    ) -> Result<()>;

    /// Records that upload `id` now durably holds `offset` bytes.
    async fn update_upload(&self, id: &str, offset: u64, hasher: Vec<u8>) -> Result<()>;

    /// Forgets an upload session (cancelled or failed).
    async fn delete_upload(&self, id: &str) -> Result<()>;

    /// Records a blob whose bytes are now stored, links it into `repo`, and
    /// closes upload `upload` if given, all in one transaction.
    async fn commit_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        upload: Option<&str>,
    ) -> Result<()>;

    /// Links a stored blob into `repo`: from repository `from` if given
    /// (which must see it), else from wherever it is stored. `None` if it
    /// cannot be mounted.
    async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<Option<u64>>;

    /// Removes a blob from `repo`'s view. Refused (`Conflict`) while a
    /// manifest in `repo` references it.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()>;

    /// Stores a manifest in `repo` (and points `tag` at it), after checking
    /// that every blob it references is visible in `repo` (blobs stored
    /// elsewhere in the registry are linked in) and every child manifest is
    /// stored in `repo`. Reference counts change in the same transaction.
    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &ParsedManifest,
        body: Bytes,
        tag: Option<&Tag>,
    ) -> Result<()>;

    /// Removes a tag; the manifest stays.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Digest>;

    /// Removes a manifest from `repo`, with every tag pointing at it, and
    /// drops the reference counts it held. Refused (`Conflict`) while an
    /// index in `repo` lists it.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()>;

    // ---- garbage collection ----

    /// Unreferenced blobs in digest order, starting after `after`.
    async fn unreferenced_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<UnreferencedBlob>>;

    /// Dangling manifests in (repository, digest) order, after `after`.
    async fn dangling_manifests(
        &self,
        after: Option<(&RepoName, &Digest)>,
        limit: usize,
    ) -> Result<Vec<DanglingManifest>>;

    /// Removes blobs still unreferenced and not uploaded or mounted after
    /// `seen_cutoff_ms`, with their links; returns those removed.
    async fn remove_blobs(
        &self,
        digests: &[Digest],
        seen_cutoff_ms: u64,
    ) -> Result<Vec<(Digest, u64)>>;

    /// Deletes the given manifests if they are still dangling and have been
    /// since their cutoff (unix ms) or earlier. With `dry_run` nothing is
    /// kept: the transaction is rolled back and the result says what it
    /// would have done.
    async fn collect_manifests(
        &self,
        targets: &[(RepoName, Digest, u64)],
        dry_run: bool,
    ) -> Result<Collected>;

    /// What deleting this tag or manifest would free right now: the blobs
    /// only it (and what only it keeps) references. Changes nothing.
    async fn preview_delete(&self, repo: &RepoName, reference: &Reference) -> Result<Collected>;

    /// Removes a repository's tags, manifests and blob links in one
    /// transaction (or, with `dry_run`, says what that would do).
    async fn delete_repository(&self, repo: &RepoName, dry_run: bool) -> Result<Collected>;

    /// Records a collector run's report (JSON) under its id.
    async fn save_gc_run(&self, id: u64, report: Vec<u8>) -> Result<()>;

    /// The newest `limit` run reports, newest first.
    async fn gc_runs(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>>;

    // ---- integrity ----

    /// Every blob row in digest order, starting after `after` (a full walk:
    /// integrity checks only).
    async fn blobs_page(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<(Digest, BlobInfo)>>;

    /// Recomputes every derived record (reference counts, reverse tables,
    /// repository counters, totals) from the primary ones; returns each
    /// disagreement, and with `repair` rewrites the derived records.
    async fn recount(&self, repair: bool) -> Result<Vec<String>>;

    /// Forgets a blob whose bytes are gone or corrupt, with every manifest
    /// referencing it (and the indexes listing those); returns them.
    async fn drop_blob(&self, digest: &Digest) -> Result<Vec<RemovedManifest>>;

    // ---- activity log ----

    /// Appends an entry, keeping at most `retain` entries; returns its id.
    async fn record_activity(&self, entry: Activity, retain: u64) -> Result<u64>;

    /// Entries matching `query`, newest first.
    async fn activity(&self, query: &ActivityQuery) -> Result<Vec<Activity>>;

    /// A setting changed at run time.
    async fn setting(&self, key: &str) -> Result<Option<String>>;

    async fn set_setting(&self, key: &str, value: Option<&str>) -> Result<()>;
}
