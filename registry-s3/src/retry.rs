//! Bounded retries with backoff around single object-store requests, with
//! every attempt reported to the observer (object_store's own retries are
//! off, so each retry is counted and each request is timed).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::Error as StoreError;
use registry_core::observe::Observer;

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per request, the first one included.
    pub attempts: u32,
    /// The first pause; each next one doubles, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// No new attempt starts after this long.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            deadline: Duration::from_secs(20),
        }
    }
}

/// Whether a failure may go away on its own.
fn transient(e: &StoreError) -> bool {
    matches!(e, StoreError::Generic { .. } | StoreError::JoinError { .. })
}

fn outcome(e: &StoreError) -> &'static str {
    match e {
        StoreError::NotFound { .. } => "not_found",
        StoreError::AlreadyExists { .. } | StoreError::Precondition { .. } => "conflict",
        StoreError::PermissionDenied { .. } | StoreError::Unauthenticated { .. } => "denied",
        _ => "error",
    }
}

/// Runs `op` until it succeeds, fails for good, or the policy runs out.
pub async fn call<T, F, Fut>(
    observer: &Arc<dyn Observer>,
    policy: RetryPolicy,
    kind: &'static str,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let started = Instant::now();
    let mut pause = policy.backoff;
    let mut attempt = 1;
    loop {
        let t = Instant::now();
        let result = op().await;
        match &result {
            Ok(_) => observer.store_request(kind, "ok", t.elapsed()),
            Err(e) => observer.store_request(kind, outcome(e), t.elapsed()),
        }
        let again = match &result {
            Err(e) => {
                transient(e)
                    && attempt < policy.attempts
                    && started.elapsed() + pause < policy.deadline
            }
            Ok(_) => false,
        };
        if !again {
            return result;
        }
        observer.store_retry(kind);
        // Jitter keeps many clients from retrying in step.
        let jitter = rand::random_range(0.5..1.0);
        tokio::time::sleep(pause.mul_f64(jitter)).await;
        pause = (pause * 2).min(policy.max_backoff);
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_core::observe::NoObserver;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn flaky() -> StoreError {
        StoreError::Generic {
            store: "S3",
            source: "connection reset".into(),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_a_bounded_number_of_times() {
        let obs: Arc<dyn Observer> = Arc::new(NoObserver);
        let policy = RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let tries = AtomicU32::new(0);
        let r: Result<(), _> = call(&obs, policy, "get", || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(flaky())
        })
        .await;
        assert!(r.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        let tries = AtomicU32::new(0);
        let r = call(&obs, policy, "get", || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0 => Err(flaky()),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        let tries = AtomicU32::new(0);
        let r: Result<(), _> = call(&obs, policy, "get", || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::NotFound {
                path: "x".into(),
                source: "gone".into(),
            })
        })
        .await;
        assert!(r.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1, "not found is final");
    }
}
