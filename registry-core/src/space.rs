//! Free space on the filesystems the store writes to, and the low-water
//! mark pushes are admitted against.
//!
//! Which filesystems those are is for the blob store
//! ([`crate::blob::BlobStore::capacity`]) and the index back end
//! ([`crate::db::Backend::capacity`]) to say: a store without a filesystem
//! (an object store, a database server) has none to measure. This module
//! only measures a path (`statvfs`) and says whether a push fits under the
//! mark: refused before it starts when storing it would leave less free
//! space than configured, instead of failing half-way on a full disk, and
//! leaving room for deletes, garbage collection and the index.
//! Recognising a full disk in an I/O error is [`crate::error::is_full`].

use std::io;
use std::path::Path;

/// Free space kept by default: 1 GiB, or 5% of the filesystem if that is
/// less (a small volume would otherwise refuse pushes while mostly empty).
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1 << 30;

/// What `statvfs` says about a filesystem. Free figures are those available
/// to an unprivileged process (the root-reserved blocks are not counted: a
/// server running as root could use them, its clients should not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub free_inodes: u64,
    /// 0 on filesystems without an inode limit (btrfs, some tmpfs mounts).
    pub total_inodes: u64,
}

/// The usage of the filesystem holding `path`.
// The field types of `statvfs` differ between platforms (u32 or u64).
#[allow(clippy::unnecessary_cast)]
pub fn usage(path: &Path) -> io::Result<Usage> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `s` points to
    // writable memory of the right type; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), s.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the structure.
    let s = unsafe { s.assume_init() };
    let unit = (s.f_frsize as u64).max(1);
    Ok(Usage {
        free_bytes: (s.f_bavail as u64).saturating_mul(unit),
        total_bytes: (s.f_blocks as u64).saturating_mul(unit),
        free_inodes: s.f_favail as u64,
        total_inodes: s.f_files as u64,
    })
}

/// One filesystem the store writes to, measured now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    /// Whose it is: `blobs` (the blob store's) or `index`.
    pub store: &'static str,
    pub usage: Usage,
    /// The low-water mark on it, in bytes.
    pub min_free_bytes: u64,
}

impl Filesystem {
    /// Why a push storing `incoming` more bytes (0 if unknown) here must be
    /// refused now, if it must: the free space (or the free inodes) would
    /// fall below the mark.
    pub fn refusal(&self, incoming: u64) -> Option<String> {
        let (u, mark, store) = (&self.usage, self.min_free_bytes, self.store);
        if u.total_inodes > 0 && u.free_inodes == 0 {
            return Some(format!(
                "storage is full: the {store} filesystem has no free inodes left"
            ));
        }
        if mark == 0 {
            return None;
        }
        let left = u.free_bytes.saturating_sub(incoming);
        (left < mark).then(|| {
            let what = if incoming > 0 {
                format!("storing {incoming} more bytes would leave {left} bytes free")
            } else {
                format!("{} bytes are free", u.free_bytes)
            };
            format!(
                "storage is full: {what} on the {store} filesystem, \
                 less than the {mark} bytes kept free (limits.min_free_bytes)"
            )
        })
    }
}

/// The low-water mark: how much free space pushes must leave on each
/// filesystem the store writes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LowWater {
    /// `None`: the default ([`DEFAULT_MIN_FREE_BYTES`] or 5%); `Some(0)`
    /// turns the check off (a full disk is still reported as such).
    min_free: Option<u64>,
}

impl LowWater {
    pub fn new(min_free: Option<u64>) -> LowWater {
        LowWater { min_free }
    }

    /// The mark in bytes for a filesystem of this usage.
    pub fn min_free_bytes(&self, u: &Usage) -> u64 {
        self.min_free
            .unwrap_or_else(|| DEFAULT_MIN_FREE_BYTES.min(u.total_bytes / 20))
    }

    /// `store`'s filesystem as measured, with the mark on it.
    pub fn filesystem(&self, store: &'static str, usage: Usage) -> Filesystem {
        Filesystem {
            store,
            usage,
            min_free_bytes: self.min_free_bytes(&usage),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_of(free: u64, total: u64) -> Usage {
        Usage {
            free_bytes: free,
            total_bytes: total,
            free_inodes: 1000,
            total_inodes: 2000,
        }
    }

    #[test]
    fn the_default_mark_is_a_gib_or_five_percent() {
        let w = LowWater::new(None);
        assert_eq!(w.min_free_bytes(&usage_of(0, 100 << 30)), 1 << 30);
        assert_eq!(w.min_free_bytes(&usage_of(0, 10 << 30)), 512 << 20);
        assert_eq!(LowWater::new(Some(7)).min_free_bytes(&usage_of(0, 1)), 7);
    }

    #[test]
    fn pushes_are_refused_below_the_mark() {
        let w = LowWater::new(Some(100));
        let fs = |free, total| w.filesystem("blobs", usage_of(free, total));
        assert_eq!(fs(1000, 10_000).refusal(0), None);
        assert_eq!(fs(1000, 10_000).refusal(900), None);
        let why = fs(1000, 10_000).refusal(901).unwrap();
        assert!(why.contains("storage is full"), "{why}");
        assert!(why.contains("blobs filesystem"), "{why}");
        assert!(fs(99, 10_000).refusal(0).is_some());
        // Off: only a filesystem out of inodes is refused.
        let off = LowWater::new(Some(0));
        assert_eq!(
            off.filesystem("index", usage_of(0, 10_000)).refusal(5),
            None
        );
        let no_inodes = Usage {
            free_inodes: 0,
            ..usage_of(1000, 10_000)
        };
        assert!(off.filesystem("index", no_inodes).refusal(0).is_some());
    }

    #[test]
    fn usage_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let u = usage(dir.path()).unwrap();
        assert!(u.total_bytes > 0 && u.free_bytes <= u.total_bytes, "{u:?}");
        assert!(usage(&dir.path().join("missing")).is_err());
    }
}
