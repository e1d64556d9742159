//! The library half of the `registry` binary: its configuration, kept here
//! so that code outside the binary (the fuzz targets) loads it the way the
//! binary does.

pub mod config;
