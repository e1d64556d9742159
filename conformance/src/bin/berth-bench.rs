//! `berth-bench`: load generator for OCI distribution registries.
//! See `conformance/BENCH.md`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use conformance::bench::soak::{self, SoakOptions};
use conformance::bench::{self, Options};

#[derive(Parser)]
#[command(name = "berth-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: Options,
}

#[derive(Subcommand)]
enum Command {
    /// A long mixed load with garbage collection in a loop, sampling the
    /// server's memory, files, threads and data directory (Berth only).
    Soak(SoakOptions),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => bench::run(cli.options).await.map(|_| ExitCode::SUCCESS),
        Some(Command::Soak(options)) => soak::run(options).await.map(|outcome| {
            if outcome.unexpected == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
    };
    result.unwrap_or_else(|e| {
        eprintln!("berth-bench: {e:#}");
        ExitCode::from(2)
    })
}
