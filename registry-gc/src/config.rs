//! Collector settings and the policies that pick manifests to collect.

use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::error::GcError;
use crate::schedule::Schedule;

/// "Delete untagged manifests older than X in repositories matching G."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UntaggedRule {
    /// Repository glob: `*` stays within one path component, `**` spans
    /// any number (`team/**`, `**` for all).
    pub repositories: String,
    /// How long a manifest must have been untagged (and listed by no index).
    #[serde(with = "humantime_serde", default)]
    pub older_than: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// A blob is only collected if no client uploaded, mounted or confirmed
    /// (HEAD/GET) it for this long.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// How long a push waits for a sweep's fence to lift before it gets a
    /// retryable 503 (0: refuse at once).
    #[serde(with = "humantime_serde")]
    pub fence_wait: Duration,
    /// Upload sessions idle for this long are purged with their data.
    #[serde(with = "humantime_serde")]
    pub upload_max_age: Duration,
    /// Most blobs one fence covers: bounds the fence's duration.
    pub batch_size: usize,
    /// Cron expression (5 fields, or @hourly, @daily, @midnight, @weekly,
    /// @monthly, @yearly; UTC) for scheduled runs; none: only on demand.
    pub schedule: Option<String>,
    /// Untagged-manifest policies (none by default: untagged manifests are
    /// kept unless a rule says otherwise).
    pub untagged: Vec<UntaggedRule>,
    /// Collect referrers (signatures, SBOMs...) whose subject is gone, once
    /// they have been orphaned for the grace period.
    pub orphaned_referrers: bool,
    /// Run the tag retention rules as the first phase of every run.
    pub retention_first: bool,
}

impl Default for GcConfig {
    fn default() -> GcConfig {
        GcConfig {
            grace: Duration::from_secs(3600),
            fence_wait: Duration::from_millis(500),
            upload_max_age: Duration::from_secs(24 * 3600),
            batch_size: 256,
            schedule: None,
            untagged: Vec::new(),
            orphaned_referrers: true,
            retention_first: false,
        }
    }
}

impl GcConfig {
    /// Checks what serde cannot: globs and the schedule parse.
    pub fn validate(&self) -> Result<(), GcError> {
        Policy::new(&self.untagged, self.orphaned_referrers)?;
        if let Some(s) = &self.schedule {
            Schedule::parse(s)?;
        }
        if self.batch_size == 0 {
            return Err(GcError::Invalid("batch_size must be at least 1".into()));
        }
        Ok(())
    }
}

/// Compiled manifest policies.
pub struct Policy {
    untagged: Vec<(GlobMatcher, Duration)>,
    pub orphaned_referrers: bool,
}

impl Policy {
    pub fn new(rules: &[UntaggedRule], orphaned_referrers: bool) -> Result<Policy, GcError> {
        let untagged = rules
            .iter()
            .map(|r| {
                let glob: Glob = GlobBuilder::new(&r.repositories)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| {
                        GcError::Invalid(format!("repository glob {:?}: {e}", r.repositories))
                    })?;
                Ok((glob.compile_matcher(), r.older_than))
            })
            .collect::<Result<_, GcError>>()?;
        Ok(Policy {
            untagged,
            orphaned_referrers,
        })
    }

    /// The shortest "untagged for" age a rule gives `repo`, if any rule
    /// covers it.
    pub fn untagged_age(&self, repo: &str) -> Option<Duration> {
        self.untagged
            .iter()
            .filter(|(g, _)| g.is_match(repo))
            .map(|(_, age)| *age)
            .min()
    }

    pub fn collects_manifests(&self) -> bool {
        !self.untagged.is_empty() || self.orphaned_referrers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_per_component() {
        let rules = vec![
            UntaggedRule {
                repositories: "team/*".into(),
                older_than: Duration::from_secs(60),
            },
            UntaggedRule {
                repositories: "ci/**".into(),
                older_than: Duration::from_secs(5),
            },
            UntaggedRule {
                repositories: "ci/fast".into(),
                older_than: Duration::ZERO,
            },
        ];
        let p = Policy::new(&rules, false).unwrap();
        assert_eq!(p.untagged_age("team/app"), Some(Duration::from_secs(60)));
        assert_eq!(p.untagged_age("team/app/sub"), None);
        assert_eq!(p.untagged_age("ci/a/b"), Some(Duration::from_secs(5)));
        assert_eq!(p.untagged_age("ci/fast"), Some(Duration::ZERO));
        assert_eq!(p.untagged_age("other"), None);
        assert!(
            Policy::new(
                &[UntaggedRule {
                    repositories: "[".into(),
                    older_than: Duration::ZERO
                }],
                true
            )
            .is_err()
        );
    }
}
