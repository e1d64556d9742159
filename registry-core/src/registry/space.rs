//! Free space: which filesystems the store writes to, and whether a push
//! may go ahead. The blob store and the index each say which filesystem
//! they write to, if any; the caller (the HTTP layer) only says how many
//! bytes are coming.

use std::time::{Duration, Instant};

use super::Registry;
use crate::error::{Error, Result};
use crate::space::{Filesystem, LowWater};

/// The blob store's filesystem, as [`Filesystem::store`] names it.
pub const BLOBS: &str = "blobs";
/// The index's filesystem, as [`Filesystem::store`] names it.
pub const INDEX: &str = "index";

impl Registry {
    /// The filesystems the store writes to (the blob store's, then the
    /// index's), measured now, with the low-water mark on each. A store
    /// without a filesystem has none here; one that cannot be measured is
    /// left out (the debug log says why). Two stores on one filesystem are
    /// both listed.
    pub async fn filesystems(&self) -> Vec<Filesystem> {
        let mark = LowWater::new(self.options.limits.min_free_bytes);
        let measured = [
            (BLOBS, self.blobs.capacity().await),
            (INDEX, self.index.db().capacity()),
        ];
        let mut out = Vec::new();
        for (store, usage) in measured {
            match usage {
                Ok(Some(u)) => out.push(mark.filesystem(store, u)),
                Ok(None) => {}
                Err(e) => tracing::debug!(store, error = %e, "cannot measure free space"),
            }
        }
        out
    }

    /// Whether a push storing `incoming` more bytes (0 if unknown) may go
    /// ahead now: refused with [`Error::StorageFull`], before anything of it
    /// is stored, when it would leave less than the mark free on the blob
    /// store's filesystem (where its bytes land) or the index's filesystem
    /// is already below the mark (a manifest is bounded by its own limit,
    /// far below any mark). A filesystem that cannot be measured admits the
    /// push: the write itself then says whether it fits.
    ///
    /// Free space is measured at most every [`MEASURE_EVERY`] for this (a
    /// push is several requests, each asking) while every filesystem is
    /// well above its mark ([`ROOM`]); near the mark, every push measures.
    pub async fn admit_push(&self, incoming: u64) -> Result<()> {
        let fresh = {
            let seen = self.space_seen.lock().expect("space");
            seen.as_ref()
                .filter(|(at, fs)| at.elapsed() < MEASURE_EVERY && roomy(fs))
                .map(|(_, fs)| fs.clone())
        };
        let filesystems = match fresh {
            Some(fs) => fs,
            None => {
                let fs = self.filesystems().await;
                *self.space_seen.lock().expect("space") = Some((Instant::now(), fs.clone()));
                fs
            }
        };
        match space_refusal(&filesystems, incoming) {
            Some(why) => Err(Error::StorageFull(why)),
            None => Ok(()),
        }
    }
}

/// How long a measurement of free space admits pushes for.
pub const MEASURE_EVERY: Duration = Duration::from_millis(100);
/// Free space beyond the mark (and free inodes) under which a measurement
/// is not reused: more than pushes can write in [`MEASURE_EVERY`].
pub const ROOM: u64 = 1 << 30;

/// Whether every filesystem has room enough to reuse its measurement.
fn roomy(filesystems: &[Filesystem]) -> bool {
    filesystems.iter().all(|fs| {
        let inodes = fs.usage.total_inodes == 0 || fs.usage.free_inodes > 10_000;
        inodes && fs.usage.free_bytes >= fs.min_free_bytes.saturating_add(ROOM)
    })
}

/// Why a push of `incoming` bytes onto these filesystems must be refused,
/// if it must.
pub(super) fn space_refusal(filesystems: &[Filesystem], incoming: u64) -> Option<String> {
    filesystems.iter().find_map(|fs| {
        let bytes = if fs.store == BLOBS { incoming } else { 0 };
        fs.refusal(bytes)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::blob::FsBlobStore;
    use crate::clock::Clock;
    use crate::coord::InProcess;
    use crate::index::Index;
    use crate::observe::NoObserver;
    use crate::registry::{Limits, Options};

    fn registry(dir: &std::path::Path, min_free_bytes: Option<u64>) -> Registry {
        let index = Index::open_redb(&dir.join("index.redb")).unwrap();
        let blobs = Arc::new(FsBlobStore::open(dir).unwrap());
        let node = Arc::new(InProcess::new(
            Duration::ZERO,
            Clock::system(),
            Arc::new(NoObserver),
        ));
        let options = Options {
            limits: Limits {
                min_free_bytes,
                ..Limits::default()
            },
            ..Options::default()
        };
        Registry::new(index, blobs, node, options)
    }

    /// Both filesystems are measured; a push is refused when the blob
    /// store's would fall below the mark, counting the push's bytes.
    #[tokio::test]
    async fn pushes_are_admitted_against_both_filesystems() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path(), Some(1));
        let fss = r.filesystems().await;
        let stores: Vec<&str> = fss.iter().map(|f| f.store).collect();
        assert_eq!(stores, [BLOBS, INDEX]);
        assert!(fss.iter().all(|f| f.min_free_bytes == 1));
        r.admit_push(0).await.unwrap();
        // More than the filesystem holds: free space moves while other
        // processes write, so a push of today's free bytes may fit.
        let whole = fss[0].usage.total_bytes;
        let refused = r.admit_push(whole).await.unwrap_err();
        assert!(matches!(refused, Error::StorageFull(_)), "{refused:?}");
        assert!(
            refused.to_string().contains("blobs filesystem"),
            "{refused}"
        );
        // No filesystem can keep more free than it holds.
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path(), Some(u64::MAX));
        assert!(r.admit_push(0).await.is_err());
        assert!(!r.readiness().await.ready());
    }
}
