//! What is sent: each activity entry as a CloudEvents 1.0 event in
//! structured JSON mode, and its HMAC-SHA256 signature.
//!
//! `id` is the activity entry's id (stable across redeliveries, so a
//! receiver can drop duplicates), `source` names the registry (`urn:uuid:`
//! and an id every node of a cluster shares), `type` is
//! `dev.berth.<object>.<what happened>`, `subject` the repository and tag
//! or digest concerned, and `data` the entry's facts (see the README).

use hmac::{Hmac, KeyInit, Mac};
use registry_core::index::Activity;
use serde_json::{Map, Value, json};
use sha2::Sha256;

use crate::config::EventKind;

/// The media type of a structured-mode CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "berth-signature";

/// The event an activity entry of kind `kind` stands for.
pub fn cloud_event(a: &Activity, kind: EventKind, source: &str) -> Value {
    let mut event = json!({
        "specversion": "1.0",
        "id": a.id.to_string(),
        "source": source,
        "type": kind.cloud_type(),
        "time": rfc3339(a.time_ms),
        "datacontenttype": "application/json",
        "data": data(a),
    });
    if let Some(subject) = subject(a, kind) {
        event["subject"] = json!(subject);
    }
    event
}

/// Unix ms as an RFC 3339 UTC time with milliseconds.
pub(crate) fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `repo:tag`, `repo@digest` or `repo`; none for registry-wide events.
fn subject(a: &Activity, kind: EventKind) -> Option<String> {
    let repo = a.repository.as_deref()?;
    Some(match (kind, &a.reference, &a.digest) {
        (EventKind::RepositoryDelete, _, _) => repo.to_owned(),
        (_, Some(tag), _) => format!("{repo}:{tag}"),
        (_, None, Some(digest)) => format!("{repo}@{digest}"),
        (_, None, None) => repo.to_owned(),
    })
}

/// `repository`, `tag`, `digest` and `actor` where the entry has them,
/// then the entry's own details (a push's `media_type` and `size`, a run's
/// figures, the retention rule that deleted a tag...).
fn data(a: &Activity) -> Value {
    let mut out = Map::new();
    let mut put = |k: &str, v: Option<&String>| {
        if let Some(v) = v {
            out.insert(k.to_owned(), json!(v));
        }
    };
    put("repository", a.repository.as_ref());
    put("tag", a.reference.as_ref());
    put("digest", a.digest.as_ref());
    put("actor", Some(&a.actor));
    match &a.detail {
        Value::Object(detail) => {
            for (k, v) in detail {
                out.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Value::Null => {}
        other => {
            out.insert("detail".into(), other.clone());
        }
    }
    Value::Object(out)
}

/// The `Berth-Signature` value for `body` sent at unix time `t`:
/// `t=<t>,sha256=<hex of HMAC-SHA256(secret, "<t>.<body>")>`. Signing the
/// time with the body lets a receiver refuse replays of old deliveries.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push() -> Activity {
        Activity {
            id: 42,
            time_ms: 1_700_000_000_123,
            actor: "alice".into(),
            action: "push".into(),
            repository: Some("team/app".into()),
            reference: Some("v1".into()),
            digest: Some("sha256:abc".into()),
            detail: json!({"media_type": "application/vnd.oci.image.manifest.v1+json", "size": 7}),
        }
    }

    #[test]
    fn a_push_is_a_cloud_event() {
        let e = cloud_event(&push(), EventKind::Push, "urn:uuid:x");
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["id"], "42");
        assert_eq!(e["type"], "dev.berth.manifest.pushed");
        assert_eq!(e["subject"], "team/app:v1");
        assert_eq!(e["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(e["data"]["repository"], "team/app");
        assert_eq!(e["data"]["tag"], "v1");
        assert_eq!(e["data"]["digest"], "sha256:abc");
        assert_eq!(e["data"]["size"], 7);
        assert_eq!(e["data"]["actor"], "alice");
    }

    #[test]
    fn registry_wide_events_have_no_subject() {
        let mut a = push();
        a.action = "gc_run".into();
        a.repository = None;
        a.reference = None;
        a.digest = None;
        a.detail = json!({"run": 3, "state": "succeeded"});
        let e = cloud_event(&a, EventKind::GcRun, "s");
        assert!(e.get("subject").is_none());
        assert_eq!(e["data"]["run"], 3);
    }

    #[test]
    fn signatures_cover_the_time_and_the_body() {
        // HMAC-SHA256 of "1.x" under key "k", computed independently
        // (Python's hmac module).
        let s = signature(b"k", 1, b"x");
        assert_eq!(
            s,
            "t=1,sha256=976cb87e4f568d1c0f03f32859e90af8597cf00b978ba37c229c97d3a15b8449"
        );
        assert_ne!(signature(b"k", 2, b"x"), s);
        assert_ne!(signature(b"k", 1, b"y"), s);
    }
}
