//! The embedded index on redb.
//!
//! Reads open a redb read transaction (an MVCC snapshot) on the calling task
//! and never wait for writers. Writes go to one writer thread through a
//! channel: it takes every job queued at that moment, runs them in one write
//! transaction, commits once (one fsync for the whole group), and only then
//! answers each caller. A client is told a write succeeded only after the
//! commit that contains it is durable.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};
use tokio::sync::oneshot;

use super::tables::{self, META, ManifestRow, SCHEMA_VERSION, TOTALS, W, dec};
use super::{
    Activity, ActivityQuery, BlobInfo, Collected, DanglingManifest, Index, ManifestInfo,
    ManifestView, Page, Referrer, RemovedManifest, RepoSummary, RepositoryView, TagView, Totals,
    UnreferencedBlob, Upload,
};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::ParsedManifest;
use crate::names::{Reference, RepoName, Tag};
use crate::observe::{NoObserver, Observer};

/// Most jobs one group commit takes; the rest wait for the next.
const MAX_GROUP: usize = 512;

/// Memory redb may use to cache index pages unless told otherwise. redb's
/// own default (1 GiB) lets a busy server's resident set grow with the
/// index file for a long time; the B-tree's interior pages, which every
/// lookup touches, fit many times over in this, and a page that misses is
/// one read from the operating system's page cache.
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A queued write: runs against the open tables and returns whether it hit
/// a storage error (which aborts the whole group) and how to answer its
/// caller once the group's fate is known.
type Job = Box<dyn for<'t> FnOnce(&mut W<'t>) -> (bool, Completion) + Send>;

/// A job and whether its transaction is to be rolled back ("what if"):
/// such a job runs alone, and its caller gets what it computed.
struct Queued {
    job: Job,
    what_if: bool,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct RedbIndex {
    db: Arc<Database>,
    jobs: Mutex<Option<mpsc::Sender<Queued>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl RedbIndex {
    /// Opens (creating if needed) the index file at `path`.
    pub fn open(path: &Path) -> Result<RedbIndex> {
        RedbIndex::open_observed(path, DEFAULT_CACHE_BYTES, Arc::new(NoObserver))
    }

    /// Opens the index with a page cache of at most `cache_bytes`, reporting
    /// every group commit to `observer`.
    pub fn open_observed(
        path: &Path,
        cache_bytes: usize,
        observer: Arc<dyn Observer>,
    ) -> Result<RedbIndex> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(Error::storage)?;
        {
            let txn = db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                let version = meta.get("schema_version")?.map(|v| v.value().to_owned());
                match version.as_deref() {
                    None => {
                        meta.insert("schema_version", SCHEMA_VERSION)?;
                    }
                    Some(SCHEMA_VERSION) => {}
                    Some(other) => {
                        return Err(Error::Storage(format!(
                            "index schema version {other} is not supported (expected {SCHEMA_VERSION})"
                        )));
                    }
                }
                // Create every table so readers never meet a missing one.
                let _ = W::open(&txn, now_ms())?;
            }
            txn.commit()?;
        }
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel::<Queued>();
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("index-writer".into())
            .spawn(move || writer_loop(&writer_db, &rx, observer.as_ref()))
            .map_err(Error::Io)?;
        Ok(RedbIndex {
            db,
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Overwrites a blob's reference count, bypassing every rule: only for
    /// tests of the integrity check, which must find and repair it.
    #[doc(hidden)]
    pub async fn corrupt_refcount_for_tests(&self, digest: &Digest, refs: u64) -> Result<()> {
        let d = digest.to_string();
        self.write(move |w| {
            let mut row = w.blob_row(&d)?.ok_or(Error::BlobUnknown(d.parse()?))?;
            row.refs = refs;
            w.blobs.insert(d.as_str(), tables::enc(&row).as_slice())?;
            Ok(())
        })
        .await
    }

    /// Stops the writer after the queued jobs are committed.
    pub fn close(&self) {
        self.jobs.lock().expect("jobs lock").take();
        if let Some(h) = self.writer.lock().expect("writer lock").take() {
            let _ = h.join();
        }
    }

    /// Queues `f` for the next group commit and waits for that commit.
    async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'t> FnOnce(&mut W<'t>) -> Result<R> + Send + 'static,
    {
        self.queue(f, false).await
    }

    /// Runs `f` alone in a write transaction that is then rolled back, and
    /// returns what it computed: previews and dry runs use the real
    /// mutation code, so they cannot disagree with it.
    async fn what_if<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'t> FnOnce(&mut W<'t>) -> Result<R> + Send + 'static,
    {
        self.queue(f, true).await
    }

    async fn queue<R, F>(&self, f: F, what_if: bool) -> Result<R>
    where
        R: Send + 'static,
        F: for<'t> FnOnce(&mut W<'t>) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<R>>();
        let job: Job = Box::new(move |w| {
            let result = f(w);
            let fatal = matches!(result, Err(Error::Storage(_)) | Err(Error::Io(_)));
            let completion: Completion = Box::new(move |committed| {
                let answer = match committed {
                    Ok(()) => result,
                    Err(e) => Err(Error::Storage(e)),
                };
                let _ = tx.send(answer);
            });
            (fatal, completion)
        });
        let sender = self.jobs.lock().expect("jobs lock").clone();
        let Some(sender) = sender else {
            return Err(Error::Unavailable("index is closed".into()));
        };
        sender
            .send(Queued { job, what_if })
            .map_err(|_| Error::Unavailable("index writer stopped".into()))?;
        rx.await
            .map_err(|_| Error::Storage("index writer dropped a job".into()))?
    }

    fn read(&self) -> Result<ReadTransaction> {
        Ok(self.db.begin_read()?)
    }
}

impl Drop for RedbIndex {
    fn drop(&mut self) {
        self.close();
    }
}

fn writer_loop(db: &Database, rx: &mpsc::Receiver<Queued>, observer: &dyn Observer) {
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(q) => q,
            None => match rx.recv() {
                Ok(q) => q,
                Err(_) => return,
            },
        };
        let mut group = vec![first.job];
        // A what-if job runs alone; others share a group commit.
        while !first.what_if && group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(q) if q.what_if => {
                    carried = Some(q);
                    break;
                }
                Ok(q) => group.push(q.job),
                Err(_) => break,
            }
        }
        let mut completions = Vec::with_capacity(group.len());
        let writes = group.len();
        let started = std::time::Instant::now();
        let outcome = run_group(db, group, &mut completions, first.what_if);
        if !first.what_if {
            observer.index_commit(started.elapsed(), writes);
        }
        for c in completions {
            c(outcome.clone());
        }
    }
}

fn run_group(
    db: &Database,
    group: Vec<Job>,
    completions: &mut Vec<Completion>,
    roll_back: bool,
) -> Result<(), String> {
    // If no transaction can be had, the jobs are dropped unrun and each
    // caller learns it from its closed channel.
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    let mut poisoned = None;
    {
        let mut w = match W::open(&txn, now_ms()) {
            Ok(w) => w,
            Err(e) => return Err(e.to_string()),
        };
        for job in group {
            let (fatal, completion) = job(&mut w);
            if fatal && poisoned.is_none() {
                poisoned = Some("a storage error in the same commit group".to_owned());
            }
            completions.push(completion);
        }
    }
    match poisoned {
        Some(why) => {
            let _ = txn.abort();
            Err(why)
        }
        None if roll_back => txn.abort().map_err(|e| e.to_string()),
        None => txn.commit().map_err(|e| e.to_string()),
    }
}

fn get_row<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>> {
    table.get(key)?.map(|g| dec(g.value())).transpose()
}

fn manifest_row(txn: &ReadTransaction, repo: &str, digest: &str) -> Result<Option<ManifestRow>> {
    let t = txn.open_table(tables::MANIFESTS)?;
    t.get((repo, digest))?.map(|g| dec(g.value())).transpose()
}

/// Names from a sorted key range: at most `limit`, strictly after `after`,
/// and whether more remain.
fn page(
    names: impl Iterator<Item = Result<String>>,
    after: Option<&str>,
    limit: usize,
) -> Result<Page> {
    let mut items = Vec::new();
    let mut more = false;
    for name in names {
        let name = name?;
        if after.is_some_and(|a| name.as_str() <= a) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(name);
    }
    Ok(Page { items, more })
}

/// The result of a collecting transaction: what it removed and the blobs
/// left unreferenced by it.
fn collected(w: &W<'_>, mark: usize, removed: Vec<(String, String, u64)>) -> Result<Collected> {
    let manifests = removed_manifests(removed)?;
    let freed = w
        .freed_blobs(mark)?
        .into_iter()
        .map(|(d, row, since)| unreferenced(&d, &row, since))
        .collect::<Result<_>>()?;
    Ok(Collected { manifests, freed })
}

/// Manifest rows a transaction removed, as (repository, digest, size).
fn removed_manifests(removed: Vec<(String, String, u64)>) -> Result<Vec<RemovedManifest>> {
    removed
        .into_iter()
        .map(|(repo, digest, size)| {
            Ok(RemovedManifest {
                repository: repo.parse()?,
                digest: digest.parse()?,
                size,
            })
        })
        .collect()
}

fn unreferenced(digest: &str, row: &tables::BlobRow, since_ms: u64) -> Result<UnreferencedBlob> {
    Ok(UnreferencedBlob {
        digest: digest.parse()?,
        size: row.size,
        since_ms,
        seen_ms: row.seen_ms,
    })
}

#[async_trait]
impl Index for RedbIndex {
    async fn repositories(&self, after: Option<&str>, limit: usize) -> Result<Page> {
        let txn = self.read()?;
        let t = txn.open_table(tables::REPOS)?;
        let start = after.unwrap_or("");
        let names = t
            .range(start..)?
            .map(|e| e.map(|(k, _)| k.value().to_owned()).map_err(Error::from));
        page(names, after, limit)
    }

    async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        let txn = self.read()?;
        let t = txn.open_table(tables::REPOS)?;
        Ok(t.get(repo.as_str())?.is_some())
    }

    async fn tags(&self, repo: &RepoName, after: Option<&str>, limit: usize) -> Result<Page> {
        let txn = self.read()?;
        let repos = txn.open_table(tables::REPOS)?;
        if repos.get(repo.as_str())?.is_none() {
            return Err(Error::NameUnknown);
        }
        let t = txn.open_table(tables::TAGS)?;
        let r = repo.as_str();
        let names = t
            .range((r, after.unwrap_or(""))..)?
            .map(|e| {
                e.map(|(k, _)| {
                    let (kr, tag) = k.value();
                    (kr == r).then(|| tag.to_owned())
                })
                .map_err(Error::from)
            })
            .map_while(|e| e.transpose());
        page(names, after, limit)
    }

    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        let txn = self.read()?;
        let t = txn.open_table(tables::TAGS)?;
        let row: Option<tables::TagRow> = t
            .get((repo.as_str(), tag.as_str()))?
            .map(|g| dec(g.value()))
            .transpose()?;
        row.map(|r| r.digest.parse()).transpose()
    }

    async fn manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        with_body: bool,
    ) -> Result<Option<ManifestInfo>> {
        let txn = self.read()?;
        let Some(row) = manifest_row(&txn, repo.as_str(), digest.as_str())? else {
            return Ok(None);
        };
        let body = if with_body {
            let t = txn.open_table(tables::MANIFEST_BODIES)?;
            let bytes = t
                .get(digest.as_str())?
                .map(|g| Bytes::copy_from_slice(g.value()))
                .ok_or_else(|| Error::Storage(format!("manifest body missing for {digest}")))?;
            Some(bytes)
        } else {
            None
        };
        Ok(Some(ManifestInfo {
            digest: digest.clone(),
            media_type: row.media_type,
            size: row.size,
            kind: row.kind,
            body,
        }))
    }

    async fn blob_in_repo(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let txn = self.read()?;
        let links = txn.open_table(tables::LINKS)?;
        if links.get((repo.as_str(), digest.as_str()))?.is_none() {
            return Ok(None);
        }
        let blobs = txn.open_table(tables::BLOBS)?;
        let row: Option<tables::BlobRow> = get_row(&blobs, digest.as_str())?;
        Ok(row.map(|r| r.size))
    }

    async fn blob_repositories(&self, digest: &Digest, limit: usize) -> Result<Vec<RepoName>> {
        let txn = self.read()?;
        let t = txn.open_table(tables::LINKS_BY_BLOB)?;
        tables::keys_under(&t, digest.as_str())?
            .into_iter()
            .take(limit)
            .map(|r| r.parse())
            .collect()
    }

    async fn blob(&self, digest: &Digest) -> Result<Option<BlobInfo>> {
        let txn = self.read()?;
        let blobs = txn.open_table(tables::BLOBS)?;
        let row: Option<tables::BlobRow> = get_row(&blobs, digest.as_str())?;
        Ok(row.as_ref().map(tables::blob_info))
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let txn = self.read()?;
        let t = txn.open_table(tables::REFERRERS)?;
        let (r, s) = (repo.as_str(), subject.as_str());
        let mut out = Vec::new();
        for referrer in tables::keys_under2(&t, r, s)? {
            let Some(row) = manifest_row(&txn, r, &referrer)? else {
                continue;
            };
            if artifact_type.is_some() && row.artifact_type.as_deref() != artifact_type {
                continue;
            }
            out.push(Referrer {
                media_type: row.media_type,
                digest: referrer.parse()?,
                size: row.size,
                artifact_type: row.artifact_type,
                annotations: row.annotations,
            });
        }
        Ok(out)
    }

    async fn upload(&self, id: &str) -> Result<Option<Upload>> {
        let txn = self.read()?;
        let t = txn.open_table(tables::UPLOADS)?;
        get_row(&t, id)
    }

    async fn uploads(&self) -> Result<Vec<(String, Upload)>> {
        let txn = self.read()?;
        let t = txn.open_table(tables::UPLOADS)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let (k, v) = e?;
            out.push((k.value().to_owned(), dec(v.value())?));
        }
        Ok(out)
    }

    async fn totals(&self) -> Result<Totals> {
        let txn = self.read()?;
        let t = txn.open_table(TOTALS)?;
        tables::totals_from(|name| Ok(t.get(name)?.map(|g| g.value()).unwrap_or(0)))
    }

    async fn create_upload(
        &self,
        id: &str,
        repo: &RepoName,
        offset: u64,
        hasher: Vec<u8>,
    ) -> Result<()> {
        let (id, repo) = (id.to_owned(), repo.to_string());
        self.write(move |w| w.create_upload(&id, &repo, offset, hasher))
            .await
    }

    async fn update_upload(&self, id: &str, offset: u64, hasher: Vec<u8>) -> Result<()> {
        let id = id.to_owned();
        self.write(move |w| w.update_upload(&id, offset, hasher))
            .await
    }

    async fn delete_upload(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.write(move |w| w.delete_upload(&id)).await
    }

    async fn commit_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        upload: Option<&str>,
    ) -> Result<()> {
        let (repo, d, upload) = (
            repo.to_string(),
            digest.to_string(),
            upload.map(str::to_owned),
        );
        self.write(move |w| w.commit_blob(&repo, &d, size, upload.as_deref()))
            .await
    }

    async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<Option<u64>> {
        let (repo, d, from) = (
            repo.to_string(),
            digest.to_string(),
            from.map(|f| f.to_string()),
        );
        self.write(move |w| w.mount_blob(&repo, &d, from.as_deref()))
            .await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let (repo, d) = (repo.to_string(), digest.to_string());
        self.write(move |w| w.unlink_blob(&repo, &d)).await
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &ParsedManifest,
        body: Bytes,
        tag: Option<&Tag>,
    ) -> Result<()> {
        let (repo, m, tag) = (
            repo.to_string(),
            manifest.clone(),
            tag.map(|t| t.to_string()),
        );
        self.write(move |w| w.put_manifest(&repo, &m, &body, tag.as_deref()))
            .await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Digest> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.write(move |w| w.delete_tag(&repo, &tag))
            .await?
            .parse()
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let (repo, d) = (repo.to_string(), digest.to_string());
        self.write(move |w| w.delete_manifest(&repo, &d)).await
    }

    async fn unreferenced_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<UnreferencedBlob>> {
        let txn = self.read()?;
        let unref = txn.open_table(tables::UNREFERENCED)?;
        let blobs = txn.open_table(tables::BLOBS)?;
        let start = after.map_or("", |d| d.as_str());
        let mut out = Vec::new();
        for e in unref.range(start..)? {
            let (k, v) = e?;
            let digest = k.value();
            if after.is_some_and(|a| a.as_str() == digest) {
                continue;
            }
            if out.len() == limit {
                break;
            }
            let row: Option<tables::BlobRow> = get_row(&blobs, digest)?;
            if let Some(row) = row {
                out.push(unreferenced(digest, &row, v.value())?);
            }
        }
        Ok(out)
    }

    async fn dangling_manifests(
        &self,
        after: Option<(&RepoName, &Digest)>,
        limit: usize,
    ) -> Result<Vec<DanglingManifest>> {
        let txn = self.read()?;
        let t = txn.open_table(tables::DANGLING)?;
        let start = after.map_or(("", ""), |(r, d)| (r.as_str(), d.as_str()));
        let mut out = Vec::new();
        for e in t.range(start..)? {
            let (k, v) = e?;
            let (repo, digest) = k.value();
            if after.is_some() && (repo, digest) == start {
                continue;
            }
            if out.len() == limit {
                break;
            }
            let row: tables::DanglingRow = dec(v.value())?;
            let size = manifest_row(&txn, repo, digest)?.map_or(0, |m| m.size);
            out.push(DanglingManifest {
                repository: repo.parse()?,
                digest: digest.parse()?,
                size,
                since_ms: row.since_ms,
                orphaned_referrer: row.orphaned_referrer,
            });
        }
        Ok(out)
    }

    async fn remove_blobs(
        &self,
        digests: &[Digest],
        seen_cutoff_ms: u64,
    ) -> Result<Vec<(Digest, u64)>> {
        let list: Vec<String> = digests.iter().map(Digest::to_string).collect();
        let removed = self
            .write(move |w| w.remove_blobs(&list, seen_cutoff_ms))
            .await?;
        removed
            .into_iter()
            .map(|(d, size)| Ok((d.parse()?, size)))
            .collect()
    }

    async fn collect_manifests(
        &self,
        targets: &[(RepoName, Digest, u64)],
        dry_run: bool,
    ) -> Result<Collected> {
        let list: Vec<(String, String, Option<u64>)> = targets
            .iter()
            .map(|(r, d, cutoff)| (r.to_string(), d.to_string(), Some(*cutoff)))
            .collect();
        let job = move |w: &mut W<'_>| {
            let mark = w.freed.len();
            let removed = w.collect_manifests(&list, false)?;
            collected(w, mark, removed)
        };
        if dry_run {
            self.what_if(job).await
        } else {
            self.write(job).await
        }
    }

    async fn preview_delete(&self, repo: &RepoName, reference: &Reference) -> Result<Collected> {
        let (repo, reference) = (repo.to_string(), reference.clone());
        let digest = match &reference {
            Reference::Digest(d) => d.to_string(),
            Reference::Tag(t) => self
                .resolve_tag(&repo.parse()?, t)
                .await?
                .ok_or(Error::ManifestUnknown)?
                .to_string(),
        };
        self.what_if(move |w| {
            let tag = match &reference {
                Reference::Tag(t) => Some(t.as_str()),
                Reference::Digest(_) => None,
            };
            let mark = w.freed.len();
            let removed = w.delete_with_cascade(&repo, tag, &digest)?;
            collected(w, mark, removed)
        })
        .await
    }

    async fn delete_repository(&self, repo: &RepoName, dry_run: bool) -> Result<Collected> {
        let repo = repo.to_string();
        let job = move |w: &mut W<'_>| {
            let mark = w.freed.len();
            let removed = w.delete_repository(&repo)?;
            collected(w, mark, removed)
        };
        if dry_run {
            self.what_if(job).await
        } else {
            self.write(job).await
        }
    }

    async fn save_gc_run(&self, id: u64, report: Vec<u8>) -> Result<()> {
        self.write(move |w| {
            w.gc_runs.insert(id, report.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn gc_runs(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let txn = self.read()?;
        let t = txn.open_table(tables::GC_RUNS)?;
        let mut out = Vec::new();
        for e in t.iter()?.rev().take(limit) {
            let (k, v) = e?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    async fn blobs_page(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<(Digest, BlobInfo)>> {
        let txn = self.read()?;
        let t = txn.open_table(tables::BLOBS)?;
        let start = after.map_or("", |d| d.as_str());
        let mut out = Vec::new();
        for e in t.range(start..)? {
            let (k, v) = e?;
            if after.is_some_and(|a| a.as_str() == k.value()) {
                continue;
            }
            if out.len() == limit {
                break;
            }
            let row: tables::BlobRow = dec(v.value())?;
            out.push((k.value().parse()?, tables::blob_info(&row)));
        }
        Ok(out)
    }

    async fn recount(&self, repair: bool) -> Result<Vec<String>> {
        if repair {
            self.write(move |w| w.recount(true)).await
        } else {
            self.what_if(move |w| w.recount(false)).await
        }
    }

    async fn drop_blob(&self, digest: &Digest) -> Result<Vec<RemovedManifest>> {
        let d = digest.to_string();
        removed_manifests(self.write(move |w| w.drop_blob(&d)).await?)
    }

    async fn record_activity(&self, entry: Activity, retain: u64) -> Result<u64> {
        self.write(move |w| w.record_activity(entry, retain)).await
    }

    async fn activity(&self, q: &ActivityQuery) -> Result<Vec<Activity>> {
        let txn = self.read()?;
        let t = txn.open_table(tables::ACTIVITY)?;
        let mut out = Vec::new();
        for e in t.range(..q.before.unwrap_or(u64::MAX))?.rev() {
            if out.len() >= q.limit {
                break;
            }
            let (_, v) = e?;
            let a: Activity = serde_json::from_slice(v.value())
                .map_err(|e| Error::Storage(format!("corrupt activity entry: {e}")))?;
            if q.since_ms.is_some_and(|s| a.time_ms < s) {
                break; // older entries only from here on
            }
            let keep = q
                .repository
                .as_ref()
                .is_none_or(|r| a.repository.as_ref() == Some(r))
                && q.action.as_ref().is_none_or(|x| &a.action == x);
            if keep {
                out.push(a);
            }
        }
        Ok(out)
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        let txn = self.read()?;
        let t = txn.open_table(tables::SETTINGS)?;
        Ok(t.get(key)?.map(|v| v.value().to_owned()))
    }

    async fn set_setting(&self, key: &str, value: Option<&str>) -> Result<()> {
        let (key, value) = (key.to_owned(), value.map(str::to_owned));
        self.write(move |w| {
            match value {
                Some(v) => w.settings.insert(key.as_str(), v.as_str())?,
                None => w.settings.remove(key.as_str())?,
            };
            Ok(())
        })
        .await
    }

    async fn repository_summaries(
        &self,
        after: Option<&str>,
        limit: usize,
        contains: Option<&str>,
    ) -> Result<(Vec<RepoSummary>, bool)> {
        let txn = self.read()?;
        let t = txn.open_table(tables::REPOS)?;
        let mut out = Vec::new();
        for e in t.range(after.unwrap_or("")..)? {
            let (k, v) = e?;
            let name = k.value();
            if after == Some(name) || contains.is_some_and(|c| !name.contains(c)) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            let row: tables::RepoRow = dec(v.value())?;
            out.push(RepoSummary {
                name: name.to_owned(),
                tags: row.tags,
                manifests: row.manifests,
                bytes: row.link_bytes,
                created_ms: row.created_ms,
            });
        }
        Ok((out, false))
    }

    async fn repository_view(&self, repo: &RepoName) -> Result<RepositoryView> {
        let txn = self.read()?;
        let r = repo.as_str();
        let repo_row: tables::RepoRow = match txn.open_table(tables::REPOS)?.get(r)? {
            Some(g) => dec(g.value())?,
            None => return Err(Error::NameUnknown),
        };
        let mt = txn.open_table(tables::MANIFESTS)?;
        let mut rows: HashMap<String, ManifestRow> = HashMap::new();
        for e in mt.range((r, "")..)? {
            let (k, v) = e?;
            let (kr, digest) = k.value();
            if kr != r {
                break;
            }
            rows.insert(digest.to_owned(), dec(v.value())?);
        }
        let blob_table = txn.open_table(tables::BLOBS)?;
        let mut blobs: HashMap<String, (u64, u64)> = HashMap::new();
        for row in rows.values() {
            for b in &row.blobs {
                if !blobs.contains_key(b) {
                    let info: Option<tables::BlobRow> = get_row(&blob_table, b)?;
                    blobs.insert(b.clone(), info.map_or((0, 0), |i| (i.size, i.refs)));
                }
            }
        }
        let mut referrers: HashMap<&str, Vec<&str>> = HashMap::new();
        for (digest, row) in &rows {
            if let Some(s) = &row.subject {
                referrers
                    .entry(s.as_str())
                    .or_default()
                    .push(digest.as_str());
            }
        }
        let simulate = |root: &str| freed_by_deleting(root, &rows, &blobs, &referrers);
        let attached =
            |row: &ManifestRow| row.subject.as_ref().is_some_and(|s| rows.contains_key(s));

        let mut manifests = Vec::with_capacity(rows.len());
        for (digest, row) in &rows {
            let blob_bytes: u64 = row
                .blobs
                .iter()
                .map(|b| blobs.get(b).map_or(0, |x| x.0))
                .sum();
            manifests.push(ManifestView {
                digest: digest.parse()?,
                media_type: row.media_type.clone(),
                kind: row.kind,
                size: row.size,
                image_bytes: row.size + blob_bytes,
                created_ms: row.created_ms,
                artifact_type: row.artifact_type.clone(),
                subject: row.subject.as_deref().map(str::parse).transpose()?,
                children: row
                    .children
                    .iter()
                    .map(|c| c.parse())
                    .collect::<Result<_>>()?,
                parents: row.parents,
                freed_if_deleted: (row.parents == 0).then(|| simulate(digest)),
            });
        }
        manifests.sort_by(|a, b| {
            b.created_ms
                .cmp(&a.created_ms)
                .then(a.digest.cmp(&b.digest))
        });

        let tt = txn.open_table(tables::TAGS)?;
        let mut tags = Vec::new();
        for e in tt.range((r, "")..)? {
            let (k, v) = e?;
            let (kr, tag) = k.value();
            if kr != r {
                break;
            }
            let t: tables::TagRow = dec(v.value())?;
            let freed = match rows.get(&t.digest) {
                Some(m) if m.tags == 1 && m.parents == 0 && !attached(m) => simulate(&t.digest),
                _ => 0,
            };
            tags.push(TagView {
                tag: tag.to_owned(),
                digest: t.digest.parse()?,
                updated_ms: t.updated_ms,
                freed_if_deleted: freed,
            });
        }
        Ok(RepositoryView {
            name: r.to_owned(),
            bytes: repo_row.link_bytes,
            created_ms: repo_row.created_ms,
            manifests,
            tags,
        })
    }
}

/// Bytes freed if `root` (a manifest of one repository, given as `rows`)
/// were deleted along with everything that would become dangling because
/// of it: children no longer listed by any remaining index, referrers of a
/// deleted subject. A blob is freed when every reference to it comes from
/// the deleted set. This reads a snapshot; `preview_delete` runs the real
/// deletion in a rolled-back transaction and must agree (tested).
fn freed_by_deleting(
    root: &str,
    rows: &HashMap<String, ManifestRow>,
    blobs: &HashMap<String, (u64, u64)>,
    referrers: &HashMap<&str, Vec<&str>>,
) -> u64 {
    let mut doomed: HashSet<&str> = HashSet::from([root]);
    let mut queue = vec![root];
    let mut listed_by_doomed: HashMap<&str, u64> = HashMap::new();
    // Dangling once the doomed set is gone: untagged, every index listing
    // it doomed, and its subject (if stored) doomed. Re-checked whenever one
    // of its parents or its subject is doomed, which is when it can change.
    let dangling = |c: &str, doomed: &HashSet<&str>, listed: &HashMap<&str, u64>| {
        rows.get(c).is_some_and(|row| {
            row.tags == 0
                && listed.get(c).copied().unwrap_or(0) >= row.parents
                && row
                    .subject
                    .as_deref()
                    .is_none_or(|s| !rows.contains_key(s) || doomed.contains(s))
        })
    };
    while let Some(m) = queue.pop() {
        let Some(row) = rows.get(m) else { continue };
        for c in &row.children {
            *listed_by_doomed.entry(c.as_str()).or_default() += 1;
        }
        let affected = row
            .children
            .iter()
            .map(String::as_str)
            .chain(referrers.get(m).into_iter().flatten().copied());
        for c in affected {
            if !doomed.contains(c) && dangling(c, &doomed, &listed_by_doomed) {
                let c = rows.get_key_value(c).expect("checked").0.as_str();
                doomed.insert(c);
                queue.push(c);
            }
        }
    }
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for m in &doomed {
        for b in &rows[*m].blobs {
            *counts.entry(b.as_str()).or_default() += 1;
        }
    }
    counts
        .iter()
        .filter_map(|(b, n)| {
            blobs
                .get(*b)
                .filter(|(_, refs)| refs == n)
                .map(|(size, _)| size)
        })
        .sum()
}
