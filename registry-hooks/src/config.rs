//! `[[webhooks]]`: one entry per endpoint, as written in the configuration
//! file ([`EndpointConfig`]), and checked and compiled once at start-up
//! ([`Endpoint`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use registry_core::index::Activity;
use registry_core::policy::RepoGlob;
use serde::{Deserialize, Serialize};

use crate::error::HookError;

/// The events an endpoint can ask for, by the activity-log action that
/// records each. Blob deletes (`blob_delete`) are not delivered: they only
/// hide a blob in one repository and announce nothing a client pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    Push,
    TagDelete,
    ManifestDelete,
    RepositoryDelete,
    GcRun,
    RetentionRun,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Push,
        EventKind::TagDelete,
        EventKind::ManifestDelete,
        EventKind::RepositoryDelete,
        EventKind::GcRun,
        EventKind::RetentionRun,
    ];

    /// The activity-log action, which is also its name in `events`.
    pub fn action(self) -> &'static str {
        match self {
            EventKind::Push => "push",
            EventKind::TagDelete => "tag_delete",
            EventKind::ManifestDelete => "manifest_delete",
            EventKind::RepositoryDelete => "repository_delete",
            EventKind::GcRun => "gc_run",
            EventKind::RetentionRun => "retention_run",
        }
    }

    pub fn of_action(action: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.action() == action)
    }

    /// The CloudEvents `type`.
    pub fn cloud_type(self) -> &'static str {
        match self {
            EventKind::Push => "dev.berth.manifest.pushed",
            EventKind::TagDelete => "dev.berth.tag.deleted",
            EventKind::ManifestDelete => "dev.berth.manifest.deleted",
            EventKind::RepositoryDelete => "dev.berth.repository.deleted",
            EventKind::GcRun => "dev.berth.gc.finished",
            EventKind::RetentionRun => "dev.berth.retention.finished",
        }
    }

    /// Whether the event concerns one repository (the others concern the
    /// whole registry, and no repository filter applies to them).
    pub fn has_repository(self) -> bool {
        !matches!(self, EventKind::GcRun | EventKind::RetentionRun)
    }
}

/// One `[[webhooks]]` entry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Names the endpoint in metrics, logs and the admin API, and keys its
    /// cursor in the index: renaming it starts a new endpoint.
    pub name: String,
    /// `http://` or `https://`; each event is POSTed here.
    pub url: String,
    /// Which events (activity actions) to send; default: all of them.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// Repository glob the events must concern (`*` stays within one path
    /// component, `**` spans several); registry-wide events (GC and
    /// retention runs) are not filtered by it.
    #[serde(default = "every_repository")]
    pub repositories: String,
    /// The HMAC-SHA256 key for the `Berth-Signature` header (or read it
    /// from `secret_file`); with neither, events go unsigned.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Longest one delivery attempt may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// An event not delivered after this long is dropped (and counted).
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// Pause after the first failed attempt; it doubles per failure up to
    /// `backoff_max` (each with random jitter).
    #[serde(default = "default_backoff_min", with = "humantime_serde")]
    pub backoff_min: Duration,
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
}

/// Keeps the secret out of every log line and error.
impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("events", &self.events)
            .field("repositories", &self.repositories)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("timeout", &self.timeout)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

fn all_events() -> Vec<String> {
    EventKind::ALL
        .iter()
        .map(|k| k.action().to_owned())
        .collect()
}

fn every_repository() -> String {
    "**".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_backoff_min() -> Duration {
    Duration::from_secs(1)
}

fn default_backoff_max() -> Duration {
    Duration::from_secs(300)
}

/// A URL without credentials or query (which may carry a token), for logs
/// and the admin API.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let hidden = !u.username().is_empty() || u.password().is_some();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let query = u.query().is_some();
            u.set_query(None);
            let mut out = u.to_string();
            if hidden {
                out = out.replacen("://", "://<credentials>@", 1);
            }
            if query {
                out.push_str("?<query>");
            }
            out
        }
        Err(_) => "<invalid URL>".into(),
    }
}

/// An endpoint, checked and ready to deliver to.
#[derive(Clone)]
pub struct Endpoint {
    pub name: String,
    pub url: reqwest::Url,
    pub events: BTreeSet<EventKind>,
    pub repositories: RepoGlob,
    pub(crate) secret: Option<Vec<u8>>,
    pub timeout: Duration,
    pub max_age: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Endpoint {
    /// Checks an entry and reads its secret file.
    pub fn compile(c: &EndpointConfig) -> Result<Endpoint, HookError> {
        let bad = |m: String| HookError::config(&c.name, m);
        check_name(&c.name)?;
        let url = reqwest::Url::parse(&c.url)
            .map_err(|e| bad(format!("url {}: {e}", redact_url(&c.url))))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(bad(format!(
                "url {}: expected http:// or https:// with a host",
                redact_url(&c.url)
            )));
        }
        let mut events = BTreeSet::new();
        for e in &c.events {
            let known = all_events().join(", ");
            let kind = EventKind::of_action(e)
                .ok_or_else(|| bad(format!("unknown event {e:?} (known: {known})")))?;
            events.insert(kind);
        }
        if events.is_empty() {
            return Err(bad("events is empty: name at least one".into()));
        }
        let repositories = RepoGlob::new(&c.repositories).map_err(|e| bad(e.to_string()))?;
        let secret = read_secret(c)?;
        check_durations(c)?;
        Ok(Endpoint {
            name: c.name.clone(),
            url,
            events,
            repositories,
            secret,
            timeout: c.timeout,
            max_age: c.max_age,
            backoff_min: c.backoff_min,
            backoff_max: c.backoff_max,
        })
    }

    /// Whether an activity entry is an event for this endpoint.
    pub fn wants(&self, a: &Activity) -> bool {
        let Some(kind) = EventKind::of_action(&a.action) else {
            return false;
        };
        self.events.contains(&kind)
            && (!kind.has_repository()
                || a.repository
                    .as_deref()
                    .is_some_and(|r| self.repositories.matches(r)))
    }

    pub fn signed(&self) -> bool {
        self.secret.is_some()
    }

    /// The URL without credentials or query.
    pub fn shown_url(&self) -> String {
        redact_url(self.url.as_str())
    }
}

/// Compiles every entry; names must be unique.
pub fn compile_all(list: &[EndpointConfig]) -> Result<Vec<Endpoint>, HookError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for c in list {
        if !seen.insert(c.name.as_str()) {
            return Err(HookError::config(&c.name, "two endpoints have this name"));
        }
        out.push(Endpoint::compile(c)?);
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<(), HookError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    match ok {
        true => Ok(()),
        false => Err(HookError::config(
            name,
            "name: 1 to 64 characters of letters, digits, '-', '_' and '.'",
        )),
    }
}

fn read_secret(c: &EndpointConfig) -> Result<Option<Vec<u8>>, HookError> {
    let bad = |m: String| HookError::config(&c.name, m);
    let secret = match (&c.secret, &c.secret_file) {
        (Some(_), Some(_)) => return Err(bad("give secret or secret_file, not both".into())),
        (Some(s), None) => s.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| bad(format!("secret_file {}: {e}", path.display())))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if secret.is_empty() {
        return Err(bad("the secret is empty".into()));
    }
    Ok(Some(secret.into_bytes()))
}

fn check_durations(c: &EndpointConfig) -> Result<(), HookError> {
    let bad = |m: &str| Err(HookError::config(&c.name, m));
    if c.timeout.is_zero() {
        return bad("timeout must be more than 0s");
    }
    if c.max_age < Duration::from_secs(1) {
        return bad("max_age must be at least 1s");
    }
    if c.backoff_min.is_zero() || c.backoff_min > c.backoff_max {
        return bad("backoff_min must be more than 0s and at most backoff_max");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(toml_like: impl FnOnce(&mut EndpointConfig)) -> Result<Endpoint, HookError> {
        let mut c: EndpointConfig = serde_json::from_value(
            serde_json::json!({"name": "ci", "url": "https://ci.example/hook"}),
        )
        .unwrap();
        toml_like(&mut c);
        Endpoint::compile(&c)
    }

    #[test]
    fn defaults_take_every_event_of_every_repository() {
        let e = entry(|_| {}).unwrap();
        assert_eq!(e.events.len(), EventKind::ALL.len());
        assert_eq!(e.repositories.as_str(), "**");
        assert_eq!(e.timeout, Duration::from_secs(10));
        assert!(!e.signed());
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        let err = |f: fn(&mut EndpointConfig)| entry(f).err().unwrap().to_string();
        assert!(err(|c| c.url = "ftp://x/".into()).contains("http://"));
        assert!(err(|c| c.events = vec!["blob_delete".into()]).contains("unknown event"));
        assert!(err(|c| c.events.clear()).contains("events is empty"));
        assert!(err(|c| c.name = "a b".into()).contains("name"));
        assert!(err(|c| c.repositories = "[".into()).contains("glob"));
        assert!(err(|c| c.timeout = Duration::ZERO).contains("timeout"));
        assert!(err(|c| c.backoff_min = Duration::from_secs(600)).contains("backoff_min"));
        let both = err(|c| {
            c.secret = Some("s".into());
            c.secret_file = Some("/nonexistent".into());
        });
        assert!(both.contains("not both"));
        assert!(err(|c| c.secret_file = Some("/nonexistent/x".into())).contains("secret_file"));
    }

    #[test]
    fn names_are_unique() {
        let c: EndpointConfig =
            serde_json::from_value(serde_json::json!({"name": "a", "url": "http://h/"})).unwrap();
        assert!(compile_all(&[c.clone(), c]).is_err());
    }

    #[test]
    fn secrets_and_credentials_stay_out_of_sight() {
        let c: EndpointConfig = serde_json::from_value(serde_json::json!({
            "name": "a", "url": "https://u:p@h.example/x?token=t", "secret": "hunter2"
        }))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("token=t") && !shown.contains(":p@"));
        assert_eq!(
            redact_url(&c.url),
            "https://<credentials>@h.example/x?<query>"
        );
    }

    #[test]
    fn filters_apply_to_repository_events_only() {
        let e = entry(|c| c.repositories = "team/*".into()).unwrap();
        let a = |action: &str, repo: Option<&str>| Activity {
            id: 1,
            time_ms: 1,
            actor: "x".into(),
            action: action.into(),
            repository: repo.map(str::to_owned),
            reference: None,
            digest: None,
            detail: serde_json::Value::Null,
        };
        assert!(e.wants(&a("push", Some("team/app"))));
        assert!(!e.wants(&a("push", Some("team/app/sub"))));
        assert!(!e.wants(&a("blob_delete", Some("team/app"))));
        assert!(e.wants(&a("gc_run", None)));
    }
}
