//! The blob store over the S3 API.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    ClientConfigKey, ClientOptions, Error as StoreError, GetOptions, GetRange, MultipartId,
    ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use registry_core::blob::{Appended, BlobStore, ByteStream, Staged, StoredBlob};
use registry_core::observe::Observer;
use registry_core::{Digest, Error, Hasher, Result};

use crate::keys::Location;
use crate::retry::{self, RetryPolicy};
use crate::upload::{Chunk, Multipart, UploadState};

/// How the store talks to the bucket.
#[derive(Debug, Clone, Copy)]
pub struct S3Options {
    /// Size of a multipart part (at least 5 MiB, the S3 minimum).
    pub part_size: usize,
    pub retry: RetryPolicy,
    /// Longest a request may take, its body included; a blob being read
    /// may take longer while bytes keep coming (no pause longer than this).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long a presigned download URL stays valid.
    pub redirect_ttl: Duration,
}

impl Default for S3Options {
    fn default() -> S3Options {
        S3Options {
            part_size: 8 << 20,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(5),
            redirect_ttl: Duration::from_secs(20 * 60),
        }
    }
}

/// Blobs and uploads in a bucket (see the crate documentation).
pub struct S3BlobStore {
    s3: Arc<AmazonS3>,
    /// The same bucket for streaming blobs out: a large blob read by a
    /// slow client takes as long as it takes, so no limit on the whole
    /// response, only on each pause (`request_timeout` without a byte).
    reads: Arc<AmazonS3>,
    at: Location,
    opts: S3Options,
    observer: Arc<dyn Observer>,
}

/// A failure of the object store, as the registry reports it: retryable.
fn unavailable(e: StoreError) -> Error {
    Error::Unavailable(format!("object store: {e}"))
}

fn not_found(e: &StoreError) -> bool {
    matches!(e, StoreError::NotFound { .. })
}

/// A failure of a request on a multipart upload. One the store no longer
/// has (the bucket's lifecycle rule aborted it, or an earlier attempt
/// completed it) will never come back: the upload cannot go on, and the
/// client has to start it again. Anything else is retryable.
fn multipart_failed(key: &Path, e: StoreError) -> Error {
    match not_found(&e) {
        true => Error::UploadInvalid(format!(
            "the object store no longer has the multipart upload of {key}: start the upload again"
        )),
        false => unavailable(e),
    }
}

impl S3BlobStore {
    /// A store in `location`, with credentials, region and endpoint from the
    /// standard variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`). Requests
    /// are path-style unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
    pub fn from_env(
        location: Location,
        opts: S3Options,
        observer: Arc<dyn Observer>,
    ) -> Result<S3BlobStore> {
        S3BlobStore::open(AmazonS3Builder::from_env(), location, opts, observer)
    }

    pub fn open(
        builder: AmazonS3Builder,
        location: Location,
        opts: S3Options,
        observer: Arc<dyn Observer>,
    ) -> Result<S3BlobStore> {
        if opts.part_size < 5 << 20 {
            return Err(Error::Unsupported(
                "the object store's part size must be at least 5 MiB".into(),
            ));
        }
        // TLS goes through rustls with ring, the provider the whole process
        // uses (object_store is built without one of its own).
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Client options replace the builder's own, which hold what the
        // environment said about plain HTTP.
        let allow_http = builder
            .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let client = ClientOptions::new()
            .with_allow_http(allow_http)
            .with_connect_timeout(opts.connect_timeout);
        let build = |client: ClientOptions| {
            builder
                .clone()
                .with_bucket_name(&location.bucket)
                .with_client_options(client)
                // Retries are ours (counted, bounded): see `retry`.
                .with_retry(RetryConfig {
                    max_retries: 0,
                    ..RetryConfig::default()
                })
                .build()
                .map(Arc::new)
                .map_err(|e| Error::Unsupported(format!("object store {location}: {e}")))
        };
        let s3 = build(client.clone().with_timeout(opts.request_timeout))?;
        let reads = build(
            client
                .with_timeout_disabled()
                .with_read_timeout(opts.request_timeout),
        )?;
        Ok(S3BlobStore {
            s3,
            reads,
            at: location,
            opts,
            observer,
        })
    }

    pub fn location(&self) -> &Location {
        &self.at
    }

    async fn call<T, F, Fut>(&self, kind: &'static str, op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        retry::call(&self.observer, self.opts.retry, kind, op).await
    }

    async fn put_object(&self, key: &Path, body: Bytes) -> Result<()> {
        self.call("put", || self.s3.put(key, PutPayload::from(body.clone())))
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn get_object(&self, key: &Path) -> Result<Bytes> {
        let got = self
            .call("get", || async { self.s3.get(key).await?.bytes().await })
            .await;
        got.map_err(|e| match not_found(&e) {
            true => Error::UploadInvalid(format!("upload data {key} is gone")),
            false => unavailable(e),
        })
    }

    async fn delete_keys(&self, keys: Vec<Path>) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.call("delete", || async {
            let stream = futures::stream::iter(keys.clone().into_iter().map(Ok)).boxed();
            for r in self.s3.delete_stream(stream).collect::<Vec<_>>().await {
                match r {
                    Ok(_) => {}
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await
        .map_err(unavailable)
    }

    /// Every object under an upload's directory.
    async fn upload_objects(&self, id: &str) -> Result<Vec<Path>> {
        let dir = self.at.upload_dir(id);
        self.call("list", || {
            self.s3
                .list(Some(&dir))
                .map_ok(|m| m.location)
                .try_collect::<Vec<Path>>()
        })
        .await
        .map_err(unavailable)
    }

    async fn upload_part(&self, key: &Path, mp: &mut Multipart, bytes: Bytes) -> Result<()> {
        let idx = mp.parts.len();
        let len = bytes.len() as u64;
        let sent = self
            .call("part", || {
                self.s3
                    .put_part(key, &mp.id, idx, PutPayload::from(bytes.clone()))
            })
            .await;
        let part = match sent {
            Ok(part) => part,
            Err(e) if not_found(&e) => return Err(multipart_failed(key, e)),
            Err(e) => return Err(self.part_failed(key, &mp.id, idx, e).await),
        };
        mp.parts.push(part.content_id);
        mp.bytes += len;
        Ok(())
    }

    /// Why part `idx` could not be sent. A store asked for a part of an
    /// upload it no longer has may answer before reading the body and close
    /// the connection (Garage does), which looks like a network failure;
    /// an empty part of the same number gets a proper answer. If the upload
    /// is there, that empty part is harmless: the next attempt replaces it,
    /// and completion names only recorded parts.
    async fn part_failed(&self, key: &Path, id: &MultipartId, idx: usize, e: StoreError) -> Error {
        let probe = self
            .call("part_probe", || {
                self.s3.put_part(key, id, idx, PutPayload::default())
            })
            .await;
        match probe {
            Err(gone) if not_found(&gone) => multipart_failed(key, gone),
            _ => unavailable(e),
        }
    }

    async fn start_multipart(&self, key: &Path) -> Result<Multipart> {
        let id = self
            .call("create_multipart", || self.s3.create_multipart(key))
            .await
            .map_err(unavailable)?;
        Ok(Multipart {
            id,
            parts: Vec::new(),
            bytes: 0,
        })
    }

    async fn complete(&self, key: &Path, mp: &Multipart) -> Result<()> {
        let parts: Vec<PartId> = mp
            .parts
            .iter()
            .map(|e| PartId {
                content_id: e.clone(),
            })
            .collect();
        self.call("complete_multipart", || {
            self.s3.complete_multipart(key, &mp.id, parts.clone())
        })
        .await
        .map(|_| ())
        .map_err(|e| multipart_failed(key, e))
    }

    async fn abort(&self, key: &Path, mp: &Multipart) -> Result<()> {
        match self
            .call("abort_multipart", || self.s3.abort_multipart(key, &mp.id))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The pending chunks' bytes, joined.
    async fn pending_bytes(&self, id: &str, st: &UploadState) -> Result<BytesMut> {
        let mut out = BytesMut::with_capacity(st.pending_bytes() as usize);
        for c in st.pending.iter().filter(|c| c.len > 0) {
            let b = self.get_object(&self.at.chunk(id, c.offset)).await?;
            if b.len() as u64 != c.len {
                return Err(Error::UploadInvalid(format!(
                    "chunk at {} of upload {id} holds {} bytes, {} were recorded",
                    c.offset,
                    b.len(),
                    c.len
                )));
            }
            out.extend_from_slice(&b);
        }
        Ok(out)
    }

    /// Turns the pending chunks and the front of `fresh` into one part of
    /// the upload's multipart object.
    async fn flush_part(&self, id: &str, st: &mut UploadState, fresh: &mut BytesMut) -> Result<()> {
        let mut part = self.pending_bytes(id, st).await?;
        let take = self.opts.part_size - part.len();
        part.extend_from_slice(&fresh.split_to(take));
        let key = self.at.upload_data(id);
        let mut mp = match st.multipart.take() {
            Some(mp) => mp,
            None => self.start_multipart(&key).await?,
        };
        let uploaded = self.upload_part(&key, &mut mp, part.freeze()).await;
        st.multipart = Some(mp);
        uploaded?;
        st.pending.clear();
        Ok(())
    }

    /// Receives a body into the upload: whole parts as they fill, the rest
    /// as one chunk object. Returns the bytes received.
    async fn receive(
        &self,
        id: &str,
        offset: u64,
        st: &mut UploadState,
        hasher: &mut Hasher,
        mut body: ByteStream,
        limit: u64,
    ) -> Result<u64> {
        let mut fresh = BytesMut::new();
        let mut received = 0u64;
        while let Some(next) = body.next().await {
            let chunk =
                next.map_err(|e| Error::UploadInvalid(format!("request body ended early: {e}")))?;
            received += chunk.len() as u64;
            if received > limit {
                return Err(Error::SizeInvalid(format!(
                    "upload exceeds the limit of {limit} bytes"
                )));
            }
            hasher.update(&chunk);
            fresh.extend_from_slice(&chunk);
            while st.pending_bytes() as usize + fresh.len() >= self.opts.part_size {
                self.flush_part(id, st, &mut fresh).await?;
            }
        }
        // The rest becomes a chunk object. When nothing is left over (the
        // body ended on a part boundary, or was empty) and no chunk is
        // pending, an empty one marks the upload: start-up recovery keeps
        // only sessions whose upload has an object, and a multipart upload
        // alone is not one.
        if !fresh.is_empty() || st.pending.is_empty() {
            let start = offset + received - fresh.len() as u64;
            let len = fresh.len() as u64;
            self.put_object(&self.at.chunk(id, start), fresh.freeze())
                .await?;
            st.pending.push(Chunk { offset: start, len });
        }
        Ok(received)
    }

    /// Makes a finished upload the object at `to`: one PUT of its chunks
    /// if it never filled a part, else the last part, completion and a
    /// server-side copy.
    async fn assemble(&self, id: &str, st: &UploadState, to: &Path) -> Result<()> {
        let Some(mp) = &st.multipart else {
            let bytes = self.pending_bytes(id, st).await?;
            return self.put_object(to, bytes.freeze()).await;
        };
        let key = self.at.upload_data(id);
        let mut mp = mp.clone();
        if st.pending_bytes() > 0 {
            let tail = self.pending_bytes(id, st).await?;
            self.upload_part(&key, &mut mp, tail.freeze()).await?;
        }
        self.complete(&key, &mp).await?;
        self.call("copy", || self.s3.copy(&key, to))
            .await
            .map_err(unavailable)
    }

    /// Checks a finished upload's digest and puts its bytes at their
    /// content address (a mismatch removes the upload's data).
    async fn place(
        &self,
        id: &str,
        size: u64,
        hasher: Hasher,
        state: &[u8],
        expected: &Digest,
    ) -> Result<()> {
        let st = UploadState::decode(state)?;
        if st.bytes() != size {
            return Err(Error::UploadInvalid(format!(
                "upload holds {} bytes, {size} were recorded",
                st.bytes()
            )));
        }
        let to = self.at.blob(expected);
        if hasher.algorithm() == expected.algorithm() {
            let actual = hasher.finish();
            if actual != *expected {
                self.delete_upload(id, state).await?;
                return Err(mismatch(expected, actual));
            }
            return self.assemble(id, &st, &to).await;
        }
        // Assemble where nothing reads, check, then copy into place.
        let data = self.at.upload_data(id);
        self.assemble(id, &st, &data).await?;
        let actual = self.hash_object(&data, expected.algorithm()).await?;
        if actual != *expected {
            self.delete_upload(id, &[]).await?;
            return Err(mismatch(expected, actual));
        }
        self.call("copy", || self.s3.copy(&data, &to))
            .await
            .map_err(unavailable)
    }

    /// The digest of what `key` holds, read back (when the client names
    /// another algorithm than the one hashed while receiving).
    async fn hash_object(&self, key: &Path, algorithm: registry_core::Algorithm) -> Result<Digest> {
        let mut h = Hasher::new(algorithm);
        let mut stream = self.read_key(key, None).await.map_err(unavailable)?;
        while let Some(b) = stream.next().await {
            // The store failed mid-read: retryable, like any failure of it.
            h.update(&b.map_err(|e| Error::Unavailable(format!("object store: {e}")))?);
        }
        Ok(h.finish())
    }

    async fn read_key(
        &self,
        key: &Path,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StoreError> {
        let opts = || GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let got = self
            .call("get", || self.reads.get_opts(key, opts()))
            .await?;
        Ok(got.into_stream().map_err(std::io::Error::other).boxed())
    }

    /// A staged monolithic push too large to hold in memory: parts of a
    /// multipart upload straight at the content address, completed when
    /// published.
    async fn stage_large(
        &self,
        digest: &Digest,
        head: BytesMut,
        mut body: ByteStream,
        hasher: &mut Hasher,
        limit: u64,
    ) -> Result<(Multipart, u64)> {
        let key = self.at.blob(digest);
        let mut mp = self.start_multipart(&key).await?;
        let mut fresh = head;
        let mut received = fresh.len() as u64;
        let result = async {
            while let Some(next) = body.next().await {
                let chunk = next
                    .map_err(|e| Error::UploadInvalid(format!("request body ended early: {e}")))?;
                received += chunk.len() as u64;
                if received > limit {
                    return Err(Error::SizeInvalid(format!(
                        "upload exceeds the limit of {limit} bytes"
                    )));
                }
                hasher.update(&chunk);
                fresh.extend_from_slice(&chunk);
                while fresh.len() >= self.opts.part_size {
                    let part = fresh.split_to(self.opts.part_size).freeze();
                    self.upload_part(&key, &mut mp, part).await?;
                }
            }
            if !fresh.is_empty() {
                self.upload_part(&key, &mut mp, fresh.split().freeze())
                    .await?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok((mp, received)),
            Err(e) => {
                let _ = self.abort(&key, &mp).await;
                Err(e)
            }
        }
    }
}

fn mismatch(expected: &Digest, actual: Digest) -> Error {
    Error::DigestMismatch {
        expected: expected.clone(),
        actual,
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        let key = self.at.blob(digest);
        match self.call("head", || self.s3.head(&key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn read(&self, digest: &Digest, range: Range<u64>) -> Result<ByteStream> {
        if range.is_empty() {
            return Ok(futures::stream::empty().boxed());
        }
        let key = self.at.blob(digest);
        match self.read_key(&key, Some(range)).await {
            Ok(stream) => Ok(stream),
            Err(e) if not_found(&e) => Err(Error::BlobUnknown(digest.clone())),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn append(
        &self,
        id: &str,
        offset: u64,
        mut hasher: Hasher,
        state: &[u8],
        body: ByteStream,
        limit: u64,
    ) -> Result<Appended> {
        let mut st = UploadState::decode(state)?;
        if st.bytes() != offset {
            return Err(Error::UploadInvalid(format!(
                "upload {id} holds {} bytes in the object store, {offset} were recorded",
                st.bytes()
            )));
        }
        let had_multipart = st.multipart.is_some();
        let received = match self
            .receive(id, offset, &mut st, &mut hasher, body, limit)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                // A multipart upload this request started is recorded
                // nowhere: abort it rather than leave it to the lifecycle
                // rule (the recorded one, if any, stays).
                if let (false, Some(mp)) = (had_multipart, &st.multipart) {
                    let _ = self.abort(&self.at.upload_data(id), mp).await;
                }
                return Err(e);
            }
        };
        Ok(Appended {
            offset: offset + received,
            hasher,
            state: st.encode(),
        })
    }

    async fn commit_upload(
        &self,
        id: &str,
        size: u64,
        hasher: Hasher,
        state: &[u8],
        expected: &Digest,
    ) -> Result<()> {
        match self.place(id, size, hasher, state, expected).await {
            // The upload's own objects stay until the index commit that
            // records the blob succeeds (the registry then deletes them):
            // on a cluster a sweep may refuse that commit, and the client's
            // retry of its closing PUT places the blob again from them.
            Ok(()) => Ok(()),
            Err(e @ Error::UploadInvalid(_)) => {
                // The registry ends the session: its objects go with it.
                let _ = self.delete_upload(id, state).await;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn upload_recorded(&self, id: &str) -> Result<()> {
        // No state: the multipart upload `commit_upload` completed is not
        // to be aborted.
        self.delete_upload(id, &[]).await
    }

    async fn delete_upload(&self, id: &str, state: &[u8]) -> Result<()> {
        let st = UploadState::decode(state).unwrap_or_default();
        if let Some(mp) = &st.multipart {
            self.abort(&self.at.upload_data(id), mp).await?;
        }
        let keys = self.upload_objects(id).await?;
        self.delete_keys(keys).await
    }

    async fn delete(&self, digests: &[Digest]) -> Result<()> {
        self.delete_keys(digests.iter().map(|d| self.at.blob(d)).collect())
            .await
    }

    async fn list(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<StoredBlob>> {
        let prefix = self.at.blobs();
        let offset = after.map(|d| self.at.blob(d));
        let listed = self
            .call("list", || {
                let stream = match &offset {
                    // The offset sorts after the prefix (a Garage bug drops
                    // listings whose start-after sorts before it).
                    Some(o) => self.s3.list_with_offset(Some(&prefix), o),
                    None => self.s3.list(Some(&prefix)),
                };
                stream.take(limit).try_collect::<Vec<_>>()
            })
            .await
            .map_err(unavailable)?;
        Ok(listed
            .into_iter()
            .filter_map(|m| {
                Some(StoredBlob {
                    digest: self.at.digest_of(&m.location)?,
                    size: m.size,
                    modified_ms: m.last_modified.timestamp_millis().max(0) as u64,
                })
            })
            .collect())
    }

    async fn list_uploads(&self) -> Result<Vec<String>> {
        let dir = self.at.uploads();
        let keys = self
            .call("list", || {
                self.s3
                    .list(Some(&dir))
                    .map_ok(|m| m.location)
                    .try_collect::<Vec<Path>>()
            })
            .await
            .map_err(unavailable)?;
        let mut ids: Vec<String> = keys.iter().filter_map(|k| self.at.upload_of(k)).collect();
        ids.dedup();
        Ok(ids)
    }

    async fn quarantine(&self, digest: &Digest) -> Result<()> {
        let (from, to) = (self.at.blob(digest), self.at.quarantine(digest));
        match self.call("copy", || self.s3.copy(&from, &to)).await {
            Ok(()) => self.delete_keys(vec![from]).await,
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn ready(&self) -> std::result::Result<(), String> {
        let probe = self.at.probe();
        let asked = tokio::time::timeout(self.opts.connect_timeout * 2, self.s3.head(&probe)).await;
        match asked {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if not_found(&e) => Ok(()),
            Ok(Err(e)) => Err(format!("object store {}: {e}", self.at)),
            Err(_) => Err(format!("object store {} does not answer", self.at)),
        }
    }

    async fn stage(
        &self,
        _id: &str,
        digest: &Digest,
        mut body: ByteStream,
        limit: u64,
    ) -> Result<Staged> {
        let mut hasher = Hasher::new(digest.algorithm());
        let mut head = BytesMut::new();
        while let Some(next) = body.next().await {
            let chunk =
                next.map_err(|e| Error::UploadInvalid(format!("request body ended early: {e}")))?;
            if (head.len() + chunk.len()) as u64 > limit {
                return Err(Error::SizeInvalid(format!(
                    "upload exceeds the limit of {limit} bytes"
                )));
            }
            hasher.update(&chunk);
            head.extend_from_slice(&chunk);
            if head.len() >= self.opts.part_size {
                let (mp, size) = self
                    .stage_large(digest, head, body, &mut hasher, limit)
                    .await?;
                let actual = hasher.finish();
                if actual != *digest {
                    let _ = self.abort(&self.at.blob(digest), &mp).await;
                    return Err(mismatch(digest, actual));
                }
                let state = UploadState {
                    multipart: Some(mp),
                    pending: Vec::new(),
                };
                return Ok(Staged::Held {
                    size,
                    body: None,
                    state: state.encode(),
                });
            }
        }
        let actual = hasher.finish();
        if actual != *digest {
            return Err(mismatch(digest, actual));
        }
        Ok(Staged::Held {
            size: head.len() as u64,
            body: Some(head.freeze()),
            state: Vec::new(),
        })
    }

    async fn publish(&self, staged: Staged, digest: &Digest) -> Result<u64> {
        let key = self.at.blob(digest);
        let Staged::Held { size, body, state } = staged else {
            return Err(Error::Bug(
                "an S3 store stages in memory or multipart".into(),
            ));
        };
        match (body, UploadState::decode(&state)?.multipart) {
            (Some(bytes), _) => self.put_object(&key, bytes).await?,
            (None, Some(mp)) => {
                if let Err(e) = self.complete(&key, &mp).await {
                    // Nothing will complete it later: free its parts now.
                    let _ = self.abort(&key, &mp).await;
                    return Err(e);
                }
            }
            (None, None) => return Err(Error::Bug("a staged blob holds nothing".into())),
        }
        Ok(size)
    }

    async fn discard(&self, staged: Staged, digest: &Digest) -> Result<()> {
        if let Staged::Held { state, .. } = staged
            && let Some(mp) = UploadState::decode(&state)?.multipart
        {
            // Parts at the content address, which only completion shows.
            self.abort(&self.at.blob(digest), &mp).await?;
        }
        Ok(())
    }

    async fn redirect(&self, digest: &Digest) -> Result<Option<String>> {
        let key = self.at.blob(digest);
        let url = self
            .s3
            .signed_url(
                object_store::signer::Method::GET,
                &key,
                self.opts.redirect_ttl,
            )
            .await
            .map_err(unavailable)?;
        Ok(Some(url.to_string()))
    }
}
