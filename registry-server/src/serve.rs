//! `registry serve`: opens the store, starts the collector, binds the
//! listeners and serves until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use registry_core::Clock;
use registry_gc::{Collector, Retainer};
use registry_hooks::Hooks;
use registry_http::activity::GcEvents;
use registry_http::auth::Auth;
use registry_http::metrics::Metrics;
use registry_http::server::{self, App, AppOptions, Listener};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::ServeArgs;
use crate::config::{Config, Overrides};
use crate::log_sink;
use crate::store::{Store, open_store};

fn overrides(args: ServeArgs) -> (Option<std::path::PathBuf>, Overrides) {
    let o = Overrides {
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
        blob_store: args.store.blob_store,
        index: args.store.index,
        blob_redirect: args.blob_redirect,
        min_free_bytes: args.min_free_bytes,
    };
    (args.store.config, o)
}

/// The listeners of a server: the API, and optionally metrics and plain
/// HTTP beside TLS.
struct Listeners {
    api: TcpListener,
    metrics: Option<TcpListener>,
    plain: Option<TcpListener>,
}

async fn bind(addr: SocketAddr, what: &'static str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} for {what}"))
}

async fn bind_all(config: &Config, tls: bool) -> anyhow::Result<Listeners> {
    let api = bind(config.addr, "the API").await?;
    let metrics = match config.metrics_addr {
        Some(a) => Some(bind(a, "metrics").await?),
        None => None,
    };
    let plain = match (config.plain_addr, tls) {
        (Some(a), true) => Some(bind(a, "plain HTTP").await?),
        (Some(_), false) => {
            anyhow::bail!("plain_addr (--plain-addr) is only for use beside TLS on addr")
        }
        _ => None,
    };
    Ok(Listeners {
        api,
        metrics,
        plain,
    })
}

/// The first lines on stdout say where we listen (scripts and tests read
/// them when they ask for port 0); everything else goes to the log. A
/// stdout that cannot take them does not stop the server.
fn announce(l: &Listeners, tls: bool) -> anyhow::Result<()> {
    let scheme = if tls { "https" } else { "http" };
    log_sink::announce(&format!(
        "registry listening on {scheme}://{}",
        l.api.local_addr()?
    ));
    if let Some(m) = &l.metrics {
        log_sink::announce(&format!("metrics listening on http://{}", m.local_addr()?));
    }
    if let Some(p) = &l.plain {
        log_sink::announce(&format!("plain listening on http://{}", p.local_addr()?));
    }
    Ok(())
}

/// The collector, with its schedule and housekeeping running.
async fn start_collector(
    store: &Store,
    config: &Config,
    metrics: &Arc<Metrics>,
    schedule: &Option<Option<String>>,
) -> anyhow::Result<Arc<Collector>> {
    let events = GcEvents(vec![metrics.clone()]);
    let collector = Collector::observed(
        store.registry.clone(),
        config.gc.clone(),
        true,
        Some(Arc::new(events)),
    )
    .await?;
    // A schedule set through the admin API outlives restarts and wins over
    // the config file; one given on the command line wins over both.
    if let Some(s) = schedule {
        collector.set_schedule(s.as_deref()).await?;
    }
    collector.spawn_scheduler();
    collector.spawn_housekeeping();
    Ok(collector)
}

/// The webhook deliverers of the configured endpoints, started.
async fn start_webhooks(
    store: &Store,
    config: &Config,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Arc<Hooks>> {
    let endpoints = registry_hooks::compile_all(&config.webhooks)?;
    let hooks = Hooks::start(store.registry.clone(), endpoints, metrics.clone())
        .await
        .context("starting the webhooks")?;
    Ok(hooks)
}

/// The retention runner, with its schedule running.
async fn start_retainer(store: &Store, config: &Config) -> anyhow::Result<Arc<Retainer>> {
    let configured = config.retention.schedule.clone();
    let retainer = Retainer::new(store.registry.clone(), configured.clone()).await?;
    retainer.spawn_scheduler(configured);
    Ok(retainer)
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let clock_skew = args.clock_skew;
    let (file, overrides) = overrides(args);
    let config = Config::load(file.as_deref(), &overrides)?;
    crate::init_logging(config.log_format);
    let clock = Clock::system();
    if let Some(skew) = clock_skew {
        clock.advance(skew);
    }
    let metrics = Arc::new(Metrics::new());
    metrics
        .registry
        .register(Box::new(log_sink::DROPPED.clone()))
        .context("registering the dropped log lines counter")?;
    let store = open_store(&config, clock.clone(), metrics.clone())
        .await
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    store.recover().await?;
    let collector = start_collector(&store, &config, &metrics, &overrides.gc_schedule).await?;
    let retainer = start_retainer(&store, &config).await?;
    let hooks = start_webhooks(&store, &config, &metrics).await?;
    // A cluster's nodes sign tokens and UI sessions with keys they share.
    let (token_key, ui_key) = match store.shared {
        true => (
            Some(store.registry.shared_secret("token").await?),
            Some(store.registry.shared_secret("ui-session").await?),
        ),
        false => (None, None),
    };
    let auth = Arc::new(
        Auth::new(&config.auth, &config.data_dir, clock, token_key)
            .context("setting up authentication")?,
    );
    let tls = config
        .tls
        .as_ref()
        .map(registry_http::tls::acceptor)
        .transpose()
        .context("setting up TLS")?;
    let listeners = bind_all(&config, tls.is_some()).await?;
    announce(&listeners, tls.is_some())?;
    tracing::info!(
        addr = %listeners.api.local_addr()?,
        tls = tls.is_some(),
        auth = ?auth.mode(),
        data_dir = %config.data_dir.display(),
        "serving"
    );
    let options = AppOptions {
        automatic_mount: config.automatic_mount,
        ui: config.ui,
        secure_cookies: tls.is_some(),
        blob_redirect: config.storage.blob_redirect,
        ui_key,
    };
    let app = App::new(
        store.registry.clone(),
        collector,
        retainer,
        metrics,
        auth,
        options,
    );
    let app = Arc::new(app.with_webhooks(hooks.clone()));
    run(app, listeners, tls, &config).await?;
    hooks.stop().await;
    if let Err(e) = store.registry.flush_pulls().await {
        tracing::warn!(error = %e, "could not record the last pulls");
    }
    store.registry.close();
    tracing::info!("stopped");
    Ok(())
}

/// Serves every listener until a signal, then shuts down gracefully.
async fn run(
    app: Arc<App>,
    l: Listeners,
    tls: Option<TlsAcceptor>,
    config: &Config,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let main_kind = Listener::Main {
        metrics: l.metrics.is_none(),
    };
    let spawn = |listener, kind, tls| {
        tokio::spawn(server::serve(
            listener,
            app.clone(),
            kind,
            tls,
            shutdown.clone(),
            config.shutdown_timeout,
        ))
    };
    let mut tasks = vec![spawn(l.api, main_kind, tls)];
    if let Some(m) = l.metrics {
        tasks.push(spawn(m, Listener::Metrics, None));
    }
    if let Some(p) = l.plain {
        tasks.push(spawn(p, main_kind, None));
    }
    server::shutdown_signal().await;
    shutdown.cancel();
    for t in tasks {
        t.await??;
    }
    Ok(())
}
