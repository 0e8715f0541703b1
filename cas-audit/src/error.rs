//! Errors the agent reports to its user, with their exit codes.

use crate::datapath::DatapathError;

/// Exit code of success.
pub const EXIT_SUCCESS: i32 = 0;
/// Exit code of a command's own negative answer (`check`: not everything
/// is reachable; `sets diff`: the sets differ; `doctor`: a check failed).
pub const EXIT_NEGATIVE: i32 = 1;
/// Exit code for usage errors and an environment that cannot run the agent.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for failures while running.
pub const EXIT_FAILURE: i32 = 1;

/// An error that stops the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Missing privileges, or a kernel that cannot run the datapath.
    #[error(transparent)]
    Preflight(#[from] crate::host::caps::PreflightError),
    /// A bad flag value or combination.
    #[error("{0}")]
    Usage(String),
    /// A bad address set (file, place and reason).
    #[error("address set {0}")]
    Set(crate::addrset::SetError),
    /// The datapath failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// The log directory cannot be used.
    #[error(transparent)]
    LogDir(#[from] crate::output::logdir::LogDirError),
    /// An output file cannot be created.
    #[error(transparent)]
    Output(#[from] crate::output::OpenError),
    /// Writing output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

// Not `#[from]`: that would also make the set error this one's cause, and
// the binary would print it twice.
impl From<crate::addrset::SetError> for Error {
    fn from(e: crate::addrset::SetError) -> Self {
        Error::Set(e)
    }
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Preflight(_) | Error::Usage(_) | Error::Set(_) => EXIT_USAGE,
            Error::Datapath(DatapathError::UnknownInterface(_) | DatapathError::NoObject) => {
                EXIT_USAGE
            }
            Error::Datapath(
                DatapathError::TooManyRanges { .. } | DatapathError::TooManyPortProfiles { .. },
            ) => EXIT_USAGE,
            // Pinned state that cannot be taken over: the user decides.
            Error::Datapath(DatapathError::Pin(
                crate::datapath::pin::PinError::NotBpffs(..)
                | crate::datapath::pin::PinError::Layout { .. }
                | crate::datapath::pin::PinError::Incomplete { .. }
                | crate::datapath::pin::PinError::OtherSet { .. }
                | crate::datapath::pin::PinError::Private { .. },
            )) => EXIT_USAGE,
            Error::LogDir(crate::output::logdir::LogDirError::Bounds(_)) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
