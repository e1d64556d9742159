//! Berth as several nodes: three nodes on one PostgreSQL index and one
//! Garage bucket, each with a data directory of its own, behind nginx as a
//! round-robin load balancer. Clients go through the balancer, except where
//! a step sends requests to chosen nodes on purpose.
//!
//! `one_registry_on_three_nodes` runs its steps in order on one cluster:
//! the GC soak first, on the empty store, because it accounts for every
//! blob stored; then the conformance workflows, skopeo, uploads spread over
//! the nodes, confirmations and collections across nodes, a node killed
//! mid-push, and `registry check` on the shared store. Sign-in and tokens
//! are tested on a cluster of their own with authentication on, and a node
//! losing its database on a node of its own. Run with `--nocapture` to see
//! the measurements.

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::cluster::Cluster;
use harness::skopeo::{image_layout, pull_intact, push, require_skopeo};
use harness::soak::{self, Setup};
use harness::{Client, Server, assert_error, random_bytes, sha256};
use reqwest::Method;
use serde_json::{Value, json};

const NODES: usize = 3;

/// PostgreSQL and a one-node Garage, started off the runtime.
async fn backing_servers() -> (testbed::Postgres, Arc<testbed::Garage>) {
    tokio::task::spawn_blocking(|| {
        (
            testbed::Postgres::start(),
            Arc::new(testbed::Garage::single()),
        )
    })
    .await
    .expect("start PostgreSQL and Garage")
}

/// Sweeps of a few blobs each, so that a collection of a few hundred
/// blobs lasts long enough to be seen running from the other nodes.
fn small_batches(dir: &std::path::Path) -> String {
    let path = dir.join("registry.toml");
    std::fs::write(&path, "[gc]\nbatch_size = 4\n").expect("write config");
    path.to_str().expect("utf-8 path").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_registry_on_three_nodes() {
    let (pg, garage) = backing_servers().await;
    let dir = tempfile::tempdir().unwrap();
    let config = small_batches(dir.path());
    let args = ["--config", &config, "--gc-grace", soak::GRACE_ARG];
    let mut cluster =
        tokio::task::block_in_place(|| Cluster::start(&pg, &garage, "cluster", NODES, &args));

    let measured = gc_soak(&cluster).await;
    let retries = cluster.metric("berth_index_retries_total", &[]).await;
    let refused = cluster
        .metric("berth_gc_fenced_writes_total", &["result=\"refused\""])
        .await;
    conformance(&cluster).await;
    skopeo_round_trip(&cluster).await;
    chunked_upload_across_nodes(&cluster).await;
    confirmation_on_one_node_protects_from_a_run_on_another(&cluster).await;
    one_collection_at_a_time(&cluster).await;
    refusals_on_every_node_count_in_the_report(&cluster).await;
    a_node_killed_mid_push(&mut cluster).await;
    println!(
        "cluster measurements (soak): {} runs, {} blobs swept in {} sweeps, sweep critical \
         section p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} writes answered 503 and \
         retried, {refused} writes refused by sweeps, {retries} index transactions run \
         again after serialization conflicts (all nodes)",
        measured.runs,
        measured.blobs_deleted,
        measured.fence_ms.len(),
        measured.fence_quantile(0.5),
        measured.fence_quantile(0.99),
        measured.fence_quantile(1.0),
        measured.retried_503,
    );

    for node in &mut cluster.nodes {
        node.terminate();
    }
    let (code, out) = cluster.check(&["--verify-content"]);
    assert_eq!(code, 0, "registry check on the shared store:\n{out}");
}

/// The GC soak through the balancer, with collections started on every
/// node in turn (and so often refused with 409 while another node runs).
async fn gc_soak(cluster: &Cluster) -> soak::Measured {
    let seed = soak::seed();
    println!("cluster gc soak: seed {seed} (replay with BERTH_SOAK_SEED={seed})");
    let log = || cluster.logs();
    let setup = Setup {
        client: cluster.client(),
        collectors: (0..NODES).map(|i| cluster.node(i)).collect(),
        load: Duration::from_secs(25),
        fenced: false,
        store: &cluster.nodes[0],
        log: &log,
    };
    soak::soak(setup, seed).await
}

/// The conformance port's four workflows, through the balancer.
async fn conformance(cluster: &Cluster) {
    let mut config = conformance::Config::all_workflows(&cluster.url(), "conformance/test");
    config.automatic_crossmount = Some(true);
    let report = conformance::run(&config).await;
    println!("{}", report.summary());
    assert_eq!(
        report.failed(),
        0,
        "{}\nlogs:\n{}",
        report.summary(),
        cluster.logs()
    );
    assert_eq!(report.skipped(), 0, "{}", report.summary());
}

/// skopeo copies an OCI layout in and out again through the balancer: the
/// same digests come back.
async fn skopeo_round_trip(cluster: &Cluster) {
    require_skopeo();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let image = image_layout(&src, "v1", 4);
    push(cluster, &src, "v1", "e2e/cluster:v1", false).await;
    pull_intact(cluster, "e2e/cluster:v1", &tmp.path().join("out"), &image).await;
    let by_digest = format!("e2e/cluster@{}", image.digest);
    pull_intact(cluster, &by_digest, &tmp.path().join("out2"), &image).await;
}

/// Requests of each node, by method, as its metrics count them.
async fn requests_by_node(cluster: &Cluster, method: &str) -> Vec<f64> {
    let label = format!("method=\"{method}\"");
    let mut out = Vec::new();
    for i in 0..NODES {
        out.push(
            cluster
                .node_metric(i, "berth_http_requests_total", &[&label])
                .await,
        );
    }
    out
}

/// A chunked upload whose requests land on different nodes: through the
/// balancer (its turns spread them; the nodes' request counters show
/// where they went), and sent to each node on purpose.
async fn chunked_upload_across_nodes(cluster: &Cluster) {
    let bytes = random_bytes(3 * 100_000 + 17);
    let chunks: Vec<&[u8]> = bytes.chunks(100_000).collect();
    let before = requests_by_node(cluster, "PATCH").await;
    let through = vec![cluster.client(); chunks.len() + 2];
    let digest = chunked_upload(&through, "spread/balanced", &chunks).await;
    let after = requests_by_node(cluster, "PATCH").await;
    let patched: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert!(
        patched.iter().filter(|n| **n > 0.0).count() >= 2,
        "the balancer spread the PATCHes over the nodes: {patched:?}"
    );
    assert_blob_everywhere(cluster, "spread/balanced", &digest, &bytes).await;

    // POST on node 0, PATCHes on 1, 2 and 0, PUT on 1.
    let direct: Vec<Client> = (0..chunks.len() + 2)
        .map(|i| cluster.node(i % NODES))
        .collect();
    let digest = chunked_upload(&direct, "spread/direct", &chunks).await;
    assert_blob_everywhere(cluster, "spread/direct", &digest, &bytes).await;
}

/// POST with `via[0]`, one PATCH per chunk with the next clients, the
/// closing PUT with the last; returns the digest.
async fn chunked_upload(via: &[Client], repo: &str, chunks: &[&[u8]]) -> String {
    let whole: Vec<u8> = chunks.concat();
    let digest = sha256(&whole);
    let res = via[0]
        .post(&format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "POST: {}", res.text().await.unwrap());
    let mut location = res.headers()["location"].to_str().unwrap().to_owned();
    let mut offset = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        let res = via[1 + i]
            .http
            .patch(format!("{}{location}", via[1 + i].base))
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{offset}-{}", offset + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            202,
            "PATCH {i}: {}",
            res.text().await.unwrap()
        );
        offset += chunk.len();
        assert_eq!(
            res.headers()["range"].to_str().unwrap(),
            format!("0-{}", offset - 1)
        );
        location = res.headers()["location"].to_str().unwrap().to_owned();
    }
    let last = &via[chunks.len() + 1];
    let sep = if location.contains('?') { '&' } else { '?' };
    let res = last
        .http
        .put(format!("{}{location}{sep}digest={digest}", last.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "PUT: {}", res.text().await.unwrap());
    digest
}

/// Every node serves the blob, whole.
async fn assert_blob_everywhere(cluster: &Cluster, repo: &str, digest: &str, bytes: &[u8]) {
    for i in 0..NODES {
        let res = cluster
            .node(i)
            .get(&format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "node {i}: GET {repo} {digest}");
        assert_eq!(res.bytes().await.unwrap(), bytes, "node {i}: {digest}");
    }
}

/// Starts a run on `node` and waits for its report there.
async fn run_on(node: &Client, body: Value) -> Value {
    node.run_gc(body).await
}

/// A HEAD of an unreferenced blob on node 0 protects it from a collection
/// started on node 1; a blob nobody confirmed is collected.
async fn confirmation_on_one_node_protects_from_a_run_on_another(cluster: &Cluster) {
    const GRACE: Duration = Duration::from_secs(3);
    let c = cluster.client();
    let kept = c.push_blob("confirm/app", &random_bytes(2000)).await;
    let taken = c.push_blob("confirm/app", &random_bytes(2000)).await;
    // Their uploads no longer protect them...
    tokio::time::sleep(GRACE + Duration::from_millis(300)).await;
    // ... but this confirmation does, for one grace period.
    let head = cluster
        .node(0)
        .status(Method::HEAD, &format!("/v2/confirm/app/blobs/{kept}"))
        .await;
    assert_eq!(head, 200);
    let report = run_on(&cluster.node(1), json!({"grace": "3s"})).await;
    let deleted: Vec<&str> = report["deleted"]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap())
        .collect();
    assert!(deleted.contains(&taken.as_str()), "{report:#}");
    assert!(!deleted.contains(&kept.as_str()), "{report:#}");
    for i in 0..NODES {
        let n = cluster.node(i);
        let path = |d: &str| format!("/v2/confirm/app/blobs/{d}");
        assert_eq!(n.status(Method::GET, &path(&kept)).await, 200, "node {i}");
        assert_eq!(n.status(Method::HEAD, &path(&taken)).await, 404, "node {i}");
    }
    let stored = cluster.nodes[0].stored_blobs().await;
    assert!(stored.contains(&kept) && !stored.contains(&taken));
}

/// One collection at a time in the whole cluster: while node 0 runs one,
/// node 1 refuses to start another (409 `GC_RUNNING`); the run's progress
/// and then its report are visible from every node.
async fn one_collection_at_a_time(cluster: &Cluster) {
    // Enough garbage, in batches of 4, for a run that lasts a while; a few
    // clients at a time (every upload to one repository updates its row).
    use futures::StreamExt as _;
    let c = cluster.client();
    let uploads = (0..240).map(|i| {
        let c = c.clone();
        async move {
            c.push_blob("gc/lease", format!("garbage {i}").as_bytes())
                .await
        }
    });
    let garbage: Vec<String> = futures::stream::iter(uploads)
        .buffer_unordered(8)
        .collect()
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let start = |node: usize| {
        let res = cluster
            .node(node)
            .post("/admin/gc")
            .json(&json!({"grace": "1s"}));
        async move { res.send().await.unwrap() }
    };
    let res = start(0).await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let id = res.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    let refused = start(1).await;
    let location = format!("/admin/gc/runs/{id}");
    assert_eq!(refused.headers()["location"], location.as_str());
    assert_error(refused, 409, "GC_RUNNING").await;
    let seen_running = watch_run(cluster, id).await;
    assert!(
        seen_running.iter().filter(|s| **s).count() >= 2,
        "the run was seen running from the other nodes: {seen_running:?}"
    );
    for i in 0..NODES {
        let report = cluster.node(i).json(&format!("/admin/gc/runs/{id}")).await;
        assert_eq!(report["state"], "succeeded", "node {i}: {report:#}");
        assert!(
            report["blobs_deleted"].as_u64().unwrap() >= garbage.len() as u64,
            "node {i}: {report:#}"
        );
        let last = cluster.node(i).json("/admin/gc/last").await;
        assert_eq!(last["id"], id, "node {i}");
    }
    // The slot is free again, on any node.
    run_on(&cluster.node(2), json!({"dry_run": true})).await;
}

/// While node 0 collects garbage in small batches, clients push the same
/// blobs again through nodes 1 and 2; a push whose blob a sweep holds is
/// refused (503). The run's report counts the refusals of every node: as
/// many as the nodes' metrics counted over the whole round. Whether a
/// push meets a sweep is chance, so rounds (each on new garbage) go on
/// until one did. About one round in four has one (measured: 4 of 17),
/// so thirty rounds all missing is a broken count, not bad luck (0.03%);
/// most runs stop after a few.
async fn refusals_on_every_node_count_in_the_report(cluster: &Cluster) {
    for round in 0..ROUNDS_FOR_A_REFUSAL {
        let (counted, answered_503) = refusals_round(cluster, round).await;
        if counted > 0 {
            assert!(
                answered_503 >= counted,
                "{counted} refusals, {answered_503} answered 503"
            );
            return;
        }
    }
    panic!("in {ROUNDS_FOR_A_REFUSAL} runs, no push met a sweep");
}

const ROUNDS_FOR_A_REFUSAL: usize = 30;

/// One round: (refusals the nodes counted, pushes answered 503); panics if
/// the run's report disagrees with the nodes.
async fn refusals_round(cluster: &Cluster, round: usize) -> (u64, u64) {
    use futures::StreamExt as _;
    let c = cluster.client();
    // A longer run meets more pushes, and each push re-protects a smaller
    // share of the garbage.
    let blobs: Vec<Vec<u8>> = (0..480)
        .map(|i| format!("held garbage {round}/{i}").into_bytes())
        .collect();
    let pushes = blobs.iter().map(|b| c.push_blob("gc/held", b));
    futures::stream::iter(pushes)
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let label = ["result=\"refused\""];
    let before = cluster.metric("berth_gc_fenced_writes_total", &label).await;
    let stop = Arc::new(AtomicBool::new(false));
    let blobs = Arc::new(blobs);
    let pushers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(push_again(
                cluster.node(1 + w % 2),
                w,
                blobs.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let report = run_on(&cluster.node(0), json!({"grace": "1s"})).await;
    stop.store(true, Ordering::Relaxed);
    let mut answered_503 = 0;
    for p in pushers {
        answered_503 += p.await.unwrap();
    }
    let after = cluster.metric("berth_gc_fenced_writes_total", &label).await;
    let counted = (after - before) as u64;
    println!(
        "refusals during a run on node 0 (round {round}): {counted} counted by the nodes, {} in \
         the report, {answered_503} pushes answered 503",
        report["writes_refused"]
    );
    assert_eq!(report["state"], "succeeded", "{report:#}");
    assert_eq!(
        report["writes_refused"].as_u64(),
        Some(counted),
        "{report:#}"
    );
    (counted, answered_503)
}

/// Pushes `blobs` again through `node` until `stop`; returns how many
/// were answered 503. Slowly: a blob pushed again is protected for the
/// grace period, and most must stay collectable for the sweeps to hold them.
async fn push_again(
    node: Client,
    w: usize,
    blobs: Arc<Vec<Vec<u8>>>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut refused = 0u64;
    let mut i = w * 31;
    while !stop.load(Ordering::Relaxed) {
        let b = &blobs[i % blobs.len()];
        let path = format!("/v2/gc/held/blobs/uploads/?digest={}", sha256(b));
        let res = node.post(&path).body(b.clone()).send().await.unwrap();
        match res.status().as_u16() {
            201 => {}
            503 => refused += 1,
            s => panic!("re-push: {s} {}", res.text().await.unwrap()),
        }
        i += 7;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    refused
}

/// Polls run `id` on every node until node 0 says it finished; returns,
/// per node, whether that node ever showed it running.
async fn watch_run(cluster: &Cluster, id: u64) -> Vec<bool> {
    let mut seen = vec![false; NODES];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for (i, s) in seen.iter_mut().enumerate() {
            let r = cluster
                .node(i)
                .get(&format!("/admin/gc/runs/{id}"))
                .send()
                .await
                .unwrap();
            if r.status() == 200 && r.json::<Value>().await.unwrap()["state"] == "running" {
                *s = true;
            }
        }
        let on_zero = cluster.node(0).json(&format!("/admin/gc/runs/{id}")).await;
        if on_zero["state"] != "running" {
            return seen;
        }
        assert!(Instant::now() < deadline, "run {id} did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pushes images through the balancer until told to stop, retrying an
/// image from the start when a request fails (a node died under it);
/// returns the images whose manifest PUT was acknowledged.
async fn keep_pushing(c: Client, worker: usize, stop: Arc<AtomicBool>) -> Vec<(String, String)> {
    let mut acknowledged = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let repo = format!("kill/w{worker}");
        let tag = format!("t{n}");
        if try_push_image(&c, &repo, &tag).await {
            acknowledged.push((repo, tag));
        }
    }
    acknowledged
}

/// One image (two layers, a config, the manifest); `false` if any request
/// failed or was answered with an error.
async fn try_push_image(c: &Client, repo: &str, tag: &str) -> bool {
    let mut descriptors = Vec::new();
    let mut blobs = Vec::new();
    for size in [20_000, 50_000, 300] {
        let bytes = random_bytes(size);
        let digest = sha256(&bytes);
        let res = c
            .post(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await;
        if !matches!(res, Ok(r) if r.status() == 201) {
            return false;
        }
        descriptors.push(
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest, "size": size}),
        );
        blobs.push(digest);
    }
    let config = descriptors.pop().unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": harness::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config["digest"], "size": config["size"]},
        "layers": descriptors,
    }))
    .unwrap();
    let res = c
        .put(&format!("/v2/{repo}/manifests/{tag}"))
        .header("content-type", harness::OCI_MANIFEST)
        .body(manifest)
        .send()
        .await;
    matches!(res, Ok(r) if r.status() == 201)
}

/// kill -9 of one node while pushes go on through the balancer: the other
/// nodes keep serving, every acknowledged push pulls intact, and the node
/// restarts on its port and serves again.
async fn a_node_killed_mid_push(cluster: &mut Cluster) {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(keep_pushing(cluster.client(), w, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.nodes[1].kill();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    tokio::task::block_in_place(|| cluster.nodes[1].restart());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for w in workers {
        acknowledged.extend(w.await.expect("pusher"));
    }
    println!(
        "kill -9: {} pushes acknowledged around a node killed and restarted {} ms later",
        acknowledged.len(),
        killed_at.elapsed().as_millis()
    );
    assert!(
        acknowledged.len() >= 10,
        "pushes went on: {}",
        acknowledged.len()
    );
    let c = cluster.client();
    for (repo, tag) in &acknowledged {
        c.assert_pulls_intact(repo, tag).await;
    }
    // The restarted node serves what was pushed while it was down.
    let restarted = cluster.node(1);
    for (repo, tag) in acknowledged.iter().rev().take(5) {
        restarted.assert_pulls_intact(repo, tag).await;
    }
    let before = requests_by_node(cluster, "GET").await[1];
    for _ in 0..6 {
        assert_eq!(c.status(Method::GET, "/v2/").await, 200);
    }
    let after = requests_by_node(cluster, "GET").await[1];
    assert!(
        after > before,
        "the balancer sends requests to the restarted node again"
    );

    // What the kill left behind (bytes stored by a request that died
    // before its commit) goes with the next collection's reconciliation.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let report = run_on(&cluster.node(1), json!({"grace": "1s"})).await;
    println!(
        "after the kill: a collection deleted {} files without an index row",
        report["orphans_deleted"]
    );
}

// ---- authentication ----

const USERS: [(&str, &str); 2] = [("alice", "alice-secret"), ("bob", "bob-secret")];

/// A token-mode configuration: every user signed in may pull and push
/// anywhere; alice administers.
fn token_config(dir: &std::path::Path) -> String {
    let htpasswd = dir.join("htpasswd");
    let entries: String = USERS
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
        .collect();
    std::fs::write(&htpasswd, entries).unwrap();
    let path = dir.join("registry.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[auth]
mode = "token"
htpasswd = "{}"
admins = ["alice"]
access = [{{ repositories = "**", users = ["*"], actions = ["pull", "push"] }}]
"#,
            htpasswd.display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// A token issued by one node, and a web UI session signed in on one node,
/// are accepted by the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_and_tokens_hold_on_every_node() {
    let (pg, garage) = backing_servers().await;
    let dir = tempfile::tempdir().unwrap();
    let config = token_config(dir.path());
    let cluster = tokio::task::block_in_place(|| {
        Cluster::start(&pg, &garage, "auth", NODES, &["--config", &config])
    });

    for issuer in 0..NODES {
        let res = cluster
            .node(issuer)
            .get("/auth/token?service=berth&scope=repository:team/app:pull,push")
            .basic_auth("bob", Some("bob-secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "token from node {issuer}");
        let token = res.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        for i in 0..NODES {
            let bearer = cluster.nodes[i].client_as(Some(format!("Bearer {token}")));
            // Node i accepts node issuer's token for a push and a pull.
            let digest = bearer
                .push_blob("team/app", format!("from {issuer} to {i}").as_bytes())
                .await;
            let blob = format!("/v2/team/app/blobs/{digest}");
            assert_eq!(bearer.status(Method::HEAD, &blob).await, 200, "node {i}");
            let anonymous = cluster.node(i).status(Method::HEAD, &blob).await;
            assert_eq!(anonymous, 401, "node {i}");
        }
    }

    // Sign in on node 0; the session works on every node.
    let cookie = sign_in(&cluster.node(0), "alice", "alice-secret").await;
    for i in 0..NODES {
        let res = cluster
            .node(i)
            .get("/ui/gc")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "node {i}");
        let page = res.text().await.unwrap();
        assert!(
            page.contains("alice") && page.contains("run-now"),
            "node {i} knows alice's session:\n{page}"
        );
    }
    // Without it, the UI asks for a sign-in.
    let page = cluster.node(2).text("/ui/gc").await;
    assert!(!page.contains("run-now"), "{page}");
}

/// Signs in through the UI form; returns the session cookie (`name=value`).
async fn sign_in(node: &Client, user: &str, password: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = http
        .post(node.url("/ui/login"))
        .form(&[("user", user), ("password", password)])
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_redirection() || res.status() == 200,
        "sign-in: {}",
        res.status()
    );
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| !v.contains("Max-Age=0"))
        .expect("a session cookie");
    cookie.split(';').next().unwrap().to_owned()
}

/// A node whose database goes away answers every request with a
/// retryable 503 (pulls included: they resolve through the index) and
/// turns `/readyz` red, saying why under `index`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_its_database_answers_503_and_is_not_ready() {
    let (pg, garage) = backing_servers().await;
    let url = pg.create_database("lost");
    let server = tokio::task::block_in_place(|| Server::start_s3(garage, &["--index", &url]));
    let c = server.client();
    let image = c.push_image("lost/app", "v1", 1).await;
    assert_eq!(c.status(Method::GET, "/readyz").await, 200);

    tokio::task::block_in_place(|| pg.stop());
    let pull = c.get("/v2/lost/app/manifests/v1").send().await.unwrap();
    assert!(pull.headers().contains_key("retry-after"), "{pull:?}");
    assert_error(pull, 503, "UNAVAILABLE").await;
    let push = c
        .put_manifest("lost/app", "v2", harness::OCI_MANIFEST, &image.manifest)
        .await;
    assert_error(push, 503, "UNAVAILABLE").await;
    let res = c.get("/readyz").send().await.unwrap();
    assert_eq!(res.status(), 503);
    let why: Value = res.json().await.unwrap();
    assert_ne!(why["index"], "ok", "{why:#}");
}
