//! Content Discovery workflow: tag listing (with pagination) and the
//! referrers API.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, Url};
use serde::Deserialize;

use crate::check::{
    Problem, Recorder, Step, StepExt as _, check, expect_header_eq, expect_status, expect_success,
    fail, prerequisite, require, skip,
};
use crate::client::Response;
use crate::fixtures::{
    ANNOTATION_KEY, Blob, MEDIA_TYPE_EMPTY_JSON, MEDIA_TYPE_IMAGE_INDEX, MEDIA_TYPE_LAYER,
    Manifest, ManifestBuilder, index, unknown_digest,
};
use crate::report::{CONTENT_DISCOVERY, CaseResult};
use crate::workflows::{
    Ctx, TagList, blob_path, manifest_path, put_manifest, referrers_path, tags_path, teardown,
    upload_blob,
};

const TAG_COUNT: usize = 4;
const ARTIFACT_TYPE_A: &str = "application/vnd.example.conformance.type-a";
const ARTIFACT_TYPE_B: &str = "application/vnd.example.conformance.type-b";
const ARTIFACT_TYPE_INDEX: &str = "application/vnd.example.conformance.collection";
/// Upper bound on pages followed through `Link` headers.
const MAX_PAGES: usize = 100;

pub(crate) async fn run(ctx: &Ctx) -> Vec<CaseResult> {
    let mut d = Discovery::new(ctx);
    let mut rec = Recorder::new(CONTENT_DISCOVERY);

    rec.record(
        "Setup: upload config and layer blobs",
        d.upload_image_blobs().await,
    );
    rec.record(
        format!("Setup: push a manifest under {TAG_COUNT} tags"),
        d.push_tags().await,
    );
    rec.record(
        "Setup: upload the empty JSON blob and the first artifact blob",
        d.upload_artifact_blobs_a().await,
    );
    rec.record(
        "PUT artifact typed by its config, before its subject exists, returns 2xx with OCI-Subject",
        d.push_referrer(Referrer::ConfigA).await,
    );
    rec.record(
        "PUT artifact with artifactType, before its subject exists, returns 2xx with OCI-Subject",
        d.push_referrer(Referrer::LayerA).await,
    );
    rec.record(
        "PUT index with artifactType and subject returns 2xx with OCI-Subject",
        d.push_referrer(Referrer::Index).await,
    );
    rec.record("Setup: push the subject image", d.push_subject().await);
    rec.record(
        "Setup: upload the second artifact blob",
        d.upload_artifact_blob_b().await,
    );
    rec.record(
        "PUT artifact typed by its config, after its subject exists, returns 2xx with OCI-Subject",
        d.push_referrer(Referrer::ConfigB).await,
    );
    rec.record(
        "PUT artifact with artifactType, after its subject exists, returns 2xx with OCI-Subject",
        d.push_referrer(Referrer::LayerB).await,
    );
    rec.record(
        "PUT artifact whose subject is never pushed returns 2xx with OCI-Subject",
        d.push_referrer(Referrer::Orphan).await,
    );

    rec.record(
        "GET tags list returns 200 with the pushed tags in order",
        d.list_tags().await,
    );
    rec.record(
        "GET tags list with n returns the first n tags",
        d.list_tags_limited().await,
    );
    rec.record(
        "GET tags list with n and last returns the tags after last",
        d.list_tags_after_last().await,
    );
    rec.record(
        "GET tags list with n=0 returns no tags and no Link header",
        d.list_tags_zero().await,
    );
    rec.record(
        "Following Link headers pages through the whole tag list",
        d.follow_tag_links().await,
    );

    rec.record(
        "GET referrers of a digest without referrers returns 200 and an empty index",
        d.referrers_none().await,
    );
    rec.record(
        "GET referrers of the subject returns 200 and all its referrers",
        d.referrers_all().await,
    );
    rec.record(
        "GET referrers with an artifactType filter returns only matching referrers",
        d.referrers_filtered().await,
    );
    rec.record(
        "GET referrers of a subject that was never pushed returns 200 and its referrer",
        d.referrers_orphan().await,
    );
    rec.record(
        "GET referrers with a malformed digest returns 400",
        d.referrers_malformed().await,
    );

    let ns = ctx.namespace();
    // Indexes first, then what they list, then the images.
    let manifests: Vec<String> = [
        &d.index,
        &d.config_a,
        &d.layer_a,
        &d.config_b,
        &d.layer_b,
        &d.orphan,
        &d.subject,
        &d.tagged,
    ]
    .iter()
    .map(|m| manifest_path(ns, &m.digest))
    .collect();
    let blobs: Vec<String> = [
        &d.config,
        &d.layer,
        &d.subject_config,
        &d.artifact_blob_a,
        &d.artifact_blob_b,
        &d.empty_json,
    ]
    .iter()
    .map(|b| blob_path(ns, &b.digest))
    .collect();
    teardown(&mut rec, ctx, &manifests, &blobs).await;
    rec.finish()
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Referrer {
    /// Artifact typed by its config media type, subject = the subject image.
    ConfigA,
    /// Artifact with `artifactType` and an empty config.
    LayerA,
    /// Index artifact listing `ConfigA` and `LayerA`.
    Index,
    ConfigB,
    LayerB,
    /// Artifact whose subject is never pushed.
    Orphan,
}

struct Discovery<'a> {
    ctx: &'a Ctx,
    config: Blob,
    layer: Blob,
    tagged: Manifest,
    tags: Vec<String>,
    empty_json: Blob,
    artifact_blob_a: Blob,
    artifact_blob_b: Blob,
    subject_config: Blob,
    subject: Manifest,
    subject_tag: String,
    config_a: Manifest,
    layer_a: Manifest,
    index: Manifest,
    config_b: Manifest,
    layer_b: Manifest,
    orphan: Manifest,
    /// Subject of `orphan`; never pushed.
    missing_subject: Manifest,
    image_blobs_uploaded: bool,
    tags_pushed: bool,
    artifact_blobs_a_uploaded: bool,
    artifact_blob_b_uploaded: bool,
    subject_pushed: bool,
    pushed_referrers: BTreeSet<Referrer>,
    /// Full tag list as returned by the registry.
    all_tags: Option<Vec<String>>,
}

impl<'a> Discovery<'a> {
    fn new(ctx: &'a Ctx) -> Discovery<'a> {
        let run = &ctx.run_id;
        let config = Blob::image_config();
        let layer = Blob::layer();
        let tagged = ManifestBuilder::image(&config)
            .layer(&layer, MEDIA_TYPE_LAYER)
            .build();
        let subject_config = Blob::image_config();
        let subject = ManifestBuilder::image(&subject_config)
            .layer(&layer, MEDIA_TYPE_LAYER)
            .build();
        let missing_subject = ManifestBuilder::image(&Blob::image_config())
            .layer(&layer, MEDIA_TYPE_LAYER)
            .build();
        let empty_json = Blob::empty_json();
        let artifact_blob_a = Blob::random(48);
        let artifact_blob_b = Blob::random(48);
        let marker = |what: &str| format!("{what} {run}");

        let config_a = ManifestBuilder::with_config(&artifact_blob_a, ARTIFACT_TYPE_A)
            .layer(&empty_json, MEDIA_TYPE_EMPTY_JSON)
            .subject(&subject)
            .annotation(ANNOTATION_KEY, &marker("config-typed artifact a"))
            .build();
        let layer_a = ManifestBuilder::with_config(&empty_json, MEDIA_TYPE_EMPTY_JSON)
            .artifact_type(ARTIFACT_TYPE_A)
            .layer(&artifact_blob_a, ARTIFACT_TYPE_A)
            .subject(&subject)
            .annotation(ANNOTATION_KEY, &marker("artifactType artifact a"))
            .build();
        let index = index(
            &[&config_a, &layer_a],
            Some(ARTIFACT_TYPE_INDEX),
            Some(&subject),
            BTreeMap::from([(ANNOTATION_KEY.to_owned(), marker("index artifact"))]),
        );
        let config_b = ManifestBuilder::with_config(&artifact_blob_b, ARTIFACT_TYPE_B)
            .layer(&empty_json, MEDIA_TYPE_EMPTY_JSON)
            .subject(&subject)
            .annotation(ANNOTATION_KEY, &marker("config-typed artifact b"))
            .build();
        let layer_b = ManifestBuilder::with_config(&empty_json, MEDIA_TYPE_EMPTY_JSON)
            .artifact_type(ARTIFACT_TYPE_B)
            .layer(&artifact_blob_b, ARTIFACT_TYPE_B)
            .subject(&subject)
            .annotation(ANNOTATION_KEY, &marker("artifactType artifact b"))
            .build();
        let orphan = ManifestBuilder::with_config(&empty_json, MEDIA_TYPE_EMPTY_JSON)
            .artifact_type(ARTIFACT_TYPE_B)
            .layer(&artifact_blob_b, ARTIFACT_TYPE_B)
            .subject(&missing_subject)
            .build();

        Discovery {
            ctx,
            config,
            layer,
            tagged,
            tags: (0..TAG_COUNT).map(|i| format!("disc-{run}-{i}")).collect(),
            empty_json,
            artifact_blob_a,
            artifact_blob_b,
            subject_config,
            subject,
            subject_tag: format!("disc-{run}-subject"),
            config_a,
            layer_a,
            index,
            config_b,
            layer_b,
            orphan,
            missing_subject,
            image_blobs_uploaded: false,
            tags_pushed: false,
            artifact_blobs_a_uploaded: false,
            artifact_blob_b_uploaded: false,
            subject_pushed: false,
            pushed_referrers: BTreeSet::new(),
            all_tags: None,
        }
    }

    fn ns(&self) -> &str {
        self.ctx.namespace()
    }

    async fn upload(&self, blob: &Blob) -> Step {
        upload_blob(&self.ctx.client, self.ns(), blob)
            .await
            .map(|_| ())
            .during(&format!("uploading blob {}", blob.digest))
    }

    async fn put(&self, reference: &str, manifest: &Manifest) -> Step<Response> {
        let response = put_manifest(&self.ctx.client, self.ns(), reference, manifest).await?;
        expect_success(&response)?;
        Ok(response)
    }

    // --- setup ---

    async fn upload_image_blobs(&mut self) -> Step {
        self.upload(&self.config).await?;
        self.upload(&self.layer).await?;
        self.image_blobs_uploaded = true;
        Ok(())
    }

    async fn push_tags(&mut self) -> Step {
        require(
            self.image_blobs_uploaded,
            "Setup: upload config and layer blobs",
        )?;
        for tag in &self.tags {
            self.put(tag, &self.tagged)
                .await
                .during(&format!("tag {tag}"))?;
        }
        self.tags_pushed = true;
        Ok(())
    }

    async fn upload_artifact_blobs_a(&mut self) -> Step {
        self.upload(&self.empty_json).await?;
        self.upload(&self.artifact_blob_a).await?;
        self.artifact_blobs_a_uploaded = true;
        Ok(())
    }

    async fn upload_artifact_blob_b(&mut self) -> Step {
        self.upload(&self.artifact_blob_b).await?;
        self.artifact_blob_b_uploaded = true;
        Ok(())
    }

    async fn push_subject(&mut self) -> Step {
        require(
            self.image_blobs_uploaded,
            "Setup: upload config and layer blobs",
        )?;
        self.upload(&self.subject_config).await?;
        self.put(&self.subject_tag, &self.subject).await?;
        self.subject_pushed = true;
        Ok(())
    }

    fn referrer(&self, which: Referrer) -> &Manifest {
        match which {
            Referrer::ConfigA => &self.config_a,
            Referrer::LayerA => &self.layer_a,
            Referrer::Index => &self.index,
            Referrer::ConfigB => &self.config_b,
            Referrer::LayerB => &self.layer_b,
            Referrer::Orphan => &self.orphan,
        }
    }

    async fn push_referrer(&mut self, which: Referrer) -> Step {
        match which {
            Referrer::ConfigA | Referrer::LayerA => require(
                self.artifact_blobs_a_uploaded,
                "Setup: upload the first artifact blob",
            )?,
            Referrer::Index => {
                require(
                    self.pushed_referrers.contains(&Referrer::ConfigA)
                        && self.pushed_referrers.contains(&Referrer::LayerA),
                    "PUT of the artifacts the index lists",
                )?;
            }
            Referrer::ConfigB | Referrer::LayerB | Referrer::Orphan => require(
                self.artifact_blob_b_uploaded && self.artifact_blobs_a_uploaded,
                "Setup: upload the artifact blobs",
            )?,
        }
        let manifest = self.referrer(which);
        let subject = if which == Referrer::Orphan {
            &self.missing_subject
        } else {
            &self.subject
        };
        let response = self.put(&manifest.digest, manifest).await?;
        self.pushed_referrers.insert(which);
        expect_header_eq(&response, "OCI-Subject", &subject.digest)
    }

    // --- tags ---

    async fn fetch_tags(&self, query: &[(&str, &str)]) -> Step<(Response, Vec<String>)> {
        let mut request = self.ctx.client.get(&tags_path(self.ns()));
        for (key, value) in query {
            request = request.query(key, value);
        }
        let response = request.send().await?;
        expect_status(&response, &[200])?;
        let list = TagList::parse(&response)?;
        check!(
            list.name == self.ns(),
            "expected \"name\": \"{}\" in the tag list, got {:?}",
            self.ns(),
            list.name
        );
        Ok((response, list.into_tags()))
    }

    async fn list_tags(&mut self) -> Step {
        require(self.tags_pushed, "Setup: push a manifest under tags")?;
        let (response, tags) = self.fetch_tags(&[]).await?;
        let missing: Vec<&String> = self.tags.iter().filter(|t| !tags.contains(t)).collect();
        check!(
            missing.is_empty(),
            "expected the tag list to contain {missing:?}, got {tags:?} from {}",
            response.summary_line()
        );
        check!(
            is_sorted(&tags),
            "expected tags in lexical order, got {tags:?}"
        );
        self.all_tags = Some(tags);
        Ok(())
    }

    fn all_tags(&self) -> Step<Vec<String>> {
        prerequisite(self.all_tags.clone(), "GET tags list returns 200")
    }

    /// Page size used by the pagination cases: half the tags, at least one.
    fn page_size(all: &[String]) -> usize {
        (all.len() / 2).max(1)
    }

    async fn list_tags_limited(&mut self) -> Step {
        let all = self.all_tags()?;
        let n = Self::page_size(&all);
        let (response, tags) = self.fetch_tags(&[("n", &n.to_string())]).await?;
        check_page(&response, &tags, &all[..], n)
    }

    async fn list_tags_after_last(&mut self) -> Step {
        let all = self.all_tags()?;
        let n = Self::page_size(&all);
        let last = &all[n - 1];
        let (response, tags) = self
            .fetch_tags(&[("n", &n.to_string()), ("last", last)])
            .await?;
        check!(
            !tags.contains(last),
            "expected the tag given as last ({last}) to be excluded, got {tags:?}"
        );
        check_page(&response, &tags, &all[n..], n)
    }

    async fn list_tags_zero(&mut self) -> Step {
        require(self.tags_pushed, "Setup: push a manifest under tags")?;
        let (response, tags) = self.fetch_tags(&[("n", "0")]).await?;
        check!(tags.is_empty(), "expected no tags for n=0, got {tags:?}");
        check!(
            response.header("Link").is_none(),
            "expected no Link header for n=0, got {}",
            response.describe()
        );
        Ok(())
    }

    async fn follow_tag_links(&mut self) -> Step {
        let all = self.all_tags()?;
        let n = Self::page_size(&all);
        let (mut response, mut collected) = self.fetch_tags(&[("n", &n.to_string())]).await?;
        if all.len() > n && response.header("Link").is_none() {
            return skip(format!(
                "the registry returned a partial page without a Link header; Link headers are \
                 optional ({})",
                response.summary_line()
            ));
        }
        let mut pages = 1;
        while let Some(raw) = response.header("Link") {
            let Some(next) = next_link(&response.url, raw) else {
                fail!(
                    "expected a Link header of the form <url>; rel=\"next\", got {raw:?} from {}",
                    response.summary_line()
                );
            };
            pages += 1;
            check!(
                pages <= MAX_PAGES,
                "stopped after {MAX_PAGES} pages; the Link headers do not end"
            );
            response = self
                .ctx
                .client
                .request_url(Method::GET, next)
                .send()
                .await?;
            expect_status(&response, &[200]).during("following the Link header")?;
            collected.extend(TagList::parse(&response)?.into_tags());
        }
        check!(
            collected == all,
            "expected paging to yield the full tag list {all:?}, got {collected:?}"
        );
        Ok(())
    }

    // --- referrers ---

    async fn fetch_referrers(
        &self,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Step<(Response, ReferrersIndex)> {
        let mut request = self.ctx.client.get(&referrers_path(self.ns(), digest));
        if let Some(artifact_type) = artifact_type {
            request = request.query("artifactType", artifact_type);
        }
        let response = request.send().await?;
        expect_status(&response, &[200])?;
        check!(
            response.content_type() == Some(MEDIA_TYPE_IMAGE_INDEX),
            "expected Content-Type: {MEDIA_TYPE_IMAGE_INDEX}, got {}",
            response.describe()
        );
        let index: ReferrersIndex = serde_json::from_slice(&response.body).map_err(|e| {
            Problem::Fail(format!(
                "expected an image index, could not parse it ({e}): {}",
                response.describe()
            ))
        })?;
        check!(
            index.schema_version == Some(2),
            "expected \"schemaVersion\": 2 in the referrers index, got {:?}",
            index.schema_version
        );
        Ok((response, index))
    }

    /// Requires the listing to describe exactly `expected`.
    fn check_referrers(&self, listed: &ReferrersIndex, expected: &[Referrer]) -> Step {
        let expected: Vec<&Manifest> = expected.iter().map(|r| self.referrer(*r)).collect();
        let listed_digests: BTreeSet<&str> =
            listed.manifests.iter().map(|d| d.digest.as_str()).collect();
        let expected_digests: BTreeSet<&str> = expected.iter().map(|m| m.digest.as_str()).collect();
        check!(
            listed_digests == expected_digests && listed.manifests.len() == expected.len(),
            "expected exactly these {} referrers: {expected_digests:?}, got {} descriptors: {:?}",
            expected.len(),
            listed.manifests.len(),
            listed
                .manifests
                .iter()
                .map(|d| &d.digest)
                .collect::<Vec<_>>()
        );
        for manifest in expected {
            let Some(descriptor) = listed
                .manifests
                .iter()
                .find(|d| d.digest == manifest.digest)
            else {
                continue;
            };
            check_descriptor(descriptor, manifest)?;
        }
        Ok(())
    }

    fn require_referrers(&self, which: &[Referrer]) -> Step {
        require(self.subject_pushed, "Setup: push the subject image")?;
        let all_pushed = which.iter().all(|r| self.pushed_referrers.contains(r));
        require(all_pushed, "PUT of every referrer")
    }

    async fn referrers_none(&mut self) -> Step {
        let (_, listed) = self.fetch_referrers(&unknown_digest(), None).await?;
        self.check_referrers(&listed, &[])
    }

    async fn referrers_all(&mut self) -> Step {
        let expected = [
            Referrer::ConfigA,
            Referrer::LayerA,
            Referrer::Index,
            Referrer::ConfigB,
            Referrer::LayerB,
        ];
        self.require_referrers(&expected)?;
        let (_, listed) = self.fetch_referrers(&self.subject.digest, None).await?;
        self.check_referrers(&listed, &expected)
    }

    async fn referrers_filtered(&mut self) -> Step {
        let all = [
            Referrer::ConfigA,
            Referrer::LayerA,
            Referrer::Index,
            Referrer::ConfigB,
            Referrer::LayerB,
        ];
        self.require_referrers(&all)?;
        let (response, listed) = self
            .fetch_referrers(&self.subject.digest, Some(ARTIFACT_TYPE_A))
            .await?;
        match response.header("OCI-Filters-Applied") {
            Some(applied) => {
                check!(
                    applied.split(',').any(|f| f.trim() == "artifactType"),
                    "expected OCI-Filters-Applied: artifactType, got {}",
                    response.describe()
                );
                self.check_referrers(&listed, &[Referrer::ConfigA, Referrer::LayerA])
            }
            None => {
                self.check_referrers(&listed, &all)
                    .during("without OCI-Filters-Applied the full list must be returned")?;
                skip(
                    "the registry did not apply the artifactType filter (no OCI-Filters-Applied \
                     header; filtering is a SHOULD); the unfiltered list it returned is correct",
                )
            }
        }
    }

    async fn referrers_orphan(&mut self) -> Step {
        require(
            self.pushed_referrers.contains(&Referrer::Orphan),
            "PUT artifact whose subject is never pushed",
        )?;
        let (_, listed) = self
            .fetch_referrers(&self.missing_subject.digest, None)
            .await?;
        self.check_referrers(&listed, &[Referrer::Orphan])
    }

    async fn referrers_malformed(&mut self) -> Step {
        let path = referrers_path(self.ns(), "sha256:not-a-valid-digest");
        let response = self.ctx.client.get(&path).send().await?;
        expect_status(&response, &[400])
    }
}

/// Image index returned by the referrers API.
#[derive(Debug, Deserialize)]
struct ReferrersIndex {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(default)]
    manifests: Vec<ReferrerDescriptor>,
}

#[derive(Debug, Deserialize)]
struct ReferrerDescriptor {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    digest: String,
    size: Option<u64>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Requires a referrers descriptor to describe `manifest` faithfully.
fn check_descriptor(descriptor: &ReferrerDescriptor, manifest: &Manifest) -> Step {
    let digest = &manifest.digest;
    check!(
        descriptor.media_type.as_deref() == Some(manifest.media_type),
        "referrer {digest}: expected mediaType {}, got {:?}",
        manifest.media_type,
        descriptor.media_type
    );
    check!(
        descriptor.size == Some(manifest.size() as u64),
        "referrer {digest}: expected size {}, got {:?}",
        manifest.size(),
        descriptor.size
    );
    check!(
        descriptor.artifact_type == manifest.referrer_artifact_type,
        "referrer {digest}: expected artifactType {:?}, got {:?}",
        manifest.referrer_artifact_type,
        descriptor.artifact_type
    );
    let missing: BTreeMap<&String, &String> = manifest
        .annotations
        .iter()
        .filter(|(key, value)| descriptor.annotations.get(*key) != Some(value))
        .collect();
    check!(
        missing.is_empty(),
        "referrer {digest}: expected the manifest's annotations {:?} to be copied, \
         got {:?}",
        manifest.annotations,
        descriptor.annotations
    );
    Ok(())
}

/// Requires `tags` to be the start of `remaining` with at most `n` entries;
/// fewer than available is only allowed with a Link header.
fn check_page(response: &Response, tags: &[String], remaining: &[String], n: usize) -> Step {
    check!(
        tags.len() <= n,
        "expected at most {n} tags, got {} ({tags:?})",
        tags.len()
    );
    let full_page = remaining.len().min(n);
    check!(
        tags.len() == full_page || response.header("Link").is_some(),
        "expected {full_page} tags (fewer only with a Link header), got {tags:?} from {}",
        response.describe()
    );
    check!(
        remaining.starts_with(tags),
        "expected the page to be {:?} (the next tags of the full list), got {tags:?}",
        &remaining[..full_page]
    );
    Ok(())
}

/// Lexical order, either byte-wise or case-insensitive.
fn is_sorted(tags: &[String]) -> bool {
    let bytewise = tags.windows(2).all(|w| w[0] <= w[1]);
    let folded = tags
        .windows(2)
        .all(|w| w[0].to_lowercase() <= w[1].to_lowercase());
    bytewise || folded
}

/// Target of the `rel="next"` entry of a Link header, resolved against the
/// request URL.
fn next_link(base: &Url, header: &str) -> Option<Url> {
    header.split(',').find_map(|entry| {
        let entry = entry.trim();
        let rest = entry.strip_prefix('<')?;
        let (target, params) = rest.split_once('>')?;
        let is_next = params.split(';').any(|param| {
            let param = param.trim();
            param
                .strip_prefix("rel=")
                .map(|v| v.trim_matches('"').split_whitespace().any(|r| r == "next"))
                .unwrap_or(false)
        });
        if is_next {
            base.join(target).ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_are_parsed() {
        let base = Url::parse("http://r:5000/v2/ns/tags/list?n=1").unwrap();
        let next = next_link(&base, r#"</v2/ns/tags/list?n=1&last=a>; rel="next""#).unwrap();
        assert_eq!(next.as_str(), "http://r:5000/v2/ns/tags/list?n=1&last=a");
        let abs = next_link(&base, r#"<https://o/x?last=b>;rel=next"#).unwrap();
        assert_eq!(abs.as_str(), "https://o/x?last=b");
        let mixed = next_link(&base, r#"</p>; rel="prev", </n>; rel="next""#).unwrap();
        assert_eq!(mixed.path(), "/n");
        assert!(next_link(&base, r#"</p>; rel="prev""#).is_none());
        assert!(next_link(&base, "garbage").is_none());
    }

    #[test]
    fn sorting_accepts_both_orders() {
        let tags = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(is_sorted(&tags(&["A", "b", "C"])));
        assert!(is_sorted(&tags(&["A", "C", "b"])));
        assert!(!is_sorted(&tags(&["b", "a"])));
        assert!(is_sorted(&[]));
    }
}
