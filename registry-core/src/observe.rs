//! Hooks through which the core reports what operators measure (commit
//! latency, fence durations, fenced writes) without knowing how they are
//! exported: the HTTP crate turns them into Prometheus metrics.

use std::time::Duration;

pub trait Observer: Send + Sync + 'static {
    /// One group commit of the index: how long `commit` took and how many
    /// writes it carried.
    fn index_commit(&self, _took: Duration, _writes: usize) {}

    /// An index transaction is run again after a conflict with a concurrent
    /// one (a serialization failure or a deadlock, on back ends with
    /// concurrent writers).
    fn index_retry(&self) {}

    /// The garbage-collection write fence was closed for `took`.
    fn fence_closed(&self, _took: Duration) {}

    /// A write met the closed fence; `refused` if it gave up waiting.
    fn write_fenced(&self, _refused: bool) {}

    /// One request to an object store: its kind (`get`, `put`, `head`,
    /// `delete`, `list`, `copy`, `part`, ...), its outcome (`ok`,
    /// `not_found`, `error`, ...) and how long it took.
    fn store_request(&self, _kind: &'static str, _outcome: &'static str, _took: Duration) {}

    /// A request to an object store is tried again after a failure.
    fn store_retry(&self, _kind: &'static str) {}
}

/// Reports nowhere (tests, offline commands).
pub struct NoObserver;

impl Observer for NoObserver {}
