//! Crash consistency: kill -9 the server in the middle of concurrent pushes,
//! restart it on the same data, and check that everything a client was told
//! succeeded is still there, whole, and that the store is fully usable.
//! Each test runs with the blobs in the data directory (`NAME::fs`) and in
//! a Garage bucket (`NAME::s3`). Each kills the server 4 times by default;
//! `CRASH_ROUNDS=N` kills it N times.

mod harness;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::under_fire::{OpenUploads, Pushed, assert_intact, try_push_image};
use harness::{Blobs, Server, random_bytes, sha256};

type Acked = Arc<Mutex<Vec<Pushed>>>;

/// Kills per test: 4 by default, `CRASH_ROUNDS=N` for a longer run.
fn rounds() -> u64 {
    std::env::var("CRASH_ROUNDS")
        .map(|v| v.parse().expect("CRASH_ROUNDS is a number"))
        .unwrap_or(4)
}

async fn kill_9_during_pushes_loses_nothing_acknowledged(blobs: Blobs) {
    let mut server = Server::start_on(blobs, &[]);
    let acked: Acked = Arc::default();
    let shared = random_bytes(50_000);
    for round in 0..rounds() {
        let before = acked.lock().unwrap().len();
        let c = server.client();
        let mut tasks = Vec::new();
        for worker in 0..4 {
            let (c, acked, shared) = (c.clone(), acked.clone(), shared.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let repo = format!("crash/w{worker}");
                    let tag = format!("r{round}-{i}");
                    let uploads = OpenUploads::default();
                    match try_push_image(&c, &repo, &tag, &shared, &uploads).await {
                        Ok((digest, blobs)) => acked.lock().unwrap().push(Pushed {
                            repo,
                            tag,
                            digest,
                            blobs,
                        }),
                        Err(_) => return, // the server is gone
                    }
                }
            }));
        }
        // Kill once this round has acknowledged a push (a loaded machine
        // may take a while), a varying moment later, mid-push.
        wait_for_ack(&acked, before).await;
        tokio::time::sleep(Duration::from_millis(100 + 150 * (round % 4))).await;
        server.kill();
        for t in tasks {
            t.await.unwrap();
        }
        server.restart();
        let so_far = acked.lock().unwrap().clone();
        assert_intact(&server.client(), &so_far).await;
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
/// Waits until more than `before` pushes are acknowledged.
async fn wait_for_ack(acked: &Acked, before: usize) {
    for _ in 0..3000 {
        if acked.lock().unwrap().len() > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no push was acknowledged within 60 s");
}

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
    for round in 0..rounds() {
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
        tokio::time::sleep(Duration::from_millis(5 + 20 * (round % 4))).await;
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
