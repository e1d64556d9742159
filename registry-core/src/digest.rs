//! Content digests (`algorithm:encoded`) and the incremental hasher behind them.
//!
//! Berth accepts the two algorithms the OCI image spec registers, sha256 and
//! sha512. Any other syntactically valid digest is refused as unsupported.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated digest: a supported algorithm and its lowercase hex encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn algorithm(&self) -> Algorithm {
        if self.0.starts_with("sha512:") {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        }
    }

    /// The hex part after the colon.
    pub fn encoded(&self) -> &str {
        let colon = self.0.find(':').expect("validated digest has a colon");
        &self.0[colon + 1..]
    }

    /// Digest of a byte slice held in memory (manifests, test data).
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, bytes)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True if `s` matches the image spec's digest grammar:
/// `algorithm ":" encoded`, algorithm `[a-z0-9]+([+._-][a-z0-9]+)*`,
/// encoded `[a-zA-Z0-9=_-]+`.
fn well_formed(s: &str) -> bool {
    let Some((algorithm, encoded)) = s.split_once(':') else {
        return false;
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    let encoded_ok = !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
    algorithm_ok && encoded_ok
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest, Error> {
        if !well_formed(s) {
            return Err(Error::DigestInvalid(format!("malformed digest {s:?}")));
        }
        let (algorithm, encoded) = s.split_once(':').expect("checked above");
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                return Err(Error::DigestInvalid(format!(
                    "unsupported digest algorithm {other:?} (sha256 and sha512 are supported)"
                )));
            }
        };
        let hex_ok = encoded.len() == algorithm.hex_len()
            && encoded
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex_ok {
            return Err(Error::DigestInvalid(format!(
                "{} digest must be {} lowercase hex characters",
                algorithm.as_str(),
                algorithm.hex_len()
            )));
        }
        Ok(Digest(s.to_owned()))
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for one of the supported algorithms. Its state can be
/// saved and restored so a chunked upload resumes after a restart without
/// re-reading what was already received.
///
/// The `sha2` crate picks the CPU's SHA extensions (SHA-256) or AVX2
/// (SHA-512) at run time. Measured with `sha-bench` (see
/// `conformance/BENCH.md`) it hashes SHA-256 as fast as `ring` and within a
/// few percent of OpenSSL's assembly, and `ring` could not be used anyway:
/// its contexts cannot be saved or restored, which chunked uploads need.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, out) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        let mut s = String::with_capacity(algorithm.as_str().len() + 1 + out.len() * 2);
        s.push_str(algorithm.as_str());
        s.push(':');
        for b in out {
            s.push(char::from_digit(u32::from(b >> 4), 16).expect("nibble"));
            s.push(char::from_digit(u32::from(b & 0xf), 16).expect("nibble"));
        }
        Digest(s)
    }

    /// The hasher's internal state: the algorithm's tag byte, then the bytes
    /// of the hash function's serialized state.
    pub fn save(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        match self {
            Hasher::Sha256(h) => {
                out.push(1);
                out.extend_from_slice(h.serialize().as_slice());
            }
            Hasher::Sha512(h) => {
                out.push(2);
                out.extend_from_slice(h.serialize().as_slice());
            }
        }
        out
    }

    /// Restores a state written by [`Hasher::save`]; `None` if it is not one.
    pub fn restore(state: &[u8]) -> Option<Hasher> {
        let (&tag, rest) = state.split_first()?;
        match tag {
            1 => {
                let s = SerializedState::<sha2::Sha256>::try_from(rest).ok()?;
                sha2::Sha256::deserialize(&s).ok().map(Hasher::Sha256)
            }
            2 => {
                let s = SerializedState::<sha2::Sha512>::try_from(rest).ok()?;
                sha2::Sha512::deserialize(&s).ok().map(Hasher::Sha512)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_known_values() {
        assert_eq!(Digest::sha256_of(b"").as_str(), EMPTY_SHA256);
        let d = Digest::of(Algorithm::Sha512, b"");
        assert!(d.as_str().starts_with("sha512:cf83e1357eefb8bd"));
        assert_eq!(d.algorithm(), Algorithm::Sha512);
        assert_eq!(d.encoded().len(), 128);
    }

    #[test]
    fn parses_and_rejects() {
        assert!(EMPTY_SHA256.parse::<Digest>().is_ok());
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:../../etc/passwd",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn saved_state_resumes() {
        let mut a = Hasher::new(Algorithm::Sha256);
        a.update(b"hello ");
        let mut b = Hasher::restore(&a.save()).unwrap();
        b.update(b"world");
        assert_eq!(b.finish(), Digest::sha256_of(b"hello world"));
        let mut c = Hasher::new(Algorithm::Sha512);
        c.update(&[7u8; 300]);
        let mut d = Hasher::restore(&c.save()).unwrap();
        d.update(&[9u8; 5]);
        let mut all = vec![7u8; 300];
        all.extend([9u8; 5]);
        assert_eq!(d.finish(), Digest::of(Algorithm::Sha512, &all));
        assert!(Hasher::restore(&[3, 1, 2]).is_none());
        assert!(Hasher::restore(&[]).is_none());
    }

    /// States saved after hashing 200 bytes of `a`, as the index holds them
    /// for uploads in progress: a tag byte, then the `sha2` crate's
    /// serialization (chaining words, block count, buffered tail).
    const SAVED_SHA256_200A: &str = "0186aeeb765d8d7c125bcaa250bd567d499a3f0946a07cdf415d43fdeb70490c27030000000000000008616161616161616100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";
    const SAVED_SHA512_200A: &str = "02041bc1556e7cbf03dc5f28457f75480dc02690fc9b6846edf5804c42a1011728eeafe6ef8b7331ca48e2414e8dfef530f45a89747cd57993b0b8bac1eb841e4b010000000000000000000000000000004861616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A state written by an earlier build must restore and finish the same
    /// digest; uploads in progress survive an upgrade. If the format has to
    /// change, the new one gets a new tag byte and these still restore.
    #[test]
    fn states_saved_by_earlier_builds_restore() {
        for (algorithm, saved) in [
            (Algorithm::Sha256, SAVED_SHA256_200A),
            (Algorithm::Sha512, SAVED_SHA512_200A),
        ] {
            let saved = unhex(saved);
            let mut h = Hasher::restore(&saved).expect("a saved state restores");
            assert_eq!(h.algorithm(), algorithm);
            assert_eq!(h.save(), saved, "{algorithm:?}: the saved format changed");
            h.update(b"b");
            let mut whole = vec![b'a'; 200];
            whole.push(b'b');
            assert_eq!(h.finish(), Digest::of(algorithm, &whole));
        }
    }

    #[test]
    fn truncated_or_padded_states_are_refused() {
        let saved = unhex(SAVED_SHA256_200A);
        assert!(Hasher::restore(&saved[..saved.len() - 1]).is_none());
        let mut longer = saved.clone();
        longer.push(0);
        assert!(Hasher::restore(&longer).is_none());
        // A buffered length beyond one block is not a state sha2 wrote.
        let mut bad_len = saved;
        bad_len[41] = 64;
        assert!(Hasher::restore(&bad_len).is_none());
    }

    proptest! {
        #[test]
        fn display_roundtrips(bytes in proptest::collection::vec(any::<u8>(), 0..64), sha512 in any::<bool>()) {
            let algorithm = if sha512 { Algorithm::Sha512 } else { Algorithm::Sha256 };
            let d = Digest::of(algorithm, &bytes);
            prop_assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
        }

        #[test]
        fn parser_never_panics_and_only_accepts_canonical(s in "\\PC{0,140}") {
            if let Ok(d) = s.parse::<Digest>() {
                prop_assert_eq!(d.as_str(), s.as_str());
                prop_assert!(d.encoded().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            }
        }

        #[test]
        fn resumed_hash_equals_whole(data in proptest::collection::vec(any::<u8>(), 0..2000), cut in 0usize..2000) {
            let cut = cut.min(data.len());
            let mut h = Hasher::new(Algorithm::Sha256);
            h.update(&data[..cut]);
            let mut r = Hasher::restore(&h.save()).unwrap();
            r.update(&data[cut..]);
            prop_assert_eq!(r.finish(), Digest::sha256_of(&data));
        }

        /// An upload in many PATCHes: the hasher is saved and restored at
        /// every cut (as the index stores it between requests), cuts falling
        /// anywhere, inside or on block boundaries, empty pieces included.
        #[test]
        fn resumed_across_random_cuts_equals_one_shot(
            data in proptest::collection::vec(any::<u8>(), 0..1200),
            cuts in proptest::collection::vec(0usize..1200, 0..12),
            sha512 in any::<bool>(),
        ) {
            let algorithm = if sha512 { Algorithm::Sha512 } else { Algorithm::Sha256 };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            cuts.push(data.len());
            let mut saved = Hasher::new(algorithm).save();
            let mut from = 0;
            for cut in cuts {
                let mut h = Hasher::restore(&saved).expect("a saved state restores");
                h.update(&data[from..cut]);
                saved = h.save();
                from = cut;
            }
            let resumed = Hasher::restore(&saved).expect("a saved state restores").finish();
            prop_assert_eq!(resumed, Digest::of(algorithm, &data));
        }
    }
}
