//! Tag retention: rules that say which tags a repository keeps; the others
//! a retention run deletes (with what that leaves dangling, like a preview
//! of deleting them says).
//!
//! A rule applies to the tags of the repositories its glob matches (and,
//! with `tags`, only to those tags); it keeps the `keep_last` most recently
//! pushed of them, those pushed within `keep_pushed_within`, those pulled
//! within `keep_pulled_within`, and those matching `keep`. A tag survives
//! if no rule applies to it, or if any rule that applies keeps it.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::pattern::{RepoGlob, TagPattern, any};
use crate::error::Result;

/// One rule, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Named in the activity log and in dry runs.
    pub name: String,
    pub repositories: String,
    /// The tags the rule applies to (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Tags always kept (globs, or `/regex/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep: Vec<String>,
    /// Keep the N most recently pushed tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
    /// Keep tags pushed within this long.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_pushed_within: Option<Duration>,
    /// Keep tags whose image was pulled within this long.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_pulled_within: Option<Duration>,
}

/// A tag as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFacts {
    pub tag: String,
    /// When the tag was last pushed (moved), unix ms.
    pub pushed_ms: u64,
    /// When its manifest was last pulled, if ever (coarse: see the docs).
    pub pulled_ms: Option<u64>,
}

struct Compiled {
    rule: RetentionRule,
    repositories: RepoGlob,
    tags: Vec<TagPattern>,
    keep: Vec<TagPattern>,
}

impl Compiled {
    fn applies(&self, tag: &str) -> bool {
        self.tags.is_empty() || any(&self.tags, tag)
    }

    /// The tags among `tags` this rule keeps.
    fn keeps<'t>(&self, tags: &'t [TagFacts], now_ms: u64) -> HashSet<&'t str> {
        let mut mine: Vec<&TagFacts> = tags.iter().filter(|t| self.applies(&t.tag)).collect();
        mine.sort_by(|a, b| b.pushed_ms.cmp(&a.pushed_ms).then(a.tag.cmp(&b.tag)));
        let within = |at: Option<u64>, d: Option<Duration>| match (at, d) {
            (Some(at), Some(d)) => now_ms.saturating_sub(at) <= d.as_millis() as u64,
            _ => false,
        };
        let last = self.rule.keep_last.unwrap_or(0);
        mine.iter()
            .enumerate()
            .filter(|(i, t)| {
                *i < last
                    || any(&self.keep, &t.tag)
                    || within(Some(t.pushed_ms), self.rule.keep_pushed_within)
                    || within(t.pulled_ms, self.rule.keep_pulled_within)
            })
            .map(|(_, t)| t.tag.as_str())
            .collect()
    }
}

/// The compiled rules.
#[derive(Default)]
pub struct Retention {
    rules: Vec<Compiled>,
}

impl Retention {
    pub fn new(rules: &[RetentionRule]) -> Result<Retention> {
        let rules = rules
            .iter()
            .map(|r| {
                Ok(Compiled {
                    repositories: RepoGlob::new(&r.repositories)?,
                    tags: TagPattern::all(&r.tags)?,
                    keep: TagPattern::all(&r.keep)?,
                    rule: r.clone(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Retention { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule covers `repo`.
    pub fn covers(&self, repo: &str) -> bool {
        self.rules.iter().any(|r| r.repositories.matches(repo))
    }

    /// The tags of `repo` the rules do not keep, each with the name of a
    /// rule that applies to it.
    pub fn condemned(&self, repo: &str, tags: &[TagFacts], now_ms: u64) -> Vec<(String, String)> {
        let rules: Vec<&Compiled> = self
            .rules
            .iter()
            .filter(|r| r.repositories.matches(repo))
            .collect();
        let kept: Vec<HashSet<&str>> = rules.iter().map(|r| r.keeps(tags, now_ms)).collect();
        let mut out = Vec::new();
        for t in tags {
            let applying: Vec<usize> = (0..rules.len())
                .filter(|&i| rules[i].applies(&t.tag))
                .collect();
            let Some(&first) = applying.first() else {
                continue;
            };
            if !applying.iter().any(|&i| kept[i].contains(t.tag.as_str())) {
                out.push((t.tag.clone(), rules[first].rule.name.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 3600 * 1000;

    fn tag(name: &str, pushed_days_ago: u64, pulled_days_ago: Option<u64>) -> TagFacts {
        let now = 100 * DAY;
        TagFacts {
            tag: name.into(),
            pushed_ms: now - pushed_days_ago * DAY,
            pulled_ms: pulled_days_ago.map(|d| now - d * DAY),
        }
    }

    fn rule(name: &str) -> RetentionRule {
        RetentionRule {
            name: name.into(),
            repositories: "ci/**".into(),
            tags: vec![],
            keep: vec![],
            keep_last: None,
            keep_pushed_within: None,
            keep_pulled_within: None,
        }
    }

    /// A table of tags with push and pull times against a set of rules.
    #[test]
    fn a_tag_survives_if_any_applying_rule_keeps_it() {
        let tags = vec![
            tag("v1", 90, None),
            tag("latest", 80, None),
            tag("c1", 50, Some(2)),
            tag("c2", 40, None),
            tag("c3", 30, None),
            tag("c4", 3, None),
            tag("c5", 1, None),
            tag("release-1", 60, None),
        ];
        let now = 100 * DAY;
        let keep_last = RetentionRule {
            keep_last: Some(2),
            keep: vec!["v*".into(), "latest".into()],
            ..rule("last-two")
        };
        let pulled = RetentionRule {
            keep_pulled_within: Some(Duration::from_secs(7 * 86400)),
            ..rule("pulled")
        };
        let pushed = RetentionRule {
            tags: vec!["/^c[0-9]+$/".into()],
            keep_pushed_within: Some(Duration::from_secs(35 * 86400)),
            ..rule("recent-ci")
        };
        let r = Retention::new(&[keep_last, pulled, pushed]).unwrap();
        let doomed: Vec<String> = r
            .condemned("ci/app", &tags, now)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        // v1, latest: kept by pattern; c4, c5: the two newest; c1: pulled
        // 2 days ago; c3: pushed within 35 days (by the rule applying to c*).
        assert_eq!(doomed, ["c2", "release-1"]);
        assert!(
            r.condemned("other/app", &tags, now).is_empty(),
            "no rule applies"
        );
        let named = r.condemned("ci/app", &tags, now);
        assert!(named.iter().all(|(_, rule)| rule == "last-two"));
    }
}
