//! Pull workflow: the API every registry must support.

use crate::check::{
    Recorder, Step, check, content_headers_match, expect_body, expect_status, expect_success, fail,
    header_if_present_eq, require,
};
use crate::fixtures::{Blob, MEDIA_TYPE_LAYER, Manifest, ManifestBuilder, unknown_digest};
use crate::report::{CaseResult, PULL};
use crate::workflows::{
    Ctx, ERROR_CODES, blob_path, manifest_path, put_manifest, teardown, upload_blob,
};

/// Reference that is not a valid tag; the upstream suite expects 404 for it.
pub(crate) const INVALID_REFERENCE: &str = ".INVALID_MANIFEST_NAME";

pub(crate) async fn run(ctx: &Ctx) -> Vec<CaseResult> {
    let mut pull = Pull::new(ctx);
    let mut rec = Recorder::new(PULL);

    rec.record("GET /v2/ returns 200", pull.base_route().await);

    rec.record("Setup: upload config blob A", pull.upload_config(0).await);
    rec.record("Setup: upload config blob B", pull.upload_config(1).await);
    rec.record("Setup: upload layer blob", pull.upload_layer().await);
    rec.record(
        "Setup: push manifest A by tag",
        pull.push_manifest_by_tag().await,
    );
    rec.record(
        "Setup: push manifest B by digest",
        pull.push_manifest_by_digest().await,
    );

    rec.record(
        "HEAD unknown blob returns 404",
        pull.head_unknown_blob().await,
    );
    rec.record("HEAD existing blob returns 200", pull.head_blob().await);
    rec.record(
        "GET unknown blob returns 404",
        pull.get_unknown_blob().await,
    );
    rec.record(
        "GET existing blob returns 200 and its content",
        pull.get_blob().await,
    );

    rec.record(
        "HEAD manifest with an unknown reference returns 404",
        pull.head_unknown_manifest().await,
    );
    rec.record(
        "HEAD manifest A by digest returns 200",
        pull.head_manifest_by_digest(0).await,
    );
    rec.record(
        "HEAD manifest B by digest returns 200",
        pull.head_manifest_by_digest(1).await,
    );
    rec.record(
        "HEAD manifest by tag returns 200",
        pull.head_manifest_by_tag().await,
    );
    rec.record(
        "GET manifest with an unknown reference returns 404",
        pull.get_unknown_manifest().await,
    );
    rec.record(
        "GET manifest A by digest returns 200 and its content",
        pull.get_manifest_by_digest(0).await,
    );
    rec.record(
        "GET manifest B by digest returns 200 and its content",
        pull.get_manifest_by_digest(1).await,
    );
    rec.record(
        "GET manifest by tag returns 200 and its content",
        pull.get_manifest_by_tag().await,
    );
    rec.record(
        "GET manifest with a malformed digest returns 400 with an OCI error body, or 404",
        pull.malformed_digest_error().await,
    );

    let ns = ctx.namespace();
    let manifests: Vec<String> = pull
        .manifests
        .iter()
        .map(|m| manifest_path(ns, &m.digest))
        .collect();
    let blobs: Vec<String> = pull
        .configs
        .iter()
        .chain([&pull.layer])
        .map(|b| blob_path(ns, &b.digest))
        .collect();
    teardown(&mut rec, ctx, &manifests, &blobs).await;
    rec.finish()
}

struct Pull<'a> {
    ctx: &'a Ctx,
    configs: [Blob; 2],
    layer: Blob,
    /// Manifest A (pushed by tag) and B (pushed by digest).
    manifests: [Manifest; 2],
    tag: String,
    configs_uploaded: [bool; 2],
    layer_uploaded: bool,
    manifests_pushed: [bool; 2],
}

impl<'a> Pull<'a> {
    fn new(ctx: &'a Ctx) -> Pull<'a> {
        let configs = [Blob::image_config(), Blob::image_config()];
        let layer = Blob::layer();
        let manifests = [
            ManifestBuilder::image(&configs[0])
                .layer(&layer, MEDIA_TYPE_LAYER)
                .build(),
            ManifestBuilder::image(&configs[1])
                .layer(&layer, MEDIA_TYPE_LAYER)
                .build(),
        ];
        Pull {
            ctx,
            configs,
            layer,
            manifests,
            tag: format!("pull-{}", ctx.run_id),
            configs_uploaded: [false; 2],
            layer_uploaded: false,
            manifests_pushed: [false; 2],
        }
    }

    fn ns(&self) -> &str {
        self.ctx.namespace()
    }

    async fn base_route(&mut self) -> Step {
        let response = self.ctx.client.get("/v2/").send().await?;
        expect_status(&response, &[200])
    }

    async fn upload_config(&mut self, index: usize) -> Step {
        upload_blob(&self.ctx.client, self.ns(), &self.configs[index]).await?;
        self.configs_uploaded[index] = true;
        Ok(())
    }

    async fn upload_layer(&mut self) -> Step {
        upload_blob(&self.ctx.client, self.ns(), &self.layer).await?;
        self.layer_uploaded = true;
        Ok(())
    }

    fn require_blobs_for(&self, index: usize) -> Step {
        require(self.configs_uploaded[index], "Setup: upload config blob")?;
        require(self.layer_uploaded, "Setup: upload layer blob")
    }

    async fn push_manifest_by_tag(&mut self) -> Step {
        self.require_blobs_for(0)?;
        let response =
            put_manifest(&self.ctx.client, self.ns(), &self.tag, &self.manifests[0]).await?;
        expect_success(&response)?;
        self.manifests_pushed[0] = true;
        Ok(())
    }

    async fn push_manifest_by_digest(&mut self) -> Step {
        self.require_blobs_for(1)?;
        let manifest = &self.manifests[1];
        let response =
            put_manifest(&self.ctx.client, self.ns(), &manifest.digest, manifest).await?;
        expect_success(&response)?;
        self.manifests_pushed[1] = true;
        Ok(())
    }

    async fn head_unknown_blob(&mut self) -> Step {
        let path = blob_path(self.ns(), &unknown_digest());
        let response = self.ctx.client.head(&path).send().await?;
        expect_status(&response, &[404])
    }

    async fn head_blob(&mut self) -> Step {
        require(self.configs_uploaded[0], "Setup: upload config blob A")?;
        let blob = &self.configs[0];
        let response = self
            .ctx
            .client
            .head(&blob_path(self.ns(), &blob.digest))
            .send()
            .await?;
        expect_status(&response, &[200])?;
        content_headers_match(&response, &blob.digest, blob.size())
    }

    async fn get_unknown_blob(&mut self) -> Step {
        let path = blob_path(self.ns(), &unknown_digest());
        let response = self.ctx.client.get(&path).send().await?;
        expect_status(&response, &[404])
    }

    async fn get_blob(&mut self) -> Step {
        require(self.configs_uploaded[0], "Setup: upload config blob A")?;
        let blob = &self.configs[0];
        let response = self
            .ctx
            .client
            .get(&blob_path(self.ns(), &blob.digest))
            .send()
            .await?;
        expect_status(&response, &[200])?;
        header_if_present_eq(&response, "Docker-Content-Digest", &blob.digest)?;
        expect_body(&response, &blob.bytes)
    }

    async fn head_unknown_manifest(&mut self) -> Step {
        let path = manifest_path(self.ns(), INVALID_REFERENCE);
        let response = self.ctx.client.head(&path).send().await?;
        expect_status(&response, &[404])
    }

    async fn get_unknown_manifest(&mut self) -> Step {
        let path = manifest_path(self.ns(), INVALID_REFERENCE);
        let response = self.ctx.client.get(&path).send().await?;
        expect_status(&response, &[404])
    }

    async fn head_manifest(&self, reference: &str, manifest: &Manifest) -> Step {
        let response = self
            .ctx
            .client
            .head(&manifest_path(self.ns(), reference))
            .header("Accept", manifest.media_type)
            .send()
            .await?;
        expect_status(&response, &[200])?;
        content_headers_match(&response, &manifest.digest, manifest.size())
    }

    async fn get_manifest(&self, reference: &str, manifest: &Manifest) -> Step {
        let response = self
            .ctx
            .client
            .get(&manifest_path(self.ns(), reference))
            .header("Accept", manifest.media_type)
            .send()
            .await?;
        expect_status(&response, &[200])?;
        header_if_present_eq(&response, "Docker-Content-Digest", &manifest.digest)?;
        check!(
            response.content_type() == Some(manifest.media_type),
            "expected Content-Type: {} (the media type it was pushed with), got {}",
            manifest.media_type,
            response.describe()
        );
        expect_body(&response, &manifest.bytes)
    }

    fn require_manifest(&self, index: usize) -> Step {
        let what = if index == 0 {
            "Setup: push manifest A by tag"
        } else {
            "Setup: push manifest B by digest"
        };
        require(self.manifests_pushed[index], what)
    }

    async fn head_manifest_by_digest(&mut self, index: usize) -> Step {
        self.require_manifest(index)?;
        let manifest = &self.manifests[index];
        self.head_manifest(&manifest.digest, manifest).await
    }

    async fn head_manifest_by_tag(&mut self) -> Step {
        self.require_manifest(0)?;
        self.head_manifest(&self.tag, &self.manifests[0]).await
    }

    async fn get_manifest_by_digest(&mut self, index: usize) -> Step {
        self.require_manifest(index)?;
        let manifest = &self.manifests[index];
        self.get_manifest(&manifest.digest, manifest).await
    }

    async fn get_manifest_by_tag(&mut self) -> Step {
        self.require_manifest(0)?;
        self.get_manifest(&self.tag, &self.manifests[0]).await
    }

    async fn malformed_digest_error(&mut self) -> Step {
        let path = manifest_path(self.ns(), "sha256:totallywrong");
        let response = self.ctx.client.get(&path).send().await?;
        expect_status(&response, &[400, 404])?;
        if response.status_code() == 400 {
            let Some(codes) = response.error_codes() else {
                fail!(
                    "expected a 400 body of the form {{\"errors\": [{{\"code\": ...}}]}}, got {}",
                    response.describe()
                );
            };
            check!(
                codes
                    .first()
                    .is_some_and(|code| ERROR_CODES.contains(&code.as_str())),
                "expected the first error code to be one defined by the spec, got {codes:?} \
                 from {}",
                response.describe()
            );
        }
        Ok(())
    }
}
