//! The integrity check: does the blob store agree with the index?
//!
//! It walks everything (so it runs on a stopped store): every blob row must
//! have its file with the recorded size (and, with `verify_content`, the
//! recorded digest); every blob file must have a row; every derived record
//! of the index must equal a recount. With `repair` it fixes what it safely
//! can: recounts, deletes files no row names, moves corrupt files to the
//! quarantine, and forgets blobs whose bytes are gone or corrupt together
//! with the manifests that referenced them (reported: pushing those images
//! again restores them).

use futures::StreamExt;
use serde::Serialize;

use crate::digest::{Digest, Hasher};
use crate::error::Result;
use crate::index::RemovedManifest;
use crate::registry::Registry;
use crate::registry::blobs::BlobSource;

#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    pub repair: bool,
    pub verify_content: bool,
}

/// A blob whose bytes disagree with its row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobProblem {
    pub digest: Digest,
    /// Size recorded in the index.
    pub size: u64,
    /// What was found: a size, a digest, or nothing.
    pub found: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub files_checked: u64,
    /// Rows whose file is gone.
    pub missing: Vec<BlobProblem>,
    /// Files of another size than recorded.
    pub wrong_size: Vec<BlobProblem>,
    /// Files whose content does not hash to their digest (`verify_content`).
    pub corrupt: Vec<BlobProblem>,
    /// Files no row names.
    pub orphan_files: Vec<(Digest, u64)>,
    /// Derived records that disagree with a recount.
    pub count_problems: Vec<String>,
    pub repaired: bool,
    /// Manifests removed because a blob they need is gone (on repair).
    pub removed_manifests: Vec<RemovedManifest>,
    /// What still disagrees after the repair.
    pub remaining_problems: Vec<String>,
}

impl CheckReport {
    /// Nothing was found wrong.
    pub fn clean(&self) -> bool {
        self.missing.is_empty()
            && self.wrong_size.is_empty()
            && self.corrupt.is_empty()
            && self.orphan_files.is_empty()
            && self.count_problems.is_empty()
    }
}

/// Progress of a long check, for a progress bar or log lines.
pub enum Progress<'a> {
    Phase { name: &'a str, total: Option<u64> },
    Advance(u64),
}

async fn hash_of(
    registry: &Registry,
    digest: &Digest,
    source: BlobSource,
    size: u64,
) -> Result<Digest> {
    let mut stream = registry.read_blob(digest, source, 0..size).await?;
    let mut h = Hasher::new(digest.algorithm());
    while let Some(chunk) = stream.next().await {
        h.update(&chunk?);
    }
    Ok(h.finish())
}

enum Found {
    Missing(BlobProblem),
    WrongSize(BlobProblem),
    Corrupt(BlobProblem),
}

/// What is wrong with a blob's bytes, if anything.
async fn check_blob(
    registry: &Registry,
    digest: &Digest,
    recorded: u64,
    options: CheckOptions,
) -> Result<Option<Found>> {
    let problem = |found: String| BlobProblem {
        digest: digest.clone(),
        size: recorded,
        found,
    };
    // A small blob may live in the index, not in the blob store.
    let source = registry.blob_source(digest, recorded).await?;
    let stored = match &source {
        BlobSource::Index(bytes) => Some(bytes.len() as u64),
        BlobSource::Store => registry.blobs.stat(digest).await?,
    };
    Ok(match stored {
        None => Some(Found::Missing(problem("no file".into()))),
        Some(size) if size != recorded => Some(Found::WrongSize(problem(format!("{size} bytes")))),
        Some(size) if options.verify_content => {
            let actual = hash_of(registry, digest, source, size).await?;
            (actual != *digest).then(|| Found::Corrupt(problem(actual.to_string())))
        }
        Some(_) => None,
    })
}

pub async fn check(
    registry: &Registry,
    options: CheckOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<CheckReport> {
    let index = &registry.index;
    let blobs = &registry.blobs;
    let mut report = CheckReport::default();

    let totals = index.totals().await?;
    progress(Progress::Phase {
        name: if options.verify_content {
            "blobs (re-hashing)"
        } else {
            "blobs"
        },
        total: Some(totals.blobs),
    });
    let mut after: Option<Digest> = None;
    loop {
        let page = index.blobs_page(after.as_ref(), 1000).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (digest, info) in page {
            report.blobs_checked += 1;
            if let Some(p) = check_blob(registry, &digest, info.size, options).await? {
                match p {
                    Found::Missing(p) => report.missing.push(p),
                    Found::WrongSize(p) => report.wrong_size.push(p),
                    Found::Corrupt(p) => {
                        report.bytes_checked += info.size;
                        report.corrupt.push(p);
                    }
                }
            } else {
                report.bytes_checked += info.size;
            }
            progress(Progress::Advance(1));
        }
    }

    progress(Progress::Phase {
        name: "files",
        total: Some(totals.blobs),
    });
    let mut after: Option<Digest> = None;
    loop {
        let page = blobs.list(after.as_ref(), 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.digest.clone());
        for b in page {
            report.files_checked += 1;
            if index.blob(&b.digest).await?.is_none() {
                report.orphan_files.push((b.digest, b.size));
            }
            progress(Progress::Advance(1));
        }
    }

    progress(Progress::Phase {
        name: "reference counts",
        total: None,
    });
    report.count_problems = index.recount(false).await?;

    if options.repair && !report.clean() {
        progress(Progress::Phase {
            name: "repair",
            total: None,
        });
        repair(registry, &mut report).await?;
    }
    Ok(report)
}

/// Quarantines corrupt blobs, forgets blobs whose bytes are gone or corrupt
/// (with the manifests that needed them), deletes orphan files, recounts.
async fn repair(registry: &Registry, report: &mut CheckReport) -> Result<()> {
    let (index, blobs) = (&registry.index, &registry.blobs);
    for p in report.corrupt.iter().chain(&report.wrong_size) {
        blobs.quarantine(&p.digest).await?;
    }
    let lost: Vec<Digest> = report
        .missing
        .iter()
        .chain(&report.corrupt)
        .chain(&report.wrong_size)
        .map(|p| p.digest.clone())
        .collect();
    for d in &lost {
        report.removed_manifests.extend(index.drop_blob(d).await?);
    }
    let orphans: Vec<Digest> = report.orphan_files.iter().map(|(d, _)| d.clone()).collect();
    blobs.delete(&orphans).await?;
    index.recount(true).await?;
    report.remaining_problems = index.recount(false).await?;
    report.repaired = true;
    Ok(())
}
