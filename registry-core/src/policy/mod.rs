//! Rules an operator sets on tags: immutable tags, and retention (which
//! tags a policy deletes). Plain data from the configuration (or the admin
//! API), compiled once; the checks run inside the transactions they guard.

pub mod immutable;
pub mod pattern;
pub mod retention;

pub use immutable::{Immutable, ImmutableRule};
pub use pattern::{RepoGlob, TagPattern};
pub use retention::{Retention, RetentionRule};
