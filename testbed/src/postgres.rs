//! A throwaway PostgreSQL on loopback.
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::ports::{StartFailure, free_port, with_port_retry};
use crate::process;

/// The role (a superuser, trusted without a password) and the database
/// created at start.
const USER: &str = "berth";
const DATABASE: &str = "berth";
/// The system user the server runs as when the tests run as root: the
/// server refuses to run as root, and Debian's package creates this one.
const SERVER_USER: &str = "postgres";

/// A PostgreSQL server (Debian's `postgresql` package, version 15
/// preferred) with its data directory and unix socket in a temporary
/// directory, listening on `127.0.0.1` only, fsync off. Role `berth`
/// (superuser, no password: loopback connections are trusted) owns database
/// `berth`. [`stop`](Postgres::stop) or `Drop` stops it immediately and
/// removes the directory.
pub struct Postgres {
    bin: PathBuf,
    port: u16,
    /// `Some(user)` when the server runs as another user (tests run as root).
    run_as: Option<&'static str>,
    stopped: bool,
    /// Last: removed after the server stops.
    dir: TempDir,
}

impl Postgres {
    /// Initialises a cluster, starts it on a free port and creates the
    /// database.
    pub fn start() -> Postgres {
        let bin = server_bin_dir();
        let run_as = is_root().then_some(SERVER_USER);
        let dir = tempfile::Builder::new()
            .prefix("postgres-")
            .tempdir()
            .expect("temp dir");
        let mut pg = Postgres {
            bin,
            port: 0,
            run_as,
            stopped: false,
            dir,
        };
        pg.hand_over_dir();
        pg.init_cluster();
        let port = with_port_retry("postgres", || pg.start_on(free_port()));
        pg.port = port;
        let mut createdb = pg.client("createdb");
        createdb.arg(DATABASE);
        process::run(&mut createdb).unwrap_or_else(|e| panic!("createdb: {e}"));
        pg
    }

    /// Gives the directory to the server's user when that is not us.
    fn hand_over_dir(&self) {
        let Some(user) = self.run_as else { return };
        if process::run(Command::new("id").arg("-u").arg(user)).is_err() {
            process::missing(
                &format!("the `{user}` system user (PostgreSQL refuses to run as root)"),
                "apt-get install -y postgresql",
            );
        }
        let owner = format!("{user}:");
        process::run(
            Command::new("chown")
                .arg("-R")
                .arg(owner)
                .arg(self.dir.path()),
        )
        .unwrap_or_else(|e| panic!("chown the postgres directory: {e}"));
    }

    fn init_cluster(&self) {
        let mut initdb = self.server("initdb");
        initdb.arg("-D").arg(self.data_dir());
        initdb.args([
            "-U",
            USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        process::run(&mut initdb).unwrap_or_else(|e| panic!("initdb: {e}"));
    }

    fn start_on(&self, port: u16) -> Result<u16, StartFailure> {
        let options = format!(
            "-k {} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            self.dir.path().display()
        );
        let mut pg_ctl = self.server("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path());
        pg_ctl.args(["-w", "-t", "30", "-o", &options, "start"]);
        match process::run(&mut pg_ctl) {
            Ok(_) => Ok(port),
            Err(e) => Err(StartFailure::from_log(e, &self.log())),
        }
    }

    /// A server-side command, run as the server's user.
    fn server(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        // Not the caller's directory, which the server's user may not enter.
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// A client command (`createdb`, `psql`, ...) connected over TCP as the
    /// test role.
    fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(["-h", "127.0.0.1", "-U", USER, "-p", &self.port.to_string()]);
        cmd.env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// `postgres://berth@127.0.0.1:PORT/berth`.
    pub fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    /// The URL of another database on this server.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates another database (for tests that want one each) and returns
    /// its URL.
    pub fn create_database(&self, name: &str) -> String {
        let mut createdb = self.client("createdb");
        createdb.arg(name);
        process::run(&mut createdb).unwrap_or_else(|e| panic!("createdb {name}: {e}"));
        self.url_for(name)
    }

    /// Runs SQL with `psql` in database `berth`; returns its unaligned,
    /// tuples-only output. Panics when psql fails.
    pub fn psql(&self, sql: &str) -> String {
        let mut psql = self.client("psql");
        psql.args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            DATABASE,
            "-c",
            sql,
        ]);
        process::run(&mut psql).unwrap_or_else(|e| panic!("psql: {e}"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn user(&self) -> &str {
        USER
    }

    pub fn database(&self) -> &str {
        DATABASE
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        process::read_log(&self.log_path())
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`) and removes
    /// its directory.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let mut pg_ctl = self.server("pg_ctl");
        pg_ctl.arg("-D").arg(self.data_dir());
        pg_ctl.args(["-m", "immediate", "-w", "stop"]);
        if let Err(e) = process::run(&mut pg_ctl) {
            eprintln!("testbed: stopping postgres: {e}");
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Debian's server binaries (`initdb` and `pg_ctl` live outside the PATH):
/// version 15 first, else the newest installed, else the PATH.
fn server_bin_dir() -> PathBuf {
    let preferred = PathBuf::from("/usr/lib/postgresql/15/bin");
    if preferred.join("pg_ctl").is_file() {
        return preferred;
    }
    let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("pg_ctl").is_file())
        .collect();
    installed.sort();
    if let Some((_, bin)) = installed.pop() {
        return bin;
    }
    match process::find_binary("pg_ctl", &[]) {
        Some(pg_ctl) if pg_ctl.with_file_name("initdb").is_file() => {
            pg_ctl.parent().expect("bin dir").to_path_buf()
        }
        _ => process::missing(
            "the PostgreSQL server (initdb, pg_ctl; Debian package `postgresql`, version 15)",
            "apt-get install -y postgresql",
        ),
    }
}
