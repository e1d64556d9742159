//! How typed keys and values become bytes.
//!
//! Keys must sort as bytes the way their parts sort as values, because
//! back ends order rows by the bytes (redb's `&[u8]` keys, PostgreSQL's
//! `bytea`). A key is a tuple of parts: a string part is its bytes followed
//! by a 0 byte unless it is the last part (names, tags, digests and ids never
//! contain a 0 byte: they are validated before they get here), and a number
//! part is 8 bytes big-endian. So `("a", "z") < ("a/b", "a")` as bytes too,
//! and every key of a repository shares the prefix `repo\0`.
//!
//! Values are postcard for row structs (compact, and the format the index
//! has always used), big-endian for numbers, raw for bytes and strings.
//! Written by hand rather than with a general order-preserving codec
//! crate: four shapes of key are all the schema needs.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

fn corrupt(what: &str) -> Error {
    Error::Storage(format!("corrupt index key or value: {what}"))
}

/// A key type: encoded from a borrowed form, decoded to an owned one.
pub trait Key: Sized {
    type Ref<'a>: Copy;
    fn encode(k: Self::Ref<'_>, out: &mut Vec<u8>);
    fn decode(b: &[u8]) -> Result<Self>;
}

pub fn key<K: Key>(k: K::Ref<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    K::encode(k, &mut out);
    out
}

/// The encoded prefix shared by every key whose leading string parts are
/// `parts`.
pub fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        put_str(p, &mut out, false);
    }
    out
}

/// The first byte string after every string starting with `prefix`, if
/// any (`None`: up to the end).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn put_str(s: &str, out: &mut Vec<u8>, last: bool) {
    debug_assert!(!s.as_bytes().contains(&0), "key part with a 0 byte: {s:?}");
    out.extend_from_slice(s.as_bytes());
    if !last {
        out.push(0);
    }
}

fn take_str(b: &mut &[u8], last: bool) -> Result<String> {
    let (part, rest) = if last {
        (*b, &b[b.len()..])
    } else {
        let at = b
            .iter()
            .position(|&x| x == 0)
            .ok_or_else(|| corrupt("unterminated key part"))?;
        (&b[..at], &b[at + 1..])
    };
    *b = rest;
    String::from_utf8(part.to_vec()).map_err(|_| corrupt("key part is not UTF-8"))
}

fn take_u64(b: &mut &[u8]) -> Result<u64> {
    let (n, rest) = b
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupt("short number in key"))?;
    *b = rest;
    Ok(u64::from_be_bytes(*n))
}

impl Key for String {
    type Ref<'a> = &'a str;
    fn encode(k: &str, out: &mut Vec<u8>) {
        put_str(k, out, true);
    }
    fn decode(mut b: &[u8]) -> Result<String> {
        take_str(&mut b, true)
    }
}

impl Key for u64 {
    type Ref<'a> = u64;
    fn encode(k: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&k.to_be_bytes());
    }
    fn decode(mut b: &[u8]) -> Result<u64> {
        take_u64(&mut b)
    }
}

impl Key for (String, String) {
    type Ref<'a> = (&'a str, &'a str);
    fn encode((a, b): (&str, &str), out: &mut Vec<u8>) {
        put_str(a, out, false);
        put_str(b, out, true);
    }
    fn decode(mut b: &[u8]) -> Result<(String, String)> {
        Ok((take_str(&mut b, false)?, take_str(&mut b, true)?))
    }
}

impl Key for (String, String, String) {
    type Ref<'a> = (&'a str, &'a str, &'a str);
    fn encode((a, b, c): (&str, &str, &str), out: &mut Vec<u8>) {
        put_str(a, out, false);
        put_str(b, out, false);
        put_str(c, out, true);
    }
    fn decode(mut b: &[u8]) -> Result<(String, String, String)> {
        Ok((
            take_str(&mut b, false)?,
            take_str(&mut b, false)?,
            take_str(&mut b, true)?,
        ))
    }
}

impl Key for (String, u64) {
    type Ref<'a> = (&'a str, u64);
    fn encode((a, n): (&str, u64), out: &mut Vec<u8>) {
        put_str(a, out, false);
        out.extend_from_slice(&n.to_be_bytes());
    }
    fn decode(mut b: &[u8]) -> Result<(String, u64)> {
        Ok((take_str(&mut b, false)?, take_u64(&mut b)?))
    }
}

/// A value type.
pub trait Value: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(b: &[u8]) -> Result<Self>;
}

/// Row structs, stored as postcard.
pub trait Row: Serialize + DeserializeOwned {}

impl<T: Row> Value for T {
    fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("index rows always serialize")
    }
    fn decode(b: &[u8]) -> Result<T> {
        postcard::from_bytes(b).map_err(|e| Error::Storage(format!("corrupt index row: {e}")))
    }
}

impl Value for u64 {
    fn encode(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn decode(b: &[u8]) -> Result<u64> {
        let n: [u8; 8] = b.try_into().map_err(|_| corrupt("number"))?;
        Ok(u64::from_be_bytes(n))
    }
}

impl Value for i64 {
    fn encode(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn decode(b: &[u8]) -> Result<i64> {
        let n: [u8; 8] = b.try_into().map_err(|_| corrupt("number"))?;
        Ok(i64::from_be_bytes(n))
    }
}

impl Value for String {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode(b: &[u8]) -> Result<String> {
        String::from_utf8(b.to_vec()).map_err(|_| corrupt("text is not UTF-8"))
    }
}

impl Value for Vec<u8> {
    fn encode(&self) -> Vec<u8> {
        self.clone()
    }
    fn decode(b: &[u8]) -> Result<Vec<u8>> {
        Ok(b.to_vec())
    }
}

impl Value for () {
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode(_: &[u8]) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn part() -> impl Strategy<Value = String> {
        "[a-z0-9/._:-]{0,8}"
    }

    proptest! {
        /// Byte order of encoded keys is the order of the tuples.
        #[test]
        fn pairs_sort_as_bytes(a in (part(), part()), b in (part(), part())) {
            let ka = key::<(String, String)>((&a.0, &a.1));
            let kb = key::<(String, String)>((&b.0, &b.1));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(<(String, String)>::decode(&ka).unwrap(), a);
        }

        #[test]
        fn triples_round_trip_and_share_prefixes(a in (part(), part(), part())) {
            let k = key::<(String, String, String)>((&a.0, &a.1, &a.2));
            prop_assert!(k.starts_with(&prefix(&[&a.0])));
            prop_assert!(k.starts_with(&prefix(&[&a.0, &a.1])));
            prop_assert_eq!(<(String, String, String)>::decode(&k).unwrap(), a);
        }

        #[test]
        fn numbers_sort_as_bytes(a: u64, b: u64) {
            prop_assert_eq!(key::<u64>(a).cmp(&key::<u64>(b)), a.cmp(&b));
        }
    }

    #[test]
    fn prefix_end_is_the_next_string() {
        assert_eq!(prefix_end(b"ab\0"), Some(b"ab\x01".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
