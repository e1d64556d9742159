//! An existing data directory keeps working: a store written by the first
//! release (index layout 1, a sweep's trash directory) is upgraded at
//! start-up, and everything in it is still there.
//!
//! `fixtures/v1-store.tar.gz` is a data directory the first release wrote:
//! images `team/app:v1`, `team/other:latest`, an index `team/app:multi`
//! over `v1` and an untagged manifest (`v2`), a deleted image whose blobs
//! are unreferenced, an unfinished chunked upload holding 18 bytes, the GC
//! schedule `@weekly`, and a dry run in the history.

mod harness;

use std::process::Command;

use harness::{OCI_MANIFEST, Server, sha256};
use serde_json::Value;

const UPLOAD: &str = "/v2/team/app/blobs/uploads/951a87bead124f7f93512ef1e1a4230e";
const V2: &str = "sha256:378a6e556ef57fbf49016dfcaa24d37dd6f8b7dfb818f40ef876016f46f0c693";

/// Unpacks the fixture, and leaves in its trash what a first-release sweep
/// that died before committing would have: a file whose row is still in
/// the index, and one whose row is gone.
fn v1_store() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/v1-store.tar.gz"
    );
    let ok = Command::new("tar")
        .args(["xzf", fixture, "-C"])
        .arg(tmp.path())
        .status()
        .expect("tar");
    assert!(ok.success());
    let data = tmp.path().join("data");
    let old_layer = sha256(&b"old layer".repeat(30));
    let hex = old_layer.strip_prefix("sha256:").unwrap();
    let from = data.join("blobs/sha256").join(&hex[..2]).join(hex);
    std::fs::rename(&from, data.join("trash").join(format!("sha256-{hex}"))).unwrap();
    let stray = sha256(b"nobody's row");
    let stray_hex = stray.strip_prefix("sha256:").unwrap();
    std::fs::write(data.join("trash").join(format!("sha256-{stray_hex}")), b"x").unwrap();
    (tmp, old_layer)
}

/// `team/other`'s counts came over in its `repos` row (the base its
/// counter shards add to): emptying it through the API takes it out of
/// the catalog, as it did before the counts were sharded.
async fn empty_a_repository_the_upgrade_counted(c: &harness::Client) {
    let catalog = c.json("/v2/_catalog").await;
    let names =
        |c: &Value| -> Vec<String> { serde_json::from_value(c["repositories"].clone()).unwrap() };
    assert!(
        names(&catalog).contains(&"team/other".to_owned()),
        "{catalog}"
    );
    let res = c
        .get("/v2/team/other/manifests/latest")
        .send()
        .await
        .unwrap();
    let digest = res.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    let m: Value = res.json().await.unwrap();
    let path = format!("/v2/team/other/manifests/{digest}");
    let res = c.delete(&path).send().await.unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let blobs = m["layers"].as_array().unwrap().iter().chain([&m["config"]]);
    for b in blobs {
        let path = format!("/v2/team/other/blobs/{}", b["digest"].as_str().unwrap());
        let res = c.delete(&path).send().await.unwrap();
        assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    }
    let catalog = c.json("/v2/_catalog").await;
    assert!(
        !names(&catalog).contains(&"team/other".to_owned()),
        "{catalog}"
    );
    assert!(
        names(&catalog).contains(&"team/app".to_owned()),
        "{catalog}"
    );
}

#[tokio::test]
async fn a_first_release_store_is_upgraded_and_intact() {
    let (tmp, old_layer) = v1_store();
    let mut s = Server::start_in(tmp, &[]);
    let c = s.client();
    c.assert_pulls_intact("team/app", "v1").await;
    let index = c.json("/v2/team/app/manifests/multi").await;
    for child in index["manifests"].as_array().unwrap() {
        let d = child["digest"].as_str().unwrap();
        c.assert_pulls_intact("team/app", d).await;
    }
    c.assert_pulls_intact("team/other", "latest").await;
    let tags = c.json("/v2/team/app/tags/list").await;
    assert_eq!(tags["tags"], serde_json::json!(["multi", "v1"]), "{tags}");
    let untagged = c
        .get(&format!("/v2/team/app/manifests/{V2}"))
        .send()
        .await
        .unwrap();
    assert_eq!(untagged.status(), 200);
    // The trash of the interrupted sweep was sorted out: the blob whose row
    // stayed is back, the other file is gone with the directory.
    let back = c
        .head(&format!("/v2/team/app/blobs/{old_layer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 200);
    assert!(!s.data_dir().join("trash").exists());
    // The unfinished upload resumes where it was.
    let r = c.get(UPLOAD).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-17");
    let whole = b"partial chunk data, finished";
    let d = sha256(whole);
    let r = c
        .put(&format!("{UPLOAD}?digest={d}"))
        .body(whole[18..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // Settings, history and counts came along.
    let schedule = c.json("/admin/gc/schedule").await;
    assert_eq!(schedule["schedule"], "@weekly");
    let runs = c.json("/admin/gc/runs").await;
    assert_eq!(runs["runs"][0]["dry_run"], true, "{runs}");
    let activity = c.json("/admin/activity?action=push").await;
    assert!(
        activity["entries"].as_array().unwrap().len() >= 5,
        "{activity}"
    );
    let totals: Value = c.json("/admin/gc/reclaimable").await;
    assert!(totals["stored_blobs"].as_u64().unwrap() >= 8, "{totals}");
    // New writes work, and the upgraded store is consistent.
    c.push_image("team/new", "t", 1).await;
    empty_a_repository_the_upgrade_counted(&c).await;
    let m = c.get("/v2/team/app/manifests/v1").send().await.unwrap();
    assert_eq!(m.headers()["content-type"], OCI_MANIFEST);
    s.terminate();
    let (code, out) = s.check(&[]);
    assert_eq!(code, 0, "{out}");
}
