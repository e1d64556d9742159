//! Power loss, not only kill -9: the registry keeps its data on the
//! power-cut layer (the `powercut` crate), which holds every write in memory
//! until it is fsynced. Concurrent clients push images with a shared layer
//! and delete some while garbage collections run a random pause apart with
//! no grace period; at a random moment the server is killed and the power
//! cut, which throws away everything not durable. After a remount,
//! `registry check` must find nothing missing, short, corrupt or
//! miscounted, and the restarted server must serve every image whose
//! manifest PUT it acknowledged and every upload whose data it acknowledged.
//!
//! Files without a row are the one disagreement a cut may leave (a blob
//! commit cut between its rename and its row; deletions by a sweep or by
//! reconciliation, which are not synced, undone): before a store is left,
//! one collection must remove every one of them, so that `registry check`
//! finds the stopped store clean.
//!
//! A few rounds run by default; `POWER_LOSS_ROUNDS=N` runs N. As root only
//! (mounting FUSE); elsewhere the tests say loudly that they were skipped.

mod harness;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::under_fire::{
    OpenUpload, OpenUploads, PushError, Pushed, assert_intact, try_push_image,
};
use harness::{Client, Server, default_log_level, random_bytes};
use powercut::{Mount, Unsynced};
use serde_json::{Value, json};

const DEFAULT_ROUNDS: usize = 4;
/// Rounds on one store before the next starts from an empty directory (so
/// both first start-ups and recoveries of recoveries are cut).
const ROUNDS_PER_STORE: usize = 5;
const CLIENTS: usize = 4;

/// What the clients of one round share.
#[derive(Default)]
struct Workload {
    /// Acknowledged images not (being) deleted: they must survive.
    expected: Mutex<Vec<Pushed>>,
    uploads: OpenUploads,
    shared_layer: Vec<u8>,
    /// A collection may be running (started, its end not yet seen).
    collecting: AtomicBool,
    figures: Mutex<Figures>,
}

#[derive(Default, Debug, Clone)]
struct Figures {
    acked: u64,
    refused: u64,
    deleted: u64,
    gc_runs: u64,
    lost: Unsynced,
    cuts_losing_something: u64,
    cuts_during_gc: u64,
    /// Blob commits whose answer the cut took (closing PUTs unanswered).
    commits_in_flight: u64,
    /// Files without a row found by the checks after the cuts.
    orphan_files: u64,
    /// Files without a row the collection that ends each store removed.
    orphans_reconciled: u64,
    uploads_checked: u64,
}

impl Figures {
    fn add(&mut self, o: &Figures) {
        self.acked += o.acked;
        self.refused += o.refused;
        self.deleted += o.deleted;
        self.gc_runs += o.gc_runs;
        self.lost.files += o.lost.files;
        self.lost.bytes += o.lost.bytes;
        self.lost.dirs += o.lost.dirs;
        self.cuts_losing_something += o.cuts_losing_something;
        self.cuts_during_gc += o.cuts_during_gc;
        self.commits_in_flight += o.commits_in_flight;
        self.orphan_files += o.orphan_files;
        self.orphans_reconciled += o.orphans_reconciled;
        self.uploads_checked += o.uploads_checked;
    }
}

/// A store on the layer: the server is declared first so that it dies
/// before the mount goes.
struct Store {
    server: Server,
    mount: Option<Mount>,
    root: PathBuf,
    shared_layer: Vec<u8>,
    expected: Vec<Pushed>,
    _tmp: tempfile::TempDir,
}

impl Store {
    /// A store on a fresh layer, its server started with `args`. The data
    /// directory does not exist yet: the server creates it on the layer.
    /// The log stays off the layer, so a cut does not take it.
    fn new(args: &[&str]) -> Store {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        for dir in ["mnt", "backing"] {
            std::fs::create_dir(root.join(dir)).unwrap();
        }
        let mount = Mount::start(&root.join("mnt"), &root.join("backing")).expect("mount");
        let data = root.join("mnt/data");
        let mut all = vec!["--data-dir", data.to_str().unwrap()];
        all.extend_from_slice(args);
        let server = Server::start_at(&root, &all, &default_log_level());
        Store {
            server,
            mount: Some(mount),
            root,
            shared_layer: random_bytes(50_000),
            expected: Vec::new(),
            _tmp: tmp,
        }
    }

    /// Cuts the power (the server is dead already: nothing changes in
    /// between), then mounts what survived; returns what the cut threw away.
    fn cut_and_reboot(&mut self) -> Unsynced {
        let mount = self.mount.take().unwrap();
        let lost = mount.cut().expect("cut");
        mount.unmount().expect("unmount after the cut");
        let fresh = Mount::start(&self.root.join("mnt"), &self.root.join("backing"));
        self.mount = Some(fresh.expect("mount after the cut"));
        lost
    }

    /// `registry check --verify-content` on the stopped store: nothing
    /// missing, short or corrupt, every count right. Returns how many files
    /// no row names.
    fn check(&self, when: &str) -> u64 {
        let (code, out) = self.server.check(&["--verify-content", "--json"]);
        let report: Option<Value> = out
            .find('{')
            .and_then(|at| {
                serde_json::Deserializer::from_str(&out[at..])
                    .into_iter()
                    .next()
            })
            .and_then(Result::ok);
        let report = report
            .unwrap_or_else(|| panic!("{when}: check printed no report (exit {code}):\n{out}"));
        for problem in ["missing", "wrong_size", "corrupt", "count_problems"] {
            assert_eq!(
                report[problem],
                json!([]),
                "{when}: check found {problem}:\n{report:#}"
            );
        }
        report["orphan_files"]
            .as_array()
            .map_or(0, |a| a.len() as u64)
    }

    async fn round(&mut self, round: usize) -> Figures {
        let work = Arc::new(Workload {
            expected: Mutex::new(std::mem::take(&mut self.expected)),
            shared_layer: self.shared_layer.clone(),
            ..Workload::default()
        });
        let c = self.server.client();
        let mut tasks = Vec::new();
        for id in 0..CLIENTS {
            tasks.push(tokio::spawn(client(c.clone(), id, round, work.clone())));
        }
        tasks.push(tokio::spawn(collector(c.clone(), work.clone())));
        tokio::time::sleep(Duration::from_millis(rand::random_range(200..1500))).await;

        self.server.kill();
        // Taken before a client waking from its pause marks an upload as
        // closing: those open now had their data acknowledged, no more.
        let open_uploads = work.uploads.0.lock().unwrap().clone();
        let collecting = work.collecting.load(Ordering::SeqCst);
        let lost = self.cut_and_reboot();
        for t in tasks {
            t.await.unwrap();
        }
        let mut figures = work.figures.lock().unwrap().clone();
        figures.lost = lost;
        figures.cuts_losing_something = u64::from(lost != Unsynced::default());
        figures.cuts_during_gc = u64::from(collecting);
        figures.commits_in_flight = open_uploads.values().filter(|u| u.closing).count() as u64;
        figures.orphan_files = self.check(&format!("round {round}"));

        self.server.restart();
        let c = self.server.client();
        self.expected = work.expected.lock().unwrap().clone();
        assert_intact(&c, &self.expected).await;
        figures.uploads_checked = assert_uploads_kept(&c, &open_uploads, round).await;
        self.assert_no_panic(&format!("round {round}"));
        figures
    }

    /// The end of a store: one collection removes every file a cut left
    /// without a row (and takes nothing an image needs), after which
    /// `registry check` finds the stopped store clean. Returns how many
    /// files it removed.
    async fn finish(mut self) -> u64 {
        let c = self.server.client();
        let report = c.run_gc(json!({})).await;
        assert_intact(&c, &self.expected).await;
        self.assert_no_panic("the last collection");
        self.server.terminate();
        let orphans = self.check("after the last collection");
        assert_eq!(orphans, 0, "the collection left files without a row");
        report["orphans_deleted"].as_u64().unwrap()
    }

    fn assert_no_panic(&self, when: &str) {
        let log = self.server.log();
        assert!(!log.contains("panicked"), "{when}: {log}");
    }
}

/// Every upload whose data was acknowledged and whose closing PUT was not
/// sent is still there, holding exactly the acknowledged bytes.
async fn assert_uploads_kept(c: &Client, open: &HashMap<String, OpenUpload>, round: usize) -> u64 {
    let mut checked = 0;
    for (location, u) in open.iter().filter(|(_, u)| !u.closing) {
        let res = c.get(location).send().await.unwrap();
        assert_eq!(
            res.status(),
            204,
            "round {round}: upload {location} of {} lost",
            u.repo
        );
        let range = res.headers()["range"].to_str().unwrap();
        assert_eq!(
            range,
            format!("0-{}", u.acked - 1),
            "round {round}: {location}"
        );
        checked += 1;
    }
    checked
}

/// Pushes images, and deletes one of its own acknowledged images after
/// every other push, until the server is gone.
async fn client(c: Client, id: usize, round: usize, work: Arc<Workload>) {
    let repo = format!("power/c{id}");
    for i in 0.. {
        if i % 2 == 1 && !delete_one(&c, &repo, &work).await {
            return;
        }
        let tag = format!("r{round}-{i}");
        let pushed = try_push_image(&c, &repo, &tag, &work.shared_layer, &work.uploads).await;
        match pushed {
            Ok((digest, blobs)) => {
                let p = Pushed {
                    repo: repo.clone(),
                    tag,
                    digest,
                    blobs,
                };
                work.expected.lock().unwrap().push(p);
                work.figures.lock().unwrap().acked += 1;
            }
            // A collection with no grace period can take a blob between its
            // upload and the manifest that needs it.
            Err(PushError::Refused(_)) => work.figures.lock().unwrap().refused += 1,
            Err(PushError::Gone(_)) => return,
        }
    }
}

/// Deletes a random acknowledged image of `repo` by digest; `false` once the
/// server is gone. The image stops being expected before the request goes.
async fn delete_one(c: &Client, repo: &str, work: &Workload) -> bool {
    let victim = {
        let mut expected = work.expected.lock().unwrap();
        let mine: Vec<usize> = (0..expected.len())
            .filter(|&i| expected[i].repo == repo)
            .collect();
        if mine.is_empty() {
            return true;
        }
        expected.remove(mine[rand::random_range(0..mine.len())])
    };
    let path = format!("/v2/{repo}/manifests/{}", victim.digest);
    match c.delete(&path).send().await {
        Err(_) => false,
        Ok(res) if res.status() == 202 => {
            work.figures.lock().unwrap().deleted += 1;
            true
        }
        Ok(_) => {
            work.expected.lock().unwrap().push(victim); // refused: still there
            true
        }
    }
}

/// Runs garbage collections, a random pause apart, until the server is
/// gone. With no grace period, a run back to back with the last one would
/// take the blobs of nearly every push before its manifest.
async fn collector(c: Client, work: Arc<Workload>) {
    loop {
        tokio::time::sleep(Duration::from_millis(rand::random_range(20..300))).await;
        // Set before asking: the run may start before its answer arrives.
        work.collecting.store(true, Ordering::SeqCst);
        let Ok(res) = c.post("/admin/gc").json(&json!({})).send().await else {
            return;
        };
        if res.status() != 202 {
            work.collecting.store(false, Ordering::SeqCst);
            continue;
        }
        let Ok(started) = res.json::<Value>().await else {
            return;
        };
        let run = format!("/admin/gc/runs/{}", started["id"]);
        loop {
            let Ok(res) = c.get(&run).send().await else {
                return;
            };
            let Ok(report) = res.json::<Value>().await else {
                return;
            };
            if report["state"] != "running" {
                work.collecting.store(false, Ordering::SeqCst);
                assert_eq!(report["state"], "succeeded", "{report:#}");
                work.figures.lock().unwrap().gc_runs += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_during_pushes_deletes_and_gc_loses_nothing_acknowledged() {
    if !powercut::usable_in_test("power_loss") {
        return;
    }
    let rounds: usize = std::env::var("POWER_LOSS_ROUNDS")
        .ok()
        .map(|v| v.parse().expect("POWER_LOSS_ROUNDS is a number"))
        .unwrap_or(DEFAULT_ROUNDS);
    let started = Instant::now();
    let mut total = Figures::default();
    let mut store = None;
    for round in 0..rounds {
        if round % ROUNDS_PER_STORE == 0 {
            if let Some(done) = store.take() {
                total.orphans_reconciled += Store::finish(done).await;
            }
            store = Some(Store::new(&["--gc-grace", "0s"]));
        }
        let figures = store.as_mut().unwrap().round(round).await;
        println!("round {round}: {figures:?}");
        total.add(&figures);
    }
    if let Some(done) = store {
        total.orphans_reconciled += done.finish().await;
    }
    println!(
        "{rounds} power cuts in {:.1} s: {total:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        total.acked >= rounds as u64,
        "too few pushes acknowledged to mean anything"
    );
    assert!(
        total.cuts_losing_something > 0,
        "no cut threw anything away"
    );
}

/// The secret that signs Berth's tokens is created at the first start: a
/// token issued then is still accepted after a power cut.
#[tokio::test]
async fn a_token_issued_before_a_power_cut_is_accepted_after_it() {
    if !powercut::usable_in_test("power_loss") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("registry.toml");
    let policy = "[auth]\nmode = \"token\"\n[[auth.access]]\nrepositories = \"**\"\n\
                  users = [\"anonymous\"]\nactions = [\"pull\"]\n";
    std::fs::write(&config, policy).unwrap();
    let mut store = Store::new(&["--config", config.to_str().unwrap()]);
    let token = |url: String| async move {
        let res = reqwest::Client::new()
            .get(format!("{url}/auth/token"))
            .query(&[("service", "berth"), ("scope", "repository:any/thing:pull")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    };
    let issued = token(store.server.url.clone()).await;

    store.server.kill();
    store.cut_and_reboot();
    store.server.restart();
    let bearer = store.server.client_as(Some(format!("Bearer {issued}")));
    let status = bearer.status(reqwest::Method::GET, "/v2/").await;
    assert_eq!(status, 200, "the token signed before the cut is refused");
}
