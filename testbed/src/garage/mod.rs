//! Garage, the S3-compatible distributed object store, on loopback.
mod node;
mod s3;

use std::path::PathBuf;
use std::time::Duration;

use node::{Node, Shared};
use rand::Rng as _;
use tempfile::TempDir;

pub use s3::MultipartUpload;

use crate::ports::with_port_retry;
use crate::process;

/// The S3 region every node announces.
const REGION: &str = "garage";
/// The name of the bucket created at start.
const BUCKET: &str = "testbed";
/// How long a cluster may take to agree on members, layout, keys and buckets.
const SETTLE: Duration = Duration::from_secs(30);

/// A running Garage cluster (one node or several) with an access key and a
/// bucket the key may read, write and own.
///
/// Uses the `garage` binary on the `PATH` (Garage 2.5). Every node has its
/// own metadata and data directories, configuration file and log under one
/// temporary directory, which `Drop` removes after killing the nodes.
pub struct Garage {
    nodes: Vec<Node>,
    binary: PathBuf,
    key_id: String,
    secret_key: String,
    bucket: String,
    /// Last: removed after the nodes are killed.
    dir: TempDir,
}

impl Garage {
    /// One node, replication factor 1.
    pub fn single() -> Garage {
        Garage::cluster(1)
    }

    /// `nodes` nodes on loopback with replication factor `nodes`, all in zone
    /// `dc1` of one layout: every object is stored on every node, and the
    /// cluster keeps serving reads and writes with one node down when there
    /// are three.
    pub fn cluster(nodes: usize) -> Garage {
        assert!(nodes >= 1, "a Garage cluster needs at least one node");
        let binary = garage_binary();
        let shared = Shared {
            binary,
            replication_factor: nodes,
            rpc_secret: random_hex(32),
            admin_token: random_hex(32),
        };
        let dir = tempfile::Builder::new()
            .prefix("garage-")
            .tempdir()
            .expect("temp dir");
        let started = (0..nodes)
            .map(|i| start_node(dir.path().join(format!("node{i}")), &shared))
            .collect();
        let mut garage = Garage {
            nodes: started,
            binary: shared.binary,
            key_id: String::new(),
            secret_key: String::new(),
            bucket: BUCKET.to_owned(),
            dir,
        };
        garage.form_cluster();
        garage.create_key();
        garage.create_bucket(BUCKET);
        garage
    }

    /// Reads the node ids, connects every node to the first one, and
    /// applies a layout holding all of them.
    fn form_cluster(&mut self) {
        for i in 0..self.nodes.len() {
            let out = self.run_on(i, &["node", "id", "-q"]);
            self.nodes[i].id = out.trim().to_owned();
        }
        for i in 1..self.nodes.len() {
            let id = self.nodes[i].id.clone();
            self.run_on(0, &["node", "connect", &id]);
        }
        self.wait_connected();
        for i in 0..self.nodes.len() {
            let hex = self.nodes[i]
                .id
                .split('@')
                .next()
                .unwrap_or_default()
                .to_owned();
            self.run_on(0, &["layout", "assign", "-z", "dc1", "-c", "1G", &hex]);
        }
        self.run_on(0, &["layout", "apply", "--version", "1"]);
    }

    fn create_key(&mut self) {
        let out = self.cli(&["key", "create", "testbed-key"]);
        let field = |label| {
            node::field(&out, label)
                .unwrap_or_else(|| panic!("no {label:?} in `garage key create` output:\n{out}"))
        };
        self.key_id = field("Key ID:");
        self.secret_key = field("Secret key:");
    }

    /// Creates bucket `name` (S3 bucket naming rules: 3 to 63 lowercase
    /// letters, digits, dots and hyphens), lets the key read, write and own
    /// it, and waits until every running node knows.
    pub fn create_bucket(&self, name: &str) {
        self.cli(&["bucket", "create", name]);
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            name,
            "--key",
            &self.key_id,
        ]);
        // Buckets and keys are copied to every node; a node serves S3 from
        // its own copy, so wait until each has both halves of the grant.
        for i in self.running() {
            process::wait_until(SETTLE, &format!("node {i} to know bucket {name}"), || {
                let bucket = process::run(&mut self.command_on(i, &["bucket", "info", name]));
                let key = process::run(&mut self.command_on(i, &["key", "info", &self.key_id]));
                matches!((bucket, key), (Ok(b), Ok(k)) if b.contains(&self.key_id) && k.contains(name))
            });
        }
    }

    /// Kills node `node` with SIGKILL: no shutdown code runs. The other
    /// nodes notice only when they next write to it: until then (about 8 s
    /// measured, at most Garage's 15 s ping interval) a read that picks the
    /// dead node for its quorum waits. Writes are not delayed.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].kill();
    }

    /// Starts node `node` again (killing it first if it runs) on its own
    /// ports and data, and waits until it and the other running nodes see
    /// each other.
    pub fn restart(&mut self, node: usize) {
        self.nodes[node].kill();
        if let Err(e) = self.nodes[node].spawn(&self.binary) {
            panic!("garage node {node} did not restart: {e:?}");
        }
        // The others would retry their connection to it only every 30 s.
        let id = self.nodes[node].id.clone();
        for other in self.running().filter(|&i| i != node) {
            self.run_on(other, &["node", "connect", &id]);
        }
        self.wait_connected();
    }

    /// Waits until every running node lists every running node as healthy.
    fn wait_connected(&self) {
        let running: Vec<usize> = self.running().collect();
        for &i in &running {
            process::wait_until(SETTLE, &format!("garage node {i} to see its peers"), || {
                let Ok(status) = process::run(&mut self.command_on(i, &["status"])) else {
                    return false;
                };
                let healthy = node::healthy_ids(&status);
                running
                    .iter()
                    .all(|&j| healthy.iter().any(|h| h == self.nodes[j].short_id()))
            });
        }
    }

    /// Runs a `garage` CLI command through the first running node, retrying
    /// while the cluster settles; returns its stdout. For administration this
    /// crate has no method for.
    pub fn cli(&self, args: &[&str]) -> String {
        let node = self.running().next().expect("no garage node is running");
        self.run_on(node, args)
    }

    fn run_on(&self, node: usize, args: &[&str]) -> String {
        process::run_until_ok(SETTLE, || self.command_on(node, args))
    }

    fn command_on(&self, node: usize, args: &[&str]) -> std::process::Command {
        self.nodes[node].cli(&self.binary, args)
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_running())
    }

    /// How many nodes the cluster has (running or not).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The S3 endpoint of node `node`: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self, node: usize) -> String {
        format!("http://{}", self.nodes[node].s3)
    }

    /// The S3 endpoints of all nodes, in node order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.endpoint(i)).collect()
    }

    pub fn region(&self) -> &str {
        REGION
    }

    pub fn access_key_id(&self) -> &str {
        &self.key_id
    }

    pub fn secret_access_key(&self) -> &str {
        &self.secret_key
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Node `node`'s log so far (for a failing test's message).
    pub fn log(&self, node: usize) -> String {
        process::read_log(&self.nodes[node].log)
    }

    /// The environment an S3 client needs to reach node 0 with the key.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.env_for(0)
    }

    /// The environment an S3 client needs to reach node `node` with the key:
    /// `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION` and `AWS_ALLOW_HTTP=true`.
    pub fn env_for(&self, node: usize) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint(node)),
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// The temporary directory holding every node's files.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// Configures and starts one node, on new ports while its ports get taken.
fn start_node(dir: PathBuf, shared: &Shared) -> Node {
    with_port_retry("garage", || {
        // A failed try may have left a database behind: start clean.
        let _ = std::fs::remove_dir_all(&dir);
        let mut node = Node::configure(&dir, shared);
        node.spawn(&shared.binary).map(|()| node)
    })
}

/// The `garage` binary, or a loud panic saying how to install it.
fn garage_binary() -> PathBuf {
    let install = "cargo install garage --locked --version 2.5.0";
    let Some(binary) = process::find_binary("garage", &[]) else {
        process::missing("the `garage` binary (Garage 2.5) on the PATH", install)
    };
    let version = process::run(std::process::Command::new(&binary).arg("--version"))
        .unwrap_or_else(|e| panic!("`garage --version` failed: {e}"));
    if !version.contains(" cargo:2.5.") && !version.contains(" v2.5.") {
        eprintln!("testbed: expected Garage 2.5, found {}", version.trim());
    }
    binary
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}
