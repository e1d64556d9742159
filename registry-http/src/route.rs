//! Request routing: method + path + query -> one typed [`Endpoint`].
//!
//! Hand-written because repository names may contain any number of `/` and
//! may themselves contain `blobs` or `manifests` components, which no
//! path-template router expresses: the parser reads the path from the right,
//! where the fixed suffixes (`/tags/list`, `/manifests/<ref>`,
//! `/blobs/<digest>`, `/blobs/uploads/[<id>]`, `/referrers/<digest>`) are,
//! and what is left is the name.

use std::borrow::Cow;

use http::Method;
use registry_core::{Digest, Error, Reference, RepoName};

/// What a request addresses, with every path parameter validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    Uploads(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

impl Endpoint {
    /// A short, low-cardinality name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Endpoint::Base => "base",
            Endpoint::Catalog => "catalog",
            Endpoint::Tags(_) => "tags",
            Endpoint::Manifest(..) => "manifest",
            Endpoint::Blob(..) => "blob",
            Endpoint::Uploads(_) => "uploads",
            Endpoint::Upload(..) => "upload",
            Endpoint::Referrers(..) => "referrers",
        }
    }

    /// The methods this endpoint answers.
    pub fn allowed(&self) -> &'static [Method] {
        match self {
            Endpoint::Base => &[Method::GET, Method::HEAD],
            Endpoint::Catalog | Endpoint::Tags(_) | Endpoint::Referrers(..) => &[Method::GET],
            Endpoint::Manifest(..) => &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE],
            Endpoint::Blob(..) => &[Method::GET, Method::HEAD, Method::DELETE],
            Endpoint::Uploads(_) => &[Method::POST],
            Endpoint::Upload(..) => &[Method::GET, Method::PATCH, Method::PUT, Method::DELETE],
        }
    }
}

/// The administration API under `/admin/` (JSON in and out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    /// `POST /admin/gc`: start a run.
    GcStart,
    /// `GET /admin/gc/runs`
    GcRuns,
    /// `GET /admin/gc/runs/<id>`
    GcRun(u64),
    /// `GET /admin/gc/last`
    GcLast,
    /// `GET|PUT /admin/gc/schedule`
    GcSchedule,
    /// `GET /admin/gc/reclaimable`
    GcReclaimable,
    /// `GET /admin/gc/preview?repository=&reference=`
    GcPreview,
    /// `GET|DELETE /admin/repositories/<name>`
    Repository(RepoName),
    /// `GET|PUT /admin/retention`: the retention rules and schedule.
    Retention,
    /// `POST /admin/retention/run`: a retention run (or a dry run).
    RetentionRun,
    /// `GET|PUT /admin/immutable`: the immutable-tag rules.
    Immutable,
    /// `GET /admin/blobs?after=&limit=`: every stored blob, with its
    /// reference count and where its bytes are kept.
    Blobs,
    /// `GET /admin/activity?repository=&action=&since=&limit=&cursor=`
    Activity,
    /// `GET /admin/webhooks`: the endpoints and their deliveries.
    Webhooks,
}

impl Admin {
    pub fn kind(&self) -> &'static str {
        match self {
            Admin::GcStart => "admin_gc_start",
            Admin::GcRuns => "admin_gc_runs",
            Admin::GcRun(_) => "admin_gc_run",
            Admin::GcLast => "admin_gc_last",
            Admin::GcSchedule => "admin_gc_schedule",
            Admin::GcReclaimable => "admin_gc_reclaimable",
            Admin::GcPreview => "admin_gc_preview",
            Admin::Repository(_) => "admin_repository",
            Admin::Activity => "admin_activity",
            Admin::Retention => "admin_retention",
            Admin::RetentionRun => "admin_retention_run",
            Admin::Immutable => "admin_immutable",
            Admin::Blobs => "admin_blobs",
            Admin::Webhooks => "admin_webhooks",
        }
    }

    pub fn allowed(&self) -> &'static [Method] {
        match self {
            Admin::GcStart | Admin::RetentionRun => &[Method::POST],
            Admin::GcSchedule | Admin::Retention | Admin::Immutable => &[Method::GET, Method::PUT],
            Admin::Repository(_) => &[Method::GET, Method::DELETE],
            _ => &[Method::GET],
        }
    }
}

/// Parses a path under `/admin/`.
pub fn parse_admin(path: &str) -> Result<Admin, RouteError> {
    let rest = path.strip_prefix("/admin/").ok_or(RouteError::NotFound)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    match rest {
        "gc" => return Ok(Admin::GcStart),
        "gc/runs" => return Ok(Admin::GcRuns),
        "gc/last" => return Ok(Admin::GcLast),
        "gc/schedule" => return Ok(Admin::GcSchedule),
        "gc/reclaimable" => return Ok(Admin::GcReclaimable),
        "gc/preview" => return Ok(Admin::GcPreview),
        "activity" => return Ok(Admin::Activity),
        "retention" => return Ok(Admin::Retention),
        "retention/run" => return Ok(Admin::RetentionRun),
        "immutable" => return Ok(Admin::Immutable),
        "blobs" => return Ok(Admin::Blobs),
        "webhooks" => return Ok(Admin::Webhooks),
        _ => {}
    }
    if let Some(id) = rest.strip_prefix("gc/runs/") {
        return id
            .parse()
            .map(Admin::GcRun)
            .map_err(|_| RouteError::NotFound);
    }
    if let Some(name) = rest.strip_prefix("repositories/") {
        return Ok(Admin::Repository(name.parse()?));
    }
    Err(RouteError::NotFound)
}

/// Why a path is not an endpoint.
#[derive(Debug)]
pub enum RouteError {
    /// Not a path of the API at all.
    NotFound,
    /// The shape is right but a parameter is not (bad name, digest, tag).
    Invalid(Error),
}

impl From<Error> for RouteError {
    fn from(e: Error) -> RouteError {
        RouteError::Invalid(e)
    }
}

fn decode(segment: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy()
}

/// Parses a request path (without the query) into an endpoint.
pub fn parse(path: &str) -> Result<Endpoint, RouteError> {
    let rest = path.strip_prefix("/v2").ok_or(RouteError::NotFound)?;
    if rest.is_empty() || rest == "/" {
        return Ok(Endpoint::Base);
    }
    let rest = rest.strip_prefix('/').ok_or(RouteError::NotFound)?;
    if rest == "_catalog" {
        return Ok(Endpoint::Catalog);
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let n = segments.len();
    let name = |upto: usize| -> Result<RepoName, RouteError> {
        if upto == 0 {
            return Err(RouteError::NotFound);
        }
        Ok(segments[..upto].join("/").parse::<RepoName>()?)
    };
    let last = decode(segments[n - 1]);
    let before = |k: usize| {
        if n > k {
            Some(segments[n - 1 - k])
        } else {
            None
        }
    };

    // /blobs/uploads/ and /blobs/uploads/<id> come first: "uploads" would
    // otherwise read as a (malformed) digest.
    if before(1) == Some("uploads") && before(2) == Some("blobs") && n >= 3 {
        if last.is_empty() {
            return Ok(Endpoint::Uploads(name(n - 3)?));
        }
        return Ok(Endpoint::Upload(name(n - 3)?, last.into_owned()));
    }
    if last == "uploads" && before(1) == Some("blobs") && n >= 2 {
        // `/blobs/uploads` without the trailing slash
        return Ok(Endpoint::Uploads(name(n - 2)?));
    }
    match before(1) {
        Some("tags") if last == "list" => Ok(Endpoint::Tags(name(n - 2)?)),
        Some("manifests") => {
            let name = name(n - 2)?;
            Ok(Endpoint::Manifest(name, last.parse::<Reference>()?))
        }
        Some("blobs") => {
            let name = name(n - 2)?;
            Ok(Endpoint::Blob(name, last.parse::<Digest>()?))
        }
        Some("referrers") => {
            let name = name(n - 2)?;
            Ok(Endpoint::Referrers(name, last.parse::<Digest>()?))
        }
        _ => Err(RouteError::NotFound),
    }
}

/// Query parameters, decoded once.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn name(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn fixed_routes() {
        assert_eq!(parse("/v2/").unwrap(), Endpoint::Base);
        assert_eq!(parse("/v2").unwrap(), Endpoint::Base);
        assert_eq!(parse("/v2/_catalog").unwrap(), Endpoint::Catalog);
        assert!(matches!(parse("/v1/"), Err(RouteError::NotFound)));
        assert!(matches!(parse("/v2x"), Err(RouteError::NotFound)));
        assert!(matches!(parse("/"), Err(RouteError::NotFound)));
        assert!(matches!(parse("/v2/foo"), Err(RouteError::NotFound)));
        assert!(matches!(
            parse("/v2/foo/bar/baz"),
            Err(RouteError::NotFound)
        ));
    }

    #[test]
    fn names_with_reserved_components() {
        assert_eq!(
            parse("/v2/a/blobs/uploads/manifests/latest").unwrap(),
            Endpoint::Manifest(name("a/blobs/uploads"), "latest".parse().unwrap())
        );
        assert_eq!(
            parse("/v2/manifests/tags/list").unwrap(),
            Endpoint::Tags(name("manifests"))
        );
        assert_eq!(
            parse(&format!("/v2/x/blobs/y/blobs/{D}")).unwrap(),
            Endpoint::Blob(name("x/blobs/y"), D.parse().unwrap())
        );
        assert_eq!(
            parse("/v2/blobs/blobs/uploads/").unwrap(),
            Endpoint::Uploads(name("blobs"))
        );
        assert_eq!(
            parse("/v2/a/b/blobs/uploads").unwrap(),
            Endpoint::Uploads(name("a/b"))
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads/0123abcd").unwrap(),
            Endpoint::Upload(name("a"), "0123abcd".into())
        );
        assert_eq!(
            parse(&format!("/v2/r/referrers/{D}")).unwrap(),
            Endpoint::Referrers(name("r"), D.parse().unwrap())
        );
        // percent-encoded colon in a digest
        assert_eq!(
            parse(&format!("/v2/r/blobs/{}", D.replace(':', "%3A"))).unwrap(),
            Endpoint::Blob(name("r"), D.parse().unwrap())
        );
    }

    #[test]
    fn invalid_parameters() {
        assert!(matches!(
            parse("/v2/UPPER/tags/list"),
            Err(RouteError::Invalid(Error::NameInvalid(_)))
        ));
        assert!(matches!(
            parse("/v2/a/blobs/sha256:nothex"),
            Err(RouteError::Invalid(Error::DigestInvalid(_)))
        ));
        assert!(matches!(
            parse("/v2/a/manifests/-bad"),
            Err(RouteError::Invalid(Error::ReferenceInvalid(_)))
        ));
        assert!(matches!(
            parse("/v2//manifests/x"),
            Err(RouteError::Invalid(_))
        ));
        assert!(matches!(
            parse("/v2/manifests/x"),
            Err(RouteError::NotFound)
        ));
    }

    #[test]
    fn admin_routes() {
        assert_eq!(parse_admin("/admin/gc").unwrap(), Admin::GcStart);
        assert_eq!(parse_admin("/admin/gc/runs/").unwrap(), Admin::GcRuns);
        assert_eq!(parse_admin("/admin/gc/runs/42").unwrap(), Admin::GcRun(42));
        assert_eq!(
            parse_admin("/admin/retention/run").unwrap(),
            Admin::RetentionRun
        );
        assert_eq!(parse_admin("/admin/immutable/").unwrap(), Admin::Immutable);
        assert_eq!(parse_admin("/admin/webhooks").unwrap(), Admin::Webhooks);
        assert_eq!(
            parse_admin("/admin/repositories/a/b").unwrap(),
            Admin::Repository(name("a/b"))
        );
        assert!(matches!(
            parse_admin("/admin/gc/runs/x"),
            Err(RouteError::NotFound)
        ));
        assert!(matches!(
            parse_admin("/admin/nope"),
            Err(RouteError::NotFound)
        ));
        assert!(matches!(
            parse_admin("/admin/repositories/A"),
            Err(RouteError::Invalid(_))
        ));
    }

    #[test]
    fn query() {
        let q = Query::parse(Some("n=3&last=a%2Bb&digest=sha256%3Aab&digest=x"));
        assert_eq!(q.get("n"), Some("3"));
        assert_eq!(q.get("last"), Some("a+b"));
        assert_eq!(q.get("digest"), Some("sha256:ab"));
        assert_eq!(q.all("digest").count(), 2);
        assert_eq!(q.get("missing"), None);
    }

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9]{1,6}([._-][a-z0-9]{1,4}){0,2}",
            Just("blobs".to_owned()),
            Just("manifests".to_owned()),
            Just("uploads".to_owned()),
            Just("tags".to_owned()),
            Just("list".to_owned()),
            Just("referrers".to_owned()),
        ]
    }

    proptest! {
        /// Whatever the name is made of, each suffix routes to that name.
        #[test]
        fn every_suffix_recovers_the_name(parts in proptest::collection::vec(component(), 1..6), tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}") {
            let n = parts.join("/");
            let repo: RepoName = n.parse().unwrap();
            prop_assert_eq!(parse(&format!("/v2/{n}/tags/list")).unwrap(), Endpoint::Tags(repo.clone()));
            prop_assert_eq!(parse(&format!("/v2/{n}/manifests/{tag}")).unwrap(), Endpoint::Manifest(repo.clone(), tag.parse().unwrap()));
            prop_assert_eq!(parse(&format!("/v2/{n}/manifests/{D}")).unwrap(), Endpoint::Manifest(repo.clone(), D.parse().unwrap()));
            prop_assert_eq!(parse(&format!("/v2/{n}/blobs/{D}")).unwrap(), Endpoint::Blob(repo.clone(), D.parse().unwrap()));
            prop_assert_eq!(parse(&format!("/v2/{n}/blobs/uploads/")).unwrap(), Endpoint::Uploads(repo.clone()));
            prop_assert_eq!(parse(&format!("/v2/{n}/blobs/uploads/abc-123")).unwrap(), Endpoint::Upload(repo.clone(), "abc-123".into()));
            prop_assert_eq!(parse(&format!("/v2/{n}/referrers/{D}")).unwrap(), Endpoint::Referrers(repo, D.parse().unwrap()));
        }

        /// Arbitrary input never panics.
        #[test]
        fn arbitrary_paths_never_panic(s in "(/v2)?[/a-zA-Z0-9:%._-]{0,80}") {
            let _ = parse(&s);
        }
    }
}
