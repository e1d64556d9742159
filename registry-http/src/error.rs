//! One error type for every response that is not a success: the spec's
//! JSON envelope `{"errors":[{"code","message","detail"}]}` with the right
//! status, for every method (HEAD gets the status and headers, no body).

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use registry_core::{Error, ErrorCode};

use crate::body::{Body, full};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub detail: serde_json::Value,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.as_str(),
            message: message.into(),
            detail: serde_json::Value::Null,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl AsRef<str>) -> ApiError {
        self.headers.push((name, value.as_ref().to_owned()));
        self
    }

    pub fn not_found() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::Unsupported,
            "no such endpoint in the OCI distribution API",
        )
    }

    pub fn method_not_allowed(allowed: &[http::Method]) -> ApiError {
        let list = allowed
            .iter()
            .map(http::Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            format!("method not allowed here; allowed: {list}"),
        )
        .with_header("allow", list)
    }

    /// The response, with a JSON body unless `head`.
    pub fn into_response(self, head: bool) -> http::Response<Body> {
        let body = serde_json::json!({
            "errors": [{"code": self.code, "message": self.message, "detail": self.detail}]
        });
        let bytes = Bytes::from(serde_json::to_vec(&body).expect("json"));
        let mut res = http::Response::new(if head {
            crate::body::empty()
        } else {
            full(bytes.clone())
        });
        *res.status_mut() = self.status;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(HeaderName::from_static(k), v);
            }
        }
        res
    }
}

/// Seconds a client is asked to wait after a push refused for lack of
/// space: space comes back when someone deletes or collects garbage, not
/// within a second.
pub const STORAGE_FULL_RETRY_AFTER: &str = "60";

fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::RangeNotSatisfiable { .. } | Error::BlobRangeNotSatisfiable { .. } => {
            StatusCode::RANGE_NOT_SATISFIABLE
        }
        Error::ManifestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::InvalidRule(_) => StatusCode::BAD_REQUEST,
        Error::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        _ => match e.code() {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        },
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = status_of(&e);
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "internal error");
            "internal error; the server log has the details".to_owned()
        } else {
            e.to_string()
        };
        let mut out = ApiError::new(status, e.code(), message);
        match &e {
            Error::BlobRangeNotSatisfiable { size } => {
                out = out.with_header("content-range", format!("bytes */{size}"));
            }
            Error::Unavailable(_) => {
                out = out.with_header("retry-after", "1");
            }
            Error::StorageFull(_) => {
                out = out.with_header("retry-after", STORAGE_FULL_RETRY_AFTER);
            }
            _ => {}
        }
        out
    }
}
