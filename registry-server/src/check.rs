//! `registry check` on a stopped store, with its progress shown.

use registry_core::check::CheckOptions;
use registry_http::human_bytes;

use crate::CheckArgs;
use crate::progress::Reporter;
use crate::store::open_stopped_store;

pub async fn check(args: CheckArgs) -> anyhow::Result<i32> {
    let (_, store) = open_stopped_store(&args.store).await?;
    let reporter = Reporter::new(10_000);
    let options = CheckOptions {
        repair: args.repair,
        verify_content: args.verify_content,
    };
    let report =
        registry_core::check::check(&store.registry, options, &|p| reporter.event(p)).await?;
    reporter.finish();
    store.registry.close();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "checked {} blobs ({}), {} files",
            report.blobs_checked,
            human_bytes(report.bytes_checked),
            report.files_checked
        );
        for p in &report.missing {
            println!("missing file:   {} ({} bytes recorded)", p.digest, p.size);
        }
        for p in &report.wrong_size {
            println!(
                "wrong size:     {} ({} recorded, {})",
                p.digest, p.size, p.found
            );
        }
        for p in &report.corrupt {
            println!(
                "corrupt:        {} (content hashes to {})",
                p.digest, p.found
            );
        }
        for (d, size) in &report.orphan_files {
            println!("orphan file:    {d} ({size} bytes, no index row)");
        }
        for p in &report.count_problems {
            println!("count:          {p}");
        }
        for m in &report.removed_manifests {
            println!(
                "removed image:  {}@{} (push it again to restore it)",
                m.repository, m.digest
            );
        }
        for p in &report.remaining_problems {
            println!("NOT REPAIRED:   {p}");
        }
        println!(
            "{}",
            match (report.clean(), report.repaired) {
                (true, _) => "clean",
                (false, true) if report.remaining_problems.is_empty() =>
                    "problems found and repaired",
                (false, true) => "problems remain",
                (false, false) => "problems found (run with --repair to fix what can be fixed)",
            }
        );
    }
    Ok(
        match (
            report.clean(),
            report.repaired && report.remaining_problems.is_empty(),
        ) {
            (true, _) => 0,
            (false, true) => 1,
            (false, false) => 2,
        },
    )
}
