//! Webhook delivery cursors: the activity log is the outbox.
//!
//! Every change already appends its activity entry in its own transaction
//! (see [`super::log`]), so a change and the event that announces it
//! commit together or not at all. Each webhook endpoint has a cursor row
//! here: every entry up to `delivered_to` has been delivered to it,
//! dropped (older than its maximum age), or is not for it. The node
//! delivering an endpoint moves its cursor forward only from where it read
//! it (a compare-and-set), so two nodes never move one cursor past each
//! other.
//!
//! The log is trimmed by count ([`super::log::record_activity`]), but never
//! past the lowest cursor ([`pin`]) of an endpoint still served: one whose
//! row a node renewed within the endpoint's maximum age. An endpoint taken
//! out of every node's configuration stops pinning the log once that age
//! has passed.
//!
//! Rows are JSON (fields default when absent), so later releases can add to
//! them without a migration.

use serde::{Deserialize, Serialize};

use super::log::decode_activity;
use super::{ACTIVITY, HOOK_CURSORS};
use crate::db::{Reads, Tx, codec};
use crate::error::{Error, Result};
use crate::index::Activity;

/// Where an endpoint's deliveries stand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CursorRow {
    /// Every activity entry with an id up to this one is delivered,
    /// dropped, or not for this endpoint.
    pub delivered_to: u64,
    /// When a node serving the endpoint last wrote the row (unix ms).
    pub renewed_ms: u64,
    /// How long an entry waits for this endpoint before it is dropped.
    pub max_age_ms: u64,
    pub created_ms: u64,
    /// Events delivered, dropped, and failed attempts, since the row was
    /// created (every node's).
    pub delivered: u64,
    pub dropped: u64,
    pub failures: u64,
    /// The last event delivered, and when.
    pub last_delivered_id: Option<u64>,
    pub last_delivered_ms: Option<u64>,
    /// Why the last attempt failed, and when (cleared by a delivery).
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
}

impl CursorRow {
    /// Whether a node renewed the row within its maximum age.
    pub fn served(&self, now_ms: u64) -> bool {
        self.renewed_ms.saturating_add(self.max_age_ms) > now_ms
    }
}

/// How a cursor moves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Advance {
    /// Where the caller read the cursor.
    pub from: u64,
    pub to: u64,
    /// The id of the event just delivered, if one was.
    pub delivered: Option<u64>,
    /// Events dropped for their age on the way.
    pub dropped: u64,
}

fn decode(name: &str, json: &[u8]) -> Result<CursorRow> {
    serde_json::from_slice(json)
        .map_err(|e| Error::Storage(format!("corrupt webhook cursor {name}: {e}")))
}

fn read(r: &impl Reads, name: &str) -> Result<Option<CursorRow>> {
    r.get(HOOK_CURSORS, name)?
        .map(|json| decode(name, &json))
        .transpose()
}

fn write(tx: &mut Tx<'_>, name: &str, row: &CursorRow) -> Result<()> {
    let json = serde_json::to_vec(row).expect("cursor row serializes");
    tx.put(HOOK_CURSORS, name, &json)
}

/// The id of the newest activity entry (0 if there is none).
pub fn newest(r: &impl Reads) -> Result<u64> {
    Ok(r.scan_back(ACTIVITY, None)
        .keys()
        .next()
        .transpose()?
        .unwrap_or(0))
}

pub fn cursor(r: &impl Reads, name: &str) -> Result<Option<CursorRow>> {
    read(r, name)
}

/// Every endpoint's cursor, by name.
pub fn cursors(r: &impl Reads) -> Result<Vec<(String, CursorRow)>> {
    let mut out = Vec::new();
    for e in r.scan_all(HOOK_CURSORS) {
        let (name, json) = e?;
        out.push((name.clone(), decode(&name, &json)?));
    }
    Ok(out)
}

/// Renews the cursor of endpoint `name` (kept `max_age_ms`), creating it
/// after the newest entry if the endpoint is new: an endpoint gets the
/// events of the changes made after it was configured.
pub fn renew(tx: &mut Tx<'_>, name: &str, max_age_ms: u64) -> Result<CursorRow> {
    let now = tx.now_ms();
    let mut row = match read(tx, name)? {
        Some(row) => row,
        None => CursorRow {
            delivered_to: newest(tx)?,
            created_ms: now,
            ..CursorRow::default()
        },
    };
    row.renewed_ms = now;
    row.max_age_ms = max_age_ms;
    write(tx, name, &row)?;
    Ok(row)
}

/// Moves the cursor of `name` as `a` says, if it is still where the caller
/// read it; a `Conflict` (nothing written) if another node moved it.
pub fn advance(tx: &mut Tx<'_>, name: &str, a: Advance) -> Result<CursorRow> {
    let now = tx.now_ms();
    let mut row = read(tx, name)?.unwrap_or_default();
    if row.delivered_to != a.from || a.to < a.from {
        return Err(Error::Conflict(format!(
            "webhook {name}: the cursor is at {}, not {} (another node delivers it)",
            row.delivered_to, a.from
        )));
    }
    row.delivered_to = a.to;
    row.renewed_ms = now;
    row.dropped += a.dropped;
    if let Some(id) = a.delivered {
        row.delivered += 1;
        row.last_delivered_id = Some(id);
        row.last_delivered_ms = Some(now);
        row.last_error = None;
        row.last_error_ms = None;
    }
    write(tx, name, &row)?;
    Ok(row)
}

/// Records a failed attempt.
pub fn failed(tx: &mut Tx<'_>, name: &str, error: &str) -> Result<()> {
    let Some(mut row) = read(tx, name)? else {
        return Ok(());
    };
    row.failures += 1;
    row.last_error = Some(error.to_owned());
    row.last_error_ms = Some(tx.now_ms());
    write(tx, name, &row)
}

/// The lowest cursor of the endpoints still served: trimming keeps every
/// entry after it. `None` when no endpoint is served.
pub fn pin(r: &impl Reads) -> Result<Option<u64>> {
    let now = r.now_ms();
    Ok(cursors(r)?
        .into_iter()
        .filter(|(_, row)| row.served(now))
        .map(|(_, row)| row.delivered_to)
        .min())
}

/// Up to `limit` entries with ids after `after`, oldest first.
pub fn entries_after(r: &impl Reads, after: u64, limit: usize) -> Result<Vec<Activity>> {
    let from = codec::key::<u64>(after);
    r.scan_after(ACTIVITY, Some(&from))
        .take(limit)
        .map(|e| e.and_then(|(_, json)| decode_activity(&json)))
        .collect()
}

/// How many entries after `after` satisfy `wanted`, looking at no more than
/// `cap` of them; every entry past those counts (an upper bound), so a long
/// backlog costs a bounded read.
pub fn count_after(
    r: &impl Reads,
    after: u64,
    cap: usize,
    wanted: impl Fn(&Activity) -> bool,
) -> Result<u64> {
    let from = codec::key::<u64>(after);
    let mut n = 0;
    let mut last = after;
    for (i, e) in r.scan_after(ACTIVITY, Some(&from)).enumerate() {
        if i == cap {
            return Ok(n + newest(r)?.saturating_sub(last));
        }
        let (id, json) = e?;
        last = id;
        if wanted(&decode_activity(&json)?) {
            n += 1;
        }
    }
    Ok(n)
}
