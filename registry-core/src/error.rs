//! The one error type of the core, and the OCI error code each variant maps to.
//!
//! This crate knows nothing about HTTP: it names the OCI distribution-spec error
//! code of every failure, and `registry-http` maps codes to status lines.

use crate::digest::Digest;

/// The error codes of the OCI distribution specification (plus the retryable
/// `UNAVAILABLE` used while a garbage-collection fence is held).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// Not in the spec's table: the request could not be served right now
    /// (a garbage-collection fence, shutting down) and should be retried.
    Unavailable,
    /// Not in the spec's table: a storage or internal failure.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL_ERROR",
        }
    }
}

/// Every failure the core can report. Each variant names the OCI error code
/// it is reported under (see [`Error::code`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("invalid tag or reference: {0}")]
    ReferenceInvalid(String),
    #[error("invalid digest: {0}")]
    DigestInvalid(String),
    #[error("provided digest {expected} did not match uploaded content ({actual})")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(Digest),
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    #[error("blob upload invalid: {0}")]
    UploadInvalid(String),
    /// A chunk that does not start where the upload currently ends; the
    /// upload's current size is carried so the client can resume.
    #[error("chunk out of order: upload is at offset {offset}")]
    RangeNotSatisfiable { offset: u64 },
    #[error("requested range not satisfiable: blob is {size} bytes")]
    BlobRangeNotSatisfiable { size: u64 },
    #[error("provided length did not match content length: {0}")]
    SizeInvalid(String),
    #[error("manifest unknown to registry")]
    ManifestUnknown,
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest references a blob unknown to this repository: {0}")]
    ManifestBlobUnknown(Digest),
    #[error("manifest references a manifest unknown to this repository: {0}")]
    ManifestChildUnknown(Digest),
    #[error("manifest is {size} bytes, larger than the limit of {limit} bytes")]
    ManifestTooLarge { size: u64, limit: u64 },
    #[error("{0}")]
    Unsupported(String),
    /// The operation would break something still in use (e.g. deleting a
    /// manifest that an index in the same repository lists).
    #[error("{0}")]
    Conflict(String),
    /// A rule an administrator wrote does not parse (a bad glob or regex).
    #[error("{0}")]
    InvalidRule(String),
    /// A rule forbids the change (an immutable tag); names the rule.
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Unavailable(String),
    /// A filesystem the store writes to is full, or would fall below the
    /// free space kept ([`crate::space`]): nothing was stored; retry once
    /// space is freed.
    #[error("{0}")]
    StorageFull(String),
    /// An I/O failure other than a full disk (every `?` on an
    /// [`std::io::Error`] goes through [`Error::from`], which tells them
    /// apart).
    #[error("i/o error: {0}")]
    Io(std::io::Error),
    #[error("index error: {0}")]
    Storage(String),
    /// A rule found the index in a state it cannot be in, or code panicked:
    /// a bug. The request fails alone.
    #[error("internal error: {0}")]
    Bug(String),
}

impl Error {
    /// The OCI error code this failure is reported under.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NameInvalid(_) => ErrorCode::NameInvalid,
            Error::NameUnknown => ErrorCode::NameUnknown,
            // A malformed tag in a manifest path is reported as MANIFEST_INVALID
            // by the reference registry when pushing, and as unknown when reading;
            // the HTTP layer picks per method. Default to the push case.
            Error::ReferenceInvalid(_) => ErrorCode::ManifestInvalid,
            Error::DigestInvalid(_) | Error::DigestMismatch { .. } => ErrorCode::DigestInvalid,
            Error::BlobUnknown(_) => ErrorCode::BlobUnknown,
            Error::UploadUnknown => ErrorCode::BlobUploadUnknown,
            Error::UploadInvalid(_) | Error::RangeNotSatisfiable { .. } => {
                ErrorCode::BlobUploadInvalid
            }
            Error::BlobRangeNotSatisfiable { .. } => ErrorCode::BlobUnknown,
            Error::SizeInvalid(_) | Error::ManifestTooLarge { .. } => ErrorCode::SizeInvalid,
            Error::ManifestUnknown => ErrorCode::ManifestUnknown,
            Error::ManifestInvalid(_) => ErrorCode::ManifestInvalid,
            Error::ManifestBlobUnknown(_) | Error::ManifestChildUnknown(_) => {
                ErrorCode::ManifestBlobUnknown
            }
            Error::Unsupported(_) | Error::InvalidRule(_) => ErrorCode::Unsupported,
            Error::Conflict(_) | Error::Denied(_) => ErrorCode::Denied,
            Error::Unavailable(_) | Error::StorageFull(_) => ErrorCode::Unavailable,
            Error::Io(_) | Error::Storage(_) | Error::Bug(_) => ErrorCode::Internal,
        }
    }
}

/// Whether an I/O error means the filesystem (or the user's quota) is full.
pub fn is_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

/// Every `?` on an I/O error comes through here, so a full disk is
/// reported as [`Error::StorageFull`] (a retryable "insufficient storage")
/// wherever it is met, in the blob store's files or the index's, and never
/// as an internal error.
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        if is_full(&e) {
            Error::StorageFull(format!(
                "storage is full: no space left on the filesystem ({e})"
            ))
        } else {
            Error::Io(e)
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn enospc_and_quota_are_full_other_errors_are_not() {
        assert!(is_full(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_full(&io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(is_full(&io::Error::from(io::ErrorKind::StorageFull)));
        assert!(!is_full(&io::Error::from_raw_os_error(libc::EIO)));
        let full: Error = io::Error::from_raw_os_error(libc::ENOSPC).into();
        assert!(matches!(full, Error::StorageFull(_)), "{full:?}");
        assert_eq!(full.code(), ErrorCode::Unavailable);
        let other: Error = io::Error::from_raw_os_error(libc::EACCES).into();
        assert!(matches!(other, Error::Io(_)), "{other:?}");
    }
}
