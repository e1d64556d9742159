//! The metadata index: the source of truth for what the registry holds.
//!
//! Repositories, tags, manifests and what each references, which blobs each
//! repository may see, upload sessions, referrers, and a reference count per
//! blob and per manifest. [`Index`] runs the rules of [`crate::model`] on a
//! [`Db`] (any back end of [`crate::db`]), one transaction per operation;
//! [`crate::Registry`] composes rules into one transaction where an
//! operation needs more (a push and its activity entry, say).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::db::Db;
use crate::db::redb::{DEFAULT_CACHE_BYTES, RedbBackend};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{Kind, ParsedManifest};
use crate::model::{self, cascade, counters, log, manifests, refs, uploads, views};
use crate::names::{Reference, RepoName, Tag};
use crate::observe::{NoObserver, Observer};

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
    /// What the blob store keeps about the upload besides its bytes (an
    /// object store's multipart state; empty for the filesystem).
    pub store_state: Vec<u8>,
}

/// A page of names (tags or repositories) and whether more follow it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// The index keeps its bytes (a small blob), not the blob store.
    pub in_index: bool,
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
    /// An immutable tag points at it (named with its rule): it cannot be
    /// deleted.
    pub immutable: Option<String>,
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
    /// When its manifest was last pulled (to the resolution of the pull
    /// record, a minute), if ever.
    pub pulled_ms: Option<u64>,
    /// The immutable-tag rule that protects it, if one does.
    pub immutable: Option<String>,
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

/// The index: the rules over a database.
#[derive(Clone)]
pub struct Index {
    db: Db,
}

impl Index {
    pub fn new(db: Db) -> Index {
        Index { db }
    }

    /// Opens (creating if needed) an embedded index file at `path`.
    pub fn open_redb(path: &Path) -> Result<Index> {
        Index::open_redb_with(
            path,
            DEFAULT_CACHE_BYTES,
            Clock::system(),
            Arc::new(NoObserver),
        )
    }

    /// Opens an embedded index file with a page cache of at most
    /// `cache_bytes`, dating transactions by `clock` and reporting every
    /// group commit to `observer`.
    pub fn open_redb_with(
        path: &Path,
        cache_bytes: usize,
        clock: Clock,
        observer: Arc<dyn Observer>,
    ) -> Result<Index> {
        let backend = RedbBackend::open(path, cache_bytes, model::TABLES, clock.clone(), observer)?;
        Ok(Index::new(Db::new(Arc::new(backend), clock)))
    }

    /// The database, for composing rules into one transaction.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Commits what is queued and stops taking writes.
    pub fn close(&self) {
        self.db.close();
    }

    // ---- reads: never blocked by writers ----

    /// Repository names in lexical order, starting after `after`.
    pub async fn repositories(&self, after: Option<&str>, limit: usize) -> Result<Page> {
        let after = after.map(str::to_owned);
        self.db
            .read(move |s| views::repositories(s, after.as_deref(), limit))
            .await
    }

    /// Repositories (in lexical order after `after`) whose name contains
    /// `contains`, with their counts; and whether more follow.
    pub async fn repository_summaries(
        &self,
        after: Option<&str>,
        limit: usize,
        contains: Option<&str>,
    ) -> Result<(Vec<RepoSummary>, bool)> {
        let (after, contains) = (after.map(str::to_owned), contains.map(str::to_owned));
        self.db
            .read(move |s| {
                views::repository_summaries(s, after.as_deref(), limit, contains.as_deref())
            })
            .await
    }

    /// A repository's manifests and tags, with what deleting each would
    /// free, read from one snapshot. `NameUnknown` if it does not exist.
    pub async fn repository_view(&self, repo: &RepoName) -> Result<RepositoryView> {
        let repo = repo.to_string();
        self.db
            .read_blocking(move |s| views::repository_view(s, &repo))
            .await
    }

    /// Whether the repository holds anything (tags, manifests, blobs, uploads).
    pub async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        let repo = repo.to_string();
        self.db.read(move |s| counters::repo_exists(s, &repo)).await
    }

    /// Tags of a repository in lexical order, starting after `after`;
    /// `NameUnknown` if the repository does not exist.
    pub async fn tags(&self, repo: &RepoName, after: Option<&str>, limit: usize) -> Result<Page> {
        let (repo, after) = (repo.to_string(), after.map(str::to_owned));
        self.db
            .read(move |s| views::tags(s, &repo, after.as_deref(), limit))
            .await
    }

    /// The manifest a tag points at.
    pub async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.db
            .read(move |s| views::resolve_tag(s, &repo, &tag))
            .await
    }

    /// A manifest stored in `repo`, with its bytes if `with_body`.
    pub async fn manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        with_body: bool,
    ) -> Result<Option<ManifestInfo>> {
        let (repo, digest) = (repo.to_string(), digest.clone());
        self.db
            .read(move |s| views::manifest(s, &repo, &digest, with_body))
            .await
    }

    /// The size of a blob if it is visible in `repo`.
    pub async fn blob_in_repo(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.db
            .read(move |s| views::blob_in_repo(s, &repo, &digest))
            .await
    }

    /// The size of a blob visible in `repo` that a manifest references.
    pub async fn referenced_blob_in_repo(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.db
            .read(move |s| views::referenced_blob_in_repo(s, &repo, &digest))
            .await
    }

    /// Up to `limit` repositories in which a blob is visible.
    pub async fn blob_repositories(&self, digest: &Digest, limit: usize) -> Result<Vec<RepoName>> {
        let digest = digest.to_string();
        self.db
            .read(move |s| views::blob_repositories(s, &digest, limit))
            .await
    }

    /// A blob's size and reference count, whichever repositories link it.
    pub async fn blob(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        let digest = digest.to_string();
        self.db.read(move |s| views::blob(s, &digest)).await
    }

    /// Manifests in `repo` whose `subject` is `subject`, optionally only
    /// those of one artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let (repo, subject) = (repo.to_string(), subject.to_string());
        let artifact_type = artifact_type.map(str::to_owned);
        self.db
            .read(move |s| views::referrers(s, &repo, &subject, artifact_type.as_deref()))
            .await
    }

    /// An upload session.
    pub async fn upload(&self, id: &str) -> Result<Option<Upload>> {
        let id = id.to_owned();
        self.db.read(move |s| uploads::upload(s, &id)).await
    }

    /// Every upload session (start-up recovery and purging of stale ones).
    pub async fn uploads(&self) -> Result<Vec<(String, Upload)>> {
        self.db.read(|s| views::uploads(s)).await
    }

    /// The running totals.
    pub async fn totals(&self) -> Result<Totals> {
        self.db.read(|s| counters::totals(s)).await
    }

    // ---- writes: each one transaction ----

    /// Records an upload session for `repo` that durably holds `offset`
    /// bytes hashed into `hasher`.
    pub async fn create_upload(
        &self,
        id: &str,
        repo: &RepoName,
        offset: u64,
        hasher: Vec<u8>,
    ) -> Result<()> {
        let (id, repo) = (id.to_owned(), repo.to_string());
        self.db
            .write(move |tx| {
                uploads::create_upload(tx, &id, &repo, offset, hasher.clone(), Vec::new())
            })
            .await
    }

    /// Forgets an upload session (cancelled or failed).
    pub async fn delete_upload(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.db
            .write(move |tx| uploads::delete_upload(tx, &id))
            .await
    }

    /// Records a blob whose bytes are now stored, links it into `repo`, and
    /// closes upload `upload` if given, all in one transaction.
    pub async fn commit_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        upload: Option<&str>,
    ) -> Result<()> {
        let (repo, d) = (repo.to_string(), digest.to_string());
        let upload = upload.map(str::to_owned);
        self.db
            .write(move |tx| commit_blob(tx, &repo, &d, size, upload.as_deref()))
            .await
    }

    /// Links a stored blob into `repo`: from repository `from` if given
    /// (which must see it), else from wherever it is stored. `None` if it
    /// cannot be mounted.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<Option<u64>> {
        let (repo, d) = (repo.to_string(), digest.to_string());
        let from = from.map(|f| f.to_string());
        self.db
            .write(move |tx| refs::mount_blob(tx, &repo, &d, from.as_deref()))
            .await
    }

    /// Removes a blob from `repo`'s view. Refused (`Conflict`) while a
    /// manifest in `repo` references it.
    pub async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let (repo, d) = (repo.to_string(), digest.to_string());
        self.db
            .write(move |tx| refs::unlink_blob(tx, &repo, &d))
            .await
    }

    /// Stores a manifest in `repo` (and points `tag` at it), after checking
    /// that every blob it references is stored with the declared size (one
    /// stored elsewhere is linked in) and every child manifest is stored in
    /// `repo`. Reference counts change in the same transaction.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &ParsedManifest,
        body: Bytes,
        tag: Option<&Tag>,
    ) -> Result<()> {
        let (repo, m) = (repo.to_string(), manifest.clone());
        let tag = tag.map(|t| t.to_string());
        self.db
            .write(move |tx| manifests::put_manifest(tx, &repo, &m, &body, tag.as_deref(), true))
            .await
    }

    /// Removes a tag; the manifest stays.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Digest> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.db
            .write(move |tx| manifests::delete_tag(tx, &repo, &tag))
            .await?
            .parse()
    }

    /// Removes a manifest from `repo`, with every tag pointing at it, and
    /// drops the reference counts it held. Refused (`Conflict`) while an
    /// index in `repo` lists it.
    pub async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let (repo, d) = (repo.to_string(), digest.to_string());
        self.db
            .write(move |tx| manifests::delete_manifest(tx, &repo, &d).map(|_| ()))
            .await
    }

    // ---- garbage collection ----

    /// Unreferenced blobs in digest order, starting after `after`.
    pub async fn unreferenced_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<UnreferencedBlob>> {
        let after = after.cloned();
        self.db
            .read(move |s| views::unreferenced_blobs(s, after.as_ref(), limit))
            .await
    }

    /// Dangling manifests in (repository, digest) order, after `after`.
    pub async fn dangling_manifests(
        &self,
        after: Option<(&RepoName, &Digest)>,
        limit: usize,
    ) -> Result<Vec<DanglingManifest>> {
        let after = after.map(|(r, d)| (r.to_string(), d.to_string()));
        self.db
            .read(move |s| {
                let after = after.as_ref().map(|(r, d)| (r.as_str(), d.as_str()));
                views::dangling_manifests(s, after, limit)
            })
            .await
    }

    /// Removes blobs still unreferenced and not uploaded or mounted after
    /// `seen_cutoff_ms`, with their links; returns those removed.
    pub async fn remove_blobs(
        &self,
        digests: &[Digest],
        seen_cutoff_ms: u64,
    ) -> Result<Vec<(Digest, u64)>> {
        let list: Vec<String> = digests.iter().map(Digest::to_string).collect();
        let removed = self
            .db
            .write(move |tx| refs::remove_blobs(tx, &list, seen_cutoff_ms))
            .await?;
        removed
            .into_iter()
            .map(|(d, size)| Ok((d.parse()?, size)))
            .collect()
    }

    /// Deletes the given manifests if they are still dangling and have been
    /// since their cutoff (unix ms) or earlier. With `dry_run` nothing is
    /// kept: the result says what it would have done.
    pub async fn collect_manifests(
        &self,
        targets: &[(RepoName, Digest, u64)],
        dry_run: bool,
    ) -> Result<Collected> {
        let list: Vec<(String, String, Option<u64>)> = targets
            .iter()
            .map(|(r, d, cutoff)| (r.to_string(), d.to_string(), Some(*cutoff)))
            .collect();
        let job = move |tx: &mut crate::db::Tx<'_>| {
            let removed = cascade::collect_manifests(tx, &list, false)?;
            cascade::collected(tx, removed)
        };
        if dry_run {
            self.db.what_if(job).await
        } else {
            self.db.write(job).await
        }
    }

    /// What deleting this tag or manifest would free right now: the blobs
    /// only it (and what only it keeps) references. Changes nothing.
    pub async fn preview_delete(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Collected> {
        let (repo, reference) = (repo.to_string(), reference.clone());
        self.db
            .what_if(move |tx| {
                let (tag, digest) = match &reference {
                    Reference::Tag(t) => {
                        let d = views::resolve_tag(tx, &repo, t.as_str())?
                            .ok_or(Error::ManifestUnknown)?;
                        (Some(t.as_str()), d.to_string())
                    }
                    Reference::Digest(d) => (None, d.to_string()),
                };
                let removed = cascade::delete_with_cascade(tx, &repo, tag, &digest)?;
                cascade::collected(tx, removed)
            })
            .await
    }

    /// Removes a repository's tags, manifests and blob links in one
    /// transaction (or, with `dry_run`, says what that would do).
    pub async fn delete_repository(&self, repo: &RepoName, dry_run: bool) -> Result<Collected> {
        let repo = repo.to_string();
        let job = move |tx: &mut crate::db::Tx<'_>| {
            let removed = cascade::delete_repository(tx, &repo)?;
            cascade::collected(tx, removed)
        };
        if dry_run {
            self.db.what_if(job).await
        } else {
            self.db.write(job).await
        }
    }

    /// The newest `limit` run reports, newest first.
    pub async fn gc_runs(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        self.db.read(move |s| log::gc_runs(s, limit)).await
    }

    // ---- integrity ----

    /// Every blob row in digest order, starting after `after` (a full walk:
    /// integrity checks only).
    pub async fn blobs_page(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<(Digest, BlobInfo)>> {
        let after = after.cloned();
        self.db
            .read(move |s| views::blobs_page(s, after.as_ref(), limit))
            .await
    }

    /// Recomputes every derived record (reference counts, reverse tables,
    /// repository counters, totals) from the primary ones; returns each
    /// disagreement, and with `repair` rewrites the derived records.
    pub async fn recount(&self, repair: bool) -> Result<Vec<String>> {
        if repair {
            self.db
                .write(move |tx| model::recount::recount(tx, true))
                .await
        } else {
            self.db
                .what_if(move |tx| model::recount::recount(tx, false))
                .await
        }
    }

    /// Forgets a blob whose bytes are gone or corrupt, with every manifest
    /// referencing it (and the indexes listing those); returns them.
    pub async fn drop_blob(&self, digest: &Digest) -> Result<Vec<RemovedManifest>> {
        let d = digest.to_string();
        cascade::removed_manifests(self.db.write(move |tx| cascade::drop_blob(tx, &d)).await?)
    }

    // ---- activity log and settings ----

    /// Appends an entry, listing at most `retain` entries; returns its id.
    pub async fn record_activity(&self, entry: Activity, retain: u64) -> Result<u64> {
        self.db
            .write(move |tx| log::record_activity(tx, entry.clone(), retain))
            .await
    }

    /// Entries matching `query` within the newest `retain`, newest first.
    pub async fn activity(&self, query: &ActivityQuery, retain: u64) -> Result<Vec<Activity>> {
        let q = query.clone();
        self.db.read(move |s| log::activity(s, &q, retain)).await
    }

    /// A setting changed at run time.
    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_owned();
        self.db.read(move |s| log::setting(s, &key)).await
    }

    pub async fn set_setting(&self, key: &str, value: Option<&str>) -> Result<()> {
        let (key, value) = (key.to_owned(), value.map(str::to_owned));
        self.db
            .write(move |tx| log::set_setting(tx, &key, value.as_deref()))
            .await
    }
}

/// Records a stored blob and closes its upload session if given.
pub(crate) fn commit_blob(
    tx: &mut crate::db::Tx<'_>,
    repo: &str,
    digest: &str,
    size: u64,
    upload: Option<&str>,
) -> Result<()> {
    if let Some(id) = upload
        && uploads::upload(tx, id)?.is_none()
    {
        return Err(Error::UploadUnknown);
    }
    refs::commit_blob(tx, repo, digest, size)?;
    if let Some(id) = upload {
        // The link just made keeps `repo`; a session of another repository
        // may have been the last thing in that one.
        let closed = uploads::close_upload(tx, id)?;
        if closed != repo {
            counters::settle_repo(tx, &closed)?;
        }
    }
    Ok(())
}
