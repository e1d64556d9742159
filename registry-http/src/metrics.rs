//! Prometheus metrics, on an explicit registry (so tests read the same
//! one). Request counters and histograms are updated as requests finish;
//! storage and reclaimable gauges are read from the index's running totals
//! at scrape time (no scan), and the free-space gauges from the filesystems
//! the store writes to; the core and the collector report commits, fences
//! and runs through their observer hooks.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use registry_core::Registry as Store;
use registry_core::Result;
use registry_core::observe::Observer;
use registry_gc::collector::GcObserver;
use registry_gc::{RunReport, RunState};

use crate::hook_metrics::HookMetrics;
use crate::store_metrics::StoreMetrics;

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub received_bytes: IntCounter,
    pub sent_bytes: IntCounter,
    storage: StorageGauges,
    gc: GcMetrics,
    index: IndexMetrics,
    store: StoreMetrics,
    filesystem: FilesystemGauges,
    pub(crate) hooks: HookMetrics,
}

/// What the index's running totals say, refreshed at scrape time.
struct StorageGauges {
    uploads: IntGauge,
    repositories: IntGauge,
    manifests: IntGauge,
    tags: IntGauge,
    blobs: IntGauge,
    blob_bytes: IntGauge,
    reclaimable_bytes: IntGauge,
    reclaimable_blobs: IntGauge,
}

/// Collection runs and their write fences.
struct GcMetrics {
    runs: IntCounterVec,
    run_duration: Histogram,
    fence_duration: Histogram,
    fenced_writes: IntCounterVec,
    deleted: IntCounterVec,
    freed_bytes: IntCounter,
}

/// Index commits and the transactions run again.
struct IndexMetrics {
    commit_duration: Histogram,
    commit_writes: Histogram,
    retries: IntCounter,
}

/// The filesystems the store writes to, by `store` (`blobs`, `index`),
/// measured at scrape time.
struct FilesystemGauges {
    free_bytes: IntGaugeVec,
    size_bytes: IntGaugeVec,
    free_inodes: IntGaugeVec,
    min_free_bytes: IntGaugeVec,
}

/// Latency buckets from 100 µs to 30 s.
fn latency_buckets() -> Vec<f64> {
    vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0,
    ]
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

/// Makes metrics registered on one registry.
struct Maker<'a>(&'a Registry);

impl Maker<'_> {
    fn counter(&self, name: &str, help: &str) -> IntCounter {
        register(self.0, IntCounter::new(name, help).expect("metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        register(self.0, IntGauge::new(name, help).expect("metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
        register(self.0, c)
    }

    fn by_store(&self, name: &str, help: &str) -> IntGaugeVec {
        let g = IntGaugeVec::new(Opts::new(name, help), &["store"]).expect("metric");
        register(self.0, g)
    }

    fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets);
        register(self.0, Histogram::with_opts(opts).expect("metric"))
    }
}

impl StorageGauges {
    fn new(m: &Maker<'_>) -> StorageGauges {
        StorageGauges {
            uploads: m.gauge("berth_uploads_in_progress", "Open blob upload sessions."),
            repositories: m.gauge(
                "berth_storage_repositories",
                "Repositories holding anything.",
            ),
            manifests: m.gauge(
                "berth_storage_manifests",
                "Manifests stored (per repository).",
            ),
            tags: m.gauge("berth_storage_tags", "Tags."),
            blobs: m.gauge("berth_storage_blobs", "Blobs stored."),
            blob_bytes: m.gauge("berth_storage_blob_bytes", "Bytes of blobs stored."),
            reclaimable_bytes: m.gauge(
                "berth_gc_reclaimable_bytes",
                "Bytes of blobs nothing references now (collected once their grace period is over).",
            ),
            reclaimable_blobs: m.gauge(
                "berth_gc_reclaimable_blobs",
                "Blobs nothing references now.",
            ),
        }
    }
}

impl GcMetrics {
    fn new(m: &Maker<'_>) -> GcMetrics {
        GcMetrics {
            runs: m.counter_vec(
                "berth_gc_runs_total",
                "Garbage collection runs finished, by outcome and whether they were dry runs.",
                &["outcome", "dry_run"],
            ),
            run_duration: m.histogram(
                "berth_gc_run_duration_seconds",
                "Duration of garbage collection runs.",
                latency_buckets(),
            ),
            fence_duration: m.histogram(
                "berth_gc_fence_duration_seconds",
                "How long each garbage collection write fence was closed.",
                latency_buckets(),
            ),
            fenced_writes: m.counter_vec(
                "berth_gc_fenced_writes_total",
                "Writes that met a closed fence: waited (then went through) or refused (503).",
                &["result"],
            ),
            deleted: m.counter_vec(
                "berth_gc_deleted_total",
                "Items deleted by garbage collection, by kind (blob, manifest, upload).",
                &["kind"],
            ),
            freed_bytes: m.counter(
                "berth_gc_freed_bytes_total",
                "Blob bytes freed by garbage collection.",
            ),
        }
    }
}

impl IndexMetrics {
    fn new(m: &Maker<'_>) -> IndexMetrics {
        IndexMetrics {
            commit_duration: m.histogram(
                "berth_index_commit_duration_seconds",
                "Duration of index group commits (including the fsync).",
                latency_buckets(),
            ),
            commit_writes: m.histogram(
                "berth_index_commit_writes",
                "Writes carried by one index group commit.",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            ),
            retries: m.counter(
                "berth_index_retries_total",
                "Index transactions run again after a conflict with a concurrent one \
                 (serialization failures and deadlocks; PostgreSQL).",
            ),
        }
    }
}

impl FilesystemGauges {
    fn new(m: &Maker<'_>) -> FilesystemGauges {
        FilesystemGauges {
            free_bytes: m.by_store(
                "berth_filesystem_free_bytes",
                "Bytes free (for unprivileged use) on the filesystem a store writes to.",
            ),
            size_bytes: m.by_store(
                "berth_filesystem_size_bytes",
                "Size of the filesystem a store writes to.",
            ),
            free_inodes: m.by_store(
                "berth_filesystem_free_inodes",
                "Inodes free on the filesystem a store writes to (0 where it has no limit).",
            ),
            min_free_bytes: m.by_store(
                "berth_filesystem_min_free_bytes",
                "The low-water mark: pushes are refused (507) below this many free bytes.",
            ),
        }
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let m = Maker(&r);
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "berth_http_request_duration_seconds",
                "Time to answer a request (until the response headers), by route kind.",
            )
            .buckets(latency_buckets()),
            &["route"],
        )
        .expect("metric");
        Metrics {
            store: StoreMetrics::new(&r, latency_buckets()),
            hooks: HookMetrics::new(&r),
            requests: m.counter_vec(
                "berth_http_requests_total",
                "HTTP requests answered, by method, route kind and status.",
                &["method", "route", "status"],
            ),
            request_duration: register(&r, request_duration),
            received_bytes: m.counter(
                "berth_http_received_bytes_total",
                "Request body bytes received.",
            ),
            sent_bytes: m.counter("berth_http_sent_bytes_total", "Response body bytes sent."),
            storage: StorageGauges::new(&m),
            gc: GcMetrics::new(&m),
            index: IndexMetrics::new(&m),
            filesystem: FilesystemGauges::new(&m),
            registry: r,
        }
    }

    /// Records one answered request.
    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.request_duration
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// The text exposition, with the storage gauges refreshed from the
    /// index (and the registry's sessions that hold no data yet) and the
    /// free-space gauges from the filesystems the store writes to.
    pub async fn render(&self, registry: &Store) -> Result<String> {
        let t = registry.totals().await?;
        let set = |g: &IntGauge, v: u64| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        let s = &self.storage;
        set(&s.uploads, registry.open_uploads().await?);
        set(&s.repositories, t.repositories);
        set(&s.manifests, t.manifests);
        set(&s.tags, t.tags);
        set(&s.blobs, t.blobs);
        set(&s.blob_bytes, t.blob_bytes);
        set(&s.reclaimable_bytes, t.unreferenced_bytes);
        set(&s.reclaimable_blobs, t.unreferenced_blobs);
        let g = &self.filesystem;
        for f in registry.filesystems().await {
            let store = [f.store];
            set(&g.free_bytes.with_label_values(&store), f.usage.free_bytes);
            set(&g.size_bytes.with_label_values(&store), f.usage.total_bytes);
            set(
                &g.free_inodes.with_label_values(&store),
                f.usage.free_inodes,
            );
            set(
                &g.min_free_bytes.with_label_values(&store),
                f.min_free_bytes,
            );
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        Ok(String::from_utf8(out).expect("utf-8"))
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Observer for Metrics {
    fn index_commit(&self, took: Duration, writes: usize) {
        self.index.commit_duration.observe(took.as_secs_f64());
        self.index.commit_writes.observe(writes as f64);
    }

    fn index_retry(&self) {
        self.index.retries.inc();
    }

    fn fence_closed(&self, took: Duration) {
        self.gc.fence_duration.observe(took.as_secs_f64());
    }

    fn write_fenced(&self, refused: bool) {
        let result = if refused { "refused" } else { "waited" };
        self.gc.fenced_writes.with_label_values(&[result]).inc();
    }

    fn store_request(&self, kind: &'static str, outcome: &'static str, took: Duration) {
        self.store.request(kind, outcome, took);
    }

    fn store_retry(&self, kind: &'static str) {
        self.store.retry(kind);
    }
}

impl GcObserver for Metrics {
    fn run_finished(&self, r: &RunReport) {
        let outcome = if r.state == RunState::Succeeded {
            "succeeded"
        } else {
            "failed"
        };
        self.gc
            .runs
            .with_label_values(&[outcome, if r.dry_run { "true" } else { "false" }])
            .inc();
        self.gc.run_duration.observe(r.duration_ms as f64 / 1000.0);
        if !r.dry_run {
            self.gc
                .deleted
                .with_label_values(&["blob"])
                .inc_by(r.blobs_deleted);
            self.gc
                .deleted
                .with_label_values(&["manifest"])
                .inc_by(r.manifests_deleted);
            self.gc
                .deleted
                .with_label_values(&["upload"])
                .inc_by(r.uploads_deleted);
            self.gc.freed_bytes.inc_by(r.bytes_freed);
        }
    }
}
