//! What listings, pulls and the web UI read: plain functions over a
//! snapshot, each reading only what it shows.

use bytes::Bytes;

use super::cascade::{self, freed_bytes};
use super::counters::{self, repo_row};
use super::manifests::{manifest_row, manifests_in, referrers_of};
use super::refs::{blob_row, link_row, linked_repos};
use super::{BLOBS, BlobRow, DANGLING, MANIFEST_BODIES, REPOS, TAGS, UNREFERENCED, UPLOADS};
use crate::db::{Reads, Snap, codec, overlay, prefix};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::index::{
    BlobInfo, DanglingManifest, ManifestInfo, ManifestView, Page, Referrer, RepoSummary,
    RepositoryView, TagView, UnreferencedBlob, Upload,
};
use crate::names::RepoName;

/// Names from a sorted scan: at most `limit` after `after`, and whether
/// more remain.
fn page(names: impl Iterator<Item = Result<String>>, limit: usize) -> Result<Page> {
    let mut items = Vec::new();
    let mut more = false;
    for name in names {
        let name = name?;
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(name);
    }
    Ok(Page { items, more })
}

pub fn repositories(r: &impl Reads, after: Option<&str>, limit: usize) -> Result<Page> {
    let after = after.map(codec::key::<String>);
    let names = r
        .scan_after(REPOS, after.as_deref())
        .sized(limit.saturating_add(1));
    page(names.keys(), limit)
}

pub fn tags(r: &impl Reads, repo: &str, after: Option<&str>, limit: usize) -> Result<Page> {
    if !counters::repo_exists(r, repo)? {
        return Err(Error::NameUnknown);
    }
    let after = after.map(|a| codec::key::<(String, String)>((repo, a)));
    let names = r
        .scan_prefix_tails::<_, _, String>(TAGS, &prefix(&[repo]), after.as_deref())
        .sized(limit.saturating_add(1))
        .keys();
    page(names, limit)
}

pub fn resolve_tag(r: &impl Reads, repo: &str, tag: &str) -> Result<Option<Digest>> {
    r.get(TAGS, (repo, tag))?
        .map(|t| t.digest.parse())
        .transpose()
}

pub fn manifest(
    r: &impl Reads,
    repo: &str,
    digest: &Digest,
    with_body: bool,
) -> Result<Option<ManifestInfo>> {
    let Some(row) = manifest_row(r, repo, digest.as_str())? else {
        return Ok(None);
    };
    let body = if with_body {
        let bytes = r
            .get(MANIFEST_BODIES, digest.as_str())?
            .ok_or_else(|| Error::Storage(format!("manifest body missing for {digest}")))?;
        Some(Bytes::from(bytes))
    } else {
        None
    };
    Ok(Some(ManifestInfo {
        digest: digest.clone(),
        media_type: row.media_type,
        size: row.size,
        kind: row.kind,
        body,
    }))
}

/// The row of a blob visible in `repo` (linked there).
fn linked_blob_row(r: &impl Reads, repo: &str, digest: &str) -> Result<Option<BlobRow>> {
    if link_row(r, repo, digest)?.is_none() {
        return Ok(None);
    }
    blob_row(r, digest)
}

/// The size of a blob visible in `repo`.
pub fn blob_in_repo(r: &impl Reads, repo: &str, digest: &str) -> Result<Option<u64>> {
    Ok(linked_blob_row(r, repo, digest)?.map(|b| b.size))
}

/// The size of a blob visible in `repo` that a manifest references.
pub fn referenced_blob_in_repo(r: &impl Reads, repo: &str, digest: &str) -> Result<Option<u64>> {
    Ok(linked_blob_row(r, repo, digest)?
        .filter(|b| b.refs > 0)
        .map(|b| b.size))
}

pub fn blob_repositories(r: &impl Reads, digest: &str, limit: usize) -> Result<Vec<RepoName>> {
    linked_repos(r, digest)?
        .into_iter()
        .take(limit)
        .map(|x| x.parse())
        .collect()
}

pub fn blob(r: &impl Reads, digest: &str) -> Result<Option<BlobInfo>> {
    let Some(b) = blob_row(r, digest)? else {
        return Ok(None);
    };
    Ok(Some(blob_info(r, digest, &b)?))
}

fn blob_info(r: &impl Reads, digest: &str, row: &super::BlobRow) -> Result<BlobInfo> {
    let in_index = row.size <= crate::registry::blobs::INLINE_CEILING
        && r.contains(super::BLOB_DATA, digest)?;
    Ok(BlobInfo {
        size: row.size,
        refs: row.refs,
        in_index,
    })
}

pub fn referrers(
    r: &impl Reads,
    repo: &str,
    subject: &str,
    artifact_type: Option<&str>,
) -> Result<Vec<Referrer>> {
    let mut out = Vec::new();
    for referrer in referrers_of(r, repo, subject)? {
        let Some(row) = manifest_row(r, repo, &referrer)? else {
            continue;
        };
        if artifact_type.is_some() && row.artifact_type.as_deref() != artifact_type {
            continue;
        }
        out.push(Referrer {
            media_type: row.media_type,
            digest: referrer.parse()?,
            size: row.size,
            artifact_type: row.artifact_type,
            annotations: row.annotations,
        });
    }
    Ok(out)
}

pub fn uploads(r: &impl Reads) -> Result<Vec<(String, Upload)>> {
    r.scan_all(UPLOADS).collect()
}

/// Unreferenced blobs in digest order, after `after`.
pub fn unreferenced_blobs(
    r: &impl Reads,
    after: Option<&Digest>,
    limit: usize,
) -> Result<Vec<UnreferencedBlob>> {
    let after = after.map(|d| codec::key::<String>(d.as_str()));
    let mut out = Vec::new();
    for e in r.scan_after(UNREFERENCED, after.as_deref()) {
        if out.len() == limit {
            break;
        }
        let (digest, since_ms) = e?;
        if let Some(row) = blob_row(r, &digest)? {
            out.push(UnreferencedBlob {
                digest: digest.parse()?,
                size: row.size,
                since_ms,
                seen_ms: row.seen_ms,
            });
        }
    }
    Ok(out)
}

/// Dangling manifests in (repository, digest) order, after `after`.
pub fn dangling_manifests(
    r: &impl Reads,
    after: Option<(&str, &str)>,
    limit: usize,
) -> Result<Vec<DanglingManifest>> {
    let after = after.map(codec::key::<(String, String)>);
    let mut out = Vec::new();
    for e in r.scan_after(DANGLING, after.as_deref()).take(limit) {
        let ((repo, digest), row) = e?;
        let size = manifest_row(r, &repo, &digest)?.map_or(0, |m| m.size);
        out.push(DanglingManifest {
            repository: repo.parse()?,
            digest: digest.parse()?,
            size,
            since_ms: row.since_ms,
            orphaned_referrer: row.orphaned_referrer,
        });
    }
    Ok(out)
}

/// Every blob row in digest order, after `after` (integrity checks).
pub fn blobs_page(
    r: &impl Reads,
    after: Option<&Digest>,
    limit: usize,
) -> Result<Vec<(Digest, BlobInfo)>> {
    let after = after.map(|d| codec::key::<String>(d.as_str()));
    r.scan_after(BLOBS, after.as_deref())
        .take(limit)
        .map(|e| {
            let (d, row) = e?;
            Ok((d.parse()?, blob_info(r, &d, &row)?))
        })
        .collect()
}

/// Repositories (in order after `after`) whose name contains `contains`,
/// with their counts; and whether more follow.
pub fn repository_summaries(
    r: &impl Reads,
    after: Option<&str>,
    limit: usize,
    contains: Option<&str>,
) -> Result<(Vec<RepoSummary>, bool)> {
    let after = after.map(codec::key::<String>);
    let mut out = Vec::new();
    for e in r.scan_after(REPOS, after.as_deref()) {
        let (name, row) = e?;
        if contains.is_some_and(|c| !name.contains(c)) {
            continue;
        }
        if out.len() == limit {
            return Ok((out, true));
        }
        let row = counters::with_shards(r, &name, row)?;
        out.push(RepoSummary {
            name,
            tags: row.tags,
            manifests: row.manifests,
            bytes: row.link_bytes,
            created_ms: row.created_ms,
        });
    }
    Ok((out, false))
}

/// What deleting a tag (or, without one, a manifest) would free: the
/// deletion itself, with its cascade, in a transaction thrown away.
fn freed_if_deleted(snap: &Snap<'_>, repo: &str, tag: Option<&str>, digest: &str) -> Result<u64> {
    overlay::run(snap, |tx| {
        cascade::delete_with_cascade(tx, repo, tag, digest)?;
        freed_bytes(tx)
    })
}

/// A repository's manifests and tags, with what deleting each would free,
/// read from one snapshot.
pub fn repository_view(snap: &Snap<'_>, repo: &str) -> Result<RepositoryView> {
    let repo_row = repo_row(snap, repo)?.ok_or(Error::NameUnknown)?;
    let rows = manifests_in(snap, repo)?;
    let mut manifests = Vec::with_capacity(rows.len());
    for (digest, row) in &rows {
        let mut blob_bytes = 0;
        for b in &row.blobs {
            blob_bytes += blob_row(snap, b)?.map_or(0, |x| x.size);
        }
        let freed = match row.parents {
            0 => Some(freed_if_deleted(snap, repo, None, digest)?),
            _ => None,
        };
        manifests.push(ManifestView {
            digest: digest.parse()?,
            media_type: row.media_type.clone(),
            kind: row.kind,
            size: row.size,
            image_bytes: row.size + blob_bytes,
            created_ms: row.created_ms,
            artifact_type: row.artifact_type.clone(),
            subject: row.subject.as_deref().map(str::parse).transpose()?,
            children: row
                .children
                .iter()
                .map(|c| c.parse())
                .collect::<Result<_>>()?,
            parents: row.parents,
            freed_if_deleted: freed,
            immutable: None,
        });
    }
    manifests.sort_by(|a, b| {
        b.created_ms
            .cmp(&a.created_ms)
            .then(a.digest.cmp(&b.digest))
    });
    let mut tags = Vec::new();
    for e in snap.scan_prefix(TAGS, &prefix(&[repo])) {
        let ((_, tag), t) = e?;
        // A manifest with another tag stays: deleting this one frees nothing.
        let last_tag = rows
            .iter()
            .any(|(d, m)| *d == t.digest && m.tags == 1 && m.parents == 0);
        let freed = match last_tag {
            true => freed_if_deleted(snap, repo, Some(&tag), &t.digest)?,
            false => 0,
        };
        tags.push(TagView {
            tag,
            digest: t.digest.parse()?,
            updated_ms: t.updated_ms,
            freed_if_deleted: freed,
            pulled_ms: snap.get(super::PULLS, (repo, t.digest.as_str()))?,
            immutable: None,
        });
    }
    Ok(RepositoryView {
        name: repo.to_owned(),
        bytes: repo_row.link_bytes,
        created_ms: repo_row.created_ms,
        manifests,
        tags,
    })
}
