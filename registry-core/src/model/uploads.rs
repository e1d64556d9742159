//! Upload sessions that hold data (empty ones live with the node, see
//! `crate::coord`).

use super::counters::{self, adjust_repo, bump, settle_repo};
use super::{RepoCounts, UPLOADS};
use crate::db::{Reads, Tx};
use crate::error::{Error, Result};
use crate::index::Upload;

pub fn upload(r: &impl Reads, id: &str) -> Result<Option<Upload>> {
    r.get(UPLOADS, id)
}

/// Records a session for `repo` that durably holds `offset` bytes.
pub fn create_upload(
    tx: &mut Tx<'_>,
    id: &str,
    repo: &str,
    offset: u64,
    hasher: Vec<u8>,
    store_state: Vec<u8>,
) -> Result<()> {
    if tx.contains(UPLOADS, id)? {
        return Err(Error::Conflict(format!("upload id {id} is already in use")));
    }
    let now = tx.now_ms();
    let row = Upload {
        repo: repo.to_owned(),
        offset,
        hasher,
        started_ms: now,
        updated_ms: now,
        store_state,
    };
    tx.put(UPLOADS, id, &row)?;
    adjust_repo(tx, repo, RepoCounts::uploads(1))?;
    bump(tx, counters::UPLOADS, 1)
}

/// Records that a session now durably holds `offset` bytes.
pub fn update_upload(
    tx: &mut Tx<'_>,
    id: &str,
    offset: u64,
    hasher: Vec<u8>,
    store_state: Vec<u8>,
) -> Result<()> {
    let Some(mut row) = upload(tx, id)? else {
        return Err(Error::UploadUnknown);
    };
    row.offset = offset;
    row.hasher = hasher;
    row.store_state = store_state;
    row.updated_ms = tx.now_ms();
    tx.put(UPLOADS, id, &row)
}

/// Removes a session that ends without a blob (cancelled, purged, lost):
/// the repository may be empty after it.
pub fn delete_upload(tx: &mut Tx<'_>, id: &str) -> Result<()> {
    let repo = close_upload(tx, id)?;
    settle_repo(tx, &repo)
}

/// Removes a session whose blob this transaction links into its
/// repository (so the repository cannot be empty after it); returns the
/// repository.
pub fn close_upload(tx: &mut Tx<'_>, id: &str) -> Result<String> {
    let Some(row) = tx.take(UPLOADS, id)? else {
        return Err(Error::UploadUnknown);
    };
    adjust_repo(tx, &row.repo, RepoCounts::uploads(-1))?;
    bump(tx, counters::UPLOADS, -1)?;
    Ok(row.repo)
}
