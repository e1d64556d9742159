//! The OCI distribution API: one function per endpoint and method, each
//! calling one [`Registry`] operation and rendering its result.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body as _;
use registry_core::index::Page;
use registry_core::manifest::OCI_INDEX;
use registry_core::{Digest, Error, ErrorCode, Reference, Registry, RepoName};

use crate::activity::Actor;
use crate::auth::{Auth, Caller};
use crate::body::{self, Body, ReqBody};
use crate::error::ApiError;
use crate::ranges;
use crate::route::{Endpoint, Query};

pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";
const DIGEST_HEADER: &str = "docker-content-digest";
const UPLOAD_UUID_HEADER: &str = "docker-upload-uuid";
const SESSION_ID_HEADER: &str = "blob-upload-session-id";

type ApiResult = Result<Response<Body>, ApiError>;

/// Settings of the API that are not the registry's.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Mount a blob when `?mount=` comes without `from` and the blob is
    /// stored anywhere in the registry.
    pub automatic_mount: bool,
    /// Answer blob GETs with a redirect to the blob store's own URL, where
    /// it has one (an object store's presigned URL).
    pub blob_redirect: bool,
}

pub struct Api {
    pub registry: Arc<Registry>,
    pub options: ApiOptions,
    pub auth: Arc<Auth>,
}

/// The caller a request was authorized for (everything allowed when the
/// server put none there: no authentication configured).
pub fn caller_of<B>(req: &Request<B>) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::open)
}

/// The actor a request was made by (see [`Actor`]).
pub fn actor_of<B>(req: &Request<B>) -> String {
    req.extensions()
        .get::<Actor>()
        .map(|a| a.0.clone())
        .unwrap_or_else(|| "unknown".into())
}

/// Builds a response from a status and headers.
struct Reply {
    res: Response<Body>,
}

impl Reply {
    fn new(status: StatusCode) -> Reply {
        let mut res = Response::new(body::empty());
        *res.status_mut() = status;
        Reply { res }
    }

    fn header(mut self, name: impl header::IntoHeaderName, value: impl AsRef<str>) -> Reply {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.res.headers_mut().insert(name, v);
        }
        self
    }

    fn length(self, n: u64) -> Reply {
        self.header(header::CONTENT_LENGTH, n.to_string())
    }

    fn body(mut self, body: Body) -> Response<Body> {
        *self.res.body_mut() = body;
        self.res
    }

    fn json(self, value: &impl serde::Serialize, content_type: &str) -> Response<Body> {
        let bytes = serde_json::to_vec(value).expect("json");
        self.header(header::CONTENT_TYPE, content_type)
            .length(bytes.len() as u64)
            .body(body::full(bytes))
    }

    fn done(self) -> Response<Body> {
        self.length(0).res
    }
}

fn upload_location(repo: &RepoName, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

/// The `Range` value of an upload holding `offset` bytes: inclusive last
/// byte, and `0-0` for an empty upload (as the reference registry says it).
fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn upload_reply(status: StatusCode, repo: &RepoName, id: &str, offset: u64) -> Response<Body> {
    Reply::new(status)
        .header(header::LOCATION, upload_location(repo, id))
        .header(header::RANGE, upload_range(offset))
        .header(UPLOAD_UUID_HEADER, id)
        .header(SESSION_ID_HEADER, id)
        .done()
}

fn blob_created(repo: &RepoName, digest: &Digest) -> Response<Body> {
    Reply::new(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{repo}/blobs/{digest}"))
        .header(DIGEST_HEADER, digest.as_str())
        .done()
}

/// The `Content-Range` of an upload chunk: `Ok(None)` without one, `Err`
/// for a malformed one (a 416 per the spec).
fn chunk_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    ranges::content_range(v.to_str().unwrap_or(""))
        .map(Some)
        .ok_or(())
}

/// Whether a request carries a body worth reading.
fn has_body(req: &Request<ReqBody>) -> bool {
    !req.body().is_end_stream()
        && req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() != b"0")
}

fn parse_n(q: &Query) -> Result<Option<usize>, ApiError> {
    match q.get("n") {
        None | Some("") => Ok(None),
        Some(v) => v.parse::<usize>().map(Some).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::Unsupported,
                format!("n must be a non-negative integer, not {v:?}"),
            )
        }),
    }
}

/// `Link: <path?n=N&last=L>; rel="next"` for a page that has a successor.
fn next_link(path: &str, page: &Page, n: Option<usize>) -> Option<String> {
    if !page.more {
        return None;
    }
    let last = page.items.last()?;
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(n) = n {
        q.append_pair("n", &n.to_string());
    }
    q.append_pair("last", last);
    Some(format!("<{path}?{}>; rel=\"next\"", q.finish()))
}

impl Api {
    /// Answers one routed request.
    pub async fn handle(&self, endpoint: Endpoint, req: Request<ReqBody>) -> ApiResult {
        let head = req.method() == Method::HEAD;
        let query = Query::parse(req.uri().query());
        let actor = actor_of(&req);
        let caller = caller_of(&req);
        match (req.method().clone(), endpoint) {
            (Method::GET | Method::HEAD, Endpoint::Base) => {
                Ok(Reply::new(StatusCode::OK).json(&serde_json::json!({}), "application/json"))
            }
            (Method::GET, Endpoint::Catalog) => self.catalog(&query, &caller).await,
            (Method::GET, Endpoint::Tags(repo)) => self.tags(&repo, &query).await,
            (Method::GET | Method::HEAD, Endpoint::Manifest(repo, r)) => {
                self.get_manifest(&repo, &r, head).await
            }
            (Method::PUT, Endpoint::Manifest(repo, r)) => {
                self.put_manifest(&repo, &r, req, &actor).await
            }
            (Method::DELETE, Endpoint::Manifest(repo, r)) => {
                self.registry.delete_manifest(&repo, &r, &actor).await?;
                Ok(Reply::new(StatusCode::ACCEPTED).done())
            }
            (Method::GET | Method::HEAD, Endpoint::Blob(repo, d)) => {
                self.get_blob(&repo, &d, req.headers(), head).await
            }
            (Method::DELETE, Endpoint::Blob(repo, d)) => {
                self.registry.delete_blob(&repo, &d, &actor).await?;
                Ok(Reply::new(StatusCode::ACCEPTED).done())
            }
            (Method::POST, Endpoint::Uploads(repo)) => {
                self.post_upload(&repo, &query, req, &caller).await
            }
            (Method::GET, Endpoint::Upload(repo, id)) => {
                let offset = self.registry.upload_offset(&repo, &id).await?;
                Ok(upload_reply(StatusCode::NO_CONTENT, &repo, &id, offset))
            }
            (Method::PATCH, Endpoint::Upload(repo, id)) => self.patch_upload(&repo, &id, req).await,
            (Method::PUT, Endpoint::Upload(repo, id)) => {
                self.put_upload(&repo, &id, &query, req).await
            }
            (Method::DELETE, Endpoint::Upload(repo, id)) => {
                self.registry.cancel_upload(&repo, &id).await?;
                Ok(Reply::new(StatusCode::NO_CONTENT).done())
            }
            (Method::GET, Endpoint::Referrers(repo, d)) => self.referrers(&repo, &d, &query).await,
            (_, endpoint) => Err(ApiError::method_not_allowed(endpoint.allowed())),
        }
    }

    async fn catalog(&self, q: &Query, caller: &Caller) -> ApiResult {
        let n = parse_n(q)?;
        let page = if caller.unrestricted {
            self.registry.catalog(n, q.get("last")).await?
        } else {
            self.visible_catalog(n, q.get("last"), caller).await?
        };
        let mut reply = Reply::new(StatusCode::OK);
        if let Some(link) = next_link("/v2/_catalog", &page, n) {
            reply = reply.header(header::LINK, link);
        }
        Ok(reply.json(
            &serde_json::json!({ "repositories": page.items }),
            "application/json",
        ))
    }

    /// A catalog page of only the repositories `caller` may pull.
    async fn visible_catalog(
        &self,
        n: Option<usize>,
        last: Option<&str>,
        caller: &Caller,
    ) -> Result<Page, Error> {
        let want = n
            .unwrap_or(registry_core::registry::MAX_PAGE)
            .min(registry_core::registry::MAX_PAGE);
        let mut items = Vec::new();
        let mut after = last.map(str::to_owned);
        while items.len() <= want && want > 0 {
            let page = self.registry.catalog(None, after.as_deref()).await?;
            for name in &page.items {
                if self.auth.allowed(caller, name).pull {
                    items.push(name.clone());
                }
            }
            if !page.more {
                break;
            }
            after = page.items.last().cloned();
        }
        let more = items.len() > want;
        items.truncate(want);
        Ok(Page { items, more })
    }

    async fn tags(&self, repo: &RepoName, q: &Query) -> ApiResult {
        let n = parse_n(q)?;
        let page = self.registry.tags(repo, n, q.get("last")).await?;
        let mut reply = Reply::new(StatusCode::OK);
        if let Some(link) = next_link(&format!("/v2/{repo}/tags/list"), &page, n) {
            reply = reply.header(header::LINK, link);
        }
        Ok(reply.json(
            &serde_json::json!({ "name": repo.as_str(), "tags": page.items }),
            "application/json",
        ))
    }

    async fn get_manifest(&self, repo: &RepoName, r: &Reference, head: bool) -> ApiResult {
        let m = self.registry.get_manifest(repo, r, !head).await?;
        let reply = Reply::new(StatusCode::OK)
            .header(header::CONTENT_TYPE, &m.media_type)
            .header(DIGEST_HEADER, m.digest.as_str())
            .header(header::ETAG, format!("\"{}\"", m.digest))
            .length(m.size);
        Ok(match m.body {
            Some(b) => reply.body(body::full(b)),
            None => reply.body(body::empty()),
        })
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        r: &Reference,
        req: Request<ReqBody>,
        actor: &str,
    ) -> ApiResult {
        let limit = self.registry.limits().max_manifest_bytes;
        let too_large = |size: u64| Error::ManifestTooLarge { size, limit };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(size) = declared.filter(|&s| s > limit) {
            // Read (and drop) a moderately oversized body so the client gets
            // to read the 413 instead of a broken pipe; a huge one is cut off.
            if size <= limit.saturating_mul(16) {
                body::drain(req.into_body(), u64::MAX).await;
            }
            return Err(too_large(size).into());
        }
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes: Bytes = Limited::new(req.into_body(), limit as usize)
            .collect()
            .await
            .map_err(|e| -> ApiError {
                if e.is::<http_body_util::LengthLimitError>() {
                    too_large(limit + 1).into()
                } else {
                    Error::ManifestInvalid(format!("request body ended early: {e}")).into()
                }
            })?
            .to_bytes();
        let stored = self
            .registry
            .put_manifest(repo, r, content_type.as_deref(), bytes, actor)
            .await?;
        let mut reply = Reply::new(StatusCode::CREATED)
            .header(
                header::LOCATION,
                format!("/v2/{repo}/manifests/{}", stored.digest),
            )
            .header(DIGEST_HEADER, stored.digest.as_str());
        if let Some(subject) = &stored.subject {
            reply = reply.header("oci-subject", subject.as_str());
        }
        Ok(reply.done())
    }

    async fn get_blob(
        &self,
        repo: &RepoName,
        d: &Digest,
        headers: &HeaderMap,
        head: bool,
    ) -> ApiResult {
        let size = match head {
            true => self.registry.stat_blob(repo, d).await?,
            false => self.registry.stat_blob_to_read(repo, d).await?,
        };
        // A HEAD reads no bytes, so it does not look where they are.
        let source = match head {
            true => None,
            false => Some(self.registry.blob_source(d, size).await?),
        };
        if let Some(source) = &source
            && self.options.blob_redirect
            && let Some(url) = self.registry.blob_url(d, source).await?
        {
            return Ok(Reply::new(StatusCode::TEMPORARY_REDIRECT)
                .header(header::LOCATION, url)
                .header(DIGEST_HEADER, d.as_str())
                .done());
        }
        let reply = Reply::new(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(DIGEST_HEADER, d.as_str())
            .header(header::ETAG, format!("\"{d}\""))
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CACHE_CONTROL, "max-age=31536000");
        let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
            None => None,
            Some(v) => ranges::blob_range(v, size)?,
        };
        let (reply, span) = match range {
            Some((start, end)) => {
                let reply = Reply {
                    res: {
                        let mut res = reply.res;
                        *res.status_mut() = StatusCode::PARTIAL_CONTENT;
                        res
                    },
                }
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
                (reply, start..end + 1)
            }
            None => (reply, 0..size),
        };
        let reply = reply.length(span.end - span.start);
        let Some(source) = source else {
            return Ok(reply.body(body::empty()));
        };
        let stream = self.registry.read_blob(d, source, span).await?;
        Ok(reply.body(body::stream(stream)))
    }

    async fn post_upload(
        &self,
        repo: &RepoName,
        q: &Query,
        req: Request<ReqBody>,
        caller: &Caller,
    ) -> ApiResult {
        if let Some(mount) = q.get("mount") {
            // A mount that cannot happen (bad arguments, unknown blob, a
            // source the caller may not pull) falls back to an ordinary
            // upload session, as the spec says.
            let from = match q.get("from") {
                Some(f) => f
                    .parse::<RepoName>()
                    .ok()
                    .filter(|f| self.auth.allowed(caller, f.as_str()).pull)
                    .map(Some),
                None if !self.options.automatic_mount => None,
                None if caller.unrestricted => Some(None),
                // Mount from a repository the caller may pull, if any.
                None => match mount.parse::<Digest>() {
                    Ok(d) => self
                        .registry
                        .blob_repositories(&d, 100)
                        .await?
                        .into_iter()
                        .find(|r| self.auth.allowed(caller, r.as_str()).pull)
                        .map(Some),
                    Err(_) => None,
                },
            };
            if let (Ok(digest), Some(from)) = (mount.parse::<Digest>(), from)
                && self
                    .registry
                    .mount_blob(repo, &digest, from.as_ref())
                    .await?
                    .is_some()
            {
                return Ok(blob_created(repo, &digest));
            }
        } else if let Some(digest) = q.get("digest") {
            let digest: Digest = digest.parse()?;
            let (stream, unread) = body::lend(req.into_body());
            let stored = self.registry.put_blob(repo, &digest, stream).await;
            unread.drain_if_failed(&stored).await;
            stored?;
            return Ok(blob_created(repo, &digest));
        }
        let id = self.registry.start_upload(repo).await?;
        Ok(upload_reply(StatusCode::ACCEPTED, repo, &id, 0))
    }

    async fn patch_upload(&self, repo: &RepoName, id: &str, req: Request<ReqBody>) -> ApiResult {
        let range = match chunk_range(req.headers()) {
            Ok(r) => r,
            Err(_) => {
                let offset = self.registry.upload_offset(repo, id).await?;
                return Err(range_error(repo, id, offset));
            }
        };
        let (stream, unread) = body::lend(req.into_body());
        let appended = self.registry.append_upload(repo, id, range, stream).await;
        unread.drain_if_failed(&appended).await;
        match appended {
            Ok(offset) => Ok(upload_reply(StatusCode::ACCEPTED, repo, id, offset)),
            Err(Error::RangeNotSatisfiable { offset }) => Err(range_error(repo, id, offset)),
            Err(e) => Err(e.into()),
        }
    }

    async fn put_upload(
        &self,
        repo: &RepoName,
        id: &str,
        q: &Query,
        req: Request<ReqBody>,
    ) -> ApiResult {
        let Some(digest) = q.get("digest") else {
            return Err(Error::DigestInvalid("the closing PUT needs ?digest=".into()).into());
        };
        let digest: Digest = digest.parse()?;
        let range = match chunk_range(req.headers()) {
            Ok(r) => r,
            Err(_) => {
                let offset = self.registry.upload_offset(repo, id).await?;
                return Err(range_error(repo, id, offset));
            }
        };
        let (stream, unread) = if has_body(&req) {
            let (stream, unread) = body::lend(req.into_body());
            (Some(stream), Some(unread))
        } else {
            (None, None)
        };
        let finished = self
            .registry
            .finish_upload(repo, id, &digest, range, stream)
            .await;
        if let Some(unread) = unread {
            unread.drain_if_failed(&finished).await;
        }
        match finished {
            Ok(_) => Ok(blob_created(repo, &digest)),
            Err(Error::RangeNotSatisfiable { offset }) => Err(range_error(repo, id, offset)),
            Err(e) => Err(e.into()),
        }
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest, q: &Query) -> ApiResult {
        let artifact_type = q.get("artifactType").filter(|t| !t.is_empty());
        let list = self
            .registry
            .referrers(repo, subject, artifact_type)
            .await?;
        let mut reply = Reply::new(StatusCode::OK);
        if artifact_type.is_some() {
            reply = reply.header("oci-filters-applied", "artifactType");
        }
        Ok(reply.json(
            &serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": list,
            }),
            OCI_INDEX,
        ))
    }
}

/// 416 for an out-of-order or malformed chunk, with where the upload is.
fn range_error(repo: &RepoName, id: &str, offset: u64) -> ApiError {
    ApiError::from(Error::RangeNotSatisfiable { offset })
        .with_header("location", upload_location(repo, id))
        .with_header("range", upload_range(offset))
        .with_header(UPLOAD_UUID_HEADER, id)
        .with_header(SESSION_ID_HEADER, id)
}

impl From<Error> for Box<ApiError> {
    fn from(e: Error) -> Box<ApiError> {
        Box::new(e.into())
    }
}
