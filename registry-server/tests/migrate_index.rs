//! `registry migrate-index`: a single-node installation (embedded index,
//! blobs in the data directory) with images, deletes, activity, collection
//! history and a schedule is stopped, its index copied into PostgreSQL, and
//! a node started on that database with the same data directory serves
//! everything as before.

mod harness;

use std::process::Command;

use harness::{Server, check_store};
use reqwest::Method;
use serde_json::{Value, json};

/// Runs `registry migrate-index`; exit code and output.
fn migrate(from: &std::path::Path, to: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_registry"))
        .args(["migrate-index", "--from-dir"])
        .arg(from)
        .args(["--to", to])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run registry migrate-index");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// What the test compares before and after the migration.
struct Seen {
    catalog: Value,
    tags: Vec<(String, Value)>,
    activity: Value,
    runs: Value,
    schedule: Value,
}

async fn look(server: &Server, repos: &[&str]) -> Seen {
    let c = server.client();
    let mut tags = Vec::new();
    for repo in repos {
        tags.push((
            repo.to_string(),
            c.json(&format!("/v2/{repo}/tags/list")).await,
        ));
    }
    Seen {
        catalog: c.json("/v2/_catalog").await,
        tags,
        activity: c.json("/admin/activity?limit=1000").await["entries"].clone(),
        runs: c.json("/admin/gc/runs").await["runs"].clone(),
        schedule: c.json("/admin/gc/schedule").await["schedule"].clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_index_moves_to_postgres() {
    let pg = tokio::task::spawn_blocking(testbed::Postgres::start)
        .await
        .unwrap();
    let url = pg.create_database("migrated");
    let mut single = Server::start_with(&["--gc-grace", "0s"]);
    let c = single.client();
    let app_v1 = c.push_image("team/app", "v1", 2).await;
    c.push_image("team/app", "v2", 3).await;
    c.push_image("team/web", "latest", 1).await;
    let gone = c.push_image("team/old", "v1", 2).await;
    // Deletes and a collection: history, activity, freed blobs.
    let tag = c.status(Method::DELETE, "/v2/team/app/manifests/v1").await;
    assert_eq!(tag, 202);
    let manifest = format!("/v2/team/old/manifests/{}", gone.digest);
    assert_eq!(c.status(Method::DELETE, &manifest).await, 202);
    let report = c.run_gc(json!({})).await;
    assert_eq!(report["blobs_deleted"], 3, "{report:#}");
    let res = c
        .put("/admin/gc/schedule")
        .json(&json!({"schedule": "@daily"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let repos = ["team/app", "team/web", "team/old"];
    let before = look(&single, &repos).await;
    assert!(single.terminate().success());

    let data = single.data_dir();
    let (code, out) = migrate(&data, &url);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("recount on the target: clean"), "{out}");
    assert!(
        out.contains("activity"),
        "the summary lists the tables: {out}"
    );
    // A second copy into the same database is refused.
    let (code, again) = migrate(&data, &url);
    assert_ne!(code, 0, "{again}");
    assert!(again.contains("already holds an index"), "{again}");

    // A node on PostgreSQL with the same data directory (the blobs).
    let mut node = Server::start_at(&single.root, &["--index", &url], "warn");
    let after = look(&node, &repos).await;
    assert_eq!(after.catalog, before.catalog);
    assert_eq!(after.tags, before.tags);
    assert_eq!(after.activity, before.activity);
    assert_eq!(after.runs, before.runs);
    assert_eq!(after.schedule, before.schedule);
    let n = node.client();
    for (repo, tag) in [("team/app", "v2"), ("team/web", "latest")] {
        n.assert_pulls_intact(repo, tag).await;
    }
    let by_digest = format!("/v2/team/app/manifests/{}", app_v1.digest);
    assert_eq!(
        n.status(Method::GET, &by_digest).await,
        200,
        "untagged v1 kept"
    );

    // New activity and runs are numbered after the copied ones.
    let newest = |v: &Value| v[0]["id"].as_u64().unwrap();
    n.push_image("team/app", "v3", 1).await;
    let report = n.run_gc(json!({})).await;
    let activity = n.json("/admin/activity?limit=1").await["entries"].clone();
    assert!(newest(&activity) > newest(&before.activity), "{activity:#}");
    assert!(
        report["id"].as_u64().unwrap() > newest(&before.runs),
        "{report:#}"
    );
    assert!(node.terminate().success());

    let (code, out) = check_store(&data, &["--index", &url]);
    assert_eq!(code, 0, "registry check on the migrated store:\n{out}");
}
