//! The collector's error type.

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// A run is already in progress; carries its id.
    #[error("garbage collection run {0} is already in progress")]
    Running(u64),
    /// Another node of the cluster is collecting.
    #[error("a garbage collection run is in progress on another node")]
    RunningElsewhere,
    /// A retention run that deletes is in progress (here or elsewhere).
    #[error("a retention run is in progress")]
    RetentionRunning,
    #[error("invalid setting: {0}")]
    Invalid(String),
    #[error(transparent)]
    Core(#[from] registry_core::Error),
}
