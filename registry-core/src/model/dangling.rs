//! Which manifests nothing keeps: untagged, listed by no index in their
//! repository, and not attached to a stored subject. The table is kept
//! current by every transaction that tags, untags, stores or deletes a
//! manifest, so the collector reads it instead of walking every manifest.

use super::manifests::manifest_row;
use super::{DANGLING, DanglingRow};
use crate::db::{Reads, Tx};
use crate::error::Result;

/// Whether a manifest is dangling now, and if so whether as an orphaned
/// referrer (its subject is not stored in the repository).
pub fn dangling_state(r: &impl Reads, repo: &str, digest: &str) -> Result<Option<bool>> {
    Ok(match manifest_row(r, repo, digest)? {
        Some(row) if row.tags == 0 && row.parents == 0 => match &row.subject {
            Some(subject) if manifest_row(r, repo, subject)?.is_some() => None,
            Some(_) => Some(true),
            None => Some(false),
        },
        _ => None,
    })
}

/// Puts a manifest into, or takes it out of, the dangling table after
/// anything that can change whether something keeps it: its tags, the
/// indexes listing it, its subject's presence, its own existence.
pub fn refresh_dangling(tx: &mut Tx<'_>, repo: &str, digest: &str) -> Result<()> {
    let state = dangling_state(tx, repo, digest)?;
    let current = tx.get(DANGLING, (repo, digest))?;
    match (state, current) {
        (None, None) => Ok(()),
        (None, Some(_)) => tx.delete(DANGLING, (repo, digest)),
        (Some(orphan), Some(cur)) if cur.orphaned_referrer == orphan => Ok(()),
        (Some(orphaned_referrer), cur) => {
            let row = DanglingRow {
                since_ms: cur.map_or(tx.now_ms(), |c| c.since_ms),
                orphaned_referrer,
            };
            tx.put(DANGLING, (repo, digest), &row)
        }
    }
}
