//! Thin HTTP client for the distribution API: in-memory request bodies (so a
//! request can be replayed after an authentication challenge), Basic and
//! bearer-token authentication, and responses that can describe themselves
//! in failure messages.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderMap};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use crate::auth::{self, Credentials};
use crate::config::Config;

const TIMEOUT: Duration = Duration::from_secs(30);
const USER_AGENT: &str = concat!("oci-conformance-rs/", env!("CARGO_PKG_VERSION"));
/// Key under which a Basic `Authorization` value applies to every request.
const ANY_REPOSITORY: &str = "*";
/// Response headers worth showing when a case fails.
const INTERESTING_HEADERS: &[&str] = &[
    "Location",
    "Docker-Content-Digest",
    "Content-Type",
    "Content-Length",
    "Range",
    "OCI-Chunk-Min-Length",
    "OCI-Subject",
    "OCI-Filters-Applied",
    "Link",
    "WWW-Authenticate",
];
const BODY_EXCERPT_CHARS: usize = 600;

pub(crate) struct Client {
    http: reqwest::Client,
    root: Url,
    credentials: Option<Credentials>,
    /// `Authorization` values that worked, by repository name.
    authorizations: Mutex<HashMap<String, String>>,
    debug: bool,
}

impl Client {
    pub fn new(config: &Config, debug: bool) -> anyhow::Result<Client> {
        let root = Url::parse(config.root_url.trim_end_matches('/'))
            .with_context(|| format!("invalid registry URL {:?}", config.root_url))?;
        if !matches!(root.scheme(), "http" | "https") {
            bail!("registry URL must be http or https: {root}");
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            .context("building the HTTP client")?;
        let credentials = match (&config.username, &config.password) {
            (Some(username), password) => Some(Credentials {
                username: username.clone(),
                password: password.clone().unwrap_or_default(),
            }),
            (None, _) => None,
        };
        Ok(Client {
            http,
            root,
            credentials,
            authorizations: Mutex::new(HashMap::new()),
            debug,
        })
    }

    /// Absolute URL for a registry path such as `/v2/<name>/tags/list`.
    pub fn url(&self, path: &str) -> Url {
        let mut url = self.root.clone();
        url.set_path(path);
        url.set_query(None);
        url
    }

    pub fn request(&self, method: Method, path: &str) -> Request<'_> {
        self.request_url(method, self.url(path))
    }

    /// A request to a URL handed out by the registry (e.g. a `Location`).
    pub fn request_url(&self, method: Method, url: Url) -> Request<'_> {
        // Methods that carry a body always send one, so an empty body still
        // goes out with `Content-Length: 0`.
        let body = matches!(method, Method::POST | Method::PUT | Method::PATCH).then(Bytes::new);
        Request {
            client: self,
            method,
            url,
            headers: Vec::new(),
            body,
        }
    }

    pub fn get(&self, path: &str) -> Request<'_> {
        self.request(Method::GET, path)
    }

    pub fn head(&self, path: &str) -> Request<'_> {
        self.request(Method::HEAD, path)
    }

    pub fn post(&self, path: &str) -> Request<'_> {
        self.request(Method::POST, path)
    }

    pub fn put(&self, path: &str) -> Request<'_> {
        self.request(Method::PUT, path)
    }

    pub fn delete(&self, path: &str) -> Request<'_> {
        self.request(Method::DELETE, path)
    }

    fn cached_authorization(&self, repository: &str) -> Option<String> {
        let map = self
            .authorizations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(repository)
            .or_else(|| map.get(ANY_REPOSITORY))
            .cloned()
    }

    fn remember_authorization(&self, repository: &str, value: &str) {
        let mut map = self
            .authorizations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.insert(repository.to_owned(), value.to_owned());
    }

    /// Answers the challenges of a 401 response. Returns the `Authorization`
    /// value to retry with, or `None` when no challenge can be answered.
    async fn answer_challenge(
        &self,
        repository: &str,
        challenged: &Response,
    ) -> anyhow::Result<Option<String>> {
        let challenges = auth::challenges(&challenged.headers);
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let value = auth::fetch_bearer_token(
                &self.http,
                &challenged.url,
                bearer,
                self.credentials.as_ref(),
            )
            .await?;
            self.remember_authorization(repository, &value);
            return Ok(Some(value));
        }
        match &self.credentials {
            Some(credentials) if challenges.iter().any(|c| c.scheme == "basic") => {
                let value = credentials.basic_header();
                self.remember_authorization(ANY_REPOSITORY, &value);
                Ok(Some(value))
            }
            _ => Ok(None),
        }
    }

    async fn execute(
        &self,
        request: &Request<'_>,
        authorization: Option<&str>,
    ) -> anyhow::Result<Response> {
        let mut builder = self
            .http
            .request(request.method.clone(), request.url.clone());
        for (name, value) in &request.headers {
            builder = builder.header(*name, value.as_str());
        }
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        if let Some(body) = &request.body {
            // hyper leaves out Content-Length for an empty body, but the spec
            // requires `Content-Length: 0` on e.g. the POST opening a chunked
            // upload.
            if body.is_empty() {
                builder = builder.header(CONTENT_LENGTH, "0");
            }
            builder = builder.body(body.clone());
        }
        if self.debug {
            eprintln!("> {} {}", request.method, request.url);
        }
        let response = builder
            .send()
            .await
            .with_context(|| format!("{} {} failed", request.method, request.url))?;
        let status = response.status();
        let url = response.url().clone();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("reading the response to {} {}", request.method, url))?;
        if self.debug {
            eprintln!("< {status} ({} bytes)", body.len());
        }
        Ok(Response {
            method: request.method.clone(),
            url,
            status,
            headers,
            body,
        })
    }
}

/// A request under construction; `send` performs it, answering at most one
/// authentication challenge.
pub(crate) struct Request<'a> {
    client: &'a Client,
    method: Method,
    url: Url,
    headers: Vec<(&'static str, String)>,
    body: Option<Bytes>,
}

impl Request<'_> {
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn query(mut self, key: &str, value: &str) -> Self {
        self.url.query_pairs_mut().append_pair(key, value);
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sends the body as `application/octet-stream`.
    pub fn octet_stream(self, body: impl Into<Bytes>) -> Self {
        self.header("Content-Type", "application/octet-stream")
            .body(body)
    }

    pub async fn send(self) -> anyhow::Result<Response> {
        let client = self.client;
        let repository = repository_of(&self.url);
        let cached = client.cached_authorization(&repository);
        let first = client.execute(&self, cached.as_deref()).await?;
        if first.status != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let retry_with = client
            .answer_challenge(&repository, &first)
            .await
            .with_context(|| {
                format!(
                    "answering the authentication challenge of {}",
                    first.summary_line()
                )
            })?;
        match retry_with {
            Some(authorization) => client.execute(&self, Some(&authorization)).await,
            None => Ok(first),
        }
    }
}

/// Repository name from a `/v2/<name>/...` path; empty for other paths.
fn repository_of(url: &Url) -> String {
    let Some(rest) = url.path().strip_prefix("/v2/") else {
        return String::new();
    };
    ["/blobs/", "/manifests/", "/tags/", "/referrers/"]
        .iter()
        .filter_map(|marker| rest.find(marker))
        .min()
        .map(|end| rest[..end].to_owned())
        .unwrap_or_default()
}

/// A fully read response.
pub(crate) struct Response {
    pub method: Method,
    pub url: Url,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Deserialize)]
struct ErrorBody {
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    code: String,
}

impl Response {
    pub fn status_code(&self) -> u16 {
        self.status.as_u16()
    }

    /// First value of a header, if present and valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }

    /// The `Location` header resolved against the request URL.
    pub fn location(&self) -> Option<Url> {
        let raw = self.header("Location").filter(|l| !l.is_empty())?;
        self.url.join(raw).ok()
    }

    /// Media type from `Content-Type`, without parameters.
    pub fn content_type(&self) -> Option<&str> {
        self.header("Content-Type")
            .map(|v| v.split(';').next().unwrap_or(v).trim())
    }

    /// Error codes of an OCI error body, or `None` when the body is not one.
    pub fn error_codes(&self) -> Option<Vec<String>> {
        let parsed: ErrorBody = serde_json::from_slice(&self.body).ok()?;
        Some(parsed.errors.into_iter().map(|e| e.code).collect())
    }

    /// `METHOD /path -> status`.
    pub fn summary_line(&self) -> String {
        let mut target = self.url.path().to_owned();
        if let Some(query) = self.url.query() {
            target.push('?');
            target.push_str(query);
        }
        format!("{} {} -> {}", self.method, target, self.status)
    }

    /// Status line, relevant headers and an excerpt of the body, for failure
    /// messages.
    pub fn describe(&self) -> String {
        let mut out = self.summary_line();
        let headers: Vec<String> = INTERESTING_HEADERS
            .iter()
            .filter_map(|name| self.header(name).map(|value| format!("{name}: {value}")))
            .collect();
        if !headers.is_empty() {
            let _ = write!(out, "\n  headers: {}", headers.join("; "));
        }
        if !self.body.is_empty() {
            let _ = write!(out, "\n  body: {}", excerpt(&self.body));
        }
        out
    }
}

/// Body as text (shortened), or a byte count when it is binary.
fn excerpt(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(text) => {
            let compact: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if compact.chars().count() > BODY_EXCERPT_CHARS {
                let cut: String = compact.chars().take(BODY_EXCERPT_CHARS).collect();
                format!("{cut}... ({} bytes in total)", body.len())
            } else {
                compact
            }
        }
        Err(_) => format!("<{} bytes of binary data>", body.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_is_extracted_from_paths() {
        let url = |p: &str| Url::parse(&format!("http://r{p}")).unwrap();
        assert_eq!(repository_of(&url("/v2/")), "");
        assert_eq!(repository_of(&url("/v2/a/b/blobs/uploads/x")), "a/b");
        assert_eq!(repository_of(&url("/v2/a/manifests/latest")), "a");
        assert_eq!(repository_of(&url("/v2/a/tags/list")), "a");
        assert_eq!(repository_of(&url("/v2/a/referrers/sha256:x")), "a");
        // A repository whose name contains a marker-like component.
        assert_eq!(repository_of(&url("/v2/x/blobs/manifests/y")), "x");
    }

    #[test]
    fn excerpt_shortens_and_flags_binary() {
        assert_eq!(excerpt(b"{\n \"a\": 1\n}"), "{ \"a\": 1 }");
        assert!(excerpt(&[0xff, 0xfe]).contains("2 bytes of binary data"));
        let long = "x".repeat(BODY_EXCERPT_CHARS + 10);
        assert!(excerpt(long.as_bytes()).ends_with("bytes in total)"));
    }

    #[test]
    fn url_keeps_root_and_sets_path() {
        let config = Config::all_workflows("http://127.0.0.1:5000/", "ns");
        let client = Client::new(&config, false).unwrap();
        assert_eq!(
            client.url("/v2/ns/tags/list").as_str(),
            "http://127.0.0.1:5000/v2/ns/tags/list"
        );
        assert!(Client::new(&Config::all_workflows("ftp://x", "ns"), false).is_err());
    }
}
