//! Blobs in any S3-compatible object store (AWS S3, Ceph RGW, MinIO,
//! Garage, ...), over Apache Arrow's `object_store` crate, which speaks the
//! S3 API (with its multipart uploads, ranged reads, bulk deletes and
//! presigned URLs) without the weight of a full SDK.
//!
//! # What is durable when
//!
//! - An acknowledged chunk is in the bucket before its request is answered:
//!   as a part of the upload's multipart object (once a part's worth of
//!   bytes has arrived) or as a small object of its own (see [`upload`]);
//!   an empty one marks an upload whose bytes are all in parts, so every
//!   upload holding data has an object a listing shows. What the upload
//!   holds is recorded in its index row after that. A request that fails
//!   aborts the multipart upload it started.
//! - A blob becomes visible only when its object is complete: one PUT, a
//!   completed multipart upload, or a server-side copy of the completed
//!   upload object, all inside the registry's fence pass and before the
//!   index row that names it is committed. A digest that does not match
//!   never reaches a content address.
//! - A sweep's deletes happen after the index transaction that forgot the
//!   blobs committed, inside the fence.
//!
//! # What a crash leaves, and who removes it
//!
//! - An object at a content address without an index row (a crash between
//!   completing it and committing the row, or between a sweep's commit and
//!   its deletes): the collector's reconciliation lists the bucket a page
//!   at a time, off the fence, and deletes it once it is older than the
//!   grace period.
//! - Upload objects no session owns: start-up recovery deletes them.
//! - A multipart upload started by a request that died before its state was
//!   recorded: invisible to listings of objects, so the bucket's lifecycle
//!   rule `AbortIncompleteMultipartUpload` (or Garage's
//!   `garage bucket cleanup-incomplete-uploads`) removes it; aborted and
//!   purged sessions abort theirs. A session whose multipart upload the
//!   rule aborted while it was in use ends with `BLOB_UPLOAD_INVALID`.

mod keys;
mod retry;
mod store;
pub mod upload;

pub use keys::Location;
pub use retry::RetryPolicy;
pub use store::{S3BlobStore, S3Options};
