//! Metrics of the object store behind the blob store: requests by kind and
//! outcome, their latency, and retries.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

pub struct StoreMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    retries: IntCounterVec,
}

impl StoreMetrics {
    pub fn new(r: &Registry, buckets: Vec<f64>) -> StoreMetrics {
        let requests = IntCounterVec::new(
            Opts::new(
                "berth_object_store_requests_total",
                "Requests to the object store, by kind (get, put, head, part, ...) and outcome.",
            ),
            &["kind", "outcome"],
        )
        .expect("metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "berth_object_store_request_duration_seconds",
                "Time each object store request took, by kind.",
            )
            .buckets(buckets),
            &["kind"],
        )
        .expect("metric");
        let retries = IntCounterVec::new(
            Opts::new(
                "berth_object_store_retries_total",
                "Object store requests tried again after a transient failure, by kind.",
            ),
            &["kind"],
        )
        .expect("metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(retries.clone()),
        ] {
            r.register(c).expect("metric names are unique");
        }
        StoreMetrics {
            requests,
            duration,
            retries,
        }
    }

    pub fn request(&self, kind: &str, outcome: &str, took: Duration) {
        self.requests.with_label_values(&[kind, outcome]).inc();
        self.duration
            .with_label_values(&[kind])
            .observe(took.as_secs_f64());
    }

    pub fn retry(&self, kind: &str) {
        self.retries.with_label_values(&[kind]).inc();
    }
}
