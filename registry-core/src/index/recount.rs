//! Recounting: recomputes every derived record of the index (reference
//! counts, reverse tables, the unreferenced and dangling tables, repository
//! counters, totals) from the primary ones (manifests, tags, links, blobs,
//! uploads), reports each disagreement and, when asked, rewrites the derived
//! records. Used by the integrity check; a full walk, so offline only.

use std::collections::{BTreeMap, BTreeSet};

use redb::ReadableTable;

use super::Upload;
use super::tables::{BlobRow, DanglingRow, LinkRow, ManifestRow, RepoRow, TagRow, W, dec, enc};
use crate::error::Result;

/// What the derived records should hold.
#[derive(Default)]
struct Expected {
    blob_refs: BTreeMap<String, u64>,
    link_refs: BTreeMap<(String, String), u64>,
    parents: BTreeMap<(String, String), u64>,
    tags_of: BTreeMap<(String, String), u64>,
    tags_by_manifest: BTreeSet<(String, String, String)>,
    referrers: BTreeSet<(String, String, String)>,
    body_refs: BTreeMap<String, u64>,
    repos: BTreeMap<String, RepoRow>,
}

fn all<K, V, T>(
    table: &impl ReadableTable<K, V>,
    mut f: impl FnMut(K::SelfType<'_>, V::SelfType<'_>) -> Result<T>,
) -> Result<Vec<T>>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    let mut out = Vec::new();
    for e in table.iter()? {
        let (k, v) = e?;
        out.push(f(k.value(), v.value())?);
    }
    Ok(out)
}

impl W<'_> {
    /// Compares every derived record with a recount; with `repair`, rewrites
    /// the ones that differ. Returns one line per disagreement.
    pub fn recount(&mut self, repair: bool) -> Result<Vec<String>> {
        let manifests: Vec<((String, String), ManifestRow)> = all(&self.manifests, |k, v| {
            Ok(((k.0.to_owned(), k.1.to_owned()), dec::<ManifestRow>(v)?))
        })?;
        let tags: Vec<((String, String), TagRow)> = all(&self.tags, |k, v| {
            Ok(((k.0.to_owned(), k.1.to_owned()), dec::<TagRow>(v)?))
        })?;
        let links: Vec<(String, String)> =
            all(&self.links, |k, _| Ok((k.0.to_owned(), k.1.to_owned())))?;
        let blobs: BTreeMap<String, BlobRow> =
            all(&self.blobs, |k, v| Ok((k.to_owned(), dec::<BlobRow>(v)?)))?
                .into_iter()
                .collect();
        let uploads: Vec<Upload> = all(&self.uploads, |_, v| dec::<Upload>(v))?;

        let mut problems = Vec::new();
        let mut e = Expected::default();
        let stored: BTreeSet<&(String, String)> = manifests.iter().map(|(k, _)| k).collect();
        for ((repo, digest), row) in &manifests {
            for b in &row.blobs {
                if !blobs.contains_key(b) {
                    problems.push(format!(
                        "manifest {repo}@{digest} references {b}, which has no blob row"
                    ));
                }
                *e.blob_refs.entry(b.clone()).or_default() += 1;
                *e.link_refs.entry((repo.clone(), b.clone())).or_default() += 1;
            }
            for c in &row.children {
                *e.parents.entry((repo.clone(), c.clone())).or_default() += 1;
            }
            if let Some(s) = &row.subject {
                e.referrers
                    .insert((repo.clone(), s.clone(), digest.clone()));
            }
            *e.body_refs.entry(digest.clone()).or_default() += 1;
            e.repos.entry(repo.clone()).or_default().manifests += 1;
        }
        for ((repo, tag), row) in &tags {
            if !stored.contains(&(repo.clone(), row.digest.clone())) {
                problems.push(format!(
                    "tag {repo}:{tag} points at {}, which is not stored",
                    row.digest
                ));
            }
            *e.tags_of
                .entry((repo.clone(), row.digest.clone()))
                .or_default() += 1;
            e.tags_by_manifest
                .insert((repo.clone(), row.digest.clone(), tag.clone()));
            e.repos.entry(repo.clone()).or_default().tags += 1;
        }
        let linked: BTreeSet<(String, String)> = links.iter().cloned().collect();
        for (repo, d) in &links {
            let r = e.repos.entry(repo.clone()).or_default();
            r.links += 1;
            r.link_bytes += blobs.get(d).map_or(0, |b| b.size);
            if !blobs.contains_key(d) {
                problems.push(format!(
                    "repository {repo} links {d}, which has no blob row"
                ));
            }
        }
        for u in &uploads {
            e.repos.entry(u.repo.clone()).or_default().uploads += 1;
        }
        for (repo, d) in e.link_refs.keys() {
            if !linked.contains(&(repo.clone(), d.clone())) {
                problems.push(format!(
                    "{repo} has manifests referencing {d} but no link to it"
                ));
                if repair && blobs.contains_key(d) {
                    let row = LinkRow {
                        refs: 0,
                        linked_ms: self.now_ms,
                    };
                    self.links
                        .insert((repo.as_str(), d.as_str()), enc(&row).as_slice())?;
                    self.links_by_blob.insert((d.as_str(), repo.as_str()), ())?;
                    let r = e.repos.entry(repo.clone()).or_default();
                    r.links += 1;
                    r.link_bytes += blobs.get(d).map_or(0, |b| b.size);
                }
            }
        }

        // Blob reference counts and the unreferenced table.
        for (d, row) in &blobs {
            let want = e.blob_refs.get(d).copied().unwrap_or(0);
            if row.refs != want {
                problems.push(format!(
                    "blob {d}: refcount {} but {want} manifest(s) reference it",
                    row.refs
                ));
                if repair {
                    let fixed = BlobRow {
                        refs: want,
                        ..row.clone()
                    };
                    self.blobs.insert(d.as_str(), enc(&fixed).as_slice())?;
                }
            }
            let listed = self.unreferenced.get(d.as_str())?.is_some();
            if listed != (want == 0) {
                problems.push(format!(
                    "blob {d}: {} the unreferenced table with {want} reference(s)",
                    if listed { "in" } else { "missing from" }
                ));
                if repair {
                    if want == 0 {
                        self.unreferenced.insert(d.as_str(), self.now_ms)?;
                    } else {
                        self.unreferenced.remove(d.as_str())?;
                    }
                }
            }
        }
        for d in all(&self.unreferenced, |k, _| Ok(k.to_owned()))? {
            if !blobs.contains_key(&d) {
                problems.push(format!(
                    "unreferenced table lists {d}, which has no blob row"
                ));
                if repair {
                    self.unreferenced.remove(d.as_str())?;
                }
            }
        }

        // Per-repository link counts.
        for (repo, d) in &links {
            let key = (repo.clone(), d.clone());
            let want = e.link_refs.get(&key).copied().unwrap_or(0);
            let row: LinkRow = dec(self
                .links
                .get((repo.as_str(), d.as_str()))?
                .expect("listed")
                .value())?;
            if row.refs != want {
                problems.push(format!(
                    "link {repo} -> {d}: refcount {} but {want}",
                    row.refs
                ));
                if repair {
                    let fixed = LinkRow { refs: want, ..row };
                    self.links
                        .insert((repo.as_str(), d.as_str()), enc(&fixed).as_slice())?;
                }
            }
        }
        let by_blob: BTreeSet<(String, String)> = all(&self.links_by_blob, |k, _| {
            Ok((k.1.to_owned(), k.0.to_owned()))
        })?
        .into_iter()
        .collect();
        if by_blob != linked {
            problems.push("links_by_blob disagrees with links".into());
            if repair {
                for (repo, d) in by_blob.difference(&linked) {
                    self.links_by_blob.remove((d.as_str(), repo.as_str()))?;
                }
                for (repo, d) in linked.difference(&by_blob) {
                    self.links_by_blob.insert((d.as_str(), repo.as_str()), ())?;
                }
            }
        }

        // Manifest parents and tag counts.
        for ((repo, digest), row) in &manifests {
            let key = (repo.clone(), digest.clone());
            let parents = e.parents.get(&key).copied().unwrap_or(0);
            let tagged = e.tags_of.get(&key).copied().unwrap_or(0);
            if row.parents != parents || row.tags != tagged {
                problems.push(format!(
                    "manifest {repo}@{digest}: parents {} tags {}, recount {parents} and {tagged}",
                    row.parents, row.tags
                ));
                if repair {
                    let fixed = ManifestRow {
                        parents,
                        tags: tagged,
                        ..row.clone()
                    };
                    self.manifests
                        .insert((repo.as_str(), digest.as_str()), enc(&fixed).as_slice())?;
                }
            }
        }
        let have: BTreeSet<(String, String, String)> = all(&self.tags_by_manifest, |k, _| {
            Ok((k.0.to_owned(), k.1.to_owned(), k.2.to_owned()))
        })?
        .into_iter()
        .collect();
        sync_set(
            &mut problems,
            "tags_by_manifest",
            &have,
            &e.tags_by_manifest,
            repair,
            &mut self.tags_by_manifest,
        )?;
        let have: BTreeSet<(String, String, String)> = all(&self.referrers, |k, _| {
            Ok((k.0.to_owned(), k.1.to_owned(), k.2.to_owned()))
        })?
        .into_iter()
        .collect();
        sync_set(
            &mut problems,
            "referrers",
            &have,
            &e.referrers,
            repair,
            &mut self.referrers,
        )?;

        // Manifest bodies.
        let body_refs: BTreeMap<String, u64> =
            all(&self.manifest_body_refs, |k, v| Ok((k.to_owned(), v)))?
                .into_iter()
                .collect();
        if body_refs != e.body_refs {
            problems
                .push("manifest body reference counts disagree with the manifests stored".into());
            if repair {
                for d in body_refs.keys().filter(|d| !e.body_refs.contains_key(*d)) {
                    self.manifest_body_refs.remove(d.as_str())?;
                    self.manifest_bodies.remove(d.as_str())?;
                }
                for (d, n) in &e.body_refs {
                    self.manifest_body_refs.insert(d.as_str(), *n)?;
                }
            }
        }
        for d in e.body_refs.keys() {
            if self.manifest_bodies.get(d.as_str())?.is_none() {
                problems.push(format!("manifest {d} has no stored body"));
            }
        }

        // The dangling table follows from the (repaired) rows.
        let dangling: Vec<(String, String)> =
            all(&self.dangling, |k, _| Ok((k.0.to_owned(), k.1.to_owned())))?;
        let before: BTreeMap<(String, String), DanglingRow> = dangling
            .iter()
            .map(|(r, d)| {
                let row = dec(self
                    .dangling
                    .get((r.as_str(), d.as_str()))?
                    .expect("listed")
                    .value())?;
                Ok(((r.clone(), d.clone()), row))
            })
            .collect::<Result<_>>()?;
        for (r, d) in &dangling {
            if !stored.contains(&(r.clone(), d.clone())) {
                problems.push(format!("dangling table lists {r}@{d}, which is not stored"));
                if repair {
                    self.dangling.remove((r.as_str(), d.as_str()))?;
                }
            }
        }
        if repair {
            for (repo, digest) in stored.iter().copied() {
                self.refresh_dangling(repo, digest)?;
            }
        } else {
            // Without rewriting, predict what refresh_dangling would keep.
            for ((repo, digest), row) in &manifests {
                let key = (repo.clone(), digest.clone());
                let attached = row
                    .subject
                    .as_ref()
                    .is_some_and(|s| stored.contains(&(repo.clone(), s.clone())));
                let should = e.tags_of.get(&key).copied().unwrap_or(0) == 0
                    && e.parents.get(&key).copied().unwrap_or(0) == 0
                    && !attached;
                if should != before.contains_key(&key) {
                    problems.push(format!(
                        "manifest {repo}@{digest} should {}be in the dangling table",
                        if should { "" } else { "not " }
                    ));
                }
            }
        }

        // Repository counters and totals.
        let repos: BTreeMap<String, RepoRow> =
            all(&self.repos, |k, v| Ok((k.to_owned(), dec::<RepoRow>(v)?)))?
                .into_iter()
                .collect();
        for (name, row) in &repos {
            let want = e.repos.get(name);
            let same = want.is_some_and(|w| {
                (w.manifests, w.tags, w.links, w.uploads, w.link_bytes)
                    == (
                        row.manifests,
                        row.tags,
                        row.links,
                        row.uploads,
                        row.link_bytes,
                    )
            });
            if !same {
                problems.push(format!(
                    "repository {name}: counters disagree with its contents"
                ));
                if repair {
                    match want {
                        Some(w) => {
                            let fixed = RepoRow {
                                created_ms: row.created_ms,
                                ..w.clone()
                            };
                            self.repos.insert(name.as_str(), enc(&fixed).as_slice())?;
                        }
                        None => {
                            self.repos.remove(name.as_str())?;
                        }
                    }
                }
            }
        }
        for (name, w) in &e.repos {
            if !repos.contains_key(name) {
                problems.push(format!("repository {name} has contents but no row"));
                if repair {
                    let row = RepoRow {
                        created_ms: self.now_ms,
                        ..w.clone()
                    };
                    self.repos.insert(name.as_str(), enc(&row).as_slice())?;
                }
            }
        }
        let unref: Vec<&BlobRow> = blobs
            .iter()
            .filter(|(d, _)| e.blob_refs.get(*d).copied().unwrap_or(0) == 0)
            .map(|(_, r)| r)
            .collect();
        let want = [
            ("repositories", e.repos.len() as u64),
            ("manifests", manifests.len() as u64),
            ("tags", tags.len() as u64),
            ("blobs", blobs.len() as u64),
            ("blob_bytes", blobs.values().map(|b| b.size).sum()),
            ("unreferenced_blobs", unref.len() as u64),
            ("unreferenced_bytes", unref.iter().map(|b| b.size).sum()),
            ("uploads", uploads.len() as u64),
        ];
        for (name, value) in want {
            let have = self.totals.get(name)?.map_or(0, |g| g.value());
            if have != value {
                problems.push(format!("total {name}: {have}, recount {value}"));
                if repair {
                    self.totals.insert(name, value)?;
                }
            }
        }
        Ok(problems)
    }
}

/// Compares a set-valued table with what it should hold.
fn sync_set(
    problems: &mut Vec<String>,
    name: &str,
    have: &BTreeSet<(String, String, String)>,
    want: &BTreeSet<(String, String, String)>,
    repair: bool,
    table: &mut redb::Table<'_, (&'static str, &'static str, &'static str), ()>,
) -> Result<()> {
    for k in have.difference(want) {
        problems.push(format!("{name} has a stale entry {k:?}"));
        if repair {
            table.remove((k.0.as_str(), k.1.as_str(), k.2.as_str()))?;
        }
    }
    for k in want.difference(have) {
        problems.push(format!("{name} misses {k:?}"));
        if repair {
            table.insert((k.0.as_str(), k.1.as_str(), k.2.as_str()), ())?;
        }
    }
    Ok(())
}
