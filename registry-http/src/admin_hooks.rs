//! `GET /admin/webhooks`: each configured endpoint (its URL without
//! credentials, never its secret), where its cursor stands, what waits,
//! and how its deliveries went.

use http::StatusCode;
use serde_json::json;

use crate::admin::{AdminApi, AdminResult, json_response};
use crate::error::ApiError;

impl AdminApi {
    pub(crate) async fn webhooks(&self) -> AdminResult {
        let list = match &self.webhooks {
            Some(hooks) => hooks.status().await.map_err(hook_error)?,
            None => Vec::new(),
        };
        Ok(json_response(StatusCode::OK, &json!({ "webhooks": list })))
    }
}

fn hook_error(e: registry_hooks::HookError) -> ApiError {
    match e {
        registry_hooks::HookError::Core(e) => e.into(),
        e => ApiError::from(registry_core::Error::Unsupported(e.to_string())),
    }
}
