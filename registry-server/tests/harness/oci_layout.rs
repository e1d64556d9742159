//! Builds and reads OCI image layouts on disk (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`), the format external clients copy from and to.
//!
//! Layers are real tar archives wrapped in real gzip streams (deflate
//! "stored" blocks, so no compression library is needed), and configs carry
//! the matching `rootfs.diff_ids`, so clients that check either accept them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{OCI_INDEX, OCI_MANIFEST, hex, random_bytes, sha256};

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One image layer: the tar archive and its gzip wrapping.
#[derive(Clone)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub gzip: Vec<u8>,
}

impl Layer {
    /// A layer holding `files` files of random content under a random
    /// directory name, so no two calls give the same layer.
    pub fn random(files: usize) -> Layer {
        let dir = hex(&random_bytes(6));
        let entries: Vec<(String, Vec<u8>)> = (0..files)
            .map(|i| (format!("{dir}/file-{i}.bin"), random_bytes(700 + 311 * i)))
            .collect();
        Layer::from_files(&entries)
    }

    pub fn from_files(entries: &[(String, Vec<u8>)]) -> Layer {
        let tar = tar(entries);
        let gzip = gzip_stored(&tar);
        Layer { tar, gzip }
    }

    /// The digest of the compressed blob (what manifests reference).
    pub fn digest(&self) -> String {
        sha256(&self.gzip)
    }

    /// The digest of the uncompressed tar (what configs list as diff_ids).
    pub fn diff_id(&self) -> String {
        sha256(&self.tar)
    }
}

/// An image manifest written into a layout.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub manifest: Vec<u8>,
    pub digest: String,
    pub config: String,
    pub layers: Vec<String>,
    pub architecture: String,
    pub os: String,
}

impl BuiltImage {
    /// Config and layer digests, config first.
    pub fn blobs(&self) -> Vec<String> {
        let mut v = vec![self.config.clone()];
        v.extend(self.layers.iter().cloned());
        v
    }

    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": OCI_MANIFEST,
            "digest": self.digest,
            "size": self.manifest.len(),
            "platform": {"architecture": self.architecture, "os": self.os},
        })
    }
}

/// An image index written into a layout.
#[derive(Clone, Debug)]
pub struct BuiltIndex {
    pub index: Vec<u8>,
    pub digest: String,
    pub children: Vec<BuiltImage>,
}

impl BuiltIndex {
    /// Every blob under the index: configs and layers of all children.
    pub fn blobs(&self) -> BTreeSet<String> {
        self.children.iter().flat_map(|c| c.blobs()).collect()
    }
}

/// A layout directory being built.
pub struct OciLayout {
    pub dir: PathBuf,
    entries: Vec<Value>,
}

impl OciLayout {
    /// Creates an empty layout in `dir` (created if missing).
    pub fn create(dir: &Path) -> OciLayout {
        std::fs::create_dir_all(dir.join("blobs").join("sha256")).expect("create layout dirs");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write oci-layout");
        let layout = OciLayout {
            dir: dir.to_path_buf(),
            entries: Vec::new(),
        };
        layout.write_index();
        layout
    }

    /// Stores a blob under its digest; returns the digest.
    pub fn put_blob(&self, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        std::fs::write(blob_path(&self.dir, &digest), bytes).expect("write blob");
        digest
    }

    /// Writes the layers, a config naming their diff_ids, and a manifest.
    /// The image is not tagged; see [`OciLayout::tag_image`].
    pub fn add_image(&mut self, architecture: &str, os: &str, layers: &[Layer]) -> BuiltImage {
        let mut descriptors = Vec::new();
        let mut digests = Vec::new();
        for layer in layers {
            let d = self.put_blob(&layer.gzip);
            descriptors
                .push(json!({"mediaType": OCI_LAYER_GZIP, "digest": d, "size": layer.gzip.len()}));
            digests.push(d);
        }
        let config = serde_json::to_vec(&json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": architecture,
            "os": os,
            "config": {
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                "Labels": {"test.nonce": hex(&random_bytes(8))},
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(Layer::diff_id).collect::<Vec<_>>(),
            },
            "history": layers.iter().enumerate().map(|(i, _)| json!({
                "created": "2024-01-01T00:00:00Z",
                "created_by": format!("test layer {i}"),
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        let config_digest = self.put_blob(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": descriptors,
        }))
        .unwrap();
        let digest = self.put_blob(&manifest);
        BuiltImage {
            manifest,
            digest,
            config: config_digest,
            layers: digests,
            architecture: architecture.to_owned(),
            os: os.to_owned(),
        }
    }

    /// Writes an index over images already in this layout. Not tagged; see
    /// [`OciLayout::tag_index`].
    pub fn add_index(&mut self, children: Vec<BuiltImage>) -> BuiltIndex {
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": children.iter().map(BuiltImage::descriptor).collect::<Vec<_>>(),
        }))
        .unwrap();
        let digest = self.put_blob(&index);
        BuiltIndex {
            index,
            digest,
            children,
        }
    }

    pub fn tag_image(&mut self, tag: &str, image: &BuiltImage) {
        self.tag(tag, OCI_MANIFEST, &image.digest, image.manifest.len());
    }

    pub fn tag_index(&mut self, tag: &str, index: &BuiltIndex) {
        self.tag(tag, OCI_INDEX, &index.digest, index.index.len());
    }

    fn tag(&mut self, tag: &str, media_type: &str, digest: &str, size: usize) {
        self.entries.retain(|e| e["annotations"][REF_NAME] != tag);
        self.entries.push(json!({
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": {REF_NAME: tag},
        }));
        self.write_index();
    }

    fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.entries});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec_pretty(&index).unwrap(),
        )
        .expect("write index.json");
    }
}

/// What a layout's `index.json` says `tag` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// Reads `index.json` of a layout (for instance one a client wrote) and
/// finds the entry named `tag`.
pub fn resolve(dir: &Path, tag: &str) -> Entry {
    let raw = std::fs::read(dir.join("index.json")).expect("read index.json");
    let index: Value = serde_json::from_slice(&raw).expect("index.json is JSON");
    let entry = index["manifests"]
        .as_array()
        .expect("index.json has manifests")
        .iter()
        .find(|e| e["annotations"][REF_NAME] == tag)
        .unwrap_or_else(|| {
            panic!(
                "no entry named {tag:?} in {}",
                String::from_utf8_lossy(&raw)
            )
        });
    Entry {
        media_type: entry["mediaType"].as_str().unwrap_or_default().to_owned(),
        digest: entry["digest"].as_str().expect("entry digest").to_owned(),
        size: entry["size"].as_u64().expect("entry size"),
    }
}

/// Reads a blob of a layout and checks its content hashes to its name.
pub fn read_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let path = blob_path(dir, digest);
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("blob {digest} missing from layout: {e}"));
    assert_eq!(
        sha256(&bytes),
        digest,
        "content of {} does not match its name",
        path.display()
    );
    bytes
}

/// All blobs reachable from the manifest or index `digest`, the root
/// included, each read and hash-checked.
pub fn closure(dir: &Path, digest: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    walk(dir, digest, &mut seen);
    seen
}

fn walk(dir: &Path, digest: &str, seen: &mut BTreeSet<String>) {
    if !seen.insert(digest.to_owned()) {
        return;
    }
    let doc: Value = serde_json::from_slice(&read_blob(dir, digest)).expect("manifest is JSON");
    if let Some(children) = doc["manifests"].as_array() {
        for c in children {
            walk(dir, c["digest"].as_str().expect("child digest"), seen);
        }
    } else {
        let config = doc["config"]["digest"].as_str().expect("config digest");
        read_blob(dir, config);
        seen.insert(config.to_owned());
        for l in doc["layers"].as_array().expect("layers") {
            let d = l["digest"].as_str().expect("layer digest");
            read_blob(dir, d);
            seen.insert(d.to_owned());
        }
    }
}

pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    dir.join("blobs").join("sha256").join(hex)
}

/// A POSIX ustar archive of regular files.
pub fn tar(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        assert!(name.len() < 100, "tar name too long: {name}");
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        put_octal(&mut h[100..108], 0o644);
        put_octal(&mut h[108..116], 0);
        put_octal(&mut h[116..124], 0);
        put_octal(&mut h[124..136], data.len() as u64);
        put_octal(&mut h[136..148], 1_704_067_200); // 2024-01-01
        h[148..156].fill(b' ');
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let field = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(field.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Writes `value` as zero-padded octal filling the field but its last byte (NUL).
fn put_octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    assert_eq!(s.len(), width, "value too large for tar field");
    field[..width].copy_from_slice(s.as_bytes());
    field[width] = 0;
}

/// A valid gzip stream of `data` using uncompressed deflate blocks.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks = data.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        out.push(u8::from(last));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
