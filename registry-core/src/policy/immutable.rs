//! Immutable tags: a matching tag that exists cannot be moved to another
//! manifest, nor deleted (nor its manifest, nor its repository), by anyone;
//! an administrator changes the rule first.

use serde::{Deserialize, Serialize};

use super::pattern::{RepoGlob, TagPattern, any};
use crate::error::Result;

/// One rule, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImmutableRule {
    /// How refusals name the rule (default: the repository glob).
    #[serde(default)]
    pub name: Option<String>,
    pub repositories: String,
    /// Tag patterns (globs, or `/regex/`).
    pub tags: Vec<String>,
}

struct Compiled {
    name: String,
    repositories: RepoGlob,
    tags: Vec<TagPattern>,
}

/// The compiled rules.
#[derive(Default)]
pub struct Immutable {
    rules: Vec<Compiled>,
}

impl Immutable {
    pub fn new(rules: &[ImmutableRule]) -> Result<Immutable> {
        let rules = rules
            .iter()
            .map(|r| {
                Ok(Compiled {
                    name: r
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{} {}", r.repositories, r.tags.join(","))),
                    repositories: RepoGlob::new(&r.repositories)?,
                    tags: TagPattern::all(&r.tags)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Immutable { rules })
    }

    /// The name of the rule that makes `tag` of `repo` immutable, if any.
    pub fn rule_for(&self, repo: &str, tag: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| r.repositories.matches(repo) && any(&r.tags, tag))
            .map(|r| r.name.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}
