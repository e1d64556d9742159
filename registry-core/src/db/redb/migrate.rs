//! The redb file's layout version, and the upgrade from the first layout.
//!
//! Layout 1 (the first releases) used redb's typed tables: `&str` and tuple
//! keys, `u64` values for counters. Layout 2 stores every table as byte keys
//! and byte values (see `db::codec`), so one set of rules serves every back
//! end. The upgrade runs in one write transaction at start-up: a crash
//! during it leaves layout 1 untouched, and the next start upgrades again.
//!
//! Layout 3 adds `repo_counts` (a repository's counters, sharded) and
//! reads the counts a layout-2 `repos` row holds as their base, so nothing
//! is converted: the version only makes a build that knows layout 2 alone
//! refuse the file, since it would take the base for the whole count.

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::def;
use crate::db::codec::{self, Value};
use crate::error::{Error, Result};

pub const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const VERSION_KEY: &str = "schema_version";
pub const LAYOUT: &str = "3";
/// Where a table's rows wait while its old table is replaced.
const TEMP: &str = "upgrade.tmp";

/// Brings the file to the current layout and creates any missing table.
pub fn to_current(db: &Database, tables: &[&'static str]) -> Result<()> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let version = meta.get(VERSION_KEY)?.map(|v| v.value().to_owned());
        match version.as_deref() {
            None => {}
            Some("1") => {
                tracing::info!("upgrading the index file from layout 1 to layout 3");
                from_v1(&txn)?;
            }
            Some("2") => tracing::info!("index file layout 2 is now layout 3"),
            Some(LAYOUT) => {}
            Some(other) => {
                return Err(Error::Storage(format!(
                    "index layout {other} is newer than this build understands ({LAYOUT})"
                )));
            }
        }
        meta.insert(VERSION_KEY, LAYOUT)?;
    }
    for name in tables {
        txn.open_table(def(name))?;
    }
    txn.commit()?;
    Ok(())
}

/// Copies one layout-1 table into its layout-2 replacement, converting each
/// row with `convert`.
fn convert<K, V>(
    txn: &WriteTransaction,
    name: &'static str,
    convert: impl Fn(K::SelfType<'_>, V::SelfType<'_>) -> Result<(Vec<u8>, Vec<u8>)>,
) -> Result<u64>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    let old: TableDefinition<K, V> = TableDefinition::new(name);
    let mut rows = 0;
    {
        let source = match txn.open_table(old) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut temp = txn.open_table(def(TEMP))?;
        for e in source.iter()? {
            let (k, v) = e?;
            let (k, v) = convert(k.value(), v.value())?;
            temp.insert(k.as_slice(), v.as_slice())?;
            rows += 1;
        }
    }
    txn.delete_table(old)?;
    {
        let temp = txn.open_table(def(TEMP))?;
        let mut new = txn.open_table(def(name))?;
        for e in temp.iter()? {
            let (k, v) = e?;
            new.insert(k.value(), v.value())?;
        }
    }
    txn.delete_table(def(TEMP))?;
    Ok(rows)
}

/// An upload session as layout 1 stored it.
#[derive(Deserialize)]
struct UploadV1 {
    repo: String,
    offset: u64,
    hasher: Vec<u8>,
    started_ms: u64,
    updated_ms: u64,
}

#[derive(Serialize)]
struct UploadV2 {
    repo: String,
    offset: u64,
    hasher: Vec<u8>,
    started_ms: u64,
    updated_ms: u64,
    store_state: Vec<u8>,
}

fn k1(a: &str) -> Vec<u8> {
    codec::key::<String>(a)
}

fn k2((a, b): (&str, &str)) -> Vec<u8> {
    codec::key::<(String, String)>((a, b))
}

fn k3((a, b, c): (&str, &str, &str)) -> Vec<u8> {
    codec::key::<(String, String, String)>((a, b, c))
}

type Str = &'static str;
type Raw = &'static [u8];

fn from_v1(txn: &WriteTransaction) -> Result<()> {
    let same = |v: &[u8]| v.to_vec();
    let n = convert::<Str, Raw>(txn, "repos", |k, v| Ok((k1(k), same(v))))?
        + convert::<(Str, Str), Raw>(txn, "tags", |k, v| Ok((k2(k), same(v))))?
        + convert::<(Str, Str, Str), ()>(txn, "tags_by_manifest", |k, ()| Ok((k3(k), vec![])))?
        + convert::<(Str, Str), Raw>(txn, "manifests", |k, v| Ok((k2(k), same(v))))?
        + convert::<Str, Raw>(txn, "manifest_bodies", |k, v| Ok((k1(k), same(v))))?
        + convert::<Str, u64>(txn, "manifest_body_refs", |k, v| Ok((k1(k), v.encode())))?
        + convert::<Str, Raw>(txn, "blobs", |k, v| Ok((k1(k), same(v))))?
        + convert::<Str, u64>(txn, "unreferenced", |k, v| Ok((k1(k), v.encode())))?
        + convert::<(Str, Str), Raw>(txn, "links", |k, v| Ok((k2(k), same(v))))?
        + convert::<(Str, Str), ()>(txn, "links_by_blob", |k, ()| Ok((k2(k), vec![])))?
        + convert::<Str, Raw>(txn, "uploads", |k, v| {
            let old: UploadV1 = postcard::from_bytes(v)
                .map_err(|e| Error::Storage(format!("upload row {k}: {e}")))?;
            let new = UploadV2 {
                repo: old.repo,
                offset: old.offset,
                hasher: old.hasher,
                started_ms: old.started_ms,
                updated_ms: old.updated_ms,
                store_state: Vec::new(),
            };
            Ok((k1(k), postcard::to_stdvec(&new).expect("serializes")))
        })?
        + convert::<(Str, Str, Str), ()>(txn, "referrers", |k, ()| Ok((k3(k), vec![])))?
        // Totals became sharded counters: all of layout 1's in shard 0.
        + convert::<Str, u64>(txn, "totals", |k, v| {
            Ok((
                codec::key::<(String, u64)>((k, 0)),
                (v as i64).encode(),
            ))
        })?
        + convert::<(Str, Str), Raw>(txn, "dangling", |k, v| Ok((k2(k), same(v))))?
        + convert::<u64, Raw>(txn, "gc_runs", |k, v| Ok((codec::key::<u64>(k), same(v))))?
        + convert::<Str, Str>(txn, "settings", |k, v| {
            Ok((k1(k), v.to_owned().encode()))
        })?
        + convert::<u64, Raw>(txn, "activity", |k, v| Ok((codec::key::<u64>(k), same(v))))?;
    tracing::info!(rows = n, "index upgraded to layout 2");
    Ok(())
}
