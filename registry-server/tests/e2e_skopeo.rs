//! End-to-end tests with skopeo: OCI layouts built on disk are copied into
//! a running Berth, inspected, copied back out and compared digest by digest,
//! and deleted by tag and by digest.
//!
//! skopeo must be installed (`apt-get install -y skopeo`); without it these
//! tests fail, they are never skipped.
//!
//! Each test runs twice: with the blobs in the data directory (`NAME::fs`)
//! and in a Garage bucket (`NAME::s3`).

mod harness;

use std::path::Path;

use harness::oci_layout::{self, BuiltIndex, Layer, OciLayout};
use harness::skopeo::{
    docker_ref, image_layout, pull, pull_intact, push, require_skopeo, skopeo_fails, skopeo_ok,
};
use harness::{Blobs, OCI_INDEX, OCI_MANIFEST, Server};
use serde_json::Value;

const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

async fn inspect_raw(server: &Server, reference: &str) -> Vec<u8> {
    let r = docker_ref(server, reference);
    skopeo_ok(server, &["inspect", "--raw", "--tls-verify=false", &r])
        .await
        .into_bytes()
}

async fn inspect(server: &Server, global: &[&str], reference: &str) -> Value {
    let r = docker_ref(server, reference);
    let mut args: Vec<&str> = global.to_vec();
    args.extend(["inspect", "--tls-verify=false", &r]);
    serde_json::from_str(&skopeo_ok(server, &args).await).expect("inspect prints JSON")
}

async fn list_tags(server: &Server, repo: &str) -> Vec<String> {
    let r = docker_ref(server, repo);
    let out: Value =
        serde_json::from_str(&skopeo_ok(server, &["list-tags", "--tls-verify=false", &r]).await)
            .expect("list-tags prints JSON");
    let mut tags: Vec<String> = out["Tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    tags.sort();
    tags
}

/// GET of a manifest with every manifest type accepted: (status, content-type, digest header, body).
async fn get_manifest(
    server: &Server,
    repo: &str,
    reference: &str,
) -> (u16, String, String, Vec<u8>) {
    let m = server
        .client()
        .fetch_manifest(repo, reference, ACCEPT_ALL)
        .await;
    (m.status, m.content_type, m.digest, m.body)
}

async fn assert_manifest_gone(server: &Server, repo: &str, reference: &str) {
    let res = server
        .client()
        .get(&format!("/v2/{repo}/manifests/{reference}"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    harness::assert_error(res, 404, "MANIFEST_UNKNOWN").await;
    let head = server
        .client()
        .head(&format!("/v2/{repo}/manifests/{reference}"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404, "HEAD {repo}:{reference} after delete");
}

async fn assert_blobs_present(
    server: &Server,
    repo: &str,
    blobs: impl IntoIterator<Item = &String>,
) {
    let client = server.client();
    for d in blobs {
        let res = client
            .get(&format!("/v2/{repo}/blobs/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            200,
            "GET blob {d} in {repo}; log:\n{}",
            server.log()
        );
        let body = res.bytes().await.unwrap();
        assert_eq!(&harness::sha256(&body), d, "content of blob {d} in {repo}");
    }
}

/// A layout holding a linux/amd64 + linux/arm64 index, tagged `tag`.
fn index_layout(dir: &Path, tag: &str) -> BuiltIndex {
    let mut layout = OciLayout::create(dir);
    let amd = layout.add_image("amd64", "linux", &[Layer::random(2), Layer::random(1)]);
    let arm = layout.add_image("arm64", "linux", &[Layer::random(1), Layer::random(2)]);
    let index = layout.add_index(vec![amd, arm]);
    layout.tag_index(tag, &index);
    index
}

async fn multi_layer_image_round_trips_with_identical_digests(blobs: Blobs) {
    require_skopeo();
    let server = Server::start_on(blobs, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let image = image_layout(&src, "v1", 4);

    push(&server, &src, "v1", "e2e/image:v1", false).await;

    // The registry serves the very bytes that were pushed, as an OCI manifest.
    assert_eq!(
        inspect_raw(&server, "e2e/image:v1").await,
        image.manifest,
        "inspect --raw by tag"
    );
    assert_eq!(
        inspect_raw(&server, &format!("e2e/image@{}", image.digest)).await,
        image.manifest,
        "inspect --raw by digest"
    );
    let (status, ct, dcd, body) = get_manifest(&server, "e2e/image", "v1").await;
    assert_eq!(
        (status, ct.as_str(), dcd.as_str()),
        (200, OCI_MANIFEST, image.digest.as_str())
    );
    assert_eq!(body, image.manifest);
    assert_blobs_present(&server, "e2e/image", &image.blobs()).await;

    // skopeo's own view: digest, layers, platform, and the config blob.
    let info = inspect(&server, &[], "e2e/image:v1").await;
    assert_eq!(info["Digest"], image.digest.as_str(), "{info}");
    assert_eq!(info["Architecture"], "amd64", "{info}");
    assert_eq!(info["Os"], "linux", "{info}");
    let layers: Vec<&str> = info["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(layers, image.layers, "{info}");
    let r = docker_ref(&server, "e2e/image:v1");
    let config = skopeo_ok(
        &server,
        &["inspect", "--config", "--raw", "--tls-verify=false", &r],
    )
    .await;
    assert_eq!(harness::sha256(config.as_bytes()), image.config);
    assert_eq!(list_tags(&server, "e2e/image").await, ["v1"]);

    // Copy back out: same manifest digest, same blobs, all hash-correct.
    let out = tmp.path().join("out");
    pull_intact(&server, "e2e/image:v1", &out, &image).await;
    // And by digest, into a second layout.
    let by_digest = format!("e2e/image@{}", image.digest);
    pull_intact(&server, &by_digest, &tmp.path().join("out2"), &image).await;
}

async fn multi_arch_index_round_trips_with_all(blobs: Blobs) {
    require_skopeo();
    let server = Server::start_on(blobs, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let index = index_layout(&src, "multi");

    push(&server, &src, "multi", "e2e/multi:latest", true).await;

    assert_eq!(
        inspect_raw(&server, "e2e/multi:latest").await,
        index.index,
        "inspect --raw of the index"
    );
    let (status, ct, dcd, body) = get_manifest(&server, "e2e/multi", "latest").await;
    assert_eq!(
        (status, ct.as_str(), dcd.as_str()),
        (200, OCI_INDEX, index.digest.as_str())
    );
    assert_eq!(body, index.index);
    for child in &index.children {
        let (status, ct, dcd, body) = get_manifest(&server, "e2e/multi", &child.digest).await;
        assert_eq!(
            (status, ct.as_str(), dcd.as_str()),
            (200, OCI_MANIFEST, child.digest.as_str())
        );
        assert_eq!(body, child.manifest);
        assert_eq!(
            inspect_raw(&server, &format!("e2e/multi@{}", child.digest)).await,
            child.manifest
        );
    }
    assert_blobs_present(&server, "e2e/multi", &index.blobs()).await;

    // skopeo picks the child for the platform it is asked for (its
    // `Digest` is the one of the index it resolved, the layers the child's).
    for child in &index.children {
        let global = [
            "--override-os",
            "linux",
            "--override-arch",
            child.architecture.as_str(),
        ];
        let info = inspect(&server, &global, "e2e/multi:latest").await;
        assert_eq!(info["Digest"], index.digest.as_str(), "{info}");
        assert_eq!(info["Architecture"], child.architecture.as_str(), "{info}");
        let layers: Vec<&str> = info["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(
            layers, child.layers,
            "platform {}: {info}",
            child.architecture
        );
    }

    // Copy everything back out and compare every digest.
    let out = tmp.path().join("out");
    let entry = pull(&server, "e2e/multi:latest", &out, "back", true).await;
    assert_eq!(entry.digest, index.digest);
    assert_eq!(entry.media_type, OCI_INDEX);
    assert_eq!(oci_layout::read_blob(&out, &index.digest), index.index);
    let mut expected = index.blobs();
    expected.insert(index.digest.clone());
    expected.extend(index.children.iter().map(|c| c.digest.clone()));
    assert_eq!(oci_layout::closure(&out, &entry.digest), expected);
}

async fn child_manifest_of_an_index_pulls_by_digest(blobs: Blobs) {
    require_skopeo();
    let server = Server::start_on(blobs, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let index = index_layout(&src, "multi");
    push(&server, &src, "multi", "e2e/children:v1", true).await;

    for (i, child) in index.children.iter().enumerate() {
        let out = tmp.path().join(format!("out-{i}"));
        pull_intact(
            &server,
            &format!("e2e/children@{}", child.digest),
            &out,
            child,
        )
        .await;
        // Nothing of the sibling came along.
        let sibling = &index.children[1 - i];
        assert!(!oci_layout::blob_path(&out, &sibling.digest).exists());
        assert!(!oci_layout::blob_path(&out, &sibling.config).exists());
    }
}

async fn delete_by_tag_removes_the_tag_only(blobs: Blobs) {
    require_skopeo();
    let server = Server::start_on(blobs, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let image = image_layout(&src, "v1", 3);
    push(&server, &src, "v1", "e2e/untag:v1", false).await;
    push(&server, &src, "v1", "e2e/untag:keep", false).await;
    assert_eq!(inspect_raw(&server, "e2e/untag:v1").await, image.manifest);

    let res = server
        .client()
        .delete("/v2/e2e/untag/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        202,
        "DELETE by tag: {}",
        res.text().await.unwrap()
    );

    let r = docker_ref(&server, "e2e/untag:v1");
    let err = skopeo_fails(&server, &["inspect", "--raw", "--tls-verify=false", &r]).await;
    assert!(
        err.contains("manifest unknown") || err.contains("not found") || err.contains("404"),
        "skopeo should report the tag as unknown: {err}"
    );
    assert_manifest_gone(&server, "e2e/untag", "v1").await;
    assert_eq!(list_tags(&server, "e2e/untag").await, ["keep"]);

    // The manifest itself and its other tag are untouched.
    assert_eq!(inspect_raw(&server, "e2e/untag:keep").await, image.manifest);
    assert_eq!(
        inspect_raw(&server, &format!("e2e/untag@{}", image.digest)).await,
        image.manifest
    );
}

async fn skopeo_delete_by_digest_removes_manifest_and_all_its_tags(blobs: Blobs) {
    require_skopeo();
    let server = Server::start_on(blobs, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let image = image_layout(&src, "v1", 3);
    push(&server, &src, "v1", "e2e/gone:v1", false).await;
    push(&server, &src, "v1", "e2e/gone:also", false).await;
    assert_eq!(list_tags(&server, "e2e/gone").await, ["also", "v1"]);

    let by_digest = docker_ref(&server, &format!("e2e/gone@{}", image.digest));
    skopeo_ok(&server, &["delete", "--tls-verify=false", &by_digest]).await;

    assert_manifest_gone(&server, "e2e/gone", &image.digest).await;
    assert_manifest_gone(&server, "e2e/gone", "v1").await;
    assert_manifest_gone(&server, "e2e/gone", "also").await;
    skopeo_fails(
        &server,
        &["inspect", "--raw", "--tls-verify=false", &by_digest],
    )
    .await;
    let by_tag = docker_ref(&server, "e2e/gone:also");
    skopeo_fails(
        &server,
        &["inspect", "--raw", "--tls-verify=false", &by_tag],
    )
    .await;
    assert_eq!(list_tags(&server, "e2e/gone").await, Vec::<String>::new());
    // A second delete finds nothing.
    skopeo_fails(&server, &["delete", "--tls-verify=false", &by_digest]).await;
}

async fn deleting_one_image_leaves_a_sibling_sharing_layers_intact(blobs: Blobs) {
    require_skopeo();
    let server = Server::start_on(blobs, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");

    let mut layout = OciLayout::create(&src);
    let base = Layer::random(3);
    let middle = Layer::random(2);
    let a = layout.add_image(
        "amd64",
        "linux",
        &[base.clone(), middle.clone(), Layer::random(1)],
    );
    let b = layout.add_image(
        "amd64",
        "linux",
        &[base.clone(), middle.clone(), Layer::random(2)],
    );
    layout.tag_image("a", &a);
    layout.tag_image("b", &b);
    let shared: Vec<String> = vec![base.digest(), middle.digest()];
    assert_eq!(a.layers[..2], shared[..]);
    assert_eq!(b.layers[..2], shared[..]);

    push(&server, &src, "a", "e2e/shared:a", false).await;
    push(&server, &src, "b", "e2e/shared:b", false).await;

    let a_ref = docker_ref(&server, &format!("e2e/shared@{}", a.digest));
    skopeo_ok(&server, &["delete", "--tls-verify=false", &a_ref]).await;
    assert_manifest_gone(&server, "e2e/shared", &a.digest).await;
    assert_manifest_gone(&server, "e2e/shared", "a").await;

    assert_blobs_present(&server, "e2e/shared", &b.blobs()).await;
    let out = tmp.path().join("out");
    pull_intact(&server, "e2e/shared:b", &out, &b).await;
    for layer in [&base, &middle] {
        assert_eq!(oci_layout::read_blob(&out, &layer.digest()), layer.gzip);
    }
    assert_eq!(list_tags(&server, "e2e/shared").await, ["b"]);

    // The same holds once the server has restarted on the same data.
    let mut server = server;
    server.restart();
    pull_intact(&server, "e2e/shared:b", &tmp.path().join("out-restart"), &b).await;
    assert_manifest_gone(&server, "e2e/shared", &a.digest).await;
}

on_both_stores!(
    multi_layer_image_round_trips_with_identical_digests,
    multi_arch_index_round_trips_with_all,
    child_manifest_of_an_index_pulls_by_digest,
    delete_by_tag_removes_the_tag_only,
    skopeo_delete_by_digest_removes_manifest_and_all_its_tags,
    deleting_one_image_leaves_a_sibling_sharing_layers_intact,
);
