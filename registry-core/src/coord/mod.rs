//! State that requests and the garbage collector share outside the index:
//! the write fence, HEAD/GET confirmations with the doomed set of a sweep,
//! upload sessions that hold no data yet, and per-session upload locks.
//!
//! [`Coordination`] is what a node needs from that state; [`InProcess`]
//! keeps it in this process's memory (one node), [`Shared`] in the index,
//! where every node of a cluster sees it (see `crate::model::shared` for
//! how a sweep works there without a global fence).
//!
//! Why a fence at all, when the index is transactional? Storing a blob is
//! two steps on two systems: put the bytes at their content address, then
//! commit the index row. A sweep is the same two steps backwards (commit
//! the rows' removal, then delete the bytes). If the two interleave, an
//! upload can put its bytes in place just before the sweep deletes them and
//! then commit a row naming bytes that are gone. So every request that
//! commits a blob or a manifest passes the fence (shared), and a sweep
//! closes it (exclusive) for one bounded batch. Reads never touch the fence.
//!
//! Why confirmations? The docker push sequence is HEAD blob -> skip the
//! upload -> PUT manifest. A blob nothing references yet must survive the
//! gap. A HEAD or GET "confirms" a blob (a restart instead protects
//! everything for one grace period), and a sweep only takes blobs not
//! confirmed within the grace period. Marking the sweep's batch "doomed" and
//! checking confirmations happen under one lock, so a HEAD either protects
//! a blob before the sweep looks, or answers 404 for it (the client then
//! uploads it again, after the fence).

mod local;
mod shared;

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::digest::Digest;
use crate::error::Result;
use crate::index::{UnreferencedBlob, Upload};

pub use local::InProcess;
pub use shared::Shared;

/// Held by a request while it commits a blob or a manifest. Its
/// `conditions` (blob digest, generation) must still hold in the commit's
/// transaction (see `crate::model::shared::check_pass`).
pub struct Pass {
    _held: Box<dyn Send + Sync>,
    pub conditions: Vec<(String, u64)>,
}

/// Held by a sweep while the fence is closed; dropping it reopens the fence
/// and forgets the doomed set.
pub struct Closed {
    since: Instant,
    _held: Box<dyn Send + Sync>,
}

impl Closed {
    pub fn elapsed(&self) -> Duration {
        self.since.elapsed()
    }
}

/// Held while a request works on an upload session.
pub struct UploadLock {
    _held: Box<dyn Send + Sync>,
}

/// Counters about the fence since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FenceCounts {
    /// Times the fence was closed (or a sweep held blobs).
    pub closed: u64,
    /// Writes that found the fence closed and waited for it.
    pub writes_waited: u64,
    /// Writes refused because a sweep held what they wrote.
    pub writes_refused: u64,
}

#[async_trait]
pub trait Coordination: Send + Sync + 'static {
    /// Passes the fence for one commit that puts the bytes of `digests` at
    /// their content addresses (none for a manifest), waiting for it to open
    /// up to the bound; past that, a retryable `Unavailable`.
    async fn pass(&self, digests: &[Digest]) -> Result<Pass>;

    /// Closes the fence: waits for commits in flight, then holds new ones.
    async fn close(&self) -> Result<Closed>;

    /// Records that a client confirmed `digest` exists. `false` if the blob
    /// is being swept right now: the caller must answer as if it were gone.
    async fn confirm(&self, digest: &Digest) -> Result<bool>;

    /// Of `candidates`, marks as doomed (and returns) those no client
    /// confirmed within `grace`; with `dry_run`, marks nothing. Nothing is
    /// taken within `grace` of the node starting (confirmations made
    /// before it were not kept) unless `since_start` is false.
    async fn doom(
        &self,
        candidates: &[UnreferencedBlob],
        grace: Duration,
        since_start: bool,
        dry_run: bool,
    ) -> Result<Vec<Digest>>;

    /// Holds `digests`, files without an index row, against commits while
    /// reconciliation deletes them.
    async fn hold(&self, digests: &[Digest]) -> Result<()>;

    /// Ends a sweep's hold on what it doomed or held, once their bytes are
    /// deleted (or kept).
    async fn release(&self, digests: &[Digest]) -> Result<()>;

    /// Counts a commit refused because a sweep held what it wrote.
    async fn refused(&self) {}

    /// Commits refused because a sweep held what they wrote, since this
    /// node started, or, where the coordination is shared, on every node
    /// since the store was created: a run's report counts the difference
    /// over the run.
    async fn writes_refused(&self) -> Result<u64> {
        Ok(self.fence_counts().writes_refused)
    }

    /// Forgets confirmations older than `grace` (they protect nothing).
    async fn prune(&self, grace: Duration) -> Result<()>;

    fn fence_counts(&self) -> FenceCounts;

    /// How long a commit waits for a closed fence.
    fn fence_wait(&self) -> Duration;

    /// When this node started (unix ms): protection after a restart runs
    /// from here.
    fn started_ms(&self) -> u64;

    /// Whether this node is the only one (nothing else writes the store).
    fn solitary(&self) -> bool {
        true
    }

    // ---- upload sessions that hold no data yet ----

    /// Whether empty sessions live in the index's `empty_uploads` table
    /// (so a blob's commit can take one in its own transaction).
    fn empty_uploads_in_index(&self) -> bool {
        false
    }

    async fn put_empty_upload(&self, id: &str, upload: Upload) -> Result<()>;
    async fn empty_upload(&self, id: &str) -> Result<Option<Upload>>;
    async fn take_empty_upload(&self, id: &str) -> Result<Option<Upload>>;
    /// Empty sessions not touched since `cutoff_ms`.
    async fn idle_empty_uploads(&self, cutoff_ms: u64) -> Result<Vec<String>>;
    async fn empty_upload_count(&self) -> Result<u64>;

    /// One lock per upload session, so two requests on the same session
    /// cannot interleave their appends.
    async fn lock_upload(&self, id: &str) -> Result<UploadLock>;

    // ---- leases ----

    /// Takes (or renews) the lease `name` for this node for `ttl`; `false`
    /// while another node holds it.
    async fn lease(&self, name: &str, ttl: Duration) -> Result<bool>;

    /// Gives the lease up, if this node holds it.
    async fn end_lease(&self, name: &str) -> Result<()>;
}
