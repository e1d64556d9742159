//! The request routers: `route::parse` (`/v2/...`), `route::parse_admin`
//! (`/admin/...`) and `Query`, on an arbitrary request target
//! `path[?query]`. A path that routes must route again, to the same
//! endpoint, once written back in its canonical form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_http::route::{self, Admin, Endpoint, Query};

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if let Ok(endpoint) = route::parse(path) {
        check_endpoint(&endpoint);
    }
    if let Ok(admin) = route::parse_admin(path) {
        check_admin(&admin);
    }
    check_query(query);
});

/// An upload id that needs no escaping in a path (what the server hands out).
fn plain(id: &str) -> bool {
    id.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

fn canonical(endpoint: &Endpoint) -> Option<String> {
    Some(match endpoint {
        Endpoint::Base => "/v2/".to_owned(),
        Endpoint::Catalog => "/v2/_catalog".to_owned(),
        Endpoint::Tags(name) => format!("/v2/{name}/tags/list"),
        Endpoint::Manifest(name, reference) => format!("/v2/{name}/manifests/{reference}"),
        Endpoint::Blob(name, digest) => format!("/v2/{name}/blobs/{digest}"),
        Endpoint::Uploads(name) => format!("/v2/{name}/blobs/uploads/"),
        Endpoint::Upload(name, id) if plain(id) => format!("/v2/{name}/blobs/uploads/{id}"),
        Endpoint::Upload(..) => return None,
        Endpoint::Referrers(name, digest) => format!("/v2/{name}/referrers/{digest}"),
    })
}

fn check_endpoint(endpoint: &Endpoint) {
    assert!(!endpoint.allowed().is_empty());
    assert!(!endpoint.kind().is_empty());
    if let Endpoint::Upload(_, id) = endpoint {
        assert!(!id.is_empty(), "an upload id is never empty");
    }
    if let Some(path) = canonical(endpoint) {
        match route::parse(&path) {
            Ok(again) => assert_eq!(&again, endpoint, "{path:?} routes elsewhere"),
            Err(e) => panic!("{path:?} of {endpoint:?} no longer routes: {e:?}"),
        }
    }
}

fn check_admin(admin: &Admin) {
    assert!(!admin.allowed().is_empty());
    let path = match admin {
        Admin::Repository(name) => format!("/admin/repositories/{name}"),
        Admin::GcRun(id) => format!("/admin/gc/runs/{id}"),
        _ => return,
    };
    match route::parse_admin(&path) {
        Ok(again) => assert_eq!(&again, admin, "{path:?} routes elsewhere"),
        Err(e) => panic!("{path:?} of {admin:?} no longer routes: {e:?}"),
    }
}

/// `get` answers the first value of a key and `all` every one, in order.
fn check_query(query: Option<&str>) {
    let parsed = Query::parse(query);
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (key, _) in &pairs {
        let values: Vec<&str> = pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(parsed.get(key), values.first().copied());
        assert!(parsed.all(key).eq(values.iter().copied()));
    }
}
