//! `registry migrate-blobs`: a server on the filesystem store is stopped,
//! its blobs are copied into a Garage bucket, and the server starts again
//! on the bucket with the same data directory; everything pulls intact and
//! `registry check` is clean. The command is idempotent, and a blob whose
//! file does not hash to its name is refused (exit status 2) and never
//! reaches the bucket.

mod harness;

use std::process::{Command, Output};
use std::sync::Arc;

use harness::{Server, random_bytes, s3_env, sha256};
use serde_json::json;

/// Runs `registry migrate-blobs` from `server`'s data directory into
/// `garage`'s bucket under `prefix`.
fn migrate(server: &Server, garage: &testbed::Garage, prefix: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_registry"))
        .arg("migrate-blobs")
        .arg("--from-dir")
        .arg(server.data_dir())
        .arg("--to")
        .arg(format!("s3://{}/{prefix}", garage.bucket()))
        .envs(s3_env(garage))
        .env("RUST_LOG", "info")
        .output()
        .expect("run registry migrate-blobs")
}

/// Runs `registry migrate-blobs` with `args` and an S3 endpoint where
/// nothing listens.
fn migrate_nowhere(args: &[&str], garage: &testbed::Garage) -> Output {
    Command::new(env!("CARGO_BIN_EXE_registry"))
        .arg("migrate-blobs")
        .args(args)
        .envs(s3_env(garage))
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run registry migrate-blobs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filesystem_store_moves_into_a_bucket_and_pulls_intact() {
    let garage = Arc::new(testbed::Garage::single());
    let prefix = "moved";
    let mut s = Server::start();
    let c = s.client();
    c.push_image("app", "v1", 3).await;
    c.push_image("app", "v2", 1).await;
    // A layer of more than one multipart part.
    let big = random_bytes((9 << 20) + 3);
    let big_digest = c.push_blob("big", &big).await;
    let layer = json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": big_digest, "size": big.len()});
    c.push_image_with_layers("big", "v1", &[layer], vec![big_digest.clone()])
        .await;
    // Stored but referenced by nothing: moved too, collected later.
    c.push_blob("app", b"not referenced").await;
    let on_disk = s.blob_store_contents().await;
    s.terminate();

    let out = migrate(&s, &garage, prefix);
    println!("{}", text(&out));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let n = on_disk.len();
    assert!(
        text(&out).contains(&format!("copied {n} blobs")),
        "{}",
        text(&out)
    );
    // Again: everything is there already.
    let out = migrate(&s, &garage, prefix);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("copied 0 blobs (0 B), {n} already there")),
        "{}",
        text(&out)
    );

    // A file that does not hash to its name is refused, and kept out.
    let forged = sha256(b"what the name promises");
    let hex = forged.strip_prefix("sha256:").unwrap();
    let dir = s.data_dir().join("blobs/sha256").join(&hex[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(hex), b"something else").unwrap();
    let out = migrate(&s, &garage, prefix);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("FAILED:  {forged}")),
        "{}",
        text(&out)
    );
    std::fs::remove_file(dir.join(hex)).unwrap();

    // No bucket to copy to, or nothing to copy from: status 2, and why.
    let (data, to) = (s.data_dir(), format!("s3://{}/{prefix}", garage.bucket()));
    let args = ["--from-dir", data.to_str().unwrap(), "--to", &to];
    let out = migrate_nowhere(&args, &garage);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("does not answer"), "{}", text(&out));
    let out = migrate_nowhere(&["--from-dir", "/nonexistent", "--to", &to], &garage);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("not a data directory"),
        "{}",
        text(&out)
    );

    s.move_blobs_to(garage.clone(), prefix);
    assert_eq!(
        s.blob_store_contents().await,
        on_disk,
        "the bucket holds every blob"
    );
    s.restart();
    let c = s.client();
    for (repo, tag) in [("app", "v1"), ("app", "v2"), ("big", "v1")] {
        c.assert_pulls_intact(repo, tag).await;
    }
    let res = c.get(&format!("/v2/big/blobs/{big_digest}")).send().await;
    assert!(
        res.unwrap().bytes().await.unwrap() == big,
        "the large layer"
    );
    c.push_image("app", "v3", 2).await;
    c.assert_pulls_intact("app", "v3").await;
    s.terminate();
    let (code, out) = s.check(&["--verify-content"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("clean"), "{out}");
}
