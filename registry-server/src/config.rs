//! Configuration: built-in defaults, then an optional TOML file, then
//! `REGISTRY_*` environment variables (nested keys joined by `__`, e.g.
//! `REGISTRY_LIMITS__MAX_MANIFEST_BYTES`), then command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Data, Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Where blobs live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// `s3://BUCKET[/PREFIX]` for an S3-compatible object store (endpoint
    /// and credentials from the `AWS_*` variables); unset: the data
    /// directory.
    pub blob_store: Option<String>,
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB` for an index several nodes
    /// share; unset: the embedded index file in the data directory.
    pub index: Option<String>,
    /// Connections each node keeps to the index database.
    pub index_pool_size: usize,
    /// Answer blob GETs with a 307 to a presigned URL of the object store,
    /// so clients download from it directly.
    pub blob_redirect: bool,
    /// Size of each part of a multipart upload to the object store.
    pub part_size: u64,
    /// Longest an object store request may take (its body included; a
    /// blob streamed out may take longer, with no pause this long).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest an object store connection may take to open.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for Storage {
    fn default() -> Storage {
        Storage {
            blob_store: None,
            index: None,
            index_pool_size: 32,
            blob_redirect: false,
            part_size: 8 << 20,
            request_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest manifest accepted, in bytes (413 beyond).
    pub max_manifest_bytes: u64,
    /// Largest blob accepted, in bytes; 0 means no limit.
    pub max_blob_bytes: u64,
    /// Memory the index may use to cache its pages, in bytes.
    pub index_cache_bytes: u64,
    /// Free space pushes must leave on each filesystem the store writes to,
    /// in bytes (507 below it); unset: 1 GiB, or 5% of the filesystem if
    /// less; 0: no mark (a full disk still gets 507).
    pub min_free_bytes: Option<u64>,
    /// Blobs pushed whole up to this size (at most 64 KiB) are kept in the
    /// index, durable with its commit, instead of in the blob store; 0
    /// keeps every blob in the blob store.
    pub inline_blob_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_manifest_bytes: registry_core::manifest::DEFAULT_MAX_MANIFEST_BYTES,
            max_blob_bytes: 0,
            index_cache_bytes: registry_core::db::redb::DEFAULT_CACHE_BYTES as u64,
            min_free_bytes: None,
            inline_blob_bytes: registry_core::registry::blobs::DEFAULT_INLINE_BYTES,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the API listens on.
    pub addr: SocketAddr,
    /// Where blobs, uploads and the index file live.
    pub data_dir: PathBuf,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Mount a blob on `POST ?mount=<digest>` without `from` when it is
    /// stored anywhere in the registry.
    pub automatic_mount: bool,
    pub limits: Limits,
    /// Where blobs live: the data directory, or an object store.
    pub storage: Storage,
    /// Serve `/metrics` (and health) on this address instead of the API's.
    pub metrics_addr: Option<SocketAddr>,
    /// Serve the API over TLS on `addr` with these files.
    pub tls: Option<registry_http::tls::TlsConfig>,
    /// With TLS on `addr`, also serve plain HTTP here (loopback, or behind
    /// a proxy that terminates TLS).
    pub plain_addr: Option<SocketAddr>,
    /// Authentication and authorization.
    pub auth: registry_http::auth::AuthConfig,
    /// Serve the web UI under `/ui/`.
    pub ui: bool,
    /// Most activity-log entries kept (oldest dropped first).
    pub activity_retention: u64,
    /// Garbage collection: grace period, fence wait, schedule, policies.
    pub gc: registry_gc::GcConfig,
    /// Tags that cannot be moved or deleted (`[[immutable]]`).
    pub immutable: Vec<registry_core::policy::ImmutableRule>,
    /// Tag retention: rules and their schedule (`[retention]`,
    /// `[[retention.rules]]`).
    pub retention: registry_gc::RetentionConfig,
    /// Endpoints the activity is delivered to (`[[webhooks]]`).
    pub webhooks: Vec<registry_hooks::EndpointConfig>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::from("./data"),
            log_format: LogFormat::Text,
            shutdown_timeout: Duration::from_secs(30),
            automatic_mount: true,
            limits: Limits::default(),
            storage: Storage::default(),
            metrics_addr: None,
            tls: None,
            plain_addr: None,
            auth: registry_http::auth::AuthConfig::default(),
            ui: true,
            activity_retention: 100_000,
            gc: registry_gc::GcConfig::default(),
            immutable: Vec::new(),
            retention: registry_gc::RetentionConfig::default(),
            webhooks: Vec::new(),
        }
    }
}

/// Flags that override the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub addr: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub gc_grace: Option<Duration>,
    pub gc_fence_wait: Option<Duration>,
    pub upload_max_age: Option<Duration>,
    /// `Some(None)` disables a configured schedule.
    pub gc_schedule: Option<Option<String>>,
    pub gc_untagged: Option<Vec<registry_gc::UntaggedRule>>,
    pub gc_orphaned_referrers: Option<bool>,
    pub metrics_addr: Option<SocketAddr>,
    pub plain_addr: Option<SocketAddr>,
    /// `--htpasswd FILE`: Basic auth against the file (mode htpasswd unless
    /// the configuration chose token).
    pub htpasswd: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub blob_store: Option<String>,
    pub index: Option<String>,
    pub blob_redirect: Option<bool>,
    pub min_free_bytes: Option<u64>,
}

impl Config {
    /// The built-in defaults with `toml` (a file's or a string's) over them.
    fn defaults_and(toml: Option<Data<Toml>>) -> Figment {
        let figment = Figment::from(Serialized::defaults(Config::default()));
        match toml {
            Some(toml) => figment.merge(toml),
            None => figment,
        }
    }

    /// The configuration a TOML document gives over the defaults, checked
    /// as [`Config::load`] checks it, without the environment or flags.
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let config: Config = Config::defaults_and(Some(Toml::string(text))).extract()?;
        config.check()?;
        Ok(config)
    }

    /// Loads the layered configuration. `file` is the TOML file to read, if
    /// any (a missing file named explicitly is an error).
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let toml = match file {
            Some(file) => {
                anyhow::ensure!(
                    file.exists(),
                    "config file {} does not exist",
                    file.display()
                );
                Some(Toml::file(file))
            }
            None => None,
        };
        // REGISTRY_CONFIG names the file itself; it is not a setting.
        let figment = Config::defaults_and(toml)
            .merge(Env::prefixed("REGISTRY_").split("__").ignore(&["config"]));
        let mut config: Config = figment.extract()?;
        config.apply(overrides)?;
        config.check()?;
        Ok(config)
    }

    /// Applies the command-line flags over the file and the environment.
    fn apply(&mut self, overrides: &Overrides) -> anyhow::Result<()> {
        let config = self;
        if let Some(addr) = overrides.addr {
            config.addr = addr;
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(d) = overrides.gc_grace {
            config.gc.grace = d;
        }
        if let Some(d) = overrides.gc_fence_wait {
            config.gc.fence_wait = d;
        }
        if let Some(d) = overrides.upload_max_age {
            config.gc.upload_max_age = d;
        }
        if let Some(s) = &overrides.gc_schedule {
            config.gc.schedule = s.clone();
        }
        if let Some(rules) = &overrides.gc_untagged {
            config.gc.untagged = rules.clone();
        }
        if let Some(a) = overrides.metrics_addr {
            config.metrics_addr = Some(a);
        }
        if let Some(a) = overrides.plain_addr {
            config.plain_addr = Some(a);
        }
        if let Some(h) = &overrides.htpasswd {
            config.auth.htpasswd = Some(h.clone());
            if config.auth.mode == registry_http::auth::Mode::None {
                config.auth.mode = registry_http::auth::Mode::Htpasswd;
            }
        }
        match (&overrides.tls_cert, &overrides.tls_key) {
            (Some(cert), Some(key)) => {
                config.tls = Some(registry_http::tls::TlsConfig {
                    cert: cert.clone(),
                    key: key.clone(),
                });
            }
            (None, None) => {}
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        }
        if let Some(s) = &overrides.blob_store {
            config.storage.blob_store = Some(s.clone());
        }
        if let Some(s) = &overrides.index {
            config.storage.index = Some(s.clone());
        }
        if let Some(b) = overrides.blob_redirect {
            config.storage.blob_redirect = b;
        }
        if let Some(n) = overrides.min_free_bytes {
            config.limits.min_free_bytes = Some(n);
        }
        if let Some(b) = overrides.gc_orphaned_referrers {
            config.gc.orphaned_referrers = b;
        }
        Ok(())
    }

    /// The checks every loaded configuration passes before it is used.
    fn check(&self) -> anyhow::Result<()> {
        self.gc.validate()?;
        registry_hooks::compile_all(&self.webhooks)?;
        let ceiling = registry_core::registry::blobs::INLINE_CEILING;
        anyhow::ensure!(
            self.limits.inline_blob_bytes <= ceiling,
            "limits.inline_blob_bytes is {}: at most {ceiling} bytes are kept in the index",
            self.limits.inline_blob_bytes
        );
        Ok(())
    }

    pub fn index_path(&self) -> PathBuf {
        self.data_dir.join("index.redb")
    }
}

#[cfg(test)]
// figment's test jail returns its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "registry.toml",
                "addr = \"127.0.0.1:6000\"\ndata_dir = \"/srv/berth\"\nshutdown_timeout = \"5s\"\n[limits]\nmax_manifest_bytes = 1000\n[gc]\ngrace = \"10m\"\nschedule = \"@daily\"\n[[gc.untagged]]\nrepositories = \"ci/**\"\nolder_than = \"7d\"\n",
            )?;
            jail.set_env("REGISTRY_DATA_DIR", "/from/env");
            jail.set_env("REGISTRY_LIMITS__MAX_BLOB_BYTES", "77");
            jail.set_env("REGISTRY_LIMITS__MIN_FREE_BYTES", "5000");
            let c = Config::load(Some(Path::new("registry.toml")), &Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(c.addr.port(), 6000);
            assert_eq!(c.data_dir, PathBuf::from("/from/env"));
            assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
            assert_eq!(c.limits.max_manifest_bytes, 1000);
            assert_eq!(c.limits.max_blob_bytes, 77);
            assert_eq!(c.limits.min_free_bytes, Some(5000));
            assert_eq!(c.gc.grace, Duration::from_secs(600));
            assert_eq!(c.gc.schedule.as_deref(), Some("@daily"));
            assert_eq!(c.gc.untagged[0].older_than, Duration::from_secs(7 * 86400));
            assert_eq!(c.gc.fence_wait, Duration::from_millis(500));
            let o = Overrides {
                addr: Some("127.0.0.1:7000".parse().unwrap()),
                gc_grace: Some(Duration::from_secs(2)),
                gc_schedule: Some(None),
                ..Overrides::default()
            };
            let c =
                Config::load(Some(Path::new("registry.toml")), &o).map_err(|e| e.to_string())?;
            assert_eq!(c.addr.port(), 7000);
            assert_eq!(c.gc.grace, Duration::from_secs(2));
            assert_eq!(c.gc.schedule, None);
            jail.create_file("bad.toml", "[gc]\nschedule = \"@sometimes\"\n")?;
            assert!(Config::load(Some(Path::new("bad.toml")), &Overrides::default()).is_err());
            Ok(())
        });
    }

    /// The sample configurations shipped in deploy/ must stay loadable.
    #[test]
    fn shipped_samples_load() {
        figment::Jail::expect_with(|_| {
            let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/registry.toml");
            let c =
                Config::load(Some(&sample), &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(c.data_dir, PathBuf::from("/var/lib/berth"));
            assert_eq!(c.gc.schedule.as_deref(), Some("@daily"));
            assert_eq!(c.log_format, LogFormat::Json);
            assert!(c.metrics_addr.is_some());
            let k8s = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/configmap.yaml"),
            )
            .unwrap();
            let toml_part: String = k8s
                .split("registry.toml: |\n")
                .nth(1)
                .unwrap()
                .lines()
                .map(|l| l.strip_prefix("    ").unwrap_or(l))
                .collect::<Vec<_>>()
                .join("\n");
            let c = Config::from_toml(&toml_part).map_err(|e| e.to_string())?;
            assert_eq!(c.addr.port(), 5000);
            Ok(())
        });
    }

    #[test]
    fn webhooks_load_and_bad_ones_stop_the_start() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "hooks.toml",
                "[[webhooks]]\nname = \"ci\"\nurl = \"https://ci.example/hook\"\nevents = [\"push\"]\nmax_age = \"1h\"\n",
            )?;
            let c = Config::load(Some(Path::new("hooks.toml")), &Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(c.webhooks.len(), 1);
            assert_eq!(c.webhooks[0].max_age, Duration::from_secs(3600));
            assert_eq!(c.webhooks[0].repositories, "**");
            jail.create_file(
                "bad.toml",
                "[[webhooks]]\nname = \"ci\"\nurl = \"https://ci.example/hook\"\nevents = [\"pull\"]\n",
            )?;
            let err = Config::load(Some(Path::new("bad.toml")), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("\"ci\"") && err.contains("unknown event"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn from_toml_checks_like_load() {
        let c = Config::from_toml("ui = false\n[gc]\nbatch_size = 7\n").unwrap();
        assert!(!c.ui);
        assert_eq!(c.gc.batch_size, 7);
        assert_eq!(c.addr, "127.0.0.1:5000".parse().unwrap(), "defaults kept");
        for bad in [
            "ui = \"yes\"",
            "nonsense = 1",
            "[gc]\nschedule = \"@sometimes\"",
            "[gc]\nbatch_size = 0",
            "addr = ",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn defaults_without_file() {
        figment::Jail::expect_with(|_| {
            let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(c.addr, "127.0.0.1:5000".parse().unwrap());
            assert_eq!(c.data_dir, PathBuf::from("./data"));
            assert_eq!(
                c.limits.min_free_bytes, None,
                "the default mark is computed"
            );
            assert!(Config::load(Some(Path::new("missing.toml")), &Overrides::default()).is_err());
            Ok(())
        });
    }
}
