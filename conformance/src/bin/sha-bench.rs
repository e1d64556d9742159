//! `sha-bench`: single-core SHA-256 and SHA-512 throughput of the hashing
//! engines a registry could use, over one buffer fed in updates of a given
//! size (the way an upload body arrives). See `conformance/BENCH.md`.
//!
//! Engines: the `sha2` crate through its `Digest` API (what the registry's
//! hasher is built on), `sha2`'s raw compression function fed whole blocks
//! (its floor: no buffering at all), and `ring::digest`. Rounds alternate
//! the engines so that a change of load on a shared machine hits them all
//! alike; `openssl speed` runs once per round as a reference when the
//! `openssl` command is installed.

use std::hint::black_box;
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::Parser;

/// Single-core SHA-256/SHA-512 throughput per engine and update size.
#[derive(Debug, Parser)]
#[command(name = "sha-bench")]
struct Options {
    /// MiB hashed per measurement.
    #[arg(long, default_value_t = 64)]
    mib: usize,

    /// Update sizes in KiB (each buffer is fed in pieces of this size).
    #[arg(long, value_delimiter = ',', default_value = "64,1024")]
    update_kib: Vec<usize>,

    /// Rounds; each measures every engine once, in a rotated order.
    #[arg(long, default_value_t = 5)]
    rounds: usize,

    /// Do not run `openssl speed` as a reference.
    #[arg(long)]
    no_openssl: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Engine {
    Sha2,
    Sha2Compress,
    Ring,
}

const ENGINES: [Engine; 3] = [Engine::Sha2, Engine::Sha2Compress, Engine::Ring];

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Sha2 => "sha2 0.11 (Digest)",
            Engine::Sha2Compress => "sha2 0.11 (compress, blocks)",
            Engine::Ring => "ring 0.17 (digest)",
        }
    }

    /// Hashes `data` in `update`-byte pieces; returns part of the result so
    /// that the work cannot be optimized away.
    fn hash(self, algorithm: Algorithm, data: &[u8], update: usize) -> u64 {
        use sha2::block_api::{compress256, compress512};
        let pieces = data.chunks(update);
        match (self, algorithm) {
            (Engine::Sha2, Algorithm::Sha256) => sha2_digest::<sha2::Sha256>(pieces),
            (Engine::Sha2, Algorithm::Sha512) => sha2_digest::<sha2::Sha512>(pieces),
            (Engine::Sha2Compress, Algorithm::Sha256) => compress_only(0u32, pieces, compress256),
            (Engine::Sha2Compress, Algorithm::Sha512) => compress_only(0u64, pieces, compress512),
            (Engine::Ring, Algorithm::Sha256) => ring_digest(&ring::digest::SHA256, pieces),
            (Engine::Ring, Algorithm::Sha512) => ring_digest(&ring::digest::SHA512, pieces),
        }
    }
}

/// The first 8 bytes of a digest, as a number.
fn head(digest: &[u8]) -> u64 {
    u64::from_le_bytes(
        digest[..8]
            .try_into()
            .expect("digests are longer than 8 bytes"),
    )
}

fn sha2_digest<'a, D: sha2::Digest>(pieces: impl Iterator<Item = &'a [u8]>) -> u64 {
    let mut h = D::new();
    for piece in pieces {
        h.update(piece);
    }
    head(&h.finalize())
}

fn ring_digest<'a>(
    algorithm: &'static ring::digest::Algorithm,
    pieces: impl Iterator<Item = &'a [u8]>,
) -> u64 {
    let mut h = ring::digest::Context::new(algorithm);
    for piece in pieces {
        h.update(piece);
    }
    head(h.finish().as_ref())
}

/// The compression function alone over the whole blocks of each piece (no
/// padding, no partial blocks): what any engine built on it pays at least.
fn compress_only<'a, W: Copy + Into<u64>, const BLOCK: usize>(
    init: W,
    pieces: impl Iterator<Item = &'a [u8]>,
    compress: fn(&mut [W; 8], &[[u8; BLOCK]]),
) -> u64 {
    let mut state = [init; 8];
    for piece in pieces {
        let (blocks, _) = piece.as_chunks::<BLOCK>();
        compress(&mut state, blocks);
    }
    state[0].into()
}

/// MiB/s of one measurement: by the CPU time this thread spent (what the
/// engine costs, whatever else the machine runs) and by the clock.
fn measure(engine: Engine, algorithm: Algorithm, data: &[u8], update: usize) -> Speed {
    let (cpu, wall) = (thread_cpu_secs(), Instant::now());
    black_box(engine.hash(algorithm, black_box(data), update));
    let mib = data.len() as f64 / (1024.0 * 1024.0);
    Speed {
        cpu: mib / (thread_cpu_secs() - cpu).max(1e-9),
        wall: mib / wall.elapsed().as_secs_f64().max(1e-9),
    }
}

#[derive(Debug, Clone, Copy)]
struct Speed {
    cpu: f64,
    wall: f64,
}

/// CPU time consumed by the calling thread, in seconds.
fn thread_cpu_secs() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; the clock id is a constant
    // every supported Unix knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// `openssl speed` over 64 KiB buffers for 2 s, in MiB/s, by CPU time
/// (its default) and, in a second run with `-elapsed`, by the clock; `None`
/// when the command is missing or its output is not understood.
fn openssl_speed(algorithm: Algorithm) -> Option<Speed> {
    Some(Speed {
        cpu: openssl_speed_run(algorithm, &[])?,
        wall: openssl_speed_run(algorithm, &["-elapsed"])?,
    })
}

fn openssl_speed_run(algorithm: Algorithm, extra: &[&str]) -> Option<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "2", "-bytes", "65536"])
        .args(extra)
        .arg("-evp")
        .arg(algorithm.name())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The last line reads `sha256   2177475.61k`: thousands of bytes per second.
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with(algorithm.name()))?;
    let kilobytes: f64 = line
        .split_whitespace()
        .last()?
        .trim_end_matches('k')
        .parse()
        .ok()?;
    Some(kilobytes * 1000.0 / (1024.0 * 1024.0))
}

/// One result row: engine, algorithm, update size, every round's MiB/s.
struct Row {
    engine: &'static str,
    algorithm: Algorithm,
    update: usize,
    speeds: Vec<Speed>,
}

impl Row {
    fn render(&self) -> String {
        let cpu: Vec<f64> = self.speeds.iter().map(|s| s.cpu).collect();
        let wall: Vec<f64> = self.speeds.iter().map(|s| s.wall).collect();
        let list: Vec<String> = cpu.iter().map(|x| format!("{x:.0}")).collect();
        format!(
            "{:<30} {:<7} {:>7} {:>8.0} {:>8.0} {:>8.0} {:>9.0} {:>9.0}   {}",
            self.engine,
            self.algorithm.name(),
            size_label(self.update),
            median(&cpu),
            max(&cpu),
            min(&cpu),
            median(&wall),
            max(&wall),
            list.join(" ")
        )
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MIN, f64::max)
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MAX, f64::min)
}

fn size_label(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs every round; returns the rows in algorithm, size, engine order,
/// then the `openssl speed` rows.
fn run(opts: &Options, data: &[u8]) -> Vec<Row> {
    let mut rows = Vec::new();
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
        for &kib in &opts.update_kib {
            for engine in ENGINES {
                rows.push(Row {
                    engine: engine.name(),
                    algorithm,
                    update: kib << 10,
                    speeds: Vec::new(),
                });
            }
        }
    }
    let mut reference = Vec::new();
    for round in 0..opts.rounds {
        eprintln!(
            "round {}/{}: load average {}",
            round + 1,
            opts.rounds,
            load_average()
        );
        for i in 0..rows.len() {
            // Rotate the order within each group of engines from round to round.
            let group = i / ENGINES.len() * ENGINES.len();
            let at = group + (i + round) % ENGINES.len();
            let engine = ENGINES[at - group];
            let (algorithm, update) = (rows[at].algorithm, rows[at].update);
            let speed = measure(engine, algorithm, data, update);
            rows[at].speeds.push(speed);
        }
        if !opts.no_openssl {
            openssl_round(&mut reference);
        }
    }
    rows.extend(reference);
    rows
}

/// Appends this round's `openssl speed` figures (rows created on first use).
fn openssl_round(rows: &mut Vec<Row>) {
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
        let Some(speed) = openssl_speed(algorithm) else {
            eprintln!(
                "`openssl speed -evp {}` did not run: no reference figure",
                algorithm.name()
            );
            continue;
        };
        let existing = rows
            .iter_mut()
            .find(|r| r.engine == "openssl speed -evp" && r.algorithm == algorithm);
        match existing {
            Some(row) => row.speeds.push(speed),
            None => rows.push(Row {
                engine: "openssl speed -evp",
                algorithm,
                update: 64 << 10,
                speeds: vec![speed],
            }),
        }
    }
}

fn main() -> ExitCode {
    let opts = Options::parse();
    if opts.rounds == 0 || opts.mib == 0 || opts.update_kib.contains(&0) {
        eprintln!("sha-bench: --rounds, --mib and --update-kib must be positive");
        return ExitCode::from(2);
    }
    let data: Vec<u8> = (0..opts.mib << 20).map(|i| (i * 31 % 251) as u8).collect();
    println!(
        "sha-bench: {} MiB per measurement, {} rounds, CPU SHA extensions: {}, load average {}",
        opts.mib,
        opts.rounds,
        cpu_has_sha(),
        load_average()
    );
    let rows = run(&opts, &data);
    println!(
        "MiB/s by this thread's CPU time (median, best, worst) and by the clock (median, best)"
    );
    println!(
        "{:<30} {:<7} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9}   every round (CPU)",
        "engine", "alg", "update", "cpu med", "best", "worst", "clock med", "best"
    );
    for row in &rows {
        println!("{}", row.render());
    }
    println!("load average at the end: {}", load_average());
    ExitCode::SUCCESS
}

fn cpu_has_sha() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sha") {
            "yes"
        } else {
            "no"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "not checked on this architecture"
    }
}
