//! Start-up repair of what a crash leaves behind, before serving.

use std::collections::HashSet;

use super::Registry;
use crate::blob::{FsBlobStore, valid_upload_id};
use crate::error::Result;

/// What start-up recovery repaired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    pub sessions_dropped: u64,
    pub files_removed: u64,
    /// Blobs an older release's sweep left in its trash with their rows
    /// still in the index, put back.
    pub blobs_restored: u64,
    /// Files of such a trash whose rows were gone, deleted.
    pub trash_emptied: u64,
}

impl Registry {
    /// A session whose data is gone (the process died between moving the
    /// data into place and recording the blob) is dropped, so its client
    /// restarts the upload; upload data no session owns is deleted (on a
    /// node alone).
    pub async fn recover(&self) -> Result<Recovery> {
        let sessions = self.index.uploads().await?;
        let mut out = Recovery::default();
        for (id, u) in &sessions {
            if self.blobs.upload_lost(id, u.offset, &u.store_state).await? {
                self.index.delete_upload(id).await?;
                out.sessions_dropped += 1;
            }
        }
        // Other nodes may be between storing a first chunk and recording
        // its session: only a node alone may take unowned data for garbage.
        if !self.node.solitary() {
            return Ok(out);
        }
        let ids: HashSet<&str> = sessions.iter().map(|(id, _)| id.as_str()).collect();
        for f in self.blobs.list_uploads().await? {
            if !ids.contains(f.as_str()) && valid_upload_id(&f) {
                self.blobs.delete_upload(&f, &[]).await?;
                out.files_removed += 1;
            }
        }
        Ok(out)
    }

    /// Sorts out the trash an older release's sweep may have left in a
    /// filesystem store: it moved files there before committing the
    /// removal of their rows, so a file whose row is still there goes back,
    /// and the rest is deleted.
    pub async fn recover_legacy_trash(
        &self,
        store: &FsBlobStore,
        out: &mut Recovery,
    ) -> Result<()> {
        for (digest, path) in store.legacy_trash()? {
            if self.index.blob(&digest).await?.is_some() {
                store.restore_legacy(&digest, &path)?;
                out.blobs_restored += 1;
            } else {
                out.trash_emptied += 1;
            }
        }
        store.remove_legacy_trash()
    }
}
