//! Opening the store a configuration names: the blob store, the index,
//! the node's shared state, and the [`Registry`] over them.

use std::sync::Arc;

use anyhow::Context;
use registry_core::blob::{BlobStore, FsBlobStore};
use registry_core::coord::{Coordination, InProcess, Shared};
use registry_core::db::Db;
use registry_core::durable;
use registry_core::index::Index;
use registry_core::model;
use registry_core::observe::{NoObserver, Observer};
use registry_core::registry::Recovery;
use registry_core::registry::policies::TagRules;
use registry_core::{Clock, Limits, Options, Registry};
use registry_pg::{PgBackend, PgOptions};
use registry_s3::{Location, S3BlobStore, S3Options};

use crate::StoreArgs;
use crate::config::{Config, Overrides};

/// The opened store.
pub struct Store {
    pub registry: Arc<Registry>,
    /// Whether the index is shared by several nodes (PostgreSQL).
    pub shared: bool,
    /// The filesystem blob store, if blobs live in the data directory (it
    /// may hold an older release's trash).
    fs: Option<Arc<FsBlobStore>>,
}

/// A blob store, and the same as a filesystem store when it is one.
type Blobs = (Arc<dyn BlobStore>, Option<Arc<FsBlobStore>>);

/// The blob store a configuration names: an object store, or the data
/// directory.
fn open_blobs(config: &Config, observer: Arc<dyn Observer>) -> anyhow::Result<Blobs> {
    let Some(url) = &config.storage.blob_store else {
        let fs = Arc::new(FsBlobStore::open(&config.data_dir)?);
        return Ok((fs.clone(), Some(fs)));
    };
    let location: Location = url.parse()?;
    let options = S3Options {
        part_size: usize::try_from(config.storage.part_size)?,
        request_timeout: config.storage.request_timeout,
        connect_timeout: config.storage.connect_timeout,
        ..S3Options::default()
    };
    let s3 = S3BlobStore::from_env(location, options, observer)
        .with_context(|| format!("opening the object store {url}"))?;
    Ok((Arc::new(s3), None))
}

/// The index a configuration names, with the coordination that goes with
/// it: the embedded file and this process's memory, or PostgreSQL and the
/// index itself (several nodes).
async fn open_index(
    config: &Config,
    clock: &Clock,
    observer: Arc<dyn Observer>,
) -> anyhow::Result<(Index, Arc<dyn Coordination>)> {
    let Some(url) = &config.storage.index else {
        let index = Index::open_redb_with(
            &config.index_path(),
            usize::try_from(config.limits.index_cache_bytes).unwrap_or(usize::MAX),
            clock.clone(),
            observer.clone(),
        )?;
        let node = InProcess::new(config.gc.fence_wait, clock.clone(), observer);
        return Ok((index, Arc::new(node)));
    };
    let options = PgOptions {
        pool_size: config.storage.index_pool_size,
        ..PgOptions::default()
    };
    let backend = PgBackend::connect(url, model::TABLES, clock.clone(), options)
        .await
        .with_context(|| format!("opening the index database {}", redacted(url)))?
        .with_observer(observer.clone());
    let db = Db::new(Arc::new(backend), clock.clone());
    let node = Shared::new(db.clone(), clock, observer);
    Ok((Index::new(db), Arc::new(node)))
}

/// A database URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) if at > scheme.len() + 3 => {
            let user = rest[..at - scheme.len() - 3]
                .split(':')
                .next()
                .unwrap_or("");
            format!("{scheme}://{user}@{}", &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Opens the blob store and the index a configuration names, dating
/// everything by `clock` and reporting commits and fences to `observer`.
pub async fn open_store(
    config: &Config,
    clock: Clock,
    observer: Arc<dyn Observer>,
) -> anyhow::Result<Store> {
    durable::ensure_dir(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let (blobs, fs) = open_blobs(config, observer.clone())?;
    let (index, node) = open_index(config, &clock, observer).await?;
    // The blob store's directories and the index file are entries of the
    // data directory: every fsync made to them afterwards keeps its promise
    // across a power cut only once these names are durable.
    durable::fsync_dir(&config.data_dir)
        .with_context(|| format!("syncing {}", config.data_dir.display()))?;
    let options = Options {
        limits: Limits {
            max_manifest_bytes: config.limits.max_manifest_bytes,
            max_blob_bytes: match config.limits.max_blob_bytes {
                0 => u64::MAX,
                n => n,
            },
            min_free_bytes: config.limits.min_free_bytes,
            inline_blob_bytes: config.limits.inline_blob_bytes,
        },
        link_foreign_blobs: config.auth.mode == registry_http::auth::Mode::None,
        activity_retention: config.activity_retention,
    };
    let rules = TagRules {
        immutable: config.immutable.clone(),
        retention: config.retention.rules.clone(),
    };
    let registry = Registry::new(index, blobs, node, options)
        .with_tag_rules(rules)
        .context("the immutable-tag and retention rules")?;
    let registry = Arc::new(registry);
    Ok(Store {
        registry,
        shared: config.storage.index.is_some(),
        fs,
    })
}

impl Store {
    /// Repairs what a crash can leave behind before the first request.
    pub async fn recover(&self) -> anyhow::Result<()> {
        let mut r: Recovery = self.registry.recover().await?;
        if let Some(fs) = &self.fs {
            self.registry.recover_legacy_trash(fs, &mut r).await?;
        }
        if r != Recovery::default() {
            tracing::warn!(
                sessions_dropped = r.sessions_dropped,
                files_removed = r.files_removed,
                blobs_restored = r.blobs_restored,
                trash_emptied = r.trash_emptied,
                "recovered state left by an unclean stop"
            );
        }
        Ok(())
    }
}

/// Loads the configuration and opens a stopped store (for `gc --offline`
/// and `check`), after the same start-up recovery a server runs.
pub async fn open_stopped_store(args: &StoreArgs) -> anyhow::Result<(Config, Store)> {
    let overrides = Overrides {
        data_dir: args.data_dir.clone(),
        blob_store: args.blob_store.clone(),
        index: args.index.clone(),
        ..Overrides::default()
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    crate::init_logging(config.log_format);
    let store = open_store(&config, Clock::system(), Arc::new(NoObserver))
        .await
        .with_context(|| {
            format!(
                "opening the store in {} (is a server still running on it?)",
                config.data_dir.display()
            )
        })?;
    store.recover().await?;
    Ok((config, store))
}
