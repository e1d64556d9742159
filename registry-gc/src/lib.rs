//! Online garbage collection for Berth.
//!
//! Filled by the garbage-collection work: candidates come from the index's
//! refcount-zero table, and a sweep runs behind a short write fence.
