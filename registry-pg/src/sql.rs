//! The schema in PostgreSQL and its versioned migrations.
//!
//! Every table of the model is a table `berth_<name> (k bytea PRIMARY KEY,
//! v bytea NOT NULL)`: byte keys in byte order, exactly what the table
//! interface asks for, and one PostgreSQL table per model table so that
//! conflicts and locks stay within the table they concern. Each has a
//! sequence `berth_<name>_ids` for `next_id` (numbers that never make
//! writers conflict). Written by hand rather than with a migrations crate:
//! the schema is generated from the model's table list, and the whole
//! history is a handful of statements.

use std::ops::Bound;

/// The newest schema version this build knows.
///
/// 2: a repository's counters are sharded (`berth_repo_counts`, made by
/// [`create_tables`]) on top of the counts its `berth_repos` row holds,
/// which stay as their base. Nothing to convert; the version makes a
/// build that knows only 1 refuse the database, since it would take the
/// base for the whole count.
pub const LATEST: i32 = 2;

/// A constant for `pg_advisory_lock`, so that nodes starting together
/// migrate one after the other.
pub const MIGRATION_LOCK: i64 = 0x6265_7274_685f_6d67;

/// A constant for the advisory lock every write transaction holds shared
/// and one that must not lose again holds exclusive.
pub const WRITERS_LOCK: i64 = 0x6265_7274_685f_7772;

/// Opens a write transaction; its first statement takes the writers' lock
/// shared, in the same round trip.
pub fn begin_write() -> String {
    format!(
        "BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT pg_advisory_xact_lock_shared({WRITERS_LOCK})"
    )
}

/// Takes the writers' lock exclusive for the session: waits for every
/// write transaction running, and keeps new ones waiting, until
/// [`unlock_writers`].
pub fn lock_writers() -> String {
    format!("SELECT pg_advisory_lock({WRITERS_LOCK})")
}

pub fn unlock_writers() -> String {
    format!("SELECT pg_advisory_unlock({WRITERS_LOCK})")
}

pub fn table(name: &str) -> String {
    format!("berth_{name}")
}

pub fn sequence(name: &str) -> String {
    format!("berth_{name}_ids")
}

/// The statements of one migration.
pub fn migration(version: i32, tables: &[&str]) -> Vec<String> {
    match version {
        1 => create_tables(tables),
        // Nothing to convert (see LATEST); create_tables runs at every start.
        _ => Vec::new(),
    }
}

/// The sharded counters: every write transaction updates one row of each
/// it touches, and their few rows share one leaf page of the primary key's
/// index, on which every transaction that read any shard holds a predicate
/// lock. An update that cannot stay on its heap page (a HOT update) adds
/// an entry to that index page and so conflicts with all of them; heap
/// pages kept four-fifths empty leave room for HOT updates. Measured with
/// berth-bench push-image at 8 workers on one node, builds alternated over
/// 4 rounds: retries per image pushed from 3.9 to 2.9, images/s +13%
/// (medians).
const COUNTER_FILLFACTOR: &[(&str, u8)] = &[
    (registry_core::model::TOTALS.name, 20),
    (registry_core::model::REPO_COUNTS.name, 20),
];

/// Creates each of `tables` (and its sequence) that does not exist yet:
/// run at every start too, so a table the model adds needs no migration.
/// Storage settings are applied at every start as well (they change no
/// row, and affect only pages written from then on).
pub fn create_tables(tables: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for t in tables {
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {} (k bytea PRIMARY KEY, v bytea NOT NULL)",
            table(t)
        ));
        out.push(format!("CREATE SEQUENCE IF NOT EXISTS {}", sequence(t)));
        if let Some((_, fill)) = COUNTER_FILLFACTOR.iter().find(|(name, _)| name == t) {
            out.push(format!(
                "ALTER TABLE {} SET (fillfactor = {fill})",
                table(t)
            ));
        }
    }
    out
}

pub const VERSIONS: &str = "CREATE TABLE IF NOT EXISTS berth_schema (\
     version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())";

/// The text of a range scan over `t` with the given bounds (the bound
/// values are the parameters `$1` and `$2`, in that order, as present).
pub fn scan(t: &str, from: Bound<&[u8]>, to: Bound<&[u8]>, reverse: bool) -> String {
    let mut conds = Vec::new();
    let mut n = 0;
    let mut cond = |op: &str| {
        n += 1;
        conds.push(format!("k {op} ${n}"));
    };
    match from {
        Bound::Included(_) => cond(">="),
        Bound::Excluded(_) => cond(">"),
        Bound::Unbounded => {}
    }
    match to {
        Bound::Included(_) => cond("<="),
        Bound::Excluded(_) => cond("<"),
        Bound::Unbounded => {}
    }
    let filter = match conds.is_empty() {
        true => String::new(),
        false => format!(" WHERE {}", conds.join(" AND ")),
    };
    format!(
        "SELECT k, v FROM {}{filter} ORDER BY k {} LIMIT ${}",
        table(t),
        if reverse { "DESC" } else { "ASC" },
        n + 1,
    )
}

pub fn get(t: &str) -> String {
    format!("SELECT v FROM {} WHERE k = $1", table(t))
}

pub fn upsert(t: &str) -> String {
    format!(
        "INSERT INTO {} (k, v) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
         ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
        table(t)
    )
}

pub fn delete(t: &str) -> String {
    format!("DELETE FROM {} WHERE k = ANY($1::bytea[])", table(t))
}

pub fn next_id(t: &str) -> String {
    format!("SELECT nextval('{}')", sequence(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_tables_leave_room_on_their_pages() {
        let tables = ["blobs", "totals", "repo_counts"];
        let alters: Vec<String> = create_tables(&tables)
            .into_iter()
            .filter(|s| s.starts_with("ALTER"))
            .collect();
        assert_eq!(
            alters,
            [
                "ALTER TABLE berth_totals SET (fillfactor = 20)",
                "ALTER TABLE berth_repo_counts SET (fillfactor = 20)"
            ]
        );
    }

    #[test]
    fn scans_number_their_parameters() {
        let s = scan("tags", Bound::Excluded(b"a"), Bound::Excluded(b"b"), false);
        assert_eq!(
            s,
            "SELECT k, v FROM berth_tags WHERE k > $1 AND k < $2 ORDER BY k ASC LIMIT $3"
        );
        let s = scan("tags", Bound::Unbounded, Bound::Included(b"b"), true);
        assert_eq!(
            s,
            "SELECT k, v FROM berth_tags WHERE k <= $1 ORDER BY k DESC LIMIT $2"
        );
        let s = scan("t", Bound::Unbounded, Bound::Unbounded, false);
        assert_eq!(s, "SELECT k, v FROM berth_t ORDER BY k ASC LIMIT $1");
    }
}
