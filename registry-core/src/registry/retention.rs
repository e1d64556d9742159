//! Retention runs: which tags the rules condemn, repository by repository,
//! and deleting them (with what that leaves dangling, as a preview of
//! deleting them computes it), or, in a dry run, only saying so with the
//! bytes the deletions would free. Also the coarse record of pulls the
//! "pulled within" rules read.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Registry;
use super::policies::{Policies, TagRules};
use crate::db::{Reads, Tx, prefix};
use crate::error::Result;
use crate::index::Activity;
use crate::model::manifests::manifest_row;
use crate::model::{PULLS, TAGS, TagRow, cascade, log};
use crate::names::RepoName;
use crate::policy::RetentionRule;
use crate::policy::retention::TagFacts;

/// The settings holding the last retention run's report, and the last dry
/// run's with the rules in force (JSON).
const LAST: &str = "retention_last";
const LAST_DRY: &str = "retention_last_dry_run";
/// How often, at most, a pull is written to the index per manifest.
pub const PULL_RESOLUTION_MS: u64 = 60_000;

/// A tag a run deletes (or would).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doomed {
    pub tag: String,
    pub digest: String,
    /// The rule that applies and keeps it not.
    pub rule: String,
}

/// What a run did (or would do) in one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoOutcome {
    pub repository: String,
    pub tags: Vec<Doomed>,
    /// Bytes the deletions free (exclusive bytes: what nothing else keeps).
    pub bytes: u64,
}

/// What a retention run did, or (a dry run) would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    /// `api`, `schedule`, `gc` (the first phase of a collection) or `cli`.
    pub trigger: String,
    /// Who asked for it.
    pub actor: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub repositories: Vec<RepoOutcome>,
    pub tags_deleted: u64,
    pub bytes: u64,
}

/// A tag with the facts retention decides on.
struct Candidate {
    row: TagRow,
    tag: String,
    pulled_ms: Option<u64>,
}

/// The tags of `repo` with their push and pull times.
fn candidates(r: &impl Reads, repo: &str) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for e in r.scan_prefix(TAGS, &prefix(&[repo])) {
        let ((_, tag), row) = e?;
        let pulled_ms = r.get(PULLS, (repo, row.digest.as_str()))?;
        out.push(Candidate {
            row,
            tag,
            pulled_ms,
        });
    }
    Ok(out)
}

/// The tags the rules condemn in `repo`, safe to delete: not immutable, and
/// not the only tag of an image an index in the repository needs.
fn condemned(
    p: &Policies,
    immutable: &Policies,
    r: &impl Reads,
    repo: &str,
) -> Result<Vec<(Doomed, u64)>> {
    let tags = candidates(r, repo)?;
    let facts: Vec<TagFacts> = tags
        .iter()
        .map(|t| TagFacts {
            tag: t.tag.clone(),
            pushed_ms: t.row.updated_ms,
            pulled_ms: t.pulled_ms,
        })
        .collect();
    let verdicts: HashMap<String, String> = p
        .retention
        .condemned(repo, &facts, r.now_ms())
        .into_iter()
        .collect();
    let mut out = Vec::new();
    for t in tags {
        let Some(rule) = verdicts.get(&t.tag) else {
            continue;
        };
        if immutable.immutable.rule_for(repo, &t.tag).is_some() {
            continue;
        }
        let needed =
            manifest_row(r, repo, &t.row.digest)?.is_some_and(|m| m.parents > 0 && m.tags == 1);
        if needed {
            continue;
        }
        let doomed = Doomed {
            tag: t.tag,
            digest: t.row.digest,
            rule: rule.clone(),
        };
        out.push((doomed, t.row.updated_ms));
    }
    Ok(out)
}

/// Deletes the condemned tags of one repository that no push moved since
/// they were judged, each with what it leaves dangling; returns those
/// deleted and the bytes freed.
fn delete_condemned(
    tx: &mut Tx<'_>,
    repo: &str,
    doomed: &[(Doomed, u64)],
    activity: Option<(&RepoName, u64)>,
) -> Result<(Vec<Doomed>, u64)> {
    let mut deleted = Vec::new();
    for (d, updated_ms) in doomed {
        let same = tx
            .get(TAGS, (repo, d.tag.as_str()))?
            .is_some_and(|t| t.digest == d.digest && t.updated_ms == *updated_ms);
        if !same {
            continue; // a push moved it meanwhile
        }
        cascade::delete_with_cascade(tx, repo, Some(&d.tag), &d.digest)?;
        if let Some((name, retain)) = activity {
            let entry = Registry::activity(
                &format!("retention:{}", d.rule),
                "tag_delete",
                name,
                Some(d.tag.clone()),
                d.digest.parse().ok().as_ref(),
                serde_json::json!({ "rule": d.rule }),
            );
            log::record_activity(tx, entry, retain)?;
        }
        deleted.push(d.clone());
    }
    Ok((deleted, cascade::freed_bytes(tx)?))
}

impl Registry {
    /// Evaluates the retention rules (`rules`, or those in force) over
    /// every repository they cover, and deletes what they condemn; with
    /// `dry_run`, deletes nothing and says what a run would delete and free.
    /// (Immutable tags are read from the index in each transaction.)
    pub async fn run_retention(
        &self,
        dry_run: bool,
        rules: Option<Vec<RetentionRule>>,
        trigger: &str,
        actor: &str,
    ) -> Result<RetentionReport> {
        let in_force = rules.is_none();
        let policies = match rules {
            Some(retention) => Arc::new(Policies::new(TagRules {
                immutable: Vec::new(),
                retention,
            })?),
            None => self.policies().await?,
        };
        let mut report = RetentionReport {
            dry_run,
            trigger: trigger.to_owned(),
            actor: actor.to_owned(),
            started_ms: self.clock.now_ms(),
            ..RetentionReport::default()
        };
        let mut after: Option<String> = None;
        loop {
            let (page, more) = self
                .repository_summaries(after.as_deref(), 500, None)
                .await?;
            after = page.last().map(|r| r.name.clone());
            for repo in page.iter().filter(|r| policies.retention.covers(&r.name)) {
                let outcome = self.retain_repo(&policies, &repo.name, dry_run).await?;
                if !outcome.tags.is_empty() {
                    report.tags_deleted += outcome.tags.len() as u64;
                    report.bytes += outcome.bytes;
                    report.repositories.push(outcome);
                }
            }
            if !more {
                break;
            }
        }
        report.finished_ms = self.clock.now_ms();
        if in_force || !dry_run {
            self.finish_retention(&report).await?;
        }
        Ok(report)
    }

    async fn retain_repo(
        &self,
        policies: &Arc<Policies>,
        repo: &str,
        dry_run: bool,
    ) -> Result<RepoOutcome> {
        let (p, r, cell) = (policies.clone(), repo.to_owned(), self.policies.clone());
        let name: RepoName = repo.parse()?;
        let retain = self.options.activity_retention;
        let job = move |tx: &mut Tx<'_>| {
            let doomed = condemned(&p, &*cell.read(tx)?, tx, &r)?;
            let activity = (!dry_run).then_some((&name, retain));
            delete_condemned(tx, &r, &doomed, activity)
        };
        let (tags, bytes) = match dry_run {
            true => self.index.db().what_if(job).await?,
            false => self.index.db().write(job).await?,
        };
        Ok(RepoOutcome {
            repository: repo.to_owned(),
            tags,
            bytes,
        })
    }

    /// Keeps the report as the last evaluation (of its kind), and logs a
    /// run that deleted.
    async fn finish_retention(&self, report: &RetentionReport) -> Result<()> {
        let json = serde_json::to_string(report).expect("report serializes");
        let entry = Activity {
            id: 0,
            time_ms: 0,
            actor: report.actor.clone(),
            action: "retention_run".into(),
            repository: None,
            reference: None,
            digest: None,
            detail: serde_json::json!({
                "trigger": report.trigger,
                "tags_deleted": report.tags_deleted,
                "bytes": report.bytes,
                "repositories": report.repositories.len(),
            }),
        };
        let (retain, dry_run) = (self.options.activity_retention, report.dry_run);
        self.index
            .db()
            .write(move |tx| {
                if dry_run {
                    return log::set_setting(tx, LAST_DRY, Some(&json));
                }
                log::set_setting(tx, LAST, Some(&json))?;
                log::record_activity(tx, entry.clone(), retain).map(|_| ())
            })
            .await
    }

    /// The last retention run's report (or the last dry run's).
    pub async fn last_retention(&self, dry_run: bool) -> Result<Option<RetentionReport>> {
        let key = if dry_run { LAST_DRY } else { LAST };
        Ok(self
            .index
            .setting(key)
            .await?
            .and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Notes a pull of a manifest (kept in memory until the next
    /// [`Registry::flush_pulls`]).
    pub fn note_pull(&self, repo: &RepoName, digest: &crate::Digest) {
        let now = self.clock.now_ms();
        self.pulls
            .lock()
            .expect("pulls")
            .insert((repo.to_string(), digest.to_string()), now);
    }

    /// Writes the pulls noted since the last flush, in one transaction,
    /// where they move a manifest's last pull forward by the resolution.
    pub async fn flush_pulls(&self) -> Result<()> {
        let pulls: Vec<((String, String), u64)> =
            std::mem::take(&mut *self.pulls.lock().expect("pulls"))
                .into_iter()
                .collect();
        if pulls.is_empty() {
            return Ok(());
        }
        self.index
            .db()
            .write(move |tx| {
                for ((repo, digest), at) in &pulls {
                    if manifest_row(tx, repo, digest)?.is_none() {
                        continue;
                    }
                    let key = (repo.as_str(), digest.as_str());
                    let stored = tx.get(PULLS, key)?.unwrap_or(0);
                    if *at >= stored + PULL_RESOLUTION_MS {
                        tx.put(PULLS, key, at)?;
                    }
                }
                Ok(())
            })
            .await
    }
}
