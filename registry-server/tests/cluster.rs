//! Berth on PostgreSQL and an object store: the way several nodes run.

mod harness;

use std::sync::Arc;

use harness::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_postgres_and_garage() {
    let (pg, garage) = tokio::task::spawn_blocking(|| {
        (
            testbed::Postgres::start(),
            Arc::new(testbed::Garage::single()),
        )
    })
    .await
    .unwrap();
    let url = pg.create_database("conformance");
    let server = Server::start_s3(garage, &["--index", &url]);
    let mut config = conformance::Config::all_workflows(&server.url, "conformance/test");
    config.automatic_crossmount = Some(true);
    let report = conformance::run(&config).await;
    println!("{}", report.summary());
    assert_eq!(
        report.failed(),
        0,
        "{}\nserver log:\n{}",
        report.summary(),
        server.log()
    );
    assert_eq!(report.skipped(), 0, "{}", report.summary());
}
