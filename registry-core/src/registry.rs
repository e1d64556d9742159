//! [`Registry`]: the operations of the OCI distribution API, on top of a blob
//! store and an index. The HTTP layer parses a request, calls one method
//! here, and renders the result; the garbage collector works on the same
//! store and index.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::OwnedMutexGuard;

use crate::blob::{BlobStore, ByteStream};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};
use crate::fence::Fence;
use crate::index::{Index, ManifestInfo, Page, Referrer, Upload};
use crate::manifest::{self, DEFAULT_MAX_MANIFEST_BYTES};
use crate::names::{Reference, RepoName};
use crate::observe::Observer;

/// Largest page of tags or repositories returned at once; larger listings
/// continue through the `Link` header.
pub const MAX_PAGE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_manifest_bytes: u64,
    pub max_blob_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            max_blob_bytes: u64::MAX,
        }
    }
}

/// What start-up recovery repaired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    pub sessions_dropped: u64,
    pub files_removed: u64,
    /// Blobs moved back from the trash (a sweep died before committing).
    pub blobs_restored: u64,
    /// Files deleted from the trash (a sweep died before emptying it).
    pub trash_emptied: u64,
}

/// The outcome of storing a manifest.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

pub struct Registry {
    index: Arc<dyn Index>,
    blobs: Arc<dyn BlobStore>,
    limits: Limits,
    fence: Fence,
    /// Whether a manifest may reference blobs stored only in other
    /// repositories (they are linked in). Off when access is controlled:
    /// a digest must not be a key to another repository's content.
    link_foreign_blobs: bool,
    /// Upload sessions that hold no data yet (see [`Registry::start_upload`]).
    pending: Mutex<HashMap<String, Upload>>,
    /// One lock per active upload session, so two requests on the same
    /// session cannot interleave their appends.
    upload_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds an upload's lock; forgets the lock entry when the last holder goes.
struct UploadGuard<'a> {
    registry: &'a Registry,
    id: String,
    _guard: OwnedMutexGuard<()>,
}

impl Drop for UploadGuard<'_> {
    fn drop(&mut self) {
        let mut locks = self.registry.upload_locks.lock().expect("upload locks");
        // One reference in the map, one inside our guard: nobody else waits.
        if locks
            .get(&self.id)
            .is_some_and(|l| Arc::strong_count(l) <= 2)
        {
            locks.remove(&self.id);
        }
    }
}

fn repo_of(u: &Upload) -> Result<RepoName> {
    u.repo.parse()
}

fn new_upload_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Registry {
    /// `fence_wait` bounds how long a commit waits for a garbage-collection
    /// sweep to finish before it is refused (retryable).
    pub fn new(
        index: Arc<dyn Index>,
        blobs: Arc<dyn BlobStore>,
        limits: Limits,
        fence_wait: Duration,
        observer: Arc<dyn Observer>,
    ) -> Registry {
        Registry {
            index,
            blobs,
            limits,
            fence: Fence::observed(fence_wait, observer),
            link_foreign_blobs: true,
            pending: Mutex::new(HashMap::new()),
            upload_locks: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses manifests referencing blobs not visible in their repository
    /// (instead of linking blobs stored elsewhere).
    pub fn without_foreign_blob_links(mut self) -> Registry {
        self.link_foreign_blobs = false;
        self
    }

    pub fn index(&self) -> &Arc<dyn Index> {
        &self.index
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    async fn lock_upload(&self, id: &str) -> UploadGuard<'_> {
        let lock = self
            .upload_locks
            .lock()
            .expect("upload locks")
            .entry(id.to_owned())
            .or_default()
            .clone();
        UploadGuard {
            registry: self,
            id: id.to_owned(),
            _guard: lock.lock_owned().await,
        }
    }

    /// Repairs what a crash can leave behind; runs before serving. A session
    /// whose data is gone (the process died between moving the data into
    /// place and recording the blob) is dropped, so its client restarts the
    /// upload; upload data no session owns is deleted; the trash left by an
    /// interrupted sweep is put back or emptied.
    pub async fn recover(&self) -> Result<Recovery> {
        let sessions = self.index.uploads().await?;
        let files: HashSet<String> = self.blobs.list_uploads().await?.into_iter().collect();
        let ids: HashSet<&str> = sessions.iter().map(|(id, _)| id.as_str()).collect();
        let mut out = Recovery::default();
        for (id, _) in &sessions {
            if !files.contains(id) {
                self.index.delete_upload(id).await?;
                out.sessions_dropped += 1;
            }
        }
        for f in &files {
            if !ids.contains(f.as_str()) && crate::blob::valid_upload_id(f) {
                self.blobs.delete_upload(f).await?;
                out.files_removed += 1;
            }
        }
        // A sweep moves files to the trash before it commits the removal of
        // their rows: a file whose row is still there goes back.
        for d in self.blobs.list_trash().await? {
            if self.index.blob(&d).await?.is_some() {
                self.blobs.restore(std::slice::from_ref(&d)).await?;
                out.blobs_restored += 1;
            }
        }
        out.trash_emptied = self.blobs.empty_trash().await?;
        Ok(out)
    }

    // ---- blobs ----

    /// The size of a blob visible in `repo`. Confirms the blob to the
    /// garbage collector (it is protected for the grace period).
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        // Confirm first, then look: a sweep either sees the confirmation
        // (and spares the blob) or has doomed the blob (confirm refuses) or
        // has already removed its row (the index says so). Looking first
        // would leave a gap in which a blob removed by a sweep that just
        // reopened the fence is confirmed anyway.
        if !self.fence.confirm(digest) {
            return Err(Error::BlobUnknown(digest.clone()));
        }
        match self.index.blob_in_repo(repo, digest).await? {
            Some(size) => Ok(size),
            None => Err(Error::BlobUnknown(digest.clone())),
        }
    }

    /// Streams `range` of a blob previously sized with [`Registry::stat_blob`].
    pub async fn read_blob(&self, digest: &Digest, range: Range<u64>) -> Result<ByteStream> {
        self.blobs.read(digest, range).await
    }

    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.index.unlink_blob(repo, digest).await
    }

    /// Links a blob stored elsewhere into `repo`. `None` if it cannot be
    /// mounted (unknown, or not visible in `from`).
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<Option<u64>> {
        let _pass = self.fence.pass().await?;
        self.index.mount_blob(repo, digest, from).await
    }

    /// Receives a whole blob in one request and stores it under `digest`.
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64> {
        let id = new_upload_id();
        let result = async {
            let hasher = Hasher::new(digest.algorithm());
            let got = self
                .blobs
                .append(&id, 0, hasher, body, self.limits.max_blob_bytes)
                .await?;
            let _pass = self.fence.pass().await?;
            self.blobs
                .commit_upload(&id, got.offset, got.hasher, digest)
                .await?;
            self.index
                .commit_blob(repo, digest, got.offset, None)
                .await?;
            Ok(got.offset)
        }
        .await;
        if result.is_err() {
            let _ = self.blobs.delete_upload(&id).await;
        }
        result
    }

    // ---- upload sessions ----

    /// Opens an upload session; returns its id. The session lives in memory
    /// until its first chunk is stored: an empty session is worth no index
    /// write (a crash loses it, and its client simply starts again).
    pub async fn start_upload(&self, repo: &RepoName) -> Result<String> {
        let id = new_upload_id();
        let now = crate::index::now_ms();
        self.pending.lock().expect("pending").insert(
            id.clone(),
            Upload {
                repo: repo.to_string(),
                offset: 0,
                hasher: Hasher::new(Algorithm::Sha256).save(),
                started_ms: now,
                updated_ms: now,
            },
        );
        Ok(id)
    }

    /// A session and whether it is still only in memory.
    async fn session(&self, repo: &RepoName, id: &str) -> Result<(Upload, bool)> {
        if !crate::blob::valid_upload_id(id) {
            return Err(Error::UploadUnknown);
        }
        let pending = self.pending.lock().expect("pending").get(id).cloned();
        let (session, in_memory) = match pending {
            Some(u) => (Some(u), true),
            None => (self.index.upload(id).await?, false),
        };
        match session {
            Some(u) if u.repo == repo.as_str() => Ok((u, in_memory)),
            _ => Err(Error::UploadUnknown),
        }
    }

    /// Sessions that hold no data yet, opened before `cutoff_ms` (abandoned).
    pub fn idle_empty_uploads(&self, cutoff_ms: u64) -> Vec<String> {
        self.pending
            .lock()
            .expect("pending")
            .iter()
            .filter(|(_, u)| u.updated_ms <= cutoff_ms)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Upload sessions open in memory only (no data yet).
    pub fn empty_uploads(&self) -> u64 {
        self.pending.lock().expect("pending").len() as u64
    }

    /// How many bytes upload `id` durably holds.
    pub async fn upload_offset(&self, repo: &RepoName, id: &str) -> Result<u64> {
        Ok(self.session(repo, id).await?.0.offset)
    }

    /// Appends a chunk. `range` is the chunk's `Content-Range` (inclusive
    /// first and last byte) if the client sent one: it must start where the
    /// upload ends, and the body must be exactly that long.
    pub async fn append_upload(
        &self,
        repo: &RepoName,
        id: &str,
        range: Option<(u64, u64)>,
        body: ByteStream,
    ) -> Result<u64> {
        let _lock = self.lock_upload(id).await;
        let (session, in_memory) = self.session(repo, id).await?;
        let got = self.append_locked(id, &session, range, body).await?;
        // Record the new offset: the chunk was acknowledged, so a restart
        // must be able to resume after it.
        if in_memory {
            self.index
                .create_upload(id, &repo_of(&session)?, got.offset, got.hasher.save())
                .await?;
            self.pending.lock().expect("pending").remove(id);
        } else {
            self.index
                .update_upload(id, got.offset, got.hasher.save())
                .await?;
        }
        Ok(got.offset)
    }

    /// Appends a chunk to the upload's data (durable), without recording it.
    async fn append_locked(
        &self,
        id: &str,
        session: &Upload,
        range: Option<(u64, u64)>,
        body: ByteStream,
    ) -> Result<crate::blob::Appended> {
        let limit_total = self.limits.max_blob_bytes.saturating_sub(session.offset);
        let limit = match range {
            Some((start, end)) if start != session.offset || end < start => {
                return Err(Error::RangeNotSatisfiable {
                    offset: session.offset,
                });
            }
            Some((start, end)) => (end - start + 1).min(limit_total),
            None => limit_total,
        };
        let hasher = Hasher::restore(&session.hasher)
            .ok_or_else(|| Error::Storage(format!("upload {id} has an unreadable hash state")))?;
        let got = self
            .blobs
            .append(id, session.offset, hasher, body, limit)
            .await?;
        if let Some((start, end)) = range {
            let expected = end - start + 1;
            let received = got.offset - session.offset;
            if received != expected {
                return Err(Error::SizeInvalid(format!(
                    "Content-Range announces {expected} bytes, the body had {received}"
                )));
            }
        }
        Ok(got)
    }

    /// Forgets a session, wherever it lives.
    async fn forget_session(&self, id: &str, in_memory: bool) -> Result<()> {
        if in_memory {
            self.pending.lock().expect("pending").remove(id);
            Ok(())
        } else {
            self.index.delete_upload(id).await
        }
    }

    /// Closes upload `id`: appends the optional last chunk, checks the whole
    /// content against `digest`, and stores the blob. A digest mismatch ends
    /// the session and leaves nothing behind.
    ///
    /// The last chunk's offset is never recorded: the commit that stores
    /// the blob closes the session. So if the fence refuses the commit
    /// (retryable), the session still ends where it did before this request
    /// and the client's retry appends the chunk anew (bytes past the
    /// recorded offset are dropped).
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        range: Option<(u64, u64)>,
        body: Option<ByteStream>,
    ) -> Result<u64> {
        let _lock = self.lock_upload(id).await;
        let (session, in_memory) = self.session(repo, id).await?;
        let (size, hasher) = match body {
            Some(body) => {
                let got = self.append_locked(id, &session, range, body).await?;
                (got.offset, got.hasher)
            }
            None => {
                let hasher = Hasher::restore(&session.hasher).ok_or_else(|| {
                    Error::Storage(format!("upload {id} has an unreadable hash state"))
                })?;
                (session.offset, hasher)
            }
        };
        let _pass = self.fence.pass().await?;
        if let Err(e) = self.blobs.commit_upload(id, size, hasher, digest).await {
            if matches!(e, Error::DigestMismatch { .. } | Error::UploadInvalid(_)) {
                let _ = self.forget_session(id, in_memory).await;
            }
            return Err(e);
        }
        let closes = (!in_memory).then_some(id);
        self.index.commit_blob(repo, digest, size, closes).await?;
        if in_memory {
            self.pending.lock().expect("pending").remove(id);
        }
        Ok(size)
    }

    /// Ends an upload session that has seen no data since `cutoff_ms`
    /// (garbage collection of abandoned uploads). `false` if it is gone or
    /// was active after all.
    pub async fn purge_upload_if_idle(&self, id: &str, cutoff_ms: u64) -> Result<bool> {
        let _lock = self.lock_upload(id).await;
        let pending = self.pending.lock().expect("pending").get(id).cloned();
        let (session, in_memory) = match pending {
            Some(u) => (Some(u), true),
            None => (self.index.upload(id).await?, false),
        };
        match session {
            Some(u) if u.updated_ms <= cutoff_ms => {
                self.forget_session(id, in_memory).await?;
                self.blobs.delete_upload(id).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Cancels an upload session and drops its data.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        let _lock = self.lock_upload(id).await;
        let (_, in_memory) = self.session(repo, id).await?;
        self.forget_session(id, in_memory).await?;
        self.blobs.delete_upload(id).await
    }

    // ---- manifests ----

    /// Validates and stores a manifest pushed to `reference`.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<StoredManifest> {
        let size = body.len() as u64;
        if size > self.limits.max_manifest_bytes {
            return Err(Error::ManifestTooLarge {
                size,
                limit: self.limits.max_manifest_bytes,
            });
        }
        let algorithm = match reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let parsed = manifest::parse(&body, content_type, algorithm)?;
        if let Reference::Digest(d) = reference
            && *d != parsed.digest
        {
            return Err(Error::DigestInvalid(format!(
                "manifest pushed as {d} has digest {}",
                parsed.digest
            )));
        }
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        if !self.link_foreign_blobs {
            for b in &parsed.blobs {
                if self.index.blob_in_repo(repo, &b.digest).await?.is_none() {
                    return Err(Error::ManifestBlobUnknown(b.digest.clone()));
                }
            }
        }
        let _pass = self.fence.pass().await?;
        self.index.put_manifest(repo, &parsed, body, tag).await?;
        Ok(StoredManifest {
            digest: parsed.digest,
            subject: parsed.subject,
        })
    }

    /// The digest a reference names in `repo`.
    pub async fn resolve(&self, repo: &RepoName, reference: &Reference) -> Result<Digest> {
        match reference {
            Reference::Digest(d) => Ok(d.clone()),
            Reference::Tag(t) => self
                .index
                .resolve_tag(repo, t)
                .await?
                .ok_or(Error::ManifestUnknown),
        }
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_body: bool,
    ) -> Result<ManifestInfo> {
        let digest = self.resolve(repo, reference).await?;
        self.index
            .manifest(repo, &digest, with_body)
            .await?
            .ok_or(Error::ManifestUnknown)
    }

    /// Deletes a tag, or a manifest (with its tags) by digest; returns the
    /// manifest's digest.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Digest> {
        match reference {
            Reference::Tag(t) => self.index.delete_tag(repo, t).await,
            Reference::Digest(d) => {
                self.index.delete_manifest(repo, d).await?;
                Ok(d.clone())
            }
        }
    }

    // ---- listings ----

    pub async fn tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page> {
        let limit = n.unwrap_or(MAX_PAGE).min(MAX_PAGE);
        if limit == 0 {
            // Still report an unknown repository as such.
            self.index.tags(repo, last, 0).await?;
            return Ok(Page {
                items: Vec::new(),
                more: false,
            });
        }
        self.index.tags(repo, last, limit).await
    }

    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        let limit = n.unwrap_or(MAX_PAGE).min(MAX_PAGE);
        if limit == 0 {
            return Ok(Page {
                items: Vec::new(),
                more: false,
            });
        }
        self.index.repositories(last, limit).await
    }

    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        self.index.referrers(repo, subject, artifact_type).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::FsBlobStore;
    use crate::index::RedbIndex;
    use crate::observe::NoObserver;

    fn body(bytes: &'static [u8]) -> ByteStream {
        Box::pin(futures::stream::iter([Ok(Bytes::from_static(bytes))]))
    }

    /// A closing PUT refused by a closed fence leaves the session as it was,
    /// so the identical retry succeeds.
    #[tokio::test]
    async fn a_refused_closing_put_can_be_retried() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(RedbIndex::open(&dir.path().join("index.redb")).unwrap());
        let blobs = Arc::new(FsBlobStore::open(dir.path()).unwrap());
        let r = Registry::new(
            index,
            blobs,
            Limits::default(),
            Duration::ZERO,
            Arc::new(NoObserver),
        );
        let repo: RepoName = "r".parse().unwrap();
        let id = r.start_upload(&repo).await.unwrap();
        r.append_upload(&repo, &id, None, body(b"hello "))
            .await
            .unwrap();
        let digest = Digest::sha256_of(b"hello world");
        {
            let _closed = r.fence().close().await;
            let refused = r
                .finish_upload(&repo, &id, &digest, None, Some(body(b"world")))
                .await;
            assert!(matches!(refused, Err(Error::Unavailable(_))), "{refused:?}");
            assert_eq!(
                r.upload_offset(&repo, &id).await.unwrap(),
                6,
                "the refused chunk is forgotten"
            );
        }
        let size = r
            .finish_upload(&repo, &id, &digest, None, Some(body(b"world")))
            .await
            .unwrap();
        assert_eq!(size, 11);
        assert_eq!(r.stat_blob(&repo, &digest).await.unwrap(), 11);
    }
}
