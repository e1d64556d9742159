//! `registry migrate-index`: copies a single-node installation's embedded
//! index into an empty PostgreSQL database, so that nodes started with
//! `--index` on that database (and the same blobs) serve the same registry.
//!
//! The copy goes through the table interface on both sides: every table of
//! the model, a page of rows at a time, exactly as stored (keys and values
//! are the same bytes in every back end). Then the id sequences continue
//! after the copied keys, and the integrity check's recount runs against
//! the target: it must find every derived record (reference counts, the
//! unreferenced and dangling tables, counters, running totals) as the rules
//! would have written it.

use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use registry_core::Clock;
use registry_core::db::redb::RedbBackend;
use registry_core::db::{Backend, Db, Job, JobEnd, Outcome, Pair, SCAN_PAGE};
use registry_core::index::Index;
use registry_core::model;
use registry_core::observe::NoObserver;
use registry_http::human_bytes;
use registry_pg::{PgBackend, PgOptions};

use crate::store::redacted;

#[derive(Args)]
pub struct MigrateIndexArgs {
    /// The data directory of the stopped single-node installation (its
    /// index is `index.redb` there).
    #[arg(long)]
    pub from_dir: PathBuf,
    /// The empty PostgreSQL database to copy into,
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB`.
    #[arg(long)]
    pub to: String,
}

/// Most bytes of rows one transaction of the copy carries.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Page cache of the source while it is read once.
const SOURCE_CACHE_BYTES: usize = 64 << 20;

/// What was copied from one table.
struct Copied {
    table: &'static str,
    rows: u64,
    bytes: u64,
    /// The greatest key, when it is a number (an id).
    last_id: Option<u64>,
}

pub async fn migrate_index(args: MigrateIndexArgs) -> anyhow::Result<i32> {
    crate::init_logging(crate::config::LogFormat::Text);
    let started = Instant::now();
    let path = args.from_dir.join("index.redb");
    if !path.is_file() {
        bail!(
            "{} does not exist: --from-dir names the data directory",
            path.display()
        );
    }
    let clock = Clock::system();
    let source = RedbBackend::open(
        &path,
        SOURCE_CACHE_BYTES,
        model::TABLES,
        clock.clone(),
        Arc::new(NoObserver),
    )
    .with_context(|| {
        format!(
            "opening {} (is a server still running on it?)",
            path.display()
        )
    })?;
    let target = PgBackend::connect(&args.to, model::TABLES, clock.clone(), PgOptions::default())
        .await
        .with_context(|| format!("opening the index database {}", redacted(&args.to)))?;
    let (source, target) = (Arc::new(source), Arc::new(target));
    let copied = {
        let (source, target) = (source.clone(), target.clone());
        tokio::task::spawn_blocking(move || copy_all(&*source, &*target)).await??
    };
    source.close();
    for c in &copied {
        if let Some(last) = c.last_id {
            target.continue_ids_after(c.table, last).await?;
        }
    }
    let index = Index::new(Db::new(target.clone(), clock));
    let problems = index.recount(false).await?;
    index.close();
    print_summary(&args, &copied, &problems, started);
    Ok(if problems.is_empty() { 0 } else { 2 })
}

/// Refuses a database that holds any row, then copies every table.
fn copy_all(source: &dyn Backend, target: &dyn Backend) -> anyhow::Result<Vec<Copied>> {
    let existing = target.snapshot()?;
    for table in model::TABLES {
        if !existing
            .scan(table, Bound::Unbounded, Bound::Unbounded, false, 1)?
            .is_empty()
        {
            bail!(
                "the target database already holds an index (table {table} has rows): \
                 migrate into an empty database"
            );
        }
    }
    drop(existing);
    model::TABLES
        .iter()
        .map(|table| copy_table(source, target, table))
        .collect()
}

/// Copies one table a page at a time, each page in transactions of at
/// most [`MAX_BATCH_BYTES`].
fn copy_table(
    source: &dyn Backend,
    target: &dyn Backend,
    table: &'static str,
) -> anyhow::Result<Copied> {
    let mut copied = Copied {
        table,
        rows: 0,
        bytes: 0,
        last_id: None,
    };
    let mut after: Option<Vec<u8>> = None;
    loop {
        let from = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let page = source
            .snapshot()?
            .scan(table, from, Bound::Unbounded, false, SCAN_PAGE)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        let mut batch: Vec<Pair> = Vec::new();
        let mut batch_bytes = 0;
        for (k, v) in page {
            copied.rows += 1;
            copied.bytes += (k.len() + v.len()) as u64;
            batch_bytes += k.len() + v.len();
            batch.push((k, v));
            if batch_bytes >= MAX_BATCH_BYTES {
                put_rows(target, table, std::mem::take(&mut batch))?;
                batch_bytes = 0;
            }
        }
        put_rows(target, table, batch)?;
    }
    // Numbered tables (the activity log, the run history) have 8-byte keys;
    // on any other table the sequence is never used, so raising it is
    // harmless.
    copied.last_id = after
        .and_then(|k| <[u8; 8]>::try_from(k.as_slice()).ok())
        .map(u64::from_be_bytes);
    Ok(copied)
}

/// Writes `rows` into `table` in one transaction, from a blocking thread.
fn put_rows(target: &dyn Backend, table: &'static str, rows: Vec<Pair>) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (done, outcome) = std::sync::mpsc::channel();
    target.submit(Job {
        run: Box::new(move |ops, _| {
            for (k, v) in &rows {
                if ops.put(table, k, v).is_err() {
                    return JobEnd::Poisoned;
                }
            }
            JobEnd::Done
        }),
        finish: Box::new(move |o| {
            let _ = done.send(o);
        }),
    });
    match outcome.recv().context("the index database stopped")? {
        Outcome::Committed => Ok(()),
        Outcome::Excluded => bail!("writing rows of {table} failed"),
        Outcome::Failed(why) => bail!("writing rows of {table}: {why}"),
    }
}

fn print_summary(
    args: &MigrateIndexArgs,
    copied: &[Copied],
    problems: &[String],
    started: Instant,
) {
    let rows: u64 = copied.iter().map(|c| c.rows).sum();
    let bytes: u64 = copied.iter().map(|c| c.bytes).sum();
    println!(
        "copied {rows} rows ({}) from {} into {} in {:.1} s",
        human_bytes(bytes),
        args.from_dir.join("index.redb").display(),
        redacted(&args.to),
        started.elapsed().as_secs_f64()
    );
    for c in copied.iter().filter(|c| c.rows > 0) {
        let ids = c
            .last_id
            .map(|id| format!(", ids continue after {id}"))
            .unwrap_or_default();
        println!(
            "  {:<20} {:>10} rows  {:>10}{ids}",
            c.table,
            c.rows,
            human_bytes(c.bytes)
        );
    }
    if problems.is_empty() {
        println!("recount on the target: clean");
    } else {
        for p in problems {
            println!("recount on the target: {p}");
        }
        println!("the copy does not match the rules: do not serve from it");
    }
}
