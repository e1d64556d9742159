//! The web UI under `/ui/`: server-rendered pages (maud), one small script
//! for confirmations, no external assets. It uses the same authorization
//! as the API (a session cookie from the sign-in form, or Basic
//! credentials), shows only what the user may pull, offers delete and GC
//! controls only to users who may use them, and protects every form with a
//! CSRF token bound to the signed session.

mod pages;
mod rules;
mod rules_form;
mod rules_pages;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use maud::Markup;
use registry_core::index::ActivityQuery;
use registry_core::manifest::Kind;
use registry_core::{Error, Reference, Registry, RepoName};
use registry_gc::{Collector, Retainer, RunRequest};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::pages::{Frame, GcPage, RepoPage};
use crate::auth::{Auth, Caller, Principal};
use crate::body::{self, Body, ReqBody};
use crate::route::Query;

const COOKIE: &str = "berth_session";
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
const PAGE: usize = 50;

/// The signed content of the session cookie.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    /// The signed-in user; empty when nobody signed in.
    sub: String,
    exp: u64,
    /// The CSRF token every form of this session must carry.
    csrf: String,
}

pub struct Ui {
    pub registry: Arc<Registry>,
    pub collector: Arc<Collector>,
    pub retainer: Arc<Retainer>,
    pub auth: Arc<Auth>,
    key: Vec<u8>,
    secure: bool,
}

/// Who is looking, and how to answer them.
struct Viewer {
    caller: Caller,
    user: Option<String>,
    actor: String,
    session: Session,
    /// A new cookie to send (fresh session, sign-in, sign-out).
    set_cookie: Option<String>,
    flash: Option<(String, bool)>,
}

fn random_token() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn cookie_of(req: &Request<ReqBody>) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn pairs(bytes: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

impl Ui {
    pub fn new(
        registry: Arc<Registry>,
        collector: Arc<Collector>,
        retainer: Arc<Retainer>,
        auth: Arc<Auth>,
        secure: bool,
        key: Option<Vec<u8>>,
    ) -> Ui {
        // Sessions are signed with the key the cluster's nodes share, or
        // one of this process (a restart then signs everyone out, which is
        // acceptable for an admin UI on one node).
        let key = key.unwrap_or_else(|| {
            let mut key = vec![0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
            key
        });
        Ui {
            registry,
            collector,
            retainer,
            auth,
            key,
            secure,
        }
    }

    fn sign(&self, s: &Session) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            s,
            &EncodingKey::from_secret(&self.key),
        )
        .expect("HMAC")
    }

    fn verify(&self, token: &str) -> Option<Session> {
        let mut v = Validation::new(Algorithm::HS256);
        v.required_spec_claims = ["exp".to_owned()].into();
        // The session's lifetime is checked against the registry's clock.
        v.validate_exp = false;
        let now = self.registry.clock().now_ms() / 1000;
        jsonwebtoken::decode::<Session>(token, &DecodingKey::from_secret(&self.key), &v)
            .ok()
            .map(|d| d.claims)
            .filter(|s| s.exp >= now)
    }

    fn cookie(&self, s: &Session) -> String {
        format!(
            "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.sign(s),
            SESSION_LIFETIME.as_secs(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    fn session_for(&self, user: &str) -> (Session, String) {
        let s = Session {
            sub: user.to_owned(),
            exp: self.registry.clock().now_ms() / 1000 + SESSION_LIFETIME.as_secs(),
            csrf: random_token(),
        };
        let c = self.cookie(&s);
        (s, c)
    }

    /// Works out who is asking: the session's user, else Basic credentials,
    /// else nobody (with a fresh session so forms carry a CSRF token).
    async fn viewer(
        &self,
        req: &Request<ReqBody>,
        peer: SocketAddr,
    ) -> Result<Viewer, Response<Body>> {
        let query = Query::parse(req.uri().query());
        let flash = query
            .get("msg")
            .map(|m| (m.to_owned(), false))
            .or_else(|| query.get("err").map(|m| (m.to_owned(), true)));
        let (session, set_cookie) = match cookie_of(req).and_then(|c| self.verify(&c)) {
            Some(s) => (s, None),
            None => {
                let (s, c) = self.session_for("");
                (s, Some(c))
            }
        };
        let mut user = (!session.sub.is_empty()).then(|| session.sub.clone());
        if user.is_none()
            && let Some((u, p)) = basic_credentials(req)
        {
            match self.auth.login(&u, &p, peer.ip()).await {
                Ok(true) => user = Some(u),
                Ok(false) => {}
                Err(e) => return Err(e.into_response(false)),
            }
        }
        let caller = if !self.auth.enabled() {
            Caller::open()
        } else {
            Caller {
                principal: user.clone().map_or(Principal::Anonymous, Principal::User),
                unrestricted: false,
                claims: None,
            }
        };
        Ok(Viewer {
            actor: user.clone().unwrap_or_else(|| peer.ip().to_string()),
            caller,
            user,
            session,
            set_cookie,
            flash,
        })
    }

    fn frame<'a>(&self, v: &'a Viewer) -> Frame<'a> {
        Frame {
            user: v.user.as_deref(),
            auth_enabled: self.auth.enabled(),
            admin: self.auth.is_admin(&v.caller),
            csrf: &v.session.csrf,
            flash: v.flash.as_ref().map(|(t, e)| (t.as_str(), *e)),
        }
    }

    /// Answers one request under `/ui`.
    pub async fn handle(&self, req: Request<ReqBody>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path().to_owned();
        match path.as_str() {
            "/ui" => return redirect("/ui/", None),
            "/ui/static/app.css" => {
                return asset("text/css; charset=utf-8", include_str!("app.css"));
            }
            "/ui/static/app.js" => {
                return asset("text/javascript; charset=utf-8", include_str!("app.js"));
            }
            _ => {}
        }
        let mut v = match self.viewer(&req, peer).await {
            Ok(v) => v,
            Err(res) => return res,
        };
        let method = req.method().clone();
        let query = Query::parse(req.uri().query());
        let mut res = if method == Method::POST {
            let fresh = v.set_cookie.is_some();
            let form = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(c) => pairs(&c.to_bytes()),
                Err(_) => HashMap::new(),
            };
            // A form must carry this session's token: a page of another
            // site cannot know it (and the cookie is SameSite=Strict).
            let login_form = path == "/ui/login";
            if !login_form && (fresh || form.get("csrf") != Some(&v.session.csrf)) {
                self.page(
                    &v,
                    StatusCode::FORBIDDEN,
                    pages::message(
                        &self.frame(&v),
                        "Expired form",
                        "This form is out of date; reload the page and try again.",
                    ),
                )
            } else {
                self.post(&mut v, &path, &form, peer).await
            }
        } else if method == Method::GET || method == Method::HEAD {
            self.get(&v, &path, &query).await
        } else {
            self.page(
                &v,
                StatusCode::METHOD_NOT_ALLOWED,
                pages::message(
                    &self.frame(&v),
                    "Not allowed",
                    "Use the page's links and buttons.",
                ),
            )
        };
        if let Some(c) = &v.set_cookie
            && let Ok(value) = HeaderValue::from_str(c)
        {
            res.headers_mut().append(header::SET_COOKIE, value);
        }
        res
    }

    fn page(&self, _v: &Viewer, status: StatusCode, markup: Markup) -> Response<Body> {
        let bytes = Bytes::from(markup.into_string());
        let mut res = Response::new(body::full(bytes));
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
        );
        res
    }

    fn forbidden(&self, v: &Viewer, what: &str) -> Response<Body> {
        let status = if v.user.is_none() && self.auth.enabled() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        let text = if status == StatusCode::UNAUTHORIZED {
            format!("{what}: sign in first.")
        } else {
            format!("{what}: your account may not do this.")
        };
        self.page(
            v,
            status,
            pages::message(&self.frame(v), "Not allowed", &text),
        )
    }

    fn error_page(&self, v: &Viewer, e: impl Into<crate::error::ApiError>) -> Response<Body> {
        let api: crate::error::ApiError = e.into();
        let status = if api.status.is_server_error() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            api.status
        };
        self.page(
            v,
            status,
            pages::message(&self.frame(v), "Cannot show this", &api.message),
        )
    }

    async fn get(&self, v: &Viewer, path: &str, q: &Query) -> Response<Body> {
        let f = self.frame(v);
        if path == "/ui/" {
            return self.home(v, q).await;
        }
        if path == "/ui/login" {
            return self.page(v, StatusCode::OK, pages::login(&f, None));
        }
        if let Some(name) = path.strip_prefix("/ui/r/") {
            return self.repository(v, name).await;
        }
        let admin = self.auth.is_admin(&v.caller);
        if path == "/ui/activity" {
            if !admin {
                return self.forbidden(v, "The activity log is for administrators");
            }
            return self.activity_page(v, q).await;
        }
        if path == "/ui/gc" {
            if !admin {
                return self.forbidden(v, "Garbage collection is for administrators");
            }
            return self.gc_page(v).await;
        }
        if path == "/ui/retention" || path == "/ui/immutable" {
            if !admin {
                return self.forbidden(v, "Tag rules are for administrators");
            }
            return match path {
                "/ui/retention" => self.retention_get(v).await,
                _ => self.immutable_get(v).await,
            };
        }
        if let Some(id) = path.strip_prefix("/ui/gc/runs/") {
            if !admin {
                return self.forbidden(v, "Garbage collection is for administrators");
            }
            return self.gc_run_page(v, id).await;
        }
        self.page(
            v,
            StatusCode::NOT_FOUND,
            pages::message(&f, "Not found", "There is no such page."),
        )
    }

    /// The repositories page.
    async fn home(&self, v: &Viewer, q: &Query) -> Response<Body> {
        match self.repositories(v, q).await {
            Ok((repos, next)) => self.page(
                v,
                StatusCode::OK,
                pages::repositories(
                    &self.frame(v),
                    q.get("q").unwrap_or(""),
                    &repos,
                    next.as_deref(),
                ),
            ),
            Err(e) => self.error_page(v, e),
        }
    }

    /// A page of the activity log, filtered as `q` asks (administrators).
    async fn activity_page(&self, v: &Viewer, q: &Query) -> Response<Body> {
        let f = self.frame(v);
        let repo = q.get("repository").unwrap_or("").to_owned();
        let action = q.get("action").unwrap_or("").to_owned();
        let query = ActivityQuery {
            repository: (!repo.is_empty()).then(|| repo.clone()),
            action: (!action.is_empty()).then(|| action.clone()),
            since_ms: None,
            before: q.get("cursor").and_then(|c| c.parse().ok()),
            limit: PAGE,
        };
        match self.registry.activity_log(&query).await {
            Ok(entries) => {
                let next = (entries.len() == PAGE)
                    .then(|| entries.last().map(|e| e.id))
                    .flatten();
                self.page(
                    v,
                    StatusCode::OK,
                    pages::activity(&f, &repo, &action, &entries, next),
                )
            }
            Err(e) => self.error_page(v, e),
        }
    }

    /// One collection run from the history (administrators).
    async fn gc_run_page(&self, v: &Viewer, id: &str) -> Response<Body> {
        let f = self.frame(v);
        let run = match id.parse::<u64>() {
            Ok(id) => self.collector.run(id).await.ok().flatten(),
            Err(_) => None,
        };
        match run {
            Some(r) => self.page(v, StatusCode::OK, pages::gc_run(&f, &r)),
            None => self.page(
                v,
                StatusCode::NOT_FOUND,
                pages::message(
                    &f,
                    "No such run",
                    "That garbage collection run is not in the history.",
                ),
            ),
        }
    }

    /// A page of repositories the viewer may pull, names containing `q`.
    async fn repositories(
        &self,
        v: &Viewer,
        q: &Query,
    ) -> Result<(Vec<registry_core::index::RepoSummary>, Option<String>), Error> {
        let contains = q.get("q").filter(|s| !s.is_empty());
        let mut after = q.get("after").map(str::to_owned);
        let mut out = Vec::new();
        loop {
            let (page, more) = self
                .registry
                .repository_summaries(after.as_deref(), PAGE, contains)
                .await?;
            after = page.last().map(|r| r.name.clone());
            for r in page {
                if out.len() == PAGE {
                    return Ok((out, after));
                }
                if self.auth.allowed(&v.caller, &r.name).pull {
                    out.push(r);
                }
            }
            if !more {
                return Ok((out, None));
            }
            if out.len() == PAGE {
                let next = out.last().map(|r| r.name.clone());
                return Ok((out, next));
            }
        }
    }

    async fn repository(&self, v: &Viewer, name: &str) -> Response<Body> {
        let f = self.frame(v);
        let Ok(repo) = name.parse::<RepoName>() else {
            return self.page(
                v,
                StatusCode::NOT_FOUND,
                pages::message(&f, "Not found", "There is no such repository."),
            );
        };
        let actions = self.auth.allowed(&v.caller, repo.as_str());
        if !actions.pull {
            return self.forbidden(v, "This repository");
        }
        let view = match self.registry.repository_view(&repo).await {
            Ok(view) => view,
            Err(Error::NameUnknown) => {
                return self.page(
                    v,
                    StatusCode::NOT_FOUND,
                    pages::message(&f, "Not found", "There is no such repository."),
                );
            }
            Err(e) => return self.error_page(v, e),
        };
        let mut platforms = HashMap::new();
        for m in view.manifests.iter().filter(|m| m.kind == Kind::Index) {
            let reference = Reference::Digest(m.digest.clone());
            if let Ok(info) = self.registry.get_manifest(&repo, &reference, true).await
                && let Some(body) = info.body
                && let Ok(json) = serde_json::from_slice::<Value>(&body)
            {
                let list: Vec<String> = json["manifests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| {
                        let p = &d["platform"];
                        let (os, arch) = (p["os"].as_str()?, p["architecture"].as_str()?);
                        Some(match p["variant"].as_str() {
                            Some(var) => format!("{os}/{arch}/{var}"),
                            None => format!("{os}/{arch}"),
                        })
                    })
                    .filter(|p| p != "unknown/unknown")
                    .collect();
                platforms.insert(m.digest.to_string(), list);
            }
        }
        let page = RepoPage {
            view: &view,
            can_delete: actions.delete,
            platforms: &platforms,
        };
        self.page(v, StatusCode::OK, pages::repository(&f, &page))
    }

    async fn gc_page(&self, v: &Viewer) -> Response<Body> {
        let f = self.frame(v);
        let totals = match self.registry.totals().await {
            Ok(t) => t,
            Err(e) => return self.error_page(v, e),
        };
        let history = self.collector.history(30).await.unwrap_or_default();
        let last = self.collector.last().await.ok().flatten();
        let schedule = self.collector.schedule();
        let page = GcPage {
            reclaimable_bytes: totals.unreferenced_bytes,
            reclaimable_blobs: totals.unreferenced_blobs,
            stored_bytes: totals.blob_bytes,
            running: self.collector.running_id(),
            last: last.as_ref(),
            history: &history,
            schedule: schedule.as_deref(),
            next_run: self
                .collector
                .next_scheduled()
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string()),
            grace: humantime::format_duration(self.collector.config().grace).to_string(),
        };
        self.page(v, StatusCode::OK, pages::gc(&f, &page))
    }

    async fn post(
        &self,
        v: &mut Viewer,
        path: &str,
        form: &HashMap<String, String>,
        peer: SocketAddr,
    ) -> Response<Body> {
        match path {
            "/ui/login" => {
                let user = form.get("user").cloned().unwrap_or_default();
                let password = form.get("password").cloned().unwrap_or_default();
                match self.auth.login(&user, &password, peer.ip()).await {
                    Ok(true) => {
                        let (_, cookie) = self.session_for(&user);
                        v.set_cookie = Some(cookie);
                        redirect("/ui/", None)
                    }
                    Ok(false) => self.page(
                        v,
                        StatusCode::UNAUTHORIZED,
                        pages::login(&self.frame(v), Some("Wrong user name or password.")),
                    ),
                    Err(e) => e.into_response(false),
                }
            }
            "/ui/logout" => {
                let (_, cookie) = self.session_for("");
                v.set_cookie = Some(cookie);
                redirect("/ui/", None)
            }
            "/ui/gc/run" => {
                if !self.auth.is_admin(&v.caller) {
                    return self.forbidden(v, "Garbage collection is for administrators");
                }
                let request = RunRequest {
                    dry_run: form.get("dry_run").is_some_and(|d| d == "1"),
                    ..RunRequest::default()
                };
                match self.collector.start(request, "ui", &v.actor).await {
                    Ok(id) => redirect(&format!("/ui/gc/runs/{id}"), None),
                    Err(e) => redirect("/ui/gc", Some(("err", &e.to_string()))),
                }
            }
            "/ui/gc/schedule" => {
                if !self.auth.is_admin(&v.caller) {
                    return self.forbidden(v, "Garbage collection is for administrators");
                }
                let saved = self.collector.set_schedule(schedule_field(form)).await;
                schedule_saved("/ui/gc", saved)
            }
            "/ui/retention/rules"
            | "/ui/retention/run"
            | "/ui/retention/schedule"
            | "/ui/immutable" => {
                if !self.auth.is_admin(&v.caller) {
                    return self.forbidden(v, "Tag rules are for administrators");
                }
                match path {
                    "/ui/retention/rules" => self.retention_rules_post(v, form).await,
                    "/ui/retention/run" => self.retention_run_post(v).await,
                    "/ui/retention/schedule" => self.retention_schedule_post(form).await,
                    _ => self.immutable_post(v, form).await,
                }
            }
            _ => match path.strip_prefix("/ui/r/").and_then(parse_delete) {
                Some((repo, reference)) => self.delete(v, repo, reference).await,
                None => self.page(
                    v,
                    StatusCode::NOT_FOUND,
                    pages::message(&self.frame(v), "Not found", "There is no such action."),
                ),
            },
        }
    }

    async fn delete(&self, v: &Viewer, repo: RepoName, reference: Reference) -> Response<Body> {
        if !self.auth.allowed(&v.caller, repo.as_str()).delete {
            return self.forbidden(v, "Deleting from this repository");
        }
        let back = format!("/ui/r/{repo}");
        match self
            .registry
            .delete_manifest(&repo, &reference, &v.actor)
            .await
        {
            Ok(_) => {
                let what = match &reference {
                    Reference::Tag(t) => format!("Tag {t} deleted."),
                    Reference::Digest(d) => format!("Image {d} deleted."),
                };
                redirect(&back, Some(("msg", &what)))
            }
            // An immutable tag (the page shows a lock, so the form was
            // not one of ours): refused, naming the rule.
            Err(Error::Denied(why)) => self.page(
                v,
                StatusCode::FORBIDDEN,
                pages::message(&self.frame(v), "Not allowed", &why),
            ),
            Err(e) => redirect(&back, Some(("err", &e.to_string()))),
        }
    }
}

/// `<name>/tags/<tag>/delete` or `<name>/manifests/<digest>/delete`.
fn parse_delete(rest: &str) -> Option<(RepoName, Reference)> {
    let rest = rest.strip_suffix("/delete")?;
    let (name, reference) = match rest.rsplit_once("/tags/") {
        Some((name, tag)) => (name, Reference::Tag(tag.parse().ok()?)),
        None => {
            let (name, digest) = rest.rsplit_once("/manifests/")?;
            (name, Reference::Digest(digest.parse().ok()?))
        }
    };
    Some((name.parse().ok()?, reference))
}

/// A schedule form's expression; blank or `off` turns the schedule off.
fn schedule_field(form: &HashMap<String, String>) -> Option<&str> {
    form.get("schedule")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty() && *s != "off")
}

/// Back to the schedule's page, saying whether it was saved.
fn schedule_saved(back: &str, saved: Result<(), registry_gc::GcError>) -> Response<Body> {
    match saved {
        Ok(()) => redirect(back, Some(("msg", "Schedule saved."))),
        Err(e) => redirect(back, Some(("err", &e.to_string()))),
    }
}

fn basic_credentials(req: &Request<ReqBody>) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

fn redirect(to: &str, flash: Option<(&str, &str)>) -> Response<Body> {
    let location = match flash {
        Some((k, text)) => format!(
            "{to}?{k}={}",
            percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => to.to_owned(),
    };
    let mut res = Response::new(body::empty());
    *res.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

fn asset(content_type: &'static str, text: &'static str) -> Response<Body> {
    let mut res = Response::new(body::full(text));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    res
}
