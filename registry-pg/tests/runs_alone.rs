//! A transaction that keeps losing to a stream of short ones still commits:
//! once its optimistic tries are spent it runs alone. Real PostgreSQL, two
//! back ends on one database (two nodes of a cluster).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use registry_core::Clock;
use registry_core::db::{Db, Reads, Table};
use registry_pg::{PgBackend, PgOptions};

const ITEMS: Table<u64, u64> = Table::new("items");
const FLAG: Table<String, u64> = Table::new("flag");
const TABLES: &[&str] = &["items", "flag"];

async fn node(url: &str, options: PgOptions) -> Arc<Db> {
    let clock = Clock::system();
    let backend = PgBackend::connect(url, TABLES, clock.clone(), options)
        .await
        .expect("connecting to PostgreSQL");
    Arc::new(Db::new(Arc::new(backend), clock))
}

/// Short transactions as fast as they go: each reads the flag the long
/// one writes and adds a row to the range the long one scans, which makes
/// every long transaction running beside them a serialization failure.
fn short_writers(
    db: &Arc<Db>,
    stop: &Arc<AtomicBool>,
    next: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..4)
        .map(|_| {
            let (db, stop, next) = (db.clone(), stop.clone(), next.clone());
            tokio::spawn(async move {
                let mut committed = 0;
                while !stop.load(Ordering::SeqCst) {
                    let key = next.fetch_add(1, Ordering::SeqCst);
                    db.write(move |tx| {
                        let flag = tx.get(FLAG, "flag")?.unwrap_or(0);
                        tx.put(ITEMS, key, &flag)
                    })
                    .await
                    .expect("a short write commits");
                    committed += 1;
                }
                committed
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_that_keeps_losing_runs_alone_and_commits() {
    let pg = testbed::Postgres::start();
    let url = pg.create_database("runs_alone");
    let shorts = node(&url, PgOptions::default()).await;
    let options = PgOptions {
        attempts: 3,
        optimistic_attempts: 2,
        ..PgOptions::default()
    };
    let long = node(&url, options).await;

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(1));
    let writers = short_writers(&shorts, &stop, &next);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let seen = long
        .write(move |tx| {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut rows = 0u64;
            for row in tx.scan_all(ITEMS) {
                row?;
                rows += 1;
            }
            // Long enough for many short commits to land beside it.
            std::thread::sleep(Duration::from_millis(150));
            tx.put(FLAG, "flag", &rows)?;
            Ok(rows)
        })
        .await
        .expect("the long transaction commits on its last try");
    let runs = runs.load(Ordering::SeqCst);
    assert_eq!(
        runs, 3,
        "both optimistic tries lost to the short writers, the one alone won"
    );

    // The short writers went on after it, and saw its flag.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut committed = 0;
    for w in writers {
        committed += w.await.expect("short writer");
    }
    let (rows, flagged) = shorts
        .read(move |snap| {
            let mut rows = 0u64;
            let mut flagged = 0u64;
            for row in snap.scan_all(ITEMS) {
                let (_, flag) = row?;
                rows += 1;
                flagged += u64::from(flag == seen);
            }
            Ok((rows, flagged))
        })
        .await
        .expect("reading back");
    assert_eq!(rows, committed, "every acknowledged short write is there");
    assert!(
        flagged > 0,
        "short writes after the long one read its flag ({seen} rows seen by it, {rows} in all)"
    );
    assert!(seen > 0 && seen < rows, "{seen} of {rows}");
}
