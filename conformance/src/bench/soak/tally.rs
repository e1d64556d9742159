//! What the soak did, counted twice: since the start, and since the last
//! sample (each sample takes the interval's counts and starts new ones).
//!
//! Failures fall in two classes. *Expected* ones are what a correct
//! registry answers under online garbage collection with a short grace
//! period: a write refused with `503` while a sweep holds the fence, a
//! manifest whose blob was swept because its upload is older than the grace
//! period, a pull that raced the soak's own delete or tag move. Everything
//! else (any `500`, a transport error, a corrupted body, a `404` for
//! something the soak knows is there) is *unexpected*.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use serde_json::Value;

use crate::bench::client::OpError;

/// Unexpected failures quoted in the summary.
const MAX_SAMPLES: usize = 20;

/// A kind of operation the soak counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// An image pushed and acknowledged (manifest `201`).
    Push,
    /// An image pulled and verified (manifest and every blob).
    Pull,
    TagMove,
    TagDelete,
    ManifestDelete,
    /// An upload session opened (and perhaps written to), never finished.
    Abandon,
    /// A listing, web UI page, metrics or admin read.
    Browse,
}

impl Op {
    pub const ALL: [Op; 7] = [
        Op::Push,
        Op::Pull,
        Op::TagMove,
        Op::TagDelete,
        Op::ManifestDelete,
        Op::Abandon,
        Op::Browse,
    ];

    /// Its column in the CSV.
    pub fn column(self) -> &'static str {
        match self {
            Op::Push => "pushes",
            Op::Pull => "pulls",
            Op::TagMove => "tag_moves",
            Op::TagDelete => "tag_deletes",
            Op::ManifestDelete => "manifest_deletes",
            Op::Abandon => "abandoned_uploads",
            Op::Browse => "browses",
        }
    }
}

/// Counters over some span of time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub ops: [u64; Op::ALL.len()],
    /// Bytes of blobs pushed (acknowledged images only).
    pub pushed_bytes: u64,
    pub expected: u64,
    pub unexpected: u64,
    pub gc_runs: u64,
    pub gc_blobs_deleted: u64,
    pub gc_bytes_freed: u64,
    pub gc_uploads_deleted: u64,
    pub gc_manifests_deleted: u64,
    pub gc_orphans_deleted: u64,
    pub gc_fences: u64,
    pub gc_writes_refused: u64,
    pub gc_fence_max_ms: f64,
    pub gc_run_max_ms: f64,
}

impl Counts {
    pub fn op(&self, op: Op) -> u64 {
        self.ops[op as usize]
    }

    /// Adds a finished run's report (`GET /admin/gc/runs/<id>`).
    fn add_gc_run(&mut self, run: &Value) {
        let int = |key: &str| run[key].as_u64().unwrap_or(0);
        let float = |key: &str| run[key].as_f64().unwrap_or(0.0);
        self.gc_runs += 1;
        self.gc_blobs_deleted += int("blobs_deleted");
        self.gc_bytes_freed += int("bytes_freed");
        self.gc_uploads_deleted += int("uploads_deleted");
        self.gc_manifests_deleted += int("manifests_deleted");
        self.gc_orphans_deleted += int("orphans_deleted");
        self.gc_fences += int("fences");
        self.gc_writes_refused += int("writes_refused");
        self.gc_fence_max_ms = self.gc_fence_max_ms.max(float("fence_max_ms"));
        self.gc_run_max_ms = self.gc_run_max_ms.max(float("duration_ms"));
    }
}

/// The counters of the whole run and of the current interval, with the
/// reasons behind the failures.
#[derive(Default)]
pub struct Tally {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    total: Counts,
    interval: Counts,
    expected: BTreeMap<String, u64>,
    unexpected: BTreeMap<String, u64>,
    samples: Vec<String>,
}

impl Tally {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn op(&self, op: Op) {
        self.with(|i| {
            i.total.ops[op as usize] += 1;
            i.interval.ops[op as usize] += 1;
        });
    }

    pub fn pushed(&self, bytes: u64) {
        self.with(|i| {
            i.total.pushed_bytes += bytes;
            i.interval.pushed_bytes += bytes;
        });
    }

    /// A failure a correct registry gives under GC, for `reason`.
    pub fn expected(&self, reason: &str) {
        self.with(|i| {
            i.total.expected += 1;
            i.interval.expected += 1;
            *i.expected.entry(reason.to_string()).or_default() += 1;
        });
    }

    /// A failure that should not happen: `context` says what the soak was
    /// doing.
    pub fn unexpected(&self, context: &str, error: &OpError) {
        self.unexpected_text(context, &format!("{} ({error})", error.code()));
    }

    pub fn unexpected_text(&self, context: &str, detail: &str) {
        eprintln!("soak: UNEXPECTED: {context}: {detail}");
        self.with(|i| {
            i.total.unexpected += 1;
            i.interval.unexpected += 1;
            *i.unexpected.entry(context.to_string()).or_default() += 1;
            if i.samples.len() < MAX_SAMPLES {
                i.samples.push(format!("{context}: {detail}"));
            }
        });
    }

    pub fn gc_run(&self, run: &Value) {
        self.with(|i| {
            i.total.add_gc_run(run);
            i.interval.add_gc_run(run);
        });
    }

    /// The counts since the last call, starting new ones.
    pub fn take_interval(&self) -> Counts {
        self.with(|i| std::mem::take(&mut i.interval))
    }

    pub fn total(&self) -> Counts {
        self.with(|i| i.total.clone())
    }

    /// Expected failures by reason, unexpected ones by context, and the
    /// first unexpected messages.
    pub fn reasons(&self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>, Vec<String>) {
        self.with(|i| (i.expected.clone(), i.unexpected.clone(), i.samples.clone()))
    }
}

/// Whether the registry answered `status` with the OCI error `code`.
pub fn is_error(error: &OpError, status: u16, code: &str) -> bool {
    use crate::bench::client::Failure;
    error.failure == Failure::Status(status) && error.detail.contains(&format!("\"{code}\""))
}

/// A write refused while a sweep holds the fence (retry after a moment).
pub fn is_fenced(error: &OpError) -> bool {
    is_error(error, 503, "UNAVAILABLE")
}

/// `404` for a manifest or blob (or its repository).
pub fn is_not_found(error: &OpError) -> bool {
    error.failure == crate::bench::client::Failure::Status(404)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::client::Failure;
    use serde_json::json;

    fn status(code: u16, detail: &str) -> OpError {
        OpError {
            what: "PUT manifest",
            failure: Failure::Status(code),
            detail: detail.into(),
        }
    }

    #[test]
    fn errors_are_told_apart_by_status_and_code() {
        let fenced = status(
            503,
            r#"{"errors":[{"code":"UNAVAILABLE","message":"fence"}]}"#,
        );
        assert!(is_fenced(&fenced));
        assert!(!is_fenced(&status(503, "Service Unavailable")));
        assert!(!is_fenced(&status(500, r#"{"code":"UNAVAILABLE"}"#)));
        let swept = status(400, r#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN"}]}"#);
        assert!(is_error(&swept, 400, "MANIFEST_BLOB_UNKNOWN"));
        assert!(!is_error(&swept, 400, "BLOB_UNKNOWN"));
        assert!(is_not_found(&status(404, "")));
    }

    #[test]
    fn intervals_restart_and_totals_add_up() {
        let tally = Tally::default();
        tally.op(Op::Push);
        tally.op(Op::Push);
        tally.expected("503 fence");
        let run = json!({"blobs_deleted": 3, "bytes_freed": 30, "fence_max_ms": 2.5});
        tally.gc_run(&run);
        let first = tally.take_interval();
        assert_eq!(
            (first.op(Op::Push), first.expected, first.gc_runs),
            (2, 1, 1)
        );
        tally.op(Op::Pull);
        tally.gc_run(&json!({"blobs_deleted": 1, "fence_max_ms": 1.0}));
        let second = tally.take_interval();
        assert_eq!((second.op(Op::Push), second.op(Op::Pull)), (0, 1));
        assert_eq!(second.gc_fence_max_ms, 1.0);
        let total = tally.total();
        assert_eq!(
            (total.gc_runs, total.gc_blobs_deleted, total.gc_bytes_freed),
            (2, 4, 30)
        );
        assert_eq!(total.gc_fence_max_ms, 2.5);
        let (expected, unexpected, _) = tally.reasons();
        assert_eq!(expected["503 fence"], 1);
        assert!(unexpected.is_empty());
    }
}
