//! OCI distribution-spec conformance workflows.
//!
//! A Rust implementation of the four workflows of the OCI Distribution
//! Specification v1.1 conformance suite (Pull, Push, Content Discovery and
//! Content Management) that can be pointed at any registry:
//!
//! ```no_run
//! # async fn example() {
//! let config = conformance::Config::all_workflows("http://127.0.0.1:5000", "conformance/test");
//! let report = conformance::run(&config).await;
//! println!("{}", report.summary());
//! assert_eq!(report.failed(), 0);
//! # }
//! ```
//!
//! Each workflow uploads freshly generated content, runs its cases in order
//! (later cases may depend on earlier ones) and deletes what it created.

mod auth;
mod check;
mod client;
mod config;
mod fixtures;
mod report;
mod workflows;

/// The `berth-bench` load generator (see `BENCH.md`).
pub mod bench;

pub use config::{Config, DEFAULT_NAMESPACE};
pub use report::{CaseResult, Outcome, Report};

use report::{CONTENT_DISCOVERY, CONTENT_MANAGEMENT, PULL, PUSH, SETUP};
use workflows::Ctx;

/// Runs every enabled workflow against the registry and collects the results.
/// Disabled workflows appear as a single skipped entry saying how to enable
/// them.
pub async fn run(config: &Config) -> Report {
    let mut report = Report::default();
    let ctx = match Ctx::new(config, config::debug_from_env()) {
        Ok(ctx) => ctx,
        Err(error) => {
            report.results.push(CaseResult {
                workflow: SETUP,
                name: "Create the HTTP client".to_owned(),
                outcome: Outcome::Failed(format!("{error:#}")),
            });
            return report;
        }
    };

    let enabled = [
        (PULL, config.test_pull),
        (PUSH, config.test_push),
        (CONTENT_DISCOVERY, config.test_content_discovery),
        (CONTENT_MANAGEMENT, config.test_content_management),
    ];

    // When the registry cannot be reached (or authentication fails) every
    // case would hit the same error; report it once per workflow instead.
    let probe = if enabled.iter().any(|(_, on)| *on) {
        ctx.client.get("/v2/").send().await.err()
    } else {
        None
    };
    if let Some(error) = probe {
        for (workflow, on) in enabled {
            let (name, outcome) = if on {
                let reason = format!("workflow not run, GET /v2/ failed: {error:#}");
                ("GET /v2/", Outcome::Failed(reason))
            } else {
                ("Workflow", disabled(workflow))
            };
            report.results.push(CaseResult {
                workflow,
                name: name.to_owned(),
                outcome,
            });
        }
        return report;
    }

    for (workflow, on) in enabled {
        if !on {
            report.results.push(CaseResult {
                workflow,
                name: "Workflow".to_owned(),
                outcome: disabled(workflow),
            });
            continue;
        }
        let results = match workflow {
            PULL => workflows::pull::run(&ctx).await,
            PUSH => workflows::push::run(&ctx).await,
            CONTENT_DISCOVERY => workflows::discovery::run(&ctx).await,
            _ => workflows::management::run(&ctx).await,
        };
        report.results.extend(results);
    }
    report
}

fn disabled(workflow: &str) -> Outcome {
    Outcome::Skipped(format!(
        "workflow disabled; set {}=1 to run it",
        Config::env_var_for(workflow)
    ))
}
