//! The layer through a real mount: what survives a power cut is exactly what
//! was made durable with fsync, by the documented model.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use powercut::Mount;

/// A mounted layer over a backing directory, in a temporary directory.
struct Rig {
    mount: Option<Mount>,
    root: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Rig {
    fn new(test: &str) -> Option<Rig> {
        if !powercut::usable_in_test(test) {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        fs::create_dir(root.join("mnt")).unwrap();
        fs::create_dir(root.join("backing")).unwrap();
        let mut rig = Rig {
            mount: None,
            root,
            _tmp: tmp,
        };
        rig.mount();
        Some(rig)
    }

    fn mount(&mut self) {
        let mount = Mount::start(&self.root.join("mnt"), &self.root.join("backing")).unwrap();
        self.mount = Some(mount);
    }

    /// A path on the mount.
    fn at(&self, rel: &str) -> PathBuf {
        self.root.join("mnt").join(rel)
    }

    /// Cuts the power, unmounts and mounts the durable state again.
    fn cut_and_reboot(&mut self) -> powercut::Unsynced {
        let mount = self.mount.take().unwrap();
        let lost = mount.cut().unwrap();
        mount.unmount().unwrap();
        self.mount();
        lost
    }

    /// Every path on the mount with its content ("/" for a directory).
    fn tree(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        walk(&self.at(""), "", &mut out);
        out.sort();
        out
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.file_type().unwrap().is_dir() {
            out.push((rel.clone(), "/".into()));
            walk(&e.path(), &format!("{rel}/"), out);
        } else {
            out.push((rel, String::from_utf8(fs::read(e.path()).unwrap()).unwrap()));
        }
    }
}

fn tree(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn fsync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

fn write_synced(path: &Path, content: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(content).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn a_write_without_fsync_is_lost_and_a_synced_one_survives() {
    let Some(mut rig) = Rig::new("a_write_without_fsync_is_lost_and_a_synced_one_survives") else {
        return;
    };
    write_synced(&rig.at("kept"), b"v1");
    fs::write(rig.at("never-synced"), b"data").unwrap();
    fsync_dir(&rig.at(""));
    // Appended and overwritten after the sync: both lost.
    let mut f = OpenOptions::new()
        .append(true)
        .open(rig.at("kept"))
        .unwrap();
    f.write_all(b" and more").unwrap();
    drop(f);
    assert_eq!(
        fs::read(rig.at("kept")).unwrap(),
        b"v1 and more",
        "reads see unsynced writes"
    );
    let lost = rig.cut_and_reboot();
    assert_eq!(lost.files, 2, "{lost:?}");
    assert_eq!(rig.tree(), tree(&[("kept", "v1"), ("never-synced", "")]));
}

#[test]
fn fdatasync_persists_size_and_truncation_needs_a_sync() {
    let Some(mut rig) = Rig::new("fdatasync_persists_size_and_truncation_needs_a_sync") else {
        return;
    };
    let mut f = File::create(rig.at("f")).unwrap();
    f.write_all(&[b'x'; 100_000]).unwrap();
    f.sync_data().unwrap();
    fsync_dir(&rig.at(""));
    f.set_len(10).unwrap();
    drop(f);
    rig.cut_and_reboot();
    assert_eq!(fs::read(rig.at("f")).unwrap(), vec![b'x'; 100_000]);
}

#[test]
fn an_fdatasynced_file_whose_name_was_never_synced_disappears() {
    let Some(mut rig) = Rig::new("an_fdatasynced_file_whose_name_was_never_synced_disappears")
    else {
        return;
    };
    fs::create_dir(rig.at("d")).unwrap();
    fsync_dir(&rig.at(""));
    let mut f = File::create(rig.at("d/f")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_data().unwrap();
    drop(f);
    rig.cut_and_reboot();
    assert_eq!(rig.tree(), tree(&[("d", "/")]));
}

#[test]
fn a_rename_survives_only_with_a_directory_fsync() {
    let Some(mut rig) = Rig::new("a_rename_survives_only_with_a_directory_fsync") else {
        return;
    };
    write_synced(&rig.at("a"), b"1");
    write_synced(&rig.at("b"), b"2");
    fsync_dir(&rig.at(""));
    fs::rename(rig.at("a"), rig.at("a2")).unwrap();
    rig.cut_and_reboot();
    assert_eq!(
        rig.tree(),
        tree(&[("a", "1"), ("b", "2")]),
        "unsynced rename lost"
    );

    fs::rename(rig.at("a"), rig.at("a2")).unwrap();
    fs::rename(rig.at("b"), rig.at("a2")).unwrap_or_else(|e| panic!("replace: {e}"));
    fsync_dir(&rig.at(""));
    rig.cut_and_reboot();
    assert_eq!(rig.tree(), tree(&[("a2", "2")]), "synced renames kept");
}

#[test]
fn a_new_directory_needs_its_parent_synced() {
    let Some(mut rig) = Rig::new("a_new_directory_needs_its_parent_synced") else {
        return;
    };
    fs::create_dir_all(rig.at("x/y")).unwrap();
    write_synced(&rig.at("x/y/f"), b"data");
    fsync_dir(&rig.at("x/y"));
    fsync_dir(&rig.at("x"));
    rig.cut_and_reboot();
    assert!(rig.tree().is_empty(), "x itself was never made durable");

    fs::create_dir_all(rig.at("x/y")).unwrap();
    write_synced(&rig.at("x/y/f"), b"data");
    for d in ["x/y", "x", ""] {
        fsync_dir(&rig.at(d));
    }
    rig.cut_and_reboot();
    assert_eq!(
        rig.tree(),
        tree(&[("x", "/"), ("x/y", "/"), ("x/y/f", "data")])
    );
}

#[test]
fn unlink_and_rmdir_come_back_unless_synced() {
    let Some(mut rig) = Rig::new("unlink_and_rmdir_come_back_unless_synced") else {
        return;
    };
    fs::create_dir(rig.at("d")).unwrap();
    write_synced(&rig.at("f"), b"1");
    fsync_dir(&rig.at(""));
    fs::remove_file(rig.at("f")).unwrap();
    fs::remove_dir(rig.at("d")).unwrap();
    rig.cut_and_reboot();
    assert_eq!(rig.tree(), tree(&[("d", "/"), ("f", "1")]));
    fs::remove_file(rig.at("f")).unwrap();
    fsync_dir(&rig.at(""));
    rig.cut_and_reboot();
    assert_eq!(rig.tree(), tree(&[("d", "/")]));
}

#[test]
fn after_a_cut_every_request_fails_until_remounted() {
    let Some(rig) = Rig::new("after_a_cut_every_request_fails_until_remounted") else {
        return;
    };
    let mut f = File::create(rig.at("f")).unwrap();
    rig.mount.as_ref().unwrap().cut().unwrap();
    let e = f.write_all(b"x").and_then(|()| f.sync_all()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(fs::metadata(rig.at("g")).is_err());
    assert!(rig.mount.as_ref().unwrap().cut().is_err(), "one cut only");
}

#[test]
fn a_clean_unmount_or_sync_keeps_everything() {
    let Some(mut rig) = Rig::new("a_clean_unmount_or_sync_keeps_everything") else {
        return;
    };
    fs::create_dir(rig.at("d")).unwrap();
    fs::write(rig.at("d/f"), b"data").unwrap();
    std::os::unix::fs::symlink("d/f", rig.at("s")).unwrap();
    fs::hard_link(rig.at("d/f"), rig.at("h")).unwrap();
    rig.mount.take().unwrap().unmount().unwrap();
    rig.mount();
    let all = tree(&[("d", "/"), ("d/f", "data"), ("h", "data"), ("s", "data")]);
    assert_eq!(rig.tree(), all);
    assert_eq!(fs::read_link(rig.at("s")).unwrap(), Path::new("d/f"));

    fs::write(rig.at("d/g"), b"more").unwrap();
    rig.mount.as_ref().unwrap().control().sync().unwrap();
    rig.cut_and_reboot();
    assert_eq!(rig.tree().len(), all.len() + 1);
}

#[test]
fn big_directories_list_completely_and_errors_are_posix() {
    let Some(rig) = Rig::new("big_directories_list_completely_and_errors_are_posix") else {
        return;
    };
    fs::create_dir(rig.at("d")).unwrap();
    for i in 0..2000 {
        fs::write(rig.at(&format!("d/file-with-a-longish-name-{i:05}")), b"").unwrap();
    }
    assert_eq!(fs::read_dir(rig.at("d")).unwrap().count(), 2000);
    let kind = |r: std::io::Result<()>| r.unwrap_err().kind();
    assert_eq!(
        kind(fs::remove_dir(rig.at("d"))),
        ErrorKind::DirectoryNotEmpty
    );
    assert_eq!(kind(fs::create_dir(rig.at("d"))), ErrorKind::AlreadyExists);
    assert_eq!(
        kind(fs::remove_file(rig.at("missing"))),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(fs::rename(rig.at("d"), rig.at("d/inside"))),
        ErrorKind::InvalidInput
    );
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(rig.at("d/file-with-a-longish-name-00001"));
    assert_eq!(e.unwrap_err().kind(), ErrorKind::AlreadyExists);
}
