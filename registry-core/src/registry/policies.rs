//! The rules on tags in force (immutable tags, retention): the configured
//! ones or, once changed through the admin API, those kept in the index,
//! where every node of a cluster finds them. The checks that guard a change
//! read the rules inside the transaction that makes it, so a rule an admin
//! has just set on another node already holds.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::Registry;
use crate::db::{Reads, Tx};
use crate::error::{Error, Result};
use crate::model::{TAGS, log, manifests};
use crate::policy::{Immutable, ImmutableRule, Retention, RetentionRule};

/// The setting that holds rules changed at run time (JSON).
const SETTING: &str = "tag_policies";

/// The rules, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagRules {
    #[serde(default)]
    pub immutable: Vec<ImmutableRule>,
    #[serde(default)]
    pub retention: Vec<RetentionRule>,
}

/// The rules, compiled.
pub struct Policies {
    pub rules: TagRules,
    pub immutable: Immutable,
    pub retention: Retention,
    /// The stored JSON these were compiled from (None: the configured).
    stored: Option<String>,
}

impl Policies {
    pub fn new(rules: TagRules) -> Result<Policies> {
        Ok(Policies {
            immutable: Immutable::new(&rules.immutable)?,
            retention: Retention::new(&rules.retention)?,
            rules,
            stored: None,
        })
    }

    /// Refuses to move or delete the immutable tag `tag` of `repo` (one
    /// that exists and, when `to` is given, points elsewhere).
    pub fn check_tag(&self, r: &impl Reads, repo: &str, tag: &str, to: Option<&str>) -> Result<()> {
        let Some(rule) = self.immutable.rule_for(repo, tag) else {
            return Ok(());
        };
        match r.get(TAGS, (repo, tag))? {
            Some(t) if to != Some(t.digest.as_str()) => Err(Error::Denied(format!(
                "tag {repo}:{tag} is immutable (rule {rule}); change the rule to move or delete it"
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses to delete a manifest an immutable tag points at.
    pub fn check_manifest(&self, r: &impl Reads, repo: &str, digest: &str) -> Result<()> {
        if self.immutable.is_empty() {
            return Ok(());
        }
        for tag in manifests::tags_of(r, repo, digest)? {
            self.check_tag(r, repo, &tag, None)?;
        }
        Ok(())
    }

    /// Refuses to delete a repository holding an immutable tag.
    pub fn check_repository(&self, r: &impl Reads, repo: &str) -> Result<()> {
        if self.immutable.is_empty() {
            return Ok(());
        }
        for e in r.scan_prefix(TAGS, &crate::db::prefix(&[repo])).keys() {
            let (_, tag) = e?;
            self.check_tag(r, repo, &tag, None)?;
        }
        Ok(())
    }
}

/// The rules in force on this node: the configured ones, replaced by those
/// stored in the index whenever a read finds them changed.
#[derive(Clone)]
pub struct PolicyCell {
    configured: TagRules,
    current: Arc<RwLock<Arc<Policies>>>,
}

impl PolicyCell {
    pub fn new(configured: TagRules) -> Result<PolicyCell> {
        let current = Arc::new(RwLock::new(Arc::new(Policies::new(configured.clone())?)));
        Ok(PolicyCell {
            configured,
            current,
        })
    }

    /// The rules as last seen.
    pub fn cached(&self) -> Arc<Policies> {
        self.current.read().expect("policies").clone()
    }

    /// The rules in force as `r` sees the index (one key read; compiled
    /// again only when they changed).
    pub fn read(&self, r: &impl Reads) -> Result<Arc<Policies>> {
        let stored = log::setting(r, SETTING)?;
        let cached = self.cached();
        if stored == cached.stored {
            return Ok(cached);
        }
        let rules = match &stored {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| Error::Storage(format!("stored tag rules: {e}")))?,
            None => self.configured.clone(),
        };
        let fresh = Arc::new(Policies {
            stored,
            ..Policies::new(rules)?
        });
        *self.current.write().expect("policies") = fresh.clone();
        Ok(fresh)
    }
}

impl Registry {
    /// The rules in force, as the index has them now.
    pub async fn policies(&self) -> Result<Arc<Policies>> {
        let cell = self.policies.clone();
        self.index.db().read(move |r| cell.read(r)).await
    }

    /// Replaces the rules with what `change` makes of them (checked
    /// first), keeping them in the index so that they outlive restarts and
    /// reach every node; returns the rules now in force.
    pub async fn change_tag_rules(
        &self,
        change: impl Fn(&mut TagRules) + Send + 'static,
    ) -> Result<TagRules> {
        let cell = self.policies.clone();
        self.index
            .db()
            .write(move |tx| {
                let mut rules = cell.read(tx)?.rules.clone();
                change(&mut rules);
                Policies::new(rules.clone())?;
                let json = serde_json::to_string(&rules).expect("rules serialize");
                log::set_setting(tx, SETTING, Some(&json))?;
                Ok(rules)
            })
            .await
    }

    /// Forgets rules set at run time: the configured ones hold again.
    pub async fn reset_tag_rules(&self) -> Result<()> {
        self.index
            .db()
            .write(|tx| log::set_setting(tx, SETTING, None))
            .await
    }
}

/// Refuses a manifest put that would move an immutable tag.
pub(crate) fn check_put(
    cell: &PolicyCell,
    tx: &Tx<'_>,
    repo: &str,
    tag: Option<&str>,
    digest: &str,
) -> Result<()> {
    match tag {
        Some(tag) => cell.read(tx)?.check_tag(tx, repo, tag, Some(digest)),
        None => Ok(()),
    }
}
