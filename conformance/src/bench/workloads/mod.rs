//! The workloads, and what they share: the registry client, the options,
//! content templates and the blobs pushed so far.

mod blobs;
mod gc;
mod images;
mod listing;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use super::client::{OpResult, Registry};
use super::content::{BlobId, BlobTemplate, Image};
use super::options::{Options, Workload};
use super::report::{Report, result_line};
use super::runner::{self, Limit, Outcome, Sample};
use super::stats::{CaseResult, Stats};

/// Nonce of content that must be the same in every run (pools that a re-run
/// finds already in place).
const POOL_NONCE: u64 = 0x6265_7274_682d_706f;
/// Pushed blobs remembered per size, for pull-blob.
const REMEMBERED: usize = 64;
/// Layers per image.
const LAYERS: u64 = 4;

/// `BlobId::stream` of each kind of content, so that no two workloads push
/// the same bytes.
mod stream {
    pub const POOL: u64 = 1;
    pub const PUSH_MONO: u64 = 2;
    pub const PUSH_CHUNKED: u64 = 3;
    pub const PUSH_IMAGE: u64 = 4;
    pub const MIXED_PUSH: u64 = 5;
    pub const GC: u64 = 6;
    pub const GC_SHARED: u64 = 7;
    pub const HEAD_IMAGES: u64 = 8;
    pub const MIXED_IMAGES: u64 = 9;
    pub const LISTING_IMAGE: u64 = 10;
}

/// A blob known to be in a repository.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub repo: Arc<str>,
    pub digest: String,
}

/// Everything a workload needs.
pub struct Bench {
    pub registry: Registry,
    pub opts: Options,
    /// Differs between runs, so that pushes always send new content.
    pub nonce: u64,
    templates: Mutex<HashMap<u64, Arc<BlobTemplate>>>,
    pushed: Mutex<HashMap<u64, VecDeque<Pushed>>>,
}

impl Bench {
    pub fn new(registry: Registry, opts: Options) -> Self {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(40);
        Bench {
            registry,
            opts,
            nonce,
            templates: Mutex::default(),
            pushed: Mutex::default(),
        }
    }

    /// `<namespace>/<name>`.
    fn repo(&self, name: &str) -> Arc<str> {
        format!("{}/{name}", self.opts.namespace).into()
    }

    /// The shared content of blobs of `size` bytes (made once).
    fn template(&self, size: u64) -> Arc<BlobTemplate> {
        let mut templates = self
            .templates
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        templates
            .entry(size)
            .or_insert_with(|| Arc::new(BlobTemplate::new(size, POOL_NONCE)))
            .clone()
    }

    /// How long each measured case runs.
    fn limit(&self) -> Limit {
        match self.opts.ops {
            Some(n) => Limit::Ops(n),
            None => Limit::Time(self.opts.duration),
        }
    }

    fn concurrency(&self, default: usize) -> usize {
        self.opts.concurrency.unwrap_or(default)
    }

    fn remember(&self, size: u64, repo: &Arc<str>, digest: &str) {
        let mut pushed = self.pushed.lock().unwrap_or_else(PoisonError::into_inner);
        let list = pushed.entry(size).or_default();
        if list.len() == REMEMBERED {
            list.pop_front();
        }
        list.push_back(Pushed {
            repo: repo.clone(),
            digest: digest.to_string(),
        });
    }

    fn pushed(&self, size: u64) -> Vec<Pushed> {
        let pushed = self.pushed.lock().unwrap_or_else(PoisonError::into_inner);
        pushed
            .get(&size)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// An image of [`LAYERS`] layers of `--layer-size`, a function of its
    /// arguments only.
    fn image(&self, nonce: u64, stream: u64, seq: u64) -> Image {
        let template = self.template(self.opts.layer_size);
        let layers = (0..LAYERS)
            .map(|k| {
                template.blob(BlobId {
                    nonce,
                    stream,
                    seq: seq * LAYERS + k,
                })
            })
            .collect();
        Image::new(&format!("{nonce:x}/{stream}/{seq}"), layers)
    }

    /// Pushes an image as containerd does: each blob with POST + PUT, then
    /// the manifest. Returns the bytes sent.
    async fn push_image(&self, repo: &str, reference: &str, image: &Image) -> OpResult<u64> {
        for blob in image.blobs() {
            self.registry.push_blob(repo, blob).await?;
        }
        self.registry
            .put_manifest(repo, reference, &image.manifest)
            .await?;
        Ok(image.total_len())
    }

    /// Runs one measured case and adds its row to the report.
    async fn measure<F, Fut>(
        &self,
        report: &mut Report,
        workload: Workload,
        case: &str,
        concurrency: usize,
        limit: Limit,
        op: F,
    ) -> Outcome
    where
        F: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Sample> + Send + 'static,
    {
        announce(workload, case, concurrency, &limit);
        let outcome = runner::run(1, concurrency, limit, op).await;
        record(
            report,
            workload,
            case,
            concurrency,
            outcome.elapsed,
            &outcome.stats[0],
        );
        outcome
    }
}

fn announce(workload: Workload, case: &str, concurrency: usize, limit: &Limit) {
    let limit = match limit {
        Limit::Time(d) => format!("{d:.0?}"),
        Limit::Ops(n) => format!("{n} ops"),
        Limit::Until(_) => "until stopped".to_string(),
    };
    eprintln!(
        "… {} / {case}: {concurrency} workers, {limit}",
        workload.name()
    );
}

/// Adds a row to the report and shows it on stderr.
fn record(
    report: &mut Report,
    workload: Workload,
    case: &str,
    concurrency: usize,
    elapsed: Duration,
    stats: &Stats,
) {
    let row = CaseResult::new(&workload.name(), case, concurrency, elapsed, stats);
    eprintln!("{}", result_line(&row));
    report.results.push(row);
}

/// Runs `f` on every item, `concurrency` at a time, for preparations that
/// are not measured; stops at the first error.
async fn prepare<T, F, Fut>(concurrency: usize, items: Vec<T>, f: F) -> anyhow::Result<()>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = OpResult<()>>,
{
    futures::stream::iter(items)
        .map(f)
        .buffer_unordered(concurrency.max(1))
        .try_collect::<()>()
        .await
        .map_err(|e| anyhow::anyhow!("preparing: {e}"))
}

/// Workers for blob workloads of this size, unless overridden.
fn size_concurrency(size: u64) -> usize {
    match size {
        0..=65_536 => 16,
        65_537..=8_388_608 => 8,
        _ => 2,
    }
}

/// Runs one workload.
pub async fn run(
    bench: &Arc<Bench>,
    workload: Workload,
    report: &mut Report,
) -> anyhow::Result<()> {
    match workload {
        Workload::All => Ok(()),
        Workload::PushBlobMono => blobs::push(bench, report, None).await,
        Workload::PushBlobChunked => blobs::push(bench, report, Some(bench.opts.chunks)).await,
        Workload::PullBlob => blobs::pull(bench, report).await,
        Workload::HeadBlob => blobs::head(bench, report).await,
        Workload::HeadManifest => images::head_manifest(bench, report).await,
        Workload::PushImage => images::push_image(bench, report).await,
        Workload::TagsList => listing::tags_list(bench, report).await,
        Workload::Catalog => listing::catalog(bench, report).await,
        Workload::Mixed => images::mixed(bench, report).await,
        Workload::Gc => gc::gc(bench, report).await,
    }
}
