//! `cas-audit doctor`: can this machine run cas-audit?
//!
//! Every check only *reads*: files under /proc and /sys, the process's
//! capabilities and rlimits, an interface's driver through
//! `ETHTOOL_GDRVINFO`. The only kernel objects it creates are a one-entry
//! BPF array map and a two-instruction socket filter, neither attached to
//! anything and both closed at once, to see whether the `bpf` system call
//! may be used and whether programs are JIT-compiled.
//! Nothing is attached anywhere: whether an interface gets native XDP or TC
//! is decided from its driver exactly as `--ingress auto` decides it
//! ([`crate::netdev`]), and TCX from the kernel version.
//!
//! The facts are gathered first ([`Facts::gather`]); the decisions are pure
//! functions of them ([`checks`]), so they are unit-tested on made-up facts.

use std::fmt::Write as _;

use aya::util::KernelVersion;
use serde::Serialize;

mod facts;

pub use self::facts::{Facts, IfaceFacts};
use crate::{
    error::Error,
    host::{bpf::BpfProbe, caps, mounts::Reach, netdev},
};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// cas-audit runs, but with a limitation.
    Warn,
    /// cas-audit cannot run (exit code 1).
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check: what was looked at, how it came out, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked (`kernel`, `capabilities`, `iface eth1`, ...).
    pub name: String,
    /// Outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to fix it; `None` when the check is ok.
    pub hint: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            hint: None,
        }
    }

    fn warn(name: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

/// The whole report: `{"checks":[...],"ok":bool}` in JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// No check failed.
    pub ok: bool,
}

impl Report {
    /// A report of `checks`.
    pub fn new(checks: Vec<Check>) -> Report {
        let ok = checks.iter().all(|c| c.status != Status::Fail);
        Report { checks, ok }
    }

    /// Process exit code: 0 when no check failed, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.ok {
            0
        } else {
            crate::error::EXIT_NEGATIVE
        }
    }

    /// One aligned line per check (status, name, detail, and the hint when
    /// not ok), then a count.
    pub fn text(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let _ = write!(
                out,
                "{:<4}  {:<width$}  {}",
                c.status.as_str(),
                c.name,
                c.detail
            );
            if let Some(h) = &c.hint {
                let _ = write!(out, "  hint: {h}");
            }
            out.push('\n');
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        let _ = writeln!(
            out,
            "{} ok, {} warn, {} fail: {}",
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail),
            if self.ok {
                "cas-audit can run here"
            } else {
                "cas-audit cannot run here"
            }
        );
        out
    }

    /// The JSON document (one line).
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }
}

/// Runs every check on this machine.
pub fn doctor(ifaces: &[String]) -> Result<Report, Error> {
    Ok(Report::new(checks(&Facts::gather(ifaces)?)))
}

/// Every check, decided from `f`.
pub fn checks(f: &Facts) -> Vec<Check> {
    let tcx = f.kernel.is_some_and(netdev::tcx_supported);
    let mut out = vec![
        check_object(f.object_len),
        check_kernel(&f.release, f.kernel),
        check_bpf(f.bpf, f.cap_eff),
        check_jit(f.jit.as_deref(), f.jit_probe),
        check_btf(f.btf),
        check_bpffs(&f.mounts, &f.bpffs_reach),
        check_caps(f.cap_eff),
        check_memlock(f.kernel, f.memlock),
    ];
    if f.ifaces.is_empty() {
        out.push(Check::warn(
            "interfaces",
            "no interface but loopback in this network namespace",
            "run doctor where the agent will run (e.g. `ip netns exec NS cas-audit doctor`), or name one with --iface",
        ));
    }
    out.extend(f.ifaces.iter().map(|i| check_iface(i, tcx)));
    out
}

/// Whether this binary carries its eBPF object (`len` bytes).
pub fn check_object(len: usize) -> Check {
    const NAME: &str = "ebpf-object";
    if len > 0 {
        Check::ok(NAME, format!("embedded ({} KiB)", len.div_ceil(1024)))
    } else {
        Check::fail(
            NAME,
            "this binary was built without its eBPF object (no bpf-linker or nightly rust-src at build time)",
            "rebuild with `cargo xtask build` (or `cargo xtask dist`)",
        )
    }
}

/// Linux >= 6.6: TCX; 5.8 to 6.5: a clsact qdisc; older: no BPF ring buffer.
pub fn check_kernel(release: &str, version: Option<KernelVersion>) -> Check {
    const NAME: &str = "kernel";
    let Some(v) = version else {
        return Check::warn(
            NAME,
            format!("cannot read the kernel version ({release:?})"),
            "cas-audit needs Linux >= 5.8, and attaches with TCX from 6.6",
        );
    };
    let shown = if release.is_empty() {
        v.to_string()
    } else {
        release.to_string()
    };
    if netdev::tcx_supported(v) {
        Check::ok(NAME, format!("{shown}: TCX (>= 6.6)"))
    } else if v >= KernelVersion::new(5, 8, 0) {
        Check::warn(
            NAME,
            format!("{shown}: no TCX (< 6.6), a TC clsact qdisc is used instead"),
            "works as is; Linux >= 6.6 attaches with TCX links and leaves qdiscs alone",
        )
    } else {
        Check::fail(
            NAME,
            format!("{shown}: too old (< 5.8), no BPF ring buffer"),
            "upgrade to Linux >= 5.8 (>= 6.6 for TCX)",
        )
    }
}

/// Whether the `bpf` system call may be used.
pub fn check_bpf(probe: BpfProbe, cap_eff: u64) -> Check {
    const NAME: &str = "bpf-syscall";
    let privileged = caps::has(cap_eff, caps::CAP_BPF) || caps::has(cap_eff, caps::CAP_SYS_ADMIN);
    match probe {
        BpfProbe::Usable => Check::ok(NAME, "usable (created a test map)"),
        BpfProbe::NoSyscall => Check::fail(
            NAME,
            "no bpf system call in this kernel",
            "use a kernel built with CONFIG_BPF_SYSCALL=y",
        ),
        BpfProbe::Denied if privileged => Check::fail(
            NAME,
            "refused although this process has CAP_BPF: a seccomp filter or an LSM blocks bpf(2)",
            "allow the bpf system call (systemd: SystemCallFilter=@system-service bpf; check SELinux/AppArmor and kernel lockdown)",
        ),
        BpfProbe::Denied => Check::warn(
            NAME,
            "present, but not permitted for this process",
            "needs CAP_BPF: see capabilities",
        ),
        BpfProbe::Other(errno) => Check::warn(
            NAME,
            format!(
                "creating a test map failed: {}",
                std::io::Error::from_raw_os_error(errno)
            ),
            "check the kernel log (dmesg) and the memory cgroup's limit",
        ),
    }
}

/// The BPF JIT: from a test program when one could be loaded (the truth),
/// else from `net.core.bpf_jit_enable`, which only the initial network
/// namespace shows.
pub fn check_jit(sysctl: Option<&str>, probe: Option<bool>) -> Check {
    const NAME: &str = "bpf-jit";
    const HINT: &str = "sysctl -w net.core.bpf_jit_enable=1 (in the initial network namespace)";
    match (probe, sysctl) {
        (Some(true), Some(v)) => Check::ok(NAME, format!("enabled (net.core.bpf_jit_enable = {v})")),
        (Some(true), None) => Check::ok(NAME, "enabled (a test program was JIT-compiled)"),
        (Some(false), _) => Check::warn(
            NAME,
            "disabled: a test program was not JIT-compiled, programs run interpreted (several times slower)",
            HINT,
        ),
        (None, Some("1")) => Check::ok(NAME, "enabled (net.core.bpf_jit_enable = 1)"),
        (None, Some("2")) => Check::ok(
            NAME,
            "enabled, with debug output (net.core.bpf_jit_enable = 2)",
        ),
        (None, Some("0")) => Check::warn(
            NAME,
            "disabled (net.core.bpf_jit_enable = 0): programs run interpreted, several times slower",
            HINT,
        ),
        (None, Some(other)) => Check::warn(
            NAME,
            format!("net.core.bpf_jit_enable = {other:?}"),
            HINT,
        ),
        (None, None) => Check::warn(
            NAME,
            "unknown: no test program could be loaded and net.core.bpf_jit_enable is only visible in the initial network namespace",
            "run `sysctl net.core.bpf_jit_enable` in the initial network namespace (1: enabled), or doctor with CAP_BPF",
        ),
    }
}

/// Kernel BTF, needed to load the programs (CO-RE).
pub fn check_btf(present: bool) -> Check {
    if present {
        Check::ok("btf", "/sys/kernel/btf/vmlinux present")
    } else {
        Check::fail(
            "btf",
            "no /sys/kernel/btf/vmlinux",
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        )
    }
}

/// Mount point of the BPF file system, for pinning.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Whether a bpf file system is mounted at [`BPFFS`] (`mounts`: the text of
/// `/proc/self/mounts`) where pins outlive the agent (`reach`: who sees
/// it, or would see one mounted there).
pub fn check_bpffs(mounts: &str, reach: &Reach) -> Check {
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        matches!(
            (f.next(), f.next(), f.next()),
            (Some(_), Some(BPFFS), Some("bpf"))
        )
    });
    if let Reach::Private(why) = reach {
        return Check::warn(
            "bpffs",
            format!("pins under {BPFFS} would not outlive the agent: {why} (needed only for pinning; `run --pin` there is refused)"),
            "mount -t bpf bpf DIR outside this namespace (e.g. /run/cas-audit-bpf) and use --pin DIR/cas-audit",
        );
    }
    if mounted {
        Check::ok("bpffs", format!("mounted at {BPFFS}"))
    } else {
        Check::warn(
            "bpffs",
            format!("no bpf file system at {BPFFS} (needed only for pinning)"),
            format!("mount -t bpf bpf {BPFFS}"),
        )
    }
}

/// The capabilities the agent needs ([`caps::missing_caps`]):
/// CAP_BPF, CAP_PERFMON (CAP_SYS_ADMIN covers both) and CAP_NET_ADMIN.
pub fn check_caps(cap_eff: u64) -> Check {
    const NAME: &str = "capabilities";
    use caps::{CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN};
    let missing = caps::missing_caps(cap_eff);
    if missing.is_empty() {
        let have: Vec<&str> = [
            (CAP_BPF, "CAP_BPF"),
            (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
            (CAP_PERFMON, "CAP_PERFMON"),
            (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        ]
        .into_iter()
        .filter(|(c, _)| caps::has(cap_eff, *c))
        .map(|(_, n)| n)
        .collect();
        return Check::ok(NAME, format!("effective: {}", have.join(", ")));
    }
    Check::fail(
        NAME,
        format!(
            "missing {} (needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN; CAP_SYS_ADMIN covers the first two)",
            missing.join(", ")
        ),
        "run as root, or grant them: `setcap cap_bpf,cap_perfmon,cap_net_admin=ep /usr/local/bin/cas-audit`, \
         or AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN in the systemd unit",
    )
}

/// Memory the maps need at the default `--max-flows` (~14 MiB), with room.
const MEMLOCK_NEEDED: u64 = 64 << 20;

/// RLIMIT_MEMLOCK: only limits BPF memory before Linux 5.11 (memcg accounting
/// since).
pub fn check_memlock(kernel: Option<KernelVersion>, limit: Option<u64>) -> Check {
    const NAME: &str = "memlock";
    if kernel.is_some_and(|v| v >= KernelVersion::new(5, 11, 0)) {
        return Check::ok(
            NAME,
            "Linux >= 5.11 charges BPF memory to the memory cgroup: RLIMIT_MEMLOCK does not apply",
        );
    }
    match limit {
        None => Check::ok(NAME, "RLIMIT_MEMLOCK unlimited"),
        Some(l) if l >= MEMLOCK_NEEDED => {
            Check::ok(NAME, format!("RLIMIT_MEMLOCK {} MiB", l >> 20))
        }
        Some(l) => Check::fail(
            NAME,
            format!(
                "RLIMIT_MEMLOCK {} KiB: before Linux 5.11 the BPF maps (~14 MiB at the default --max-flows) count against it",
                l >> 10
            ),
            "`ulimit -l unlimited` before starting cas-audit, or LimitMEMLOCK=infinity in the systemd unit",
        ),
    }
}

/// An interface: up, its driver, the ingress hook `--ingress auto` picks,
/// TCX.
pub fn check_iface(i: &IfaceFacts, tcx: bool) -> Check {
    let name = format!("iface {}", i.name);
    let driver = i.driver.as_deref().unwrap_or("unknown");
    let xdp = if netdev::auto_native_xdp(i.bus_device, i.driver.as_deref()) {
        "native XDP yes -> XDP ingress (TC if the driver refuses)"
    } else {
        "native XDP no -> TC ingress"
    };
    let tcx = if tcx { "TCX yes" } else { "TCX no (clsact)" };
    let carrier = matches!(i.operstate.as_str(), "up" | "unknown");
    let state = match (i.admin_up, carrier) {
        (true, true) => "up",
        (true, false) => "up, no carrier",
        (false, _) => "down",
    };
    let detail = format!("{state}, driver {driver}, {xdp}, {tcx}");
    match (i.admin_up, carrier) {
        (true, true) => Check::ok(name, detail),
        (true, false) => Check::warn(
            name,
            detail,
            format!(
                "operstate {}: the agent attaches but sees no traffic until the link is up",
                i.operstate
            ),
        ),
        (false, _) => Check::warn(
            name,
            detail,
            format!(
                "`ip link set {} up`: the agent attaches but sees no traffic while it is down",
                i.name
            ),
        ),
    }
}

#[cfg(test)]
mod tests;
