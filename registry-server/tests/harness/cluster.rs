//! Several Berth nodes serving one registry: each node is the real binary
//! with a data directory of its own, all on one PostgreSQL database (the
//! index) and one bucket prefix (the blobs), with nginx in front of them
//! as a round-robin load balancer.

use std::sync::Arc;

use super::{Client, Server, check_store_with, default_log_level};

/// A running cluster. Dropping it stops the balancer and the nodes; the
/// database server and the object store belong to the caller.
pub struct Cluster {
    /// Fields drop in order: the balancer goes before its upstreams.
    pub balancer: testbed::Nginx,
    pub nodes: Vec<Server>,
    /// The index: `postgres://...`.
    pub index: String,
    /// The blobs: `s3://BUCKET/PREFIX`.
    pub blob_store: String,
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Creates database `database` on `pg` and starts `nodes` nodes on it
    /// and on the prefix `database` of `garage`'s bucket, each on a fixed
    /// loopback port (a node restarts on the same one), every node with
    /// the same extra `serve` arguments; then the balancer. Blocking.
    pub fn start(
        pg: &testbed::Postgres,
        garage: &Arc<testbed::Garage>,
        database: &str,
        nodes: usize,
        args: &[&str],
    ) -> Cluster {
        let index = pg.create_database(database);
        let blob_store = format!("s3://{}/{database}", garage.bucket());
        let env: Vec<(String, String)> = garage
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let servers: Vec<Server> = (0..nodes)
            .map(|_| {
                let addr = testbed::free_addr().to_string();
                let mut all: Vec<String> = [
                    "--addr",
                    &addr,
                    "--index",
                    &index,
                    "--blob-store",
                    &blob_store,
                ]
                .iter()
                .map(|a| a.to_string())
                .collect();
                all.extend(args.iter().map(|a| a.to_string()));
                let tmp = tempfile::tempdir().expect("temp dir");
                let mut s = Server::spawn(
                    tmp.path().to_path_buf(),
                    all,
                    env.clone(),
                    default_log_level(),
                );
                s._tmp = Some(tmp);
                s.garage = Some(garage.clone());
                s.prefix = Some(database.to_owned());
                s
            })
            .collect();
        let addrs: Vec<std::net::SocketAddr> = servers
            .iter()
            .map(|s| {
                let hostport = s.url.strip_prefix("http://").expect("http URL");
                hostport.parse().expect("node address")
            })
            .collect();
        Cluster {
            balancer: testbed::Nginx::round_robin(&addrs),
            nodes: servers,
            index,
            blob_store,
            env,
        }
    }

    /// The balancer's URL: what clients use.
    pub fn url(&self) -> String {
        self.balancer.url()
    }

    /// `host:port` of the balancer, as skopeo references want it.
    pub fn host(&self) -> String {
        self.url().trim_start_matches("http://").to_owned()
    }

    /// A pooled client through the balancer.
    pub fn client(&self) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .expect("client"),
            base: self.url(),
        }
    }

    /// A client of node `i` alone.
    pub fn node(&self, i: usize) -> Client {
        self.nodes[i].client()
    }

    /// Runs `registry check` (with `extra` arguments) on the shared index
    /// and bucket; the nodes should be stopped. Exit code and output.
    pub fn check(&self, extra: &[&str]) -> (i32, String) {
        let mut args = vec![
            "--index",
            self.index.as_str(),
            "--blob-store",
            self.blob_store.as_str(),
        ];
        args.extend_from_slice(extra);
        let data = tempfile::tempdir().expect("temp dir");
        check_store_with(data.path(), &args, &self.env)
    }

    /// Every node's log, then the balancer's error log, each labelled.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            out.push_str(&format!("---- node {i} ({}) ----\n{}", n.url, n.log()));
        }
        out.push_str(&format!("---- nginx ----\n{}", self.balancer.error_log()));
        out
    }

    /// Metric `name` (samples whose labels contain all of `labels`), summed
    /// over every running node.
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let mut sum = 0.0;
        for (i, n) in self.nodes.iter().enumerate() {
            if n.child.is_some() {
                sum += self.node_metric(i, name, labels).await;
            }
        }
        sum
    }

    /// Metric `name` of node `i` (see [`Cluster::metric`]).
    pub async fn node_metric(&self, i: usize, name: &str, labels: &[&str]) -> f64 {
        let text = self.node(i).text("/metrics").await;
        metric_sum(&text, name, labels)
    }
}

/// The sum of the samples of `name` whose labels contain every one of
/// `labels` (`method="PATCH"`), in Prometheus text format.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (series, value) = rest.rsplit_once(' ')?;
            let exact = series.is_empty() || series.starts_with('{');
            (exact && labels.iter().all(|want| series.contains(want))).then_some(value)
        })
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}
