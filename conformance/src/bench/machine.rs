//! The machine the benchmark runs on, for reading its figures: CPUs, and
//! how fast one core computes SHA-256 with the same `sha2` crate the
//! registry uses (a push or pull of a blob cannot beat one core's hashing
//! speed on either side, since both hash the whole body).

use std::time::Instant;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// Bytes hashed to measure SHA-256 speed.
const SHA_BENCH_BYTES: usize = 256 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub os: &'static str,
    pub arch: &'static str,
    /// Single-core SHA-256 speed over an in-memory buffer, MiB/s.
    pub sha256_mib_per_s: f64,
}

impl Machine {
    pub fn measure() -> Self {
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            sha256_mib_per_s: sha256_speed(),
        }
    }
}

/// MiB/s of SHA-256 over 256 MiB held in memory, on this thread.
fn sha256_speed() -> f64 {
    let data: Vec<u8> = (0..SHA_BENCH_BYTES).map(|i| (i * 31 % 251) as u8).collect();
    let started = Instant::now();
    let hash = Sha256::digest(&data);
    let secs = started.elapsed().as_secs_f64();
    std::hint::black_box(hash);
    (SHA_BENCH_BYTES as f64 / (1024.0 * 1024.0)) / secs.max(1e-9)
}
