//! The facts `doctor` decides on, read from this machine: files under
//! `/proc` and `/sys`, the process's capabilities and rlimits, the `bpf`
//! system call probes of [`crate::host::bpf`].

use std::path::Path;

use aya::util::KernelVersion;

use crate::{
    error::Error,
    host::{
        bpf::{self, BpfProbe},
        caps::effective_caps,
        mounts::{self, Reach},
        netdev,
    },
};

/// One interface as sysfs and ethtool show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceFacts {
    /// Interface name.
    pub name: String,
    /// `IFF_UP` is set (administratively up).
    pub admin_up: bool,
    /// `/sys/class/net/IF/operstate` (`up`, `down`, `unknown`, `lowerlayerdown`, ...).
    pub operstate: String,
    /// There is a bus device (`/sys/class/net/IF/device`).
    pub bus_device: bool,
    /// Driver of the bus device (sysfs link), else what ethtool reports.
    pub driver: Option<String>,
}

/// Everything the checks decide on.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Size of the eBPF object embedded in this binary (0: built as a stub).
    pub object_len: usize,
    /// `/proc/sys/kernel/osrelease`.
    pub release: String,
    /// The kernel version as aya reads it (also used for TCX when attaching).
    pub kernel: Option<KernelVersion>,
    /// Result of trying the `bpf` system call.
    pub bpf: BpfProbe,
    /// Content of `/proc/sys/net/core/bpf_jit_enable` (`None`: absent or
    /// unreadable; it only exists in the initial network namespace).
    pub jit: Option<String>,
    /// Whether a test program was JIT-compiled (`None`: it could not be loaded).
    pub jit_probe: Option<bool>,
    /// `/sys/kernel/btf/vmlinux` exists.
    pub btf: bool,
    /// `/proc/self/mounts`.
    pub mounts: String,
    /// Whether a BPF filesystem at [`super::BPFFS`] (mounted, or mounted
    /// there by `run --pin`) would outlive the agent.
    pub bpffs_reach: Reach,
    /// Effective capabilities.
    pub cap_eff: u64,
    /// Soft RLIMIT_MEMLOCK in bytes (`None`: unlimited).
    pub memlock: Option<u64>,
    /// The interfaces to check.
    pub ifaces: Vec<IfaceFacts>,
}

impl Facts {
    /// Reads the facts of this machine, for `ifaces` or, when empty, every
    /// non-loopback interface of the current network namespace. An
    /// interface that does not exist is a usage error.
    pub fn gather(ifaces: &[String]) -> Result<Facts, Error> {
        let names = if ifaces.is_empty() {
            default_ifaces()
        } else {
            for i in ifaces {
                netdev::ifindex(i).map_err(crate::datapath::DatapathError::from)?;
            }
            ifaces.to_vec()
        };
        let read = |p: &str| std::fs::read_to_string(p).ok();
        Ok(Facts {
            object_len: crate::EBPF_OBJECT.len(),
            release: read("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            kernel: KernelVersion::current().ok(),
            bpf: bpf::probe_bpf(),
            jit: read("/proc/sys/net/core/bpf_jit_enable").map(|s| s.trim().to_string()),
            jit_probe: bpf::probe_jit(),
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            mounts: read("/proc/self/mounts").unwrap_or_default(),
            bpffs_reach: if crate::datapath::pin::is_bpffs(Path::new(super::BPFFS)) {
                mounts::reach(Path::new(super::BPFFS))
            } else {
                match mounts::own_namespace() {
                    Ok(None) => Reach::Host,
                    Ok(Some(why)) => Reach::Private(why),
                    Err(why) => Reach::Unknown(why),
                }
            },
            cap_eff: effective_caps(),
            memlock: bpf::memlock(),
            ifaces: names.iter().map(|n| iface_facts(n)).collect(),
        })
    }
}

/// Non-loopback interfaces of this network namespace, sorted
/// (`/sys/class/net`).
fn default_ifaces() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| sysfs_flags(n).is_some_and(|f| f & libc::IFF_LOOPBACK as u32 == 0))
        .collect();
    names.sort();
    names
}

/// `/sys/class/net/IF/flags`.
fn sysfs_flags(iface: &str) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{iface}/flags")).ok()?;
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

fn iface_facts(name: &str) -> IfaceFacts {
    let dev = netdev::bus_device(name);
    let driver = dev.driver.clone().or_else(|| netdev::ethtool_driver(name));
    IfaceFacts {
        name: name.to_string(),
        admin_up: sysfs_flags(name).is_some_and(|f| f & libc::IFF_UP as u32 != 0),
        operstate: std::fs::read_to_string(format!("/sys/class/net/{name}/operstate"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        bus_device: dev.present,
        driver,
    }
}
