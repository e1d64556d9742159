//! Command-line runner: `conformance [REGISTRY_URL]`.
//!
//! Reads the `OCI_*` environment variables (see the crate README), runs the
//! enabled workflows, prints the summary and exits with status 1 when any
//! case failed.

use std::process::ExitCode;

const USAGE: &str = "usage: conformance [REGISTRY_URL]

Runs the OCI distribution-spec conformance workflows against a registry.
REGISTRY_URL overrides OCI_ROOT_URL. Other settings come from the OCI_*
environment variables (OCI_NAMESPACE, OCI_CROSSMOUNT_NAMESPACE,
OCI_AUTOMATIC_CROSSMOUNT, OCI_USERNAME, OCI_PASSWORD, OCI_TEST_PULL,
OCI_TEST_PUSH, OCI_TEST_CONTENT_DISCOVERY, OCI_TEST_CONTENT_MANAGEMENT,
OCI_DELETE_MANIFEST_BEFORE_BLOBS, OCI_DEBUG).";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = match args.as_slice() {
        [] => None,
        [flag] if flag == "-h" || flag == "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        [url] if !url.starts_with('-') => Some(url.as_str()),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };

    let config = match conformance::Config::from_env_with_root_url(url) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("conformance: {error:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    println!(
        "Running OCI conformance workflows against {} (namespace {}, cross-mount namespace {})\n",
        config.root_url, config.namespace, config.crossmount_namespace
    );
    let report = conformance::run(&config).await;
    println!("{}", report.summary());

    if report.failed() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
