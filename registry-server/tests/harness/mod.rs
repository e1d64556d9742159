//! The integration harness: starts the real `registry` binary on a loopback
//! port with its data in a temporary directory, and talks HTTP to it.
#![allow(dead_code)] // each test binary uses a different part of it
pub mod cluster;
pub mod engine;
pub mod oci_layout;
pub mod skopeo;
pub mod soak;
pub mod under_fire;
pub mod webdriver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A running server and the directory it owns.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    /// Where `/metrics` is served when started with `--metrics-addr`.
    pub metrics_url: Option<String>,
    /// Where plain HTTP is served beside TLS when started with `--plain-addr`.
    pub plain_url: Option<String>,
    pub root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    args: Vec<String>,
    /// `RUST_LOG` of the process.
    log_level: String,
    /// Environment of the server process (the object store's, if any).
    env: Vec<(String, String)>,
    /// The object store holding the blobs, when not the data directory.
    pub garage: Option<std::sync::Arc<testbed::Garage>>,
    /// The key prefix of the blobs in the bucket.
    pub prefix: Option<String>,
}

/// Where a test server keeps its blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blobs {
    /// The data directory.
    Fs,
    /// A bucket in a Garage node started for the test.
    S3,
}

impl Server {
    /// A server on a fresh, empty store.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// A server on a fresh store, with extra `serve` arguments.
    pub fn start_with(args: &[&str]) -> Server {
        Server::start_in(tempfile::tempdir().expect("temp dir"), args)
    }

    /// A server on the store prepared under `tmp` (its data directory is
    /// `tmp/data`), with extra `serve` arguments.
    pub fn start_in(tmp: tempfile::TempDir, args: &[&str]) -> Server {
        let root = tmp.path().to_path_buf();
        let mut s = Server::spawn(root, strings(args), Vec::new(), default_log_level());
        s._tmp = Some(tmp);
        s
    }

    /// A server on a fresh store with its blobs where `blobs` says.
    pub fn start_on(blobs: Blobs, args: &[&str]) -> Server {
        match blobs {
            Blobs::Fs => Server::start_with(args),
            Blobs::S3 => Server::start_s3(std::sync::Arc::new(testbed::Garage::single()), args),
        }
    }

    /// A server on a fresh store whose blobs live in `garage`'s bucket,
    /// under a prefix of their own.
    pub fn start_s3(garage: std::sync::Arc<testbed::Garage>, args: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().to_path_buf();
        let prefix = format!("berth-{}", hex(&random_bytes(4)));
        let mut all: Vec<String> = vec![
            "--blob-store".into(),
            format!("s3://{}/{prefix}", garage.bucket()),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let mut s = Server::spawn(root, all, s3_env(&garage), default_log_level());
        s._tmp = Some(tmp);
        s.garage = Some(garage);
        s.prefix = Some(prefix);
        s
    }

    /// A server whose data directory (`data/`, unless `args` name another
    /// `--data-dir`) and log (`server.log`) are under `root`, which the
    /// caller owns, logging at `log_level`.
    pub fn start_at(root: &Path, args: &[&str], log_level: &str) -> Server {
        Server::spawn(
            root.to_path_buf(),
            strings(args),
            Vec::new(),
            log_level.to_owned(),
        )
    }

    fn spawn(
        root: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log_level: String,
    ) -> Server {
        // The default low-water mark (1 GiB) would make every test depend
        // on how full the machine's disk is: tests that do not set a mark
        // run with none (tests/disk_full.rs sets its own).
        let mark: &[&str] = if args.iter().any(|a| a == "--min-free-bytes") {
            &[]
        } else {
            &["--min-free-bytes", "0"]
        };
        // A test may put the data directory elsewhere (on another
        // filesystem) with its own `--data-dir`.
        let default_data = root.join("data");
        let data: Vec<&std::ffi::OsStr> = if args.iter().any(|a| a == "--data-dir") {
            Vec::new()
        } else {
            vec!["--data-dir".as_ref(), default_data.as_os_str()]
        };
        // A node behind a load balancer keeps its address across restarts.
        let addr: &[&str] = if args.iter().any(|a| a == "--addr") {
            &[]
        } else {
            &["--addr", "127.0.0.1:0"]
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("server.log"))
            .expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_registry"))
            .arg("serve")
            .args(addr)
            .args(&data)
            .args(&args)
            .args(mark)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", &log_level)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start registry");
        let mut first = String::new();
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        reader.read_line(&mut first).expect("read listen line");
        let url = first
            .trim()
            .strip_prefix("registry listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {first:?}; log:\n{}",
                    std::fs::read_to_string(root.join("server.log")).unwrap_or_default()
                )
            })
            .to_owned();
        // Extra listeners announce themselves on the next lines, in this order.
        let mut announced = |flag: &str, prefix: &str| {
            args.iter().any(|a| a == flag).then(|| {
                let mut line = String::new();
                reader.read_line(&mut line).expect("read listen line");
                line.trim()
                    .strip_prefix(prefix)
                    .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                    .to_owned()
            })
        };
        let metrics_url = announced("--metrics-addr", "metrics listening on ");
        let plain_url = announced("--plain-addr", "plain listening on ");
        Server {
            child: Some(child),
            url,
            metrics_url,
            plain_url,
            root,
            _tmp: None,
            args,
            env,
            garage: None,
            prefix: None,
            log_level,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        match self.args.iter().position(|a| a == "--data-dir") {
            Some(i) => PathBuf::from(&self.args[i + 1]),
            None => self.root.join("data"),
        }
    }

    /// The digests of every blob stored: in the blob store (files, or
    /// objects), or kept by the index (small blobs; asked of the running
    /// server).
    pub async fn stored_blobs(&self) -> std::collections::BTreeSet<String> {
        let mut all = self.blob_store_contents().await;
        all.extend(self.client().blobs_kept_in_index().await);
        all
    }

    /// The digests of every blob in the blob store (files, or objects).
    pub async fn blob_store_contents(&self) -> std::collections::BTreeSet<String> {
        let Some(garage) = &self.garage else {
            return walk_blobs(&self.data_dir().join("blobs"));
        };
        let prefix = format!("{}/blobs/", self.prefix.as_deref().unwrap_or(""));
        garage
            .list_keys(garage.bucket())
            .await
            .into_iter()
            .filter_map(|k| {
                let (algorithm, hex) = k.strip_prefix(&prefix)?.split_once('/')?;
                Some(format!("{algorithm}:{hex}"))
            })
            .collect()
    }

    /// Runs `registry check` (with `extra` arguments) on this server's
    /// data directory, which must be stopped; returns the exit code and
    /// the output.
    pub fn check(&self, extra: &[&str]) -> (i32, String) {
        let blob_store = self.args.iter().position(|a| a == "--blob-store");
        let mut extra_args: Vec<&str> = blob_store
            .map(|i| self.args[i..i + 2].iter().map(String::as_str).collect())
            .unwrap_or_default();
        extra_args.extend_from_slice(extra);
        check_store_with(&self.data_dir(), &extra_args, &self.env)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().expect("wait")
    }

    /// Starts the binary again on the same data directory (new port).
    pub fn restart(&mut self) {
        self.kill();
        let fresh = Server::spawn(
            self.root.clone(),
            self.args.clone(),
            self.env.clone(),
            self.log_level.clone(),
        );
        self.url = fresh.url.clone();
        self.metrics_url = fresh.metrics_url.clone();
        self.plain_url = fresh.plain_url.clone();
        self.child = fresh.into_child();
    }

    /// From the next restart on, the server keeps its blobs in `garage`'s
    /// bucket under `prefix`, with the same data directory (after a
    /// migration of its blobs).
    pub fn move_blobs_to(&mut self, garage: std::sync::Arc<testbed::Garage>, prefix: &str) {
        self.args.push("--blob-store".into());
        self.args.push(format!("s3://{}/{prefix}", garage.bucket()));
        self.env = s3_env(&garage);
        self.garage = Some(garage);
        self.prefix = Some(prefix.to_owned());
    }

    fn into_child(mut self) -> Option<Child> {
        self.child.take()
    }

    /// A client that sends `authorization` (e.g. from [`basic`]) with every
    /// request, or nothing.
    pub fn client_as(&self, authorization: Option<String>) -> Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(a) = authorization {
            headers.insert("authorization", a.parse().expect("header value"));
        }
        Client {
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("client"),
            base: self.url.clone(),
        }
    }

    pub fn client(&self) -> Client {
        Client {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client"),
            base: self.url.clone(),
        }
    }
}

/// The environment a server needs to reach `garage` (endpoint, key, region).
pub fn s3_env(garage: &testbed::Garage) -> Vec<(String, String)> {
    let env = garage.env().into_iter();
    env.map(|(k, v)| (k.to_owned(), v)).collect()
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// `RUST_LOG` of test servers: `BERTH_TEST_LOG`, or warnings.
pub fn default_log_level() -> String {
    std::env::var("BERTH_TEST_LOG").unwrap_or_else(|_| "warn".into())
}

/// Runs `registry check` (with `extra` arguments) on the stopped store in
/// `data`; returns the exit code and the output.
pub fn check_store(data: &Path, extra: &[&str]) -> (i32, String) {
    check_store_with(data, extra, &[])
}

/// [`check_store`] with extra environment (an object store's).
pub fn check_store_with(data: &Path, extra: &[&str], env: &[(String, String)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_registry"))
        .arg("check")
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run registry check");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// An HTTP Basic `Authorization` value.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Random bytes of `len`, different on every call.
/// A `--clock-skew` that puts the server's clock `lead` before a minute
/// starts (the next but one, so the skew is never negative), for tests of
/// every-minute schedules that must not wait for the real minute.
pub fn skew_to_before_a_minute(lead: std::time::Duration) -> String {
    let now = chrono::Utc::now().timestamp_millis() as u64;
    let lead = lead.as_millis() as u64;
    format!("{}ms", 120_000 - lead - now % 60_000)
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0u8; len];
    rand::rng().fill_bytes(&mut v);
    v
}

/// An HTTP client bound to one server, with shortcuts for common pushes.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

impl Client {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path))
    }

    pub fn head(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.head(self.url(path))
    }

    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.put(self.url(path))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path))
    }

    pub fn patch(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.patch(self.url(path))
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path))
    }

    /// Pushes a blob with POST + PUT; returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let res = self
            .post(&format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            202,
            "POST upload: {}",
            res.text().await.unwrap()
        );
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let sep = if location.contains('?') { '&' } else { '?' };
        let res = self
            .http
            .put(format!("{}{location}{sep}digest={digest}", self.base))
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            201,
            "PUT upload: {}",
            res.text().await.unwrap()
        );
        digest
    }

    /// Pushes a manifest body under `reference`; returns the response.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> reqwest::Response {
        self.put(&format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a small image (config + `layers` random layers) tagged `tag`;
    /// returns the manifest digest and the blob digests. Its blobs are small
    /// enough for the index to keep them.
    pub async fn push_image(&self, repo: &str, tag: &str, layers: usize) -> Image {
        self.push_image_of(repo, tag, layers, 1024).await
    }

    /// An image whose layers are too large for the index to keep: they are
    /// files (or objects) of the blob store (its config stays small).
    pub async fn push_stored_image(&self, repo: &str, tag: &str, layers: usize) -> Image {
        self.push_image_of(repo, tag, layers, INLINE_CEILING + 1)
            .await
    }

    /// An image of `layers` random layers of about `size` bytes each.
    pub async fn push_image_of(&self, repo: &str, tag: &str, layers: usize, size: usize) -> Image {
        let mut layer_digests = Vec::new();
        let mut descriptors = Vec::new();
        for _ in 0..layers {
            let bytes = random_bytes(size + layer_digests.len());
            let d = self.push_blob(repo, &bytes).await;
            descriptors.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": bytes.len()}));
            layer_digests.push(d);
        }
        self.push_image_with_layers(repo, tag, &descriptors, layer_digests)
            .await
    }

    /// Pushes a config and a manifest over layers already pushed.
    pub async fn push_image_with_layers(
        &self,
        repo: &str,
        tag: &str,
        layer_descriptors: &[serde_json::Value],
        layers: Vec<String>,
    ) -> Image {
        let config = serde_json::to_vec(
            &json!({"architecture": "amd64", "os": "linux", "nonce": hex(&random_bytes(8))}),
        )
        .unwrap();
        let config_digest = self.push_blob(repo, &config).await;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layer_descriptors,
        }))
        .unwrap();
        let res = self.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(
            res.status(),
            201,
            "PUT manifest: {}",
            res.text().await.unwrap()
        );
        Image {
            digest: sha256(&manifest),
            manifest,
            config: config_digest,
            layers,
        }
    }

    /// The blobs whose bytes the index keeps (`GET /admin/blobs`).
    pub async fn blobs_kept_in_index(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("/admin/blobs?limit=1000&after={a}"),
                None => "/admin/blobs?limit=1000".to_owned(),
            };
            let page = self.json(&path).await;
            for b in page["blobs"].as_array().expect("blob list") {
                if b["kept_in"] == "index" {
                    out.push(b["digest"].as_str().unwrap().to_owned());
                }
            }
            match page["next_cursor"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return out,
            }
        }
    }

    /// GET `path` and return the body as text (whatever the status).
    pub async fn text(&self, path: &str) -> String {
        self.get(path).send().await.unwrap().text().await.unwrap()
    }

    /// GET `path` and parse the body as JSON (whatever the status).
    pub async fn json(&self, path: &str) -> serde_json::Value {
        self.get(path).send().await.unwrap().json().await.unwrap()
    }

    /// Starts a garbage collection run with `body` and waits for its report;
    /// the run must succeed.
    pub async fn run_gc(&self, body: serde_json::Value) -> serde_json::Value {
        let res = self.post("/admin/gc").json(&body).send().await.unwrap();
        assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
        let id = res.json::<serde_json::Value>().await.unwrap()["id"]
            .as_u64()
            .unwrap();
        for _ in 0..3000 {
            let r = self.json(&format!("/admin/gc/runs/{id}")).await;
            if r["state"] != "running" {
                assert_eq!(r["state"], "succeeded", "{r:#}");
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("garbage collection run {id} did not finish");
    }

    /// The manifest resolves and every blob it references comes back whole.
    pub async fn assert_pulls_intact(&self, repo: &str, reference: &str) {
        let res = self
            .get(&format!("/v2/{repo}/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{repo}:{reference}");
        let m: serde_json::Value = res.json().await.unwrap();
        let layers = m["layers"].as_array().cloned().unwrap_or_default();
        for d in std::iter::once(&m["config"]).chain(layers.iter()) {
            let d = d["digest"].as_str().unwrap();
            let res = self
                .get(&format!("/v2/{repo}/blobs/{d}"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{repo}:{reference} blob {d}");
            assert_eq!(
                sha256(&res.bytes().await.unwrap()),
                d,
                "{repo}:{reference} blob {d}"
            );
        }
    }

    pub async fn status(&self, method: reqwest::Method, path: &str) -> u16 {
        self.http
            .request(method, self.url(path))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// A manifest fetched over HTTP: status, content-type, digest header, body.
pub struct Fetched {
    pub status: u16,
    pub content_type: String,
    pub digest: String,
    pub body: Vec<u8>,
}

impl Fetched {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("manifest JSON")
    }
}

impl Client {
    /// GET of a manifest accepting the media types `accept` lists, read to
    /// the end, whatever the status.
    pub async fn fetch_manifest(&self, repo: &str, reference: &str, accept: &str) -> Fetched {
        let res = self
            .get(&format!("/v2/{repo}/manifests/{reference}"))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        let header = |name: &str| {
            res.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let (content_type, digest) = (header("content-type"), header("docker-content-digest"));
        Fetched {
            status: res.status().as_u16(),
            content_type,
            digest,
            body: res.bytes().await.unwrap().to_vec(),
        }
    }
}

/// What `push_image` pushed.
pub struct Image {
    pub digest: String,
    pub manifest: Vec<u8>,
    pub config: String,
    pub layers: Vec<String>,
}

impl Image {
    pub fn blobs(&self) -> Vec<String> {
        let mut v = vec![self.config.clone()];
        v.extend(self.layers.iter().cloned());
        v
    }
}

/// Blobs larger than this always live in the blob store; smaller ones
/// pushed whole may live in the index (`limits.inline_blob_bytes`).
pub const INLINE_CEILING: usize = 64 * 1024;

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts the body is the OCI error envelope with `code` first.
pub async fn assert_error(res: reqwest::Response, status: u16, code: &str) {
    assert_eq!(res.status().as_u16(), status, "status");
    let body: serde_json::Value = res.json().await.expect("JSON error body");
    assert_eq!(body["errors"][0]["code"], code, "error body {body}");
    assert!(
        body["errors"][0]["message"].is_string(),
        "message in {body}"
    );
}

/// Whether a client program is on PATH. A missing client is reported
/// loudly by the caller, never skipped in silence.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The digests of the blob files under a filesystem store's `blobs/`.
pub fn walk_blobs(dir: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for algorithm in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = algorithm.file_name().to_string_lossy().into_owned();
        for prefix in std::fs::read_dir(algorithm.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for file in std::fs::read_dir(prefix.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                out.insert(format!("{name}:{}", file.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// The sum of the samples of metric `name` whose labels contain every one
/// of `labels` (`kind="get"`), in a Prometheus text exposition.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Runs each `async fn NAME(blobs: Blobs)` of a test file as two tests,
/// `NAME::fs` (blobs in the data directory) and `NAME::s3` (blobs in a
/// Garage bucket), so every store passes the same test bodies.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fs() {
                super::$name($crate::harness::Blobs::Fs).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() {
                super::$name($crate::harness::Blobs::S3).await
            }
        }
    )+};
}
