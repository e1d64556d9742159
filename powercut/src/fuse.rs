//! FUSE glue: each kernel request becomes one call on the model, under one
//! lock. After a power cut every request fails with `EIO` (the machine is
//! off) until the filesystem is unmounted.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::image;
use crate::model::{self, Attr, Fs, Ino, Kind, New, Owner, Unsynced};

/// How long the kernel may cache names and attributes. Only this layer
/// changes the tree, and a cut is always followed by an unmount.
const TTL: Duration = Duration::from_secs(1);

/// A directory's entries as `readdir` returns them.
type Listing = Vec<(OsString, Ino, Kind)>;

/// The state shared by the FUSE session and whoever cuts the power.
pub(crate) struct Shared {
    fs: Mutex<Fs>,
    /// Set once the power is cut or the durable state was stored.
    dark: AtomicBool,
    backing: PathBuf,
    /// Directory listings, taken at `opendir`, by handle.
    listings: Mutex<HashMap<u64, Listing>>,
    next_handle: AtomicU64,
}

impl Shared {
    pub(crate) fn new(fs: Fs, backing: &Path) -> Shared {
        Shared {
            fs: Mutex::new(fs),
            dark: AtomicBool::new(false),
            backing: backing.to_owned(),
            listings: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Fs> {
        self.fs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the model, unless the power is off.
    fn with<T>(&self, f: impl FnOnce(&mut Fs) -> model::Result<T>) -> Result<T, Errno> {
        let mut fs = self.lock();
        if self.dark.load(Ordering::SeqCst) {
            return Err(Errno::EIO);
        }
        f(&mut fs).map_err(|e| Errno::from_i32(e.0))
    }

    /// Cuts the power: from now on every request fails, and the backing
    /// directory holds exactly the durable state. Returns what was lost.
    pub(crate) fn cut(&self) -> std::io::Result<Unsynced> {
        let fs = self.lock();
        if self.dark.swap(true, Ordering::SeqCst) {
            return Err(std::io::Error::other("the power is already off"));
        }
        let lost = fs.unsynced();
        image::store(&fs, &self.backing)?;
        Ok(lost)
    }

    /// Makes everything durable, as `sync` on a real filesystem would.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.with(|fs| {
            fs.sync_all();
            Ok(())
        })
        .map_err(|_| std::io::Error::other("the power is off"))
    }

    /// A clean unmount: everything becomes durable and is stored, unless
    /// the power was cut before.
    pub(crate) fn finish(&self) -> std::io::Result<()> {
        let mut fs = self.lock();
        if self.dark.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        fs.sync_all();
        image::store(&fs, &self.backing)
    }

    pub(crate) fn unsynced(&self) -> Unsynced {
        self.lock().unsynced()
    }
}

/// The `fuser` filesystem.
pub(crate) struct Layer(pub(crate) Arc<Shared>);

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn owner(req: &Request, mode: u32, umask: u32) -> Owner {
    Owner {
        perm: (mode & !umask & 0o7777) as u16,
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

fn entry(reply: ReplyEntry, r: Result<Attr, Errno>) {
    match r {
        Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Layer {
    fn make(&self, parent: INodeNo, name: &OsStr, new: New, owner: Owner, reply: ReplyEntry) {
        entry(
            reply,
            self.0.with(|fs| fs.create(parent.0, name, new, owner)),
        );
    }

    /// Creates (or, without `O_EXCL`, opens) a regular file.
    fn create_file(
        &self,
        parent: Ino,
        name: &OsStr,
        owner: Owner,
        flags: i32,
    ) -> Result<Attr, Errno> {
        self.0
            .with(|fs| match fs.create(parent, name, New::File, owner) {
                Err(model::Errno(libc::EEXIST)) if flags & libc::O_EXCL == 0 => {
                    let a = fs.lookup(parent, name)?;
                    if a.kind == Kind::Dir {
                        return Err(model::Errno(libc::EISDIR));
                    }
                    if flags & libc::O_TRUNC != 0 {
                        fs.set_size(a.ino, 0)?;
                    }
                    fs.attr(a.ino)
                }
                other => other,
            })
    }
}

impl Filesystem for Layer {
    fn destroy(&mut self) {
        if let Err(e) = self.0.finish() {
            eprintln!("powercut: storing the state at unmount failed: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(reply, self.0.with(|fs| fs.lookup(parent.0, name)));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.with(|fs| fs.attr(ino.0)) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.0.with(|fs| {
            if let Some(size) = size {
                fs.set_size(ino.0, size)?;
            }
            let perm = mode.map(|m| (m & 0o7777) as u16);
            fs.set_attr(ino.0, perm, (uid, gid), (atime.map(time), mtime.map(time)))?;
            fs.attr(ino.0)
        });
        match r {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.0.with(|fs| fs.readlink(ino.0)) {
            Ok(t) => reply.data(std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str())),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM); // only regular files are modelled
        }
        self.make(parent, name, New::File, owner(req, mode, umask), reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.make(parent, name, New::Dir, owner(req, mode, umask), reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.0.with(|fs| fs.unlink(parent.0, name)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.0.with(|fs| fs.rmdir(parent.0, name)));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let new = New::Symlink(target.as_os_str());
        self.make(parent, link_name, new, owner(req, 0o777, 0), reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return reply.error(Errno::EINVAL); // exchange and whiteout are not modelled
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let r = self
            .0
            .with(|fs| fs.rename((parent.0, name), (newparent.0, newname), no_replace));
        empty(reply, r);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        entry(
            reply,
            self.0.with(|fs| fs.link(ino.0, newparent.0, newname)),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.0.with(|fs| fs.attr(ino.0)) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        match self.0.with(|fs| fs.read(ino.0, offset, size as usize)) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.0.with(|fs| fs.write(ino.0, offset, data)) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok(); // close(2) makes nothing durable
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.0.with(|fs| fs.fsync(ino.0)));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.0.with(|fs| fs.list(ino.0)) {
            Ok(listing) => {
                let fh = self.0.next_handle.fetch_add(1, Ordering::Relaxed);
                self.0.listings.lock().unwrap().insert(fh, listing);
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listings = self.0.listings.lock().unwrap();
        let Some(listing) = listings.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (name, ino, kind)) in listing.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, file_type(*kind), name) {
                break; // the buffer is full
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.0.listings.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.0.with(|fs| fs.fsync(ino.0)));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        const BLOCK: u64 = 4096;
        const BLOCKS: u64 = (1 << 40) / BLOCK; // a nominal 1 TiB
        const FILES: u64 = 1 << 32;
        match self.0.with(|fs| Ok(fs.usage())) {
            Ok((nodes, bytes)) => {
                let free = BLOCKS.saturating_sub(bytes.div_ceil(BLOCK));
                let ffree = FILES.saturating_sub(nodes);
                reply.statfs(
                    BLOCKS,
                    free,
                    free,
                    FILES,
                    ffree,
                    BLOCK as u32,
                    255,
                    BLOCK as u32,
                );
            }
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_file(parent.0, name, owner(req, mode, umask), flags) {
            Ok(a) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }
}
