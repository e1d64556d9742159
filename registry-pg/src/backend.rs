//! The back end: a connection pool, snapshots, and transaction jobs.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use registry_core::db::overlay::Overlay;
use registry_core::db::{
    Backend, Failure, Job, JobCtx, JobEnd, Outcome, Pair, ReadOps, Snapshot, WriteOps,
};
use registry_core::observe::{NoObserver, Observer};
use registry_core::{Clock, Error, Result};
use tokio::runtime::Handle;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::sql;

/// How the back end uses the database.
#[derive(Debug, Clone, Copy)]
pub struct PgOptions {
    /// Connections in the pool.
    pub pool_size: usize,
    pub connect_timeout: Duration,
    /// Longest a request waits for a free connection.
    pub wait_timeout: Duration,
    /// Tries of a transaction that meets serialization failures.
    pub attempts: u32,
    /// Tries a transaction makes alongside other writers before it runs
    /// alone (see [`PgBackend`]'s `submit`).
    pub optimistic_attempts: u32,
    /// Rows each running total is spread over.
    pub shards: u8,
    /// Longest a transaction may take from drawing its first id
    /// (`next_id`) to sending COMMIT; one that would take longer is rolled
    /// back and answered `Unavailable`. Readers of the activity log wait
    /// [`PgBackend::id_lag`] for a missing id before skipping it.
    pub max_id_hold: Duration,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            pool_size: 32,
            connect_timeout: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(10),
            // From the eleventh try a transaction runs alone, where no
            // other writer can conflict with it: the tries after that are
            // a margin, not a wait for luck.
            attempts: 40,
            // Not fewer: running alone stops every writer of every node
            // for the length of one transaction, and a push into a hot
            // repository commonly needs a few tries.
            optimistic_attempts: 10,
            // As many as the pool has connections: each running
            // transaction of a node then has a shard of its own.
            shards: 32,
            max_id_hold: Duration::from_secs(20),
        }
    }
}

pub struct PgBackend {
    pool: Pool,
    handle: Handle,
    clock: Clock,
    options: PgOptions,
    /// Why the last transaction could not reach the database, until one does.
    failure: Arc<Mutex<Option<String>>>,
    /// Told about commits and about transactions run again.
    observer: Arc<dyn Observer>,
    /// Which counter shards this node's running transactions use.
    shards: Arc<ShardPicker>,
}

/// Hands each running transaction of this node a counter shard no other
/// one uses, while there are enough: two transactions that update one
/// shard row conflict, and with a random pick 8 writers among 16 shards
/// meet each other about a third of the time. Nodes still pick
/// independently (at random among the free shards), so only transactions
/// of different nodes can meet on a shard.
struct ShardPicker {
    /// Transactions using each shard now.
    in_use: Mutex<Vec<u32>>,
}

impl ShardPicker {
    fn new(shards: u8) -> ShardPicker {
        ShardPicker {
            in_use: Mutex::new(vec![0; usize::from(shards.max(1))]),
        }
    }

    /// A least-used shard (at random among them), held until the guard drops.
    fn take(self: &Arc<Self>) -> ShardGuard {
        let mut in_use = self.in_use.lock().expect("shards");
        let least = in_use.iter().copied().min().unwrap_or(0);
        let free: Vec<usize> = (0..in_use.len()).filter(|&s| in_use[s] == least).collect();
        let shard = free[rand::random_range(0..free.len())];
        in_use[shard] += 1;
        ShardGuard {
            picker: self.clone(),
            shard,
        }
    }
}

struct ShardGuard {
    picker: Arc<ShardPicker>,
    shard: usize,
}

impl Drop for ShardGuard {
    fn drop(&mut self) {
        self.picker.in_use.lock().expect("shards")[self.shard] -= 1;
    }
}

/// What went wrong with a statement.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trouble {
    None,
    /// A serialization failure or deadlock: run the transaction again.
    Conflict,
    /// The connection or the database is gone.
    Unreachable,
}

fn classify(e: &tokio_postgres::Error) -> Trouble {
    match e.code() {
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => Trouble::Conflict,
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => Trouble::Conflict,
        Some(_) => Trouble::None,
        None => Trouble::Unreachable,
    }
}

/// The outcome of a transaction that could not reach the database.
fn gone(why: impl Into<String>) -> Outcome {
    Outcome::Failed(Failure::of(&Error::Unavailable(why.into())))
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("the index database cannot be reached: {e}"))
}

impl PgBackend {
    /// Connects to `url`, migrating the schema (with `tables`) to this
    /// build's version.
    pub async fn connect(
        url: &str,
        tables: &[&'static str],
        clock: Clock,
        options: PgOptions,
    ) -> Result<PgBackend> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Unsupported(format!("index URL {url:?}: {e}")))?;
        config.connect_timeout(options.connect_timeout);
        // Every statement reads by key (a row, or a range with a limit), so
        // an index scan is always right; but on a small table the planner
        // prefers a sequential scan, and under SERIALIZABLE a sequential
        // scan locks the whole relation against writers: every writer of
        // a small table (the counter shards, the empty sessions) then
        // conflicted with every reader of any of its rows. An index scan
        // locks only the index pages and rows it reads.
        let startup = format!(
            "{} -c enable_seqscan=off",
            config.get_options().unwrap_or_default()
        );
        config.options(startup.trim_start());
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| Error::Unsupported(format!("index pool: {e}")))?;
        migrate(&pool, tables).await?;
        Ok(PgBackend {
            pool,
            handle: Handle::current(),
            clock,
            options,
            failure: Arc::default(),
            observer: Arc::new(NoObserver),
            shards: Arc::new(ShardPicker::new(options.shards)),
        })
    }

    /// Makes `next_id` on `table` hand out numbers above `last` (after rows
    /// were copied in with their keys, by a migration).
    pub async fn continue_ids_after(&self, table: &str, last: u64) -> Result<()> {
        let last = i64::try_from(last)
            .map_err(|_| Error::Unsupported(format!("{table}: id {last} is too large")))?;
        if last < 1 {
            return Ok(());
        }
        let client = self.pool.get().await.map_err(unavailable)?;
        client
            .execute(
                "SELECT setval($1::text::regclass, $2)",
                &[&sql::sequence(table), &last],
            )
            .await
            .map_err(|e| Error::Storage(format!("sequence of {table}: {e}")))?;
        Ok(())
    }

    /// Reports commit latencies and transactions run again after a
    /// conflict to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> PgBackend {
        self.observer = observer;
        self
    }

    fn client(&self) -> Result<Object> {
        match self.handle.block_on(self.pool.get()) {
            Ok(client) => {
                self.note(None);
                Ok(client)
            }
            // Every connection is in use (a burst of requests, or many
            // waiting on one hot row): the node is busy, not cut off, so
            // readiness stays green and the caller is asked to retry.
            Err(PoolError::Timeout(TimeoutType::Wait)) => Err(Error::Unavailable(
                "the index is busy: every connection of this node is in use; retry".into(),
            )),
            Err(e) => {
                self.note(Some(e.to_string()));
                Err(unavailable(e))
            }
        }
    }

    fn note(&self, failure: Option<String>) {
        *self.failure.lock().expect("failure") = failure;
    }

    /// One try of a job: `None` when it met a serialization conflict.
    /// `alone`: with every other writer of every node kept out until it
    /// ends, so it cannot meet one.
    fn try_once(&self, job: &mut Job, ids: &mut Ids, alone: bool) -> Option<Outcome> {
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return Some(gone(e.to_string())),
        };
        if !alone {
            return self.try_on(&client, job, ids);
        }
        // Taken before BEGIN, so that the transaction's snapshot (made at
        // its first statement) already holds every write of the writers
        // it waited for: with the lock taken inside, it would read past
        // their commits and conflict with them after all.
        let conn = Conn::new(&client, &self.handle);
        if let Err(e) = conn.execute(&sql::lock_writers()) {
            return Some(gone(e.to_string()));
        }
        let outcome = self.try_on(&client, job, ids);
        let unlocked = conn.execute(&sql::unlock_writers());
        if unlocked.is_err() {
            // A connection that may still hold the lock must not go back
            // to the pool: closed, its session ends and the lock with it.
            drop(Object::take(client));
        }
        outcome
    }

    fn try_on(&self, client: &Object, job: &mut Job, ids: &mut Ids) -> Option<Outcome> {
        let conn = Conn::new(client, &self.handle);
        if let Err(e) = conn.execute(&sql::begin_write()) {
            return Some(gone(e.to_string()));
        }
        let shard = self.shards.take();
        let ctx = JobCtx {
            now_ms: self.clock.now_ms(),
            shard: shard.shard as u8,
        };
        let mut w = PgWrite {
            overlay: Overlay::new(&conn),
            conn: &conn,
            ids,
            used: HashMap::new(),
        };
        let started = Instant::now();
        let end = (job.run)(&mut w, ctx);
        let changes = collect_changes(&w.overlay);
        // An attempt that uses drawn ids must send COMMIT in time.
        let deadline = match w.used.is_empty() {
            true => None,
            false => w.ids.first.map(|t| t + self.options.max_id_hold),
        };
        drop(w);
        match (conn.trouble.get(), end) {
            (Trouble::Conflict, _) => conn.rollback_then(None),
            (Trouble::Unreachable, _) => {
                conn.rollback_then(Some(gone("the index database went away")))
            }
            (_, JobEnd::Poisoned) => conn.rollback_then(Some(Outcome::Excluded)),
            (_, JobEnd::Fatal(why)) => conn.rollback_then(Some(Outcome::Failed(why))),
            (_, JobEnd::Done | JobEnd::Refused) => {
                let outcome = conn.commit(&changes, deadline);
                if let Some(Outcome::Committed) = outcome {
                    // One request per transaction: no group commits here.
                    self.observer.index_commit(started.elapsed(), 1);
                }
                outcome
            }
        }
    }
}

/// The overlay's changes, grouped by table: (upserted keys, values), and
/// deleted keys.
type Changes = BTreeMap<&'static str, (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>)>;

fn collect_changes(overlay: &Overlay<'_>) -> Changes {
    let mut out: Changes = BTreeMap::new();
    for (table, key, value) in overlay.changes() {
        let entry = out.entry(table).or_default();
        match value {
            Some(v) => {
                entry.0.push(key.to_vec());
                entry.1.push(v.to_vec());
            }
            None => entry.2.push(key.to_vec()),
        }
    }
    out
}

/// Brings the schema to [`sql::LATEST`], one node at a time.
async fn migrate(pool: &Pool, tables: &[&'static str]) -> Result<()> {
    let mut client = pool.get().await.map_err(unavailable)?;
    let db = |e: tokio_postgres::Error| Error::Storage(format!("index schema: {e}"));
    client
        .execute("SELECT pg_advisory_lock($1)", &[&sql::MIGRATION_LOCK])
        .await
        .map_err(db)?;
    let result = async {
        client.batch_execute(sql::VERSIONS).await.map_err(db)?;
        let row = client
            .query_one("SELECT coalesce(max(version), 0) FROM berth_schema", &[])
            .await
            .map_err(db)?;
        let current: i32 = row.get(0);
        if current > sql::LATEST {
            return Err(Error::Storage(format!(
                "the index database has schema version {current}, newer than this build \
                 understands ({}): upgrade Berth",
                sql::LATEST
            )));
        }
        for version in current + 1..=sql::LATEST {
            let tx = client.transaction().await.map_err(db)?;
            for statement in sql::migration(version, tables) {
                tx.batch_execute(&statement).await.map_err(db)?;
            }
            tx.execute(
                "INSERT INTO berth_schema (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            tracing::info!(version, "index database schema migrated");
        }
        for statement in sql::create_tables(tables) {
            client.batch_execute(&statement).await.map_err(db)?;
        }
        Ok(())
    }
    .await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&sql::MIGRATION_LOCK])
        .await;
    result
}

impl Backend for PgBackend {
    fn snapshot(&self) -> Result<Snapshot> {
        let client = self.client()?;
        Conn::new(&client, &self.handle)
            .execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        Ok(Box::new(PgSnapshot {
            client: Some(client),
            handle: self.handle.clone(),
        }))
    }

    fn reads_block(&self) -> bool {
        true
    }

    fn submit(&self, mut job: Job) {
        let this = PgJobRunner {
            backend: self.clone_parts(),
        };
        self.handle.spawn_blocking(move || {
            let mut pause = Duration::from_millis(2);
            let mut ids = Ids::default();
            let options = this.backend.options;
            for attempt in 1..=options.attempts {
                // A long transaction (a collection's batch) can keep losing
                // to a stream of short ones: locking the rows it reads did
                // not save it (PostgreSQL also tracks what it read by index
                // page, and ranges it scanned hold no row to lock). From
                // then on it runs alone: short ones wait for it, then run.
                let alone = attempt > options.optimistic_attempts;
                if alone && attempt == options.optimistic_attempts + 1 {
                    tracing::info!(
                        attempt,
                        "index transaction keeps conflicting; it runs alone"
                    );
                }
                let tried = this.backend.try_once(&mut job, &mut ids, alone);
                if let Some(outcome) = tried {
                    (job.finish)(outcome);
                    return;
                }
                tracing::debug!(attempt, "index transaction conflicted; trying again");
                this.backend.observer.index_retry();
                let jitter = rand::random_range(0.5..1.5);
                std::thread::sleep(pause.mul_f64(jitter));
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            (job.finish)(gone("the index is too busy with conflicting writes; retry"));
        });
    }

    fn health(&self) -> std::result::Result<(), String> {
        if self.pool.is_closed() {
            return Err("the index is closed".into());
        }
        match &*self.failure.lock().expect("failure") {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    fn close(&self) {
        self.pool.close();
    }

    /// Ids come from sequences, so a transaction that drew id 10 may
    /// commit after one that drew 11. A transaction sends COMMIT within
    /// `max_id_hold` of drawing its first id or is rolled back, and a
    /// COMMIT of rows already sent is a WAL flush: three times the hold
    /// leaves the flush twice the hold (40 s by default) of margin.
    fn id_lag(&self) -> Duration {
        self.options.max_id_hold * 3
    }
}

/// What a job on a blocking thread needs of the back end.
struct PgJobRunner {
    backend: PgBackend,
}

impl PgBackend {
    fn clone_parts(&self) -> PgBackend {
        PgBackend {
            pool: self.pool.clone(),
            handle: self.handle.clone(),
            clock: self.clock.clone(),
            options: self.options,
            failure: self.failure.clone(),
            observer: self.observer.clone(),
            shards: self.shards.clone(),
        }
    }
}

/// Statements on one connection, from a blocking thread; remembers the
/// worst trouble met.
struct Conn<'c> {
    client: &'c Object,
    handle: &'c Handle,
    trouble: Cell<Trouble>,
}

impl<'c> Conn<'c> {
    fn new(client: &'c Object, handle: &'c Handle) -> Conn<'c> {
        Conn {
            client,
            handle,
            trouble: Cell::new(Trouble::None),
        }
    }

    fn fail(&self, e: tokio_postgres::Error) -> Error {
        let t = classify(&e);
        if t != Trouble::None {
            self.trouble.set(t);
        }
        match t {
            Trouble::Unreachable => unavailable(e),
            _ => Error::Storage(format!("index database: {e}")),
        }
    }

    fn execute(&self, statement: &str) -> Result<()> {
        self.handle
            .block_on(self.client.batch_execute(statement))
            .map_err(|e| self.fail(e))
    }

    fn query(
        &self,
        text: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        self.handle
            .block_on(async {
                let statement = self.client.prepare_cached(text).await?;
                self.client.query(&statement, params).await
            })
            .map_err(|e| self.fail(e))
    }

    fn rollback_then(&self, outcome: Option<Outcome>) -> Option<Outcome> {
        let _ = self.execute("ROLLBACK");
        outcome
    }

    /// Sends every table's upsert and delete at once, pipelined on the
    /// connection: one round trip for all of a transaction's writes, each
    /// statement still answered (and checked) on its own.
    fn send(&self, changes: &Changes) -> Result<()> {
        let mut statements: Vec<(String, Vec<&(dyn ToSql + Sync)>)> = Vec::new();
        for (table, (keys, values, gone)) in changes {
            if !keys.is_empty() {
                statements.push((sql::upsert(table), vec![keys, values]));
            }
            if !gone.is_empty() {
                statements.push((sql::delete(table), vec![gone]));
            }
        }
        let each = statements.iter().map(|(text, params)| async move {
            let statement = self.client.prepare_cached(text).await?;
            self.client.execute(&statement, params).await
        });
        let answers = self.handle.block_on(futures::future::join_all(each));
        // Every statement after the one that failed fails too ("current
        // transaction is aborted"), and may be answered first (a statement
        // still to be prepared waits a round trip more): the failure that
        // says why is the conflict, if any statement met one.
        let mut errors: Vec<tokio_postgres::Error> =
            answers.into_iter().filter_map(|a| a.err()).collect();
        let conflict = errors.iter().position(|e| classify(e) == Trouble::Conflict);
        match conflict {
            Some(i) => Err(self.fail(errors.swap_remove(i))),
            None if errors.is_empty() => Ok(()),
            None => Err(self.fail(errors.swap_remove(0))),
        }
    }

    /// Sends the changes and commits, unless `deadline` has passed by then;
    /// `None` on a serialization conflict.
    fn commit(&self, changes: &Changes, deadline: Option<Instant>) -> Option<Outcome> {
        let sent = self.send(changes);
        if sent.is_ok() && deadline.is_some_and(|d| Instant::now() > d) {
            return self.rollback_then(Some(gone(
                "the index transaction took too long to commit after drawing an id; retry",
            )));
        }
        let committed = sent.and_then(|()| self.execute("COMMIT"));
        match (committed, self.trouble.get()) {
            (Ok(()), _) => Some(Outcome::Committed),
            (Err(_), Trouble::Conflict) => self.rollback_then(None),
            (Err(e), Trouble::Unreachable) => self.rollback_then(Some(gone(e.to_string()))),
            (Err(e), Trouble::None) => self.rollback_then(Some(Outcome::Failed(Failure::of(&e)))),
        }
    }

    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let rows = self.query(&sql::get(table), &[&key])?;
        Ok(rows.first().map(|r| r.get::<_, Vec<u8>>(0)))
    }

    fn scan(
        &self,
        table: &'static str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Pair>> {
        let text = sql::scan(table, from, to, reverse);
        let limit = limit as i64;
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        for b in [&from, &to] {
            if let Bound::Included(k) | Bound::Excluded(k) = b {
                params.push(k);
            }
        }
        params.push(&limit);
        let rows = self.query(&text, &params)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

impl ReadOps for Conn<'_> {
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Conn::get(self, table, key)
    }

    fn scan(
        &self,
        table: &'static str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Pair>> {
        Conn::scan(self, table, from, to, reverse, limit)
    }
}

/// The ids a job drew from the sequences, kept across its attempts: a
/// transaction tried again after a conflict uses the same numbers again
/// (no other transaction can have them), so conflicts leave no gaps.
#[derive(Default)]
struct Ids {
    drawn: HashMap<&'static str, Vec<u64>>,
    /// When the first was drawn.
    first: Option<Instant>,
}

/// A write transaction: reads through the overlay (which sees its own
/// writes), writes kept in it until commit, ids from the sequences.
struct PgWrite<'a> {
    overlay: Overlay<'a>,
    conn: &'a Conn<'a>,
    ids: &'a mut Ids,
    /// How many of each table's drawn ids this attempt used.
    used: HashMap<&'static str, usize>,
}

impl ReadOps for PgWrite<'_> {
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.overlay.get(table, key)
    }

    fn scan(
        &self,
        table: &'static str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Pair>> {
        self.overlay.scan(table, from, to, reverse, limit)
    }
}

impl WriteOps for PgWrite<'_> {
    fn put(&mut self, table: &'static str, key: &[u8], value: &[u8]) -> Result<()> {
        self.overlay.put(table, key, value)
    }

    fn delete(&mut self, table: &'static str, key: &[u8]) -> Result<()> {
        self.overlay.delete(table, key)
    }

    fn next_id(&mut self, table: &'static str) -> Result<u64> {
        let used = self.used.entry(table).or_default();
        let drawn = self.ids.drawn.entry(table).or_default();
        if let Some(&id) = drawn.get(*used) {
            *used += 1;
            return Ok(id);
        }
        let rows = self.conn.query(&sql::next_id(table), &[])?;
        let id: i64 = rows
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| Error::Storage("nextval returned nothing".into()))?;
        drawn.push(id as u64);
        *used += 1;
        self.ids.first.get_or_insert_with(Instant::now);
        Ok(id as u64)
    }
}

/// A snapshot: a read-only transaction on a connection of its own.
struct PgSnapshot {
    client: Option<Object>,
    handle: Handle,
}

impl PgSnapshot {
    fn conn(&self) -> Conn<'_> {
        Conn::new(self.client.as_ref().expect("open"), &self.handle)
    }
}

impl ReadOps for PgSnapshot {
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.conn().get(table, key)
    }

    fn scan(
        &self,
        table: &'static str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Pair>> {
        self.conn().scan(table, from, to, reverse, limit)
    }
}

impl Drop for PgSnapshot {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Ends the snapshot before the connection goes back to the pool.
            let _ = self.handle.block_on(client.batch_execute("COMMIT"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_transactions_get_shards_of_their_own_while_there_are_enough() {
        let picker = Arc::new(ShardPicker::new(4));
        let held: Vec<ShardGuard> = (0..4).map(|_| picker.take()).collect();
        let mut shards: Vec<usize> = held.iter().map(|g| g.shard).collect();
        shards.sort();
        assert_eq!(shards, [0, 1, 2, 3]);
        // A fifth shares one; every shard is given back when its guard drops.
        let fifth = picker.take();
        drop(held);
        drop(fifth);
        assert_eq!(*picker.in_use.lock().unwrap(), [0, 0, 0, 0]);
        let a = picker.take();
        let b = picker.take();
        assert_ne!(a.shard, b.shard);
    }
}
