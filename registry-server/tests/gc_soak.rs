//! A soak test of online garbage collection on one server: pushers,
//! deleters and a puller work against it while collection runs back to
//! back, then the store is checked against everything the test did (see
//! `harness/soak.rs` for the invariant and the checks).
//!
//! `BERTH_SOAK_SEED` replays a seed's choices (not its timing);
//! `BERTH_SOAK_FENCE_WAIT` replaces the fence wait. Run with `--nocapture`
//! to see the summary. It runs with the blobs in the data directory
//! (`..::fs`) and in a Garage bucket (`..::s3`).

mod harness;

use std::time::Duration;

use harness::soak::{self, Setup};
use harness::{Blobs, Client, Server};

/// How long the load runs.
const LOAD: Duration = Duration::from_secs(20);
/// How long a write waits for a closed fence before its 503: shorter than
/// a typical fence here, so that every run has writes that wait and writes
/// that are refused and retried.
const FENCE_WAIT_ARG: &str = "5ms";

async fn pushes_deletes_and_collection_interleave_safely(blobs: Blobs) {
    let seed = soak::seed();
    let fence_wait =
        std::env::var("BERTH_SOAK_FENCE_WAIT").unwrap_or_else(|_| FENCE_WAIT_ARG.to_owned());
    println!("gc soak: seed {seed} (replay with BERTH_SOAK_SEED={seed}), fence wait {fence_wait}");
    let server = Server::start_on(
        blobs,
        &[
            "--gc-grace",
            soak::GRACE_ARG,
            "--gc-fence-wait",
            &fence_wait,
        ],
    );
    let c = Client {
        http: reqwest::Client::builder().build().unwrap(),
        base: server.url.clone(),
    };
    let log = || server.log();
    let setup = Setup {
        client: c.clone(),
        collectors: vec![c],
        load: LOAD,
        fenced: true,
        store: &server,
        log: &log,
    };
    soak::soak(setup, seed).await;
}

on_both_stores!(pushes_deletes_and_collection_interleave_safely);
