//! The checks on made-up facts.

use super::*;

fn v(a: u8, b: u8, c: u16) -> Option<KernelVersion> {
    Some(KernelVersion::new(a, b, c))
}

fn bit(c: u32) -> u64 {
    1 << c
}

#[test]
fn kernel_thresholds() {
    let k = check_kernel("6.6.0-x", v(6, 6, 0));
    assert_eq!(k.status, Status::Ok);
    assert_eq!(k.detail, "6.6.0-x: TCX (>= 6.6)");
    assert_eq!(k.hint, None);
    assert_eq!(check_kernel("6.18.4", v(6, 18, 4)).status, Status::Ok);
    for (a, b) in [(6, 5), (6, 1), (5, 15), (5, 8)] {
        let k = check_kernel("", v(a, b, 0));
        assert_eq!(k.status, Status::Warn, "{a}.{b}");
        assert!(k.detail.contains("clsact"), "{}", k.detail);
        assert!(k.hint.is_some());
    }
    for (a, b) in [(5, 7), (5, 4), (4, 19)] {
        let k = check_kernel("", v(a, b, 200));
        assert_eq!(k.status, Status::Fail, "{a}.{b}");
        assert!(k.detail.contains("ring buffer"), "{}", k.detail);
    }
    assert_eq!(check_kernel("weird", None).status, Status::Warn);
}

#[test]
fn capability_bits() {
    use caps::*;
    let all = bit(CAP_BPF) | bit(CAP_NET_ADMIN) | bit(CAP_PERFMON);
    let c = check_caps(all);
    assert_eq!(c.status, Status::Ok);
    assert_eq!(c.detail, "effective: CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON");
    // CAP_SYS_ADMIN stands for CAP_BPF and CAP_PERFMON.
    assert_eq!(
        check_caps(bit(CAP_SYS_ADMIN) | bit(CAP_NET_ADMIN)).status,
        Status::Ok
    );
    // Root's set (as in /proc/self/status).
    let root = caps::parse_cap_eff("CapEff:\t000001ffffffffff\n").unwrap();
    assert_eq!(check_caps(root).status, Status::Ok);

    let none = check_caps(0);
    assert_eq!(none.status, Status::Fail);
    assert_eq!(
        none.detail,
        "missing CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN \
             (needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN; CAP_SYS_ADMIN covers the first two)"
    );
    assert!(none.hint.as_deref().unwrap().contains("setcap"));
    let c = check_caps(bit(CAP_BPF) | bit(CAP_NET_ADMIN));
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.detail.starts_with("missing CAP_PERFMON ("),
        "{}",
        c.detail
    );
    let c = check_caps(bit(CAP_SYS_ADMIN));
    assert!(
        c.detail.starts_with("missing CAP_NET_ADMIN ("),
        "{}",
        c.detail
    );
}

#[test]
fn bpf_syscall() {
    assert_eq!(check_bpf(BpfProbe::Usable, 0).status, Status::Ok);
    assert_eq!(check_bpf(BpfProbe::NoSyscall, !0).status, Status::Fail);
    // Denied without privilege: the capability check says why.
    assert_eq!(check_bpf(BpfProbe::Denied, 0).status, Status::Warn);
    // Denied with CAP_BPF: something else blocks it.
    let c = check_bpf(BpfProbe::Denied, bit(caps::CAP_BPF));
    assert_eq!(c.status, Status::Fail);
    assert!(c.hint.unwrap().contains("SystemCallFilter"));
    assert_eq!(
        check_bpf(BpfProbe::Other(libc::ENOMEM), 0).status,
        Status::Warn
    );
}

#[test]
fn jit_btf_bpffs() {
    assert_eq!(check_jit(Some("1"), None).status, Status::Ok);
    assert_eq!(check_jit(Some("2"), None).status, Status::Ok);
    let off = check_jit(Some("0"), None);
    assert_eq!(off.status, Status::Warn);
    assert!(off
        .hint
        .as_deref()
        .unwrap()
        .starts_with("sysctl -w net.core.bpf_jit_enable=1"));
    // Outside the initial network namespace there is no sysctl: the
    // test program decides.
    assert_eq!(check_jit(None, Some(true)).status, Status::Ok);
    assert_eq!(check_jit(None, Some(false)).status, Status::Warn);
    assert_eq!(check_jit(Some("1"), Some(false)).status, Status::Warn);
    assert_eq!(check_jit(None, None).status, Status::Warn);
    assert_eq!(check_btf(true).status, Status::Ok);
    assert_eq!(check_btf(false).status, Status::Fail);

    let mounts = "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw,relatime 0 0\n";
    assert_eq!(check_bpffs(mounts, &Reach::Host).status, Status::Ok);
    let b = check_bpffs(
        "sysfs /sys sysfs rw 0 0\ntmpfs /sys/fs/bpf tmpfs rw 0 0\n",
        &Reach::Host,
    );
    assert_eq!(b.status, Status::Warn);
    assert_eq!(b.hint.as_deref(), Some("mount -t bpf bpf /sys/fs/bpf"));
    // Mounted, but only in the agent's own mount namespace (ip netns exec).
    let p = check_bpffs(mounts, &Reach::Private("private".into()));
    assert_eq!(p.status, Status::Warn);
    assert!(p.detail.contains("would not outlive the agent"), "{p:?}");
    assert!(p.hint.as_deref().unwrap().contains("--pin DIR/cas-audit"));
}

#[test]
fn memlock_matters_before_5_11() {
    assert_eq!(check_memlock(v(5, 11, 0), Some(65536)).status, Status::Ok);
    assert_eq!(check_memlock(v(5, 10, 0), None).status, Status::Ok);
    assert_eq!(check_memlock(v(5, 10, 0), Some(1 << 30)).status, Status::Ok);
    let c = check_memlock(v(5, 10, 0), Some(65536));
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("64 KiB"), "{}", c.detail);
    assert!(c.hint.unwrap().contains("LimitMEMLOCK=infinity"));
}

fn iface(name: &str, bus: bool, driver: Option<&str>) -> IfaceFacts {
    IfaceFacts {
        name: name.into(),
        admin_up: true,
        operstate: "up".into(),
        bus_device: bus,
        driver: driver.map(str::to_string),
    }
}

#[test]
fn driver_decides_xdp() {
    let c = check_iface(&iface("veth0", false, Some("veth")), true);
    assert_eq!(c.name, "iface veth0");
    assert_eq!(c.status, Status::Ok);
    assert_eq!(
        c.detail,
        "up, driver veth, native XDP no -> TC ingress, TCX yes"
    );
    let c = check_iface(&iface("ens3", true, Some("virtio_net")), false);
    assert_eq!(
        c.detail,
        "up, driver virtio_net, native XDP no -> TC ingress, TCX no (clsact)"
    );
    let c = check_iface(&iface("enp1s0", true, Some("ixgbe")), true);
    assert_eq!(
        c.detail,
        "up, driver ixgbe, native XDP yes -> XDP ingress (TC if the driver refuses), TCX yes"
    );
    let c = check_iface(&iface("br0", false, None), true);
    assert!(c.detail.contains("driver unknown, native XDP no"));
}

#[test]
fn iface_state() {
    let mut i = iface("uplink", false, Some("veth"));
    i.admin_up = false;
    i.operstate = "down".into();
    let c = check_iface(&i, true);
    assert_eq!(c.status, Status::Warn);
    assert!(c.detail.starts_with("down, "));
    assert!(c.hint.unwrap().contains("ip link set uplink up"));
    i.admin_up = true;
    i.operstate = "lowerlayerdown".into();
    let c = check_iface(&i, true);
    assert_eq!(c.status, Status::Warn);
    assert!(c.detail.starts_with("up, no carrier, "));
    // Devices that do not report an operstate (tun, dummy).
    i.operstate = "unknown".into();
    assert_eq!(check_iface(&i, true).status, Status::Ok);
}

fn facts() -> Facts {
    Facts {
        object_len: 900_000,
        release: "6.6.1".into(),
        kernel: v(6, 6, 1),
        bpf: BpfProbe::Usable,
        jit: Some("1".into()),
        jit_probe: Some(true),
        btf: true,
        mounts: "bpf /sys/fs/bpf bpf rw 0 0\n".into(),
        bpffs_reach: crate::host::mounts::Reach::Host,
        cap_eff: !0,
        memlock: Some(8 << 20),
        ifaces: vec![iface("veth0", false, Some("veth"))],
    }
}

#[test]
fn report_ok_text_and_json() {
    let r = Report::new(checks(&facts()));
    assert!(r.ok);
    assert_eq!(r.exit_code(), 0);
    let text = r.text();
    assert!(
        text.lines()
            .any(|l| l
                == "ok    iface veth0   up, driver veth, native XDP no -> TC ingress, TCX yes"),
        "{text}"
    );
    assert!(
        text.ends_with("9 ok, 0 warn, 0 fail: cas-audit can run here\n"),
        "{text}"
    );
    let j: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
    assert_eq!(j["ok"], true);
    let checks = j["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 9);
    for c in checks {
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys.len(), 4, "{c}");
        for k in ["name", "status", "detail", "hint"] {
            assert!(keys.contains(&k), "{c}");
        }
    }
    assert_eq!(checks[0]["name"], "ebpf-object");
    assert_eq!(checks[1]["name"], "kernel");
    assert_eq!(checks[0]["status"], "ok");
    assert_eq!(checks[0]["hint"], serde_json::Value::Null);
}

#[test]
fn a_stub_binary_fails() {
    let c = check_object(0);
    assert_eq!(c.status, Status::Fail);
    assert!(c.hint.unwrap().contains("cargo xtask build"));
    assert_eq!(check_object(886_024).detail, "embedded (866 KiB)");
    let mut f = facts();
    f.object_len = 0;
    assert!(!Report::new(checks(&f)).ok);
}

#[test]
fn a_failed_check_fails_the_report() {
    let mut f = facts();
    f.cap_eff = 0;
    f.bpf = BpfProbe::Denied;
    f.mounts.clear();
    let r = Report::new(checks(&f));
    assert!(!r.ok);
    assert_eq!(r.exit_code(), 1);
    let text = r.text();
    let caps = text
        .lines()
        .find(|l| l.starts_with("fail  capabilities"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(caps.contains("  hint: run as root"), "{caps}");
    assert!(text.contains("warn  bpffs"), "{text}");
    assert!(
        text.ends_with("6 ok, 2 warn, 1 fail: cas-audit cannot run here\n"),
        "{text}"
    );
    let j: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
    assert_eq!(j["ok"], false);
    // Warnings alone do not fail.
    let mut f = facts();
    f.jit = Some("0".into());
    f.jit_probe = None;
    f.kernel = v(6, 1, 0);
    assert!(Report::new(checks(&f)).ok);
    // No interface but loopback: a warning.
    f.ifaces.clear();
    let r = Report::new(checks(&f));
    assert!(r.ok);
    assert!(r.checks.iter().any(|c| c.name == "interfaces"));
}
