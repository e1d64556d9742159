//! Upload sessions: opened empty (in the node's memory, worth no index
//! write), recorded in the index from their first chunk, closed by the
//! commit that stores their blob.

use super::Registry;
use super::blobs::{Closes, new_upload_id};
use crate::blob::{Appended, ByteStream, valid_upload_id};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};
use crate::index::Upload;
use crate::model::uploads;
use crate::names::RepoName;

/// Where a session lives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Held {
    /// With the node: no data yet.
    Empty,
    /// In the index.
    Recorded,
}

fn hasher_of(id: &str, u: &Upload) -> Result<Hasher> {
    Hasher::restore(&u.hasher)
        .ok_or_else(|| Error::Storage(format!("upload {id} has an unreadable hash state")))
}

impl Registry {
    /// Opens an upload session; returns its id. The session lives with the
    /// node until its first chunk is stored: an empty session is worth no
    /// index write (a crash loses it, and its client simply starts again).
    pub async fn start_upload(&self, repo: &RepoName) -> Result<String> {
        let id = new_upload_id();
        let now = self.clock.now_ms();
        let session = Upload {
            repo: repo.to_string(),
            offset: 0,
            hasher: Hasher::new(Algorithm::Sha256).save(),
            started_ms: now,
            updated_ms: now,
            store_state: Vec::new(),
        };
        self.node.put_empty_upload(&id, session).await?;
        Ok(id)
    }

    /// A session, wherever it lives.
    async fn find_session(&self, id: &str) -> Result<Option<(Upload, Held)>> {
        if let Some(u) = self.node.empty_upload(id).await? {
            return Ok(Some((u, Held::Empty)));
        }
        Ok(self.index.upload(id).await?.map(|u| (u, Held::Recorded)))
    }

    /// A session of `repo`.
    async fn session(&self, repo: &RepoName, id: &str) -> Result<(Upload, Held)> {
        if !valid_upload_id(id) {
            return Err(Error::UploadUnknown);
        }
        match self.find_session(id).await? {
            Some((u, held)) if u.repo == repo.as_str() => Ok((u, held)),
            _ => Err(Error::UploadUnknown),
        }
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
        let _lock = self.node.lock_upload(id).await?;
        let (session, held) = self.session(repo, id).await?;
        let recorded = self
            .append_and_record(id, &session, held, range, body)
            .await;
        if let Err(e) = &recorded {
            self.forget_empty_if_full(e, id, &session, held).await;
        }
        recorded
    }

    /// [`Registry::append_upload`] under the session's lock.
    async fn append_and_record(
        &self,
        id: &str,
        session: &Upload,
        held: Held,
        range: Option<(u64, u64)>,
        body: ByteStream,
    ) -> Result<u64> {
        let got = self.append_locked(id, session, range, body).await?;
        // Record the new offset: the chunk was acknowledged, so a restart
        // must be able to resume after it.
        let (i, r, offset) = (id.to_owned(), session.repo.clone(), got.offset);
        let (hasher, state) = (got.hasher.save(), got.state);
        self.index
            .db()
            .write(move |tx| match held {
                Held::Empty => {
                    uploads::create_upload(tx, &i, &r, offset, hasher.clone(), state.clone())
                }
                Held::Recorded => {
                    uploads::update_upload(tx, &i, offset, hasher.clone(), state.clone())
                }
            })
            .await?;
        if held == Held::Empty {
            self.node.take_empty_upload(id).await?;
        }
        Ok(offset)
    }

    /// After a full disk refused part of an upload: a session that held no
    /// durable data yet is forgotten with its file, so the refused push
    /// leaves nothing behind (its client starts again). A session with data
    /// keeps what it held before the request, to resume once space is back.
    async fn forget_empty_if_full(&self, e: &Error, id: &str, session: &Upload, held: Held) {
        if held == Held::Empty && matches!(e, Error::StorageFull(_)) {
            let _ = self.node.take_empty_upload(id).await;
            let _ = self.blobs.delete_upload(id, &session.store_state).await;
        }
    }

    /// Appends a chunk to the upload's data (durable), without recording it.
    async fn append_locked(
        &self,
        id: &str,
        session: &Upload,
        range: Option<(u64, u64)>,
        body: ByteStream,
    ) -> Result<Appended> {
        let limit_total = self
            .options
            .limits
            .max_blob_bytes
            .saturating_sub(session.offset);
        let limit = match range {
            Some((start, end)) if start != session.offset || end < start => {
                return Err(Error::RangeNotSatisfiable {
                    offset: session.offset,
                });
            }
            Some((start, end)) => (end - start + 1).min(limit_total),
            None => limit_total,
        };
        let hasher = hasher_of(id, session)?;
        let got = self
            .blobs
            .append(
                id,
                session.offset,
                hasher,
                &session.store_state,
                body,
                limit,
            )
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
    async fn forget_session(&self, id: &str, held: Held) -> Result<()> {
        match held {
            Held::Empty => self.node.take_empty_upload(id).await.map(|_| ()),
            Held::Recorded => self.index.delete_upload(id).await,
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
        let body = match (body, range) {
            (Some(whole), None) if self.node.empty_uploads_in_index() => {
                let (session, held) = self.session(repo, id).await?;
                if held == Held::Empty {
                    return self.finish_empty(repo, id, &session, digest, whole).await;
                }
                Some(whole)
            }
            (body, _) => body,
        };
        let _lock = self.node.lock_upload(id).await?;
        let (session, held) = self.session(repo, id).await?;
        let finished = self
            .finish_locked(repo, id, (&session, held), digest, range, body)
            .await;
        if let Err(e) = &finished {
            self.forget_empty_if_full(e, id, &session, held).await;
        }
        finished
    }

    /// A whole blob pushed on a session that holds nothing yet, where such
    /// sessions live in the index (several nodes): without the session's
    /// lease, whose taking and giving back would be two transactions of
    /// their own. Nothing is appended to the session, so there is nothing
    /// another request on it could interleave with; the blob's commit takes
    /// the session in its own transaction, so of two requests closing it
    /// one commits and the other finds it gone (`BLOB_UPLOAD_UNKNOWN`).
    async fn finish_empty(
        &self,
        repo: &RepoName,
        id: &str,
        session: &Upload,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64> {
        let stored = self.put_blob_closing(repo, digest, body, Some(id)).await;
        match &stored {
            // Not the digest named: the session ends.
            Err(Error::DigestMismatch { .. } | Error::UploadInvalid(_)) => {
                self.node.take_empty_upload(id).await?;
            }
            Err(e) => self.forget_empty_if_full(e, id, session, Held::Empty).await,
            Ok(_) => {}
        }
        stored
    }

    /// [`Registry::finish_upload`] under the session's lock, on the session
    /// and where it lives.
    async fn finish_locked(
        &self,
        repo: &RepoName,
        id: &str,
        (session, held): (&Upload, Held),
        digest: &Digest,
        range: Option<(u64, u64)>,
        body: Option<ByteStream>,
    ) -> Result<u64> {
        let body = match (held, body, range) {
            // The whole blob in the closing request: a monolithic push.
            (Held::Empty, Some(body), None) => {
                let stored = self.put_blob(repo, digest, body).await;
                // Stored, or not the digest named: the session ends.
                if matches!(
                    stored,
                    Ok(_) | Err(Error::DigestMismatch { .. } | Error::UploadInvalid(_))
                ) {
                    self.node.take_empty_upload(id).await?;
                }
                return stored;
            }
            (_, body, _) => body,
        };
        let got = match body {
            Some(body) => self.append_locked(id, session, range, body).await?,
            None => Appended {
                offset: session.offset,
                hasher: hasher_of(id, session)?,
                state: session.store_state.clone(),
            },
        };
        let closes = match held {
            Held::Recorded => Closes::Recorded(id),
            Held::Empty => Closes::Nothing,
        };
        match self.store_blob(repo, id, got, digest, closes).await {
            Ok(size) => {
                if held == Held::Empty {
                    self.node.take_empty_upload(id).await?;
                }
                Ok(size)
            }
            Err(e @ (Error::DigestMismatch { .. } | Error::UploadInvalid(_))) => {
                let _ = self.forget_session(id, held).await;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Ends an upload session that has seen no data since `cutoff_ms`
    /// (garbage collection of abandoned uploads). `false` if it is gone or
    /// was active after all.
    pub async fn purge_upload_if_idle(&self, id: &str, cutoff_ms: u64) -> Result<bool> {
        let _lock = self.node.lock_upload(id).await?;
        match self.find_session(id).await? {
            Some((u, held)) if u.updated_ms <= cutoff_ms => {
                self.forget_session(id, held).await?;
                self.blobs.delete_upload(id, &u.store_state).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Sessions, recorded or empty, not touched since `cutoff_ms`.
    pub async fn idle_uploads(&self, cutoff_ms: u64) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .index
            .uploads()
            .await?
            .into_iter()
            .filter(|(_, u)| u.updated_ms <= cutoff_ms)
            .map(|(id, _)| id)
            .collect();
        ids.extend(self.node.idle_empty_uploads(cutoff_ms).await?);
        Ok(ids)
    }

    /// Upload sessions open now (recorded and empty).
    pub async fn open_uploads(&self) -> Result<u64> {
        let recorded = self.index.totals().await?.uploads;
        Ok(recorded + self.node.empty_upload_count().await?)
    }

    /// Cancels an upload session and drops its data.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        let _lock = self.node.lock_upload(id).await?;
        let (session, held) = self.session(repo, id).await?;
        self.forget_session(id, held).await?;
        self.blobs.delete_upload(id, &session.store_state).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::blob::FsBlobStore;
    use crate::clock::Clock;
    use crate::coord::{Coordination, InProcess};
    use crate::index::Index;
    use crate::observe::NoObserver;
    use crate::registry::Options;

    fn body(bytes: &'static [u8]) -> ByteStream {
        Box::pin(futures::stream::iter([Ok(Bytes::from_static(bytes))]))
    }

    /// A closing PUT refused by a closed fence leaves the session as it was,
    /// so the identical retry succeeds.
    #[tokio::test]
    async fn a_refused_closing_put_can_be_retried() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open_redb(&dir.path().join("index.redb")).unwrap();
        let blobs = Arc::new(FsBlobStore::open(dir.path()).unwrap());
        let node = Arc::new(InProcess::new(
            Duration::ZERO,
            Clock::system(),
            Arc::new(NoObserver),
        ));
        let r = Registry::new(index, blobs, node.clone(), Options::default());
        let repo: RepoName = "r".parse().unwrap();
        let id = r.start_upload(&repo).await.unwrap();
        r.append_upload(&repo, &id, None, body(b"hello "))
            .await
            .unwrap();
        let digest = Digest::sha256_of(b"hello world");
        {
            let _closed = node.close().await.unwrap();
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
