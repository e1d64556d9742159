//! The soak tool (`berth-bench soak`) against the real server for a few
//! seconds, with a grace period and an upload age short enough that every
//! phase of collection has work: every actor works, nothing unexpected
//! fails, every sample reads the server's process and data directory, and
//! the stopped store checks clean. The long run and its curves are
//! `deploy/soak/run.sh` and `docs/soak.md`.

mod harness;

use clap::Parser;
use conformance::bench::soak::{self, SoakOptions, tally::Op};
use harness::Server;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    soak: SoakOptions,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_soak_finds_nothing_unexpected() {
    let mut server = Server::start();
    let csv = server.root.join("soak.csv");
    let (pid, data) = (server.pid().to_string(), server.data_dir());
    let args = [
        "soak",
        "--url",
        &server.url,
        "--duration",
        "12s",
        "--sample-every",
        "2s",
        "--warmup",
        "4s",
        "--server-pid",
        &pid,
        "--data-dir",
        data.to_str().expect("a UTF-8 path"),
        "--csv",
        csv.to_str().expect("a UTF-8 path"),
        "--live-images",
        "20",
        "--repos",
        "3",
        "--gc-grace",
        "1s",
        "--upload-max-age",
        "3s",
        "--gc-pause",
        "200ms",
        "--large-layer",
        "1MiB",
        "--large-every",
        "5",
        "--abandon-every",
        "300ms",
    ];
    let outcome = soak::run(Cli::parse_from(args).soak)
        .await
        .expect("the soak runs");

    assert_eq!(outcome.unexpected, 0, "see the summary above");
    let total = &outcome.total;
    for op in [
        Op::Push,
        Op::Pull,
        Op::ManifestDelete,
        Op::Abandon,
        Op::Browse,
    ] {
        assert!(total.op(op) > 0, "no {}", op.column());
    }
    assert!(total.gc_runs > 0 && total.gc_blobs_deleted > 0, "{total:?}");
    assert!(
        total.gc_uploads_deleted > 0,
        "abandoned uploads were purged: {total:?}"
    );
    assert!(outcome.verified_images > 0);

    assert_eq!(outcome.rows.len(), 6);
    for row in &outcome.rows {
        for column in ["rss_bytes", "fds", "threads", "index_bytes", "stored_bytes"] {
            assert!(
                row.get(column).is_some_and(|v| v > 0.0),
                "{column}: {row:?}"
            );
        }
    }
    let written = std::fs::read_to_string(&csv).expect("the CSV");
    assert_eq!(written.lines().count(), 7, "a header and a line per sample");
    assert!(written.starts_with("t_s,load1,rss_bytes,fds,threads,"));

    assert!(server.terminate().success());
    let (status, report) = server.check(&[]);
    assert_eq!(status, 0, "{report}");
}
