//! The one engine for deletions that take with them what they leave
//! dangling. It serves `DELETE` previews, the GC's manifest phase and its
//! dry runs, repository removal, the repair of lost blobs and the web UI's
//! "deleting this frees" figures; those that change nothing run it in a
//! "what if" transaction ([`crate::db::Db::what_if`]).

use std::collections::VecDeque;

use super::counters::{repo_exists, settle_repo};
use super::manifests::{delete_manifest, delete_tag, manifest_row, manifests_in, referrers_of};
use super::refs::{force_remove, freed_blobs, linked_repos, unlink_unsettled};
use super::{DANGLING, LINKS, TAGS};
use crate::db::{Reads, Tx, prefix};
use crate::error::{Error, Result};
use crate::index::{Collected, RemovedManifest, UnreferencedBlob};

/// A manifest a transaction removed: (repository, digest, size).
pub type Removed = (String, String, u64);

/// Deletes manifests that are still dangling (and, where a target has a
/// cutoff, have been since that time or earlier). With `cascade`, whatever
/// becomes dangling because of a deletion (children of an index, referrers
/// of a subject) goes too.
pub fn collect_manifests(
    tx: &mut Tx<'_>,
    targets: &[(String, String, Option<u64>)],
    cascade: bool,
) -> Result<Vec<Removed>> {
    let mut work: VecDeque<(String, String, Option<u64>)> = targets.iter().cloned().collect();
    let mut deleted = Vec::new();
    while let Some((repo, digest, cutoff_ms)) = work.pop_front() {
        let Some(dangling) = tx.get(DANGLING, (repo.as_str(), digest.as_str()))? else {
            continue;
        };
        if cutoff_ms.is_some_and(|c| dangling.since_ms > c)
            || manifest_row(tx, &repo, &digest)?.is_none()
        {
            continue;
        }
        let referrers = referrers_of(tx, &repo, &digest)?;
        let row = delete_manifest(tx, &repo, &digest)?;
        if cascade {
            work.extend(row.children.iter().map(|c| (repo.clone(), c.clone(), None)));
            work.extend(referrers.into_iter().map(|r| (repo.clone(), r, None)));
        }
        deleted.push((repo, digest, row.size));
    }
    Ok(deleted)
}

/// Deletes a tag (`tag` given) or a manifest, and then everything that
/// deletion leaves dangling.
pub fn delete_with_cascade(
    tx: &mut Tx<'_>,
    repo: &str,
    tag: Option<&str>,
    digest: &str,
) -> Result<Vec<Removed>> {
    if let Some(tag) = tag {
        delete_tag(tx, repo, tag)?;
        return collect_manifests(tx, &[(repo.to_owned(), digest.to_owned(), None)], true);
    }
    let referrers = referrers_of(tx, repo, digest)?;
    let row = delete_manifest(tx, repo, digest)?;
    let next: Vec<(String, String, Option<u64>)> = row
        .children
        .iter()
        .cloned()
        .chain(referrers)
        .map(|d| (repo.to_owned(), d, None))
        .collect();
    let mut removed = vec![(repo.to_owned(), digest.to_owned(), row.size)];
    removed.extend(collect_manifests(tx, &next, true)?);
    Ok(removed)
}

/// Removes every tag, manifest and blob link of a repository. Its blobs
/// nothing else references become unreferenced.
pub fn delete_repository(tx: &mut Tx<'_>, repo: &str) -> Result<Vec<Removed>> {
    if !repo_exists(tx, repo)? {
        return Err(Error::NameUnknown);
    }
    let tags: Vec<(String, String)> = tx
        .scan_prefix(TAGS, &prefix(&[repo]))
        .keys()
        .collect::<Result<_>>()?;
    for (_, tag) in &tags {
        delete_tag(tx, repo, tag)?;
    }
    // Indexes before their children: every round deletes what no index
    // lists any more (there are no cycles: a child exists before its index).
    let mut deleted = Vec::new();
    loop {
        let round: Vec<(String, u64)> = manifests_in(tx, repo)?
            .into_iter()
            .filter(|(_, m)| m.parents == 0)
            .map(|(d, m)| (d, m.size))
            .collect();
        if round.is_empty() {
            break;
        }
        for (digest, size) in round {
            delete_manifest(tx, repo, &digest)?;
            deleted.push((repo.to_owned(), digest, size));
        }
    }
    let links: Vec<(String, String)> = tx
        .scan_prefix(LINKS, &prefix(&[repo]))
        .keys()
        .collect::<Result<_>>()?;
    for (_, digest) in &links {
        unlink_unsettled(tx, repo, digest)?;
    }
    settle_repo(tx, repo)?;
    Ok(deleted)
}

/// Deletes a manifest after every index in its repository that lists it
/// (recursively), appending each removal to `removed`.
fn delete_with_parents(
    tx: &mut Tx<'_>,
    repo: &str,
    digest: &str,
    removed: &mut Vec<Removed>,
) -> Result<()> {
    let Some(row) = manifest_row(tx, repo, digest)? else {
        return Ok(());
    };
    if row.parents > 0 {
        let parents: Vec<String> = manifests_in(tx, repo)?
            .into_iter()
            .filter(|(_, m)| m.children.iter().any(|c| c == digest))
            .map(|(d, _)| d)
            .collect();
        for p in parents {
            delete_with_parents(tx, repo, &p, removed)?;
        }
    }
    delete_manifest(tx, repo, digest)?;
    removed.push((repo.to_owned(), digest.to_owned(), row.size));
    Ok(())
}

/// Forgets a blob whose bytes are gone or corrupt: every manifest that
/// references it goes first (with the indexes listing them), so no count
/// is left pointing at nothing; then its rows and links. Returns the
/// manifests removed: the images a re-push must restore.
pub fn drop_blob(tx: &mut Tx<'_>, digest: &str) -> Result<Vec<Removed>> {
    let mut removed = Vec::new();
    for repo in linked_repos(tx, digest)? {
        let users: Vec<String> = manifests_in(tx, &repo)?
            .into_iter()
            .filter(|(_, m)| m.blobs.iter().any(|b| b == digest))
            .map(|(d, _)| d)
            .collect();
        for m in users {
            delete_with_parents(tx, &repo, &m, &mut removed)?;
        }
    }
    force_remove(tx, digest)?;
    Ok(removed)
}

/// Manifest rows a transaction removed, typed.
pub fn removed_manifests(removed: Vec<Removed>) -> Result<Vec<RemovedManifest>> {
    removed
        .into_iter()
        .map(|(repo, digest, size)| {
            Ok(RemovedManifest {
                repository: repo.parse()?,
                digest: digest.parse()?,
                size,
            })
        })
        .collect()
}

/// What a collecting transaction removed, and the blobs left unreferenced
/// by it.
pub fn collected(tx: &Tx<'_>, removed: Vec<Removed>) -> Result<Collected> {
    let manifests = removed_manifests(removed)?;
    let freed = freed_blobs(tx)?
        .into_iter()
        .map(|(d, row, since_ms)| {
            Ok(UnreferencedBlob {
                digest: d.parse()?,
                size: row.size,
                since_ms,
                seen_ms: row.seen_ms,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Collected { manifests, freed })
}

/// Bytes a deletion frees (used by the web UI's figures).
pub fn freed_bytes(tx: &Tx<'_>) -> Result<u64> {
    Ok(freed_blobs(tx)?.iter().map(|(_, row, _)| row.size).sum())
}
