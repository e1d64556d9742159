//! The activity log, the history of collector runs, and settings changed at
//! run time.

use super::{ACTIVITY, GC_RUNS, SETTINGS};
use crate::db::{Reads, Table, Tx, codec};
use crate::error::{Error, Result};
use crate::index::{Activity, ActivityQuery};

/// The log is trimmed once every this many entries (trimming is a range
/// delete, and readers never see entries beyond the retention anyway).
const TRIM_EVERY: u64 = 64;

/// Appends an entry (numbered and timed here); returns its id. Entries
/// more than `retain` older than the newest are trimmed now and then, and
/// never listed; but none a webhook endpoint still served has not had yet
/// (see [`super::hooks`]).
pub fn record_activity(tx: &mut Tx<'_>, mut entry: Activity, retain: u64) -> Result<u64> {
    let id = tx.next_id(ACTIVITY)?;
    entry.id = id;
    if entry.time_ms == 0 {
        entry.time_ms = tx.now_ms();
    }
    let json = serde_json::to_vec(&entry).expect("activity serializes");
    tx.put(ACTIVITY, id, &json)?;
    tx.note_activity();
    if id % TRIM_EVERY == 0 {
        let pinned = super::hooks::pin(tx)?.map_or(u64::MAX, |p| p + 1);
        keep_newest(tx, ACTIVITY, (id, retain), pinned)?;
    }
    Ok(id)
}

/// Deletes the rows of `table` older than the newest `keep` (up to id
/// `newest`), but none from `not_past` on.
fn keep_newest(
    tx: &mut Tx<'_>,
    table: Table<u64, Vec<u8>>,
    (newest, keep): (u64, u64),
    not_past: u64,
) -> Result<()> {
    let keep_from = (newest.saturating_sub(keep.max(1)) + 1).min(not_past);
    let old: Vec<u64> = tx
        .scan_after(table, None)
        .keys()
        .take_while(|k| k.as_ref().is_ok_and(|k| *k < keep_from))
        .collect::<Result<_>>()?;
    for k in old {
        tx.delete(table, k)?;
    }
    Ok(())
}

/// Entries matching `q`, newest first, within the newest `retain`.
pub fn activity(r: &impl Reads, q: &ActivityQuery, retain: u64) -> Result<Vec<Activity>> {
    let newest = r
        .scan_back(ACTIVITY, None)
        .keys()
        .next()
        .transpose()?
        .unwrap_or(0);
    let oldest_kept = newest.saturating_sub(retain.max(1));
    let before = q.before.map(codec::key::<u64>);
    let mut out = Vec::new();
    for e in r.scan_back(ACTIVITY, before.as_deref()) {
        let (id, json) = e?;
        if out.len() >= q.limit || id <= oldest_kept {
            break;
        }
        let a = decode_activity(&json)?;
        if q.since_ms.is_some_and(|s| a.time_ms < s) {
            break; // older entries only from here on
        }
        let keep = q
            .repository
            .as_ref()
            .is_none_or(|r| a.repository.as_ref() == Some(r))
            && q.action.as_ref().is_none_or(|x| &a.action == x);
        if keep {
            out.push(a);
        }
    }
    Ok(out)
}

/// An entry as stored.
pub fn decode_activity(json: &[u8]) -> Result<Activity> {
    serde_json::from_slice(json).map_err(|e| Error::Storage(format!("corrupt activity entry: {e}")))
}

/// A new id for a collector run; the reports of all runs but the newest
/// `keep` (this one included) are deleted, so the history stays bounded
/// however often collection runs.
pub fn next_run_id(tx: &mut Tx<'_>, keep: u64) -> Result<u64> {
    let id = tx.next_id(GC_RUNS)?;
    keep_newest(tx, GC_RUNS, (id, keep), u64::MAX)?;
    Ok(id)
}

pub fn save_gc_run(tx: &mut Tx<'_>, id: u64, report: &[u8]) -> Result<()> {
    tx.put(GC_RUNS, id, &report.to_vec())
}

/// Saves a running collection's report, unless the run has finished
/// meanwhile (progress saved late must not hide the final report).
pub fn save_gc_progress(tx: &mut Tx<'_>, id: u64, report: &[u8]) -> Result<()> {
    let finished = tx.get(GC_RUNS, id)?.is_some_and(|old| {
        serde_json::from_slice::<serde_json::Value>(&old)
            .is_ok_and(|v| v.get("state").is_some_and(|s| s != "running"))
    });
    if finished {
        return Ok(());
    }
    save_gc_run(tx, id, report)
}

/// The newest `limit` run reports, newest first.
pub fn gc_runs(r: &impl Reads, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
    r.scan_back(GC_RUNS, None).take(limit).collect()
}

pub fn setting(r: &impl Reads, key: &str) -> Result<Option<String>> {
    r.get(SETTINGS, key)
}

pub fn set_setting(tx: &mut Tx<'_>, key: &str, value: Option<&str>) -> Result<()> {
    match value {
        Some(v) => tx.put(SETTINGS, key, &v.to_owned()),
        None => tx.delete(SETTINGS, key),
    }
}
