//! The filesystem blob store.
//!
//! Layout under the data directory:
//! - `blobs/<algorithm>/<first two hex>/<hex>`: committed blobs;
//! - `uploads/<id>`: in-progress uploads;
//! - `quarantine/`: blobs an integrity check found corrupt.
//!
//! Writes go: append to the upload file (hashing as bytes arrive), fsync
//! (and, for the append that creates the file, fsync `uploads/`), rename
//! into the content address, fsync the directory. Only then does the
//! caller commit the index row, so the index never names a blob whose bytes
//! are not durable. Deletes come after the index transaction that forgot
//! the blob committed, and are not synced: one lost to a crash, or undone
//! by a power cut, leaves a file without a row, which the collector's
//! reconciliation removes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{Appended, BlobStore, ByteStream, StoredBlob, valid_upload_id};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::durable::{self, fsync_dir};
use crate::error::{Error, Result};

/// Size of the pieces a blob is read and sent in.
const READ_CHUNK: usize = 256 * 1024;
/// Write buffer for uploads: fewer, larger write calls.
const WRITE_BUFFER: usize = 1024 * 1024;
/// How much of an upload is handed to the disk at a time while it is still
/// arriving, so the final fsync has little left to wait for. Small enough
/// that a chunked upload's PATCH (often 5-16 MiB) waits for at most this
/// much at its end: at 8 MiB, an 8 MiB PATCH handed everything over at
/// once and then waited for all of it.
const WRITEBACK_STEP: u64 = 1024 * 1024;

/// Starts (does not wait for) writing a range of `file` to disk. Linux's
/// `sync_file_range`; elsewhere nothing (the final fsync does it all).
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for the duration of the call, and
        // the call only schedules writeback of the file's own pages.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// Opens (creating if needed) a blob store under `root`.
    ///
    /// Every directory a blob can be stored in is created here, under a
    /// durable name, before any blob is: committing a blob then needs to
    /// sync only its own directory, and never depends on a directory that
    /// another commit created but has not made durable yet. The parents are
    /// synced at every open (four directories), also when nothing was
    /// created: a start stopped between creating and syncing, or an older
    /// release that created directories on demand, may have left a name
    /// that a power cut would take.
    pub fn open(root: impl Into<PathBuf>) -> Result<FsBlobStore> {
        let root = root.into();
        durable::ensure_dir(&root)?;
        for dir in ["blobs", "uploads"] {
            durable::make_dir(&root.join(dir))?;
        }
        fsync_dir(&root)?;
        let blobs = root.join("blobs");
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = blobs.join(algorithm.as_str());
            durable::make_dir(&dir)?;
            for byte in 0..=u8::MAX {
                durable::make_dir(&dir.join(format!("{byte:02x}")))?;
            }
            fsync_dir(&dir)?;
        }
        fsync_dir(&blobs)?;
        Ok(FsBlobStore { root })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.encoded();
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    /// Blobs an older release's sweep left in `trash/` (it moved files
    /// there before committing): the caller puts back those whose row is
    /// still in the index and deletes the rest, then the directory goes.
    pub fn legacy_trash(&self) -> Result<Vec<(Digest, PathBuf)>> {
        let dir = self.root.join("trash");
        let Some(entries) = not_found_as_none(fs::read_dir(&dir))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((algorithm, hex)) = name.split_once('-')
                && let Ok(d) = format!("{algorithm}:{hex}").parse()
            {
                out.push((d, entry.path()));
            }
        }
        Ok(out)
    }

    /// Puts a file from the legacy trash back at its content address.
    pub fn restore_legacy(&self, digest: &Digest, from: &Path) -> Result<()> {
        let to = self.blob_path(digest);
        let dir = to.parent().expect("blob path has a parent");
        fs::create_dir_all(dir)?;
        fs::rename(from, &to)?;
        fsync_dir(dir)?;
        Ok(())
    }

    /// Removes the legacy trash directory once it has been sorted out.
    pub fn remove_legacy_trash(&self) -> Result<()> {
        let dir = self.root.join("trash");
        if let Some(entries) = not_found_as_none(fs::read_dir(&dir))? {
            for entry in entries {
                not_found_as_none(fs::remove_file(entry?.path()))?;
            }
            not_found_as_none(fs::remove_dir(&dir))?;
        }
        Ok(())
    }

    fn upload_path(&self, id: &str) -> PathBuf {
        debug_assert!(valid_upload_id(id));
        self.root.join("uploads").join(id)
    }
}

fn not_found_as_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io(io::Error::other(e)))?
}

/// The writing half of an append: creates the upload's file on the first
/// append, drops whatever a failed earlier chunk left past `offset`, then
/// hashes and writes each chunk received and makes them durable.
fn write_upload(
    path: &Path,
    offset: u64,
    mut hasher: Hasher,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<Appended> {
    // The first append creates the upload's file; a later one whose file
    // is gone has lost its data.
    let creates = offset == 0;
    let file = match not_found_as_none(OpenOptions::new().write(true).create(creates).open(path))? {
        Some(f) => f,
        None => return Err(Error::UploadUnknown),
    };
    // Cut back only what a failed earlier chunk left: truncating to the
    // same length is not free (ext4 journals it, about a millisecond a
    // chunk). A file shorter than the recorded offset lost acknowledged
    // data to something outside the registry; extending it would fill the
    // gap with zeros the digest check could no longer see.
    let on_disk = file.metadata()?.len();
    if on_disk < offset {
        return Err(Error::UploadInvalid(format!(
            "upload holds {on_disk} bytes, {offset} were recorded"
        )));
    }
    if on_disk > offset {
        file.set_len(offset)?;
    }
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    out.seek(SeekFrom::Start(offset))?;
    let mut offset = offset;
    let mut written_back = offset;
    while let Some(chunk) = rx.blocking_recv() {
        hasher.update(&chunk);
        out.write_all(&chunk)?;
        offset += chunk.len() as u64;
        if offset - written_back >= WRITEBACK_STEP {
            out.flush()?;
            start_writeback(out.get_ref(), written_back, offset - written_back);
            written_back = offset;
        }
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_data()?;
    if creates {
        // The caller may now record the offset and acknowledge the chunk:
        // the file's name must survive a power cut too, or start-up finds
        // a session without data and drops it.
        fsync_dir(path.parent().expect("upload path has a parent"))?;
    }
    Ok(Appended {
        offset,
        hasher,
        state: Vec::new(),
    })
}

/// Puts an upload's file back to the `offset` bytes it held before a
/// failed append: an upload that held nothing loses its file (the next
/// append creates it again), a longer one is cut back. Best effort: bytes
/// left past the offset are dropped by the next append or commit anyway.
fn undo_append(path: &Path, offset: u64) {
    let undone = if offset == 0 {
        not_found_as_none(fs::remove_file(path)).map(drop)
    } else {
        not_found_as_none(OpenOptions::new().write(true).open(path)).and_then(|f| match f {
            // Only ever shorter: a file that holds less than it should is
            // not padded with zeros.
            Some(f) if f.metadata()?.len() > offset => f.set_len(offset),
            _ => Ok(()),
        })
    };
    if let Err(e) = undone {
        tracing::debug!(error = %e, path = %path.display(), "cannot undo a failed append");
    }
}

/// Hashes a file from the start with `algorithm` (used when the client names
/// a digest algorithm other than the one hashed while receiving).
fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<Digest> {
    let mut f = File::open(path)?;
    let mut h = Hasher::new(algorithm);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(digest);
        Ok(not_found_as_none(tokio::fs::metadata(path).await)?.map(|m| m.len()))
    }

    async fn read(&self, digest: &Digest, range: Range<u64>) -> Result<ByteStream> {
        let path = self.blob_path(digest);
        let mut file = match not_found_as_none(File::open(&path))? {
            Some(f) => f,
            None => return Err(Error::BlobUnknown(digest.clone())),
        };
        // Reads run on a blocking thread that feeds a small channel: the
        // response streams at the client's pace, with at most a few chunks
        // in memory.
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = file.seek(SeekFrom::Start(range.start)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let mut left = range.end.saturating_sub(range.start);
            while left > 0 {
                let want = left.min(READ_CHUNK as u64) as usize;
                let mut buf = vec![0u8; want];
                match file.read(&mut buf) {
                    Ok(0) => {
                        let _ = tx.blocking_send(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "blob file is shorter than recorded",
                        )));
                        return;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        left -= n as u64;
                        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                            return; // the client went away
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        Ok(tokio_stream_from(rx))
    }

    async fn append(
        &self,
        id: &str,
        offset: u64,
        hasher: Hasher,
        _state: &[u8],
        mut body: ByteStream,
        limit: u64,
    ) -> Result<Appended> {
        let path = self.upload_path(id);
        // The body is read here and handed to a blocking thread that hashes
        // and writes, so receiving the next chunk overlaps hashing this one.
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let writer_path = path.clone();
        let writer =
            tokio::task::spawn_blocking(move || write_upload(&writer_path, offset, hasher, rx));
        let failure = feed(&mut body, &tx, limit).await;
        drop(tx);
        let written = writer.await.map_err(|e| Error::Io(io::Error::other(e)))?;
        let result = match failure {
            Some(e) => Err(e),
            None => written,
        };
        if result.is_err() {
            // Whatever this request wrote goes (a full disk gets its space
            // back at once); the upload holds what it held before.
            let _ = blocking(move || {
                undo_append(&path, offset);
                Ok(())
            })
            .await;
        }
        result
    }

    async fn commit_upload(
        &self,
        id: &str,
        size: u64,
        hasher: Hasher,
        _state: &[u8],
        expected: &Digest,
    ) -> Result<()> {
        let from = self.upload_path(id);
        let to = self.blob_path(expected);
        let expected = expected.clone();
        blocking(move || {
            // Bytes past the recorded size are from a chunk that was never
            // acknowledged (the process died mid-append): drop them.
            // An upload that never received a byte has no file yet.
            let Some(file) =
                not_found_as_none(OpenOptions::new().write(true).create(size == 0).open(&from))?
            else {
                return Err(Error::UploadUnknown);
            };
            let on_disk = file.metadata()?.len();
            if on_disk < size {
                drop(file);
                let _ = fs::remove_file(&from);
                return Err(Error::UploadInvalid(format!(
                    "upload holds {on_disk} bytes, {size} were recorded"
                )));
            }
            if on_disk > size {
                file.set_len(size)?;
                file.sync_data()?;
            }
            drop(file);
            let actual = if hasher.algorithm() == expected.algorithm() {
                hasher.finish()
            } else {
                hash_file(&from, expected.algorithm())?
            };
            if actual != expected {
                let _ = fs::remove_file(&from);
                return Err(Error::DigestMismatch { expected, actual });
            }
            let dir = to.parent().expect("blob path has a parent");
            fs::create_dir_all(dir)?;
            fs::rename(&from, &to)?;
            fsync_dir(dir)?;
            Ok(())
        })
        .await
    }

    async fn delete_upload(&self, id: &str, _state: &[u8]) -> Result<()> {
        let path = self.upload_path(id);
        blocking(move || {
            not_found_as_none(fs::remove_file(path))?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, digests: &[Digest]) -> Result<()> {
        let paths: Vec<PathBuf> = digests.iter().map(|d| self.blob_path(d)).collect();
        blocking(move || {
            for path in paths {
                not_found_as_none(fs::remove_file(path))?;
            }
            Ok(())
        })
        .await
    }

    async fn quarantine(&self, digest: &Digest) -> Result<()> {
        let from = self.blob_path(digest);
        let dir = self.root.join("quarantine");
        let to = dir.join(format!(
            "{}-{}",
            digest.algorithm().as_str(),
            digest.encoded()
        ));
        blocking(move || {
            fs::create_dir_all(&dir)?;
            not_found_as_none(fs::rename(&from, &to))?;
            Ok(())
        })
        .await
    }

    async fn list(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<StoredBlob>> {
        let root = self.root.join("blobs");
        let after = after.cloned();
        blocking(move || list_page(&root, after.as_ref(), limit)).await
    }

    async fn upload_lost(&self, id: &str, offset: u64, _state: &[u8]) -> Result<bool> {
        let exists = tokio::fs::try_exists(self.upload_path(id)).await?;
        Ok(offset > 0 && !exists)
    }

    async fn list_uploads(&self) -> Result<Vec<String>> {
        let dir = self.root.join("uploads");
        blocking(move || {
            let mut out = Vec::new();
            for entry in fs::read_dir(dir)? {
                out.push(entry?.file_name().to_string_lossy().into_owned());
            }
            Ok(out)
        })
        .await
    }

    async fn ready(&self) -> std::result::Result<(), String> {
        let probe = self.root.join("uploads").join(".ready-probe");
        blocking(move || {
            let written = fs::write(&probe, b"ok");
            // Also when the write failed half-way (a full disk creates the
            // file, then cannot fill it).
            let removed = not_found_as_none(fs::remove_file(&probe));
            written?;
            removed?;
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())
    }

    async fn capacity(&self) -> Result<Option<crate::space::Usage>> {
        let root = self.root.clone();
        blocking(move || Ok(Some(crate::space::usage(&root)?))).await
    }
}

/// Passes a request body to the writer; the error that stopped it early,
/// if any (a writer that stopped reports its own error).
async fn feed(body: &mut ByteStream, tx: &mpsc::Sender<Bytes>, limit: u64) -> Option<Error> {
    let mut received: u64 = 0;
    while let Some(next) = body.next().await {
        match next {
            Ok(chunk) => {
                received += chunk.len() as u64;
                if received > limit {
                    return Some(Error::SizeInvalid(format!(
                        "upload exceeds the limit of {limit} bytes"
                    )));
                }
                if tx.send(chunk).await.is_err() {
                    return None;
                }
            }
            Err(e) => {
                return Some(Error::UploadInvalid(format!(
                    "request body ended early: {e}"
                )));
            }
        }
    }
    None
}

/// One page of the blob listing. Digests sort as `algorithm:hex`, and the
/// layout sorts the same way (algorithm, first two hex digits, name), so a
/// page reads only the directories from `after` onwards until it is full.
fn list_page(root: &Path, after: Option<&Digest>, limit: usize) -> Result<Vec<StoredBlob>> {
    let mut out = Vec::new();
    let mut algorithms = [Algorithm::Sha256, Algorithm::Sha512];
    algorithms.sort_by_key(|a| a.as_str());
    for algorithm in algorithms {
        if after.is_some_and(|a| a.algorithm().as_str() > algorithm.as_str()) {
            continue;
        }
        let Some(prefixes) = not_found_as_none(fs::read_dir(root.join(algorithm.as_str())))? else {
            continue;
        };
        let mut prefixes: Vec<(String, PathBuf)> = prefixes
            .map(|e| e.map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())))
            .collect::<io::Result<_>>()?;
        prefixes.sort();
        for (prefix, dir) in prefixes {
            let skip_dir = after.is_some_and(|a| {
                a.algorithm() == algorithm
                    && prefix.as_str() < &a.encoded()[..2.min(a.encoded().len())]
            });
            if skip_dir {
                continue;
            }
            let mut files = Vec::new();
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let text = format!(
                    "{}:{}",
                    algorithm.as_str(),
                    entry.file_name().to_string_lossy()
                );
                let Ok(digest) = text.parse::<Digest>() else {
                    continue;
                };
                if after.is_some_and(|a| digest.as_str() <= a.as_str()) {
                    continue;
                }
                let meta = entry.metadata()?;
                let modified_ms = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64);
                files.push(StoredBlob {
                    digest,
                    size: meta.len(),
                    modified_ms,
                });
            }
            files.sort_by(|a, b| a.digest.as_str().cmp(b.digest.as_str()));
            for f in files {
                out.push(f);
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

fn tokio_stream_from(mut rx: mpsc::Receiver<io::Result<Bytes>>) -> ByteStream {
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures::stream::iter(items))
    }

    /// An upload's first chunk, hashed with SHA-256, without a size limit.
    async fn first_append(store: &FsBlobStore, id: &str, parts: &[&'static [u8]]) -> Appended {
        store
            .append(
                id,
                0,
                Hasher::new(Algorithm::Sha256),
                &[],
                body(parts),
                u64::MAX,
            )
            .await
            .unwrap()
    }

    async fn collect(s: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn upload_commit_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let a = first_append(&store, "ab", &[b"hello ", b"wor"]).await;
        assert_eq!(a.offset, 9);
        // a failed chunk leaves garbage past the offset; the next append drops it
        fs::OpenOptions::new()
            .append(true)
            .open(store.upload_path("ab"))
            .unwrap()
            .write_all(b"GARBAGE")
            .unwrap();
        let a = store
            .append("ab", a.offset, a.hasher, &[], body(&[b"ld"]), u64::MAX)
            .await
            .unwrap();
        let digest = Digest::sha256_of(b"hello world");
        store
            .commit_upload("ab", a.offset, a.hasher, &[], &digest)
            .await
            .unwrap();
        assert_eq!(store.stat(&digest).await.unwrap(), Some(11));
        assert_eq!(
            collect(store.read(&digest, 0..11).await.unwrap()).await,
            b"hello world"
        );
        assert_eq!(
            collect(store.read(&digest, 6..9).await.unwrap()).await,
            b"wor"
        );
        let listed = store.list(None, 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((&listed[0].digest, listed[0].size), (&digest, 11));
        assert!(store.list_uploads().await.unwrap().is_empty());
        store.delete(std::slice::from_ref(&digest)).await.unwrap();
        assert_eq!(store.stat(&digest).await.unwrap(), None);
        store.delete(std::slice::from_ref(&digest)).await.unwrap();
    }

    #[tokio::test]
    async fn mismatch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let a = first_append(&store, "cd", &[b"data"]).await;
        let wrong = Digest::sha256_of(b"other");
        let err = store
            .commit_upload("cd", a.offset, a.hasher, &[], &wrong)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }));
        assert!(store.list_uploads().await.unwrap().is_empty());
        assert!(store.list(None, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn sha512_rehashes_and_limits_apply() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let a = first_append(&store, "ef", &[b"abc"]).await;
        let d = Digest::of(Algorithm::Sha512, b"abc");
        store
            .commit_upload("ef", a.offset, a.hasher, &[], &d)
            .await
            .unwrap();
        assert_eq!(store.stat(&d).await.unwrap(), Some(3));
        let err = store
            .append(
                "01",
                0,
                Hasher::new(Algorithm::Sha256),
                &[],
                body(&[b"abcdef"]),
                4,
            )
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Error::SizeInvalid(_)));
        assert!(matches!(
            store
                .append("ffff", 3, Hasher::new(Algorithm::Sha256), &[], body(&[]), 4)
                .await
                .err()
                .unwrap(),
            Error::UploadUnknown
        ));
    }

    /// Pages of the listing, read after every digest, cover the store once,
    /// in digest order.
    #[tokio::test]
    async fn listing_pages_cover_the_store_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let mut all = Vec::new();
        for i in 0..40u32 {
            let bytes = i.to_be_bytes();
            let algorithm = if i % 5 == 0 {
                Algorithm::Sha512
            } else {
                Algorithm::Sha256
            };
            let id = format!("{i:04x}");
            let a = store
                .append(
                    &id,
                    0,
                    Hasher::new(algorithm),
                    &[],
                    body_owned(bytes.to_vec()),
                    u64::MAX,
                )
                .await
                .unwrap();
            let d = Digest::of(algorithm, &bytes);
            store
                .commit_upload(&id, a.offset, a.hasher, &[], &d)
                .await
                .unwrap();
            all.push(d.to_string());
        }
        all.sort();
        let mut seen = Vec::new();
        let mut after: Option<Digest> = None;
        loop {
            let page = store.list(after.as_ref(), 7).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.digest.clone());
            seen.extend(page.into_iter().map(|b| b.digest.to_string()));
        }
        assert_eq!(seen, all);
    }

    /// A body that breaks after some bytes.
    fn broken_body(first: &'static [u8]) -> ByteStream {
        let items: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(first)),
            Err(io::Error::other("connection reset")),
        ];
        Box::pin(futures::stream::iter(items))
    }

    /// A failed append leaves the upload as it was: no file for one that
    /// held nothing, the old length for one that held bytes.
    #[tokio::test]
    async fn a_failed_append_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let h = || Hasher::new(Algorithm::Sha256);
        let err = store
            .append("aa", 0, h(), &[], broken_body(b"partial"), u64::MAX)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Error::UploadInvalid(_)), "{err:?}");
        assert!(store.list_uploads().await.unwrap().is_empty());
        let a = store
            .append("aa", 0, h(), &[], body(&[b"kept"]), u64::MAX)
            .await
            .unwrap();
        let err = store
            .append(
                "aa",
                a.offset,
                a.hasher,
                &[],
                broken_body(b"more"),
                u64::MAX,
            )
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Error::UploadInvalid(_)), "{err:?}");
        assert_eq!(fs::read(store.upload_path("aa")).unwrap(), b"kept");
    }

    #[tokio::test]
    async fn an_upload_that_lost_data_is_not_padded() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let a = first_append(&store, "ee", &[b"0123456789"]).await;
        // Something outside the registry cut the file back.
        let path = store.upload_path("ee");
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4)
            .unwrap();
        let err = store
            .append("ee", a.offset, a.hasher, &[], body(&[b"more"]), u64::MAX)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Error::UploadInvalid(_)), "{err:?}");
        assert_eq!(fs::read(&path).unwrap(), b"0123");
    }

    fn body_owned(bytes: Vec<u8>) -> ByteStream {
        Box::pin(futures::stream::iter([Ok(Bytes::from(bytes))]))
    }
}
