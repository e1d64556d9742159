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
//! And the rules garbage collection relies on:
//!
//! * a manifest is *dangling* in a repository iff it is stored there, has no
//!   tag, no index there lists it, and it is not attached to a stored
//!   subject (it names none, or its subject is not stored there: then it is
//!   an *orphaned referrer*); `dangling_manifests` lists exactly those, in
//!   (repository, digest) order, a page at a time;
//! * `unreferenced_blobs` lists exactly the stored blobs whose reference
//!   count is zero, in digest order;
//! * `collect_manifests` takes its targets in turn and deletes each that is
//!   dangling at that moment and has been since its cutoff or earlier (one
//!   left dangling by an earlier target of the same call has been since
//!   now), and nothing else: no cascade. It reports what it deleted and, in
//!   `freed`, exactly the blobs whose reference count went from above 0 to
//!   0; a dry run reports the same and changes nothing;
//! * `remove_blobs` removes, with all their links, exactly the listed blobs
//!   still unreferenced and last uploaded or mounted at or before the
//!   cutoff, and returns them with their sizes; a blob a stored manifest
//!   references is never removed (invariant 1, also asserted on its own);
//! * `preview_delete` changes nothing; it reports the blobs that would reach
//!   0 if the tag (or the manifest, with its tags) were deleted and then,
//!   round after round, everything that became dangling because of it
//!   (children of deleted indexes, referrers of deleted subjects). Deleting
//!   by digest a manifest an index lists is a `Conflict`;
//! * `delete_repository` removes a repository's tags, manifests and links
//!   (not its upload sessions) and reports the manifests and the blobs that
//!   reached 0; `NameUnknown` for a repository that does not exist; a dry
//!   run changes nothing.
//!
//! The index's clock cannot be predicted, only bracketed: the model dates
//! each fact with the window of the operation that made it true (read
//! before the operation was sent and after it was answered). A dangling
//! manifest's `since_ms` lies in the window of the operation that last made
//! it dangling, an unreferenced blob's `since_ms` in that of the one that
//! last took its count to 0, a blob's `seen_ms` in that of its last upload
//! or mount, and a freed blob's `since_ms` in that of the operation that
//! freed it (or, for a dry run or a preview, would have). Once the index
//! has reported a value the model holds it exactly: it must not change
//! while the fact lasts, and cutoffs can be set exactly at it (taken) or
//! just before it (skipped).
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
//! `redb_index_matches_gc_model` does the same with the garbage-collection
//! operations interleaved: `collect_manifests` (targets mostly drawn from
//! what is dangling, some not, cutoffs far in the past, just before
//! `since_ms`, exactly at it or far in the future; often a dry run
//! followed by the same for real, whose reports must agree), `remove_blobs`
//! (mostly unreferenced blobs, some referenced or not stored),
//! `preview_delete` (by tag or by digest) and `delete_repository` (mostly
//! dry runs). After every operation the dangling manifests and unreferenced
//! blobs are compared too (whole, two at a time, and after every key of the
//! universe). Each case ends with a full collection done the way the
//! collector does it (collect every dangling manifest listed, then remove
//! every unreferenced blob listed, cutoffs far in the future), after which
//! every referenced blob must still be stored, none may be unreferenced,
//! and the totals must agree.
//!
//! `every_refusal_matches_refcount_model` and
//! `every_gc_rule_matches_refcount_model` run hand-written sequences
//! through every refusal and every garbage-collection rule, so each is
//! exercised whatever the generator picks;
//! `reused_upload_id_keeps_counts_consistent` covers an upload id used
//! twice, which the generator never does; and
//! `a_collection_reports_only_what_it_freed` runs a collection (and a
//! repository delete) concurrently with another client's delete, which
//! share one group commit.
//!
//! On failure the message names the step, the operation, each difference,
//! and the operations applied so far; proptest shrinks the case first and
//! prints it as the universe and the concrete operations. `PROPTEST_CASES`
//! raises the number of cases (64 by default) for a longer soak.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use registry_core::db::Db;
use registry_core::index::{Collected, Index, Page, Referrer, Totals};
use registry_core::manifest::{self, Kind, OCI_INDEX, OCI_MANIFEST, ParsedManifest};
use registry_core::{Algorithm, Digest, Error, Reference, RepoName, Tag};
use registry_core::{Clock, model};
use registry_pg::{PgBackend, PgOptions};
use serde_json::{Value, json};
use std::sync::Arc;

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

/// A garbage-collection cutoff (unix ms), stated relative to the clock
/// value it is compared with (a dangling manifest's `since_ms`, a blob's
/// `seen_ms`) and resolved to a number when the operation runs, so that
/// both sides of the `<=` are exercised: `Exact` is that value (taken),
/// `JustBefore` one millisecond earlier (skipped). Where there is no such
/// value yet, `Exact` is far in the future and `JustBefore` far in the past.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cutoff {
    Past,
    JustBefore,
    Exact,
    Future,
}

impl fmt::Debug for Cutoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cutoff::Past => "past",
            Cutoff::JustBefore => "just-before",
            Cutoff::Exact => "exact",
            Cutoff::Future => "future",
        })
    }
}

impl Cutoff {
    /// The number for a clock value known to lie in `known` (if any).
    fn resolve(self, known: Option<Window>) -> u64 {
        match (self, known) {
            (Cutoff::Past, _) | (Cutoff::JustBefore, None) => 0,
            (Cutoff::Future, _) | (Cutoff::Exact, None) => u64::MAX,
            (Cutoff::Exact, Some(w)) => w.hi,
            (Cutoff::JustBefore, Some(w)) => w.lo.saturating_sub(1),
        }
    }
}

/// What `preview_delete` is asked about.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Tag(usize),
    Manifest(usize),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Target::Tag(t) => write!(f, "tag {}", TAGS[t]),
            Target::Manifest(m) => f.write_str(&manifest_name(m)),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
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
    /// `collect_manifests`: (repository, manifest, cutoff relative to its
    /// `since_ms`) in the order given.
    CollectManifests {
        targets: Vec<(usize, usize, Cutoff)>,
        dry_run: bool,
    },
    /// `remove_blobs`, the seen cutoff relative to the first blob's `seen_ms`.
    RemoveBlobs {
        blobs: Vec<usize>,
        cutoff: Cutoff,
    },
    PreviewDelete {
        repo: usize,
        target: Target,
    },
    DeleteRepository {
        repo: usize,
        dry_run: bool,
    },
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dry = |dry_run: bool| if dry_run { ", dry run" } else { "" };
        match self {
            &Op::CommitBlob { repo, blob, upload } => {
                write!(f, "commit_blob({}, {}", REPOS[repo], blob_name(blob))?;
                if let Some(slot) = upload {
                    write!(f, ", upload {}", upload_id(slot))?;
                }
                f.write_str(")")
            }
            &Op::MountBlob { repo, blob, from } => {
                write!(f, "mount_blob({}, {}", REPOS[repo], blob_name(blob))?;
                if let Some(from) = from {
                    write!(f, ", from {}", REPOS[from])?;
                }
                f.write_str(")")
            }
            &Op::UnlinkBlob { repo, blob } => {
                write!(f, "unlink_blob({}, {})", REPOS[repo], blob_name(blob))
            }
            &Op::PutManifest {
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
            &Op::DeleteTag { repo, tag } => {
                write!(f, "delete_tag({}, {})", REPOS[repo], TAGS[tag])
            }
            &Op::DeleteManifest { repo, manifest } => {
                write!(
                    f,
                    "delete_manifest({}, {})",
                    REPOS[repo],
                    manifest_name(manifest)
                )
            }
            &Op::CreateUpload { repo } => write!(f, "create_upload({})", REPOS[repo]),
            &Op::DeleteUpload { slot } => write!(f, "delete_upload({})", upload_id(slot)),
            Op::Reopen => f.write_str("reopen"),
            Op::CollectManifests { targets, dry_run } => {
                let targets: Vec<String> = targets
                    .iter()
                    .map(|&(r, m, c)| format!("{} {} {c:?}", REPOS[r], manifest_name(m)))
                    .collect();
                write!(
                    f,
                    "collect_manifests([{}]{})",
                    targets.join(", "),
                    dry(*dry_run)
                )
            }
            Op::RemoveBlobs { blobs, cutoff } => {
                let names: Vec<String> = blobs.iter().map(|&b| blob_name(b)).collect();
                write!(f, "remove_blobs([{}], seen {cutoff:?})", names.join(" "))
            }
            &Op::PreviewDelete { repo, target } => {
                write!(f, "preview_delete({}, {target:?})", REPOS[repo])
            }
            &Op::DeleteRepository { repo, dry_run } => {
                write!(f, "delete_repository({}{})", REPOS[repo], dry(dry_run))
            }
        }
    }
}

/// How a step runs an operation that has a dry run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Real,
    Dry,
    /// The dry run, then the same for real: the two reports must agree.
    DryThenReal,
}

/// A `collect_manifests` target as generated: the `pick`-th dangling
/// manifest (see `Model::dangling_listing`), or any manifest of the
/// universe in a repository (most of them are not dangling: skipped).
#[derive(Clone, Copy, Debug)]
enum TargetPick {
    Dangling(usize),
    Any(usize, usize),
}

/// A `remove_blobs` digest as generated: the `pick`-th unreferenced blob,
/// or any blob of the universe (perhaps referenced, perhaps not stored).
#[derive(Clone, Copy, Debug)]
enum BlobPick {
    Unreferenced(usize),
    Any(usize),
}

/// What a `preview_delete` step asks about: something some repository has
/// (a manifest, a tag), or anything in a given repository.
#[derive(Clone, Copy, Debug)]
enum PreviewPick {
    Stored(usize),
    ExistingTag(usize),
    Any(usize, Target),
}

/// What the generator produces: an operation with random targets (often
/// refused), or an intention resolved against the model's state when the
/// case is built (see `Model::resolve`), so that sequences get deep (indexes
/// over stored manifests, nested indexes, conflicts, tags going with their
/// manifest, collections of what is actually dangling) instead of being
/// refused at the door. Only the choice of operations depends on the model;
/// every answer is still checked.
#[derive(Clone, Debug)]
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
    /// `collect_manifests` over dangling manifests and others.
    Collect {
        targets: Vec<(TargetPick, Cutoff)>,
        mode: Mode,
    },
    /// `collect_manifests` over every dangling manifest, in listing order,
    /// as the collector does it.
    CollectAll {
        cutoff: Cutoff,
        mode: Mode,
    },
    RemoveBlobs {
        picks: Vec<BlobPick>,
        cutoff: Cutoff,
    },
    Preview(PreviewPick),
    DeleteRepository {
        repo: usize,
        mode: Mode,
    },
}

/// What an operation answered, with digests replaced by universe names.
/// Lists whose order is not a rule are sorted.
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
    NameUnknown,
    /// `collect_manifests`, `delete_repository`: the manifests removed
    /// (repository, manifest, size) and the blobs freed (blob, size).
    Collected {
        manifests: Vec<(String, String, u64)>,
        freed: Vec<(String, u64)>,
    },
    /// `preview_delete`: the blobs freed (blob, size).
    Freed(Vec<(String, u64)>),
    /// `remove_blobs`: the blobs removed (blob, size).
    Removed(Vec<(String, u64)>),
    Unexpected(String),
}

// ---- the model ----

/// An inclusive range of unix ms a clock value must lie in. The index's
/// clock cannot be predicted, only bracketed: a value set by an operation
/// lies in that operation's window (read before it was sent, after it was
/// answered); once the index has reported it, the window shrinks to that
/// exact value, which must not change for as long as the fact it dates
/// lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    lo: u64,
    hi: u64,
}

impl Window {
    const ANY: Window = Window {
        lo: 0,
        hi: u64::MAX,
    };

    fn exact(ms: u64) -> Window {
        Window { lo: ms, hi: ms }
    }

    fn contains(self, ms: u64) -> bool {
        self.lo <= ms && ms <= self.hi
    }
}

impl Default for Window {
    fn default() -> Window {
        Window::ANY
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Only facts; every count, and what is dangling or unreferenced, is
/// derived from them when asked for. The three clock maps date facts
/// (their keys always equal the derived sets; see `Model::retime`).
#[derive(Clone, Default)]
struct Model {
    /// Blobs whose bytes are stored (only `remove_blobs` deletes them).
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
    /// Each stored blob: its last upload or mount (`seen_ms`).
    seen: BTreeMap<usize, Window>,
    /// Each unreferenced blob: since when its reference count is 0.
    unreferenced_since: BTreeMap<usize, Window>,
    /// Each dangling manifest: since when it is dangling.
    dangling_since: BTreeMap<(usize, usize), Window>,
    /// The window of the operation being applied (any time while a case
    /// is being generated).
    now: Window,
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

    fn tagged(&self, repo: usize, manifest: usize) -> bool {
        self.tags
            .iter()
            .any(|(&(r, _), &m)| r == repo && m == manifest)
    }

    /// Whether a manifest with this digest is stored in `repo`.
    fn holds(&self, u: &Universe, repo: usize, digest: &Digest) -> bool {
        self.manifests
            .iter()
            .any(|&(r, m)| r == repo && &u.manifests[m].digest == digest)
    }

    /// `Some(orphaned_referrer)` if the manifest is dangling in `repo`: it
    /// is stored there, has no tag, no index there lists it, and it is not
    /// attached to a stored subject (it has none, or its subject is not
    /// stored there: then it is an orphaned referrer).
    fn dangling_state(&self, u: &Universe, repo: usize, manifest: usize) -> Option<bool> {
        if !self.manifests.contains(&(repo, manifest))
            || self.tagged(repo, manifest)
            || self.parents(u, repo, manifest) > 0
        {
            return None;
        }
        match &u.manifests[manifest].subject {
            None => Some(false),
            Some(subject) if self.holds(u, repo, subject) => None,
            Some(_) => Some(true),
        }
    }

    /// (repository, manifest) -> orphaned_referrer, for every dangling one.
    fn dangling(&self, u: &Universe) -> BTreeMap<(usize, usize), bool> {
        self.manifests
            .iter()
            .filter_map(|&(r, m)| self.dangling_state(u, r, m).map(|o| ((r, m), o)))
            .collect()
    }

    /// The dangling manifests in the order `dangling_manifests` lists them:
    /// by repository name, then digest.
    fn dangling_listing(&self, u: &Universe) -> Vec<((usize, usize), bool)> {
        let mut list: Vec<_> = self.dangling(u).into_iter().collect();
        list.sort_by_key(|&((r, m), _)| (REPOS[r], u.manifests[m].digest.to_string()));
        list
    }

    /// Stored blobs whose reference count is zero.
    fn unreferenced(&self, u: &Universe) -> BTreeSet<usize> {
        self.stored
            .iter()
            .copied()
            .filter(|&b| self.blob_refs(u, b) == 0)
            .collect()
    }

    /// Blobs some stored manifest references.
    fn referenced(&self, u: &Universe) -> BTreeSet<usize> {
        (0..BLOBS).filter(|&b| self.blob_refs(u, b) > 0).collect()
    }

    /// The unreferenced blobs in the order `unreferenced_blobs` lists them.
    fn unreferenced_listing(&self, u: &Universe) -> Vec<usize> {
        let mut list: Vec<usize> = self.unreferenced(u).into_iter().collect();
        list.sort_by_key(|&b| u.blobs[b].to_string());
        list
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
        let unreferenced = self.unreferenced(u);
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
    fn resolve(&mut self, u: &Universe, step: &Step, ops: &mut Vec<Op>) {
        if let &Step::PutTowards {
            repo,
            manifest,
            tag,
        } = step
        {
            loop {
                let op = self.towards(u, repo, manifest, tag);
                let last = matches!(op, Op::PutManifest { manifest: m, .. } if m == manifest);
                let refused = self.apply(u, &op) != [Outcome::Ok];
                ops.push(op);
                if last || refused {
                    return;
                }
            }
        }
        for op in self.choose(u, step) {
            self.apply(u, &op);
            ops.push(op);
        }
    }

    /// The operations a step stands for in the state reached so far: the
    /// `pick`-th of its candidates, or a target from the whole universe when
    /// there is none. Used only to generate sequences; answers and state are
    /// still checked for every operation.
    fn choose(&self, u: &Universe, step: &Step) -> Vec<Op> {
        fn nth(candidates: Vec<usize>, pick: usize, universe: usize) -> usize {
            if candidates.is_empty() {
                pick % universe
            } else {
                candidates[pick % candidates.len()]
            }
        }
        let stored_in = |repo: usize| -> Vec<usize> {
            self.manifests
                .iter()
                .filter(|&&(r, _)| r == repo)
                .map(|&(_, m)| m)
                .collect()
        };
        let tags_of = |repo: usize| -> Vec<usize> {
            self.tags
                .keys()
                .filter(|&&(r, _)| r == repo)
                .map(|&(_, t)| t)
                .collect()
        };
        let modes = |mode: Mode, op: &dyn Fn(bool) -> Op| match mode {
            Mode::Real => vec![op(false)],
            Mode::Dry => vec![op(true)],
            Mode::DryThenReal => vec![op(true), op(false)],
        };
        match step {
            Step::Any(op) => vec![op.clone()],
            Step::PutTowards { .. } => unreachable!("resolved by `resolve`"),
            &Step::DeleteStored { repo, pick } => vec![Op::DeleteManifest {
                repo,
                manifest: nth(stored_in(repo), pick, MANIFESTS),
            }],
            &Step::DeleteExistingTag { repo, pick } => vec![Op::DeleteTag {
                repo,
                tag: nth(tags_of(repo), pick, TAGS.len()),
            }],
            &Step::UnlinkLinked { repo, pick } => {
                let candidates = self
                    .links
                    .iter()
                    .filter(|&&(r, _)| r == repo)
                    .map(|&(_, b)| b)
                    .collect();
                vec![Op::UnlinkBlob {
                    repo,
                    blob: nth(candidates, pick, BLOBS),
                }]
            }
            Step::Collect { targets, mode } => {
                let listing = self.dangling_listing(u);
                let targets: Vec<(usize, usize, Cutoff)> = targets
                    .iter()
                    .map(|&(pick, cutoff)| match pick {
                        TargetPick::Dangling(p) if !listing.is_empty() => {
                            let ((r, m), _) = listing[p % listing.len()];
                            (r, m, cutoff)
                        }
                        TargetPick::Dangling(p) => (0, p % MANIFESTS, cutoff),
                        TargetPick::Any(r, m) => (r, m, cutoff),
                    })
                    .collect();
                modes(*mode, &|dry_run| Op::CollectManifests {
                    targets: targets.clone(),
                    dry_run,
                })
            }
            &Step::CollectAll { cutoff, mode } => {
                let targets: Vec<(usize, usize, Cutoff)> = self
                    .dangling_listing(u)
                    .into_iter()
                    .map(|((r, m), _)| (r, m, cutoff))
                    .collect();
                modes(mode, &|dry_run| Op::CollectManifests {
                    targets: targets.clone(),
                    dry_run,
                })
            }
            Step::RemoveBlobs { picks, cutoff } => {
                let unreferenced = self.unreferenced_listing(u);
                let blobs = picks
                    .iter()
                    .map(|&pick| match pick {
                        BlobPick::Unreferenced(p) => nth(unreferenced.clone(), p, BLOBS),
                        BlobPick::Any(b) => b,
                    })
                    .collect();
                vec![Op::RemoveBlobs {
                    blobs,
                    cutoff: *cutoff,
                }]
            }
            &Step::Preview(pick) => {
                let pairs = |keys: Vec<(usize, usize)>, p: usize| {
                    (!keys.is_empty()).then(|| keys[p % keys.len()])
                };
                let (repo, target) = match pick {
                    PreviewPick::Stored(p) => {
                        match pairs(self.manifests.iter().copied().collect(), p) {
                            Some((r, m)) => (r, Target::Manifest(m)),
                            None => (0, Target::Manifest(p % MANIFESTS)),
                        }
                    }
                    PreviewPick::ExistingTag(p) => {
                        match pairs(self.tags.keys().copied().collect(), p) {
                            Some((r, t)) => (r, Target::Tag(t)),
                            None => (0, Target::Tag(p % TAGS.len())),
                        }
                    }
                    PreviewPick::Any(r, t) => (r, t),
                };
                vec![Op::PreviewDelete { repo, target }]
            }
            &Step::DeleteRepository { repo, mode } => {
                modes(mode, &|dry_run| Op::DeleteRepository { repo, dry_run })
            }
        }
    }

    /// The numbers the cutoffs of `collect_manifests` targets stand for
    /// (relative to each target's `since_ms`), before the operation.
    fn manifest_cutoffs(&self, targets: &[(usize, usize, Cutoff)]) -> Vec<u64> {
        targets
            .iter()
            .map(|&(r, m, c)| c.resolve(self.dangling_since.get(&(r, m)).copied()))
            .collect()
    }

    /// The number the cutoff of `remove_blobs` stands for (relative to the
    /// first blob's `seen_ms`), before the operation.
    fn blob_cutoff(&self, blobs: &[usize], cutoff: Cutoff) -> u64 {
        cutoff.resolve(blobs.first().and_then(|b| self.seen.get(b)).copied())
    }

    /// Removes a manifest from a repository with every tag pointing at it.
    fn remove_manifest(&mut self, repo: usize, manifest: usize) {
        self.manifests.remove(&(repo, manifest));
        self.tags
            .retain(|&(r, _), &mut m| !(r == repo && m == manifest));
    }

    /// `collect_manifests` without its report: each target in turn is
    /// deleted if it is dangling at that moment and has been since its
    /// cutoff or earlier (a target left dangling by an earlier deletion of
    /// the same call has been since now). Nothing else goes: no cascade.
    fn collect(
        &mut self,
        u: &Universe,
        targets: &[(usize, usize, Cutoff)],
        cutoffs: &[u64],
    ) -> Vec<(usize, usize)> {
        let since_before = self.dangling_since.clone();
        let mut removed = Vec::new();
        for (&(r, m, _), &cutoff) in targets.iter().zip(cutoffs) {
            if self.dangling_state(u, r, m).is_none() {
                continue;
            }
            let since = since_before.get(&(r, m)).copied().unwrap_or(self.now);
            if since.hi <= cutoff {
                self.remove_manifest(r, m);
                removed.push((r, m));
            }
        }
        removed
    }

    /// Deletes a tag (the manifest stays) or a manifest by digest (with its
    /// tags; `Conflict` while an index in the repository lists it), then,
    /// round after round, every manifest of the repository that became
    /// dangling since: children of deleted indexes, referrers of deleted
    /// subjects, and what only those kept.
    fn delete_cascading(
        &mut self,
        u: &Universe,
        repo: usize,
        target: Target,
    ) -> Result<(), Outcome> {
        let before: BTreeSet<(usize, usize)> = self.dangling(u).into_keys().collect();
        match target {
            Target::Tag(t) => {
                if self.tags.remove(&(repo, t)).is_none() {
                    return Err(Outcome::ManifestUnknown);
                }
            }
            Target::Manifest(m) => {
                if !self.manifests.contains(&(repo, m)) {
                    return Err(Outcome::ManifestUnknown);
                }
                if self.parents(u, repo, m) > 0 {
                    return Err(Outcome::Conflict);
                }
                self.remove_manifest(repo, m);
            }
        }
        loop {
            let newly: Vec<(usize, usize)> = self
                .dangling(u)
                .into_keys()
                .filter(|k| !before.contains(k))
                .collect();
            if newly.is_empty() {
                return Ok(());
            }
            for (r, m) in newly {
                self.remove_manifest(r, m);
            }
        }
    }

    /// The blobs whose reference count is above 0 here and 0 in `after`.
    fn freed(&self, u: &Universe, after: &Model) -> Vec<(String, u64)> {
        let after_refs = after.referenced(u);
        self.referenced(u)
            .into_iter()
            .filter(|b| !after_refs.contains(b))
            .map(|b| (blob_name(b), BLOB_SIZES[b]))
            .collect()
    }

    /// The report of a collection that took this state to `after`.
    fn collected(&self, u: &Universe, after: &Model, removed: &[(usize, usize)]) -> Outcome {
        let mut manifests: Vec<(String, String, u64)> = removed
            .iter()
            .map(|&(r, m)| {
                (
                    REPOS[r].to_owned(),
                    manifest_name(m),
                    u.manifests[m].body.len() as u64,
                )
            })
            .collect();
        manifests.sort();
        Outcome::Collected {
            manifests,
            freed: self.freed(u, after),
        }
    }

    /// Applies `op` and returns every answer the rules allow (more than one
    /// when several refusals apply: which is reported first is not a rule).
    /// A refused operation, or a dry run, changes nothing.
    fn apply(&mut self, u: &Universe, op: &Op) -> Vec<Outcome> {
        let outcome = self.apply_facts(u, op);
        self.retime(u);
        outcome
    }

    /// After an operation: what became dangling or unreferenced during it
    /// is dated by its window, what stopped being so loses its date, what
    /// stayed so keeps its date (however its orphaned-referrer flag moved).
    fn retime(&mut self, u: &Universe) {
        let now = self.now;
        let dangling = self.dangling(u);
        self.dangling_since.retain(|k, _| dangling.contains_key(k));
        for k in dangling.into_keys() {
            self.dangling_since.entry(k).or_insert(now);
        }
        let unreferenced = self.unreferenced(u);
        self.unreferenced_since
            .retain(|b, _| unreferenced.contains(b));
        for b in unreferenced {
            self.unreferenced_since.entry(b).or_insert(now);
        }
        let stored = &self.stored;
        self.seen.retain(|b, _| stored.contains(b));
    }

    /// The exact clock values the index reported (already checked against
    /// their windows).
    fn learn(&mut self, clocks: &Clocks) {
        for (k, &ms) in &clocks.dangling_since {
            self.dangling_since.insert(*k, Window::exact(ms));
        }
        for (&b, &ms) in &clocks.unreferenced_since {
            self.unreferenced_since.insert(b, Window::exact(ms));
        }
        for (&b, &ms) in &clocks.seen {
            if self.stored.contains(&b) {
                self.seen.insert(b, Window::exact(ms));
            }
        }
    }

    fn apply_facts(&mut self, u: &Universe, op: &Op) -> Vec<Outcome> {
        match *op {
            Op::CommitBlob { repo, blob, upload } => {
                if let Some(slot) = upload
                    && self.uploads.remove(&upload_id(slot)).is_none()
                {
                    return vec![Outcome::UploadUnknown];
                }
                self.stored.insert(blob);
                self.links.insert((repo, blob));
                self.seen.insert(blob, self.now);
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
                self.seen.insert(blob, self.now);
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
                self.remove_manifest(repo, manifest);
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
            Op::CollectManifests {
                ref targets,
                dry_run,
            } => {
                let cutoffs = self.manifest_cutoffs(targets);
                let mut after = self.clone();
                let removed = after.collect(u, targets, &cutoffs);
                let report = self.collected(u, &after, &removed);
                if !dry_run {
                    *self = after;
                }
                vec![report]
            }
            Op::RemoveBlobs { ref blobs, cutoff } => {
                let cutoff = self.blob_cutoff(blobs, cutoff);
                let mut removed = Vec::new();
                for &b in blobs {
                    let old_enough = self.seen.get(&b).is_some_and(|w| w.hi <= cutoff);
                    if self.stored.contains(&b) && self.blob_refs(u, b) == 0 && old_enough {
                        self.stored.remove(&b);
                        self.links.retain(|&(_, x)| x != b);
                        removed.push((blob_name(b), BLOB_SIZES[b]));
                    }
                }
                removed.sort();
                vec![Outcome::Removed(removed)]
            }
            Op::PreviewDelete { repo, target } => {
                let mut after = self.clone();
                match after.delete_cascading(u, repo, target) {
                    Ok(()) => vec![Outcome::Freed(self.freed(u, &after))],
                    Err(refusal) => vec![refusal],
                }
            }
            Op::DeleteRepository { repo, dry_run } => {
                if !self.repo_exists(repo) {
                    return vec![Outcome::NameUnknown];
                }
                let mut after = self.clone();
                let removed: Vec<(usize, usize)> = self
                    .manifests
                    .iter()
                    .copied()
                    .filter(|&(r, _)| r == repo)
                    .collect();
                after.manifests.retain(|&(r, _)| r != repo);
                after.tags.retain(|&(r, _), _| r != repo);
                after.links.retain(|&(r, _)| r != repo);
                let report = self.collected(u, &after, &removed);
                if !dry_run {
                    *self = after;
                }
                vec![report]
            }
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
        Err(Error::NameUnknown) => Outcome::NameUnknown,
        Err(e) => Outcome::Unexpected(format!("{e:?}")),
    }
}

/// Where a case's index lives.
#[derive(Clone)]
enum Store {
    Redb(PathBuf),
    Postgres(String),
}

/// The back ends the tests run against.
#[derive(Clone, Copy)]
enum Backend<'a> {
    Redb,
    Postgres(&'a testbed::Postgres),
}

async fn open(store: &Store) -> Result<Index, String> {
    let opened = match store {
        Store::Redb(path) => Index::open_redb(path),
        Store::Postgres(url) => {
            let clock = Clock::system();
            let options = PgOptions::default();
            PgBackend::connect(url, model::TABLES, clock.clone(), options)
                .await
                .map(|b| Index::new(Db::new(Arc::new(b), clock)))
        }
    };
    opened.map_err(|e| format!("opening the index failed: {e:?}"))
}

/// A fresh, empty index on `backend` (and the directory holding it).
fn fresh(backend: Backend<'_>) -> Result<(Store, Option<tempfile::TempDir>), String> {
    match backend {
        Backend::Redb => {
            let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
            let path = dir.path().join("index.redb");
            Ok((Store::Redb(path), Some(dir)))
        }
        Backend::Postgres(pg) => {
            static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = CASE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let url = pg.create_database(&format!("model_{}_{n}", std::process::id()));
            Ok((Store::Postgres(url), None))
        }
    }
}

/// Runs `test` against the embedded index and against a PostgreSQL
/// started for it.
fn on_every_backend(test: impl Fn(Backend<'_>)) {
    test(Backend::Redb);
    let pg = testbed::Postgres::start();
    test(Backend::Postgres(&pg));
}

/// The clock values a report carried: (blob, `since_ms`, `seen_ms`) of
/// each freed blob, checked by the caller against the model's windows.
type FreedClocks = Vec<(usize, u64, u64)>;

/// A blob list as reported, with universe names, sorted.
fn blob_list(u: &Universe, list: impl IntoIterator<Item = (Digest, u64)>) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = list.into_iter().map(|(d, s)| (u.name_of(&d), s)).collect();
    out.sort();
    out
}

/// A `Collected` as an outcome (manifests, or only the freed blobs) and
/// the clock values of its freed blobs.
fn report(u: &Universe, c: Collected, with_manifests: bool) -> (Outcome, FreedClocks) {
    let clocks = c
        .freed
        .iter()
        .filter_map(|b| {
            let i = u.blobs.iter().position(|d| d == &b.digest)?;
            Some((i, b.since_ms, b.seen_ms))
        })
        .collect();
    let freed = blob_list(u, c.freed.into_iter().map(|b| (b.digest, b.size)));
    let outcome = if with_manifests {
        let mut manifests: Vec<(String, String, u64)> = c
            .manifests
            .into_iter()
            .map(|m| (m.repository.to_string(), u.name_of(&m.digest), m.size))
            .collect();
        manifests.sort();
        Outcome::Collected { manifests, freed }
    } else {
        Outcome::Freed(freed)
    };
    (outcome, clocks)
}

/// Runs `op` against the index (`Reopen` is handled by the caller).
/// `next_upload` is the id `CreateUpload` uses; the model (in the state
/// before `op`) says what numbers its cutoffs stand for.
async fn apply_real(
    index: &Index,
    u: &Universe,
    model: &Model,
    op: &Op,
    next_upload: &str,
) -> (Outcome, FreedClocks) {
    let ok = |()| Outcome::Ok;
    let plain = |o: Outcome| (o, Vec::new());
    match *op {
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
            plain(outcome(u, r, ok))
        }
        Op::MountBlob { repo, blob, from } => {
            let from = from.map(|f| &u.repos[f]);
            let r = index.mount_blob(&u.repos[repo], &u.blobs[blob], from).await;
            plain(outcome(u, r, Outcome::Mounted))
        }
        Op::UnlinkBlob { repo, blob } => {
            let r = index.unlink_blob(&u.repos[repo], &u.blobs[blob]).await;
            plain(outcome(u, r, ok))
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
            plain(outcome(u, r, ok))
        }
        Op::DeleteTag { repo, tag } => {
            let r = index.delete_tag(&u.repos[repo], &u.tags[tag]).await;
            plain(outcome(u, r.map(|_| ()), ok))
        }
        Op::DeleteManifest { repo, manifest } => {
            let r = index
                .delete_manifest(&u.repos[repo], &u.manifests[manifest].digest)
                .await;
            plain(outcome(u, r, ok))
        }
        Op::CreateUpload { repo } => {
            let r = index
                .create_upload(next_upload, &u.repos[repo], 0, Vec::new())
                .await;
            plain(outcome(u, r, ok))
        }
        Op::DeleteUpload { slot } => {
            let r = index.delete_upload(&upload_id(slot)).await;
            plain(outcome(u, r, ok))
        }
        Op::Reopen => unreachable!("handled by the caller"),
        Op::CollectManifests {
            ref targets,
            dry_run,
        } => {
            let cutoffs = model.manifest_cutoffs(targets);
            let targets: Vec<(RepoName, Digest, u64)> = targets
                .iter()
                .zip(cutoffs)
                .map(|(&(r, m, _), c)| (u.repos[r].clone(), u.manifests[m].digest.clone(), c))
                .collect();
            match index.collect_manifests(&targets, dry_run).await {
                Ok(c) => report(u, c, true),
                Err(e) => plain(outcome(u, Err::<(), _>(e), ok)),
            }
        }
        Op::RemoveBlobs { ref blobs, cutoff } => {
            let cutoff = model.blob_cutoff(blobs, cutoff);
            let digests: Vec<Digest> = blobs.iter().map(|&b| u.blobs[b].clone()).collect();
            let r = index.remove_blobs(&digests, cutoff).await;
            plain(outcome(u, r, |list| Outcome::Removed(blob_list(u, list))))
        }
        Op::PreviewDelete { repo, target } => {
            let reference = match target {
                Target::Tag(t) => Reference::Tag(u.tags[t].clone()),
                Target::Manifest(m) => Reference::Digest(u.manifests[m].digest.clone()),
            };
            match index.preview_delete(&u.repos[repo], &reference).await {
                Ok(c) => report(u, c, false),
                Err(e) => plain(outcome(u, Err::<(), _>(e), ok)),
            }
        }
        Op::DeleteRepository { repo, dry_run } => {
            match index.delete_repository(&u.repos[repo], dry_run).await {
                Ok(c) => report(u, c, true),
                Err(e) => plain(outcome(u, Err::<(), _>(e), ok)),
            }
        }
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
async fn compare(index: &Index, model: &Model, u: &Universe) -> Result<Clocks, String> {
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

    let clocks = compare_gc(index, model, u, &mut d).await;

    if d.0.is_empty() {
        Ok(clocks)
    } else {
        Err(d.0.join("\n"))
    }
}

/// The clock values the index reported, each inside its model window.
#[derive(Default)]
struct Clocks {
    dangling_since: BTreeMap<(usize, usize), u64>,
    unreferenced_since: BTreeMap<usize, u64>,
    seen: BTreeMap<usize, u64>,
}

/// A page of `list` after `after` (exclusive) with at most `limit` items.
fn page_of<K: PartialOrd + Clone, T: Clone>(
    list: &[(K, T)],
    after: Option<&K>,
    limit: usize,
) -> Vec<T> {
    list.iter()
        .filter(|(k, _)| after.is_none_or(|a| k > a))
        .take(limit)
        .map(|(_, t)| t.clone())
        .collect()
}

/// Compares the garbage-collection listings: `dangling_manifests` and
/// `unreferenced_blobs`, whole, two at a time, and after every key of the
/// universe (present or not); each clock value against its window.
async fn compare_gc(index: &Index, model: &Model, u: &Universe, d: &mut Diffs) -> Clocks {
    let mut clocks = Clocks::default();

    // (repository, digest) keys as the index orders them, with what a
    // listing shows of each: (repository, manifest, size, orphaned_referrer).
    type DanglingView = (String, String, u64, bool);
    let key = |r: usize, m: usize| (REPOS[r].to_owned(), u.manifests[m].digest.to_string());
    let expected: Vec<((String, String), DanglingView)> = model
        .dangling_listing(u)
        .into_iter()
        .map(|((r, m), orphaned)| {
            let view = (
                REPOS[r].to_owned(),
                manifest_name(m),
                u.manifests[m].body.len() as u64,
                orphaned,
            );
            (key(r, m), view)
        })
        .collect();
    let view = |list: Vec<registry_core::index::DanglingManifest>| -> Vec<DanglingView> {
        list.into_iter()
            .map(|x| {
                (
                    x.repository.to_string(),
                    u.name_of(&x.digest),
                    x.size,
                    x.orphaned_referrer,
                )
            })
            .collect()
    };
    match index.dangling_manifests(None, 1000).await {
        Ok(list) => {
            for x in &list {
                let r = REPOS.iter().position(|&r| r == x.repository.as_str());
                let m = u.manifests.iter().position(|m| m.digest == x.digest);
                let (Some(r), Some(m)) = (r, m) else { continue };
                match model.dangling_since.get(&(r, m)) {
                    Some(w) if w.contains(x.since_ms) => {
                        clocks.dangling_since.insert((r, m), x.since_ms);
                    }
                    Some(w) => d.0.push(format!(
                        "dangling_manifests(): {} {} since_ms {} is outside {w:?} (when it last became dangling)",
                        REPOS[r],
                        manifest_name(m),
                        x.since_ms
                    )),
                    None => {}
                }
            }
            d.check(
                "dangling_manifests()",
                Ok(view(list)),
                Ok::<_, String>(page_of(&expected, None, usize::MAX)),
            );
        }
        Err(e) => d.check(
            "dangling_manifests()",
            Err(format!("{e:?}")),
            Ok(page_of(&expected, None, usize::MAX)),
        ),
    }
    // Two at a time, each page after the last item of the page before.
    let mut pos = 0;
    loop {
        let want = page_of(&expected[pos..], None, 2);
        let (real, after) = match pos.checked_sub(1).map(|i| &expected[i]) {
            None => (index.dangling_manifests(None, 2).await, "None".to_owned()),
            Some(((r, m), (repo, name, ..))) => {
                let r: RepoName = r.parse().expect("a repository name");
                let m: Digest = m.parse().expect("a digest");
                let real = index.dangling_manifests(Some((&r, &m)), 2).await;
                (real, format!("({repo}, {name})"))
            }
        };
        d.check(
            format_args!("dangling_manifests(after {after}, limit 2)"),
            read(real).map(view),
            Ok(want.clone()),
        );
        if want.len() < 2 {
            break;
        }
        pos += 2;
    }
    for (r, repo) in u.repos.iter().enumerate() {
        for (m, man) in u.manifests.iter().enumerate() {
            d.check(
                format_args!(
                    "dangling_manifests(after ({repo}, {}), limit 1)",
                    manifest_name(m)
                ),
                read(index.dangling_manifests(Some((repo, &man.digest)), 1).await).map(view),
                Ok(page_of(&expected, Some(&key(r, m)), 1)),
            );
        }
    }

    // Unreferenced blobs: (blob, size) in digest order.
    let expected: Vec<(String, (String, u64))> = model
        .unreferenced_listing(u)
        .into_iter()
        .map(|b| (u.blobs[b].to_string(), (blob_name(b), BLOB_SIZES[b])))
        .collect();
    let view = |list: Vec<registry_core::index::UnreferencedBlob>| -> Vec<(String, u64)> {
        list.into_iter()
            .map(|x| (u.name_of(&x.digest), x.size))
            .collect()
    };
    match index.unreferenced_blobs(None, 1000).await {
        Ok(list) => {
            for x in &list {
                let Some(b) = u.blobs.iter().position(|d| d == &x.digest) else {
                    continue;
                };
                if let Some(w) = model.unreferenced_since.get(&b) {
                    if w.contains(x.since_ms) {
                        clocks.unreferenced_since.insert(b, x.since_ms);
                    } else {
                        d.0.push(format!(
                            "unreferenced_blobs(): {} since_ms {} is outside {w:?} (when its reference count last reached 0)",
                            blob_name(b),
                            x.since_ms
                        ));
                    }
                }
                if let Some(w) = model.seen.get(&b) {
                    if w.contains(x.seen_ms) {
                        clocks.seen.insert(b, x.seen_ms);
                    } else {
                        d.0.push(format!(
                            "unreferenced_blobs(): {} seen_ms {} is outside {w:?} (its last upload or mount)",
                            blob_name(b),
                            x.seen_ms
                        ));
                    }
                }
            }
            d.check(
                "unreferenced_blobs()",
                Ok(view(list)),
                Ok::<_, String>(page_of(&expected, None, usize::MAX)),
            );
        }
        Err(e) => d.check(
            "unreferenced_blobs()",
            Err(format!("{e:?}")),
            Ok(page_of(&expected, None, usize::MAX)),
        ),
    }
    let mut pos = 0;
    loop {
        let want = page_of(&expected[pos..], None, 2);
        let after = pos.checked_sub(1).map(|i| &expected[i]);
        let digest: Option<Digest> = after.map(|(d, _)| d.parse().expect("a digest"));
        d.check(
            format_args!(
                "unreferenced_blobs(after {:?}, limit 2)",
                after.map(|(_, (name, _))| name)
            ),
            read(index.unreferenced_blobs(digest.as_ref(), 2).await).map(view),
            Ok(want.clone()),
        );
        if want.len() < 2 {
            break;
        }
        pos += 2;
    }
    for (b, digest) in u.blobs.iter().enumerate() {
        d.check(
            format_args!("unreferenced_blobs(after {}, limit 1)", blob_name(b)),
            read(index.unreferenced_blobs(Some(digest), 1).await).map(view),
            Ok(page_of(&expected, Some(&digest.to_string()), 1)),
        );
    }
    check_views_agree_with_previews(index, d).await;
    clocks
}

/// The repository view's "what deleting this frees" figures come from a
/// read-only simulation; `preview_delete` runs the real deletion in a
/// rolled-back transaction. They must agree for every tag and manifest.
async fn check_views_agree_with_previews(index: &Index, d: &mut Diffs) {
    let bytes =
        |c: Result<Collected, Error>| c.map(|c| c.freed.iter().map(|b| b.size).sum::<u64>()).ok();
    for name in REPOS {
        let repo: RepoName = name.parse().unwrap();
        let Ok(view) = index.repository_view(&repo).await else {
            continue;
        };
        for t in &view.tags {
            let tag = Reference::Tag(t.tag.parse().unwrap());
            d.check(
                format_args!("repository_view({name}) tag {} frees", t.tag),
                Some(t.freed_if_deleted),
                bytes(index.preview_delete(&repo, &tag).await),
            );
        }
        for m in &view.manifests {
            let reference = Reference::Digest(m.digest.clone());
            let preview = bytes(index.preview_delete(&repo, &reference).await);
            d.check(
                format_args!("repository_view({name}) manifest {} frees", m.digest),
                m.freed_if_deleted,
                preview,
            );
        }
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
        for step in &self.steps {
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

/// One case in progress: the real index, the model, and what happened.
struct Runner<'u> {
    u: &'u Universe,
    store: Store,
    /// `None` only while it is being reopened.
    index: Option<Index>,
    model: Model,
    trace: Vec<String>,
    answers: Vec<Outcome>,
    /// The previous operation, its answer and the clocks its report carried.
    last: Option<(Op, Outcome, FreedClocks)>,
}

impl Runner<'_> {
    fn index(&self) -> &Index {
        self.index.as_ref().expect("the index is open")
    }

    fn fail(&self, why: String) -> String {
        format!(
            "{why}\noperations applied (-> the index's answer):\n{}",
            self.trace.join("\n")
        )
    }

    /// Runs `op` against the index and the model; their answers must agree,
    /// and then everything observable.
    async fn run(&mut self, op: &Op) -> Result<(), String> {
        let (u, step) = (self.u, self.trace.len());
        let referenced_before = self.model.referenced(u);
        let seen_before = self.model.seen.clone();
        let start = now_ms();
        let (real, freed_clocks) = if let Op::Reopen = op {
            self.reopen().await?;
            (Outcome::Ok, Vec::new())
        } else {
            let next_upload = upload_id(self.model.created_uploads);
            apply_real(self.index(), u, &self.model, op, &next_upload).await
        };
        let window = Window {
            lo: start,
            hi: now_ms(),
        };
        self.model.now = window;
        let allowed = self.model.apply(u, op);
        self.trace.push(format!("  {step:>2}: {op:?} -> {real:?}"));
        self.answers.push(real.clone());
        // Invariant 1, stated on its own (before the model has its say): a
        // blob some stored manifest references is never removed.
        if let Outcome::Removed(list) = &real {
            for (name, _) in list {
                let b = (0..BLOBS).find(|&b| &blob_name(b) == name).expect("a blob");
                if referenced_before.contains(&b) {
                    return Err(self.fail(format!(
                        "step {step}, {op:?}: invariant 1 broken: {name} was removed while a stored manifest references it"
                    )));
                }
            }
        }

        if !allowed.contains(&real) {
            return Err(self.fail(format!(
                "step {step}, {op:?}: the index answered {real:?}, the model allows {allowed:?}"
            )));
        }

        // The clocks of freed blobs: nothing referenced them from the time
        // of this operation on (a dry run tells when it would have been);
        // their last upload or mount is what the model knows of it.
        let mut problems = Vec::new();
        for &(b, since, seen) in &freed_clocks {
            if !window.contains(since) {
                problems.push(format!(
                    "freed {}: since_ms {since} is outside this operation's window {window:?} (when its reference count reached 0)",
                    blob_name(b)
                ));
            }
            match seen_before.get(&b) {
                Some(w) if w.contains(seen) => {
                    if self.model.stored.contains(&b) {
                        self.model.seen.insert(b, Window::exact(seen));
                    }
                }
                w => problems.push(format!(
                    "freed {}: seen_ms {seen} is outside {w:?} (its last upload or mount)",
                    blob_name(b)
                )),
            }
        }

        // A dry run followed by the same operation for real: same report.
        if let Some((last_op, last_answer, last_clocks)) = &self.last {
            let twin = match (last_op, op) {
                (
                    Op::CollectManifests {
                        targets: a,
                        dry_run: true,
                    },
                    Op::CollectManifests {
                        targets: b,
                        dry_run: false,
                    },
                ) => a == b,
                (
                    Op::DeleteRepository {
                        repo: a,
                        dry_run: true,
                    },
                    Op::DeleteRepository {
                        repo: b,
                        dry_run: false,
                    },
                ) => a == b,
                _ => false,
            };
            let seen = |c: &FreedClocks| c.iter().map(|&(b, _, s)| (b, s)).collect::<BTreeSet<_>>();
            if twin && (last_answer != &real || seen(last_clocks) != seen(&freed_clocks)) {
                problems.push(format!(
                    "the dry run reported {last_answer:?} (seen_ms {:?}), the real run {real:?} (seen_ms {:?})",
                    seen(last_clocks),
                    seen(&freed_clocks)
                ));
            }
        }
        if !problems.is_empty() {
            return Err(self.fail(format!("step {step}, {op:?}:\n{}", problems.join("\n"))));
        }
        self.last = Some((op.clone(), real, freed_clocks));

        self.check(&format!("after step {step}, {op:?}")).await
    }

    /// Compares everything observable with the model, which learns the
    /// exact clock values reported.
    async fn check(&mut self, when: &str) -> Result<(), String> {
        match compare(self.index(), &self.model, self.u).await {
            Ok(clocks) => {
                self.model.learn(&clocks);
                Ok(())
            }
            Err(diffs) => Err(self.fail(format!("{when}:\n{diffs}"))),
        }
    }

    /// Drops the index (its writer stops) and opens it again from its file.
    async fn reopen(&mut self) -> Result<(), String> {
        if let Some(index) = self.index.take() {
            index.close();
        }
        self.index = Some(open(&self.store).await?);
        Ok(())
    }

    /// A full collection the way the collector runs one with every policy
    /// on and no grace period: every dangling manifest listed (a page at a
    /// time) is collected with a cutoff far in the future, then every
    /// unreferenced blob listed is removed with a seen cutoff far in the
    /// future. Afterwards every blob a stored manifest references is still
    /// stored, no blob is unreferenced, and the totals agree.
    async fn collect_everything(&mut self) -> Result<(), String> {
        let (u, index) = (self.u, self.index());
        let mut targets = Vec::new();
        let mut after: Option<(RepoName, Digest)> = None;
        loop {
            let page = read(
                index
                    .dangling_manifests(after.as_ref().map(|(r, d)| (r, d)), 2)
                    .await,
            )?;
            let Some(last) = page.last() else { break };
            after = Some((last.repository.clone(), last.digest.clone()));
            for m in page {
                let r = u
                    .repos
                    .iter()
                    .position(|r| r == &m.repository)
                    .expect("a repository");
                let i = u
                    .manifests
                    .iter()
                    .position(|x| x.digest == m.digest)
                    .expect("a manifest");
                targets.push((r, i, Cutoff::Future));
            }
        }
        self.run(&Op::CollectManifests {
            targets,
            dry_run: false,
        })
        .await?;
        let index = self.index();
        let mut blobs = Vec::new();
        let mut after: Option<Digest> = None;
        loop {
            let page = read(index.unreferenced_blobs(after.as_ref(), 2).await)?;
            let Some(last) = page.last() else { break };
            after = Some(last.digest.clone());
            for b in page {
                blobs.push(u.blobs.iter().position(|d| d == &b.digest).expect("a blob"));
            }
        }
        self.run(&Op::RemoveBlobs {
            blobs,
            cutoff: Cutoff::Future,
        })
        .await?;

        let index = self.index();
        let mut problems = Vec::new();
        for b in self.model.referenced(u) {
            if read(index.blob(&u.blobs[b]).await)?.is_none() {
                problems.push(format!(
                    "{} is referenced but no longer stored",
                    blob_name(b)
                ));
            }
        }
        let left = read(index.unreferenced_blobs(None, 1000).await)?;
        if !left.is_empty() {
            problems.push(format!("unreferenced blobs remain: {left:?}"));
        }
        let totals = read(index.totals().await)?;
        if totals.unreferenced_blobs != 0 || totals.unreferenced_bytes != 0 {
            problems.push(format!("totals still count unreferenced blobs: {totals:?}"));
        }
        if totals != self.model.totals(u) {
            problems.push(format!(
                "totals {totals:?}, the model's {:?}",
                self.model.totals(u)
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(self.fail(format!("after a full collection:\n{}", problems.join("\n"))))
        }
    }
}

/// Runs one case (and, with `collect`, a full collection after it); on
/// success, the answers the index gave, step by step.
async fn run_case(
    case: &Case,
    collect: bool,
    backend: Backend<'_>,
) -> Result<Vec<Outcome>, String> {
    let u = Universe::build(&case.images, &case.indexes);
    let (store, _dir) = fresh(backend)?;
    let index = Some(open(&store).await?);
    let mut runner = Runner {
        u: &u,
        store,
        index,
        model: Model::default(),
        trace: Vec::new(),
        answers: Vec::new(),
        last: None,
    };
    runner.check("the empty index differs").await?;
    for op in &case.ops {
        runner.run(op).await?;
    }
    if collect {
        runner.collect_everything().await?;
    }
    runner.reopen().await?;
    runner.check("after reopening at the end").await?;
    Ok(runner.answers)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn run(case: &Case, collect: bool, backend: Backend<'_>) -> Result<Vec<Outcome>, String> {
    runtime().block_on(run_case(case, collect, backend))
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

fn cutoff() -> impl Strategy<Value = Cutoff> {
    prop_oneof![
        1 => Just(Cutoff::Past),
        1 => Just(Cutoff::JustBefore),
        2 => Just(Cutoff::Exact),
        3 => Just(Cutoff::Future),
    ]
}

fn target_pick() -> impl Strategy<Value = TargetPick> {
    prop_oneof![
        3 => (0..16usize).prop_map(TargetPick::Dangling),
        1 => (repo(), 0..MANIFESTS).prop_map(|(r, m)| TargetPick::Any(r, m)),
    ]
}

fn blob_pick() -> impl Strategy<Value = BlobPick> {
    prop_oneof![
        3 => (0..16usize).prop_map(BlobPick::Unreferenced),
        1 => (0..BLOBS).prop_map(BlobPick::Any),
    ]
}

fn preview_pick() -> impl Strategy<Value = PreviewPick> {
    prop_oneof![
        4 => (0..16usize).prop_map(PreviewPick::Stored),
        2 => (0..16usize).prop_map(PreviewPick::ExistingTag),
        1 => (repo(), 0..MANIFESTS).prop_map(|(r, m)| PreviewPick::Any(r, Target::Manifest(m))),
    ]
}

/// The steps of `step()` with the garbage-collection operations
/// interleaved. Deleting a repository is rare and mostly a dry run, so
/// that cases still get deep.
fn gc_step() -> impl Strategy<Value = Step> {
    let mode = || {
        prop_oneof![
            2 => Just(Mode::Real),
            1 => Just(Mode::Dry),
            2 => Just(Mode::DryThenReal),
        ]
    };
    let repository_mode = prop_oneof![
        1 => Just(Mode::Real),
        2 => Just(Mode::Dry),
        1 => Just(Mode::DryThenReal),
    ];
    prop_oneof![
        14 => step(),
        3 => (proptest::collection::vec((target_pick(), cutoff()), 1..=4), mode())
            .prop_map(|(targets, mode)| Step::Collect { targets, mode }),
        1 => (cutoff(), mode()).prop_map(|(cutoff, mode)| Step::CollectAll { cutoff, mode }),
        2 => (proptest::collection::vec(blob_pick(), 1..=3), cutoff())
            .prop_map(|(picks, cutoff)| Step::RemoveBlobs { picks, cutoff }),
        3 => preview_pick().prop_map(Step::Preview),
        1 => (0..REPOS.len(), repository_mode)
            .prop_map(|(repo, mode)| Step::DeleteRepository { repo, mode }),
    ]
}

/// A plan: the universe, then a few blob commits (so that manifests can be
/// stored early), then up to 40 steps drawn from `step` (a goal-directed
/// step may resolve to several operations).
fn plan(step: impl Strategy<Value = Step>) -> impl Strategy<Value = Plan> {
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
    let steps = proptest::collection::vec(step, 1..=40);
    (images, indexes, setup, steps).prop_map(|(images, indexes, setup, steps)| Plan {
        images,
        indexes,
        steps: setup.into_iter().chain(steps).collect(),
    })
}

/// 64 cases by default (each generated test takes about 20 s in a debug
/// build, mostly waiting for commits to reach the disk; they run in
/// parallel); `PROPTEST_CASES` overrides it.
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
    fn redb_index_matches_refcount_model(plan in plan(step())) {
        run(&plan.resolve(), false, Backend::Redb).map_err(TestCaseError::fail)?;
    }

    /// The same with the garbage-collection operations interleaved, and a
    /// full collection at the end.
    #[test]
    fn redb_index_matches_gc_model(plan in plan(gc_step())) {
        run(&plan.resolve(), true, Backend::Redb).map_err(TestCaseError::fail)?;
    }
}

/// The same random sequences against the PostgreSQL index: a quarter of
/// the cases by default (each operation is a few round trips to a server
/// instead of a call into a file); `PROPTEST_CASES` sets them exactly.
fn postgres_matches(step: impl Strategy<Value = Step> + 'static, collect: bool) {
    let pg = testbed::Postgres::start();
    let mut config = config();
    if std::env::var("PROPTEST_CASES").is_err() {
        config.cases /= 4;
    }
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let outcome = runner.run(&plan(step), |plan| {
        run(&plan.resolve(), collect, Backend::Postgres(&pg)).map_err(TestCaseError::fail)?;
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

#[test]
fn postgres_index_matches_refcount_model() {
    postgres_matches(step(), false);
}

#[test]
fn postgres_index_matches_gc_model() {
    postgres_matches(gc_step(), true);
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
        ops: steps.iter().map(|(op, _)| op.clone()).collect(),
    };
    on_every_backend(|backend| {
        let answers = match run(&case, false, backend) {
            Result::Ok(answers) => answers,
            Err(e) => panic!("{e}\n{case:?}"),
        };
        for ((op, expected), answer) in steps.iter().zip(&answers) {
            assert_eq!(answer, expected, "{op:?}");
        }
    });
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
    async fn consistent(index: &Index, repos: &[RepoName], when: &str) {
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

    on_every_backend(|backend| {
        runtime().block_on(async {
            let (store, _dir) = fresh(backend).expect("a fresh index");
            let index = open(&store).await.expect("the index opens");
            let repos: Vec<RepoName> = REPOS[..2].iter().map(|r| r.parse().unwrap()).collect();
            index
                .create_upload("reused", &repos[0], 0, Vec::new())
                .await
                .expect("first create_upload");
            let second = index
                .create_upload("reused", &repos[1], 0, Vec::new())
                .await;
            consistent(
                &index,
                &repos,
                &format!("after a second create_upload ({second:?})"),
            )
            .await;
            index
                .delete_upload("reused")
                .await
                .expect("the session is there to delete");
            consistent(&index, &repos, "after delete_upload").await;
            assert_eq!(index.totals().await.expect("totals"), Totals::default());
        })
    });
}

// ---- a fixed sequence through every garbage-collection rule ----

/// One hand-written sequence through each garbage-collection rule, so each
/// is exercised on every run whatever the generator picks: collections
/// skipping what is not dangling or too young (a cutoff just before
/// `since_ms`) and taking what is (a cutoff exactly at it), a target left
/// dangling by an earlier one of the same call, no cascade; a dry run and
/// the same for real; blob removal at the `seen_ms` boundary, never of a
/// referenced blob; previews by tag and by digest through nested indexes
/// and referrers, with their refusals; repository deletion (dry and real,
/// of a repository held only by an upload, of one that does not exist);
/// then a full collection. The answers are spelled out, and the state is
/// compared with the model after every step.
#[test]
fn every_gc_rule_matches_refcount_model() {
    use Outcome::*;
    let (app, web, lib) = (0, 1, 2);
    let (rc, latest, v1) = (0, 1, 2);
    let (img0, img1, img2, img3, img4) = (0, 1, 2, 3, 4);
    let (idx0, idx1, idx2) = (IMAGES, IMAGES + 1, IMAGES + 2);
    let image = |blobs: &[usize], subject: Option<SubjectSpec>| ImageSpec {
        blobs: blobs.to_vec(),
        foreign: None,
        subject,
        artifact_type: subject.is_some(),
        lie: false,
        sha512: false,
    };
    let index = |children: &[usize], subject: Option<SubjectSpec>| IndexSpec {
        children: children.to_vec(),
        subject,
        lie: false,
    };
    let images = vec![
        image(&[0, 1], None),
        image(&[1, 2], None),
        // a signature of img0
        image(&[3], Some(SubjectSpec::Earlier(img0))),
        // a signature of something never pushed
        image(&[4], Some(SubjectSpec::Dangling)),
        image(&[2, 5], None),
    ];
    let indexes = vec![
        index(&[img0, img1], None),
        index(&[idx0, img4], None),
        // lists img4, attached to img1
        index(&[img4], Some(SubjectSpec::Earlier(img1))),
    ];
    let u = Universe::build(&images, &indexes);

    let commit = |repo, blob| Op::CommitBlob {
        repo,
        blob,
        upload: None,
    };
    let put = |repo, manifest, tag| Op::PutManifest {
        repo,
        manifest,
        tag,
    };
    let untag = |repo, tag| Op::DeleteTag { repo, tag };
    let collect = |targets: &[(usize, usize, Cutoff)], dry_run| Op::CollectManifests {
        targets: targets.to_vec(),
        dry_run,
    };
    let remove = |blobs: &[usize], cutoff| Op::RemoveBlobs {
        blobs: blobs.to_vec(),
        cutoff,
    };
    let preview_tag = |repo, tag| Op::PreviewDelete {
        repo,
        target: Target::Tag(tag),
    };
    let preview = |repo, manifest| Op::PreviewDelete {
        repo,
        target: Target::Manifest(manifest),
    };
    let delete_repository = |repo, dry_run| Op::DeleteRepository { repo, dry_run };
    let blobs = |list: &[usize]| -> Vec<(String, u64)> {
        list.iter()
            .map(|&b| (blob_name(b), BLOB_SIZES[b]))
            .collect()
    };
    let collected = |manifests: &[(usize, usize)], freed: &[usize]| Collected {
        manifests: manifests
            .iter()
            .map(|&(r, m)| {
                (
                    REPOS[r].to_owned(),
                    manifest_name(m),
                    u.manifests[m].body.len() as u64,
                )
            })
            .collect(),
        freed: blobs(freed),
    };
    let nothing = collected(&[], &[]);
    let (past, just_before, exact, future) = (
        Cutoff::Past,
        Cutoff::JustBefore,
        Cutoff::Exact,
        Cutoff::Future,
    );

    let mut steps = vec![
        (commit(app, 0), Ok),
        (commit(app, 1), Ok),
        (commit(app, 2), Ok),
        (commit(app, 3), Ok),
        (commit(app, 4), Ok),
        (commit(app, 5), Ok),
        (put(app, img0, Some(latest)), Ok),
        // dangling
        (put(app, img1, None), Ok),
        // attached to img0: not dangling
        (put(app, img2, None), Ok),
        // an orphaned referrer: dangling
        (put(app, img3, None), Ok),
        // too young, tagged, attached, not there
        (
            collect(
                &[
                    (app, img1, past),
                    (app, img3, just_before),
                    (app, img0, future),
                    (app, img2, future),
                    (web, img1, future),
                ],
                false,
            ),
            nothing.clone(),
        ),
        // b1 is still img0's
        (
            collect(&[(app, img1, exact), (app, img3, future)], true),
            collected(&[(app, img1), (app, img3)], &[2, 4]),
        ),
        (
            collect(&[(app, img1, exact), (app, img3, future)], false),
            collected(&[(app, img1), (app, img3)], &[2, 4]),
        ),
        // b2 seen too late, b0 referenced, b4 seen later than b2
        (remove(&[2, 0, 4], just_before), Removed(vec![])),
        (remove(&[2, 0], exact), Removed(blobs(&[2]))),
        (remove(&[4, 4, 1], future), Removed(blobs(&[4]))),
        // untagged img0 goes, and its signature with it
        (preview_tag(app, latest), Freed(blobs(&[0, 1, 3]))),
        (preview(app, img2), Freed(blobs(&[3]))),
        (preview_tag(app, v1), ManifestUnknown),
        (preview(web, img0), ManifestUnknown),
        (put(app, img1, None), ManifestBlobUnknown(blob_name(2))),
        (commit(app, 2), Ok),
        (put(app, img1, None), Ok),
        (put(app, idx0, Some(v1)), Ok),
        (preview(app, img0), Conflict),
        // img0 keeps its tag, img1 goes with the index
        (preview_tag(app, v1), Freed(blobs(&[2]))),
        (untag(app, latest), Ok),
        // now img0 goes too, and its signature with it
        (preview_tag(app, v1), Freed(blobs(&[0, 1, 2, 3]))),
        (preview(app, idx0), Freed(blobs(&[0, 1, 2, 3]))),
        // a nested index
        (put(app, img4, None), Ok),
        (put(app, idx1, Some(rc)), Ok),
        (preview(app, idx0), Conflict),
        // idx0 keeps its tag; img4 goes (b2 is still img1's)
        (preview_tag(app, rc), Freed(blobs(&[5]))),
        (untag(app, v1), Ok),
        // round after round: idx1; idx0, img4; img0, img1; img2
        (preview_tag(app, rc), Freed(blobs(&[0, 1, 2, 3, 5]))),
        (preview(app, idx1), Freed(blobs(&[0, 1, 2, 3, 5]))),
        (untag(app, rc), Ok),
        // idx0, then img1, are left dangling by the deletions before them in
        // the same call and go; so is img4, but since now, after its cutoff;
        // img0 is no target (no cascade): it stays, dangling
        (
            collect(
                &[
                    (app, idx1, future),
                    (app, idx0, future),
                    (app, img1, future),
                    (app, img4, just_before),
                ],
                false,
            ),
            collected(&[(app, idx1), (app, idx0), (app, img1)], &[]),
        ),
        (
            collect(&[(app, img0, just_before), (app, img4, exact)], false),
            collected(&[(app, img4)], &[2, 5]),
        ),
        (remove(&[5], exact), Removed(blobs(&[5]))),
        // a second repository
        (
            Op::MountBlob {
                repo: web,
                blob: 0,
                from: Some(app),
            },
            Mounted(Some(BLOB_SIZES[0])),
        ),
        (put(web, img0, Some(rc)), Ok),
        (put(web, img1, None), Ok),
        (put(web, img4, None), ManifestBlobUnknown(blob_name(5))),
        (commit(web, 5), Ok),
        (put(web, img4, None), Ok),
        (put(web, idx2, Some(latest)), Ok),
        // idx2 keeps its tag: nothing else goes
        (preview(web, img1), Freed(vec![])),
        (untag(web, latest), Ok),
        // idx2 is orphaned, then img4 is listed by nothing
        (preview(web, img1), Freed(blobs(&[2, 5]))),
        (delete_repository(lib, false), NameUnknown),
        (
            delete_repository(web, true),
            collected(
                &[(web, idx2), (web, img0), (web, img1), (web, img4)],
                &[2, 5],
            ),
        ),
        (
            delete_repository(web, false),
            collected(
                &[(web, idx2), (web, img0), (web, img1), (web, img4)],
                &[2, 5],
            ),
        ),
        (delete_repository(web, true), NameUnknown),
        (Op::CreateUpload { repo: lib }, Ok),
        (delete_repository(lib, false), nothing.clone()),
        (Op::DeleteUpload { slot: 0 }, Ok),
        (Op::Reopen, Ok),
    ];
    // Sorted as outcomes are.
    for (_, outcome) in &mut steps {
        if let Collected { manifests, freed } = outcome {
            manifests.sort();
            freed.sort();
        }
    }
    let case = Case {
        images,
        indexes,
        ops: steps.iter().map(|(op, _)| op.clone()).collect(),
    };
    on_every_backend(|backend| {
        let answers = match run(&case, true, backend) {
            Result::Ok(answers) => answers,
            Err(e) => panic!("{e}\n{case:?}"),
        };
        for ((op, expected), answer) in steps.iter().zip(&answers) {
            assert_eq!(answer, expected, "{op:?}");
        }
        // The full collection: img0 (dangling since idx0 went), then every
        // unreferenced blob; img2 (now orphaned) and its b3 stay.
        assert_eq!(
            answers[steps.len()..],
            [
                collected(&[(app, img0)], &[0, 1]),
                Removed(blobs(&[0, 1, 2, 5])),
            ]
        );
    });
}

// ---- reports of concurrent writes ----

/// A collection's report names the blobs *it* left unreferenced. The index
/// runs every write queued at the same moment in one transaction (group
/// commit), so another client's `delete_manifest` may share the
/// collection's transaction; the blob that delete frees is not the
/// collection's doing and must not be in its report (nor in a repository
/// delete's). Whether two writes share a group is up to timing, so this
/// tries several times; each attempt must be right.
#[test]
fn a_collection_reports_only_what_it_freed() {
    let image = |b: usize| ImageSpec {
        blobs: vec![b],
        foreign: None,
        subject: None,
        artifact_type: false,
        lie: false,
        sha512: false,
    };
    let u = Universe::build(&[image(0), image(1)], &[]);
    on_every_backend(|backend| {
        runtime().block_on(async {
        let (store, _dir) = fresh(backend).expect("a fresh index");
        let index = open(&store).await.expect("the index opens");
        let (app, web) = (&u.repos[0], &u.repos[1]);
        let (img0, img1) = (&u.manifests[0], &u.manifests[1]);
        async fn put(index: &Index, repo: &RepoName, m: &Manifest) -> Result<(), Error> {
            index.put_manifest(repo, &m.parsed, m.body.clone(), None).await
        }
        let index = &index;
        let freed = |c: Collected| -> Vec<String> {
            c.freed.iter().map(|b| u.name_of(&b.digest)).collect()
        };
        for (digest, &size) in u.blobs.iter().zip(&BLOB_SIZES).take(2) {
            index
                .commit_blob(app, digest, size, None)
                .await
                .expect("commit_blob");
        }
        let mut wrong = Vec::new();
        const ATTEMPTS: usize = 10;
        for attempt in 0..ATTEMPTS {
            // img0 and img1 dangling in app; b0 is only img0's, b1 only img1's.
            put(index, app, img0).await.expect("put img0");
            put(index, app, img1).await.expect("put img1");
            let target = [(app.clone(), img1.digest.clone(), u64::MAX)];
            let (deleted, collected) = tokio::join!(
                index.delete_manifest(app, &img0.digest),
                index.collect_manifests(&target, false)
            );
            deleted.expect("delete_manifest");
            let report = freed(collected.expect("collect_manifests"));
            if report != ["b1"] {
                wrong.push(format!(
                    "attempt {attempt}: collect_manifests(app img1) reported freed {report:?}, only b1 is its doing"
                ));
            }

            put(index, app, img0).await.expect("put img0");
            put(index, web, img1).await.expect("put img1 in web");
            let (deleted, collected) = tokio::join!(
                index.delete_manifest(app, &img0.digest),
                index.delete_repository(web, false)
            );
            deleted.expect("delete_manifest");
            let report = freed(collected.expect("delete_repository"));
            if report != ["b1"] {
                wrong.push(format!(
                    "attempt {attempt}: delete_repository(app/web) reported freed {report:?}, only b1 is its doing"
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {} reports name a blob freed by a concurrent delete_manifest in the same group commit:\n{}",
            wrong.len(),
            2 * ATTEMPTS,
            wrong.join("\n")
        );
    })
    });
}
