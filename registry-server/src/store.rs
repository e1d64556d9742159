//! Opening the store a configuration names: the blob store, the index,
//! the node's shared state, and the [`Registry`] over them.

use std::sync::Arc;

use anyhow::Context;
use registry_core::blob::{BlobStore, FsBlobStore};
use registry_core::coord::InProcess;
use registry_core::durable;
use registry_core::index::Index;
use registry_core::observe::{NoObserver, Observer};
use registry_core::registry::Recovery;
use registry_core::{Clock, Limits, Options, Registry};
use registry_s3::{Location, S3BlobStore, S3Options};

use crate::StoreArgs;
use crate::config::{Config, Overrides};

/// The opened store.
pub struct Store {
    pub registry: Arc<Registry>,
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

/// Opens the blob directory and the index file under the data directory,
/// dating everything by `clock` and reporting commits and fences to
/// `observer`.
pub fn open_store(
    config: &Config,
    clock: Clock,
    observer: Arc<dyn Observer>,
) -> anyhow::Result<Store> {
    durable::ensure_dir(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let (blobs, fs) = open_blobs(config, observer.clone())?;
    let index = Index::open_redb_with(
        &config.index_path(),
        usize::try_from(config.limits.index_cache_bytes).unwrap_or(usize::MAX),
        clock.clone(),
        observer.clone(),
    )?;
    // The blob store's directories and the index file are entries of the
    // data directory: every fsync made to them afterwards keeps its promise
    // across a power cut only once these names are durable.
    durable::fsync_dir(&config.data_dir)
        .with_context(|| format!("syncing {}", config.data_dir.display()))?;
    let node = Arc::new(InProcess::new(config.gc.fence_wait, clock, observer));
    let options = Options {
        limits: Limits {
            max_manifest_bytes: config.limits.max_manifest_bytes,
            max_blob_bytes: match config.limits.max_blob_bytes {
                0 => u64::MAX,
                n => n,
            },
            min_free_bytes: config.limits.min_free_bytes,
        },
        link_foreign_blobs: config.auth.mode == registry_http::auth::Mode::None,
        activity_retention: config.activity_retention,
    };
    let registry = Arc::new(Registry::new(index, blobs, node, options));
    Ok(Store { registry, fs })
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
        ..Overrides::default()
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    crate::init_logging(config.log_format);
    let store = open_store(&config, Clock::system(), Arc::new(NoObserver)).with_context(|| {
        format!(
            "opening the store in {} (is a server still running on it?)",
            config.data_dir.display()
        )
    })?;
    store.recover().await?;
    Ok((config, store))
}
