//! The back end's open database, which the writer reopens after an I/O
//! failure.
//!
//! redb latches an I/O error: after a commit that ran out of space, every
//! later operation on that `Database` (a new write transaction, and any read
//! of a page not in its cache) fails with `PreviousIo` until the file is
//! closed and opened again. So after a write group fails, the writer asks
//! whether the database latched, and if it did, closes and reopens the file
//! before it answers the group's callers. The open repairs the file (its
//! last commit is intact) by rewriting pages it already holds, which on the
//! filesystems tried (tmpfs) needs no new space: reads go on even while the
//! disk is still full, and writes work again as soon as space is back.
//! A snapshot taken before the reopen reads `DatabaseClosed` from then on,
//! a retryable "unavailable" like the rest. Should an open fail, snapshots
//! and writes get that "unavailable" and the writer tries again every
//! [`RETRY_REOPEN`] until one succeeds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadTransaction, ReadableDatabase};

use super::redb_error;
use crate::error::{Error, Result};

/// How often the writer retries a failed reopen.
pub(super) const RETRY_REOPEN: Duration = Duration::from_secs(1);

pub(super) struct Reopenable {
    path: PathBuf,
    cache_bytes: usize,
    /// `None` between closing the failed database and a successful reopen.
    /// Readers hold the lock only to begin a transaction (never across one),
    /// so the writer, the only other user, can always take the database out.
    db: RwLock<Option<Arc<Database>>>,
}

/// Opens (creating if needed) the database file with a bounded page cache.
pub(super) fn open(path: &Path, cache_bytes: usize) -> Result<Database> {
    Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(redb_error)
}

fn reopening() -> Error {
    Error::Unavailable("the index is being reopened after a storage error; retry".into())
}

impl Reopenable {
    pub(super) fn new(db: Database, path: &Path, cache_bytes: usize) -> Reopenable {
        Reopenable {
            path: path.to_owned(),
            cache_bytes,
            db: RwLock::new(Some(Arc::new(db))),
        }
    }

    /// The directory holding the file (whose filesystem it grows on).
    pub(super) fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// The database, unless a reopen is pending.
    pub(super) fn current(&self) -> Result<Arc<Database>> {
        self.db
            .read()
            .expect("database lock")
            .clone()
            .ok_or_else(reopening)
    }

    /// A snapshot for reading.
    pub(super) fn begin_read(&self) -> Result<ReadTransaction> {
        let guard = self.db.read().expect("database lock");
        let db = guard.as_ref().ok_or_else(reopening)?;
        Ok(db.begin_read()?)
    }

    /// Whether a reopen failed and is still to be retried.
    pub(super) fn pending(&self) -> bool {
        self.db.read().expect("database lock").is_none()
    }

    /// Whether the open database refuses work because of an earlier I/O
    /// error. A probe: the write transaction it may begin is dropped at once.
    fn latched(&self) -> bool {
        let Ok(db) = self.current() else {
            return true;
        };
        matches!(
            db.begin_write(),
            Err(redb::TransactionError::Storage(
                redb::StorageError::PreviousIo
            ))
        )
    }

    /// Closes the database and opens the file again. Called by the writer
    /// thread only, with no write transaction alive and no `Arc` of the
    /// database held elsewhere.
    fn reopen(&self) -> Result<()> {
        let old = self.db.write().expect("database lock").take();
        if let Some(old) = old {
            match Arc::try_unwrap(old) {
                Ok(db) => {
                    if let Err(e) = db.close() {
                        tracing::debug!(error = %e, "closing the failed index database");
                    }
                }
                // Not expected (see above); dropping closes it as well.
                Err(shared) => drop(shared),
            }
        }
        let db = open(&self.path, self.cache_bytes)?;
        *self.db.write().expect("database lock") = Some(Arc::new(db));
        Ok(())
    }

    /// After a failed write group, or while a reopen is pending: reopens
    /// the database if it latched an I/O error. `retry_at` spaces out
    /// attempts that keep failing.
    pub(super) fn recover(&self, retry_at: &mut Option<Instant>) {
        if retry_at.is_some_and(|t| Instant::now() < t) || !self.latched() {
            return;
        }
        match self.reopen() {
            Ok(()) => {
                tracing::warn!(
                    path = %self.path.display(),
                    "index reopened after a storage error; writes resume when space allows"
                );
                *retry_at = None;
            }
            Err(e) => {
                tracing::error!(error = %e, path = %self.path.display(), "cannot reopen the index yet");
                *retry_at = Some(Instant::now() + RETRY_REOPEN);
            }
        }
    }
}
