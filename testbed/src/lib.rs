//! Real external servers for the test suite, started on loopback in
//! temporary directories and stopped when their handle is dropped.
//!
//! - [`Garage`]: the Garage S3-compatible object store, one node or a
//!   cluster, with a key and a bucket ready to use.
//! - [`Postgres`]: a throwaway PostgreSQL 15 with a trusted role and a
//!   database.
//! - [`Nginx`]: nginx as a round-robin HTTP load balancer in front of
//!   servers the test started.
//! - [`Receiver`]: a webhook receiver that records what it is sent, and can
//!   be up, failing, slow or not listening.
//!
//! Every starter blocks until its server answers, and panics with a loud
//! message naming the package to install when the server's binary is
//! missing: a test that needs one of these servers never skips. Starting is
//! blocking work (it runs the servers' own command-line tools), so call the
//! starters at the top of a `#[tokio::test]` before spawning anything on the
//! runtime, or from `tokio::task::spawn_blocking`. Keep the handle in the
//! test function: it is its `Drop` that stops the server and removes its
//! directory (a handle in a `static` is never dropped, and its server would
//! outlive the test binary).
//!
//! Ports come from [`free_port`]: the kernel picks a free loopback port, and
//! a server that still loses the race for it is started again on new ports.
//!
//! # Known Garage 2.5.0 bug
//!
//! `ListObjectsV2` with a `start-after` that sorts *before* the `prefix`
//! returns no objects at all when some key outside the prefix lies between
//! the two (for example `prefix=blobs/`, `start-after=a` and a key `attic`),
//! where S3 returns every key under the prefix. A store that lists with an
//! offset (`object_store`'s `list_with_offset`) must not send Garage an
//! offset below its prefix: drop the offset when it sorts before the prefix
//! (every key under the prefix is after it anyway). `tests/garage.rs` pins
//! the bug, so that a Garage upgrade that fixes it is noticed.
mod garage;
mod nginx;
mod ports;
mod postgres;
mod process;
mod receiver;

pub use garage::{Garage, MultipartUpload};
pub use nginx::Nginx;
pub use ports::{free_addr, free_port};
pub use postgres::Postgres;
pub use receiver::{Mode, Received, Receiver};
