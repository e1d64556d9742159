//! The administration API under `/admin/`: garbage collection and
//! repository removal. JSON in and out; errors use the same envelope as the
//! registry API. (Access control arrives with authentication: every route
//! here is an administrator's action.)

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use registry_core::index::{ActivityQuery, Collected};
use registry_core::{Digest, Error, ErrorCode, Reference, Registry, RepoName};
use registry_gc::report::RunReport;
use registry_gc::{Collector, GcError, Retainer, RunRequest};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::actor_of;
use crate::body::{self, Body, ReqBody};
use crate::error::ApiError;
use crate::route::{Admin, Query};

/// Largest JSON body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

pub struct AdminApi {
    pub registry: Arc<Registry>,
    pub collector: Arc<Collector>,
    pub retainer: Arc<Retainer>,
    /// The webhook deliverers, when any endpoint is configured.
    pub webhooks: Option<Arc<registry_hooks::Hooks>>,
}

/// Largest page of the activity log.
const MAX_ACTIVITY_PAGE: usize = 1000;

/// `since=`: an RFC 3339 time or unix milliseconds.
fn parse_since(v: &str) -> Result<u64, ApiError> {
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis().max(0) as u64)
        .map_err(|_| {
            invalid(format!(
                "since={v:?}: expected RFC 3339 time or unix milliseconds"
            ))
        })
}

pub(crate) type AdminResult = Result<Response<Body>, ApiError>;

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec_pretty(value).expect("json");
    let mut res = Response::new(body::full(bytes));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("static"),
    );
    res
}

pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
    let mut e = ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, message);
    e.code = "INVALID_REQUEST";
    e
}

fn run_unknown(id: Option<u64>) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::Unsupported,
        match id {
            Some(id) => format!("no garbage collection run {id}"),
            None => "no garbage collection run of that kind has finished yet (dry runs are not savings: ask with ?dry_run=true for the last one)".into(),
        },
    );
    e.code = "RUN_UNKNOWN";
    e
}

impl From<GcError> for ApiError {
    fn from(e: GcError) -> ApiError {
        match e {
            GcError::Running(id) => {
                let mut out = ApiError::new(StatusCode::CONFLICT, ErrorCode::Denied, e.to_string())
                    .with_header("location", format!("/admin/gc/runs/{id}"));
                out.code = "GC_RUNNING";
                out.detail = json!({ "running": id });
                out
            }
            GcError::RunningElsewhere => {
                let mut out = ApiError::new(StatusCode::CONFLICT, ErrorCode::Denied, e.to_string());
                out.code = "GC_RUNNING";
                out
            }
            GcError::RetentionRunning => {
                let mut out = ApiError::new(StatusCode::CONFLICT, ErrorCode::Denied, e.to_string());
                out.code = "RETENTION_RUNNING";
                out
            }
            GcError::Invalid(msg) => invalid(msg),
            GcError::Core(e) => e.into(),
        }
    }
}

/// Reads an optional JSON body (empty means defaults).
pub(crate) async fn read_json<T: for<'de> Deserialize<'de> + Default>(
    req: Request<ReqBody>,
) -> Result<T, ApiError> {
    let bytes: Bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| invalid(format!("request body: {e}")))?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("request body: {e}")))
}

/// A run as listed in the history: everything but the item lists.
fn summary(r: &RunReport) -> Value {
    let mut v = serde_json::to_value(r).expect("report");
    if let Some(o) = v.as_object_mut() {
        o.remove("deleted");
        o.remove("fence_durations_ms");
    }
    v
}

fn collected_json(c: &Collected) -> Value {
    let bytes: u64 = c.freed.iter().map(|b| b.size).sum();
    json!({
        "manifests": c.manifests,
        "manifest_count": c.manifests.len(),
        "blobs": c.freed.len(),
        "bytes": bytes,
        "blob_list": c.freed,
    })
}

impl AdminApi {
    pub async fn handle(&self, endpoint: Admin, req: Request<ReqBody>) -> AdminResult {
        let query = Query::parse(req.uri().query());
        let actor = actor_of(&req);
        match (req.method().clone(), endpoint) {
            (Method::POST, Admin::GcStart) => self.start_gc(req, &actor).await,
            (Method::GET, Admin::GcRuns) => self.gc_runs(&query).await,
            (Method::GET, Admin::GcRun(id)) => {
                let run = self.collector.run(id).await?.ok_or(run_unknown(Some(id)))?;
                Ok(json_response(StatusCode::OK, &json!(run)))
            }
            (Method::GET, Admin::GcLast) => self.gc_last(&query).await,
            (Method::GET, Admin::GcSchedule) => Ok(self.schedule_response()),
            (Method::PUT, Admin::GcSchedule) => self.set_schedule(req).await,
            (Method::GET, Admin::GcReclaimable) => self.reclaimable(&query).await,
            (Method::GET, Admin::GcPreview) => self.preview(&query).await,
            (Method::DELETE, Admin::Repository(repo)) => {
                self.delete_repository(&repo, &query, &actor).await
            }
            (Method::GET, Admin::Activity) => self.activity_page(&query).await,
            (Method::GET, Admin::Repository(repo)) => self.repository(&repo).await,
            (Method::GET, Admin::Blobs) => self.blobs_page(&query).await,
            (Method::GET | Method::PUT, Admin::Retention) => self.retention(req, &actor).await,
            (Method::POST, Admin::RetentionRun) => self.retention_run(req, &actor).await,
            (Method::GET | Method::PUT, Admin::Immutable) => self.immutable(req, &actor).await,
            (Method::GET, Admin::Webhooks) => self.webhooks().await,
            (_, endpoint) => Err(ApiError::method_not_allowed(endpoint.allowed())),
        }
    }

    async fn start_gc(&self, req: Request<ReqBody>, actor: &str) -> AdminResult {
        let request: RunRequest = read_json(req).await?;
        let id = self.collector.start(request, "api", actor).await?;
        let mut res = json_response(
            StatusCode::ACCEPTED,
            &json!({ "id": id, "status": format!("/admin/gc/runs/{id}") }),
        );
        res.headers_mut().insert(
            header::LOCATION,
            format!("/admin/gc/runs/{id}").parse().expect("ascii"),
        );
        Ok(res)
    }

    async fn gc_runs(&self, query: &Query) -> AdminResult {
        let limit = match query.get("limit") {
            Some(l) => l.parse().map_err(|_| invalid("limit must be a number"))?,
            None => 50,
        };
        let runs = self.collector.history(limit).await?;
        let list: Vec<Value> = runs.iter().map(summary).collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "running": self.collector.running_id(), "runs": list }),
        ))
    }

    /// The last savings: the last finished run that was not a dry run (dry
    /// runs free nothing); `?dry_run=true` gives the last dry run instead.
    async fn gc_last(&self, query: &Query) -> AdminResult {
        let dry_run = matches!(query.get("dry_run"), Some("1" | "true"));
        let r = self
            .collector
            .last_of(dry_run)
            .await?
            .ok_or(run_unknown(None))?;
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "id": r.id,
                "state": r.state,
                "finished_at": r.finished_at,
                "bytes_freed": r.bytes_freed,
                "blobs_deleted": r.blobs_deleted,
                "manifests_deleted": r.manifests_deleted,
                "uploads_deleted": r.uploads_deleted,
                "orphans_deleted": r.orphans_deleted,
                "dry_run": r.dry_run,
                "protected_blobs": r.protected_blobs,
                "protected_bytes": r.protected_bytes,
                "duration_ms": r.duration_ms,
                "fences": r.fences,
                "fence_total_ms": r.fence_total_ms,
                "fence_max_ms": r.fence_max_ms,
                "writes_refused": r.writes_refused,
                "stored_bytes": r.stored_bytes,
            }),
        ))
    }

    async fn set_schedule(&self, req: Request<ReqBody>) -> AdminResult {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct Body {
            schedule: Option<String>,
        }
        let b: Body = read_json(req).await?;
        let expr = b
            .schedule
            .filter(|s| !s.trim().is_empty() && s.trim() != "off");
        self.collector.set_schedule(expr.as_deref()).await?;
        Ok(self.schedule_response())
    }

    async fn preview(&self, query: &Query) -> AdminResult {
        let repo: RepoName = query
            .get("repository")
            .ok_or_else(|| invalid("repository= is required"))?
            .parse()?;
        let reference: Reference = query
            .get("reference")
            .ok_or_else(|| invalid("reference= is required (a tag or a digest)"))?
            .parse()
            .map_err(|e: Error| invalid(e.to_string()))?;
        let c = self.registry.preview_delete(&repo, &reference).await?;
        let mut v = collected_json(&c);
        v["repository"] = json!(repo);
        v["reference"] = json!(reference.to_string());
        Ok(json_response(StatusCode::OK, &v))
    }

    async fn delete_repository(&self, repo: &RepoName, query: &Query, actor: &str) -> AdminResult {
        let dry_run = matches!(query.get("dry_run"), Some("1" | "true"));
        let c = self
            .registry
            .delete_repository(repo, dry_run, actor)
            .await?;
        let mut v = collected_json(&c);
        v["repository"] = json!(repo);
        v["dry_run"] = json!(dry_run);
        v["note"] = json!(
            "blobs and bytes are what nothing references any more; a garbage collection run frees them once their grace period is over"
        );
        Ok(json_response(StatusCode::OK, &v))
    }

    async fn blobs_page(&self, query: &Query) -> AdminResult {
        let limit = match query.get("limit") {
            Some(l) => l
                .parse::<usize>()
                .map_err(|_| invalid("limit must be a number"))?,
            None => 1000,
        }
        .clamp(1, 10_000);
        let after = query
            .get("after")
            .map(|a| a.parse::<Digest>().map_err(|e| invalid(e.to_string())))
            .transpose()?;
        let page = self.registry.blobs_page(after.as_ref(), limit).await?;
        let next = (page.len() == limit).then(|| page.last().map(|(d, _)| d.to_string()));
        let list: Vec<Value> = page
            .iter()
            .map(|(d, b)| {
                let kept = if b.in_index { "index" } else { "blob store" };
                json!({ "digest": d, "size": b.size, "refs": b.refs, "kept_in": kept })
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "blobs": list, "next_cursor": next.flatten() }),
        ))
    }

    async fn activity_page(&self, query: &Query) -> AdminResult {
        let limit = match query.get("limit") {
            Some(l) => l
                .parse::<usize>()
                .map_err(|_| invalid("limit must be a number"))?,
            None => 100,
        }
        .clamp(1, MAX_ACTIVITY_PAGE);
        let q = ActivityQuery {
            repository: query.get("repository").map(str::to_owned),
            action: query.get("action").map(str::to_owned),
            since_ms: query.get("since").map(parse_since).transpose()?,
            before: query
                .get("cursor")
                .map(|c| {
                    c.parse::<u64>()
                        .map_err(|_| invalid("cursor must be a number"))
                })
                .transpose()?,
            limit,
        };
        let entries = self.registry.activity_log(&q).await?;
        let next = if entries.len() == limit {
            entries.last().map(|e| e.id)
        } else {
            None
        };
        let list: Vec<Value> = entries
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(e).expect("entry");
                let time = chrono::DateTime::from_timestamp_millis(e.time_ms as i64)
                    .map(|t| t.to_rfc3339());
                v["time"] = json!(time);
                v
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "entries": list, "next_cursor": next }),
        ))
    }

    fn schedule_response(&self) -> Response<Body> {
        json_response(
            StatusCode::OK,
            &json!({
                "schedule": self.collector.schedule(),
                "next_run": self.collector.next_scheduled().map(|t| t.to_rfc3339()),
                "timezone": "UTC",
                "shortcuts": ["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly"],
            }),
        )
    }

    async fn reclaimable(&self, query: &Query) -> AdminResult {
        let totals = self.registry.totals().await?;
        let mut v = json!({
            "blobs": totals.unreferenced_blobs,
            "bytes": totals.unreferenced_bytes,
            "stored_blobs": totals.blobs,
            "stored_bytes": totals.blob_bytes,
            "running": self.collector.running_id(),
        });
        // Optionally, exactly what a run would take now (grace period and
        // client confirmations applied): a walk of the unreferenced table,
        // proportional to the garbage.
        if matches!(query.get("exact"), Some("1" | "true")) {
            let grace = self.collector.config().grace;
            let (blobs, bytes) = self.registry.collectable_now(grace).await?;
            v["collectable_now"] = json!({ "blobs": blobs, "bytes": bytes });
        }
        Ok(json_response(StatusCode::OK, &v))
    }
}
