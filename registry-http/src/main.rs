//! The `registry` binary.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use registry_http::config::{Config, LogFormat, Overrides};
use registry_http::server::{self, App};
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
    Serve(ServeArgs),
}

#[derive(Args, Default)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "REGISTRY_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:5000).
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
    /// Directory for blobs, uploads and the index (default ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        addr: args.addr,
        data_dir: args.data_dir,
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    init_logging(config.log_format);
    let store = server::open_store(&config)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    store.recover().await?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding {}", config.addr))?;
    let addr = listener.local_addr()?;
    // The first line on stdout says where we listen (scripts and tests read
    // it when they ask for port 0); everything else goes to the log.
    println!("registry listening on http://{addr}");
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "serving");
    let app = Arc::new(App::new(store.registry.clone(), &config));
    server::serve(
        listener,
        app,
        server::shutdown_signal(),
        config.shutdown_timeout,
    )
    .await?;
    store.index.close();
    tracing::info!("stopped");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => runtime.block_on(serve(args)),
    }
}
