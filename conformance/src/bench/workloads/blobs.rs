//! push-blob-mono, push-blob-chunked, pull-blob and head-blob.

use std::sync::Arc;

use super::{Bench, POOL_NONCE, Pushed, prepare, size_concurrency, stream};
use crate::bench::content::BlobId;
use crate::bench::options::{Workload, format_size};
use crate::bench::report::Report;
use crate::bench::runner::Sample;

/// Blobs of the 4 KiB pool that head-blob asks about.
const HEAD_POOL: u64 = 64;
const HEAD_BLOB_SIZE: u64 = 4096;
const HEAD_CONCURRENCY: usize = 32;

/// Pushes unique blobs of each size: monolithically (POST, then PUT with
/// the body) or, with `chunks`, in that many PATCHes before the PUT.
pub async fn push(b: &Arc<Bench>, report: &mut Report, chunks: Option<u64>) -> anyhow::Result<()> {
    let (workload, repo, content) = match chunks {
        None => (
            Workload::PushBlobMono,
            b.repo("push-mono"),
            stream::PUSH_MONO,
        ),
        Some(_) => (
            Workload::PushBlobChunked,
            b.repo("push-chunked"),
            stream::PUSH_CHUNKED,
        ),
    };
    for &size in &b.opts.sizes {
        let template = b.template(size);
        let case = match chunks {
            None => format_size(size),
            Some(n) => format!("{} in {n} PATCHes", format_size(size)),
        };
        let (bench, repo) = (b.clone(), repo.clone());
        let op = move |seq| {
            let (b, template, repo) = (bench.clone(), template.clone(), repo.clone());
            async move {
                let id = BlobId {
                    nonce: b.nonce,
                    stream: content,
                    seq,
                };
                let blob = template.blob(id);
                let pushed = match chunks {
                    None => b.registry.push_blob(&repo, &blob).await,
                    Some(n) => b.registry.push_blob_chunked(&repo, &blob, n).await,
                };
                Sample::from(pushed.map(|()| {
                    b.remember(size, &repo, &blob.digest);
                    size
                }))
            }
        };
        let concurrency = b.concurrency(size_concurrency(size));
        b.measure(report, workload, &case, concurrency, b.limit(), op)
            .await;
    }
    Ok(())
}

/// Pulls blobs of each size, verifying the digest of every body while it
/// streams in. Uses the blobs the push workloads left, or pushes a pool.
pub async fn pull(b: &Arc<Bench>, report: &mut Report) -> anyhow::Result<()> {
    for &size in &b.opts.sizes {
        let mut pool = b.pushed(size);
        if pool.is_empty() {
            // Twice as many blobs as workers: they rarely ask for the same.
            let count = 2 * size_concurrency(size) as u64;
            pool = blob_pool(b, "pull", size, count).await?;
        }
        let pool = Arc::new(pool);
        let bench = b.clone();
        let op = move |seq| {
            let (b, pool) = (bench.clone(), pool.clone());
            async move {
                let blob = &pool[(seq % pool.len() as u64) as usize];
                let pulled = b.registry.pull_blob(&blob.repo, &blob.digest, Some(size));
                Sample::from(pulled.await)
            }
        };
        let concurrency = b.concurrency(size_concurrency(size));
        b.measure(
            report,
            Workload::PullBlob,
            &format_size(size),
            concurrency,
            b.limit(),
            op,
        )
        .await;
    }
    Ok(())
}

/// HEAD on existing 4 KiB blobs, as a client does before pushing a layer.
pub async fn head(b: &Arc<Bench>, report: &mut Report) -> anyhow::Result<()> {
    let pool = Arc::new(blob_pool(b, "head", HEAD_BLOB_SIZE, HEAD_POOL).await?);
    let bench = b.clone();
    let op = move |seq| {
        let (b, pool) = (bench.clone(), pool.clone());
        async move {
            let blob = &pool[(seq % pool.len() as u64) as usize];
            let head = b
                .registry
                .head_blob(&blob.repo, &blob.digest, Some(HEAD_BLOB_SIZE));
            Sample::from(head.await.map(|()| 0))
        }
    };
    let case = format!("existing {} blob", format_size(HEAD_BLOB_SIZE));
    let concurrency = b.concurrency(HEAD_CONCURRENCY);
    b.measure(
        report,
        Workload::HeadBlob,
        &case,
        concurrency,
        b.limit(),
        op,
    )
    .await;
    Ok(())
}

/// Makes sure `count` blobs of `size`, the same in every run, are in
/// `<namespace>/<name>` (pushing those a HEAD does not find).
async fn blob_pool(
    b: &Arc<Bench>,
    name: &str,
    size: u64,
    count: u64,
) -> anyhow::Result<Vec<Pushed>> {
    let repo = b.repo(name);
    let template = b.template(size);
    let blobs: Vec<_> = (0..count)
        .map(|seq| {
            template.blob(BlobId {
                nonce: POOL_NONCE,
                stream: stream::POOL,
                seq,
            })
        })
        .collect();
    prepare(4, blobs.clone(), |blob| {
        let repo = repo.clone();
        async move {
            if b.registry
                .head_blob(&repo, &blob.digest, Some(size))
                .await
                .is_ok()
            {
                return Ok(());
            }
            b.registry.push_blob(&repo, &blob).await
        }
    })
    .await?;
    Ok(blobs
        .into_iter()
        .map(|blob| Pushed {
            repo: repo.clone(),
            digest: blob.digest,
        })
        .collect())
}
