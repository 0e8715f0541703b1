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
    #[error("insufficient privileges: cas-audit needs root, or CAP_BPF, CAP_PERFMON (CAP_SYS_ADMIN covers both) and CAP_NET_ADMIN; missing {0}")]
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
    /// The log directory cannot be used.
    #[error(transparent)]
    LogDir(#[from] crate::logdir::LogDirError),
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
            Error::LogDir(crate::logdir::LogDirError::Bounds(_)) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// Capability numbers (linux/capability.h) the agent cares about.
pub mod caps {
    /// Network configuration: attaching TC and XDP programs.
    pub const CAP_NET_ADMIN: u32 = 12;
    /// Covers CAP_BPF and CAP_PERFMON (and on kernels before 5.8 is the only way).
    pub const CAP_SYS_ADMIN: u32 = 21;
    /// Raising RLIMIT_MEMLOCK (only matters before Linux 5.11).
    pub const CAP_SYS_RESOURCE: u32 = 24;
    /// Lets the verifier skip Spectre mitigations and allows pointer
    /// comparisons and leaks into maps (Linux >= 5.8).
    pub const CAP_PERFMON: u32 = 38;
    /// Loading BPF programs and creating maps (Linux >= 5.8).
    pub const CAP_BPF: u32 = 39;

    /// Whether capability `cap` is in the set `bits`.
    pub fn has(bits: u64, cap: u32) -> bool {
        bits & (1u64 << cap) != 0
    }
}

/// The effective capability set (`CapEff:`) of a `/proc/PID/status` text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// This process's effective capabilities (none when unreadable).
pub fn effective_caps() -> u64 {
    parse_cap_eff(&std::fs::read_to_string("/proc/self/status").unwrap_or_default()).unwrap_or(0)
}

/// What the datapath needs that the capability set `cap_eff` lacks:
/// CAP_BPF, CAP_PERFMON (CAP_SYS_ADMIN covers both) and CAP_NET_ADMIN.
/// Without CAP_PERFMON the verifier rejects the programs' packet pointer
/// arithmetic ("prohibited for !root").
pub fn missing_caps(cap_eff: u64) -> Vec<&'static str> {
    use caps::*;
    let sys_admin = has(cap_eff, CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !has(cap_eff, CAP_BPF) && !sys_admin {
        missing.push("CAP_BPF");
    }
    if !has(cap_eff, CAP_PERFMON) && !sys_admin {
        missing.push("CAP_PERFMON");
    }
    if !has(cap_eff, CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

/// Checks what the datapath needs before touching the kernel: privileges
/// and a kernel with BPF and BTF.
pub fn preflight() -> Result<(), Error> {
    let missing = missing_caps(effective_caps());
    if !missing.is_empty() {
        return Err(Error::Privilege(missing.join(", ")));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_from_proc_status() {
        let status = "Name:\tcas-audit\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn missing_caps_accepts_sys_admin_for_bpf_and_perfmon() {
        use caps::*;
        let bit = |c: u32| 1u64 << c;
        let none: Vec<&str> = Vec::new();
        assert_eq!(
            missing_caps(0),
            vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        );
        assert_eq!(
            missing_caps(bit(CAP_BPF) | bit(CAP_PERFMON) | bit(CAP_NET_ADMIN)),
            none
        );
        assert_eq!(missing_caps(bit(CAP_SYS_ADMIN) | bit(CAP_NET_ADMIN)), none);
        assert_eq!(
            missing_caps(bit(CAP_BPF) | bit(CAP_NET_ADMIN)),
            vec!["CAP_PERFMON"]
        );
        assert_eq!(
            missing_caps(bit(CAP_BPF) | bit(CAP_PERFMON)),
            vec!["CAP_NET_ADMIN"]
        );
        assert_eq!(
            missing_caps(bit(CAP_NET_ADMIN) | bit(CAP_PERFMON)),
            vec!["CAP_BPF"]
        );
    }
}
