//! `registry_core::manifest::parse` on an arbitrary body, content type and
//! digest algorithm. The input is one flags byte (bit 0: addressed by
//! sha512; bit 1: a `Content-Type` is sent), then, with bit 1, the
//! content type up to the first newline, then the body.

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use registry_core::manifest::{self, Kind, MANIFEST_MEDIA_TYPES, ParsedManifest};
use registry_core::{Algorithm, Digest};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let algorithm = if flags & 1 == 1 {
        Algorithm::Sha512
    } else {
        Algorithm::Sha256
    };
    let (content_type, body) = if flags & 2 == 2 {
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return;
        };
        let Ok(content_type) = std::str::from_utf8(&rest[..end]) else {
            return;
        };
        (Some(content_type), &rest[end + 1..])
    } else {
        (None, rest)
    };
    if let Ok(m) = manifest::parse(body, content_type, algorithm) {
        check(&m, body, algorithm);
    }
});

/// What the index relies on in an accepted manifest.
fn check(m: &ParsedManifest, body: &[u8], algorithm: Algorithm) {
    assert_eq!(m.digest, Digest::of(algorithm, body));
    assert_eq!(m.size, body.len() as u64);
    assert!(MANIFEST_MEDIA_TYPES.contains(&m.media_type.as_str()));
    for list in [&m.blobs, &m.children] {
        let mut seen = HashSet::new();
        for t in list {
            assert!(seen.insert(&t.digest), "{} listed twice", t.digest);
        }
    }
    match m.kind {
        Kind::Image => {
            assert!(m.children.is_empty());
            assert!(!m.blobs.is_empty(), "an image has at least its config");
        }
        Kind::Index => {
            assert!(m.blobs.is_empty());
            assert!(m.children.iter().all(|c| c.digest != m.digest));
        }
    }
}
