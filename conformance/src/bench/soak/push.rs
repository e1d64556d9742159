//! Image pushes the way clients make them: each blob by one of the upload
//! flows (monolithic in two requests or one, chunked), a shared base layer
//! skipped after a `HEAD` or mounted from another repository, the
//! manifest last; a write refused during a fence is retried, and a
//! manifest whose blob a sweep took is pushed again with its blobs.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Soak;
use super::tally::{Op, is_error, is_fenced};
use crate::bench::client::{OpError, OpResult};
use crate::bench::content::{Blob, BlobId, BlobTemplate, Image, mix};

/// Base layers shared by the images of every repository.
const SHARED_LAYERS: u64 = 24;
const SHARED_SIZE: u64 = 256 << 10;
/// Sizes of the layers unique to an image.
const SMALL_SIZES: [u64; 3] = [4 << 10, 16 << 10, 64 << 10];
/// Size of the chunk an abandoned upload holds.
const SCRAP_SIZE: u64 = 128 << 10;
/// Attempts of one write refused with `503` during a fence.
const FENCE_ATTEMPTS: u32 = 40;
const FENCE_PAUSE: Duration = Duration::from_millis(250);
/// Attempts of a manifest whose blob was swept (each pushes the blobs again).
const MANIFEST_ATTEMPTS: u32 = 3;

/// How one blob of an image is put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// `POST`, then `PUT` with the body.
    Mono,
    /// `POST ?digest=` with the body.
    SinglePost,
    /// `POST`, this many `PATCH`es, an empty `PUT`.
    Chunked(u64),
    /// `HEAD` in the repository; if absent, mount from another one (which
    /// uploads when the registry declines).
    Shared,
    /// `HEAD`; if absent, `POST` + `PUT` (pushing again after a sweep).
    Check,
}

/// The blobs the soak pushes, made from a few templates (see `content.rs`).
pub struct Content {
    nonce: u64,
    small: Vec<BlobTemplate>,
    large: BlobTemplate,
    shared: Vec<Blob>,
    scrap: BlobTemplate,
}

impl Content {
    pub fn new(nonce: u64, large_size: u64) -> Content {
        let shared_template = BlobTemplate::new(SHARED_SIZE, nonce);
        let shared = (0..SHARED_LAYERS)
            .map(|seq| {
                shared_template.blob(BlobId {
                    nonce,
                    stream: 0,
                    seq,
                })
            })
            .collect();
        Content {
            nonce,
            small: SMALL_SIZES
                .iter()
                .map(|&s| BlobTemplate::new(s, nonce))
                .collect(),
            large: BlobTemplate::new(large_size, nonce),
            shared,
            scrap: BlobTemplate::new(SCRAP_SIZE, nonce),
        }
    }

    /// Image `id`: a shared base layer, one to three small layers of its
    /// own and, every `large_every`th image, a large one; with how each of
    /// its blobs (config first) is pushed.
    fn image(&self, id: u64, large_every: u64) -> (Image, Vec<How>) {
        let roll = mix(id ^ self.nonce);
        let mut layers = vec![self.shared[(roll % SHARED_LAYERS) as usize].clone()];
        let mut how = vec![How::Mono, How::Shared];
        for k in 0..1 + (roll >> 8) % 3 {
            let template = &self.small[((roll >> (12 + 2 * k)) % 3) as usize];
            layers.push(template.blob(BlobId {
                nonce: self.nonce,
                stream: 1,
                seq: id * 4 + k,
            }));
            how.push(match (id + k) % 3 {
                0 => How::Mono,
                1 => How::SinglePost,
                _ => How::Chunked(3),
            });
        }
        if large_every > 0 && id % large_every == large_every - 1 {
            layers.push(self.large.blob(BlobId {
                nonce: self.nonce,
                stream: 2,
                seq: id,
            }));
            let pieces = self.large.size().div_ceil(1 << 20);
            how.push(if (id / large_every).is_multiple_of(2) {
                How::Chunked(pieces)
            } else {
                How::Mono
            });
        }
        let image = Image::new(&format!("soak/{:x}/{id}", self.nonce), layers);
        (image, how)
    }

    /// The chunk abandoned upload `seq` writes.
    pub fn scrap(&self, seq: u64) -> Blob {
        self.scrap.blob(BlobId {
            nonce: self.nonce,
            stream: 3,
            seq,
        })
    }
}

/// Runs `op` until it is not refused by a fence (each refusal counted as
/// expected); returns its answer and when the attempt that got it began.
pub async fn fenced<T, F, Fut>(s: &Soak, mut op: F) -> (OpResult<T>, Instant)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = OpResult<T>>,
{
    let mut attempt = 1;
    loop {
        let began = Instant::now();
        match op().await {
            Err(e) if is_fenced(&e) && attempt < FENCE_ATTEMPTS => {
                s.tally
                    .expected("503 UNAVAILABLE while a sweep held the fence (retried)");
                attempt += 1;
                tokio::time::sleep(FENCE_PAUSE).await;
            }
            other => return (other, began),
        }
    }
}

/// Pushes image `id` under the tag `i<id>` and records it once acknowledged.
pub async fn push(s: &Soak, id: u64) {
    let repo = (id % s.opts.repos as u64) as usize;
    let name = s.repo(repo);
    let (image, how) = s.content.image(id, s.opts.large_every);
    let image = Arc::new(image);
    let tag = format!("i{id}");
    s.model.sending(repo, &image.digest);
    for attempt in 0..MANIFEST_ATTEMPTS {
        let how: Vec<How> = if attempt == 0 {
            how.clone()
        } else {
            vec![How::Check; how.len()]
        };
        let Some(oldest) = push_blobs(s, repo, &image, &how).await else {
            return;
        };
        let (put, _) = fenced(s, || s.registry.put_manifest(&name, &tag, &image.manifest)).await;
        match put {
            Ok(()) => {
                s.model.pushed(id, repo, &tag, image.clone());
                s.tally.op(Op::Push);
                s.tally.pushed(image.total_len());
                return;
            }
            // The sweep may take a blob nothing references once nobody
            // uploaded, mounted or confirmed it for a grace period.
            Err(e)
                if is_error(&e, 400, "MANIFEST_BLOB_UNKNOWN")
                    && oldest.elapsed() > s.opts.gc_grace =>
            {
                s.tally.expected("MANIFEST_BLOB_UNKNOWN: a blob pushed more than a grace period before was swept (pushed again)");
            }
            Err(e) => return s.tally.unexpected("PUT manifest", &e),
        }
    }
    s.tally.unexpected_text(
        "push",
        "MANIFEST_BLOB_UNKNOWN after pushing the blobs again, twice",
    );
}

/// Puts every blob of `image` in place; returns when the request that put
/// (or confirmed) the first one began, or `None` after a failure (counted).
async fn push_blobs(s: &Soak, repo: usize, image: &Image, how: &[How]) -> Option<Instant> {
    let mut oldest: Option<Instant> = None;
    for (blob, &how) in image.blobs().zip(how) {
        let (result, began) = fenced(s, || push_blob(s, repo, blob, how)).await;
        if let Err(e) = result {
            blob_failure(s, &e, began);
            return None;
        }
        oldest = Some(oldest.map_or(began, |o| o.min(began)));
    }
    oldest
}

/// Counts a failed blob push: a session purged because it sat idle longer
/// than `upload_max_age` is expected, anything else is not.
fn blob_failure(s: &Soak, e: &OpError, began: Instant) {
    if is_error(e, 404, "BLOB_UPLOAD_UNKNOWN") && began.elapsed() > s.opts.upload_max_age {
        s.tally
            .expected("BLOB_UPLOAD_UNKNOWN: an upload slower than upload_max_age was purged");
    } else {
        s.tally.unexpected("push blob", e);
    }
}

async fn push_blob(s: &Soak, repo_index: usize, blob: &Blob, how: How) -> OpResult<()> {
    let (registry, repo) = (&s.registry, s.repo(repo_index));
    let repo = repo.as_str();
    match how {
        How::Mono => registry.push_blob(repo, blob).await,
        How::SinglePost => registry.push_blob_single_post(repo, blob).await,
        How::Chunked(pieces) => registry.push_blob_chunked(repo, blob, pieces).await,
        How::Shared | How::Check => {
            match registry
                .head_blob(repo, &blob.digest, Some(blob.len()))
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if super::tally::is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
            if how == How::Check {
                return registry.push_blob(repo, blob).await;
            }
            // Any other repository: it may hold the blob or not (then the
            // registry declines the mount and the blob is uploaded).
            let other = rand::random_range(1..s.opts.repos.max(2));
            let from = s.repo((repo_index + other) % s.opts.repos);
            registry.mount_blob(repo, &from, blob).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_share_a_base_layer_and_vary_their_uploads() {
        let content = Content::new(7, 3 << 20);
        let mut large = 0;
        let mut chunked = 0;
        for id in 0..50 {
            let (image, how) = content.image(id, 10);
            assert_eq!(how.len(), image.layers.len() + 1, "one way per blob");
            assert_eq!(how[1], How::Shared);
            assert!(
                content
                    .shared
                    .iter()
                    .any(|b| b.digest == image.layers[0].digest)
            );
            large += image.layers.iter().filter(|l| l.len() == 3 << 20).count();
            chunked += how.iter().filter(|h| matches!(h, How::Chunked(_))).count();
            assert_eq!(
                content.image(id, 10).0.digest,
                image.digest,
                "a function of the id"
            );
        }
        assert_eq!(large, 5);
        assert!(chunked > 5);
        assert_eq!(content.scrap(1).len(), SCRAP_SIZE);
    }
}
