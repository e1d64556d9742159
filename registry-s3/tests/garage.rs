//! The S3 blob store against a real Garage node.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use registry_core::blob::{BlobStore, ByteStream};
use registry_core::observe::NoObserver;
use registry_core::{Digest, Hasher};
use registry_s3::{Location, S3BlobStore, S3Options};

fn store(garage: &testbed::Garage, prefix: &str) -> S3BlobStore {
    let mut b = object_store::aws::AmazonS3Builder::new();
    for (k, v) in garage.env() {
        b = b.with_config(k.to_ascii_lowercase().parse().unwrap(), v);
    }
    let at: Location = format!("s3://{}/{prefix}", garage.bucket())
        .parse()
        .unwrap();
    S3BlobStore::open(b, at, S3Options::default(), Arc::new(NoObserver)).unwrap()
}

fn body(b: &[u8]) -> ByteStream {
    futures::stream::iter([Ok(Bytes::copy_from_slice(b))]).boxed()
}

#[tokio::test]
async fn small_upload_round_trip() {
    let garage = tokio::task::spawn_blocking(testbed::Garage::single)
        .await
        .unwrap();
    let s = store(&garage, "t1");
    s.ready().await.unwrap();
    let a = s
        .append(
            "u1",
            0,
            Hasher::new(registry_core::Algorithm::Sha256),
            &[],
            body(b"hello "),
            u64::MAX,
        )
        .await
        .unwrap();
    let a = s
        .append("u1", a.offset, a.hasher, &a.state, body(b"world"), u64::MAX)
        .await
        .unwrap();
    let d = Digest::sha256_of(b"hello world");
    s.commit_upload("u1", a.offset, a.hasher, &a.state, &d)
        .await
        .unwrap();
    assert_eq!(s.stat(&d).await.unwrap(), Some(11));
    let mut got = Vec::new();
    let mut r = s.read(&d, 0..11).await.unwrap();
    while let Some(c) = r.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert_eq!(got, b"hello world");
}

/// An upload whose bytes all went into parts (it ended on a part boundary)
/// is still listed, so start-up recovery keeps its session, and it
/// commits whole.
#[tokio::test]
async fn an_upload_of_whole_parts_is_listed() {
    let garage = tokio::task::spawn_blocking(testbed::Garage::single)
        .await
        .unwrap();
    let s = store(&garage, "t2");
    let part = S3Options::default().part_size;
    let bytes: Vec<u8> = (0..2 * part).map(|i| (i % 251) as u8).collect();
    let sha = registry_core::Algorithm::Sha256;
    let a = s
        .append(
            "u2",
            0,
            Hasher::new(sha),
            &[],
            body(&bytes[..part]),
            u64::MAX,
        )
        .await
        .unwrap();
    assert_eq!(s.list_uploads().await.unwrap(), ["u2"]);
    let a = s
        .append(
            "u2",
            a.offset,
            a.hasher,
            &a.state,
            body(&bytes[part..]),
            u64::MAX,
        )
        .await
        .unwrap();
    assert_eq!(s.list_uploads().await.unwrap(), ["u2"]);
    let d = Digest::sha256_of(&bytes);
    s.commit_upload("u2", a.offset, a.hasher, &a.state, &d)
        .await
        .unwrap();
    assert_eq!(s.stat(&d).await.unwrap(), Some(2 * part as u64));
    // The upload's objects stay until the registry's index commit (a
    // refused one is retried from them); then it deletes them.
    assert_eq!(s.list_uploads().await.unwrap(), ["u2"]);
    s.upload_recorded("u2").await.unwrap();
    assert!(s.list_uploads().await.unwrap().is_empty());
}
