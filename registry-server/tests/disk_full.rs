//! A full disk and failing log sinks.
//!
//! The disk tests mount a small tmpfs and put the data directory and the
//! server's log on it (the usual host layout); mounting needs root, and
//! without it they are skipped with a loud message (CI runs as root). The
//! sink tests run everywhere: stderr on a full device, stdout closed or a
//! broken pipe.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use harness::webdriver::free_port;
use harness::{Client, OCI_MANIFEST, Server, check_store, random_bytes, sha256};
use registry_core::Error;
use registry_core::index::Index;
use reqwest::Method;
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// A tmpfs mounted on a temporary directory, unmounted on drop (also when
/// the test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (after saying so, loudly) when not root.
    fn mount(size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!(
                "\n*** SKIPPED: the disk-full tests mount a tmpfs to fill, which needs root; \
                 run them as root (CI does) ***\n"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(ok.success(), "mount -t tmpfs on {:?} failed", dir.path());
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free(&self) -> u64 {
        registry_core::space::usage(self.path())
            .expect("statvfs")
            .free_bytes
    }

    /// Writes a filler file until only `leave` bytes are free (0: until the
    /// filesystem refuses).
    fn fill(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("filler");
        let block = vec![0x5a; 64 * 1024];
        while self.free() > leave {
            let want = (self.free() - leave).min(block.len() as u64) as usize;
            if f.write_all(&block[..want]).is_err() {
                break;
            }
        }
        f.sync_all().expect("sync filler");
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// A 507 with `Retry-After` and the OCI envelope saying the storage is full.
async fn assert_storage_full(res: reqwest::Response, what: &str) {
    assert_eq!(res.status().as_u16(), 507, "{what}");
    assert!(
        res.headers().get("retry-after").is_some(),
        "{what}: Retry-After"
    );
    let body: Value = res.json().await.expect("JSON error body");
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{what}: {body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("storage is full"), "{what}: {body}");
}

fn uploads_left(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("uploads"))
        .expect("uploads dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// One value of the Prometheus text (`name` with its labels, if any).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from the metrics"))
}

fn check_is_clean(data: &Path) {
    let (code, out) = check_store(data, &[]);
    assert_eq!(code, 0, "check: {out}");
    assert!(out.contains("clean"), "{out}");
}

/// Every kind of push, on a full disk: each gets a 507.
async fn every_push_is_refused(c: &Client, image: &harness::Image, session: &str) {
    let bytes = random_bytes(4096);
    let digest = sha256(&bytes);
    let res = c.post("/v2/full/two/blobs/uploads/").send().await.unwrap();
    assert_storage_full(res, "POST to open a session").await;
    let res = c
        .post(&format!("/v2/full/two/blobs/uploads/?digest={digest}"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_storage_full(res, "monolithic POST").await;
    let res = c
        .patch(session)
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_storage_full(res, "PATCH of a chunk").await;
    let res = c
        .put(&format!("{session}?digest={digest}"))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_storage_full(res, "closing PUT").await;
    let res = c
        .put_manifest("full/one", "v2", OCI_MANIFEST, &image.manifest)
        .await;
    assert_storage_full(res, "manifest PUT").await;
    let mount = format!(
        "/v2/full/two/blobs/uploads/?mount={}&from=full/one",
        image.layers[0]
    );
    let res = c.post(&mount).send().await.unwrap();
    assert_storage_full(res, "mount").await;
}

/// Pulls, HEADs, listings and the web UI, again and again (enough log
/// lines to overflow whatever the log file's last page could still take).
async fn everything_else_answers(c: &Client, image: &harness::Image) {
    for _ in 0..40 {
        c.assert_pulls_intact("full/one", "v1").await;
        for path in [
            "/v2/full/one/manifests/v1".to_owned(),
            format!("/v2/full/one/blobs/{}", image.layers[0]),
        ] {
            assert_eq!(c.status(Method::HEAD, &path).await, 200, "HEAD {path}");
        }
        let tags = c.json("/v2/full/one/tags/list").await;
        assert_eq!(tags["tags"], serde_json::json!(["v1"]));
        let catalog = c.json("/v2/_catalog").await;
        assert_eq!(catalog["repositories"], serde_json::json!(["full/one"]));
        for page in ["/ui/", "/ui/r/full/one"] {
            assert_eq!(c.status(Method::GET, page).await, 200, "{page}");
        }
    }
}

/// Readiness and the metrics say why pushes are refused.
async fn readiness_and_metrics_say_why(c: &Client, mark: u64) {
    let r = c.get("/readyz").send().await.unwrap();
    assert_eq!(r.status(), 503);
    let r: Value = r.json().await.unwrap();
    assert_eq!(r["ready"], false);
    let space = r["space"].as_str().unwrap();
    assert!(space.contains("storage is full"), "{r}");
    for store in ["blobs", "index"] {
        assert_eq!(r["filesystems"][store]["min_free_bytes"], mark, "{r}");
        assert!(r["filesystems"][store]["free_bytes"].as_u64().unwrap() < mark);
    }
    let m = c.text("/metrics").await;
    let blobs = |name: &str| metric(&m, &format!("{name}{{store=\"blobs\"}}"));
    assert!(blobs("berth_filesystem_free_bytes") < mark as f64, "{m}");
    let size = blobs("berth_filesystem_size_bytes");
    let expected = 40.0 * MIB as f64..=48.0 * MIB as f64;
    assert!(expected.contains(&size), "{size}");
    assert_eq!(blobs("berth_filesystem_min_free_bytes"), mark as f64);
    assert_eq!(
        metric(&m, "berth_filesystem_min_free_bytes{store=\"index\"}"),
        mark as f64
    );
    assert!(
        metric(&m, "berth_log_lines_dropped_total") > 0.0,
        "the log on the full disk dropped lines"
    );
}

/// The disk under the data directory and the log fills up: pushes get a
/// clear 507, everything else goes on answering, readiness and the metrics
/// say why; once space is back pushes work again without a restart, and
/// the stopped store checks clean.
#[tokio::test]
async fn a_full_disk_refuses_pushes_and_keeps_serving_the_rest() {
    let Some(fs) = Tmpfs::mount("48m") else {
        return;
    };
    let mark = 4 * MIB;
    let mut s = Server::start_at(fs.path(), &["--min-free-bytes", &mark.to_string()], "info");
    let c = s.client();
    let image = c.push_image("full/one", "v1", 2).await;
    let res = c.post("/v2/full/one/blobs/uploads/").send().await.unwrap();
    assert_eq!(res.status(), 202);
    let session = res.headers()["location"].to_str().unwrap().to_owned();

    let filler = fs.fill(0);
    every_push_is_refused(&c, &image, &session).await;
    everything_else_answers(&c, &image).await;
    readiness_and_metrics_say_why(&c, mark).await;

    std::fs::remove_file(&filler).unwrap();
    pushes_stop_at_the_low_water_mark(&fs, &c).await;
    c.push_image("full/two", "v1", 1).await;
    c.assert_pulls_intact("full/two", "v1").await;
    assert_eq!(c.json("/readyz").await["ready"], true);

    assert!(s.terminate().success());
    assert_eq!(uploads_left(&s.data_dir()), Vec::<String>::new());
    check_is_clean(&s.data_dir());
}

/// Below the mark, a push is refused before it stores anything; a push
/// whose announced length would cross the mark too; a body that runs out
/// of space half-way gets the same 507 and leaves nothing behind.
async fn pushes_stop_at_the_low_water_mark(fs: &Tmpfs, c: &Client) {
    let filler = fs.fill(3 * MIB);
    let zero = format!("sha256:{}", "0".repeat(64));
    let res = c
        .post(&format!("/v2/full/two/blobs/uploads/?digest={zero}"))
        .body(random_bytes(1024))
        .send()
        .await
        .unwrap();
    assert_storage_full(res, "a small push below the mark").await;
    std::fs::remove_file(&filler).unwrap();

    let big = random_bytes((fs.free() - 2 * MIB) as usize);
    let push_big = format!("/v2/full/two/blobs/uploads/?digest={}", sha256(&big));
    let res = c.post(&push_big).body(big.clone()).send().await.unwrap();
    assert_storage_full(res, "a push announcing more than the mark allows").await;

    // Without a length the mark cannot see it coming: the disk fills.
    let filler = fs.fill(6 * MIB);
    let stream = futures::stream::iter(
        big.chunks(256 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let res = c
        .post(&push_big)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_storage_full(res, "a chunked body that fills the disk").await;
    assert_eq!(uploads_left(&fs.path().join("data")), Vec::<String>::new());
    std::fs::remove_file(&filler).unwrap();
}

/// Pushes distinct manifests until one's commit finds no room in the index
/// (redb first reuses the free pages it has); asserts that one got a 507.
async fn fill_the_index(c: &Client, image: &harness::Image) {
    for i in 0..5000 {
        let mut m: Value = serde_json::from_slice(&image.manifest).unwrap();
        m["annotations"] = serde_json::json!({ "n": i.to_string() });
        let body = serde_json::to_vec(&m).unwrap();
        let res = c
            .put_manifest("full/one", &format!("t{i}"), OCI_MANIFEST, &body)
            .await;
        if res.status() == 507 {
            assert_storage_full(res, "a manifest whose commit finds no room").await;
            return;
        }
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    panic!("the index never ran out of room");
}

/// With the mark off, the disk really fills: the blob store's writes and
/// the index's commits meet ENOSPC. Each is a 507 (never a 500 or an empty
/// reply); the index, which refuses everything after a failed commit until
/// it is reopened, is reopened by its writer: reads go on meanwhile, and
/// writes work again once space is back, without a restart.
#[tokio::test]
async fn without_a_mark_the_index_recovers_from_enospc() {
    let Some(fs) = Tmpfs::mount("16m") else {
        return;
    };
    let mut s = Server::start_at(fs.path(), &["--min-free-bytes", "0"], "info");
    let c = s.client();
    let image = c.push_image("full/one", "v1", 1).await;
    let filler = fs.fill(0);

    let bytes = random_bytes(256 * 1024);
    let res = c
        .post(&format!(
            "/v2/full/one/blobs/uploads/?digest={}",
            sha256(&bytes)
        ))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_storage_full(res, "a blob on a full disk").await;
    fill_the_index(&c, &image).await;
    for _ in 0..20 {
        c.assert_pulls_intact("full/one", "v1").await;
        assert_eq!(c.status(Method::GET, "/v2/full/one/tags/list").await, 200);
    }
    let r = c.json("/readyz").await;
    assert_eq!(r["ready"], false, "{r}");
    assert!(
        r["index"].as_str().unwrap().contains("storage is full"),
        "{r}"
    );

    std::fs::remove_file(&filler).unwrap();
    let res = c
        .put_manifest("full/one", "after", OCI_MANIFEST, &image.manifest)
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    c.push_image("full/two", "v1", 1).await;
    assert_eq!(c.json("/readyz").await["ready"], true);
    assert!(s.terminate().success());
    assert!(
        s.log().contains("index reopened after a storage error"),
        "{}",
        s.log()
    );
    assert_eq!(uploads_left(&s.data_dir()), Vec::<String>::new());
    check_is_clean(&s.data_dir());
}

/// The index alone, with a page cache too small to hold what it wrote: a
/// write that meets a full disk fails as "storage full"; reads, even of
/// pages not cached, go on after the writer reopened the file; once space
/// is back writes work again, with no restart, and the file opens cleanly.
#[tokio::test]
async fn the_index_reopens_itself_after_a_full_disk() {
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    let path = fs.path().join("index.redb");
    let clock = registry_core::Clock::system();
    let observer = Arc::new(registry_core::observe::NoObserver);
    let index = Index::open_redb_with(&path, 16 * 1024, clock, observer).expect("open");
    let value = "v".repeat(2000);
    for i in 0..100 {
        let key = format!("k{i}");
        index.set_setting(&key, Some(&value)).await.unwrap();
    }
    let filler = fs.fill(0);
    let mut failure = None;
    for i in 100..10_000 {
        if let Err(e) = index.set_setting(&format!("k{i}"), Some(&value)).await {
            failure = Some(e);
            break;
        }
    }
    let failure = failure.expect("a write fails on a full disk");
    assert!(matches!(failure, Error::StorageFull(_)), "{failure:?}");
    for i in 0..100 {
        let got = index.setting(&format!("k{i}")).await;
        assert_eq!(got.unwrap().as_deref(), Some(value.as_str()), "read k{i}");
    }
    std::fs::remove_file(filler).unwrap();
    index
        .set_setting("after", Some("yes"))
        .await
        .expect("write after space is back");
    assert_eq!(index.db().health(), Ok(()));
    index.close();
    drop(index);
    let reopened = Index::open_redb(&path).expect("reopen");
    let after = reopened.setting("after").await.unwrap();
    assert_eq!(after.as_deref(), Some("yes"));
    let k99 = reopened.setting("k99").await.unwrap();
    assert_eq!(k99.as_deref(), Some(value.as_str()));
}

// ---- failing log sinks (no root needed) ----

/// `registry serve` on `port` with its data in `data`, logging at info,
/// with no low-water mark (the machine's disk may be fuller than it).
fn registry_serve(data: &Path, port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_registry"));
    cmd.arg("serve")
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data)
        .args(["--min-free-bytes", "0"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    cmd
}

/// Starts `cmd` and waits until a server answers on `port`; panics if the
/// process exits first.
async fn serve_with(mut cmd: Command, port: u16) -> std::process::Child {
    let mut child = cmd.spawn().expect("start registry");
    let url = format!("http://127.0.0.1:{port}/v2/");
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server exited before serving: {status}");
        }
        if reqwest::get(&url).await.is_ok() {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server did not answer on {url}");
}

/// Pushes and pulls an image on `port`, reads the dropped-lines counter,
/// then stops the server cleanly and checks the store.
async fn serves_and_stops_cleanly(mut child: std::process::Child, port: u16, data: &Path) -> f64 {
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{port}"),
    };
    c.push_image("sink/app", "v1", 1).await;
    c.assert_pulls_intact("sink/app", "v1").await;
    let m = c.text("/metrics").await;
    let dropped = metric(&m, "berth_log_lines_dropped_total");
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success(), "clean stop");
    check_is_clean(data);
    dropped
}

/// stderr on a device that is always full (/dev/full): every log line
/// fails, none of it reaches a client.
#[tokio::test]
async fn a_log_on_a_full_device_costs_nothing_but_the_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let port = free_port();
    let data = tmp.path().join("data");
    let mut cmd = registry_serve(&data, port);
    cmd.stdout(Stdio::null()).stderr(full);
    let child = serve_with(cmd, port).await;
    let dropped = serves_and_stops_cleanly(child, port, &data).await;
    assert!(dropped > 0.0, "log lines were dropped and counted");
}

/// stdout a pipe nobody reads (the "listening" lines meet EPIPE), and
/// stdout and stderr closed (Rust's runtime puts /dev/null there before
/// `main`, so nothing the server prints can land in a file it opens): the
/// server starts, serves, and leaves a clean store.
#[tokio::test]
async fn a_broken_or_closed_stdout_does_not_stop_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let port = free_port();
    let data = tmp.path().join("broken");
    let log = std::fs::File::create(tmp.path().join("broken.log")).unwrap();
    let mut cmd = registry_serve(&data, port);
    cmd.stdout(writer).stderr(log);
    let child = serve_with(cmd, port).await;
    let dropped = serves_and_stops_cleanly(child, port, &data).await;
    assert!(dropped >= 1.0, "the announcement was dropped and counted");

    // Closed descriptors: the shell closes them, then becomes the server.
    let port = free_port();
    let data = tmp.path().join("closed");
    let script = r#"exec "$0" serve --addr "$1" --data-dir "$2" --min-free-bytes 0 >&- 2>&-"#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_registry"))
        .arg(format!("127.0.0.1:{port}"))
        .arg(&data)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    let child = serve_with(cmd, port).await;
    serves_and_stops_cleanly(child, port, &data).await;
}
