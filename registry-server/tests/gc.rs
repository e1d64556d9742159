//! Garbage collection as an operator and a client see it: through the admin
//! API, the CLI, and the registry API, on a real server.

mod harness;

use std::time::Duration;

use harness::{Blobs, OCI_INDEX, OCI_MANIFEST, Server, random_bytes, sha256};
use reqwest::Method;
use serde_json::{Value, json};

fn digests(report: &Value, kind: &str) -> Vec<String> {
    let mut v: Vec<String> = report["deleted"][kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// On both stores: what a run deletes is gone from the blob store (the
/// bucket is listed), and what it keeps still pulls.
async fn deleted_images_are_collected_shared_layers_stay(blobs: Blobs) {
    let s = Server::start_on(blobs, &["--gc-grace", "0s"]);
    let c = s.client();
    let shared = random_bytes(4096);
    let sd = c.push_blob("app", &shared).await;
    let desc = json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sd, "size": shared.len()});
    let own_a = random_bytes(2048);
    let ad = c.push_blob("app", &own_a).await;
    let a = c
        .push_image_with_layers("app", "a", &[desc.clone(), json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ad, "size": own_a.len()})], vec![sd.clone(), ad.clone()])
        .await;
    let b = c
        .push_image_with_layers("app", "b", &[desc], vec![sd.clone()])
        .await;
    let stored_before = s.stored_blobs().await;
    assert!(stored_before.contains(&ad) && stored_before.contains(&sd));

    // What deleting tag a would free: its own layer and config, not the shared one.
    let p: Value = c.json("/admin/gc/preview?repository=app&reference=a").await;
    let expected = sorted(vec![ad.clone(), a.config.clone()]);
    let mut previewed: Vec<String> = p["blob_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap().to_owned())
        .collect();
    previewed.sort();
    assert_eq!(previewed, expected, "{p:#}");
    assert_eq!(
        p["bytes"].as_u64().unwrap(),
        own_a.len() as u64
            + p["blob_list"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["digest"] == a.config.as_str())
                .unwrap()["size"]
                .as_u64()
                .unwrap()
    );
    assert_eq!(
        c.status(Method::GET, "/v2/app/manifests/a").await,
        200,
        "a preview changes nothing"
    );

    assert_eq!(
        c.status(Method::DELETE, &format!("/v2/app/manifests/{}", a.digest))
            .await,
        202
    );
    let r: Value = c.json("/admin/gc/reclaimable").await;
    assert_eq!(r["blobs"], 2);

    let dry = c.run_gc(json!({"dry_run": true})).await;
    assert_eq!(digests(&dry, "blobs"), expected);
    assert_eq!(
        s.stored_blobs().await,
        stored_before,
        "a dry run deletes nothing"
    );

    let run = c.run_gc(json!({})).await;
    assert_eq!(digests(&run, "blobs"), expected);
    assert_eq!(run["fences"], 1);
    let stored_after = s.stored_blobs().await;
    let expected_after: std::collections::BTreeSet<String> = stored_before
        .iter()
        .filter(|d| !expected.contains(d))
        .cloned()
        .collect();
    assert_eq!(
        stored_after, expected_after,
        "exactly the deleted blobs went"
    );
    for d in &expected {
        assert_eq!(
            c.status(Method::GET, &format!("/v2/app/blobs/{d}")).await,
            404
        );
    }
    c.assert_pulls_intact("app", "b").await;
    assert_eq!(b.layers, vec![sd]);

    let last: Value = c.json("/admin/gc/last").await;
    assert_eq!(last["id"], run["id"]);
    assert_eq!(last["blobs_deleted"], 2);
    assert!(last["bytes_freed"].as_u64().unwrap() > 2048);
    let runs: Value = c.json("/admin/gc/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2);
    let r: Value = c.json("/admin/gc/reclaimable").await;
    assert_eq!(r["blobs"], 0);
}

#[tokio::test]
async fn grace_protects_new_and_confirmed_blobs() {
    let s = Server::start_with(&["--gc-grace", "2s"]);
    let c = s.client();
    let d = c.push_blob("g", b"unreferenced for now").await;
    // Just uploaded (and the server just started): protected.
    let r = c.run_gc(json!({})).await;
    assert_eq!(r["blobs_deleted"], 0);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // A client confirms it (docker: HEAD, then skip the upload).
    assert_eq!(
        c.status(Method::HEAD, &format!("/v2/g/blobs/{d}")).await,
        200
    );
    let r = c.run_gc(json!({})).await;
    assert_eq!(
        r["blobs_deleted"], 0,
        "confirmed by HEAD within the grace period"
    );
    let exact: Value = c.json("/admin/gc/reclaimable?exact=1").await;
    assert_eq!(exact["blobs"], 1);
    assert_eq!(exact["collectable_now"]["blobs"], 0);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = c.run_gc(json!({})).await;
    assert_eq!(r["blobs_deleted"], 1);
    assert_eq!(
        c.status(Method::HEAD, &format!("/v2/g/blobs/{d}")).await,
        404
    );
    // The repository had nothing else: it is gone.
    let cat: Value = c.json("/v2/_catalog").await;
    assert_eq!(cat["repositories"], json!([]));
}

#[tokio::test]
async fn untagged_policy_spares_index_children_and_cascades_run_by_run() {
    let s = Server::start_with(&["--gc-grace", "0s"]);
    let c = s.client();
    let amd = c.push_image("multi", "tmp-amd64", 1).await;
    let arm = c.push_image("multi", "tmp-arm64", 1).await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.digest, "size": amd.manifest.len(), "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.digest, "size": arm.manifest.len(), "platform": {"architecture": "arm64", "os": "linux"}}
        ]
    }))
    .unwrap();
    assert_eq!(
        c.put_manifest("multi", "v1", OCI_INDEX, &index)
            .await
            .status(),
        201
    );
    // The per-platform tags go; the children are kept by the index.
    assert_eq!(
        c.status(Method::DELETE, "/v2/multi/manifests/tmp-amd64")
            .await,
        202
    );
    assert_eq!(
        c.status(Method::DELETE, "/v2/multi/manifests/tmp-arm64")
            .await,
        202
    );
    let stray = c.push_image("multi", "stray", 1).await;
    assert_eq!(
        c.status(Method::DELETE, "/v2/multi/manifests/stray").await,
        202
    );

    // Without a policy untagged manifests stay.
    let r = c.run_gc(json!({})).await;
    assert_eq!(r["manifests_deleted"], 0);
    assert_eq!(
        c.status(
            Method::GET,
            &format!("/v2/multi/manifests/{}", stray.digest)
        )
        .await,
        200
    );

    // With it: the stray manifest and then its blobs go, the children stay.
    let r = c.run_gc(json!({"delete_untagged": true})).await;
    assert_eq!(digests(&r, "manifests"), vec![stray.digest.clone()]);
    assert_eq!(digests(&r, "blobs"), sorted(stray.blobs()));
    c.assert_pulls_intact("multi", &amd.digest).await;
    c.assert_pulls_intact("multi", &arm.digest).await;

    // Untag the index: this run takes the index; its children became
    // untagged only now, so they are taken by the next run.
    assert_eq!(
        c.status(Method::DELETE, "/v2/multi/manifests/v1").await,
        202
    );
    let r = c.run_gc(json!({"delete_untagged": true})).await;
    assert_eq!(digests(&r, "manifests"), vec![sha256(&index)]);
    let r = c.run_gc(json!({"delete_untagged": true})).await;
    assert_eq!(
        digests(&r, "manifests"),
        sorted(vec![amd.digest.clone(), arm.digest.clone()])
    );
    assert_eq!(
        digests(&r, "blobs"),
        sorted([amd.blobs(), arm.blobs()].concat())
    );

    // Per-repository rules from the config file: not this repository.
    let rule = json!({"untagged": [{"repositories": "other/**", "older_than": "0s"}]});
    let kept = c.push_image("multi", "x", 1).await;
    assert_eq!(c.status(Method::DELETE, "/v2/multi/manifests/x").await, 202);
    let r = c.run_gc(rule).await;
    assert_eq!(r["manifests_deleted"], 0);
    assert_eq!(
        c.status(Method::GET, &format!("/v2/multi/manifests/{}", kept.digest))
            .await,
        200
    );
}

#[tokio::test]
async fn referrers_of_a_deleted_subject_are_collected() {
    let s = Server::start_with(&["--gc-grace", "0s"]);
    let c = s.client();
    let img = c.push_image("sig", "v1", 1).await;
    let sig_blob = c.push_blob("sig", b"signature bytes").await;
    let empty = c.push_blob("sig", b"{}").await;
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sig_blob, "size": 15}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": img.digest, "size": img.manifest.len()}
    }))
    .unwrap();
    assert_eq!(
        c.put_manifest("sig", &sha256(&sig), OCI_MANIFEST, &sig)
            .await
            .status(),
        201
    );
    // Attached to a stored subject: kept, even by the untagged policy.
    let r = c.run_gc(json!({"delete_untagged": true})).await;
    assert_eq!(r["manifests_deleted"], 0);
    // The subject goes: its signature is orphaned and collected.
    assert_eq!(
        c.status(Method::DELETE, &format!("/v2/sig/manifests/{}", img.digest))
            .await,
        202
    );
    let r = c.run_gc(json!({"orphaned_referrers": false})).await;
    assert_eq!(r["manifests_deleted"], 0, "the policy can be turned off");
    let r = c.run_gc(json!({})).await;
    assert_eq!(digests(&r, "manifests"), vec![sha256(&sig)]);
    assert!(digests(&r, "blobs").contains(&sig_blob));
    assert_eq!(
        c.status(Method::GET, &format!("/v2/sig/blobs/{sig_blob}"))
            .await,
        404
    );
}

#[tokio::test]
async fn stale_uploads_are_purged_with_their_data() {
    let s = Server::start_with(&["--gc-grace", "0s", "--upload-max-age", "1s"]);
    let c = s.client();
    let res = c.post("/v2/up/blobs/uploads/").send().await.unwrap();
    let loc = res.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        c.patch(&loc)
            .body(random_bytes(1000))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    // A session that never received data (held in memory only).
    let res = c.post("/v2/up/blobs/uploads/").send().await.unwrap();
    let empty = res.headers()["location"].to_str().unwrap().to_owned();
    let r = c.run_gc(json!({})).await;
    assert_eq!(r["uploads_deleted"], 0, "fresh sessions stay");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = c.run_gc(json!({"dry_run": true})).await;
    assert_eq!(r["uploads_deleted"], 2);
    assert_eq!(c.status(Method::GET, &loc).await, 204, "a dry run keeps it");
    assert_eq!(c.status(Method::GET, &empty).await, 204);
    let r = c.run_gc(json!({})).await;
    assert_eq!(r["uploads_deleted"], 2);
    assert_eq!(c.status(Method::GET, &loc).await, 404);
    assert_eq!(c.status(Method::GET, &empty).await, 404);
    assert_eq!(
        std::fs::read_dir(s.data_dir().join("uploads"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn runs_never_overlap() {
    let s = Server::start_with(&["--gc-grace", "0s"]);
    let c = s.client();
    for i in 0..200 {
        c.push_blob("many", format!("garbage {i}").as_bytes()).await;
    }
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let res = c.post("/admin/gc").send().await.unwrap();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            (status, body)
        }));
    }
    let mut started = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            202 => started += 1,
            409 => {
                assert_eq!(body["errors"][0]["code"], "GC_RUNNING");
                assert!(body["errors"][0]["detail"]["running"].is_u64());
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(started >= 1);
    // Wait for the last to finish, then check the history.
    loop {
        let runs: Value = c.json("/admin/gc/runs").await;
        if runs["running"].is_null() {
            let mut spans: Vec<(u64, u64)> = runs["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let start = r["started_ms"].as_u64().unwrap();
                    (start, start + r["duration_ms"].as_u64().unwrap())
                })
                .collect();
            assert_eq!(spans.len(), started);
            spans.sort();
            for w in spans.windows(2) {
                assert!(w[0].1 <= w[1].0, "runs overlapped: {spans:?}");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total: u64 = {
        let runs: Value = c.json("/admin/gc/runs").await;
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["blobs_deleted"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(total, 200, "every garbage blob deleted exactly once");
}

#[tokio::test]
async fn schedule_api_validates_and_persists() {
    let mut s = Server::start();
    let c = s.client();
    let v: Value = c.json("/admin/gc/schedule").await;
    assert_eq!(v["schedule"], Value::Null);
    assert_eq!(v["next_run"], Value::Null);
    let v: Value = c
        .put("/admin/gc/schedule")
        .json(&json!({"schedule": "@hourly"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["schedule"], "@hourly");
    let next = chrono::DateTime::parse_from_rfc3339(v["next_run"].as_str().unwrap()).unwrap();
    let now = chrono::Utc::now();
    assert!(next > now && next <= now + chrono::Duration::hours(1));
    assert_eq!(next.timestamp() % 3600, 0);
    let res = c
        .put("/admin/gc/schedule")
        .json(&json!({"schedule": "every tuesday"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = c
        .put("/admin/gc/schedule")
        .json(&json!({"schedule": "*/5 * * * *"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    s.restart();
    let c = s.client();
    let v: Value = c.json("/admin/gc/schedule").await;
    assert_eq!(v["schedule"], "*/5 * * * *", "kept across restarts");
    let v: Value = c
        .put("/admin/gc/schedule")
        .json(&json!({"schedule": null}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["schedule"], Value::Null);
}

#[tokio::test]
async fn scheduled_runs_happen() {
    // The server's clock is moved to two seconds before the next minute,
    // so the every-minute schedule fires without waiting for it.
    let skew = harness::skew_to_before_a_minute(Duration::from_secs(2));
    let s = Server::start_with(&[
        "--gc-grace",
        "0s",
        "--gc-schedule",
        "* * * * *",
        "--clock-skew",
        &skew,
    ]);
    let c = s.client();
    c.push_blob("sched", b"garbage").await;
    let v: Value = c.json("/admin/gc/schedule").await;
    assert!(v["next_run"].is_string(), "{v}");
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let runs: Value = c.json("/admin/gc/runs").await;
    let first = &runs["runs"][0];
    assert_eq!(first["trigger"], "schedule", "{runs:#}");
    assert_eq!(first["blobs_deleted"], 1);
}

#[tokio::test]
async fn repository_delete_removes_everything_in_one_go() {
    let s = Server::start_with(&["--gc-grace", "0s"]);
    let c = s.client();
    let keep = c.push_image("keep", "v1", 2).await;
    let gone = c.push_image("gone/app", "v1", 2).await;
    assert_eq!(
        c.put_manifest("gone/app", "v2", OCI_MANIFEST, &gone.manifest)
            .await
            .status(),
        201
    );
    // Share a layer with the repository that stays.
    let res = c
        .post(&format!(
            "/v2/gone/app/blobs/uploads/?mount={}&from=keep",
            keep.layers[0]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    let dry: Value = c
        .delete("/admin/repositories/gone/app?dry_run=true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dry["manifest_count"], 1);
    assert_eq!(
        c.status(Method::GET, "/v2/gone/app/manifests/v1").await,
        200,
        "dry run keeps it"
    );
    let res = c
        .delete("/admin/repositories/gone/app")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        v["blobs"].as_u64().unwrap(),
        gone.blobs().len() as u64,
        "{v:#}"
    );
    assert_eq!(c.status(Method::GET, "/v2/gone/app/tags/list").await, 404);
    let cat: Value = c.json("/v2/_catalog").await;
    assert_eq!(cat["repositories"], json!(["keep"]));
    assert_eq!(
        c.status(Method::DELETE, "/admin/repositories/gone/app")
            .await,
        404
    );
    let r = c.run_gc(json!({})).await;
    assert_eq!(digests(&r, "blobs"), sorted(gone.blobs()));
    c.assert_pulls_intact("keep", "v1").await;
}

#[tokio::test]
async fn cli_runs_online_and_offline() {
    let mut s = Server::start_with(&["--gc-grace", "0s"]);
    let c = s.client();
    let d1 = c.push_blob("cli", b"one").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_registry"))
        .args(["gc", "--dry-run", "--json", "--url", &s.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["dry_run"], true);
    assert_eq!(digests(&report, "blobs"), vec![d1.clone()]);
    assert_eq!(
        c.status(Method::HEAD, &format!("/v2/cli/blobs/{d1}")).await,
        200
    );

    // Offline, on the stopped store: the same collector.
    let d2 = c.push_blob("cli", b"two").await;
    s.kill();
    let data = s.data_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_registry"))
        .args([
            "gc",
            "--offline",
            "--data-dir",
            data.to_str().unwrap(),
            "--grace",
            "0s",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("blobs:     2"), "{text}");
    s.restart();
    let c = s.client();
    for d in [d1, d2] {
        assert_eq!(
            c.status(Method::HEAD, &format!("/v2/cli/blobs/{d}")).await,
            404
        );
    }
    // A server that is not there: a clear failure.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_registry"))
        .args(["gc", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn policies_from_the_command_line() {
    let s = Server::start_with(&[
        "--gc-grace",
        "0s",
        "--gc-untagged",
        "ci/**=0s",
        "--gc-orphaned-referrers",
        "false",
    ]);
    let c = s.client();
    let ci = c.push_image("ci/build", "tmp", 1).await;
    let other = c.push_image("prod", "tmp", 1).await;
    for repo in ["ci/build", "prod"] {
        assert_eq!(
            c.status(Method::DELETE, &format!("/v2/{repo}/manifests/tmp"))
                .await,
            202
        );
    }
    let r = c.run_gc(json!({})).await;
    assert_eq!(digests(&r, "manifests"), vec![ci.digest.clone()]);
    assert_eq!(r["settings"]["orphaned_referrers"], false);
    assert_eq!(
        c.status(Method::GET, &format!("/v2/prod/manifests/{}", other.digest))
            .await,
        200
    );
}

on_both_stores!(deleted_images_are_collected_shared_layers_stay);

/// Collections in a loop must not grow the index without bound: the
/// history keeps the newest 200 reports (each lists what its run deleted),
/// and the older ones are gone from the index, not just from the listing.
#[tokio::test]
async fn the_run_history_keeps_only_the_newest_reports() {
    let s = Server::start();
    let c = s.client();
    let mut last = 0;
    for _ in 0..205 {
        last = c.run_gc(json!({})).await["id"].as_u64().unwrap();
    }
    let runs: Value = c.json("/admin/gc/runs?limit=1000").await;
    let ids: Vec<u64> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 200);
    assert_eq!((ids[0], ids[199]), (last, last - 199));
    let oldest = format!("/admin/gc/runs/{}", last - 200);
    assert_eq!(c.status(Method::GET, &oldest).await, 404);
}
