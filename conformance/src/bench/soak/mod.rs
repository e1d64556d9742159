//! `berth-bench soak`: a long run of a mixed workload with garbage
//! collection in a loop, sampling the server's resources, to show that
//! nothing grows without bound and nothing acknowledged is lost.
//!
//! Actors run side by side until `--duration` is over: pushers (images
//! with shared and unique layers, every upload flow), pullers (verifying
//! every byte), mutators (tag moves, tag deletes, image deletes that hold
//! the store near `--live-images`), an abandoner of uploads, a browser of
//! listings, UI pages and the admin API, and the collector loop. Every
//! `--sample-every` a row goes to the CSV (see `sample.rs`). At the end
//! every image the soak still knows of is pulled and verified, and the
//! curves are summarized (see `summary.rs`).

mod collect;
mod load;
mod model;
mod push;
pub mod sample;
pub mod summary;
pub mod tally;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;

use crate::bench::client::Registry;
use crate::bench::options::parse_size;
use model::{Model, Target};
use push::Content;
use sample::{Csv, Row, Sampler};
use tally::{Counts, Op, Tally};

/// Options of `berth-bench soak`.
#[derive(Debug, Clone, Args)]
pub struct SoakOptions {
    /// Registry base URL (a Berth server: the soak drives its admin API).
    #[arg(long, default_value = "http://127.0.0.1:5000", env = "BENCH_URL")]
    pub url: String,
    /// Prefix of the repositories the soak creates.
    #[arg(long, default_value = "soak")]
    pub namespace: String,
    /// How long the load runs.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Time between two samples.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub sample_every: Duration,
    /// Samples before this are warm-up: the summary judges the curves after it.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// The server's process id: RSS, open files, threads and CPU from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The server's data directory (filesystem store): sizes of uploads/,
    /// quarantine/, blobs/ and the index file.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Write the samples to this CSV file as they are taken.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Workers pushing images.
    #[arg(long, default_value_t = 4)]
    pub pushers: usize,
    /// Workers pulling images.
    #[arg(long, default_value_t = 4)]
    pub pullers: usize,
    /// Workers moving and deleting tags and deleting images.
    #[arg(long, default_value_t = 2)]
    pub mutators: usize,
    /// Repositories the images are spread over.
    #[arg(long, default_value_t = 6)]
    pub repos: usize,
    /// Images kept: past this many, the oldest are deleted.
    #[arg(long, default_value_t = 300)]
    pub live_images: usize,
    /// Grace period every collection run asks for.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub gc_grace: Duration,
    /// Upload age every collection run purges beyond.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub upload_max_age: Duration,
    /// Pause between the end of one collection run and the next.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub gc_pause: Duration,
    /// Size of the large layer some images carry.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub large_layer: u64,
    /// Every this many images carries a large layer (0: none).
    #[arg(long, default_value_t = 50)]
    pub large_every: u64,
    /// Time between two abandoned uploads.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub abandon_every: Duration,
    /// Time limit of one HTTP request.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl SoakOptions {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.repos >= 1, "--repos must be at least 1");
        anyhow::ensure!(self.pushers >= 1, "--pushers must be at least 1");
        anyhow::ensure!(self.live_images >= 2, "--live-images must be at least 2");
        anyhow::ensure!(
            self.sample_every >= Duration::from_millis(100),
            "--sample-every must be at least 100ms"
        );
        Ok(())
    }
}

/// Everything the actors share.
pub struct Soak {
    registry: Registry,
    opts: SoakOptions,
    model: Model,
    tally: Tally,
    content: Content,
    /// Differs between runs, so that pushes always send new content.
    nonce: u64,
    stop: AtomicBool,
    next_image: AtomicU64,
    /// Deletes and tag moves in one repository go one at a time, so that
    /// the model knows what each leaves.
    repo_locks: Vec<tokio::sync::Mutex<()>>,
}

impl Soak {
    fn repo(&self, index: usize) -> String {
        format!("{}/r{index}", self.opts.namespace)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps for `d`, or less if the soak stops meanwhile.
    async fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() && Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(200))).await;
        }
    }
}

/// What a soak found.
pub struct Outcome {
    pub rows: Vec<Row>,
    pub total: Counts,
    /// Images and tags checked at the end.
    pub verified_images: usize,
    pub verified_tags: usize,
    pub unexpected: u64,
}

/// Runs the soak and prints its summary.
pub async fn run(opts: SoakOptions) -> anyhow::Result<Outcome> {
    opts.validate()?;
    let registry = Registry::new(&opts.url, opts.timeout, 64)?;
    registry
        .admin_get("/admin/gc/runs?limit=1")
        .await
        .with_context(|| format!("{} does not answer Berth's admin API", opts.url))?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut csv = match &opts.csv {
        Some(path) => {
            Some(Csv::create(path).with_context(|| format!("creating {}", path.display()))?)
        }
        None => None,
    };
    let soak = Arc::new(Soak {
        content: Content::new(nonce, opts.large_layer),
        repo_locks: (0..opts.repos)
            .map(|_| tokio::sync::Mutex::new(()))
            .collect(),
        registry,
        model: Model::default(),
        tally: Tally::default(),
        nonce,
        stop: AtomicBool::new(false),
        next_image: AtomicU64::new(0),
        opts,
    });
    eprintln!(
        "soak: {} against {} ({} pushers, {} pullers, {} mutators, {} live images, GC grace {:?})",
        humantime::format_duration(soak.opts.duration),
        soak.opts.url,
        soak.opts.pushers,
        soak.opts.pullers,
        soak.opts.mutators,
        soak.opts.live_images,
        soak.opts.gc_grace
    );
    let actors = start_actors(&soak);
    let mut sampler = Sampler::new(soak.opts.server_pid, soak.opts.data_dir.clone());
    let mut rows = Vec::new();
    let started = Instant::now();
    let mut next = started;
    while started.elapsed() < soak.opts.duration {
        next += soak.opts.sample_every;
        tokio::time::sleep_until(next.into()).await;
        let row = take_sample(&soak, &mut sampler, csv.as_mut()).await?;
        rows.push(row);
    }
    soak.stop.store(true, Ordering::Relaxed);
    for actor in actors {
        actor.await.context("an actor of the soak panicked")?;
    }
    let (verified_images, verified_tags) = verify(&soak).await;
    let outcome = Outcome {
        rows,
        total: soak.tally.total(),
        verified_images,
        verified_tags,
        unexpected: soak.tally.total().unexpected,
    };
    print_summary(&soak, &outcome);
    Ok(outcome)
}

fn start_actors(soak: &Arc<Soak>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut actors = Vec::new();
    let mut spawn = |f: fn(Arc<Soak>, u64) -> futures::future::BoxFuture<'static, ()>, n: usize| {
        for worker in 0..n {
            actors.push(tokio::spawn(f(soak.clone(), worker as u64)));
        }
    };
    spawn(
        |s, _| {
            Box::pin(async move {
                while !s.stopped() {
                    let id = s.next_image.fetch_add(1, Ordering::Relaxed);
                    push::push(&s, id).await;
                }
            })
        },
        soak.opts.pushers,
    );
    spawn(
        |s, w| Box::pin(async move { load::puller(&s, w).await }),
        soak.opts.pullers,
    );
    spawn(
        |s, w| Box::pin(async move { load::mutator(&s, w).await }),
        soak.opts.mutators,
    );
    spawn(|s, _| Box::pin(async move { load::abandoner(&s).await }), 1);
    spawn(|s, _| Box::pin(async move { load::browser(&s).await }), 1);
    spawn(
        |s, _| Box::pin(async move { collect::collector(&s).await }),
        1,
    );
    actors
}

/// A sample, written to the CSV and shown on stderr.
async fn take_sample(
    soak: &Soak,
    sampler: &mut Sampler,
    csv: Option<&mut Csv>,
) -> anyhow::Result<Row> {
    let counts = soak.tally.take_interval();
    let row = sampler
        .sample(&soak.registry, &counts, soak.model.len())
        .await;
    if let Some(csv) = csv {
        csv.write(&row).context("writing the CSV")?;
    }
    let mib = |name: &str| {
        row.get(name)
            .map_or("-".into(), |v| format!("{:.1}", v / 1048576.0))
    };
    let num = |name: &str| row.get(name).map_or("-".into(), |v| format!("{v:.0}"));
    eprintln!(
        "t={}s rss={}MiB fds={} threads={} uploads={} files quarantine={} blobs={} files/{}MiB index={}MiB pushes/s={} gc runs={} errors expected={} unexpected={}",
        num("t_s"),
        mib("rss_bytes"),
        num("fds"),
        num("threads"),
        num("uploads_files"),
        num("quarantine_files"),
        num("blobs_files"),
        mib("blobs_bytes"),
        mib("index_bytes"),
        row.get("pushes_per_s")
            .map_or("-".into(), |v| format!("{v:.1}")),
        counts.gc_runs,
        counts.expected,
        counts.unexpected,
    );
    Ok(row)
}

/// Pulls every image the soak still knows of by digest, and checks where
/// each tag points; failures are counted as unexpected. Returns the images
/// and tags that passed.
async fn verify(soak: &Arc<Soak>) -> (usize, usize) {
    let model::Snapshot { images, tags } = soak.model.snapshot();
    eprintln!(
        "soak: verifying {} images and {} tags",
        images.len(),
        tags.len()
    );
    let image_checks = futures::stream::iter(images)
        .map(|(id, live)| {
            let soak = soak.clone();
            async move {
                let target = Target {
                    id,
                    repo: live.repo,
                    image: live.image,
                    tag: None,
                };
                let result = load::pull(&soak, &target).await;
                result
                    .map_err(|e| soak.tally.unexpected("final pull by digest", &e))
                    .is_ok()
            }
        })
        .buffer_unordered(8)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    let tag_checks = futures::stream::iter(tags)
        .map(|(repo, tag, digest)| {
            let soak = soak.clone();
            async move {
                let name = soak.repo(repo);
                match soak.registry.get_manifest(&name, &tag).await {
                    Ok(body) if crate::bench::content::sha256_digest(&body) == digest => true,
                    Ok(_) => {
                        let detail = format!("{name}:{tag} does not resolve to {digest}");
                        soak.tally.unexpected_text("final tag check", &detail);
                        false
                    }
                    Err(e) => {
                        soak.tally.unexpected("final tag check", &e);
                        false
                    }
                }
            }
        })
        .buffer_unordered(8)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    (image_checks, tag_checks)
}

fn print_summary(soak: &Soak, outcome: &Outcome) {
    let t = &outcome.total;
    let warmup = soak.opts.warmup.as_secs_f64();
    println!("\n## Soak summary\n");
    println!(
        "{} of load; warm-up {}; a sample every {}.\n",
        humantime::format_duration(soak.opts.duration),
        humantime::format_duration(soak.opts.warmup),
        humantime::format_duration(soak.opts.sample_every)
    );
    println!("{}", summary::table(&outcome.rows, warmup));
    println!(
        "Images pushed: {} ({:.1} MiB of blobs); pulls verified: {}; tag moves: {}; tag deletes: {}; image deletes: {}; abandoned uploads: {}; reads of listings, UI and admin API: {}.",
        t.op(Op::Push),
        t.pushed_bytes as f64 / 1048576.0,
        t.op(Op::Pull),
        t.op(Op::TagMove),
        t.op(Op::TagDelete),
        t.op(Op::ManifestDelete),
        t.op(Op::Abandon),
        t.op(Op::Browse),
    );
    println!(
        "GC runs: {}; blobs deleted: {}; bytes freed: {:.1} MiB; uploads purged: {}; orphans deleted: {}; fences: {} (longest {:.1} ms); writes refused by a fence: {}; longest run: {:.0} ms.",
        t.gc_runs,
        t.gc_blobs_deleted,
        t.gc_bytes_freed as f64 / 1048576.0,
        t.gc_uploads_deleted,
        t.gc_orphans_deleted,
        t.gc_fences,
        t.gc_fence_max_ms,
        t.gc_writes_refused,
        t.gc_run_max_ms,
    );
    println!(
        "Final check: {} images pulled intact by digest, {} tags resolve where they should.",
        outcome.verified_images, outcome.verified_tags
    );
    let (expected, unexpected, samples) = soak.tally.reasons();
    println!("\nExpected failures: {}", t.expected);
    for (reason, n) in &expected {
        println!("- {n} × {reason}");
    }
    println!("\nUnexpected failures: {}", t.unexpected);
    for (context, n) in &unexpected {
        println!("- {n} × {context}");
    }
    for sample in &samples {
        println!("    {sample}");
    }
}
