//! The embedded index on redb.
//!
//! Reads open a redb read transaction (an MVCC snapshot) on the calling task
//! and never wait for writers. Writes go to one writer thread through a
//! channel: it takes every job queued at that moment, runs them in one write
//! transaction, commits once (one fsync for the whole group), and only then
//! answers each caller. A client is told a write succeeded only after the
//! commit that contains it is durable.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};
use tokio::sync::oneshot;

use super::tables::{self, META, ManifestRow, SCHEMA_VERSION, TOTALS, W, dec};
use super::{BlobInfo, Index, ManifestInfo, Page, Referrer, Totals, Upload};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::ParsedManifest;
use crate::names::{RepoName, Tag};

/// Most jobs one group commit takes; the rest wait for the next.
const MAX_GROUP: usize = 512;

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A queued write: runs against the open tables and returns whether it hit
/// a storage error (which aborts the whole group) and how to answer its
/// caller once the group's fate is known.
type Job = Box<dyn for<'t> FnOnce(&mut W<'t>) -> (bool, Completion) + Send>;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct RedbIndex {
    db: Arc<Database>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Blobs confirmed by HEAD/GET, with when. Kept in memory: a restart
    /// instead protects every blob for one grace period (see `protected_since`).
    touched: Mutex<HashMap<Digest, Instant>>,
    opened: Instant,
}

impl RedbIndex {
    /// Opens (creating if needed) the index file at `path`.
    pub fn open(path: &Path) -> Result<RedbIndex> {
        let db = Database::create(path).map_err(Error::storage)?;
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
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("index-writer".into())
            .spawn(move || writer_loop(&writer_db, &rx))
            .map_err(Error::Io)?;
        Ok(RedbIndex {
            db,
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            touched: Mutex::new(HashMap::new()),
            opened: Instant::now(),
        })
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
            .send(job)
            .map_err(|_| Error::Unavailable("index writer stopped".into()))?;
        rx.await
            .map_err(|_| Error::Storage("index writer dropped a job".into()))?
    }

    fn read(&self) -> Result<ReadTransaction> {
        Ok(self.db.begin_read()?)
    }

    /// When a blob was last confirmed by a client, if within memory.
    pub fn touched_at(&self, digest: &Digest) -> Option<Instant> {
        self.touched
            .lock()
            .expect("touch lock")
            .get(digest)
            .copied()
    }

    /// Forgets touches older than `grace` (they no longer protect anything).
    pub fn prune_touches(&self, grace: Duration) {
        let now = Instant::now();
        self.touched
            .lock()
            .expect("touch lock")
            .retain(|_, t| now.duration_since(*t) < grace);
    }

    /// When this index was opened: touches from before a restart are lost, so
    /// collection treats every blob as confirmed at this instant.
    pub fn opened_at(&self) -> Instant {
        self.opened
    }
}

impl Drop for RedbIndex {
    fn drop(&mut self) {
        self.close();
    }
}

fn writer_loop(db: &Database, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut completions = Vec::with_capacity(group.len());
        let outcome = run_group(db, group, &mut completions);
        for c in completions {
            c(outcome.clone());
        }
    }
}

fn run_group(
    db: &Database,
    group: Vec<Job>,
    completions: &mut Vec<Completion>,
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
        for e in t.range((r, s, "")..)? {
            let (k, _) = e?;
            let (kr, ks, referrer) = k.value();
            if kr != r || ks != s {
                break;
            }
            let Some(row) = manifest_row(&txn, r, referrer)? else {
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

    async fn create_upload(&self, id: &str, repo: &RepoName, hasher: Vec<u8>) -> Result<()> {
        let (id, repo) = (id.to_owned(), repo.to_string());
        self.write(move |w| w.create_upload(&id, &repo, hasher))
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
            .await?;
        self.touch_blob(digest);
        Ok(())
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
        let mounted = self
            .write(move |w| w.mount_blob(&repo, &d, from.as_deref()))
            .await?;
        if mounted.is_some() {
            self.touch_blob(digest);
        }
        Ok(mounted)
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

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<()> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.write(move |w| w.delete_tag(&repo, &tag)).await
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let (repo, d) = (repo.to_string(), digest.to_string());
        self.write(move |w| w.delete_manifest(&repo, &d)).await
    }

    fn touch_blob(&self, digest: &Digest) {
        self.touched
            .lock()
            .expect("touch lock")
            .insert(digest.clone(), Instant::now());
    }
}
