//! Repository counters, and the running totals behind the storage gauges.
//!
//! Both are sharded: each transaction adds its deltas to the shard its
//! back end gives it (always 0 on redb; spread on back ends with
//! concurrent writers, so transactions do not all update one row), and a
//! reader sums the shards. A shard may go negative; the sum cannot.
//!
//! A repository's `repos` row is its existence marker (listings, "does it
//! exist"): written when the repository gets its first content and
//! deleted when it empties, never by the changes in between, so pushes
//! into one repository only read it. Its counts are the base the shards
//! in `repo_counts` add to (an index written before the counts were
//! sharded keeps them there; repairs put them back there).
//!
//! Whether a repository emptied is decided by summing its shards
//! ([`settle_repo`]), which reads every shard concurrent writers update;
//! so only the changes that can empty a repository do it (removing a link,
//! a blob-less manifest, an upload session that closes without a blob),
//! not those that leave a row of the repository in place (a blob commit
//! that closes its session leaves its link, unless the session was
//! another repository's; a tag deleted leaves its manifest; a manifest
//! deleted leaves the links of its blobs).

use super::{REPO_COUNTS, REPOS, RepoCounts, RepoRow, TOTALS};
use crate::db::{Reads, Table, Tx, Value, prefix};
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
/// Not a total of contents but a count (several nodes): commits a sweep
/// refused, on every node, since the store was created. Not in [`ALL`]:
/// no recount can know it.
pub const WRITES_REFUSED: &str = "writes_refused";

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
    delete_shards(tx, TOTALS, name)?;
    tx.put(TOTALS, (name, 0), &(value as i64))
}

/// Deletes every shard of `name` in a sharded table.
fn delete_shards<V: Value>(
    tx: &mut Tx<'_>,
    table: Table<(String, u64), V>,
    name: &str,
) -> Result<()> {
    let shards: Vec<(String, u64)> = tx
        .scan_prefix(table, &prefix(&[name]))
        .keys()
        .collect::<Result<_>>()?;
    for (n, s) in &shards {
        tx.delete(table, (n, *s))?;
    }
    Ok(())
}

/// Whether a repository exists (holds anything): its marker row alone,
/// without reading the shards.
pub fn repo_exists(r: &impl Reads, repo: &str) -> Result<bool> {
    r.contains(REPOS, repo)
}

/// A repository's counters: its row's base plus every shard.
pub fn repo_row(r: &impl Reads, repo: &str) -> Result<Option<RepoRow>> {
    let Some(row) = r.get(REPOS, repo)? else {
        return Ok(None);
    };
    Ok(Some(with_shards(r, repo, row)?))
}

/// `row` (a repository's base) with its shards added.
pub fn with_shards(r: &impl Reads, repo: &str, row: RepoRow) -> Result<RepoRow> {
    let mut sum = RepoCounts::of(&row);
    for e in r.scan_prefix(REPO_COUNTS, &prefix(&[repo])) {
        sum.add(&e?.1);
    }
    Ok(sum.into_row(row.created_ms))
}

/// Adds `delta` to a repository's counters in this transaction's shard,
/// creating the repository's row when it has none. Never removes the row:
/// a change that can empty the repository calls [`settle_repo`] after.
pub fn adjust_repo(tx: &mut Tx<'_>, repo: &str, delta: RepoCounts) -> Result<()> {
    if delta.grows() && !repo_exists(tx, repo)? {
        let row = RepoRow {
            created_ms: tx.now_ms(),
            ..RepoRow::default()
        };
        tx.put(REPOS, repo, &row)?;
        bump(tx, REPOSITORIES, 1)?;
    }
    let key = (repo, u64::from(tx.shard()));
    let mut shard = tx.get(REPO_COUNTS, key)?.unwrap_or_default();
    shard.add(&delta);
    match shard == RepoCounts::default() {
        true => tx.delete(REPO_COUNTS, key),
        false => tx.put(REPO_COUNTS, key, &shard),
    }
}

/// Removes a repository's row (and its shards) if it holds nothing any
/// more. Reads every shard: call it only after a change that can empty
/// the repository.
pub fn settle_repo(tx: &mut Tx<'_>, repo: &str) -> Result<()> {
    let Some(row) = repo_row(tx, repo)? else {
        return Ok(());
    };
    if !row.is_empty() {
        return Ok(());
    }
    clear_shards(tx, repo)?;
    tx.delete(REPOS, repo)?;
    bump(tx, REPOSITORIES, -1)
}

/// Deletes a repository's shards (its counts are then its row's base).
pub fn clear_shards(tx: &mut Tx<'_>, repo: &str) -> Result<()> {
    delete_shards(tx, REPO_COUNTS, repo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Index;
    use crate::model::refs;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    /// An index written before the counters were sharded keeps them in the
    /// `repos` row: they count as the base the shards add to, and the row
    /// goes when the repository empties, base and shards together.
    #[tokio::test]
    async fn counts_kept_in_the_row_by_an_older_build_are_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open_redb(&dir.path().join("index.redb")).unwrap();
        let db = index.db();
        db.write(|tx| {
            refs::commit_blob(tx, "app", A, 10)?;
            // As an older build left it: every count in the row.
            let row = repo_row(tx, "app")?.expect("row");
            clear_shards(tx, "app")?;
            tx.put(REPOS, "app", &row)
        })
        .await
        .unwrap();
        db.write(|tx| refs::commit_blob(tx, "app", B, 5))
            .await
            .unwrap();
        let row = db.read(|r| repo_row(r, "app")).await.unwrap().unwrap();
        assert_eq!((row.links, row.link_bytes), (2, 15));
        let shards = db
            .read(|r| Ok(r.scan_prefix(REPO_COUNTS, &prefix(&["app"])).count()))
            .await
            .unwrap();
        assert_eq!(shards, 1, "the second link went to a shard");

        db.write(|tx| refs::unlink_blob(tx, "app", A))
            .await
            .unwrap();
        assert!(db.read(|r| repo_exists(r, "app")).await.unwrap());
        db.write(|tx| refs::unlink_blob(tx, "app", B))
            .await
            .unwrap();
        assert!(!db.read(|r| repo_exists(r, "app")).await.unwrap());
        let (shards, repositories) = db
            .read(|r| {
                let n = r.scan_all(REPO_COUNTS).count();
                Ok((n, total(r, REPOSITORIES)?))
            })
            .await
            .unwrap();
        assert_eq!((shards, repositories), (0, 0));
    }
}
