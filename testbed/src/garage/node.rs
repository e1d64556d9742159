//! One Garage node: its configuration file, ports, process and CLI.
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::ports::{StartFailure, free_addr};
use crate::process;

/// What every node of one cluster shares.
pub(super) struct Shared {
    pub binary: PathBuf,
    pub replication_factor: usize,
    pub rpc_secret: String,
    pub admin_token: String,
}

pub(super) struct Node {
    pub config: PathBuf,
    pub log: PathBuf,
    pub s3: SocketAddr,
    pub rpc: SocketAddr,
    pub admin: SocketAddr,
    /// `HEX@ADDR`, as `garage node id` prints it; set once started.
    pub id: String,
    pub child: Option<Child>,
}

impl Node {
    /// Writes the configuration of a node living in `dir`, on fresh ports.
    pub fn configure(dir: &Path, shared: &Shared) -> Node {
        let (meta, data) = (dir.join("meta"), dir.join("data"));
        for d in [&meta, &data] {
            std::fs::create_dir_all(d).expect("create garage dirs");
        }
        let node = Node {
            config: dir.join("garage.toml"),
            log: dir.join("garage.log"),
            s3: free_addr(),
            rpc: free_addr(),
            admin: free_addr(),
            id: String::new(),
            child: None,
        };
        std::fs::write(&node.config, node.config_text(&meta, &data, shared))
            .expect("write garage.toml");
        node
    }

    fn config_text(&self, meta: &Path, data: &Path, shared: &Shared) -> String {
        // Debug-quoting gives a valid TOML basic string for any temp path.
        let mut t = String::new();
        let _ = writeln!(t, "metadata_dir = {:?}", meta.to_str().expect("utf-8 path"));
        let _ = writeln!(t, "data_dir = {:?}", data.to_str().expect("utf-8 path"));
        t.push_str("db_engine = \"sqlite\"\nmetadata_fsync = false\ndata_fsync = false\n");
        let _ = writeln!(t, "replication_factor = {}", shared.replication_factor);
        let _ = writeln!(t, "rpc_bind_addr = \"{}\"", self.rpc);
        let _ = writeln!(t, "rpc_public_addr = \"{}\"", self.rpc);
        let _ = writeln!(t, "rpc_secret = \"{}\"", shared.rpc_secret);
        let _ = writeln!(t, "\n[s3_api]\napi_bind_addr = \"{}\"", self.s3);
        let _ = writeln!(t, "s3_region = \"{}\"", super::REGION);
        let _ = writeln!(t, "\n[admin]\napi_bind_addr = \"{}\"", self.admin);
        let _ = writeln!(t, "admin_token = \"{}\"", shared.admin_token);
        t
    }

    /// Starts `garage server` and waits until its three ports answer.
    pub fn spawn(&mut self, binary: &Path) -> Result<(), StartFailure> {
        let mut cmd = Command::new(binary);
        cmd.arg("-c").arg(&self.config).arg("server");
        let mut child = process::spawn_logged(&mut cmd, &self.log);
        process::wait_listening(&mut child, &[self.rpc, self.s3, self.admin], &self.log)?;
        self.child = Some(child);
        Ok(())
    }

    /// A `garage` CLI command that talks to this node.
    pub fn cli(&self, binary: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary);
        cmd.arg("-c").arg(&self.config).args(args);
        cmd
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The first 16 hex digits of the node id: how `garage status` shows it.
    pub fn short_id(&self) -> &str {
        &self.id[..16.min(self.id.len())]
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill(&mut child);
        }
    }
}

/// The short ids listed under `==== HEALTHY NODES ====` in `garage status`.
pub(super) fn healthy_ids(status: &str) -> Vec<String> {
    status
        .lines()
        .skip_while(|l| !l.starts_with("==== HEALTHY NODES"))
        .skip(2) // the section title and the column headers
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("===="))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The value after `label` on its line of `garage key create` / `key info`.
pub(super) fn field(output: &str, label: &str) -> Option<String> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|v| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "==== HEALTHY NODES ====
ID                Hostname  Address          Tags  Zone  Capacity   DataAvail  Version
504cd2877cc2d60f  vm        127.0.0.1:39901  []    dc1   953.7 MiB  55 GiB     cargo:2.5.0
7a1b2c3d4e5f6a7b  vm        127.0.0.1:39911  []    dc1   953.7 MiB  55 GiB     cargo:2.5.0

==== FAILED NODES ====
ID                Hostname  Address          Tags  Zone  Capacity   Last seen
99aa88bb77cc66dd  vm        127.0.0.1:39921  []    dc1   953.7 MiB  3 seconds ago
";

    #[test]
    fn status_lists_only_healthy_nodes() {
        assert_eq!(
            healthy_ids(STATUS),
            ["504cd2877cc2d60f", "7a1b2c3d4e5f6a7b"]
        );
        assert!(healthy_ids("no such section").is_empty());
    }

    #[test]
    fn key_fields_are_read_by_label() {
        let out = "==== ACCESS KEY INFORMATION ====\nKey ID:              GKcefc\n\
                   Key name:            tk\nSecret key:          e98557\n";
        assert_eq!(field(out, "Key ID:").as_deref(), Some("GKcefc"));
        assert_eq!(field(out, "Secret key:").as_deref(), Some("e98557"));
        assert_eq!(field(out, "Expiration:"), None);
    }
}
