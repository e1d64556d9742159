//! gc: Berth's online garbage collection, through its admin API.
//!
//! Fills the registry with `--gc-images` images (config and 4 layers unique
//! to each, plus one of a pool of shared base layers), collects whatever
//! garbage was there before, deletes a fraction of the images by manifest
//! digest and times the run that frees their blobs. Then deletes another
//! fraction and runs a collection under the mixed workload, to show how
//! pushes fare while the collector closes its write fence.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};

use super::images::{MIXED_KINDS, mixed_pool, run_mixed};
use super::{Bench, POOL_NONCE, announce, prepare, record, stream};
use crate::bench::content::{Blob, BlobId, BlobTemplate, Image, mix};
use crate::bench::options::Workload;
use crate::bench::report::{GcRun, Report};
use crate::bench::runner::{Limit, Sample};
use crate::bench::stats::percentile;

const FILL_CONCURRENCY: usize = 32;
const DELETE_CONCURRENCY: usize = 16;
const MIXED_CONCURRENCY: usize = 16;
/// Base layers shared by the images (each image has one of them).
const SHARED_LAYERS: u64 = 100;
/// Layers unique to each image (with the config: 5 unique blobs).
const UNIQUE_LAYERS: u64 = 4;
/// Longest wait for one collection run.
const RUN_TIMEOUT: Duration = Duration::from_secs(3600);

pub async fn gc(b: &Arc<Bench>, report: &mut Report) -> anyhow::Result<()> {
    if let Err(e) = b.registry.admin_get("/admin/gc/runs?limit=1").await {
        report.notes.push(format!(
            "gc: skipped, the registry has no Berth admin API ({e})"
        ));
        return Ok(());
    }
    let opts = &b.opts;
    let images = Arc::new(GcImages::new(b));
    fill(b, report, &images).await?;
    let filled = Instant::now();

    collect(b, report, "1: after the fill (earlier garbage)").await?;

    let fraction = opts.gc_delete_fraction;
    let first: Vec<u64> = (0..opts.gc_images)
        .filter(|&i| selected(i, fraction, 0.0))
        .collect();
    delete(b, report, &images, "delete manifest (batch 1)", first).await;
    let label = format!(
        "2: after deleting {:.0}% of {} images",
        fraction * 100.0,
        opts.gc_images
    );
    collect(b, report, &label).await?;

    if !opts.gc_no_mixed {
        let second: Vec<u64> = (0..opts.gc_images)
            .filter(|&i| selected(i, fraction, 0.5) && !selected(i, fraction, 0.0))
            .collect();
        delete(b, report, &images, "delete manifest (batch 2)", second).await;
        // The run must find the deleted images' blobs out of their grace.
        let ready = filled + opts.gc_mixed_grace + Duration::from_secs(1);
        tokio::time::sleep_until(ready.into()).await;
        collect_under_load(b, report).await?;
    }
    Ok(())
}

/// Whether image `i` is in the batch of `fraction` of the images that
/// starts at `phase` (spread evenly; batches of different phases differ).
fn selected(i: u64, fraction: f64, phase: f64) -> bool {
    let at = |i: u64| (i as f64 * fraction + phase).floor();
    at(i + 1) > at(i)
}

/// The images of the workload, each a function of its index.
struct GcImages {
    nonce: u64,
    repos: Vec<Arc<str>>,
    template: Arc<BlobTemplate>,
    shared: Vec<Blob>,
}

impl GcImages {
    fn new(b: &Bench) -> Self {
        let template = b.template(b.opts.gc_blob_size);
        let shared = (0..SHARED_LAYERS)
            .map(|seq| {
                template.blob(BlobId {
                    nonce: POOL_NONCE,
                    stream: stream::GC_SHARED,
                    seq,
                })
            })
            .collect();
        GcImages {
            nonce: b.nonce,
            repos: (0..b.opts.gc_repos)
                .map(|r| b.repo(&format!("gc/r{r}")))
                .collect(),
            template,
            shared,
        }
    }

    /// Image `i`: its repository, tag and content.
    fn image(&self, i: u64) -> (&Arc<str>, String, Image) {
        let mut layers: Vec<Blob> = (0..UNIQUE_LAYERS)
            .map(|k| {
                self.template.blob(BlobId {
                    nonce: self.nonce,
                    stream: stream::GC,
                    seq: i * UNIQUE_LAYERS + k,
                })
            })
            .collect();
        // Picked at random, so that every shared layer stays referenced by
        // images that survive the deletions.
        layers.insert(0, self.shared[(mix(i) % SHARED_LAYERS) as usize].clone());
        let image = Image::new(&format!("gc/{:x}/{i}", self.nonce), layers);
        let repo = &self.repos[(i % self.repos.len() as u64) as usize];
        (repo, format!("img{i:06}"), image)
    }
}

/// Pushes the shared layers into every repository, then the images, each
/// blob in a single `POST ?digest=` request.
async fn fill(b: &Arc<Bench>, report: &mut Report, images: &Arc<GcImages>) -> anyhow::Result<()> {
    let shared: Vec<_> = images
        .repos
        .iter()
        .flat_map(|repo| images.shared.iter().map(move |blob| (repo, blob)))
        .collect();
    prepare(16, shared, |(repo, blob)| {
        b.registry.push_blob_single_post(repo, blob)
    })
    .await?;

    let (bench, gc_images) = (b.clone(), images.clone());
    let op = move |i| {
        let (b, images) = (bench.clone(), gc_images.clone());
        async move {
            let (repo, tag, image) = images.image(i);
            let result = async {
                let mut bytes = image.manifest.len() as u64;
                // The shared base layer (the first) is there already.
                for blob in std::iter::once(&image.config).chain(&image.layers[1..]) {
                    b.registry.push_blob_single_post(repo, blob).await?;
                    bytes += blob.len();
                }
                b.registry.put_manifest(repo, &tag, &image.manifest).await?;
                Ok(bytes)
            }
            .await;
            Sample::from(result)
        }
    };
    let case = "fill: image (5 blobs + manifest)";
    let concurrency = b.concurrency(FILL_CONCURRENCY);
    let count = b.opts.gc_images;
    let outcome = b
        .measure(
            report,
            Workload::Gc,
            case,
            concurrency,
            Limit::Ops(count),
            op,
        )
        .await;
    report.notes.push(format!(
        "gc: filled {} images ({} failed) in {} repositories: {} unique blobs of {} B plus {} shared layers",
        outcome.stats[0].ok,
        outcome.stats[0].errors,
        images.repos.len(),
        outcome.stats[0].ok * (UNIQUE_LAYERS + 1),
        b.opts.gc_blob_size,
        SHARED_LAYERS,
    ));
    Ok(())
}

/// Deletes the images `indices` by manifest digest.
async fn delete(
    b: &Arc<Bench>,
    report: &mut Report,
    images: &Arc<GcImages>,
    case: &str,
    indices: Vec<u64>,
) {
    let count = indices.len() as u64;
    let indices = Arc::new(indices);
    let (bench, images) = (b.clone(), images.clone());
    let op = move |seq| {
        let (b, images, indices) = (bench.clone(), images.clone(), indices.clone());
        async move {
            let (repo, _, image) = images.image(indices[seq as usize]);
            let deleted = b.registry.delete_manifest(repo, &image.digest).await;
            Sample::from(deleted.map(|()| 0))
        }
    };
    let concurrency = b.concurrency(DELETE_CONCURRENCY);
    b.measure(
        report,
        Workload::Gc,
        case,
        concurrency,
        Limit::Ops(count),
        op,
    )
    .await;
}

/// One collection run, added to the report.
async fn collect(b: &Bench, report: &mut Report, label: &str) -> anyhow::Result<()> {
    eprintln!("… gc / run {label}");
    let run = run_gc(b, label, Duration::ZERO).await?;
    eprintln!(
        "  {} blobs and {} manifests deleted in {:.0} ms, {} fences (max {:.1} ms)",
        run.blobs_deleted, run.manifests_deleted, run.duration_ms, run.fences, run.fence_max_ms
    );
    report.gc_runs.push(run);
    Ok(())
}

/// A collection run under the mixed workload, which runs for a quarter of
/// `--duration` before the run starts and as long again after it ends;
/// operations started while the run goes are reported apart.
async fn collect_under_load(b: &Arc<Bench>, report: &mut Report) -> anyhow::Result<()> {
    let pool = Arc::new(mixed_pool(b).await?);
    let concurrency = b.concurrency(MIXED_CONCURRENCY);
    let margin = b.opts.duration / 4;
    let (stop, during) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let limit = Limit::Until(stop.clone());
    announce(Workload::Gc, "mixed, with a GC run", concurrency, &limit);
    let load = tokio::spawn(run_mixed(
        b.clone(),
        pool,
        concurrency,
        limit,
        Some(during.clone()),
    ));
    tokio::time::sleep(margin).await;
    during.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let grace = b.opts.gc_mixed_grace;
    let label = format!(
        "3: under mixed load, grace {}",
        humantime::format_duration(grace)
    );
    let run = run_gc(b, &label, grace).await;
    let window = started.elapsed();
    during.store(false, Ordering::Relaxed);
    tokio::time::sleep(margin).await;
    stop.store(true, Ordering::Relaxed);
    let outcome = load.await.context("the mixed workload failed")?;

    let outside = outcome.elapsed.saturating_sub(window);
    for (k, (case, _)) in MIXED_KINDS.iter().enumerate() {
        let stats = &outcome.stats;
        record(
            report,
            Workload::Gc,
            &format!("{case} [no GC]"),
            concurrency,
            outside,
            &stats[k],
        );
        record(
            report,
            Workload::Gc,
            &format!("{case} [during GC]"),
            concurrency,
            window,
            &stats[k + 3],
        );
    }
    let run = run?;
    eprintln!(
        "  {} blobs deleted in {:.0} ms, {} fences (max {:.1} ms), {} writes waited, {} refused",
        run.blobs_deleted,
        run.duration_ms,
        run.fences,
        run.fence_max_ms,
        run.writes_waited,
        run.writes_refused
    );
    report.gc_runs.push(run);
    Ok(())
}

/// `POST /admin/gc` with a grace period (waiting out a run already going),
/// then polls `GET /admin/gc/runs/<id>` until the run ends.
async fn run_gc(b: &Bench, label: &str, grace: Duration) -> anyhow::Result<GcRun> {
    let started = Instant::now();
    let id = start_run(b, grace).await?;
    let mut pause = Duration::from_millis(20);
    let mut failures = 0;
    let report = loop {
        anyhow::ensure!(
            started.elapsed() < RUN_TIMEOUT,
            "GC run {id} still running after {RUN_TIMEOUT:?}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
        match b.registry.admin_get(&format!("/admin/gc/runs/{id}")).await {
            Ok(run) if run["state"] == "running" => failures = 0,
            Ok(run) => break run,
            Err(e) if failures < 5 => {
                failures += 1;
                eprintln!("  polling GC run {id}: {e}");
            }
            Err(e) => bail!("polling GC run {id}: {e}"),
        }
    };
    let mut run = gc_run(label, &report, started.elapsed());
    run.grace_s = grace.as_secs_f64();
    Ok(run)
}

async fn start_run(b: &Bench, grace: Duration) -> anyhow::Result<u64> {
    let request = json!({ "grace": humantime::format_duration(grace).to_string() });
    for _ in 0..10 {
        let (status, body) = b
            .registry
            .admin_send(Method::POST, "/admin/gc", &request)
            .await?;
        match status.as_u16() {
            202 => {
                return body["id"]
                    .as_u64()
                    .with_context(|| format!("POST /admin/gc: no run id in {body}"));
            }
            409 => {
                // Another run is going: wait for it to end.
                let running = body
                    .pointer("/errors/0/detail/running")
                    .and_then(Value::as_u64);
                eprintln!("  a GC run ({running:?}) is already going; waiting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => bail!("POST /admin/gc: HTTP {status}: {body}"),
        }
    }
    bail!("POST /admin/gc: another run kept going")
}

/// The figures of a finished run's report.
fn gc_run(label: &str, run: &Value, wall: Duration) -> GcRun {
    let float = |key: &str| run[key].as_f64().unwrap_or(0.0);
    let int = |key: &str| run[key].as_u64().unwrap_or(0);
    let fences: Vec<f64> = run["fence_durations_ms"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let duration_ms = float("duration_ms");
    let blobs_deleted = int("blobs_deleted");
    GcRun {
        label: label.to_string(),
        id: int("id"),
        state: run["state"].as_str().unwrap_or("?").to_string(),
        error: run["error"].as_str().map(str::to_string),
        grace_s: run["settings"]["grace_seconds"].as_f64().unwrap_or(0.0),
        duration_ms,
        wall_ms: wall.as_secs_f64() * 1000.0,
        blobs_deleted,
        blobs_deleted_per_s: blobs_deleted as f64 / (duration_ms / 1000.0).max(1e-3),
        manifests_deleted: int("manifests_deleted"),
        bytes_freed: int("bytes_freed"),
        fences: int("fences"),
        fence_total_ms: float("fence_total_ms"),
        fence_p50_ms: percentile(&fences, 0.50),
        fence_p99_ms: percentile(&fences, 0.99),
        fence_max_ms: float("fence_max_ms").max(percentile(&fences, 1.0)),
        writes_waited: int("writes_waited"),
        writes_refused: int("writes_refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_take_the_fraction_and_do_not_overlap() {
        let n = 10_000;
        let first: Vec<u64> = (0..n).filter(|&i| selected(i, 0.2, 0.0)).collect();
        let second: Vec<u64> = (0..n).filter(|&i| selected(i, 0.2, 0.5)).collect();
        assert_eq!(first.len(), 2000);
        assert!((1999..=2001).contains(&second.len()));
        assert!(first.iter().all(|i| !second.contains(i)));
    }

    #[test]
    fn a_report_gives_the_figures() {
        let report = json!({
            "id": 3, "state": "succeeded", "error": null, "duration_ms": 2000,
            "blobs_deleted": 1000, "manifests_deleted": 10, "bytes_freed": 5,
            "fences": 4, "fence_total_ms": 10.0, "fence_max_ms": 4.0,
            "fence_durations_ms": [1.0, 2.0, 3.0, 4.0],
            "writes_waited": 2, "writes_refused": 1,
        });
        let run = gc_run("x", &report, Duration::from_secs(3));
        assert_eq!(run.blobs_deleted_per_s, 500.0);
        assert_eq!(
            (run.fence_p50_ms, run.fence_p99_ms, run.fence_max_ms),
            (2.0, 4.0, 4.0)
        );
        assert_eq!((run.writes_waited, run.writes_refused), (2, 1));
        assert_eq!(run.state, "succeeded");
    }
}
