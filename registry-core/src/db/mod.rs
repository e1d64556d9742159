//! The transactional table interface every index back end implements, and
//! the typed layer the rules are written against.
//!
//! A back end stores ordered byte-keyed tables and offers three things:
//! read snapshots ([`ReadOps`]), write transactions ([`WriteOps`]) run by
//! [`Backend::submit`], and liveness ([`Backend::health`]). Above it,
//! [`Table`] declares a table with the codecs of its keys and values,
//! [`Reads`] and [`Tx`] read and write typed rows, and [`Db`] runs closures
//! as snapshots, transactions, or "what if" transactions that are always
//! rolled back (an [`overlay::Overlay`] over a snapshot).
//!
//! Transactions are closures that may run more than once: a back end runs
//! a closure again when its transaction must be retried (a serialization
//! failure, or another request of the same group commit that failed half
//! way), so a closure computes from what it captured and from what it
//! reads, never from state it changed itself.

pub mod codec;
pub mod overlay;
pub mod redb;

use std::marker::PhantomData;
use std::ops::Bound;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};

pub use codec::{Key, Value, prefix};

use crate::clock::Clock;
use crate::error::{Error, Result};

/// Most rows one call to [`ReadOps::scan`] returns.
pub const SCAN_PAGE: usize = 256;

/// Most rows the first fetch of a [`Scan::sized`] scan asks for: a listing
/// keeps every row of its page anyway, so one range walk serves it.
pub const SIZED_FETCH: usize = 10_001;

/// A raw key/value pair.
pub type Pair = (Vec<u8>, Vec<u8>);

/// What [`ReadOps::visit`] lends each row to (key, value); an error stops
/// the scan.
pub type Visitor<'v> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'v;

/// Reads of one consistent snapshot (or of a transaction's own view).
pub trait ReadOps {
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Up to `limit` pairs with keys within `(from, to)`, in key order
    /// (descending with `reverse`).
    fn scan(
        &self,
        table: &'static str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Pair>>;

    /// Like [`ReadOps::scan`], but lends each row to `each` instead of
    /// returning copies; answers how many rows it visited. Back ends that
    /// can lend rows from their pages override it (a listing then copies
    /// only what it decodes); the default copies through `scan`.
    fn visit(
        &self,
        table: &'static str,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        reverse: bool,
        limit: usize,
        each: &mut Visitor<'_>,
    ) -> Result<usize> {
        let rows = self.scan(table, range.0, range.1, reverse, limit)?;
        for (k, v) in &rows {
            each(k, v)?;
        }
        Ok(rows.len())
    }
}

/// A write transaction: reads see its own writes.
pub trait WriteOps: ReadOps {
    fn put(&mut self, table: &'static str, key: &[u8], value: &[u8]) -> Result<()>;
    fn delete(&mut self, table: &'static str, key: &[u8]) -> Result<()>;
    /// A number greater than every key of `table` (a table keyed by `u64`)
    /// and than every number this call returned before for it (a run of a
    /// transaction that was rolled back and is run again may get its
    /// numbers again). Back ends with concurrent writers hand these out
    /// without making writers conflict (gaps are allowed; see
    /// [`Backend::id_lag`] for the order they become visible in).
    fn next_id(&mut self, table: &'static str) -> Result<u64>;
}

/// How one transaction closure ended, as the back end needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    /// Succeeded; commit it with the others.
    Done,
    /// Refused before changing anything: commit the others.
    Refused,
    /// Failed after changing something, or panicked: its changes must not
    /// be committed, so the transaction is redone without it.
    Poisoned,
    /// A storage failure: the whole transaction is lost.
    Fatal(Failure),
}

/// What a back end tells a job after its transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    /// Not committed: the job failed on its own (its answer says why).
    Excluded,
    /// The transaction failed.
    Failed(Failure),
}

/// Why a transaction failed, as each job in it is told. It keeps the kind
/// of the error: a full disk and a database being recovered stay
/// retryable for every caller, the rest is a storage error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    kind: FailureKind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    Full,
    Unavailable,
    Storage,
}

impl Failure {
    /// A storage failure with no more particular kind.
    pub fn storage(message: impl Into<String>) -> Failure {
        Failure {
            kind: FailureKind::Storage,
            message: message.into(),
        }
    }

    /// The failure an error of the back end stands for.
    pub fn of(e: &Error) -> Failure {
        let kind = match e {
            Error::StorageFull(_) => FailureKind::Full,
            Error::Unavailable(_) => FailureKind::Unavailable,
            _ => FailureKind::Storage,
        };
        let message = match e {
            Error::StorageFull(m) | Error::Unavailable(m) | Error::Storage(m) => m.clone(),
            e => e.to_string(),
        };
        Failure { kind, message }
    }

    /// The error each caller gets.
    pub fn error(&self) -> Error {
        let message = self.message.clone();
        match self.kind {
            FailureKind::Full => Error::StorageFull(message),
            FailureKind::Unavailable => Error::Unavailable(message),
            FailureKind::Storage => Error::Storage(message),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Context of one run of a job: the transaction's time and counter shard.
#[derive(Debug, Clone, Copy)]
pub struct JobCtx {
    pub now_ms: u64,
    /// Which shard of a sharded counter this transaction updates: back ends
    /// with concurrent writers spread counters over shards so transactions
    /// do not all update one row.
    pub shard: u8,
}

pub type JobFn = Box<dyn FnMut(&mut dyn WriteOps, JobCtx) -> JobEnd + Send>;
pub type Finish = Box<dyn FnOnce(Outcome) + Send>;

/// A transaction closure and how to answer its caller.
pub struct Job {
    pub run: JobFn,
    pub finish: Finish,
}

/// A snapshot that can travel to a blocking thread.
pub type Snapshot = Box<dyn ReadOps + Send>;

/// An index back end.
pub trait Backend: Send + Sync + 'static {
    /// A consistent read snapshot of the committed state.
    fn snapshot(&self) -> Result<Snapshot>;
    /// Whether a snapshot's reads may block for long (a network round trip
    /// each): such back ends are read from a blocking thread.
    fn reads_block(&self) -> bool;
    /// Queues a job; each job's `finish` is called exactly once.
    fn submit(&self, job: Job);
    /// `Err` with the reason while the back end cannot take writes.
    fn health(&self) -> std::result::Result<(), String>;
    /// The filesystem the back end writes to, measured now; `None` for a
    /// back end without one (a database server), which is the default.
    fn capacity(&self) -> Result<Option<crate::space::Usage>> {
        Ok(None)
    }
    /// Commits what is queued and stops taking writes.
    fn close(&self);
    /// How long after [`WriteOps::next_id`] handed a number out the row
    /// keyed by it may still become visible: zero where numbers are handed
    /// out in commit order (one writer), else a bound the back end keeps
    /// (a reader that meets a missing number waits this long before it
    /// takes it for one that will never be used).
    fn id_lag(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// A table: its name and the types of its keys and values.
pub struct Table<K, V> {
    pub name: &'static str,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Table<K, V> {
    pub const fn new(name: &'static str) -> Table<K, V> {
        Table {
            name,
            _types: PhantomData,
        }
    }
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for Table<K, V> {}

/// Typed reads, for snapshots and transactions alike.
pub trait Reads {
    fn raw(&self) -> &dyn ReadOps;

    /// The time of the transaction (or snapshot), unix ms.
    fn now_ms(&self) -> u64;

    fn get<K: Key, V: Value>(&self, t: Table<K, V>, k: K::Ref<'_>) -> Result<Option<V>> {
        let key = codec::key::<K>(k);
        self.raw()
            .get(t.name, &key)?
            .map(|b| V::decode(&b))
            .transpose()
    }

    fn contains<K: Key, V>(&self, t: Table<K, V>, k: K::Ref<'_>) -> Result<bool> {
        Ok(self.raw().get(t.name, &codec::key::<K>(k))?.is_some())
    }

    /// Rows whose key starts with `prefix` (see [`codec::prefix`]), in order.
    fn scan_prefix<K: Key, V: Value>(&self, t: Table<K, V>, prefix: &[u8]) -> Scan<'_, K, V> {
        self.scan_prefix_after(t, prefix, None)
    }

    /// Rows whose key starts with `prefix` and comes strictly after
    /// `after` (or all of them), in order.
    fn scan_prefix_after<K: Key, V: Value>(
        &self,
        t: Table<K, V>,
        prefix: &[u8],
        after: Option<&[u8]>,
    ) -> Scan<'_, K, V> {
        let (from, to) = prefix_bounds(prefix, after);
        Scan::new(self.raw(), t.name, from, to, false)
    }

    /// Like [`Reads::scan_prefix_after`], but each key is decoded without
    /// its `prefix` bytes, as `T`: the parts of the key the prefix leaves
    /// open (the tag of a `(repository, tag)` key), so a listing decodes
    /// only what it shows.
    fn scan_prefix_tails<K: Key, V: Value, T: Key>(
        &self,
        t: Table<K, V>,
        prefix: &[u8],
        after: Option<&[u8]>,
    ) -> Scan<'_, T, V> {
        let (from, to) = prefix_bounds(prefix, after);
        let mut scan = Scan::new(self.raw(), t.name, from, to, false);
        scan.skip = prefix.len();
        scan
    }

    /// Rows with keys strictly after `after` (or from the start), in order.
    fn scan_after<K: Key, V: Value>(&self, t: Table<K, V>, after: Option<&[u8]>) -> Scan<'_, K, V> {
        let from = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_vec()));
        Scan::new(self.raw(), t.name, from, Bound::Unbounded, false)
    }

    /// Rows with keys strictly before `before` (or from the end), newest
    /// first.
    fn scan_back<K: Key, V: Value>(&self, t: Table<K, V>, before: Option<&[u8]>) -> Scan<'_, K, V> {
        let to = before.map_or(Bound::Unbounded, |b| Bound::Excluded(b.to_vec()));
        Scan::new(self.raw(), t.name, Bound::Unbounded, to, true)
    }

    /// Every row of a table, in order (integrity checks only).
    fn scan_all<K: Key, V: Value>(&self, t: Table<K, V>) -> Scan<'_, K, V> {
        Scan::new(
            self.raw(),
            t.name,
            Bound::Unbounded,
            Bound::Unbounded,
            false,
        )
    }
}

/// A typed range scan that fetches pages of [`SCAN_PAGE`] rows as it goes,
/// decoding each row from the back end's own buffer.
pub struct Scan<'a, K, V> {
    ops: &'a dyn ReadOps,
    table: &'static str,
    from: Bound<Vec<u8>>,
    to: Bound<Vec<u8>>,
    reverse: bool,
    /// Decoded rows of the last fetch; values are `None` in a keys-only
    /// scan.
    page: std::collections::VecDeque<(K, Option<V>)>,
    done: bool,
    /// Rows the next fetch asks for (the first may be smaller than
    /// [`SCAN_PAGE`]: see [`Scan::sized`]).
    fetch: usize,
    /// Whether values are decoded (not in [`Scan::keys`]).
    values: bool,
    /// Leading key bytes not decoded (see [`Reads::scan_prefix_tails`]).
    skip: usize,
}

impl<'a, K: Key, V: Value> Scan<'a, K, V> {
    fn new(
        ops: &'a dyn ReadOps,
        table: &'static str,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Scan<'a, K, V> {
        Scan {
            ops,
            table,
            from,
            to,
            reverse,
            page: std::collections::VecDeque::new(),
            done: false,
            fetch: SCAN_PAGE,
            values: true,
            skip: 0,
        }
    }

    /// A scan whose caller expects to read about `rows` rows (a listing's
    /// page and one more): the first fetch asks for exactly that (up to
    /// [`SIZED_FETCH`]), so a page of 100 does not decode 256 rows and a
    /// page of 2,000 is one walk of the range, not eight.
    pub fn sized(mut self, rows: usize) -> Self {
        self.fetch = rows.clamp(1, SIZED_FETCH);
        self
    }

    fn refill(&mut self) -> Result<()> {
        let (fetch, values, skip) = (self.fetch, self.values, self.skip);
        let page = &mut self.page;
        page.reserve(fetch);
        let mut last = Vec::new();
        let n = self.ops.visit(
            self.table,
            (as_ref(&self.from), as_ref(&self.to)),
            self.reverse,
            fetch,
            &mut |k, v| {
                let value = if values { Some(V::decode(v)?) } else { None };
                page.push_back((K::decode(k.get(skip..).unwrap_or_default())?, value));
                last.clear();
                last.extend_from_slice(k);
                Ok(())
            },
        )?;
        self.fetch = SCAN_PAGE;
        self.done = n < fetch;
        if n > 0 {
            if self.reverse {
                self.to = Bound::Excluded(last);
            } else {
                self.from = Bound::Excluded(last);
            }
        }
        Ok(())
    }

    /// Only the keys (values are not decoded).
    pub fn keys(mut self) -> impl Iterator<Item = Result<K>> + 'a
    where
        K: 'a,
        V: 'a,
    {
        self.values = false;
        std::iter::from_fn(move || self.next_row().map(|r| r.map(|(k, _)| k)))
    }

    /// The next decoded row, fetching a page when needed.
    fn next_row(&mut self) -> Option<Result<(K, Option<V>)>> {
        loop {
            if let Some(row) = self.page.pop_front() {
                return Some(Ok(row));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.refill() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}

/// The range of keys starting with `prefix` and strictly after `after`.
fn prefix_bounds(prefix: &[u8], after: Option<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let from = match after {
        Some(a) if a >= prefix => Bound::Excluded(a.to_vec()),
        _ => Bound::Included(prefix.to_vec()),
    };
    let to = codec::prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded);
    (from, to)
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl<K: Key, V: Value> Iterator for Scan<'_, K, V> {
    type Item = Result<(K, V)>;

    fn next(&mut self) -> Option<Self::Item> {
        let row = self.next_row()?;
        Some(row.and_then(|(k, v)| match v {
            Some(v) => Ok((k, v)),
            // Unreachable: only `keys()` leaves values out, and it owns the scan.
            None => Err(Error::Storage(
                "a keys-only scan was asked for values".into(),
            )),
        }))
    }
}

/// A read snapshot, typed.
pub struct Snap<'a> {
    ops: &'a dyn ReadOps,
    now_ms: u64,
}

impl<'a> Snap<'a> {
    pub fn new(ops: &'a dyn ReadOps, now_ms: u64) -> Snap<'a> {
        Snap { ops, now_ms }
    }
}

impl Reads for Snap<'_> {
    fn raw(&self) -> &dyn ReadOps {
        self.ops
    }

    fn now_ms(&self) -> u64 {
        self.now_ms
    }
}

/// A write transaction, typed. Rules take `&mut Tx`.
pub struct Tx<'a> {
    ops: &'a mut dyn WriteOps,
    now_ms: u64,
    shard: u8,
    writes: usize,
    /// Blobs whose reference count dropped to zero in this transaction, in
    /// order (collections and previews report them).
    pub freed: Vec<String>,
    /// Whether the transaction appended to the activity log.
    logged: bool,
}

impl<'a> Tx<'a> {
    pub fn new(ops: &'a mut dyn WriteOps, ctx: JobCtx) -> Tx<'a> {
        Tx {
            ops,
            now_ms: ctx.now_ms,
            shard: ctx.shard,
            writes: 0,
            freed: Vec::new(),
            logged: false,
        }
    }

    /// Notes that this transaction appends to the activity log: once it
    /// commits, [`Db::activity`] watchers are told.
    pub fn note_activity(&mut self) {
        self.logged = true;
    }

    pub fn shard(&self) -> u8 {
        self.shard
    }

    /// Whether anything was written (a refusal must come before any write).
    pub fn wrote(&self) -> bool {
        self.writes > 0
    }

    pub fn put<K: Key, V: Value>(&mut self, t: Table<K, V>, k: K::Ref<'_>, v: &V) -> Result<()> {
        self.writes += 1;
        self.ops.put(t.name, &codec::key::<K>(k), &v.encode())
    }

    pub fn delete<K: Key, V>(&mut self, t: Table<K, V>, k: K::Ref<'_>) -> Result<()> {
        self.writes += 1;
        self.ops.delete(t.name, &codec::key::<K>(k))
    }

    /// Reads and deletes a row.
    pub fn take<K: Key, V: Value>(&mut self, t: Table<K, V>, k: K::Ref<'_>) -> Result<Option<V>> {
        let row = self.get(t, k)?;
        if row.is_some() {
            self.delete(t, k)?;
        }
        Ok(row)
    }

    pub fn next_id<V>(&mut self, t: Table<u64, V>) -> Result<u64> {
        self.ops.next_id(t.name)
    }
}

impl Reads for Tx<'_> {
    fn raw(&self) -> &dyn ReadOps {
        &*self.ops
    }

    fn now_ms(&self) -> u64 {
        self.now_ms
    }
}

/// Classifies how a closure ended for its back end.
fn job_end<R>(result: &std::thread::Result<Result<R>>, wrote: bool) -> JobEnd {
    match result {
        Err(_) => JobEnd::Poisoned,
        Ok(Ok(_)) => JobEnd::Done,
        // Inside a transaction, "unavailable" comes only from the database
        // itself (an earlier I/O error): as fatal as the rest.
        Ok(Err(
            e @ (Error::Storage(_) | Error::Io(_) | Error::StorageFull(_) | Error::Unavailable(_)),
        )) => JobEnd::Fatal(Failure::of(e)),
        Ok(Err(_)) if wrote => JobEnd::Poisoned,
        Ok(Err(_)) => JobEnd::Refused,
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// The index database: a back end, and the clock transactions are dated by.
#[derive(Clone)]
pub struct Db {
    backend: Arc<dyn Backend>,
    clock: Clock,
    /// Counts this process's commits that appended to the activity log.
    activity: Arc<watch::Sender<u64>>,
}

impl Db {
    pub fn new(backend: Arc<dyn Backend>, clock: Clock) -> Db {
        Db {
            backend,
            clock,
            activity: Arc::new(watch::channel(0).0),
        }
    }

    /// Changes each time a transaction of this process that appended to
    /// the activity log has committed (other nodes' are not seen here).
    pub fn activity(&self) -> watch::Receiver<u64> {
        self.activity.subscribe()
    }

    /// See [`Backend::id_lag`].
    pub fn id_lag(&self) -> std::time::Duration {
        self.backend.id_lag()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn health(&self) -> std::result::Result<(), String> {
        self.backend.health()
    }

    /// The filesystem the index writes to, if it has one.
    pub fn capacity(&self) -> Result<Option<crate::space::Usage>> {
        self.backend.capacity()
    }

    pub fn close(&self) {
        self.backend.close();
    }

    /// Runs `f` on a snapshot of the committed state.
    pub async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Snap<'_>) -> Result<R> + Send + 'static,
    {
        let now = self.clock.now_ms();
        if !self.backend.reads_block() {
            let snapshot = self.backend.snapshot()?;
            return f(&Snap::new(&*snapshot, now));
        }
        self.read_blocking(f).await
    }

    /// Runs `f` in a write transaction and answers once it is durable. The
    /// transaction may be shared with other callers (group commit), and `f`
    /// may run more than once (see the module documentation).
    pub async fn write<R, F>(&self, mut f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut Tx<'_>) -> Result<R> + Send + 'static,
    {
        let slot: Arc<Mutex<Option<Result<R>>>> = Arc::new(Mutex::new(None));
        let (tx, rx) = oneshot::channel::<Result<R>>();
        let run_slot = slot.clone();
        let logged = Arc::new(AtomicBool::new(false));
        let run_logged = logged.clone();
        let run: JobFn = Box::new(move |ops, ctx| {
            let mut t = Tx::new(ops, ctx);
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut t)));
            run_logged.store(t.logged, Ordering::SeqCst);
            let end = job_end(&result, t.wrote());
            let answer = match result {
                Ok(r) => r,
                Err(p) => Err(Error::Bug(format!(
                    "an index transaction failed: {}",
                    panic_message(p.as_ref())
                ))),
            };
            *run_slot.lock().expect("job slot") = Some(answer);
            end
        });
        let activity = self.activity.clone();
        let finish: Finish = Box::new(move |outcome| {
            if outcome == Outcome::Committed && logged.load(Ordering::SeqCst) {
                activity.send_modify(|n| *n = n.wrapping_add(1));
            }
            let answer = slot.lock().expect("job slot").take();
            let answer = match (outcome, answer) {
                (Outcome::Failed(why), _) => Err(why.error()),
                (_, Some(a)) => a,
                (_, None) => Err(Error::Storage("the transaction did not run".into())),
            };
            let _ = tx.send(answer);
        });
        self.backend.submit(Job { run, finish });
        rx.await
            .map_err(|_| Error::Unavailable("the index writer stopped".into()))?
    }

    /// Runs `f` in a transaction that is always rolled back, and returns
    /// what it computed: previews and dry runs use the real rules, so they
    /// cannot disagree with them. It waits for no writer.
    pub async fn what_if<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<R> + Send + 'static,
    {
        self.read_blocking(move |snap| overlay::run(snap, f)).await
    }

    /// Like [`Db::read`], always on a blocking thread: for reads that walk
    /// much (views, previews), so they hold no async worker.
    pub async fn read_blocking<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Snap<'_>) -> Result<R> + Send + 'static,
    {
        let now = self.clock.now_ms();
        let backend = self.backend.clone();
        blocking(move || {
            let snapshot = backend.snapshot()?;
            f(&Snap::new(&*snapshot, now))
        })
        .await
    }
}

/// Runs blocking work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Bug(format!("a blocking task failed: {e}")))?
}
