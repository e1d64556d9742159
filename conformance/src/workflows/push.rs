//! Push workflow: blob uploads (streamed, monolithic, chunked), cross-repository
//! mounts and manifest uploads.

use reqwest::{Method, Url};

use crate::check::{
    Problem, Recorder, Step, StepExt as _, check, error_code_if_json, expect_body,
    expect_header_eq, expect_status, fail, header_if_present_eq, prerequisite, require, skip,
};
use crate::client::Response;
use crate::fixtures::{Blob, MEDIA_TYPE_LAYER, Manifest, ManifestBuilder, unknown_digest};
use crate::report::{CaseResult, PUSH};
use crate::workflows::{
    Ctx, ERROR_CODES, blob_path, cancel_upload, location_of, manifest_path, put_manifest, teardown,
    uploads_path,
};

const CHUNKED_BLOB_SIZE: usize = 1000;
const TAG_COUNT: usize = 4;

pub(crate) async fn run(ctx: &Ctx) -> Vec<CaseResult> {
    let mut push = Push::new(ctx);
    let mut rec = Recorder::new(PUSH);

    rec.record(
        "Streamed upload: PATCH with the whole blob returns 202",
        push.streamed_patch().await,
    );
    rec.record(
        "Streamed upload: PUT with digest returns 201 and Location",
        push.streamed_close().await,
    );

    rec.record(
        "GET unknown blob returns 404",
        push.get_unknown_blob().await,
    );
    rec.record(
        "Single POST with digest and body returns 201 (or 202 to continue with PUT)",
        push.single_post().await,
    );
    rec.record(
        "GET blob after single POST returns 200 after 201, 404 after 202",
        push.get_after_single_post().await,
    );
    rec.record(
        "POST returns 202 with an upload session Location",
        push.start_session().await,
    );
    rec.record(
        "PUT blob to the upload session with digest returns 201 and Location",
        push.monolithic_put().await,
    );
    rec.record(
        "GET blob uploaded with POST then PUT returns 200 and its content",
        push.get_config().await,
    );
    rec.record(
        "POST then PUT of a layer blob returns 201 and Location",
        push.upload_layer().await,
    );
    rec.record(
        "GET uploaded layer returns 200 and its content",
        push.get_layer().await,
    );
    rec.record(
        "PUT with a digest that does not match the content returns 400 DIGEST_INVALID",
        push.mismatched_digest().await,
    );
    rec.record(
        "PUT with a malformed digest returns 400",
        push.malformed_digest().await,
    );

    rec.record(
        "Chunked upload: out-of-order chunk returns 416",
        push.out_of_order_chunk().await,
    );
    rec.record(
        "Chunked upload: first chunk returns 202 with Range and Location",
        push.first_chunk().await,
    );
    rec.record(
        "Chunked upload: resending the first chunk returns 416",
        push.resend_first_chunk().await,
    );
    rec.record(
        "Chunked upload: GET upload status returns 204 with Range and Location",
        push.upload_status().await,
    );
    rec.record(
        "Chunked upload: second chunk returns 202 with Range and Location",
        push.second_chunk().await,
    );
    rec.record(
        "Chunked upload: PUT with digest returns 201 and Location",
        push.close_chunked().await,
    );
    rec.record(
        "GET chunk-uploaded blob returns the reassembled content",
        push.get_chunked().await,
    );

    rec.record(
        "Mount without from of an unknown blob returns 202 with an upload session",
        push.mount_unknown().await,
    );
    rec.record(
        "Mount with from returns 201 and Location",
        push.mount_from().await,
    );
    rec.record(
        "Mounted blob is readable in the target repository",
        push.mounted_blob_readable().await,
    );
    let automatic_name = match ctx.config.automatic_crossmount {
        Some(true) => {
            "Mount without from of a blob in another repository returns 201 (automatic cross-mount enabled)"
        }
        Some(false) => {
            "Mount without from of a blob in another repository returns 202 (automatic cross-mount disabled)"
        }
        None => {
            "Mount without from of a blob in another repository returns 201 or 202 (automatic cross-mount not configured)"
        }
    };
    rec.record(automatic_name, push.automatic_mount().await);

    rec.record(
        "GET unknown manifest returns 404",
        push.get_unknown_manifest().await,
    );
    rec.record(
        format!("PUT manifest under {TAG_COUNT} tags returns 201 and Location"),
        push.push_tags().await,
    );
    rec.record(
        "PUT manifest without layers returns 201 and Location",
        push.push_empty_layers().await,
    );
    rec.record(
        "PUT manifest by digest returns 201 and Location",
        push.push_by_digest().await,
    );
    rec.record(
        "GET manifest by digest returns 200 and its content",
        push.get_manifest().await,
    );
    rec.record(
        "PUT manifest referencing an unknown blob returns MANIFEST_BLOB_UNKNOWN (or is accepted)",
        push.push_missing_blob().await,
    );

    for session in std::mem::take(&mut push.open_sessions) {
        cancel_upload(&ctx.client, session).await;
    }
    let ns = ctx.namespace();
    let cross = &ctx.config.crossmount_namespace;
    let manifests: Vec<String> = [
        &push.manifest,
        &push.by_digest,
        &push.empty_layers,
        &push.missing_blob,
    ]
    .iter()
    .map(|m| manifest_path(ns, &m.digest))
    .collect();
    let mut blobs: Vec<String> = [&push.streamed, &push.config, &push.layer, &push.chunked]
        .iter()
        .map(|b| blob_path(ns, &b.digest))
        .collect();
    blobs.push(blob_path(cross, &push.streamed.digest));
    blobs.push(blob_path(cross, &push.chunked.digest));
    teardown(&mut rec, ctx, &manifests, &blobs).await;
    rec.finish()
}

struct Push<'a> {
    ctx: &'a Ctx,
    /// Blob uploaded with a single PATCH without Content-Range.
    streamed: Blob,
    streamed_session: Option<Url>,
    streamed_uploaded: bool,
    /// Config blob uploaded monolithically.
    config: Blob,
    single_post_status: Option<u16>,
    session: Option<Url>,
    config_uploaded: bool,
    layer: Blob,
    layer_uploaded: bool,
    /// Blob uploaded in two chunks, split at `chunk_split`.
    chunked: Blob,
    chunk_split: usize,
    chunk_first_session: Option<Url>,
    chunk_next_session: Option<Url>,
    first_chunk_sent: bool,
    second_chunk_sent: bool,
    chunked_uploaded: bool,
    mount_location: Option<Url>,
    mount_declined: bool,
    manifest: Manifest,
    tags: Vec<String>,
    tags_pushed: bool,
    empty_layers: Manifest,
    by_digest: Manifest,
    missing_blob: Manifest,
    /// Upload sessions to cancel during teardown.
    open_sessions: Vec<Url>,
}

impl<'a> Push<'a> {
    fn new(ctx: &'a Ctx) -> Push<'a> {
        let config = Blob::image_config();
        let layer = Blob::layer();
        let manifest = ManifestBuilder::image(&config)
            .layer(&layer, MEDIA_TYPE_LAYER)
            .build();
        let by_digest = ManifestBuilder::image(&config)
            .layer(&layer, MEDIA_TYPE_LAYER)
            .annotation("org.example.conformance.pushed-by", "digest")
            .build();
        let empty_layers = ManifestBuilder::image(&config)
            .without_media_type_field()
            .build();
        let missing_blob = ManifestBuilder::image(&config)
            .layer(&Blob::layer(), MEDIA_TYPE_LAYER)
            .build();
        let chunked = Blob::random(CHUNKED_BLOB_SIZE);
        Push {
            ctx,
            streamed: Blob::random(64),
            streamed_session: None,
            streamed_uploaded: false,
            config,
            single_post_status: None,
            session: None,
            config_uploaded: false,
            layer,
            layer_uploaded: false,
            chunk_split: chunked.size() / 2 + 1,
            chunked,
            chunk_first_session: None,
            chunk_next_session: None,
            first_chunk_sent: false,
            second_chunk_sent: false,
            chunked_uploaded: false,
            mount_location: None,
            mount_declined: false,
            manifest,
            tags: (0..TAG_COUNT)
                .map(|i| format!("push-{}-{i}", ctx.run_id))
                .collect(),
            tags_pushed: false,
            empty_layers,
            by_digest,
            missing_blob,
            open_sessions: Vec::new(),
        }
    }

    fn ns(&self) -> &str {
        self.ctx.namespace()
    }

    fn cross(&self) -> &str {
        &self.ctx.config.crossmount_namespace
    }

    /// POST to the uploads endpoint, requiring 202 and a Location.
    async fn open_session(&self) -> Step<(Response, Url)> {
        let response = self
            .ctx
            .client
            .post(&uploads_path(self.ns()))
            .send()
            .await?;
        expect_status(&response, &[202]).during("starting an upload session")?;
        let location = location_of(&response).during("starting an upload session")?;
        Ok((response, location))
    }

    /// PUT closing an upload session, requiring 201. The caller records the
    /// upload, then checks the headers with [`expect_blob_created`].
    async fn close_session(&self, session: Url, blob: &Blob, body: bool) -> Step<Response> {
        let mut request = self
            .ctx
            .client
            .request_url(Method::PUT, session)
            .query("digest", &blob.digest);
        if body {
            request = request.octet_stream(blob.bytes.clone());
        }
        let response = request.send().await?;
        expect_status(&response, &[201])?;
        Ok(response)
    }

    async fn get_blob_content(&self, name: &str, blob: &Blob) -> Step {
        let response = self
            .ctx
            .client
            .get(&blob_path(name, &blob.digest))
            .send()
            .await?;
        expect_status(&response, &[200])?;
        expect_body(&response, &blob.bytes)
    }

    // --- streamed upload ---

    async fn streamed_patch(&mut self) -> Step {
        let (_, session) = self.open_session().await?;
        let response = self
            .ctx
            .client
            .request_url(Method::PATCH, session.clone())
            .octet_stream(self.streamed.bytes.clone())
            .send()
            .await?;
        self.open_sessions.push(session);
        expect_status(&response, &[202])?;
        self.streamed_session = Some(location_of(&response)?);
        Ok(())
    }

    async fn streamed_close(&mut self) -> Step {
        let session = prerequisite(self.streamed_session.clone(), "Streamed upload: PATCH")?;
        let response = self.close_session(session, &self.streamed, false).await?;
        self.streamed_uploaded = true;
        expect_blob_created(&response, &self.streamed)
    }

    // --- monolithic upload ---

    async fn get_unknown_blob(&mut self) -> Step {
        let path = blob_path(self.ns(), &unknown_digest());
        let response = self.ctx.client.get(&path).send().await?;
        expect_status(&response, &[404])
    }

    async fn single_post(&mut self) -> Step {
        let response = self
            .ctx
            .client
            .post(&uploads_path(self.ns()))
            .query("digest", &self.config.digest)
            .octet_stream(self.config.bytes.clone())
            .send()
            .await?;
        expect_status(&response, &[201, 202])?;
        let location = location_of(&response)?;
        if response.status_code() == 202 {
            self.open_sessions.push(location);
        }
        self.single_post_status = Some(response.status_code());
        Ok(())
    }

    async fn get_after_single_post(&mut self) -> Step {
        let status = prerequisite(self.single_post_status, "Single POST with digest")?;
        let response = self
            .ctx
            .client
            .get(&blob_path(self.ns(), &self.config.digest))
            .send()
            .await?;
        if status == 202 {
            expect_status(&response, &[404])
                .during("the single POST answered 202, so the blob must not exist yet")
        } else {
            expect_status(&response, &[200])?;
            expect_body(&response, &self.config.bytes)
        }
    }

    async fn start_session(&mut self) -> Step {
        let (_, session) = self.open_session().await?;
        self.session = Some(session);
        Ok(())
    }

    async fn monolithic_put(&mut self) -> Step {
        let session = prerequisite(self.session.take(), "POST returns 202")?;
        let response = self.close_session(session, &self.config, true).await?;
        self.config_uploaded = true;
        expect_blob_created(&response, &self.config)
    }

    async fn get_config(&mut self) -> Step {
        require(self.config_uploaded, "PUT blob to the upload session")?;
        self.get_blob_content(self.ns(), &self.config).await
    }

    async fn upload_layer(&mut self) -> Step {
        let (_, session) = self.open_session().await?;
        let response = self.close_session(session, &self.layer, true).await?;
        self.layer_uploaded = true;
        expect_blob_created(&response, &self.layer)
    }

    async fn get_layer(&mut self) -> Step {
        require(self.layer_uploaded, "POST then PUT of a layer blob")?;
        self.get_blob_content(self.ns(), &self.layer).await
    }

    async fn mismatched_digest(&mut self) -> Step {
        let (_, session) = self.open_session().await?;
        self.open_sessions.push(session.clone());
        let content = Blob::random(128);
        let claimed = unknown_digest();
        let response = self
            .ctx
            .client
            .request_url(Method::PUT, session)
            .query("digest", &claimed)
            .octet_stream(content.bytes.clone())
            .send()
            .await?;
        expect_status(&response, &[400])?;
        error_code_if_json(&response, "DIGEST_INVALID")?;
        let head = self
            .ctx
            .client
            .head(&blob_path(self.ns(), &claimed))
            .send()
            .await?;
        expect_status(&head, &[404]).during("the rejected upload must not create the blob")
    }

    async fn malformed_digest(&mut self) -> Step {
        let (_, session) = self.open_session().await?;
        self.open_sessions.push(session.clone());
        let response = self
            .ctx
            .client
            .request_url(Method::PUT, session)
            .query("digest", "sha256:not-a-valid-digest")
            .octet_stream(Blob::random(32).bytes)
            .send()
            .await?;
        expect_status(&response, &[400])?;
        if let Some(codes) = response.error_codes() {
            check!(
                codes.iter().any(|c| ERROR_CODES.contains(&c.as_str())),
                "expected a spec-defined error code (such as DIGEST_INVALID), got {codes:?} \
                 from {}",
                response.describe()
            );
        }
        Ok(())
    }

    // --- chunked upload ---

    fn chunk_range(&self, first: bool) -> String {
        if first {
            format!("0-{}", self.chunk_split - 1)
        } else {
            format!("{}-{}", self.chunk_split, self.chunked.size() - 1)
        }
    }

    fn chunk(&self, first: bool) -> bytes::Bytes {
        if first {
            self.chunked.bytes.slice(..self.chunk_split)
        } else {
            self.chunked.bytes.slice(self.chunk_split..)
        }
    }

    /// Honours `OCI-Chunk-Min-Length` by regenerating the chunked blob so its
    /// first chunk is large enough. Only possible before a chunk was sent.
    fn honour_min_chunk_length(&mut self, response: &Response) -> Step {
        let Some(value) = response.header("OCI-Chunk-Min-Length") else {
            return Ok(());
        };
        let Ok(min) = value.parse::<usize>() else {
            fail!(
                "OCI-Chunk-Min-Length must be a number of bytes, got {value:?} in {}",
                response.describe()
            );
        };
        if min > self.chunk_split && !self.first_chunk_sent {
            let size = (min * 2).saturating_sub(2).max(2);
            self.chunked = Blob::random(size);
            self.chunk_split = size / 2 + 1;
        }
        Ok(())
    }

    async fn patch_chunk(&self, session: Url, first: bool) -> anyhow::Result<Response> {
        self.ctx
            .client
            .request_url(Method::PATCH, session)
            .header("Content-Range", self.chunk_range(first))
            .octet_stream(self.chunk(first))
            .send()
            .await
    }

    async fn out_of_order_chunk(&mut self) -> Step {
        let (start, session) = self.open_session().await?;
        self.open_sessions.push(session.clone());
        self.honour_min_chunk_length(&start)?;
        let response = self.patch_chunk(session, false).await?;
        expect_status(&response, &[416])
    }

    async fn first_chunk(&mut self) -> Step {
        let (start, session) = self.open_session().await?;
        self.open_sessions.push(session.clone());
        self.honour_min_chunk_length(&start)?;
        self.chunk_first_session = Some(session.clone());
        let response = self.patch_chunk(session, true).await?;
        expect_status(&response, &[202])?;
        self.chunk_next_session = Some(location_of(&response)?);
        self.first_chunk_sent = true;
        expect_header_eq(&response, "Range", &self.chunk_range(true))
    }

    async fn resend_first_chunk(&mut self) -> Step {
        require(self.first_chunk_sent, "Chunked upload: first chunk")?;
        let session = prerequisite(self.chunk_first_session.clone(), "Chunked upload: POST")?;
        let response = self.patch_chunk(session, true).await?;
        expect_status(&response, &[416])
    }

    async fn upload_status(&mut self) -> Step {
        require(self.first_chunk_sent, "Chunked upload: first chunk")?;
        let session = prerequisite(self.chunk_first_session.clone(), "Chunked upload: POST")?;
        let response = self
            .ctx
            .client
            .request_url(Method::GET, session)
            .send()
            .await?;
        expect_status(&response, &[204])?;
        self.chunk_next_session = Some(location_of(&response)?);
        expect_header_eq(&response, "Range", &self.chunk_range(true))
    }

    async fn second_chunk(&mut self) -> Step {
        require(self.first_chunk_sent, "Chunked upload: first chunk")?;
        let session = prerequisite(
            self.chunk_next_session.clone(),
            "Chunked upload: first chunk",
        )?;
        let response = self.patch_chunk(session, false).await?;
        expect_status(&response, &[202])?;
        self.chunk_next_session = Some(location_of(&response)?);
        self.second_chunk_sent = true;
        expect_header_eq(
            &response,
            "Range",
            &format!("0-{}", self.chunked.size() - 1),
        )
    }

    async fn close_chunked(&mut self) -> Step {
        require(self.second_chunk_sent, "Chunked upload: second chunk")?;
        let session = prerequisite(
            self.chunk_next_session.clone(),
            "Chunked upload: second chunk",
        )?;
        let response = self.close_session(session, &self.chunked, false).await?;
        self.chunked_uploaded = true;
        expect_blob_created(&response, &self.chunked)
    }

    async fn get_chunked(&mut self) -> Step {
        require(self.chunked_uploaded, "Chunked upload: PUT with digest")?;
        self.get_blob_content(self.ns(), &self.chunked).await
    }

    // --- cross-repository mount ---

    async fn mount(&self, digest: &str, from: Option<&str>) -> anyhow::Result<Response> {
        let mut request = self
            .ctx
            .client
            .post(&uploads_path(self.cross()))
            .query("mount", digest);
        if let Some(from) = from {
            request = request.query("from", from);
        }
        request.send().await
    }

    /// Checks that a 202 answer to a mount request offers an upload session
    /// in the target repository, and remembers it for cancellation.
    fn expect_upload_session(&mut self, response: &Response) -> Step {
        expect_status(response, &[202])?;
        let location = location_of(response)?;
        let prefix = uploads_path(self.cross());
        check!(
            location.path().starts_with(&prefix),
            "expected the upload session Location to start with {prefix}, got {}",
            response.describe()
        );
        self.open_sessions.push(location);
        Ok(())
    }

    async fn mount_unknown(&mut self) -> Step {
        let response = self.mount(&unknown_digest(), None).await?;
        self.expect_upload_session(&response)
    }

    async fn mount_from(&mut self) -> Step {
        require(self.streamed_uploaded, "Streamed upload: PUT with digest")?;
        let ns = self.ns().to_owned();
        let response = self.mount(&self.streamed.digest, Some(&ns)).await?;
        match response.status_code() {
            201 => {
                self.mount_location = Some(location_of(&response)?);
                Ok(())
            }
            202 => {
                self.expect_upload_session(&response)?;
                self.mount_declined = true;
                skip(format!(
                    "the registry answered 202 Accepted with an upload session instead of \
                     mounting; the spec allows this for registries that do not support \
                     cross-repository mounting ({})",
                    response.summary_line()
                ))
            }
            _ => expect_status(&response, &[201, 202]),
        }
    }

    async fn mounted_blob_readable(&mut self) -> Step {
        if self.mount_declined {
            return skip("the registry declined to mount the blob (202 Accepted)");
        }
        let location = prerequisite(self.mount_location.clone(), "Mount with from")?;
        let expected = blob_path(self.cross(), &self.streamed.digest);
        check!(
            location.path() == expected,
            "expected the mount Location to be {expected}, got {location}"
        );
        let response = self
            .ctx
            .client
            .request_url(Method::GET, location)
            .send()
            .await?;
        expect_status(&response, &[200])?;
        expect_body(&response, &self.streamed.bytes)
    }

    async fn automatic_mount(&mut self) -> Step {
        require(self.chunked_uploaded, "Chunked upload: PUT with digest")?;
        let response = self.mount(&self.chunked.digest, None).await?;
        let expected: &[u16] = match self.ctx.config.automatic_crossmount {
            Some(true) => &[201],
            Some(false) => &[202],
            None => &[201, 202],
        };
        if let (202, Some(session)) = (response.status_code(), response.location()) {
            self.open_sessions.push(session);
        }
        expect_status(&response, expected)?;
        if response.status_code() == 202 {
            return self.expect_upload_session(&response);
        }
        location_of(&response)?;
        let cross = self.cross().to_owned();
        self.get_blob_content(&cross, &self.chunked)
            .await
            .during("the automatically mounted blob must be readable in the target repository")
    }

    // --- manifests ---

    async fn get_unknown_manifest(&mut self) -> Step {
        let path = manifest_path(self.ns(), &format!("unknown-{}", self.ctx.run_id));
        let response = self.ctx.client.get(&path).send().await?;
        expect_status(&response, &[404])
    }

    fn require_image_blobs(&self) -> Step {
        require(self.config_uploaded, "PUT blob to the upload session")?;
        require(self.layer_uploaded, "POST then PUT of a layer blob")
    }

    /// PUT requiring 201; the headers are checked by [`expect_manifest_created`].
    async fn put_expecting_created(&self, reference: &str, manifest: &Manifest) -> Step<Response> {
        let response = put_manifest(&self.ctx.client, self.ns(), reference, manifest).await?;
        expect_status(&response, &[201])?;
        Ok(response)
    }

    async fn push_tags(&mut self) -> Step {
        self.require_image_blobs()?;
        let mut responses = Vec::new();
        for tag in &self.tags {
            let response = self
                .put_expecting_created(tag, &self.manifest)
                .await
                .during(&format!("tag {tag}"))?;
            responses.push((tag, response));
        }
        self.tags_pushed = true;
        for (tag, response) in responses {
            expect_manifest_created(&response, &self.manifest).during(&format!("tag {tag}"))?;
        }
        Ok(())
    }

    async fn push_empty_layers(&mut self) -> Step {
        require(self.config_uploaded, "PUT blob to the upload session")?;
        let tag = format!("push-{}-emptylayer", self.ctx.run_id);
        let response = put_manifest(&self.ctx.client, self.ns(), &tag, &self.empty_layers).await?;
        if response.status.is_client_error() {
            return skip(format!(
                "the registry rejected an image manifest with no layers (the upstream suite only \
                 warns about this): {}",
                response.describe()
            ));
        }
        expect_status(&response, &[201])?;
        expect_manifest_created(&response, &self.empty_layers)
    }

    async fn push_by_digest(&mut self) -> Step {
        self.require_image_blobs()?;
        let response = self
            .put_expecting_created(&self.by_digest.digest, &self.by_digest)
            .await?;
        expect_manifest_created(&response, &self.by_digest)
    }

    async fn get_manifest(&mut self) -> Step {
        require(self.tags_pushed, "PUT manifest under tags")?;
        let response = self
            .ctx
            .client
            .get(&manifest_path(self.ns(), &self.manifest.digest))
            .header("Accept", self.manifest.media_type)
            .send()
            .await?;
        expect_status(&response, &[200])?;
        header_if_present_eq(&response, "Docker-Content-Digest", &self.manifest.digest)?;
        check!(
            response.content_type() == Some(self.manifest.media_type),
            "expected Content-Type: {}, got {}",
            self.manifest.media_type,
            response.describe()
        );
        expect_body(&response, &self.manifest.bytes)
    }

    async fn push_missing_blob(&mut self) -> Step {
        require(self.config_uploaded, "PUT blob to the upload session")?;
        let manifest = &self.missing_blob;
        let response =
            put_manifest(&self.ctx.client, self.ns(), &manifest.digest, manifest).await?;
        if response.status.is_success() {
            return skip(format!(
                "the registry accepted a manifest whose layer it does not have; rejecting it is \
                 optional in the spec ({})",
                response.summary_line()
            ));
        }
        check!(
            response.status.is_client_error(),
            "expected 400 with MANIFEST_BLOB_UNKNOWN (or acceptance), got {}",
            response.describe()
        );
        match response.error_codes() {
            Some(codes) if codes.iter().any(|c| c == "MANIFEST_BLOB_UNKNOWN") => Ok(()),
            _ => Err(Problem::Fail(format!(
                "a registry that rejects a manifest for referencing an unknown blob must return \
                 MANIFEST_BLOB_UNKNOWN errors; got {}",
                response.describe()
            ))),
        }
    }
}

/// A 201 answer to a blob upload must carry a Location and, when present, the
/// blob's digest.
fn expect_blob_created(response: &Response, blob: &Blob) -> Step {
    location_of(response)?;
    header_if_present_eq(response, "Docker-Content-Digest", &blob.digest)
}

/// A 201 answer to a manifest upload must carry a Location and, when present,
/// the manifest's digest.
fn expect_manifest_created(response: &Response, manifest: &Manifest) -> Step {
    location_of(response)?;
    header_if_present_eq(response, "Docker-Content-Digest", &manifest.digest)
}
