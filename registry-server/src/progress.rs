//! Progress of long commands (`check`, `migrate-blobs`): a bar on a
//! terminal, log lines otherwise.

use registry_core::check::Progress;

/// Progress for long commands: a bar on a terminal, otherwise a log line
/// every `log_every` steps.
pub(crate) struct Reporter {
    bar: Option<indicatif::ProgressBar>,
    done: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
    log_every: u64,
}

impl Reporter {
    pub(crate) fn new(log_every: u64) -> Reporter {
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
            log_every: log_every.max(1),
        }
    }

    pub(crate) fn event(&self, p: Progress<'_>) {
        use std::sync::atomic::Ordering::Relaxed;
        match p {
            Progress::Phase { name, total } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(name.to_owned());
                    bar.set_length(total.unwrap_or(0));
                    bar.set_position(0);
                } else {
                    tracing::info!(phase = name, total, "phase");
                }
                self.done.store(0, Relaxed);
            }
            Progress::Advance(n) => {
                let done = self.done.fetch_add(n, Relaxed) + n;
                if let Some(bar) = &self.bar {
                    bar.inc(n);
                } else if done.is_multiple_of(self.log_every) {
                    let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
                    tracing::info!(done, rate = format!("{rate:.0}/s"), "progress");
                }
            }
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
