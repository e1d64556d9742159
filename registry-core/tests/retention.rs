//! Tag retention and immutable tags against a real `Registry` on every index
//! back end (the embedded file and PostgreSQL), with a frozen clock moved by
//! hand so push and pull times are exact.
//!
//! The table: tags pushed on given days, some pulled on given days; rules
//! that keep by count, by push age, by pull age and by pattern. Checked: the
//! dry run lists exactly what the real run then deletes, with the rule that
//! condemned each tag; the bytes it announces are what the deletions leave
//! unreferenced; immutable tags, and the only tag of an image an index
//! needs, are never deleted; a tag pushed again after it was judged stays.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use registry_core::blob::FsBlobStore;
use registry_core::coord::InProcess;
use registry_core::db::Db;
use registry_core::index::Index;
use registry_core::observe::NoObserver;
use registry_core::policy::{ImmutableRule, RetentionRule};
use registry_core::registry::policies::TagRules;
use registry_core::registry::retention::RetentionReport;
use registry_core::{Clock, Digest, Error, Options, Reference, Registry, RepoName, model};
use registry_pg::{PgBackend, PgOptions};
use serde_json::json;

const DAY: Duration = Duration::from_secs(24 * 3600);
const T0: u64 = 1_780_000_000_000;

struct Setup {
    registry: Registry,
    clock: Clock,
    _dir: tempfile::TempDir,
}

async fn registry(pg: Option<&testbed::Postgres>, rules: TagRules) -> Setup {
    let dir = tempfile::tempdir().expect("temporary directory");
    let clock = Clock::frozen_at(T0);
    let observer = Arc::new(NoObserver);
    let index = match pg {
        None => Index::open_redb_with(
            &dir.path().join("index.redb"),
            16 << 20,
            clock.clone(),
            observer.clone(),
        )
        .expect("opening the index file"),
        Some(pg) => {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let url = pg.create_database(&format!("retention_{}_{n}", std::process::id()));
            let backend =
                PgBackend::connect(&url, model::TABLES, clock.clone(), PgOptions::default())
                    .await
                    .expect("connecting to PostgreSQL");
            Index::new(Db::new(Arc::new(backend), clock.clone()))
        }
    };
    let blobs = Arc::new(FsBlobStore::open(dir.path().join("blobs")).expect("blob store"));
    let node = Arc::new(InProcess::new(Duration::ZERO, clock.clone(), observer));
    let registry = Registry::new(index, blobs, node, Options::default())
        .with_tag_rules(rules)
        .expect("rules compile");
    Setup {
        registry,
        clock,
        _dir: dir,
    }
}

fn repo(name: &str) -> RepoName {
    name.parse().expect("repository name")
}

fn tag(name: &str) -> Reference {
    name.parse().expect("tag")
}

async fn put_blob(r: &Registry, repo: &RepoName, bytes: Vec<u8>) -> (Digest, u64) {
    let digest = Digest::sha256_of(&bytes);
    let size = bytes.len() as u64;
    let body = futures::stream::once(async move { Ok(Bytes::from(bytes)) });
    r.put_blob(repo, &digest, Box::pin(body))
        .await
        .expect("blob stored");
    (digest, size)
}

/// Pushes an image with one layer of its own (`size` bytes) to `reference`.
async fn push(r: &Registry, repo_name: &str, reference: &str, size: usize) -> Digest {
    let name = repo(repo_name);
    let seed = format!("{repo_name}:{reference}");
    let layer: Vec<u8> = seed.bytes().cycle().take(size).collect();
    let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
    push_image(r, &name, reference, config, layer)
        .await
        .expect("manifest stored")
}

/// Pushes `config` and `layer` and a manifest over them to `reference`.
async fn push_image(
    r: &Registry,
    name: &RepoName,
    reference: &str,
    config: Vec<u8>,
    layer: Vec<u8>,
) -> Result<Digest, Error> {
    let (config, config_size) = put_blob(r, name, config).await;
    let (layer, layer_size) = put_blob(r, name, layer).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config.to_string(), "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer.to_string(), "size": layer_size}],
    });
    let body = Bytes::from(serde_json::to_vec(&manifest).expect("json"));
    r.put_manifest(name, &tag(reference), None, body, "tester")
        .await
        .map(|m| m.digest)
}

async fn tags(r: &Registry, name: &str) -> Vec<String> {
    r.tags(&repo(name), None, None).await.expect("tags").items
}

fn doomed(report: &RetentionReport) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = report
        .repositories
        .iter()
        .flat_map(|r| {
            r.tags
                .iter()
                .map(|t| (r.repository.clone(), t.tag.clone(), t.rule.clone()))
        })
        .collect();
    out.sort();
    out
}

fn rule(name: &str, repositories: &str) -> RetentionRule {
    RetentionRule {
        name: name.into(),
        repositories: repositories.into(),
        tags: vec![],
        keep: vec![],
        keep_last: None,
        keep_pushed_within: None,
        keep_pulled_within: None,
    }
}

fn rules() -> TagRules {
    TagRules {
        immutable: vec![ImmutableRule {
            name: Some("frozen".into()),
            repositories: "ci/**".into(),
            tags: vec!["frozen-*".into()],
        }],
        retention: vec![
            RetentionRule {
                keep_last: Some(2),
                keep: vec!["v*".into(), "latest".into()],
                ..rule("two-newest", "ci/**")
            },
            RetentionRule {
                keep_pulled_within: Some(7 * DAY),
                ..rule("pulled-week", "ci/**")
            },
            RetentionRule {
                tags: vec!["/^pr-[0-9]+$/".into()],
                keep_pushed_within: Some(3 * DAY),
                ..rule("fresh-prs", "ci/**")
            },
        ],
    }
}

/// Moves the frozen clock forward to `day` days after T0.
fn to_day(clock: &Clock, day: u64) {
    let at = T0 + day * DAY.as_millis() as u64;
    clock.advance(Duration::from_millis(at.saturating_sub(clock.now_ms())));
}

/// Pushes and pulls the table in day order, then stands on day 31.
async fn build_table(s: &Setup) {
    // (day, tag, pull?): a push, or (true) a pull of the tag's image.
    let table: &[(u64, &str, bool)] = &[
        (0, "v1.0", false),
        (1, "frozen-1", false),
        (2, "latest", false),
        (3, "build-1", false),
        (4, "build-2", false),
        (5, "pulled-1", false),
        (10, "build-1", true), // not within a week of day 31
        (20, "build-3", false),
        (25, "pr-1", false),
        (26, "pulled-1", true), // within a week of day 31
        (28, "pr-2", false),
        (29, "build-4", false),
        (30, "build-5", false),
    ];
    for (i, (day, t, pull)) in table.iter().enumerate() {
        to_day(&s.clock, *day);
        if *pull {
            s.registry
                .get_manifest(&repo("ci/app"), &tag(t), true)
                .await
                .expect("pull");
            s.registry.flush_pulls().await.expect("pulls recorded");
        } else {
            push(&s.registry, "ci/app", t, 1000 + i * 100).await;
        }
    }
    push(&s.registry, "other/app", "old", 500).await; // no rule covers it
    to_day(&s.clock, 31);
}

async fn the_table_of_tags(pg: Option<&testbed::Postgres>) {
    let s = registry(pg, rules()).await;
    build_table(&s).await;
    let r = &s.registry;
    let unreferenced_before = r.totals().await.expect("totals").unreferenced_bytes;

    let dry = r
        .run_retention(true, None, "test", "tester")
        .await
        .expect("dry run");
    // Kept: v1.0 and latest (pattern), frozen-1 (immutable), build-4 and
    // build-5 (two newest), pulled-1 (pulled day 26), pr-2 (pushed within
    // 3 days by the rule that applies to pr-*), other/app (no rule).
    let expected: Vec<(String, String, String)> = [
        ("build-1", "two-newest"),
        ("build-2", "two-newest"),
        ("build-3", "two-newest"),
        ("pr-1", "two-newest"),
    ]
    .iter()
    .map(|(t, rule)| ("ci/app".to_owned(), t.to_string(), rule.to_string()))
    .collect();
    assert_eq!(doomed(&dry), expected, "dry run: {dry:#?}");
    assert!(dry.bytes > 0, "the doomed images have layers of their own");
    assert_eq!(
        tags(r, "ci/app").await.len(),
        11,
        "a dry run deletes nothing"
    );

    let real = r
        .run_retention(false, None, "test", "tester")
        .await
        .expect("run");
    assert_eq!(
        doomed(&real),
        doomed(&dry),
        "the run deletes what the dry run listed"
    );
    assert_eq!(real.bytes, dry.bytes);
    let mut left = tags(r, "ci/app").await;
    left.sort();
    assert_eq!(
        left,
        [
            "build-4", "build-5", "frozen-1", "latest", "pr-2", "pulled-1", "v1.0"
        ]
    );
    assert_eq!(tags(r, "other/app").await, ["old"]);
    let unreferenced = r.totals().await.expect("totals").unreferenced_bytes;
    assert_eq!(
        unreferenced - unreferenced_before,
        real.bytes,
        "the bytes announced are what the deletions left unreferenced"
    );
    let last = r.last_retention(false).await.expect("last").expect("saved");
    assert_eq!(last, real);
    let again = r
        .run_retention(true, None, "test", "tester")
        .await
        .expect("dry run");
    assert!(
        again.repositories.is_empty(),
        "nothing left to delete: {again:#?}"
    );
}

#[tokio::test]
async fn retention_deletes_what_its_dry_run_listed_on_every_backend() {
    the_table_of_tags(None).await;
    let pg = testbed::Postgres::start();
    the_table_of_tags(Some(&pg)).await;
}

async fn immutable_tags(pg: Option<&testbed::Postgres>) {
    let s = registry(pg, rules()).await;
    let r = &s.registry;
    let first = push(r, "ci/app", "frozen-1", 100).await;
    let refused = |e: Error| match e {
        Error::Denied(msg) => assert!(msg.contains("frozen"), "names the rule: {msg}"),
        e => panic!("expected DENIED, got {e:?}"),
    };
    // Pushing the same manifest again is fine; another one is refused.
    push(r, "ci/app", "frozen-1", 100).await;
    let name = repo("ci/app");
    let moved = push_under(r, "ci/app", "frozen-1").await;
    refused(moved.expect_err("moving an immutable tag is refused"));
    refused(
        r.delete_manifest(&name, &tag("frozen-1"), "admin")
            .await
            .unwrap_err(),
    );
    let by_digest = Reference::Digest(first.clone());
    refused(
        r.delete_manifest(&name, &by_digest, "admin")
            .await
            .unwrap_err(),
    );
    refused(
        r.delete_repository(&name, false, "admin")
            .await
            .unwrap_err(),
    );
    refused(r.delete_repository(&name, true, "admin").await.unwrap_err());
    assert_eq!(r.resolve(&name, &tag("frozen-1")).await.unwrap(), first);
    // The administrator changes the rule first; then the tag moves.
    r.change_tag_rules(|t| t.immutable.clear())
        .await
        .expect("rules changed");
    push_under(r, "ci/app", "frozen-1")
        .await
        .expect("moved now");
    r.delete_manifest(&name, &tag("frozen-1"), "admin")
        .await
        .expect("deleted now");
}

/// Pushes a new image (its own layer) to `reference`, returning the error.
async fn push_under(r: &Registry, repo_name: &str, reference: &str) -> Result<Digest, Error> {
    let (config, layer) = (b"{\"another\":1}".to_vec(), b"another layer".to_vec());
    push_image(r, &repo(repo_name), reference, config, layer).await
}

#[tokio::test]
async fn immutable_tags_cannot_be_moved_or_deleted_on_every_backend() {
    immutable_tags(None).await;
    let pg = testbed::Postgres::start();
    immutable_tags(Some(&pg)).await;
}

/// The only tag of an image that an index in the repository lists is kept,
/// and a tag pushed again after the rules were read is not deleted.
#[tokio::test]
async fn retention_keeps_what_an_index_needs() {
    let s = registry(
        None,
        TagRules {
            immutable: vec![],
            retention: vec![RetentionRule {
                keep: vec!["multi".into()],
                ..rule("nothing-else", "**")
            }],
        },
    )
    .await;
    let r = &s.registry;
    let child = push(r, "a/b", "child", 300).await;
    let stored = r
        .get_manifest(&repo("a/b"), &tag("child"), true)
        .await
        .expect("child");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": child.to_string(), "size": stored.size}],
    });
    let body = Bytes::from(serde_json::to_vec(&index).expect("json"));
    r.put_manifest(&repo("a/b"), &tag("multi"), None, body, "tester")
        .await
        .expect("index stored");
    push(r, "a/b", "doomed", 200).await;
    let report = r
        .run_retention(false, None, "test", "tester")
        .await
        .expect("run");
    assert_eq!(
        doomed(&report),
        [("a/b".into(), "doomed".into(), "nothing-else".into())],
        "child stays: the index tagged multi needs it"
    );
    let mut left = tags(r, "a/b").await;
    left.sort();
    assert_eq!(left, ["child", "multi"]);
}
