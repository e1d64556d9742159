//! The embedded back end on redb.
//!
//! Every table of the schema is a redb table of byte keys and byte values.
//! Reads open a redb read transaction (an MVCC snapshot) on the calling
//! thread and never wait for writers. Writes go to one writer thread
//! through a channel: it takes every job queued at that moment, runs them
//! in one write transaction, commits once (one fsync for the whole group),
//! and only then answers each caller, so a client is told a write
//! succeeded only after the commit that contains it is durable.
//!
//! A job that fails after changing something, or panics, must not take the
//! others down with it: the transaction is aborted and run again without
//! that job (its caller gets its error). A storage error fails the group,
//! keeping its kind (a full disk, a database being recovered) for every
//! caller; when redb latched the I/O error, the writer reopens the file
//! before it answers them (see [`reopen`]). A panic of the writer itself is
//! caught, logged and reported by [`Backend::health`] until a later group
//! commits.

mod migrate;
mod reopen;

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Bound;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use self::reopen::{RETRY_REOPEN, Reopenable};
use super::{
    Backend, Failure, Job, JobCtx, JobEnd, Outcome, Pair, ReadOps, Snapshot, Visitor, WriteOps,
};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::observe::Observer;

/// Most jobs one group commit takes; the rest wait for the next.
const MAX_GROUP: usize = 512;

/// Memory redb may use to cache index pages unless told otherwise. redb's
/// own default (1 GiB) lets a busy server's resident set grow with the
/// index file for a long time; the B-tree's interior pages, which every
/// lookup touches, fit many times over in this, and a page that misses is
/// one read from the operating system's page cache.
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

type Bytes = &'static [u8];

fn def(name: &'static str) -> TableDefinition<'static, Bytes, Bytes> {
    TableDefinition::new(name)
}

/// The core's error for a redb failure. A full disk is
/// [`Error::StorageFull`]; a database that refuses work after an earlier
/// I/O error (until it is reopened, which the writer does, see [`reopen`])
/// or that was closed under a reader is [`Error::Unavailable`]: both are
/// retryable, neither is an internal error.
pub(crate) fn redb_error(e: impl Into<redb::Error>) -> Error {
    match e.into() {
        redb::Error::Io(io) => Error::from(io),
        e @ (redb::Error::PreviousIo | redb::Error::DatabaseClosed) => Error::Unavailable(format!(
            "the index is recovering from a storage error ({e}); retry"
        )),
        e => Error::Storage(e.to_string()),
    }
}

impl From<redb::StorageError> for Error {
    fn from(e: redb::StorageError) -> Error {
        redb_error(e)
    }
}

impl From<redb::TableError> for Error {
    fn from(e: redb::TableError) -> Error {
        redb_error(e)
    }
}

impl From<redb::TransactionError> for Error {
    fn from(e: redb::TransactionError) -> Error {
        redb_error(e)
    }
}

impl From<redb::CommitError> for Error {
    fn from(e: redb::CommitError) -> Error {
        redb_error(e)
    }
}

/// What the writer thread reports about itself.
#[derive(Default)]
struct WriterState {
    /// Why the last group failed, until a group commits again.
    failure: Option<String>,
}

pub struct RedbBackend {
    db: Arc<Reopenable>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    state: Arc<Mutex<WriterState>>,
}

impl RedbBackend {
    /// Opens (creating if needed) the index file at `path` with a page cache
    /// of at most `cache_bytes`, upgrading an older layout, creating every
    /// table in `tables`, and reporting every group commit to `observer`.
    pub fn open(
        path: &Path,
        cache_bytes: usize,
        tables: &[&'static str],
        clock: Clock,
        observer: Arc<dyn Observer>,
    ) -> Result<RedbBackend> {
        let created = !path.exists();
        let db = reopen::open(path, cache_bytes)?;
        if created {
            // The new file's directory entry must be durable before any
            // commit to it is acknowledged.
            crate::blob::fsync_parent(path)?;
        }
        migrate::to_current(&db, tables)?;
        let db = Arc::new(Reopenable::new(db, path, cache_bytes));
        let (tx, rx) = mpsc::channel::<Job>();
        let state = Arc::new(Mutex::new(WriterState::default()));
        let writer = {
            let (db, state) = (db.clone(), state.clone());
            std::thread::Builder::new()
                .name("index-writer".into())
                .spawn(move || writer_loop(&db, &rx, &clock, observer.as_ref(), &state))
                .map_err(Error::from)?
        };
        Ok(RedbBackend {
            db,
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            state,
        })
    }
}

impl Drop for RedbBackend {
    fn drop(&mut self) {
        self.close();
    }
}

impl Backend for RedbBackend {
    fn snapshot(&self) -> Result<Snapshot> {
        Ok(Box::new(RedbSnapshot {
            txn: self.db.begin_read()?,
            tables: RefCell::new(HashMap::new()),
        }))
    }

    fn reads_block(&self) -> bool {
        false
    }

    fn submit(&self, job: Job) {
        let sender = self.jobs.lock().expect("jobs lock").clone();
        let rejected = match sender {
            Some(s) => s.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = rejected {
            (job.finish)(Outcome::Failed(Failure::storage("the index is closed")));
        }
    }

    fn health(&self) -> std::result::Result<(), String> {
        let writer = self.writer.lock().expect("writer lock");
        match writer.as_ref() {
            None => return Err("the index is closed".into()),
            Some(h) if h.is_finished() => return Err("the index writer stopped".into()),
            Some(_) => {}
        }
        if self.db.pending() {
            return Err(
                "the index is being reopened after a storage error; it answers once it is".into(),
            );
        }
        match &self.state.lock().expect("writer state").failure {
            Some(why) => Err(format!("the last index commit failed: {why}")),
            None => Ok(()),
        }
    }

    fn capacity(&self) -> Result<Option<crate::space::Usage>> {
        Ok(Some(crate::space::usage(self.db.dir())?))
    }

    fn close(&self) {
        self.jobs.lock().expect("jobs lock").take();
        if let Some(h) = self.writer.lock().expect("writer lock").take() {
            let _ = h.join();
        }
    }
}

/// A read transaction, with the tables it opened.
struct RedbSnapshot {
    txn: ReadTransaction,
    tables: RefCell<HashMap<&'static str, ReadOnlyTable<Bytes, Bytes>>>,
}

impl RedbSnapshot {
    fn with<T>(
        &self,
        name: &'static str,
        f: impl FnOnce(&ReadOnlyTable<Bytes, Bytes>) -> Result<T>,
    ) -> Result<T> {
        let mut tables = self.tables.borrow_mut();
        if !tables.contains_key(name) {
            tables.insert(name, self.txn.open_table(def(name))?);
        }
        f(&tables[name])
    }
}

fn get_in(t: &impl ReadableTable<Bytes, Bytes>, key: &[u8]) -> Result<Option<Vec<u8>>> {
    Ok(t.get(key)?.map(|g| g.value().to_vec()))
}

/// Lends up to `limit` rows within `range`, in the direction asked, to
/// `each` straight from redb's pages; answers how many it lent.
fn visit_in(
    t: &impl ReadableTable<Bytes, Bytes>,
    range: (Bound<&[u8]>, Bound<&[u8]>),
    reverse: bool,
    limit: usize,
    each: &mut Visitor<'_>,
) -> Result<usize> {
    let mut rows = t.range::<&[u8]>(range)?;
    let mut n = 0;
    while n < limit {
        let next = if reverse {
            rows.next_back()
        } else {
            rows.next()
        };
        let Some(row) = next else { break };
        let (k, v) = row?;
        each(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}

/// Up to `limit` rows within `range`, copied.
fn scan_in(
    t: &impl ReadableTable<Bytes, Bytes>,
    range: (Bound<&[u8]>, Bound<&[u8]>),
    reverse: bool,
    limit: usize,
) -> Result<Vec<Pair>> {
    let mut rows = Vec::with_capacity(limit.min(super::SCAN_PAGE));
    visit_in(t, range, reverse, limit, &mut |k, v| {
        rows.push((k.to_vec(), v.to_vec()));
        Ok(())
    })?;
    Ok(rows)
}

/// Reads through a table `with` opens: the same for snapshots and write
/// transactions, whose table types differ.
macro_rules! read_ops {
    ($t:ty) => {
        impl ReadOps for $t {
            fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
                self.with(table, |t| get_in(t, key))
            }

            fn scan(
                &self,
                table: &'static str,
                from: Bound<&[u8]>,
                to: Bound<&[u8]>,
                reverse: bool,
                limit: usize,
            ) -> Result<Vec<Pair>> {
                self.with(table, |t| scan_in(t, (from, to), reverse, limit))
            }

            fn visit(
                &self,
                table: &'static str,
                range: (Bound<&[u8]>, Bound<&[u8]>),
                reverse: bool,
                limit: usize,
                each: &mut Visitor<'_>,
            ) -> Result<usize> {
                self.with(table, |t| visit_in(t, range, reverse, limit, each))
            }
        }
    };
}

read_ops!(RedbSnapshot);

/// A write transaction, with the tables it opened (redb lets a table be
/// open once per transaction).
struct RedbWrite<'t> {
    txn: &'t WriteTransaction,
    tables: RefCell<HashMap<&'static str, redb::Table<'t, Bytes, Bytes>>>,
}

impl<'t> RedbWrite<'t> {
    fn with<T>(
        &self,
        name: &'static str,
        f: impl FnOnce(&mut redb::Table<'t, Bytes, Bytes>) -> Result<T>,
    ) -> Result<T> {
        let mut tables = self.tables.borrow_mut();
        if !tables.contains_key(name) {
            tables.insert(name, self.txn.open_table(def(name))?);
        }
        f(tables.get_mut(name).expect("opened above"))
    }
}

read_ops!(RedbWrite<'_>);

impl WriteOps for RedbWrite<'_> {
    fn put(&mut self, table: &'static str, key: &[u8], value: &[u8]) -> Result<()> {
        self.with(table, |t| {
            t.insert(key, value)?;
            Ok(())
        })
    }

    fn delete(&mut self, table: &'static str, key: &[u8]) -> Result<()> {
        self.with(table, |t| {
            t.remove(key)?;
            Ok(())
        })
    }

    fn next_id(&mut self, table: &'static str) -> Result<u64> {
        // One writer at a time: the last key is the largest id handed out.
        let last = self.with(table, |t| Ok(t.last()?.map(|(k, _)| k.value().to_vec())))?;
        let last = last.map_or(Ok(0), |k| <u64 as super::Key>::decode(&k))?;
        Ok(last + 1)
    }
}

/// The next queued job; `None` once the back end is closed. While a
/// reopen of the database is pending, retries it every [`RETRY_REOPEN`]
/// meanwhile.
fn next_job(
    rx: &mpsc::Receiver<Job>,
    db: &Reopenable,
    retry_at: &mut Option<Instant>,
) -> Option<Job> {
    loop {
        if !db.pending() {
            return rx.recv().ok();
        }
        match rx.recv_timeout(RETRY_REOPEN) {
            Ok(job) => return Some(job),
            Err(mpsc::RecvTimeoutError::Timeout) => db.recover(retry_at),
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

fn writer_loop(
    db: &Reopenable,
    rx: &mpsc::Receiver<Job>,
    clock: &Clock,
    observer: &dyn Observer,
    state: &Mutex<WriterState>,
) {
    let mut retry_at: Option<Instant> = None;
    while let Some(first) = next_job(rx, db, &mut retry_at) {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let writes = group.len();
        let started = Instant::now();
        // The finishers go into the group runner; if the runner itself
        // panics, the jobs it still held are dropped and their callers learn
        // it from their closed channels.
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| run_group(db, group, clock, state)));
        match result {
            Ok(Ok(())) => observer.index_commit(started.elapsed(), writes),
            Ok(Err((group, why))) => {
                tracing::error!(error = %why, writes, "index commit failed");
                // The state is set, and the database reopened if it latched
                // the error, before anyone is answered: a caller that learns
                // of the failure sees it in `health`, and its next request
                // meets the reopened database.
                state.lock().expect("writer state").failure = Some(why.to_string());
                db.recover(&mut retry_at);
                for job in group {
                    (job.finish)(Outcome::Failed(why.clone()));
                }
            }
            Err(p) => {
                let why = format!(
                    "the index writer panicked: {}",
                    super::panic_message(p.as_ref())
                );
                tracing::error!(error = %why, "index commit failed");
                state.lock().expect("writer state").failure = Some(why);
            }
        }
    }
}

/// A group that did not commit: its jobs, still to be answered, and why.
type Failed = (Vec<Job>, Failure);

/// Runs a group of jobs in one transaction, redoing it without any job
/// that failed half way. Answers every job of a group that commits (or is
/// left empty); hands back those of a group that fails.
fn run_group(
    db: &Reopenable,
    mut group: Vec<Job>,
    clock: &Clock,
    state: &Mutex<WriterState>,
) -> std::result::Result<(), Failed> {
    let failed = |e: Error| Failure::of(&e);
    let db = match db.current() {
        Ok(db) => db,
        Err(e) => return Err((group, failed(e))),
    };
    loop {
        let txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => return Err((group, failed(e.into()))),
        };
        let ctx = JobCtx {
            now_ms: clock.now_ms(),
            shard: 0,
        };
        let ends: Vec<JobEnd> = {
            let mut w = RedbWrite {
                txn: &txn,
                tables: RefCell::new(HashMap::new()),
            };
            group.iter_mut().map(|job| (job.run)(&mut w, ctx)).collect()
        };
        if let Some(JobEnd::Fatal(why)) = ends.iter().find(|e| matches!(e, JobEnd::Fatal(_))) {
            let _ = txn.abort();
            return Err((group, why.clone()));
        }
        if ends.contains(&JobEnd::Poisoned) {
            let _ = txn.abort();
            let mut kept = Vec::with_capacity(group.len());
            for (job, end) in group.into_iter().zip(ends) {
                if end == JobEnd::Poisoned {
                    (job.finish)(Outcome::Excluded);
                } else {
                    kept.push(job);
                }
            }
            if kept.is_empty() {
                return Ok(());
            }
            group = kept;
            continue;
        }
        return match txn.commit() {
            Ok(()) => {
                state.lock().expect("writer state").failure = None;
                for job in group {
                    (job.finish)(Outcome::Committed);
                }
                Ok(())
            }
            Err(e) => Err((group, failed(e.into()))),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, Reads, Table, codec, prefix};
    use crate::observe::NoObserver;

    const T: Table<String, u64> = Table::new("t");

    fn open(dir: &tempfile::TempDir) -> Db {
        open_with(dir, &["t"])
    }

    fn open_with(dir: &tempfile::TempDir, tables: &[&'static str]) -> Db {
        let clock = Clock::system();
        let backend = RedbBackend::open(
            &dir.path().join("i.redb"),
            1 << 20,
            tables,
            clock.clone(),
            Arc::new(NoObserver),
        )
        .unwrap();
        Db::new(Arc::new(backend), clock)
    }

    /// Jobs of one group commit: one that fails after writing and one that
    /// panics are taken out; the others commit.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_failing_job_does_not_fail_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        let mut waiting = Vec::new();
        for i in 0..30u64 {
            let db = db.clone();
            waiting.push(tokio::spawn(async move {
                db.write(move |tx| {
                    let key = format!("k{i}");
                    tx.put(T, &key, &i)?;
                    match i % 10 {
                        3 => Err(Error::Conflict("refused after writing".into())),
                        7 => panic!("a bug in job {i}"),
                        _ => Ok(i),
                    }
                })
                .await
            }));
        }
        for (i, w) in waiting.into_iter().enumerate() {
            let r = w.await.unwrap();
            match i % 10 {
                3 => assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}"),
                7 => assert!(matches!(r, Err(Error::Bug(_))), "{r:?}"),
                _ => assert_eq!(r.unwrap(), i as u64),
            }
        }
        let stored: Vec<u64> = db
            .read(|s| s.scan_all(T).map(|e| e.map(|(_, v)| v)).collect())
            .await
            .unwrap();
        let mut want: Vec<u64> = (0..30).filter(|i| i % 10 != 3 && i % 10 != 7).collect();
        let mut got = stored;
        want.sort();
        got.sort();
        assert_eq!(got, want, "only the failed jobs' writes are missing");
        assert_eq!(db.health(), Ok(()));
    }

    /// A storage failure fails the group and turns health red until a
    /// group commits again.
    #[tokio::test]
    async fn a_storage_failure_is_reported_until_a_commit_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        let r = db
            .write(|_| -> Result<()> { Err(Error::Storage("disk on fire".into())) })
            .await;
        assert!(matches!(r, Err(Error::Storage(_))), "{r:?}");
        assert!(db.health().unwrap_err().contains("disk on fire"));
        db.write(|tx| tx.put(T, "a", &1)).await.unwrap();
        assert_eq!(db.health(), Ok(()));
    }

    /// A full disk and a latched or closed database are retryable, each
    /// kept as such through a failed group commit; the rest is storage.
    #[test]
    fn redb_errors_are_classified() {
        let full = redb::StorageError::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(redb_error(full), Error::StorageFull(_)));
        for latched in [
            redb::StorageError::PreviousIo,
            redb::StorageError::DatabaseClosed,
        ] {
            assert!(matches!(redb_error(latched), Error::Unavailable(_)));
        }
        let other = redb_error(redb::StorageError::Corrupted("x".into()));
        assert!(matches!(other, Error::Storage(_)));
        for e in [
            Error::StorageFull("full".into()),
            Error::Unavailable("reopening".into()),
            Error::Storage("broken".into()),
        ] {
            let kept = Failure::of(&e).error();
            assert_eq!(std::mem::discriminant(&kept), std::mem::discriminant(&e));
            assert_eq!(kept.to_string(), e.to_string());
        }
    }

    /// A full disk met inside a transaction fails the group as "storage
    /// full" for its caller, and health says so until a commit succeeds.
    #[tokio::test]
    async fn a_full_disk_keeps_its_kind_through_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        let r = db
            .write(|_| -> Result<()> {
                Err(std::io::Error::from_raw_os_error(libc::ENOSPC).into())
            })
            .await;
        assert!(matches!(r, Err(Error::StorageFull(_))), "{r:?}");
        assert!(db.health().unwrap_err().contains("storage is full"));
        assert!(db.capacity().unwrap().unwrap().total_bytes > 0);
        db.write(|tx| tx.put(T, "a", &1)).await.unwrap();
        assert_eq!(db.health(), Ok(()));
    }

    /// Scans lend rows page by page (more rows than one page, a first
    /// fetch sized smaller, keys only, key tails, reverse) and see the same
    /// rows in a snapshot and in a write transaction.
    #[tokio::test]
    async fn scans_cross_pages_in_every_shape() {
        const PAIRS: Table<(String, String), u64> = Table::new("p");
        let dir = tempfile::tempdir().unwrap();
        let db = open_with(&dir, &["p"]);
        let n = 3 * crate::db::SCAN_PAGE as u64 + 7;
        db.write(move |tx| {
            for i in 0..n {
                tx.put(PAIRS, ("a", &format!("{i:05}")), &i)?;
                tx.put(PAIRS, ("b", &format!("{i:05}")), &(i + n))?;
            }
            Ok(())
        })
        .await
        .unwrap();
        fn check(r: &impl Reads, n: u64) -> Result<()> {
            let a = prefix(&["a"]);
            let rows: Vec<((String, String), u64)> =
                r.scan_prefix(PAIRS, &a).sized(10).collect::<Result<_>>()?;
            assert_eq!(rows.len() as u64, n);
            assert!(
                rows.iter().enumerate().all(|(i, ((p, t), v))| {
                    p == "a" && *t == format!("{i:05}") && *v == i as u64
                })
            );
            let after = codec::key::<(String, String)>(("a", "00100"));
            let tails: Vec<String> = r
                .scan_prefix_tails::<_, _, String>(PAIRS, &a, Some(&after))
                .sized(3)
                .keys()
                .collect::<Result<_>>()?;
            let want: Vec<String> = (101..n).map(|i| format!("{i:05}")).collect();
            assert_eq!(tails, want);
            let back: Vec<u64> = r
                .scan_back(PAIRS, None)
                .map(|e| e.map(|(_, v)| v))
                .collect::<Result<_>>()?;
            let want: Vec<u64> = (0..2 * n).rev().collect();
            assert_eq!(back, want);
            Ok(())
        }
        db.read(move |s| check(s, n)).await.unwrap();
        db.write(move |tx| check(tx, n)).await.unwrap();
    }

    /// A "what if" transaction sees its own writes and changes nothing.
    #[tokio::test]
    async fn what_if_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        db.write(|tx| tx.put(T, "a", &1)).await.unwrap();
        let seen = db
            .what_if(|tx| {
                tx.put(T, "b", &2)?;
                tx.delete(T, "a")?;
                Ok((tx.get(T, "a")?, tx.get(T, "b")?))
            })
            .await
            .unwrap();
        assert_eq!(seen, (None, Some(2)));
        let now = db
            .read(|s| Ok((s.get(T, "a")?, s.get(T, "b")?)))
            .await
            .unwrap();
        assert_eq!(now, (Some(1), None));
    }
}
