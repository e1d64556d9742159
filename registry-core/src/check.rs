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

use std::collections::HashSet;

use futures::StreamExt;
use serde::Serialize;

use crate::digest::{Digest, Hasher};
use crate::error::Result;
use crate::index::RemovedManifest;
use crate::registry::Registry;

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

async fn hash_of(registry: &Registry, digest: &Digest, size: u64) -> Result<Digest> {
    let mut stream = registry.blobs().read(digest, 0..size).await?;
    let mut h = Hasher::new(digest.algorithm());
    while let Some(chunk) = stream.next().await {
        h.update(&chunk?);
    }
    Ok(h.finish())
}

pub async fn check(
    registry: &Registry,
    options: CheckOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<CheckReport> {
    let index = registry.index();
    let blobs = registry.blobs();
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
    let mut known = HashSet::new();
    let mut after: Option<Digest> = None;
    loop {
        let page = index.blobs_page(after.as_ref(), 1000).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (digest, info) in page {
            report.blobs_checked += 1;
            match blobs.stat(&digest).await? {
                None => report.missing.push(BlobProblem {
                    digest: digest.clone(),
                    size: info.size,
                    found: "no file".into(),
                }),
                Some(size) if size != info.size => report.wrong_size.push(BlobProblem {
                    digest: digest.clone(),
                    size: info.size,
                    found: format!("{size} bytes"),
                }),
                Some(size) => {
                    report.bytes_checked += size;
                    if options.verify_content {
                        let actual = hash_of(registry, &digest, size).await?;
                        if actual != digest {
                            report.corrupt.push(BlobProblem {
                                digest: digest.clone(),
                                size: info.size,
                                found: actual.to_string(),
                            });
                        }
                    }
                }
            }
            known.insert(digest);
            progress(Progress::Advance(1));
        }
    }

    let files = blobs.list().await?;
    progress(Progress::Phase {
        name: "files",
        total: Some(files.len() as u64),
    });
    for (digest, size) in files {
        report.files_checked += 1;
        if !known.contains(&digest) {
            report.orphan_files.push((digest, size));
        }
        progress(Progress::Advance(1));
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
        for p in report.corrupt.iter().chain(&report.wrong_size) {
            blobs.quarantine(&p.digest).await?;
        }
        for p in report
            .missing
            .iter()
            .chain(&report.corrupt)
            .chain(&report.wrong_size)
        {
            report
                .removed_manifests
                .extend(index.drop_blob(&p.digest).await?);
        }
        let orphans: Vec<Digest> = report.orphan_files.iter().map(|(d, _)| d.clone()).collect();
        blobs.trash(&orphans).await?;
        blobs.empty_trash().await?;
        index.recount(true).await?;
        report.remaining_problems = index.recount(false).await?;
        report.repaired = true;
    }
    Ok(report)
}
