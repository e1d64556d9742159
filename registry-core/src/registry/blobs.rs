//! Blob reads, mounts, monolithic pushes and blob deletes.
//!
//! Small blobs (configs, small layers, signatures) pushed whole are kept in
//! the index instead of the blob store: their bytes ride on the commit that
//! records them, which a push pays anyway, instead of a file, its fsync and
//! its directory's fsyncs of their own (or an object store PUT). Reads look
//! in the index first for blobs no larger than [`INLINE_CEILING`].

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::StreamExt;

use super::Registry;
use crate::blob::ByteStream;
use crate::coord::Pass;
use crate::db::Tx;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::index::commit_blob;
use crate::model::shared::{self, check_pass};
use crate::model::{log, refs};
use crate::names::RepoName;

/// The default largest blob kept in the index.
pub const DEFAULT_INLINE_BYTES: u64 = 16 * 1024;
/// No blob larger than this is ever kept in the index, whatever the
/// setting: reads of larger blobs never look there.
pub const INLINE_CEILING: u64 = 64 * 1024;

/// Where a stored blob's bytes are: in the index (with them), or in the
/// blob store.
pub enum BlobSource {
    Index(Bytes),
    Store,
}

/// Upload ids: random, hex.
pub(super) fn new_upload_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Registry {
    /// The size of a blob visible in `repo`. Confirms the blob to the
    /// garbage collector (it is protected for the grace period).
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        // Confirm first, then look: a sweep either sees the confirmation
        // (and spares the blob) or has doomed the blob (confirm refuses) or
        // has already removed its row (the index says so). Looking first
        // would leave a gap in which a blob removed by a sweep that just
        // reopened the fence is confirmed anyway.
        if !self.node.confirm(digest).await? {
            return Err(Error::BlobUnknown(digest.clone()));
        }
        match self.index.blob_in_repo(repo, digest).await? {
            Some(size) => Ok(size),
            None => Err(Error::BlobUnknown(digest.clone())),
        }
    }

    /// [`Registry::stat_blob`] for a GET, which reads the bytes. A sweep
    /// dooms the candidates it listed as unreferenced before its
    /// transaction re-checks them, so a blob a manifest referenced in
    /// between is doomed, then spared; until the sweep ends, `stat_blob`
    /// answers it as gone. A GET of such a blob (a pull of a live image)
    /// reads it instead: the sweep cannot remove a referenced blob, and a
    /// pull must not fail because a sweep runs. (If the last manifest
    /// referencing it is deleted meanwhile, the pull raced that delete.) A
    /// HEAD keeps answering 404: its client then uploads the blob again,
    /// which protects it, where a 200 could let it skip an upload that the
    /// sweep then removes.
    pub async fn stat_blob_to_read(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        match self.stat_blob(repo, digest).await {
            Err(Error::BlobUnknown(d)) => self
                .index
                .referenced_blob_in_repo(repo, digest)
                .await?
                .ok_or(Error::BlobUnknown(d)),
            other => other,
        }
    }

    /// Where the bytes of a blob of `size` bytes, previously sized with
    /// [`Registry::stat_blob`], are read from: looked up once per read, for
    /// [`Registry::blob_url`] and [`Registry::read_blob`] both.
    pub async fn blob_source(&self, digest: &Digest, size: u64) -> Result<BlobSource> {
        if size > INLINE_CEILING {
            return Ok(BlobSource::Store);
        }
        let d = digest.to_string();
        let found = self
            .index
            .db()
            .read(move |r| refs::inline_bytes(r, &d))
            .await?;
        Ok(match found {
            Some(bytes) => BlobSource::Index(Bytes::from(bytes)),
            None => BlobSource::Store,
        })
    }

    /// A URL the client may fetch a blob from directly (a presigned object
    /// store URL). None for a blob the index keeps.
    pub async fn blob_url(&self, digest: &Digest, source: &BlobSource) -> Result<Option<String>> {
        match source {
            BlobSource::Index(_) => Ok(None),
            BlobSource::Store => self.blobs.redirect(digest).await,
        }
    }

    /// Streams `range` of a blob from where [`Registry::blob_source`] found
    /// it.
    pub async fn read_blob(
        &self,
        digest: &Digest,
        source: BlobSource,
        range: Range<u64>,
    ) -> Result<ByteStream> {
        match source {
            BlobSource::Index(bytes) => {
                let end = (range.end as usize).min(bytes.len());
                let part = bytes.slice((range.start as usize).min(end)..end);
                Ok(futures::stream::once(async move { Ok(part) }).boxed())
            }
            BlobSource::Store => self.blobs.read(digest, range).await,
        }
    }

    /// Removes a blob from `repo`'s view (refused while a manifest there
    /// references it); the bytes stay until garbage collection.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest, actor: &str) -> Result<()> {
        let entry = Registry::activity(
            actor,
            "blob_delete",
            repo,
            None,
            Some(digest),
            serde_json::Value::Null,
        );
        let (r, d, retain) = (
            repo.to_string(),
            digest.to_string(),
            self.options.activity_retention,
        );
        self.index
            .db()
            .write(move |tx| {
                refs::unlink_blob(tx, &r, &d)?;
                log::record_activity(tx, entry.clone(), retain).map(|_| ())
            })
            .await
    }

    /// Repositories in which a blob is visible (at most `limit`).
    pub async fn blob_repositories(&self, digest: &Digest, limit: usize) -> Result<Vec<RepoName>> {
        self.index.blob_repositories(digest, limit).await
    }

    /// Links a blob stored elsewhere into `repo`. `None` if it cannot be
    /// mounted (unknown, or not visible in `from`).
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<Option<u64>> {
        let pass = self.node.pass(std::slice::from_ref(digest)).await?;
        let (r, d, from) = (
            repo.to_string(),
            digest.to_string(),
            from.map(|f| f.to_string()),
        );
        self.fenced_write(&pass, move |tx| {
            refs::mount_blob(tx, &r, &d, from.as_deref())
        })
        .await
    }

    /// Runs `f` in a transaction that first checks no sweep took what
    /// `pass` covers ([`check_pass`]); counts the commit as refused by the
    /// fence only when that check refused it (not when the index was busy).
    async fn fenced_write<T, F>(&self, pass: &Pass, mut f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        let conditions = pass.conditions.clone();
        let fenced = Arc::new(AtomicBool::new(false));
        let seen = fenced.clone();
        let written = self
            .index
            .db()
            .write(move |tx| {
                // The flag tells about the last run of the closure only.
                let refused = check_pass(tx, &conditions);
                seen.store(refused.is_err(), Ordering::Relaxed);
                refused?;
                f(tx)
            })
            .await;
        if written.is_err() && fenced.load(Ordering::Relaxed) {
            self.node.refused().await;
        }
        written
    }

    /// Records a blob whose bytes are at their content address, if no sweep
    /// took them since `pass` was read.
    async fn record_blob(
        &self,
        pass: &Pass,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        closes: Closes<'_>,
    ) -> Result<()> {
        let (r, d) = (repo.to_string(), digest.to_string());
        let (recorded, empty) = closes.owned();
        self.fenced_write(pass, move |tx| {
            take_empty(tx, empty.as_deref())?;
            commit_blob(tx, &r, &d, size, recorded.as_deref())
        })
        .await
    }

    /// Receives a whole blob in one request and stores it under `digest`:
    /// in the index if it is small enough, else in the blob store.
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64> {
        self.put_blob_closing(repo, digest, body, None).await
    }

    /// [`Registry::put_blob`], taking the empty session `empty` (if given)
    /// in the commit.
    pub(super) async fn put_blob_closing(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
        empty: Option<&str>,
    ) -> Result<u64> {
        let limits = self.options.limits;
        let small = limits
            .inline_blob_bytes
            .min(INLINE_CEILING)
            .min(limits.max_blob_bytes);
        let body = match read_at_most(body, small).await? {
            Whole(bytes) => return self.put_inline_blob(repo, digest, bytes, empty).await,
            Longer(body) => body,
        };
        let id = new_upload_id();
        let limit = limits.max_blob_bytes;
        let staged = self.blobs.stage(&id, digest, body, limit).await?;
        let pass = match self.node.pass(std::slice::from_ref(digest)).await {
            Ok(p) => p,
            Err(e) => {
                let _ = self.blobs.discard(staged, digest).await;
                return Err(e);
            }
        };
        let size = self.blobs.publish(staged, digest).await?;
        let closes = empty.map_or(Closes::Nothing, Closes::Empty);
        self.record_blob(&pass, repo, digest, size, closes).await?;
        Ok(size)
    }

    /// Checks and records a small blob with its bytes, in one commit.
    async fn put_inline_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        bytes: Bytes,
        empty: Option<&str>,
    ) -> Result<u64> {
        let actual = Digest::of(digest.algorithm(), &bytes);
        if actual != *digest {
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let pass = self.node.pass(std::slice::from_ref(digest)).await?;
        let (r, d, size) = (repo.to_string(), digest.to_string(), bytes.len() as u64);
        let empty = empty.map(str::to_owned);
        self.fenced_write(&pass, move |tx| {
            take_empty(tx, empty.as_deref())?;
            refs::commit_inline_blob(tx, &r, &d, &bytes)
        })
        .await
        .map(|()| size)
    }

    /// Puts an upload's bytes at their content address and records the
    /// blob (closing session `closes`), behind the fence.
    pub(super) async fn store_blob(
        &self,
        repo: &RepoName,
        id: &str,
        got: crate::blob::Appended,
        digest: &Digest,
        closes: Closes<'_>,
    ) -> Result<u64> {
        let size = got.offset;
        let pass = self.node.pass(std::slice::from_ref(digest)).await?;
        self.blobs
            .commit_upload(id, size, got.hasher, &got.state, digest)
            .await?;
        self.record_blob(&pass, repo, digest, size, closes).await?;
        // Only now is what the upload left garbage (an object store keeps
        // it until here, so that a commit refused by a sweep can be
        // retried). A failure leaves it to the next start-up's recovery.
        if let Err(e) = self.blobs.upload_recorded(id).await {
            tracing::warn!(upload = id, error = %e, "could not remove upload objects");
        }
        Ok(size)
    }
}

/// The upload session a blob's commit closes in its own transaction.
#[derive(Clone, Copy)]
pub(super) enum Closes<'a> {
    Nothing,
    /// A session recorded in `uploads`.
    Recorded(&'a str),
    /// An empty session kept in the index's `empty_uploads` (several
    /// nodes): taking it in the commit saves a transaction of its own.
    Empty(&'a str),
}

impl Closes<'_> {
    /// (the recorded session, the empty session), owned for a closure.
    fn owned(self) -> (Option<String>, Option<String>) {
        match self {
            Closes::Nothing => (None, None),
            Closes::Recorded(id) => (Some(id.to_owned()), None),
            Closes::Empty(id) => (None, Some(id.to_owned())),
        }
    }
}

/// Takes the empty session `id` (if given): refused (before any write) if
/// another request took it first.
fn take_empty(tx: &mut Tx<'_>, id: Option<&str>) -> Result<()> {
    match id {
        Some(id) if shared::take_empty_upload(tx, id)?.is_none() => Err(Error::UploadUnknown),
        _ => Ok(()),
    }
}

/// A request body read up to a size: whole, or longer (and then the whole
/// stream again, what was read first included).
enum Prefix {
    Whole(Bytes),
    Longer(ByteStream),
}
use Prefix::{Longer, Whole};

/// Reads `body` until it ends or exceeds `max` bytes.
async fn read_at_most(mut body: ByteStream, max: u64) -> Result<Prefix> {
    let mut read: Vec<Bytes> = Vec::new();
    let mut len = 0u64;
    if max > 0 {
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            len += chunk.len() as u64;
            read.push(chunk);
            if len > max {
                break;
            }
        }
        if len <= max {
            return Ok(Whole(match read.len() {
                1 => read.pop().expect("one chunk"),
                _ => read.concat().into(),
            }));
        }
    }
    let again = futures::stream::iter(read.into_iter().map(Ok));
    Ok(Longer(again.chain(body).boxed()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::blob::FsBlobStore;
    use crate::clock::Clock;
    use crate::coord::{Coordination, InProcess};
    use crate::index::{Index, UnreferencedBlob};
    use crate::names::Reference;
    use crate::observe::NoObserver;
    use crate::registry::Options;

    fn body(bytes: Vec<u8>) -> ByteStream {
        futures::stream::once(async move { Ok(Bytes::from(bytes)) }).boxed()
    }

    fn unreferenced(d: &Digest) -> UnreferencedBlob {
        UnreferencedBlob {
            digest: d.clone(),
            size: 0,
            since_ms: 0,
            seen_ms: 0,
        }
    }

    /// A sweep dooms what it listed as unreferenced; a blob a manifest
    /// references since stays readable by GET (HEAD answers it as gone, so
    /// its client uploads it again), and an unreferenced doomed one does
    /// not.
    #[tokio::test]
    async fn a_doomed_blob_a_manifest_references_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open_redb(&dir.path().join("index.redb")).unwrap();
        let blobs = Arc::new(FsBlobStore::open(dir.path()).unwrap());
        let clock = Clock::system();
        let node = Arc::new(InProcess::new(Duration::ZERO, clock, Arc::new(NoObserver)));
        let r = Registry::new(index, blobs, node.clone(), Options::default());
        let repo: RepoName = "r".parse().unwrap();
        let (layer, config, loose) = (vec![1u8; 40_000], b"{}".to_vec(), vec![2u8; 40_000]);
        let mut digests = Vec::new();
        for bytes in [&layer, &config, &loose] {
            let d = Digest::sha256_of(bytes);
            r.put_blob(&repo, &d, body(bytes.clone())).await.unwrap();
            digests.push(d);
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digests[1].as_str(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digests[0].as_str(), "size": 40_000}],
        });
        let tag: Reference = "t".parse().unwrap();
        let bytes = Bytes::from(manifest.to_string());
        r.put_manifest(&repo, &tag, None, bytes, "test")
            .await
            .unwrap();
        let closed = node.close().await.unwrap();
        let listed = [unreferenced(&digests[0]), unreferenced(&digests[2])];
        let doomed = node
            .doom(&listed, Duration::ZERO, false, false)
            .await
            .unwrap();
        assert_eq!(doomed.len(), 2);
        assert!(matches!(
            r.stat_blob(&repo, &digests[0]).await,
            Err(Error::BlobUnknown(_))
        ));
        assert_eq!(
            r.stat_blob_to_read(&repo, &digests[0]).await.unwrap(),
            40_000
        );
        assert!(matches!(
            r.stat_blob_to_read(&repo, &digests[2]).await,
            Err(Error::BlobUnknown(_))
        ));
        node.release(&doomed).await.unwrap();
        drop(closed);
        assert_eq!(r.stat_blob(&repo, &digests[0]).await.unwrap(), 40_000);
    }
}
