//! Every way the agent can fail, each with its own exit code (README.md lists them), so that a
//! device's init system or a factory test bench can tell the causes apart.

/// An agent failure; `Display` is the one line printed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Provisioning is not configured, or a variable or flag is invalid.
    #[error("{0}")]
    NotConfigured(String),
    /// `.credentials` exists but cannot be read or makes no sense.
    #[error("{0}")]
    CorruptCredentials(String),
    /// The server answered NOT_FOUND.
    #[error(
        "provisioning refused (NOT_FOUND): {0}: the provision key or secret is wrong, or the profile does not allow provisioning"
    )]
    NotFound(String),
    /// The server answered FAILURE.
    #[error(
        "provisioning refused (FAILURE): {0}: the device may already be provisioned (re-provision policy REJECT: reset or delete it on the server), belong to another profile, not be pre-provisioned, or the requested credentials belong to another device"
    )]
    Refused(String),
    /// No usable answer from the server after every attempt.
    #[error("{0}")]
    Unreachable(String),
    /// The config directory or a file in it cannot be written.
    #[error("{0}")]
    Storage(String),
    /// `check`: no credentials are stored.
    #[error("{0}")]
    NothingStored(String),
    /// `check --connect`: the server refused the stored credentials.
    #[error("{0}")]
    CredentialsRejected(String),
}

impl AgentError {
    /// The process exit code for this failure (1 and 2 are taken by other errors and usage).
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::NotConfigured(_) => 3,
            AgentError::CorruptCredentials(_) => 4,
            AgentError::NotFound(_) => 5,
            AgentError::Refused(_) => 6,
            AgentError::Unreachable(_) => 7,
            AgentError::Storage(_) => 8,
            AgentError::NothingStored(_) => 9,
            AgentError::CredentialsRejected(_) => 10,
        }
    }
}
