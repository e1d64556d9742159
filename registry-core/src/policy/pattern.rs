//! The patterns rules are written with: repository globs (the syntax of the
//! access rules and the GC's untagged policy: `*` stays within one path
//! component, `**` spans several) and tag patterns (a glob, or a regular
//! expression between slashes: `/^v[0-9]+$/`).

use globset::{GlobBuilder, GlobMatcher};

use crate::error::{Error, Result};

/// A repository glob.
#[derive(Debug, Clone)]
pub struct RepoGlob {
    text: String,
    matcher: GlobMatcher,
}

impl RepoGlob {
    pub fn new(text: &str) -> Result<RepoGlob> {
        let glob = GlobBuilder::new(text)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::InvalidRule(format!("repository glob {text:?}: {e}")))?;
        Ok(RepoGlob {
            text: text.to_owned(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn matches(&self, repo: &str) -> bool {
        self.matcher.is_match(repo)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A tag pattern: a glob (`v*`, `release-*`, `latest`) or `/regex/`.
#[derive(Debug, Clone)]
pub enum TagPattern {
    Glob(GlobMatcher),
    Regex(regex::Regex),
}

impl TagPattern {
    pub fn new(text: &str) -> Result<TagPattern> {
        let invalid =
            |e: &dyn std::fmt::Display| Error::InvalidRule(format!("tag pattern {text:?}: {e}"));
        match text.strip_prefix('/').and_then(|t| t.strip_suffix('/')) {
            Some(re) => regex::Regex::new(re)
                .map(TagPattern::Regex)
                .map_err(|e| invalid(&e)),
            None => GlobBuilder::new(text)
                .build()
                .map(|g| TagPattern::Glob(g.compile_matcher()))
                .map_err(|e| invalid(&e)),
        }
    }

    pub fn matches(&self, tag: &str) -> bool {
        match self {
            TagPattern::Glob(g) => g.is_match(tag),
            TagPattern::Regex(r) => r.is_match(tag),
        }
    }

    /// Compiles a list of patterns.
    pub fn all(texts: &[String]) -> Result<Vec<TagPattern>> {
        texts.iter().map(|t| TagPattern::new(t)).collect()
    }
}

/// Whether any pattern of `list` matches `tag`.
pub fn any(list: &[TagPattern], tag: &str) -> bool {
    list.iter().any(|p| p.matches(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_regexes() {
        let g = RepoGlob::new("team/*").unwrap();
        assert!(g.matches("team/app"));
        assert!(!g.matches("team/app/sub"));
        assert!(RepoGlob::new("team/**").unwrap().matches("team/app/sub"));
        let v = TagPattern::new("v*").unwrap();
        assert!(v.matches("v1.2") && !v.matches("latest"));
        let r = TagPattern::new("/^release-[0-9]+$/").unwrap();
        assert!(r.matches("release-12") && !r.matches("release-x"));
        assert!(TagPattern::new("/(/").is_err());
    }
}
