//! The `registry` binary: `serve` (the default) and `gc`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use registry_core::check::{CheckOptions, Progress};
use registry_core::observe::NoObserver;
use registry_gc::{Collector, RunReport, RunRequest, RunState, UntaggedRule};
use registry_http::activity::{ActivityLog, GcEvents};
use registry_http::auth::Auth;
use registry_http::config::{Config, LogFormat, Overrides};
use registry_http::human_bytes;
use registry_http::metrics::Metrics;
use registry_http::server::{self, App, Listener};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "registry",
    version,
    about = "Berth: an OCI distribution registry with online garbage collection"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry API (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Collect garbage: through a running server's admin API, or with
    /// --offline directly on a stopped store.
    Gc(GcArgs),
    /// Check that the index and the blob store agree (on a stopped store).
    /// Exit status: 0 clean, 1 problems found and all repaired, 2 problems
    /// remain.
    Check(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Fix what can be fixed safely: recount, delete files no row names,
    /// quarantine corrupt blobs, forget blobs whose bytes are gone (and the
    /// manifests that needed them, which are listed).
    #[arg(long)]
    repair: bool,
    /// Also re-hash every blob (reads everything).
    #[arg(long)]
    verify_content: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Default)]
struct StoreArgs {
    /// TOML configuration file.
    #[arg(long, env = "REGISTRY_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for blobs, uploads and the index (default ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Default)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on (default 127.0.0.1:5000).
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
    /// Serve /metrics (and /healthz, /readyz) on this address instead.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// With TLS on --addr, also serve plain HTTP on this address (loopback,
    /// or behind a proxy that terminates TLS).
    #[arg(long)]
    plain_addr: Option<std::net::SocketAddr>,
    /// Require HTTP Basic credentials from this htpasswd file (bcrypt,
    /// `htpasswd -B`); every listed user may pull, push and delete.
    #[arg(long)]
    htpasswd: Option<PathBuf>,
    /// Serve TLS with this PEM certificate chain (with --tls-key).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// GC grace period: blobs uploaded, mounted or confirmed more recently
    /// are never collected (default 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    gc_grace: Option<Duration>,
    /// How long a push waits for a GC fence before a retryable 503 (default 500ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    gc_fence_wait: Option<Duration>,
    /// Upload sessions idle this long are purged by GC (default 24h).
    #[arg(long, value_parser = humantime::parse_duration)]
    upload_max_age: Option<Duration>,
    /// GC schedule: a 5-field cron expression (UTC) or @hourly, @daily,
    /// @midnight, @weekly, @monthly, @yearly; "off" disables.
    #[arg(long)]
    gc_schedule: Option<String>,
    /// Collect untagged manifests in repositories matching GLOB once they
    /// have been untagged for AGE, e.g. `ci/**=7d` (repeatable; replaces
    /// the configured rules).
    #[arg(long = "gc-untagged", value_name = "GLOB=AGE", value_parser = parse_untagged)]
    gc_untagged: Vec<UntaggedRule>,
    /// Collect referrers whose subject is gone (default true).
    #[arg(long)]
    gc_orphaned_referrers: Option<bool>,
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

#[derive(Args)]
struct GcArgs {
    /// Work on a stopped store instead of asking a running server.
    #[arg(long)]
    offline: bool,
    /// The running server (without --offline).
    #[arg(long, default_value = "http://127.0.0.1:5000", env = "REGISTRY_URL")]
    url: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also collect untagged manifests in every repository.
    #[arg(long)]
    delete_untagged: bool,
    /// Grace period for this run.
    #[arg(long, value_parser = humantime::parse_duration)]
    grace: Option<Duration>,
    /// Print the full report as JSON.
    #[arg(long)]
    json: bool,
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        addr: args.addr,
        data_dir: args.store.data_dir,
        gc_grace: args.gc_grace,
        gc_fence_wait: args.gc_fence_wait,
        upload_max_age: args.upload_max_age,
        gc_schedule: args.gc_schedule.map(|s| (s.trim() != "off").then_some(s)),
        gc_untagged: (!args.gc_untagged.is_empty()).then_some(args.gc_untagged),
        gc_orphaned_referrers: args.gc_orphaned_referrers,
        metrics_addr: args.metrics_addr,
        plain_addr: args.plain_addr,
        htpasswd: args.htpasswd,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
    };
    let config = Config::load(args.store.config.as_deref(), &overrides)?;
    init_logging(config.log_format);
    let metrics = Arc::new(Metrics::new());
    let store = server::open_store(&config, metrics.clone())
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    store.recover().await?;
    let activity = Arc::new(ActivityLog::new(
        store.index.clone(),
        config.activity_retention,
    ));
    let events = GcEvents(vec![metrics.clone(), activity.clone()]);
    let collector = Collector::observed(
        store.registry.clone(),
        config.gc.clone(),
        true,
        Some(Arc::new(events)),
    )
    .await?;
    // A schedule set through the admin API outlives restarts and wins over
    // the config file; one given on the command line wins over both.
    if let Some(s) = &overrides.gc_schedule {
        collector.set_schedule(s.as_deref()).await?;
    }
    collector.spawn_scheduler();
    collector.spawn_housekeeping();
    let auth =
        Arc::new(Auth::new(&config.auth, &config.data_dir).context("setting up authentication")?);
    let tls = config
        .tls
        .as_ref()
        .map(registry_http::tls::acceptor)
        .transpose()
        .context("setting up TLS")?;
    let bind = |addr: std::net::SocketAddr, what: &'static str| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr} for {what}"))
    };
    let listener = bind(config.addr, "the API").await?;
    let metrics_listener = match config.metrics_addr {
        Some(a) => Some(bind(a, "metrics").await?),
        None => None,
    };
    let plain_listener = match (config.plain_addr, &tls) {
        (Some(a), Some(_)) => Some(bind(a, "plain HTTP").await?),
        (Some(_), None) => {
            anyhow::bail!("plain_addr (--plain-addr) is only for use beside TLS on addr")
        }
        _ => None,
    };
    // The first lines on stdout say where we listen (scripts and tests read
    // them when they ask for port 0); everything else goes to the log.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "registry listening on {scheme}://{}",
        listener.local_addr()?
    );
    if let Some(l) = &metrics_listener {
        println!("metrics listening on http://{}", l.local_addr()?);
    }
    if let Some(l) = &plain_listener {
        println!("plain listening on http://{}", l.local_addr()?);
    }
    tracing::info!(
        addr = %listener.local_addr()?,
        tls = tls.is_some(),
        auth = ?auth.mode(),
        data_dir = %config.data_dir.display(),
        "serving"
    );
    let app = Arc::new(App::new(
        store.registry.clone(),
        collector,
        metrics,
        activity,
        auth,
        &config,
    ));
    let shutdown = CancellationToken::new();
    let main_kind = Listener::Main {
        metrics: metrics_listener.is_none(),
    };
    let serve = |l, kind, tls| {
        tokio::spawn(server::serve(
            l,
            app.clone(),
            kind,
            tls,
            shutdown.clone(),
            config.shutdown_timeout,
        ))
    };
    let mut tasks = vec![serve(listener, main_kind, tls)];
    if let Some(l) = metrics_listener {
        tasks.push(serve(l, Listener::Metrics, None));
    }
    if let Some(l) = plain_listener {
        tasks.push(serve(l, main_kind, None));
    }
    server::shutdown_signal().await;
    shutdown.cancel();
    for t in tasks {
        t.await??;
    }
    store.index.close();
    tracing::info!("stopped");
    Ok(())
}

fn request(args: &GcArgs) -> RunRequest {
    RunRequest {
        dry_run: args.dry_run,
        grace: args.grace,
        delete_untagged: args.delete_untagged,
        ..RunRequest::default()
    }
}

fn print_report(r: &RunReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(r).expect("report"));
        return;
    }
    let verb = if r.dry_run { "would free" } else { "freed" };
    println!(
        "garbage collection run {}{}: {:?} in {} ms",
        r.id,
        if r.dry_run { " (dry run)" } else { "" },
        r.state,
        r.duration_ms
    );
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    println!(
        "  blobs:     {} ({verb} {})",
        r.blobs_deleted,
        human_bytes(r.bytes_freed)
    );
    println!("  manifests: {}", r.manifests_deleted);
    println!("  uploads:   {}", r.uploads_deleted);
    if !r.dry_run {
        println!(
            "  fence:     {} time(s), {:.1} ms in all, {:.1} ms at most; pushes waited {}, refused {}",
            r.fences, r.fence_total_ms, r.fence_max_ms, r.writes_waited, r.writes_refused
        );
    } else {
        for m in &r.deleted.manifests {
            println!(
                "  manifest {}@{} ({})",
                m.repository,
                m.digest,
                human_bytes(m.size)
            );
        }
        for b in &r.deleted.blobs {
            println!("  blob {} ({})", b.digest, human_bytes(b.size));
        }
        for u in &r.deleted.uploads {
            println!("  upload {u}");
        }
    }
}

/// Loads the configuration and opens a stopped store (for `gc --offline`
/// and `check`), after the same start-up recovery a server runs.
async fn open_stopped_store(args: &StoreArgs) -> anyhow::Result<(Config, server::Store)> {
    let overrides = Overrides {
        data_dir: args.data_dir.clone(),
        ..Overrides::default()
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    init_logging(config.log_format);
    let store = server::open_store(&config, Arc::new(NoObserver)).with_context(|| {
        format!(
            "opening the store in {} (is a server still running on it?)",
            config.data_dir.display()
        )
    })?;
    store.recover().await?;
    Ok((config, store))
}

async fn gc(args: GcArgs) -> anyhow::Result<bool> {
    let report = if args.offline {
        let (config, store) = open_stopped_store(&args.store).await?;
        let collector = Collector::new(store.registry.clone(), config.gc.clone(), false).await?;
        let id = collector.start(request(&args), "offline", "offline")?;
        let report = follow_offline_run(&collector, id).await?;
        store.index.close();
        report
    } else {
        remote_gc(&args).await?
    };
    print_report(&report, args.json);
    Ok(report.state == RunState::Succeeded)
}

/// Follows an offline run: a spinner with the phase and counts on a
/// terminal, a log line a second otherwise.
async fn follow_offline_run(collector: &Collector, id: u64) -> anyhow::Result<RunReport> {
    let spinner = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.enable_steady_tick(Duration::from_millis(120));
        s
    });
    let started = std::time::Instant::now();
    let mut last_log = std::time::Instant::now();
    loop {
        let r = collector.run(id).await?.context("the run disappeared")?;
        let line = format!(
            "{}: {} blobs ({}), {} manifests, {} uploads",
            r.phase,
            r.blobs_deleted,
            human_bytes(r.bytes_freed),
            r.manifests_deleted,
            r.uploads_deleted
        );
        if r.is_finished() {
            if let Some(s) = &spinner {
                s.finish_and_clear();
            }
            return Ok(r);
        }
        match &spinner {
            Some(s) => s.set_message(line),
            None if last_log.elapsed() >= Duration::from_secs(1) => {
                let rate = r.blobs_deleted as f64 / started.elapsed().as_secs_f64().max(0.001);
                tracing::info!(progress = %line, rate = format!("{rate:.0} blobs/s"), "gc");
                last_log = std::time::Instant::now();
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a run on a running server and follows it to the end.
async fn remote_gc(args: &GcArgs) -> anyhow::Result<RunReport> {
    let base = args.url.trim_end_matches('/');
    let http = reqwest::Client::new();
    let body = serde_json::json!({
        "dry_run": args.dry_run,
        "delete_untagged": args.delete_untagged,
        "grace": args.grace.map(|g| humantime::format_duration(g).to_string()),
    });
    let res = http
        .post(format!("{base}/admin/gc"))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("reaching {base}"))?;
    let status = res.status();
    let answer: serde_json::Value = res.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{base} answered {status}: {answer}");
    }
    let id = answer["id"].as_u64().context("no run id in the answer")?;
    loop {
        let r: RunReport = http
            .get(format!("{base}/admin/gc/runs/{id}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if r.is_finished() {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Progress for long commands: a bar on a terminal, log lines otherwise.
struct Reporter {
    bar: Option<indicatif::ProgressBar>,
    done: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

impl Reporter {
    fn new() -> Reporter {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:>20} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            bar
        });
        Reporter {
            bar,
            done: 0.into(),
            started: std::time::Instant::now(),
        }
    }

    fn event(&self, p: Progress<'_>) {
        use std::sync::atomic::Ordering::Relaxed;
        match p {
            Progress::Phase { name, total } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(name.to_owned());
                    bar.set_length(total.unwrap_or(0));
                    bar.set_position(0);
                } else {
                    tracing::info!(phase = name, total, "check");
                }
                self.done.store(0, Relaxed);
            }
            Progress::Advance(n) => {
                let done = self.done.fetch_add(n, Relaxed) + n;
                if let Some(bar) = &self.bar {
                    bar.inc(n);
                } else if done.is_multiple_of(10_000) {
                    let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
                    tracing::info!(done, rate = format!("{rate:.0}/s"), "check progress");
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

async fn check(args: CheckArgs) -> anyhow::Result<i32> {
    let (_, store) = open_stopped_store(&args.store).await?;
    let reporter = Reporter::new();
    let options = CheckOptions {
        repair: args.repair,
        verify_content: args.verify_content,
    };
    let report =
        registry_core::check::check(&store.registry, options, &|p| reporter.event(p)).await?;
    reporter.finish();
    store.index.close();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "checked {} blobs ({}), {} files",
            report.blobs_checked,
            human_bytes(report.bytes_checked),
            report.files_checked
        );
        for p in &report.missing {
            println!("missing file:   {} ({} bytes recorded)", p.digest, p.size);
        }
        for p in &report.wrong_size {
            println!(
                "wrong size:     {} ({} recorded, {})",
                p.digest, p.size, p.found
            );
        }
        for p in &report.corrupt {
            println!(
                "corrupt:        {} (content hashes to {})",
                p.digest, p.found
            );
        }
        for (d, size) in &report.orphan_files {
            println!("orphan file:    {d} ({size} bytes, no index row)");
        }
        for p in &report.count_problems {
            println!("count:          {p}");
        }
        for m in &report.removed_manifests {
            println!(
                "removed image:  {}@{} (push it again to restore it)",
                m.repository, m.digest
            );
        }
        for p in &report.remaining_problems {
            println!("NOT REPAIRED:   {p}");
        }
        println!(
            "{}",
            match (report.clean(), report.repaired) {
                (true, _) => "clean",
                (false, true) if report.remaining_problems.is_empty() =>
                    "problems found and repaired",
                (false, true) => "problems remain",
                (false, false) => "problems found (run with --repair to fix what can be fixed)",
            }
        );
    }
    Ok(
        match (
            report.clean(),
            report.repaired && report.remaining_problems.is_empty(),
        ) {
            (true, _) => 0,
            (false, true) => 1,
            (false, false) => 2,
        },
    )
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli
        .command
        .unwrap_or_else(|| Command::Serve(Box::default()))
    {
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Check(args) => {
            let code = runtime.block_on(check(args))?;
            std::process::exit(code);
        }
        Command::Gc(args) => {
            if !runtime.block_on(gc(args))? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
