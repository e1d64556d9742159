//! End-to-end tests with the ORAS Python client (`oras` on PyPI), driven
//! through `tests/clients/oras_client.py`: artifacts pushed from files and
//! pulled back, an artifact attached to another through `subject` and seen
//! in the referrers API, tag deletion, and OCI layouts pushed and pulled.
//!
//! Each test runs twice: with the blobs in the data directory (`NAME::fs`)
//! and in a Garage bucket (`NAME::s3`).
//!
//! python3 and the client must be installed (`pip install oras`); without
//! them these tests fail, they are never skipped.

mod harness;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use harness::oci_layout::{self, Layer, OciLayout};
use harness::{Blobs, Fetched, OCI_INDEX, OCI_MANIFEST, Server};
use serde_json::{Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/oras_client.py");
const CONFIG_TYPE: &str = "application/vnd.berth.e2e.config.v1+json";
const SIGNATURE_TYPE: &str = "application/vnd.berth.e2e.signature.v1+json";
const TITLE: &str = "org.opencontainers.image.title";

fn require_oras() {
    let found = Command::new("python3")
        .args(["-c", "import oras.provider, oras.layout"])
        .output();
    let detail = match &found {
        Ok(out) if out.status.success() => return,
        Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
        Err(e) => format!("python3: {e}"),
    };
    panic!(
        "the ORAS Python client is not installed: these end-to-end tests need python3 and \
         `pip install oras`\n{detail}"
    );
}

fn host(server: &Server) -> String {
    server
        .url
        .strip_prefix("http://")
        .expect("http URL")
        .to_owned()
}

async fn run_script(
    server: &Server,
    command: &str,
    target: &str,
    extra: &[&str],
) -> (String, Output) {
    let mut args: Vec<String> = vec![
        SCRIPT.into(),
        command.into(),
        "--host".into(),
        host(server),
        "--target".into(),
        target.into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let shown = format!("python3 {}", args.join(" "));
    let output = tokio::task::spawn_blocking(move || Command::new("python3").args(&args).output())
        .await
        .expect("join")
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); install python3 and `pip install oras`")
        });
    (shown, output)
}

/// Runs one client command; requires success and returns its JSON result.
async fn oras(server: &Server, command: &str, target: &str, extra: &[&str]) -> Value {
    let (shown, out) = run_script(server, command, target, extra).await;
    assert!(
        out.status.success(),
        "`{shown}` failed with {}\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "`{shown}` printed no JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs one client command; requires failure and returns its stderr.
async fn oras_fails(server: &Server, command: &str, target: &str, extra: &[&str]) -> String {
    let (shown, out) = run_script(server, command, target, extra).await;
    assert!(
        !out.status.success(),
        "`{shown}` succeeded but should have failed\nstdout:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        server.log()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn get_manifest(server: &Server, repo: &str, reference: &str) -> Fetched {
    let accept = format!("{OCI_MANIFEST}, {OCI_INDEX}");
    server
        .client()
        .fetch_manifest(repo, reference, &accept)
        .await
}

async fn blob_bytes(server: &Server, repo: &str, digest: &str) -> Vec<u8> {
    let res = server
        .client()
        .get(&format!("/v2/{repo}/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "GET blob {digest}; log:\n{}",
        server.log()
    );
    let body = res.bytes().await.unwrap().to_vec();
    assert_eq!(harness::sha256(&body), digest, "content of blob {digest}");
    body
}

async fn referrers(
    server: &Server,
    repo: &str,
    subject: &str,
    query: &str,
) -> (String, String, Value) {
    let res = server
        .client()
        .get(&format!("/v2/{repo}/referrers/{subject}{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "referrers of {subject}{query}; log:\n{}",
        server.log()
    );
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (ct, filters) = (header("content-type"), header("oci-filters-applied"));
    (ct, filters, res.json().await.expect("referrers JSON"))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name} in {}: {e}", dir.display()))
}

async fn artifact_with_files_pushes_and_pulls_back_identical(blobs: Blobs) {
    require_oras();
    let server = Server::start_on(blobs, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let hello = format!(
        "hello from oras {}\n",
        harness::hex(&harness::random_bytes(4))
    )
    .into_bytes();
    let data = harness::random_bytes(5000);
    let config = br#"{"purpose":"berth end-to-end"}"#.to_vec();
    write(&work, "hello.txt", &hello);
    write(&work, "data.bin", &data);
    write(&work, "docs/a.md", b"# a\n");
    write(&work, "docs/b/c.txt", &harness::random_bytes(300));
    write(&work, "config.json", &config);

    let pushed = oras(
        &server,
        "push",
        "e2e/artifact:v1",
        &[
            "--workdir",
            harness::path_str(&work),
            "--file",
            "hello.txt:text/plain",
            "--file",
            "data.bin:application/vnd.berth.e2e.data",
            "--file",
            "docs",
            "--config",
            &format!("config.json:{CONFIG_TYPE}"),
            "--annotation",
            "org.opencontainers.image.description=oras end-to-end",
        ],
    )
    .await;
    assert_eq!(pushed["status"], 201, "{pushed}");
    let digest = pushed["headers"]["docker-content-digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no Docker-Content-Digest on the manifest PUT: {pushed}"))
        .to_owned();
    assert!(
        pushed["headers"]["location"].is_string(),
        "no Location: {pushed}"
    );

    // What the registry stored, seen over HTTP.
    let got = get_manifest(&server, "e2e/artifact", "v1").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.content_type, OCI_MANIFEST);
    assert_eq!(got.digest, digest);
    assert_eq!(harness::sha256(&got.body), digest);
    let manifest = got.json();
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], CONFIG_TYPE);
    assert_eq!(manifest["config"]["digest"], harness::sha256(&config));
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.description"],
        "oras end-to-end"
    );
    let layers = manifest["layers"].as_array().unwrap();
    let summary: Vec<(&str, &str)> = layers
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().unwrap(),
                l["annotations"][TITLE].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("text/plain", "hello.txt"),
            ("application/vnd.berth.e2e.data", "data.bin"),
            ("application/vnd.oci.image.layer.v1.tar+gzip", "docs"),
        ]
    );
    assert_eq!(layers[0]["digest"], harness::sha256(&hello));
    assert_eq!(layers[1]["digest"], harness::sha256(&data));
    assert_eq!(
        blob_bytes(&server, "e2e/artifact", &harness::sha256(&hello)).await,
        hello
    );
    for l in layers {
        blob_bytes(&server, "e2e/artifact", l["digest"].as_str().unwrap()).await;
    }
    assert_eq!(
        blob_bytes(&server, "e2e/artifact", &harness::sha256(&config)).await,
        config
    );

    // The client's own reads agree.
    let seen = oras(&server, "manifest", "e2e/artifact:v1", &[]).await;
    assert_eq!(seen["manifest"], manifest);
    let tags = oras(&server, "tags", "e2e/artifact", &[]).await;
    assert_eq!(tags["tags"], json!(["v1"]));

    // Pull back by tag and by digest; every file comes back byte for byte.
    for (i, target) in [
        "e2e/artifact:v1".to_owned(),
        format!("e2e/artifact@{digest}"),
    ]
    .iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("out-{i}"));
        let pulled = oras(
            &server,
            "pull",
            target,
            &["--outdir", harness::path_str(&out)],
        )
        .await;
        assert_eq!(
            pulled["files"],
            json!(["data.bin", "docs", "hello.txt"]),
            "{target}"
        );
        for name in ["hello.txt", "data.bin", "docs/a.md", "docs/b/c.txt"] {
            assert_eq!(
                read(&out, name),
                read(&work, name),
                "{name} pulled from {target}"
            );
        }
    }
}

async fn attached_artifact_is_a_referrer_until_its_tag_is_deleted(blobs: Blobs) {
    require_oras();
    let server = Server::start_on(blobs, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    write(&work, "payload.txt", &harness::random_bytes(200));
    write(&work, "sig.json", br#"{"signer":"e2e"}"#);
    write(&work, "sig.txt", &harness::random_bytes(64));
    let workdir = ["--workdir", harness::path_str(&work)];

    let pushed = oras(
        &server,
        "push",
        "e2e/attach:v1",
        &[&workdir[..], &["--file", "payload.txt:text/plain"]].concat(),
    )
    .await;
    assert_eq!(pushed["status"], 201, "{pushed}");
    let subject = get_manifest(&server, "e2e/attach", "v1").await;
    assert_eq!(subject.status, 200);
    let size = subject.body.len().to_string();

    // Attach: an artifact whose manifest names the first as its subject.
    let attached = oras(
        &server,
        "push",
        "e2e/attach:sig",
        &[
            &workdir[..],
            &[
                "--file",
                "sig.txt:text/plain",
                "--config",
                &format!("sig.json:{SIGNATURE_TYPE}"),
                "--annotation",
                "e2e.kind=signature",
                "--subject-digest",
                &subject.digest,
                "--subject-size",
                &size,
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(attached["status"], 201, "{attached}");
    assert_eq!(
        attached["headers"]["oci-subject"], subject.digest,
        "a manifest PUT with a subject answers OCI-Subject: {attached}"
    );
    let sig = get_manifest(&server, "e2e/attach", "sig").await;
    assert_eq!(sig.status, 200);
    assert_eq!(attached["headers"]["docker-content-digest"], sig.digest);
    let sig_manifest = sig.json();
    assert_eq!(
        sig_manifest["subject"],
        json!({"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": subject.body.len()})
    );
    assert_eq!(
        oras(&server, "manifest", "e2e/attach:sig", &[]).await["manifest"],
        sig_manifest
    );

    // The referrers API lists it, with the config media type as artifactType.
    let (ct, _, list) = referrers(&server, "e2e/attach", &subject.digest, "").await;
    assert_eq!(ct, OCI_INDEX);
    assert_eq!(list["mediaType"], OCI_INDEX, "{list}");
    assert_eq!(
        list["manifests"],
        json!([{
            "mediaType": OCI_MANIFEST,
            "digest": sig.digest,
            "size": sig.body.len(),
            "artifactType": SIGNATURE_TYPE,
            "annotations": {"e2e.kind": "signature"},
        }]),
        "{list}"
    );
    // (`+` in a query string means a space, so the media type is escaped.)
    let (_, filters, filtered) = referrers(
        &server,
        "e2e/attach",
        &subject.digest,
        &format!("?artifactType={}", SIGNATURE_TYPE.replace('+', "%2B")),
    )
    .await;
    assert_eq!(filters, "artifactType");
    assert_eq!(filtered["manifests"], list["manifests"]);
    let (_, _, none) = referrers(
        &server,
        "e2e/attach",
        &subject.digest,
        "?artifactType=application/vnd.berth.other",
    )
    .await;
    assert_eq!(none["manifests"], json!([]), "{none}");
    assert_eq!(
        oras(&server, "tags", "e2e/attach", &[]).await["tags"],
        json!(["sig", "v1"])
    );

    // The client deletes a tag as HEAD (for the digest) then DELETE by digest.
    let deleted = oras(&server, "delete-tag", "e2e/attach", &["--tag", "sig"]).await;
    assert_eq!(deleted["deleted"], true, "{deleted}");
    assert_eq!(get_manifest(&server, "e2e/attach", "sig").await.status, 404);
    assert_eq!(
        get_manifest(&server, "e2e/attach", &sig.digest)
            .await
            .status,
        404
    );
    let (_, _, after) = referrers(&server, "e2e/attach", &subject.digest, "").await;
    assert_eq!(
        after["manifests"],
        json!([]),
        "referrers after delete: {after}"
    );
    assert_eq!(get_manifest(&server, "e2e/attach", "v1").await.status, 200);
    assert_eq!(
        oras(&server, "tags", "e2e/attach", &[]).await["tags"],
        json!(["v1"])
    );

    // Deleting the subject too; a missing tag is reported as not deleted.
    assert_eq!(
        oras(&server, "delete-tag", "e2e/attach", &["--tag", "v1"]).await["deleted"],
        true
    );
    assert_eq!(
        oras(&server, "delete-tag", "e2e/attach", &["--tag", "v1"]).await["deleted"],
        false
    );
    assert_eq!(
        oras(&server, "tags", "e2e/attach", &[]).await["tags"],
        json!([])
    );
    let out = tmp.path().join("out");
    oras_fails(
        &server,
        "pull",
        "e2e/attach:v1",
        &["--outdir", harness::path_str(&out)],
    )
    .await;
}

async fn oci_layouts_push_and_pull_through_the_client(blobs: Blobs) {
    require_oras();
    let server = Server::start_on(blobs, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut layout = OciLayout::create(&src);
    let image = layout.add_image(
        "amd64",
        "linux",
        &[Layer::random(1), Layer::random(2), Layer::random(3)],
    );
    layout.tag_image("image", &image);
    let amd = layout.add_image("amd64", "linux", &[Layer::random(2)]);
    let arm = layout.add_image("arm64", "linux", &[Layer::random(2)]);
    let index = layout.add_index(vec![amd, arm]);
    layout.tag_index("multi", &index);

    // A single image.
    let pushed = oras(
        &server,
        "layout-push",
        "e2e/layout:image",
        &["--layout", harness::path_str(&src), "--tag", "image"],
    )
    .await;
    assert_eq!(pushed["status"], 201, "{pushed}");
    let got = get_manifest(&server, "e2e/layout", "image").await;
    assert_eq!((got.status, got.content_type.as_str()), (200, OCI_MANIFEST));
    assert_eq!(got.digest, image.digest);
    assert_eq!(got.body, image.manifest);
    for b in image.blobs() {
        blob_bytes(&server, "e2e/layout", &b).await;
    }

    // A multi-platform index: children go by digest, the index under the tag.
    let pushed = oras(
        &server,
        "layout-push",
        "e2e/layout:multi",
        &["--layout", harness::path_str(&src), "--tag", "multi"],
    )
    .await;
    assert_eq!(pushed["status"], 201, "{pushed}");
    let got = get_manifest(&server, "e2e/layout", "multi").await;
    assert_eq!((got.status, got.content_type.as_str()), (200, OCI_INDEX));
    assert_eq!(got.digest, index.digest);
    assert_eq!(got.body, index.index);
    for child in &index.children {
        let c = get_manifest(&server, "e2e/layout", &child.digest).await;
        assert_eq!((c.status, c.content_type.as_str()), (200, OCI_MANIFEST));
        assert_eq!(c.body, child.manifest);
    }

    // Pull both back into fresh layouts and compare every blob.
    let out = tmp.path().join("out-image");
    oras(
        &server,
        "layout-pull",
        "e2e/layout:image",
        &["--layout", harness::path_str(&out), "--tag", "pulled"],
    )
    .await;
    let entry = oci_layout::resolve(&out, "pulled");
    assert_eq!(entry.digest, image.digest);
    let mut expected: BTreeSet<String> = image.blobs().into_iter().collect();
    expected.insert(image.digest.clone());
    assert_eq!(oci_layout::closure(&out, &entry.digest), expected);

    let out = tmp.path().join("out-multi");
    oras(
        &server,
        "layout-pull",
        "e2e/layout:multi",
        &["--layout", harness::path_str(&out), "--tag", "pulled"],
    )
    .await;
    let entry = oci_layout::resolve(&out, "pulled");
    assert_eq!(
        (entry.digest.as_str(), entry.media_type.as_str()),
        (index.digest.as_str(), OCI_INDEX)
    );
    let mut expected = index.blobs();
    expected.insert(index.digest.clone());
    expected.extend(index.children.iter().map(|c| c.digest.clone()));
    assert_eq!(oci_layout::closure(&out, &entry.digest), expected);
}

on_both_stores!(
    artifact_with_files_pushes_and_pulls_back_identical,
    attached_artifact_is_a_referrer_until_its_tag_is_deleted,
    oci_layouts_push_and_pull_through_the_client,
);
