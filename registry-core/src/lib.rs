//! Berth's domain: validated names, references and digests; manifest
//! parsing; the blob store; the metadata index with its reference counts; and
//! [`Registry`], which combines them into the operations of the OCI
//! distribution API. Nothing here knows HTTP.

pub mod blob;
pub mod check;
pub mod digest;
pub mod error;
pub mod fence;
pub mod index;
pub mod manifest;
pub mod names;
pub mod observe;

pub use digest::{Algorithm, Digest, Hasher};
pub use error::{Error, ErrorCode, Result};
pub use names::{Reference, RepoName, Tag};
pub mod registry;

pub use registry::{Limits, Registry, StoredManifest};
