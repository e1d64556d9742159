//! What an operator sees: metrics (checked by promtool), the activity log,
//! health endpoints, request logs, and the integrity check.

mod harness;

use std::process::Command;

use harness::{OCI_MANIFEST, Server, have, sample, sha256};
use reqwest::Method;
use serde_json::{Value, json};

async fn metrics(c: &harness::Client) -> String {
    let res = c.get("/metrics").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    res.text().await.unwrap()
}

fn promtool_accepts(text: &str) {
    assert!(
        have("promtool"),
        "promtool is missing: install it with `apt-get install -y prometheus` (CI does)"
    );
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_move_with_traffic_and_pass_promtool() {
    let s = Server::start_with(&["--gc-grace", "0s"]);
    let c = s.client();
    let before = metrics(&c).await;
    promtool_accepts(&before);
    assert_eq!(sample(&before, "berth_storage_blobs", &[]), 0.0);

    let img = c.push_image("m", "v1", 2).await;
    assert_eq!(
        c.get(&format!("/v2/m/blobs/{}", img.layers[0]))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len(),
        1024
    );
    assert_eq!(
        c.status(Method::DELETE, &format!("/v2/m/manifests/{}", img.digest))
            .await,
        202
    );
    let after_push = metrics(&c).await;
    assert!(
        sample(
            &after_push,
            "berth_http_requests_total",
            &["method=\"PUT\"", "route=\"manifest\"", "status=\"201\""]
        ) >= 1.0
    );
    assert!(
        sample(
            &after_push,
            "berth_http_requests_total",
            &["method=\"GET\"", "route=\"blob\"", "status=\"200\""]
        ) >= 1.0
    );
    assert!(
        sample(
            &after_push,
            "berth_http_requests_total",
            &["method=\"DELETE\"", "route=\"manifest\"", "status=\"202\""]
        ) >= 1.0
    );
    assert!(
        sample(
            &after_push,
            "berth_http_request_duration_seconds_count",
            &["route=\"manifest\""]
        ) >= 2.0
    );
    assert!(sample(&after_push, "berth_http_received_bytes_total", &[]) >= 2048.0);
    assert!(sample(&after_push, "berth_http_sent_bytes_total", &[]) >= 1024.0);
    assert_eq!(sample(&after_push, "berth_storage_blobs", &[]), 3.0);
    assert_eq!(sample(&after_push, "berth_storage_manifests", &[]), 0.0);
    assert_eq!(sample(&after_push, "berth_gc_reclaimable_blobs", &[]), 3.0);
    assert!(sample(&after_push, "berth_gc_reclaimable_bytes", &[]) >= 2048.0);
    assert!(
        sample(
            &after_push,
            "berth_index_commit_duration_seconds_count",
            &[]
        ) >= 1.0
    );

    let run = c.run_gc(json!({})).await;
    assert_eq!(run["blobs_deleted"], 3);
    let after_gc = metrics(&c).await;
    promtool_accepts(&after_gc);
    assert_eq!(
        sample(
            &after_gc,
            "berth_gc_runs_total",
            &["outcome=\"succeeded\"", "dry_run=\"false\""]
        ),
        1.0
    );
    assert_eq!(
        sample(&after_gc, "berth_gc_deleted_total", &["kind=\"blob\""]),
        3.0
    );
    assert!(sample(&after_gc, "berth_gc_freed_bytes_total", &[]) >= 2048.0);
    assert_eq!(
        sample(&after_gc, "berth_gc_fence_duration_seconds_count", &[]),
        1.0
    );
    assert_eq!(
        sample(&after_gc, "berth_gc_run_duration_seconds_count", &[]),
        1.0
    );
    assert_eq!(sample(&after_gc, "berth_storage_blobs", &[]), 0.0);
    assert_eq!(sample(&after_gc, "berth_gc_reclaimable_bytes", &[]), 0.0);
    assert!(sample(&after_gc, "berth_uploads_in_progress", &[]) == 0.0);

    // One log line per request, with a request id echoed to the client.
    let res = c
        .get("/v2/")
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-me-42");
    assert!(
        c.get("/v2/")
            .send()
            .await
            .unwrap()
            .headers()
            .contains_key("x-request-id")
    );
}

#[tokio::test]
async fn metrics_on_their_own_listener() {
    let s = Server::start_with(&["--metrics-addr", "127.0.0.1:0"]);
    let c = s.client();
    assert_eq!(
        c.status(Method::GET, "/metrics").await,
        404,
        "not on the API listener"
    );
    let m = reqwest::get(format!("{}/metrics", s.metrics_url.as_ref().unwrap()))
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    promtool_accepts(&m.text().await.unwrap());
    let api = reqwest::get(format!("{}/v2/", s.metrics_url.as_ref().unwrap()))
        .await
        .unwrap();
    assert_eq!(api.status(), 404, "no API on the metrics listener");
    let h = reqwest::get(format!("{}/healthz", s.metrics_url.as_ref().unwrap()))
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
}

#[tokio::test]
async fn health_and_readiness() {
    let s = Server::start();
    let c = s.client();
    assert_eq!(c.json("/healthz").await["status"], "ok");
    let r = c.get("/readyz").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["ready"], true);
    // The data directory stops taking writes: not ready, still alive.
    std::fs::remove_dir_all(s.data_dir().join("uploads")).unwrap();
    let r = c.get("/readyz").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_ne!(r.json::<Value>().await.unwrap()["storage"], "ok");
    assert_eq!(c.status(Method::GET, "/healthz").await, 200);
}

#[tokio::test]
async fn activity_log_records_who_did_what_in_order() {
    let s = Server::start_with(&["--gc-grace", "0s"]);
    let c = s.client();
    let a = c.push_image("act/one", "v1", 1).await;
    assert_eq!(
        c.put_manifest("act/one", "v2", OCI_MANIFEST, &a.manifest)
            .await
            .status(),
        201
    );
    assert_eq!(
        c.status(Method::DELETE, "/v2/act/one/manifests/v1").await,
        202
    );
    assert_eq!(
        c.status(
            Method::DELETE,
            &format!("/v2/act/one/manifests/{}", a.digest)
        )
        .await,
        202
    );
    assert_eq!(
        c.status(
            Method::DELETE,
            &format!("/v2/act/one/blobs/{}", a.layers[0])
        )
        .await,
        202
    );
    c.push_image("act/two", "v1", 1).await;
    assert_eq!(
        c.status(Method::DELETE, "/admin/repositories/act/two")
            .await,
        200
    );
    c.run_gc(json!({"dry_run": true})).await;

    // The GC entry is written as the run ends; wait for it.
    let mut log = Value::Null;
    for _ in 0..100 {
        log = c.json("/admin/activity").await;
        if log["entries"][0]["action"] == "gc_run" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "gc_run",
            "repository_delete",
            "push",
            "blob_delete",
            "manifest_delete",
            "tag_delete",
            "push",
            "push"
        ],
        "{log:#}"
    );
    for e in &entries[1..] {
        assert_eq!(e["actor"], "127.0.0.1", "{e}");
        assert!(e["time"].as_str().unwrap().starts_with("20"));
    }
    assert_eq!(entries[0]["actor"], "127.0.0.1");
    assert_eq!(entries[0]["detail"]["dry_run"], true);
    assert_eq!(entries[5]["reference"], "v1");
    assert_eq!(entries[5]["digest"], a.digest.as_str());
    assert_eq!(entries[7]["reference"], "v1");
    assert_eq!(entries[7]["repository"], "act/one");
    let ids: Vec<u64> = entries.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    // Filters and cursor pagination.
    let pushes = c
        .json("/admin/activity?action=push&repository=act/one")
        .await;
    assert_eq!(pushes["entries"].as_array().unwrap().len(), 2);
    let page1 = c.json("/admin/activity?limit=3").await;
    assert_eq!(page1["entries"].as_array().unwrap().len(), 3);
    let cursor = page1["next_cursor"].as_u64().unwrap();
    let page2 = c
        .json(&format!("/admin/activity?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(page2["entries"][0]["id"].as_u64().unwrap(), cursor - 1);
    let future = c.json("/admin/activity?since=2999-01-01T00:00:00Z").await;
    assert_eq!(future["entries"], json!([]));
    assert_eq!(
        c.status(Method::GET, "/admin/activity?since=yesterday")
            .await,
        400
    );
}

#[tokio::test]
async fn activity_retention_bounds_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("r.toml");
    std::fs::write(&config, "activity_retention = 3\n").unwrap();
    let s = Server::start_with(&["--config", config.to_str().unwrap()]);
    let c = s.client();
    let img = c.push_image("ret", "t0", 1).await;
    for i in 1..6 {
        assert_eq!(
            c.put_manifest("ret", &format!("t{i}"), OCI_MANIFEST, &img.manifest)
                .await
                .status(),
            201
        );
    }
    let log = c.json("/admin/activity").await;
    let refs: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reference"].as_str().unwrap())
        .collect();
    assert_eq!(refs, ["t5", "t4", "t3"]);
}

fn registry(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_registry"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn blob_path(data: &std::path::Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    data.join("blobs/sha256").join(&hex[..2]).join(hex)
}

#[tokio::test]
async fn check_finds_and_repairs_what_a_test_breaks() {
    let mut s = Server::start();
    let c = s.client();
    // Files to break: layers too large for the index to keep.
    let gone = c.push_stored_image("chk", "gone", 1).await;
    let rotten = c.push_stored_image("chk", "rotten", 1).await;
    let fine = c.push_image("chk", "fine", 2).await;
    let counted = c.push_image("chk", "counted", 1).await;
    // A small layer the index keeps, corrupted there.
    let small = c.push_image("chk", "small", 1).await;
    s.kill();
    let data = s.data_dir();
    let data_arg = data.to_str().unwrap().to_owned();

    let (code, out) = registry(&["check", "--data-dir", &data_arg]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("clean"), "{out}");

    // Break three things: a deleted file, a corrupted file (same size), a
    // wrong reference count; and leave a file no row names.
    std::fs::remove_file(blob_path(&data, &gone.layers[0])).unwrap();
    let rotten_path = blob_path(&data, &rotten.layers[0]);
    let mut bytes = std::fs::read(&rotten_path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&rotten_path, &bytes).unwrap();
    {
        // Through the table interface, past every rule.
        use registry_core::db::Reads;
        use registry_core::model::{BLOB_DATA, BLOBS};
        let index = registry_core::index::Index::open_redb(&data.join("index.redb")).unwrap();
        let d = counted.layers[0].clone();
        let s = small.layers[0].clone();
        index
            .db()
            .write(move |tx| {
                let mut row = tx.get(BLOBS, &d)?.expect("the blob row");
                row.refs = 7;
                tx.put(BLOBS, &d, &row)?;
                let mut bytes = tx.get(BLOB_DATA, &s)?.expect("kept in the index");
                bytes[0] ^= 0xff;
                tx.put(BLOB_DATA, &s, &bytes)
            })
            .await
            .unwrap();
        index.close();
    }
    let stray = b"nobody knows me";
    let stray_path = blob_path(&data, &sha256(stray));
    std::fs::create_dir_all(stray_path.parent().unwrap()).unwrap();
    std::fs::write(&stray_path, stray).unwrap();

    let (code, out) = registry(&["check", "--data-dir", &data_arg]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("missing file:   {}", gone.layers[0])),
        "{out}"
    );
    assert!(
        out.contains(&format!("orphan file:    {}", sha256(stray))),
        "{out}"
    );
    assert!(
        out.contains(&format!("blob {}: refcount 7 but 1", counted.layers[0])),
        "{out}"
    );
    assert!(
        !out.contains("corrupt:"),
        "without --verify-content the content is not read: {out}"
    );

    let (code, out) = registry(&[
        "check",
        "--data-dir",
        &data_arg,
        "--verify-content",
        "--json",
    ]);
    assert_eq!(code, 2, "{out}");
    let report: Value = serde_json::from_str(&out[..out.rfind('}').unwrap() + 1]).unwrap();
    let mut corrupt: Vec<&str> = report["corrupt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["digest"].as_str().unwrap())
        .collect();
    corrupt.sort();
    let mut expected = vec![rotten.layers[0].as_str(), small.layers[0].as_str()];
    expected.sort();
    assert_eq!(corrupt, expected, "{report:#}");

    let (code, out) = registry(&[
        "check",
        "--data-dir",
        &data_arg,
        "--verify-content",
        "--repair",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("removed image:  chk@{}", gone.digest)),
        "{out}"
    );
    assert!(
        out.contains(&format!("removed image:  chk@{}", rotten.digest)),
        "{out}"
    );
    assert!(
        out.contains(&format!("removed image:  chk@{}", small.digest)),
        "{out}"
    );
    assert!(out.contains("problems found and repaired"), "{out}");
    assert!(
        data.join("quarantine")
            .join(format!("sha256-{}", &rotten.layers[0][7..]))
            .exists()
    );
    assert!(!stray_path.exists());

    let (code, out) = registry(&["check", "--data-dir", &data_arg, "--verify-content"]);
    assert_eq!(code, 0, "{out}");

    s.restart();
    let c = s.client();
    c.assert_pulls_intact("chk", "fine").await;
    c.assert_pulls_intact("chk", "counted").await;
    assert_eq!(c.status(Method::GET, "/v2/chk/manifests/gone").await, 404);
    assert_eq!(c.status(Method::GET, "/v2/chk/manifests/rotten").await, 404);
    // Pushing the lost image again restores it.
    c.push_image("chk", "again", 1).await;
    assert_eq!(fine.layers.len(), 2);
}

#[tokio::test]
async fn check_refuses_a_store_in_use() {
    let s = Server::start();
    let (code, out) = registry(&["check", "--data-dir", s.data_dir().to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(out.contains("is a server still running"), "{out}");
}
