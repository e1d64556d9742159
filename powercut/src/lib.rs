//! A test-only filesystem that simulates power loss.
//!
//! `kill -9` leaves the page cache alone, so it never shows a missing
//! `fsync`. This layer mounts a directory with FUSE, keeps the whole tree in
//! memory, and knows at every moment what a power cut would leave on disk.
//! Cutting the power throws away everything not made durable and writes
//! exactly the durable state to the backing directory; the mount then fails
//! every request until it is unmounted, and a fresh mount of the backing
//! directory is the machine after the reboot.
//!
//! # Durability model
//!
//! Stricter than ext4 or XFS, and no looser than POSIX, which promises
//! durability only through `fsync`:
//!
//! - **File content and size** (writes, truncation, extension) become durable
//!   at `fsync` or `fdatasync` of that file, through any descriptor. Both
//!   behave the same: `fdatasync` must persist the size too. A cut loses
//!   every write since the last sync, whole: torn or partly persisted writes
//!   are not simulated.
//! - **Directory entries** (create, mkdir, symlink, link, unlink, rmdir, and
//!   rename) become durable at `fsync` of the directory holding them. Each
//!   directory's durable entries are its entries as of its last `fsync`.
//!   Syncing a file never makes its name durable (ext4 usually does), and
//!   syncing a directory never makes the content of its files durable.
//! - **Rename** changes two entries: it removes the old name from the old
//!   parent and adds the new name to the new parent, and each becomes durable
//!   with its own directory. After a cut, a renamed file can be found under
//!   its old name, its new name, both (as two links to one file), or neither.
//!   ext4, XFS and btrfs make a rename durable as a whole; this model is
//!   stricter. A directory that ends up durably named twice is kept at the
//!   first name of a breadth-first walk in name order.
//! - Consequences: a file whose name was made durable but whose content was
//!   never synced comes back empty (ext4's delayed allocation can do the
//!   same); a synced file whose name was never made durable disappears, and
//!   so does a directory's whole subtree if the directory's own name is not
//!   durable.
//! - Permission bits, owners and times are not modelled for durability: a
//!   surviving node keeps its latest permission bits.
//! - `sync(2)` and `syncfs(2)` make nothing durable under this layer: Linux
//!   sends them to a FUSE filesystem only for virtiofs. Neither Berth nor redb
//!   calls them; the [`Mount::sync`] control does what they would.
//! - `sync_file_range(2)` only starts writeback and promises nothing; it does
//!   not reach the layer.
//!
//! A clean unmount behaves like a real one: everything becomes durable and
//! is stored. If the process dies without a cut or an unmount, the backing
//! directory keeps the state it had at mount.
//!
//! Everything lives in memory: the layer is for test-sized data.

mod data;
mod fuse;
mod image;
pub mod model;

use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use model::Unsynced;

/// For tests that mount the layer: `false` when not running as root (the
/// test should return; a loud message says it was skipped); panics when
/// running as root without `/dev/fuse`, which must then be fixed.
pub fn usable_in_test(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        // Straight to the handle: the test harness captures `eprintln!` of
        // passing tests, and this must be seen.
        let _ = writeln!(
            io::stderr(),
            "\n*** SKIPPED {test}: mounting the power-cut layer needs root ***\n"
        );
        return false;
    }
    assert!(
        Path::new("/dev/fuse").exists(),
        "{test}: /dev/fuse is missing: the power-cut layer needs FUSE (modprobe fuse)"
    );
    true
}

/// A mounted layer over a backing directory.
pub struct Mount {
    session: Option<fuser::BackgroundSession>,
    shared: Arc<fuse::Shared>,
    mountpoint: PathBuf,
}

impl Mount {
    /// Reads `backing` into memory and mounts it at `mountpoint`.
    pub fn start(mountpoint: &Path, backing: &Path) -> io::Result<Mount> {
        let mountpoint = mountpoint.canonicalize()?;
        let shared = Arc::new(fuse::Shared::new(image::load(backing)?, backing));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("powercut".into()),
            fuser::MountOption::Subtype("powercut".into()),
        ];
        config.n_threads = Some(2);
        let session = fuser::spawn_mount(fuse::Layer(shared.clone()), &mountpoint, &config)?;
        Ok(Mount {
            session: Some(session),
            shared,
            mountpoint,
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The power switch, for another thread.
    pub fn control(&self) -> Control {
        Control(self.shared.clone())
    }

    /// See [`Control::cut`].
    pub fn cut(&self) -> io::Result<Unsynced> {
        self.shared.cut()
    }

    /// Whether the filesystem was unmounted from outside (`umount`).
    pub fn session_ended(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts; without a cut before, everything is made durable and
    /// stored, as a clean unmount of a disk would. Waits (up to 10 s) for
    /// files still open on the mount to be closed.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let path = CString::new(self.mountpoint.as_os_str().as_bytes())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // SAFETY: `path` is a valid NUL-terminated string for the call.
            if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break; // already unmounted from outside
            }
            if e.raw_os_error() != Some(libc::EBUSY) || Instant::now() > deadline {
                return Err(io::Error::new(
                    e.kind(),
                    format!("unmounting {}: {e}", self.mountpoint.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Unmounted already: the session ends as the kernel closes the
        // connection.
        session.join()?;
        self.shared.finish()
    }
}

/// Cuts the power or syncs a mounted layer; cheap to clone.
#[derive(Clone)]
pub struct Control(Arc<fuse::Shared>);

impl Control {
    /// Cuts the power: drops every write and directory change not yet
    /// durable, leaves exactly the durable state in the backing directory,
    /// and fails every later request. Returns what was thrown away.
    pub fn cut(&self) -> io::Result<Unsynced> {
        self.0.cut()
    }

    /// Makes everything durable (what `sync(2)` would do on a disk).
    pub fn sync(&self) -> io::Result<()> {
        self.0.sync()
    }

    /// What a cut now would throw away.
    pub fn unsynced(&self) -> Unsynced {
        self.0.unsynced()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            eprintln!("powercut: {e}");
        }
    }
}
