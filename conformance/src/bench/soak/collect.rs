//! Garbage collection in a loop: `POST /admin/gc` with the soak's short
//! grace period and upload age, wait for the run to finish, pause, again.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::Soak;

/// How often a run in progress is polled.
const POLL: Duration = Duration::from_millis(200);
/// Longest a run may take before the soak calls it stuck.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// Runs collections until the soak stops (the last one is waited for).
pub async fn collector(s: &Soak) {
    while !s.stopped() {
        if let Err(what) = run_once(s).await {
            s.tally.unexpected_text("garbage collection", &what);
            s.pause(Duration::from_secs(1)).await;
        }
        s.pause(s.opts.gc_pause).await;
    }
}

/// One run, counted; `Err` says what went wrong.
async fn run_once(s: &Soak) -> Result<(), String> {
    let request = json!({
        "grace": humantime::format_duration(s.opts.gc_grace).to_string(),
        "upload_max_age": humantime::format_duration(s.opts.upload_max_age).to_string(),
    });
    let (status, body) = s
        .registry
        .admin_send(Method::POST, "/admin/gc", &request)
        .await
        .map_err(|e| e.to_string())?;
    let id = match status.as_u16() {
        202 => body["id"]
            .as_u64()
            .ok_or_else(|| format!("POST /admin/gc: no run id in {body}"))?,
        // A scheduled run (or another client's) is going: try again later.
        409 => return Ok(()),
        other => return Err(format!("POST /admin/gc: HTTP {other}: {body}")),
    };
    let run = wait_for(s, id).await?;
    if run["state"] != "succeeded" {
        return Err(format!("run {id} {}: {}", run["state"], run["error"]));
    }
    s.tally.gc_run(&run);
    Ok(())
}

/// Polls run `id` until it is no longer running; returns its report.
async fn wait_for(s: &Soak, id: u64) -> Result<Value, String> {
    let started = Instant::now();
    loop {
        tokio::time::sleep(POLL).await;
        let run = s
            .registry
            .admin_get(&format!("/admin/gc/runs/{id}"))
            .await
            .map_err(|e| format!("polling run {id}: {e}"))?;
        if run["state"] != "running" {
            return Ok(run);
        }
        if started.elapsed() > RUN_LIMIT {
            return Err(format!("run {id} still running after {RUN_LIMIT:?}"));
        }
    }
}
