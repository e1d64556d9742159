//! The conformance workflows (all four) against a freshly started Berth,
//! with its blobs in the data directory and in an object store.

mod harness;

use harness::{Blobs, Server};

async fn all_four_workflows(blobs: Blobs) {
    let server = Server::start_on(blobs, &[]);
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
    assert_eq!(
        report.skipped(),
        0,
        "nothing may be skipped:\n{}",
        report.summary()
    );
    assert!(
        report.passed() >= 80,
        "too few cases ran:\n{}",
        report.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_four_workflows_pass_with_nothing_skipped() {
    all_four_workflows(Blobs::Fs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_four_workflows_pass_on_an_object_store() {
    all_four_workflows(Blobs::S3).await;
}
