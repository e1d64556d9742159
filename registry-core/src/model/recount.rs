//! Recounting: recomputes every derived record of the index (reference
//! counts, reverse tables, the unreferenced and dangling tables, repository
//! counters, totals) from the primary ones (manifests, tags, links, blobs,
//! uploads), reports each disagreement and, when asked, rewrites the
//! derived records through the same rules the mutations use. A full walk,
//! so the integrity check runs it on a stopped store; without `repair` it
//! runs in a "what if" transaction.

use std::collections::{BTreeMap, BTreeSet};

use super::counters::{self, set_total};
use super::dangling::refresh_dangling;
use super::{
    BLOB_DATA, BLOBS, BlobRow, DANGLING, LINKS, LINKS_BY_BLOB, LinkRow, MANIFEST_BODIES,
    MANIFEST_BODY_REFS, MANIFESTS, ManifestRow, REFERRERS, REPO_COUNTS, REPOS, RepoRow, TAGS,
    TAGS_BY_MANIFEST, TagRow, UNREFERENCED, UPLOADS,
};
use crate::db::{Reads, Table, Tx};
use crate::error::Result;

type Pair = (String, String);
type Triple = (String, String, String);

/// The primary records, read once.
struct Primary {
    manifests: Vec<(Pair, ManifestRow)>,
    tags: Vec<(Pair, TagRow)>,
    links: BTreeSet<Pair>,
    blobs: BTreeMap<String, BlobRow>,
    upload_repos: Vec<String>,
}

/// What the derived records should hold.
#[derive(Default)]
struct Expected {
    blob_refs: BTreeMap<String, u64>,
    link_refs: BTreeMap<Pair, u64>,
    parents: BTreeMap<Pair, u64>,
    tags_of: BTreeMap<Pair, u64>,
    tags_by_manifest: BTreeSet<Triple>,
    referrers: BTreeSet<Triple>,
    body_refs: BTreeMap<String, u64>,
    repos: BTreeMap<String, RepoRow>,
}

/// One recount: the transaction, whether to repair, what was found.
struct Recount<'t, 'a> {
    tx: &'t mut Tx<'a>,
    repair: bool,
    problems: Vec<String>,
}

fn read_all<K: crate::db::Key, V: crate::db::Value>(
    r: &impl Reads,
    t: Table<K, V>,
) -> Result<Vec<(K, V)>> {
    r.scan_all(t).collect()
}

/// Compares every derived record with a recount; with `repair`, rewrites
/// the ones that differ. Returns one line per disagreement.
pub fn recount(tx: &mut Tx<'_>, repair: bool) -> Result<Vec<String>> {
    let p = Primary {
        manifests: read_all(tx, MANIFESTS)?,
        tags: read_all(tx, TAGS)?,
        links: read_all(tx, LINKS)?.into_iter().map(|(k, _)| k).collect(),
        blobs: read_all(tx, BLOBS)?.into_iter().collect(),
        upload_repos: read_all(tx, UPLOADS)?
            .into_iter()
            .map(|(_, u)| u.repo)
            .collect(),
    };
    let mut rc = Recount {
        tx,
        repair,
        problems: Vec::new(),
    };
    let mut e = rc.expect(&p);
    rc.links(&p, &mut e)?;
    rc.blob_counts(&p, &e)?;
    rc.link_counts(&p, &e)?;
    rc.manifest_counts(&p, &e)?;
    rc.sets(&e)?;
    rc.bodies(&e)?;
    rc.inline_bytes(&p)?;
    rc.dangling(&p, &e)?;
    rc.repositories(&e)?;
    rc.totals(&p, &e)?;
    Ok(rc.problems)
}

impl Recount<'_, '_> {
    fn expect(&mut self, p: &Primary) -> Expected {
        let mut e = Expected::default();
        let stored: BTreeSet<&Pair> = p.manifests.iter().map(|(k, _)| k).collect();
        for ((repo, digest), row) in &p.manifests {
            for b in &row.blobs {
                if !p.blobs.contains_key(b) {
                    self.problems.push(format!(
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
        for ((repo, tag), row) in &p.tags {
            if !stored.contains(&(repo.clone(), row.digest.clone())) {
                self.problems.push(format!(
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
        for repo in &p.upload_repos {
            e.repos.entry(repo.clone()).or_default().uploads += 1;
        }
        e
    }

    /// Links: each counted in its repository; a missing one is recreated.
    fn links(&mut self, p: &Primary, e: &mut Expected) -> Result<()> {
        for (repo, d) in &p.links {
            let r = e.repos.entry(repo.clone()).or_default();
            r.links += 1;
            r.link_bytes += p.blobs.get(d).map_or(0, |b| b.size);
            if !p.blobs.contains_key(d) {
                self.problems.push(format!(
                    "repository {repo} links {d}, which has no blob row"
                ));
            }
        }
        for (repo, d) in e.link_refs.keys() {
            if p.links.contains(&(repo.clone(), d.clone())) {
                continue;
            }
            self.problems.push(format!(
                "{repo} has manifests referencing {d} but no link to it"
            ));
            if self.repair && p.blobs.contains_key(d) {
                let row = LinkRow {
                    refs: e.link_refs[&(repo.clone(), d.clone())],
                    linked_ms: self.tx.now_ms(),
                };
                self.tx.put(LINKS, (repo, d), &row)?;
                self.tx.put(LINKS_BY_BLOB, (d, repo), &())?;
                let r = e.repos.entry(repo.clone()).or_default();
                r.links += 1;
                r.link_bytes += p.blobs.get(d).map_or(0, |b| b.size);
            }
        }
        Ok(())
    }

    /// Blob reference counts and the unreferenced table.
    fn blob_counts(&mut self, p: &Primary, e: &Expected) -> Result<()> {
        for (d, row) in &p.blobs {
            let want = e.blob_refs.get(d).copied().unwrap_or(0);
            if row.refs != want {
                self.problems.push(format!(
                    "blob {d}: refcount {} but {want} manifest(s) reference it",
                    row.refs
                ));
                if self.repair {
                    let fixed = BlobRow {
                        refs: want,
                        ..row.clone()
                    };
                    self.tx.put(BLOBS, d, &fixed)?;
                }
            }
            let listed = self.tx.contains(UNREFERENCED, d)?;
            if listed != (want == 0) {
                self.problems.push(format!(
                    "blob {d}: {} the unreferenced table with {want} reference(s)",
                    if listed { "in" } else { "missing from" }
                ));
                if self.repair {
                    if want == 0 {
                        let now = self.tx.now_ms();
                        self.tx.put(UNREFERENCED, d, &now)?;
                    } else {
                        self.tx.delete(UNREFERENCED, d)?;
                    }
                }
            }
        }
        for (d, _) in read_all(self.tx, UNREFERENCED)? {
            if !p.blobs.contains_key(&d) {
                self.problems.push(format!(
                    "unreferenced table lists {d}, which has no blob row"
                ));
                if self.repair {
                    self.tx.delete(UNREFERENCED, &d)?;
                }
            }
        }
        Ok(())
    }

    /// Per-repository link counts and the by-blob index of links.
    fn link_counts(&mut self, p: &Primary, e: &Expected) -> Result<()> {
        for (repo, d) in &p.links {
            let want = e
                .link_refs
                .get(&(repo.clone(), d.clone()))
                .copied()
                .unwrap_or(0);
            let Some(row) = self.tx.get(LINKS, (repo, d))? else {
                continue;
            };
            if row.refs != want {
                self.problems.push(format!(
                    "link {repo} -> {d}: refcount {} but {want}",
                    row.refs
                ));
                if self.repair {
                    self.tx
                        .put(LINKS, (repo, d), &LinkRow { refs: want, ..row })?;
                }
            }
        }
        let by_blob: BTreeSet<Pair> = read_all(self.tx, LINKS_BY_BLOB)?
            .into_iter()
            .map(|((d, repo), ())| (repo, d))
            .collect();
        let linked: BTreeSet<Pair> = read_all(self.tx, LINKS)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if by_blob != linked {
            self.problems
                .push("links_by_blob disagrees with links".into());
            if self.repair {
                for (repo, d) in by_blob.difference(&linked) {
                    self.tx.delete(LINKS_BY_BLOB, (d, repo))?;
                }
                for (repo, d) in linked.difference(&by_blob) {
                    self.tx.put(LINKS_BY_BLOB, (d, repo), &())?;
                }
            }
        }
        Ok(())
    }

    /// Manifest parents and tag counts.
    fn manifest_counts(&mut self, p: &Primary, e: &Expected) -> Result<()> {
        for ((repo, digest), row) in &p.manifests {
            let key = (repo.clone(), digest.clone());
            let parents = e.parents.get(&key).copied().unwrap_or(0);
            let tagged = e.tags_of.get(&key).copied().unwrap_or(0);
            if row.parents != parents || row.tags != tagged {
                self.problems.push(format!(
                    "manifest {repo}@{digest}: parents {} tags {}, recount {parents} and {tagged}",
                    row.parents, row.tags
                ));
                if self.repair {
                    let fixed = ManifestRow {
                        parents,
                        tags: tagged,
                        ..row.clone()
                    };
                    self.tx.put(MANIFESTS, (repo, digest), &fixed)?;
                }
            }
        }
        Ok(())
    }

    /// The set-valued tables: tags by manifest, referrers.
    fn sets(&mut self, e: &Expected) -> Result<()> {
        for (table, want) in [
            (TAGS_BY_MANIFEST, &e.tags_by_manifest),
            (REFERRERS, &e.referrers),
        ] {
            let have: BTreeSet<Triple> = read_all(self.tx, table)?
                .into_iter()
                .map(|(k, ())| k)
                .collect();
            for k in have.difference(want) {
                self.problems
                    .push(format!("{} has a stale entry {k:?}", table.name));
                if self.repair {
                    self.tx.delete(table, (&k.0, &k.1, &k.2))?;
                }
            }
            for k in want.difference(&have) {
                self.problems.push(format!("{} misses {k:?}", table.name));
                if self.repair {
                    self.tx.put(table, (&k.0, &k.1, &k.2), &())?;
                }
            }
        }
        Ok(())
    }

    /// Manifest bodies and how many repositories store each.
    fn bodies(&mut self, e: &Expected) -> Result<()> {
        let body_refs: BTreeMap<String, u64> =
            read_all(self.tx, MANIFEST_BODY_REFS)?.into_iter().collect();
        if body_refs != e.body_refs {
            self.problems
                .push("manifest body reference counts disagree with the manifests stored".into());
            if self.repair {
                for d in body_refs.keys().filter(|d| !e.body_refs.contains_key(*d)) {
                    self.tx.delete(MANIFEST_BODY_REFS, d)?;
                    self.tx.delete(MANIFEST_BODIES, d)?;
                }
                for (d, n) in &e.body_refs {
                    self.tx.put(MANIFEST_BODY_REFS, d, n)?;
                }
            }
        }
        for d in e.body_refs.keys() {
            if !self.tx.contains(MANIFEST_BODIES, d)? {
                self.problems
                    .push(format!("manifest {d} has no stored body"));
            }
        }
        Ok(())
    }

    /// Bytes the index keeps belong to a blob row, and match its size.
    fn inline_bytes(&mut self, p: &Primary) -> Result<()> {
        let kept: Vec<String> = self.tx.scan_all(BLOB_DATA).keys().collect::<Result<_>>()?;
        for d in kept {
            let fits = match p.blobs.get(&d) {
                Some(row) => {
                    let bytes = self.tx.get(BLOB_DATA, &d)?.unwrap_or_default();
                    bytes.len() as u64 == row.size
                }
                None => false,
            };
            if !fits {
                self.problems.push(format!(
                    "blob {d}: bytes kept in the index without a matching blob row"
                ));
                if self.repair {
                    self.tx.delete(BLOB_DATA, &d)?;
                }
            }
        }
        Ok(())
    }

    /// The dangling table follows from the (repaired) rows.
    fn dangling(&mut self, p: &Primary, e: &Expected) -> Result<()> {
        let stored: BTreeSet<&Pair> = p.manifests.iter().map(|(k, _)| k).collect();
        let listed: BTreeSet<Pair> = read_all(self.tx, DANGLING)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for (r, d) in &listed {
            if !stored.contains(&(r.clone(), d.clone())) {
                self.problems
                    .push(format!("dangling table lists {r}@{d}, which is not stored"));
                if self.repair {
                    self.tx.delete(DANGLING, (r, d))?;
                }
            }
        }
        for ((repo, digest), row) in &p.manifests {
            if self.repair {
                refresh_dangling(self.tx, repo, digest)?;
                continue;
            }
            // Without rewriting, predict what refresh_dangling would keep.
            let key = (repo.clone(), digest.clone());
            let attached = row
                .subject
                .as_ref()
                .is_some_and(|s| stored.contains(&(repo.clone(), s.clone())));
            let should = e.tags_of.get(&key).copied().unwrap_or(0) == 0
                && e.parents.get(&key).copied().unwrap_or(0) == 0
                && !attached;
            if should != listed.contains(&key) {
                self.problems.push(format!(
                    "manifest {repo}@{digest} should {}be in the dangling table",
                    if should { "" } else { "not " }
                ));
            }
        }
        Ok(())
    }

    /// Repository counters.
    fn repositories(&mut self, e: &Expected) -> Result<()> {
        let mut repos = BTreeMap::new();
        for (name, base) in read_all(self.tx, REPOS)? {
            let row = counters::with_shards(self.tx, &name, base)?;
            repos.insert(name, row);
        }
        self.stray_shards(&repos)?;
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
            if same {
                continue;
            }
            self.problems.push(format!(
                "repository {name}: counters disagree with its contents"
            ));
            if self.repair {
                match want {
                    Some(w) => {
                        let fixed = RepoRow {
                            created_ms: row.created_ms,
                            ..w.clone()
                        };
                        counters::clear_shards(self.tx, name)?;
                        self.tx.put(REPOS, name, &fixed)?;
                    }
                    None => {
                        counters::clear_shards(self.tx, name)?;
                        self.tx.delete(REPOS, name)?;
                    }
                }
            }
        }
        for (name, w) in &e.repos {
            if !repos.contains_key(name) {
                self.problems
                    .push(format!("repository {name} has contents but no row"));
                if self.repair {
                    let row = RepoRow {
                        created_ms: self.tx.now_ms(),
                        ..w.clone()
                    };
                    counters::clear_shards(self.tx, name)?;
                    self.tx.put(REPOS, name, &row)?;
                }
            }
        }
        Ok(())
    }

    /// Counter shards of repositories that have no row.
    fn stray_shards(&mut self, repos: &BTreeMap<String, RepoRow>) -> Result<()> {
        let names: BTreeSet<String> = read_all(self.tx, REPO_COUNTS)?
            .into_iter()
            .map(|((name, _), _)| name)
            .filter(|name| !repos.contains_key(name))
            .collect();
        for name in &names {
            self.problems
                .push(format!("repository {name} has counters but no row"));
            if self.repair {
                counters::clear_shards(self.tx, name)?;
            }
        }
        Ok(())
    }

    /// The running totals.
    fn totals(&mut self, p: &Primary, e: &Expected) -> Result<()> {
        let unref: Vec<&BlobRow> = p
            .blobs
            .iter()
            .filter(|(d, _)| e.blob_refs.get(*d).copied().unwrap_or(0) == 0)
            .map(|(_, r)| r)
            .collect();
        let want = [
            e.repos.len() as u64,
            p.manifests.len() as u64,
            p.tags.len() as u64,
            p.blobs.len() as u64,
            p.blobs.values().map(|b| b.size).sum(),
            unref.len() as u64,
            unref.iter().map(|b| b.size).sum(),
            p.upload_repos.len() as u64,
        ];
        for (name, value) in counters::ALL.into_iter().zip(want) {
            let have = counters::total(self.tx, name)?;
            if have != value {
                self.problems
                    .push(format!("total {name}: {have}, recount {value}"));
                if self.repair {
                    set_total(self.tx, name, value)?;
                }
            }
        }
        Ok(())
    }
}
