//! `registry check` on a stopped store, with a progress bar on a terminal.

use registry_core::check::{CheckOptions, Progress};
use registry_http::human_bytes;

use crate::CheckArgs;
use crate::store::open_stopped_store;

/// Progress for long commands: a bar on a terminal, log lines otherwise.
struct Reporter {
    bar: Option<indicatif::ProgressBar>,
    done: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

impl Reporter {
    fn new() -> Reporter {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:>20} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            bar
        });
        Reporter {
            bar,
            done: 0.into(),
            started: std::time::Instant::now(),
        }
    }

    fn event(&self, p: Progress<'_>) {
        use std::sync::atomic::Ordering::Relaxed;
        match p {
            Progress::Phase { name, total } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(name.to_owned());
                    bar.set_length(total.unwrap_or(0));
                    bar.set_position(0);
                } else {
                    tracing::info!(phase = name, total, "check");
                }
                self.done.store(0, Relaxed);
            }
            Progress::Advance(n) => {
                let done = self.done.fetch_add(n, Relaxed) + n;
                if let Some(bar) = &self.bar {
                    bar.inc(n);
                } else if done.is_multiple_of(10_000) {
                    let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
                    tracing::info!(done, rate = format!("{rate:.0}/s"), "check progress");
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

pub async fn check(args: CheckArgs) -> anyhow::Result<i32> {
    let (_, store) = open_stopped_store(&args.store).await?;
    let reporter = Reporter::new();
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
