//! What the nodes of a cluster share besides the index proper, kept in
//! the index so that every node sees it (see `crate::coord::Shared`):
//! which unreferenced blobs clients confirmed, which blobs a sweep is
//! deleting, upload sessions that hold no data yet, and leases (one
//! collection at a time, upload sessions one request at a time).
//!
//! The rules of a sweep without a global fence:
//!
//! - A sweep dooms a blob in one transaction: still unreferenced, not
//!   uploaded, mounted, dereferenced or confirmed within the grace period.
//!   Dooming bumps the blob's *generation*.
//! - A commit that puts bytes at a content address (an upload, a mount)
//!   read the blob's generation before it published the bytes, and its
//!   transaction checks the generation is unchanged and the blob is not
//!   doomed ([`check_pass`]); otherwise it is refused (retryable). So no
//!   row can be committed for bytes a sweep may have deleted.
//! - A confirmation (HEAD/GET) of an unreferenced blob is a transaction
//!   that refuses if the blob is doomed and records the confirmation
//!   otherwise; the doom transaction reads the confirmations. Under
//!   serializable transactions one of the two sees the other, so a HEAD
//!   either protects the blob or answers 404.
//! - A referenced blob needs no record: if it loses its last reference
//!   later, it is unreferenced only from then on, and a sweep waits a grace
//!   period past that.

use serde::{Deserialize, Serialize};

use super::refs::blob_row;
use super::{CONFIRMED, EMPTY_UPLOADS, LEASES, SWEEPS, UNREFERENCED};
use crate::db::codec::Row;
use crate::db::{Reads, Tx};
use crate::error::{Error, Result};
use crate::index::{UnreferencedBlob, Upload};

/// A doom older than this is a sweep that died; it holds nothing back.
pub const STALE_DOOM_MS: u64 = 10 * 60 * 1000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SweepRow {
    /// Bumped by every sweep that dooms the blob.
    pub generation: u64,
    /// When a sweep doomed it (0: not doomed).
    pub doomed_ms: u64,
    /// Last change, for pruning.
    pub changed_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRow {
    pub holder: String,
    pub until_ms: u64,
}

impl Row for SweepRow {}
impl Row for LeaseRow {}

fn doomed(row: &SweepRow, now: u64) -> bool {
    row.doomed_ms != 0 && row.doomed_ms + STALE_DOOM_MS > now
}

/// A blob's generation (0 if no sweep ever doomed it).
pub fn generation(r: &impl Reads, digest: &str) -> Result<u64> {
    Ok(r.get(SWEEPS, digest)?.map_or(0, |s| s.generation))
}

/// Refuses a commit whose bytes a sweep may have deleted since the
/// generations in `pass` were read.
pub fn check_pass(tx: &Tx<'_>, pass: &[(String, u64)]) -> Result<()> {
    let now = tx.now_ms();
    for (digest, generation) in pass {
        let row = tx.get(SWEEPS, digest.as_str())?.unwrap_or_default();
        if row.generation != *generation || doomed(&row, now) {
            return Err(Error::Unavailable(format!(
                "garbage collection is sweeping {digest}; retry in a moment"
            )));
        }
    }
    Ok(())
}

/// Whether a HEAD/GET of `digest` must be recorded to protect it: only
/// while nothing references it.
pub fn needs_confirming(r: &impl Reads, digest: &str) -> Result<bool> {
    Ok(blob_row(r, digest)?.is_some_and(|b| b.refs == 0))
}

/// Records a confirmation; `false` if a sweep is deleting the blob.
pub fn confirm(tx: &mut Tx<'_>, digest: &str) -> Result<bool> {
    let now = tx.now_ms();
    if tx.get(SWEEPS, digest)?.is_some_and(|s| doomed(&s, now)) {
        return Ok(false);
    }
    tx.put(CONFIRMED, digest, &now)?;
    Ok(true)
}

/// Of `candidates`, those a sweep may take now: still unreferenced, not
/// uploaded, mounted, dereferenced or confirmed after `cutoff_ms`.
pub fn collectable(
    r: &impl Reads,
    candidates: &[UnreferencedBlob],
    cutoff_ms: u64,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for c in candidates {
        let d = c.digest.as_str();
        let Some(row) = blob_row(r, d)? else { continue };
        let since = r.get(UNREFERENCED, d)?;
        let confirmed = r.get(CONFIRMED, d)?.unwrap_or(0);
        let quiet = row.refs == 0
            && row.seen_ms <= cutoff_ms
            && since.is_some_and(|s| s <= cutoff_ms)
            && confirmed <= cutoff_ms;
        if quiet {
            out.push(d.to_owned());
        }
    }
    Ok(out)
}

/// Dooms what [`collectable`] allows; returns it.
pub fn doom(
    tx: &mut Tx<'_>,
    candidates: &[UnreferencedBlob],
    cutoff_ms: u64,
) -> Result<Vec<String>> {
    let now = tx.now_ms();
    let doomed = collectable(tx, candidates, cutoff_ms)?;
    for d in &doomed {
        let mut row = tx.get(SWEEPS, d.as_str())?.unwrap_or_default();
        row.generation += 1;
        row.doomed_ms = now;
        row.changed_ms = now;
        tx.put(SWEEPS, d.as_str(), &row)?;
    }
    Ok(doomed)
}

/// Holds blobs that have no row (files reconciliation is about to delete)
/// against commits that read their generation before.
pub fn hold(tx: &mut Tx<'_>, digests: &[String]) -> Result<()> {
    let now = tx.now_ms();
    for d in digests {
        if blob_row(tx, d)?.is_some() {
            continue;
        }
        let mut row = tx.get(SWEEPS, d.as_str())?.unwrap_or_default();
        row.generation += 1;
        row.doomed_ms = now;
        row.changed_ms = now;
        tx.put(SWEEPS, d.as_str(), &row)?;
    }
    Ok(())
}

/// Ends a sweep's hold on `digests` (their bytes are deleted, or kept).
pub fn release(tx: &mut Tx<'_>, digests: &[String]) -> Result<()> {
    let now = tx.now_ms();
    for d in digests {
        if let Some(mut row) = tx.get(SWEEPS, d.as_str())? {
            row.doomed_ms = 0;
            row.changed_ms = now;
            tx.put(SWEEPS, d.as_str(), &row)?;
        }
    }
    Ok(())
}

/// Forgets confirmations older than `cutoff_ms`, and sweep records nobody
/// can hold a generation of any more (a day untouched). Bounded per call.
pub fn prune(tx: &mut Tx<'_>, cutoff_ms: u64, limit: usize) -> Result<usize> {
    let old: Vec<String> = tx
        .scan_all(CONFIRMED)
        .filter_map(|e| match e {
            Ok((d, t)) if t <= cutoff_ms => Some(Ok(d)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .take(limit)
        .collect::<Result<_>>()?;
    for d in &old {
        tx.delete(CONFIRMED, d.as_str())?;
    }
    let day_ago = tx.now_ms().saturating_sub(24 * 3600 * 1000);
    let idle: Vec<String> = tx
        .scan_all(SWEEPS)
        .filter_map(|e| match e {
            Ok((d, s)) if s.doomed_ms == 0 && s.changed_ms <= day_ago => Some(Ok(d)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .take(limit)
        .collect::<Result<_>>()?;
    for d in &idle {
        tx.delete(SWEEPS, d.as_str())?;
    }
    Ok(old.len() + idle.len())
}

// ---- upload sessions without data ----

pub fn put_empty_upload(tx: &mut Tx<'_>, id: &str, upload: &Upload) -> Result<()> {
    tx.put(EMPTY_UPLOADS, id, upload)
}

pub fn empty_upload(r: &impl Reads, id: &str) -> Result<Option<Upload>> {
    r.get(EMPTY_UPLOADS, id)
}

pub fn take_empty_upload(tx: &mut Tx<'_>, id: &str) -> Result<Option<Upload>> {
    tx.take(EMPTY_UPLOADS, id)
}

pub fn idle_empty_uploads(r: &impl Reads, cutoff_ms: u64) -> Result<Vec<String>> {
    r.scan_all(EMPTY_UPLOADS)
        .filter_map(|e| match e {
            Ok((id, u)) if u.updated_ms <= cutoff_ms => Some(Ok(id)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect()
}

pub fn empty_upload_count(r: &impl Reads) -> Result<u64> {
    let mut n = 0;
    for e in r.scan_all(EMPTY_UPLOADS).keys() {
        e?;
        n += 1;
    }
    Ok(n)
}

// ---- leases ----

/// Takes the lease `name` for `holder` until `now + ttl_ms` (or renews it);
/// `false` while someone else holds it.
pub fn acquire(tx: &mut Tx<'_>, name: &str, holder: &str, ttl_ms: u64) -> Result<bool> {
    let now = tx.now_ms();
    if let Some(l) = tx.get(LEASES, name)?
        && l.holder != holder
        && l.until_ms > now
    {
        return Ok(false);
    }
    let row = LeaseRow {
        holder: holder.to_owned(),
        until_ms: now + ttl_ms,
    };
    tx.put(LEASES, name, &row)?;
    Ok(true)
}

/// Gives the lease up, if `holder` holds it.
pub fn give_up(tx: &mut Tx<'_>, name: &str, holder: &str) -> Result<()> {
    if tx.get(LEASES, name)?.is_some_and(|l| l.holder == holder) {
        tx.delete(LEASES, name)?;
    }
    Ok(())
}

/// Who holds a lease now.
pub fn holder(r: &impl Reads, name: &str) -> Result<Option<String>> {
    let now = r.now_ms();
    Ok(r.get(LEASES, name)?
        .filter(|l| l.until_ms > now)
        .map(|l| l.holder))
}
