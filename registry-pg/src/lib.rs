//! Berth's index on PostgreSQL: the table interface of `registry_core::db`
//! over SQL, so the same rules serve several nodes sharing one database.
//!
//! - Each model table is a PostgreSQL table of `bytea` keys and values
//!   ([`sql`]); the schema is versioned and migrated at start-up, under an
//!   advisory lock, and a database newer than the build is refused.
//! - A transaction closure runs on a blocking thread with a pooled
//!   connection, in a `SERIALIZABLE` transaction: every rule keeps working
//!   as it does under redb's single writer. Its reads go to the database;
//!   its writes are kept in memory (an `Overlay`) and sent at the end, one
//!   statement per table and all of them pipelined in one round trip, then
//!   COMMIT: a transaction costs its reads plus two round trips.
//!   A serialization failure or a deadlock runs the closure again (with
//!   backoff), never reaching the client; one that keeps losing runs
//!   alone, with every other writer of every node held at its start by an
//!   advisory lock they all take shared. A lost connection answers
//!   `Unavailable` (503) and turns `health()` red.
//! - Reads run in a `REPEATABLE READ READ ONLY` transaction: one consistent
//!   snapshot for all the reads of an operation.
//! - Counters are sharded: each transaction updates one of `shards` rows of
//!   a running total (and of a repository's counters), so pushes do not all
//!   update one row; the running transactions of a node each get a shard
//!   no other one uses while there are enough.
//! - Ids (`next_id`) come from sequences, so they may commit out of order:
//!   a transaction retried after a conflict reuses the ids it drew, and one
//!   that would send COMMIT more than `max_id_hold` after drawing its first
//!   is rolled back; readers of the activity log wait `id_lag` (three times
//!   the hold) for a missing id before they give it up.

mod backend;
pub mod sql;

pub use backend::{PgBackend, PgOptions};
