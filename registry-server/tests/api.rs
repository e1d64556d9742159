//! The HTTP API as a client sees it: statuses, headers and error bodies for
//! the cases the conformance workflows do not reach.

mod harness;

use harness::{OCI_INDEX, OCI_MANIFEST, Server, assert_error, random_bytes, sha256};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn base_route_and_error_envelopes() {
    let s = Server::start();
    let c = s.client();
    let res = c.get("/v2/").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );

    let unknown = sha256(b"never pushed");
    let unknown_blob = format!("/v2/a/blobs/{unknown}");
    for (path, status, code) in [
        ("/v2/nothing/here/at/all", 404, "UNSUPPORTED"),
        ("/v3/", 404, "UNSUPPORTED"),
        ("/v2/Upper/tags/list", 400, "NAME_INVALID"),
        ("/v2/a/blobs/sha256:abc", 400, "DIGEST_INVALID"),
        (
            "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
            400,
            "DIGEST_INVALID",
        ),
        (&unknown_blob, 404, "BLOB_UNKNOWN"),
        ("/v2/a/manifests/latest", 404, "MANIFEST_UNKNOWN"),
        ("/v2/a/manifests/.bad", 404, "MANIFEST_UNKNOWN"),
        ("/v2/a/tags/list", 404, "NAME_UNKNOWN"),
        (
            "/v2/a/blobs/uploads/0123456789abcdef",
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
    ] {
        assert_error(c.get(path).send().await.unwrap(), status, code).await;
    }
    let res = c.post("/v2/a/tags/list").send().await.unwrap();
    assert_eq!(res.headers()["allow"], "GET");
    assert_error(res, 405, "UNSUPPORTED").await;
    assert_error(
        c.put_manifest("a", ".bad", OCI_MANIFEST, b"{}").await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    // An upload id that tries to name a path is just unknown.
    assert_error(
        c.patch("/v2/a/blobs/uploads/..%2F..%2Findex.redb")
            .body("x")
            .send()
            .await
            .unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;

    // HEAD: the status and headers of the error, no body.
    let res = c
        .head(&format!("/v2/a/blobs/{unknown}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert!(res.bytes().await.unwrap().is_empty());
    assert_eq!(c.status(Method::HEAD, "/v2/a/manifests/.bad").await, 404);
}

#[tokio::test]
async fn blob_reads_support_ranges_and_carry_the_digest() {
    let s = Server::start();
    let c = s.client();
    let bytes = random_bytes(1000);
    let d = c.push_blob("r", &bytes).await;
    let path = format!("/v2/r/blobs/{d}");

    let res = c.get(&path).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["docker-content-digest"], d.as_str());
    assert_eq!(res.headers()["content-length"], "1000");
    assert_eq!(res.headers()["accept-ranges"], "bytes");
    assert_eq!(res.bytes().await.unwrap(), bytes);

    let res = c.head(&path).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], "1000");
    assert_eq!(res.headers()["docker-content-digest"], d.as_str());

    for (range, start, end) in [
        ("bytes=10-19", 10, 19),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
        ("bytes=0-5000", 0, 999),
    ] {
        let res = c.get(&path).header("range", range).send().await.unwrap();
        assert_eq!(res.status(), 206, "{range}");
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes {start}-{end}/1000").as_str(),
            "{range}"
        );
        assert_eq!(res.bytes().await.unwrap(), &bytes[start..=end], "{range}");
    }
    let res = c
        .get(&path)
        .header("range", "bytes=2000-3000")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-range"], "bytes */1000");
    assert_eq!(res.status(), 416);

    // Visible only in the repository it was pushed to.
    assert_eq!(
        c.status(Method::GET, &format!("/v2/other/blobs/{d}")).await,
        404
    );
}

#[tokio::test]
async fn uploads_monolithic_chunked_sha512_and_mismatch() {
    let s = Server::start();
    let c = s.client();

    // Single POST with a sha512 digest.
    let bytes = random_bytes(3000);
    let d512 = {
        use sha2::Digest as _;
        format!("sha512:{}", harness::hex(&sha2::Sha512::digest(&bytes)))
    };
    let res = c
        .post(&format!("/v2/r/blobs/uploads/?digest={d512}"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.headers()["location"],
        format!("/v2/r/blobs/{d512}").as_str()
    );
    assert_eq!(
        c.get(&format!("/v2/r/blobs/{d512}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        bytes
    );

    // Chunked: two PATCHes and a PUT that carries the last chunk.
    let data = random_bytes(10_000);
    let d = sha256(&data);
    let res = c.post("/v2/r/blobs/uploads/").send().await.unwrap();
    let loc = res.headers()["location"].to_str().unwrap().to_owned();
    let res = c
        .patch(&loc)
        .header("content-range", "0-3999")
        .body(data[..4000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(res.headers()["range"], "0-3999");
    // Out of order: 416 with where the upload stands.
    let res = c
        .patch(&loc)
        .header("content-range", "5000-5999")
        .body(data[5000..6000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 416);
    assert_eq!(res.headers()["range"], "0-3999");
    // A malformed Content-Range is a 416 too.
    let res = c
        .patch(&loc)
        .header("content-range", "abc")
        .body(vec![1u8])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 416);
    // Content-Range longer than the body.
    let res = c
        .patch(&loc)
        .header("content-range", "4000-4999")
        .body(data[4000..4500].to_vec())
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "SIZE_INVALID").await;
    let res = c.get(&loc).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["range"], "0-3999");
    let res = c
        .patch(&loc)
        .body(data[4000..8000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["range"], "0-7999");
    let res = c
        .put(&format!("{loc}?digest={d}"))
        .header("content-range", "8000-9999")
        .body(data[8000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["docker-content-digest"], d.as_str());
    assert_eq!(
        c.get(&format!("/v2/r/blobs/{d}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        data
    );
    assert_eq!(
        c.status(Method::GET, &loc).await,
        404,
        "a closed session is gone"
    );

    // A digest mismatch leaves nothing behind: no blob, no session, no file.
    let res = c.post("/v2/r/blobs/uploads/").send().await.unwrap();
    let loc = res.headers()["location"].to_str().unwrap().to_owned();
    let claimed = sha256(b"something else");
    let res = c
        .put(&format!("{loc}?digest={claimed}"))
        .body(random_bytes(100))
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "DIGEST_INVALID").await;
    assert_eq!(
        c.status(Method::HEAD, &format!("/v2/r/blobs/{claimed}"))
            .await,
        404
    );
    assert_eq!(c.status(Method::GET, &loc).await, 404);
    let leftovers = std::fs::read_dir(s.data_dir().join("uploads"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "upload files left behind");

    // Closing without a digest, and cancelling.
    let res = c.post("/v2/r/blobs/uploads/").send().await.unwrap();
    let loc = res.headers()["location"].to_str().unwrap().to_owned();
    assert_error(c.put(&loc).send().await.unwrap(), 400, "DIGEST_INVALID").await;
    assert_eq!(c.status(Method::DELETE, &loc).await, 204);
    assert_eq!(c.status(Method::DELETE, &loc).await, 404);
    // A session belongs to its repository.
    let res = c.post("/v2/r/blobs/uploads/").send().await.unwrap();
    let loc = res.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        c.status(Method::GET, &loc.replace("/v2/r/", "/v2/elsewhere/"))
            .await,
        404
    );
}

#[tokio::test]
async fn chunked_upload_resumes_after_a_crash() {
    let mut s = Server::start();
    let c = s.client();
    let data = random_bytes(200_000);
    let d = sha256(&data);
    let res = c.post("/v2/r/blobs/uploads/").send().await.unwrap();
    let loc = res.headers()["location"].to_str().unwrap().to_owned();
    let res = c
        .patch(&loc)
        .header("content-range", "0-99999")
        .body(data[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    s.restart(); // SIGKILL, then start again on the same data
    let c = s.client();
    let res = c.get(&loc).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["range"], "0-99999");
    let res = c
        .patch(&loc)
        .header("content-range", "100000-199999")
        .body(data[100_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let res = c.put(&format!("{loc}?digest={d}")).send().await.unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    assert_eq!(
        c.get(&format!("/v2/r/blobs/{d}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        data
    );
}

#[tokio::test]
async fn mounts_with_and_without_from() {
    let s = Server::start();
    let c = s.client();
    let d = c.push_blob("src", b"shared layer").await;
    let res = c
        .post(&format!("/v2/dst/blobs/uploads/?mount={d}&from=src"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.headers()["location"],
        format!("/v2/dst/blobs/{d}").as_str()
    );
    assert_eq!(
        c.status(Method::GET, &format!("/v2/dst/blobs/{d}")).await,
        200
    );
    // From a repository that does not have it: an upload session instead.
    let res = c
        .post(&format!("/v2/dst2/blobs/uploads/?mount={d}&from=nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert!(
        res.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/v2/dst2/blobs/uploads/")
    );
    // Bad arguments also fall back.
    let res = c
        .post("/v2/dst2/blobs/uploads/?mount=nonsense&from=src")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    // Automatic mount when the blob is anywhere in the registry.
    let res = c
        .post(&format!("/v2/dst3/blobs/uploads/?mount={d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

fn image_manifest(
    config: (&str, usize),
    layers: &[(&str, usize)],
    media_type: Option<&str>,
) -> Vec<u8> {
    let mut v = json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(d, n)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n})).collect::<Vec<_>>(),
    });
    if let Some(t) = media_type {
        v["mediaType"] = t.into();
    }
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn manifest_validation_and_exact_bytes() {
    let s = Server::start();
    let c = s.client();
    let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}";
    let cd = c.push_blob("m", config).await;
    let ld = c.push_blob("m", b"layer").await;
    let missing = sha256(b"missing");

    // Missing layer.
    let body = image_manifest((&cd, config.len()), &[(&missing, 7)], Some(OCI_MANIFEST));
    assert_error(
        c.put_manifest("m", "t", OCI_MANIFEST, &body).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    // Wrong size in a descriptor.
    let body = image_manifest((&cd, config.len()), &[(&ld, 999)], Some(OCI_MANIFEST));
    assert_error(
        c.put_manifest("m", "t", OCI_MANIFEST, &body).await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    // Content-Type disagrees with mediaType.
    let body = image_manifest((&cd, config.len()), &[(&ld, 5)], Some(OCI_MANIFEST));
    assert_error(
        c.put_manifest(
            "m",
            "t",
            "application/vnd.docker.distribution.manifest.v2+json",
            &body,
        )
        .await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    // Not JSON.
    assert_error(
        c.put_manifest("m", "t", OCI_MANIFEST, b"{not json").await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    // Pushed by a digest that is not its own.
    let wrong = sha256(b"other");
    assert_error(
        c.put_manifest("m", &wrong, OCI_MANIFEST, &body).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    // Too large.
    let big = vec![b' '; 4 * 1024 * 1024 + 1];
    assert_error(
        c.put_manifest("m", "t", OCI_MANIFEST, &big).await,
        413,
        "SIZE_INVALID",
    )
    .await;

    // Exact bytes, with odd whitespace, come back as pushed.
    let mut body = image_manifest((&cd, config.len()), &[(&ld, 5)], Some(OCI_MANIFEST));
    body.extend_from_slice(b"\n\n  ");
    let res = c.put_manifest("m", "v1", OCI_MANIFEST, &body).await;
    assert_eq!(res.status(), 201);
    let digest = sha256(&body);
    assert_eq!(res.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(
        res.headers()["location"],
        format!("/v2/m/manifests/{digest}").as_str()
    );
    for reference in ["v1", digest.as_str()] {
        let res = c
            .get(&format!("/v2/m/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], OCI_MANIFEST);
        assert_eq!(res.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(res.bytes().await.unwrap(), body);
        let res = c
            .head(&format!("/v2/m/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.headers()["content-length"],
            body.len().to_string().as_str()
        );
    }

    // Docker schema 2 and a Docker manifest list, by their own media types.
    let docker = "application/vnd.docker.distribution.manifest.v2+json";
    let body = image_manifest((&cd, config.len()), &[(&ld, 5)], Some(docker));
    assert_eq!(
        c.put_manifest("m", "docker", docker, &body).await.status(),
        201
    );
    let list_type = "application/vnd.docker.distribution.manifest.list.v2+json";
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": list_type,
        "manifests": [{"mediaType": docker, "digest": sha256(&body), "size": body.len(), "platform": {"architecture": "amd64", "os": "linux"}}]
    }))
    .unwrap();
    assert_eq!(
        c.put_manifest("m", "list", list_type, &list).await.status(),
        201
    );
    let res = c.get("/v2/m/manifests/list").send().await.unwrap();
    assert_eq!(res.headers()["content-type"], list_type);

    // An index whose child is not in the repository.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": missing, "size": 10}]
    }))
    .unwrap();
    assert_error(
        c.put_manifest("m", "idx", OCI_INDEX, &index).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;

    // sha512-addressed manifest.
    let body = image_manifest((&cd, config.len()), &[], Some(OCI_MANIFEST));
    let d512 = {
        use sha2::Digest as _;
        format!("sha512:{}", harness::hex(&sha2::Sha512::digest(&body)))
    };
    let res = c.put_manifest("m", &d512, OCI_MANIFEST, &body).await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["docker-content-digest"], d512.as_str());
    assert_eq!(
        c.status(Method::GET, &format!("/v2/m/manifests/{d512}"))
            .await,
        200
    );
}

#[tokio::test]
async fn tags_and_catalog_paginate_with_link_headers() {
    let s = Server::start();
    let c = s.client();
    let img = c.push_image("p/q", "t00", 1).await;
    let mut expected = vec!["t00".to_owned()];
    for i in 1..25 {
        let tag = format!("t{i:02}");
        assert_eq!(
            c.put_manifest("p/q", &tag, OCI_MANIFEST, &img.manifest)
                .await
                .status(),
            201
        );
        expected.push(tag);
    }
    let mut got = Vec::new();
    let mut next = Some("/v2/p/q/tags/list?n=10".to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        let res = c.get(&path).send().await.unwrap();
        assert_eq!(res.status(), 200);
        next = res.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            assert!(l.ends_with("rel=\"next\""), "{l}");
            l[1..l.find('>').unwrap()].to_owned()
        });
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["name"], "p/q");
        got.extend(
            body["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned()),
        );
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(got, expected);
    let body: serde_json::Value = c.json("/v2/p/q/tags/list?last=t22").await;
    assert_eq!(body["tags"], json!(["t23", "t24"]));
    let res = c.get("/v2/p/q/tags/list?n=0").send().await.unwrap();
    assert!(res.headers().get("link").is_none());
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["tags"],
        json!([])
    );
    assert_eq!(c.status(Method::GET, "/v2/p/q/tags/list?n=abc").await, 400);

    for r in ["a", "b/c", "d"] {
        c.push_blob(r, r.as_bytes()).await;
    }
    let res = c.get("/v2/_catalog?n=2").send().await.unwrap();
    assert_eq!(
        res.headers()["link"],
        "</v2/_catalog?n=2&last=b%2Fc>; rel=\"next\""
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["repositories"], json!(["a", "b/c"]));
    let body: serde_json::Value = c.json("/v2/_catalog?n=2&last=b%2Fc").await;
    assert_eq!(body["repositories"], json!(["d", "p/q"]));
}

#[tokio::test]
async fn deletes_keep_what_is_still_in_use() {
    let s = Server::start();
    let c = s.client();
    let img = c.push_image("d", "v1", 2).await;
    assert_eq!(
        c.put_manifest("d", "v2", OCI_MANIFEST, &img.manifest)
            .await
            .status(),
        201
    );

    // A blob a manifest uses cannot be deleted from under it.
    let res = c
        .delete(&format!("/v2/d/blobs/{}", img.layers[0]))
        .send()
        .await
        .unwrap();
    assert_error(res, 409, "DENIED").await;

    // Deleting a tag leaves the manifest and the other tag.
    assert_eq!(c.status(Method::DELETE, "/v2/d/manifests/v1").await, 202);
    assert_eq!(c.status(Method::GET, "/v2/d/manifests/v1").await, 404);
    assert_eq!(c.status(Method::GET, "/v2/d/manifests/v2").await, 200);
    assert_eq!(c.status(Method::DELETE, "/v2/d/manifests/v1").await, 404);

    // A manifest listed by an index cannot be deleted before the index.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": img.digest, "size": img.manifest.len()}]
    }))
    .unwrap();
    assert_eq!(
        c.put_manifest("d", "multi", OCI_INDEX, &index)
            .await
            .status(),
        201
    );
    let res = c
        .delete(&format!("/v2/d/manifests/{}", img.digest))
        .send()
        .await
        .unwrap();
    assert_error(res, 409, "DENIED").await;
    assert_eq!(
        c.status(
            Method::DELETE,
            &format!("/v2/d/manifests/{}", sha256(&index))
        )
        .await,
        202
    );
    assert_eq!(c.status(Method::GET, "/v2/d/manifests/multi").await, 404);

    // Deleting by digest removes every tag pointing at it.
    assert_eq!(
        c.status(Method::DELETE, &format!("/v2/d/manifests/{}", img.digest))
            .await,
        202
    );
    assert_eq!(c.status(Method::GET, "/v2/d/manifests/v2").await, 404);
    let body: serde_json::Value = c.json("/v2/d/tags/list").await;
    assert_eq!(body["tags"], json!([]));
    // Now the blobs can go.
    for b in img.blobs() {
        assert_eq!(
            c.status(Method::DELETE, &format!("/v2/d/blobs/{b}")).await,
            202
        );
        assert_eq!(
            c.status(Method::GET, &format!("/v2/d/blobs/{b}")).await,
            404
        );
    }
    // With nothing left the repository is gone.
    assert_eq!(c.status(Method::GET, "/v2/d/tags/list").await, 404);
    let body: serde_json::Value = c.json("/v2/_catalog").await;
    assert_eq!(body["repositories"], json!([]));
}

#[tokio::test]
async fn referrers_filter_and_subject_header() {
    let s = Server::start();
    let c = s.client();
    let img = c.push_image("r", "v1", 1).await;
    let empty = c.push_blob("r", b"{}").await;
    let mut pushed = Vec::new();
    for (i, t) in [
        "application/vnd.example.sig",
        "application/vnd.example.sbom",
        "application/vnd.example.sig",
    ]
    .iter()
    .enumerate()
    {
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": t,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": img.digest, "size": img.manifest.len()},
            "annotations": {"n": i.to_string()}
        }))
        .unwrap();
        let res = c
            .put_manifest("r", &sha256(&body), OCI_MANIFEST, &body)
            .await;
        assert_eq!(res.status(), 201);
        assert_eq!(res.headers()["oci-subject"], img.digest.as_str());
        pushed.push(sha256(&body));
    }
    let res = c
        .get(&format!("/v2/r/referrers/{}", img.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], OCI_INDEX);
    assert!(res.headers().get("oci-filters-applied").is_none());
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["manifests"].as_array().unwrap().len(), 3);
    let res = c
        .get(&format!(
            "/v2/r/referrers/{}?artifactType=application%2Fvnd.example.sig",
            img.digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["oci-filters-applied"], "artifactType");
    let body: serde_json::Value = res.json().await.unwrap();
    let list = body["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(
        list.iter()
            .all(|m| m["artifactType"] == "application/vnd.example.sig")
    );
    assert!(list.iter().all(|m| m["annotations"]["n"].is_string()));
    // Deleting a referrer removes it from the listing.
    assert_eq!(
        c.status(Method::DELETE, &format!("/v2/r/manifests/{}", pushed[1]))
            .await,
        202
    );
    let body: serde_json::Value = c.json(&format!("/v2/r/referrers/{}", img.digest)).await;
    assert_eq!(body["manifests"].as_array().unwrap().len(), 2);
    // Unknown repository or subject: an empty index, never 404.
    let res = c
        .get(&format!("/v2/nothing/referrers/{}", img.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Whatever a client sends, the answer is never a server error and the
/// server keeps serving.
#[tokio::test]
async fn hostile_input_never_gets_a_5xx() {
    let s = Server::start();
    let c = s.client();
    let img = c.push_image("ok", "v1", 1).await;
    let paths = [
        "/v2/ok/manifests/v1".to_owned(),
        format!("/v2/ok/manifests/{}", img.digest),
        format!("/v2/ok/blobs/{}", img.layers[0]),
        "/v2/ok/blobs/uploads/".to_owned(),
        "/v2/ok/blobs/uploads/zzzz".to_owned(),
        "/v2/ok/blobs/uploads/ffff?digest=sha256:00".to_owned(),
        "/v2/ok/tags/list?n=-1".to_owned(),
        "/v2/ok/tags/list?n=99999999999999999999999".to_owned(),
        "/v2/_catalog?last=%FF%FE".to_owned(),
        "/v2/ok/referrers/sha256:xyz".to_owned(),
        "/v2/%2e%2e/%2e%2e/etc/passwd/tags/list".to_owned(),
        "/v2/ok/blobs/uploads/?mount=sha256:1&from=..".to_owned(),
        "/v2/ok/blobs/uploads/?digest=sha256%3A".to_owned(),
        format!("/v2/{}/tags/list", "a".repeat(300)),
    ];
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::POST,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ];
    let bodies: [&[u8]; 4] = [
        b"",
        b"{}",
        b"\xff\xfe\x00garbage",
        b"{\"schemaVersion\":2,\"manifests\":[{\"digest\":\"sha256:zz\"}]}",
    ];
    for path in &paths {
        for m in &methods {
            for body in bodies {
                let res = c
                    .http
                    .request(m.clone(), c.url(path))
                    .header("content-type", OCI_INDEX)
                    .header("content-range", "5-2")
                    .header("range", "bytes=9-1")
                    .body(body.to_vec())
                    .send()
                    .await
                    .unwrap();
                assert!(res.status().as_u16() < 500, "{m} {path}: {}", res.status());
            }
        }
    }
    // Still serving, and still accepting pushes.
    assert_eq!(c.status(Method::GET, "/v2/").await, 200);
    c.push_image("ok", "after", 1).await;
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let mut s = Server::start();
    let c = s.client();
    let data = random_bytes(64 * 1024);
    let d = sha256(&data);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let url = c.url(&format!("/v2/slow/blobs/uploads/?digest={d}"));
    let http = c.http.clone();
    let upload =
        tokio::spawn(async move { http.post(url).body(body).send().await.unwrap().status() });
    tx.send(Ok(data[..1000].to_vec())).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let pid_terminated = {
        let mut s2 = std::mem::replace(&mut s, Server::start());
        std::thread::spawn(move || s2.terminate())
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tx.send(Ok(data[1000..].to_vec())).await.unwrap();
    drop(tx);
    assert_eq!(upload.await.unwrap(), 201, "the in-flight upload completes");
    let status = pid_terminated.join().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

#[tokio::test]
async fn empty_blobs_upload_every_way() {
    let s = Server::start();
    let c = s.client();
    let empty = sha256(b"");
    // POST then PUT with no body.
    let res = c.post("/v2/e/blobs/uploads/").send().await.unwrap();
    let loc = res.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        c.put(&format!("{loc}?digest={empty}"))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    // Single POST.
    let res = c
        .post(&format!("/v2/e2/blobs/uploads/?digest={empty}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = c.get(&format!("/v2/e/blobs/{empty}")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], "0");
}
