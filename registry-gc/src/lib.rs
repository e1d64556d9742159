//! Online garbage collection for Berth.
//!
//! The index already knows the garbage: blob reference counts change in the
//! transaction that stores or deletes a manifest, and blobs at zero sit in
//! their own table. The [`Collector`] reads candidates from there, and
//! deletes them behind a short write fence (see `registry_core::coord`,
//! `registry_core::registry::gc` and the module documentation of `run` for
//! the safety argument), so
//! pushes and pulls go on while it runs.

pub mod collector;
pub mod config;
pub mod error;
pub mod report;
pub mod retention;
mod run;
pub mod schedule;

pub use collector::{Collector, RunRequest};
pub use config::{GcConfig, UntaggedRule};
pub use error::GcError;
pub use report::{RunReport, RunState};
pub use retention::{Retainer, RetentionConfig};
