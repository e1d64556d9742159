//! `registry gc`: a collection through a running server's admin API, or
//! with `--offline` on a stopped store (the same collector).

use std::time::Duration;

use anyhow::Context;
use registry_gc::{Collector, RunReport, RunRequest, RunState};
use registry_http::human_bytes;
use reqwest::Method;

use crate::GcArgs;
use crate::remote::Remote;
use crate::store::open_stopped_store;

fn request(args: &GcArgs) -> RunRequest {
    RunRequest {
        dry_run: args.dry_run,
        grace: args.grace,
        delete_untagged: args.delete_untagged,
        ..RunRequest::default()
    }
}

fn print_report(r: &RunReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(r).expect("report"));
        return;
    }
    let verb = if r.dry_run { "would free" } else { "freed" };
    println!(
        "garbage collection run {}{}: {:?} in {} ms",
        r.id,
        if r.dry_run { " (dry run)" } else { "" },
        r.state,
        r.duration_ms
    );
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    println!(
        "  blobs:     {} ({verb} {})",
        r.blobs_deleted,
        human_bytes(r.bytes_freed)
    );
    if r.protected_blobs > 0 {
        let when = r
            .next_collectable_ms
            .and_then(|ms| chrono::DateTime::from_timestamp_millis(ms as i64))
            .map(|t| format!("; the first becomes collectable at {}", t.to_rfc3339()))
            .unwrap_or_default();
        println!(
            "  kept:      {} unreferenced blob(s) ({}) still within the grace period \
             (uploaded, mounted or pulled recently){when}",
            r.protected_blobs,
            human_bytes(r.protected_bytes)
        );
    }
    println!("  manifests: {}", r.manifests_deleted);
    println!("  uploads:   {}", r.uploads_deleted);
    if !r.dry_run {
        println!(
            "  fence:     {} time(s), {:.1} ms in all, {:.1} ms at most; pushes waited {}, refused {}",
            r.fences, r.fence_total_ms, r.fence_max_ms, r.writes_waited, r.writes_refused
        );
    } else {
        for m in &r.deleted.manifests {
            println!(
                "  manifest {}@{} ({})",
                m.repository,
                m.digest,
                human_bytes(m.size)
            );
        }
        for b in &r.deleted.blobs {
            println!("  blob {} ({})", b.digest, human_bytes(b.size));
        }
        for u in &r.deleted.uploads {
            println!("  upload {u}");
        }
    }
}

pub async fn gc(args: GcArgs) -> anyhow::Result<bool> {
    let report = if args.offline {
        let (config, store) = open_stopped_store(&args.store).await?;
        let collector = Collector::new(store.registry.clone(), config.gc.clone(), false).await?;
        let id = collector
            .start(request(&args), "offline", "offline")
            .await?;
        let report = follow_offline_run(&collector, id).await?;
        store.registry.close();
        report
    } else {
        remote_gc(&args).await?
    };
    print_report(&report, args.json);
    Ok(report.state == RunState::Succeeded)
}

/// Follows an offline run: a spinner with the phase and counts on a
/// terminal, a log line a second otherwise.
async fn follow_offline_run(collector: &Collector, id: u64) -> anyhow::Result<RunReport> {
    let spinner = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.enable_steady_tick(Duration::from_millis(120));
        s
    });
    let started = std::time::Instant::now();
    let mut last_log = std::time::Instant::now();
    loop {
        let r = collector.run(id).await?.context("the run disappeared")?;
        let line = format!(
            "{}: {} blobs ({}), {} manifests, {} uploads",
            r.phase,
            r.blobs_deleted,
            human_bytes(r.bytes_freed),
            r.manifests_deleted,
            r.uploads_deleted
        );
        if r.is_finished() {
            if let Some(s) = &spinner {
                s.finish_and_clear();
            }
            return Ok(r);
        }
        match &spinner {
            Some(s) => s.set_message(line),
            None if last_log.elapsed() >= Duration::from_secs(1) => {
                let rate = r.blobs_deleted as f64 / started.elapsed().as_secs_f64().max(0.001);
                tracing::info!(progress = %line, rate = format!("{rate:.0} blobs/s"), "gc");
                last_log = std::time::Instant::now();
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a run on a running server and follows it to the end.
async fn remote_gc(args: &GcArgs) -> anyhow::Result<RunReport> {
    let admin = Remote::new(&args.remote)?;
    let base = admin.base.clone();
    let body = serde_json::json!({
        "dry_run": args.dry_run,
        "delete_untagged": args.delete_untagged,
        "grace": args.grace.map(|g| humantime::format_duration(g).to_string()),
    });
    // Errors name the server without credentials (reqwest's own messages
    // would repeat the URL they were sent to).
    let answer = admin.call(Method::POST, "/admin/gc", Some(&body)).await?;
    let id = answer["id"].as_u64().context("no run id in the answer")?;
    loop {
        let r = admin
            .call(Method::GET, &format!("/admin/gc/runs/{id}"), None)
            .await?;
        let r: RunReport =
            serde_json::from_value(r).with_context(|| format!("{base}: run {id}"))?;
        if r.is_finished() {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
