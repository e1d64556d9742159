//! A soak of online garbage collection: pushers, deleters and a puller
//! work against a registry (one server, or a cluster behind its balancer)
//! while collections run back to back, started on each of the given nodes
//! in turn; then the store is checked against everything the soak did.
//!
//! The invariant under load: a manifest PUT whose blobs the client
//! confirmed (HEAD 200), uploaded (201) or mounted (201) less than one grace
//! period ago never fails with `MANIFEST_BLOB_UNKNOWN`, whatever a sweep did
//! in between. Afterwards: every tag pulls completely, and once the grace
//! period is over one more run leaves exactly the blobs that stored
//! manifests reference, in the blob store and in the index.
//!
//! The randomness is seeded (printed; `BERTH_SOAK_SEED` replays a seed's
//! choices, not its timing).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{Value, json};

use super::{Client, OCI_MANIFEST, Server, sha256};

/// The servers' grace period, and the one every run asks for.
pub const GRACE: Duration = Duration::from_secs(1);
pub const GRACE_ARG: &str = "1s";
const PUSHERS: usize = 5;
const DELETERS: usize = 2;
const REPOS: &[&str] = &["soak/app", "soak/web", "soak/db", "tools/cli"];
/// Tags per repository: pushers overwrite them, leaving untagged manifests.
const TAGS: usize = 6;
/// Layer contents shared by all images.
const POOL: usize = 40;
/// Deleters leave at least this many images alone.
const MIN_LIVE: usize = 15;
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// One HTTP exchange, read to the end.
struct Reply {
    status: u16,
    location: Option<String>,
    retry_after: bool,
    body: Vec<u8>,
    sent: Instant,
    received: Instant,
    /// How many earlier attempts of the same request were refused (503).
    refused: u32,
}

impl Reply {
    fn code(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(400)
            .collect()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

async fn call(rb: reqwest::RequestBuilder) -> Reply {
    let sent = Instant::now();
    match rb.send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            let header = |name: &str| {
                res.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let location = header("location");
            let retry_after = header("retry-after").is_some();
            let body = match res.bytes().await {
                Ok(b) => b.to_vec(),
                Err(e) => format!("body: {e}").into_bytes(),
            };
            Reply {
                status,
                location,
                retry_after,
                body,
                sent,
                received: Instant::now(),
                refused: 0,
            }
        }
        Err(e) => Reply {
            status: 0,
            location: None,
            retry_after: false,
            body: format!("request failed: {e}").into_bytes(),
            sent,
            received: Instant::now(),
            refused: 0,
        },
    }
}

/// `location` with `digest=` appended.
fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

#[derive(Default)]
struct Counters {
    images_pushed: AtomicU64,
    retags: AtomicU64,
    head_skips: AtomicU64,
    mounts: AtomicU64,
    mount_fallbacks: AtomicU64,
    uploads: AtomicU64,
    chunked_uploads: AtomicU64,
    reuploads: AtomicU64,
    uploads_after_head_404: AtomicU64,
    retried_503: AtomicU64,
    expired_pushes: AtomicU64,
    tag_deletes: AtomicU64,
    manifest_deletes: AtomicU64,
    delete_misses: AtomicU64,
    pulls: AtomicU64,
    pull_races: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// An image the test believes is tagged.
struct Live {
    repo: String,
    digest: String,
    tags: Vec<String>,
}

/// What the GC task saw across its runs.
#[derive(Default)]
struct GcTotals {
    runs: u64,
    dry_runs: u64,
    untagged_runs: u64,
    refused_starts: u64,
    blobs_deleted: u64,
    manifests_deleted: u64,
    fences: u64,
    fence_max_ms: f64,
    writes_waited: u64,
    writes_refused: u64,
    deleted_blobs: HashSet<String>,
    /// How long each sweep's critical section lasted.
    fence_ms: Vec<f64>,
}

struct Shared {
    c: Client,
    /// Where collections start, one loop each.
    collectors: Vec<Client>,
    t0: Instant,
    stop: AtomicBool,
    pool: Vec<Vec<u8>>,
    pool_digests: Vec<String>,
    n: Counters,
    /// Manifest PUTs refused as MANIFEST_BLOB_UNKNOWN within the grace
    /// period of every confirmation: the invariant broken.
    violations: Mutex<Vec<String>>,
    /// Anything else that should not happen.
    failures: Mutex<Vec<String>>,
    /// Every blob digest the test ever pushed.
    pushed_blobs: Mutex<HashSet<String>>,
    /// Every manifest ever stored: (repository, digest) -> its blobs.
    manifests: Mutex<HashMap<(String, String), Vec<String>>>,
    live: Mutex<Vec<Live>>,
    /// Where each blob was last seen linked (for mounts).
    linked: Mutex<HashMap<String, HashSet<String>>>,
    gc: Mutex<GcTotals>,
}

impl Shared {
    fn ms(&self) -> u128 {
        self.t0.elapsed().as_millis()
    }

    fn fail(&self, what: String) {
        let line = format!(
            "[{} ms, {}] {what}",
            self.ms(),
            chrono::Utc::now().format("%H:%M:%S%.3f")
        );
        eprintln!("FAILURE {line}");
        self.failures.lock().unwrap().push(line);
    }

    fn violation(&self, what: String) {
        let line = format!(
            "[{} ms, {}] {what}",
            self.ms(),
            chrono::Utc::now().format("%H:%M:%S%.3f")
        );
        eprintln!("VIOLATION {line}");
        self.violations.lock().unwrap().push(line);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn note_linked(&self, digest: &str, repo: &str) {
        self.linked
            .lock()
            .unwrap()
            .entry(digest.to_owned())
            .or_default()
            .insert(repo.to_owned());
    }

    /// Sends a write, retrying while the server answers 503 UNAVAILABLE
    /// (a GC fence); returns the first other answer.
    async fn write(&self, what: &str, make: impl Fn() -> reqwest::RequestBuilder) -> Reply {
        let mut attempts = 0;
        loop {
            let mut r = call(make()).await;
            r.refused = attempts;
            if r.status != 503 {
                return r;
            }
            if r.code() != "UNAVAILABLE" || !r.retry_after {
                self.fail(format!(
                    "{what}: 503 without UNAVAILABLE and Retry-After: {}",
                    r.text()
                ));
                return r;
            }
            bump(&self.n.retried_503);
            attempts += 1;
            if attempts > 100 {
                self.fail(format!("{what}: still 503 after {attempts} attempts"));
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10 + u64::from(attempts) * 5)).await;
        }
    }
}

/// How a blob was made present in the repository, and since when (the send
/// time of the request that did it: the server's own record is later).
struct Confirmed {
    digest: String,
    how: &'static str,
    at: Instant,
}

/// The docker push sequence for one blob: HEAD, else maybe mount, else
/// upload. `None` after a failure (already recorded).
async fn ensure_blob(
    sh: &Shared,
    rng: &mut StdRng,
    repo: &str,
    bytes: &[u8],
    digest: &str,
) -> Option<Confirmed> {
    let head = call(sh.c.head(&format!("/v2/{repo}/blobs/{digest}"))).await;
    let reupload = match head.status {
        200 => {
            if rng.random_bool(0.08) {
                bump(&sh.n.reuploads);
                true
            } else {
                bump(&sh.n.head_skips);
                sh.note_linked(digest, repo);
                return Some(Confirmed {
                    digest: digest.to_owned(),
                    how: "head",
                    at: head.sent,
                });
            }
        }
        404 => false,
        s => {
            sh.fail(format!("HEAD {repo} {digest}: {s} {}", head.text()));
            return None;
        }
    };
    if !reupload && rng.random_bool(0.4) {
        let from = {
            let linked = sh.linked.lock().unwrap();
            let known: Vec<&String> = linked
                .get(digest)
                .map(|s| s.iter().filter(|r| *r != repo).collect())
                .unwrap_or_default();
            if !known.is_empty() && rng.random_bool(0.8) {
                known[rng.random_range(0..known.len())].clone()
            } else {
                let others: Vec<&&str> = REPOS.iter().filter(|r| **r != repo).collect();
                others[rng.random_range(0..others.len())].to_string()
            }
        };
        let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let r = sh.write("mount", || sh.c.post(&path)).await;
        match r.status {
            201 => {
                bump(&sh.n.mounts);
                sh.note_linked(digest, repo);
                return Some(Confirmed {
                    digest: digest.to_owned(),
                    how: "mount",
                    at: r.sent,
                });
            }
            202 => {
                bump(&sh.n.mount_fallbacks);
                let Some(loc) = r.location else {
                    sh.fail(format!("mount fallback without Location: {}", r.text()));
                    return None;
                };
                let d = call(sh.c.delete(&loc)).await;
                if d.status != 204 {
                    sh.fail(format!("DELETE {loc}: {} {}", d.status, d.text()));
                    return None;
                }
            }
            s => {
                sh.fail(format!("mount {path}: {s} {}", r.text()));
                return None;
            }
        }
    }
    if !reupload {
        bump(&sh.n.uploads_after_head_404);
    }
    let at = upload(sh, rng, repo, bytes, digest).await?;
    bump(&sh.n.uploads);
    sh.note_linked(digest, repo);
    Some(Confirmed {
        digest: digest.to_owned(),
        how: if reupload { "reupload" } else { "upload" },
        at,
    })
}

/// Uploads a blob one of three ways; returns when the committing request
/// was sent.
async fn upload(
    sh: &Shared,
    rng: &mut StdRng,
    repo: &str,
    bytes: &[u8],
    digest: &str,
) -> Option<Instant> {
    sh.pushed_blobs.lock().unwrap().insert(digest.to_owned());
    let way = rng.random_range(0..10);
    if way < 3 {
        // One POST with the digest and the data.
        let path = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
        let r = sh
            .write("monolithic POST", || {
                sh.c.post(&path)
                    .header("content-type", "application/octet-stream")
                    .body(bytes.to_vec())
            })
            .await;
        if r.status != 201 {
            sh.fail(format!("POST {path}: {} {}", r.status, r.text()));
            return None;
        }
        return Some(r.sent);
    }
    let start = call(sh.c.post(&format!("/v2/{repo}/blobs/uploads/"))).await;
    let Some(mut loc) = start.location.clone().filter(|_| start.status == 202) else {
        sh.fail(format!(
            "POST upload {repo}: {} {}",
            start.status,
            start.text()
        ));
        return None;
    };
    let mut last: &[u8] = bytes;
    if way >= 6 {
        // Chunked: PATCH all but (sometimes) a last piece, then PUT.
        bump(&sh.n.chunked_uploads);
        let chunks = rng.random_range(1..=3usize);
        let keep_last = rng.random_bool(0.5);
        let patched = if keep_last {
            bytes.len() - bytes.len() / 4
        } else {
            bytes.len()
        };
        let step = patched.div_ceil(chunks).max(1);
        let mut offset = 0;
        while offset < patched {
            let end = (offset + step).min(patched);
            let r = call(
                sh.c.patch(&loc)
                    .header("content-type", "application/octet-stream")
                    .header("content-range", format!("{}-{}", offset, end - 1))
                    .body(bytes[offset..end].to_vec()),
            )
            .await;
            if r.status != 202 {
                sh.fail(format!("PATCH {loc}: {} {}", r.status, r.text()));
                return None;
            }
            if let Some(l) = r.location {
                loc = l;
            }
            offset = end;
        }
        last = &bytes[patched..];
    }
    let put = with_digest(&loc, digest);
    let r = sh
        .write("closing PUT", || {
            let rb = sh.c.put(&put);
            if last.is_empty() {
                rb
            } else {
                rb.header("content-type", "application/octet-stream")
                    .body(last.to_vec())
            }
        })
        .await;
    if r.status != 201 {
        let why = if r.refused > 0 && !last.is_empty() && r.code() == "DIGEST_INVALID" {
            // The server kept the body of a request it refused; resending
            // the request, as the 503 invites, then adds the body twice.
            "REFUSED CLOSING PUT NOT RETRYABLE: "
        } else {
            ""
        };
        sh.fail(format!(
            "{why}PUT {put} with a {}-byte body, after {} refusals (503): {} {}",
            last.len(),
            r.refused,
            r.status,
            r.text()
        ));
        return None;
    }
    Some(r.sent)
}

/// The digest a `MANIFEST_BLOB_UNKNOWN` error names, if any.
fn missing_blob(r: &Reply) -> Option<String> {
    let v = r.json();
    let error = &v["errors"][0];
    [&error["detail"]["digest"], &error["message"]]
        .into_iter()
        .filter_map(Value::as_str)
        .find_map(|text| {
            let at = text.rfind("sha256:")?;
            text.get(at..at + 71).map(str::to_owned)
        })
}

/// Pushes one image: layers from the pool, a fresh config, the manifest
/// under a tag (and sometimes a second tag).
async fn push_image(sh: &Shared, rng: &mut StdRng, pusher: usize, seq: u64) -> Option<()> {
    let repo = REPOS[rng.random_range(0..REPOS.len())];
    let tag = format!("t{}", rng.random_range(0..TAGS));
    let count = rng.random_range(1..=4usize);
    let picks = rand::seq::index::sample(rng, POOL, count).into_vec();
    let mut confirmed = Vec::new();
    let mut layers = Vec::new();
    for i in picks {
        let (bytes, digest) = (&sh.pool[i], &sh.pool_digests[i]);
        confirmed.push(ensure_blob(sh, rng, repo, bytes, digest).await?);
        layers.push(json!({"mediaType": LAYER_TYPE, "digest": digest, "size": bytes.len()}));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "pusher": pusher,
        "seq": seq,
        "nonce": rng.random::<u64>(),
    }))
    .unwrap();
    let config_digest = sha256(&config);
    confirmed.push(ensure_blob(sh, rng, repo, &config, &config_digest).await?);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    let digest = sha256(&manifest);
    let blobs: Vec<String> = confirmed.iter().map(|c| c.digest.clone()).collect();
    let mut tags = vec![tag];
    if rng.random_bool(0.3) {
        let second = format!("t{}", rng.random_range(0..TAGS));
        if second != tags[0] {
            tags.push(second);
        }
    }
    let mut stored = Vec::new();
    for (i, tag) in tags.iter().enumerate() {
        let r = put_manifest(sh, repo, tag, &manifest).await;
        if r.status == 201 {
            if i == 0 {
                bump(&sh.n.images_pushed);
            } else {
                bump(&sh.n.retags);
            }
            sh.manifests
                .lock()
                .unwrap()
                .insert((repo.to_owned(), digest.clone()), blobs.clone());
            stored.push(tag.clone());
            continue;
        }
        // The blob the server names, if it does; else the oldest.
        let named = missing_blob(&r);
        let since = confirmed
            .iter()
            .find(|c| Some(&c.digest) == named.as_ref())
            .map(|c| c.at)
            .unwrap_or_else(|| confirmed.iter().map(|c| c.at).min().expect("a config"));
        let age = r.received.duration_since(since);
        let steps: Vec<String> = confirmed
            .iter()
            .map(|c| {
                format!(
                    "{} {} at -{} ms",
                    c.how,
                    c.digest,
                    r.received.duration_since(c.at).as_millis()
                )
            })
            .collect();
        let what = format!(
            "PUT {repo}:{tag} {digest}, after {} refusals (503): {} {} after {} \
             (answered {} ms after confirming {})",
            r.refused,
            r.status,
            r.text(),
            steps.join(", "),
            age.as_millis(),
            named.as_deref().unwrap_or("the oldest blob"),
        );
        if r.status == 400 && r.code() == "MANIFEST_BLOB_UNKNOWN" && age >= GRACE {
            // The push took longer than the grace period: protection is
            // allowed to have ended.
            bump(&sh.n.expired_pushes);
            eprintln!("expired push (not a failure): {what}");
        } else if r.code() == "MANIFEST_BLOB_UNKNOWN" {
            sh.violation(what);
        } else {
            sh.fail(what);
        }
        break;
    }
    if stored.is_empty() {
        return None;
    }
    let mut live = sh.live.lock().unwrap();
    // The tags moved here from whatever they named before.
    for l in live.iter_mut().filter(|l| l.repo == repo) {
        l.tags.retain(|t| !stored.contains(t));
    }
    live.retain(|l| !l.tags.is_empty());
    live.push(Live {
        repo: repo.to_owned(),
        digest,
        tags: stored,
    });
    Some(())
}

async fn put_manifest(sh: &Shared, repo: &str, tag: &str, manifest: &[u8]) -> Reply {
    let path = format!("/v2/{repo}/manifests/{tag}");
    sh.write("manifest PUT", || {
        sh.c.put(&path)
            .header("content-type", OCI_MANIFEST)
            .body(manifest.to_vec())
    })
    .await
}

async fn pusher(sh: Arc<Shared>, seed: u64, id: usize) {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x100 + id as u64));
    let mut seq = 0;
    while !sh.stopped() {
        seq += 1;
        push_image(&sh, &mut rng, id, seq).await;
    }
}

async fn deleter(sh: Arc<Shared>, seed: u64, id: usize) {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x200 + id as u64));
    while !sh.stopped() {
        let pick = {
            let mut live = sh.live.lock().unwrap();
            if live.len() < MIN_LIVE {
                None
            } else {
                let i = rng.random_range(0..live.len());
                // The whole image (by digest) or one of its tags.
                let whole =
                    (live[i].tags.len() == 1 && rng.random_bool(0.5)) || rng.random_bool(0.2);
                if whole {
                    let l = live.swap_remove(i);
                    Some((l.repo, l.digest))
                } else {
                    let t = rng.random_range(0..live[i].tags.len());
                    let tag = live[i].tags.swap_remove(t);
                    let repo = live[i].repo.clone();
                    if live[i].tags.is_empty() {
                        live.swap_remove(i);
                    }
                    Some((repo, tag))
                }
            }
        };
        let Some((repo, reference)) = pick else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let r = call(sh.c.delete(&format!("/v2/{repo}/manifests/{reference}"))).await;
        match r.status {
            202 if reference.starts_with("sha256:") => bump(&sh.n.manifest_deletes),
            202 => bump(&sh.n.tag_deletes),
            // Deleted by the other deleter, or moved and deleted.
            404 => bump(&sh.n.delete_misses),
            s => sh.fail(format!("DELETE {repo} {reference}: {s} {}", r.text())),
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..25))).await;
    }
}

/// Pulls images the test believes exist. A manifest or blob may be deleted
/// in between (404); a 200 must carry the right bytes, and nothing may fail
/// on the server's side.
async fn puller(sh: Arc<Shared>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x300);
    while !sh.stopped() {
        let pick = {
            let live = sh.live.lock().unwrap();
            (!live.is_empty()).then(|| {
                let l = &live[rng.random_range(0..live.len())];
                (l.repo.clone(), l.digest.clone())
            })
        };
        let Some((repo, digest)) = pick else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if pull(&sh, &repo, &digest, true).await {
            bump(&sh.n.pulls);
        } else {
            bump(&sh.n.pull_races);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..20))).await;
    }
}

/// Pulls `repo@reference` completely; `false` if something was not found
/// and `tolerate_404` (anything else wrong is recorded).
async fn pull(sh: &Shared, repo: &str, reference: &str, tolerate_404: bool) -> bool {
    let r = call(
        sh.c.get(&format!("/v2/{repo}/manifests/{reference}"))
            .header("accept", OCI_MANIFEST),
    )
    .await;
    if r.status == 404 && tolerate_404 {
        return false;
    }
    if r.status != 200 {
        sh.fail(format!(
            "GET manifest {repo}:{reference}: {} {}",
            r.status,
            r.text()
        ));
        return false;
    }
    if reference.starts_with("sha256:") && sha256(&r.body) != reference {
        sh.fail(format!("GET manifest {repo}@{reference}: wrong bytes"));
        return false;
    }
    let m = r.json();
    let mut blobs = vec![
        m["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ];
    blobs.extend(
        m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| l["digest"].as_str().unwrap_or_default().to_owned()),
    );
    let mut complete = true;
    for d in blobs {
        let b = call(sh.c.get(&format!("/v2/{repo}/blobs/{d}"))).await;
        match b.status {
            200 if sha256(&b.body) == d => {}
            200 => sh.fail(format!("GET blob {repo} {d} ({reference}): wrong bytes")),
            404 if tolerate_404 => complete = false,
            s => {
                sh.fail(format!(
                    "GET blob {repo} {d} ({reference}): {s} {}",
                    b.text()
                ));
                complete = false;
            }
        }
    }
    complete
}

/// Starts a run (waiting out one already running) and returns its report.
async fn gc_run(sh: &Shared, node: &Client, body: &Value) -> Option<Value> {
    let id = loop {
        let r = call(node.post("/admin/gc").json(body)).await;
        match r.status {
            202 => break r.json()["id"].as_u64()?,
            409 if r.code() == "GC_RUNNING" => {
                sh.gc.lock().unwrap().refused_starts += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            s => {
                sh.fail(format!("POST /admin/gc {body}: {s} {}", r.text()));
                return None;
            }
        }
    };
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = call(node.get(&format!("/admin/gc/runs/{id}"))).await;
        if r.status != 200 {
            sh.fail(format!("GET run {id}: {} {}", r.status, r.text()));
            return None;
        }
        let report = r.json();
        if report["state"] == "running" {
            continue;
        }
        if report["state"] != "succeeded" {
            sh.fail(format!("run {id} did not succeed: {report}"));
            return None;
        }
        let mut t = sh.gc.lock().unwrap();
        t.runs += 1;
        let dry = report["dry_run"] == true;
        if dry {
            t.dry_runs += 1;
        } else {
            t.blobs_deleted += report["blobs_deleted"].as_u64().unwrap_or(0);
            t.manifests_deleted += report["manifests_deleted"].as_u64().unwrap_or(0);
            for b in report["deleted"]["blobs"].as_array().into_iter().flatten() {
                t.deleted_blobs
                    .insert(b["digest"].as_str().unwrap_or_default().to_owned());
            }
        }
        if body["delete_untagged"] == true {
            t.untagged_runs += 1;
        }
        t.fences += report["fences"].as_u64().unwrap_or(0);
        t.fence_max_ms = t
            .fence_max_ms
            .max(report["fence_max_ms"].as_f64().unwrap_or(0.0));
        t.writes_waited += report["writes_waited"].as_u64().unwrap_or(0);
        t.writes_refused += report["writes_refused"].as_u64().unwrap_or(0);
        let fences = report["fence_durations_ms"]
            .as_array()
            .into_iter()
            .flatten();
        t.fence_ms.extend(fences.filter_map(Value::as_f64));
        return Some(report);
    }
}

async fn collector(sh: Arc<Shared>, seed: u64, node: usize) {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x400 + node as u64));
    while !sh.stopped() {
        let body = json!({
            "dry_run": rng.random_bool(0.15),
            "delete_untagged": rng.random_bool(0.4),
            "grace": GRACE_ARG,
        });
        gc_run(&sh, &sh.collectors[node], &body).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..100))).await;
    }
}

/// Every tag in the registry, walking the catalog and the tag lists.
async fn all_tags(sh: &Shared) -> Vec<(String, String)> {
    let r = call(sh.c.get("/v2/_catalog?n=10000")).await;
    assert_eq!(r.status, 200, "catalog: {}", r.text());
    let mut out = Vec::new();
    for repo in r.json()["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        assert!(REPOS.contains(&repo), "unknown repository {repo}");
        let t = call(sh.c.get(&format!("/v2/{repo}/tags/list?n=10000"))).await;
        // A repository whose last tag just went may be listed without tags.
        if t.status == 404 {
            continue;
        }
        assert_eq!(t.status, 200, "tags of {repo}: {}", t.text());
        for tag in t.json()["tags"].as_array().into_iter().flatten() {
            out.push((repo.to_owned(), tag.as_str().unwrap().to_owned()));
        }
    }
    out
}

/// Panics with everything that went wrong, and the end of the log.
fn report_failures(sh: &Shared, log: &str, problems: &[String]) {
    let violations = sh.violations.lock().unwrap().clone();
    let failures = sh.failures.lock().unwrap().clone();
    if violations.is_empty() && failures.is_empty() && problems.is_empty() {
        return;
    }
    let tail: Vec<&str> = log.lines().rev().take(60).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    panic!(
        "{} manifest PUTs failed with MANIFEST_BLOB_UNKNOWN within the grace period of \
         confirming their blobs:\n{}\n{} other failures:\n{}\n{} problems with the final \
         state:\n{}\nserver log (last lines):\n{}",
        violations.len(),
        violations.join("\n"),
        failures.len(),
        failures.join("\n"),
        problems.len(),
        problems.join("\n"),
        tail.join("\n")
    );
}

/// What a soak runs against.
pub struct Setup<'a> {
    /// Where the load goes (a pooled client: one connection per request
    /// would run the loopback out of ports under this load).
    pub client: Client,
    /// Where collections start, each in a loop of its own.
    pub collectors: Vec<Client>,
    /// How long the load runs.
    pub load: Duration,
    /// Whether writes wait at a closed fence (one node), rather than being
    /// refused only when a sweep took what they write (a cluster).
    pub fenced: bool,
    /// A server on the blob store, to list what it holds.
    pub store: &'a Server,
    /// The logs to show with failures.
    pub log: &'a dyn Fn() -> String,
}

/// What a soak measured.
pub struct Measured {
    /// Collections that were not dry runs.
    pub runs: u64,
    pub blobs_deleted: u64,
    /// Every sweep's critical section, in milliseconds, sorted.
    pub fence_ms: Vec<f64>,
    /// Writes answered 503 (and retried).
    pub retried_503: u64,
    /// Writes refused, as the runs' reports count them.
    pub writes_refused: u64,
}

impl Measured {
    /// The `q` quantile (0..=1) of the sweeps' critical sections, in ms.
    pub fn fence_quantile(&self, q: f64) -> f64 {
        let n = self.fence_ms.len();
        if n == 0 {
            return 0.0;
        }
        let at = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
        self.fence_ms[at]
    }
}

/// `BERTH_SOAK_SEED`, else a random seed.
pub fn seed() -> u64 {
    std::env::var("BERTH_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().next_u64())
}

/// Runs the load, then checks the final state (see the module
/// documentation); panics with everything that went wrong.
pub async fn soak(setup: Setup<'_>, seed: u64) -> Measured {
    let collectors = setup.collectors.len();
    let sh = Arc::new(Shared::new(setup.client, setup.collectors, seed));
    let mut tasks = Vec::new();
    for id in 0..PUSHERS {
        tasks.push(tokio::spawn(pusher(sh.clone(), seed, id)));
    }
    for id in 0..DELETERS {
        tasks.push(tokio::spawn(deleter(sh.clone(), seed, id)));
    }
    tasks.push(tokio::spawn(puller(sh.clone(), seed)));
    for node in 0..collectors {
        tasks.push(tokio::spawn(collector(sh.clone(), seed, node)));
    }
    tokio::time::sleep(setup.load).await;
    sh.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("task panicked");
    }
    let load = Load {
        ms: sh.ms(),
        failures: sh.failures.lock().unwrap().len(),
        violations: sh.violations.lock().unwrap().len(),
    };

    // Every tag pulls completely.
    let tags = all_tags(&sh).await;
    for (repo, tag) in &tags {
        pull(&sh, repo, tag, false).await;
    }
    let end = final_state(&sh, setup.store).await;
    print_summary(&sh, seed, &load, &tags, &end);
    report_failures(&sh, &(setup.log)(), &end.problems);
    assert_meaningful(&sh, setup.fenced, &tags, &end);
    let gc = sh.gc.lock().unwrap();
    let mut fence_ms = gc.fence_ms.clone();
    fence_ms.sort_by(f64::total_cmp);
    Measured {
        runs: gc.runs - gc.dry_runs,
        blobs_deleted: gc.blobs_deleted,
        fence_ms,
        retried_503: get(&sh.n.retried_503),
        writes_refused: gc.writes_refused,
    }
}

impl Shared {
    /// The shared state of a soak, with its pool of layers made from `seed`.
    fn new(c: Client, collectors: Vec<Client>, seed: u64) -> Shared {
        let mut rng = StdRng::seed_from_u64(seed);
        let pool: Vec<Vec<u8>> = (0..POOL)
            .map(|i| {
                // Mostly small, a few large enough to be worth chunking.
                let len = if i % 8 == 0 {
                    rng.random_range(64 * 1024..256 * 1024)
                } else {
                    rng.random_range(256..8 * 1024)
                };
                let mut v = vec![0u8; len];
                rng.fill_bytes(&mut v);
                v
            })
            .collect();
        let pool_digests = pool.iter().map(|b| sha256(b)).collect();
        Shared {
            c,
            collectors,
            t0: Instant::now(),
            stop: AtomicBool::new(false),
            pool,
            pool_digests,
            n: Counters::default(),
            violations: Mutex::default(),
            failures: Mutex::default(),
            pushed_blobs: Mutex::default(),
            manifests: Mutex::default(),
            live: Mutex::default(),
            linked: Mutex::default(),
            gc: Mutex::default(),
        }
    }
}

/// How the load went.
struct Load {
    ms: u128,
    failures: usize,
    violations: usize,
}

/// The state after the last run.
struct End {
    last: Value,
    problems: Vec<String>,
    /// Blobs stored manifests reference.
    kept: BTreeSet<String>,
    /// Blobs the soak pushed that nothing references any more.
    garbage: usize,
}

/// Once the grace period is over, runs take all garbage: what is left is
/// exactly what the tagged manifests need. Two runs, one grace period
/// apart: on a cluster, the blobs a run's manifest deletions leave
/// unreferenced are protected for a grace period from then on (a client
/// may have confirmed them while they were referenced, which records
/// nothing), so only the next run takes them.
async fn final_state(sh: &Shared, store: &Server) -> End {
    let body = json!({"delete_untagged": true, "grace": GRACE_ARG});
    let mut last = Value::Null;
    for _ in 0..2 {
        tokio::time::sleep(GRACE + Duration::from_millis(200)).await;
        last = gc_run(sh, &sh.collectors[0], &body)
            .await
            .unwrap_or(Value::Null);
    }
    let mut problems: Vec<String> = Vec::new();
    let r = call(sh.collectors[0].get("/admin/gc/reclaimable")).await;
    if r.status != 200 || r.json()["blobs"] != 0 {
        problems.push(format!("reclaimable after the last run: {}", r.text()));
    }
    let present = stored_manifests(sh, &mut problems).await;
    // Each blob a stored manifest references, with one repository to see it in.
    let manifests = sh.manifests.lock().unwrap().clone();
    let mut referenced: HashMap<String, String> = HashMap::new();
    for key in &present {
        for b in &manifests[key] {
            referenced.insert(b.clone(), key.0.clone());
        }
    }
    let stored = store.stored_blobs().await;
    let garbage = check_blobs(sh, &referenced, &stored, &mut problems).await;
    let kept: BTreeSet<String> = referenced.keys().cloned().collect();
    for d in stored.symmetric_difference(&kept) {
        problems.push(format!(
            "blob {d}: stored {}, referenced {}",
            stored.contains(d),
            kept.contains(d)
        ));
    }
    let pushed = sh.pushed_blobs.lock().unwrap().clone();
    for d in sh.gc.lock().unwrap().deleted_blobs.difference(&pushed) {
        problems.push(format!("run deleted {d}, which the test never pushed"));
    }
    End {
        last,
        problems,
        kept,
        garbage,
    }
}

/// Which of the manifests ever stored are still there: exactly the tagged
/// ones (the untagged policy took the rest).
async fn stored_manifests(sh: &Shared, problems: &mut Vec<String>) -> HashSet<(String, String)> {
    let mut tagged = HashSet::new();
    for (repo, tag) in all_tags(sh).await {
        let r = call(
            sh.c.get(&format!("/v2/{repo}/manifests/{tag}"))
                .header("accept", OCI_MANIFEST),
        )
        .await;
        if r.status != 200 {
            problems.push(format!("GET {repo}:{tag} after the last run: {}", r.status));
        }
        tagged.insert((repo, sha256(&r.body)));
    }
    let manifests = sh.manifests.lock().unwrap().clone();
    let mut present = HashSet::new();
    for (repo, digest) in manifests.keys() {
        let r = call(sh.c.head(&format!("/v2/{repo}/manifests/{digest}"))).await;
        match r.status {
            200 => {
                present.insert((repo.clone(), digest.clone()));
            }
            404 => {}
            s => problems.push(format!("HEAD manifest {repo}@{digest}: {s}")),
        }
    }
    for (repo, digest) in present.symmetric_difference(&tagged) {
        problems.push(format!(
            "{repo}@{digest}: stored {}, tagged {}",
            present.contains(&(repo.clone(), digest.clone())),
            tagged.contains(&(repo.clone(), digest.clone()))
        ));
    }
    present
}

/// Every blob the soak pushed: referenced ones are served and stored,
/// the rest are gone from every repository and from the store. Returns
/// how many were garbage.
async fn check_blobs(
    sh: &Shared,
    referenced: &HashMap<String, String>,
    stored: &BTreeSet<String>,
    problems: &mut Vec<String>,
) -> usize {
    let pushed = sh.pushed_blobs.lock().unwrap().clone();
    let mut garbage = 0;
    for d in &pushed {
        if let Some(repo) = referenced.get(d) {
            let r = call(sh.c.head(&format!("/v2/{repo}/blobs/{d}"))).await;
            if r.status != 200 || !stored.contains(d) {
                problems.push(format!(
                    "referenced blob {d}: HEAD in {repo} {}, stored {}",
                    r.status,
                    stored.contains(d)
                ));
            }
            continue;
        }
        garbage += 1;
        for repo in REPOS {
            let r = call(sh.c.head(&format!("/v2/{repo}/blobs/{d}"))).await;
            if r.status != 404 {
                problems.push(format!("garbage blob {d}: HEAD in {repo} {}", r.status));
            }
        }
        if stored.contains(d) {
            problems.push(format!("garbage blob {d}: its bytes are still stored"));
        }
    }
    garbage
}

fn print_summary(sh: &Shared, seed: u64, load: &Load, tags: &[(String, String)], end: &End) {
    let n = &sh.n;
    let gc = sh.gc.lock().unwrap();
    println!(
        "gc soak: seed {seed}, load {} ms, {} images pushed (+{} second tags), \
         {} expired pushes; blobs: {} HEAD-skipped, {} mounted, {} mount fallbacks, \
         {} uploaded ({} chunked, {} re-uploads); deletes: {} tags, {} manifests, {} misses; \
         pulls: {} complete, {} raced; GC: {} runs ({} dry, {} untagged policy, {} starts refused), \
         {} blobs and {} manifests deleted, {} fences, fence max {:.1} ms; \
         503 retries {}; writes waited {}, refused {}; \
         final: {} tags, {} blobs kept, {} garbage gone, last run took {} blobs; \
         {} invariant violations, {} failures under load, {} after",
        load.ms,
        get(&n.images_pushed),
        get(&n.retags),
        get(&n.expired_pushes),
        get(&n.head_skips),
        get(&n.mounts),
        get(&n.mount_fallbacks),
        get(&n.uploads),
        get(&n.chunked_uploads),
        get(&n.reuploads),
        get(&n.tag_deletes),
        get(&n.manifest_deletes),
        get(&n.delete_misses),
        get(&n.pulls),
        get(&n.pull_races),
        gc.runs,
        gc.dry_runs,
        gc.untagged_runs,
        gc.refused_starts,
        gc.blobs_deleted,
        gc.manifests_deleted,
        gc.fences,
        gc.fence_max_ms,
        get(&n.retried_503),
        gc.writes_waited,
        gc.writes_refused,
        tags.len(),
        end.kept.len(),
        end.garbage,
        end.last["blobs_deleted"],
        load.violations,
        load.failures,
        sh.failures.lock().unwrap().len() - load.failures + end.problems.len(),
    );
}

/// The load did what it is meant to, so the checks checked something.
fn assert_meaningful(sh: &Shared, fenced: bool, tags: &[(String, String)], end: &End) {
    let n = &sh.n;
    let gc = sh.gc.lock().unwrap();
    assert!(get(&n.images_pushed) >= 50, "enough pushes");
    assert!(get(&n.head_skips) > 0, "layers reused through HEAD");
    assert!(get(&n.mounts) > 0, "layers reused through mounts");
    assert!(get(&n.uploads_after_head_404) > 0, "layers uploaded");
    assert!(get(&n.reuploads) > 0, "existing blobs uploaded again");
    assert!(get(&n.tag_deletes) > 0 && get(&n.manifest_deletes) > 0);
    assert!(gc.runs - gc.dry_runs >= 5, "enough runs");
    assert!(gc.blobs_deleted > 0, "runs under load deleted blobs");
    assert!(
        gc.manifests_deleted > 0,
        "the untagged policy deleted manifests"
    );
    assert!(
        end.garbage > 0,
        "some of what the test pushed became garbage"
    );
    assert!(
        !tags.is_empty() && !end.kept.is_empty(),
        "something is left to check"
    );
    if fenced {
        assert!(gc.writes_waited > 0, "writes met the fence");
    }
    assert!(
        get(&n.retried_503) >= gc.writes_refused,
        "every refused write was a 503 to a client"
    );
}
