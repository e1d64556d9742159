//! Blobs, the links that make a blob visible in a repository, and their
//! reference counts. A blob's `refs` counts the manifest rows (in any
//! repository) that reference it; a link's `refs` counts those in its
//! repository. A blob at 0 sits in the unreferenced table, the only place
//! garbage collection looks.

use super::counters::{self, adjust_repo, bump, settle_repo};
use super::{
    BLOB_DATA, BLOBS, BlobRow, LINKS, LINKS_BY_BLOB, LinkRow, RepoCounts, UNREFERENCED, broken,
};
use crate::db::{Reads, Tx, prefix};
use crate::error::{Error, Result};

pub fn blob_row(r: &impl Reads, digest: &str) -> Result<Option<BlobRow>> {
    r.get(BLOBS, digest)
}

pub fn link_row(r: &impl Reads, repo: &str, digest: &str) -> Result<Option<LinkRow>> {
    r.get(LINKS, (repo, digest))
}

/// Repositories in which a blob is visible, in order.
pub fn linked_repos(r: &impl Reads, digest: &str) -> Result<Vec<String>> {
    r.scan_prefix(LINKS_BY_BLOB, &prefix(&[digest]))
        .keys()
        .map(|k| k.map(|(_, repo)| repo))
        .collect()
}

/// Changes a blob's reference count, keeping the unreferenced table and
/// the totals in step.
pub fn adjust_blob_refs(tx: &mut Tx<'_>, digest: &str, delta: i64) -> Result<()> {
    let mut row =
        blob_row(tx, digest)?.ok_or_else(|| broken(format!("no blob row for {digest}")))?;
    let before = row.refs;
    row.refs = row.refs.saturating_add_signed(delta);
    tx.put(BLOBS, digest, &row)?;
    let size = row.size as i64;
    if before == 0 && row.refs > 0 {
        tx.delete(UNREFERENCED, digest)?;
        bump(tx, counters::UNREFERENCED_BLOBS, -1)?;
        bump(tx, counters::UNREFERENCED_BYTES, -size)?;
    } else if before > 0 && row.refs == 0 {
        let now = tx.now_ms();
        tx.put(UNREFERENCED, digest, &now)?;
        bump(tx, counters::UNREFERENCED_BLOBS, 1)?;
        bump(tx, counters::UNREFERENCED_BYTES, size)?;
        tx.freed.push(digest.to_owned());
    }
    Ok(())
}

pub fn adjust_link_refs(tx: &mut Tx<'_>, repo: &str, digest: &str, delta: i64) -> Result<()> {
    let mut row = link_row(tx, repo, digest)?
        .ok_or_else(|| broken(format!("no link from {repo} to {digest}")))?;
    row.refs = row.refs.saturating_add_signed(delta);
    tx.put(LINKS, (repo, digest), &row)
}

/// Creates the link of a stored blob into a repository if missing.
pub fn ensure_link(tx: &mut Tx<'_>, repo: &str, digest: &str) -> Result<()> {
    if link_row(tx, repo, digest)?.is_some() {
        return Ok(());
    }
    let row = LinkRow {
        refs: 0,
        linked_ms: tx.now_ms(),
    };
    tx.put(LINKS, (repo, digest), &row)?;
    tx.put(LINKS_BY_BLOB, (digest, repo), &())?;
    let size = blob_row(tx, digest)?.map_or(0, |b| b.size);
    adjust_repo(tx, repo, RepoCounts::links(1, size as i64))
}

/// Removes a link; the caller settles the repository (see
/// [`counters::settle_repo`]), once for all the links it removes.
fn remove_link(tx: &mut Tx<'_>, repo: &str, digest: &str, size: u64) -> Result<()> {
    tx.delete(LINKS, (repo, digest))?;
    tx.delete(LINKS_BY_BLOB, (digest, repo))?;
    adjust_repo(tx, repo, RepoCounts::links(-1, -(size as i64)))
}

/// A blob uploaded or mounted again restarts its grace period.
fn mark_seen(tx: &mut Tx<'_>, digest: &str) -> Result<()> {
    if let Some(mut row) = blob_row(tx, digest)? {
        row.seen_ms = tx.now_ms();
        tx.put(BLOBS, digest, &row)?;
    }
    Ok(())
}

/// Records a blob whose bytes are now stored and links it into `repo`.
pub fn commit_blob(tx: &mut Tx<'_>, repo: &str, digest: &str, size: u64) -> Result<()> {
    match blob_row(tx, digest)? {
        Some(row) if row.size != size => {
            return Err(broken(format!(
                "blob {digest} is recorded with {} bytes, {size} were stored",
                row.size
            )));
        }
        Some(_) => mark_seen(tx, digest)?,
        None => {
            let now = tx.now_ms();
            let row = BlobRow {
                size,
                refs: 0,
                created_ms: now,
                seen_ms: now,
            };
            tx.put(BLOBS, digest, &row)?;
            tx.put(UNREFERENCED, digest, &now)?;
            bump(tx, counters::BLOBS, 1)?;
            bump(tx, counters::BLOB_BYTES, size as i64)?;
            bump(tx, counters::UNREFERENCED_BLOBS, 1)?;
            bump(tx, counters::UNREFERENCED_BYTES, size as i64)?;
        }
    }
    ensure_link(tx, repo, digest)
}

/// Records a small blob whose bytes the index keeps: the bytes go in with
/// the row that makes the blob exist (a blob already stored keeps its
/// bytes where they are and is only seen again).
pub fn commit_inline_blob(tx: &mut Tx<'_>, repo: &str, digest: &str, bytes: &[u8]) -> Result<()> {
    if blob_row(tx, digest)?.is_none() {
        tx.put(BLOB_DATA, digest, &bytes.to_vec())?;
    }
    commit_blob(tx, repo, digest, bytes.len() as u64)
}

/// The bytes of a blob the index keeps, if it keeps them.
pub fn inline_bytes(r: &impl Reads, digest: &str) -> Result<Option<Vec<u8>>> {
    r.get(BLOB_DATA, digest)
}

/// Links a stored blob into `repo`: from `from` if given (which must see
/// it). `None` if it cannot be mounted.
pub fn mount_blob(
    tx: &mut Tx<'_>,
    repo: &str,
    digest: &str,
    from: Option<&str>,
) -> Result<Option<u64>> {
    let Some(row) = blob_row(tx, digest)? else {
        return Ok(None);
    };
    if let Some(from) = from
        && link_row(tx, from, digest)?.is_none()
    {
        return Ok(None);
    }
    ensure_link(tx, repo, digest)?;
    mark_seen(tx, digest)?;
    Ok(Some(row.size))
}

/// Removes a blob from `repo`'s view; refused while a manifest there
/// references it.
pub fn unlink_blob(tx: &mut Tx<'_>, repo: &str, digest: &str) -> Result<()> {
    unlink_unsettled(tx, repo, digest)?;
    settle_repo(tx, repo)
}

/// [`unlink_blob`] without settling the repository: for a caller that
/// removes several links of one repository and settles it once.
pub fn unlink_unsettled(tx: &mut Tx<'_>, repo: &str, digest: &str) -> Result<()> {
    let Some(link) = link_row(tx, repo, digest)? else {
        return Err(Error::BlobUnknown(digest.parse()?));
    };
    if link.refs > 0 {
        return Err(Error::Conflict(format!(
            "blob {digest} is referenced by {} manifest(s) in {repo}; delete them first",
            link.refs
        )));
    }
    let size = blob_row(tx, digest)?.map_or(0, |b| b.size);
    remove_link(tx, repo, digest, size)
}

/// Removes blobs that are still unreferenced and not seen since
/// `seen_cutoff_ms`, with every repository's link to them. Returns what
/// was removed (digest, size); anything that no longer qualifies stays.
pub fn remove_blobs(
    tx: &mut Tx<'_>,
    digests: &[String],
    seen_cutoff_ms: u64,
) -> Result<Vec<(String, u64)>> {
    let mut removed = Vec::new();
    let mut touched = std::collections::BTreeSet::new();
    for d in digests {
        let Some(row) = blob_row(tx, d)? else {
            continue;
        };
        if row.refs > 0 || row.seen_ms > seen_cutoff_ms {
            continue;
        }
        for repo in linked_repos(tx, d)? {
            remove_link(tx, &repo, d, row.size)?;
            touched.insert(repo);
        }
        forget_blob_row(tx, d, row.size)?;
        removed.push((d.clone(), row.size));
    }
    for repo in &touched {
        settle_repo(tx, repo)?;
    }
    Ok(removed)
}

/// Deletes an unreferenced blob's own rows (its bytes too, if the index
/// holds them).
fn forget_blob_row(tx: &mut Tx<'_>, digest: &str, size: u64) -> Result<()> {
    tx.delete(BLOBS, digest)?;
    tx.delete(BLOB_DATA, digest)?;
    tx.delete(UNREFERENCED, digest)?;
    let size = size as i64;
    bump(tx, counters::BLOBS, -1)?;
    bump(tx, counters::BLOB_BYTES, -size)?;
    bump(tx, counters::UNREFERENCED_BLOBS, -1)?;
    bump(tx, counters::UNREFERENCED_BYTES, -size)
}

/// Forces a blob to unreferenced (a count no recount explains must not
/// keep the row alive) and removes it: the last step of forgetting a blob
/// whose bytes are gone, once the manifests that needed it are gone.
pub fn force_remove(tx: &mut Tx<'_>, digest: &str) -> Result<()> {
    let Some(mut row) = blob_row(tx, digest)? else {
        return Ok(());
    };
    if row.refs > 0 {
        row.refs = 0;
        tx.put(BLOBS, digest, &row)?;
    }
    if !tx.contains(UNREFERENCED, digest)? {
        let now = tx.now_ms();
        tx.put(UNREFERENCED, digest, &now)?;
        bump(tx, counters::UNREFERENCED_BLOBS, 1)?;
        bump(tx, counters::UNREFERENCED_BYTES, row.size as i64)?;
    }
    remove_blobs(tx, &[digest.to_owned()], u64::MAX)?;
    Ok(())
}

/// The blobs freed in this transaction (see `Tx::freed`) that are still
/// unreferenced, each once, with their row and since when.
pub fn freed_blobs(tx: &Tx<'_>) -> Result<Vec<(String, BlobRow, u64)>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for d in &tx.freed {
        if seen.insert(d.as_str())
            && let Some(row) = blob_row(tx, d)?.filter(|r| r.refs == 0)
        {
            let since = tx.get(UNREFERENCED, d.as_str())?.unwrap_or(tx.now_ms());
            out.push((d.clone(), row, since));
        }
    }
    Ok(out)
}
