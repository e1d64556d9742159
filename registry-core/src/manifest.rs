//! Manifest parsing and validation.
//!
//! A manifest is stored exactly as received and addressed by the digest of
//! those bytes. Parsing only extracts what the index needs (the blobs and child
//! manifests it references, its subject, its referrer descriptor fields) and
//! refuses what is not a well-formed image manifest or index.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};

use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// Layers that clients fetch from `urls` instead of the registry.
const FOREIGN_LAYERS: [&str; 4] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// Every manifest media type Berth stores.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// Default size limit for a manifest: the spec asks registries to accept at
/// least 4 MiB.
pub const DEFAULT_MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// An image manifest (OCI or Docker schema 2), including artifacts.
    Image,
    /// An image index or Docker manifest list.
    Index,
}

/// A descriptor this manifest points at: a blob (config, layer) or, for an
/// index, a child manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub digest: Digest,
    pub size: u64,
}

/// What the index needs to know about a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub kind: Kind,
    /// Distinct blobs the manifest needs in its repository (config and
    /// layers; foreign layers served from `urls` are not included).
    pub blobs: Vec<Target>,
    /// Distinct child manifests (index entries).
    pub children: Vec<Target>,
    pub subject: Option<Digest>,
    /// The `artifactType` a referrers listing reports for this manifest:
    /// its own `artifactType`, else (for an image manifest) the config's
    /// media type, else none.
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// The media type a client declared: `Content-Type` without parameters.
fn declared(content_type: Option<&str>) -> Option<&str> {
    let t = content_type?.split(';').next()?.trim();
    match t {
        "" | "application/json" | "application/octet-stream" => None,
        t => Some(t),
    }
}

/// Just enough of any manifest to tell what it is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<i64>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

fn target(d: &Descriptor, what: &str) -> Result<Target> {
    let digest = d.digest().to_string().parse::<Digest>().map_err(|e| {
        Error::ManifestInvalid(format!("{what} descriptor has an unusable digest: {e}"))
    })?;
    Ok(Target {
        digest,
        size: d.size(),
    })
}

/// Descriptors in first-seen order, each digest once. A set beside the list
/// keeps this linear: a manifest at the size limit lists tens of thousands
/// of descriptors, and a scan of the list for each took seconds.
#[derive(Default)]
struct Targets {
    list: Vec<Target>,
    sizes: HashMap<Digest, u64>,
}

impl Targets {
    fn push(&mut self, t: Target) -> Result<()> {
        match self.sizes.entry(t.digest.clone()) {
            Entry::Occupied(e) if *e.get() != t.size => Err(Error::ManifestInvalid(format!(
                "{} is listed with two sizes ({} and {})",
                t.digest,
                e.get(),
                t.size
            ))),
            Entry::Occupied(_) => Ok(()),
            Entry::Vacant(e) => {
                e.insert(t.size);
                self.list.push(t);
                Ok(())
            }
        }
    }
}

fn subject(d: Option<&Descriptor>) -> Result<Option<Digest>> {
    d.map(|d| target(d, "subject").map(|t| t.digest))
        .transpose()
}

/// Parses and validates a manifest body received with `content_type`.
/// `algorithm` is the digest algorithm it is addressed by (sha256 unless the
/// client pushed it by a sha512 digest).
pub fn parse(
    bytes: &[u8],
    content_type: Option<&str>,
    algorithm: Algorithm,
) -> Result<ParsedManifest> {
    let probe: Probe = serde_json::from_slice(bytes)
        .map_err(|e| Error::ManifestInvalid(format!("not a JSON object: {e}")))?;
    let media_type = media_type_of(&probe, content_type)?;
    let digest = Digest::of(algorithm, bytes);
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => parse_image(bytes, digest, media_type),
        OCI_INDEX | DOCKER_MANIFEST_LIST => parse_index(bytes, digest, media_type),
        other => Err(Error::ManifestInvalid(format!(
            "unsupported manifest media type {other:?}; supported: {}",
            MANIFEST_MEDIA_TYPES.join(", ")
        ))),
    }
}

/// The media type a manifest is stored under: the declared one, which must
/// agree with the body's, else the body's, else what its shape says.
fn media_type_of(probe: &Probe, content_type: Option<&str>) -> Result<String> {
    let declared = declared(content_type);
    if let (Some(header), Some(body)) = (declared, probe.media_type.as_deref())
        && header != body
    {
        return Err(Error::ManifestInvalid(format!(
            "Content-Type {header:?} does not match the manifest's mediaType {body:?}"
        )));
    }
    let media_type = match declared.or(probe.media_type.as_deref()) {
        Some(t) => t.to_owned(),
        None if probe.manifests.is_some() => OCI_INDEX.to_owned(),
        None if probe.config.is_some() => OCI_MANIFEST.to_owned(),
        None => {
            return Err(Error::ManifestInvalid(
                "no media type given and the body is neither a manifest nor an index".into(),
            ));
        }
    };
    if DOCKER_SCHEMA1.contains(&media_type.as_str()) {
        return Err(Error::ManifestInvalid(
            "Docker schema 1 manifests are not supported; push schema 2 or OCI".into(),
        ));
    }
    if probe.schema_version != Some(2) {
        return Err(Error::ManifestInvalid("schemaVersion must be 2".into()));
    }
    Ok(media_type)
}

fn invalid(media_type: &str) -> impl Fn(serde_json::Error) -> Error + '_ {
    move |e| Error::ManifestInvalid(format!("{media_type}: {e}"))
}

fn annotations(a: &Option<std::collections::HashMap<String, String>>) -> BTreeMap<String, String> {
    a.clone().unwrap_or_default().into_iter().collect()
}

fn parse_image(bytes: &[u8], digest: Digest, media_type: String) -> Result<ParsedManifest> {
    let m: ImageManifest = serde_json::from_slice(bytes).map_err(invalid(&media_type))?;
    let mut blobs = Targets::default();
    blobs.push(target(m.config(), "config")?)?;
    for layer in m.layers() {
        let foreign = FOREIGN_LAYERS.contains(&layer.media_type().to_string().as_str())
            && layer.urls().as_ref().is_some_and(|u| !u.is_empty());
        if !foreign {
            blobs.push(target(layer, "layer")?)?;
        }
    }
    let artifact_type = m
        .artifact_type()
        .as_ref()
        .map(|t| t.to_string())
        .or_else(|| Some(m.config().media_type().to_string()));
    Ok(ParsedManifest {
        digest,
        size: bytes.len() as u64,
        media_type,
        kind: Kind::Image,
        blobs: blobs.list,
        children: Vec::new(),
        subject: subject(m.subject().as_ref())?,
        artifact_type,
        annotations: annotations(m.annotations()),
    })
}

fn parse_index(bytes: &[u8], digest: Digest, media_type: String) -> Result<ParsedManifest> {
    let m: ImageIndex = serde_json::from_slice(bytes).map_err(invalid(&media_type))?;
    let mut children = Targets::default();
    for child in m.manifests() {
        children.push(target(child, "manifests[]")?)?;
    }
    if children.sizes.contains_key(&digest) {
        return Err(Error::ManifestInvalid("an index cannot list itself".into()));
    }
    Ok(ParsedManifest {
        digest,
        size: bytes.len() as u64,
        media_type,
        kind: Kind::Index,
        blobs: Vec::new(),
        children: children.list,
        subject: subject(m.subject().as_ref())?,
        artifact_type: m.artifact_type().as_ref().map(|t| t.to_string()),
        annotations: annotations(m.annotations()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(media_type: Option<&str>) -> Vec<u8> {
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d('a'), "size": 10},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d('b'), "size": 20},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d('b'), "size": 20},
                {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": d('c'), "size": 30, "urls": ["https://example.com/x"]}
            ],
            "annotations": {"k": "v"}
        });
        if let Some(t) = media_type {
            v["mediaType"] = t.into();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn image_manifest_references() {
        let body = image(Some(OCI_MANIFEST));
        let m = parse(&body, Some(OCI_MANIFEST), Algorithm::Sha256).unwrap();
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(m.digest, Digest::sha256_of(&body));
        let blobs: Vec<_> = m.blobs.iter().map(|t| t.digest.to_string()).collect();
        assert_eq!(
            blobs,
            vec![d('a'), d('b')],
            "deduplicated, foreign layer skipped"
        );
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert_eq!(m.annotations.get("k").map(String::as_str), Some("v"));
    }

    #[test]
    fn media_type_rules() {
        // header and body disagree
        let body = image(Some(OCI_MANIFEST));
        assert!(matches!(
            parse(&body, Some(DOCKER_MANIFEST), Algorithm::Sha256),
            Err(Error::ManifestInvalid(_))
        ));
        // parameters on the header are ignored
        assert!(
            parse(
                &body,
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
                Algorithm::Sha256
            )
            .is_ok()
        );
        // no mediaType anywhere: inferred from the shape
        let m = parse(&image(None), None, Algorithm::Sha256).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        // header only
        let m = parse(&image(None), Some(DOCKER_MANIFEST), Algorithm::Sha256).unwrap();
        assert_eq!(m.media_type, DOCKER_MANIFEST);
        // schema 1 and unknown types
        assert!(parse(&image(None), Some(DOCKER_SCHEMA1[1]), Algorithm::Sha256).is_err());
        assert!(parse(&image(None), Some("text/plain"), Algorithm::Sha256).is_err());
    }

    #[test]
    fn index_children_and_subject() {
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": "application/example",
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": d('1'), "size": 5, "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": OCI_MANIFEST, "digest": d('2'), "size": 6}
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": d('3'), "size": 7}
        }))
        .unwrap();
        let m = parse(&body, Some(OCI_INDEX), Algorithm::Sha512).unwrap();
        assert_eq!(m.kind, Kind::Index);
        assert_eq!(m.digest.algorithm(), Algorithm::Sha512);
        assert_eq!(m.children.len(), 2);
        assert_eq!(m.subject.unwrap().to_string(), d('3'));
        assert_eq!(m.artifact_type.as_deref(), Some("application/example"));
    }

    /// A manifest at the default size limit with distinct layers: the
    /// duplicate check once compared every layer with every earlier one
    /// (about 6.10^8 comparisons here, several seconds of CPU per request).
    #[test]
    fn many_layers_parse_in_linear_time() {
        let layer = |i: usize| {
            serde_json::json!({
                "mediaType": "x",
                "digest": format!("sha256:{i:064x}"),
                "size": 1
            })
        };
        let n = 36_000;
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d('c'), "size": 2},
            "layers": (0..n).chain([7]).map(layer).collect::<Vec<_>>(),
        }))
        .unwrap();
        assert!(body.len() as u64 <= DEFAULT_MAX_MANIFEST_BYTES);
        let started = thread_cpu_time();
        let m = parse(&body, None, Algorithm::Sha256).unwrap();
        let took = thread_cpu_time() - started;
        assert_eq!(m.blobs.len(), n + 1, "the repeated layer counted once");
        // CPU time, not wall time, so a busy machine does not fail the test.
        // Unoptimized, linear parsing takes about 0.4 s; quadratic took 5 s.
        assert!(
            took < std::time::Duration::from_secs(3),
            "parsing took {took:?} of CPU"
        );
    }

    /// CPU time this thread has used.
    fn thread_cpu_time() -> std::time::Duration {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid timespec for the call to fill in.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        assert_eq!(rc, 0, "clock_gettime");
        std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    #[test]
    fn malformed_bodies() {
        for body in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"schemaVersion": 1, "config": {}}"#,
            br#"{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "nope", "size": 1}, "layers": []}"#,
            br#"{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:aa", "size": 1}, "layers": []}"#,
            br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}"#,
        ] {
            assert!(
                matches!(parse(body, None, Algorithm::Sha256), Err(Error::ManifestInvalid(_))),
                "{} must be refused",
                String::from_utf8_lossy(body)
            );
        }
    }
}
