//! What administrators and the web UI see and do: repository views,
//! previews, repository removal, the activity log, run history, settings,
//! totals and readiness.

use super::{Registry, space};
use crate::error::Result;
use crate::index::{Activity, ActivityQuery, Collected, RepoSummary, RepositoryView, Totals};
use crate::model::{cascade, log};
use crate::names::{Reference, RepoName};
use crate::space::Filesystem;

/// Whether the node can serve writes, part by part (`Err` says why not).
#[derive(Debug, Clone)]
pub struct Readiness {
    pub index: std::result::Result<(), String>,
    pub storage: std::result::Result<(), String>,
    /// Why pushes are refused for lack of free space, if they are (pulls
    /// are still served).
    pub space: std::result::Result<(), String>,
    /// The filesystems the store writes to, as measured for `space`.
    pub filesystems: Vec<Filesystem>,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.index.is_ok() && self.storage.is_ok() && self.space.is_ok()
    }
}

impl Registry {
    /// A repository's manifests and tags, with what deleting each would
    /// free, from one snapshot.
    /// A repository's manifests and tags, with the immutable-tag rules
    /// that protect them.
    pub async fn repository_view(&self, repo: &RepoName) -> Result<RepositoryView> {
        let mut view = self.index.repository_view(repo).await?;
        let policies = self.policies().await?;
        for t in &mut view.tags {
            t.immutable = policies
                .immutable
                .rule_for(&view.name, &t.tag)
                .map(str::to_owned);
        }
        for m in &mut view.manifests {
            m.immutable = view
                .tags
                .iter()
                .find(|t| t.digest == m.digest && t.immutable.is_some())
                .and_then(|t| t.immutable.clone());
        }
        Ok(view)
    }

    /// Repositories after `after` whose name contains `contains`, with their
    /// counts; and whether more follow.
    pub async fn repository_summaries(
        &self,
        after: Option<&str>,
        limit: usize,
        contains: Option<&str>,
    ) -> Result<(Vec<RepoSummary>, bool)> {
        self.index
            .repository_summaries(after, limit, contains)
            .await
    }

    /// Activity entries matching `query`, newest first.
    pub async fn activity_log(&self, query: &ActivityQuery) -> Result<Vec<Activity>> {
        self.index
            .activity(query, self.options.activity_retention)
            .await
    }

    /// Stored blobs in digest order after `after`, at most `limit`.
    pub async fn blobs_page(
        &self,
        after: Option<&crate::Digest>,
        limit: usize,
    ) -> Result<Vec<(crate::Digest, crate::index::BlobInfo)>> {
        self.index.blobs_page(after, limit).await
    }

    /// The running totals (no scan).
    pub async fn totals(&self) -> Result<Totals> {
        self.index.totals().await
    }

    /// What deleting this tag or manifest would free right now. Changes
    /// nothing.
    pub async fn preview_delete(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Collected> {
        self.index.preview_delete(repo, reference).await
    }

    /// Removes a repository's tags, manifests and blob links (or, with
    /// `dry_run`, says what that would do), on behalf of `actor`.
    pub async fn delete_repository(
        &self,
        repo: &RepoName,
        dry_run: bool,
        actor: &str,
    ) -> Result<Collected> {
        let policies = self.policies.clone();
        let r = repo.to_string();
        if dry_run {
            return self
                .index
                .db()
                .what_if(move |tx| {
                    policies.read(tx)?.check_repository(tx, &r)?;
                    let removed = cascade::delete_repository(tx, &r)?;
                    cascade::collected(tx, removed)
                })
                .await;
        }
        let (repo2, actor) = (repo.clone(), actor.to_owned());
        let retain = self.options.activity_retention;
        self.index
            .db()
            .write(move |tx| {
                policies.read(tx)?.check_repository(tx, &r)?;
                let removed = cascade::delete_repository(tx, &r)?;
                let c = cascade::collected(tx, removed)?;
                let detail = serde_json::json!({
                    "manifests": c.manifests.len(),
                    "freed_blobs": c.freed.len(),
                });
                let entry =
                    Registry::activity(&actor, "repository_delete", &repo2, None, None, detail);
                log::record_activity(tx, entry, retain)?;
                Ok(c)
            })
            .await
    }

    /// Reserves the id of a new collector run, forgetting the reports of
    /// all runs but the newest `keep`.
    pub async fn begin_gc_run(&self, keep: u64) -> Result<u64> {
        self.index
            .db()
            .write(move |tx| {
                let id = log::next_run_id(tx, keep)?;
                // A placeholder until the report is saved (the history
                // skips what it cannot read).
                log::save_gc_run(tx, id, b"{}")?;
                Ok(id)
            })
            .await
    }

    /// Saves a finished run's report, and its activity entry, in one
    /// transaction.
    pub async fn finish_gc_run(&self, id: u64, report: Vec<u8>, entry: Activity) -> Result<()> {
        let retain = self.options.activity_retention;
        self.index
            .db()
            .write(move |tx| {
                log::save_gc_run(tx, id, &report)?;
                log::record_activity(tx, entry.clone(), retain).map(|_| ())
            })
            .await
    }

    /// The newest `limit` run reports (JSON), newest first.
    pub async fn gc_runs(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        self.index.gc_runs(limit).await
    }

    /// Takes (or renews) the cluster-wide lease `name` for this node; `false`
    /// while another node holds it.
    pub async fn lease(&self, name: &str, ttl: std::time::Duration) -> Result<bool> {
        self.node.lease(name, ttl).await
    }

    pub async fn end_lease(&self, name: &str) -> Result<()> {
        self.node.end_lease(name).await
    }

    /// Saves a running collection's report, so every node can show it.
    pub async fn save_gc_progress(&self, id: u64, report: Vec<u8>) -> Result<()> {
        self.index
            .db()
            .write(move |tx| log::save_gc_progress(tx, id, &report))
            .await
    }

    /// A secret every node shares (token and session signing keys in a
    /// cluster): made at random the first time it is asked for, then kept
    /// in the index.
    pub async fn shared_secret(&self, name: &str) -> Result<Vec<u8>> {
        let key = format!("secret/{name}");
        let fresh: String = (0..64).map(|_| format!("{:02x}", rand_byte())).collect();
        let hex = self
            .index
            .db()
            .write(move |tx| match log::setting(tx, &key)? {
                Some(v) => Ok(v),
                None => {
                    log::set_setting(tx, &key, Some(&fresh))?;
                    Ok(fresh.clone())
                }
            })
            .await?;
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| crate::Error::Storage(format!("shared secret {name}: {e}")))
    }

    /// A setting changed at run time.
    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        self.index.setting(key).await
    }

    pub async fn set_setting(&self, key: &str, value: Option<&str>) -> Result<()> {
        self.index.set_setting(key, value).await
    }

    /// Whether the index and the blob store take writes, and the
    /// filesystems they write to have more free space than the mark.
    pub async fn readiness(&self) -> Readiness {
        let index = match self.index.db().health() {
            Ok(()) => self
                .index
                .totals()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(why) => Err(why),
        };
        let filesystems = self.filesystems().await;
        let space = match space::space_refusal(&filesystems, 0) {
            Some(why) => Err(format!("{why}; pushes are refused, pulls are served")),
            None => Ok(()),
        };
        Readiness {
            index,
            storage: self.blobs.ready().await,
            space,
            filesystems,
        }
    }
}

/// A random byte (secrets are made from uuid v4s, the randomness the core
/// already depends on).
fn rand_byte() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}
