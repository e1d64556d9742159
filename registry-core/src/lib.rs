//! Berth's domain: validated names, references and digests; manifest
//! parsing; the blob stores; the metadata index (its rules in [`model`],
//! over the table interface of [`db`]); the state a node shares with the
//! others ([`coord`]); and [`Registry`], which combines them into the
//! operations of the OCI distribution API. Nothing here knows HTTP.

pub mod blob;
pub mod check;
pub mod clock;
pub mod coord;
pub mod db;
pub mod digest;
pub mod durable;
pub mod error;
pub mod index;
pub mod manifest;
pub mod model;
pub mod names;
pub mod observe;
pub mod policy;
pub mod registry;
pub mod space;

pub use clock::Clock;
pub use digest::{Algorithm, Digest, Hasher};
pub use error::{Error, ErrorCode, Result};
pub use names::{Reference, RepoName, Tag};
pub use registry::{Limits, Options, Registry, StoredManifest};
