//! Crash consistency: kill -9 the server in the middle of concurrent pushes,
//! restart it on the same data, and check that everything a client was told
//! succeeded is still there, whole, and that the store is fully usable.
//! Each test runs with the blobs in the data directory (`NAME::fs`) and in
//! a Garage bucket (`NAME::s3`).

mod harness;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{Blobs, Client, OCI_MANIFEST, Server, random_bytes, sha256};
use serde_json::json;

type Acked = Arc<Mutex<Vec<(String, String, Vec<String>)>>>;

/// A push that reports failure instead of panicking (the server dies under it).
async fn try_push_blob(c: &Client, repo: &str, bytes: &[u8]) -> Result<String, String> {
    let d = sha256(bytes);
    let res = c
        .post(&format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != 202 {
        return Err(format!("POST {}", res.status()));
    }
    let loc = res.headers()["location"].to_str().unwrap().to_owned();
    // Two chunks, so kills land between PATCH and PUT too.
    let half = bytes.len() / 2;
    let res = c
        .patch(&loc)
        .body(bytes[..half].to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != 202 {
        return Err(format!("PATCH {}", res.status()));
    }
    let res = c
        .put(&format!("{loc}?digest={d}"))
        .body(bytes[half..].to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != 201 {
        return Err(format!("PUT {}", res.status()));
    }
    Ok(d)
}

async fn try_push_image(
    c: &Client,
    repo: &str,
    tag: &str,
    shared: &[u8],
) -> Result<(String, Vec<String>), String> {
    let mut layers = vec![];
    let mut descs = vec![];
    for bytes in [shared.to_vec(), random_bytes(20_000), random_bytes(3_000)] {
        let d = try_push_blob(c, repo, &bytes).await?;
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": bytes.len()}));
        layers.push(d);
    }
    let config = random_bytes(100);
    let cd = try_push_blob(c, repo, &config).await?;
    layers.push(cd.clone());
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let res = c
        .put(&format!("/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(body.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != 201 {
        return Err(format!("PUT manifest {}", res.status()));
    }
    Ok((sha256(&body), layers))
}

/// Every acknowledged image resolves, and every blob it references comes
/// back with the right digest; every tag in every repository is whole.
async fn verify(c: &Client, acked: &Acked) {
    let acked = acked.lock().unwrap().clone();
    for (repo, tag, blobs) in &acked {
        let res = c
            .get(&format!("/v2/{repo}/manifests/{tag}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "acknowledged {repo}:{tag} lost");
        for b in blobs {
            let res = c
                .get(&format!("/v2/{repo}/blobs/{b}"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "blob {b} of {repo}:{tag}");
            assert_eq!(&sha256(&res.bytes().await.unwrap()), b, "blob {b} content");
        }
    }
    let catalog: serde_json::Value = c.json("/v2/_catalog").await;
    for repo in catalog["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags: serde_json::Value = c.json(&format!("/v2/{repo}/tags/list")).await;
        for tag in tags["tags"].as_array().unwrap() {
            let res = c
                .get(&format!("/v2/{repo}/manifests/{}", tag.as_str().unwrap()))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let m: serde_json::Value = res.json().await.unwrap();
            for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap()) {
                let d = d["digest"].as_str().unwrap();
                let res = c
                    .get(&format!("/v2/{repo}/blobs/{d}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200, "{repo}:{tag} references {d}");
                assert_eq!(sha256(&res.bytes().await.unwrap()), d);
            }
        }
    }
}

async fn kill_9_during_pushes_loses_nothing_acknowledged(blobs: Blobs) {
    let mut server = Server::start_on(blobs, &[]);
    let acked: Acked = Arc::default();
    let shared = random_bytes(50_000);
    for round in 0..4u64 {
        let c = server.client();
        let mut tasks = Vec::new();
        for worker in 0..4 {
            let (c, acked, shared) = (c.clone(), acked.clone(), shared.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let repo = format!("crash/w{worker}");
                    let tag = format!("r{round}-{i}");
                    match try_push_image(&c, &repo, &tag, &shared).await {
                        Ok((_digest, blobs)) => acked.lock().unwrap().push((repo, tag, blobs)),
                        Err(_) => return, // the server is gone
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + 150 * round)).await;
        server.kill();
        for t in tasks {
            t.await.unwrap();
        }
        server.restart();
        verify(&server.client(), &acked).await;
    }
    assert!(
        acked.lock().unwrap().len() >= 4,
        "too few pushes completed to mean anything"
    );
    // Still fully usable after all that.
    server.client().push_image("crash/after", "ok", 2).await;
    assert!(!server.log().contains("panicked"), "{}", server.log());
    // Files a kill left without a row (between an upload's rename and its
    // commit) go with the next collection's reconciliation, online.
    let orphans = server
        .client()
        .run_gc(serde_json::json!({"grace": "0s"}))
        .await;
    println!(
        "reconciliation removed {} orphan files",
        orphans["orphans_deleted"]
    );
    assert_check_clean(&mut server);
}

/// Stops the server; `registry check` then finds nothing wrong, no orphan
/// file in particular.
fn assert_check_clean(server: &mut Server) {
    server.terminate();
    let (code, out) = server.check(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("orphan file"), "{out}");
}

/// kill -9 at random points of a garbage collection: after restart every
/// blob is either fully there (index row and readable bytes) or fully gone,
/// the trash is empty, the images in use are intact, and the next run
/// finishes the job.
async fn kill_9_during_gc_leaves_blobs_whole_or_gone(blobs: Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("registry.toml");
    std::fs::write(&config, "[gc]\nbatch_size = 50\n").unwrap();
    let config = config.to_str().unwrap().to_owned();
    let mut server = Server::start_on(blobs, &["--gc-grace", "0s", "--config", &config]);
    let c = server.client();
    c.push_image("keep", "v1", 3).await;
    let mut garbage = Vec::new();
    for round in 0..4u64 {
        let c = server.client();
        for i in 0..400 {
            let bytes = format!("garbage {round} {i}").into_bytes();
            let d = sha256(&bytes);
            let res = c
                .post(&format!("/v2/junk/blobs/uploads/?digest={d}"))
                .body(bytes.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
            garbage.push((d, bytes));
        }
        let res = c.post("/admin/gc").send().await.unwrap();
        assert_eq!(res.status(), 202);
        tokio::time::sleep(Duration::from_millis(5 + 20 * round)).await;
        server.kill();
        server.restart();
        let c = server.client();
        let mut present = 0;
        for (d, bytes) in &garbage {
            let res = c.get(&format!("/v2/junk/blobs/{d}")).send().await.unwrap();
            match res.status().as_u16() {
                200 => {
                    assert_eq!(
                        &res.bytes().await.unwrap()[..],
                        &bytes[..],
                        "{d} readable and whole"
                    );
                    present += 1;
                }
                404 => {}
                other => panic!("{d}: {other}"),
            }
        }
        println!(
            "round {round}: {present} of {} garbage blobs left after the kill",
            garbage.len()
        );
        c.assert_pulls_intact("keep", "v1").await;
    }
    // The next run completes the job.
    let c = server.client();
    c.run_gc(serde_json::json!({})).await;
    let r: serde_json::Value = c.json("/admin/gc/reclaimable").await;
    assert_eq!(r["blobs"], 0, "{r}");
    for (d, _) in &garbage {
        assert_eq!(
            c.get(&format!("/v2/junk/blobs/{d}"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
    // Files a kill left without a row (between a sweep's commit and its
    // deletes) went with that run's reconciliation.
    assert_check_clean(&mut server);
}

on_both_stores!(
    kill_9_during_pushes_loses_nothing_acknowledged,
    kill_9_during_gc_leaves_blobs_whole_or_gone,
);
