//! `berth-bench`: load generator for OCI distribution registries.
//! See `conformance/BENCH.md`.

use std::process::ExitCode;

use clap::Parser;
use conformance::bench::{self, Options};

#[tokio::main]
async fn main() -> ExitCode {
    match bench::run(Options::parse()).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
