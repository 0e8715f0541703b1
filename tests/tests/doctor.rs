//! Integration tests of `cas-audit doctor`, and of the capabilities the
//! systemd unit (`packaging/cas-audit.service`) grants.
//!
//! Each test creates its own network namespace (`casa{pid}n{k}-doc`) holding
//! both ends of a veth pair, runs the binary inside it with `ip netns exec`,
//! and deletes the namespace on drop, even when the test fails. Nothing is
//! attached by `doctor`; the unit test runs `cas-audit run` on the veth in
//! that namespace only.
//!
//! The binary is `$CAS_AUDIT_BIN`, else `<workspace>/target/debug/cas-audit`
//! (build it with `CAS_AUDIT_EBPF=require cargo build -p cas-audit`).
//! Tests are skipped (with a message) when not run as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

use cas_audit_tests::{netns_command, require_root, NS_PREFIX};

/// Width of the name column: the longest check name, "capabilities".
const NAME_WIDTH: usize = 12;

fn agent_bin() -> String {
    let path = match std::env::var_os("CAS_AUDIT_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/cas-audit"),
    };
    assert!(
        path.is_file(),
        "cas-audit binary not found at {}: build it with \
         `CAS_AUDIT_EBPF=require cargo build -p cas-audit`, or set CAS_AUDIT_BIN",
        path.display()
    );
    path.to_str().expect("UTF-8 path").to_owned()
}

/// A network namespace with veth pairs whose ends are all inside it;
/// deleted on drop.
struct Netns(String);

impl Netns {
    /// A namespace with `dva`/`dvb` (up) and `dvc`/`dvd` (down).
    fn new() -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{NS_PREFIX}{}n{}-doc",
            std::process::id(),
            1000 + N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        for (a, b) in [("dva", "dvb"), ("dvc", "dvd")] {
            ip(&[
                "-n", &ns.0, "link", "add", a, "type", "veth", "peer", "name", b,
            ]);
        }
        for dev in ["lo", "dva", "dvb"] {
            ip(&["-n", &ns.0, "link", "set", dev, "up"]);
        }
        ns
    }

    /// `ip netns exec NS cas-audit ARGS`.
    fn doctor(&self, args: &[&str]) -> Run {
        let mut cmd = netns_command(&self.0, &agent_bin());
        cmd.arg("doctor").args(args);
        Run::of(cmd)
    }

    /// `ip netns exec NS setpriv (uid 65534, only `caps`) cas-audit ARGS`.
    fn as_nobody(&self, caps: &[&str], args: &[&str]) -> Run {
        let set = std::iter::once("-all".to_string())
            .chain(caps.iter().map(|c| format!("+{c}")))
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = netns_command(&self.0, "setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps={set}"),
            &format!("--ambient-caps={set}"),
            &format!("--bounding-set={set}"),
            &agent_bin(),
        ])
        .args(args);
        Run::of(cmd)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stdin(Stdio::null())
            .output();
        if !matches!(out, Ok(ref o) if o.status.success()) {
            eprintln!("doctor tests: `ip netns del {}` failed: {out:?}", self.0);
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running ip");
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(mut cmd: Command) -> Run {
        let Output {
            status,
            stdout,
            stderr,
        } = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
        Run {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code,
            Some(code),
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }

    fn line(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{}", self.stdout))
    }
}

fn has_setpriv(test: &str) -> bool {
    let found = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED {test}: setpriv (util-linux) not found");
    }
    found
}

fn tcx() -> &'static str {
    if cas_audit::host::netdev::tcx_available() {
        "TCX yes"
    } else {
        "TCX no (clsact)"
    }
}

#[test]
fn veth_lines_as_root() {
    if !require_root("veth_lines_as_root") {
        return;
    }
    let ns = Netns::new();
    let run = ns.doctor(&[]);
    run.assert_code(0);
    let tcx = tcx();
    for dev in ["dva", "dvb"] {
        let name = format!("iface {dev}");
        assert_eq!(
            run.line(&format!("ok    {name} ")),
            format!(
                "ok    {name:<NAME_WIDTH$}  up, driver veth, native XDP no -> TC ingress, {tcx}"
            )
        );
    }
    // A down interface is a warning, not a failure.
    assert_eq!(
        run.line("warn  iface dvc "),
        format!(
            "warn  {:<NAME_WIDTH$}  down, driver veth, native XDP no -> TC ingress, {tcx}  \
             hint: `ip link set dvc up`: the agent attaches but sees no traffic while it is down",
            "iface dvc"
        )
    );
    assert!(
        !run.stdout.contains("iface lo"),
        "loopback listed:\n{}",
        run.stdout
    );
    // As root on a kernel with BPF and BTF. bpffs may be missing: `ip netns
    // exec` mounts a fresh /sys without it.
    let kernel = if cas_audit::host::netdev::tcx_available() {
        "ok"
    } else {
        "warn"
    };
    for (check, status) in [
        ("ebpf-object", "ok"),
        ("kernel", kernel),
        ("bpf-syscall", "ok"),
        ("bpf-jit", "ok"),
        ("btf", "ok"),
        ("capabilities", "ok"),
        ("memlock", "ok"),
    ] {
        let line = run.line(&format!("{status:<4}  {check} "));
        assert_eq!(line.contains("  hint: "), status != "ok", "{line}");
    }
    assert!(
        run.stdout.contains("\nok    bpffs ") || run.stdout.contains("\nwarn  bpffs "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with(" 0 fail: cas-audit can run here\n"),
        "{}",
        run.stdout
    );

    // Only the named interfaces, as JSON.
    let run = ns.doctor(&["--iface", "dva", "--json"]);
    run.assert_code(0);
    let doc: Value = serde_json::from_str(run.stdout.trim()).expect("one JSON document");
    assert_eq!(doc["ok"], true);
    let checks = doc["checks"].as_array().expect("checks");
    let ifaces: Vec<&Value> = checks
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with("iface "))
        .collect();
    assert_eq!(ifaces.len(), 1, "{doc}");
    assert_eq!(ifaces[0]["name"], "iface dva");
    assert_eq!(ifaces[0]["status"], "ok");
    assert_eq!(
        ifaces[0]["detail"],
        format!("up, driver veth, native XDP no -> TC ingress, {tcx}")
    );
    assert_eq!(ifaces[0]["hint"], Value::Null);
    for c in checks {
        let status = c["status"].as_str().unwrap();
        assert!(["ok", "warn"].contains(&status), "{c}");
        assert_eq!(c["hint"].is_null(), status == "ok", "{c}");
    }
}

#[test]
fn unknown_iface_is_usage_error() {
    if !require_root("unknown_iface_is_usage_error") {
        return;
    }
    let ns = Netns::new();
    let run = ns.doctor(&["--iface", "dva", "--iface", "nosuch"]);
    run.assert_code(2);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr.contains("unknown interface \"nosuch\""),
        "{}",
        run.stderr
    );
    // A bad flag is a usage error too.
    ns.doctor(&["--json=yes"]).assert_code(2);
}

#[test]
fn capabilities_fail_without_privileges() {
    if !require_root("capabilities_fail_without_privileges")
        || !has_setpriv("capabilities_fail_without_privileges")
    {
        return;
    }
    let ns = Netns::new();
    let run = ns.as_nobody(&[], &["doctor", "--iface", "dva"]);
    run.assert_code(1);
    let caps = run.line("fail  capabilities  ");
    assert!(
        caps.starts_with(
            "fail  capabilities  missing CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN (needs CAP_BPF, \
             CAP_PERFMON and CAP_NET_ADMIN; CAP_SYS_ADMIN covers the first two)  hint: run as root, or grant them: "
        ),
        "{caps}"
    );
    assert_eq!(
        run.line("warn  bpf-syscall "),
        "warn  bpf-syscall   present, but not permitted for this process  \
         hint: needs CAP_BPF: see capabilities"
    );
    // The interfaces are still described.
    run.line("ok    iface dva ");
    assert!(
        run.stdout.ends_with("1 fail: cas-audit cannot run here\n"),
        "{}",
        run.stdout
    );

    let run = ns.as_nobody(&[], &["doctor", "--iface", "dva", "--json"]);
    run.assert_code(1);
    let doc: Value = serde_json::from_str(run.stdout.trim()).expect("one JSON document");
    assert_eq!(doc["ok"], false);
    let caps = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "capabilities")
        .expect("capabilities check");
    assert_eq!(caps["status"], "fail");
    assert!(caps["hint"].as_str().unwrap().contains("setcap"), "{caps}");
}

/// The capabilities of the unit's `CapabilityBoundingSet=`, as setpriv names
/// them (`bpf`, `net_admin`, ...).
fn unit_capabilities() -> Vec<String> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/cas-audit.service");
    let text = std::fs::read_to_string(&unit)
        .unwrap_or_else(|e| panic!("reading {}: {e}", unit.display()));
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet= in the unit");
    let ambient = text
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities= in the unit");
    assert_eq!(line, ambient, "bounding and ambient sets differ");
    line.split_whitespace()
        .map(|c| {
            c.strip_prefix("CAP_")
                .expect("CAP_ name")
                .to_ascii_lowercase()
        })
        .collect()
}

/// The unit's capabilities are enough: doctor is all ok, and the agent
/// loads, attaches to the veth, and exits 0 after `--duration`, as an
/// unprivileged user holding only them. One fewer (CAP_PERFMON) is refused
/// up front with exit code 2.
#[test]
fn units_capabilities_are_enough() {
    if !require_root("units_capabilities_are_enough")
        || !has_setpriv("units_capabilities_are_enough")
    {
        return;
    }
    let caps = unit_capabilities();
    assert_eq!(caps, ["bpf", "net_admin", "perfmon"]);
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let ns = Netns::new();

    let run = ns.as_nobody(&caps, &["doctor", "--iface", "dva"]);
    run.assert_code(0);
    assert_eq!(
        run.line("ok    capabilities "),
        "ok    capabilities  effective: CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON"
    );
    run.line("ok    bpf-syscall ");
    run.line("ok    bpf-jit ");

    let run = ns.as_nobody(
        &caps,
        &["run", "--iface", "dva", "--duration", "1", "--json", "-"],
    );
    run.assert_code(0);
    assert!(run.stderr.contains("auditing "), "{}", run.stderr);
    assert!(
        run.stdout.contains("\"type\":\"summary\""),
        "{}",
        run.stdout
    );

    let run = ns.as_nobody(
        &["bpf", "net_admin"],
        &["run", "--iface", "dva", "--duration", "1"],
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("insufficient privileges")
            && run.stderr.contains("missing CAP_PERFMON"),
        "{}",
        run.stderr
    );
}
