//! Errors the agent reports to its user, with their exit codes.

use crate::datapath::DatapathError;

/// Exit code for usage errors and an environment that cannot run the agent.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for failures while running.
pub const EXIT_FAILURE: i32 = 1;

/// An error that stops the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Missing privileges.
    #[error("insufficient privileges: cas-audit needs root, or CAP_BPF (or CAP_SYS_ADMIN) and CAP_NET_ADMIN; missing {0}")]
    Privilege(String),
    /// The kernel cannot run the datapath.
    #[error("this kernel cannot run cas-audit: {0}")]
    Kernel(String),
    /// A bad flag value or combination.
    #[error("{0}")]
    Usage(String),
    /// A bad address set (file, place and reason).
    #[error("address set {0}")]
    Set(crate::addrset::SetError),
    /// The datapath failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
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
            Error::Privilege(_) | Error::Kernel(_) | Error::Usage(_) | Error::Set(_) => EXIT_USAGE,
            Error::Datapath(DatapathError::UnknownInterface(_) | DatapathError::NoObject) => {
                EXIT_USAGE
            }
            Error::Datapath(
                DatapathError::TooManyRanges { .. } | DatapathError::TooManyPortProfiles { .. },
            ) => EXIT_USAGE,
            // Pinned state that cannot be taken over: the user decides.
            Error::Datapath(DatapathError::Pin(
                crate::pin::PinError::NotBpffs(..)
                | crate::pin::PinError::Layout { .. }
                | crate::pin::PinError::Incomplete { .. }
                | crate::pin::PinError::OtherSet { .. },
            )) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// Checks what the datapath needs before touching the kernel: privileges
/// and a kernel with BPF and BTF.
pub fn preflight() -> Result<(), Error> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_NET_ADMIN: u64 = 1 << 12;
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_BPF: u64 = 1 << 39;
    let mut missing = Vec::new();
    if cap_eff & (CAP_BPF | CAP_SYS_ADMIN) == 0 {
        missing.push("CAP_BPF");
    }
    if cap_eff & CAP_NET_ADMIN == 0 {
        missing.push("CAP_NET_ADMIN");
    }
    if !missing.is_empty() {
        return Err(Error::Privilege(missing.join(" and ")));
    }
    if !std::path::Path::new("/proc/sys/kernel/unprivileged_bpf_disabled").exists() {
        return Err(Error::Kernel(
            "no BPF system call (needs CONFIG_BPF_SYSCALL=y)".into(),
        ));
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(Error::Kernel(
            "no BTF at /sys/kernel/btf/vmlinux (needs CONFIG_DEBUG_INFO_BTF=y and Linux >= 5.8)"
                .into(),
        ));
    }
    Ok(())
}
