//! Creating directories and files so that they survive a power cut. A new
//! name is durable only once the directory holding it is synced, and new
//! content only once its file is: syncing a file does not make its name
//! durable, nor does creating a directory make its own name durable.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Makes the entries of `dir` (names created, renamed or removed in it)
/// durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes sure `dir` exists under a durable name: creates it and any
/// missing parents, syncing the parent of each one created, and syncs the
/// parent of `dir` even when `dir` was there already (an earlier start may
/// have been stopped between creating it and syncing its parent).
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    let parent = parent_of(dir);
    if !dir.is_dir() {
        if !parent.is_dir() {
            ensure_dir(parent)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => {}
            // Created meanwhile by someone else.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    fsync_dir(parent)
}

/// Creates `dir` unless it exists; whether it did. Its name is not durable
/// until the caller syncs its parent.
pub fn make_dir(dir: &Path) -> io::Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes a new file at `path` (owner-only), whole or not at all: the
/// bytes go to a temporary name and are synced, then renamed into place,
/// and the directory is synced. A crash leaves either no file at `path` or
/// the whole one (and perhaps the temporary, which the next write
/// replaces).
pub fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_of(path);
    ensure_dir(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_dir_creates_missing_parents_and_accepts_an_existing_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        ensure_dir(&deep).unwrap();
        assert!(deep.is_dir());
        ensure_dir(&deep).unwrap();
        std::fs::write(tmp.path().join("file"), b"").unwrap();
        assert!(ensure_dir(&tmp.path().join("file")).is_err());
    }

    #[test]
    fn a_private_file_is_written_whole_and_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("auth/secret");
        write_private_file(&path, b"first").unwrap();
        write_private_file(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!tmp.path().join("auth/secret.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
