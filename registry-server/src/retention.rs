//! `registry retention`: a retention run (or dry run) through a running
//! server's admin API.

use anyhow::Context;
use registry_core::registry::retention::RetentionReport;
use registry_http::human_bytes;
use reqwest::Method;

use crate::RetentionArgs;
use crate::remote::Remote;

pub async fn retention(args: RetentionArgs) -> anyhow::Result<()> {
    let admin = Remote::new(&args.remote)?;
    let body = serde_json::json!({ "dry_run": args.dry_run });
    let answer = admin
        .call(Method::POST, "/admin/retention/run", Some(&body))
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let r: RetentionReport =
        serde_json::from_value(answer).context("the server's retention report")?;
    print_report(&r);
    Ok(())
}

fn print_report(r: &RetentionReport) {
    let (verb, freed) = match r.dry_run {
        true => ("would delete", "a collection would then free"),
        false => ("deleted", "a collection frees"),
    };
    println!(
        "retention{}: {verb} {} tag(s) in {} repositories; {freed} {}",
        if r.dry_run { " (dry run)" } else { "" },
        r.tags_deleted,
        r.repositories.len(),
        human_bytes(r.bytes)
    );
    for repo in &r.repositories {
        println!("  {} ({})", repo.repository, human_bytes(repo.bytes));
        for t in &repo.tags {
            println!("    {}  {}  rule {}", t.tag, t.digest, t.rule);
        }
    }
}
