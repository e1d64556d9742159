//! Container engines (the docker CLI, podman) driven through their command
//! lines, the way people use them against a registry: build an image from
//! files, push, pull, inspect, copy files out of it, log in and out.
//!
//! The two share a command syntax, so one `Engine` drives either; what
//! differs (global flags, environment, podman's `--tls-verify=false`) is
//! set when it is made. Every command runs with a time limit and its output
//! is shown, with the server's log, when it does not do what was expected.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::{Server, have, path_str};

/// The longest one command may take: a stuck client fails its test instead
/// of hanging the suite.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Every manifest type the engines push, for GETs that must see any of them.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// One command-line client with the flags and environment it always runs with.
pub struct Engine {
    program: String,
    package: &'static str,
    global: Vec<String>,
    env: Vec<(String, String)>,
    /// Flags of the commands that talk to a registry (push, pull, login).
    registry_args: Vec<String>,
    server_log: Option<PathBuf>,
}

/// What one command did.
pub struct Ran {
    pub shown: String,
    pub output: Output,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.output.status.success()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Both streams: clients print progress on one and errors on the other.
    pub fn all(&self) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

impl Engine {
    /// `program`, which the Debian package `package` installs; a missing
    /// program fails the test, naming the package.
    pub fn new(program: &str, package: &'static str) -> Engine {
        assert!(
            have(program),
            "`{program}` is not installed: these end-to-end tests need it. Install it with \
             `apt-get update && apt-get install -y {package}` (.ci/run does)"
        );
        Engine {
            program: program.to_owned(),
            package,
            global: Vec::new(),
            env: Vec::new(),
            registry_args: Vec::new(),
            server_log: None,
        }
    }

    pub fn global(mut self, args: &[&str]) -> Engine {
        self.global.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Engine {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn registry_args(mut self, args: &[&str]) -> Engine {
        self.registry_args
            .extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Failures from now on show `server`'s log too.
    pub fn watch(&mut self, server: &Server) {
        self.server_log = Some(server.root.join("server.log"));
    }

    /// Runs one command with `stdin`, whatever its outcome.
    pub async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Ran {
        let shown = format!("{} {}", self.program, args.join(" "));
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.global)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run `{shown}` ({e}); install it with `apt-get install -y {}`",
                self.package
            )
        });
        if let Some(bytes) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(bytes).await.expect("write stdin");
        }
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`{shown}` did not finish in {COMMAND_TIMEOUT:?}"))
            .expect("wait for the command");
        Ran { shown, output }
    }

    /// Runs one command and requires success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let ran = self.run(args, None).await;
        self.expect(&ran, true);
        ran.stdout()
    }

    /// Runs one command and requires failure; returns everything it printed.
    pub async fn fails(&self, args: &[&str]) -> String {
        let ran = self.run(args, None).await;
        self.expect(&ran, false);
        ran.all()
    }

    /// Panics, with everything worth seeing, unless `ran` succeeded as wanted.
    pub fn expect(&self, ran: &Ran, success: bool) {
        if ran.success() == success {
            return;
        }
        let log = self
            .server_log
            .as_ref()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default();
        panic!(
            "`{}` {} ({})\noutput:\n{}\nserver log:\n{log}",
            ran.shown,
            if success {
                "failed"
            } else {
                "succeeded but should have failed"
            },
            ran.output.status,
            ran.all(),
        );
    }

    /// `command <registry flags> rest...`, for commands that talk to a registry.
    fn with_registry_args<'a>(&'a self, command: &[&'a str], rest: &[&'a str]) -> Vec<&'a str> {
        let mut args = command.to_vec();
        args.extend(self.registry_args.iter().map(String::as_str));
        args.extend_from_slice(rest);
        args
    }

    /// Builds `files` of `context` into `tag`, one layer each; `extra` are
    /// more `build` flags (`--arch`, ...).
    pub async fn build(&self, context: &BuildContext, files: &[&str], tag: &str, extra: &[&str]) {
        let dockerfile = context.dockerfile(files);
        let mut args = vec!["build", "--file", path_str(&dockerfile), "--tag", tag];
        args.extend_from_slice(extra);
        args.push(path_str(&context.dir));
        self.ok(&args).await;
    }

    /// Pushes `image` (with `extra` flags); returns what the client printed.
    pub async fn push(&self, image: &str, extra: &[&str]) -> String {
        let mut rest = extra.to_vec();
        rest.push(image);
        let ran = self
            .run(&self.with_registry_args(&["push"], &rest), None)
            .await;
        self.expect(&ran, true);
        ran.all()
    }

    /// Pulls `image` (with `extra` flags); returns what the client printed.
    pub async fn pull(&self, image: &str, extra: &[&str]) -> String {
        let mut rest = extra.to_vec();
        rest.push(image);
        self.ok(&self.with_registry_args(&["pull"], &rest)).await
    }

    /// A `push` or `pull` of `image` that must fail; returns the output.
    pub async fn refused(&self, command: &str, image: &str) -> String {
        self.fails(&self.with_registry_args(&[command], &[image]))
            .await
    }

    /// Logs in to `host` with the password on stdin; the outcome as it is.
    pub async fn login(&self, host: &str, user: &str, password: &str) -> Ran {
        let args =
            self.with_registry_args(&["login"], &["--username", user, "--password-stdin", host]);
        self.run(&args, Some(password.as_bytes())).await
    }

    pub async fn logout(&self, host: &str) {
        self.ok(&["logout", host]).await;
    }

    /// Removes local images (by name or ID).
    pub async fn rmi(&self, images: &[&str]) {
        let mut args = vec!["rmi"];
        args.extend_from_slice(images);
        self.ok(&args).await;
    }

    /// `image inspect` of one image.
    pub async fn inspect(&self, image: &str) -> Value {
        let out = self.ok(&["image", "inspect", image]).await;
        let v: Value = serde_json::from_str(&out).expect("image inspect prints JSON");
        v[0].clone()
    }

    /// Whether the engine holds `image` locally.
    pub async fn holds(&self, image: &str) -> bool {
        self.run(&["image", "inspect", image], None).await.success()
    }

    /// The bytes of `paths` in `image`'s file system, copied out of a
    /// container made (never started) from it.
    pub async fn files(&self, image: &str, paths: &[&str], scratch: &Path) -> Vec<Vec<u8>> {
        // The images are FROM scratch with no command: name one, never run.
        let id = self.ok(&["create", image, "/none"]).await.trim().to_owned();
        let mut out = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let dest = scratch.join(format!("copied-{i}"));
            let _ = std::fs::remove_file(&dest);
            self.ok(&["cp", &format!("{id}:{p}"), path_str(&dest)])
                .await;
            out.push(std::fs::read(&dest).expect("copied file"));
        }
        self.ok(&["rm", &id]).await;
        out
    }
}

/// Files to build images from, one layer per file, in one directory so
/// that images built from the same file share its layer.
pub struct BuildContext {
    pub dir: PathBuf,
    files: Vec<(String, Vec<u8>)>,
    dockerfiles: std::cell::Cell<usize>,
}

impl BuildContext {
    pub fn new(dir: &Path) -> BuildContext {
        std::fs::create_dir_all(dir).expect("context dir");
        BuildContext {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            dockerfiles: Default::default(),
        }
    }

    /// Adds a file of `len` random bytes named `name`; returns its bytes.
    pub fn random_file(&mut self, name: &str, len: usize) -> Vec<u8> {
        let bytes = super::random_bytes(len);
        std::fs::write(self.dir.join(name), &bytes).expect("write context file");
        self.files.push((name.to_owned(), bytes.clone()));
        bytes
    }

    /// The bytes of a file added before.
    pub fn bytes(&self, name: &str) -> &[u8] {
        let found = self.files.iter().find(|(n, _)| n == name);
        &found.unwrap_or_else(|| panic!("no file {name}")).1
    }

    /// Writes a Dockerfile that copies each of `files` to `/` in its own
    /// layer, on nothing; returns its path.
    fn dockerfile(&self, files: &[&str]) -> PathBuf {
        let mut text = String::from("FROM scratch\n");
        for f in files {
            text.push_str(&format!("COPY {f} /{f}\n"));
        }
        let n = self.dockerfiles.get() + 1;
        self.dockerfiles.set(n);
        let path = self.dir.join(format!("Dockerfile.{n}"));
        std::fs::write(&path, text).expect("write Dockerfile");
        path
    }
}

/// A manifest as the registry serves it.
pub struct Served {
    pub status: u16,
    pub digest: String,
    pub media_type: String,
    pub body: Value,
}

/// GET of a manifest with every type accepted; a body served must match
/// its digest header.
pub async fn served_manifest(server: &Server, repo: &str, reference: &str) -> Served {
    let client = server.client();
    let m = client
        .fetch_manifest(repo, reference, ACCEPT_MANIFESTS)
        .await;
    if m.status == 200 {
        assert_eq!(
            super::sha256(&m.body),
            m.digest,
            "{repo}:{reference} body digest"
        );
    }
    Served {
        status: m.status,
        body: serde_json::from_slice(&m.body).unwrap_or(Value::Null),
        digest: m.digest,
        media_type: m.content_type,
    }
}

/// A JSON blob (an image config) as the registry serves it, which must
/// hash to its digest.
pub async fn served_json_blob(server: &Server, repo: &str, digest: &str) -> Value {
    let text = server
        .client()
        .text(&format!("/v2/{repo}/blobs/{digest}"))
        .await;
    assert_eq!(
        super::sha256(text.as_bytes()),
        digest,
        "GET blob {digest} of {repo}: {text}"
    );
    serde_json::from_str(&text).expect("JSON blob")
}

impl Engine {
    /// The ID of local `image`: its config's digest (docker shows it
    /// whole, podman only the hex).
    pub async fn image_id(&self, image: &str) -> String {
        let id = self.inspect(image).await["Id"]
            .as_str()
            .expect("Id")
            .to_owned();
        match id.starts_with("sha256:") {
            true => id,
            false => format!("sha256:{id}"),
        }
    }

    /// Checks that the registry serves under `repo:reference` a manifest of
    /// `media_type` for the very image the engine holds as `image`: its
    /// config is the engine's image ID and lists the engine's layers, and
    /// every blob comes back whole. Returns the manifest digest.
    pub async fn assert_served(
        &self,
        server: &Server,
        image: &str,
        (repo, reference): (&str, &str),
        media_type: &str,
    ) -> String {
        let served = served_manifest(server, repo, reference).await;
        assert_eq!(served.status, 200, "{repo}:{reference}");
        assert_eq!(served.media_type, media_type, "{repo}:{reference}");
        let config = served.body["config"]["digest"].as_str().unwrap();
        assert_eq!(
            self.image_id(image).await,
            config,
            "the image ID is the served config"
        );
        let config = served_json_blob(server, repo, config).await;
        let local = self.inspect(image).await;
        assert_eq!(
            config["rootfs"]["diff_ids"], local["RootFS"]["Layers"],
            "the served config lists the engine's layers"
        );
        let layers = served.body["layers"].as_array().expect("layers");
        assert_eq!(
            layers.len(),
            local["RootFS"]["Layers"].as_array().unwrap().len()
        );
        server.client().assert_pulls_intact(repo, reference).await;
        served.digest
    }

    /// The engine knows local `image` as the manifest `digest` of `repo`
    /// (`host/name`): one of its `RepoDigests`.
    pub async fn assert_known_as(&self, image: &str, repo: &str, digest: &str) {
        let want = format!("{repo}@{digest}");
        let local = self.inspect(image).await;
        let digests = local["RepoDigests"].as_array().expect("RepoDigests");
        assert!(
            digests.iter().any(|d| d == want.as_str()),
            "{want} not among the engine's {digests:?} for {image}"
        );
    }
}

/// `host:port` of the server, as image references name it.
pub fn host(server: &Server) -> String {
    let url = &server.url;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.expect("http(s) URL").to_owned()
}

/// Requires root: the engines keep images in storage of their own that only
/// root may set up (dockerd at all; podman as the tests run it).
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "{what} must run as root (CI runs the suite as root), not as user {euid}: \
         run `cargo test` as root"
    );
}

/// Writes an htpasswd file of bcrypt entries (cost 4: fast tests) for
/// `users` (name, password) at `path`; returns the path as a string.
pub fn write_htpasswd(path: &Path, users: &[(&str, &str)]) -> String {
    let text: String = users
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
        .collect();
    std::fs::write(path, text).expect("write htpasswd");
    path_str(path).to_owned()
}

/// The manifest digest a push printed (`...: digest: sha256:... size: N`).
pub fn pushed_digest(output: &str) -> String {
    let found = output
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1);
    found
        .unwrap_or_else(|| panic!("no digest in the push output:\n{output}"))
        .to_owned()
}

/// How many lines of a push's output end with `status` (`Pushed`, ...).
pub fn count_status(output: &str, status: &str) -> usize {
    output
        .lines()
        .filter(|l| l.trim_end().ends_with(status))
        .count()
}

impl Engine {
    /// Copies `files` out of `image` and compares them with `ctx`'s.
    pub async fn assert_files(&self, image: &str, ctx: &BuildContext, files: &[&str]) {
        let paths: Vec<String> = files.iter().map(|f| format!("/{f}")).collect();
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        let scratch = ctx.dir.with_extension("copied");
        std::fs::create_dir_all(&scratch).expect("scratch dir");
        let copied = self.files(image, &paths, &scratch).await;
        for (f, bytes) in files.iter().zip(copied) {
            assert!(
                bytes == ctx.bytes(f),
                "{f} in {image} differs from the file built"
            );
        }
    }
}

impl BuildContext {
    /// A context in `dir/ctx` of files of random bytes, by name and size.
    pub fn random(dir: &Path, files: &[(&str, usize)]) -> BuildContext {
        let mut ctx = BuildContext::new(&dir.join("ctx"));
        for (name, len) in files {
            ctx.random_file(name, *len);
        }
        ctx
    }
}

/// DELETE of a manifest through the registry API, by tag or digest.
pub async fn delete_manifest(server: &Server, repo: &str, reference: &str) {
    let res = server
        .client()
        .delete(&format!("/v2/{repo}/manifests/{reference}"))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, 202, "DELETE {repo}:{reference}: {body}");
}

/// A client's report of a refusal for want of credentials or rights.
pub fn assert_unauthorized(output: &str, what: &str) {
    assert!(says_unauthorized(output), "{what}: {output}");
}

/// The server's metrics, from its own listener when it has one (a server
/// with TLS: the metrics port speaks plain HTTP).
async fn metrics(server: &Server) -> String {
    let base = server.metrics_url.as_ref().unwrap_or(&server.url);
    let res = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics");
    res.text().await.expect("metrics text")
}

/// The requests the server answered with `labels` (`method="PUT"`, ...).
pub async fn answered(server: &Server, labels: &[&str]) -> u64 {
    super::sample(&metrics(server).await, "berth_http_requests_total", labels) as u64
}

/// How many blob uploads the server has completed (`PUT` of an upload
/// answered 201): what pushes sent rather than found or mounted.
pub async fn uploads_completed(server: &Server) -> u64 {
    answered(
        server,
        &["method=\"PUT\"", "route=\"upload\"", "status=\"201\""],
    )
    .await
}

/// Requests refused for want of credentials (401) or rights (403).
async fn refusals(server: &Server) -> u64 {
    let text = metrics(server).await;
    let count = |status: &str| super::sample(&text, "berth_http_requests_total", &[status]);
    (count("status=\"401\"") + count("status=\"403\"")) as u64
}

impl Engine {
    /// A `push` or `pull` of `image` that must fail for want of
    /// credentials or rights; returns the output. Either the client says
    /// so, or the server refused one of its requests: a client that tries
    /// plain HTTP after a refusal over TLS (docker, on loopback) reports
    /// that last error instead.
    pub async fn refused_for_credentials(
        &self,
        server: &Server,
        command: &str,
        image: &str,
    ) -> String {
        let before = refusals(server).await;
        let out = self.refused(command, image).await;
        if !says_unauthorized(&out) {
            let after = refusals(server).await;
            assert!(
                after > before,
                "{command} {image} failed, but not for want of credentials:\n{out}"
            );
        }
        out
    }
}

/// Whether a client's output reports a refusal for want of credentials or rights.
pub fn says_unauthorized(output: &str) -> bool {
    let out = output.to_lowercase();
    [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
        "invalid username/password",
    ]
    .iter()
    .any(|w| out.contains(w))
}

impl Engine {
    /// Logs in to `host`, which must succeed and keep the credentials in
    /// `kept_in` (the test's own file, never the host's).
    pub async fn login_ok(&self, host: &str, (user, password): (&str, &str), kept_in: &Path) {
        let ran = self.login(host, user, password).await;
        self.expect(&ran, true);
        assert!(ran.all().contains("Login Succeeded"), "{}", ran.all());
        let kept = std::fs::read_to_string(kept_in).unwrap_or_default();
        assert!(
            kept.contains(host),
            "credentials not in {}: {kept}",
            kept_in.display()
        );
    }

    /// What a client with credentials goes through: refused before logging
    /// in, and with a wrong password; logged in as `user`, `image` (built
    /// from `files` of `ctx`) pushes, and pulls back whole once removed
    /// locally; logged out, push and pull are refused again. Ends logged
    /// out, without the image.
    pub async fn assert_login_round_trip(
        &self,
        server: &Server,
        (image, ctx, files): (&str, &BuildContext, &[&str]),
        user: (&str, &str),
        kept_in: &Path,
    ) {
        let host = host(server);
        self.refused_for_credentials(server, "push", image).await;
        let ran = self.login(&host, user.0, "wrong").await;
        self.expect(&ran, false);
        assert_unauthorized(&ran.all(), "login with a wrong password");
        self.login_ok(&host, user, kept_in).await;
        self.push(image, &[]).await;
        self.rmi(&[image]).await;
        self.pull(image, &[]).await;
        self.assert_files(image, ctx, files).await;
        self.logout(&host).await;
        self.refused_for_credentials(server, "push", image).await;
        self.rmi(&[image]).await;
        self.refused_for_credentials(server, "pull", image).await;
    }
}
