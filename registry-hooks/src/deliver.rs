//! One delivery attempt: POST the event, signed; a 2xx answer is a
//! delivery, anything else (another status, a redirect, a timeout, a
//! connection that fails) is a failed attempt. And the pause before the
//! next attempt.

use std::time::Duration;

use crate::config::Endpoint;
use crate::event::{CONTENT_TYPE, SIGNATURE_HEADER, signature};

/// The HTTP client of one endpoint: its timeout, no redirects (a signed
/// POST goes where it was configured to go, or fails).
pub fn client(endpoint: &Endpoint) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(endpoint.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("an HTTP client with rustls")
}

/// POSTs `body` to the endpoint; `Err` says why it was not delivered.
pub async fn attempt(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    body: &[u8],
    now_secs: i64,
) -> Result<(), String> {
    let mut req = client
        .post(endpoint.url.clone())
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .body(body.to_vec());
    if let Some(secret) = &endpoint.secret {
        req = req.header(SIGNATURE_HEADER, signature(secret, now_secs, body));
    }
    match req.send().await {
        Ok(res) if res.status().is_success() => Ok(()),
        Ok(res) => Err(format!("answered {}", res.status())),
        Err(e) if e.is_timeout() => Err(format!(
            "no answer within {}",
            humantime_serde::re::humantime::format_duration(endpoint.timeout)
        )),
        Err(e) => Err(without_url(&e)),
    }
}

/// A client error without the URL (which may carry credentials), with its
/// causes.
fn without_url(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut out = e.to_string();
    if let Some(u) = e.url() {
        out = out
            .replace(&format!(" ({u})"), "")
            .replace(u.as_str(), "<url>");
    }
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The pause after `failures` failed attempts in a row (at least 1):
/// `backoff_min` doubled per failure, at most `backoff_max`, then scaled
/// by a random factor in [0.5, 1] so that endpoints that failed together
/// do not retry together.
pub fn backoff(endpoint: &Endpoint, failures: u32) -> Duration {
    let doubled = endpoint
        .backoff_min
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(30)));
    doubled
        .min(endpoint.backoff_max)
        .mul_f64(rand::random_range(0.5..=1.0))
}
