//! Content Management workflow: deleting tags, manifests and blobs.
//!
//! Deletion is optional in the spec: a registry that disables it answers
//! 400 or 405, and the cases that depend on the deletion are then skipped
//! with that reason.

use crate::check::{
    Recorder, Step, StepExt as _, check, expect_status, expect_success, fail, prerequisite,
    require, skip,
};
use crate::client::Response;
use crate::fixtures::{Blob, MEDIA_TYPE_LAYER, Manifest, ManifestBuilder, unknown_digest};
use crate::report::{CONTENT_MANAGEMENT, CaseResult};
use crate::workflows::{
    Ctx, TagList, blob_path, manifest_path, put_manifest, tags_path, teardown, upload_blob,
};

pub(crate) async fn run(ctx: &Ctx) -> Vec<CaseResult> {
    let mut m = Management::new(ctx);
    let mut rec = Recorder::new(CONTENT_MANAGEMENT);

    rec.record(
        "Setup: upload config and layer blobs",
        m.upload_blobs().await,
    );
    rec.record("Setup: push a manifest by tag", m.push_manifest().await);
    rec.record(
        "Setup: list tags before deleting anything",
        m.count_tags().await,
    );

    rec.record(
        "DELETE tag returns 202 (400 UNSUPPORTED or 405 when tag deletion is disabled)",
        m.delete_tag().await,
    );
    rec.record("GET deleted tag returns 404", m.get_deleted_tag().await);
    rec.record(
        "DELETE manifest by digest returns 202 (400 or 405 when deletion is disabled)",
        m.delete_manifest().await,
    );
    rec.record(
        "GET deleted manifest returns 404 by digest and by tag",
        m.get_deleted_manifest().await,
    );
    rec.record(
        "GET tags list no longer lists the deleted tag",
        m.tags_reflect_deletion().await,
    );
    rec.record(
        "DELETE blobs returns 202 (400 or 405 when deletion is disabled)",
        m.delete_blobs().await,
    );
    rec.record("GET deleted blobs returns 404", m.get_deleted_blobs().await);
    rec.record(
        "DELETE unknown blob returns 404",
        m.delete_unknown_blob().await,
    );
    rec.record(
        "DELETE unknown manifest returns 404",
        m.delete_unknown_manifest().await,
    );

    let ns = ctx.namespace();
    let manifests = [manifest_path(ns, &m.manifest.digest)];
    let blobs = [
        blob_path(ns, &m.config.digest),
        blob_path(ns, &m.layer.digest),
    ];
    teardown(&mut rec, ctx, &manifests, &blobs).await;
    rec.finish()
}

/// What a DELETE request revealed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Deletion {
    /// Not attempted, or answered unexpectedly.
    Unknown,
    Done,
    /// The registry signalled that deletion is disabled.
    Disabled(String),
}

struct Management<'a> {
    ctx: &'a Ctx,
    config: Blob,
    layer: Blob,
    manifest: Manifest,
    tag: String,
    blobs_uploaded: bool,
    manifest_pushed: bool,
    tags_before: Option<Vec<String>>,
    tag_deletion: Deletion,
    manifest_deletion: Deletion,
    blob_deletion: Deletion,
}

/// Reason used when a registry answers 400/405 to a DELETE.
fn disabled_reason(what: &str, response: &Response) -> String {
    format!(
        "{what} deletion is disabled on this registry (allowed by the spec): {}",
        response.summary_line()
    )
}

impl<'a> Management<'a> {
    fn new(ctx: &'a Ctx) -> Management<'a> {
        let config = Blob::image_config();
        let layer = Blob::layer();
        let manifest = ManifestBuilder::image(&config)
            .layer(&layer, MEDIA_TYPE_LAYER)
            .build();
        Management {
            ctx,
            config,
            layer,
            manifest,
            tag: format!("mgmt-{}", ctx.run_id),
            blobs_uploaded: false,
            manifest_pushed: false,
            tags_before: None,
            tag_deletion: Deletion::Unknown,
            manifest_deletion: Deletion::Unknown,
            blob_deletion: Deletion::Unknown,
        }
    }

    fn ns(&self) -> &str {
        self.ctx.namespace()
    }

    async fn fetch_tags(&self) -> Step<Vec<String>> {
        let response = self.ctx.client.get(&tags_path(self.ns())).send().await?;
        expect_status(&response, &[200])?;
        Ok(TagList::parse(&response)?.into_tags())
    }

    // --- setup ---

    async fn upload_blobs(&mut self) -> Step {
        let client = &self.ctx.client;
        upload_blob(client, self.ns(), &self.config)
            .await
            .during("config blob")?;
        upload_blob(client, self.ns(), &self.layer)
            .await
            .during("layer blob")?;
        self.blobs_uploaded = true;
        Ok(())
    }

    async fn push_manifest(&mut self) -> Step {
        require(self.blobs_uploaded, "Setup: upload config and layer blobs")?;
        let response = put_manifest(&self.ctx.client, self.ns(), &self.tag, &self.manifest).await?;
        expect_success(&response)?;
        self.manifest_pushed = true;
        Ok(())
    }

    async fn count_tags(&mut self) -> Step {
        require(self.manifest_pushed, "Setup: push a manifest by tag")?;
        let tags = self.fetch_tags().await?;
        check!(
            tags.contains(&self.tag),
            "expected the tag list to contain {}, got {tags:?}",
            self.tag
        );
        self.tags_before = Some(tags);
        Ok(())
    }

    // --- manifests and tags ---

    async fn delete_tag(&mut self) -> Step {
        require(self.manifest_pushed, "Setup: push a manifest by tag")?;
        let path = manifest_path(self.ns(), &self.tag);
        let response = self.ctx.client.delete(&path).send().await?;
        match response.status_code() {
            202 => {
                self.tag_deletion = Deletion::Done;
                Ok(())
            }
            400 => {
                let codes = response.error_codes().unwrap_or_default();
                check!(
                    codes.first().map(String::as_str) == Some("UNSUPPORTED"),
                    "a 400 answer to a tag deletion must carry the UNSUPPORTED error code, got {}",
                    response.describe()
                );
                let reason = disabled_reason("tag", &response);
                self.tag_deletion = Deletion::Disabled(reason.clone());
                skip(reason)
            }
            405 => {
                let reason = disabled_reason("tag", &response);
                self.tag_deletion = Deletion::Disabled(reason.clone());
                skip(reason)
            }
            _ => expect_status(&response, &[202, 400, 405]),
        }
    }

    async fn get_deleted_tag(&mut self) -> Step {
        match &self.tag_deletion {
            Deletion::Done => {}
            Deletion::Disabled(reason) => return skip(reason.clone()),
            Deletion::Unknown => prerequisite(None::<()>, "DELETE tag")?,
        }
        let path = manifest_path(self.ns(), &self.tag);
        let response = self.ctx.client.get(&path).send().await?;
        expect_status(&response, &[404])
    }

    async fn delete_manifest(&mut self) -> Step {
        require(self.manifest_pushed, "Setup: push a manifest by tag")?;
        let path = manifest_path(self.ns(), &self.manifest.digest);
        let response = self.ctx.client.delete(&path).send().await?;
        match response.status_code() {
            202 => {
                self.manifest_deletion = Deletion::Done;
                Ok(())
            }
            // Some registries remove a manifest together with its last tag.
            404 if self.tag_deletion == Deletion::Done => {
                self.manifest_deletion = Deletion::Done;
                Ok(())
            }
            400 | 405 => {
                let reason = disabled_reason("manifest", &response);
                self.manifest_deletion = Deletion::Disabled(reason.clone());
                skip(reason)
            }
            _ => expect_status(&response, &[202, 400, 405]),
        }
    }

    async fn get_deleted_manifest(&mut self) -> Step {
        match &self.manifest_deletion {
            Deletion::Done => {}
            Deletion::Disabled(reason) => return skip(reason.clone()),
            Deletion::Unknown => prerequisite(None::<()>, "DELETE manifest by digest")?,
        }
        for reference in [&self.manifest.digest, &self.tag] {
            let path = manifest_path(self.ns(), reference);
            let response = self.ctx.client.get(&path).send().await?;
            expect_status(&response, &[404]).during(&format!("GET by {reference}"))?;
        }
        Ok(())
    }

    async fn tags_reflect_deletion(&mut self) -> Step {
        if let (Deletion::Disabled(reason), Deletion::Disabled(_)) =
            (&self.tag_deletion, &self.manifest_deletion)
        {
            return skip(reason.clone());
        }
        let before = prerequisite(
            self.tags_before.clone(),
            "Setup: list tags before deleting anything",
        )?;
        if self.tag_deletion != Deletion::Done && self.manifest_deletion != Deletion::Done {
            prerequisite(None::<()>, "DELETE tag or DELETE manifest")?;
        }
        let after = self.fetch_tags().await?;
        check!(
            !after.contains(&self.tag),
            "expected {} to be gone from the tag list, got {after:?}",
            self.tag
        );
        check!(
            after.len() < before.len(),
            "expected fewer tags than before the deletion ({}), got {after:?}",
            before.len()
        );
        Ok(())
    }

    // --- blobs ---

    async fn delete_blobs(&mut self) -> Step {
        require(self.blobs_uploaded, "Setup: upload config and layer blobs")?;
        for blob in [&self.config, &self.layer] {
            let path = blob_path(self.ns(), &blob.digest);
            let response = self.ctx.client.delete(&path).send().await?;
            match response.status_code() {
                // 404 is tolerated: the registry may have collected the blob
                // together with the deleted manifest.
                202 | 404 => {}
                400 | 405 => {
                    let reason = disabled_reason("blob", &response);
                    self.blob_deletion = Deletion::Disabled(reason.clone());
                    return skip(reason);
                }
                _ => expect_status(&response, &[202, 400, 405])?,
            }
        }
        self.blob_deletion = Deletion::Done;
        Ok(())
    }

    async fn get_deleted_blobs(&mut self) -> Step {
        match &self.blob_deletion {
            Deletion::Done => {}
            Deletion::Disabled(reason) => return skip(reason.clone()),
            Deletion::Unknown => prerequisite(None::<()>, "DELETE blobs")?,
        }
        for blob in [&self.config, &self.layer] {
            let path = blob_path(self.ns(), &blob.digest);
            let response = self.ctx.client.get(&path).send().await?;
            expect_status(&response, &[404]).during(&format!("GET blob {}", blob.digest))?;
        }
        Ok(())
    }

    async fn delete_unknown(&self, path: &str, what: &str) -> Step {
        let response = self.ctx.client.delete(path).send().await?;
        match response.status_code() {
            404 => Ok(()),
            400 | 405 => skip(disabled_reason(what, &response)),
            _ => fail!(
                "expected 404 Not Found (or 400/405 when deletion is disabled), got {}",
                response.describe()
            ),
        }
    }

    async fn delete_unknown_blob(&mut self) -> Step {
        let path = blob_path(self.ns(), &unknown_digest());
        self.delete_unknown(&path, "blob").await
    }

    async fn delete_unknown_manifest(&mut self) -> Step {
        let path = manifest_path(self.ns(), &unknown_digest());
        self.delete_unknown(&path, "manifest").await
    }
}
