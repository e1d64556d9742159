//! skopeo against a running Berth (one server, or a cluster behind its
//! balancer): copies between OCI layouts on disk and the registry, with
//! digests preserved, for the end-to-end tests.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use super::oci_layout::{self, BuiltImage, Layer, OciLayout};
use super::{OCI_MANIFEST, Server};

/// What skopeo talks to: its address, and the log to show on failure.
pub trait Target {
    /// `host:port`, as skopeo references want it.
    fn host(&self) -> String;
    fn log(&self) -> String;
}

impl Target for Server {
    fn host(&self) -> String {
        self.url
            .strip_prefix("http://")
            .expect("http URL")
            .to_owned()
    }

    fn log(&self) -> String {
        Server::log(self)
    }
}

impl Target for super::cluster::Cluster {
    fn host(&self) -> String {
        super::cluster::Cluster::host(self)
    }

    fn log(&self) -> String {
        self.logs()
    }
}

pub fn require_skopeo() {
    assert!(
        super::have("skopeo"),
        "skopeo is not installed: these end-to-end tests need it. Install it with \
         `apt-get update && apt-get install -y skopeo`"
    );
}

pub fn docker_ref(server: &impl Target, repo_and_ref: &str) -> String {
    format!("docker://{}/{repo_and_ref}", server.host())
}

pub fn oci_ref(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", super::path_str(dir))
}

/// Runs skopeo (with no trust policy and a time limit) off the async runtime.
pub async fn skopeo(args: &[&str]) -> (String, Output) {
    let mut full: Vec<String> = vec![
        "--insecure-policy".into(),
        "--command-timeout".into(),
        "60s".into(),
    ];
    full.extend(args.iter().map(|a| a.to_string()));
    let shown = format!("skopeo {}", full.join(" "));
    let output = tokio::task::spawn_blocking(move || Command::new("skopeo").args(&full).output())
        .await
        .expect("join")
        .unwrap_or_else(|e| {
            panic!("cannot run skopeo ({e}); install it with `apt-get install -y skopeo`")
        });
    (shown, output)
}

/// Runs skopeo and requires success; returns stdout.
pub async fn skopeo_ok(server: &impl Target, args: &[&str]) -> String {
    let (shown, out) = skopeo(args).await;
    assert!(
        out.status.success(),
        "`{shown}` failed with {}\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs skopeo and requires failure; returns stderr.
pub async fn skopeo_fails(server: &impl Target, args: &[&str]) -> String {
    let (shown, out) = skopeo(args).await;
    assert!(
        !out.status.success(),
        "`{shown}` succeeded but should have failed\nstdout:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        server.log()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `--preserve-digests` (in recent skopeo releases) makes skopeo refuse any
/// change to what it copies. Older versions lack the flag; they copy these
/// OCI images (gzip layers, nothing to convert) unchanged anyway, which the
/// digest comparisons in every test check regardless.
pub fn preserve_digests() -> Option<&'static str> {
    static HAS: OnceLock<bool> = OnceLock::new();
    let has = *HAS.get_or_init(|| {
        let help = Command::new("skopeo").args(["copy", "--help"]).output();
        help.map(|o| String::from_utf8_lossy(&o.stdout).contains("--preserve-digests"))
            .unwrap_or(false)
    });
    has.then_some("--preserve-digests")
}

/// Copies `oci:DIR:tag` to `docker://host/dest` with digests preserved.
pub async fn push(server: &impl Target, dir: &Path, tag: &str, dest: &str, all: bool) {
    let src = oci_ref(dir, tag);
    let dst = docker_ref(server, dest);
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    args.extend(preserve_digests());
    if all {
        args.push("--all");
    }
    args.extend([src.as_str(), dst.as_str()]);
    skopeo_ok(server, &args).await;
}

/// Copies `docker://host/src` into `oci:OUT:tag`; returns what `tag` names there.
pub async fn pull(
    server: &impl Target,
    src: &str,
    out: &Path,
    tag: &str,
    all: bool,
) -> oci_layout::Entry {
    let src = docker_ref(server, src);
    let dst = oci_ref(out, tag);
    let mut args = vec!["copy", "--src-tls-verify=false"];
    args.extend(preserve_digests());
    if all {
        args.push("--all");
    }
    args.extend([src.as_str(), dst.as_str()]);
    skopeo_ok(server, &args).await;
    oci_layout::resolve(out, tag)
}

/// Copies one image out into `out` (tag `pulled`) and checks the manifest
/// and every blob against what was built.
pub async fn pull_intact(server: &impl Target, src: &str, out: &Path, image: &BuiltImage) {
    let entry = pull(server, src, out, "pulled", false).await;
    assert_eq!(entry.digest, image.digest, "manifest digest of {src}");
    assert_eq!(entry.media_type, OCI_MANIFEST, "{src}");
    assert_eq!(
        oci_layout::read_blob(out, &image.digest),
        image.manifest,
        "{src}"
    );
    let mut expected: BTreeSet<String> = image.blobs().into_iter().collect();
    expected.insert(image.digest.clone());
    assert_eq!(
        oci_layout::closure(out, &image.digest),
        expected,
        "blobs of {src}"
    );
}

/// A layout holding one image of `layers` fresh layers, tagged `tag`.
pub fn image_layout(dir: &Path, tag: &str, layers: usize) -> BuiltImage {
    let mut layout = OciLayout::create(dir);
    let layers: Vec<Layer> = (0..layers).map(|i| Layer::random(1 + i % 3)).collect();
    let image = layout.add_image("amd64", "linux", &layers);
    layout.tag_image(tag, &image);
    image
}
