//! The conformance workflows (all four) against a freshly started Berth.

mod harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_four_workflows_pass_with_nothing_skipped() {
    let server = harness::Server::start();
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
