//! The webhook crate's error type.

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// A `[[webhooks]]` entry is not usable; says which and why.
    #[error("webhook {name:?}: {message}")]
    Config { name: String, message: String },
    #[error(transparent)]
    Core(#[from] registry_core::Error),
}

impl HookError {
    pub(crate) fn config(name: &str, message: impl Into<String>) -> HookError {
        HookError::Config {
            name: name.to_owned(),
            message: message.into(),
        }
    }
}
