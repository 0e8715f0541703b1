//! Capabilities (capabilities(7)): what this process has and what the
//! datapath needs.

// Capability numbers (linux/capability.h) the agent cares about.

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

/// Why this process cannot run the datapath.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    /// Missing capabilities (their names).
    #[error("insufficient privileges: cas-audit needs root, or CAP_BPF, CAP_PERFMON (CAP_SYS_ADMIN covers both) and CAP_NET_ADMIN; missing {0}")]
    Privilege(String),
    /// The kernel cannot run the datapath.
    #[error("this kernel cannot run cas-audit: {0}")]
    Kernel(String),
}

/// Checks what the datapath needs before touching the kernel: privileges
/// and a kernel with BPF and BTF.
///
/// # Errors
/// [`PreflightError::Privilege`] naming the missing capabilities;
/// [`PreflightError::Kernel`] without the `bpf` system call or BTF.
pub fn preflight() -> Result<(), PreflightError> {
    let missing = missing_caps(effective_caps());
    if !missing.is_empty() {
        return Err(PreflightError::Privilege(missing.join(", ")));
    }
    if !std::path::Path::new("/proc/sys/kernel/unprivileged_bpf_disabled").exists() {
        return Err(PreflightError::Kernel(
            "no BPF system call (needs CONFIG_BPF_SYSCALL=y)".into(),
        ));
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(PreflightError::Kernel(
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
