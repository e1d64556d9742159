//! What the webhook deliverer needs of the store: the activity log read
//! from a cursor, the cursors themselves (see `crate::model::hooks`), and
//! a signal when this process has committed a new entry.

use std::time::Duration;

use tokio::sync::watch;

use super::Registry;
use crate::error::Result;
use crate::index::Activity;
use crate::model::hooks::{self, Advance, CursorRow};
use crate::model::log;

/// The setting naming this registry (every node of a cluster shares it).
const INSTANCE_ID: &str = "instance_id";

impl Registry {
    /// Changes each time this process commits a new activity entry
    /// (entries other nodes write are seen by reading the log).
    pub fn activity_changes(&self) -> watch::Receiver<u64> {
        self.index.db().activity()
    }

    /// How long a missing activity id may still be in flight (see
    /// `crate::db::Backend::id_lag`).
    pub fn activity_id_lag(&self) -> Duration {
        self.index.db().id_lag()
    }

    /// Up to `limit` activity entries after id `after`, oldest first.
    pub async fn activity_after(&self, after: u64, limit: usize) -> Result<Vec<Activity>> {
        self.index
            .db()
            .read(move |s| hooks::entries_after(s, after, limit))
            .await
    }

    /// How many activity entries after `after` satisfy `wanted` (exact for
    /// the first `cap`, an upper bound beyond).
    pub async fn count_activity_after<F>(&self, after: u64, cap: usize, wanted: F) -> Result<u64>
    where
        F: Fn(&Activity) -> bool + Send + 'static,
    {
        self.index
            .db()
            .read_blocking(move |s| hooks::count_after(s, after, cap, wanted))
            .await
    }

    /// The id of the newest activity entry (0: none).
    pub async fn newest_activity_id(&self) -> Result<u64> {
        self.index.db().read(|s| hooks::newest(s)).await
    }

    /// Renews the cursor of webhook endpoint `name` (creating it after the
    /// newest entry), keeping entries for it up to `max_age`.
    pub async fn renew_hook(&self, name: &str, max_age: Duration) -> Result<CursorRow> {
        let name = name.to_owned();
        let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        self.index
            .db()
            .write(move |tx| hooks::renew(tx, &name, max_age_ms))
            .await
    }

    /// Moves an endpoint's cursor, if it is still where `a.from` says.
    pub async fn advance_hook(&self, name: &str, a: Advance) -> Result<CursorRow> {
        let name = name.to_owned();
        self.index
            .db()
            .write(move |tx| hooks::advance(tx, &name, a))
            .await
    }

    /// Records a failed delivery attempt to `name`.
    pub async fn hook_failed(&self, name: &str, error: &str) -> Result<()> {
        let (name, error) = (name.to_owned(), error.to_owned());
        self.index
            .db()
            .write(move |tx| hooks::failed(tx, &name, &error))
            .await
    }

    pub async fn hook_cursor(&self, name: &str) -> Result<Option<CursorRow>> {
        let name = name.to_owned();
        self.index.db().read(move |s| hooks::cursor(s, &name)).await
    }

    /// Every endpoint's cursor (configured here or not), by name.
    pub async fn hook_cursors(&self) -> Result<Vec<(String, CursorRow)>> {
        self.index.db().read(|s| hooks::cursors(s)).await
    }

    /// A name for this registry, made at random the first time it is asked
    /// for and kept in the index (so every node of a cluster has the same).
    pub async fn instance_id(&self) -> Result<String> {
        let fresh = uuid::Uuid::new_v4().to_string();
        self.index
            .db()
            .write(move |tx| match log::setting(tx, INSTANCE_ID)? {
                Some(id) => Ok(id),
                None => {
                    log::set_setting(tx, INSTANCE_ID, Some(&fresh))?;
                    Ok(fresh.clone())
                }
            })
            .await
    }
}
