//! On PostgreSQL, activity ids come from a sequence: a transaction that
//! drew id 10 may commit after one that drew 11. The deliverer must wait
//! for 10 (and deliver it first), and must give up an id whose
//! transaction never commits, after the back end's bound. Against a real
//! PostgreSQL and a real HTTP receiver.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use registry_core::blob::FsBlobStore;
use registry_core::coord::InProcess;
use registry_core::db::Db;
use registry_core::index::{Activity, Index};
use registry_core::model::{self, log};
use registry_core::observe::NoObserver;
use registry_core::{Clock, Error, Options, Registry};
use registry_hooks::{EndpointConfig, Hooks, NoHookObserver, compile_all};
use registry_pg::{PgBackend, PgOptions};
use testbed::{Mode, Receiver};

/// Short, so the test is: ids are given up 3 x this after a later one
/// was seen.
const HOLD: Duration = Duration::from_secs(3);

fn entry(tag: &str) -> Activity {
    Activity {
        id: 0,
        time_ms: 0,
        actor: "test".into(),
        action: "push".into(),
        repository: Some("team/app".into()),
        reference: Some(tag.into()),
        digest: None,
        detail: serde_json::Value::Null,
    }
}

/// The tags of the events delivered so far, in order.
fn delivered(r: &Receiver) -> Vec<String> {
    r.delivered()
        .iter()
        .map(|d| {
            let v: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
            v["data"]["tag"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn wait_for(r: &Receiver, n: usize, within: Duration) -> Vec<String> {
    let t = Instant::now();
    while delivered(r).len() < n && t.elapsed() < within {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    delivered(r)
}

/// Records `tag` in a transaction that holds its id for `hold` before it
/// commits; tells `drawn` once the id is drawn.
fn slow_write(
    db: &Db,
    tag: &'static str,
    hold: Duration,
    drawn: mpsc::Sender<()>,
) -> tokio::task::JoinHandle<registry_core::Result<u64>> {
    let db = db.clone();
    tokio::spawn(async move {
        db.write(move |tx| {
            let id = log::record_activity(tx, entry(tag), 1000)?;
            let _ = drawn.send(());
            std::thread::sleep(hold);
            Ok(id)
        })
        .await
    })
}

async fn record(db: &Db, tag: &'static str) -> registry_core::Result<u64> {
    db.write(move |tx| log::record_activity(tx, entry(tag), 1000))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_committed_out_of_order_are_delivered_in_order_and_lost_ids_are_given_up() {
    let pg = tokio::task::spawn_blocking(testbed::Postgres::start)
        .await
        .unwrap();
    let url = pg.create_database("hooks_order");
    let clock = Clock::system();
    let options = PgOptions {
        max_id_hold: HOLD,
        ..PgOptions::default()
    };
    let backend = PgBackend::connect(&url, model::TABLES, clock.clone(), options)
        .await
        .unwrap();
    let db = Db::new(Arc::new(backend), clock.clone());
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::new(
        Index::new(db.clone()),
        Arc::new(FsBlobStore::open(dir.path()).unwrap()),
        Arc::new(InProcess::new(
            Duration::from_millis(500),
            clock,
            Arc::new(NoObserver),
        )),
        Options::default(),
    ));
    assert_eq!(registry.activity_id_lag(), HOLD * 3);
    let receiver = Receiver::start(Mode::Up);
    let config: EndpointConfig = serde_json::from_value(serde_json::json!({
        "name": "order", "url": receiver.url(), "events": ["push"],
    }))
    .unwrap();
    let hooks = Hooks::start(
        registry,
        compile_all(&[config]).unwrap(),
        Arc::new(NoHookObserver),
    )
    .await
    .unwrap();

    // "a" draws its id first and commits last: "b" waits for it.
    let (tx, rx) = mpsc::channel();
    let a = slow_write(&db, "a", Duration::from_millis(1200), tx);
    tokio::task::spawn_blocking(move || rx.recv())
        .await
        .unwrap()
        .unwrap();
    let b_id = record(&db, "b").await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        delivered(&receiver),
        Vec::<String>::new(),
        "b went before a"
    );
    let a_id = a.await.unwrap().unwrap();
    assert!(a_id < b_id);
    assert_eq!(
        wait_for(&receiver, 2, Duration::from_secs(10)).await,
        ["a", "b"]
    );

    // "c" is rolled back, and "d" holds its id past the bound and is
    // refused: both ids are given up, "e" goes after the lag.
    let c = db
        .write(|tx| {
            log::record_activity(tx, entry("c"), 1000)?;
            Err::<(), _>(Error::Conflict("changed its mind".into()))
        })
        .await;
    assert!(c.is_err());
    let (tx, _rx) = mpsc::channel();
    let d = slow_write(&db, "d", HOLD + Duration::from_millis(500), tx);
    let refused = d.await.unwrap();
    assert!(
        matches!(refused, Err(Error::Unavailable(_))),
        "a transaction that held its id too long committed: {refused:?}"
    );
    let t = Instant::now();
    record(&db, "e").await.unwrap();
    assert_eq!(
        wait_for(&receiver, 3, Duration::from_secs(20)).await,
        ["a", "b", "e"]
    );
    let waited = t.elapsed();
    assert!(
        waited >= HOLD * 3 - Duration::from_millis(500),
        "a missing id was given up after {waited:?}, before the bound"
    );
    hooks.stop().await;
}
