//! What one case measured: latencies in an HDR histogram, operations,
//! bytes and errors, and the figures derived from them.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::client::OpError;

/// Distinct error messages kept per case.
const MAX_ERROR_SAMPLES: usize = 5;
/// Longest latency the histogram tells apart (longer ones count as this).
const MAX_LATENCY_US: u64 = 3_600_000_000;

const MIB: f64 = 1024.0 * 1024.0;

/// Measurements of one kind of operation, by one worker or merged.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of successful operations, in microseconds.
    latency_us: Histogram<u64>,
    pub ok: u64,
    pub bytes: u64,
    pub errors: u64,
    /// Errors by class: HTTP status, `transport`, `invalid`.
    pub error_codes: BTreeMap<String, u64>,
    /// The first few distinct error messages.
    pub error_samples: Vec<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            ok: 0,
            bytes: 0,
            errors: 0,
            error_codes: BTreeMap::new(),
            error_samples: Vec::new(),
        }
    }
}

impl Stats {
    pub fn record_ok(&mut self, latency: Duration, bytes: u64) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(us.max(1));
        self.ok += 1;
        self.bytes += bytes;
    }

    pub fn record_error(&mut self, error: &OpError) {
        self.errors += 1;
        *self.error_codes.entry(error.code()).or_default() += 1;
        self.add_sample(error.to_string());
    }

    fn add_sample(&mut self, message: String) {
        if self.error_samples.len() < MAX_ERROR_SAMPLES && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms with the same bounds merge");
        self.ok += other.ok;
        self.bytes += other.bytes;
        self.errors += other.errors;
        for (code, n) in &other.error_codes {
            *self.error_codes.entry(code.clone()).or_default() += n;
        }
        for message in &other.error_samples {
            self.add_sample(message.clone());
        }
    }

    pub fn latency(&self) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        if self.latency_us.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: ms(self.latency_us.value_at_quantile(0.50)),
            p90: ms(self.latency_us.value_at_quantile(0.90)),
            p99: ms(self.latency_us.value_at_quantile(0.99)),
            max: ms(self.latency_us.max()),
            mean: self.latency_us.mean() / 1000.0,
        }
    }
}

/// Latency of successful operations, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub workload: String,
    pub case: String,
    pub concurrency: usize,
    pub elapsed_s: f64,
    /// Successful operations.
    pub ops: u64,
    pub errors: u64,
    pub ops_per_s: f64,
    pub bytes: u64,
    pub mib_per_s: f64,
    pub latency_ms: Latency,
    pub error_codes: BTreeMap<String, u64>,
    pub error_samples: Vec<String>,
}

impl CaseResult {
    pub fn new(
        workload: &str,
        case: &str,
        concurrency: usize,
        elapsed: Duration,
        stats: &Stats,
    ) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        CaseResult {
            workload: workload.to_string(),
            case: case.to_string(),
            concurrency,
            elapsed_s: elapsed.as_secs_f64(),
            ops: stats.ok,
            errors: stats.errors,
            ops_per_s: stats.ok as f64 / secs,
            bytes: stats.bytes,
            mib_per_s: stats.bytes as f64 / MIB / secs,
            latency_ms: stats.latency(),
            error_codes: stats.error_codes.clone(),
            error_samples: stats.error_samples.clone(),
        }
    }
}

/// Nearest-rank percentile of `values` (any order); 0 when empty.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::client::{Failure, OpError};

    #[test]
    fn merged_stats_add_up() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for ms in 1..=100 {
            a.record_ok(Duration::from_millis(ms), 10);
        }
        b.record_ok(Duration::from_secs(2), 5);
        let error = OpError {
            what: "PUT upload",
            failure: Failure::Status(503),
            detail: "fenced".into(),
        };
        b.record_error(&error);
        b.record_error(&error);
        a.merge(&b);
        assert_eq!((a.ok, a.bytes, a.errors), (101, 1005, 2));
        assert_eq!(a.error_codes["503"], 2);
        assert_eq!(
            a.error_samples,
            vec!["PUT upload: HTTP 503: fenced".to_string()]
        );
        let l = a.latency();
        assert!((50.0..=52.0).contains(&l.p50), "{l:?}");
        assert!((1990.0..=2010.0).contains(&l.max), "{l:?}");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[3.0], 0.01), 3.0);
    }
}
