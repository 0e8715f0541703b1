//! Privileged tests of `run --ipfix` and `run --syslog` against real
//! receivers in the cloud namespace of a [`Topology`]: Debian's nfdump
//! (`nfcapd` collects, `nfdump` reads back) and rsyslog; and of receivers
//! that are gone or unreachable, which must cost the agent nothing but
//! counted drops. The JSON lines of these runs are also checked against
//! the published schema (`schema/cas-audit-run.schema.json`).
//!
//! Everything runs inside namespaces the test creates: the agent in gw on
//! `uplink`, the receivers on the cloud's `edge` address (203.0.113.2).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use cas_audit_tests::process::{agent_bin_str, Exited, Process};
use cas_audit_tests::traffic::{tcp_exchange, udp_send, udp_sink, TcpServer};
use cas_audit_tests::{with_topology, TempDir, Topology};

/// A real CAS endpoint (US1 app-connector, dlp), only on the cloud's loopback.
const CAS: IpAddr = IpAddr::V4(Ipv4Addr::new(13, 64, 196, 27));
/// An IPv6 range of the IPFIX test's set file (the built-in sets have none).
const CAS6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xca5, 0, 0, 0, 0, 1));
const LAN: IpAddr = Topology::LAN_ADDR4;
/// The receivers' address: the cloud namespace's veth.
const RECEIVER: IpAddr = Topology::CLOUD_ADDR4;
/// An address on the uplink's network that nobody has: ARP gets no answer.
const NOBODY: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 77));
const UDP_COUNT: usize = 5;
const UDP_LEN: usize = 100;

/// A receiver daemon in a namespace, killed on drop.
struct Daemon(Child, &'static str);

impl Daemon {
    /// Starts `prog args` in `ns` and waits (at most 10 s) until a socket
    /// of its listens on `port` (`ss` in the namespace).
    fn start(topo: &Topology, ns: &str, prog: &'static str, args: &[&str], port: u16) -> Daemon {
        let child = topo
            .command(ns, prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {prog}: {e}"));
        let d = Daemon(child, prog);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = topo
                .command(ns, "ss")
                .args(["-Hlntu", &format!("sport = :{port}")])
                .output()
                .expect("ss");
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "{prog} does not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and waits (at most 10 s) for the exit.
    fn stop(mut self) {
        // SAFETY: plain syscall on our unreaped child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "{} did not stop", self.1);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(topo: &Topology, extra: &[&str]) -> Process {
    let mut cmd = topo.command(topo.gw(), &agent_bin_str());
    cmd.args([
        "run",
        "--iface",
        Topology::GW_UPLINK,
        "--json",
        "-",
        "--ingress",
        "tc",
        "--answer-timeout",
        "1",
    ]);
    cmd.args(extra);
    let agent = Process::spawn(cmd);
    agent.wait_ready();
    agent
}

/// Flow records (in order) and the summary of a run that exited 0, each
/// line valid against the published schema.
fn records(run: &Exited) -> (Vec<Value>, Value) {
    run.assert_ok();
    let schema_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/cas-audit-run.schema.json");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(&schema_path)
            .unwrap_or_else(|e| panic!("{}: {e}", schema_path.display())),
    )
    .expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    for v in run.json_lines() {
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{v}\ndoes not match the schema: {errors:?}"
        );
    }
    run.flows_and_summary()
}

/// The last record of each flow (by `flow_id`), checking that a flow's
/// records share their id and identity.
fn finals(flows: &[Value]) -> BTreeMap<u64, Value> {
    let mut by_id: BTreeMap<u64, Value> = BTreeMap::new();
    for f in flows {
        let id = f["flow_id"].as_u64().expect("flow_id");
        assert!(id > 0 && id < 1 << 53, "{f}");
        if let Some(prev) = by_id.get(&id) {
            for k in [
                "local_addr",
                "local_port",
                "remote_addr",
                "remote_port",
                "proto",
                "first_seen",
            ] {
                assert_eq!(prev[k], f[k], "records of flow {id} differ in {k}");
            }
        }
        by_id.insert(id, f.clone());
    }
    by_id
}

/// Bounded traffic: UDP out to a port nobody answers (disallowed), a TCP
/// exchange on 443 (both ways), UDP in from the CAS side.
fn traffic(topo: &Topology) {
    let to = SocketAddr::new(CAS, 8443);
    udp_send(
        topo,
        topo.lan(),
        Some(SocketAddr::new(LAN, 40001)),
        to,
        UDP_COUNT,
        UDP_LEN,
    )
    .expect("UDP out");
    let server = TcpServer::start(topo, topo.cloud(), SocketAddr::new(CAS, 443)).expect("server");
    let payload: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let back = tcp_exchange(
        topo,
        topo.lan(),
        Some(SocketAddr::new(LAN, 40100)),
        SocketAddr::new(CAS, 443),
        &payload,
    )
    .expect("TCP exchange");
    assert_eq!(back, payload);
    server.stop();
    let into = SocketAddr::new(LAN, 40003);
    let sink = udp_sink(topo, topo.lan(), into).expect("sink");
    udp_send(
        topo,
        topo.cloud(),
        Some(SocketAddr::new(CAS, 443)),
        into,
        UDP_COUNT,
        UDP_LEN,
    )
    .expect("UDP in");
    assert_eq!(sink.wait_for(UDP_COUNT, Duration::from_secs(5)), UDP_COUNT);
    sink.stop();
}

/// One direction of a flow: (src, sport, dst, dport, proto number, packets, bytes).
type Uniflow = (String, u64, String, u64, u64, u64, u64);

fn proto_number(p: &str) -> u64 {
    match p {
        "tcp" => 6,
        "udp" => 17,
        n => n.parse().expect("a protocol"),
    }
}

/// The uniflows the agent's final records describe.
fn uniflows(finals: &BTreeMap<u64, Value>) -> Vec<Uniflow> {
    let mut v = Vec::new();
    for f in finals.values() {
        let s = |k: &str| f[k].as_str().unwrap().to_string();
        let n = |k: &str| f[k].as_u64().unwrap_or(0);
        let proto = proto_number(f["proto"].as_str().unwrap());
        if n("packets_out") > 0 {
            v.push((
                s("local_addr"),
                n("local_port"),
                s("remote_addr"),
                n("remote_port"),
                proto,
                n("packets_out"),
                n("bytes_out"),
            ));
        }
        if n("packets_in") > 0 {
            v.push((
                s("remote_addr"),
                n("remote_port"),
                s("local_addr"),
                n("local_port"),
                proto,
                n("packets_in"),
                n("bytes_in"),
            ));
        }
    }
    v.sort();
    v
}

/// The flows `nfdump -o json` reads from `dir`.
fn nfdump(dir: &Path) -> (Vec<Uniflow>, String) {
    let out = Command::new("nfdump")
        .args(["-R", dir.to_str().unwrap(), "-o", "json"])
        .output()
        .expect("running nfdump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let flows: Vec<Value> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("nfdump's JSON ({e}):\n{text}"));
    let mut v: Vec<Uniflow> = flows
        .iter()
        .map(|f| {
            // IPv4 or IPv6 addresses.
            let s = |k: &str| {
                [k.to_string(), k.replace('4', "6")]
                    .iter()
                    .find_map(|k| f[k].as_str())
                    .unwrap_or_else(|| panic!("{k} in {f}"))
                    .to_string()
            };
            let n = |k: &str| f[k].as_u64().unwrap_or_else(|| panic!("{k} in {f}"));
            (
                s("src4_addr"),
                n("src_port"),
                s("dst4_addr"),
                n("dst_port"),
                n("proto"),
                n("in_packets"),
                n("in_bytes"),
            )
        })
        .collect();
    v.sort();
    (v, text)
}

#[test]
fn ipfix_export_reads_back_in_nfdump_with_the_json_counts() {
    with_topology("ipfix_export_reads_back_in_nfdump", &[CAS, CAS6], |topo| {
        let dir = TempDir::new("exports");
        // Both templates: the set has an IPv4 and an IPv6 range.
        let set = dir.0.join("set.json");
        std::fs::write(
            &set,
            format!(
                r#"{{"schema": 1, "name": "lab", "source": "test", "published": "2026-11-22", "entries": [
                {{"prefix": "{CAS}/32", "datacenter": "US1", "purpose": "app-connector"}},
                {{"prefix": "{CAS6}/128", "datacenter": "US1", "purpose": "app-connector"}}]}}"#
            ),
        )
        .expect("writing the set");
        let collector = SocketAddr::new(RECEIVER, 4739).to_string();
        let nfcapd = Daemon::start(
            topo,
            topo.cloud(),
            "nfcapd",
            &[
                "-w",
                dir.0.to_str().unwrap(),
                "-b",
                &RECEIVER.to_string(),
                "-p",
                "4739",
                "-t",
                "3600",
            ],
            4739,
        );
        let agent = start_agent(
            topo,
            &["--ipfix", &collector, "--set", set.to_str().unwrap()],
        );
        traffic(topo);
        udp_send(
            topo,
            topo.lan(),
            Some(SocketAddr::new(Topology::LAN_ADDR6, 40004)),
            SocketAddr::new(CAS6, 8443),
            UDP_COUNT,
            UDP_LEN,
        )
        .expect("UDP over IPv6");
        let run = agent.stop();
        // nfcapd writes its file when it stops.
        nfcapd.stop();
        let (flows, summary) = records(&run);
        let finals = finals(&flows);
        assert_eq!(finals.len(), 4, "{flows:?}");
        let want = uniflows(&finals);
        assert_eq!(want.len(), 5, "{want:?}");
        assert!(want.iter().any(|u| u.0 == "2001:db8:1::2"), "{want:?}");
        let (got, text) = nfdump(&dir.0);
        assert_eq!(got, want, "nfdump read:\n{text}");
        assert_eq!(summary["sinks"]["ipfix"]["sent"], 4, "{summary}");
        assert_eq!(summary["sinks"]["ipfix"]["dropped"], 0, "{summary}");
        // nfcapd's own account: 5 flow records, and no gap in the
        // sequence numbers (which count data records).
        let stat = Command::new("nfdump")
            .args(["-R", dir.0.to_str().unwrap(), "-I"])
            .output()
            .expect("nfdump -I");
        let stat = String::from_utf8_lossy(&stat.stdout);
        assert!(stat.contains("Sequence failures: 0"), "{stat}");
        assert!(stat.contains("Flows: 5"), "{stat}");
    });
}

/// rsyslog in the cloud namespace: UDP and TCP (octet-counted) on 5514,
/// each message written as `PRI|VERSION|HOST|APP|PROCID|MSGID|SD|MSG`.
fn rsyslog(topo: &Topology, dir: &Path) -> Daemon {
    let d = dir.display();
    let conf = format!(
        r#"global(workDirectory="{d}")
module(load="imudp")
module(load="imtcp")
template(name="fields" type="string" string="%pri%|%protocol-version%|%hostname%|%app-name%|%procid%|%msgid%|%structured-data%|%msg%\n")
ruleset(name="udp") {{ action(type="omfile" file="{d}/udp.log" template="fields") }}
ruleset(name="tcp") {{ action(type="omfile" file="{d}/tcp.log" template="fields") }}
input(type="imudp" address="{RECEIVER}" port="5514" ruleset="udp")
input(type="imtcp" address="{RECEIVER}" port="5514" ruleset="tcp")
"#
    );
    let path = dir.join("rsyslog.conf");
    std::fs::write(&path, conf).expect("writing rsyslog.conf");
    let pid = dir.join("rsyslog.pid");
    Daemon::start(
        topo,
        topo.cloud(),
        "rsyslogd",
        &[
            "-n",
            "-f",
            path.to_str().unwrap(),
            "-i",
            pid.to_str().unwrap(),
        ],
        5514,
    )
}

/// The lines rsyslog wrote to `file`, once there are `n` (at most 10 s).
fn wait_lines(file: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n || Instant::now() >= deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `key=value` pairs of a CEF extension (values without escapes here).
fn cef_ext(msg: &str) -> BTreeMap<String, String> {
    let ext = msg.splitn(8, '|').nth(7).expect("a CEF extension");
    let mut map = BTreeMap::new();
    let mut key: Option<String> = None;
    let mut value = String::new();
    for word in ext.split(' ') {
        match word.split_once('=') {
            Some((k, v)) if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()) => {
                if let Some(k) = key.take() {
                    map.insert(k, std::mem::take(&mut value));
                }
                key = Some(k.to_string());
                value = v.to_string();
            }
            _ => {
                value.push(' ');
                value.push_str(word);
            }
        }
    }
    if let Some(k) = key {
        map.insert(k, value);
    }
    map
}

/// PRI of a record's message: facility auth (4) and the severity the
/// README's table gives (independent of the agent's code).
fn pri(rec: &Value) -> String {
    let blocked =
        ["unanswered", "refused", "unreachable"].contains(&rec["state"].as_str().unwrap());
    let sev = match (
        rec["verdict"].as_str().unwrap(),
        rec["state"].as_str().unwrap(),
    ) {
        ("disallowed-port", _) if blocked => 5,
        ("disallowed-port", _) => 4,
        (_, _) if blocked => 4,
        _ => 6,
    };
    (4 * 8 + sev).to_string()
}

#[test]
fn syslog_reaches_rsyslog_as_rfc5424_and_cef() {
    with_topology("syslog_reaches_rsyslog", &[CAS], |topo| {
        let dir = TempDir::new("exports");
        let daemon = rsyslog(topo, &dir.0);
        let target = |scheme: &str| format!("{scheme}://{RECEIVER}:5514");

        // RFC 5424 over UDP: a message per flagged or blocked record; the
        // disallowed UDP flow is flagged (pending), then blocked (unanswered).
        let agent = start_agent(topo, &["--syslog", &target("udp")]);
        traffic(topo);
        std::thread::sleep(Duration::from_millis(2500));
        let (flows, summary) = records(&agent.stop());
        let wanted: Vec<&Value> = flows
            .iter()
            .filter(|f| ["flagged", "blocked"].contains(&f["reason"].as_str().unwrap()))
            .collect();
        let disallowed: Vec<(&str, &str)> = wanted
            .iter()
            .filter(|f| f["verdict"] == "disallowed-port")
            .map(|f| (f["reason"].as_str().unwrap(), f["proto"].as_str().unwrap()))
            .collect();
        assert_eq!(
            disallowed,
            [("flagged", "udp"), ("blocked", "udp")],
            "{flows:?}"
        );
        let lines = wait_lines(&dir.0.join("udp.log"), wanted.len());
        assert_eq!(lines.len(), wanted.len(), "{lines:?}\n{wanted:?}");
        let host = summary_host(&flows);
        for (line, rec) in lines.iter().zip(&wanted) {
            let f: Vec<&str> = line.splitn(8, '|').collect();
            assert_eq!(f[0], pri(rec), "{line}\n{rec}");
            assert_eq!(
                &f[1..6],
                [
                    "1",
                    host,
                    "cas-audit",
                    f[4],
                    rec["reason"].as_str().unwrap()
                ],
                "{line}"
            );
            assert!(f[6].starts_with("[cas-audit@32473 "), "{line}");
            for k in ["flow_id", "local_port", "remote_port"] {
                let kv = format!("{k}=\"{}\"", rec[k]);
                assert!(f[6].contains(&kv), "{kv}: {line}");
            }
            for k in ["verdict", "state", "local_addr", "remote_addr", "history"] {
                let kv = format!("{k}=\"{}\"", rec[k].as_str().unwrap());
                assert!(f[6].contains(&kv), "{kv}: {line}");
            }
            assert!(f[6].contains("datacenters=\"US1\""), "{line}");
            assert!(f[7].contains("13.64.196.27:"), "{line}");
        }
        assert_eq!(
            summary["sinks"]["syslog"]["sent"],
            wanted.len() as u64,
            "{summary}"
        );
        assert_eq!(summary["sinks"]["syslog"]["dropped"], 0, "{summary}");

        // CEF over TCP (octet-counted), with --syslog-ended: a message per record.
        let agent = start_agent(
            topo,
            &[
                "--syslog",
                &target("tcp"),
                "--syslog-format",
                "cef",
                "--syslog-ended",
            ],
        );
        traffic(topo);
        std::thread::sleep(Duration::from_millis(2500));
        let (flows, summary) = records(&agent.stop());
        let lines = wait_lines(&dir.0.join("tcp.log"), flows.len());
        daemon.stop();
        assert_eq!(lines.len(), flows.len(), "{lines:?}\n{flows:?}");
        assert!(flows.len() >= 6, "{flows:?}");
        for (line, rec) in lines.iter().zip(&flows) {
            let f: Vec<&str> = line.splitn(8, '|').collect();
            assert_eq!(f[0], pri(rec), "{line}\n{rec}");
            assert_eq!(
                (f[1], f[3], f[5]),
                ("1", "cas-audit", rec["reason"].as_str().unwrap())
            );
            assert_eq!(f[6], "-", "{line}");
            let msg = f[7];
            assert!(msg.starts_with("CEF:0|cas-audit|cas-audit|"), "{line}");
            let ext = cef_ext(msg);
            let (src, dst) = if rec["first_packet"] == "out" {
                (("local_addr", "local_port"), ("remote_addr", "remote_port"))
            } else {
                (("remote_addr", "remote_port"), ("local_addr", "local_port"))
            };
            assert_eq!(ext["src"], rec[src.0].as_str().unwrap(), "{line}");
            assert_eq!(ext["spt"], rec[src.1].to_string(), "{line}");
            assert_eq!(ext["dst"], rec[dst.0].as_str().unwrap(), "{line}");
            assert_eq!(ext["dpt"], rec[dst.1].to_string(), "{line}");
            assert_eq!(ext["proto"], rec["proto"].as_str().unwrap().to_uppercase());
            assert_eq!(ext["externalId"], rec["flow_id"].to_string(), "{line}");
            assert_eq!(ext["dvchost"], host, "{line}");
            assert_eq!(
                (ext["cs1Label"].as_str(), ext["cs2Label"].as_str()),
                ("verdict", "state")
            );
            assert_eq!(ext["cs1"], rec["verdict"].as_str().unwrap(), "{line}");
            assert_eq!(ext["cs2"], rec["state"].as_str().unwrap(), "{line}");
            assert_eq!(ext["out"], rec["bytes_out"].to_string(), "{line}");
            assert_eq!(ext["in"], rec["bytes_in"].to_string(), "{line}");
            assert_eq!(ext["cn2"], rec["packets_out"].to_string(), "{line}");
            let blocked =
                ["unanswered", "refused", "unreachable"].contains(&rec["state"].as_str().unwrap());
            assert_eq!(ext["act"] == "blocked", blocked, "{line}");
            assert_eq!(ext["outcome"] == "failure", blocked, "{line}");
        }
        assert_eq!(
            summary["sinks"]["syslog"]["sent"],
            flows.len() as u64,
            "{summary}"
        );
        assert_eq!(summary["sinks"]["syslog"]["dropped"], 0, "{summary}");
    });
}

/// The `host` of the records (all the same).
fn summary_host(flows: &[Value]) -> &str {
    let h = flows[0]["host"].as_str().expect("host");
    assert!(flows.iter().all(|f| f["host"] == h));
    h
}

#[test]
fn receivers_gone_or_unreachable_cost_only_counted_drops() {
    with_topology("receivers_gone_or_unreachable", &[CAS], |topo| {
        // Nothing listens on 4739 (the kernel answers port unreachable);
        // 203.0.113.77 does not answer ARP (TCP connects time out).
        let agent = start_agent(
            topo,
            &[
                "--ipfix",
                &SocketAddr::new(RECEIVER, 4739).to_string(),
                "--syslog",
                &format!("tcp://{NOBODY}:6514"),
                "--syslog-ended",
            ],
        );
        traffic(topo);
        std::thread::sleep(Duration::from_millis(2500));
        let stopping = Instant::now();
        let run = agent.stop();
        let stop_time = stopping.elapsed();
        let (flows, summary) = records(&run);
        let finals = finals(&flows);
        assert_eq!(finals.len(), 3, "{flows:?}");
        // Every packet still counted, as without exports.
        let want = uniflows(&finals);
        let counts: Vec<(u64, u64)> = want.iter().map(|u| (u.4, u.5)).collect();
        assert!(counts.contains(&(17, UDP_COUNT as u64)), "{want:?}");
        assert_eq!(want.len(), 4, "{want:?}");
        // Everything offered is accounted for; nothing reached the SIEM.
        let ipfix = &summary["sinks"]["ipfix"];
        assert_eq!(
            ipfix["sent"].as_u64().unwrap() + ipfix["dropped"].as_u64().unwrap(),
            3,
            "{summary}"
        );
        let syslog = &summary["sinks"]["syslog"];
        assert_eq!(syslog["sent"], 0, "{summary}");
        assert_eq!(syslog["dropped"], flows.len() as u64, "{summary}");
        // From SIGTERM to exit (after the harness's 0.5 s settle): a TCP
        // connect hanging on the dead address holds the agent no longer
        // than the exports' grace (2 s).
        assert!(
            stop_time < Duration::from_millis(500 + 2000 + 1500),
            "the agent took {stop_time:?} to stop"
        );
    });
}
