//! The HTTP server: accept loop, per-request dispatch, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use registry_core::blob::FsBlobStore;
use registry_core::index::RedbIndex;
use registry_core::{Error, ErrorCode, Limits, Registry};
use registry_gc::Collector;
use tokio::net::TcpListener;

use crate::admin::AdminApi;
use crate::api::{API_VERSION_HEADER, Api, ApiOptions};
use crate::body::Body;
use crate::config::Config;
use crate::error::ApiError;
use crate::route::{self, RouteError};

/// Everything a request needs.
pub struct App {
    pub api: Api,
    pub admin: AdminApi,
}

/// The opened store: the registry and the concrete index behind it (the
/// binary closes it on shutdown so queued writes are committed).
pub struct Store {
    pub registry: Arc<Registry>,
    pub index: Arc<RedbIndex>,
}

/// Opens the blob directory and the index file under the data directory.
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.data_dir)?;
    let blobs = Arc::new(FsBlobStore::open(&config.data_dir)?);
    let index = Arc::new(RedbIndex::open(&config.index_path())?);
    let limits = Limits {
        max_manifest_bytes: config.limits.max_manifest_bytes,
        max_blob_bytes: match config.limits.max_blob_bytes {
            0 => u64::MAX,
            n => n,
        },
    };
    let registry = Arc::new(Registry::new(
        index.clone(),
        blobs,
        limits,
        config.gc.fence_wait,
    ));
    Ok(Store { registry, index })
}

impl Store {
    /// Repairs what a crash can leave behind before the first request.
    pub async fn recover(&self) -> anyhow::Result<()> {
        let r = self.registry.recover().await?;
        if r != registry_core::registry::Recovery::default() {
            tracing::warn!(
                sessions_dropped = r.sessions_dropped,
                files_removed = r.files_removed,
                blobs_restored = r.blobs_restored,
                trash_emptied = r.trash_emptied,
                "recovered upload state left by an unclean stop"
            );
        }
        Ok(())
    }
}

impl App {
    pub fn new(registry: Arc<Registry>, collector: Arc<Collector>, config: &Config) -> App {
        App {
            api: Api {
                registry: registry.clone(),
                options: ApiOptions {
                    automatic_mount: config.automatic_mount,
                },
            },
            admin: AdminApi {
                registry,
                collector,
            },
        }
    }

    /// Answers one request; never fails (errors become OCI error responses,
    /// a panic becomes a 500).
    pub async fn serve(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let head = method == Method::HEAD;
        let routed = if path.starts_with("/admin/") {
            route::parse_admin(&path).map(|a| (a.kind(), Handler::Admin(a)))
        } else {
            route::parse(&path).map(|e| (e.kind(), Handler::Registry(e)))
        };
        let (kind, result) = match routed {
            Ok((kind, handler)) => {
                let handled = match handler {
                    Handler::Registry(e) => {
                        AssertUnwindSafe(self.api.handle(e, req))
                            .catch_unwind()
                            .await
                    }
                    Handler::Admin(a) => {
                        AssertUnwindSafe(self.admin.handle(a, req))
                            .catch_unwind()
                            .await
                    }
                };
                let handled = handled.unwrap_or_else(|_| {
                    Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        ErrorCode::Internal,
                        "internal error; the server log has the details",
                    ))
                });
                (kind, handled)
            }
            Err(RouteError::NotFound) => ("unknown", Err(ApiError::not_found())),
            Err(RouteError::Invalid(e)) => ("invalid", Err(route_error(&method, e))),
        };
        let mut res = result.unwrap_or_else(|e| e.into_response(head));
        res.headers_mut()
            .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
        tracing::info!(
            method = %method,
            route = kind,
            path = %path,
            status = res.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "request"
        );
        Ok(res)
    }
}

enum Handler {
    Registry(route::Endpoint),
    Admin(route::Admin),
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

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    grace: std::time::Duration,
) -> anyhow::Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let service = tower::service_fn(move |req: Request<Incoming>| app.clone().serve(req));
    tokio::pin!(shutdown);
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
                let conn = builder.serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service.clone()),
                );
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
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
