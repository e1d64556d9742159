//! Authentication, authorization and TLS as clients meet them: Basic with
//! an htpasswd file, the token protocol, per-repository policies, the admin
//! API, skopeo with credentials, and TLS with a generated certificate.

mod harness;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use harness::{OCI_MANIFEST, Server, basic, have, random_bytes, sha256};
use reqwest::Method;
use serde_json::{Value, json};

const USERS: [(&str, &str); 3] = [
    ("alice", "alice-secret"),
    ("bob", "bob-secret"),
    ("carol", "carol-secret"),
];

/// An htpasswd file with bcrypt entries (cost 4: fast tests).
fn htpasswd(dir: &Path) -> String {
    let path = dir.join("htpasswd");
    let text: String = USERS
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
        .collect();
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A config file with a policy: alice is the administrator and may do
/// anything; bob may pull and push (not delete) in team/**; carol only
/// pulls team/**; anyone may pull public/**.
fn policy_config(dir: &Path, mode: &str, extra: &str) -> String {
    let path = dir.join("registry.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[auth]
mode = "{mode}"
htpasswd = "{}"
admins = ["alice"]
max_failures_per_minute = 5
[auth.groups]
readers = ["carol"]
[[auth.access]]
repositories = "**"
users = ["alice"]
actions = ["pull", "push", "delete"]
[[auth.access]]
repositories = "team/**"
users = ["bob"]
actions = ["pull", "push"]
[[auth.access]]
repositories = "team/**"
groups = ["readers"]
actions = ["pull"]
[[auth.access]]
repositories = "public/**"
users = ["anonymous", "*"]
actions = ["pull"]
{extra}
"#,
            htpasswd(dir)
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn htpasswd_shortcut_lets_listed_users_do_everything() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(&["--htpasswd", &htpasswd(dir.path())]);
    let anon = s.client_as(None);
    let res = anon.get("/v2/").send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic realm=")
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    assert_eq!(anon.status(Method::GET, "/v2/x/tags/list").await, 401);
    let wrong = s.client_as(Some(basic("alice", "nope")));
    assert_eq!(wrong.status(Method::GET, "/v2/").await, 401);
    let nobody = s.client_as(Some(basic("mallory", "alice-secret")));
    assert_eq!(nobody.status(Method::GET, "/v2/").await, 401);

    let bob = s.client_as(Some(basic("bob", "bob-secret")));
    assert_eq!(bob.status(Method::GET, "/v2/").await, 200);
    let img = bob.push_image("any/repo", "v1", 1).await;
    assert_eq!(
        bob.status(
            Method::DELETE,
            &format!("/v2/any/repo/manifests/{}", img.digest)
        )
        .await,
        202
    );
    assert_eq!(
        bob.status(Method::GET, "/admin/gc/runs").await,
        200,
        "no admins named: every user is one"
    );
    // The activity log names the user, not the address.
    let log = bob.json("/admin/activity").await;
    assert_eq!(log["entries"][0]["actor"], "bob");
    assert!(
        !s.log().contains("bob-secret") && !s.log().contains("alice-secret"),
        "secrets never logged"
    );
}

#[tokio::test]
async fn policy_decides_per_repository_and_admin_is_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(&[
        "--config",
        &policy_config(dir.path(), "htpasswd", ""),
        "--gc-grace",
        "0s",
    ]);
    let alice = s.client_as(Some(basic("alice", "alice-secret")));
    let bob = s.client_as(Some(basic("bob", "bob-secret")));
    let carol = s.client_as(Some(basic("carol", "carol-secret")));
    let anon = s.client_as(None);

    let img = bob.push_image("team/app", "v1", 1).await;
    alice.push_image("public/base", "v1", 1).await;
    alice.push_image("private/x", "v1", 1).await;

    // bob may not delete: 403, and the image stays.
    let res = bob
        .delete(&format!("/v2/team/app/manifests/{}", img.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<Value>().await.unwrap()["errors"][0]["code"],
        "DENIED"
    );
    assert_eq!(
        bob.status(Method::DELETE, "/v2/team/app/manifests/v1")
            .await,
        403
    );
    bob.assert_pulls_intact("team/app", "v1").await;
    // bob may not push elsewhere; carol may only pull.
    assert_eq!(
        bob.status(Method::POST, "/v2/private/x/blobs/uploads/")
            .await,
        403
    );
    carol.assert_pulls_intact("team/app", "v1").await;
    assert_eq!(
        carol
            .status(Method::POST, "/v2/team/app/blobs/uploads/")
            .await,
        403
    );
    // Anonymous: pull public only; a push is asked to log in.
    anon.assert_pulls_intact("public/base", "v1").await;
    assert_eq!(
        anon.status(Method::GET, "/v2/team/app/manifests/v1").await,
        401
    );
    let res = anon
        .post("/v2/public/base/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("www-authenticate"));
    assert_eq!(
        anon.status(Method::GET, "/v2/").await,
        401,
        "/v2/ always challenges anonymous clients"
    );

    // The catalog shows what each may pull.
    let names = |v: Value| {
        v["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(alice.json("/v2/_catalog").await),
        ["private/x", "public/base", "team/app"]
    );
    assert_eq!(
        names(bob.json("/v2/_catalog").await),
        ["public/base", "team/app"]
    );
    assert_eq!(names(anon.json("/v2/_catalog").await), ["public/base"]);
    let page: Value = bob.json("/v2/_catalog?n=1").await;
    assert_eq!(names(page), ["public/base"]);

    // Mount needs pull on the source: bob cannot mount from private/x.
    let x_layer = alice.json("/v2/private/x/manifests/v1").await["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = bob
        .post(&format!(
            "/v2/team/app/blobs/uploads/?mount={x_layer}&from=private/x"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "falls back to an upload");
    let res = bob
        .post(&format!("/v2/team/app/blobs/uploads/?mount={x_layer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        202,
        "no automatic mount from what bob cannot pull"
    );
    // ...and a manifest cannot borrow it either.
    let config = bob.push_blob("team/app", b"{}").await;
    let stolen = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": x_layer, "size": 1024}]
    }))
    .unwrap();
    let res = bob
        .put_manifest("team/app", "stolen", OCI_MANIFEST, &stolen)
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["errors"][0]["code"],
        "MANIFEST_BLOB_UNKNOWN"
    );
    let res = bob
        .post(&format!(
            "/v2/team/app/blobs/uploads/?mount={}&from=public/base",
            alice.json("/v2/public/base/manifests/v1").await["layers"][0]["digest"]
                .as_str()
                .unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "mount from a repository bob may pull");

    // Only the administrator uses the admin API.
    assert_eq!(bob.status(Method::POST, "/admin/gc").await, 403);
    assert_eq!(anon.status(Method::GET, "/admin/gc/runs").await, 401);
    alice.run_gc(json!({"dry_run": true})).await;
    assert_eq!(
        alice
            .status(Method::DELETE, "/v2/team/app/manifests/v1")
            .await,
        202
    );
}

#[tokio::test]
async fn failed_logins_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(&["--config", &policy_config(dir.path(), "htpasswd", "")]);
    let wrong = s.client_as(Some(basic("alice", "guess")));
    for _ in 0..5 {
        assert_eq!(wrong.status(Method::GET, "/v2/").await, 401);
    }
    let res = wrong.get("/v2/").send().await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    // Even the right password waits out the window from this address.
    let alice = s.client_as(Some(basic("alice", "alice-secret")));
    assert_eq!(alice.status(Method::GET, "/v2/").await, 429);
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// Parses `Bearer realm="..",service="..",scope=".."`.
fn challenge(v: &str) -> std::collections::HashMap<String, String> {
    v.strip_prefix("Bearer ")
        .unwrap()
        .split("\",")
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

#[tokio::test]
async fn token_protocol_grants_exactly_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(&[
        "--config",
        &policy_config(dir.path(), "token", "[auth.token]\nlifetime = \"2s\"\n"),
    ]);
    let anon = s.client_as(None);

    // Anonymous push: 401 with a challenge naming the token endpoint.
    let res = anon
        .post("/v2/team/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let ch = challenge(res.headers()["www-authenticate"].to_str().unwrap());
    assert_eq!(ch["realm"], format!("{}/auth/token", s.url));
    assert_eq!(ch["service"], "berth");
    assert_eq!(ch["scope"], "repository:team/app:pull,push");

    // The endpoint grants what the policy allows, no more.
    let http = reqwest::Client::new();
    let ask = |user: Option<(&str, &str)>, scope: &str| {
        let mut r = http
            .get(&ch["realm"])
            .query(&[("service", "berth"), ("scope", scope)]);
        if let Some((u, p)) = user {
            r = r.basic_auth(u, Some(p));
        }
        r.send()
    };
    let res = ask(
        Some(("bob", "bob-secret")),
        "repository:team/app:pull,push,delete",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token"], body["access_token"]);
    assert_eq!(body["expires_in"], 2);
    assert!(body["issued_at"].is_string());
    let bob_token = body["token"].as_str().unwrap().to_owned();
    let c = claims_of(&bob_token);
    assert_eq!(c["sub"], "bob");
    assert_eq!(
        c["access"],
        json!([{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}])
    );
    let anon_token: Value = ask(None, "repository:team/app:pull")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        claims_of(anon_token["token"].as_str().unwrap())["access"],
        json!([])
    );
    let pub_token: Value = ask(None, "repository:public/base:pull,push")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        claims_of(pub_token["token"].as_str().unwrap())["access"][0]["actions"],
        json!(["pull"])
    );
    assert_eq!(
        ask(Some(("bob", "wrong")), "repository:team/app:pull")
            .await
            .unwrap()
            .status(),
        401
    );

    // The token works for what it grants.
    let bob = s.client_as(Some(format!("Bearer {bob_token}")));
    let blob = random_bytes(100);
    let d = bob.push_blob("team/app", &blob).await;
    assert_eq!(
        bob.status(Method::GET, &format!("/v2/team/app/blobs/{d}"))
            .await,
        200
    );
    // Not beyond: another repository, or delete, is insufficient scope.
    let res = bob
        .delete(&format!("/v2/team/app/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );
    assert_eq!(
        bob.status(Method::GET, "/v2/public/base/tags/list").await,
        401
    );

    // Forged tokens are refused: another key, or an altered payload.
    let mut parts: Vec<String> = bob_token.split('.').map(str::to_owned).collect();
    let mut claims = claims_of(&bob_token);
    claims["access"][0]["actions"] = json!(["pull", "push", "delete"]);
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).unwrap());
    let forged = s.client_as(Some(format!("Bearer {}", parts.join("."))));
    let res = forged
        .delete(&format!("/v2/team/app/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let garbage = s.client_as(Some("Bearer not-a-jwt".into()));
    assert_eq!(
        garbage.status(Method::GET, "/v2/team/app/tags/list").await,
        401
    );

    // The OAuth2 form containerd uses, with a refresh token.
    let res = http
        .post(&ch["realm"])
        .form(&[
            ("grant_type", "password"),
            ("username", "carol"),
            ("password", "carol-secret"),
            ("service", "berth"),
            ("scope", "repository:team/app:pull,push"),
            ("client_id", "containerd"),
            ("access_type", "offline"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        claims_of(body["access_token"].as_str().unwrap())["access"][0]["actions"],
        json!(["pull"])
    );
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let res = http
        .post(&ch["realm"])
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", "berth"),
            ("scope", "repository:team/app:pull"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let refreshed: Value = res.json().await.unwrap();
    assert_eq!(
        claims_of(refreshed["access_token"].as_str().unwrap())["sub"],
        "carol"
    );
    // A refresh token is not an access token.
    let sneaky = s.client_as(Some(format!("Bearer {refresh}")));
    assert_eq!(
        sneaky.status(Method::GET, "/v2/team/app/tags/list").await,
        401
    );

    // Expired tokens are refused.
    tokio::time::sleep(std::time::Duration::from_millis(8000)).await;
    let res = bob
        .get(&format!("/v2/team/app/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    // The admin API takes Basic credentials in token mode too.
    let alice = s.client_as(Some(basic("alice", "alice-secret")));
    assert_eq!(alice.status(Method::GET, "/admin/gc/runs").await, 200);
}

async fn conformance_with_credentials(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(&["--config", &policy_config(dir.path(), mode, "")]);
    let mut config = conformance::Config::all_workflows(&s.url, "team/conformance");
    config.crossmount_namespace = "team/conformance-other".into();
    config.username = Some("alice".into());
    config.password = Some("alice-secret".into());
    let report = conformance::run(&config).await;
    println!("{}", report.summary());
    assert_eq!(report.failed(), 0, "{}\n{}", report.summary(), s.log());
    assert_eq!(report.skipped(), 0, "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_passes_with_basic_credentials() {
    conformance_with_credentials("htpasswd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_passes_with_tokens() {
    conformance_with_credentials("token").await;
}

fn skopeo(args: &[&str]) -> (bool, String) {
    assert!(
        have("skopeo"),
        "skopeo is missing: install it with `apt-get install -y skopeo` (CI does)"
    );
    let out = Command::new("skopeo").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An OCI layout with one small image, written with the harness.
fn layout(dir: &Path) -> String {
    let mut l = harness::oci_layout::OciLayout::create(dir);
    let layers = [
        harness::oci_layout::Layer::random(2),
        harness::oci_layout::Layer::random(1),
    ];
    let image = l.add_image("amd64", "linux", &layers);
    l.tag_image("v1", &image);
    format!("oci:{}:v1", dir.display())
}

#[tokio::test]
async fn skopeo_with_credentials_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    for mode in ["htpasswd", "token"] {
        let s = Server::start_with(&["--config", &policy_config(dir.path(), mode, "")]);
        let host = s.url.trim_start_matches("http://").to_owned();
        let src = layout(&dir.path().join(format!("layout-{mode}")));
        let dest = format!("docker://{host}/team/skopeo:v1");
        let (ok, err) = skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "bob:bob-secret",
            &src,
            &dest,
        ]);
        assert!(ok, "{mode}: push with credentials: {err}\n{}", s.log());
        let (ok, _) = skopeo(&["copy", "--dest-tls-verify=false", &src, &dest]);
        assert!(!ok, "{mode}: anonymous push is refused");
        let (ok, err) = skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "bob:wrong",
            &src,
            &dest,
        ]);
        assert!(!ok, "{mode}: wrong password is refused ({err})");
        let out = format!(
            "oci:{}:v1",
            dir.path().join(format!("out-{mode}")).display()
        );
        let (ok, err) = skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            "carol:carol-secret",
            &dest,
            &out,
        ]);
        assert!(ok, "{mode}: pull with credentials: {err}");
        let (ok, err) = skopeo(&[
            "delete",
            "--tls-verify=false",
            "--creds",
            "bob:bob-secret",
            &dest,
        ]);
        assert!(!ok, "{mode}: bob may not delete ({err})");
        let (ok, err) = skopeo(&[
            "delete",
            "--tls-verify=false",
            "--creds",
            "alice:alice-secret",
            &dest,
        ]);
        assert!(ok, "{mode}: alice may delete: {err}");
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM.
fn certificate(dir: &Path, name: &str) -> (String, String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (
        cert.to_str().unwrap().into(),
        key.to_str().unwrap().into(),
        ck.cert.pem(),
    )
}

/// A server with TLS from a fresh certificate (`server.crt`/`server.key`
/// in `dir`) and the users of [`htpasswd`]; returns it and the CA PEM.
fn tls_server(dir: &Path, extra: &[&str]) -> (Server, String) {
    let (cert, key, pem) = certificate(dir, "server");
    let htpasswd = htpasswd(dir);
    let mut args = vec![
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--htpasswd",
        &htpasswd,
    ];
    args.extend_from_slice(extra);
    (Server::start_with(&args), pem)
}

fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// Pushes a small blob over TLS as bob; returns its digest.
async fn push_blob_as_bob(s: &Server, ca_pem: &str, repo: &str) -> String {
    let blob = random_bytes(100);
    let d = sha256(&blob);
    let res = https_client(ca_pem)
        .post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", s.url))
        .basic_auth("bob", Some("bob-secret"))
        .body(blob)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    d
}

#[tokio::test]
async fn tls_with_generated_certificate_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (s, pem) = tls_server(dir.path(), &[]);
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);
    let res = https_client(&pem)
        .get(format!("{}/v2/", s.url))
        .basic_auth("bob", Some("bob-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // An untrusted client refuses the handshake.
    assert!(
        reqwest::Client::new()
            .get(format!("{}/v2/", s.url))
            .send()
            .await
            .is_err()
    );

    // skopeo verifying the certificate from a cert dir.
    let certs = dir.path().join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("ca.crt"), &pem).unwrap();
    let host = s.url.trim_start_matches("https://").to_owned();
    let src = layout(&dir.path().join("layout"));
    let (ok, err) = skopeo(&[
        "copy",
        "--dest-cert-dir",
        certs.to_str().unwrap(),
        "--dest-creds",
        "bob:bob-secret",
        &src,
        &format!("docker://{host}/tls/app:v1"),
    ]);
    assert!(ok, "skopeo over TLS: {err}\n{}", s.log());

    // Renewed certificate files are picked up without a restart.
    let (_, _, new_pem) = certificate(dir.path(), "renewed");
    std::fs::copy(dir.path().join("renewed.crt"), &cert).unwrap();
    std::fs::copy(dir.path().join("renewed.key"), &key).unwrap();
    let mut switched = false;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if https_client(&new_pem)
            .get(format!("{}/v2/", s.url))
            .send()
            .await
            .is_ok()
        {
            switched = true;
            break;
        }
    }
    assert!(switched, "the renewed certificate is served");
    push_blob_as_bob(&s, &new_pem, "tls/app").await;
}

#[tokio::test]
async fn plain_http_beside_tls_serves_the_same_store_with_the_same_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (s, pem) = tls_server(dir.path(), &["--plain-addr", "127.0.0.1:0"]);
    let plain = s.plain_url.clone().expect("plain listener announced");
    assert!(plain.starts_with("http://127.0.0.1:"), "{plain}");

    // Pushed over TLS, visible over plain HTTP: one store behind both.
    let d = push_blob_as_bob(&s, &pem, "both/app").await;
    let head = |auth: bool| {
        let req = reqwest::Client::new().head(format!("{plain}/v2/both/app/blobs/{d}"));
        let req = if auth {
            req.basic_auth("bob", Some("bob-secret"))
        } else {
            req
        };
        req.send()
    };
    let res = head(true).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["docker-content-digest"], d.as_str());
    // The plain listener asks for the same credentials.
    let res = head(false).await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("www-authenticate"));

    // Plain HTTP beside plain HTTP makes no sense: refused at start.
    let out = Command::new(env!("CARGO_BIN_EXE_registry"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--plain-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only for use beside TLS"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `registry gc` reaches a server with TLS and logins: the CA certificate
/// from `--ca-cert`, the user from `--user`, the password from a file or
/// the environment, and no secret in what it prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_gc_logs_in_over_tls_and_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = tls_server(dir.path(), &[]);
    let ca = dir.path().join("server.crt");
    let password = dir.path().join("password");
    std::fs::write(&password, "alice-secret\n").unwrap();
    let gc = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_registry"))
            .arg("gc")
            .args(args)
            .env_remove("REGISTRY_PASSWORD")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let url = s.url.clone();
    let ca = ca.to_str().unwrap();
    let (ok, out) = gc(
        &[
            "--url",
            &url,
            "--ca-cert",
            ca,
            "--user",
            "alice",
            "--password-file",
        ]
        .iter()
        .copied()
        .chain([password.to_str().unwrap()])
        .collect::<Vec<_>>(),
        &[],
    );
    assert!(ok, "{out}");
    assert!(out.contains("Succeeded"), "{out}");
    let (ok, out) = gc(
        &["--url", &url, "--ca-cert", ca, "--user", "alice"],
        &[("REGISTRY_PASSWORD", "alice-secret")],
    );
    assert!(ok, "{out}");
    // Credentials in the URL work too, and a refusal does not repeat them.
    let with_login = url.replacen("https://", "https://alice:wrong-secret@", 1);
    let (ok, out) = gc(&["--url", &with_login, "--ca-cert", ca], &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("401"), "{out}");
    assert!(!out.contains("wrong-secret"), "the password leaked: {out}");
    // Without the CA, the certificate is refused, with no secret either.
    let (ok, out) = gc(&["--url", &with_login], &[]);
    assert!(!ok, "{out}");
    assert!(!out.contains("wrong-secret"), "the password leaked: {out}");
}
