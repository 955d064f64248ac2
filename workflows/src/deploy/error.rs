//! Errors of deploy operations requested by an operator (through `morpheus deploy …`).

use morpheus_engine::EngineError;

use super::spec::SpecError;
use super::store::StoreError;

/// Why a deploy operation was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// Bad input, naming the field.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// A spec, run or snapshot that does not exist (for this agent).
    #[error("{0}")]
    NotFound(String),
    /// The record exists but is in a state that does not allow the operation.
    #[error("{0}")]
    State(String),
    /// The database.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The Docker engine.
    #[error("{0}")]
    Sandbox(String),
}

impl From<StoreError> for DeployError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Engine(error) => Self::Engine(error),
            StoreError::NotFound(message) => Self::NotFound(message),
            StoreError::InvalidTransition(message) => Self::State(message),
        }
    }
}
