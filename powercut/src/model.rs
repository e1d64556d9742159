//! The in-memory filesystem and its durability model.
//!
//! Every node keeps two states: what programs see now, and what a power cut
//! would leave. A regular file's durable content is its content as of its
//! last `fsync`/`fdatasync`; a directory's durable entries are its entries
//! as of its last `fsync`. Nothing else ever becomes durable: the durable
//! filesystem is the tree reachable from the root through durable entries,
//! with each file's durable content (see the crate documentation for what
//! that means for renames, links and new files).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::SystemTime;

use crate::data::Data;

pub type Ino = u64;
/// The root directory's inode number (FUSE's).
pub const ROOT: Ino = 1;
/// The longest name a directory entry may have.
const NAME_MAX: usize = 255;

/// An `errno` value, as FUSE replies carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

pub type Result<T> = std::result::Result<T, Errno>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// What a new node is.
#[derive(Debug, Clone, Copy)]
pub enum New<'a> {
    File,
    Dir,
    Symlink(&'a OsStr),
}

/// Permission bits and owner of a new node.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

/// A node's attributes, as `stat` reports them.
#[derive(Debug, Clone)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// A node as it would survive a power cut.
pub enum Durable<'a> {
    File { data: &'a Data, perm: u16 },
    Dir { perm: u16 },
    Symlink { target: &'a OsStr },
}

/// What a power cut now would throw away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unsynced {
    /// Regular files whose content differs from their durable content.
    pub files: u64,
    /// Bytes changed in those files since their last sync, counted in
    /// whole chunks (16 KiB) of the content.
    pub bytes: u64,
    /// Directories whose entries differ from their durable entries.
    pub dirs: u64,
}

type Entries = BTreeMap<OsString, Ino>;

enum Body {
    File {
        now: Data,
        synced: Data,
    },
    Dir {
        now: Entries,
        synced: Entries,
        parent: Ino,
    },
    Symlink {
        target: OsString,
    },
}

struct Node {
    body: Body,
    owner: Owner,
    nlink: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
}

impl Node {
    fn kind(&self) -> Kind {
        match self.body {
            Body::File { .. } => Kind::File,
            Body::Dir { .. } => Kind::Dir,
            Body::Symlink { .. } => Kind::Symlink,
        }
    }

    fn touch(&mut self) {
        let now = SystemTime::now();
        self.mtime = now;
        self.ctime = now;
    }
}

/// The whole filesystem. Nodes are kept until the filesystem is dropped:
/// an unlinked node may still be open, or named by a durable entry.
pub struct Fs {
    nodes: HashMap<Ino, Node>,
    next: Ino,
}

fn err<T>(errno: i32) -> Result<T> {
    Err(Errno(errno))
}

fn check_name(name: &OsStr) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return err(libc::EINVAL);
    }
    if b.len() > NAME_MAX {
        return err(libc::ENAMETOOLONG);
    }
    Ok(())
}

impl Fs {
    /// A filesystem holding an empty root directory, durable.
    pub fn new(root: Owner) -> Fs {
        let mut fs = Fs {
            nodes: HashMap::new(),
            next: ROOT,
        };
        let body = Body::Dir {
            now: Entries::new(),
            synced: Entries::new(),
            parent: ROOT,
        };
        fs.insert_node(body, root, 2);
        fs
    }

    fn insert_node(&mut self, body: Body, owner: Owner, nlink: u32) -> Ino {
        let ino = self.next;
        self.next += 1;
        let now = SystemTime::now();
        let node = Node {
            body,
            owner,
            nlink,
            atime: now,
            mtime: now,
            ctime: now,
        };
        self.nodes.insert(ino, node);
        ino
    }

    fn node(&self, ino: Ino) -> Result<&Node> {
        self.nodes.get(&ino).map_or(err(libc::ENOENT), Ok)
    }

    fn node_mut(&mut self, ino: Ino) -> Result<&mut Node> {
        self.nodes.get_mut(&ino).map_or(err(libc::ENOENT), Ok)
    }

    fn entries(&self, dir: Ino) -> Result<&Entries> {
        match &self.node(dir)?.body {
            Body::Dir { now, .. } => Ok(now),
            _ => err(libc::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> Result<&mut Entries> {
        let node = self.node_mut(dir)?;
        node.touch();
        match &mut node.body {
            Body::Dir { now, .. } => Ok(now),
            _ => err(libc::ENOTDIR),
        }
    }

    fn data_mut(&mut self, ino: Ino) -> Result<&mut Data> {
        let node = self.node_mut(ino)?;
        node.touch();
        match &mut node.body {
            Body::File { now, .. } => Ok(now),
            Body::Dir { .. } => err(libc::EISDIR),
            Body::Symlink { .. } => err(libc::EINVAL),
        }
    }

    fn add_links(&mut self, ino: Ino, delta: i32) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_add_signed(delta);
            n.ctime = SystemTime::now();
        }
    }

    pub fn attr(&self, ino: Ino) -> Result<Attr> {
        let n = self.node(ino)?;
        let size = match &n.body {
            Body::File { now, .. } => now.len(),
            Body::Dir { now, .. } => now.len() as u64,
            Body::Symlink { target } => target.len() as u64,
        };
        Ok(Attr {
            ino,
            kind: n.kind(),
            size,
            perm: n.owner.perm,
            nlink: n.nlink,
            uid: n.owner.uid,
            gid: n.owner.gid,
            atime: n.atime,
            mtime: n.mtime,
            ctime: n.ctime,
        })
    }

    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        match self.entries(parent)?.get(name) {
            Some(&ino) => self.attr(ino),
            None => err(libc::ENOENT),
        }
    }

    /// Creates a file, directory or symlink named `name` in `parent`.
    pub fn create(&mut self, parent: Ino, name: &OsStr, new: New, owner: Owner) -> Result<Attr> {
        check_name(name)?;
        if self.entries(parent)?.contains_key(name) {
            return err(libc::EEXIST);
        }
        let (body, nlink) = match new {
            New::File => (
                Body::File {
                    now: Data::default(),
                    synced: Data::default(),
                },
                1,
            ),
            New::Dir => (
                Body::Dir {
                    now: Entries::new(),
                    synced: Entries::new(),
                    parent,
                },
                2,
            ),
            New::Symlink(target) => (
                Body::Symlink {
                    target: target.to_owned(),
                },
                1,
            ),
        };
        let ino = self.insert_node(body, owner, nlink);
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        if matches!(new, New::Dir) {
            self.add_links(parent, 1);
        }
        self.attr(ino)
    }

    /// A new name for an existing file (not a directory).
    pub fn link(&mut self, ino: Ino, parent: Ino, name: &OsStr) -> Result<Attr> {
        check_name(name)?;
        if self.node(ino)?.kind() == Kind::Dir {
            return err(libc::EPERM);
        }
        if self.entries(parent)?.contains_key(name) {
            return err(libc::EEXIST);
        }
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.add_links(ino, 1);
        self.attr(ino)
    }

    pub fn unlink(&mut self, parent: Ino, name: &OsStr) -> Result<()> {
        let ino = self.lookup(parent, name)?.ino;
        if self.node(ino)?.kind() == Kind::Dir {
            return err(libc::EISDIR);
        }
        self.entries_mut(parent)?.remove(name);
        self.add_links(ino, -1);
        Ok(())
    }

    pub fn rmdir(&mut self, parent: Ino, name: &OsStr) -> Result<()> {
        let ino = self.lookup(parent, name)?.ino;
        if !self.entries(ino)?.is_empty() {
            return err(libc::ENOTEMPTY);
        }
        self.entries_mut(parent)?.remove(name);
        self.node_mut(ino)?.nlink = 0;
        self.add_links(parent, -1);
        Ok(())
    }

    /// Whether `dir` is `ancestor` or lies beneath it.
    fn is_within(&self, mut dir: Ino, ancestor: Ino) -> bool {
        loop {
            if dir == ancestor {
                return true;
            }
            match self.nodes.get(&dir).map(|n| &n.body) {
                Some(Body::Dir { parent, .. }) if *parent != dir => dir = *parent,
                _ => return false,
            }
        }
    }

    /// Moves `parent/name` to `new_parent/new_name`, replacing what is
    /// there (unless `no_replace`), with rename(2)'s rules.
    pub fn rename(
        &mut self,
        (parent, name): (Ino, &OsStr),
        (new_parent, new_name): (Ino, &OsStr),
        no_replace: bool,
    ) -> Result<()> {
        check_name(new_name)?;
        let ino = self.lookup(parent, name)?.ino;
        let is_dir = self.node(ino)?.kind() == Kind::Dir;
        if is_dir && self.is_within(new_parent, ino) {
            return err(libc::EINVAL);
        }
        if let Some(&old) = self.entries(new_parent)?.get(new_name) {
            if old == ino {
                return Ok(()); // two names of one file: rename(2) does nothing
            }
            if no_replace {
                return err(libc::EEXIST);
            }
            match (is_dir, self.node(old)?.kind() == Kind::Dir) {
                (true, true) => self.rmdir(new_parent, new_name)?,
                (false, false) => self.unlink(new_parent, new_name)?,
                (true, false) => return err(libc::ENOTDIR),
                (false, true) => return err(libc::EISDIR),
            }
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(new_parent)?
            .insert(new_name.to_owned(), ino);
        self.node_mut(ino)?.ctime = SystemTime::now();
        if is_dir && parent != new_parent {
            self.add_links(parent, -1);
            self.add_links(new_parent, 1);
            if let Body::Dir { parent: p, .. } = &mut self.node_mut(ino)?.body {
                *p = new_parent;
            }
        }
        Ok(())
    }

    /// The entries of a directory, `.` and `..` first.
    pub fn list(&self, dir: Ino) -> Result<Vec<(OsString, Ino, Kind)>> {
        let parent = match &self.node(dir)?.body {
            Body::Dir { parent, .. } => *parent,
            _ => return err(libc::ENOTDIR),
        };
        let mut out = vec![
            (".".into(), dir, Kind::Dir),
            ("..".into(), parent, Kind::Dir),
        ];
        for (name, &ino) in self.entries(dir)? {
            out.push((name.clone(), ino, self.node(ino)?.kind()));
        }
        Ok(out)
    }

    pub fn read(&self, ino: Ino, offset: u64, size: usize) -> Result<Vec<u8>> {
        match &self.node(ino)?.body {
            Body::File { now, .. } => Ok(now.read(offset, size)),
            Body::Dir { .. } => err(libc::EISDIR),
            Body::Symlink { .. } => err(libc::EINVAL),
        }
    }

    pub fn write(&mut self, ino: Ino, offset: u64, bytes: &[u8]) -> Result<()> {
        self.data_mut(ino)?.write(offset, bytes);
        Ok(())
    }

    pub fn set_size(&mut self, ino: Ino, size: u64) -> Result<()> {
        self.data_mut(ino)?.set_len(size);
        Ok(())
    }

    /// Changes permission bits, owner or times (`None` leaves one as is).
    pub fn set_attr(
        &mut self,
        ino: Ino,
        perm: Option<u16>,
        owner: (Option<u32>, Option<u32>),
        times: (Option<SystemTime>, Option<SystemTime>),
    ) -> Result<()> {
        let n = self.node_mut(ino)?;
        n.owner.perm = perm.unwrap_or(n.owner.perm);
        n.owner.uid = owner.0.unwrap_or(n.owner.uid);
        n.owner.gid = owner.1.unwrap_or(n.owner.gid);
        n.atime = times.0.unwrap_or(n.atime);
        n.mtime = times.1.unwrap_or(n.mtime);
        n.ctime = SystemTime::now();
        Ok(())
    }

    pub fn readlink(&self, ino: Ino) -> Result<OsString> {
        match &self.node(ino)?.body {
            Body::Symlink { target } => Ok(target.clone()),
            _ => err(libc::EINVAL),
        }
    }

    /// `fsync`/`fdatasync` of a file: its content and size become durable.
    /// `fsync` of a directory: its entries become durable, nothing else.
    pub fn fsync(&mut self, ino: Ino) -> Result<()> {
        match &mut self.node_mut(ino)?.body {
            Body::File { now, synced } => *synced = now.clone(),
            Body::Dir { now, synced, .. } => *synced = now.clone(),
            Body::Symlink { .. } => {}
        }
        Ok(())
    }

    /// Everything becomes durable, as a clean unmount does.
    pub fn sync_all(&mut self) {
        let inos: Vec<Ino> = self.nodes.keys().copied().collect();
        for ino in inos {
            let _ = self.fsync(ino);
        }
    }

    /// What a power cut now would lose.
    pub fn unsynced(&self) -> Unsynced {
        let mut u = Unsynced::default();
        for n in self.nodes.values() {
            match &n.body {
                Body::File { now, synced } if !now.same_as(synced) => {
                    u.files += 1;
                    u.bytes += now.bytes_not_in(synced);
                }
                Body::Dir { now, synced, .. } if now != synced => u.dirs += 1,
                _ => {}
            }
        }
        u
    }

    /// Node count and bytes held (current content), for `statfs`.
    pub fn usage(&self) -> (u64, u64) {
        let bytes = self
            .nodes
            .values()
            .map(|n| match &n.body {
                Body::File { now, .. } => now.len(),
                _ => 0,
            })
            .sum();
        (self.nodes.len() as u64, bytes)
    }

    /// A node as a power cut would leave it.
    pub fn durable(&self, ino: Ino) -> Result<Durable<'_>> {
        let n = self.node(ino)?;
        Ok(match &n.body {
            Body::File { synced, .. } => Durable::File {
                data: synced,
                perm: n.owner.perm,
            },
            Body::Dir { .. } => Durable::Dir { perm: n.owner.perm },
            Body::Symlink { target } => Durable::Symlink { target },
        })
    }

    /// The durable tree, breadth first from the root in name order, as
    /// (path relative to the root, inode): parents come before their
    /// entries. A file durably named twice appears twice (hard links). A
    /// directory durably named twice (a rename of a directory whose two
    /// halves were not both synced) is listed at the first name found only,
    /// which also makes cycles impossible.
    pub fn durable_tree(&self) -> Vec<(PathBuf, Ino)> {
        let mut out = Vec::new();
        let mut seen = HashSet::from([ROOT]);
        let mut queue = VecDeque::from([(PathBuf::new(), ROOT)]);
        while let Some((path, dir)) = queue.pop_front() {
            let Some(Body::Dir { synced, .. }) = self.nodes.get(&dir).map(|n| &n.body) else {
                continue;
            };
            for (name, &ino) in synced {
                let child = path.join(name);
                let is_dir = matches!(
                    self.nodes.get(&ino).map(|n| &n.body),
                    Some(Body::Dir { .. })
                );
                if is_dir {
                    if !seen.insert(ino) {
                        continue;
                    }
                    queue.push_back((child.clone(), ino));
                }
                out.push((child, ino));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: Owner = Owner {
        perm: 0o755,
        uid: 0,
        gid: 0,
    };

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn file(fs: &mut Fs, dir: Ino, n: &str, content: &[u8]) -> Ino {
        let ino = fs.create(dir, name(n), New::File, OWNER).unwrap().ino;
        fs.write(ino, 0, content).unwrap();
        ino
    }

    fn mkdir(fs: &mut Fs, dir: Ino, n: &str) -> Ino {
        fs.create(dir, name(n), New::Dir, OWNER).unwrap().ino
    }

    /// What a power cut would leave: path -> content ("/" for a directory).
    fn after_cut(fs: &Fs) -> BTreeMap<String, String> {
        fs.durable_tree()
            .into_iter()
            .map(|(path, ino)| {
                let what = match fs.durable(ino).unwrap() {
                    Durable::File { data, .. } => {
                        String::from_utf8(data.read(0, usize::MAX)).unwrap()
                    }
                    Durable::Dir { .. } => "/".into(),
                    Durable::Symlink { target } => format!("-> {}", target.to_string_lossy()),
                };
                (path.to_string_lossy().into_owned(), what)
            })
            .collect()
    }

    fn listing(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect()
    }

    #[test]
    fn file_data_is_durable_only_once_synced() {
        let mut fs = Fs::new(OWNER);
        let f = file(&mut fs, ROOT, "f", b"one");
        fs.fsync(ROOT).unwrap();
        assert_eq!(
            after_cut(&fs),
            listing(&[("f", "")]),
            "name durable, data not"
        );
        fs.fsync(f).unwrap();
        fs.write(f, 3, b" two").unwrap();
        fs.set_size(f, 2).unwrap();
        assert_eq!(fs.read(f, 0, 100).unwrap(), b"on");
        assert_eq!(after_cut(&fs), listing(&[("f", "one")]));
        assert_eq!(
            fs.unsynced(),
            Unsynced {
                files: 1,
                bytes: 2,
                dirs: 0
            }
        );
    }

    #[test]
    fn a_synced_file_whose_name_never_was_disappears() {
        let mut fs = Fs::new(OWNER);
        let f = file(&mut fs, ROOT, "f", b"data");
        fs.fsync(f).unwrap();
        assert!(after_cut(&fs).is_empty());
        // Neither does syncing a subdirectory make its own name durable.
        let d = mkdir(&mut fs, ROOT, "d");
        let g = file(&mut fs, d, "g", b"x");
        fs.fsync(g).unwrap();
        fs.fsync(d).unwrap();
        assert!(after_cut(&fs).is_empty());
        fs.fsync(ROOT).unwrap();
        assert_eq!(
            after_cut(&fs),
            listing(&[("d", "/"), ("d/g", "x"), ("f", "data")])
        );
    }

    #[test]
    fn each_half_of_a_rename_is_durable_with_its_directory() {
        let mut fs = Fs::new(OWNER);
        let (a, b) = (mkdir(&mut fs, ROOT, "a"), mkdir(&mut fs, ROOT, "b"));
        let f = file(&mut fs, a, "f", b"x");
        for ino in [f, a, b, ROOT] {
            fs.fsync(ino).unwrap();
        }
        let before = listing(&[("a", "/"), ("a/f", "x"), ("b", "/")]);
        fs.rename((a, name("f")), (b, name("g")), false).unwrap();
        assert_eq!(after_cut(&fs), before, "no directory synced: lost");
        fs.fsync(b).unwrap();
        assert_eq!(
            after_cut(&fs),
            listing(&[("a", "/"), ("a/f", "x"), ("b", "/"), ("b/g", "x")]),
            "only the new parent synced: both names, one file"
        );
        fs.fsync(a).unwrap();
        assert_eq!(
            after_cut(&fs),
            listing(&[("a", "/"), ("b", "/"), ("b/g", "x")])
        );
        // The old parent alone: the file is in neither.
        fs.rename((b, name("g")), (a, name("f")), false).unwrap();
        fs.fsync(b).unwrap();
        assert_eq!(after_cut(&fs), listing(&[("a", "/"), ("b", "/")]));
    }

    #[test]
    fn a_rename_over_a_file_keeps_the_old_content_until_synced() {
        let mut fs = Fs::new(OWNER);
        let old = file(&mut fs, ROOT, "current", b"old");
        fs.fsync(old).unwrap();
        let new = file(&mut fs, ROOT, "tmp", b"new");
        fs.fsync(new).unwrap();
        fs.fsync(ROOT).unwrap();
        fs.rename((ROOT, name("tmp")), (ROOT, name("current")), false)
            .unwrap();
        assert_eq!(
            fs.read(fs.lookup(ROOT, name("current")).unwrap().ino, 0, 9)
                .unwrap(),
            b"new"
        );
        assert_eq!(
            after_cut(&fs),
            listing(&[("current", "old"), ("tmp", "new")])
        );
        fs.fsync(ROOT).unwrap();
        assert_eq!(after_cut(&fs), listing(&[("current", "new")]));
    }

    #[test]
    fn unlink_and_rmdir_are_undone_by_a_cut_until_synced() {
        let mut fs = Fs::new(OWNER);
        let d = mkdir(&mut fs, ROOT, "d");
        let f = file(&mut fs, ROOT, "f", b"x");
        fs.fsync(f).unwrap();
        fs.fsync(ROOT).unwrap();
        fs.unlink(ROOT, name("f")).unwrap();
        fs.rmdir(ROOT, name("d")).unwrap();
        assert_eq!(fs.lookup(ROOT, name("f")).unwrap_err(), Errno(libc::ENOENT));
        assert_eq!(after_cut(&fs), listing(&[("d", "/"), ("f", "x")]));
        assert_eq!(fs.unsynced().dirs, 1);
        fs.fsync(ROOT).unwrap();
        assert!(after_cut(&fs).is_empty());
        let _ = d;
    }

    #[test]
    fn a_half_synced_directory_rename_leaves_it_in_one_place() {
        let mut fs = Fs::new(OWNER);
        let (a, b) = (mkdir(&mut fs, ROOT, "a"), mkdir(&mut fs, ROOT, "b"));
        let d = mkdir(&mut fs, a, "d");
        for ino in [d, a, b, ROOT] {
            fs.fsync(ino).unwrap();
        }
        fs.rename((a, name("d")), (b, name("d")), false).unwrap();
        assert_eq!(fs.attr(a).unwrap().nlink, 2);
        assert_eq!(fs.attr(b).unwrap().nlink, 3);
        fs.fsync(b).unwrap();
        assert_eq!(
            after_cut(&fs),
            listing(&[("a", "/"), ("a/d", "/"), ("b", "/")])
        );
    }

    #[test]
    fn hard_links_share_content_and_count() {
        let mut fs = Fs::new(OWNER);
        let f = file(&mut fs, ROOT, "f", b"x");
        fs.link(f, ROOT, name("g")).unwrap();
        assert_eq!(fs.attr(f).unwrap().nlink, 2);
        fs.write(f, 1, b"y").unwrap();
        let g = fs.lookup(ROOT, name("g")).unwrap().ino;
        assert_eq!(fs.read(g, 0, 9).unwrap(), b"xy");
        fs.sync_all();
        assert_eq!(after_cut(&fs), listing(&[("f", "xy"), ("g", "xy")]));
        fs.unlink(ROOT, name("f")).unwrap();
        assert_eq!(fs.attr(g).unwrap().nlink, 1);
        assert_eq!(
            fs.unsynced(),
            Unsynced {
                files: 0,
                bytes: 0,
                dirs: 1
            }
        );
    }

    #[test]
    fn rename_follows_rename_2() {
        let mut fs = Fs::new(OWNER);
        let a = mkdir(&mut fs, ROOT, "a");
        let sub = mkdir(&mut fs, a, "sub");
        file(&mut fs, sub, "f", b"");
        file(&mut fs, ROOT, "g", b"");
        let e = |r: Result<()>| r.unwrap_err().0;
        assert_eq!(
            e(fs.rename((ROOT, name("a")), (sub, name("x")), false)),
            libc::EINVAL
        );
        assert_eq!(
            e(fs.rename((ROOT, name("g")), (a, name("sub")), false)),
            libc::EISDIR
        );
        assert_eq!(
            e(fs.rename((a, name("sub")), (ROOT, name("g")), false)),
            libc::ENOTDIR
        );
        let empty = mkdir(&mut fs, ROOT, "empty");
        assert_eq!(
            e(fs.rename((ROOT, name("empty")), (a, name("sub")), false)),
            libc::ENOTEMPTY
        );
        assert_eq!(
            e(fs.rename((ROOT, name("g")), (ROOT, name("empty")), false)),
            libc::EISDIR
        );
        assert_eq!(
            e(fs.rename((a, name("sub")), (ROOT, name("empty")), true)),
            libc::EEXIST
        );
        fs.rename((a, name("sub")), (ROOT, name("empty")), false)
            .unwrap();
        assert_eq!(fs.lookup(ROOT, name("empty")).unwrap().ino, sub);
        assert_eq!(fs.attr(empty).unwrap().nlink, 0);
        assert_eq!(fs.attr(ROOT).unwrap().nlink, 4, "root, a, empty (was sub)");
        assert_eq!(e(fs.rmdir(ROOT, name("empty"))), libc::ENOTEMPTY);
        assert_eq!(
            e(fs.create(ROOT, name("g"), New::Dir, OWNER).map(|_| ())),
            libc::EEXIST
        );
    }
}
