//! Repository names, tags and references, validated once at the edge.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::Error;

/// Longest repository name accepted. Clients limit `host[:port]/name` to 255
/// characters, so a longer name could never be pulled anyway.
pub const MAX_NAME_LEN: usize = 255;

/// A repository name per the distribution-spec grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
/// Any number of `/`-separated components; `blobs` and `manifests` are legal
/// components.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for RepoName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One path component: alphanumeric runs joined by `.`, `_`, `__` or `-+`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        // an alphanumeric run, at least one character
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // a separator
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

impl FromStr for RepoName {
    type Err = Error;

    fn from_str(s: &str) -> Result<RepoName, Error> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(Error::NameInvalid(format!(
                "repository name must be 1 to {MAX_NAME_LEN} characters"
            )));
        }
        if !s.split('/').all(valid_component) {
            return Err(Error::NameInvalid(format!(
                "{s:?} does not match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*"
            )));
        }
        Ok(RepoName(s.to_owned()))
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Tag {
    type Err = Error;

    fn from_str(s: &str) -> Result<Tag, Error> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_');
        let rest_ok = b[1.min(b.len())..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if first_ok && rest_ok && b.len() <= 128 {
            Ok(Tag(s.to_owned()))
        } else {
            Err(Error::ReferenceInvalid(format!(
                "{s:?} is neither a digest nor a tag matching [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}"
            )))
        }
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Reference, Error> {
        // A tag can never contain ':', a digest always does.
        if s.contains(':') {
            s.parse().map(Reference::Digest)
        } else {
            s.parse().map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "library/ubuntu",
            "a/b/c/d/e",
            "my-repo",
            "my--repo",
            "my_repo",
            "my__repo",
            "my.repo",
            "blobs",
            "x/manifests/y",
            "a0/1b",
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok} must be accepted");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "a___b", "a..b", "-a", "a-", "a_", ".a", "a b", "a/B",
            "a:b", "ü",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?} must be refused");
        }
        assert!("a".repeat(255).parse::<RepoName>().is_ok());
        assert!("a".repeat(256).parse::<RepoName>().is_err());
    }

    #[test]
    fn tags_and_references() {
        assert!("latest".parse::<Tag>().is_ok());
        assert!("_x".parse::<Tag>().is_ok());
        assert!("v1.0-rc_1".parse::<Tag>().is_ok());
        assert!(".x".parse::<Tag>().is_err());
        assert!("-x".parse::<Tag>().is_err());
        assert!("".parse::<Tag>().is_err());
        assert!("a".repeat(128).parse::<Tag>().is_ok());
        assert!("a".repeat(129).parse::<Tag>().is_err());
        assert!(matches!(
            "latest".parse::<Reference>(),
            Ok(Reference::Tag(_))
        ));
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!("sha256:zz".parse::<Reference>().is_err());
    }

    /// A straightforward regex-free restatement of the grammar, to check the
    /// hand-written scanner against.
    fn component_strategy() -> impl Strategy<Value = String> {
        let run = "[a-z0-9]{1,5}";
        let sep = prop_oneof![
            Just(".".to_owned()),
            Just("_".to_owned()),
            Just("__".to_owned()),
            "-{1,3}"
        ];
        (run, proptest::collection::vec((sep, run), 0..3)).prop_map(|(first, rest)| {
            let mut s = first;
            for (sep, run) in rest {
                s.push_str(&sep);
                s.push_str(&run);
            }
            s
        })
    }

    proptest! {
        #[test]
        fn generated_names_are_accepted(parts in proptest::collection::vec(component_strategy(), 1..6)) {
            let name = parts.join("/");
            prop_assume!(name.len() <= MAX_NAME_LEN);
            let parsed = name.parse::<RepoName>().unwrap();
            prop_assert_eq!(parsed.as_str(), name.as_str());
        }

        #[test]
        fn name_parser_never_panics(s in "\\PC{0,300}") {
            if let Ok(n) = s.parse::<RepoName>() {
                prop_assert!(n.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)));
                prop_assert!(!n.as_str().starts_with('/') && !n.as_str().ends_with('/'));
                prop_assert!(!n.as_str().contains("//"));
            }
        }

        #[test]
        fn tag_parser_matches_grammar(s in "[a-zA-Z0-9_.:-]{0,130}") {
            let expected = !s.is_empty() && s.len() <= 128
                && !s.starts_with(['.', '-']) && !s.contains(':');
            prop_assert_eq!(s.parse::<Tag>().is_ok(), expected);
        }
    }
}
