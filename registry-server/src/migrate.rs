//! `registry migrate-blobs`: copies the blobs of a filesystem store into an
//! object store, so that a server can be pointed at the bucket with the
//! same data directory (the index stays where it is).
//!
//! Every blob goes through the object store's own staging: it is received
//! and hashed, and only reaches its content address once its digest
//! matched (one PUT for a small blob, a multipart upload completed after
//! the check for a large one). It is then read back from the bucket and
//! hashed again. Blobs already in the bucket with the right size are
//! skipped, so the command can run again after an interruption, or once
//! while the old server still serves and once more after it stopped.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use registry_core::blob::{BlobStore, FsBlobStore, StoredBlob};
use registry_core::check::Progress;
use registry_core::observe::NoObserver;
use registry_core::{Digest, Error, Hasher, Result};
use registry_http::human_bytes;
use registry_s3::{Location, S3BlobStore, S3Options};

use crate::progress::Reporter;

/// Blobs listed at a time.
const PAGE: usize = 1000;

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The data directory of the filesystem store (its `blobs/` is read;
    /// nothing in it is changed).
    #[arg(long)]
    pub from_dir: PathBuf,
    /// The object store, `s3://BUCKET[/PREFIX]` (endpoint and credentials
    /// from the AWS_* variables, as for `serve --blob-store`).
    #[arg(long)]
    pub to: String,
    /// Blobs copied at the same time.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
}

/// What happened to one blob.
enum Outcome {
    Copied(u64),
    Skipped(u64),
    Failed(String),
}

#[derive(Default)]
struct Tally {
    copied: u64,
    copied_bytes: u64,
    skipped: u64,
    skipped_bytes: u64,
    failed: u64,
}

impl Tally {
    fn add(&mut self, digest: &Digest, outcome: Outcome) {
        match outcome {
            Outcome::Copied(n) => {
                self.copied += 1;
                self.copied_bytes += n;
            }
            Outcome::Skipped(n) => {
                self.skipped += 1;
                self.skipped_bytes += n;
            }
            Outcome::Failed(why) => {
                self.failed += 1;
                println!("FAILED:  {digest}: {why}");
            }
        }
    }
}

/// Runs the migration; the exit status: 0 when every blob is in the bucket,
/// verified, 2 when some could not be copied (an error: none could).
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<i32> {
    crate::init_logging(crate::config::LogFormat::Text);
    anyhow::ensure!(
        args.from_dir.join("blobs").is_dir(),
        "{} holds no blobs/ directory: not a data directory",
        args.from_dir.display()
    );
    let from = FsBlobStore::open(&args.from_dir)?;
    let location: Location = args.to.parse()?;
    let to = S3BlobStore::from_env(location, S3Options::default(), Arc::new(NoObserver))
        .with_context(|| format!("opening the object store {}", args.to))?;
    if let Err(why) = to.ready().await {
        anyhow::bail!("the object store does not answer: {why}");
    }
    let total = count(&from).await?;
    let reporter = Reporter::new(100);
    reporter.event(Progress::Phase {
        name: "copying blobs",
        total: Some(total),
    });
    let mut tally = Tally::default();
    let mut after: Option<Digest> = None;
    loop {
        let page = from.list(after.as_ref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.digest.clone());
        let mut done = futures::stream::iter(page.iter())
            .map(|b| {
                let (from, to) = (&from, &to);
                async move { (b, migrate_one(from, to, b).await) }
            })
            .buffer_unordered(args.jobs.max(1));
        while let Some((b, outcome)) = done.next().await {
            tally.add(&b.digest, outcome);
            reporter.event(Progress::Advance(1));
        }
    }
    reporter.finish();
    println!(
        "copied {} blobs ({}), {} already there ({}), {} failed",
        tally.copied,
        human_bytes(tally.copied_bytes),
        tally.skipped,
        human_bytes(tally.skipped_bytes),
        tally.failed
    );
    Ok(if tally.failed == 0 { 0 } else { 2 })
}

/// How many blobs the filesystem store holds (a listing, no reads).
async fn count(from: &FsBlobStore) -> Result<u64> {
    let (mut n, mut after) = (0, None::<Digest>);
    loop {
        let page = from.list(after.as_ref(), PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(n);
        };
        after = Some(last.digest.clone());
        n += page.len() as u64;
    }
}

async fn migrate_one(from: &FsBlobStore, to: &S3BlobStore, b: &StoredBlob) -> Outcome {
    match to.stat(&b.digest).await {
        Ok(Some(size)) if size == b.size => return Outcome::Skipped(size),
        Ok(Some(size)) => {
            tracing::warn!(digest = %b.digest, size, expected = b.size, "replacing an object of the wrong size");
        }
        Ok(None) => {}
        Err(e) => return Outcome::Failed(e.to_string()),
    }
    match copy(from, to, b).await {
        Ok(()) => Outcome::Copied(b.size),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Stages the blob in the object store (which checks its digest before it
/// reaches the content address), publishes it, and reads it back.
async fn copy(from: &FsBlobStore, to: &S3BlobStore, b: &StoredBlob) -> Result<()> {
    let body = from.read(&b.digest, 0..b.size).await?;
    let staged = to.stage("migrate", &b.digest, body, b.size).await?;
    to.publish(staged, &b.digest).await?;
    if let Err(e) = verify(to, &b.digest, b.size).await {
        // Never leave what does not hash right at a content address.
        let _ = to.delete(std::slice::from_ref(&b.digest)).await;
        return Err(e);
    }
    Ok(())
}

/// Reads a blob back from the object store and checks its size and digest.
async fn verify(to: &S3BlobStore, digest: &Digest, size: u64) -> Result<()> {
    let stored = to.stat(digest).await?;
    if stored != Some(size) {
        return Err(Error::Storage(format!(
            "read back {stored:?} bytes, {size} were copied"
        )));
    }
    let mut hasher = Hasher::new(digest.algorithm());
    let mut stream = to.read(digest, 0..size).await?;
    while let Some(chunk) = stream.next().await {
        hasher.update(&chunk?);
    }
    let actual = hasher.finish();
    if actual != *digest {
        return Err(Error::DigestMismatch {
            expected: digest.clone(),
            actual,
        });
    }
    Ok(())
}
