//! The HTTP server: accept loop, per-request dispatch, health, metrics,
//! request logs, graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::FutureExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use registry_core::{Error, ErrorCode, Registry};
use registry_gc::{Collector, Retainer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::activity::Actor;
use crate::admin::AdminApi;
use crate::api::{API_VERSION_HEADER, Api, ApiOptions};
use crate::auth::{Actions, Auth, Need, Origin};
use crate::body::{self, Body, Counted};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::route::{self, RouteError};
use crate::ui::Ui;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The API (and `/metrics` unless it has its own listener).
    Main { metrics: bool },
    /// Only `/metrics`, `/healthz` and `/readyz`.
    Metrics,
}

/// What the server needs to know about an accepted connection.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    pub listener: Listener,
    pub tls: bool,
}

/// Everything a request needs.
pub struct App {
    pub api: Api,
    pub admin: AdminApi,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<Auth>,
    /// The web UI, unless disabled.
    pub ui: Option<Ui>,
    registry: Arc<Registry>,
    shutting_down: AtomicBool,
}

/// How the HTTP layer behaves.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// `POST ?mount=<digest>` without `from=` mounts a blob stored anywhere.
    pub automatic_mount: bool,
    /// Serve the web UI under `/ui/`.
    pub ui: bool,
    /// The UI's cookies are `Secure` (served over TLS).
    pub secure_cookies: bool,
    /// Blob GETs redirect to the blob store's presigned URLs.
    pub blob_redirect: bool,
    /// The key UI sessions are signed with, shared by a cluster's nodes
    /// (`None`: one of this process).
    pub ui_key: Option<Vec<u8>>,
}

enum Handler {
    Registry(route::Endpoint),
    Admin(route::Admin),
    Token,
    Ui,
    Metrics,
    Health,
    Ready,
}

/// What authorization a request needs.
fn need_of(handler: &Handler, method: &Method, query: Option<&str>) -> Need {
    use route::Endpoint as E;
    let repo = |r: &registry_core::RepoName, a: Actions| Need::Repository(r.to_string(), a);
    match handler {
        // The UI authorizes its own pages (it has a sign-in form).
        Handler::Token | Handler::Ui | Handler::Metrics | Handler::Health | Handler::Ready => {
            Need::Open
        }
        Handler::Admin(_) => Need::Admin,
        Handler::Registry(e) => match e {
            E::Base => Need::Login,
            E::Catalog => Need::Catalog,
            E::Tags(r) | E::Referrers(r, _) => repo(r, Actions::PULL),
            E::Manifest(r, _) | E::Blob(r, _) => match *method {
                Method::GET | Method::HEAD => repo(r, Actions::PULL),
                Method::DELETE => repo(r, Actions::DELETE),
                _ => repo(r, Actions::PUSH),
            },
            E::Uploads(r) => {
                let q = route::Query::parse(query);
                match (q.get("mount"), q.get("from")) {
                    (Some(_), Some(from)) => Need::Mount {
                        target: r.to_string(),
                        from: from.to_owned(),
                    },
                    _ => repo(r, Actions::PUSH),
                }
            }
            E::Upload(r, _) => repo(r, Actions::PUSH),
        },
    }
}

fn json_reply(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let bytes = serde_json::to_vec(&value).expect("json");
    let mut res = Response::new(body::full(bytes));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

impl App {
    pub fn new(
        registry: Arc<Registry>,
        collector: Arc<Collector>,
        retainer: Arc<Retainer>,
        metrics: Arc<Metrics>,
        auth: Arc<Auth>,
        options: AppOptions,
    ) -> App {
        let ui_key = options.ui_key.clone();
        App {
            api: Api {
                registry: registry.clone(),
                options: ApiOptions {
                    automatic_mount: options.automatic_mount,
                    blob_redirect: options.blob_redirect,
                },
                auth: auth.clone(),
            },
            ui: options.ui.then(|| {
                Ui::new(
                    registry.clone(),
                    collector.clone(),
                    retainer.clone(),
                    auth.clone(),
                    options.secure_cookies,
                    ui_key,
                )
            }),
            auth,
            admin: AdminApi {
                registry: registry.clone(),
                collector,
                retainer,
                webhooks: None,
            },
            metrics,
            registry,
            shutting_down: AtomicBool::new(false),
        }
    }

    /// The app with webhook deliverers to show under `/admin/webhooks`.
    pub fn with_webhooks(mut self, hooks: Arc<registry_hooks::Hooks>) -> App {
        self.admin.webhooks = Some(hooks);
        self
    }

    fn route(&self, path: &str, listener: Listener) -> Result<(&'static str, Handler), RouteError> {
        match path {
            "/healthz" => return Ok(("healthz", Handler::Health)),
            "/readyz" => return Ok(("readyz", Handler::Ready)),
            "/auth/token" if listener != Listener::Metrics => return Ok(("token", Handler::Token)),
            p if (p == "/ui" || p.starts_with("/ui/"))
                && listener != Listener::Metrics
                && self.ui.is_some() =>
            {
                return Ok(("ui", Handler::Ui));
            }
            "/metrics" if listener != (Listener::Main { metrics: false }) => {
                return Ok(("metrics", Handler::Metrics));
            }
            _ => {}
        }
        if listener == Listener::Metrics {
            return Err(RouteError::NotFound);
        }
        if path.starts_with("/admin/") {
            route::parse_admin(path).map(|a| (a.kind(), Handler::Admin(a)))
        } else {
            route::parse(path).map(|e| (e.kind(), Handler::Registry(e)))
        }
    }

    /// Ready: the index answers and takes writes, the blob store takes
    /// writes, the filesystems they write to are above the free-space mark,
    /// and the server is not shutting down. Each part says why it is not ok.
    async fn readiness(&self) -> Response<Body> {
        let r = self.registry.readiness().await;
        let stopping = self.shutting_down.load(Ordering::Relaxed);
        let ready = r.ready() && !stopping;
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let ok = |x: Result<(), String>| x.err().unwrap_or_else(|| "ok".into());
        let filesystems: serde_json::Map<String, serde_json::Value> = r
            .filesystems
            .iter()
            .map(|f| {
                let figures = json!({
                    "free_bytes": f.usage.free_bytes,
                    "min_free_bytes": f.min_free_bytes,
                });
                (f.store.to_owned(), figures)
            })
            .collect();
        json_reply(
            status,
            json!({
                "ready": ready,
                "index": ok(r.index),
                "storage": ok(r.storage),
                "space": ok(r.space),
                "filesystems": filesystems,
                "shutting_down": stopping,
            }),
        )
    }

    /// Refuses a push (507) that would leave less free space than the
    /// low-water mark, before anything of it is stored; its size is the
    /// request's `Content-Length` when it has one. The refused body is
    /// drained so the client reads the answer.
    async fn admit(
        &self,
        handler: &Handler,
        req: Request<body::ReqBody>,
    ) -> Result<Request<body::ReqBody>, ApiError> {
        use route::Endpoint as E;
        let push = matches!(
            (handler, req.method()),
            (
                Handler::Registry(E::Manifest(..) | E::Upload(..)),
                &Method::PUT
            ) | (Handler::Registry(E::Upload(..)), &Method::PATCH)
                | (Handler::Registry(E::Uploads(..)), &Method::POST)
        );
        if !push {
            return Ok(req);
        }
        let incoming = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        match self.registry.admit_push(incoming).await {
            Ok(()) => Ok(req),
            Err(refused) => {
                body::drain(req.into_body(), body::DRAIN_LIMIT).await;
                Err(refused.into())
            }
        }
    }

    async fn dispatch(
        &self,
        handler: Handler,
        req: Request<body::ReqBody>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, ApiError> {
        let req = self.admit(&handler, req).await?;
        match handler {
            Handler::Token => {
                let method = req.method().clone();
                let headers = req.headers().clone();
                let query = pairs(req.uri().query().unwrap_or("").as_bytes());
                let form = if method == Method::POST {
                    let bytes = http_body_util::Limited::new(req.into_body(), 64 * 1024)
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    pairs(&bytes)
                } else {
                    Vec::new()
                };
                let body = self
                    .auth
                    .issue(&method, &headers, &query, &form, peer.ip())
                    .await?;
                Ok(json_reply(StatusCode::OK, body))
            }
            Handler::Registry(e) => self.api.handle(e, req).await,
            Handler::Admin(a) => self.admin.handle(a, req).await,
            Handler::Ui => Ok(self
                .ui
                .as_ref()
                .expect("routed only when enabled")
                .handle(req, peer)
                .await),
            Handler::Health => Ok(json_reply(StatusCode::OK, json!({"status": "ok"}))),
            Handler::Ready => Ok(self.readiness().await),
            Handler::Metrics => {
                let text = self.metrics.render(&self.api.registry).await?;
                let mut res = Response::new(body::full(text));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Ok(res)
            }
        }
    }

    /// Answers one request; never fails (errors become OCI error responses,
    /// a panic becomes a 500).
    pub async fn serve(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Conn,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 128)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let req = req.map(|b| Counted::new(b, self.metrics.received_bytes.clone()));
        let (kind, result) = match self.route(&path, conn.listener) {
            Ok((kind, handler)) => (kind, self.authorized(handler, req, conn).await),
            Err(RouteError::NotFound) => ("unknown", Err(ApiError::not_found())),
            Err(RouteError::Invalid(e)) => ("invalid", Err(route_error(&method, e))),
        };
        let res = result.unwrap_or_else(|e| e.into_response(method == Method::HEAD));
        let done = Done {
            method: &method,
            kind,
            path: &path,
            request_id: &request_id,
            peer: conn.peer,
            started,
        };
        Ok(self.finish(res, &done))
    }

    /// Authorizes a routed request, then dispatches it (a panic in a
    /// handler becomes a 500).
    async fn authorized(
        &self,
        handler: Handler,
        mut req: Request<body::ReqBody>,
        conn: Conn,
    ) -> Result<Response<Body>, ApiError> {
        let need = need_of(&handler, req.method(), req.uri().query());
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_owned();
        let forwarded = req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok());
        let scheme = match forwarded {
            Some("https") => "https",
            Some("http") => "http",
            _ if conn.tls => "https",
            _ => "http",
        };
        let origin = Origin {
            scheme,
            host: &host,
            peer: conn.peer.ip(),
        };
        let caller = self.auth.authorize(req.headers(), &need, &origin).await?;
        let actor = caller
            .principal
            .name()
            .map(str::to_owned)
            .unwrap_or_else(|| conn.peer.ip().to_string());
        req.extensions_mut().insert(Actor(actor));
        req.extensions_mut().insert(caller);
        AssertUnwindSafe(self.dispatch(handler, req, conn.peer))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error; the server log has the details",
                ))
            })
    }

    /// Adds the common headers, counts and logs the request.
    fn finish(&self, res: Response<Body>, done: &Done<'_>) -> Response<Body> {
        let (mut parts, body) = res.into_parts();
        parts
            .headers
            .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
        if let Ok(v) = HeaderValue::from_str(done.request_id) {
            parts.headers.insert("x-request-id", v);
        }
        let took = done.started.elapsed();
        let status = parts.status.as_u16();
        self.metrics
            .request(done.method.as_str(), done.kind, status, took);
        let bytes = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info!(
            method = %done.method,
            route = done.kind,
            path = %done.path,
            status,
            bytes,
            micros = took.as_micros() as u64,
            request_id = %done.request_id,
            client = %done.peer,
            "request"
        );
        let body = Counted::new(body, self.metrics.sent_bytes.clone()).boxed_unsync();
        Response::from_parts(parts, body)
    }
}

/// What the request log says about an answered request.
struct Done<'a> {
    method: &'a Method,
    kind: &'static str,
    path: &'a str,
    request_id: &'a str,
    peer: SocketAddr,
    started: Instant,
}

/// A malformed path parameter. A tag that cannot exist is "unknown" when
/// read or deleted (clients probe with such names) and invalid when pushed.
fn route_error(method: &Method, e: Error) -> ApiError {
    match e {
        Error::ReferenceInvalid(msg) if *method != Method::PUT => {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown, msg)
        }
        e => e.into(),
    }
}

/// How long a client may take to finish a TLS handshake.
const TLS_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

/// Form or query pairs, decoded.
fn pairs(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets
/// in-flight requests finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    kind: Listener,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) -> anyhow::Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer): (_, SocketAddr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small responses must not wait for delayed ACKs (Nagle).
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let conn = Conn { peer, listener: kind, tls: tls.is_some() };
                let service = tower::service_fn(move |req: Request<Incoming>| app.clone().serve(req, conn));
                let service = TowerToHyperService::new(service);
                let (builder, watcher) = (builder.clone(), graceful.watcher());
                match tls.clone() {
                    None => {
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        let conn = watcher.watch(conn.into_owned());
                        tokio::spawn(async move {
                            if let Err(e) = conn.await {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                        });
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            let handshake = tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await;
                            let stream = match handshake {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                            if let Err(e) = watcher.watch(conn.into_owned()).await {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                        });
                    }
                }
            }
            () = shutdown.cancelled() => break,
        }
    }
    app.shutting_down.store(true, Ordering::Relaxed);
    drop(listener);
    tracing::info!(?kind, "shutting down: waiting for in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
