//! End-to-end tests with the docker engine and CLI: images built from files
//! are pushed to a running Berth (layers shared between images are mounted
//! or found, not sent again), removed locally and pulled back, compared with
//! what the registry serves; deleted through the registry API; pushed while
//! garbage collection runs back to back; and pushed and pulled logged in
//! with Basic credentials (over TLS) and with the token protocol.
//!
//! Every test starts a docker daemon of its own (`dockerd`, on a socket in
//! a temporary directory, with its own data and configuration) and stops it
//! and removes its files when it ends, failed or not; the CLI's
//! configuration is a temporary directory too, so nothing of the host's
//! docker set-up is read or changed. Docker treats registries on
//! 127.0.0.0/8 as insecure, so plain HTTP needs no configuration.
//!
//! dockerd runs as root, so these tests need root (CI runs the suite as
//! root) and the `docker.io` package; without either they fail, they are
//! never skipped.

mod harness;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::engine::{
    BuildContext, Engine, Served, answered, count_status, delete_manifest, host, pushed_digest,
    require_root, served_manifest, uploads_completed, write_htpasswd,
};
use harness::{Blobs, Server};
use serde_json::json;

/// How long a daemon may take to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to stop on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A docker daemon of the test's own, and the CLI pointed at it.
struct Dockerd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    docker: Engine,
}

impl Dockerd {
    fn start() -> Dockerd {
        require_root("the docker tests (they start their own dockerd)");
        // The CLI checks for itself; the daemon ships in the same package.
        let docker = Engine::new("docker", "docker.io");
        let _ = Engine::new("dockerd", "docker.io");
        // Under /tmp, whatever TMPDIR says: the daemon's and containerd's
        // sockets live under this directory, and a socket path must stay
        // within about 100 bytes.
        let dir = tempfile::Builder::new()
            .prefix("berth-dockerd-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let d = dir.path();
        let config = d.join("client");
        std::fs::create_dir_all(&config).unwrap();
        // An empty daemon configuration instead of /etc/docker/daemon.json.
        std::fs::write(d.join("daemon.json"), "{}").unwrap();
        let socket = format!("unix://{}", d.join("docker.sock").display());
        let log = std::fs::File::create(d.join("dockerd.log")).expect("log file");
        let mut dockerd = Command::new("dockerd");
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        // If the test process dies without running `Drop` (killed), the
        // daemon gets SIGTERM and stops its containerd and unmounts.
        unsafe {
            dockerd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = dockerd
            .args(["--config-file", &p(&d.join("daemon.json"))])
            .args(["--host", &socket])
            .args(["--data-root", &p(&d.join("root"))])
            .args(["--exec-root", &p(&d.join("exec"))])
            .args(["--pidfile", &p(&d.join("dockerd.pid"))])
            // No containers are ever started: no network set-up, no
            // iptables rules, no bridge; vfs works on any filesystem.
            .args([
                "--storage-driver",
                "vfs",
                "--iptables=false",
                "--bridge=none",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let docker = docker
            .env("DOCKER_HOST", &socket)
            .env("DOCKER_CONFIG", &p(&config))
            // The classic builder: BuildKit needs the buildx plugin, which
            // the Debian packages do not ship.
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_CLI_HINTS", "false");
        let mut dockerd = Dockerd {
            child: Some(child),
            dir,
            docker,
        };
        dockerd.wait_ready();
        dockerd
    }

    /// A daemon whose CLI failures show `server`'s log too.
    fn watching(server: &Server) -> Dockerd {
        let mut dockerd = Dockerd::start();
        dockerd.docker.watch(server);
        dockerd
    }

    /// Where `docker login` keeps credentials: the test's CLI configuration.
    fn credentials(&self) -> PathBuf {
        self.dir.path().join("client/config.json")
    }

    /// Waits until the daemon answers on its socket.
    fn wait_ready(&mut self) {
        let started = Instant::now();
        let socket = self.dir.path().join("docker.sock");
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dockerd exited with {status} at start:\n{}", self.log());
            }
            if socket.exists() && ping(&socket) {
                return;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "dockerd did not answer within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL if it lingers; then whatever it left behind:
    /// its containerd, and the mounts under its directory.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), libc::SIGTERM);
        let started = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let containerd = self.dir.path().join("exec/containerd/containerd.pid");
        if let Some(pid) = std::fs::read_to_string(containerd)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|pid| owned_by(*pid, self.dir.path()))
        {
            signal(pid, libc::SIGKILL);
        }
        unmount_under(self.dir.path());
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn p(path: &Path) -> String {
    harness::path_str(path).to_owned()
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a process id this test started; no memory involved.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Whether process `pid` still runs and its command line names `dir` (so a
/// recycled process id is never signalled).
fn owned_by(pid: u32, dir: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains(harness::path_str(dir))
}

/// Detaches every mount at or under `dir`, deepest first (dockerd makes
/// its data root a mount of its own, and leaves it when killed).
fn unmount_under(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in points {
        let c = std::ffi::CString::new(harness::path_str(&m)).unwrap();
        // SAFETY: a valid NUL-terminated path; MNT_DETACH never blocks.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// `GET /_ping` on the daemon's socket answers OK.
fn ping(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200")
}

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Checks that the registry serves, under `repo:reference`, the very image
/// docker holds as `image`, and that docker knows it by the digest it is
/// served under. Returns that digest.
async fn assert_serves(
    server: &Server,
    docker: &Engine,
    image: &str,
    repo: &str,
    reference: &str,
) -> String {
    let served = (repo, reference);
    let digest = docker
        .assert_served(server, image, served, DOCKER_MANIFEST)
        .await;
    let repo = format!("{}/{repo}", host(server));
    docker.assert_known_as(image, &repo, &digest).await;
    digest
}

/// Two images sharing their first layer: docker sends it once, then
/// mounts it into the second repository or finds it already there; both
/// images, removed locally, pull back by tag and by digest as they were
/// built, and the registry serves what docker holds.
async fn layers_shared_between_images_are_sent_once_and_pull_back_whole(blobs: Blobs) {
    let server = Server::start_on(blobs, &[]);
    let dockerd = Dockerd::watching(&server);
    let docker = &dockerd.docker;
    let tmp = tempfile::tempdir().unwrap();
    let ctx = BuildContext::random(
        tmp.path(),
        &[
            ("base.bin", 3000),
            ("app.bin", 2000),
            ("app.conf", 300),
            ("tool.bin", 2500),
        ],
    );
    let h = host(&server);
    let (app, tool, tool_in_app) = (
        format!("{h}/e2e/app:v1"),
        format!("{h}/e2e/tool:v1"),
        format!("{h}/e2e/app:tool"),
    );
    let app_files = ["base.bin", "app.bin", "app.conf"];
    let tool_files = ["base.bin", "tool.bin"];
    docker.build(&ctx, &app_files, &app, &[]).await;
    docker.build(&ctx, &tool_files, &tool, &[]).await;
    docker.ok(&["tag", &tool, &tool_in_app]).await;
    let (a, t) = (docker.inspect(&app).await, docker.inspect(&tool).await);
    assert_eq!(
        a["RootFS"]["Layers"][0], t["RootFS"]["Layers"][0],
        "one layer shared"
    );

    // Every layer of the first image is sent; of the second, only its own
    // (the shared one is mounted from the first repository); and the
    // second again into the first repository sends no layer.
    // The server counts the uploads: layers and configs.
    let out = docker.push(&app, &[]).await;
    assert_eq!(count_status(&out, "Pushed"), 3, "{out}");
    assert_eq!(uploads_completed(&server).await, 3 + 1);
    let app_digest = pushed_digest(&out);
    let out = docker.push(&tool, &[]).await;
    assert_eq!(count_status(&out, "Pushed"), 1, "{out}");
    assert_eq!(count_status(&out, "Mounted from e2e/app"), 1, "{out}");
    assert_eq!(uploads_completed(&server).await, 4 + 1 + 1);
    let tool_digest = pushed_digest(&out);
    let out = docker.push(&tool_in_app, &[]).await;
    assert_eq!(count_status(&out, "Pushed"), 0, "{out}");
    assert_eq!(count_status(&out, "Layer already exists"), 1, "{out}");
    assert_eq!(count_status(&out, "Mounted from e2e/tool"), 1, "{out}");
    // Only the config again: docker mounts layers, never configs.
    assert_eq!(uploads_completed(&server).await, 6 + 1);
    assert_eq!(
        pushed_digest(&out),
        tool_digest,
        "the same image, the same manifest"
    );

    assert_eq!(
        assert_serves(&server, docker, &app, "e2e/app", "v1").await,
        app_digest
    );
    assert_eq!(
        assert_serves(&server, docker, &tool, "e2e/tool", "v1").await,
        tool_digest
    );
    assert_serves(&server, docker, &tool_in_app, "e2e/app", "tool").await;
    let first_layer = |m: Served| m.body["layers"][0]["digest"].clone();
    assert_eq!(
        first_layer(served_manifest(&server, "e2e/app", "v1").await),
        first_layer(served_manifest(&server, "e2e/tool", "v1").await),
        "one blob for the shared layer"
    );

    // Gone locally, then pulled back by tag and by digest: the same images.
    docker.rmi(&[&app, &tool, &tool_in_app]).await;
    assert!(!docker.holds(&app).await && !docker.holds(&tool).await);
    docker.pull(&app, &[]).await;
    let tool_by_digest = format!("{h}/e2e/tool@{tool_digest}");
    docker.pull(&tool_by_digest, &[]).await;
    let (a2, t2) = (
        docker.inspect(&app).await,
        docker.inspect(&tool_by_digest).await,
    );
    assert_eq!((&a2["Id"], &a2["RootFS"]), (&a["Id"], &a["RootFS"]));
    assert_eq!((&t2["Id"], &t2["RootFS"]), (&t["Id"], &t["RootFS"]));
    assert_serves(&server, docker, &app, "e2e/app", "v1").await;
    docker.assert_files(&app, &ctx, &app_files).await;
    docker
        .assert_files(&tool_by_digest, &ctx, &tool_files)
        .await;
}

/// A pull docker must refuse because the registry knows no such manifest.
async fn assert_manifest_unknown(docker: &Engine, image: &str) {
    let out = docker.refused("pull", image).await;
    assert!(out.contains("manifest unknown"), "pull of {image}: {out}");
}

/// Deletes through the registry API, by tag and by digest, and docker's
/// pulls of what went. The image deleted by digest is one this daemon
/// never pulled: docker keeps the manifests it pulled and, asked for one
/// of those by digest, uses its own copy without asking the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_tags_and_images_are_manifest_unknown_to_docker() {
    let server = Server::start();
    let dockerd = Dockerd::watching(&server);
    let docker = &dockerd.docker;
    let tmp = tempfile::tempdir().unwrap();
    let (kept_files, gone_files) = (["one.bin", "two.bin"], ["three.bin"]);
    let sizes = [("one.bin", 1500), ("two.bin", 900), ("three.bin", 1100)];
    let ctx = BuildContext::random(tmp.path(), &sizes);
    let h = host(&server);
    let (v1, v2, gone) = (
        format!("{h}/e2e/del:v1"),
        format!("{h}/e2e/del:v2"),
        format!("{h}/e2e/del:gone"),
    );
    docker.build(&ctx, &kept_files, &v1, &[]).await;
    docker.build(&ctx, &gone_files, &gone, &[]).await;
    docker.ok(&["tag", &v1, &v2]).await;
    let kept = pushed_digest(&docker.push(&v1, &[]).await);
    docker.push(&v2, &[]).await;
    let gone_digest = pushed_digest(&docker.push(&gone, &[]).await);
    docker.rmi(&[&v1, &v2, &gone]).await;

    // The tag goes; the image stays under its other tag.
    delete_manifest(&server, "e2e/del", "v1").await;
    assert_manifest_unknown(docker, &v1).await;
    docker.pull(&v2, &[]).await;
    docker.assert_files(&v2, &ctx, &kept_files).await;

    // By digest: the image goes with every tag it had.
    delete_manifest(&server, "e2e/del", &gone_digest).await;
    assert_manifest_unknown(docker, &gone).await;
    assert_manifest_unknown(docker, &format!("{h}/e2e/del@{gone_digest}")).await;
    let status = served_manifest(&server, "e2e/del", &gone_digest)
        .await
        .status;
    assert_eq!(status, 404);
    delete_manifest(&server, "e2e/del", &kept).await;
    docker.rmi(&[&v2]).await;
    assert_manifest_unknown(docker, &v2).await;
}

/// Runs garbage collection with `body`, one run after the other, once
/// `start` is true and until `stop` is; returns the reports of the runs.
async fn collect_back_to_back(
    server: &Server,
    body: serde_json::Value,
    start: impl AsyncFn() -> bool,
    stop: &AtomicBool,
) -> Vec<serde_json::Value> {
    let client = server.client();
    while !start().await && !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut reports = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        reports.push(client.run_gc(body.clone()).await);
    }
    reports
}

/// The sum of `field` over run reports.
fn total(reports: &[serde_json::Value], field: &str) -> u64 {
    reports.iter().map(|r| r[field].as_u64().unwrap_or(0)).sum()
}

/// Blob HEADs the server answered 200: docker finding a layer it has.
async fn blobs_found(server: &Server) -> u64 {
    answered(
        server,
        &["method=\"HEAD\"", "route=\"blob\"", "status=\"200\""],
    )
    .await
}

/// An image pushed and then deleted by digest, so its blobs are stored and
/// referenced by nothing: what a collection takes.
async fn push_and_delete(server: &Server, docker: &Engine, image: &str, repo: &str) {
    let digest = pushed_digest(&docker.push(image, &[]).await);
    delete_manifest(server, repo, &digest).await;
}

/// `host/repo:tag` split into the repository and the tag.
fn repo_and_tag(image: &str) -> (&str, &str) {
    let rest = image.split_once('/').expect("host/repo:tag").1;
    rest.rsplit_once(':').expect("host/repo:tag")
}

/// The image pulls back intact through the API and through docker, once
/// removed locally: the same ID, the same files.
async fn assert_pulls_back(
    server: &Server,
    docker: &Engine,
    image: &str,
    ctx: &BuildContext,
    files: &[&str],
) {
    let (repo, tag) = repo_and_tag(image);
    server.client().assert_pulls_intact(repo, tag).await;
    let id = docker.inspect(image).await["Id"].clone();
    docker.rmi(&[image]).await;
    docker.pull(image, &[]).await;
    assert_eq!(docker.inspect(image).await["Id"], id, "{image} pulled back");
    assert_serves(server, docker, image, repo, tag).await;
    docker.assert_files(image, ctx, files).await;
}

/// The docker push sequence (HEAD a layer, skip it when found, PUT the
/// manifest) never loses a layer it found to the collections that run in
/// between, within the grace period. The layers found are those of a
/// deleted image, past the grace period of their upload; collections run
/// back to back from the moment docker has found them, while it sends a
/// larger new layer, until the push is done. The runs must spare the
/// found layers, and the push succeed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_keeps_the_layers_it_found_while_collections_run() {
    const GRACE: Duration = Duration::from_secs(2);
    let server = Server::start_with(&["--gc-grace", "2s"]);
    let dockerd = Dockerd::watching(&server);
    let docker = &dockerd.docker;
    let tmp = tempfile::tempdir().unwrap();
    let sizes = [("base.bin", 4000), ("own.bin", 1200), ("big.bin", 6 << 20)];
    let ctx = BuildContext::random(tmp.path(), &sizes);
    let h = host(&server);
    let (old, new) = (format!("{h}/e2e/found:old"), format!("{h}/e2e/found:new"));
    let (old_files, new_files) = (["base.bin", "own.bin"], ["base.bin", "own.bin", "big.bin"]);
    docker.build(&ctx, &old_files, &old, &[]).await;
    docker.build(&ctx, &new_files, &new, &[]).await;
    push_and_delete(&server, docker, &old, "e2e/found").await;
    // Past the grace period of the upload: the layers are collectable.
    tokio::time::sleep(GRACE + Duration::from_millis(300)).await;

    let before = blobs_found(&server).await;
    let stop = AtomicBool::new(false);
    let push = async {
        let out = docker.push(&new, &[]).await;
        stop.store(true, Ordering::SeqCst);
        out
    };
    let found_both = async || blobs_found(&server).await >= before + 2;
    let collect = collect_back_to_back(&server, json!({}), found_both, &stop);
    let (out, reports) = tokio::join!(push, collect);
    assert_eq!(count_status(&out, "Layer already exists"), 2, "{out}");
    let spared = total(&reports, "protected_blobs");
    println!(
        "push during {} collections, which spared {spared} blobs",
        reports.len()
    );
    assert!(
        spared >= 2,
        "no collection ran while docker relied on the layers it found: {reports:#?}"
    );
    assert_pulls_back(&server, docker, &new, &ctx, &new_files).await;
}

/// One push while collections run: whether the registry took it. It may
/// refuse the manifest only for naming a blob a sweep had just taken (a
/// run without a grace period protects nothing a manifest does not
/// reference yet: neither what docker has just sent nor what it found).
async fn push_during_collections(docker: &Engine, image: &str) -> bool {
    let ran = docker.run(&["push", image], None).await;
    if ran.success() {
        return true;
    }
    let out = ran.all().to_lowercase();
    assert!(
        ["blob unknown", "unknown blob", "unavailable"]
            .iter()
            .any(|w| out.contains(w)),
        "push of {image} refused for another reason than a collected blob:\n{out}"
    );
    false
}

/// Pushes while collections with no grace period at all run back to back
/// (`{"grace": "0s"}`): docker's pushes may be refused, as above, but the
/// registry never takes an image it lacks a blob of. Whatever it serves
/// is whole, before and after one more run; once the runs stop, the same
/// pushes succeed, and the images pull back intact.
async fn pushes_during_collections_without_grace_pull_back_intact(blobs: Blobs) {
    let server = Server::start_on(blobs, &[]);
    let dockerd = Dockerd::watching(&server);
    let docker = &dockerd.docker;
    let tmp = tempfile::tempdir().unwrap();
    let sizes = [
        ("base.bin", 3000),
        ("old.bin", 1000),
        ("new1.bin", 1800),
        ("new2.bin", 700),
    ];
    let ctx = BuildContext::random(tmp.path(), &sizes);
    let h = host(&server);
    let (old, new) = (format!("{h}/e2e/churn:old"), format!("{h}/e2e/churn:new"));
    let old_files = ["base.bin", "old.bin"];
    let new_files = ["base.bin", "new1.bin", "new2.bin"];
    docker.build(&ctx, &old_files, &old, &[]).await;
    docker.build(&ctx, &new_files, &new, &[]).await;
    push_and_delete(&server, docker, &old, "e2e/churn").await;

    // An image sharing a layer with the deleted one, and the deleted one
    // again, three times each.
    let stop = AtomicBool::new(false);
    let pushes = async {
        let mut accepted = 0;
        for image in [&new, &old, &new, &old, &new, &old] {
            accepted += push_during_collections(docker, image).await as usize;
        }
        stop.store(true, Ordering::SeqCst);
        accepted
    };
    let body = json!({"grace": "0s"});
    let collect = collect_back_to_back(&server, body.clone(), async || true, &stop);
    let (accepted, reports) = tokio::join!(pushes, collect);
    println!(
        "6 pushes during {} collections: {accepted} accepted",
        reports.len()
    );

    let client = server.client();
    let served_whole = async || {
        for image in [&new, &old] {
            let (repo, tag) = repo_and_tag(image);
            if served_manifest(&server, repo, tag).await.status == 200 {
                client.assert_pulls_intact(repo, tag).await;
            }
        }
    };
    served_whole().await;
    client.run_gc(body).await;
    served_whole().await;
    for (image, files) in [(&new, &new_files[..]), (&old, &old_files[..])] {
        docker.push(image, &[]).await;
        assert_pulls_back(&server, docker, image, &ctx, files).await;
    }
}

const BOB: (&str, &str) = ("bob", "bob-secret");
const CAROL: (&str, &str) = ("carol", "carol-secret");

/// A certificate for 127.0.0.1 signed by nobody docker trusts: docker
/// talks TLS to loopback registries without verifying it (the same rule
/// that lets it use plain HTTP there).
fn certificate(dir: &Path) -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (p(&cert), p(&key))
}

/// `docker login` with Basic credentials from an htpasswd file, over TLS
/// (docker does not check the certificate of a loopback registry): push
/// and pull logged in, refused when logged out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_basic_credentials_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let htpasswd = write_htpasswd(&tmp.path().join("htpasswd"), &[BOB]);
    let (cert, key) = certificate(tmp.path());
    let tls = ["--tls-cert", &cert, "--tls-key", &key];
    // Metrics on a plain port of their own, for the test to read.
    let metrics = ["--metrics-addr", "127.0.0.1:0"];
    let server = Server::start_with(&[&["--htpasswd", &htpasswd][..], &tls, &metrics].concat());
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let dockerd = Dockerd::watching(&server);
    let ctx = BuildContext::random(tmp.path(), &[("secret.bin", 2000), ("more.bin", 500)]);
    let image = format!("{}/team/basic:v1", host(&server));
    let built = (image.as_str(), &ctx, &["secret.bin", "more.bin"][..]);
    dockerd.docker.build(&ctx, built.2, &image, &[]).await;
    let kept_in = dockerd.credentials();
    dockerd
        .docker
        .assert_login_round_trip(&server, built, BOB, &kept_in)
        .await;
}

/// `docker login` through the token protocol: bob may push team/**, carol
/// only pull it; logged out, neither may do anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let htpasswd = write_htpasswd(&tmp.path().join("htpasswd"), &[BOB, CAROL]);
    let config = tmp.path().join("registry.toml");
    let access = |user: &str, actions: &str| {
        format!(
            "[[auth.access]]\nrepositories = \"team/**\"\nusers = [\"{user}\"]\nactions = [{actions}]\n"
        )
    };
    let policy = format!(
        "[auth]\nmode = \"token\"\nhtpasswd = \"{htpasswd}\"\n{}{}",
        access("bob", "\"pull\", \"push\""),
        access("carol", "\"pull\""),
    );
    std::fs::write(&config, policy).unwrap();
    let server = Server::start_with(&["--config", &p(&config)]);
    let dockerd = Dockerd::watching(&server);
    let docker = &dockerd.docker;
    let ctx = BuildContext::random(tmp.path(), &[("token.bin", 2500)]);
    let h = host(&server);
    let image = format!("{h}/team/token:v1");
    let files = ["token.bin"];
    docker.build(&ctx, &files, &image, &[]).await;
    let kept_in = dockerd.credentials();
    let built = (image.as_str(), &ctx, &files[..]);
    docker
        .assert_login_round_trip(&server, built, BOB, &kept_in)
        .await;

    docker.login_ok(&h, CAROL, &kept_in).await;
    docker.pull(&image, &[]).await;
    docker.assert_files(&image, &ctx, &files).await;
    let other = format!("{h}/team/token:carol");
    docker.ok(&["tag", &image, &other]).await;
    docker
        .refused_for_credentials(&server, "push", &other)
        .await;
    docker.logout(&h).await;
}

on_both_stores!(
    layers_shared_between_images_are_sent_once_and_pull_back_whole,
    pushes_during_collections_without_grace_pull_back_intact,
);
