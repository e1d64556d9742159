//! The registry operations the workloads are made of, over the OCI
//! distribution HTTP API (and Berth's admin API for garbage collection).
//!
//! Every operation returns an [`OpError`] rather than panicking on an
//! unexpected answer, so a misbehaving registry shows up as counted errors.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use reqwest::{Body, Client, Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::content::{Blob, OCI_MANIFEST, digest_string};

/// What a pull asks for, like docker and containerd do.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// Longest part of an error response body quoted in an error message.
const ERROR_BODY_CHARS: usize = 160;
/// Largest piece a request body is handed to the HTTP client in. Clients
/// such as docker write their bodies in small pieces; handed one 8 MiB
/// piece, the client wrote the headers and megabytes of body in a single
/// call, and the server saw the request only once the kernel had copied
/// them (about a millisecond a request, charged to every chunked PATCH).
const BODY_PIECE: usize = 256 * 1024;

/// `slices` cut into pieces of at most [`BODY_PIECE`] (no copy).
fn pieces(slices: Vec<Bytes>) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    futures::stream::iter(slices.into_iter().flat_map(|s| {
        (0..s.len())
            .step_by(BODY_PIECE)
            .map(move |at| Ok(s.slice(at..(at + BODY_PIECE).min(s.len()))))
    }))
}

/// How an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The registry answered with an unexpected status.
    Status(u16),
    /// No answer: connection refused or reset, time-out.
    Transport,
    /// An answer that is wrong: bad digest, missing header, bad JSON.
    Invalid,
}

/// One failed operation: which request, and what went wrong.
#[derive(Debug, Clone)]
pub struct OpError {
    /// The request, e.g. `PUT upload`.
    pub what: &'static str,
    pub failure: Failure,
    pub detail: String,
}

impl OpError {
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        OpError {
            what,
            failure: Failure::Invalid,
            detail: detail.into(),
        }
    }

    fn transport(what: &'static str, error: reqwest::Error) -> Self {
        // The sources say why ("connection refused"); the URL is left out
        // so that the same failure gives the same message.
        let error = error.without_url();
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        OpError {
            what,
            failure: Failure::Transport,
            detail,
        }
    }

    /// The class of failure, for counting: the HTTP status, `transport` or
    /// `invalid`.
    pub fn code(&self) -> String {
        match self.failure {
            Failure::Status(s) => s.to_string(),
            Failure::Transport => "transport".into(),
            Failure::Invalid => "invalid".into(),
        }
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.failure {
            Failure::Status(status) => write!(f, "{}: HTTP {status}: {}", self.what, self.detail),
            _ => write!(f, "{}: {}", self.what, self.detail),
        }
    }
}

impl std::error::Error for OpError {}

pub type OpResult<T> = Result<T, OpError>;

/// A page of a paginated list, and the next page's URL if any.
pub struct Page {
    pub body: Bytes,
    pub next: Option<Url>,
}

/// A registry reached over HTTP.
pub struct Registry {
    http: Client,
    /// Origin the `/v2/` and `/admin/` paths are appended to.
    base: Url,
}

impl Registry {
    /// A client tuned for load generation: HTTP/1.1 (what registry clients
    /// use for blobs), no proxy, Nagle off, enough pooled connections for
    /// every worker.
    pub fn new(url: &str, timeout: Duration, max_connections: usize) -> anyhow::Result<Self> {
        let base = Url::parse(url.trim_end_matches('/'))?;
        anyhow::ensure!(
            matches!(base.scheme(), "http" | "https"),
            "the registry URL must be http:// or https://, not {url}"
        );
        let http = Client::builder()
            .http1_only()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(max_connections)
            .connect_timeout(Duration::from_secs(10))
            .timeout(timeout)
            .user_agent(concat!("berth-bench/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Registry { http, base })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `path` (starting with `/`) on the registry.
    pub fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("a path joins onto an http URL")
    }

    /// Sends a request and checks its status; on a surprise, the error
    /// quotes the start of the body (the registry's error envelope).
    async fn send(
        &self,
        what: &'static str,
        request: RequestBuilder,
        expected: &[StatusCode],
    ) -> OpResult<Response> {
        let mut response = request
            .send()
            .await
            .map_err(|e| OpError::transport(what, e))?;
        let status = response.status();
        if expected.contains(&status) {
            return Ok(response);
        }
        let mut body = Vec::new();
        while body.len() < 4 * ERROR_BODY_CHARS {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&body);
        let mut detail: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if let Some((cut, _)) = detail.char_indices().nth(ERROR_BODY_CHARS) {
            detail.truncate(cut);
            detail.push('…');
        }
        if detail.is_empty() {
            detail = status.canonical_reason().unwrap_or("(no body)").to_string();
        }
        Err(OpError {
            what,
            failure: Failure::Status(status.as_u16()),
            detail,
        })
    }

    /// The upload URL a `Location` header points to.
    fn location(&self, what: &'static str, headers: &HeaderMap) -> OpResult<Url> {
        let value = headers
            .get(header::LOCATION)
            .ok_or_else(|| OpError::invalid(what, "no Location header"))?;
        let value = value
            .to_str()
            .map_err(|_| OpError::invalid(what, "Location header is not ASCII"))?;
        self.base
            .join(value)
            .map_err(|e| OpError::invalid(what, format!("bad Location {value:?}: {e}")))
    }

    /// A request whose body is `slices` and whose length is announced up
    /// front (not chunked), as docker and containerd send blobs.
    fn with_body(request: RequestBuilder, slices: Vec<Bytes>) -> RequestBuilder {
        let len: usize = slices.iter().map(Bytes::len).sum();
        let body = match <[Bytes; 1]>::try_from(slices) {
            Ok([one]) if one.len() <= BODY_PIECE => Body::from(one),
            Ok([one]) => Body::wrap_stream(pieces(vec![one])),
            Err(slices) if slices.is_empty() => Body::from(Bytes::new()),
            Err(slices) => Body::wrap_stream(pieces(slices)),
        };
        request
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, len)
            .body(body)
    }

    /// `POST /v2/<repo>/blobs/uploads/`: opens an upload session.
    pub async fn start_upload(&self, repo: &str) -> OpResult<Url> {
        const WHAT: &str = "POST upload";
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let request = self.http.post(url).header(header::CONTENT_LENGTH, 0);
        let response = self.send(WHAT, request, &[StatusCode::ACCEPTED]).await?;
        self.location(WHAT, response.headers())
    }

    /// `PUT <location>?digest=`: closes a session, with the whole blob (or
    /// nothing, after PATCHes) as the body.
    async fn finish_upload(&self, location: Url, digest: &str, body: Vec<Bytes>) -> OpResult<()> {
        let mut url = location;
        url.query_pairs_mut().append_pair("digest", digest);
        let request = Self::with_body(self.http.put(url), body);
        self.send("PUT upload", request, &[StatusCode::CREATED])
            .await
            .map(drop)
    }

    /// Monolithic push in two requests: POST, then PUT with the body.
    pub async fn push_blob(&self, repo: &str, blob: &Blob) -> OpResult<()> {
        let location = self.start_upload(repo).await?;
        self.finish_upload(location, &blob.digest, blob.slices(0..blob.len()))
            .await
    }

    /// Monolithic push in one request (`POST ?digest=` with the body); a
    /// registry that answers 202 instead gets the body in a PUT.
    pub async fn push_blob_single_post(&self, repo: &str, blob: &Blob) -> OpResult<()> {
        const WHAT: &str = "POST upload ?digest=";
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut().append_pair("digest", &blob.digest);
        let request = Self::with_body(self.http.post(url), blob.slices(0..blob.len()));
        self.created_or_upload(WHAT, request, blob).await
    }

    /// Sends a POST that either completes (201) or opens a session (202)
    /// into which the whole blob is then uploaded.
    async fn created_or_upload(
        &self,
        what: &'static str,
        request: RequestBuilder,
        blob: &Blob,
    ) -> OpResult<()> {
        let expected = [StatusCode::CREATED, StatusCode::ACCEPTED];
        let response = self.send(what, request, &expected).await?;
        if response.status() == StatusCode::CREATED {
            return Ok(());
        }
        let location = self.location(what, response.headers())?;
        self.finish_upload(location, &blob.digest, blob.slices(0..blob.len()))
            .await
    }

    /// Chunked push: POST, one PATCH per piece with its `Content-Range`,
    /// then an empty PUT.
    pub async fn push_blob_chunked(&self, repo: &str, blob: &Blob, pieces: u64) -> OpResult<()> {
        let mut location = self.start_upload(repo).await?;
        let len = blob.len();
        let pieces = pieces.clamp(1, len.max(1));
        let piece = len.div_ceil(pieces).max(1);
        let mut start = 0;
        while start < len {
            let end = (start + piece).min(len);
            location = self
                .append_chunk(location, start, blob.slices(start..end))
                .await?;
            start = end;
        }
        self.finish_upload(location, &blob.digest, Vec::new()).await
    }

    /// One `PATCH` of an upload session: `body` goes at `start`; returns
    /// the session's next URL.
    pub async fn append_chunk(&self, location: Url, start: u64, body: Vec<Bytes>) -> OpResult<Url> {
        const WHAT: &str = "PATCH upload";
        let len: usize = body.iter().map(Bytes::len).sum();
        let end = (start + len as u64).saturating_sub(1);
        let request = Self::with_body(self.http.patch(location), body)
            .header(header::CONTENT_RANGE, format!("{start}-{end}"));
        let response = self.send(WHAT, request, &[StatusCode::ACCEPTED]).await?;
        self.location(WHAT, response.headers())
    }

    /// Cross-repository mount (`POST ?mount=&from=`); when the registry
    /// declines (202), the blob is uploaded into the session it opened.
    pub async fn mount_blob(&self, repo: &str, from: &str, blob: &Blob) -> OpResult<()> {
        const WHAT: &str = "POST mount";
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", &blob.digest)
            .append_pair("from", from);
        let request = self.http.post(url).header(header::CONTENT_LENGTH, 0);
        self.created_or_upload(WHAT, request, blob).await
    }

    /// `GET` a blob, hashing the body as it streams in; returns its length.
    pub async fn pull_blob(&self, repo: &str, digest: &str, size: Option<u64>) -> OpResult<u64> {
        const WHAT: &str = "GET blob";
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let mut response = self
            .send(WHAT, self.http.get(url), &[StatusCode::OK])
            .await?;
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| OpError::transport(WHAT, e))?
        {
            hasher.update(&chunk);
            received += chunk.len() as u64;
        }
        let actual = digest_string(&hasher.finalize());
        if actual != digest {
            return Err(OpError::invalid(
                "verify blob",
                format!("body of {received} bytes hashes to {actual}, not the digest asked for"),
            ));
        }
        if let Some(size) = size.filter(|&s| s != received) {
            return Err(OpError::invalid(
                "verify blob",
                format!("body is {received} bytes, expected {size}"),
            ));
        }
        Ok(received)
    }

    /// `HEAD` a blob; checks the length it announces when it is known.
    pub async fn head_blob(&self, repo: &str, digest: &str, size: Option<u64>) -> OpResult<()> {
        const WHAT: &str = "HEAD blob";
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let response = self
            .send(WHAT, self.http.head(url), &[StatusCode::OK])
            .await?;
        let announced = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        match (size, announced) {
            (Some(size), Some(len)) if size != len => Err(OpError::invalid(
                "verify HEAD blob",
                format!("Content-Length {len}, expected {size}"),
            )),
            _ => Ok(()),
        }
    }

    /// `HEAD` a manifest by tag or digest, as `docker pull` starts.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> OpResult<()> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let request = self.http.head(url).header(header::ACCEPT, MANIFEST_ACCEPT);
        self.send("HEAD manifest", request, &[StatusCode::OK])
            .await
            .map(drop)
    }

    /// `GET` a manifest by tag or digest.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> OpResult<Bytes> {
        const WHAT: &str = "GET manifest";
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let request = self.http.get(url).header(header::ACCEPT, MANIFEST_ACCEPT);
        let response = self.send(WHAT, request, &[StatusCode::OK]).await?;
        response
            .bytes()
            .await
            .map_err(|e| OpError::transport(WHAT, e))
    }

    /// `PUT` an OCI image manifest under a tag or its digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &Bytes,
    ) -> OpResult<()> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let request = self
            .http
            .put(url)
            .header(header::CONTENT_TYPE, OCI_MANIFEST)
            .body(manifest.clone());
        self.send("PUT manifest", request, &[StatusCode::CREATED])
            .await
            .map(drop)
    }

    /// `DELETE` a manifest by digest (which also removes its tags).
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> OpResult<()> {
        let url = self.url(&format!("/v2/{repo}/manifests/{digest}"));
        self.send(
            "DELETE manifest",
            self.http.delete(url),
            &[StatusCode::ACCEPTED],
        )
        .await
        .map(drop)
    }

    /// One page of a list (`tags/list`, `_catalog`), with the URL of the
    /// next page from the `Link` header.
    pub async fn get_page(&self, what: &'static str, url: Url) -> OpResult<Page> {
        let response = self
            .send(what, self.http.get(url), &[StatusCode::OK])
            .await?;
        let next = match response.headers().get(header::LINK) {
            None => None,
            Some(link) => Some(self.next_link(what, link.to_str().unwrap_or_default())?),
        };
        let body = response
            .bytes()
            .await
            .map_err(|e| OpError::transport(what, e))?;
        Ok(Page { body, next })
    }

    /// The target of `Link: <url>; rel="next"`, resolved against the base.
    fn next_link(&self, what: &'static str, link: &str) -> OpResult<Url> {
        let target = link
            .split(',')
            .find(|l| l.contains("rel=\"next\"") || l.contains("rel=next"))
            .and_then(|l| Some(l.split_once('<')?.1.split_once('>')?.0.trim()))
            .ok_or_else(|| OpError::invalid(what, format!("unreadable Link header {link:?}")))?;
        self.base
            .join(target)
            .map_err(|e| OpError::invalid(what, format!("bad Link target {target:?}: {e}")))
    }

    /// `GET` of any page (the web UI, `/metrics`), read to the end.
    pub async fn get_bytes(&self, what: &'static str, path: &str) -> OpResult<Bytes> {
        let response = self
            .send(what, self.http.get(self.url(path)), &[StatusCode::OK])
            .await?;
        response
            .bytes()
            .await
            .map_err(|e| OpError::transport(what, e))
    }

    /// `GET` on the admin API, as JSON.
    pub async fn admin_get(&self, path: &str) -> OpResult<Value> {
        const WHAT: &str = "GET admin";
        let body = self.get_bytes(WHAT, path).await?;
        serde_json::from_slice(&body).map_err(|e| OpError::invalid(WHAT, e.to_string()))
    }

    /// A request on the admin API with a JSON body; any status is returned
    /// with the JSON answer (or `null`).
    pub async fn admin_send(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> OpResult<(StatusCode, Value)> {
        const WHAT: &str = "admin request";
        let request = self.http.request(method, self.url(path)).json(body);
        let response = request
            .send()
            .await
            .map_err(|e| OpError::transport(WHAT, e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| OpError::transport(WHAT, e))?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn bodies_go_out_in_small_pieces_without_copies() {
        let big = Bytes::from(vec![7u8; 2 * BODY_PIECE + 100]);
        let small = Bytes::from_static(b"tail");
        let got: Vec<Bytes> = pieces(vec![big.clone(), small.clone()])
            .map(Result::unwrap)
            .collect()
            .await;
        let sizes: Vec<usize> = got.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [BODY_PIECE, BODY_PIECE, 100, 4]);
        // Slices of the caller's buffers, not copies.
        assert_eq!(got[1].as_ptr(), big[BODY_PIECE..].as_ptr());
        assert_eq!(got[3].as_ptr(), small.as_ptr());
    }

    #[test]
    fn link_headers_resolve_against_the_registry() {
        let registry = Registry::new("http://127.0.0.1:5000/", Duration::from_secs(1), 1).unwrap();
        let next = registry
            .next_link("GET", "</v2/_catalog?n=100&last=b%2Fc>; rel=\"next\"")
            .unwrap();
        assert_eq!(
            next.as_str(),
            "http://127.0.0.1:5000/v2/_catalog?n=100&last=b%2Fc"
        );
        let absolute = registry
            .next_link(
                "GET",
                "<https://other.example/v2/a/tags/list?last=x>; rel=\"next\"",
            )
            .unwrap();
        assert_eq!(absolute.host_str(), Some("other.example"));
        assert!(registry.next_link("GET", "garbage").is_err());
    }
}
