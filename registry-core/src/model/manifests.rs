//! Storing manifests, tags, and deleting them, with every count they imply.

use super::RepoCounts;
use super::counters::{self, adjust_repo, bump, settle_repo};
use super::dangling::refresh_dangling;
use super::refs::{adjust_blob_refs, adjust_link_refs, blob_row, ensure_link, link_row};
use super::{
    MANIFEST_BODIES, MANIFEST_BODY_REFS, MANIFESTS, ManifestRow, REFERRERS, TAGS, TAGS_BY_MANIFEST,
    TagRow, broken,
};
use crate::db::{Reads, Tx, prefix};
use crate::error::{Error, Result};
use crate::manifest::ParsedManifest;

pub fn manifest_row(r: &impl Reads, repo: &str, digest: &str) -> Result<Option<ManifestRow>> {
    r.get(MANIFESTS, (repo, digest))
}

fn set_manifest_row(tx: &mut Tx<'_>, repo: &str, digest: &str, row: &ManifestRow) -> Result<()> {
    tx.put(MANIFESTS, (repo, digest), row)
}

/// Referrers stored in `repo` whose subject is `subject`.
pub fn referrers_of(r: &impl Reads, repo: &str, subject: &str) -> Result<Vec<String>> {
    r.scan_prefix(REFERRERS, &prefix(&[repo, subject]))
        .keys()
        .map(|k| k.map(|(_, _, d)| d))
        .collect()
}

/// The tags pointing at a manifest in `repo`.
pub fn tags_of(r: &impl Reads, repo: &str, digest: &str) -> Result<Vec<String>> {
    r.scan_prefix(TAGS_BY_MANIFEST, &prefix(&[repo, digest]))
        .keys()
        .map(|k| k.map(|(_, _, t)| t))
        .collect()
}

/// Every manifest stored in `repo`, in digest order.
pub fn manifests_in(r: &impl Reads, repo: &str) -> Result<Vec<(String, ManifestRow)>> {
    r.scan_prefix(MANIFESTS, &prefix(&[repo]))
        .map(|e| e.map(|((_, d), row)| (d, row)))
        .collect()
}

/// Stores a manifest in `repo` (unless it is there already) and points
/// `tag` at it. With `link_foreign` false, every blob must already be
/// visible in `repo`; otherwise a blob stored elsewhere is linked in.
pub fn put_manifest(
    tx: &mut Tx<'_>,
    repo: &str,
    m: &ParsedManifest,
    body: &[u8],
    tag: Option<&str>,
    link_foreign: bool,
) -> Result<()> {
    let digest = m.digest.as_str();
    if manifest_row(tx, repo, digest)?.is_none() {
        let to_link = check_references(tx, repo, m, link_foreign)?;
        insert_manifest(tx, repo, m, body, &to_link)?;
    }
    if let Some(tag) = tag {
        set_tag(tx, repo, tag, digest)?;
    }
    Ok(())
}

/// Checks every blob and child a new manifest references; returns the
/// blobs to link into `repo` first.
fn check_references<'m>(
    tx: &Tx<'_>,
    repo: &str,
    m: &'m ParsedManifest,
    link_foreign: bool,
) -> Result<Vec<&'m str>> {
    let mut to_link = Vec::new();
    for b in &m.blobs {
        let d = b.digest.as_str();
        let Some(row) = blob_row(tx, d)? else {
            return Err(Error::ManifestBlobUnknown(b.digest.clone()));
        };
        if row.size != b.size {
            return Err(Error::ManifestInvalid(format!(
                "descriptor of {d} says {} bytes, the blob has {}",
                b.size, row.size
            )));
        }
        if link_row(tx, repo, d)?.is_none() {
            if !link_foreign {
                return Err(Error::ManifestBlobUnknown(b.digest.clone()));
            }
            to_link.push(d);
        }
    }
    for c in &m.children {
        let d = c.digest.as_str();
        let Some(row) = manifest_row(tx, repo, d)? else {
            return Err(Error::ManifestChildUnknown(c.digest.clone()));
        };
        if row.size != c.size {
            return Err(Error::ManifestInvalid(format!(
                "descriptor of {d} says {} bytes, the manifest has {}",
                c.size, row.size
            )));
        }
    }
    Ok(to_link)
}

fn insert_manifest(
    tx: &mut Tx<'_>,
    repo: &str,
    m: &ParsedManifest,
    body: &[u8],
    to_link: &[&str],
) -> Result<()> {
    let digest = m.digest.as_str();
    for d in to_link {
        ensure_link(tx, repo, d)?;
    }
    for b in &m.blobs {
        let d = b.digest.as_str();
        adjust_link_refs(tx, repo, d, 1)?;
        adjust_blob_refs(tx, d, 1)?;
    }
    for c in &m.children {
        let d = c.digest.as_str();
        let mut row = manifest_row(tx, repo, d)?.ok_or_else(|| broken("checked child gone"))?;
        row.parents += 1;
        set_manifest_row(tx, repo, d, &row)?;
        refresh_dangling(tx, repo, d)?;
    }
    if let Some(subject) = &m.subject {
        tx.put(REFERRERS, (repo, subject.as_str(), digest), &())?;
    }
    let body_refs = tx.get(MANIFEST_BODY_REFS, digest)?.unwrap_or(0);
    if body_refs == 0 {
        tx.put(MANIFEST_BODIES, digest, &body.to_vec())?;
    }
    tx.put(MANIFEST_BODY_REFS, digest, &(body_refs + 1))?;
    let row = ManifestRow {
        media_type: m.media_type.clone(),
        size: m.size,
        kind: m.kind,
        blobs: m.blobs.iter().map(|b| b.digest.to_string()).collect(),
        children: m.children.iter().map(|c| c.digest.to_string()).collect(),
        subject: m.subject.as_ref().map(|s| s.to_string()),
        artifact_type: m.artifact_type.clone(),
        annotations: m.annotations.clone(),
        created_ms: tx.now_ms(),
        parents: 0,
        tags: 0,
    };
    set_manifest_row(tx, repo, digest, &row)?;
    adjust_repo(tx, repo, RepoCounts::manifests(1))?;
    bump(tx, counters::MANIFESTS, 1)?;
    refresh_dangling(tx, repo, digest)?;
    // Referrers pushed before this subject are attached now.
    for referrer in referrers_of(tx, repo, digest)? {
        refresh_dangling(tx, repo, &referrer)?;
    }
    Ok(())
}

fn set_tag(tx: &mut Tx<'_>, repo: &str, tag: &str, digest: &str) -> Result<()> {
    let old = tx.get(TAGS, (repo, tag))?;
    let row = TagRow {
        digest: digest.to_owned(),
        updated_ms: tx.now_ms(),
    };
    tx.put(TAGS, (repo, tag), &row)?;
    match old {
        Some(old) if old.digest == digest => Ok(()),
        Some(old) => {
            untag_manifest(tx, repo, &old.digest, tag)?;
            tag_manifest(tx, repo, digest, tag)
        }
        None => {
            adjust_repo(tx, repo, RepoCounts::tags(1))?;
            bump(tx, counters::TAGS, 1)?;
            tag_manifest(tx, repo, digest, tag)
        }
    }
}

fn tag_manifest(tx: &mut Tx<'_>, repo: &str, digest: &str, tag: &str) -> Result<()> {
    let mut row =
        manifest_row(tx, repo, digest)?.ok_or_else(|| broken("tagging a manifest not stored"))?;
    row.tags += 1;
    set_manifest_row(tx, repo, digest, &row)?;
    tx.put(TAGS_BY_MANIFEST, (repo, digest, tag), &())?;
    refresh_dangling(tx, repo, digest)
}

fn untag_manifest(tx: &mut Tx<'_>, repo: &str, digest: &str, tag: &str) -> Result<()> {
    if let Some(mut row) = manifest_row(tx, repo, digest)? {
        row.tags = row.tags.saturating_sub(1);
        set_manifest_row(tx, repo, digest, &row)?;
    }
    tx.delete(TAGS_BY_MANIFEST, (repo, digest, tag))?;
    refresh_dangling(tx, repo, digest)
}

/// Removes a tag; returns the digest it pointed at.
pub fn delete_tag(tx: &mut Tx<'_>, repo: &str, tag: &str) -> Result<String> {
    let Some(old) = tx.take(TAGS, (repo, tag))? else {
        return Err(Error::ManifestUnknown);
    };
    untag_manifest(tx, repo, &old.digest, tag)?;
    // Its manifest stays, so the repository does too.
    adjust_repo(tx, repo, RepoCounts::tags(-1))?;
    bump(tx, counters::TAGS, -1)?;
    Ok(old.digest)
}

/// Removes a manifest from `repo` with every tag pointing at it, and drops
/// the counts it held. Refused while an index in `repo` lists it.
pub fn delete_manifest(tx: &mut Tx<'_>, repo: &str, digest: &str) -> Result<ManifestRow> {
    let Some(row) = manifest_row(tx, repo, digest)? else {
        return Err(Error::ManifestUnknown);
    };
    if row.parents > 0 {
        return Err(Error::Conflict(format!(
            "manifest {digest} is listed by {} index(es) in {repo}; delete the index first",
            row.parents
        )));
    }
    let tags = tags_of(tx, repo, digest)?;
    for tag in &tags {
        tx.delete(TAGS, (repo, tag.as_str()))?;
        tx.delete(TAGS_BY_MANIFEST, (repo, digest, tag.as_str()))?;
    }
    if !tags.is_empty() {
        let n = tags.len() as u64;
        adjust_repo(tx, repo, RepoCounts::tags(-(n as i64)))?;
        bump(tx, counters::TAGS, -(n as i64))?;
    }
    for b in &row.blobs {
        adjust_link_refs(tx, repo, b, -1)?;
        adjust_blob_refs(tx, b, -1)?;
    }
    for c in &row.children {
        if let Some(mut child) = manifest_row(tx, repo, c)? {
            child.parents = child.parents.saturating_sub(1);
            set_manifest_row(tx, repo, c, &child)?;
            refresh_dangling(tx, repo, c)?;
        }
    }
    if let Some(subject) = &row.subject {
        tx.delete(REFERRERS, (repo, subject.as_str(), digest))?;
    }
    release_body(tx, digest)?;
    tx.delete(MANIFESTS, (repo, digest))?;
    tx.delete(super::DANGLING, (repo, digest))?;
    tx.delete(super::PULLS, (repo, digest))?;
    adjust_repo(tx, repo, RepoCounts::manifests(-1))?;
    bump(tx, counters::MANIFESTS, -1)?;
    // The links of its blobs stay (and keep the repository); a manifest
    // without blobs may have been the last thing in it.
    if row.blobs.is_empty() {
        settle_repo(tx, repo)?;
    }
    // Its referrers are orphaned now.
    for referrer in referrers_of(tx, repo, digest)? {
        refresh_dangling(tx, repo, &referrer)?;
    }
    Ok(row)
}

/// One repository less stores a manifest's body; the body goes with the
/// last.
fn release_body(tx: &mut Tx<'_>, digest: &str) -> Result<()> {
    let refs = tx.get(MANIFEST_BODY_REFS, digest)?.unwrap_or(1);
    if refs <= 1 {
        tx.delete(MANIFEST_BODY_REFS, digest)?;
        tx.delete(MANIFEST_BODIES, digest)
    } else {
        tx.put(MANIFEST_BODY_REFS, digest, &(refs - 1))
    }
}
