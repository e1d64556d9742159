//! head-manifest, push-image and mixed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use super::{Bench, POOL_NONCE, prepare, stream};
use crate::bench::client::OpError;
use crate::bench::content::{Image, mix};
use crate::bench::options::Workload;
use crate::bench::report::Report;
use crate::bench::runner::{self, Limit, Outcome, Sample};

const HEAD_IMAGES: u64 = 16;
const HEAD_CONCURRENCY: usize = 32;
const PUSH_IMAGE_CONCURRENCY: usize = 8;
const MIXED_IMAGES: u64 = 32;
const MIXED_CONCURRENCY: usize = 16;

/// Kinds of operation in the mixed workload, with their share in percent.
pub const MIXED_KINDS: [(&str, u64); 3] = [
    ("pull (manifest + blob)", 70),
    ("push (image)", 20),
    ("HEAD (manifest or blob)", 10),
];

/// Tagged images, the same in every run, that pulls and HEADs ask for.
pub struct ImagePool {
    repo: Arc<str>,
    images: Vec<(String, Image)>,
}

impl ImagePool {
    /// Makes sure the images are in `<namespace>/<name>` under their tags.
    async fn ensure(b: &Bench, name: &str, content: u64, count: u64) -> anyhow::Result<Self> {
        let repo = b.repo(name);
        let images: Vec<(String, Image)> = (0..count)
            .map(|seq| (format!("p{seq:03}"), b.image(POOL_NONCE, content, seq)))
            .collect();
        prepare(4, images.iter().collect(), |(tag, image)| {
            let repo = repo.clone();
            async move {
                if b.registry.head_manifest(&repo, tag).await.is_ok() {
                    return Ok(());
                }
                b.push_image(&repo, tag, image).await.map(drop)
            }
        })
        .await?;
        Ok(ImagePool { repo, images })
    }

    fn pick(&self, seq: u64) -> &(String, Image) {
        &self.images[(mix(seq) % self.images.len() as u64) as usize]
    }
}

/// HEAD on a manifest by tag: what `docker pull` does first, and what a
/// CI system polling for updates does most.
pub async fn head_manifest(b: &Arc<Bench>, report: &mut Report) -> anyhow::Result<()> {
    let pool = Arc::new(ImagePool::ensure(b, "head", stream::HEAD_IMAGES, HEAD_IMAGES).await?);
    let bench = b.clone();
    let op = move |seq| {
        let (b, pool) = (bench.clone(), pool.clone());
        async move {
            let (tag, _) = pool.pick(seq);
            Sample::from(b.registry.head_manifest(&pool.repo, tag).await.map(|()| 0))
        }
    };
    let concurrency = b.concurrency(HEAD_CONCURRENCY);
    b.measure(
        report,
        Workload::HeadManifest,
        "by tag",
        concurrency,
        b.limit(),
        op,
    )
    .await;
    Ok(())
}

/// Pushes unique images: config and 4 layers (POST + PUT each), then the
/// manifest under a new tag. One operation is one whole image.
pub async fn push_image(b: &Arc<Bench>, report: &mut Report) -> anyhow::Result<()> {
    let repo = b.repo("push-image");
    let bench = b.clone();
    let op = move |seq| {
        let (b, repo) = (bench.clone(), repo.clone());
        async move {
            let image = b.image(b.nonce, stream::PUSH_IMAGE, seq);
            let tag = format!("{:08x}-{seq}", b.nonce as u32);
            Sample::from(b.push_image(&repo, &tag, &image).await)
        }
    };
    let case = format!(
        "config + 4 × {}",
        crate::bench::options::format_size(b.opts.layer_size)
    );
    let concurrency = b.concurrency(PUSH_IMAGE_CONCURRENCY);
    b.measure(
        report,
        Workload::PushImage,
        &case,
        concurrency,
        b.limit(),
        op,
    )
    .await;
    Ok(())
}

/// 70 % pulls, 20 % pushes, 10 % HEADs, for `--duration`.
pub async fn mixed(b: &Arc<Bench>, report: &mut Report) -> anyhow::Result<()> {
    let pool = Arc::new(mixed_pool(b).await?);
    let concurrency = b.concurrency(MIXED_CONCURRENCY);
    super::announce(Workload::Mixed, "70/20/10", concurrency, &b.limit());
    let outcome = run_mixed(b.clone(), pool, concurrency, b.limit(), None).await;
    let mut total = crate::bench::stats::Stats::default();
    for ((case, _), stats) in MIXED_KINDS.iter().zip(&outcome.stats) {
        super::record(
            report,
            Workload::Mixed,
            case,
            concurrency,
            outcome.elapsed,
            stats,
        );
        total.merge(stats);
    }
    super::record(
        report,
        Workload::Mixed,
        "all operations",
        concurrency,
        outcome.elapsed,
        &total,
    );
    Ok(())
}

/// The images the mixed workload pulls.
pub async fn mixed_pool(b: &Bench) -> anyhow::Result<ImagePool> {
    ImagePool::ensure(b, "mixed", stream::MIXED_IMAGES, MIXED_IMAGES).await
}

/// Runs the mix. With `during`, an operation started while the flag is
/// set counts as kind `k + 3` instead of `k` (the same kind, during a GC).
pub async fn run_mixed(
    b: Arc<Bench>,
    pool: Arc<ImagePool>,
    concurrency: usize,
    limit: Limit,
    during: Option<Arc<AtomicBool>>,
) -> Outcome {
    let kinds = if during.is_some() { 6 } else { 3 };
    let push_repo = b.repo("mixed-push");
    runner::run(kinds, concurrency, limit, move |seq| {
        let (b, pool, push_repo) = (b.clone(), pool.clone(), push_repo.clone());
        let shifted = during.as_ref().is_some_and(|d| d.load(Ordering::Relaxed));
        async move {
            let roll = mix(seq ^ 0x5eed) % 100;
            let (kind, result) = if roll < MIXED_KINDS[0].1 {
                (0, pull(&b, &pool, seq).await)
            } else if roll < MIXED_KINDS[0].1 + MIXED_KINDS[1].1 {
                let image = b.image(b.nonce, stream::MIXED_PUSH, seq);
                let tag = format!("{:08x}-{seq}", b.nonce as u32);
                (1, b.push_image(&push_repo, &tag, &image).await)
            } else {
                (2, head(&b, &pool, seq).await)
            };
            Sample {
                kind: kind + if shifted { 3 } else { 0 },
                result,
            }
        }
    })
    .await
}

/// GET a manifest by tag, then one of its layers (verified).
async fn pull(b: &Bench, pool: &ImagePool, seq: u64) -> Result<u64, OpError> {
    let (tag, _) = pool.pick(seq);
    let manifest = b.registry.get_manifest(&pool.repo, tag).await?;
    let parsed: Value = serde_json::from_slice(&manifest)
        .map_err(|e| OpError::invalid("verify manifest", e.to_string()))?;
    let layers = parsed["layers"]
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| OpError::invalid("verify manifest", "manifest without layers"))?;
    let layer = &layers[(mix(seq >> 1) % layers.len() as u64) as usize];
    let digest = layer["digest"]
        .as_str()
        .ok_or_else(|| OpError::invalid("verify manifest", "layer without digest"))?;
    let blob = b
        .registry
        .pull_blob(&pool.repo, digest, layer["size"].as_u64())
        .await?;
    Ok(manifest.len() as u64 + blob)
}

/// HEAD a manifest (even `seq`) or a layer (odd).
async fn head(b: &Bench, pool: &ImagePool, seq: u64) -> Result<u64, OpError> {
    let (tag, image) = pool.pick(seq);
    if seq & 1 == 0 {
        b.registry.head_manifest(&pool.repo, tag).await?;
    } else {
        let layer = &image.layers[(seq / 2 % image.layers.len() as u64) as usize];
        b.registry
            .head_blob(&pool.repo, &layer.digest, Some(layer.len()))
            .await?;
    }
    Ok(0)
}
