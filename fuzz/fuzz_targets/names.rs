//! `FromStr` of `Digest`, `RepoName`, `Tag` and `Reference` on arbitrary
//! text. Whatever parses is canonical: it displays as the very text it came
//! from, and that text parses back to the same value.

#![no_main]

use std::fmt::Display;
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use registry_core::{Algorithm, Digest, Reference, RepoName, Tag};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(d) = round_trip::<Digest>(s) {
        let hex_len = match d.algorithm() {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        };
        assert_eq!(d.encoded().len(), hex_len);
        assert_eq!(
            s,
            format!("{}:{}", d.algorithm().as_str(), d.encoded()),
            "a digest is its algorithm and its hex"
        );
    }
    if let Some(name) = round_trip::<RepoName>(s) {
        assert!(name.as_str().len() <= registry_core::names::MAX_NAME_LEN);
        assert!(name.as_str().split('/').all(|c| !c.is_empty()));
    }
    let tag = round_trip::<Tag>(s);
    let digest = s.parse::<Digest>().ok();
    match round_trip::<Reference>(s) {
        Some(Reference::Tag(t)) => assert_eq!(Some(t), tag),
        Some(Reference::Digest(d)) => assert_eq!(Some(d), digest),
        // A reference is a tag or a digest, nothing less.
        None => assert!(tag.is_none() && digest.is_none()),
    }
});

/// Parses `s`; a value that parses must display as `s` and parse back equal.
fn round_trip<T>(s: &str) -> Option<T>
where
    T: FromStr + Display + PartialEq + std::fmt::Debug,
{
    let value = s.parse::<T>().ok()?;
    let shown = value.to_string();
    assert_eq!(shown, s, "not displayed as parsed");
    let again = shown.parse::<T>().ok();
    assert_eq!(again.as_ref(), Some(&value), "does not parse back");
    Some(value)
}
