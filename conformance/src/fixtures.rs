//! Randomly generated test content: blobs, image manifests, artifacts and
//! indexes. Every run produces fresh digests so runs never collide.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub(crate) const MEDIA_TYPE_IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const MEDIA_TYPE_IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MEDIA_TYPE_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const MEDIA_TYPE_EMPTY_JSON: &str = "application/vnd.oci.empty.v1+json";
/// Annotation set on every artifact, with a value unique to the artifact.
pub(crate) const ANNOTATION_KEY: &str = "org.example.conformance.marker";

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash.iter() {
        out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(byte & 0x0f), 16).unwrap_or('0'));
    }
    out
}

/// Random lowercase alphanumeric string, usable in tags and repository names.
pub(crate) fn random_id(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(|b| char::from(b).to_ascii_lowercase())
        .collect()
}

/// Digest of content that has never been uploaded anywhere.
pub(crate) fn unknown_digest() -> String {
    Blob::random(64).digest
}

/// Content addressed by its digest.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    pub bytes: Bytes,
    pub digest: String,
}

impl Blob {
    pub fn new(bytes: impl Into<Bytes>) -> Blob {
        let bytes = bytes.into();
        let digest = sha256_digest(&bytes);
        Blob { bytes, digest }
    }

    pub fn random(size: usize) -> Blob {
        let mut data = vec![0u8; size];
        rand::fill(&mut data[..]);
        Blob::new(data)
    }

    /// An image config with a random author, so its digest is unique.
    pub fn image_config() -> Blob {
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "author": format!("conformance-{}", random_id(16)),
            "rootfs": { "type": "layers", "diff_ids": [] },
        });
        Blob::new(serde_json::to_vec_pretty(&config).unwrap_or_default())
    }

    /// Random bytes standing in for a layer.
    pub fn layer() -> Blob {
        Blob::random(2048)
    }

    /// The two-byte `{}` blob.
    pub fn empty_json() -> Blob {
        Blob::new(&b"{}"[..])
    }

    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    pub fn descriptor(&self, media_type: &str) -> Value {
        json!({ "mediaType": media_type, "digest": self.digest, "size": self.size() })
    }
}

/// A manifest (image manifest or index) as pushed, with what a referrers
/// listing must report about it.
#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    pub bytes: Bytes,
    pub digest: String,
    pub media_type: &'static str,
    /// `artifactType` a referrers descriptor must carry for this manifest.
    pub referrer_artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    fn from_json(
        media_type: &'static str,
        document: &Value,
        referrer_artifact_type: Option<String>,
        annotations: BTreeMap<String, String>,
    ) -> Manifest {
        let bytes = Bytes::from(serde_json::to_vec_pretty(document).unwrap_or_default());
        Manifest {
            digest: sha256_digest(&bytes),
            bytes,
            media_type,
            referrer_artifact_type,
            annotations,
        }
    }

    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    pub fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size() })
    }
}

/// Builds OCI image manifests, including artifacts with `subject`.
pub(crate) struct ManifestBuilder {
    config: Value,
    config_media_type: String,
    layers: Vec<Value>,
    subject: Option<Value>,
    artifact_type: Option<String>,
    annotations: BTreeMap<String, String>,
    media_type_field: bool,
}

impl ManifestBuilder {
    /// An image manifest whose config descriptor also embeds the config in
    /// `data` and carries a field unknown to the spec; registries must
    /// accept both.
    pub fn image(config: &Blob) -> ManifestBuilder {
        let mut descriptor = config.descriptor(MEDIA_TYPE_IMAGE_CONFIG);
        descriptor["data"] = Value::String(STANDARD.encode(&config.bytes));
        descriptor["unspecifiedExtraField"] = Value::String("ignored by registries".into());
        ManifestBuilder::with_config_descriptor(descriptor, MEDIA_TYPE_IMAGE_CONFIG)
    }

    /// A manifest whose config blob has an arbitrary media type (the
    /// pre-`artifactType` way of typing an artifact).
    pub fn with_config(config: &Blob, config_media_type: &str) -> ManifestBuilder {
        ManifestBuilder::with_config_descriptor(
            config.descriptor(config_media_type),
            config_media_type,
        )
    }

    fn with_config_descriptor(config: Value, config_media_type: &str) -> ManifestBuilder {
        ManifestBuilder {
            config,
            config_media_type: config_media_type.to_owned(),
            layers: Vec::new(),
            subject: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
            media_type_field: true,
        }
    }

    pub fn layer(mut self, blob: &Blob, media_type: &str) -> Self {
        self.layers.push(blob.descriptor(media_type));
        self
    }

    pub fn subject(mut self, subject: &Manifest) -> Self {
        self.subject = Some(subject.descriptor());
        self
    }

    pub fn artifact_type(mut self, artifact_type: &str) -> Self {
        self.artifact_type = Some(artifact_type.to_owned());
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Leaves out the (optional) top-level `mediaType` field.
    pub fn without_media_type_field(mut self) -> Self {
        self.media_type_field = false;
        self
    }

    pub fn build(self) -> Manifest {
        let mut document = json!({
            "schemaVersion": 2,
            "config": self.config,
            "layers": self.layers,
        });
        if self.media_type_field {
            document["mediaType"] = Value::String(MEDIA_TYPE_IMAGE_MANIFEST.into());
        }
        if let Some(artifact_type) = &self.artifact_type {
            document["artifactType"] = Value::String(artifact_type.clone());
        }
        if let Some(subject) = self.subject {
            document["subject"] = subject;
        }
        if !self.annotations.is_empty() {
            document["annotations"] = json!(self.annotations);
        }
        let referrer_artifact_type = self.artifact_type.or(Some(self.config_media_type));
        Manifest::from_json(
            MEDIA_TYPE_IMAGE_MANIFEST,
            &document,
            referrer_artifact_type,
            self.annotations,
        )
    }
}

/// An image index listing `manifests`, optionally typed and with a subject.
pub(crate) fn index(
    manifests: &[&Manifest],
    artifact_type: Option<&str>,
    subject: Option<&Manifest>,
    annotations: BTreeMap<String, String>,
) -> Manifest {
    let mut document = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_IMAGE_INDEX,
        "manifests": manifests.iter().map(|m| m.descriptor()).collect::<Vec<_>>(),
    });
    if let Some(artifact_type) = artifact_type {
        document["artifactType"] = Value::String(artifact_type.to_owned());
    }
    if let Some(subject) = subject {
        document["subject"] = subject.descriptor();
    }
    if !annotations.is_empty() {
        document["annotations"] = json!(annotations);
    }
    Manifest::from_json(
        MEDIA_TYPE_IMAGE_INDEX,
        &document,
        artifact_type.map(str::to_owned),
        annotations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(
            sha256_digest(b"hello world"),
            "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        // The well-known digest of the OCI empty descriptor.
        assert_eq!(
            Blob::empty_json().digest,
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn random_content_differs() {
        assert_ne!(Blob::image_config().digest, Blob::image_config().digest);
        assert_ne!(Blob::layer().digest, Blob::layer().digest);
        let id = random_id(8);
        assert_eq!(id.len(), 8);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn image_manifest_has_expected_shape() {
        let config = Blob::image_config();
        let layer = Blob::layer();
        let manifest = ManifestBuilder::image(&config)
            .layer(&layer, MEDIA_TYPE_LAYER)
            .build();
        let parsed: Value = serde_json::from_slice(&manifest.bytes).unwrap();
        assert_eq!(parsed["schemaVersion"], 2);
        assert_eq!(parsed["mediaType"], MEDIA_TYPE_IMAGE_MANIFEST);
        assert_eq!(parsed["config"]["digest"], config.digest.as_str());
        assert!(parsed["config"]["data"].is_string());
        assert_eq!(parsed["layers"][0]["digest"], layer.digest.as_str());
        assert_eq!(manifest.digest, sha256_digest(&manifest.bytes));
        assert_eq!(
            manifest.referrer_artifact_type.as_deref(),
            Some(MEDIA_TYPE_IMAGE_CONFIG)
        );
    }

    #[test]
    fn artifacts_carry_subject_and_type() {
        let subject = ManifestBuilder::image(&Blob::image_config()).build();
        let artifact = ManifestBuilder::with_config(&Blob::empty_json(), MEDIA_TYPE_EMPTY_JSON)
            .artifact_type("application/vnd.example.a")
            .subject(&subject)
            .annotation(ANNOTATION_KEY, "x")
            .build();
        let parsed: Value = serde_json::from_slice(&artifact.bytes).unwrap();
        assert_eq!(parsed["artifactType"], "application/vnd.example.a");
        assert_eq!(parsed["subject"]["digest"], subject.digest.as_str());
        assert_eq!(parsed["annotations"][ANNOTATION_KEY], "x");
        assert_eq!(
            artifact.referrer_artifact_type.as_deref(),
            Some("application/vnd.example.a")
        );

        let idx = index(&[&artifact], None, Some(&subject), BTreeMap::new());
        let parsed: Value = serde_json::from_slice(&idx.bytes).unwrap();
        assert_eq!(parsed["manifests"][0]["digest"], artifact.digest.as_str());
        assert_eq!(idx.referrer_artifact_type, None);
        assert!(parsed.get("annotations").is_none());
    }

    #[test]
    fn media_type_field_can_be_omitted() {
        let manifest = ManifestBuilder::image(&Blob::image_config())
            .without_media_type_field()
            .build();
        let parsed: Value = serde_json::from_slice(&manifest.bytes).unwrap();
        assert!(parsed.get("mediaType").is_none());
    }
}
