//! Building blocks for writing cases: the `Step` result type, status and
//! header assertions that explain themselves, and the recorder that turns
//! steps into [`CaseResult`]s.

use crate::client::Response;
use crate::report::{CaseResult, Outcome};

/// Why a case did not pass.
#[derive(Debug)]
pub(crate) enum Problem {
    Fail(String),
    Skip(String),
}

impl From<anyhow::Error> for Problem {
    fn from(error: anyhow::Error) -> Problem {
        Problem::Fail(format!("request failed: {error:#}"))
    }
}

/// Result of a case or of a helper used by cases.
pub(crate) type Step<T = ()> = Result<T, Problem>;

/// Fails the current step with a formatted message.
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::check::Problem::Fail(format!($($arg)*)))
    };
}

/// Fails the current step unless the condition holds.
macro_rules! check {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::check::fail!($($arg)*);
        }
    };
}

pub(crate) use {check, fail};

pub(crate) fn skip<T>(reason: impl Into<String>) -> Step<T> {
    Err(Problem::Skip(reason.into()))
}

/// Unwraps state produced by an earlier case, failing with an explanation
/// when that case did not succeed.
pub(crate) fn prerequisite<T>(value: Option<T>, what: &str) -> Step<T> {
    value.ok_or_else(|| {
        Problem::Fail(format!(
            "not evaluated: prerequisite \"{what}\" did not succeed earlier in this workflow"
        ))
    })
}

/// Fails with an explanation unless the earlier case that sets `done`
/// succeeded.
pub(crate) fn require(done: bool, what: &str) -> Step {
    prerequisite(done.then_some(()), what)
}

/// Adds what was being attempted to a failure message.
pub(crate) trait StepExt<T> {
    fn during(self, what: &str) -> Step<T>;
}

impl<T> StepExt<T> for Step<T> {
    fn during(self, what: &str) -> Step<T> {
        self.map_err(|problem| match problem {
            Problem::Fail(reason) => Problem::Fail(format!("{what}: {reason}")),
            skip @ Problem::Skip(_) => skip,
        })
    }
}

/// Human-readable list of acceptable status codes.
fn statuses(expected: &[u16]) -> String {
    let names: Vec<String> = expected
        .iter()
        .map(|code| {
            let reason = reqwest::StatusCode::from_u16(*code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            format!("{code} {reason}").trim_end().to_owned()
        })
        .collect();
    names.join(" or ")
}

/// Requires one of the `expected` status codes.
pub(crate) fn expect_status(response: &Response, expected: &[u16]) -> Step {
    check!(
        expected.contains(&response.status_code()),
        "expected status {}, got {}",
        statuses(expected),
        response.describe()
    );
    Ok(())
}

/// Requires a 2xx status.
pub(crate) fn expect_success(response: &Response) -> Step {
    check!(
        response.status.is_success(),
        "expected a 2xx status, got {}",
        response.describe()
    );
    Ok(())
}

/// Requires a header and returns its value.
pub(crate) fn expect_header<'r>(response: &'r Response, name: &str) -> Step<&'r str> {
    match response.header(name) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => fail!(
            "expected a non-empty {name} header, got {}",
            response.describe()
        ),
    }
}

/// Requires a header with exactly the given value.
pub(crate) fn expect_header_eq(response: &Response, name: &str, expected: &str) -> Step {
    let actual = expect_header(response, name)?;
    check!(
        actual == expected,
        "expected {name}: {expected}, got {name}: {actual} in {}",
        response.describe()
    );
    Ok(())
}

/// When the (optional) header is present, requires the given value.
pub(crate) fn header_if_present_eq(response: &Response, name: &str, expected: &str) -> Step {
    match response.header(name) {
        Some(actual) if actual != expected => fail!(
            "expected {name} to be {expected} when present, got {actual} in {}",
            response.describe()
        ),
        _ => Ok(()),
    }
}

/// When `Docker-Content-Digest` and `Content-Length` are present, requires
/// them to match the expected digest and size.
pub(crate) fn content_headers_match(response: &Response, digest: &str, size: usize) -> Step {
    header_if_present_eq(response, "Docker-Content-Digest", digest)?;
    header_if_present_eq(response, "Content-Length", &size.to_string())
}

/// Requires the response body to be byte-for-byte `expected`.
pub(crate) fn expect_body(response: &Response, expected: &[u8]) -> Step {
    check!(
        response.body.as_ref() == expected,
        "expected the body to be the {} bytes that were uploaded (digest {}), got {} bytes \
         with digest {} from {}",
        expected.len(),
        crate::fixtures::sha256_digest(expected),
        response.body.len(),
        crate::fixtures::sha256_digest(&response.body),
        response.summary_line()
    );
    Ok(())
}

/// When the body is an OCI error document, requires `code` among its errors.
/// Bodies in other formats are allowed by the spec and accepted.
pub(crate) fn error_code_if_json(response: &Response, code: &str) -> Step {
    if let Some(codes) = response.error_codes() {
        check!(
            codes.iter().any(|c| c == code),
            "expected error code {code} in the error body, got {codes:?} from {}",
            response.describe()
        );
    }
    Ok(())
}

/// Collects the results of one workflow's cases.
pub(crate) struct Recorder {
    workflow: &'static str,
    results: Vec<CaseResult>,
}

impl Recorder {
    pub fn new(workflow: &'static str) -> Recorder {
        Recorder {
            workflow,
            results: Vec::new(),
        }
    }

    /// Records a case; returns whether it passed.
    pub fn record(&mut self, name: impl Into<String>, step: Step) -> bool {
        let outcome = match step {
            Ok(()) => Outcome::Passed,
            Err(Problem::Fail(reason)) => Outcome::Failed(reason),
            Err(Problem::Skip(reason)) => Outcome::Skipped(reason),
        };
        let passed = outcome == Outcome::Passed;
        self.results.push(CaseResult {
            workflow: self.workflow,
            name: name.into(),
            outcome,
        });
        passed
    }

    pub fn finish(self) -> Vec<CaseResult> {
        self.results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_are_readable() {
        assert_eq!(statuses(&[201, 202]), "201 Created or 202 Accepted");
        assert_eq!(statuses(&[599]), "599");
    }

    #[test]
    fn recorder_maps_problems_to_outcomes() {
        let mut recorder = Recorder::new(crate::report::PULL);
        assert!(recorder.record("ok", Ok(())));
        assert!(!recorder.record("bad", Err(Problem::Fail("x".into()))));
        assert!(!recorder.record("opt", skip("y")));
        assert!(!recorder.record("pre", prerequisite::<()>(None, "setup").map(|_| ())));
        let results = recorder.finish();
        assert_eq!(results[1].outcome, Outcome::Failed("x".into()));
        assert_eq!(results[2].outcome, Outcome::Skipped("y".into()));
        assert!(matches!(&results[3].outcome, Outcome::Failed(m) if m.contains("setup")));
    }
}
