//! Command-line options.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Serialize;

/// Load generator for the OCI distribution API: pushes, pulls, HEADs,
/// lists and (on Berth) garbage-collects, and reports operations/s, MiB/s,
/// latency percentiles and errors per workload.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "berth-bench", version)]
pub struct Options {
    /// Registry base URL.
    #[arg(long, default_value = "http://127.0.0.1:5000", env = "BENCH_URL")]
    pub url: String,

    /// Prefix of every repository the benchmark creates.
    #[arg(long, default_value = "bench")]
    pub namespace: String,

    /// Workloads to run, in the order given (repeat the flag or separate
    /// with commas).
    #[arg(
        long = "workload",
        value_enum,
        value_delimiter = ',',
        default_value = "all"
    )]
    pub workloads: Vec<Workload>,

    /// How long each measured case runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_seconds")]
    pub duration: Duration,

    /// Run this many operations per case instead of running for --duration.
    #[arg(long)]
    pub ops: Option<u64>,

    /// Workers per case, overriding every workload's default.
    #[arg(long)]
    pub concurrency: Option<usize>,

    /// Blob sizes for the push-blob and pull-blob workloads (B, KiB, MiB,
    /// GiB; K, M, G and KB, MB, GB mean the same binary units).
    #[arg(long, value_delimiter = ',', default_value = "4KiB,1MiB,64MiB", value_parser = parse_size)]
    pub sizes: Vec<u64>,

    /// Pieces (PATCH requests) per blob in push-blob-chunked.
    #[arg(long, default_value_t = 4)]
    pub chunks: u64,

    /// Size of each of the 4 layers of an image (push-image, mixed,
    /// head-manifest).
    #[arg(long, default_value = "4KiB", value_parser = parse_size)]
    pub layer_size: u64,

    /// Tags in the repository that tags-list lists.
    #[arg(long, default_value_t = 10_000)]
    pub tags: u64,

    /// Repositories created for catalog.
    #[arg(long, default_value_t = 1_000)]
    pub repos: u64,

    /// Page size (`n`) of the paginated tags-list and catalog cases.
    #[arg(long, default_value_t = 100)]
    pub page_size: u64,

    /// Images pushed by the gc workload (5 unique blobs each).
    #[arg(long, default_value_t = 20_000)]
    pub gc_images: u64,

    /// Fraction of the gc workload's images deleted before the measured run.
    #[arg(long, default_value_t = 0.2)]
    pub gc_delete_fraction: f64,

    /// Repositories the gc workload spreads its images over.
    #[arg(long, default_value_t = 4)]
    pub gc_repos: u64,

    /// Size of each blob of the gc workload's images.
    #[arg(long, default_value = "1KiB", value_parser = parse_size)]
    pub gc_blob_size: u64,

    /// Skip the GC run concurrent with the mixed workload.
    #[arg(long)]
    pub gc_no_mixed: bool,

    /// Grace period of the GC run concurrent with the mixed workload. The
    /// other runs use 0s; under load, a grace period is what protects the
    /// blobs of pushes in flight (uploaded, manifest not yet PUT).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_seconds")]
    pub gc_mixed_grace: Duration,

    /// Time limit of one HTTP request.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_seconds")]
    pub timeout: Duration,

    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A workload, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    All,
    PushBlobMono,
    PushBlobChunked,
    PullBlob,
    HeadBlob,
    HeadManifest,
    PushImage,
    TagsList,
    Catalog,
    Mixed,
    Gc,
}

impl Workload {
    /// Every workload, in the order `all` runs them.
    pub const EVERY: [Workload; 10] = [
        Workload::PushBlobMono,
        Workload::PushBlobChunked,
        Workload::PullBlob,
        Workload::HeadBlob,
        Workload::HeadManifest,
        Workload::PushImage,
        Workload::TagsList,
        Workload::Catalog,
        Workload::Mixed,
        Workload::Gc,
    ];

    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

impl Options {
    /// The workloads to run, `all` expanded, each once.
    pub fn selected(&self) -> Vec<Workload> {
        let mut out = Vec::new();
        for &w in &self.workloads {
            let expanded: &[Workload] = if w == Workload::All {
                &Workload::EVERY
            } else {
                std::slice::from_ref(&w)
            };
            for &w in expanded {
                if !out.contains(&w) {
                    out.push(w);
                }
            }
        }
        out
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (0.0..=0.5).contains(&self.gc_delete_fraction),
            "--gc-delete-fraction must be between 0 and 0.5"
        );
        anyhow::ensure!(self.chunks >= 1, "--chunks must be at least 1");
        anyhow::ensure!(self.page_size >= 1, "--page-size must be at least 1");
        anyhow::ensure!(self.gc_repos >= 1, "--gc-repos must be at least 1");
        anyhow::ensure!(!self.sizes.is_empty(), "--sizes needs at least one size");
        anyhow::ensure!(
            self.concurrency != Some(0),
            "--concurrency must be at least 1"
        );
        Ok(())
    }
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// `4096`, `4KiB`, `4k`, `1MiB`, `64M`, `1.5GiB`: binary units.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 4KiB or 64MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    Ok((number * factor as f64).round() as u64)
}

/// `4 KiB`, `1 MiB`, `1.5 MiB`, `100 B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1.5M"), Ok(3 << 19));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("4 parsecs").is_err());
        assert_eq!(format_size(4096), "4 KiB");
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size(3 << 19), "1.5 MiB");
        assert_eq!(format_size(100), "100 B");
    }

    #[test]
    fn all_expands_in_order_without_repeats() {
        let options = Options::parse_from(["berth-bench", "--workload", "gc,all"]);
        let selected = options.selected();
        assert_eq!(selected[0], Workload::Gc);
        assert_eq!(selected.len(), Workload::EVERY.len());
        assert_eq!(Workload::PushBlobMono.name(), "push-blob-mono");
        let defaults = Options::parse_from(["berth-bench"]);
        assert_eq!(defaults.selected(), Workload::EVERY);
        defaults.validate().unwrap();
    }
}
