//! Berth's HTTP layer: the only crate that knows HTTP. It parses each
//! request once into a typed [`route::Endpoint`], calls one operation of
//! `registry_core::Registry`, and renders the result or the OCI error
//! envelope. The `registry` binary that wires it up lives in
//! `registry-server`.

pub mod activity;
pub mod admin;
mod admin_hooks;
mod admin_rules;
pub mod api;
pub mod auth;
pub mod body;
pub mod error;
pub mod hook_metrics;
pub mod metrics;
pub mod ranges;
pub mod route;
pub mod server;
pub mod store_metrics;
pub mod tls;
pub mod ui;

/// Bytes for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
