//! End-to-end tests with podman: images built from files (`podman build`,
//! FROM scratch) pushed to a running Berth and pulled back, compared with
//! what the registry serves; a manifest list of two platforms pushed with
//! `podman manifest push --all` and one platform pulled out of it; images
//! deleted through the registry API; and a login with Basic credentials.
//!
//! podman runs rootful with storage of its own (`--root`, `--runroot`, the
//! vfs driver) and its own registries, engine and storage configuration and
//! credentials file, all in a temporary directory: the host's set-up is
//! neither read nor changed. Commands that reach the registry pass
//! `--tls-verify=false` (plain HTTP on loopback).
//!
//! These tests need root (CI runs the suite as root) and the `podman`
//! package; without either they fail, they are never skipped.

mod harness;

use std::path::Path;

use harness::engine::{
    BuildContext, Engine, delete_manifest, host, require_root, served_json_blob, served_manifest,
    uploads_completed, write_htpasswd,
};
use harness::{Blobs, OCI_MANIFEST, Server};

/// podman with everything it keeps and reads under a directory of the test's.
struct Podman {
    dir: tempfile::TempDir,
    podman: Engine,
}

impl Podman {
    fn new() -> Podman {
        require_root("the podman tests (rootful podman with storage of its own)");
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let (root, run, tmp) = (d.join("root"), d.join("run"), d.join("tmp"));
        std::fs::create_dir_all(&tmp).unwrap();
        let files = [
            // No search registries: every reference names its registry.
            (
                "registries.conf",
                "unqualified-search-registries = []\n".to_owned(),
            ),
            // No systemd or journald needed.
            (
                "containers.conf",
                "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n".to_owned(),
            ),
            (
                "storage.conf",
                format!(
                    "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
                    run.display(),
                    root.display()
                ),
            ),
            // podman wants the credentials file to exist once it is named.
            ("auth.json", "{\"auths\": {}}\n".to_owned()),
        ];
        for (name, text) in &files {
            std::fs::write(d.join(name), text).unwrap();
        }
        let s = |p: &Path| harness::path_str(p).to_owned();
        let podman = Engine::new("podman", "podman")
            .global(&["--root", &s(&root), "--runroot", &s(&run)])
            .global(&["--storage-driver", "vfs", "--tmpdir", &s(&d.join("libpod"))])
            .env("CONTAINERS_REGISTRIES_CONF", &s(&d.join("registries.conf")))
            .env("CONTAINERS_CONF", &s(&d.join("containers.conf")))
            .env("CONTAINERS_STORAGE_CONF", &s(&d.join("storage.conf")))
            .env("REGISTRY_AUTH_FILE", &s(&d.join("auth.json")))
            .env("TMPDIR", &s(&tmp))
            .registry_args(&["--tls-verify=false"]);
        Podman { dir, podman }
    }
}

impl Podman {
    /// podman whose failures show `server`'s log too.
    fn watching(server: &Server) -> Podman {
        let mut pm = Podman::new();
        pm.podman.watch(server);
        pm
    }
}

/// Pushes `image` and returns the manifest digest podman says it pushed.
async fn push(pm: &Podman, image: &str, name: &str) -> String {
    let file = pm.dir.path().join(format!("{name}.digest"));
    pm.podman
        .push(image, &["--digestfile", harness::path_str(&file)])
        .await;
    std::fs::read_to_string(&file)
        .expect("digest file")
        .trim()
        .to_owned()
}

/// An image built by podman pushes as an OCI manifest, podman's own image
/// as the registry serves it; pushed again under another tag it sends no
/// blob; removed locally, it pulls back by tag and by digest as it was.
async fn build_push_and_pull_back(blobs: Blobs) {
    let server = Server::start_on(blobs, &[]);
    let pm = Podman::watching(&server);
    let podman = &pm.podman;
    let tmp = tempfile::tempdir().unwrap();
    let files = ["base.bin", "app.bin", "app.conf"];
    let sizes = [("base.bin", 3000), ("app.bin", 1800), ("app.conf", 200)];
    let ctx = BuildContext::random(tmp.path(), &sizes);
    let h = host(&server);
    let (image, again) = (
        format!("{h}/e2e/podman:v1"),
        format!("{h}/e2e/podman:again"),
    );
    podman.build(&ctx, &files, &image, &[]).await;
    podman.ok(&["tag", &image, &again]).await;

    let digest = push(&pm, &image, "v1").await;
    assert_eq!(
        podman
            .assert_served(&server, &image, ("e2e/podman", "v1"), OCI_MANIFEST)
            .await,
        digest
    );
    // The same image under another tag: every blob is already there.
    let uploads = uploads_completed(&server).await;
    assert_eq!(uploads, 4, "three layers and a config sent");
    podman.push(&again, &[]).await;
    assert_eq!(
        uploads_completed(&server).await,
        uploads,
        "nothing sent again"
    );
    assert_eq!(
        served_manifest(&server, "e2e/podman", "again").await.digest,
        digest
    );

    let id = podman.image_id(&image).await;
    podman.rmi(&[&image, &again]).await;
    assert!(!podman.holds(&image).await);
    podman.pull(&image, &[]).await;
    assert_eq!(podman.image_id(&image).await, id);
    let served = ("e2e/podman", "v1");
    podman
        .assert_served(&server, &image, served, OCI_MANIFEST)
        .await;
    let repo = format!("{h}/e2e/podman");
    podman.assert_known_as(&image, &repo, &digest).await;
    podman.assert_files(&image, &ctx, &files).await;
    let by_digest = format!("{h}/e2e/podman@{digest}");
    podman.pull(&by_digest, &[]).await;
    assert_eq!(podman.image_id(&by_digest).await, id);
}

/// The child of a served index (or manifest list) for `architecture`.
fn child_for<'a>(index: &'a serde_json::Value, architecture: &str) -> &'a serde_json::Value {
    let children = index["manifests"].as_array().expect("manifests");
    let found = children
        .iter()
        .find(|c| c["platform"]["architecture"] == architecture);
    found.unwrap_or_else(|| panic!("no {architecture} child in {index}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_list_pushed_with_all_pulls_one_platform() {
    let server = Server::start();
    let pm = Podman::watching(&server);
    let podman = &pm.podman;
    let tmp = tempfile::tempdir().unwrap();
    let sizes = [("base.bin", 2000), ("amd64.bin", 1500), ("arm64.bin", 1700)];
    let ctx = BuildContext::random(tmp.path(), &sizes);
    let h = host(&server);
    let list = format!("{h}/e2e/multi:v1");
    let arches = ["amd64", "arm64"];
    let local = |arch: &str| format!("localhost/e2e/multi:{arch}");
    podman.ok(&["manifest", "create", &list]).await;
    for arch in arches {
        let files = ["base.bin", &format!("{arch}.bin")];
        // No cache: the build cache does not tell platforms apart.
        let flags = ["--arch", arch, "--no-cache"];
        podman.build(&ctx, &files, &local(arch), &flags).await;
        let source = format!("containers-storage:{}", local(arch));
        podman.ok(&["manifest", "add", &list, &source]).await;
    }
    let args = [
        "manifest",
        "push",
        "--all",
        "--tls-verify=false",
        &list,
        &format!("docker://{list}"),
    ];
    podman.ok(&args).await;

    // The list and both images, as pushed.
    let served = served_manifest(&server, "e2e/multi", "v1").await;
    assert_eq!(served.status, 200);
    assert_eq!(
        served.body["manifests"].as_array().unwrap().len(),
        2,
        "{}",
        served.body
    );
    for arch in arches {
        let child = child_for(&served.body, arch);
        let digest = child["digest"].as_str().unwrap();
        let image = served_manifest(&server, "e2e/multi", digest).await;
        assert_eq!(
            (image.status, image.media_type.as_str()),
            (200, child["mediaType"].as_str().unwrap())
        );
        let config = image.body["config"]["digest"].as_str().unwrap();
        assert_eq!(podman.image_id(&local(arch)).await, config, "{arch}");
        let config = served_json_blob(&server, "e2e/multi", config).await;
        assert_eq!(config["architecture"], arch);
        server
            .client()
            .assert_pulls_intact("e2e/multi", digest)
            .await;
    }

    // Everything gone locally; one platform at a time out of the list.
    podman.ok(&["manifest", "rm", &list]).await;
    podman.rmi(&[&local("amd64"), &local("arm64")]).await;
    for arch in arches {
        podman.pull(&list, &["--arch", arch]).await;
        let pulled = podman.inspect(&list).await;
        assert_eq!(pulled["Architecture"], arch);
        let child = child_for(&served.body, arch)["digest"].as_str().unwrap();
        let repo = format!("{h}/e2e/multi");
        podman.assert_known_as(&list, &repo, child).await;
        podman
            .assert_files(&list, &ctx, &["base.bin", &format!("{arch}.bin")])
            .await;
        podman.rmi(&[&list]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_tags_and_images_are_manifest_unknown_to_podman() {
    let server = Server::start();
    let pm = Podman::watching(&server);
    let podman = &pm.podman;
    let tmp = tempfile::tempdir().unwrap();
    let files = ["one.bin", "two.bin"];
    let ctx = BuildContext::random(tmp.path(), &[("one.bin", 1200), ("two.bin", 800)]);
    let h = host(&server);
    let (v1, v2) = (format!("{h}/e2e/gone:v1"), format!("{h}/e2e/gone:v2"));
    podman.build(&ctx, &files, &v1, &[]).await;
    podman.ok(&["tag", &v1, &v2]).await;
    let digest = push(&pm, &v1, "v1").await;
    podman.push(&v2, &[]).await;
    podman.rmi(&[&v1, &v2]).await;
    let by_digest = format!("{h}/e2e/gone@{digest}");
    let unknown = |out: String, what: &str| {
        assert!(out.contains("manifest unknown"), "pull of {what}: {out}");
    };

    delete_manifest(&server, "e2e/gone", "v1").await;
    unknown(podman.refused("pull", &v1).await, "the deleted tag");
    podman.pull(&v2, &[]).await;
    podman.assert_files(&v2, &ctx, &files).await;
    podman.rmi(&[&v2]).await;

    delete_manifest(&server, "e2e/gone", &digest).await;
    unknown(podman.refused("pull", &v2).await, "the other tag");
    unknown(
        podman.refused("pull", &by_digest).await,
        "the deleted digest",
    );
}

/// `podman login` with Basic credentials from an htpasswd file: push and
/// pull logged in, refused when logged out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_basic_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let htpasswd = write_htpasswd(&tmp.path().join("htpasswd"), &[("bob", "bob-secret")]);
    let server = Server::start_with(&["--htpasswd", &htpasswd]);
    let pm = Podman::watching(&server);
    let ctx = BuildContext::random(tmp.path(), &[("login.bin", 2200)]);
    let image = format!("{}/team/podman:v1", host(&server));
    let built = (image.as_str(), &ctx, &["login.bin"][..]);
    pm.podman.build(&ctx, built.2, &image, &[]).await;
    let kept_in = pm.dir.path().join("auth.json");
    pm.podman
        .assert_login_round_trip(&server, built, ("bob", "bob-secret"), &kept_in)
        .await;
}

on_both_stores!(build_push_and_pull_back);
