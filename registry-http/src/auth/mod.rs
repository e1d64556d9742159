//! Authentication and authorization.
//!
//! Modes: `none` (anyone may do anything: local use), `htpasswd` (HTTP
//! Basic against an htpasswd file), `token` (the Docker registry token
//! protocol: a 401 names a token endpoint, the client gets a JWT there and
//! sends it as `Bearer`). Berth serves its own token endpoint at
//! `/auth/token` (GET with Basic credentials, or the OAuth2 POST form that
//! containerd uses) and can also accept tokens of an external issuer.
//!
//! What a caller may do comes from the policy (repository globs -> users
//! and groups -> pull/push/delete), or, for a Bearer token, from the grants
//! the token carries. Requests map to actions as GET/HEAD = pull,
//! POST/PUT/PATCH = push (and pull), DELETE = delete; `/admin/` needs an
//! administrator.

mod htpasswd;
mod limiter;
pub mod policy;
pub mod token;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderMap, StatusCode, header};
use registry_core::{Clock, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use self::htpasswd::Htpasswd;
use self::limiter::Limiter;
pub use self::policy::{AccessRule, Actions, Policy, Principal};
use self::token::{Claims, Grant, Tokens};
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    None,
    Htpasswd,
    Token,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// The `service` clients name when they ask for a token (the audience).
    pub service: String,
    pub issuer: String,
    /// The token endpoint announced in challenges; default
    /// `<scheme>://<host>/auth/token` of the request.
    pub realm: Option<String>,
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// Secret for Berth's own tokens; default `<data_dir>/auth/token.secret`
    /// (created on first start).
    pub secret_file: Option<PathBuf>,
    /// Also trust tokens from this issuer, signed with this public key (PEM,
    /// RSA or EC P-256) or any key of this JWKS file.
    pub trust_issuer: Option<String>,
    pub trust_public_key: Option<PathBuf>,
    pub trust_jwks: Option<PathBuf>,
}

impl Default for TokenConfig {
    fn default() -> TokenConfig {
        TokenConfig {
            service: "berth".into(),
            issuer: "berth".into(),
            realm: None,
            lifetime: Duration::from_secs(300),
            secret_file: None,
            trust_issuer: None,
            trust_public_key: None,
            trust_jwks: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: Mode,
    /// bcrypt htpasswd file (`htpasswd -B`): the users (htpasswd and token
    /// modes).
    pub htpasswd: Option<PathBuf>,
    /// Realm name in Basic challenges.
    pub realm: String,
    /// Users who may call the `/admin/` API (default: every user, when no
    /// access rules are given either).
    pub admins: Vec<String>,
    pub groups: BTreeMap<String, Vec<String>>,
    /// Access rules; none means every authenticated user may do everything.
    pub access: Vec<AccessRule>,
    /// Failed logins allowed per client address per minute (0: no limit).
    pub max_failures_per_minute: u32,
    pub token: TokenConfig,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            mode: Mode::None,
            htpasswd: None,
            realm: "Berth".into(),
            admins: Vec::new(),
            groups: BTreeMap::new(),
            access: Vec::new(),
            max_failures_per_minute: 10,
            token: TokenConfig::default(),
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing (the token endpoint, health, metrics).
    Open,
    /// `/v2/`: to be someone (or anonymous access to exist).
    Login,
    /// `/_catalog`: answered with what the caller may pull.
    Catalog,
    Repository(String, Actions),
    /// A blob upload that asks to mount from another repository: push on
    /// the target is required; pull on the source is asked for in
    /// challenges (so token clients request it) and checked by the handler,
    /// which uploads instead of mounting without it.
    Mount {
        target: String,
        from: String,
    },
    Admin,
}

/// Who made a request, as far as authorization goes. Put into the request's
/// extensions by the server.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// No authentication configured: everything is allowed.
    pub unrestricted: bool,
    /// The token the request came with, whose grants bound what it may do.
    pub claims: Option<Claims>,
}

impl Caller {
    pub fn open() -> Caller {
        Caller {
            principal: Principal::Anonymous,
            unrestricted: true,
            claims: None,
        }
    }
}

/// Where the request came from (for challenges naming our token endpoint).
pub struct Origin<'a> {
    pub scheme: &'a str,
    pub host: &'a str,
    pub peer: IpAddr,
}

pub struct Auth {
    mode: Mode,
    realm: String,
    htpasswd: Option<Htpasswd>,
    policy: Policy,
    tokens: Option<Tokens>,
    token_realm: Option<String>,
    limiter: Limiter,
}

enum Credentials {
    None,
    Basic(String, String),
    Bearer(String),
}

fn credentials(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Credentials::None;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        if let Some((user, pass)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            return Credentials::Basic(user.to_owned(), pass.to_owned());
        }
        // Undecodable Basic credentials are wrong credentials.
        return Credentials::Basic(String::new(), String::new());
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return Credentials::Bearer(rest.trim().to_owned());
    }
    Credentials::None
}

fn scope_of(need: &Need) -> Option<String> {
    match need {
        Need::Repository(repo, actions) => {
            Some(format!("repository:{repo}:{}", actions.names().join(",")))
        }
        Need::Mount { target, from } => Some(format!(
            "repository:{target}:pull,push repository:{from}:pull"
        )),
        Need::Catalog => Some("registry:catalog:*".into()),
        _ => None,
    }
}

impl Auth {
    /// Builds the runtime from the configuration; `data_dir` holds the
    /// token secret by default.
    /// `shared_secret` signs Berth's own tokens when no secret file is
    /// configured (a cluster's nodes share it through the index).
    pub fn new(
        config: &AuthConfig,
        data_dir: &Path,
        clock: Clock,
        shared_secret: Option<Vec<u8>>,
    ) -> anyhow::Result<Auth> {
        let htpasswd = match (&config.htpasswd, config.mode) {
            (Some(path), _) => Some(Htpasswd::open(path)?),
            (None, Mode::Htpasswd) => anyhow::bail!(
                "auth mode htpasswd needs an htpasswd file (auth.htpasswd or --htpasswd)"
            ),
            (None, _) => None,
        };
        let policy = Policy::new(&config.access, config.groups.clone(), config.admins.clone())
            .map_err(|e| anyhow::anyhow!("auth policy: {e}"))?;
        let tokens = if config.mode == Mode::Token {
            let t = &config.token;
            let secret = match (&t.secret_file, shared_secret) {
                (None, Some(shared)) => shared,
                (file, _) => {
                    let path = file
                        .clone()
                        .unwrap_or_else(|| data_dir.join("auth").join("token.secret"));
                    token::load_or_create_secret(&path)?
                }
            };
            let mut tokens = Tokens::new(&t.service, &t.issuer, t.lifetime, &secret, clock);
            if let Some(issuer) = &t.trust_issuer {
                tokens.trust(
                    issuer,
                    t.trust_public_key.as_deref(),
                    t.trust_jwks.as_deref(),
                )?;
            }
            Some(tokens)
        } else {
            None
        };
        Ok(Auth {
            mode: config.mode,
            realm: config.realm.clone(),
            htpasswd,
            policy,
            tokens,
            token_realm: config.token.realm.clone(),
            limiter: Limiter::new(config.max_failures_per_minute),
        })
    }

    /// No authentication at all.
    pub fn disabled() -> Auth {
        Auth {
            mode: Mode::None,
            realm: "Berth".into(),
            htpasswd: None,
            policy: Policy::new(&[], BTreeMap::new(), Vec::new()).expect("default policy"),
            tokens: None,
            token_realm: None,
            limiter: Limiter::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.mode != Mode::None
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// What `caller` may do in `repo`.
    pub fn allowed(&self, caller: &Caller, repo: &str) -> Actions {
        if caller.unrestricted {
            return Actions::ALL;
        }
        match &caller.claims {
            Some(c) => c.actions_on(repo),
            None => self.policy.allowed(&caller.principal, repo),
        }
    }

    fn challenge(
        &self,
        origin: &Origin<'_>,
        need: &Need,
        error: Option<&str>,
        message: &str,
    ) -> ApiError {
        let value = match (&self.tokens, need) {
            // The admin API takes Basic credentials in every mode.
            (Some(t), n) if *n != Need::Admin => {
                let realm = self
                    .token_realm
                    .clone()
                    .unwrap_or_else(|| format!("{}://{}/auth/token", origin.scheme, origin.host));
                let mut v = format!("Bearer realm=\"{realm}\",service=\"{}\"", t.service);
                if let Some(scope) = scope_of(need) {
                    v.push_str(&format!(",scope=\"{scope}\""));
                }
                if let Some(e) = error {
                    v.push_str(&format!(",error=\"{e}\""));
                }
                v
            }
            _ => format!("Basic realm=\"{}\", charset=\"UTF-8\"", self.realm),
        };
        let mut e = ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
            .with_header("www-authenticate", value);
        if let Need::Repository(repo, actions) = need {
            e.detail = json!([{ "Type": "repository", "Name": repo, "Action": actions.names().join(",") }]);
        }
        e
    }

    fn too_many(&self, wait: Duration) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyRequests,
            "too many failed logins from this address; wait and try again",
        )
        .with_header("retry-after", (wait.as_secs() + 1).to_string())
    }

    /// Whether `caller` may use the admin API.
    pub fn is_admin(&self, caller: &Caller) -> bool {
        caller.unrestricted || (caller.claims.is_none() && self.policy.is_admin(&caller.principal))
    }

    /// Checks a user's password (rate limited per client address).
    pub async fn login(&self, user: &str, password: &str, peer: IpAddr) -> Result<bool, ApiError> {
        if let Some(wait) = self.limiter.blocked(peer) {
            return Err(self.too_many(wait));
        }
        let ok = match &self.htpasswd {
            Some(h) => h.verify(user, password).await,
            None => false,
        };
        if ok {
            self.limiter.succeeded(peer);
        } else {
            self.limiter.failed(peer);
            tracing::warn!(user, client = %peer, "failed login");
        }
        Ok(ok)
    }

    /// Decides a request: the caller it was made by, or the 401/403/429 to
    /// answer.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        need: &Need,
        origin: &Origin<'_>,
    ) -> Result<Caller, ApiError> {
        if !self.enabled() {
            return Ok(Caller::open());
        }
        let caller = self.identify(headers, need, origin).await?;
        let anonymous = caller.principal == Principal::Anonymous && caller.claims.is_none();
        if self.permits(&caller, need, anonymous) {
            return Ok(caller);
        }
        Err(self.refusal(&caller, need, origin, anonymous))
    }

    /// Who the credentials of a request name (anonymous without any); a
    /// challenge when they are wrong.
    async fn identify(
        &self,
        headers: &HeaderMap,
        need: &Need,
        origin: &Origin<'_>,
    ) -> Result<Caller, ApiError> {
        let refuse = |error: Option<&str>, why: &str| self.challenge(origin, need, error, why);
        let principal = match credentials(headers) {
            Credentials::None => Principal::Anonymous,
            Credentials::Basic(user, password) => {
                if !self.login(&user, &password, origin.peer).await? {
                    return Err(refuse(None, "invalid user name or password"));
                }
                Principal::User(user)
            }
            Credentials::Bearer(token) => {
                let Some(tokens) = &self.tokens else {
                    return Err(refuse(None, "bearer tokens are not accepted here"));
                };
                let claims = match tokens.verify(&token) {
                    Ok(claims) if claims.kind.is_none() => claims,
                    Ok(_) => {
                        let why = "a refresh token is not an access token";
                        return Err(refuse(Some("invalid_token"), why));
                    }
                    Err(why) => {
                        let why = format!("invalid token: {why}");
                        return Err(refuse(Some("invalid_token"), &why));
                    }
                };
                return Ok(Caller {
                    principal: match claims.sub.is_empty() {
                        true => Principal::Anonymous,
                        false => Principal::User(claims.sub.clone()),
                    },
                    unrestricted: false,
                    claims: Some(claims),
                });
            }
        };
        Ok(Caller {
            principal,
            unrestricted: false,
            claims: None,
        })
    }

    /// Whether `caller` may do what the request needs.
    fn permits(&self, caller: &Caller, need: &Need, anonymous: bool) -> bool {
        match need {
            Need::Open => true,
            // `/v2/` always asks an anonymous client to authenticate: clients
            // learn the challenge there, and send credentials from then on
            // if they have any (anonymous pulls still work without).
            Need::Login => !anonymous,
            Need::Catalog => !anonymous || self.policy.anonymous_access(),
            Need::Repository(repo, actions) => self.allowed(caller, repo).covers(*actions),
            Need::Mount { target, from } => {
                // A token without pull on the source, whose holder could get
                // one, is sent back for it (the challenge names both
                // scopes); otherwise the handler uploads instead of mounting.
                let could_mount = caller.claims.as_ref().is_none_or(|c| {
                    c.actions_on(from).pull || !self.policy.allowed(&caller.principal, from).pull
                });
                self.allowed(caller, target).covers(Actions::PUSH) && could_mount
            }
            Need::Admin => caller.claims.is_none() && self.policy.is_admin(&caller.principal),
        }
    }

    /// The answer to a request its caller may not make: a challenge where
    /// other credentials or a token with more scope could do, else 403.
    fn refusal(
        &self,
        caller: &Caller,
        need: &Need,
        origin: &Origin<'_>,
        anonymous: bool,
    ) -> ApiError {
        if anonymous {
            return self.challenge(origin, need, None, "authentication required");
        }
        if caller.claims.is_some() && *need != Need::Admin {
            // The client asks for a token with the scope in the challenge.
            return self.challenge(
                origin,
                need,
                Some("insufficient_scope"),
                "the token does not grant this",
            );
        }
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Denied,
            match need {
                Need::Admin => "only administrators may use the admin API".to_owned(),
                Need::Repository(repo, actions) => {
                    format!(
                        "requested access to {repo} ({}) is denied",
                        actions.names().join(",")
                    )
                }
                _ => "requested access is denied".to_owned(),
            },
        )
    }

    /// The token endpoint: `GET /auth/token?service=&scope=` with optional
    /// Basic credentials, or the OAuth2 `POST` form (`grant_type=password`
    /// or `refresh_token`).
    pub async fn issue(
        &self,
        method: &http::Method,
        headers: &HeaderMap,
        query: &[(String, String)],
        form: &[(String, String)],
        peer: IpAddr,
    ) -> Result<serde_json::Value, ApiError> {
        let Some(tokens) = &self.tokens else {
            return Err(ApiError::not_found());
        };
        let post = *method == http::Method::POST;
        let params: &[(String, String)] = if post { form } else { query };
        if let Some(service) = param(params, "service")
            && service != tokens.service
        {
            return Err(bad_request(format!(
                "this registry is service {:?}, not {service:?}",
                tokens.service
            )));
        }
        let (principal, refresh) = match post {
            true => self.token_principal_post(tokens, form, peer).await?,
            false => {
                self.token_principal_get(tokens, headers, query, peer)
                    .await?
            }
        };
        let grants = self.grants(&principal, params);
        let subject = principal.name().unwrap_or("").to_owned();
        let (token, claims) = tokens.issue(&subject, grants);
        let issued = chrono::DateTime::from_timestamp(claims.iat as i64, 0).map(|t| t.to_rfc3339());
        let mut body = json!({
            "token": token,
            "access_token": token,
            "expires_in": tokens.lifetime.as_secs(),
            "issued_at": issued,
        });
        if let Some(r) = refresh {
            body["refresh_token"] = json!(r);
        }
        Ok(body)
    }

    /// The answer to wrong credentials at the token endpoint.
    fn bad_login(&self) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "invalid user name or password",
        )
        .with_header(
            "www-authenticate",
            format!("Basic realm=\"{}\", charset=\"UTF-8\"", self.realm),
        )
    }

    /// Who asks for a token with the OAuth2 POST form (password or refresh
    /// token grant), and the refresh token to hand out, if asked for.
    async fn token_principal_post(
        &self,
        tokens: &Tokens,
        form: &[(String, String)],
        peer: IpAddr,
    ) -> Result<(Principal, Option<String>), ApiError> {
        match param(form, "grant_type").as_deref() {
            Some("password") => {
                let user = param(form, "username").unwrap_or_default();
                let password = param(form, "password").unwrap_or_default();
                if !self.login(&user, &password, peer).await? {
                    return Err(self.bad_login());
                }
                let offline = param(form, "access_type").as_deref() == Some("offline");
                let refresh = offline.then(|| tokens.issue_refresh(&user));
                Ok((Principal::User(user), refresh))
            }
            Some("refresh_token") => {
                let token = param(form, "refresh_token").unwrap_or_default();
                match tokens.verify(&token) {
                    Ok(c) if c.kind.as_deref() == Some("refresh") && !c.sub.is_empty() => {
                        Ok((Principal::User(c.sub), None))
                    }
                    _ => Err(self.bad_login()),
                }
            }
            other => Err(bad_request(format!("unsupported grant_type {other:?}"))),
        }
    }

    /// Who asks for a token with GET (Basic credentials, or nobody).
    async fn token_principal_get(
        &self,
        tokens: &Tokens,
        headers: &HeaderMap,
        query: &[(String, String)],
        peer: IpAddr,
    ) -> Result<(Principal, Option<String>), ApiError> {
        match credentials(headers) {
            Credentials::Basic(user, password) => {
                if !self.login(&user, &password, peer).await? {
                    return Err(self.bad_login());
                }
                let offline = param(query, "offline_token").as_deref() == Some("true");
                let refresh = offline.then(|| tokens.issue_refresh(&user));
                Ok((Principal::User(user), refresh))
            }
            _ => Ok((Principal::Anonymous, None)),
        }
    }

    /// What the requested scopes grant `principal`.
    fn grants(&self, principal: &Principal, params: &[(String, String)]) -> Vec<Grant> {
        let scopes = params
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' '))
            .filter(|s| !s.is_empty());
        let mut grants = Vec::new();
        for scope in scopes {
            // type:name:actions, where the name may contain ':' (a port).
            let Some((kind, rest)) = scope.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            let kind = kind.split('(').next().unwrap_or(kind);
            match kind {
                "repository" => {
                    let granted =
                        Actions::parse(actions).intersect(self.policy.allowed(principal, name));
                    if !granted.is_empty() {
                        grants.push(Grant {
                            kind: "repository".into(),
                            name: name.to_owned(),
                            actions: granted.names().into_iter().map(str::to_owned).collect(),
                        });
                    }
                }
                "registry"
                    if name == "catalog"
                        && (*principal != Principal::Anonymous
                            || self.policy.anonymous_access()) =>
                {
                    grants.push(Grant {
                        kind: "registry".into(),
                        name: "catalog".into(),
                        actions: vec!["*".into()],
                    });
                }
                _ => {}
            }
        }
        grants
    }
}

/// The value of a form or query parameter.
fn param(list: &[(String, String)], key: &str) -> Option<String> {
    list.iter().find(|(n, _)| n == key).map(|(_, v)| v.clone())
}

fn bad_request(message: String) -> ApiError {
    let mut e = ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, message);
    e.code = "INVALID_REQUEST";
    e
}
