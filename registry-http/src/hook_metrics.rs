//! Metrics of webhook deliveries, per endpoint: events delivered and
//! dropped, failed attempts, and events pending.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use registry_hooks::HookObserver;

use crate::metrics::Metrics;

pub struct HookMetrics {
    delivered: IntCounterVec,
    failures: IntCounterVec,
    dropped: IntCounterVec,
    pending: IntGaugeVec,
}

impl HookMetrics {
    pub fn new(r: &Registry) -> HookMetrics {
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["endpoint"]).expect("metric");
            r.register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        };
        let pending = IntGaugeVec::new(
            Opts::new(
                "berth_webhook_events_pending",
                "Events waiting for a webhook endpoint (reported by the node delivering it; others report 0).",
            ),
            &["endpoint"],
        )
        .expect("metric");
        r.register(Box::new(pending.clone()))
            .expect("metric names are unique");
        HookMetrics {
            delivered: counter(
                "berth_webhook_events_delivered_total",
                "Events a webhook endpoint acknowledged with a 2xx answer.",
            ),
            failures: counter(
                "berth_webhook_delivery_failures_total",
                "Webhook delivery attempts that failed (another status, a timeout, no connection); each is retried.",
            ),
            dropped: counter(
                "berth_webhook_events_dropped_total",
                "Events given up because they were older than the endpoint's max_age.",
            ),
            pending,
        }
    }
}

impl HookObserver for Metrics {
    fn endpoint(&self, name: &str) {
        let h = &self.hooks;
        for c in [&h.delivered, &h.failures, &h.dropped] {
            c.with_label_values(&[name]);
        }
        h.pending.with_label_values(&[name]).set(0);
    }

    fn delivered(&self, name: &str) {
        self.hooks.delivered.with_label_values(&[name]).inc();
    }

    fn failed(&self, name: &str) {
        self.hooks.failures.with_label_values(&[name]).inc();
    }

    fn dropped(&self, name: &str, n: u64) {
        self.hooks.dropped.with_label_values(&[name]).inc_by(n);
    }

    fn pending(&self, name: &str, n: u64) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.hooks.pending.with_label_values(&[name]).set(n);
    }
}
