//! Pushes that a crash may interrupt: they report failure instead of
//! panicking, keep track of the uploads they left open, and say which
//! images the registry acknowledged, so a test can check after a restart
//! that every one of them is still there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use super::{Client, OCI_MANIFEST, random_bytes, sha256};

/// Why a push under fire did not complete.
#[derive(Debug)]
pub enum PushError {
    /// No answer: the server is gone.
    Gone(String),
    /// An answer other than success (e.g. a blob collected under the push).
    Refused(String),
}

/// An upload the server acknowledged data for and that was not finished.
#[derive(Debug, Clone)]
pub struct OpenUpload {
    pub repo: String,
    /// Bytes the server acknowledged (its last `202` to a `PATCH`).
    pub acked: u64,
    /// The closing `PUT` was sent (its outcome is unknown until answered).
    pub closing: bool,
}

/// The uploads in progress of a set of clients, by location.
#[derive(Debug, Default)]
pub struct OpenUploads(pub Mutex<HashMap<String, OpenUpload>>);

impl OpenUploads {
    fn set(&self, location: &str, upload: Option<OpenUpload>) {
        let mut map = self.0.lock().unwrap();
        match upload {
            Some(u) => map.insert(location.to_owned(), u),
            None => map.remove(location),
        };
    }
}

/// Sends a request, telling a dead server from a refusal.
async fn expect(
    req: reqwest::RequestBuilder,
    status: u16,
    what: &str,
) -> Result<reqwest::Response, PushError> {
    let res = req
        .send()
        .await
        .map_err(|e| PushError::Gone(format!("{what}: {e}")))?;
    if res.status() == status {
        Ok(res)
    } else {
        Err(PushError::Refused(format!("{what}: {}", res.status())))
    }
}

/// A request body sent in two pieces a short random pause apart, as bytes
/// arrive from a real client: a crash can land in the middle of a chunk.
fn trickle(bytes: Vec<u8>) -> reqwest::Body {
    let mut first = bytes;
    let second = first.split_off(first.len() / 2);
    let pieces = futures::stream::iter([first, second]).then(|piece| async move {
        let pause = rand::random_range(0..5);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        Ok::<_, std::io::Error>(piece)
    });
    reqwest::Body::wrap_stream(pieces)
}

/// Pushes a blob in two chunks (POST, PATCH, PUT), so that a crash can land
/// between them, recording the upload in `uploads` while it is open.
pub async fn try_push_blob(
    c: &Client,
    repo: &str,
    bytes: &[u8],
    uploads: &OpenUploads,
) -> Result<String, PushError> {
    let d = sha256(bytes);
    let res = expect(c.post(&format!("/v2/{repo}/blobs/uploads/")), 202, "POST").await?;
    let loc = res.headers()["location"].to_str().unwrap().to_owned();
    let half = bytes.len() / 2;
    let patch = c.patch(&loc).body(trickle(bytes[..half].to_vec()));
    expect(patch, 202, "PATCH").await?;
    let mut open = OpenUpload {
        repo: repo.to_owned(),
        acked: half as u64,
        closing: false,
    };
    uploads.set(&loc, Some(open.clone()));
    // A pause, as a client reading its next chunk would make: a crash often
    // lands while an upload holds acknowledged data.
    tokio::time::sleep(Duration::from_millis(rand::random_range(0..10))).await;
    open.closing = true;
    uploads.set(&loc, Some(open));
    let put = c
        .put(&format!("{loc}?digest={d}"))
        .body(bytes[half..].to_vec());
    let done = expect(put, 201, "PUT").await;
    if !matches!(done, Err(PushError::Gone(_))) {
        uploads.set(&loc, None); // answered: no longer open either way
    }
    done.map(|_| d)
}

/// Pushes an image of three layers (the first `shared`) and a config with
/// [`try_push_blob`], then its manifest under `tag`; returns the manifest
/// digest and every blob digest.
pub async fn try_push_image(
    c: &Client,
    repo: &str,
    tag: &str,
    shared: &[u8],
    uploads: &OpenUploads,
) -> Result<(String, Vec<String>), PushError> {
    let mut layers = vec![];
    let mut descs = vec![];
    for bytes in [shared.to_vec(), random_bytes(20_000), random_bytes(3_000)] {
        let d = try_push_blob(c, repo, &bytes, uploads).await?;
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": bytes.len()}));
        layers.push(d);
    }
    let config = random_bytes(100);
    let cd = try_push_blob(c, repo, &config, uploads).await?;
    layers.push(cd.clone());
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let put = c
        .put(&format!("/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(body.clone());
    expect(put, 201, "PUT manifest").await?;
    Ok((sha256(&body), layers))
}

/// An image whose manifest `PUT` the registry answered with `201`.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub repo: String,
    pub tag: String,
    pub digest: String,
    pub blobs: Vec<String>,
}

/// Every image in `pushed` resolves by tag to its digest and every blob it
/// references comes back with the right digest; so does every tag of every
/// repository in the catalog.
pub async fn assert_intact(c: &Client, pushed: &[Pushed]) {
    for p in pushed {
        let res = c
            .get(&format!("/v2/{}/manifests/{}", p.repo, p.tag))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "acknowledged {}:{} lost", p.repo, p.tag);
        let body = res.bytes().await.unwrap();
        assert_eq!(sha256(&body), p.digest, "{}:{} manifest", p.repo, p.tag);
        for b in &p.blobs {
            let res = c
                .get(&format!("/v2/{}/blobs/{b}", p.repo))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "blob {b} of {}:{}", p.repo, p.tag);
            assert_eq!(&sha256(&res.bytes().await.unwrap()), b, "blob {b} content");
        }
    }
    let catalog: serde_json::Value = c.json("/v2/_catalog").await;
    for repo in catalog["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags: serde_json::Value = c.json(&format!("/v2/{repo}/tags/list")).await;
        for tag in tags["tags"].as_array().into_iter().flatten() {
            c.assert_pulls_intact(repo, tag.as_str().unwrap()).await;
        }
    }
}
