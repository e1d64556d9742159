//! What the benchmark uploads: blobs that are unique per operation yet cheap
//! to produce, and small OCI images built from them.
//!
//! A blob of size `S` is a shared pseudo-random prefix (generated once per
//! size) followed by a short tail carrying a unique id. The prefix length is
//! a multiple of the SHA-256 block size, so the hasher state after the
//! prefix is computed once and each blob's digest costs only the tail: the
//! client spends its CPU on moving bytes, not on hashing them, and leaves
//! the cores to the registry under test. Bodies are sent from the shared
//! buffer without copying it.

use std::ops::Range;

use bytes::Bytes;
use rand::{RngCore, SeedableRng, rngs::StdRng};
use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// SHA-256 processes 64-byte blocks: a prefix of whole blocks leaves no
/// buffered input in the hasher, so its state can be cloned and resumed.
const BLOCK: u64 = 64;
/// Bytes of the unique id at the start of every tail.
const ID_LEN: u64 = 24;

/// `sha256:<hex>` of a finished hash.
pub fn digest_string(hash: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(7 + 2 * hash.len());
    out.push_str("sha256:");
    for byte in hash {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    digest_string(&Sha256::digest(data))
}

/// A well-mixed 64-bit value derived from `x` (splitmix64): used to pick
/// operations and pool entries without a random number generator per task.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Identifies one blob made from a template. Equal ids give equal content,
/// so pools that must survive re-runs use a fixed nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobId {
    /// Differs between benchmark runs (or is fixed, for reusable pools).
    pub nonce: u64,
    /// Differs between the workloads of one run.
    pub stream: u64,
    /// Differs between the blobs of one workload.
    pub seq: u64,
}

/// The shared part of every blob of one size.
pub struct BlobTemplate {
    size: u64,
    prefix: Bytes,
    prefix_state: Sha256,
}

impl BlobTemplate {
    pub fn new(size: u64, seed: u64) -> Self {
        let prefix_len = size.saturating_sub(ID_LEN) / BLOCK * BLOCK;
        let mut prefix = vec![0u8; usize::try_from(prefix_len).expect("blob size fits in memory")];
        StdRng::seed_from_u64(seed ^ size).fill_bytes(&mut prefix);
        let mut prefix_state = Sha256::new();
        prefix_state.update(&prefix);
        BlobTemplate {
            size,
            prefix: Bytes::from(prefix),
            prefix_state,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The blob `id`: the shared prefix, then a tail starting with the id.
    pub fn blob(&self, id: BlobId) -> Blob {
        let tail_len = (self.size - self.prefix.len() as u64) as usize;
        let mut tail = Vec::with_capacity(tail_len);
        tail.extend_from_slice(&id.nonce.to_le_bytes());
        tail.extend_from_slice(&id.stream.to_le_bytes());
        tail.extend_from_slice(&id.seq.to_le_bytes());
        let filler = mix(id.seq ^ id.stream.rotate_left(32) ^ id.nonce).to_le_bytes();
        while tail.len() < tail_len {
            tail.push(filler[tail.len() % filler.len()]);
        }
        tail.truncate(tail_len);
        let mut hasher = self.prefix_state.clone();
        hasher.update(&tail);
        Blob {
            digest: digest_string(&hasher.finalize()),
            parts: [self.prefix.clone(), Bytes::from(tail)],
        }
    }
}

/// Content addressed by its digest, held as (at most) two shared buffers.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    parts: [Bytes; 2],
}

impl Blob {
    pub fn from_bytes(bytes: Bytes) -> Self {
        Blob {
            digest: sha256_digest(&bytes),
            parts: [bytes, Bytes::new()],
        }
    }

    pub fn len(&self) -> u64 {
        self.parts.iter().map(|p| p.len() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in `range`, as slices of the shared buffers (no copy).
    pub fn slices(&self, range: Range<u64>) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(2);
        let mut offset = 0u64;
        for part in &self.parts {
            let (start, end) = (offset, offset + part.len() as u64);
            offset = end;
            let (lo, hi) = (range.start.max(start), range.end.min(end));
            if lo < hi {
                out.push(part.slice((lo - start) as usize..(hi - start) as usize));
            }
        }
        out
    }
}

/// An image manifest with its config and layers.
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Bytes,
    pub digest: String,
}

impl Image {
    /// An image whose config carries `label`, so that distinct labels give
    /// distinct images even when they share every layer.
    pub fn new(label: &str, layers: Vec<Blob>) -> Self {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Labels": { "org.example.bench.id": label } },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let config = Blob::from_bytes(Bytes::from(config.to_string()));
        let descriptor = |media_type: &str, blob: &Blob| json!({ "mediaType": media_type, "digest": blob.digest, "size": blob.len() });
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, &config),
            "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
        });
        let manifest = Bytes::from(manifest.to_string());
        Image {
            digest: sha256_digest(&manifest),
            config,
            layers,
            manifest,
        }
    }

    /// Config first, then the layers: the order a client uploads them in.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(&self.layers)
    }

    /// Bytes of the blobs and the manifest.
    pub fn total_len(&self) -> u64 {
        self.blobs().map(Blob::len).sum::<u64>() + self.manifest.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(blob: &Blob) -> Vec<u8> {
        blob.slices(0..blob.len()).concat()
    }

    #[test]
    fn template_blobs_have_the_right_size_digest_and_are_unique() {
        for size in [0, 1, 23, 24, 64, 100, 4096, 4097, 65_536] {
            let template = BlobTemplate::new(size, 7);
            let a = template.blob(BlobId {
                nonce: 1,
                stream: 2,
                seq: 3,
            });
            let b = template.blob(BlobId {
                nonce: 1,
                stream: 2,
                seq: 4,
            });
            assert_eq!(a.len(), size);
            assert_eq!(a.digest, sha256_digest(&whole(&a)), "size {size}");
            if size >= ID_LEN {
                assert_ne!(a.digest, b.digest);
            }
            let again = template.blob(BlobId {
                nonce: 1,
                stream: 2,
                seq: 3,
            });
            assert_eq!(a.digest, again.digest);
        }
    }

    #[test]
    fn slices_cover_any_range() {
        let blob = BlobTemplate::new(1000, 1).blob(BlobId {
            nonce: 0,
            stream: 0,
            seq: 9,
        });
        let all = whole(&blob);
        for (start, end) in [(0, 1000), (0, 10), (950, 1000), (900, 980), (10, 10)] {
            assert_eq!(
                blob.slices(start..end).concat(),
                &all[start as usize..end as usize]
            );
        }
    }

    #[test]
    fn image_manifest_lists_its_blobs() {
        let layer = Blob::from_bytes(Bytes::from_static(b"layer"));
        let image = Image::new("x", vec![layer.clone()]);
        let manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest["layers"][0]["digest"], layer.digest.as_str());
        assert_eq!(manifest["config"]["digest"], image.config.digest.as_str());
        assert_eq!(image.digest, sha256_digest(&image.manifest));
    }
}
