//! Repository counters, and the running totals behind the storage gauges.
//!
//! Totals are sharded: each transaction adds its deltas to the shard its
//! back end gives it (always 0 on redb; spread on back ends with
//! concurrent writers, so transactions do not all update one row), and a
//! reader sums the shards. A shard may go negative; the sum cannot.

use super::{REPOS, RepoRow, TOTALS};
use crate::db::{Reads, Tx, prefix};
use crate::error::Result;
use crate::index::Totals;

pub const REPOSITORIES: &str = "repositories";
pub const MANIFESTS: &str = "manifests";
pub const TAGS: &str = "tags";
pub const BLOBS: &str = "blobs";
pub const BLOB_BYTES: &str = "blob_bytes";
pub const UNREFERENCED_BLOBS: &str = "unreferenced_blobs";
pub const UNREFERENCED_BYTES: &str = "unreferenced_bytes";
pub const UPLOADS: &str = "uploads";

/// Every total, in the order of [`Totals`]' fields.
pub const ALL: [&str; 8] = [
    REPOSITORIES,
    MANIFESTS,
    TAGS,
    BLOBS,
    BLOB_BYTES,
    UNREFERENCED_BLOBS,
    UNREFERENCED_BYTES,
    UPLOADS,
];

/// Adds `delta` to a total.
pub fn bump(tx: &mut Tx<'_>, name: &str, delta: i64) -> Result<()> {
    let shard = u64::from(tx.shard());
    let current = tx.get(TOTALS, (name, shard))?.unwrap_or(0);
    tx.put(TOTALS, (name, shard), &(current + delta))
}

/// A total: the sum of its shards.
pub fn total(r: &impl Reads, name: &str) -> Result<u64> {
    let mut sum = 0i64;
    for e in r.scan_prefix(TOTALS, &prefix(&[name])) {
        sum += e?.1;
    }
    Ok(sum.max(0) as u64)
}

pub fn totals(r: &impl Reads) -> Result<Totals> {
    let [a, b, c, d, e, f, g, h] = ALL.map(|n| total(r, n));
    Ok(Totals {
        repositories: a?,
        manifests: b?,
        tags: c?,
        blobs: d?,
        blob_bytes: e?,
        unreferenced_blobs: f?,
        unreferenced_bytes: g?,
        uploads: h?,
    })
}

/// Replaces a total with `value` (repairs), keeping it in shard 0.
pub fn set_total(tx: &mut Tx<'_>, name: &str, value: u64) -> Result<()> {
    let shards: Vec<(String, u64)> = tx
        .scan_prefix(TOTALS, &prefix(&[name]))
        .keys()
        .collect::<Result<_>>()?;
    for (n, s) in &shards {
        tx.delete(TOTALS, (n, *s))?;
    }
    tx.put(TOTALS, (name, 0), &(value as i64))
}

pub fn repo_row(r: &impl Reads, repo: &str) -> Result<Option<RepoRow>> {
    r.get(REPOS, repo)
}

/// Applies `change` to a repository's counters, creating the row when a
/// repository gets its first content and removing it when it empties.
pub fn adjust_repo(tx: &mut Tx<'_>, repo: &str, change: impl FnOnce(&mut RepoRow)) -> Result<()> {
    let existing = repo_row(tx, repo)?;
    let created = existing.is_none();
    let mut row = existing.unwrap_or(RepoRow {
        created_ms: tx.now_ms(),
        ..RepoRow::default()
    });
    change(&mut row);
    if row.is_empty() {
        if !created {
            tx.delete(REPOS, repo)?;
            bump(tx, REPOSITORIES, -1)?;
        }
    } else {
        tx.put(REPOS, repo, &row)?;
        if created {
            bump(tx, REPOSITORIES, 1)?;
        }
    }
    Ok(())
}
