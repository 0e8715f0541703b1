//! Privileged tests of `run --pin` and `cas-audit detach`: the kernel keeps
//! counting while the agent is down, even after SIGKILL, and a restarted
//! agent takes over without losing a packet.
//!
//! Each test mounts its own BPF filesystem on a temporary directory (so the
//! host's /sys/fs/bpf is untouched; `ip netns exec` would hide a mount made
//! there anyway), builds a lan / gw / cloud topology, runs the agent on the
//! gateway's uplink, and removes everything, even on failure.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use cas_audit_tests::process::{agent_bin_str, Process as Agent, EXIT_TIMEOUT};
use cas_audit_tests::scratch::Bpffs;
use cas_audit_tests::traffic::{udp_send, udp_sink};
use cas_audit_tests::{with_topology, Topology};

/// A real CAS endpoint (US1 app connector), only on the cloud namespace's `lo`.
const CAS: IpAddr = IpAddr::V4(Ipv4Addr::new(13, 64, 196, 27));
const CAS_PREFIX: &str = "13.64.196.27/32";

fn with_pin_bed(test: &str, f: impl FnOnce(&Topology, &Path)) {
    with_pin_bed_for(test, &[CAS], f)
}

fn with_pin_bed_for(test: &str, cloud: &[IpAddr], f: impl FnOnce(&Topology, &Path)) {
    with_topology(test, cloud, |topo| {
        let fs = Bpffs::mount(
            std::env::temp_dir().join(format!("cas-audit-{test}-{}", std::process::id())),
        );
        f(topo, &fs.0.join("cas-audit"));
    })
}

/// The agent in the gw namespace, pinned in `pin`, once it is ready.
fn start(topo: &Topology, pin: &Path, extra: &[&str]) -> Agent {
    let mut cmd = topo.command(topo.gw(), &agent_bin_str());
    cmd.args([
        "run",
        "--iface",
        Topology::GW_UPLINK,
        "--ingress",
        "tc",
        "--json",
        "-",
    ])
    .arg("--pin")
    .arg(pin)
    .args(extra);
    let agent = Agent::spawn(cmd);
    agent.wait_ready();
    agent
}

fn send(topo: &Topology, n: usize) {
    send_to(topo, CAS, n)
}

fn send_to(topo: &Topology, to: IpAddr, n: usize) {
    let dst = SocketAddr::new(to, 443);
    let sink = udp_sink(topo, topo.cloud(), dst).expect("sink");
    udp_send(topo, topo.lan(), None, dst, n, 100).expect("sending");
    assert_eq!(
        sink.wait_for(n, Duration::from_secs(5)),
        n,
        "datagrams that arrived"
    );
    sink.stop();
}

/// Waits for the agent to exit; returns (exit code or -signal, stdout, stderr).
fn finish(agent: Agent) -> (i32, String, String) {
    let run = agent.wait(EXIT_TIMEOUT);
    (run.code_or_signal(), run.stdout.clone(), run.stderr.clone())
}

fn summary(out: &str) -> Value {
    let last = out.lines().last().expect("a summary line");
    let v: Value = serde_json::from_str(last).expect("JSON");
    assert_eq!(v["type"], "summary", "{last}");
    v
}

fn range_packets_out(summary: &Value) -> u64 {
    packets_out_of(summary, CAS_PREFIX)
}

fn packets_out_of(summary: &Value, prefix: &str) -> u64 {
    summary["ranges"]
        .as_array()
        .expect("ranges")
        .iter()
        .find(|r| r["prefix"] == prefix)
        .map(|r| r["packets_out"].as_u64().expect("packets_out"))
        .unwrap_or(0)
}

fn agent(topo: &Topology, args: &[&str]) -> (i32, String, String) {
    let out = topo
        .command(topo.gw(), &agent_bin_str())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running cas-audit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// TCX programs attached to the gateway's uplink (egress + ingress), by
/// name.
fn attached_programs(topo: &Topology) -> Vec<String> {
    topo.tcx_programs(topo.gw(), Topology::GW_UPLINK)
}

#[test]
fn sigkill_restart_loses_no_packet() {
    with_pin_bed("sigkill_restart_loses_no_packet", |topo, pin| {
        let a = start(topo, pin, &[]);
        send(topo, 5);
        a.signal(libc::SIGKILL);
        let (code, ..) = finish(a);
        assert_eq!(code, -libc::SIGKILL);
        // Nobody is running: the pinned links keep the programs attached.
        assert_eq!(
            attached_programs(topo),
            ["cas_tc_egress", "cas_tc_ingress"],
            "egress and ingress stay attached"
        );
        send(topo, 7);
        // `status` reads the pinned datapath with no agent running.
        let (code, out, err) = agent(
            topo,
            &["status", "--pin", pin.to_str().expect("UTF-8"), "--json"],
        );
        assert_eq!(code, 0, "status: {err}");
        let st: Value = serde_json::from_str(&out).expect("status JSON");
        assert_eq!(st["counters"]["matched"], 12, "{st}");
        assert_eq!(st["ranges_v4"], 438, "{st}");
        assert_eq!(st["flow_capacity"], 65536, "{st}");
        let links: Vec<(String, String, bool)> = st["links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| {
                (
                    l["hook"].as_str().expect("hook").to_owned(),
                    l["program"].as_str().expect("program").to_owned(),
                    l["present"].as_bool().expect("present"),
                )
            })
            .collect();
        assert_eq!(
            links,
            [
                ("egress".to_owned(), "cas_tc_egress".to_owned(), true),
                ("ingress".to_owned(), "cas_tc_ingress".to_owned(), true)
            ],
            "{st}"
        );

        let b = start(topo, pin, &[]);
        send(topo, 3);
        b.signal(libc::SIGTERM);
        let (code, out, err) = finish(b);
        assert_eq!(code, 0, "stderr:\n{err}");
        assert!(
            err.contains("took over the pinned datapath"),
            "stderr:\n{err}"
        );
        assert!(err.contains("took over uplink"), "stderr:\n{err}");
        let s = summary(&out);
        assert_eq!(
            range_packets_out(&s),
            15,
            "5 before the kill, 7 while down, 3 after: {s}"
        );
        assert_eq!(s["matched"], 15, "{s}");

        // Still attached after a clean exit (one program per hook: the
        // takeover replaced, not added), until detach.
        assert_eq!(attached_programs(topo), ["cas_tc_egress", "cas_tc_ingress"]);
        let (code, out, err) = agent(topo, &["detach", "--pin", pin.to_str().expect("UTF-8")]);
        assert_eq!(code, 0, "detach: {err}");
        assert!(out.contains("removed link uplink egress"), "{out}");
        assert!(out.contains("removed link uplink ingress"), "{out}");
        assert!(out.contains("removed map CAS_FLOWS"), "{out}");
        assert!(!pin.exists(), "{} left behind", pin.display());
        assert!(
            attached_programs(topo).is_empty(),
            "programs left after detach"
        );
        // Detaching twice is harmless.
        let (code, out, _) = agent(topo, &["detach", "--pin", pin.to_str().expect("UTF-8")]);
        assert_eq!(code, 0);
        assert!(out.contains("nothing pinned"), "{out}");
    });
}

#[test]
fn incompatible_or_foreign_pinned_state_is_refused() {
    with_pin_bed(
        "incompatible_or_foreign_pinned_state_is_refused",
        |topo, pin| {
            let pin_s = pin.to_str().expect("UTF-8");
            // A pinned datapath for the built-in set...
            let a = start(topo, pin, &[]);
            a.signal(libc::SIGTERM);
            assert_eq!(finish(a).0, 0);
            // ...is not taken over for another selection of it.
            let (code, _, err) = agent(
                topo,
                &[
                    "run",
                    "--iface",
                    Topology::GW_UPLINK,
                    "--pin",
                    pin_s,
                    "--datacenter",
                    "EU1",
                    "--duration",
                    "1",
                ],
            );
            assert_eq!(code, 2, "stderr:\n{err}");
            assert!(
                err.contains("audits other ranges or ports")
                    && err.contains("cas-audit detach --pin"),
                "stderr:\n{err}"
            );
            // A layout from another version is refused with the reset hint.
            std::fs::create_dir(pin.join("layout-v0")).expect("layout marker");
            let (code, _, err) = agent(
                topo,
                &[
                    "run",
                    "--iface",
                    Topology::GW_UPLINK,
                    "--pin",
                    pin_s,
                    "--duration",
                    "1",
                ],
            );
            assert_eq!(code, 2, "stderr:\n{err}");
            assert!(
                err.contains("has layout-v0, this cas-audit needs layout-v4-")
                    && err.contains(&format!("cas-audit detach --pin {pin_s}")),
                "stderr:\n{err}"
            );
            let (code, _, err) = agent(topo, &["detach", "--pin", pin_s]);
            assert_eq!(code, 0, "{err}");
            assert!(attached_programs(topo).is_empty());
            // Not a BPF filesystem.
            let plain =
                std::env::temp_dir().join(format!("cas-audit-plain-{}", std::process::id()));
            let (code, _, err) = agent(
                topo,
                &[
                    "run",
                    "--iface",
                    Topology::GW_UPLINK,
                    "--pin",
                    plain.to_str().expect("UTF-8"),
                    "--duration",
                    "1",
                ],
            );
            let _ = std::fs::remove_dir_all(&plain);
            assert_eq!(code, 2, "stderr:\n{err}");
            assert!(err.contains("is not on a BPF filesystem"), "stderr:\n{err}");
        },
    );
}

/// Under `ip netns exec` the agent runs in a mount namespace of its own
/// with a fresh /sys: a BPF filesystem mounted on /sys/fs/bpf there, by the
/// agent or by hand, dies with it, and so would the pins. `--pin` there is
/// refused with exit 2 and a hint, before anything is attached, and
/// `doctor` says so.
#[test]
fn pins_that_would_die_with_the_agent_are_refused() {
    with_topology(
        "pins_that_would_die_with_the_agent_are_refused",
        &[CAS],
        |topo| {
            let dir = format!("/sys/fs/bpf/cas-audit-test-{}", std::process::id());
            let (code, out, err) = agent(
                topo,
                &[
                    "run",
                    "--iface",
                    Topology::GW_UPLINK,
                    "--pin",
                    &dir,
                    "--duration",
                    "1",
                ],
            );
            assert_eq!(code, 2, "stderr:\n{err}");
            assert!(
                err.contains(&format!("pins in {dir} would not outlive cas-audit"))
                    && err.contains("ip netns exec")
                    && err.contains("mount -t bpf bpf /run/cas-audit-bpf"),
                "stderr:\n{err}"
            );
            assert!(!err.contains("keeps counting"), "stderr:\n{err}");
            assert!(out.is_empty(), "nothing audited: {out}");
            assert!(attached_programs(topo).is_empty());

            // A bpffs mounted by hand inside that namespace is refused too.
            let script = format!(
                "mount -t bpf bpf /sys/fs/bpf && exec {} run --iface {} --pin {dir} --duration 1",
                agent_bin_str(),
                Topology::GW_UPLINK
            );
            let out = topo
                .command(topo.gw(), "sh")
                .args(["-c", &script])
                .stdin(Stdio::null())
                .output()
                .expect("sh");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "stderr:\n{err}");
            assert!(err.contains("is not mounted outside it"), "stderr:\n{err}");
            assert!(attached_programs(topo).is_empty());

            // doctor tells it before anyone tries.
            let (_, out, err) = agent(topo, &["doctor"]);
            assert!(
                out.contains("pins under /sys/fs/bpf would not outlive the agent"),
                "stdout:\n{out}\nstderr:\n{err}"
            );
        },
    );
}

/// A set file with `prefixes` (US1 portal, port 443).
fn set_file(path: &Path, prefixes: &[&str]) {
    let e: Vec<String> = prefixes
        .iter()
        .map(|p| format!(r#"{{"prefix": "{p}", "datacenter": "US1", "purpose": "portal"}}"#))
        .collect();
    std::fs::write(
        path,
        format!(
            "{{\"schema\": 1, \"name\": \"lab\", \"source\": \"test\", \"published\": \"2026-11-22\", \"entries\": [{}]}}\n",
            e.join(", ")
        ),
    )
    .expect("set file");
}

/// A pinned agent reloads a changed set (a range dropped, one added), is
/// killed, and a new agent with the new set takes over: the range ids the
/// reload left are kept, and every packet is counted.
#[test]
fn takeover_after_a_reload_keeps_the_range_ids() {
    const MAIL: IpAddr = IpAddr::V4(Ipv4Addr::new(65, 55, 234, 193));
    const SESSION: IpAddr = IpAddr::V4(Ipv4Addr::new(40, 81, 63, 1));
    with_pin_bed_for(
        "takeover_after_a_reload_keeps_the_range_ids",
        &[CAS, MAIL, SESSION],
        |topo, pin| {
            let file =
                std::env::temp_dir().join(format!("cas-audit-pin-set-{}.json", std::process::id()));
            set_file(&file, &[CAS_PREFIX, "65.55.234.192/26"]);
            let fs = file.to_str().expect("UTF-8");
            let a = start(topo, pin, &["--set", fs]);
            send_to(topo, MAIL, 2);
            send(topo, 4);
            set_file(&file, &[CAS_PREFIX, "40.81.63.1/32"]);
            // The file is polled once a second.
            a.wait_for_log("reloaded set lab", Duration::from_secs(10));
            send_to(topo, SESSION, 3);
            a.signal(libc::SIGKILL);
            finish(a);
            send(topo, 5);

            let b = start(topo, pin, &["--set", fs]);
            send_to(topo, SESSION, 1);
            b.signal(libc::SIGTERM);
            let (code, out, err) = finish(b);
            let _ = std::fs::remove_file(&file);
            assert_eq!(code, 0, "stderr:\n{err}");
            assert!(
                err.contains("took over the pinned datapath"),
                "stderr:\n{err}"
            );
            let s = summary(&out);
            assert_eq!(packets_out_of(&s, CAS_PREFIX), 9, "{s}");
            assert_eq!(packets_out_of(&s, "40.81.63.1/32"), 4, "{s}");
            // The dropped range's id keeps its counts, under no prefix.
            assert_eq!(
                packets_out_of(&s, "unknown (dropped before a restart)"),
                2,
                "{s}"
            );
            let (code, _, err) = agent(topo, &["detach", "--pin", pin.to_str().expect("UTF-8")]);
            assert_eq!(code, 0, "{err}");
        },
    );
}
