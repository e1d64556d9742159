//! The redb schema and every index mutation, each written as "check
//! everything, then change everything" so that a refused request leaves its
//! transaction untouched and can share a group commit with others.

use std::collections::BTreeMap;

use redb::{ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Activity, BlobInfo, Totals, Upload};
use crate::error::{Error, Result};
use crate::manifest::{Kind, ParsedManifest};

/// Bumped whenever the layout below changes incompatibly.
pub const SCHEMA_VERSION: &str = "1";

pub const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// repository -> RepoRow
pub const REPOS: TableDefinition<&str, &[u8]> = TableDefinition::new("repos");
/// (repository, tag) -> TagRow
pub const TAGS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tags");
/// (repository, manifest digest, tag): the tags pointing at a manifest
pub const TAGS_BY_MANIFEST: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("tags_by_manifest");
/// (repository, manifest digest) -> ManifestRow
pub const MANIFESTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("manifests");
/// manifest digest -> the exact bytes pushed (shared by every repository
/// storing that manifest)
pub const MANIFEST_BODIES: TableDefinition<&str, &[u8]> = TableDefinition::new("manifest_bodies");
/// manifest digest -> number of repositories storing it
pub const MANIFEST_BODY_REFS: TableDefinition<&str, u64> =
    TableDefinition::new("manifest_body_refs");
/// blob digest -> BlobRow (size, reference count)
pub const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
/// blob digest -> unix ms since when its reference count is zero: the only
/// place garbage collection looks for candidates.
pub const UNREFERENCED: TableDefinition<&str, u64> = TableDefinition::new("unreferenced");
/// (repository, blob digest) -> LinkRow: the blob is visible in the repository
pub const LINKS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("links");
/// (blob digest, repository): the same links, by blob
pub const LINKS_BY_BLOB: TableDefinition<(&str, &str), ()> = TableDefinition::new("links_by_blob");
/// upload id -> Upload
pub const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// (repository, subject digest, referrer digest)
pub const REFERRERS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("referrers");
/// name -> running total (see `Totals`)
pub const TOTALS: TableDefinition<&str, u64> = TableDefinition::new("totals");
/// (repository, manifest digest) -> DanglingRow: manifests nothing keeps
/// (no tag, no index in the repository lists them, not attached to a stored
/// subject). Only the untagged and orphaned-referrer policies collect them;
/// the collector reads this table instead of walking every manifest.
pub const DANGLING: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("dangling");
/// run id -> the collector's report of that run (JSON)
pub const GC_RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("gc_runs");
/// name -> value: settings changed at run time (e.g. the GC schedule)
pub const SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("settings");
/// sequence number -> an activity entry (JSON), oldest first
pub const ACTIVITY: TableDefinition<u64, &[u8]> = TableDefinition::new("activity");

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

pub fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("index rows always serialize")
}

pub fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    postcard::from_bytes(b).map_err(|e| Error::Storage(format!("corrupt index row: {e}")))
}

impl From<redb::StorageError> for Error {
    fn from(e: redb::StorageError) -> Error {
        Error::storage(e)
    }
}

impl From<redb::TableError> for Error {
    fn from(e: redb::TableError) -> Error {
        Error::storage(e)
    }
}

impl From<redb::TransactionError> for Error {
    fn from(e: redb::TransactionError) -> Error {
        Error::storage(e)
    }
}

impl From<redb::CommitError> for Error {
    fn from(e: redb::CommitError) -> Error {
        Error::storage(e)
    }
}

pub fn totals_from(get: impl Fn(&str) -> Result<u64>) -> Result<Totals> {
    Ok(Totals {
        repositories: get("repositories")?,
        manifests: get("manifests")?,
        tags: get("tags")?,
        blobs: get("blobs")?,
        blob_bytes: get("blob_bytes")?,
        unreferenced_blobs: get("unreferenced_blobs")?,
        unreferenced_bytes: get("unreferenced_bytes")?,
        uploads: get("uploads")?,
    })
}

/// The second key parts of every `(first, _)` key, in order.
pub fn keys_under<V: redb::Value + 'static>(
    table: &impl ReadableTable<(&'static str, &'static str), V>,
    first: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in table.range((first, "")..)? {
        let (k, _) = e?;
        let (a, b) = k.value();
        if a != first {
            break;
        }
        out.push(b.to_owned());
    }
    Ok(out)
}

/// The third key parts of every `(first, second, _)` key, in order.
pub fn keys_under2(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str), ()>,
    first: &str,
    second: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in table.range((first, second, "")..)? {
        let (k, _) = e?;
        let (a, b, c) = k.value();
        if a != first || b != second {
            break;
        }
        out.push(c.to_owned());
    }
    Ok(out)
}

/// Every table, open for one write transaction. The writer opens them once
/// per group commit and runs each queued job against them.
pub struct W<'t> {
    pub repos: Table<'t, &'static str, &'static [u8]>,
    pub tags: Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub tags_by_manifest: Table<'t, (&'static str, &'static str, &'static str), ()>,
    pub manifests: Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub manifest_bodies: Table<'t, &'static str, &'static [u8]>,
    pub manifest_body_refs: Table<'t, &'static str, u64>,
    pub blobs: Table<'t, &'static str, &'static [u8]>,
    pub unreferenced: Table<'t, &'static str, u64>,
    pub links: Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub links_by_blob: Table<'t, (&'static str, &'static str), ()>,
    pub uploads: Table<'t, &'static str, &'static [u8]>,
    pub referrers: Table<'t, (&'static str, &'static str, &'static str), ()>,
    pub totals: Table<'t, &'static str, u64>,
    pub dangling: Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub gc_runs: Table<'t, u64, &'static [u8]>,
    pub settings: Table<'t, &'static str, &'static str>,
    pub activity: Table<'t, u64, &'static [u8]>,
    pub now_ms: u64,
    /// Blobs whose reference count dropped to zero in this transaction, in
    /// order (what-if transactions and collections report them).
    pub freed: Vec<String>,
}

impl<'t> W<'t> {
    pub fn open(txn: &'t WriteTransaction, now_ms: u64) -> Result<W<'t>> {
        Ok(W {
            repos: txn.open_table(REPOS)?,
            tags: txn.open_table(TAGS)?,
            tags_by_manifest: txn.open_table(TAGS_BY_MANIFEST)?,
            manifests: txn.open_table(MANIFESTS)?,
            manifest_bodies: txn.open_table(MANIFEST_BODIES)?,
            manifest_body_refs: txn.open_table(MANIFEST_BODY_REFS)?,
            blobs: txn.open_table(BLOBS)?,
            unreferenced: txn.open_table(UNREFERENCED)?,
            links: txn.open_table(LINKS)?,
            links_by_blob: txn.open_table(LINKS_BY_BLOB)?,
            uploads: txn.open_table(UPLOADS)?,
            referrers: txn.open_table(REFERRERS)?,
            totals: txn.open_table(TOTALS)?,
            dangling: txn.open_table(DANGLING)?,
            gc_runs: txn.open_table(GC_RUNS)?,
            settings: txn.open_table(SETTINGS)?,
            activity: txn.open_table(ACTIVITY)?,
            now_ms,
            freed: Vec::new(),
        })
    }

    // ---- small helpers ----

    fn bump(&mut self, name: &str, delta: i64) -> Result<()> {
        let current = self.totals.get(name)?.map(|g| g.value()).unwrap_or(0);
        let next = current.saturating_add_signed(delta);
        self.totals.insert(name, next)?;
        Ok(())
    }

    fn repo_row(&self, repo: &str) -> Result<Option<RepoRow>> {
        self.repos.get(repo)?.map(|g| dec(g.value())).transpose()
    }

    /// Applies `change` to a repository's counters, creating the row when a
    /// repository gets its first content and removing it when it empties.
    fn adjust_repo(&mut self, repo: &str, change: impl FnOnce(&mut RepoRow)) -> Result<()> {
        let existing = self.repo_row(repo)?;
        let created = existing.is_none();
        let mut row = existing.unwrap_or(RepoRow {
            created_ms: self.now_ms,
            ..RepoRow::default()
        });
        change(&mut row);
        if row.is_empty() {
            if !created {
                self.repos.remove(repo)?;
                self.bump("repositories", -1)?;
            }
        } else {
            self.repos.insert(repo, enc(&row).as_slice())?;
            if created {
                self.bump("repositories", 1)?;
            }
        }
        Ok(())
    }

    pub fn blob_row(&self, digest: &str) -> Result<Option<BlobRow>> {
        self.blobs.get(digest)?.map(|g| dec(g.value())).transpose()
    }

    fn link_row(&self, repo: &str, digest: &str) -> Result<Option<LinkRow>> {
        self.links
            .get((repo, digest))?
            .map(|g| dec(g.value()))
            .transpose()
    }

    pub fn manifest_row(&self, repo: &str, digest: &str) -> Result<Option<ManifestRow>> {
        self.manifests
            .get((repo, digest))?
            .map(|g| dec(g.value()))
            .transpose()
    }

    /// Changes a blob's reference count, keeping the unreferenced table and
    /// totals in step. The blob row must exist.
    fn adjust_blob_refs(&mut self, digest: &str, delta: i64) -> Result<()> {
        let mut row = self
            .blob_row(digest)?
            .ok_or_else(|| Error::Storage(format!("blob row missing for {digest}")))?;
        let before = row.refs;
        row.refs = row.refs.saturating_add_signed(delta);
        self.blobs.insert(digest, enc(&row).as_slice())?;
        if before == 0 && row.refs > 0 {
            self.unreferenced.remove(digest)?;
            self.bump("unreferenced_blobs", -1)?;
            self.bump("unreferenced_bytes", -(row.size as i64))?;
        } else if before > 0 && row.refs == 0 {
            self.unreferenced.insert(digest, self.now_ms)?;
            self.bump("unreferenced_blobs", 1)?;
            self.bump("unreferenced_bytes", row.size as i64)?;
            self.freed.push(digest.to_owned());
        }
        Ok(())
    }

    /// Creates the link of a stored blob into a repository if missing.
    fn ensure_link(&mut self, repo: &str, digest: &str) -> Result<()> {
        if self.link_row(repo, digest)?.is_none() {
            let row = LinkRow {
                refs: 0,
                linked_ms: self.now_ms,
            };
            self.links.insert((repo, digest), enc(&row).as_slice())?;
            self.links_by_blob.insert((digest, repo), ())?;
            let size = self.blob_row(digest)?.map_or(0, |b| b.size);
            self.adjust_repo(repo, |r| {
                r.links += 1;
                r.link_bytes += size;
            })?;
        }
        Ok(())
    }

    fn adjust_link_refs(&mut self, repo: &str, digest: &str, delta: i64) -> Result<()> {
        let mut row = self
            .link_row(repo, digest)?
            .ok_or_else(|| Error::Storage(format!("link row missing for {repo} {digest}")))?;
        row.refs = row.refs.saturating_add_signed(delta);
        self.links.insert((repo, digest), enc(&row).as_slice())?;
        Ok(())
    }

    /// A blob uploaded or mounted again restarts its grace period.
    fn mark_seen(&mut self, digest: &str) -> Result<()> {
        if let Some(mut row) = self.blob_row(digest)? {
            row.seen_ms = self.now_ms;
            self.blobs.insert(digest, enc(&row).as_slice())?;
        }
        Ok(())
    }

    /// Puts a manifest into, or takes it out of, the dangling table after
    /// anything that can change whether something keeps it: its tags, the
    /// indexes listing it, its subject's presence, its own existence.
    pub(super) fn refresh_dangling(&mut self, repo: &str, digest: &str) -> Result<()> {
        let state = match self.manifest_row(repo, digest)? {
            Some(row) if row.tags == 0 && row.parents == 0 => match &row.subject {
                Some(subject) if self.manifest_row(repo, subject)?.is_some() => None,
                Some(_) => Some(true),
                None => Some(false),
            },
            _ => None,
        };
        let current: Option<DanglingRow> = self
            .dangling
            .get((repo, digest))?
            .map(|g| dec(g.value()))
            .transpose()?;
        match (state, current) {
            (None, None) => {}
            (None, Some(_)) => {
                self.dangling.remove((repo, digest))?;
            }
            (Some(orphan), Some(cur)) if cur.orphaned_referrer == orphan => {}
            (Some(orphaned_referrer), cur) => {
                let row = DanglingRow {
                    since_ms: cur.map_or(self.now_ms, |c| c.since_ms),
                    orphaned_referrer,
                };
                self.dangling.insert((repo, digest), enc(&row).as_slice())?;
            }
        }
        Ok(())
    }

    /// Referrers stored in `repo` whose subject is `subject`.
    fn referrers_of(&self, repo: &str, subject: &str) -> Result<Vec<String>> {
        keys_under2(&self.referrers, repo, subject)
    }

    fn set_manifest_row(&mut self, repo: &str, digest: &str, row: &ManifestRow) -> Result<()> {
        self.manifests.insert((repo, digest), enc(row).as_slice())?;
        Ok(())
    }

    // ---- uploads ----

    pub fn create_upload(
        &mut self,
        id: &str,
        repo: &str,
        offset: u64,
        hasher: Vec<u8>,
    ) -> Result<()> {
        if self.uploads.get(id)?.is_some() {
            return Err(Error::Conflict(format!("upload id {id} is already in use")));
        }
        let row = Upload {
            repo: repo.to_owned(),
            offset,
            hasher,
            started_ms: self.now_ms,
            updated_ms: self.now_ms,
        };
        self.uploads.insert(id, enc(&row).as_slice())?;
        self.adjust_repo(repo, |r| r.uploads += 1)?;
        self.bump("uploads", 1)
    }

    pub fn update_upload(&mut self, id: &str, offset: u64, hasher: Vec<u8>) -> Result<()> {
        let mut row: Upload = match self.uploads.get(id)? {
            Some(g) => dec(g.value())?,
            None => return Err(Error::UploadUnknown),
        };
        row.offset = offset;
        row.hasher = hasher;
        row.updated_ms = self.now_ms;
        self.uploads.insert(id, enc(&row).as_slice())?;
        Ok(())
    }

    pub fn delete_upload(&mut self, id: &str) -> Result<()> {
        let row: Upload = match self.uploads.remove(id)? {
            Some(g) => dec(g.value())?,
            None => return Err(Error::UploadUnknown),
        };
        self.adjust_repo(&row.repo, |r| r.uploads -= 1)?;
        self.bump("uploads", -1)
    }

    // ---- blobs ----

    pub fn commit_blob(
        &mut self,
        repo: &str,
        digest: &str,
        size: u64,
        upload: Option<&str>,
    ) -> Result<()> {
        if let Some(id) = upload
            && self.uploads.get(id)?.is_none()
        {
            return Err(Error::UploadUnknown);
        }
        if let Some(row) = self.blob_row(digest)? {
            if row.size != size {
                return Err(Error::Storage(format!(
                    "blob {digest} is recorded with {} bytes, {size} were stored",
                    row.size
                )));
            }
            self.mark_seen(digest)?;
        } else {
            let row = BlobRow {
                size,
                refs: 0,
                created_ms: self.now_ms,
                seen_ms: self.now_ms,
            };
            self.blobs.insert(digest, enc(&row).as_slice())?;
            self.unreferenced.insert(digest, self.now_ms)?;
            self.bump("blobs", 1)?;
            self.bump("blob_bytes", size as i64)?;
            self.bump("unreferenced_blobs", 1)?;
            self.bump("unreferenced_bytes", size as i64)?;
        }
        self.ensure_link(repo, digest)?;
        if let Some(id) = upload {
            self.delete_upload(id)?;
        }
        Ok(())
    }

    pub fn mount_blob(
        &mut self,
        repo: &str,
        digest: &str,
        from: Option<&str>,
    ) -> Result<Option<u64>> {
        let Some(row) = self.blob_row(digest)? else {
            return Ok(None);
        };
        if let Some(from) = from
            && self.link_row(from, digest)?.is_none()
        {
            return Ok(None);
        }
        self.ensure_link(repo, digest)?;
        self.mark_seen(digest)?;
        Ok(Some(row.size))
    }

    pub fn unlink_blob(&mut self, repo: &str, digest: &str) -> Result<()> {
        let Some(link) = self.link_row(repo, digest)? else {
            return Err(Error::BlobUnknown(digest.parse()?));
        };
        if link.refs > 0 {
            return Err(Error::Conflict(format!(
                "blob {digest} is referenced by {} manifest(s) in {repo}; delete them first",
                link.refs
            )));
        }
        self.links.remove((repo, digest))?;
        self.links_by_blob.remove((digest, repo))?;
        let size = self.blob_row(digest)?.map_or(0, |b| b.size);
        self.adjust_repo(repo, |r| {
            r.links -= 1;
            r.link_bytes = r.link_bytes.saturating_sub(size);
        })
    }

    // ---- manifests and tags ----

    pub fn put_manifest(
        &mut self,
        repo: &str,
        m: &ParsedManifest,
        body: &[u8],
        tag: Option<&str>,
    ) -> Result<()> {
        let digest = m.digest.as_str();
        if self.manifest_row(repo, digest)?.is_none() {
            self.insert_manifest(repo, m, body)?;
        }
        if let Some(tag) = tag {
            self.set_tag(repo, tag, digest)?;
        }
        Ok(())
    }

    fn insert_manifest(&mut self, repo: &str, m: &ParsedManifest, body: &[u8]) -> Result<()> {
        let digest = m.digest.as_str();
        // Check everything first.
        let mut to_link = Vec::new();
        for b in &m.blobs {
            let d = b.digest.as_str();
            let Some(row) = self.blob_row(d)? else {
                return Err(Error::ManifestBlobUnknown(b.digest.clone()));
            };
            if row.size != b.size {
                return Err(Error::ManifestInvalid(format!(
                    "descriptor of {d} says {} bytes, the blob has {}",
                    b.size, row.size
                )));
            }
            if self.link_row(repo, d)?.is_none() {
                to_link.push(d);
            }
        }
        for c in &m.children {
            let d = c.digest.as_str();
            let Some(row) = self.manifest_row(repo, d)? else {
                return Err(Error::ManifestChildUnknown(c.digest.clone()));
            };
            if row.size != c.size {
                return Err(Error::ManifestInvalid(format!(
                    "descriptor of {d} says {} bytes, the manifest has {}",
                    c.size, row.size
                )));
            }
        }
        // Then change everything.
        for d in to_link {
            self.ensure_link(repo, d)?;
        }
        for b in &m.blobs {
            let d = b.digest.as_str();
            self.adjust_link_refs(repo, d, 1)?;
            self.adjust_blob_refs(d, 1)?;
        }
        for c in &m.children {
            let d = c.digest.as_str();
            let mut row = self.manifest_row(repo, d)?.expect("checked above");
            row.parents += 1;
            self.set_manifest_row(repo, d, &row)?;
            self.refresh_dangling(repo, d)?;
        }
        if let Some(subject) = &m.subject {
            self.referrers
                .insert((repo, subject.as_str(), digest), ())?;
        }
        let body_refs = self
            .manifest_body_refs
            .get(digest)?
            .map(|g| g.value())
            .unwrap_or(0);
        if body_refs == 0 {
            self.manifest_bodies.insert(digest, body)?;
        }
        self.manifest_body_refs.insert(digest, body_refs + 1)?;
        let row = ManifestRow {
            media_type: m.media_type.clone(),
            size: m.size,
            kind: m.kind,
            blobs: m.blobs.iter().map(|b| b.digest.to_string()).collect(),
            children: m.children.iter().map(|c| c.digest.to_string()).collect(),
            subject: m.subject.as_ref().map(|s| s.to_string()),
            artifact_type: m.artifact_type.clone(),
            annotations: m.annotations.clone(),
            created_ms: self.now_ms,
            parents: 0,
            tags: 0,
        };
        self.set_manifest_row(repo, digest, &row)?;
        self.adjust_repo(repo, |r| r.manifests += 1)?;
        self.bump("manifests", 1)?;
        self.refresh_dangling(repo, digest)?;
        // Referrers pushed before this subject are attached now.
        for referrer in self.referrers_of(repo, digest)? {
            self.refresh_dangling(repo, &referrer)?;
        }
        Ok(())
    }

    fn set_tag(&mut self, repo: &str, tag: &str, digest: &str) -> Result<()> {
        let old: Option<TagRow> = self
            .tags
            .get((repo, tag))?
            .map(|g| dec(g.value()))
            .transpose()?;
        let row = TagRow {
            digest: digest.to_owned(),
            updated_ms: self.now_ms,
        };
        self.tags.insert((repo, tag), enc(&row).as_slice())?;
        match old {
            Some(old) if old.digest == digest => Ok(()),
            Some(old) => {
                self.untag_manifest(repo, &old.digest, tag)?;
                self.tag_manifest(repo, digest, tag)
            }
            None => {
                self.adjust_repo(repo, |r| r.tags += 1)?;
                self.bump("tags", 1)?;
                self.tag_manifest(repo, digest, tag)
            }
        }
    }

    fn tag_manifest(&mut self, repo: &str, digest: &str, tag: &str) -> Result<()> {
        let mut row = self
            .manifest_row(repo, digest)?
            .expect("tagged manifest exists");
        row.tags += 1;
        self.set_manifest_row(repo, digest, &row)?;
        self.tags_by_manifest.insert((repo, digest, tag), ())?;
        self.refresh_dangling(repo, digest)
    }

    fn untag_manifest(&mut self, repo: &str, digest: &str, tag: &str) -> Result<()> {
        if let Some(mut row) = self.manifest_row(repo, digest)? {
            row.tags = row.tags.saturating_sub(1);
            self.set_manifest_row(repo, digest, &row)?;
        }
        self.tags_by_manifest.remove((repo, digest, tag))?;
        self.refresh_dangling(repo, digest)
    }

    /// Removes a tag; returns the digest it pointed at.
    pub fn delete_tag(&mut self, repo: &str, tag: &str) -> Result<String> {
        let old: TagRow = match self.tags.remove((repo, tag))? {
            Some(g) => dec(g.value())?,
            None => return Err(Error::ManifestUnknown),
        };
        self.untag_manifest(repo, &old.digest, tag)?;
        self.adjust_repo(repo, |r| r.tags -= 1)?;
        self.bump("tags", -1)?;
        Ok(old.digest)
    }

    pub fn delete_manifest(&mut self, repo: &str, digest: &str) -> Result<()> {
        let Some(row) = self.manifest_row(repo, digest)? else {
            return Err(Error::ManifestUnknown);
        };
        if row.parents > 0 {
            return Err(Error::Conflict(format!(
                "manifest {digest} is listed by {} index(es) in {repo}; delete the index first",
                row.parents
            )));
        }
        // Tags pointing at it go with it.
        let tags = keys_under2(&self.tags_by_manifest, repo, digest)?;
        for tag in &tags {
            self.tags.remove((repo, tag.as_str()))?;
            self.tags_by_manifest.remove((repo, digest, tag.as_str()))?;
        }
        if !tags.is_empty() {
            let n = tags.len() as u64;
            self.adjust_repo(repo, |r| r.tags -= n)?;
            self.bump("tags", -(n as i64))?;
        }
        for b in &row.blobs {
            self.adjust_link_refs(repo, b, -1)?;
            self.adjust_blob_refs(b, -1)?;
        }
        for c in &row.children {
            if let Some(mut child) = self.manifest_row(repo, c)? {
                child.parents = child.parents.saturating_sub(1);
                self.set_manifest_row(repo, c, &child)?;
                self.refresh_dangling(repo, c)?;
            }
        }
        if let Some(subject) = &row.subject {
            self.referrers.remove((repo, subject.as_str(), digest))?;
        }
        let body_refs = self
            .manifest_body_refs
            .get(digest)?
            .map(|g| g.value())
            .unwrap_or(1);
        if body_refs <= 1 {
            self.manifest_body_refs.remove(digest)?;
            self.manifest_bodies.remove(digest)?;
        } else {
            self.manifest_body_refs.insert(digest, body_refs - 1)?;
        }
        self.manifests.remove((repo, digest))?;
        self.dangling.remove((repo, digest))?;
        self.adjust_repo(repo, |r| r.manifests -= 1)?;
        self.bump("manifests", -1)?;
        // Its referrers are orphaned now.
        for referrer in self.referrers_of(repo, digest)? {
            self.refresh_dangling(repo, &referrer)?;
        }
        Ok(())
    }
    // ---- integrity repair ----

    fn manifests_in(&self, repo: &str) -> Result<Vec<(String, ManifestRow)>> {
        let mut out = Vec::new();
        for e in self.manifests.range((repo, "")..)? {
            let (k, v) = e?;
            let (kr, digest) = k.value();
            if kr != repo {
                break;
            }
            out.push((digest.to_owned(), dec(v.value())?));
        }
        Ok(out)
    }

    /// Deletes a manifest after every index in its repository that lists it
    /// (recursively), appending each removal to `removed`.
    fn delete_with_parents(
        &mut self,
        repo: &str,
        digest: &str,
        removed: &mut Vec<(String, String, u64)>,
    ) -> Result<()> {
        let Some(row) = self.manifest_row(repo, digest)? else {
            return Ok(());
        };
        if row.parents > 0 {
            let parents: Vec<String> = self
                .manifests_in(repo)?
                .into_iter()
                .filter(|(_, m)| m.children.iter().any(|c| c == digest))
                .map(|(d, _)| d)
                .collect();
            for p in parents {
                self.delete_with_parents(repo, &p, removed)?;
            }
        }
        self.delete_manifest(repo, digest)?;
        removed.push((repo.to_owned(), digest.to_owned(), row.size));
        Ok(())
    }

    /// Forgets a blob whose bytes are gone or corrupt: every manifest that
    /// references it goes first (with the indexes listing them), so no
    /// count is left pointing at nothing; then its rows and links. Returns
    /// the manifests removed: the images a re-push must restore.
    pub fn drop_blob(&mut self, digest: &str) -> Result<Vec<(String, String, u64)>> {
        let mut removed = Vec::new();
        for repo in keys_under(&self.links_by_blob, digest)? {
            let users: Vec<String> = self
                .manifests_in(&repo)?
                .into_iter()
                .filter(|(_, m)| m.blobs.iter().any(|b| b == digest))
                .map(|(d, _)| d)
                .collect();
            for m in users {
                self.delete_with_parents(&repo, &m, &mut removed)?;
            }
        }
        if let Some(mut row) = self.blob_row(digest)? {
            // A count a recount would not explain must not keep the row alive.
            if row.refs > 0 {
                row.refs = 0;
                self.blobs.insert(digest, enc(&row).as_slice())?;
                if self.unreferenced.get(digest)?.is_none() {
                    self.unreferenced.insert(digest, self.now_ms)?;
                    self.bump("unreferenced_blobs", 1)?;
                    self.bump("unreferenced_bytes", row.size as i64)?;
                }
            }
            self.remove_blobs(&[digest.to_owned()], u64::MAX)?;
        }
        Ok(removed)
    }

    // ---- activity log ----

    /// Appends an entry (numbered and timed here) and drops the oldest ones
    /// beyond `retain`.
    pub fn record_activity(&mut self, mut entry: Activity, retain: u64) -> Result<u64> {
        let id = self.activity.last()?.map_or(0, |(k, _)| k.value()) + 1;
        entry.id = id;
        if entry.time_ms == 0 {
            entry.time_ms = self.now_ms;
        }
        let json = serde_json::to_vec(&entry).expect("activity serializes");
        self.activity.insert(id, json.as_slice())?;
        while self.activity.len()? > retain.max(1) {
            self.activity.pop_first()?;
        }
        Ok(id)
    }

    // ---- garbage collection ----

    /// The blobs freed so far in this transaction that are still
    /// unreferenced, each once, with their row.
    /// The blobs freed in this transaction since `mark` (a `freed.len()`
    /// taken when a job began: other jobs of the same group commit free
    /// blobs too) that are still unreferenced, each once, with their row and
    /// since when they are unreferenced.
    pub fn freed_blobs(&self, mark: usize) -> Result<Vec<(String, BlobRow, u64)>> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for d in &self.freed[mark.min(self.freed.len())..] {
            if seen.insert(d.as_str())
                && let Some(row) = self.blob_row(d)?.filter(|r| r.refs == 0)
            {
                let since = self
                    .unreferenced
                    .get(d.as_str())?
                    .map_or(self.now_ms, |g| g.value());
                out.push((d.clone(), row, since));
            }
        }
        Ok(out)
    }

    /// Removes blobs that are still unreferenced and not seen since
    /// `seen_cutoff_ms`, with every repository's link to them. Returns what
    /// was removed (digest, size); anything that no longer qualifies stays.
    pub fn remove_blobs(
        &mut self,
        digests: &[String],
        seen_cutoff_ms: u64,
    ) -> Result<Vec<(String, u64)>> {
        let mut removed = Vec::new();
        for d in digests {
            let Some(row) = self.blob_row(d)? else {
                continue;
            };
            if row.refs > 0 || row.seen_ms > seen_cutoff_ms {
                continue;
            }
            let repos = keys_under(&self.links_by_blob, d)?;
            for repo in &repos {
                self.links.remove((repo.as_str(), d.as_str()))?;
                self.links_by_blob.remove((d.as_str(), repo.as_str()))?;
                self.adjust_repo(repo, |r| {
                    r.links -= 1;
                    r.link_bytes = r.link_bytes.saturating_sub(row.size);
                })?;
            }
            self.blobs.remove(d.as_str())?;
            self.unreferenced.remove(d.as_str())?;
            self.bump("blobs", -1)?;
            self.bump("blob_bytes", -(row.size as i64))?;
            self.bump("unreferenced_blobs", -1)?;
            self.bump("unreferenced_bytes", -(row.size as i64))?;
            removed.push((d.clone(), row.size));
        }
        Ok(removed)
    }

    /// Deletes manifests that are still dangling (and, where a target has a
    /// cutoff, have been since that time or earlier). With `cascade`,
    /// whatever becomes dangling because of a deletion (children of an
    /// index, referrers of a subject) goes too. Returns (repository,
    /// digest, size) of each.
    pub fn collect_manifests(
        &mut self,
        targets: &[(String, String, Option<u64>)],
        cascade: bool,
    ) -> Result<Vec<(String, String, u64)>> {
        let mut work: std::collections::VecDeque<(String, String, Option<u64>)> =
            targets.iter().cloned().collect();
        let mut deleted = Vec::new();
        while let Some((repo, digest, cutoff_ms)) = work.pop_front() {
            let dangling: Option<DanglingRow> = self
                .dangling
                .get((repo.as_str(), digest.as_str()))?
                .map(|g| dec(g.value()))
                .transpose()?;
            let Some(dangling) = dangling else { continue };
            if cutoff_ms.is_some_and(|c| dangling.since_ms > c) {
                continue;
            }
            let Some(row) = self.manifest_row(&repo, &digest)? else {
                continue;
            };
            self.delete_manifest(&repo, &digest)?;
            if cascade {
                for c in &row.children {
                    work.push_back((repo.clone(), c.clone(), None));
                }
                for r in self.referrers_of(&repo, &digest)? {
                    work.push_back((repo.clone(), r, None));
                }
            }
            deleted.push((repo, digest, row.size));
        }
        Ok(deleted)
    }

    /// What deleting a tag or a manifest would leave dangling, deleted too:
    /// the basis of "what would this free" previews (run in a transaction
    /// that is then aborted).
    pub fn delete_with_cascade(
        &mut self,
        repo: &str,
        tag: Option<&str>,
        digest: &str,
    ) -> Result<Vec<(String, String, u64)>> {
        match tag {
            Some(tag) => {
                self.delete_tag(repo, tag)?;
            }
            None => {
                let row = self
                    .manifest_row(repo, digest)?
                    .ok_or(Error::ManifestUnknown)?;
                let referrers = self.referrers_of(repo, digest)?;
                self.delete_manifest(repo, digest)?;
                let mut next: Vec<(String, String, Option<u64>)> = row
                    .children
                    .iter()
                    .map(|c| (repo.to_owned(), c.clone(), None))
                    .collect();
                next.extend(referrers.into_iter().map(|r| (repo.to_owned(), r, None)));
                let mut removed = vec![(repo.to_owned(), digest.to_owned(), row.size)];
                removed.extend(self.collect_manifests(&next, true)?);
                return Ok(removed);
            }
        }
        self.collect_manifests(&[(repo.to_owned(), digest.to_owned(), None)], true)
    }

    /// Removes every tag, manifest and blob link of a repository. Its blobs
    /// that nothing else references become unreferenced.
    pub fn delete_repository(&mut self, repo: &str) -> Result<Vec<(String, String, u64)>> {
        if self.repo_row(repo)?.is_none() {
            return Err(Error::NameUnknown);
        }
        for tag in &keys_under(&self.tags, repo)? {
            self.delete_tag(repo, tag)?;
        }
        // Indexes before their children: every round deletes what no index
        // lists any more (there are no cycles: a child exists before its index).
        let mut deleted = Vec::new();
        loop {
            let mut round = Vec::new();
            for e in self.manifests.range((repo, "")..)? {
                let (k, v) = e?;
                let (kr, digest) = k.value();
                if kr != repo {
                    break;
                }
                let row: ManifestRow = dec(v.value())?;
                if row.parents == 0 {
                    round.push((digest.to_owned(), row.size));
                }
            }
            if round.is_empty() {
                break;
            }
            for (digest, size) in round {
                self.delete_manifest(repo, &digest)?;
                deleted.push((repo.to_owned(), digest, size));
            }
        }
        for digest in &keys_under(&self.links, repo)? {
            self.unlink_blob(repo, digest)?;
        }
        Ok(deleted)
    }
}

/// A blob row read back as the trait reports it.
pub fn blob_info(row: &BlobRow) -> BlobInfo {
    BlobInfo {
        size: row.size,
        refs: row.refs,
    }
}
