//! Immutable tags and tag retention as clients and administrators meet
//! them: through the registry API, the admin API, the configuration file,
//! the `registry retention` command and the collector's first phase.

mod harness;

use std::time::Duration;

use harness::{OCI_MANIFEST, Server, assert_error};
use serde_json::{Value, json};

fn config_file(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("registry.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A refusal is DENIED, 403, and names the rule.
async fn assert_denied(res: reqwest::Response, rule: &str) {
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(rule),
        "the message names the rule: {message}"
    );
}

#[tokio::test]
async fn immutable_tags_are_refused_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        r#"
[[immutable]]
name = "releases"
repositories = "prod/**"
tags = ["v*", "/^stable-[0-9]+$/"]
"#,
    );
    let mut s = Server::start_with(&["--config", &config]);
    let c = s.client();
    let v1 = c.push_image("prod/app", "v1", 1).await;
    let other = c.push_image("prod/app", "dev", 1).await;

    // The same manifest again is no move; another manifest is refused.
    let same = c
        .put_manifest("prod/app", "v1", OCI_MANIFEST, &v1.manifest)
        .await;
    assert_eq!(same.status(), 201);
    let moved = c
        .put_manifest("prod/app", "v1", OCI_MANIFEST, &other.manifest)
        .await;
    assert_denied(moved, "releases").await;
    assert_denied(
        c.delete("/v2/prod/app/manifests/v1").send().await.unwrap(),
        "releases",
    )
    .await;
    let by_digest = format!("/v2/prod/app/manifests/{}", v1.digest);
    assert_denied(c.delete(&by_digest).send().await.unwrap(), "releases").await;
    for path in [
        "/admin/repositories/prod/app",
        "/admin/repositories/prod/app?dry_run=true",
    ] {
        assert_denied(c.delete(path).send().await.unwrap(), "releases").await;
    }
    // Tags the rule does not match come and go as usual.
    let res = c.delete("/v2/prod/app/manifests/dev").send().await.unwrap();
    assert_eq!(res.status(), 202);
    c.assert_pulls_intact("prod/app", "v1").await;

    // The repository API says which tags are locked and by what.
    let view = c.json("/admin/repositories/prod/app").await;
    assert_eq!(view["tags"][0]["tag"], "v1", "{view:#}");
    assert_eq!(view["tags"][0]["immutable"], "releases");
    assert_eq!(view["immutable_tags"], 1);

    // A rule set at run time outlives a restart and wins over the file.
    let rules = json!({"rules": [{"name": "all-prod", "repositories": "prod/**", "tags": ["*"]}]});
    let res = c.put("/admin/immutable").json(&rules).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    s.restart();
    let c = s.client();
    assert_eq!(
        c.json("/admin/immutable").await["rules"][0]["name"],
        "all-prod"
    );
    let moved = c
        .put_manifest("prod/app", "v1", OCI_MANIFEST, &other.manifest)
        .await;
    assert_denied(moved, "all-prod").await;

    // Bad rules are the caller's error, and change nothing.
    for bad in [
        json!({"rules": [{"repositories": "prod/[", "tags": ["v*"]}]}),
        json!({"rules": [{"repositories": "prod/**", "tags": ["/(unclosed/"]}]}),
        json!({"rules": "not a list"}),
        json!({"rules": [
            {"name": "twice", "repositories": "a/**", "tags": ["v*"]},
            {"name": "twice", "repositories": "b/**", "tags": ["v*"]},
        ]}),
    ] {
        let res = c.put("/admin/immutable").json(&bad).send().await.unwrap();
        assert_error(res, 400, "INVALID_REQUEST").await;
    }
    // An administrator changes the rule first; then the tag moves.
    let res = c
        .put("/admin/immutable")
        .json(&json!({"rules": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let moved = c
        .put_manifest("prod/app", "v1", OCI_MANIFEST, &other.manifest)
        .await;
    assert_eq!(moved.status(), 201);
}

/// Pushes `tags` to `repo` in order, a few milliseconds apart so that
/// "most recently pushed" is unambiguous.
async fn push_tags(c: &harness::Client, repo: &str, tags: &[&str]) {
    for t in tags {
        c.push_image(repo, t, 1).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn doomed(report: &Value) -> Vec<String> {
    let mut out: Vec<String> = report["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            let repo = r["repository"].as_str().unwrap().to_owned();
            r["tags"].as_array().unwrap().iter().map(move |t| {
                format!(
                    "{repo}:{} ({})",
                    t["tag"].as_str().unwrap(),
                    t["rule"].as_str().unwrap()
                )
            })
        })
        .collect();
    out.sort();
    out
}

async fn tags_of(c: &harness::Client, repo: &str) -> Vec<String> {
    let v = c.json(&format!("/v2/{repo}/tags/list")).await;
    let mut tags: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap_or_default();
    tags.sort();
    tags
}

async fn run_retention(c: &harness::Client, body: Value) -> Value {
    let res = c
        .post("/admin/retention/run")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

fn cli(s: &Server, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_registry"))
        .arg("retention")
        .args(["--url", &s.url])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test]
async fn retention_dry_run_lists_what_the_run_deletes() {
    let s = Server::start_with(&["--gc-grace", "0s"]);
    let c = s.client();
    push_tags(&c, "ci/app", &["b1", "keep-me", "b2", "b3", "b4", "b5"]).await;
    push_tags(&c, "other/app", &["old"]).await;
    let rules = json!({
        "rules": [{"name": "ci", "repositories": "ci/**", "keep_last": 2, "keep": ["keep-*"]}],
    });
    let res = c.put("/admin/retention").json(&rules).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    // A preview of rules not saved yet changes nothing and is not kept.
    let preview =
        json!({"dry_run": true, "rules": [{"name": "one", "repositories": "**", "keep_last": 1}]});
    let p = run_retention(&c, preview).await;
    assert_eq!(doomed(&p).len(), 5, "{p:#}");
    let refused = json!({"dry_run": false, "rules": [{"name": "x", "repositories": "**"}]});
    let res = c
        .post("/admin/retention/run")
        .json(&refused)
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "INVALID_REQUEST").await;

    let dry = run_retention(&c, json!({"dry_run": true})).await;
    let expected = ["ci/app:b1 (ci)", "ci/app:b2 (ci)", "ci/app:b3 (ci)"];
    assert_eq!(doomed(&dry), expected, "{dry:#}");
    assert!(dry["bytes"].as_u64().unwrap() > 0);
    let printed = cli(&s, &["--dry-run"]);
    for t in ["b1", "b2", "b3", "rule ci", "would delete 3 tag(s)"] {
        assert!(printed.contains(t), "{t:?} in {printed}");
    }
    assert_eq!(
        tags_of(&c, "ci/app").await.len(),
        6,
        "dry runs delete nothing"
    );
    let shown = c.json("/admin/retention").await;
    assert_eq!(doomed(&shown["last_dry_run"]), expected, "{shown:#}");

    let real = run_retention(&c, json!({"dry_run": false})).await;
    assert_eq!(doomed(&real), expected);
    assert_eq!(real["bytes"], dry["bytes"]);
    assert_eq!(tags_of(&c, "ci/app").await, ["b4", "b5", "keep-me"]);
    assert_eq!(tags_of(&c, "other/app").await, ["old"]);
    let log = c.json("/admin/activity?action=tag_delete").await;
    let actors: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["retention:ci"; 3], "{log:#}");
    assert_eq!(c.json("/admin/retention").await["last"]["tags_deleted"], 3);

    // The bytes announced are what the next collection frees.
    let gc = c.run_gc(json!({})).await;
    assert_eq!(gc["bytes_freed"], dry["bytes"], "{gc:#}");

    // As the first phase of a collection.
    push_tags(&c, "ci/app", &["b6", "b7"]).await;
    let gc = c.run_gc(json!({"retention": true})).await;
    assert_eq!(gc["retention"]["tags_deleted"], 2, "{gc:#}");
    assert!(gc["blobs_deleted"].as_u64().unwrap() >= 4, "{gc:#}");
    assert_eq!(tags_of(&c, "ci/app").await, ["b6", "b7", "keep-me"]);
    let printed = cli(&s, &[]);
    assert!(printed.contains("deleted 0 tag(s)"), "{printed}");
}

#[tokio::test]
async fn retention_runs_on_its_schedule_from_the_config_file() {
    // The server's clock stands eight seconds before a minute (time for
    // the pushes below even on a loaded machine), so the every-minute
    // schedule fires soon.
    let skew = harness::skew_to_before_a_minute(Duration::from_secs(8));
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        r#"
[retention]
schedule = "* * * * *"
[[retention.rules]]
name = "newest"
repositories = "**"
keep_last = 1
"#,
    );
    let s = Server::start_with(&["--config", &config, "--clock-skew", &skew]);
    let c = s.client();
    push_tags(&c, "sched", &["a", "b"]).await;
    let shown = c.json("/admin/retention").await;
    assert_eq!(shown["schedule"], "* * * * *", "{shown:#}");
    assert!(shown["next_run"].is_string());
    // A bad schedule refuses the whole change: the rules stay as they were.
    let bad = json!({"rules": [], "schedule": "every so often"});
    let res = c.put("/admin/retention").json(&bad).send().await.unwrap();
    assert_error(res, 400, "INVALID_REQUEST").await;
    let kept = c.json("/admin/retention").await;
    assert_eq!(kept["rules"][0]["name"], "newest", "{kept:#}");
    assert_eq!(kept["schedule"], "* * * * *", "{kept:#}");
    for _ in 0..200 {
        let last = &c.json("/admin/retention").await["last"];
        if last.is_object() {
            assert_eq!(last["trigger"], "schedule", "{last:#}");
            assert_eq!(tags_of(&c, "sched").await, ["b"]);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the scheduled retention run did not happen");
}
