//! Webhooks, end to end: the real server delivers its activity to a real
//! HTTP receiver on loopback that is down for a while, slow, or killed
//! under. Every event must arrive at least once, in id order, signed, with
//! the documented fields; a push never waits for an endpoint; a kill -9
//! between a change and its delivery loses nothing.

mod harness;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::{Client, OCI_MANIFEST, Server, sample};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use testbed::{Mode, Received, Receiver};

const SECRET: &str = "a-shared-secret";

/// A configuration file with one endpoint for `receiver`, with short
/// retries, and `extra` lines in the endpoint's table (or, before it,
/// top-level `lines`).
fn config(dir: &Path, receiver: &Receiver, top: &str, extra: &str) -> String {
    let path = dir.join("hooks.toml");
    let text = format!(
        "{top}\n[[webhooks]]\nname = \"ci\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
         backoff_min = \"50ms\"\nbackoff_max = \"300ms\"\n{extra}\n",
        receiver.url()
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn start(receiver: &Receiver, top: &str, extra: &str, more: &[&str]) -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let path = config(tmp.path(), receiver, top, extra);
    let mut args = vec!["--config", path.as_str()];
    args.extend_from_slice(more);
    Server::start_in(tmp, &args)
}

/// The events a receiver acknowledged, parsed, in order of arrival.
fn events(r: &Receiver) -> Vec<Value> {
    r.delivered()
        .iter()
        .map(|d| serde_json::from_slice(&d.body).expect("a JSON event"))
        .collect()
}

fn id(event: &Value) -> u64 {
    event["id"].as_str().unwrap().parse().unwrap()
}

/// Waits until the acknowledged events include every id of `want`.
async fn wait_for_ids(r: &Receiver, want: &BTreeSet<u64>, within: Duration) -> Vec<Value> {
    let t = Instant::now();
    loop {
        let got = events(r);
        let ids: BTreeSet<u64> = got.iter().map(id).collect();
        if want.is_subset(&ids) || t.elapsed() > within {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The activity log's entries (oldest first) whose action is delivered.
async fn activity(c: &Client) -> Vec<Value> {
    let log = c.json("/admin/activity?limit=1000").await;
    let mut entries: Vec<Value> = log["entries"].as_array().unwrap().clone();
    entries.retain(|e| e["action"] != "blob_delete");
    entries.reverse();
    entries
}

/// Checks the signature of one request against [`SECRET`].
fn assert_signed(r: &Received) {
    let header = r
        .header("berth-signature")
        .expect("a Berth-Signature header");
    let (t, mac) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",sha256="))
        .unwrap_or_else(|| panic!("malformed signature header {header:?}"));
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(format!("{t}.").as_bytes());
    m.update(&r.body);
    let want: String = m
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        mac,
        want,
        "signature of event {}",
        String::from_utf8_lossy(&r.body)
    );
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    assert!((-5..60).contains(&age), "signed at a strange time: {t}");
}

/// Ids never go backwards (a redelivery repeats the last one at most).
fn assert_in_order(events: &[Value]) {
    let ids: Vec<u64> = events.iter().map(id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] <= w[1]),
        "events out of order: {ids:?}"
    );
}

async fn metric(c: &Client, name: &str) -> f64 {
    sample(&c.text("/metrics").await, name, &["endpoint=\"ci\""])
}

async fn wait_metric(c: &Client, name: &str, at_least: f64) -> f64 {
    let t = Instant::now();
    loop {
        let v = metric(c, name).await;
        if v >= at_least || t.elapsed() > Duration::from_secs(15) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pushes, tag, manifest and repository deletes, a blob delete (not
/// delivered), a collection and a retention run.
async fn every_kind_of_change(c: &Client) -> String {
    let img = c.push_image("team/app", "v1", 1).await;
    let res = c
        .put_manifest("team/app", "v2", OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        c.status(reqwest::Method::DELETE, "/v2/team/app/manifests/v2")
            .await,
        202
    );
    let doomed = c.push_image("team/app", "v3", 1).await;
    let path = format!("/v2/team/app/manifests/{}", doomed.digest);
    assert_eq!(c.status(reqwest::Method::DELETE, &path).await, 202);
    let loose = c.push_blob("team/app", b"a blob no manifest needs").await;
    let path = format!("/v2/team/app/blobs/{loose}");
    assert_eq!(c.status(reqwest::Method::DELETE, &path).await, 202);
    c.push_image("team/old", "v1", 1).await;
    let res = c
        .delete("/admin/repositories/team/old")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    c.run_gc(json!({})).await;
    c.push_image("team/app", "v4", 1).await;
    let rules = json!({"rules": [{"name": "newest", "repositories": "team/**", "keep_last": 1}]});
    let res = c.put("/admin/retention").json(&rules).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let res = c.post("/admin/retention/run").send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    img.digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_in_order_and_signed_after_an_outage() {
    let receiver = Receiver::start(Mode::Status(503));
    let server = start(&receiver, "", "", &[]);
    let c = server.client();
    let v1 = every_kind_of_change(&c).await;
    let log = activity(&c).await;
    let kinds: BTreeSet<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    let all = [
        "push",
        "tag_delete",
        "manifest_delete",
        "repository_delete",
        "gc_run",
        "retention_run",
    ];
    assert_eq!(kinds, BTreeSet::from(all), "{log:#?}");
    assert!(wait_metric(&c, "berth_webhook_delivery_failures_total", 2.0).await >= 2.0);
    assert!(events(&receiver).is_empty());

    receiver.set(Mode::Up);
    let want: BTreeSet<u64> = log.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    let got = wait_for_ids(&receiver, &want, Duration::from_secs(20)).await;
    let ids: BTreeSet<u64> = got.iter().map(id).collect();
    assert_eq!(ids, want, "delivered {got:#?}");
    assert_in_order(&got);
    for r in receiver.delivered() {
        assert_signed(&r);
        assert_eq!(
            r.header("content-type"),
            Some("application/cloudevents+json; charset=utf-8")
        );
    }
    assert_fields(&got, &log, &v1);
    assert_eq!(
        wait_metric(&c, "berth_webhook_events_delivered_total", got.len() as f64).await,
        got.len() as f64
    );
    assert_admin_view(&c, &log).await;
}

/// Each event carries what its activity entry says, under the documented
/// names.
fn assert_fields(got: &[Value], log: &[Value], v1: &str) {
    let types = [
        ("push", "dev.berth.manifest.pushed"),
        ("tag_delete", "dev.berth.tag.deleted"),
        ("manifest_delete", "dev.berth.manifest.deleted"),
        ("repository_delete", "dev.berth.repository.deleted"),
        ("gc_run", "dev.berth.gc.finished"),
        ("retention_run", "dev.berth.retention.finished"),
    ];
    let source = got[0]["source"].as_str().unwrap();
    assert!(source.starts_with("urn:uuid:"), "{source}");
    for e in got {
        let entry = log
            .iter()
            .find(|l| l["id"].as_u64() == Some(id(e)))
            .unwrap();
        let action = entry["action"].as_str().unwrap();
        let want = types.iter().find(|(a, _)| *a == action).unwrap().1;
        assert_eq!(e["type"], want, "{e:#}");
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["source"], source);
        assert_eq!(e["datacontenttype"], "application/json");
        assert!(chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).is_ok());
        assert_eq!(e["data"]["actor"], entry["actor"]);
        assert_eq!(e["data"]["repository"], entry["repository"]);
    }
    let first = &got[0];
    assert_eq!(first["subject"], "team/app:v1");
    assert_eq!(first["data"]["tag"], "v1");
    assert_eq!(first["data"]["digest"], v1);
    assert_eq!(first["data"]["media_type"], OCI_MANIFEST);
    assert!(first["data"]["size"].as_u64().unwrap() > 100);
    let by_rule = got
        .iter()
        .find(|e| e["type"] == "dev.berth.tag.deleted" && e["data"]["rule"] == "newest")
        .expect("the retention run's tag delete");
    assert_eq!(by_rule["data"]["actor"], "retention:newest");
    let gc = got
        .iter()
        .find(|e| e["type"] == "dev.berth.gc.finished")
        .unwrap();
    assert_eq!(gc["data"]["state"], "succeeded");
    assert!(gc.get("subject").is_none());
    let repo = got
        .iter()
        .find(|e| e["type"] == "dev.berth.repository.deleted")
        .unwrap();
    assert_eq!(repo["subject"], "team/old");
}

/// `GET /admin/webhooks` shows where deliveries stand, never the secret.
async fn assert_admin_view(c: &Client, log: &[Value]) {
    let newest = log.last().unwrap()["id"].as_u64().unwrap();
    let t = Instant::now();
    loop {
        let text = c.text("/admin/webhooks").await;
        assert!(!text.contains(SECRET), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let hook = &v["webhooks"][0];
        assert_eq!(hook["name"], "ci");
        assert_eq!(hook["signed"], true);
        if hook["cursor"].as_u64() == Some(newest) || t.elapsed() > Duration::from_secs(10) {
            assert_eq!(hook["cursor"].as_u64(), Some(newest), "{hook:#}");
            assert_eq!(hook["pending"], 0);
            assert_eq!(hook["last_delivered_id"].as_u64(), Some(newest));
            assert!(hook["failures"].as_u64().unwrap() >= 2);
            assert_eq!(hook["last_error"], Value::Null);
            assert_eq!(hook["this_node"]["delivering"], true);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_never_slows_a_push() {
    // Each attempt hangs past a long timeout: a push that waited for its
    // event would take seconds.
    let receiver = Receiver::start(Mode::Slow(Duration::from_secs(8)));
    let server = start(&receiver, "", "timeout = \"5s\"", &[]);
    let c = server.client();
    let img = c.push_image("team/app", "v0", 1).await;
    // Measure while an attempt hangs.
    let t = Instant::now();
    while receiver.received().is_empty() && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        receiver.received().len(),
        1,
        "no attempt reached the endpoint"
    );
    let mut slowest = Duration::ZERO;
    for i in 1..=10 {
        let t = Instant::now();
        let res = c
            .put_manifest("team/app", &format!("v{i}"), OCI_MANIFEST, &img.manifest)
            .await;
        assert_eq!(res.status(), 201);
        slowest = slowest.max(t.elapsed());
    }
    assert_eq!(
        receiver.received().len(),
        1,
        "the first attempt did not hang through the pushes"
    );
    assert!(
        slowest < Duration::from_millis(1500),
        "a push took {slowest:?} while the endpoint hung"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_between_a_change_and_its_delivery_loses_nothing() {
    let receiver = Receiver::start(Mode::Closed);
    let mut server = start(&receiver, "", "", &[]);
    let img = server.client().push_image("team/app", "v1", 1).await;
    server.kill();
    server.restart();
    let c = server.client();
    let res = c
        .put_manifest("team/app", "v2", OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(res.status(), 201);
    receiver.set(Mode::Up);
    // Killed again while delivering (or right before).
    let res = c
        .put_manifest("team/app", "v3", OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(res.status(), 201);
    server.kill();
    server.restart();
    let c = server.client();
    let log = activity(&c).await;
    assert_eq!(log.len(), 3, "{log:#?}");
    let want: BTreeSet<u64> = log.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    let got = wait_for_ids(&receiver, &want, Duration::from_secs(20)).await;
    let tags: Vec<&str> = got
        .iter()
        .map(|e| e["data"]["tag"].as_str().unwrap())
        .collect();
    let ids: BTreeSet<u64> = got.iter().map(id).collect();
    assert_eq!(ids, want, "delivered {tags:?}");
    assert_in_order(&got);
    receiver.delivered().iter().for_each(assert_signed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_older_than_max_age_are_dropped_and_counted() {
    let receiver = Receiver::start(Mode::Status(500));
    let server = start(&receiver, "", "max_age = \"1s\"", &[]);
    let c = server.client();
    let img = c.push_image("team/app", "old", 1).await;
    let dropped = wait_metric(&c, "berth_webhook_events_dropped_total", 1.0).await;
    let view = c.text("/admin/webhooks").await;
    assert_eq!(dropped, 1.0, "{view}\n{}", server.log());
    receiver.set(Mode::Up);
    let res = c
        .put_manifest("team/app", "new", OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(res.status(), 201);
    let newest = activity(&c).await.last().unwrap()["id"].as_u64().unwrap();
    let got = wait_for_ids(
        &receiver,
        &BTreeSet::from([newest]),
        Duration::from_secs(10),
    )
    .await;
    let tags: Vec<&str> = got
        .iter()
        .map(|e| e["data"]["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["new"]);
    // The cursor (and the counters) move just after the 2xx answer.
    let delivered = wait_metric(&c, "berth_webhook_events_delivered_total", 1.0).await;
    assert_eq!(delivered, 1.0);
    assert_eq!(metric(&c, "berth_webhook_events_dropped_total").await, 1.0);
    let v = c.json("/admin/webhooks").await;
    assert_eq!(v["webhooks"][0]["dropped"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_the_log_keeps_what_an_endpoint_still_waits_for() {
    // The log keeps 3 entries, trimmed every 64: the endpoint is down for
    // 70 pushes.
    let receiver = Receiver::start(Mode::Status(503));
    let server = start(&receiver, "activity_retention = 3", "", &[]);
    let c = server.client();
    let img = c.push_image("team/app", "t0", 1).await;
    for i in 1..70 {
        let res = c
            .put_manifest("team/app", &format!("t{i}"), OCI_MANIFEST, &img.manifest)
            .await;
        assert_eq!(res.status(), 201);
    }
    receiver.set(Mode::Up);
    let want: BTreeSet<u64> = (1..=70).collect();
    let got = wait_for_ids(&receiver, &want, Duration::from_secs(20)).await;
    let ids: BTreeSet<u64> = got.iter().map(id).collect();
    assert_eq!(ids, want);
    assert_in_order(&got);
    // Once delivered, the entries are trimmed as before.
    for i in 70..140 {
        let res = c
            .put_manifest("team/app", &format!("t{i}"), OCI_MANIFEST, &img.manifest)
            .await;
        assert_eq!(res.status(), 201);
    }
    let entries = c.json("/admin/activity").await["entries"].clone();
    assert_eq!(entries.as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_deliver_one_ordered_stream() {
    let pg = tokio::task::spawn_blocking(testbed::Postgres::start)
        .await
        .unwrap();
    let url = pg.create_database("hooks");
    let receiver = Receiver::start(Mode::Status(503));
    let nodes = [
        start(&receiver, "", "", &["--index", &url]),
        start(&receiver, "", "", &["--index", &url]),
    ];
    // Concurrent pushes on both nodes (each image whole on one node: the
    // nodes keep their blobs apart here).
    let mut tasks = Vec::new();
    for n in 0..4 {
        let c = nodes[n % 2].client();
        tasks.push(tokio::spawn(async move {
            let img = c.push_image(&format!("team/app{n}"), "v0", 1).await;
            for i in 1..6 {
                let tag = format!("v{i}");
                let res = c
                    .put_manifest(&format!("team/app{n}"), &tag, OCI_MANIFEST, &img.manifest)
                    .await;
                assert_eq!(res.status(), 201);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    receiver.set(Mode::Up);
    let log = activity(&nodes[0].client()).await;
    assert_eq!(log.len(), 24);
    let want: BTreeSet<u64> = log.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    let got = wait_for_ids(&receiver, &want, Duration::from_secs(30)).await;
    let ids: BTreeSet<u64> = got.iter().map(id).collect();
    assert_eq!(ids, want);
    assert_in_order(&got);
    receiver.delivered().iter().for_each(assert_signed);
    let mut delivering = 0;
    for n in &nodes {
        let v = n.client().json("/admin/webhooks").await;
        if v["webhooks"][0]["this_node"]["delivering"] == true {
            delivering += 1;
        }
    }
    assert_eq!(delivering, 1, "one node delivers the endpoint");
}
