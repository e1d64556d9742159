//! `berth-bench`: a load generator for the OCI distribution API of any
//! registry, with a garbage collection workload for Berth's admin API.
//!
//! Each workload runs one or more cases; a case is `concurrency` workers
//! issuing one operation after another (closed loop) for `--duration` or
//! `--ops` operations, and yields operations/s, MiB/s, latency percentiles
//! of the successful operations, and errors by kind.

pub mod client;
pub mod content;
pub mod machine;
pub mod options;
pub mod report;
pub mod runner;
pub mod soak;
pub mod stats;
pub mod workloads;

use std::sync::Arc;

use anyhow::Context;

use client::Registry;
use machine::Machine;
pub use options::{Options, Workload};
use report::Report;
use workloads::Bench;

/// Runs the selected workloads and prints the report; the report is also
/// returned (and written as JSON with `--json`).
pub async fn run(options: Options) -> anyhow::Result<Report> {
    options.validate()?;
    let machine = tokio::task::spawn_blocking(Machine::measure).await?;
    println!(
        "berth-bench {} against {}\nmachine: {} CPUs ({}/{}); SHA-256 on one core (sha2 crate): {:.0} MiB/s",
        env!("CARGO_PKG_VERSION"),
        options.url,
        machine.cpus,
        machine.os,
        machine.arch,
        machine.sha256_mib_per_s,
    );

    let connections = options.concurrency.unwrap_or(0).max(64);
    let registry = Registry::new(&options.url, options.timeout, connections)?;
    check_reachable(&registry).await?;

    let workloads = options.selected();
    let mut report = Report::new(options.clone(), machine);
    let bench = Arc::new(Bench::new(registry, options));
    for workload in workloads {
        eprintln!("== {}", workload.name());
        if let Err(e) = workloads::run(&bench, workload, &mut report).await {
            eprintln!("{}: {e:#}", workload.name());
            report
                .notes
                .push(format!("{}: stopped: {e:#}", workload.name()));
        }
    }

    println!();
    print!("{}", report.render());
    if let Some(path) = &bench.opts.json {
        report
            .write_json(path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("\nJSON report written to {}", path.display());
    }
    Ok(report)
}

/// `GET /v2/` must answer 200: the benchmark speaks to registries that
/// allow anonymous pushes.
async fn check_reachable(registry: &Registry) -> anyhow::Result<()> {
    let url = registry.url("/v2/");
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(url.clone())
        .send()
        .await
        .with_context(|| format!("cannot reach the registry at {url}"))?;
    match response.status().as_u16() {
        200 => Ok(()),
        401 => anyhow::bail!("{url} asks for authentication; berth-bench needs anonymous access"),
        status => anyhow::bail!("{url} answered HTTP {status}; is this an OCI registry?"),
    }
}
