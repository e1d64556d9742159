//! A model-based property test of the index's reference counting.
//!
//! The redb index keeps its counts incrementally: every mutation adjusts a
//! blob's reference count, a repository's link counts, a manifest's parent
//! and tag counts, the referrers table and the running totals in the same
//! transaction. Bookkeeping like that drifts silently when one path forgets a
//! step, and the garbage collector trusts these counts to decide what to
//! delete. So this test states the rules the counts must obey *plainly*, as a
//! small in-memory model built from `BTreeMap`s and `BTreeSet`s that stores
//! only the facts (which blobs are stored, which (repository, blob) links and
//! (repository, manifest) rows exist, where each tag points, which upload
//! sessions are open) and derives every count from them on demand:
//!
//! * a blob's reference count is the number of (repository, manifest) rows
//!   whose manifest references it;
//! * a link's reference count (what makes unlinking a blob a `Conflict`) is
//!   the number of manifests in that repository referencing the blob;
//! * a manifest's parents (what makes deleting it a `Conflict`) are the
//!   indexes in the same repository listing it;
//! * the referrers of a subject in a repository are the manifests stored
//!   there whose `subject` is that digest;
//! * a repository exists exactly while it has tags, manifests, links or
//!   upload sessions;
//! * the totals count those facts, and the unreferenced blobs (and bytes) are
//!   the stored blobs whose reference count is zero.
//!
//! `redb_index_matches_refcount_model` generates a small universe per case
//! (three repositories, six blobs, five image manifests built from them,
//! three indexes over earlier manifests, some with a `subject`, some with a
//! deliberately wrong descriptor size) and a random sequence of operations:
//! `commit_blob` (with or without closing an upload), `mount_blob` (with and
//! without `from`), `unlink_blob`, `put_manifest` (by tag or by digest),
//! `delete_tag`, `delete_manifest`, `create_upload`, `delete_upload`, and
//! reopening the index. Part of the sequence is goal-directed ("store this
//! index, with whatever it needs first", "delete a manifest this repository
//! has") so that cases reach nested indexes and conflicts, not only
//! refusals. Every operation runs against both a real `RedbIndex` on a
//! temporary file and the model; their answers (success, or which refusal)
//! must agree, and after every operation everything observable through the
//! public `Index` trait must equal what the model derives. The index is
//! reopened from its file at the end of each case (and as a random
//! operation) to check that committed state survives.
//!
//! `every_refusal_matches_refcount_model` runs one hand-written sequence
//! through every refusal, so each rule is exercised whatever the generator
//! picks; `reused_upload_id_keeps_counts_consistent` covers an upload id
//! used twice, which the generator never does.
//!
//! On failure the message names the step, the operation, each difference,
//! and the operations applied so far; proptest shrinks the case first and
//! prints it as the universe and the concrete operations. `PROPTEST_CASES`
//! raises the number of cases (64 by default) for a longer soak.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use registry_core::index::{Index, Page, RedbIndex, Referrer, Totals};
use registry_core::manifest::{self, Kind, OCI_INDEX, OCI_MANIFEST, ParsedManifest};
use registry_core::{Algorithm, Digest, Error, RepoName, Tag};
use serde_json::{Value, json};

// ---- the universe ----

/// One name a prefix of another and names of different lengths, so that
/// a key range of one repository that spills into the next shows.
const REPOS: [&str; 3] = ["app", "app/web", "library/base"];
const TAGS: [&str; 3] = ["1.0-rc_1", "latest", "v1"];
/// Distinct powers of ten, so a wrong byte total shows which blob is off.
const BLOB_SIZES: [u64; 6] = [3, 10, 100, 1_000, 10_000, 100_000];
const BLOBS: usize = BLOB_SIZES.len();
const IMAGES: usize = 5;
const INDEXES: usize = 3;
const MANIFESTS: usize = IMAGES + INDEXES;
/// Upload ids that `delete_upload` and `commit_blob` pick from; ids are
/// handed out in order (`upload-0`, `upload-1`, ...) by `create_upload`.
const UPLOAD_SLOTS: usize = 4;

const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const FOREIGN_TYPE: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
const SIGNATURE_TYPE: &str = "application/vnd.example.signature";
const BUNDLE_TYPE: &str = "application/vnd.example.bundle";
const NAME_ANNOTATION: &str = "org.example.name";

fn blob_name(b: usize) -> String {
    format!("b{b}")
}

fn manifest_name(m: usize) -> String {
    if m < IMAGES {
        format!("img{m}")
    } else {
        format!("idx{}", m - IMAGES)
    }
}

fn upload_id(slot: usize) -> String {
    format!("upload-{slot}")
}

/// The index never sees blob bytes, only digests and sizes; one blob is
/// addressed by sha512 so keys of two lengths mix.
fn blob_digest(b: usize) -> Digest {
    let algorithm = if b == BLOBS - 1 {
        Algorithm::Sha512
    } else {
        Algorithm::Sha256
    };
    Digest::of(algorithm, format!("blob {b}").as_bytes())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SubjectSpec {
    /// A manifest generated before this one.
    Earlier(usize),
    /// A digest no manifest of the universe has.
    Dangling,
}

impl fmt::Debug for SubjectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubjectSpec::Earlier(m) => f.write_str(&manifest_name(*m)),
            SubjectSpec::Dangling => f.write_str("dangling"),
        }
    }
}

#[derive(Clone)]
struct ImageSpec {
    /// 1-3 distinct blobs: the config first, then the layers.
    blobs: Vec<usize>,
    /// A foreign layer (served from `urls`), which references nothing.
    foreign: Option<usize>,
    subject: Option<SubjectSpec>,
    artifact_type: bool,
    /// The descriptor of the first blob states a wrong size.
    lie: bool,
    /// Addressed by a sha512 digest.
    sha512: bool,
}

impl fmt::Debug for ImageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let blobs: Vec<_> = self.blobs.iter().map(|&b| blob_name(b)).collect();
        write!(f, "image [{}]", blobs.join(" "))?;
        if let Some(b) = self.foreign {
            write!(f, " foreign={}", blob_name(b))?;
        }
        if let Some(s) = self.subject {
            write!(f, " subject={s:?}")?;
        }
        if self.artifact_type {
            f.write_str(" artifactType")?;
        }
        if self.lie {
            write!(f, " wrong-size({})", blob_name(self.blobs[0]))?;
        }
        if self.sha512 {
            f.write_str(" sha512")?;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct IndexSpec {
    /// Earlier manifests (images or indexes), possibly listed twice.
    children: Vec<usize>,
    subject: Option<SubjectSpec>,
    /// The descriptors of the first child state a wrong size.
    lie: bool,
}

impl fmt::Debug for IndexSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let children: Vec<_> = self.children.iter().map(|&m| manifest_name(m)).collect();
        write!(f, "index [{}]", children.join(" "))?;
        if let Some(s) = self.subject {
            write!(f, " subject={s:?}")?;
        }
        if self.lie {
            write!(f, " wrong-size({})", manifest_name(self.children[0]))?;
        }
        Ok(())
    }
}

/// One generated manifest, with what the model needs to know about it
/// (derived from the spec, not from the parser).
struct Manifest {
    digest: Digest,
    media_type: &'static str,
    kind: Kind,
    body: Bytes,
    parsed: ParsedManifest,
    blobs: BTreeSet<usize>,
    children: BTreeSet<usize>,
    /// The blob or child whose descriptor states a wrong size.
    lying_blob: Option<usize>,
    lying_child: Option<usize>,
    subject: Option<Digest>,
    artifact_type: Option<String>,
}

struct Universe {
    repos: Vec<RepoName>,
    tags: Vec<Tag>,
    blobs: Vec<Digest>,
    manifests: Vec<Manifest>,
    /// Every digest a `subject` may name (all manifests and the dangling one).
    subjects: Vec<Digest>,
}

impl Universe {
    fn build(images: &[ImageSpec], indexes: &[IndexSpec]) -> Universe {
        let blobs: Vec<Digest> = (0..BLOBS).map(blob_digest).collect();
        let dangling = Digest::sha256_of(b"a manifest this registry never sees");
        let mut manifests: Vec<Manifest> = Vec::new();

        fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Value {
            json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
        }
        let subject = |manifests: &[Manifest], s: SubjectSpec| match s {
            SubjectSpec::Earlier(m) => {
                let m = &manifests[m];
                (
                    m.digest.clone(),
                    descriptor(m.media_type, &m.digest, m.body.len() as u64),
                )
            }
            SubjectSpec::Dangling => (dangling.clone(), descriptor(OCI_MANIFEST, &dangling, 321)),
        };

        for (i, spec) in images.iter().enumerate() {
            let size_of = |b: usize| BLOB_SIZES[b] + u64::from(spec.lie && b == spec.blobs[0]);
            let config = spec.blobs[0];
            let mut layers: Vec<Value> = spec.blobs[1..]
                .iter()
                .map(|&b| descriptor(LAYER_TYPE, &blobs[b], size_of(b)))
                .collect();
            if let Some(b) = spec.foreign {
                let mut d = descriptor(FOREIGN_TYPE, &blobs[b], BLOB_SIZES[b]);
                d["urls"] = json!(["https://example.com/layer"]);
                layers.push(d);
            }
            let mut v = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptor(CONFIG_TYPE, &blobs[config], size_of(config)),
                "layers": layers,
                "annotations": {NAME_ANNOTATION: manifest_name(i)},
            });
            let subject = spec.subject.map(|s| subject(&manifests, s));
            if let Some((_, d)) = &subject {
                v["subject"] = d.clone();
            }
            if spec.artifact_type {
                v["artifactType"] = SIGNATURE_TYPE.into();
            }
            let algorithm = if spec.sha512 {
                Algorithm::Sha512
            } else {
                Algorithm::Sha256
            };
            manifests.push(Manifest::new(
                v,
                OCI_MANIFEST,
                Kind::Image,
                algorithm,
                spec.blobs.iter().copied().collect(),
                BTreeSet::new(),
                spec.lie.then_some(spec.blobs[0]),
                None,
                subject.map(|(d, _)| d),
                Some(
                    if spec.artifact_type {
                        SIGNATURE_TYPE
                    } else {
                        CONFIG_TYPE
                    }
                    .to_owned(),
                ),
            ));
        }

        for (i, spec) in indexes.iter().enumerate() {
            let listed: Vec<Value> = spec
                .children
                .iter()
                .map(|&c| {
                    let m = &manifests[c];
                    let lie = spec.lie && c == spec.children[0];
                    descriptor(
                        m.media_type,
                        &m.digest,
                        m.body.len() as u64 + u64::from(lie),
                    )
                })
                .collect();
            let mut v = json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": listed,
                "annotations": {NAME_ANNOTATION: manifest_name(IMAGES + i)},
            });
            let subject = spec.subject.map(|s| subject(&manifests, s));
            if let Some((_, d)) = &subject {
                v["subject"] = d.clone();
                v["artifactType"] = BUNDLE_TYPE.into();
            }
            let artifact_type = subject.is_some().then(|| BUNDLE_TYPE.to_owned());
            manifests.push(Manifest::new(
                v,
                OCI_INDEX,
                Kind::Index,
                Algorithm::Sha256,
                BTreeSet::new(),
                spec.children.iter().copied().collect(),
                None,
                spec.lie.then_some(spec.children[0]),
                subject.map(|(d, _)| d),
                artifact_type,
            ));
        }

        let mut subjects: Vec<Digest> = manifests.iter().map(|m| m.digest.clone()).collect();
        subjects.push(dangling);
        Universe {
            repos: REPOS
                .iter()
                .map(|r| r.parse().expect("valid name"))
                .collect(),
            tags: TAGS.iter().map(|t| t.parse().expect("valid tag")).collect(),
            blobs,
            manifests,
            subjects,
        }
    }

    /// The universe's name for a digest, for readable messages.
    fn name_of(&self, digest: &Digest) -> String {
        if let Some(b) = self.blobs.iter().position(|d| d == digest) {
            return blob_name(b);
        }
        if let Some(m) = self.manifests.iter().position(|m| &m.digest == digest) {
            return manifest_name(m);
        }
        digest.to_string()
    }
}

impl Manifest {
    #[allow(clippy::too_many_arguments)]
    fn new(
        json: Value,
        media_type: &'static str,
        kind: Kind,
        algorithm: Algorithm,
        blobs: BTreeSet<usize>,
        children: BTreeSet<usize>,
        lying_blob: Option<usize>,
        lying_child: Option<usize>,
        subject: Option<Digest>,
        artifact_type: Option<String>,
    ) -> Manifest {
        let body = Bytes::from(serde_json::to_vec(&json).expect("JSON serializes"));
        let parsed = manifest::parse(&body, Some(media_type), algorithm)
            .expect("generated manifests are well formed");
        let digest = Digest::of(algorithm, &body);
        assert_eq!(parsed.digest, digest);
        Manifest {
            digest,
            media_type,
            kind,
            body,
            parsed,
            blobs,
            children,
            lying_blob,
            lying_child,
            subject,
            artifact_type,
        }
    }

    fn referrer(&self, m: usize) -> Referrer {
        Referrer {
            media_type: self.media_type.to_owned(),
            digest: self.digest.clone(),
            size: self.body.len() as u64,
            artifact_type: self.artifact_type.clone(),
            annotations: BTreeMap::from([(NAME_ANNOTATION.to_owned(), manifest_name(m))]),
        }
    }
}

// ---- operations ----

#[derive(Clone, Copy)]
enum Op {
    CommitBlob {
        repo: usize,
        blob: usize,
        upload: Option<usize>,
    },
    MountBlob {
        repo: usize,
        blob: usize,
        from: Option<usize>,
    },
    UnlinkBlob {
        repo: usize,
        blob: usize,
    },
    PutManifest {
        repo: usize,
        manifest: usize,
        tag: Option<usize>,
    },
    DeleteTag {
        repo: usize,
        tag: usize,
    },
    DeleteManifest {
        repo: usize,
        manifest: usize,
    },
    /// Opens a session under the next fresh id.
    CreateUpload {
        repo: usize,
    },
    DeleteUpload {
        slot: usize,
    },
    /// Drops the index and opens it again from its file.
    Reopen,
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::CommitBlob { repo, blob, upload } => {
                write!(f, "commit_blob({}, {}", REPOS[repo], blob_name(blob))?;
                if let Some(slot) = upload {
                    write!(f, ", upload {}", upload_id(slot))?;
                }
                f.write_str(")")
            }
            Op::MountBlob { repo, blob, from } => {
                write!(f, "mount_blob({}, {}", REPOS[repo], blob_name(blob))?;
                if let Some(from) = from {
                    write!(f, ", from {}", REPOS[from])?;
                }
                f.write_str(")")
            }
            Op::UnlinkBlob { repo, blob } => {
                write!(f, "unlink_blob({}, {})", REPOS[repo], blob_name(blob))
            }
            Op::PutManifest {
                repo,
                manifest,
                tag,
            } => {
                write!(
                    f,
                    "put_manifest({}, {}",
                    REPOS[repo],
                    manifest_name(manifest)
                )?;
                match tag {
                    Some(t) => write!(f, ", tag {})", TAGS[t]),
                    None => f.write_str(", by digest)"),
                }
            }
            Op::DeleteTag { repo, tag } => write!(f, "delete_tag({}, {})", REPOS[repo], TAGS[tag]),
            Op::DeleteManifest { repo, manifest } => {
                write!(
                    f,
                    "delete_manifest({}, {})",
                    REPOS[repo],
                    manifest_name(manifest)
                )
            }
            Op::CreateUpload { repo } => write!(f, "create_upload({})", REPOS[repo]),
            Op::DeleteUpload { slot } => write!(f, "delete_upload({})", upload_id(slot)),
            Op::Reopen => f.write_str("reopen"),
        }
    }
}

/// What the generator produces: an operation with random targets (often
/// refused), or an intention resolved against the model's state when the
/// case is built (see `Model::resolve`), so that sequences get deep (indexes
/// over stored manifests, nested indexes, conflicts, tags going with their
/// manifest) instead of being refused at the door. Only the choice of
/// operations depends on the model; every answer is still checked.
#[derive(Clone, Copy, Debug)]
enum Step {
    Any(Op),
    /// Store `manifest` in `repo` with whatever it needs first: the blobs it
    /// lacks committed, its missing children stored (recursively); stops at
    /// the first refusal (a wrong descriptor size). See `Model::towards`.
    PutTowards {
        repo: usize,
        manifest: usize,
        tag: Option<usize>,
    },
    /// Delete a manifest stored in `repo`.
    DeleteStored {
        repo: usize,
        pick: usize,
    },
    /// Delete a tag `repo` has.
    DeleteExistingTag {
        repo: usize,
        pick: usize,
    },
    /// Unlink a blob `repo` sees.
    UnlinkLinked {
        repo: usize,
        pick: usize,
    },
}

/// What an operation answered, with digests replaced by universe names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Mounted(Option<u64>),
    BlobUnknown(String),
    UploadUnknown,
    ManifestUnknown,
    ManifestBlobUnknown(String),
    ManifestChildUnknown(String),
    ManifestInvalid,
    Conflict,
    Unexpected(String),
}

// ---- the model ----

/// Only facts; every count is derived from them when asked for.
#[derive(Default)]
struct Model {
    /// Blobs whose bytes are stored (nothing here deletes blobs: that is the
    /// garbage collector's job, outside the `Index` operations tested).
    stored: BTreeSet<usize>,
    /// (repository, blob): the blob is visible in the repository.
    links: BTreeSet<(usize, usize)>,
    /// (repository, manifest): the manifest is stored in the repository.
    manifests: BTreeSet<(usize, usize)>,
    /// (repository, tag) -> manifest.
    tags: BTreeMap<(usize, usize), usize>,
    /// Open upload sessions: id -> repository.
    uploads: BTreeMap<String, usize>,
    /// How many upload ids have been handed out.
    created_uploads: usize,
}

impl Model {
    fn blob_refs(&self, u: &Universe, blob: usize) -> u64 {
        self.manifests
            .iter()
            .filter(|&&(_, m)| u.manifests[m].blobs.contains(&blob))
            .count() as u64
    }

    fn link_refs(&self, u: &Universe, repo: usize, blob: usize) -> u64 {
        self.manifests
            .iter()
            .filter(|&&(r, m)| r == repo && u.manifests[m].blobs.contains(&blob))
            .count() as u64
    }

    fn parents(&self, u: &Universe, repo: usize, manifest: usize) -> u64 {
        self.manifests
            .iter()
            .filter(|&&(r, p)| r == repo && u.manifests[p].children.contains(&manifest))
            .count() as u64
    }

    fn referrers(&self, u: &Universe, repo: usize, subject: &Digest) -> Vec<usize> {
        self.manifests
            .iter()
            .filter(|&&(r, m)| r == repo && u.manifests[m].subject.as_ref() == Some(subject))
            .map(|&(_, m)| m)
            .collect()
    }

    fn repo_exists(&self, repo: usize) -> bool {
        self.tags.keys().any(|&(r, _)| r == repo)
            || self.manifests.iter().any(|&(r, _)| r == repo)
            || self.links.iter().any(|&(r, _)| r == repo)
            || self.uploads.values().any(|&r| r == repo)
    }

    fn repo_names(&self) -> Vec<String> {
        let names: BTreeSet<&str> = (0..REPOS.len())
            .filter(|&r| self.repo_exists(r))
            .map(|r| REPOS[r])
            .collect();
        names.into_iter().map(str::to_owned).collect()
    }

    fn tag_names(&self, repo: usize) -> Vec<String> {
        let names: BTreeSet<&str> = self
            .tags
            .keys()
            .filter(|&&(r, _)| r == repo)
            .map(|&(_, t)| TAGS[t])
            .collect();
        names.into_iter().map(str::to_owned).collect()
    }

    fn totals(&self, u: &Universe) -> Totals {
        let unreferenced: Vec<usize> = self
            .stored
            .iter()
            .copied()
            .filter(|&b| self.blob_refs(u, b) == 0)
            .collect();
        Totals {
            repositories: (0..REPOS.len()).filter(|&r| self.repo_exists(r)).count() as u64,
            manifests: self.manifests.len() as u64,
            tags: self.tags.len() as u64,
            blobs: self.stored.len() as u64,
            blob_bytes: self.stored.iter().map(|&b| BLOB_SIZES[b]).sum(),
            unreferenced_blobs: unreferenced.len() as u64,
            unreferenced_bytes: unreferenced.iter().map(|&b| BLOB_SIZES[b]).sum(),
            uploads: self.uploads.len() as u64,
        }
    }

    /// Why `manifest` cannot be stored in `repo` (where it is not yet):
    /// every blob it references must be stored somewhere in the registry and
    /// every child manifest in `repo`, each with the size its descriptor
    /// states.
    fn put_refusals(&self, u: &Universe, repo: usize, manifest: usize) -> Vec<Outcome> {
        let m = &u.manifests[manifest];
        let mut refusals = Vec::new();
        for &b in &m.blobs {
            if !self.stored.contains(&b) {
                refusals.push(Outcome::ManifestBlobUnknown(blob_name(b)));
            } else if m.lying_blob == Some(b) {
                refusals.push(Outcome::ManifestInvalid);
            }
        }
        for &c in &m.children {
            if !self.manifests.contains(&(repo, c)) {
                refusals.push(Outcome::ManifestChildUnknown(manifest_name(c)));
            } else if m.lying_child == Some(c) {
                refusals.push(Outcome::ManifestInvalid);
            }
        }
        refusals
    }

    /// The next operation on the way to storing `manifest` in `repo`: a
    /// missing child first (recursively), else committing a missing blob,
    /// else the put itself (which a wrong descriptor size may still refuse).
    fn towards(&self, u: &Universe, repo: usize, manifest: usize, tag: Option<usize>) -> Op {
        let m = &u.manifests[manifest];
        if !self.manifests.contains(&(repo, manifest)) {
            if let Some(&c) = m
                .children
                .iter()
                .find(|&&c| !self.manifests.contains(&(repo, c)))
            {
                return self.towards(u, repo, c, None);
            }
            if let Some(&blob) = m.blobs.iter().find(|&&b| !self.stored.contains(&b)) {
                return Op::CommitBlob {
                    repo,
                    blob,
                    upload: None,
                };
            }
        }
        Op::PutManifest {
            repo,
            manifest,
            tag,
        }
    }

    /// Resolves `step` in the state reached so far into operations, applying
    /// them to the model as it goes.
    fn resolve(&mut self, u: &Universe, step: Step, ops: &mut Vec<Op>) {
        if let Step::PutTowards {
            repo,
            manifest,
            tag,
        } = step
        {
            loop {
                let op = self.towards(u, repo, manifest, tag);
                let last = matches!(op, Op::PutManifest { manifest: m, .. } if m == manifest);
                let refused = self.apply(u, op) != [Outcome::Ok];
                ops.push(op);
                if last || refused {
                    return;
                }
            }
        }
        let op = self.choose(step);
        self.apply(u, op);
        ops.push(op);
    }

    /// The operation a step stands for in the state reached so far: the
    /// `pick`-th of its candidates, or a target from the whole universe when
    /// there is none. Used only to generate sequences; answers and state are
    /// still checked for every operation.
    fn choose(&self, step: Step) -> Op {
        let nth = |candidates: Vec<usize>, pick: usize, universe: usize| {
            if candidates.is_empty() {
                pick % universe
            } else {
                candidates[pick % candidates.len()]
            }
        };
        match step {
            Step::Any(op) => op,
            Step::PutTowards { .. } => unreachable!("resolved by `resolve`"),
            Step::DeleteStored { repo, pick } => {
                let candidates = self
                    .manifests
                    .iter()
                    .filter(|&&(r, _)| r == repo)
                    .map(|&(_, m)| m)
                    .collect();
                Op::DeleteManifest {
                    repo,
                    manifest: nth(candidates, pick, MANIFESTS),
                }
            }
            Step::DeleteExistingTag { repo, pick } => {
                let candidates = self
                    .tags
                    .keys()
                    .filter(|&&(r, _)| r == repo)
                    .map(|&(_, t)| t)
                    .collect();
                Op::DeleteTag {
                    repo,
                    tag: nth(candidates, pick, TAGS.len()),
                }
            }
            Step::UnlinkLinked { repo, pick } => {
                let candidates = self
                    .links
                    .iter()
                    .filter(|&&(r, _)| r == repo)
                    .map(|&(_, b)| b)
                    .collect();
                Op::UnlinkBlob {
                    repo,
                    blob: nth(candidates, pick, BLOBS),
                }
            }
        }
    }

    /// Applies `op` and returns every answer the rules allow (more than one
    /// when several refusals apply: which is reported first is not a rule).
    /// A refused operation changes nothing.
    fn apply(&mut self, u: &Universe, op: Op) -> Vec<Outcome> {
        match op {
            Op::CommitBlob { repo, blob, upload } => {
                if let Some(slot) = upload
                    && self.uploads.remove(&upload_id(slot)).is_none()
                {
                    return vec![Outcome::UploadUnknown];
                }
                self.stored.insert(blob);
                self.links.insert((repo, blob));
                vec![Outcome::Ok]
            }
            Op::MountBlob { repo, blob, from } => {
                if !self.stored.contains(&blob) {
                    return vec![Outcome::Mounted(None)];
                }
                if let Some(from) = from
                    && !self.links.contains(&(from, blob))
                {
                    return vec![Outcome::Mounted(None)];
                }
                self.links.insert((repo, blob));
                vec![Outcome::Mounted(Some(BLOB_SIZES[blob]))]
            }
            Op::UnlinkBlob { repo, blob } => {
                if !self.links.contains(&(repo, blob)) {
                    return vec![Outcome::BlobUnknown(blob_name(blob))];
                }
                if self.link_refs(u, repo, blob) > 0 {
                    return vec![Outcome::Conflict];
                }
                self.links.remove(&(repo, blob));
                vec![Outcome::Ok]
            }
            Op::PutManifest {
                repo,
                manifest,
                tag,
            } => {
                if !self.manifests.contains(&(repo, manifest)) {
                    let refusals = self.put_refusals(u, repo, manifest);
                    if !refusals.is_empty() {
                        return refusals;
                    }
                    // Blobs stored elsewhere in the registry are linked in.
                    for &b in &u.manifests[manifest].blobs {
                        self.links.insert((repo, b));
                    }
                    self.manifests.insert((repo, manifest));
                }
                if let Some(tag) = tag {
                    self.tags.insert((repo, tag), manifest);
                }
                vec![Outcome::Ok]
            }
            Op::DeleteTag { repo, tag } => match self.tags.remove(&(repo, tag)) {
                Some(_) => vec![Outcome::Ok],
                None => vec![Outcome::ManifestUnknown],
            },
            Op::DeleteManifest { repo, manifest } => {
                if !self.manifests.contains(&(repo, manifest)) {
                    return vec![Outcome::ManifestUnknown];
                }
                if self.parents(u, repo, manifest) > 0 {
                    return vec![Outcome::Conflict];
                }
                self.manifests.remove(&(repo, manifest));
                self.tags
                    .retain(|&(r, _), &mut m| !(r == repo && m == manifest));
                vec![Outcome::Ok]
            }
            Op::CreateUpload { repo } => {
                let id = upload_id(self.created_uploads);
                self.created_uploads += 1;
                self.uploads.insert(id, repo);
                vec![Outcome::Ok]
            }
            Op::DeleteUpload { slot } => match self.uploads.remove(&upload_id(slot)) {
                Some(_) => vec![Outcome::Ok],
                None => vec![Outcome::UploadUnknown],
            },
            Op::Reopen => vec![Outcome::Ok],
        }
    }
}

// ---- the real index ----

fn outcome<T>(u: &Universe, result: Result<T, Error>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
    match result {
        Ok(v) => ok(v),
        Err(Error::BlobUnknown(d)) => Outcome::BlobUnknown(u.name_of(&d)),
        Err(Error::UploadUnknown) => Outcome::UploadUnknown,
        Err(Error::ManifestUnknown) => Outcome::ManifestUnknown,
        Err(Error::ManifestBlobUnknown(d)) => Outcome::ManifestBlobUnknown(u.name_of(&d)),
        Err(Error::ManifestChildUnknown(d)) => Outcome::ManifestChildUnknown(u.name_of(&d)),
        Err(Error::ManifestInvalid(_)) => Outcome::ManifestInvalid,
        Err(Error::Conflict(_)) => Outcome::Conflict,
        Err(e) => Outcome::Unexpected(format!("{e:?}")),
    }
}

fn open(path: &Path) -> Result<Box<dyn Index>, String> {
    RedbIndex::open(path)
        .map(|i| Box::new(i) as Box<dyn Index>)
        .map_err(|e| format!("opening the index failed: {e:?}"))
}

/// Runs `op` against the index (`Reopen` is handled by the caller).
/// `next_upload` is the id `CreateUpload` uses.
async fn apply_real(index: &dyn Index, u: &Universe, op: Op, next_upload: &str) -> Outcome {
    let ok = |()| Outcome::Ok;
    match op {
        Op::CommitBlob { repo, blob, upload } => {
            let id = upload.map(upload_id);
            let r = index
                .commit_blob(
                    &u.repos[repo],
                    &u.blobs[blob],
                    BLOB_SIZES[blob],
                    id.as_deref(),
                )
                .await;
            outcome(u, r, ok)
        }
        Op::MountBlob { repo, blob, from } => {
            let from = from.map(|f| &u.repos[f]);
            let r = index.mount_blob(&u.repos[repo], &u.blobs[blob], from).await;
            outcome(u, r, Outcome::Mounted)
        }
        Op::UnlinkBlob { repo, blob } => {
            let r = index.unlink_blob(&u.repos[repo], &u.blobs[blob]).await;
            outcome(u, r, ok)
        }
        Op::PutManifest {
            repo,
            manifest,
            tag,
        } => {
            let m = &u.manifests[manifest];
            let tag = tag.map(|t| &u.tags[t]);
            let r = index
                .put_manifest(&u.repos[repo], &m.parsed, m.body.clone(), tag)
                .await;
            outcome(u, r, ok)
        }
        Op::DeleteTag { repo, tag } => {
            let r = index.delete_tag(&u.repos[repo], &u.tags[tag]).await;
            outcome(u, r.map(|_| ()), ok)
        }
        Op::DeleteManifest { repo, manifest } => {
            let r = index
                .delete_manifest(&u.repos[repo], &u.manifests[manifest].digest)
                .await;
            outcome(u, r, ok)
        }
        Op::CreateUpload { repo } => {
            let r = index
                .create_upload(next_upload, &u.repos[repo], Vec::new())
                .await;
            outcome(u, r, ok)
        }
        Op::DeleteUpload { slot } => {
            let r = index.delete_upload(&upload_id(slot)).await;
            outcome(u, r, ok)
        }
        Op::Reopen => unreachable!("handled by the caller"),
    }
}

// ---- comparing everything observable ----

#[derive(Default)]
struct Diffs(Vec<String>);

impl Diffs {
    fn check<T: PartialEq + fmt::Debug>(&mut self, what: impl fmt::Display, index: T, model: T) {
        if index != model {
            self.0.push(format!(
                "{what}: index says {index:?}, model says {model:?}"
            ));
        }
    }
}

fn read<T>(r: Result<T, Error>) -> Result<T, String> {
    r.map_err(|e| format!("{e:?}"))
}

/// What a page of `names` after `after` with at most `limit` items must be.
fn model_page(names: &[String], after: Option<&str>, limit: usize) -> Page {
    let rest: Vec<String> = names
        .iter()
        .filter(|n| after.is_none_or(|a| n.as_str() > a))
        .cloned()
        .collect();
    Page {
        more: rest.len() > limit,
        items: rest.into_iter().take(limit).collect(),
    }
}

/// Compares everything the `Index` trait can tell about the universe with
/// what the model derives; `Err` lists every difference.
async fn compare(index: &dyn Index, model: &Model, u: &Universe) -> Result<(), String> {
    let mut d = Diffs::default();

    for (b, &size) in BLOB_SIZES.iter().enumerate() {
        let expected = model
            .stored
            .contains(&b)
            .then(|| (size, model.blob_refs(u, b)));
        let real = read(index.blob(&u.blobs[b]).await).map(|i| i.map(|i| (i.size, i.refs)));
        d.check(
            format_args!("blob({}) (size, refs)", blob_name(b)),
            real,
            Ok(expected),
        );
    }

    for (r, repo) in u.repos.iter().enumerate() {
        d.check(
            format_args!("repository_exists({repo})"),
            read(index.repository_exists(repo).await),
            Ok(model.repo_exists(r)),
        );
        for (b, &size) in BLOB_SIZES.iter().enumerate() {
            d.check(
                format_args!("blob_in_repo({repo}, {})", blob_name(b)),
                read(index.blob_in_repo(repo, &u.blobs[b]).await),
                Ok(model.links.contains(&(r, b)).then_some(size)),
            );
        }
        for (m, man) in u.manifests.iter().enumerate() {
            let real = read(index.manifest(repo, &man.digest, true).await)
                .map(|i| i.map(|i| (i.digest, i.media_type, i.size, i.kind, i.body)));
            let expected = model.manifests.contains(&(r, m)).then(|| {
                (
                    man.digest.clone(),
                    man.media_type.to_owned(),
                    man.body.len() as u64,
                    man.kind,
                    Some(man.body.clone()),
                )
            });
            d.check(
                format_args!("manifest({repo}, {})", manifest_name(m)),
                real,
                Ok(expected),
            );
        }
        for (t, tag) in u.tags.iter().enumerate() {
            let real = read(index.resolve_tag(repo, tag).await).map(|t| t.map(|d| u.name_of(&d)));
            let expected = model.tags.get(&(r, t)).map(|&m| manifest_name(m));
            d.check(
                format_args!("resolve_tag({repo}, {tag})"),
                real,
                Ok(expected),
            );
        }

        // Tags: the whole listing, then page by page.
        let names = model.tag_names(r);
        if model.repo_exists(r) {
            d.check(
                format_args!("tags({repo})"),
                read(index.tags(repo, None, 1000).await),
                Ok(model_page(&names, None, 1000)),
            );
            let mut after: Option<String> = None;
            loop {
                let expected = model_page(&names, after.as_deref(), 2);
                let real = read(index.tags(repo, after.as_deref(), 2).await);
                d.check(
                    format_args!("tags({repo}, after {after:?}, limit 2)"),
                    real,
                    Ok(expected.clone()),
                );
                if !expected.more {
                    break;
                }
                after = expected.items.last().cloned();
            }
        } else {
            d.check(
                format_args!("tags({repo}) of a repository that must not exist"),
                read(index.tags(repo, None, 1000).await),
                Err("NameUnknown".to_owned()),
            );
        }

        // Referrers of every digest a subject may name.
        for subject in &u.subjects {
            let expected_ms = model.referrers(u, r, subject);
            let mut real = read(index.referrers(repo, subject, None).await);
            if let Ok(list) = &mut real {
                list.sort_by(|a, b| a.digest.cmp(&b.digest));
            }
            let mut expected: Vec<Referrer> = expected_ms
                .iter()
                .map(|&m| u.manifests[m].referrer(m))
                .collect();
            expected.sort_by(|a, b| a.digest.cmp(&b.digest));
            let real_names = real
                .as_ref()
                .map(|l| l.iter().map(|x| u.name_of(&x.digest)).collect::<Vec<_>>());
            let expected_names: Vec<String> =
                expected.iter().map(|x| u.name_of(&x.digest)).collect();
            let what = format!("referrers({repo}, {})", u.name_of(subject));
            if real_names != Ok(expected_names.clone()) {
                d.check(&what, real_names, Ok(expected_names));
            } else {
                d.check(&what, real, Ok(expected.clone()));
            }
            // Filtered by each artifact type present, and one absent.
            if !expected.is_empty() {
                let types: BTreeSet<Option<&str>> = expected
                    .iter()
                    .map(|x| x.artifact_type.as_deref())
                    .chain([Some("application/vnd.example.absent")])
                    .collect();
                for at in types.into_iter().flatten() {
                    let real = read(index.referrers(repo, subject, Some(at)).await).map(|l| {
                        l.iter()
                            .map(|x| u.name_of(&x.digest))
                            .collect::<BTreeSet<_>>()
                    });
                    let expected: BTreeSet<String> = expected
                        .iter()
                        .filter(|x| x.artifact_type.as_deref() == Some(at))
                        .map(|x| u.name_of(&x.digest))
                        .collect();
                    d.check(format_args!("{what} of type {at}"), real, Ok(expected));
                }
            }
        }
    }

    // Repositories: the whole listing, then one at a time.
    let names = model.repo_names();
    d.check(
        "repositories()",
        read(index.repositories(None, 1000).await),
        Ok(model_page(&names, None, 1000)),
    );
    let mut after: Option<String> = None;
    loop {
        let expected = model_page(&names, after.as_deref(), 1);
        d.check(
            format_args!("repositories(after {after:?}, limit 1)"),
            read(index.repositories(after.as_deref(), 1).await),
            Ok(expected.clone()),
        );
        if !expected.more {
            break;
        }
        after = expected.items.last().cloned();
    }

    // Upload sessions.
    let real = read(index.uploads().await).map(|l| {
        l.into_iter()
            .map(|(id, up)| (id, up.repo, up.offset))
            .collect::<BTreeSet<_>>()
    });
    let expected: BTreeSet<_> = model
        .uploads
        .iter()
        .map(|(id, &r)| (id.clone(), REPOS[r].to_owned(), 0))
        .collect();
    d.check("uploads()", real, Ok(expected));
    for slot in 0..model.created_uploads.max(UPLOAD_SLOTS) {
        let id = upload_id(slot);
        d.check(
            format_args!("upload({id}) repository"),
            read(index.upload(&id).await).map(|u| u.map(|u| u.repo)),
            Ok(model.uploads.get(&id).map(|&r| REPOS[r].to_owned())),
        );
    }

    d.check("totals()", read(index.totals().await), Ok(model.totals(u)));

    if d.0.is_empty() {
        Ok(())
    } else {
        Err(d.0.join("\n"))
    }
}

// ---- one case ----

#[derive(Clone)]
struct Case {
    images: Vec<ImageSpec>,
    indexes: Vec<IndexSpec>,
    ops: Vec<Op>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "universe:")?;
        for (b, size) in BLOB_SIZES.iter().enumerate() {
            writeln!(f, "  {}: {size} bytes", blob_name(b))?;
        }
        for (i, spec) in self.images.iter().enumerate() {
            writeln!(f, "  {}: {spec:?}", manifest_name(i))?;
        }
        for (i, spec) in self.indexes.iter().enumerate() {
            writeln!(f, "  {}: {spec:?}", manifest_name(IMAGES + i))?;
        }
        writeln!(f, "operations:")?;
        for (step, op) in self.ops.iter().enumerate() {
            writeln!(f, "  {step:>2}: {op:?}")?;
        }
        Ok(())
    }
}

/// Runs one case; on success, the answers the index gave, step by step.
/// A generated case: the universe and the steps, shown (and run) as the
/// concrete operations they resolve to.
#[derive(Clone)]
struct Plan {
    images: Vec<ImageSpec>,
    indexes: Vec<IndexSpec>,
    steps: Vec<Step>,
}

impl Plan {
    fn resolve(&self) -> Case {
        let u = Universe::build(&self.images, &self.indexes);
        let mut model = Model::default();
        let mut ops = Vec::new();
        for &step in &self.steps {
            model.resolve(&u, step, &mut ops);
        }
        Case {
            images: self.images.clone(),
            indexes: self.indexes.clone(),
            ops,
        }
    }
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.resolve().fmt(f)
    }
}

async fn run_case(case: &Case) -> Result<Vec<Outcome>, String> {
    let u = Universe::build(&case.images, &case.indexes);
    let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
    let path = dir.path().join("index.redb");
    let mut index = open(&path)?;
    let mut model = Model::default();
    let mut trace: Vec<String> = Vec::new();
    let mut answers = Vec::new();
    let report = |trace: &[String], why: String| {
        format!(
            "{why}\noperations applied (-> the index's answer):\n{}",
            trace.join("\n")
        )
    };

    compare(&*index, &model, &u)
        .await
        .map_err(|diffs| report(&trace, format!("the empty index differs:\n{diffs}")))?;

    for (step, &op) in case.ops.iter().enumerate() {
        let real = if let Op::Reopen = op {
            drop(index);
            index = open(&path)?;
            Outcome::Ok
        } else {
            let next_upload = upload_id(model.created_uploads);
            apply_real(&*index, &u, op, &next_upload).await
        };
        let allowed = model.apply(&u, op);
        trace.push(format!("  {step:>2}: {op:?} -> {real:?}"));
        answers.push(real.clone());
        if !allowed.contains(&real) {
            return Err(report(
                &trace,
                format!(
                    "step {step}, {op:?}: the index answered {real:?}, the model allows {allowed:?}"
                ),
            ));
        }
        compare(&*index, &model, &u)
            .await
            .map_err(|diffs| report(&trace, format!("after step {step}, {op:?}:\n{diffs}")))?;
    }

    drop(index);
    let index = open(&path)?;
    compare(&*index, &model, &u)
        .await
        .map_err(|diffs| report(&trace, format!("after reopening at the end:\n{diffs}")))?;
    Ok(answers)
}

fn run(case: &Case) -> Result<Vec<Outcome>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run_case(case))
}

// ---- strategies ----

fn subject_spec(earlier: usize) -> BoxedStrategy<Option<SubjectSpec>> {
    let pick = if earlier == 0 {
        Just(SubjectSpec::Dangling).boxed()
    } else {
        prop_oneof![
            3 => (0..earlier).prop_map(SubjectSpec::Earlier),
            1 => Just(SubjectSpec::Dangling),
        ]
        .boxed()
    };
    proptest::option::weighted(0.35, pick).boxed()
}

/// The image manifest at position `pos` (its subject may name an earlier one).
fn image_spec(pos: usize) -> impl Strategy<Value = ImageSpec> {
    (
        proptest::sample::subsequence((0..BLOBS).collect::<Vec<_>>(), 1..=3).prop_shuffle(),
        proptest::option::weighted(0.15, 0..BLOBS),
        subject_spec(pos),
        any::<bool>(),
        proptest::bool::weighted(0.1),
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(blobs, foreign, subject, artifact_type, lie, sha512)| ImageSpec {
                blobs,
                foreign,
                subject,
                artifact_type,
                lie,
                sha512,
            },
        )
}

/// The index at position `pos`, listing manifests before it.
fn index_spec(pos: usize) -> impl Strategy<Value = IndexSpec> {
    (
        proptest::collection::vec(0..pos, 1..=3),
        subject_spec(pos),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(children, subject, lie)| IndexSpec {
            children,
            subject,
            lie,
        })
}

/// A repository, most often the first so that manifests meet their blobs
/// and children often enough.
fn repo() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(0), 1 => Just(1), 2 => Just(2)]
}

fn commit_op() -> impl Strategy<Value = Op> {
    (
        repo(),
        0..BLOBS,
        proptest::option::weighted(0.2, 0..UPLOAD_SLOTS),
    )
        .prop_map(|(repo, blob, upload)| Op::CommitBlob { repo, blob, upload })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => commit_op(),
        2 => (repo(), 0..BLOBS, proptest::option::of(repo()))
            .prop_map(|(repo, blob, from)| Op::MountBlob { repo, blob, from }),
        1 => (repo(), 0..BLOBS).prop_map(|(repo, blob)| Op::UnlinkBlob { repo, blob }),
        3 => (repo(), 0..MANIFESTS, proptest::option::of(0..TAGS.len()))
            .prop_map(|(repo, manifest, tag)| Op::PutManifest { repo, manifest, tag }),
        1 => (repo(), 0..TAGS.len()).prop_map(|(repo, tag)| Op::DeleteTag { repo, tag }),
        1 => (repo(), 0..MANIFESTS)
            .prop_map(|(repo, manifest)| Op::DeleteManifest { repo, manifest }),
        1 => repo().prop_map(|repo| Op::CreateUpload { repo }),
        1 => (0..UPLOAD_SLOTS).prop_map(|slot| Op::DeleteUpload { slot }),
        1 => Just(Op::Reopen),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let pick = || 0..16usize;
    prop_oneof![
        15 => op().prop_map(Step::Any),
        8 => (repo(), 0..MANIFESTS, proptest::option::of(0..TAGS.len()))
            .prop_map(|(repo, manifest, tag)| Step::PutTowards { repo, manifest, tag }),
        3 => (repo(), pick()).prop_map(|(repo, pick)| Step::DeleteStored { repo, pick }),
        1 => (repo(), pick()).prop_map(|(repo, pick)| Step::DeleteExistingTag { repo, pick }),
        1 => (repo(), pick()).prop_map(|(repo, pick)| Step::UnlinkLinked { repo, pick }),
    ]
}

/// A plan: the universe, then a few blob commits (so that manifests can be
/// stored early), then up to 40 steps (a goal-directed step may resolve to
/// several operations).
fn plan() -> impl Strategy<Value = Plan> {
    let images = (
        image_spec(0),
        image_spec(1),
        image_spec(2),
        image_spec(3),
        image_spec(4),
    )
        .prop_map(|(a, b, c, d, e)| vec![a, b, c, d, e]);
    let indexes = (
        index_spec(IMAGES),
        index_spec(IMAGES + 1),
        index_spec(IMAGES + 2),
    )
        .prop_map(|(a, b, c)| vec![a, b, c]);
    let setup = proptest::collection::vec(commit_op().prop_map(Step::Any), 0..=BLOBS);
    let steps = proptest::collection::vec(step(), 1..=40);
    (images, indexes, setup, steps).prop_map(|(images, indexes, setup, steps)| Plan {
        images,
        indexes,
        steps: setup.into_iter().chain(steps).collect(),
    })
}

/// 64 cases by default (a few seconds in a debug build); `PROPTEST_CASES`
/// overrides it.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random operation sequences: the index answers and counts as the model does.
    #[test]
    fn redb_index_matches_refcount_model(plan in plan()) {
        run(&plan.resolve()).map_err(TestCaseError::fail)?;
    }
}

// ---- a fixed sequence through every refusal ----

/// One hand-written sequence that meets every refusal the model knows (and
/// each success path: linking in blobs stored elsewhere, mounting, retagging,
/// nested indexes, referrers, a second repository, reopening), so each rule
/// is exercised on every run whatever the generator picks. The answers are
/// spelled out, and the state is compared with the model after every step.
#[test]
fn every_refusal_matches_refcount_model() {
    use Outcome::*;
    let (app, web, lib) = (0, 1, 2);
    let (rc, latest, v1) = (0, 1, 2);
    let commit = |repo, blob, upload| Op::CommitBlob { repo, blob, upload };
    let mount = |repo, blob, from| Op::MountBlob { repo, blob, from };
    let unlink = |repo, blob| Op::UnlinkBlob { repo, blob };
    let put = |repo, manifest, tag| Op::PutManifest {
        repo,
        manifest,
        tag,
    };
    let delete = |repo, manifest| Op::DeleteManifest { repo, manifest };
    let untag = |repo, tag| Op::DeleteTag { repo, tag };
    let (img0, img1, img2, img3, img4) = (0, 1, 2, 3, 4);
    let (idx0, idx1, idx2) = (IMAGES, IMAGES + 1, IMAGES + 2);
    let blob = |b: usize| blob_name(b);
    let name = |m: usize| manifest_name(m);

    let image = |blobs: &[usize], subject: Option<SubjectSpec>, lie: bool| ImageSpec {
        blobs: blobs.to_vec(),
        foreign: Some(5),
        subject,
        artifact_type: subject.is_some(),
        lie,
        sha512: blobs.len() == 3,
    };
    let index = |children: &[usize], subject: Option<SubjectSpec>, lie: bool| IndexSpec {
        children: children.to_vec(),
        subject,
        lie,
    };
    let images = vec![
        image(&[0, 1], None, false),
        image(&[0, 2, 3], None, false),
        image(&[4], Some(SubjectSpec::Earlier(img0)), false),
        image(&[1], None, true),
        image(&[2], Some(SubjectSpec::Dangling), false),
    ];
    let indexes = vec![
        index(&[img0, img1, img0], None, false),
        index(&[idx0, img2], Some(SubjectSpec::Earlier(img1)), false),
        index(&[img1], None, true),
    ];
    let steps = [
        (put(app, img0, Some(latest)), ManifestBlobUnknown(blob(0))),
        (commit(app, 0, None), Ok),
        (Op::CreateUpload { repo: web }, Ok),
        (commit(web, 1, Some(0)), Ok),
        // the session closed with the commit
        (commit(web, 2, Some(0)), UploadUnknown),
        (Op::DeleteUpload { slot: 0 }, UploadUnknown),
        // b1 is stored in another repository: linked in
        (put(app, img0, Some(latest)), Ok),
        (unlink(app, 1), Conflict),
        (unlink(web, 1), Ok),
        (unlink(web, 1), BlobUnknown(blob(1))),
        (put(app, idx0, Some(v1)), ManifestChildUnknown(name(img1))),
        (mount(app, 2, Some(web)), Mounted(None)),
        (commit(web, 2, None), Ok),
        (mount(app, 2, Some(lib)), Mounted(None)),
        (mount(lib, 2, None), Mounted(Some(BLOB_SIZES[2]))),
        (commit(lib, 3, None), Ok),
        (mount(app, 3, Some(lib)), Mounted(Some(BLOB_SIZES[3]))),
        (put(app, img1, None), Ok),
        (put(app, idx0, Some(v1)), Ok),
        (delete(app, img1), Conflict),
        // descriptors stating wrong sizes
        (put(app, img3, None), ManifestInvalid),
        (put(app, idx2, None), ManifestInvalid),
        // referrers, a nested index, retagging
        (commit(app, 4, None), Ok),
        (put(app, img2, Some(rc)), Ok),
        (put(app, idx1, None), Ok),
        (put(app, img4, Some(rc)), Ok),
        (Op::Reopen, Ok),
        // the same manifests in a second repository
        (put(lib, img1, Some(latest)), Ok),
        (put(lib, img0, Some(latest)), Ok),
        (untag(web, rc), ManifestUnknown),
        (delete(web, img0), ManifestUnknown),
        // unwinding; tags go with their manifest
        (delete(app, idx0), Conflict),
        (delete(app, idx1), Ok),
        (delete(app, idx0), Ok),
        (untag(app, v1), ManifestUnknown),
        (delete(app, img1), Ok),
        (untag(app, latest), Ok),
        (delete(app, img0), Ok),
        (unlink(app, 0), Ok),
        (unlink(app, 1), Ok),
        (Op::CreateUpload { repo: lib }, Ok),
        (Op::DeleteUpload { slot: 1 }, Ok),
    ];
    let case = Case {
        images,
        indexes,
        ops: steps.iter().map(|(op, _)| *op).collect(),
    };
    let answers = match run(&case) {
        Result::Ok(answers) => answers,
        Err(e) => panic!("{e}\n{case:?}"),
    };
    for ((op, expected), answer) in steps.iter().zip(&answers) {
        assert_eq!(answer, expected, "{op:?}");
    }
}

// ---- upload ids used twice ----

/// The generator hands out a fresh id for every session, as the registry
/// does. An id used twice is outside that, but whichever answer the index
/// gives the second `create_upload` (refuse it, or move the session), its
/// counts must still describe the sessions it holds: the running totals and
/// which repositories exist must agree with `uploads()`, and once the one
/// session is deleted nothing may remain.
#[test]
fn reused_upload_id_keeps_counts_consistent() {
    async fn consistent(index: &dyn Index, repos: &[RepoName], when: &str) {
        let uploads = index.uploads().await.expect("uploads");
        let totals = index.totals().await.expect("totals");
        assert_eq!(
            totals.uploads,
            uploads.len() as u64,
            "{when}: totals.uploads against {uploads:?}"
        );
        let mut existing = 0;
        for repo in repos {
            let has_upload = uploads.iter().any(|(_, up)| up.repo == repo.as_str());
            let exists = index.repository_exists(repo).await.expect("exists");
            assert_eq!(
                exists, has_upload,
                "{when}: {repo} exists = {exists}, holds an upload = {has_upload}"
            );
            existing += u64::from(exists);
        }
        assert_eq!(totals.repositories, existing, "{when}: totals.repositories");
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let index = open(&dir.path().join("index.redb")).expect("the index opens");
        let repos: Vec<RepoName> = REPOS[..2].iter().map(|r| r.parse().unwrap()).collect();
        index
            .create_upload("reused", &repos[0], Vec::new())
            .await
            .expect("first create_upload");
        let second = index.create_upload("reused", &repos[1], Vec::new()).await;
        consistent(
            &*index,
            &repos,
            &format!("after a second create_upload ({second:?})"),
        )
        .await;
        index
            .delete_upload("reused")
            .await
            .expect("the session is there to delete");
        consistent(&*index, &repos, "after delete_upload").await;
        assert_eq!(index.totals().await.expect("totals"), Totals::default());
    });
}
