//! The four conformance workflows and the helpers they share.

pub(crate) mod discovery;
pub(crate) mod management;
pub(crate) mod pull;
pub(crate) mod push;

use reqwest::{Method, Url};
use serde::Deserialize;

use crate::check::{Problem, Recorder, Step, StepExt as _, expect_header, expect_success, fail};
use crate::client::{Client, Response};
use crate::config::Config;
use crate::fixtures::{Blob, Manifest, random_id};

/// Codes the spec allows in an error body.
pub(crate) const ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
    // Legacy codes the spec says clients may still encounter.
    "TAG_INVALID",
    "MANIFEST_UNVERIFIED",
];

/// Shared state of a run.
pub(crate) struct Ctx {
    pub client: Client,
    pub config: Config,
    /// Random per-run token used in tag names.
    pub run_id: String,
}

impl Ctx {
    pub fn new(config: &Config, debug: bool) -> anyhow::Result<Ctx> {
        Ok(Ctx {
            client: Client::new(config, debug)?,
            config: config.clone(),
            run_id: random_id(8),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.config.namespace
    }
}

pub(crate) fn blob_path(name: &str, digest: &str) -> String {
    format!("/v2/{name}/blobs/{digest}")
}

pub(crate) fn manifest_path(name: &str, reference: &str) -> String {
    format!("/v2/{name}/manifests/{reference}")
}

pub(crate) fn uploads_path(name: &str) -> String {
    format!("/v2/{name}/blobs/uploads/")
}

pub(crate) fn tags_path(name: &str) -> String {
    format!("/v2/{name}/tags/list")
}

pub(crate) fn referrers_path(name: &str, digest: &str) -> String {
    format!("/v2/{name}/referrers/{digest}")
}

/// The `Location` header of a response, resolved to an absolute URL.
pub(crate) fn location_of(response: &Response) -> Step<Url> {
    expect_header(response, "Location")?;
    match response.location() {
        Some(url) => Ok(url),
        None => fail!(
            "the Location header is not a valid URL or path: {}",
            response.describe()
        ),
    }
}

/// Uploads a blob with POST then PUT, accepting any 2xx status (the status
/// codes themselves are checked by the Push workflow).
pub(crate) async fn upload_blob(client: &Client, name: &str, blob: &Blob) -> Step<Response> {
    let start = client.post(&uploads_path(name)).send().await?;
    expect_success(&start).during("starting the upload session")?;
    let session = location_of(&start).during("starting the upload session")?;
    let done = client
        .request_url(Method::PUT, session)
        .query("digest", &blob.digest)
        .octet_stream(blob.bytes.clone())
        .send()
        .await?;
    expect_success(&done).during("completing the upload with PUT")?;
    Ok(done)
}

/// PUTs a manifest with its media type as `Content-Type`.
pub(crate) async fn put_manifest(
    client: &Client,
    name: &str,
    reference: &str,
    manifest: &Manifest,
) -> anyhow::Result<Response> {
    client
        .put(&manifest_path(name, reference))
        .header("Content-Type", manifest.media_type)
        .body(manifest.bytes.clone())
        .send()
        .await
}

/// Best-effort cancellation of an upload session; failures are ignored, as
/// the spec tells clients to.
pub(crate) async fn cancel_upload(client: &Client, session: Url) {
    let _ = client.request_url(Method::DELETE, session).send().await;
}

/// Tag listing as returned by `GET /v2/<name>/tags/list`.
#[derive(Debug, Deserialize)]
pub(crate) struct TagList {
    pub name: String,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

impl TagList {
    pub fn parse(response: &Response) -> Step<TagList> {
        serde_json::from_slice(&response.body).map_err(|e| {
            Problem::Fail(format!(
                "expected a JSON tag list {{\"name\": ..., \"tags\": [...]}}, could not parse it \
                 ({e}): {}",
                response.describe()
            ))
        })
    }

    pub fn into_tags(self) -> Vec<String> {
        self.tags.unwrap_or_default()
    }
}

/// Statuses accepted while cleaning up: success, already gone, or deletion
/// disabled.
const CLEANUP_STATUSES: &[u16] = &[200, 202, 204, 400, 404, 405];

/// Deletes every path, reporting the ones that answered unexpectedly.
async fn delete_paths(client: &Client, paths: &[String]) -> Step {
    let mut problems = Vec::new();
    for path in paths {
        match client.delete(path).send().await {
            Ok(response) if CLEANUP_STATUSES.contains(&response.status_code()) => {}
            Ok(response) => problems.push(format!(
                "expected 202 Accepted (or 404/400/405), got {}",
                response.describe()
            )),
            Err(error) => problems.push(format!("DELETE {path} failed: {error:#}")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Problem::Fail(problems.join("\n")))
    }
}

/// Records the two teardown cases, in the configured order.
pub(crate) async fn teardown(
    recorder: &mut Recorder,
    ctx: &Ctx,
    manifest_paths: &[String],
    blob_paths: &[String],
) {
    let client = &ctx.client;
    if ctx.config.delete_manifest_before_blobs {
        let step = delete_paths(client, manifest_paths).await;
        recorder.record("Teardown: delete manifests", step);
        let step = delete_paths(client, blob_paths).await;
        recorder.record("Teardown: delete blobs", step);
    } else {
        let step = delete_paths(client, blob_paths).await;
        recorder.record("Teardown: delete blobs", step);
        let step = delete_paths(client, manifest_paths).await;
        recorder.record("Teardown: delete manifests", step);
    }
}
