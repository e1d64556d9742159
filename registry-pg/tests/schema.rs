//! The schema a node creates in a real PostgreSQL.

use registry_core::{Clock, model};
use registry_pg::{PgBackend, PgOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_tables_keep_room_for_updates_in_place() {
    let pg = testbed::Postgres::start();
    let url = pg.url();
    for start in ["first", "second"] {
        // A second start applies the same settings again without trouble.
        PgBackend::connect(&url, model::TABLES, Clock::system(), PgOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{start} start: {e}"));
    }
    let options = |table: &str| {
        pg.psql(&format!(
            "SELECT coalesce(reloptions::text, '') FROM pg_class WHERE relname = '{table}'"
        ))
    };
    assert_eq!(options("berth_totals").trim(), "{fillfactor=20}");
    assert_eq!(options("berth_repo_counts").trim(), "{fillfactor=20}");
    assert_eq!(
        options("berth_blobs").trim(),
        "",
        "other tables keep the default"
    );
}
