//! The backing directory: read into a fresh model at mount, and replaced by
//! the model's durable tree at a power cut or a clean unmount.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::model::{Durable, Fs, Ino, New, Owner, ROOT};

fn owner_of(m: &fs::Metadata) -> Owner {
    Owner {
        perm: (m.mode() & 0o7777) as u16,
        uid: m.uid(),
        gid: m.gid(),
    }
}

fn model_error(path: &Path, e: crate::model::Errno) -> io::Error {
    io::Error::new(
        io::Error::from_raw_os_error(e.0).kind(),
        format!("{}: errno {}", path.display(), e.0),
    )
}

/// Reads `dir` into a model in which everything is durable. Files named
/// twice (hard links) stay one node with two names.
pub fn load(dir: &Path) -> io::Result<Fs> {
    let mut fs = Fs::new(owner_of(&fs::metadata(dir)?));
    let mut seen: HashMap<(u64, u64), Ino> = HashMap::new();
    load_dir(&mut fs, dir, ROOT, &mut seen)?;
    fs.sync_all();
    Ok(fs)
}

fn load_dir(
    fs: &mut Fs,
    dir: &Path,
    ino: Ino,
    seen: &mut HashMap<(u64, u64), Ino>,
) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let meta = fs::symlink_metadata(&path)?;
        let owner = owner_of(&meta);
        let fail = |e| model_error(&path, e);
        if meta.is_dir() {
            let child = fs.create(ino, &name, New::Dir, owner).map_err(fail)?.ino;
            load_dir(fs, &path, child, seen)?;
        } else if meta.is_symlink() {
            let target = fs::read_link(&path)?;
            fs.create(ino, &name, New::Symlink(target.as_os_str()), owner)
                .map_err(fail)?;
        } else if meta.is_file() {
            if let Some(&first) = seen.get(&(meta.dev(), meta.ino())) {
                fs.link(first, ino, &name).map_err(fail)?;
                continue;
            }
            let file = fs.create(ino, &name, New::File, owner).map_err(fail)?.ino;
            fs.write(file, 0, &fs::read(&path)?).map_err(fail)?;
            seen.insert((meta.dev(), meta.ino()), file);
        } else {
            return Err(io::Error::other(format!(
                "{}: only regular files, directories and symlinks are supported",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Replaces the contents of `dir` with the model's durable tree.
pub fn store(fs: &Fs, dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if fs::symlink_metadata(&path)?.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    let mut written: HashMap<Ino, std::path::PathBuf> = HashMap::new();
    for (rel, ino) in fs.durable_tree() {
        let path = dir.join(&rel);
        let node = fs.durable(ino).map_err(|e| model_error(&path, e))?;
        match node {
            Durable::Dir { perm } => {
                fs::create_dir(&path)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(perm.into()))?;
            }
            Durable::Symlink { target } => std::os::unix::fs::symlink(target, &path)?,
            Durable::File { data, perm } => {
                if let Some(first) = written.get(&ino) {
                    fs::hard_link(first, &path)?;
                    continue;
                }
                fs::write(&path, data.read(0, usize::MAX))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(perm.into()))?;
                written.insert(ino, path);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn load_then_store_round_trips_a_tree() {
        let src = tempfile::tempdir().unwrap();
        let p = src.path();
        fs::create_dir_all(p.join("a/b")).unwrap();
        fs::write(p.join("a/b/f"), b"content").unwrap();
        fs::hard_link(p.join("a/b/f"), p.join("a/g")).unwrap();
        std::os::unix::fs::symlink("b/f", p.join("a/s")).unwrap();
        fs::write(p.join("empty"), b"").unwrap();
        let model = load(p).unwrap();
        assert_eq!(model.unsynced(), Default::default());

        let dst = tempfile::tempdir().unwrap();
        fs::write(dst.path().join("stale"), b"old").unwrap();
        store(&model, dst.path()).unwrap();
        let d = dst.path();
        assert!(!d.join("stale").exists());
        assert_eq!(fs::read(d.join("a/g")).unwrap(), b"content");
        let (f, g) = (
            fs::metadata(d.join("a/b/f")).unwrap(),
            fs::metadata(d.join("a/g")).unwrap(),
        );
        assert_eq!((f.ino(), f.nlink()), (g.ino(), 2));
        assert_eq!(fs::read_link(d.join("a/s")).unwrap(), Path::new("b/f"));
        assert_eq!(fs::read(d.join("a/s")).unwrap(), b"content");
        assert_eq!(fs::read(d.join("empty")).unwrap(), b"");
    }

    #[test]
    fn store_writes_only_what_is_durable() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("kept"), b"v1").unwrap();
        let mut model = load(src.path()).unwrap();
        let kept = model.lookup(ROOT, OsStr::new("kept")).unwrap().ino;
        model.write(kept, 0, b"v2").unwrap();
        let owner = Owner {
            perm: 0o644,
            uid: 0,
            gid: 0,
        };
        let lost = model
            .create(ROOT, OsStr::new("lost"), New::File, owner)
            .unwrap()
            .ino;
        model.fsync(lost).unwrap();
        store(&model, src.path()).unwrap();
        assert_eq!(fs::read(src.path().join("kept")).unwrap(), b"v1");
        assert!(!src.path().join("lost").exists());
    }
}
