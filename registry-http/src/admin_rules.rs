//! The administration API for the rules on tags: retention (the rules, their
//! schedule, runs and dry runs) and immutable tags; and a repository's tags
//! as those rules see them.

use http::{Method, Request, StatusCode};
use registry_core::policy::{ImmutableRule, RetentionRule};
use registry_core::{Error, RepoName};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::{AdminApi, AdminResult, invalid, json_response, read_json};
use crate::body::ReqBody;
use crate::error::ApiError;

/// Rule errors are the caller's: 400 with the reason.
fn rule_error(e: Error) -> ApiError {
    match e {
        Error::InvalidRule(msg) => invalid(msg),
        e => e.into(),
    }
}

impl AdminApi {
    pub(crate) async fn retention(&self, req: Request<ReqBody>, actor: &str) -> AdminResult {
        if req.method() == Method::PUT {
            self.set_retention(req, actor).await?;
        }
        let policies = self.registry.policies().await?;
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "rules": policies.rules.retention,
                "schedule": self.retainer.schedule(),
                "next_run": self.retainer.next_scheduled().map(|t| t.to_rfc3339()),
                "retention_first": self.collector.config().retention_first,
                "last": self.registry.last_retention(false).await?,
                "last_dry_run": self.registry.last_retention(true).await?,
            }),
        ))
    }

    async fn set_retention(&self, req: Request<ReqBody>, actor: &str) -> Result<(), ApiError> {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct Body {
            rules: Option<Vec<RetentionRule>>,
            schedule: Option<Option<String>>,
        }
        let b: Body = read_json(req).await?;
        // A bad schedule refuses the whole request before anything changes.
        let schedule = b
            .schedule
            .map(|s| s.filter(|s| !s.trim().is_empty() && s.trim() != "off"));
        if let Some(Some(expr)) = &schedule {
            registry_gc::schedule::Schedule::parse(expr)?;
        }
        if let Some(rules) = b.rules {
            check_names(rules.iter().map(|r| r.name.as_str()))?;
            self.registry
                .change_tag_rules(move |t| t.retention = rules.clone())
                .await
                .map_err(rule_error)?;
            tracing::info!(actor, "retention rules changed");
        }
        if let Some(expr) = schedule {
            self.retainer.set_schedule(expr.as_deref()).await?;
        }
        Ok(())
    }

    pub(crate) async fn retention_run(&self, req: Request<ReqBody>, actor: &str) -> AdminResult {
        #[derive(Deserialize, Default)]
        #[serde(default, deny_unknown_fields)]
        struct Body {
            dry_run: bool,
            /// Rules to try instead of those in force (dry runs only).
            rules: Option<Vec<RetentionRule>>,
        }
        let b: Body = read_json(req).await?;
        let report = self
            .retainer
            .run(b.dry_run, b.rules, "api", actor)
            .await
            .map_err(|e| match e {
                registry_gc::GcError::Core(e) => rule_error(e),
                e => e.into(),
            })?;
        Ok(json_response(StatusCode::OK, &json!(report)))
    }

    pub(crate) async fn immutable(&self, req: Request<ReqBody>, actor: &str) -> AdminResult {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct Body {
            rules: Vec<ImmutableRule>,
        }
        let rules = if req.method() == Method::PUT {
            let b: Body = read_json(req).await?;
            let names = b.rules.iter().filter_map(|r| r.name.as_deref());
            if let Some(e) = duplicate_name(names) {
                return Err(invalid(e));
            }
            let rules = self
                .registry
                .change_tag_rules(move |t| t.immutable = b.rules.clone())
                .await
                .map_err(rule_error)?;
            tracing::info!(actor, "immutable-tag rules changed");
            rules.immutable
        } else {
            self.registry.policies().await?.rules.immutable.clone()
        };
        Ok(json_response(StatusCode::OK, &json!({ "rules": rules })))
    }

    /// A repository's tags and manifests, with what protects them.
    pub(crate) async fn repository(&self, repo: &RepoName) -> AdminResult {
        let view = self.registry.repository_view(repo).await?;
        let mut v: Value = json!(view);
        v["immutable_tags"] = json!(view.tags.iter().filter(|t| t.immutable.is_some()).count());
        Ok(json_response(StatusCode::OK, &v))
    }
}

/// Rule names say which rule deleted a tag: they must tell rules apart.
fn check_names<'a>(names: impl Iterator<Item = &'a str> + Clone) -> Result<(), ApiError> {
    if names.clone().any(|n| n.trim().is_empty()) {
        return Err(invalid("every retention rule needs a name"));
    }
    duplicate_name(names).map_or(Ok(()), |e| Err(invalid(e)))
}

/// Says which name two rules share, if any.
pub(crate) fn duplicate_name<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .filter(|n| !seen.insert(*n))
        .map(|n| format!("two rules are named {n:?}: names must tell rules apart"))
        .next()
}
