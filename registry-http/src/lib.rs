//! Berth's HTTP layer: the only crate that knows HTTP. It parses each
//! request once into a typed [`route::Endpoint`], calls one operation of
//! `registry_core::Registry`, and renders the result or the OCI error
//! envelope. The `registry` binary lives here too.

pub mod activity;
pub mod admin;
pub mod api;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod metrics;
pub mod route;
pub mod server;
pub mod tls;
