//! Interfaces and listeners under faults (issue 16, items 1 and 2): the
//! agent follows its interfaces by index from rtnetlink events, so a
//! rename keeps the programs attached, a re-created interface is attached
//! from its creation event, and neither a shortage of descriptors nor a
//! local user holding many connections to `--metrics` detaches anything.
//!
//! Each test builds its own lan / gw / cloud namespaces ([`Topology`]),
//! runs the agent in the gw namespace on `uplink` and checks its JSON
//! lines against independent witnesses: the datagrams a UDP socket in the
//! cloud namespace received, the TCX programs the kernel lists on the
//! interface, the agent's CPU time in `/proc/PID/stat`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use cas_audit_common::names::{PROG_TC_EGRESS, PROG_TC_INGRESS};
use cas_audit_tests::process::{agent_bin_str, Process as Agent};
use cas_audit_tests::scratch::Bpffs;
use cas_audit_tests::traffic::{udp_send, udp_sink};
use cas_audit_tests::{with_topology, Topology};

/// A real CAS endpoint (US1 app-connector), only on the cloud's loopback.
const CAS: IpAddr = IpAddr::V4(Ipv4Addr::new(13, 64, 196, 27));
const CAS_PREFIX: &str = "13.64.196.27/32";
/// Where the lan sends: an allowed port of that range.
const CAS_UDP: SocketAddr = SocketAddr::new(CAS, 443);

/// `cas-audit run --iface IFACE --json - --ingress tc ARGS` in the gw
/// namespace, behind `wrapper` (a command that execs the agent, such as
/// `prlimit`), ready.
fn start_agent(topo: &Topology, wrapper: &[&str], iface: &str, args: &[&str]) -> Agent {
    let bin = agent_bin_str();
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = topo.command(topo.gw(), first);
            c.args(rest).arg(&bin);
            c
        }
        None => topo.command(topo.gw(), &bin),
    };
    cmd.args(["run", "--iface", iface, "--json", "-", "--ingress", "tc"])
        .args(args);
    let agent = Agent::spawn(cmd);
    agent.wait_ready();
    agent
}

/// Packets out the summary counted for the CAS range.
fn packets_out(summary: &Value) -> u64 {
    summary["ranges"]
        .as_array()
        .expect("ranges")
        .iter()
        .find(|r| r["prefix"] == CAS_PREFIX)
        .map_or(0, |r| r["packets_out"].as_u64().expect("packets_out"))
}

/// The final record of the flow from the lan's UDP `port`.
fn flow_from(flows: &[Value], port: u16) -> &Value {
    flows
        .iter()
        .find(|f| f["local_port"] == port && f["reason"] != "flagged")
        .unwrap_or_else(|| panic!("no record of the flow from port {port}: {flows:?}"))
}

/// `n` datagrams from the lan's UDP `port` to the CAS host, all of which
/// must arrive; how many the cloud's socket received.
fn burst(topo: &Topology, port: u16, n: usize) -> usize {
    let sink = udp_sink(topo, topo.cloud(), CAS_UDP).expect("sink");
    let from = SocketAddr::new(Topology::LAN_ADDR4, port);
    udp_send(topo, topo.lan(), Some(from), CAS_UDP, n, 100).expect("sending");
    assert_eq!(sink.wait_for(n, Duration::from_secs(5)), n, "arrived");
    sink.stop()
}

/// Runs `cmd`, which must succeed.
fn succeed(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().expect("running it");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    succeed(Command::new("ip").args(args));
}

/// Renames the gw's `uplink` `to`: down (a veth must be, to be renamed),
/// rename, up; going down flushed its routes and neighbours, which the
/// gateway gets back.
fn rename_uplink(topo: &Topology, to: &str) {
    let gw = topo.gw();
    ip(&["-n", gw, "link", "set", Topology::GW_UPLINK, "down"]);
    ip(&["-n", gw, "link", "set", Topology::GW_UPLINK, "name", to]);
    ip(&["-n", gw, "link", "set", to, "up"]);
    let cloud = Topology::CLOUD_ADDR4.to_string();
    ip(&[
        "-n",
        gw,
        "neigh",
        "replace",
        &cloud,
        "lladdr",
        "02:ca:5a:00:00:04",
        "dev",
        to,
        "nud",
        "permanent",
    ]);
    ip(&[
        "-n", gw, "-4", "route", "replace", "default", "via", &cloud, "dev", to,
    ]);
}

/// The programs of ours the kernel lists on `iface` of the gw (TCX).
fn ours_on(topo: &Topology, iface: &'static str) -> Vec<String> {
    topo.tcx_programs(topo.gw(), iface)
}

/// `uplink` renamed `up9` while traffic flows through it: the programs
/// stay on it, every datagram that crossed it is counted (as many as the
/// cloud's socket received), the rename is logged and the records name it
/// `up9`. Before interfaces were followed by index, the failed lookup of
/// `uplink` detached the programs and what followed went uncounted.
#[test]
fn a_renamed_interface_keeps_its_programs_and_counts() {
    with_topology(
        "a_renamed_interface_keeps_its_programs_and_counts",
        &[CAS],
        |topo| {
            let agent = start_agent(topo, &[], Topology::GW_UPLINK, &[]);
            let sink = udp_sink(topo, topo.cloud(), CAS_UDP).expect("sink");
            // 1 datagram every 5 ms for 2 s from one socket: one flow; those
            // sent while the interface is down are dropped by the gateway
            // (no route) and reach neither the uplink nor the sink.
            let sent = Arc::new(AtomicUsize::new(0));
            let done = Arc::new(AtomicBool::new(false));
            let sender = {
                let (sent, done) = (sent.clone(), done.clone());
                topo.spawn_in_ns(topo.lan(), move || {
                    let s = std::net::UdpSocket::bind((Topology::LAN_ADDR4, 40100)).expect("bind");
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_secs(2) {
                        if s.send_to(&[0u8; 64], CAS_UDP).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    done.store(true, Ordering::Relaxed);
                })
            };
            std::thread::sleep(Duration::from_millis(500));
            let before = sink.count();
            assert!(before > 0, "traffic flows before the rename");
            rename_uplink(topo, "up9");
            let renamed_at = sink.count();
            sender.join().expect("sender");
            assert!(done.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(300));
            let received = sink.stop();
            assert!(
                received > renamed_at,
                "traffic flows after the rename: {renamed_at} then {received} of {} sent",
                sent.load(Ordering::Relaxed)
            );
            assert_eq!(
                ours_on(topo, "up9"),
                [PROG_TC_EGRESS, PROG_TC_INGRESS],
                "the programs stayed on the renamed interface"
            );
            agent.wait_for_log("uplink (ifindex ", Duration::from_secs(5));
            let run = agent.stop();
            assert!(
                run.stderr
                    .contains("was renamed up9: the programs stay attached"),
                "{}",
                run.stderr
            );
            assert!(!run.stderr.contains("disappeared"), "{}", run.stderr);
            let (flows, summary) = run.flows_and_summary();
            assert_eq!(
                packets_out(&summary),
                received as u64,
                "counted as the cloud's socket received; stderr:\n{}",
                run.stderr
            );
            let flow = flow_from(&flows, 40100);
            assert_eq!(flow["packets_out"], received as u64, "{flow}");
            assert_eq!(flow["iface"], "up9", "{flow}");
            assert_eq!(summary["interface_gaps"], 0, "{summary}");
            assert!(ours_on(topo, "up9").is_empty(), "detached at exit");
        },
    );
}

/// Under `--pin`, a renamed interface's pinned links follow the name: an
/// agent started again with `--iface up9` takes them over (and counts on)
/// instead of refusing an interface that cas-audit programs watch.
#[test]
fn a_renamed_interface_is_taken_over_under_its_new_name() {
    with_topology(
        "a_renamed_interface_is_taken_over_under_its_new_name",
        &[CAS],
        |topo| {
            let fs = Bpffs::mount(
                std::env::temp_dir().join(format!("cas-audit-ifaces-{}", std::process::id())),
            );
            let pin = fs.0.join("cas-audit");
            let pin = pin.to_str().expect("UTF-8");
            let agent = start_agent(topo, &[], Topology::GW_UPLINK, &["--pin", pin]);
            rename_uplink(topo, "up9");
            agent.wait_for_log("was renamed up9", Duration::from_secs(5));
            agent.stop();
            assert_eq!(
                ours_on(topo, "up9"),
                [PROG_TC_EGRESS, PROG_TC_INGRESS],
                "still counting"
            );

            let again = start_agent(topo, &[], "up9", &["--pin", pin]);
            burst(topo, 40400, 7);
            let run = again.stop();
            assert!(run.stderr.contains("took over up9"), "{}", run.stderr);
            let (flows, _) = run.flows_and_summary();
            let flow = flow_from(&flows, 40400);
            assert_eq!(flow["packets_out"], 7, "{flow}");
            assert_eq!(flow["iface"], "up9", "{flow}");

            succeed(
                topo.command(topo.gw(), &agent_bin_str())
                    .args(["detach", "--pin", pin]),
            );
            assert!(ours_on(topo, "up9").is_empty(), "detached");
        },
    );
}

/// `uplink` deleted, then created again and used at once (no pause): the
/// programs are attached from the creation event, so the first datagrams
/// are counted; the gap is counted and logged. Before, the new interface
/// waited for the next one-second poll and its first traffic was lost.
#[test]
fn a_recreated_interface_is_attached_from_its_creation_event() {
    with_topology(
        "a_recreated_interface_is_attached_from_its_creation_event",
        &[CAS],
        |topo| {
            let agent = start_agent(topo, &[], Topology::GW_UPLINK, &[]);
            let first = burst(topo, 40201, 5);
            topo.delete_uplink().expect("deleting the uplink");
            agent.wait_for_log(
                "disappeared; re-attaching when it returns",
                Duration::from_secs(5),
            );
            topo.recreate_uplink().expect("re-creating the uplink");
            // At once: no wait for the agent.
            let second = burst(topo, 40202, 5);
            agent.wait_for_log("uplink is back (ifindex ", Duration::from_secs(5));
            assert_eq!(
                ours_on(topo, Topology::GW_UPLINK),
                [PROG_TC_EGRESS, PROG_TC_INGRESS]
            );
            let run = agent.stop();
            let (flows, summary) = run.flows_and_summary();
            assert_eq!(
                packets_out(&summary),
                (first + second) as u64,
                "both bursts counted; stderr:\n{}",
                run.stderr
            );
            let flow = flow_from(&flows, 40202);
            assert_eq!(flow["packets_out"], second as u64, "{flow}");
            assert_eq!(summary["interface_gaps"], 1, "{summary}");
            assert!(summary["interface_uncovered_ms"].is_u64(), "{summary}");
        },
    );
}

/// User and system CPU time of `pid` so far, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces), from state.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 from state.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// Scrapes `/metrics` once from the gw namespace: the answer, if any.
fn scrape(topo: &Topology, addr: SocketAddr) -> Option<String> {
    topo.in_ns(topo.gw(), move || {
        let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .ok()?;
        let mut resp = String::new();
        c.read_to_string(&mut resp).ok()?;
        Some(resp)
    })
}

/// The value of a sample without labels.
fn sample(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
        .trim()
        .parse()
        .expect("a count")
}

/// The agent with 128 descriptors (`prlimit`) and `--metrics`; a process
/// of user `nobody` holds 300 idle connections to the metrics port
/// meanwhile. The agent keeps counting exactly (as many datagrams as the
/// cloud's socket received), its programs stay on the interface, it does
/// not spin (CPU time over 2 s well below what a busy loop takes), and
/// `/metrics` answers again once the holder is gone. Before, accept
/// failed with EMFILE in a loop at full CPU, and the interface lookup,
/// failing for want of a descriptor, detached the programs.
#[test]
fn a_local_user_holding_metrics_connections_cannot_blind_the_agent() {
    with_topology(
        "a_local_user_holding_metrics_connections_cannot_blind_the_agent",
        &[CAS],
        |topo| {
            const PORT: u16 = 19477;
            const HELD: usize = 300;
            let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
            let agent = start_agent(
                topo,
                &["prlimit", "--nofile=128:128"],
                Topology::GW_UPLINK,
                &["--metrics", &addr.to_string()],
            );
            let script = format!(
            "for i in $(seq {HELD}); do exec {{fd}}<>/dev/tcp/127.0.0.1/{PORT} || exit 1; done; echo held; read -r _"
        );
            let mut holder = topo
                .command(topo.gw(), "prlimit")
                .args([
                    "--nofile=4096:4096",
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                ])
                .args(["--clear-groups", "bash", "-c", &script])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("starting the holder");
            let mut line = String::new();
            BufReader::new(holder.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("the holder's line");
            assert_eq!(
                line.trim(),
                "held",
                "the holder opened its {HELD} connections"
            );

            let pid = agent.pid();
            let t0 = Instant::now();
            let cpu0 = cpu_ticks(pid);
            let received = burst(topo, 40300, 20);
            std::thread::sleep(Duration::from_secs(2).saturating_sub(t0.elapsed()));
            let cpu = cpu_ticks(pid) - cpu0;
            // SAFETY: sysconf cannot fail for _SC_CLK_TCK.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
            let window = t0.elapsed().as_secs_f64();
            assert!(
                (cpu as f64) < 0.10 * window * hz as f64,
                "{cpu} ticks of CPU in {window:.1} s ({hz} a second): the agent spins"
            );
            assert_eq!(
                ours_on(topo, Topology::GW_UPLINK),
                [PROG_TC_EGRESS, PROG_TC_INGRESS],
                "the programs stay attached"
            );

            // The holder goes: the endpoint answers again.
            drop(holder.stdin.take());
            let _ = holder.kill();
            holder.wait().expect("the holder exits");
            let deadline = Instant::now() + Duration::from_secs(10);
            let body = loop {
                match scrape(topo, addr) {
                    Some(r) if r.starts_with("HTTP/1.1 200 OK") => break r,
                    other => {
                        assert!(
                            Instant::now() < deadline,
                            "/metrics does not answer after the holder left: {other:?}\n{}",
                            agent.stderr_now()
                        );
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            };
            let refused = sample(&body, "cas_audit_metrics_connections_refused_total");
            assert!(refused > 0, "{body}");
            assert_eq!(sample(&body, "cas_audit_interfaces_attached"), 1, "{body}");

            let run = agent.stop();
            assert!(!run.stderr.contains("disappeared"), "{}", run.stderr);
            let (_, summary) = run.flows_and_summary();
            assert_eq!(packets_out(&summary), received as u64, "{summary}");
            assert_eq!(summary["interface_gaps"], 0, "{summary}");
            assert!(
                summary["metrics_connections_refused"].as_u64() >= Some(refused),
                "{summary}"
            );
        },
    );
}
