//! The `registry` binary: `serve` (the default), `gc`, `check`,
//! `retention`, `migrate-blobs` and `migrate-index`. It reads the
//! configuration, opens the store it names,
//! and wires the core, the collector and the HTTP layer together.

mod check;
mod gc;
mod log_sink;
mod migrate;
mod migrate_index;
mod progress;
mod remote;
mod retention;
mod serve;
mod store;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use registry_gc::UntaggedRule;
use tracing_subscriber::EnvFilter;

use registry_server::config::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "registry",
    version,
    about = "Berth: an OCI distribution registry with online garbage collection"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the registry API (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Collect garbage: through a running server's admin API, or with
    /// --offline directly on a stopped store.
    Gc(GcArgs),
    /// Run the tag retention rules now, through a running server's admin
    /// API (with --dry-run: list what they would delete).
    Retention(RetentionArgs),
    /// Check that the index and the blob store agree (on a stopped store).
    /// Exit status: 0 clean, 1 problems found and all repaired, 2 problems
    /// remain.
    Check(CheckArgs),
    /// Copy the blobs of a filesystem store into an object store, verifying
    /// each, so that `serve --blob-store` can use the bucket with the same
    /// data directory. Idempotent. Exit status: 0 every blob is in the
    /// bucket, 2 some (or all) could not be copied.
    MigrateBlobs(migrate::MigrateArgs),
    /// Copy a stopped single-node installation's index into an empty
    /// PostgreSQL database (then check it), so that nodes started with
    /// `--index` on it serve the same registry. Exit status: 0 copied and
    /// clean, 2 the copy's recount found problems.
    MigrateIndex(migrate_index::MigrateIndexArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Fix what can be fixed safely: recount, delete files no row names,
    /// quarantine corrupt blobs, forget blobs whose bytes are gone (and the
    /// manifests that needed them, which are listed).
    #[arg(long)]
    pub repair: bool,
    /// Also re-hash every blob (reads everything).
    #[arg(long)]
    pub verify_content: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Default)]
pub struct StoreArgs {
    /// TOML configuration file.
    #[arg(long, env = "REGISTRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for blobs, uploads and the index (default ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep blobs in an S3-compatible object store, `s3://BUCKET[/PREFIX]`
    /// (endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION; AWS_ALLOW_HTTP=true for plain
    /// HTTP). Default: the data directory.
    #[arg(long)]
    pub blob_store: Option<String>,
    /// Keep the index in PostgreSQL, `postgres://USER@HOST:PORT/DB`, so that
    /// several nodes can serve one registry. Default: the embedded index
    /// file in the data directory.
    #[arg(long)]
    pub index: Option<String>,
}

#[derive(Args, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on (default 127.0.0.1:5000).
    #[arg(long)]
    pub addr: Option<std::net::SocketAddr>,
    /// Serve /metrics (and /healthz, /readyz) on this address instead.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// With TLS on --addr, also serve plain HTTP on this address (loopback,
    /// or behind a proxy that terminates TLS).
    #[arg(long)]
    pub plain_addr: Option<std::net::SocketAddr>,
    /// Require HTTP Basic credentials from this htpasswd file (bcrypt,
    /// `htpasswd -B`); every listed user may pull, push and delete.
    #[arg(long)]
    pub htpasswd: Option<PathBuf>,
    /// Serve TLS with this PEM certificate chain (with --tls-key).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// GC grace period: blobs uploaded, mounted or confirmed more recently
    /// are never collected (default 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub gc_grace: Option<Duration>,
    /// How long a push waits for a GC fence before a retryable 503 (default 500ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub gc_fence_wait: Option<Duration>,
    /// Upload sessions idle this long are purged by GC (default 24h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub upload_max_age: Option<Duration>,
    /// GC schedule: a 5-field cron expression (UTC) or @hourly, @daily,
    /// @midnight, @weekly, @monthly, @yearly; "off" disables.
    #[arg(long)]
    pub gc_schedule: Option<String>,
    /// Collect untagged manifests in repositories matching GLOB once they
    /// have been untagged for AGE, e.g. `ci/**=7d` (repeatable; replaces
    /// the configured rules).
    #[arg(long = "gc-untagged", value_name = "GLOB=AGE", value_parser = parse_untagged)]
    pub gc_untagged: Vec<UntaggedRule>,
    /// Collect referrers whose subject is gone (default true).
    #[arg(long)]
    pub gc_orphaned_referrers: Option<bool>,
    /// Shift the registry's clock forward (tests: a schedule fires without
    /// waiting for the minute).
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    pub clock_skew: Option<Duration>,
    /// Answer blob GETs with a redirect to a presigned object store URL.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub blob_redirect: Option<bool>,
    /// Refuse pushes (507) that would leave less than this many bytes free
    /// on a filesystem the store writes to (default 1 GiB, or 5% of the
    /// filesystem if less; 0 turns the mark off).
    #[arg(long)]
    pub min_free_bytes: Option<u64>,
}

fn parse_untagged(s: &str) -> Result<UntaggedRule, String> {
    let (glob, age) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?}: expected GLOB=AGE, e.g. ci/**=7d"))?;
    Ok(UntaggedRule {
        repositories: glob.to_owned(),
        older_than: humantime::parse_duration(age).map_err(|e| format!("{age:?}: {e}"))?,
    })
}

/// How to reach a running server's admin API.
#[derive(Args)]
pub struct RemoteArgs {
    /// The running server.
    #[arg(long, default_value = "http://127.0.0.1:5000", env = "REGISTRY_URL")]
    pub url: String,
    /// An administrator's user name, when the server asks for credentials.
    #[arg(long, env = "REGISTRY_USER")]
    pub user: Option<String>,
    /// A file holding the password of --user (else REGISTRY_PASSWORD, else a
    /// prompt on a terminal).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// PEM certificate(s) to trust for the server's TLS (a self-signed or
    /// private CA certificate).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Args)]
pub struct GcArgs {
    /// Work on a stopped store instead of asking a running server.
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also collect untagged manifests in every repository.
    #[arg(long)]
    pub delete_untagged: bool,
    /// Grace period for this run.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub grace: Option<Duration>,
    /// Print the full report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RetentionArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// List what the rules would delete, and the bytes that would free;
    /// delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the full report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A line that cannot be written is dropped and counted, never reported
    // on the failing stderr itself (see `log_sink`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(log_sink::LogSink)
        .log_internal_errors(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Tells glibc's allocator to keep memory it frees for reuse. By default
/// it maps allocations over a threshold (128 KiB, raised as it sees them
/// freed) straight from the kernel and gives the heap's free top back
/// past twice that; request bodies arrive in buffers of a few hundred KiB
/// that are freed as soon as they are written, so each new buffer was
/// memory the kernel had to fault in and zero again: ~87,000 page faults
/// a second, all in the socket read, while two chunked 64 MiB pushes ran.
/// With these limits the server takes a few hundred over a whole run, and
/// chunked pushes ran 9% faster (monolithic ones the same); the price is
/// that the heap stays at its high-water mark, up to 128 MiB of free top
/// per arena, instead of shrinking back between bursts. Two `mallopt`
/// calls rather than another allocator crate: that would add a C build,
/// and its purge timers hand pages back the same way.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters, and this runs first
    // in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> anyhow::Result<()> {
    keep_freed_memory();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli
        .command
        .unwrap_or_else(|| Command::Serve(Box::default()))
    {
        Command::Serve(args) => runtime.block_on(serve::serve(*args)),
        Command::Check(args) => {
            let code = runtime.block_on(check::check(args))?;
            std::process::exit(code);
        }
        Command::MigrateBlobs(args) => match runtime.block_on(migrate::migrate(args)) {
            Ok(code) => std::process::exit(code),
            // Nothing (more) could be copied: the same status as a failed blob.
            Err(e) => {
                eprintln!("Error: {e:#}");
                std::process::exit(2);
            }
        },
        Command::MigrateIndex(args) => {
            let code = runtime.block_on(migrate_index::migrate_index(args))?;
            std::process::exit(code);
        }
        Command::Gc(args) => {
            if !runtime.block_on(gc::gc(args))? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Retention(args) => runtime.block_on(retention::retention(args)),
    }
}
