//! nginx as a round-robin HTTP load balancer on loopback.
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use tempfile::TempDir;

use crate::ports::{StartFailure, free_addr, with_port_retry};
use crate::process;

/// A running nginx (Debian's `nginx` package) whose configuration, logs,
/// pid file and temp paths all live in a temporary directory. `Drop` stops
/// it and removes the directory.
pub struct Nginx {
    child: Child,
    addr: SocketAddr,
    /// Last: removed after nginx stops.
    dir: TempDir,
}

impl Nginx {
    /// Proxies `http://127.0.0.1:PORT/` to `upstreams` in turn (one worker
    /// process, so the turns are strict): request bodies and responses
    /// stream through unbuffered and unbounded in size, HTTP/1.1 to the
    /// upstreams, the client's `Host` and `X-Forwarded-For`/`-Proto`/`-Host`
    /// passed on, hour-long timeouts.
    pub fn round_robin(upstreams: &[SocketAddr]) -> Nginx {
        assert!(!upstreams.is_empty(), "nginx needs at least one upstream");
        let binary = process::find_binary("nginx", &["/usr/sbin", "/usr/local/sbin"])
            .unwrap_or_else(|| process::missing("nginx", "apt-get install -y nginx"));
        let dir = tempfile::Builder::new()
            .prefix("nginx-")
            .tempdir()
            .expect("temp dir");
        // Run as root, nginx's workers drop to an unprivileged user, which
        // must be able to enter the directory holding the temp paths.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod nginx dir");
        std::fs::create_dir(dir.path().join("tmp")).expect("nginx temp dir");
        let (child, addr) = with_port_retry("nginx", || {
            let addr = free_addr();
            start(&binary, dir.path(), addr, upstreams).map(|child| (child, addr))
        });
        Nginx { child, addr, dir }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The error log so far.
    pub fn error_log(&self) -> String {
        process::read_log(&self.dir.path().join("error.log"))
    }

    /// The access log so far.
    pub fn access_log(&self) -> String {
        process::read_log(&self.dir.path().join("access.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master must take its worker down with it.
        process::terminate(&mut self.child);
    }
}

fn start(
    binary: &Path,
    dir: &Path,
    addr: SocketAddr,
    upstreams: &[SocketAddr],
) -> Result<Child, StartFailure> {
    let config = dir.join("nginx.conf");
    std::fs::write(&config, config_text(dir, addr, upstreams)).expect("write nginx.conf");
    let error_log = dir.join("error.log");
    let mut cmd = Command::new(binary);
    // -e: the log for startup errors, before the configuration names one
    // (the compiled-in default is under /var/log).
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&config)
        .arg("-e")
        .arg(&error_log);
    cmd.args(["-g", "daemon off;"]);
    let mut child = process::spawn_logged(&mut cmd, &dir.join("stderr.log"));
    let result = process::wait_listening(&mut child, &[addr], &error_log);
    result.map(|()| child)
}

fn config_text(dir: &Path, addr: SocketAddr, upstreams: &[SocketAddr]) -> String {
    let at = |name: &str| -> PathBuf { dir.join(name) };
    let mut c = String::new();
    let _ = writeln!(c, "worker_processes 1;\npid {};", at("nginx.pid").display());
    let _ = writeln!(c, "error_log {} info;", at("error.log").display());
    c.push_str("events { worker_connections 1024; }\nhttp {\n");
    let _ = writeln!(c, "  access_log {};", at("access.log").display());
    for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let _ = writeln!(c, "  {kind}_temp_path {};", at("tmp").join(kind).display());
    }
    c.push_str("  upstream backends {\n");
    for upstream in upstreams {
        let _ = writeln!(c, "    server {upstream};");
    }
    c.push_str("  }\n  server {\n");
    let _ = writeln!(c, "    listen {addr};");
    c.push_str(SERVER_BODY);
    c.push_str("  }\n}\n");
    c
}

/// The proxying rules of the one `server` block.
const SERVER_BODY: &str = "    client_max_body_size 0;
    client_body_timeout 1h;
    send_timeout 1h;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host $http_host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_connect_timeout 10s;
      proxy_send_timeout 1h;
      proxy_read_timeout 1h;
    }
";
