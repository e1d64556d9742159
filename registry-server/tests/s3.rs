//! The object store blob store against real Garage: chunked uploads that
//! stress the multipart logic, what failed, aborted and purged uploads
//! leave in the bucket (nothing), uploads across a restart and across a
//! multipart upload the bucket aborted, ranged, slow and redirected reads,
//! an outage of the object store (stopped, then killed), its metrics, and a
//! three-node cluster losing a node mid-push.
//!
//! The `garage` binary must be installed (see `testbed`); without it these
//! tests fail, they are never skipped.

mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{Client, INLINE_CEILING, Server, assert_error, random_bytes, sample, sha256};
use reqwest::Method;
use serde_json::{Value, json};
use testbed::Garage;

const MIB: usize = 1 << 20;
/// The default part size of the object store's multipart uploads.
const PART: usize = 8 * MIB;

fn garage() -> Arc<Garage> {
    Arc::new(Garage::single())
}

/// `len` bytes in which no two parts or chunks are alike: a random block of
/// a prime length, repeated (cheap to make, and a part put in the wrong
/// place changes the digest).
fn payload(len: usize) -> Vec<u8> {
    let block = random_bytes(1_000_003);
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let n = (len - v.len()).min(block.len());
        v.extend_from_slice(&block[..n]);
    }
    v
}

/// A configuration file in `dir` holding `toml`; returns its path.
fn config_file(dir: &tempfile::TempDir, toml: &str) -> String {
    let path = dir.path().join("registry.toml");
    std::fs::write(&path, toml).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The Garage behind a server, to kill and restart (the test holds no other
/// handle to it).
fn garage_of(s: &mut Server) -> &mut Garage {
    Arc::get_mut(s.garage.as_mut().expect("an object store server"))
        .expect("only the server holds its garage")
}

/// What a server's uploads left in the bucket: objects under its
/// `uploads/`, and multipart uploads in progress under its prefix.
async fn leftovers(s: &Server) -> (Vec<String>, Vec<String>) {
    let g = s.garage.as_ref().expect("an object store server");
    let prefix = format!("{}/", s.prefix.as_deref().unwrap());
    let uploads = format!("{prefix}uploads/");
    let keys = g.list_keys(g.bucket()).await;
    let objects = keys.into_iter().filter(|k| k.starts_with(&uploads));
    let multipart = g.list_multipart_uploads(g.bucket()).await;
    let multipart = multipart.into_iter().map(|u| u.key);
    (
        objects.collect(),
        multipart.filter(|k| k.starts_with(&prefix)).collect(),
    )
}

async fn assert_no_leftovers(s: &Server, what: &str) {
    let (objects, multipart) = leftovers(s).await;
    assert!(
        objects.is_empty() && multipart.is_empty(),
        "{what} left upload objects {objects:?} and multipart uploads {multipart:?}"
    );
}

/// The keys of a server's objects at content addresses.
async fn blob_keys(s: &Server) -> Vec<String> {
    s.blob_store_contents().await.into_iter().collect()
}

/// Opens an upload session; returns its location.
async fn open_upload(c: &Client, repo: &str) -> String {
    let res = c
        .post(&format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "POST upload");
    res.headers()["location"].to_str().unwrap().to_owned()
}

/// PATCHes `chunk` at `offset` of the upload at `loc`, requiring 202 and
/// the new `Range`; returns the next location.
async fn patch(c: &Client, loc: &str, offset: usize, chunk: &[u8]) -> String {
    let end = offset + chunk.len();
    let res = c
        .patch(loc)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{offset}-{}", end - 1))
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap();
    let status = res.status();
    let range = res.headers().get("range").cloned();
    let next = res.headers().get("location").cloned();
    assert_eq!(
        status,
        202,
        "PATCH {offset}-{end}: {}",
        res.text().await.unwrap()
    );
    assert_eq!(range.unwrap(), format!("0-{}", end - 1).as_str());
    next.map_or(loc.to_owned(), |l| l.to_str().unwrap().to_owned())
}

/// The closing PUT of the upload at `loc` with `rest` as its body.
async fn close(c: &Client, loc: &str, digest: &str, rest: &[u8]) -> reqwest::Response {
    let sep = if loc.contains('?') { '&' } else { '?' };
    c.put(&format!("{loc}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(rest.to_vec())
        .send()
        .await
        .unwrap()
}

/// Pushes `bytes` as PATCHes of the sizes in `chunks`, then the rest in the
/// closing PUT under `digest`; returns the upload's location and the PUT's
/// response.
async fn push_chunked(
    c: &Client,
    repo: &str,
    bytes: &[u8],
    chunks: &[usize],
    digest: &str,
) -> (String, reqwest::Response) {
    let mut loc = open_upload(c, repo).await;
    let mut at = 0;
    for &n in chunks {
        loc = patch(c, &loc, at, &bytes[at..at + n]).await;
        at += n;
    }
    let res = close(c, &loc, digest, &bytes[at..]).await;
    (loc, res)
}

/// The blob pulls back byte for byte.
async fn assert_pulls(c: &Client, repo: &str, bytes: &[u8], what: &str) {
    let d = sha256(bytes);
    let res = c
        .get(&format!("/v2/{repo}/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{what}: GET");
    let got = res.bytes().await.unwrap();
    assert!(
        got.len() == bytes.len() && got[..] == bytes[..],
        "{what}: pulled {} bytes hashing to {}, pushed {} bytes hashing to {d}",
        got.len(),
        sha256(&got),
        bytes.len()
    );
}

/// One way of pushing a blob in chunks: the PATCH sizes, then the rest of
/// `size` in the closing PUT.
struct Chunking {
    name: &'static str,
    size: usize,
    chunks: Vec<usize>,
}

fn chunking(name: &'static str, chunks: Vec<usize>, put: usize) -> Chunking {
    Chunking {
        name,
        size: chunks.iter().sum::<usize>() + put,
        chunks,
    }
}

/// Chunkings around a part of `part` bytes.
fn chunkings(part: usize) -> Vec<Chunking> {
    let tiny: Vec<usize> = (0..300).map(|i| 1 + (i * 37) % 128).collect();
    let mut tiny_then_cross = vec![part - MIB - 5_000];
    tiny_then_cross.extend(std::iter::repeat_n(100, 100));
    tiny_then_cross.push(2 * MIB);
    vec![
        chunking("many tiny PATCHes", tiny, 20_000),
        chunking("tiny chunks joined into a part", tiny_then_cross, 1_000),
        chunking(
            "chunks crossing part boundaries",
            vec![part / 3 + 1; 6],
            1_000,
        ),
        chunking("one chunk larger than a part", vec![1_000, 2 * part + 3], 0),
        chunking("a closing PUT with a body", vec![MIB], part + 7),
        chunking("exactly two parts in PATCHes", vec![part, part], 0),
        chunking("exactly two parts, one in the PUT", vec![part], part),
        chunking(
            "a chunk ending on the boundary",
            vec![part - MIB, MIB, 100],
            0,
        ),
        chunking("a first chunk of one byte", vec![1, part], part - 1),
    ]
}

/// Pushes every chunking through `s`, checking the digest and the bytes
/// pulled back, and that no upload leaves anything in the bucket.
async fn push_every_chunking(s: &Server, part: usize) {
    let c = s.client();
    for case in chunkings(part) {
        let what = format!("{} ({} bytes, parts of {part})", case.name, case.size);
        let bytes = payload(case.size);
        let d = sha256(&bytes);
        let (_, res) = push_chunked(&c, "chunks", &bytes, &case.chunks, &d).await;
        assert_eq!(res.status(), 201, "{what}: {}", res.text().await.unwrap());
        let head = c.head(&format!("/v2/chunks/blobs/{d}")).send().await;
        let head = head.unwrap();
        assert_eq!(
            head.headers()["content-length"],
            case.size.to_string().as_str()
        );
        assert_pulls(&c, "chunks", &bytes, &what).await;
        assert_no_leftovers(s, &what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_uploads_around_part_boundaries_arrive_whole() {
    let g = garage();
    let dir = tempfile::tempdir().unwrap();
    let small_parts = config_file(&dir, &format!("[storage]\npart_size = {}\n", 5 * MIB));
    let eight = Server::start_s3(g.clone(), &[]);
    let five = Server::start_s3(g.clone(), &["--config", &small_parts]);
    push_every_chunking(&eight, PART).await;
    push_every_chunking(&five, 5 * MIB).await;

    // Whole blobs in one request: POST ?digest=, and POST then PUT.
    let c = eight.client();
    for size in [1_000, PART + 1, 2 * PART + 5] {
        let bytes = payload(size);
        let d = sha256(&bytes);
        let res = c
            .post(&format!("/v2/mono/blobs/uploads/?digest={d}"))
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "POST ?digest= of {size} bytes");
        assert_pulls(&c, "mono", &bytes, "POST ?digest=").await;
        let bytes = payload(size);
        let loc = open_upload(&c, "mono").await;
        let res = close(&c, &loc, &sha256(&bytes), &bytes).await;
        assert_eq!(res.status(), 201, "POST + PUT of {size} bytes");
        assert_pulls(&c, "mono", &bytes, "POST + PUT").await;
    }
    assert_no_leftovers(&eight, "monolithic pushes").await;

    // A sha512 digest: the upload is re-read and hashed before its copy.
    let bytes = payload(PART + 5);
    let (_, res) = push_chunked(&c, "sha512", &bytes, &[MIB, PART - MIB], &sha512(&bytes)).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let path = format!("/v2/sha512/blobs/{}", sha512(&bytes));
    let res = c.get(&path).send().await.unwrap();
    assert!(res.bytes().await.unwrap() == bytes, "the sha512 blob");
    assert_no_leftovers(&eight, "a sha512 upload").await;
}

fn sha512(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha512:{}", harness::hex(&sha2::Sha512::digest(bytes)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_mismatch_leaves_nothing_behind() {
    let s = Server::start_s3(garage(), &[]);
    let c = s.client();
    let claimed = sha256(b"something else entirely");
    for (what, size, chunks) in [
        ("chunked, in parts", 2 * PART + 10, vec![PART + 1, PART]),
        ("chunked, small", 5_000, vec![1_000, 1_000]),
    ] {
        let (loc, res) = push_chunked(&c, "bad", &payload(size), &chunks, &claimed).await;
        assert_error(res, 400, "DIGEST_INVALID").await;
        assert_eq!(c.status(Method::GET, &loc).await, 404, "{what}: session");
        assert_no_leftovers(&s, what).await;
    }
    let claimed512 = sha512(b"something else entirely");
    let (loc, res) = push_chunked(&c, "bad", &payload(PART + 1), &[PART], &claimed512).await;
    assert_error(res, 400, "DIGEST_INVALID").await;
    assert_eq!(c.status(Method::GET, &loc).await, 404, "sha512: session");
    assert_no_leftovers(&s, "a sha512 mismatch").await;
    for (what, size) in [("POST ?digest=, in parts", PART + 3), ("POST ?digest=", 10)] {
        let res = c
            .post(&format!("/v2/bad/blobs/uploads/?digest={claimed}"))
            .body(payload(size))
            .send()
            .await
            .unwrap();
        assert_error(res, 400, "DIGEST_INVALID").await;
        assert_no_leftovers(&s, what).await;
    }
    assert_eq!(
        c.status(Method::HEAD, &format!("/v2/bad/blobs/{claimed}"))
            .await,
        404
    );
    assert_eq!(
        blob_keys(&s).await,
        Vec::<String>::new(),
        "content addresses"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_survive_a_kill_and_restart() {
    let mut s = Server::start_s3(garage(), &[]);
    let c = s.client();
    // Mid-part, exactly one part, and one part and a bit.
    let sizes = [(100, 50), (PART, PART / 2), (PART + 1, 10)];
    let mut open = Vec::new();
    for (first, second) in sizes {
        let bytes = payload(first + second);
        let loc = open_upload(&c, "resume").await;
        let loc = patch(&c, &loc, 0, &bytes[..first]).await;
        open.push((bytes, first, loc));
    }
    s.restart();
    let c = s.client();
    for (bytes, first, loc) in &open {
        let what = format!("upload of {} bytes across a restart", bytes.len());
        let res = c.get(loc).send().await.unwrap();
        assert_eq!(res.status(), 204, "{what}: {}", s.log());
        assert_eq!(res.headers()["range"], format!("0-{}", first - 1).as_str());
        let loc = patch(&c, loc, *first, &bytes[*first..]).await;
        let res = close(&c, &loc, &sha256(bytes), &[]).await;
        assert_eq!(res.status(), 201, "{what}: {}", res.text().await.unwrap());
        assert_pulls(&c, "resume", bytes, &what).await;
    }
    assert_no_leftovers(&s, "resumed uploads").await;
}

/// Sends a PATCH announcing `sent + 1` bytes, sends `sent`, and closes the
/// connection: a client that died mid-chunk.
async fn patch_and_hang_up(s: &Server, loc: &str, sent: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.url.strip_prefix("http://").unwrap();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/octet-stream\r\n\
         content-length: {}\r\n\r\n",
        sent + 1
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&payload(sent)).await.unwrap();
    conn.shutdown().await.unwrap();
    // The server answers (or closes) once it has seen the body end early.
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_and_purged_uploads_leave_nothing_behind() {
    let s = Server::start_s3(garage(), &["--upload-max-age", "1s", "--gc-grace", "0s"]);
    let c = s.client();
    let bytes = payload(PART + 100);
    let loc = open_upload(&c, "gone").await;
    patch(&c, &loc, 0, &bytes).await;
    let (objects, multipart) = leftovers(&s).await;
    assert!(
        !objects.is_empty() && !multipart.is_empty(),
        "an upload of a part and a bit holds both"
    );
    assert_eq!(c.status(Method::DELETE, &loc).await, 204);
    assert_eq!(c.status(Method::GET, &loc).await, 404);
    assert_no_leftovers(&s, "a cancelled upload").await;

    // A PATCH whose client goes away after more than a part.
    let loc = open_upload(&c, "gone").await;
    patch_and_hang_up(&s, &loc, PART + MIB).await;
    let res = c.get(&loc).send().await.unwrap();
    assert_eq!(res.status(), 204, "the session outlives a failed chunk");
    assert_eq!(res.headers()["range"], "0-0", "and holds nothing");
    assert_no_leftovers(&s, "a PATCH cut short").await;
    assert_eq!(c.status(Method::DELETE, &loc).await, 204);

    let mut stale = Vec::new();
    for size in [PART + 100, 2 * PART, 10] {
        let loc = open_upload(&c, "stale").await;
        patch(&c, &loc, 0, &payload(size)).await;
        stale.push(loc);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let run = c.run_gc(json!({})).await;
    assert_eq!(run["uploads_deleted"], 3, "{run:#}");
    for loc in &stale {
        assert_eq!(c.status(Method::GET, loc).await, 404);
    }
    assert_no_leftovers(&s, "uploads purged by a collection").await;
}

/// The bucket's lifecycle rule (here Garage's own cleanup) aborting the
/// multipart upload of a live session: the session ends with a client
/// error the client can act on (start again), not with 503s forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_multipart_upload_was_aborted_ends_cleanly() {
    let s = Server::start_s3(garage(), &[]);
    let c = s.client();
    let (mut sessions, mut bytes) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let b = payload(3 * PART);
        let loc = open_upload(&c, "lifecycle").await;
        sessions.push(patch(&c, &loc, 0, &b[..PART + 1]).await);
        bytes.push(b);
    }
    let g = s.garage.as_ref().unwrap();
    g.cli(&[
        "bucket",
        "cleanup-incomplete-uploads",
        "--older-than",
        "0s",
        g.bucket(),
    ]);
    let (_, multipart) = leftovers(&s).await;
    assert!(multipart.is_empty(), "{multipart:?}");
    // Another part for the first session; the second closes.
    let res = c
        .patch(&sessions[0])
        .body(bytes[0][PART + 1..].to_vec())
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "BLOB_UPLOAD_INVALID").await;
    let res = close(&c, &sessions[1], &sha256(&bytes[1][..PART + 1]), &[]).await;
    assert_error(res, 400, "BLOB_UPLOAD_INVALID").await;
    assert_eq!(c.status(Method::GET, &sessions[1]).await, 404);
    assert_eq!(c.status(Method::DELETE, &sessions[0]).await, 204);
    assert_no_leftovers(&s, "sessions whose multipart upload was aborted").await;
    // Starting again works.
    c.push_blob("lifecycle", &bytes[0]).await;
    assert_pulls(&c, "lifecycle", &bytes[0], "a push started again").await;
}

/// A ranged GET: its status, `Content-Range` and body.
async fn get_range(c: &Client, path: &str, range: &str) -> (u16, String, Vec<u8>) {
    let res = c.get(path).header("range", range).send().await.unwrap();
    let status = res.status().as_u16();
    let cr = res
        .headers()
        .get("content-range")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, cr, res.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_gets_read_exactly_the_bytes_asked_for() {
    let s = Server::start_s3(garage(), &[]);
    let c = s.client();
    let bytes = payload(PART + 4_321);
    let d = c.push_blob("ranges", &bytes).await;
    let path = format!("/v2/ranges/blobs/{d}");
    let n = bytes.len();
    for (range, from, to) in [
        ("bytes=0-0".to_owned(), 0, 1),
        ("bytes=100-199".to_owned(), 100, 200),
        (
            format!("bytes={}-{}", PART - 10, PART + 10),
            PART - 10,
            PART + 11,
        ),
        (format!("bytes={}-", n - 1_000), n - 1_000, n),
        ("bytes=-500".to_owned(), n - 500, n),
        (format!("bytes=5-{}", n + 100), 5, n),
    ] {
        let (status, cr, body) = get_range(&c, &path, &range).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(cr, format!("bytes {from}-{}/{n}", to - 1), "{range}");
        assert!(body == bytes[from..to], "{range}: wrong bytes");
    }
    let res = c
        .get(&path)
        .header("range", format!("bytes={n}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes */{n}").as_str()
    );
    assert_error(res, 416, "BLOB_UNKNOWN").await;
}

/// A blob read more slowly than `request_timeout` allows for a whole
/// request still arrives whole: only a pause that long cuts a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_download_outlasting_the_request_timeout_arrives_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "[storage]\nrequest_timeout = \"1s\"\n");
    let s = Server::start_s3(garage(), &["--config", &config]);
    let c = s.client();
    let bytes = payload(4 * PART);
    let d = c.push_blob("slow", &bytes).await;
    let mut res = c.get(&format!("/v2/slow/blobs/{d}")).send().await.unwrap();
    // At most 12 MiB/s: more than two seconds for the whole blob.
    let rate = 12.0 * MIB as f64;
    let (mut got, t) = (Vec::with_capacity(bytes.len()), Instant::now());
    while let Some(piece) = res.chunk().await.expect("the body goes on") {
        got.extend_from_slice(&piece);
        let due = Duration::from_secs_f64(got.len() as f64 / rate);
        tokio::time::sleep(due.saturating_sub(t.elapsed())).await;
    }
    assert!(t.elapsed() > Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(
        got == bytes,
        "{} of {} bytes, or other ones",
        got.len(),
        bytes.len()
    );
}

/// Copies `oci:DIR:TAG` into Berth, or Berth's image out, with skopeo.
fn skopeo_copy(from: &str, to: &str) {
    assert!(
        harness::have("skopeo"),
        "skopeo is not installed: install it with `apt-get install -y skopeo`"
    );
    let out = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "--command-timeout", "60s", "copy"])
        .args([
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            from,
            to,
        ])
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy {from} {to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirected_gets_serve_the_exact_bytes_from_the_bucket() {
    use harness::oci_layout::{self, Layer, OciLayout};
    let s = Server::start_s3(garage(), &["--blob-redirect"]);
    let c = s.client();
    let bytes = payload(PART + 77);
    let d = c.push_blob("redir", &bytes).await;
    let path = format!("/v2/redir/blobs/{d}");

    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = plain.get(c.url(&path)).send().await.unwrap();
    assert_eq!(res.status(), 307);
    let to = res.headers()["location"].to_str().unwrap().to_owned();
    let endpoint = s.garage.as_ref().unwrap().endpoint(0);
    assert!(to.starts_with(&endpoint), "{to} is not on {endpoint}");
    assert!(to.contains("X-Amz-Signature="), "{to} is not presigned");
    assert_eq!(res.headers()["docker-content-digest"], d.as_str());
    assert_eq!(
        c.status(Method::HEAD, &path).await,
        200,
        "HEAD answers itself"
    );
    // Followed (reqwest follows redirects by default): the exact bytes.
    assert_pulls(&c, "redir", &bytes, "through the redirect").await;
    let (status, _, body) = get_range(&c, &path, "bytes=10-19").await;
    assert_eq!((status, &body[..]), (206, &bytes[10..20]));

    // skopeo pushes an image, and copies it back out through redirects.
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
    let mut layout = OciLayout::create(&src);
    let image = layout.add_image("amd64", "linux", &[Layer::random(3), Layer::random(1)]);
    layout.tag_image("v1", &image);
    let host = s.url.strip_prefix("http://").unwrap();
    let remote = format!("docker://{host}/redir/image:v1");
    let src_ref = format!("oci:{}:v1", src.display());
    let out_ref = format!("oci:{}:v1", out.display());
    tokio::task::spawn_blocking(move || {
        skopeo_copy(&src_ref, &remote);
        skopeo_copy(&remote, &out_ref);
    })
    .await
    .unwrap();
    let entry = oci_layout::resolve(&out, "v1");
    assert_eq!(entry.digest, image.digest);
    let mut expected: std::collections::BTreeSet<String> = image.blobs().into_iter().collect();
    expected.insert(image.digest.clone());
    assert_eq!(oci_layout::closure(&out, &image.digest), expected);
    let log = s.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// `/metrics` of a server started with `--metrics-addr`.
async fn scrape(s: &Server) -> String {
    let url = format!("{}/metrics", s.metrics_url.as_ref().unwrap());
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Sends `rb` and returns the response and how long it took (a request
/// never waits longer than `limit`).
async fn timed(rb: reqwest::RequestBuilder, limit: Duration) -> (reqwest::Response, Duration) {
    let t = Instant::now();
    let res = tokio::time::timeout(limit, rb.send())
        .await
        .expect("the server answers within its timeouts")
        .unwrap();
    (res, t.elapsed())
}

/// Requests that need the object store while it is down: each a 503 with
/// the OCI error body and `Retry-After`, within the configured timeouts
/// (they run at once: against a stopped store each waits them out).
async fn assert_store_requests_refused(c: &Client, pending: &str, blob: &str) {
    // Too large for the index to keep: it goes to the object store.
    let fresh = payload(INLINE_CEILING + 1);
    let d = sha256(&fresh);
    let second = open_upload(c, "outage").await;
    let requests = [
        ("PATCH", c.patch(pending).body(payload(1_000))),
        ("PATCH of a new session", c.patch(&second).body(payload(10))),
        (
            "POST ?digest=",
            c.post(&format!("/v2/outage/blobs/uploads/?digest={d}"))
                .body(fresh),
        ),
        ("GET blob", c.get(&format!("/v2/outage/blobs/{blob}"))),
    ];
    let answers = requests.into_iter().map(|(what, rb)| async move {
        let (res, took) = timed(rb, Duration::from_secs(60)).await;
        // Four attempts of at most 2 s each, and the pauses between them.
        assert!(took < Duration::from_secs(15), "{what} took {took:?}");
        assert!(res.headers().contains_key("retry-after"), "{what}");
        assert_error(res, 503, "UNAVAILABLE").await;
    });
    futures::future::join_all(answers).await;
}

/// Sends `signal` (`STOP`, `CONT`) to the node of a one-node Garage: a
/// stopped node accepts connections and never answers.
fn signal_garage(g: &Garage, signal: &str) {
    let config = g.dir().join("node0").join("garage.toml");
    let config = config.to_str().unwrap();
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .find(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(config)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("the garage process");
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Reads that need only the index keep working while the object store is
/// down.
async fn assert_index_reads_work(c: &Client, image: &harness::Image) {
    for path in [
        "/v2/outage/manifests/v1".to_owned(),
        format!("/v2/outage/manifests/{}", image.digest),
        "/v2/outage/tags/list".to_owned(),
        "/v2/_catalog".to_owned(),
        format!("/v2/outage/blobs/{}", image.layers[0]),
    ] {
        let method = if path.contains("/blobs/") {
            Method::HEAD
        } else {
            Method::GET
        };
        let (res, _) = timed(
            c.http.request(method.clone(), c.url(&path)),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(res.status(), 200, "{method} {path}");
    }
}

/// Waits until `/readyz` is green again.
async fn wait_ready(c: &Client) {
    let t = Instant::now();
    loop {
        let (status, body) = readiness(c).await;
        if status == 200 {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn readiness(c: &Client) -> (u16, Value) {
    let res = c.get("/readyz").send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_is_a_clean_503_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        "[storage]\nrequest_timeout = \"2s\"\nconnect_timeout = \"1s\"\n",
    );
    let args = ["--config", &config, "--metrics-addr", "127.0.0.1:0"];
    let mut s = Server::start_s3(garage(), &args);
    let c = s.client();
    let image = c.push_stored_image("outage", "v1", 2).await;
    let big = payload(PART + 10);
    let big_digest = c.push_blob("outage", &big).await;
    let pending = open_upload(&c, "outage").await;
    let pending_bytes = payload(500);
    let pending = patch(&c, &pending, 0, &pending_bytes).await;
    assert_eq!(readiness(&c).await.0, 200);

    // Stopped: connections open, nothing answers.
    signal_garage(s.garage.as_ref().unwrap(), "STOP");
    assert_store_requests_refused(&c, &pending, &image.layers[0]).await;
    assert_index_reads_work(&c, &image).await;
    // Blobs small enough for the index need no object store at all.
    c.push_image("outage", "small", 2).await;
    c.assert_pulls_intact("outage", "small").await;
    let red = readiness(&c).await;
    signal_garage(s.garage.as_ref().unwrap(), "CONT");
    assert_not_ready(red);
    wait_ready(&c).await;

    // Killed: connections refused.
    garage_of(&mut s).kill(0);
    assert_store_requests_refused(&c, &pending, &image.layers[0]).await;
    assert_index_reads_work(&c, &image).await;
    assert_not_ready(readiness(&c).await);
    let m = scrape(&s).await;
    for k in ["get", "put"] {
        assert!(sample(&m, RETRIES, &[&kind(k)]) > 0.0, "{k}: {m}");
        assert!(sample(&m, REQUESTS, &[&kind(k), "outcome=\"error\""]) > 0.0);
    }
    assert!(!s.log().contains("panicked"), "{}", s.log());

    garage_of(&mut s).restart(0);
    wait_ready(&c).await;
    // Nothing acknowledged was lost, and the session goes on where it was.
    c.assert_pulls_intact("outage", "v1").await;
    assert_pulls(&c, "outage", &big, "a blob of two parts").await;
    assert_eq!(big_digest, sha256(&big));
    let res = c.get(&pending).send().await.unwrap();
    assert_eq!(res.headers()["range"], "0-499");
    let rest = payload(PART);
    let pending = patch(&c, &pending, 500, &rest).await;
    let whole = [&pending_bytes[..], &rest[..]].concat();
    let res = close(&c, &pending, &sha256(&whole), &[]).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    assert_pulls(&c, "outage", &whole, "an upload across the outage").await;
    c.push_image("outage", "v2", 2).await;
    c.assert_pulls_intact("outage", "v2").await;

    // Every kind of request was counted and timed.
    let m = scrape(&s).await;
    let kinds = ["put", "get", "delete", "list", "part", "copy"];
    for k in kinds
        .into_iter()
        .chain(["create_multipart", "complete_multipart"])
    {
        let ok = sample(&m, REQUESTS, &[&kind(k), "outcome=\"ok\""]);
        let timed = sample(&m, DURATIONS, &[&kind(k)]);
        assert!(ok > 0.0 && timed >= ok, "{k}: {ok} ok, {timed} timed\n{m}");
    }
}

const REQUESTS: &str = "berth_object_store_requests_total";
const RETRIES: &str = "berth_object_store_retries_total";
const DURATIONS: &str = "berth_object_store_request_duration_seconds_count";

/// A metric label selecting a kind of object store request.
fn kind(k: &str) -> String {
    format!("kind=\"{k}\"")
}

/// `/readyz` is red because of the object store, and only of it.
fn assert_not_ready((status, body): (u16, Value)) {
    assert_eq!(status, 503, "{body}");
    let why = body["storage"].as_str().unwrap();
    assert!(why.contains("object store"), "{body}");
    assert_eq!(body["index"], "ok", "{body}");
}

/// Pushes an image whose first layer fills more than a part, the rest
/// small, with monolithic POSTs; its blobs, or what failed.
async fn push_mixed_image(c: &Client, repo: &str, tag: &str) -> Result<Vec<String>, String> {
    let mut descriptors = Vec::new();
    let mut digests = Vec::new();
    for size in [PART + 1_000, 3_000, 200] {
        let bytes = payload(size);
        let d = sha256(&bytes);
        let res = c
            .post(&format!("/v2/{repo}/blobs/uploads/?digest={d}"))
            .body(bytes)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if res.status() != 201 {
            return Err(format!("blob: {}", res.status()));
        }
        descriptors
            .push(json!({"mediaType": "application/octet-stream", "digest": d, "size": size}));
        digests.push(d);
    }
    let image = c.push_image_with_layers(repo, tag, &descriptors, digests);
    Ok(image.await.blobs())
}

/// GETs each blob and checks its digest; what failed, if anything.
async fn pull_blobs(c: &Client, repo: &str, digests: &[String]) -> Result<(), String> {
    for d in digests {
        let res = c.get(&format!("/v2/{repo}/blobs/{d}")).send().await;
        let res = res.map_err(|e| format!("GET {d}: {e}"))?;
        if res.status() != 200 {
            return Err(format!("GET {d}: {}", res.status()));
        }
        let body = res.bytes().await.map_err(|e| format!("GET {d}: {e}"))?;
        if sha256(&body) != *d {
            return Err(format!("GET {d}: wrong bytes"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_keeps_serving_with_a_node_down() {
    // Replication factor 3: every object on every node, quorums of two.
    let mut s = Server::start_s3(Arc::new(Garage::cluster(3)), &[]);
    let c = s.client();
    let before = push_mixed_image(&c, "cluster", "before").await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pusher = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut pushed = Vec::new();
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let tag = format!("during-{i}");
                let started = Instant::now();
                let mut blobs = push_mixed_image(&c, "cluster", &tag).await;
                if let Ok(digests) = &blobs {
                    // Read right away, while the cluster may not yet know.
                    blobs = pull_blobs(&c, "cluster", digests)
                        .await
                        .map(|()| blobs.unwrap());
                }
                pushed.push((tag, started, Instant::now(), blobs));
            }
            pushed
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Node 1 dies mid-push; Berth talks to node 0.
    garage_of(&mut s).kill(1);
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let pushed = pusher.await.unwrap();
    let after_kill = pushed.iter().filter(|p| p.2 > killed).count();
    let slowest = pushed.iter().map(|p| p.2 - p.1).max().unwrap_or_default();
    for (tag, _, _, blobs) in &pushed {
        assert!(blobs.is_ok(), "push of {tag}: {blobs:?}\n{}", s.log());
        c.assert_pulls_intact("cluster", tag).await;
    }
    assert!(
        after_kill >= 2,
        "{after_kill} pushes finished after the kill"
    );
    c.assert_pulls_intact("cluster", "before").await;
    assert_eq!(before.len(), 4);
    push_mixed_image(&c, "cluster", "after").await.unwrap();
    c.assert_pulls_intact("cluster", "after").await;
    println!(
        "{} pushes and pulls during the test, {after_kill} finished after the kill, \
         the slowest in {slowest:?}",
        pushed.len()
    );
}
