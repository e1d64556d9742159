//! Closed-loop load: `concurrency` workers, each running one operation
//! after another until the time or the operation budget is spent.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::client::OpError;
use super::stats::Stats;

/// When a case stops.
#[derive(Debug, Clone)]
pub enum Limit {
    /// No new operation starts after this long.
    Time(Duration),
    /// Exactly this many operations, shared by the workers.
    Ops(u64),
    /// No new operation starts once the flag is set.
    Until(Arc<AtomicBool>),
}

/// The outcome of one operation: its kind (an index into the case's list
/// of kinds; 0 when there is only one) and bytes moved, or the error.
pub struct Sample {
    pub kind: usize,
    pub result: Result<u64, OpError>,
}

impl From<Result<u64, OpError>> for Sample {
    fn from(result: Result<u64, OpError>) -> Self {
        Sample { kind: 0, result }
    }
}

/// What the workers measured, per kind, and the wall time they took.
pub struct Outcome {
    pub elapsed: Duration,
    pub stats: Vec<Stats>,
}

/// Runs `op(seq)` for `seq` = 0, 1, 2, … on `concurrency` workers until
/// `limit`. Only successful operations enter the latency histograms.
pub async fn run<F, Fut>(kinds: usize, concurrency: usize, limit: Limit, op: F) -> Outcome
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Sample> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (op, next, limit) = (op.clone(), next.clone(), limit.clone());
            tokio::spawn(async move {
                let mut stats = vec![Stats::default(); kinds];
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    let more = match &limit {
                        Limit::Time(d) => start.elapsed() < *d,
                        Limit::Ops(n) => seq < *n,
                        Limit::Until(stop) => !stop.load(Ordering::Relaxed),
                    };
                    if !more {
                        break;
                    }
                    let began = Instant::now();
                    let sample = op(seq).await;
                    let stats = &mut stats[sample.kind];
                    match sample.result {
                        Ok(bytes) => stats.record_ok(began.elapsed(), bytes),
                        Err(error) => stats.record_error(&error),
                    }
                }
                stats
            })
        })
        .collect();
    let mut total = vec![Stats::default(); kinds];
    for worker in workers {
        // A worker only ends early by panicking, which no operation does.
        if let Ok(stats) = worker.await {
            for (sum, s) in total.iter_mut().zip(&stats) {
                sum.merge(s);
            }
        }
    }
    Outcome {
        elapsed: start.elapsed(),
        stats: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_operation_budget_is_spent_exactly() {
        let outcome = run(2, 4, Limit::Ops(10), |seq| async move {
            Sample {
                kind: (seq % 2) as usize,
                result: Ok(1),
            }
        })
        .await;
        assert_eq!(outcome.stats[0].ok + outcome.stats[1].ok, 10);
        assert_eq!(outcome.stats[0].bytes, 5);
    }

    #[tokio::test]
    async fn a_time_limit_stops_the_workers() {
        let outcome = run(1, 2, Limit::Time(Duration::from_millis(50)), |_| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Sample::from(Err(OpError::invalid("op", "no")))
        })
        .await;
        assert!(outcome.elapsed < Duration::from_secs(1));
        assert!(outcome.stats[0].errors > 0);
        assert_eq!(outcome.stats[0].ok, 0);
    }
}
