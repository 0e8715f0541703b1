//! Privileged integration tests of `cas-audit run` with real traffic.
//!
//! Each test builds its own [`Topology`] (lan / gw / cloud namespaces), starts
//! the agent inside the gw namespace on its `uplink` veth (`ip netns exec GW
//! cas-audit run --iface uplink --json - ...`), waits for the `auditing ` line
//! on stderr, sends bounded traffic between the lan and cloud namespaces,
//! stops the agent with a signal and checks the JSON lines it printed.
//!
//! Nothing here touches the root namespace: the simulated CAS addresses only
//! exist on the cloud namespace's `lo`, and the namespaces (with their veths)
//! are deleted when the topology is dropped, even when a test fails. A running
//! agent is killed by [`Agent`]'s `Drop` if a test panics.
//!
//! The binary is `$CAS_AUDIT_BIN`, else `<workspace>/target/debug/cas-audit`
//! (build it with `CAS_AUDIT_EBPF=require cargo build -p cas-audit`).
//!
//! IPv6: the built-in set (cas-2019-11) has no IPv6 ranges, so no IPv6 flow
//! can be audited with it; IPv6 parsing and matching are covered elsewhere
//! with crafted packets against a custom set. These tests are IPv4 only.
//!
//! Tests are skipped (with a message) when not run as root.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use cas_audit_tests::observers::{promtool_check, sample, scrape};
use cas_audit_tests::process::{
    agent_bin, agent_bin_str, Exited as Run, Process as Agent, EXIT_TIMEOUT, SETTLE,
};
use cas_audit_tests::scratch::TempDir;
use cas_audit_tests::traffic::{tcp_exchange, udp_send, udp_sink, TcpServer};
use cas_audit_tests::{shared_data, with_topology, Topology};

/// A real CAS endpoint (US1, app-connector and dlp); only ever configured on
/// the cloud namespace's loopback.
const CAS: IpAddr = IpAddr::V4(Ipv4Addr::new(13, 64, 196, 27));
const CAS_PREFIX: &str = "13.64.196.27/32";
/// A CAS mail address: its range has no data center.
const MAIL: IpAddr = IpAddr::V4(Ipv4Addr::new(65, 55, 234, 193));
const MAIL_PREFIX: &str = "65.55.234.192/26";
const LAN: IpAddr = Topology::LAN_ADDR4;
/// Not a CAS address: the cloud namespace's veth.
const NOT_CAS: IpAddr = Topology::CLOUD_ADDR4;

/// Datagrams per UDP burst, and their payload size.
const UDP_COUNT: usize = 5;
const UDP_LEN: usize = 100;
/// Wire size of one such datagram: Ethernet + IPv4 + UDP headers + payload.
const UDP_FRAME: u64 = 14 + 20 + 8 + UDP_LEN as u64;

const FLOW_FIELDS: [&str; 37] = [
    "ts",
    "reason",
    "flow_id",
    "duration_ms",
    "host",
    "iface",
    "interfaces",
    "nat",
    "nat_addr",
    "nat_port",
    "proto",
    "local_addr",
    "local_port",
    "remote_addr",
    "remote_port",
    "initiator",
    "first_packet",
    "service_port",
    "prefix",
    "datacenters",
    "purposes",
    "verdict",
    "packets_out",
    "bytes_out",
    "packets_in",
    "bytes_in",
    "tcp_flags_out",
    "tcp_flags_in",
    "first_seen",
    "last_seen",
    "state",
    "history",
    "icmp_type",
    "icmp_code",
    "reporter",
    "rst_ttl",
    "rst_hops",
];

const SUMMARY_COUNTERS: [&str; 7] = [
    "flows",
    "disallowed",
    "events_lost",
    "malformed",
    "flows_evicted",
    "packets",
    "matched",
];

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

fn bin_str() -> String {
    agent_bin_str()
}

/// Builds a topology whose cloud namespace answers for `cloud`, runs `f`,
/// drops the topology and checks that its namespaces are gone. Returns
/// without doing anything (but a message) when not root.
fn with_bed(test: &str, cloud: &[IpAddr], f: impl FnOnce(&Topology)) {
    with_topology(test, cloud, f)
}

fn sa(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// `cas-audit run --iface uplink --json - --ingress INGRESS EXTRA...` in
/// the gw namespace, waiting until it is ready.
fn start_agent(topo: &Topology, ingress: &str, extra: &[&str]) -> Agent {
    let mut args = vec!["run", "--iface", Topology::GW_UPLINK, "--json", "-"];
    args.extend(["--ingress", ingress]);
    args.extend(extra);
    let agent = spawn_agent(topo, &args);
    agent.wait_ready();
    agent
}

/// The agent binary with `args` in the gw namespace (not waiting).
fn spawn_agent(topo: &Topology, args: &[&str]) -> Agent {
    let mut cmd = topo.command(topo.gw(), &bin_str());
    cmd.args(args);
    Agent::spawn(cmd)
}

/// Checks on a finished agent.
trait RunExt {
    fn code(&self) -> Option<i32>;
    fn assert_success(&self);
    fn report(&self) -> Report;
    fn assert_usage_error(&self, words: &[&str]);
}

impl RunExt for Run {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn assert_success(&self) {
        assert_eq!(
            self.code(),
            Some(0),
            "agent exit status {:?}; stderr:\n{}\nstdout:\n{}",
            self.status,
            self.stderr,
            self.stdout
        );
    }

    /// Exit status 0 and well-formed JSON lines on stdout.
    fn report(&self) -> Report {
        self.assert_success();
        Report::parse(&self.stdout, &self.stderr)
    }

    /// Exit status 2 with every one of `words` on stderr, no summary on stdout.
    fn assert_usage_error(&self, words: &[&str]) {
        assert_eq!(
            self.code(),
            Some(2),
            "expected exit status 2, got {:?}; stderr:\n{}",
            self.status,
            self.stderr
        );
        for w in words {
            assert!(
                self.stderr.contains(w),
                "stderr does not mention {w:?}:\n{}",
                self.stderr
            );
        }
        assert!(
            !self.stdout.contains("\"summary\""),
            "a failed start printed a summary:\n{}",
            self.stdout
        );
    }
}

/// The JSON lines of one agent run.
#[derive(Debug)]
struct Report {
    /// `{"type":"flow"}` records, in output order.
    records: Vec<Value>,
    /// The one `{"type":"summary"}` record.
    summary: Value,
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {v}"))
}

fn u64_of(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not an unsigned number in {v}"))
}

fn strings_of(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} is not an array in {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{field} holds a non-string in {v}"))
                .to_owned()
        })
        .collect()
}

/// An RFC 3339 UTC time (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the fraction
/// of variable length) as a comparable (seconds part, nanoseconds) pair.
fn instant(t: &str) -> (String, u32) {
    let body = t
        .strip_suffix('Z')
        .unwrap_or_else(|| panic!("not a UTC RFC 3339 time: {t:?}"));
    let (secs, frac) = body.split_once('.').unwrap_or((body, ""));
    assert!(
        secs.len() == 19 && frac.len() <= 9 && frac.bytes().all(|b| b.is_ascii_digit()),
        "not an RFC 3339 time: {t:?}"
    );
    let nanos = format!("{frac:0<9}").parse().expect("digits");
    (secs.to_owned(), nanos)
}

/// `proto local_addr:local_port -> remote_addr:remote_port` of a record.
fn key_of(rec: &Value) -> String {
    format!(
        "{} {}:{} -> {}:{}",
        str_of(rec, "proto"),
        str_of(rec, "local_addr"),
        rec["local_port"],
        str_of(rec, "remote_addr"),
        rec["remote_port"]
    )
}

fn key(proto: &str, local: SocketAddr, remote: SocketAddr) -> String {
    format!(
        "{proto} {}:{} -> {}:{}",
        local.ip(),
        local.port(),
        remote.ip(),
        remote.port()
    )
}

/// Whether a record is a flow's final one (not a live `flagged` or
/// `blocked` notice).
fn is_final(rec: &Value) -> bool {
    !["flagged", "blocked"].contains(&str_of(rec, "reason"))
}

impl Report {
    /// Parses JSON lines and checks what holds for every run: all lines are
    /// JSON, flow records have every field, exactly one summary comes last,
    /// and the summary's counts agree with the records.
    fn parse(text: &str, stderr: &str) -> Report {
        let mut records = Vec::new();
        let mut summaries = Vec::new();
        let mut last_type = String::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("not a JSON line ({e}): {line:?}\nstdout:\n{text}\nstderr:\n{stderr}")
            });
            last_type = str_of(&v, "type").to_owned();
            match last_type.as_str() {
                "flow" => records.push(v),
                "summary" => summaries.push(v),
                other => panic!("unknown record type {other:?}: {line}"),
            }
        }
        assert_eq!(
            summaries.len(),
            1,
            "expected exactly one summary\nstdout:\n{text}\nstderr:\n{stderr}"
        );
        assert_eq!(last_type, "summary", "the summary is not the last line");
        let summary = summaries.pop().expect("one summary");

        for rec in &records {
            for f in FLOW_FIELDS {
                assert!(rec.get(f).is_some(), "flow record without {f}: {rec}");
            }
            assert!(
                ["flagged", "blocked", "ended", "expired", "exit"].contains(&str_of(rec, "reason")),
                "{rec}"
            );
            assert!(
                [
                    "pending",
                    "established",
                    "closed",
                    "reset",
                    "unanswered",
                    "refused",
                    "unreachable"
                ]
                .contains(&str_of(rec, "state")),
                "{rec}"
            );
            assert!(
                ["local", "remote", "unknown"].contains(&str_of(rec, "initiator")),
                "{rec}"
            );
            assert!(
                ["allowed", "disallowed-port"].contains(&str_of(rec, "verdict")),
                "{rec}"
            );
            assert_eq!(str_of(rec, "iface"), Topology::GW_UPLINK, "{rec}");
            for f in ["packets_out", "bytes_out", "packets_in", "bytes_in"] {
                u64_of(rec, f);
            }
            for f in ["datacenters", "purposes", "tcp_flags_out", "tcp_flags_in"] {
                strings_of(rec, f);
            }
            instant(str_of(rec, "ts"));
            assert!(
                instant(str_of(rec, "first_seen")) <= instant(str_of(rec, "last_seen")),
                "first_seen after last_seen: {rec}"
            );
            if str_of(rec, "reason") == "flagged" {
                assert_eq!(
                    str_of(rec, "verdict"),
                    "disallowed-port",
                    "an allowed flow was flagged: {rec}"
                );
            }
        }

        assert!(
            summary["ranges"].is_array(),
            "summary without ranges: {summary}"
        );
        for f in SUMMARY_COUNTERS {
            u64_of(&summary, f);
        }
        instant(str_of(&summary, "ts"));

        // Per flow: every disallowed flow is flagged before its final
        // record, and the last record of a flow is a final one.
        let mut last: HashMap<String, &Value> = HashMap::new();
        let mut flagged: Vec<String> = Vec::new();
        for rec in &records {
            let k = key_of(rec);
            if !is_final(rec) {
                flagged.push(k.clone());
            } else if str_of(rec, "verdict") == "disallowed-port" {
                assert!(
                    flagged.contains(&k),
                    "disallowed flow {k} has no flagged record before {rec}"
                );
            }
            last.insert(k, rec);
        }
        for (k, rec) in &last {
            assert!(is_final(rec), "the last record of {k} is not final: {rec}");
        }
        // One flow_id per flow (5-tuple and first packet), the same in
        // each of its records; one flow per flow_id.
        let mut ids: HashMap<u64, String> = HashMap::new();
        for rec in &records {
            let flow = format!("{} {}", key_of(rec), str_of(rec, "first_seen"));
            let id = u64_of(rec, "flow_id");
            assert!(id > 0 && id < 1 << 53, "{rec}");
            let known = ids.entry(id).or_insert_with(|| flow.clone());
            assert_eq!(*known, flow, "flow_id {id} names two flows");
        }
        let flows: std::collections::HashSet<&String> = ids.values().collect();
        assert_eq!(flows.len(), ids.len(), "a flow with two flow_ids");
        let finals: Vec<&Value> = records.iter().filter(|r| is_final(r)).collect();
        assert_eq!(
            u64_of(&summary, "flows"),
            finals.len() as u64,
            "summary flows vs final records\n{text}"
        );
        let disallowed = finals
            .iter()
            .filter(|r| str_of(r, "verdict") == "disallowed-port")
            .count();
        assert_eq!(
            u64_of(&summary, "disallowed"),
            disallowed as u64,
            "summary disallowed vs final records\n{text}"
        );
        // Small, unhurried runs: nothing lost, nothing malformed, no evictions.
        for f in ["events_lost", "malformed", "flows_evicted"] {
            assert_eq!(u64_of(&summary, f), 0, "{f} in {summary}");
        }
        Report { records, summary }
    }

    /// Final records (reason ended, expired or exit).
    fn finals(&self) -> Vec<&Value> {
        self.records.iter().filter(|r| is_final(r)).collect()
    }

    /// The final record of the one flow with this 5-tuple.
    fn flow(&self, proto: &str, local: SocketAddr, remote: SocketAddr) -> &Value {
        let k = key(proto, local, remote);
        let found: Vec<&Value> = self
            .finals()
            .into_iter()
            .filter(|r| key_of(r) == k)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one final record of {k}; records:\n{}",
            self.dump()
        );
        found[0]
    }

    fn flagged(&self, proto: &str, local: SocketAddr, remote: SocketAddr) -> bool {
        let k = key(proto, local, remote);
        self.records.iter().any(|r| !is_final(r) && key_of(r) == k)
    }

    /// The summary's entry for `prefix`, if it saw traffic.
    fn range(&self, prefix: &str) -> Option<&Value> {
        self.ranges().into_iter().find(|r| r["prefix"] == prefix)
    }

    fn ranges(&self) -> Vec<&Value> {
        self.summary["ranges"]
            .as_array()
            .expect("ranges")
            .iter()
            .collect()
    }

    fn summary_u64(&self, field: &str) -> u64 {
        u64_of(&self.summary, field)
    }

    fn dump(&self) -> String {
        let mut s = String::new();
        for r in &self.records {
            s.push_str(&format!("{r}\n"));
        }
        s.push_str(&format!("{}\n", self.summary));
        s
    }
}

fn has_flags(rec: &Value, field: &str, want: &[&str]) {
    let got = strings_of(rec, field);
    for f in want {
        assert!(
            got.iter().any(|g| g == f),
            "{field} lacks {f}: {got:?} in {rec}"
        );
    }
}

/// The summary range's counters equal the sum of `flows`' counters.
fn range_matches_flows(report: &Report, prefix: &str, flows: &[&Value]) {
    let range = report
        .range(prefix)
        .unwrap_or_else(|| panic!("no summary range {prefix}:\n{}", report.dump()));
    for f in ["packets_out", "bytes_out", "packets_in", "bytes_in"] {
        let sum: u64 = flows.iter().map(|r| u64_of(r, f)).sum();
        assert_eq!(
            u64_of(range, f),
            sum,
            "{f} of range {prefix} vs its flows\n{}",
            report.dump()
        );
    }
}

/// Checks that no XDP or tc program is left on the gw's uplink (with
/// bpftool too when it is installed; tcx links are only visible there).
fn assert_nothing_attached(topo: &Topology) {
    let run = |prog: &str, args: &[&str]| -> String {
        let out = topo
            .command(topo.gw(), prog)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {prog}: {e}"));
        assert!(
            out.status.success(),
            "{prog} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let link = run("ip", &["-d", "link", "show", "dev", Topology::GW_UPLINK]);
    assert!(!link.contains("xdp"), "XDP left on uplink:\n{link}");
    for dir in ["ingress", "egress"] {
        let f = run("tc", &["filter", "show", "dev", Topology::GW_UPLINK, dir]);
        assert!(f.trim().is_empty(), "tc {dir} filter left on uplink:\n{f}");
    }
    if let Some(bpftool) = which("bpftool") {
        let b = run(
            bpftool.to_str().expect("utf-8"),
            &["net", "show", "dev", Topology::GW_UPLINK],
        );
        assert!(
            !b.contains("prog_id") && !b.contains(" id "),
            "BPF program left on uplink:\n{b}"
        );
    } else {
        eprintln!("bpftool not installed: tcx attachments not checked");
    }
}

fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// Traffic scenarios and their expected records
// ---------------------------------------------------------------------------

/// [`UDP_COUNT`] datagrams `from` (in `from_ns`) to `to` (a sink in `to_ns`),
/// all of which must arrive.
fn udp_burst(topo: &Topology, from_ns: &str, from: SocketAddr, to_ns: &str, to: SocketAddr) {
    let sink = udp_sink(topo, to_ns, to).expect("starting the UDP sink");
    udp_send(topo, from_ns, Some(from), to, UDP_COUNT, UDP_LEN).expect("sending UDP");
    let got = sink.wait_for(UDP_COUNT, Duration::from_secs(5));
    assert_eq!(got, UDP_COUNT, "datagrams {from} -> {to} that arrived");
    sink.stop();
}

/// One echo exchange `from` (in `from_ns`) to a server at `to` in `to_ns`.
fn tcp_echo(topo: &Topology, from_ns: &str, from: SocketAddr, to_ns: &str, to: SocketAddr) {
    let server = TcpServer::start(topo, to_ns, to).expect("starting the TCP server");
    let payload: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let back = tcp_exchange(topo, from_ns, Some(from), to, &payload).expect("TCP exchange");
    assert_eq!(back, payload, "echo {from} -> {to}");
    assert_eq!(server.stop(), 1, "connections served at {to}");
}

/// Test 1 traffic: lan 198.51.100.2:40001 -> CAS 13.64.196.27:8443, UDP.
const UDP_OUT_LOCAL: SocketAddr = SocketAddr::new(LAN, 40001);
const UDP_OUT_REMOTE: SocketAddr = SocketAddr::new(CAS, 8443);

fn udp_out(topo: &Topology) {
    udp_burst(
        topo,
        topo.lan(),
        UDP_OUT_LOCAL,
        topo.cloud(),
        UDP_OUT_REMOTE,
    );
}

/// The record of [`udp_out`]'s flow, checked; it must have been flagged.
fn check_udp_out(report: &Report) -> &Value {
    let rec = report.flow("udp", UDP_OUT_LOCAL, UDP_OUT_REMOTE);
    assert!(
        report.flagged("udp", UDP_OUT_LOCAL, UDP_OUT_REMOTE),
        "no flagged record:\n{}",
        report.dump()
    );
    let want = [
        ("verdict", json!("disallowed-port")),
        ("local_addr", json!("198.51.100.2")),
        ("local_port", json!(40001)),
        ("remote_addr", json!("13.64.196.27")),
        ("remote_port", json!(8443)),
        ("service_port", json!(8443)),
        ("prefix", json!(CAS_PREFIX)),
        ("datacenters", json!(["US1"])),
        ("purposes", json!(["app-connector", "dlp"])),
        ("packets_out", json!(UDP_COUNT)),
        ("bytes_out", json!(UDP_COUNT as u64 * UDP_FRAME)),
        ("packets_in", json!(0)),
        ("bytes_in", json!(0)),
        ("initiator", json!("unknown")),
        ("first_packet", json!("out")),
        ("tcp_flags_out", json!([])),
        ("tcp_flags_in", json!([])),
    ];
    for (f, v) in want {
        assert_eq!(rec[f], v, "{f} of the UDP flow: {rec}");
    }
    assert!(report.summary_u64("disallowed") >= 1, "{}", report.summary);
    rec
}

/// Test 4 traffic: the CAS address opens a TCP connection to the lan's
/// stunnel port: 13.64.196.27:40444 -> 198.51.100.2:11344.
const TCP_IN_LOCAL: SocketAddr = SocketAddr::new(LAN, 11344);
const TCP_IN_REMOTE: SocketAddr = SocketAddr::new(CAS, 40444);

fn tcp_in(topo: &Topology) {
    tcp_echo(topo, topo.cloud(), TCP_IN_REMOTE, topo.lan(), TCP_IN_LOCAL);
}

fn check_tcp_in(report: &Report) -> &Value {
    let rec = report.flow("tcp", TCP_IN_LOCAL, TCP_IN_REMOTE);
    let want = [
        ("verdict", json!("allowed")),
        ("initiator", json!("remote")),
        ("first_packet", json!("in")),
        ("service_port", json!(11344)),
        ("local_port", json!(11344)),
        ("remote_port", json!(40444)),
        ("prefix", json!(CAS_PREFIX)),
    ];
    for (f, v) in want {
        assert_eq!(rec[f], v, "{f} of the remote-initiated TCP flow: {rec}");
    }
    assert!(
        ["ended", "exit"].contains(&str_of(rec, "reason")),
        "reason: {rec}"
    );
    for f in ["packets_in", "bytes_in", "packets_out", "bytes_out"] {
        assert!(u64_of(rec, f) > 0, "{f} is 0: {rec}");
    }
    has_flags(rec, "tcp_flags_in", &["SYN", "ACK", "FIN"]);
    has_flags(rec, "tcp_flags_out", &["SYN", "ACK", "FIN"]);
    assert!(
        !report.flagged("tcp", TCP_IN_LOCAL, TCP_IN_REMOTE),
        "allowed flow flagged"
    );
    rec
}

/// Deterministic ingress counting: 5 datagrams CAS 13.64.196.27:443 ->
/// lan 198.51.100.2:40443.
const UDP_IN_LOCAL: SocketAddr = SocketAddr::new(LAN, 40443);
const UDP_IN_REMOTE: SocketAddr = SocketAddr::new(CAS, 443);

fn udp_in(topo: &Topology) {
    udp_burst(topo, topo.cloud(), UDP_IN_REMOTE, topo.lan(), UDP_IN_LOCAL);
}

fn check_udp_in(report: &Report) -> &Value {
    let rec = report.flow("udp", UDP_IN_LOCAL, UDP_IN_REMOTE);
    let want = [
        ("verdict", json!("allowed")),
        ("service_port", json!(443)),
        ("first_packet", json!("in")),
        ("packets_in", json!(UDP_COUNT)),
        ("bytes_in", json!(UDP_COUNT as u64 * UDP_FRAME)),
        ("packets_out", json!(0)),
        ("bytes_out", json!(0)),
        ("prefix", json!(CAS_PREFIX)),
    ];
    for (f, v) in want {
        assert_eq!(rec[f], v, "{f} of the inbound UDP flow: {rec}");
    }
    rec
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Test 1: UDP to a CAS address on a port that is not allowed.
#[test]
fn udp_to_disallowed_port_is_flagged_and_counted() {
    with_bed(
        "udp_to_disallowed_port_is_flagged_and_counted",
        &[CAS],
        |topo| {
            let agent = start_agent(topo, "tc", &[]);
            udp_out(topo);
            let run = agent.stop();
            assert!(run.stderr.contains("SIGTERM"), "stderr:\n{}", run.stderr);
            let report = run.report();
            let rec = check_udp_out(&report);
            assert_eq!(str_of(rec, "reason"), "exit", "{rec}");
            assert_eq!(report.finals().len(), 1, "{}", report.dump());
            assert_eq!(report.summary_u64("flows"), 1);
            assert_eq!(report.ranges().len(), 1, "{}", report.dump());
            let range = report.range(CAS_PREFIX).expect("range entry");
            assert_eq!(range["packets_out"], json!(UDP_COUNT), "{range}");
            assert_eq!(range["datacenters"], json!(["US1"]), "{range}");
            assert_eq!(
                range["purposes"],
                json!(["app-connector", "dlp"]),
                "{range}"
            );
            range_matches_flows(&report, CAS_PREFIX, &[rec]);
            assert!(
                report.summary_u64("matched") >= UDP_COUNT as u64,
                "{}",
                report.summary
            );
            assert!(
                report.summary_u64("packets") >= report.summary_u64("matched"),
                "{}",
                report.summary
            );
        },
    );
}

/// Test 2: A TCP connection from the lan to CAS port 443.
#[test]
fn tcp_to_allowed_port_is_counted() {
    with_bed("tcp_to_allowed_port_is_counted", &[CAS], |topo| {
        let agent = start_agent(topo, "tc", &[]);
        let local = sa(LAN, 40002);
        let remote = sa(CAS, 443);
        tcp_echo(topo, topo.lan(), local, topo.cloud(), remote);
        let report = agent.stop().report();
        let rec = report.flow("tcp", local, remote);
        let want = [
            ("verdict", json!("allowed")),
            ("initiator", json!("local")),
            ("first_packet", json!("out")),
            ("service_port", json!(443)),
            ("local_addr", json!("198.51.100.2")),
            ("prefix", json!(CAS_PREFIX)),
        ];
        for (f, v) in want {
            assert_eq!(rec[f], v, "{f}: {rec}");
        }
        assert!(
            ["ended", "exit"].contains(&str_of(rec, "reason")),
            "reason: {rec}"
        );
        has_flags(rec, "tcp_flags_out", &["SYN", "ACK", "FIN"]);
        has_flags(rec, "tcp_flags_in", &["SYN", "ACK", "FIN"]);
        for f in ["packets_out", "bytes_out", "packets_in", "bytes_in"] {
            assert!(u64_of(rec, f) > 0, "{f} is 0: {rec}");
        }
        // 1000 payload bytes each way, plus headers.
        assert!(u64_of(rec, "bytes_out") > 1000, "{rec}");
        assert!(u64_of(rec, "bytes_in") > 1000, "{rec}");
        assert!(
            !report.flagged("tcp", local, remote),
            "allowed flow flagged"
        );
        assert_eq!(report.finals().len(), 1, "{}", report.dump());
        assert_eq!(report.summary_u64("disallowed"), 0);
        assert_eq!(report.ranges().len(), 1, "{}", report.dump());
        range_matches_flows(&report, CAS_PREFIX, &[rec]);
    });
}

/// Test 3: Traffic to an address outside the CAS set is not reported.
#[test]
fn non_cas_traffic_is_ignored() {
    with_bed("non_cas_traffic_is_ignored", &[CAS], |topo| {
        let agent = start_agent(topo, "tc", &[]);
        udp_burst(
            topo,
            topo.lan(),
            sa(LAN, 40003),
            topo.cloud(),
            sa(NOT_CAS, 8443),
        );
        tcp_echo(
            topo,
            topo.lan(),
            sa(LAN, 40004),
            topo.cloud(),
            sa(NOT_CAS, 443),
        );
        let report = agent.stop().report();
        assert!(
            report.records.is_empty(),
            "flow records for non-CAS traffic:\n{}",
            report.dump()
        );
        assert!(report.ranges().is_empty(), "{}", report.summary);
        assert_eq!(report.summary_u64("flows"), 0);
        assert_eq!(report.summary_u64("disallowed"), 0);
        assert_eq!(report.summary_u64("matched"), 0, "{}", report.summary);
        // The traffic was seen, just not matched.
        assert!(
            report.summary_u64("packets") >= UDP_COUNT as u64,
            "{}",
            report.summary
        );
    });
}

/// Test 4: A connection opened by the CAS side to the lan's port 11344, plus
/// inbound UDP (exact ingress counts).
#[test]
fn remote_initiated_tcp_and_inbound_udp() {
    with_bed("remote_initiated_tcp_and_inbound_udp", &[CAS], |topo| {
        let agent = start_agent(topo, "tc", &[]);
        tcp_in(topo);
        udp_in(topo);
        let report = agent.stop().report();
        let tcp = check_tcp_in(&report);
        let udp = check_udp_in(&report);
        assert_eq!(report.finals().len(), 2, "{}", report.dump());
        assert_eq!(report.summary_u64("disallowed"), 0);
        range_matches_flows(&report, CAS_PREFIX, &[tcp, udp]);
    });
}

/// Test 5: A TCP connection from the lan to CAS port 8443.
#[test]
fn tcp_to_disallowed_port_is_flagged() {
    with_bed("tcp_to_disallowed_port_is_flagged", &[CAS], |topo| {
        let agent = start_agent(topo, "tc", &[]);
        let local = sa(LAN, 40005);
        let remote = sa(CAS, 8443);
        tcp_echo(topo, topo.lan(), local, topo.cloud(), remote);
        let report = agent.stop().report();
        let rec = report.flow("tcp", local, remote);
        let want = [
            ("verdict", json!("disallowed-port")),
            ("initiator", json!("local")),
            ("service_port", json!(8443)),
            ("prefix", json!(CAS_PREFIX)),
        ];
        for (f, v) in want {
            assert_eq!(rec[f], v, "{f}: {rec}");
        }
        assert!(
            report.flagged("tcp", local, remote),
            "no flagged record:\n{}",
            report.dump()
        );
        has_flags(rec, "tcp_flags_out", &["SYN", "ACK", "FIN"]);
        assert_eq!(report.summary_u64("disallowed"), 1, "{}", report.summary);
        range_matches_flows(&report, CAS_PREFIX, &[rec]);
    });
}

// 6. IPv6: the built-in set has no IPv6 ranges; see the module comment.

/// Test 7: `--datacenter EU2` drops the US1-only address but keeps mail ranges.
#[test]
fn datacenter_filter_keeps_mail_ranges() {
    with_bed(
        "datacenter_filter_keeps_mail_ranges",
        &[CAS, MAIL],
        |topo| {
            let agent = start_agent(topo, "tc", &["--datacenter", "EU2"]);
            udp_out(topo);
            let mail_local = sa(LAN, 40007);
            let mail_remote = sa(MAIL, 8443);
            udp_burst(topo, topo.lan(), mail_local, topo.cloud(), mail_remote);
            let report = agent.stop().report();
            assert!(
                report
                    .records
                    .iter()
                    .all(|r| str_of(r, "remote_addr") != "13.64.196.27"),
                "13.64.196.27 (US1 only) reported with --datacenter EU2:\n{}",
                report.dump()
            );
            assert!(report.range(CAS_PREFIX).is_none(), "{}", report.summary);
            let rec = report.flow("udp", mail_local, mail_remote);
            let want = [
                ("verdict", json!("disallowed-port")),
                ("prefix", json!(MAIL_PREFIX)),
                ("datacenters", json!([])),
                ("purposes", json!(["mail"])),
                ("packets_out", json!(UDP_COUNT)),
                ("packets_in", json!(0)),
                ("service_port", json!(8443)),
            ];
            for (f, v) in want {
                assert_eq!(rec[f], v, "{f}: {rec}");
            }
            assert!(report.flagged("udp", mail_local, mail_remote));
            assert_eq!(report.finals().len(), 1, "{}", report.dump());
            assert_eq!(report.ranges().len(), 1, "{}", report.summary);
            range_matches_flows(&report, MAIL_PREFIX, &[rec]);
        },
    );
}

/// Test 8: XDP ingress (native, or generic after a warning) counts the same.
#[test]
fn xdp_ingress_counts_like_tc() {
    with_bed("xdp_ingress_counts_like_tc", &[CAS], |topo| {
        let agent = start_agent(topo, "xdp", &[]);
        let stderr = agent.stderr_now();
        assert!(
            stderr.contains("ingress xdp"),
            "not attached with XDP ingress:\n{stderr}"
        );
        if stderr.contains("generic XDP") {
            eprintln!("xdp_ingress_counts_like_tc: native XDP unavailable, generic XDP used");
        }
        udp_out(topo);
        tcp_in(topo);
        udp_in(topo);
        let report = agent.stop().report();
        let a = check_udp_out(&report);
        let b = check_tcp_in(&report);
        let c = check_udp_in(&report);
        assert_eq!(report.finals().len(), 3, "{}", report.dump());
        assert_eq!(report.summary_u64("disallowed"), 1, "{}", report.summary);
        range_matches_flows(&report, CAS_PREFIX, &[a, b, c]);
    });
}

/// Test 9a: `--duration` ends the run by itself, reporting open flows at exit.
#[test]
fn duration_exits_by_itself() {
    with_bed("duration_exits_by_itself", &[CAS], |topo| {
        let agent = start_agent(topo, "tc", &["--duration", "3"]);
        udp_out(topo);
        let run = agent.wait(EXIT_TIMEOUT);
        assert!(
            run.elapsed >= Duration::from_secs(3),
            "exited after {:?}, before --duration 3",
            run.elapsed
        );
        let report = run.report();
        let rec = check_udp_out(&report);
        assert_eq!(str_of(rec, "reason"), "exit", "{rec}");
        assert_eq!(report.summary_u64("flows"), 1);
    });
}

/// Test 9b: SIGINT stops the agent cleanly, with a summary.
#[test]
fn sigint_exits_cleanly() {
    with_bed("sigint_exits_cleanly", &[CAS], |topo| {
        let agent = start_agent(topo, "tc", &[]);
        udp_out(topo);
        std::thread::sleep(SETTLE);
        let run = agent.stop_with(libc::SIGINT);
        assert!(run.stderr.contains("SIGINT"), "stderr:\n{}", run.stderr);
        let report = run.report();
        let rec = check_udp_out(&report);
        assert_eq!(str_of(rec, "reason"), "exit", "{rec}");
        assert_nothing_attached(topo);
    });
}

/// Test 10a: Unknown interface (inside the gw namespace).
#[test]
fn exit_2_unknown_interface() {
    with_bed("exit_2_unknown_interface", &[CAS], |topo| {
        let run = spawn_agent(topo, &["run", "--iface", "doesnotexist0", "--json", "-"])
            .wait(EXIT_TIMEOUT);
        run.assert_usage_error(&["unknown interface", "doesnotexist0"]);
        assert_nothing_attached(topo);
    });
}

/// Test 10b: `--allow-port 0`.
#[test]
fn exit_2_allow_port_zero() {
    with_bed("exit_2_allow_port_zero", &[CAS], |topo| {
        let run = spawn_agent(
            topo,
            &[
                "run",
                "--iface",
                Topology::GW_UPLINK,
                "--allow-port",
                "0",
                "--json",
                "-",
            ],
        )
        .wait(EXIT_TIMEOUT);
        run.assert_usage_error(&["invalid value", "'0'", "--allow-port"]);
        assert_nothing_attached(topo);
    });
}

/// Test 10c: No `--iface`.
#[test]
fn exit_2_missing_iface() {
    with_bed("exit_2_missing_iface", &[CAS], |topo| {
        let run = spawn_agent(topo, &["run", "--json", "-"]).wait(EXIT_TIMEOUT);
        run.assert_usage_error(&["required", "--iface"]);
        assert_nothing_attached(topo);
    });
}

/// Test 10d: Unknown data center.
#[test]
fn exit_2_unknown_datacenter() {
    with_bed("exit_2_unknown_datacenter", &[CAS], |topo| {
        let run = spawn_agent(
            topo,
            &[
                "run",
                "--iface",
                Topology::GW_UPLINK,
                "--datacenter",
                "US9",
                "--json",
                "-",
            ],
        )
        .wait(EXIT_TIMEOUT);
        run.assert_usage_error(&["invalid value", "US9", "--datacenter"]);
        assert_nothing_attached(topo);
    });
}

/// Test 10e: Not root and no capabilities.
#[test]
fn exit_2_insufficient_privileges() {
    with_bed("exit_2_insufficient_privileges", &[CAS], |topo| {
        let Some(setpriv) = which("setpriv") else {
            eprintln!("SKIPPED exit_2_insufficient_privileges: setpriv (util-linux) not found");
            return;
        };
        let mut cmd = topo.command(topo.gw(), setpriv.to_str().expect("utf-8"));
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            &bin_str(),
            "run",
            "--iface",
            Topology::GW_UPLINK,
            "--json",
            "-",
        ]);
        let run = Agent::spawn(cmd).wait(EXIT_TIMEOUT);
        run.assert_usage_error(&["insufficient privileges", "CAP_BPF", "CAP_NET_ADMIN"]);
        assert_nothing_attached(topo);
    });
}

/// Test 11: `--json PATH` writes the records to a file.
#[test]
fn json_to_file() {
    with_bed("json_to_file", &[CAS], |topo| {
        let dir = TempDir::new("agent");
        let path = dir.0.join("records.jsonl");
        let path_s = path.to_str().expect("utf-8").to_owned();
        let agent = spawn_agent(
            topo,
            &[
                "run",
                "--iface",
                Topology::GW_UPLINK,
                "--json",
                &path_s,
                "--ingress",
                "tc",
            ],
        );
        agent.wait_ready();
        udp_out(topo);
        let run = agent.stop();
        run.assert_success();
        assert!(
            !run.stdout.contains("\"type\":"),
            "JSON records on stdout with --json PATH:\n{}",
            run.stdout
        );
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let report = Report::parse(&text, &run.stderr);
        let rec = check_udp_out(&report);
        assert_eq!(str_of(rec, "reason"), "exit", "{rec}");
        assert_eq!(report.summary_u64("flows"), 1);
        let range = report.range(CAS_PREFIX).expect("range entry");
        assert_eq!(range["packets_out"], json!(UDP_COUNT), "{range}");
    });
}

// ---------------------------------------------------------------------------
// Auditing against a set file (`run --set`)
// ---------------------------------------------------------------------------

/// A simulated CAS address in an IPv6 range of a hand-written set file.
const CAS6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xca5, 0, 0, 0, 0, 1));
const LAN6: IpAddr = Topology::LAN_ADDR6;

/// The published pages, beside the repository (`../shared/seeds`), or
/// the copies kept in `cas-audit/data/seeds` for a clone elsewhere.
fn seed(page: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../../shared/seeds").join(page);
    let p = if shared.is_file() {
        shared
    } else {
        root.join("../cas-audit/data/seeds").join(page)
    };
    assert!(
        p.is_file(),
        "{} is missing: the published pages are test input",
        p.display()
    );
    p
}

/// `cas-audit ARGS` in the root namespace (commands that attach nothing).
fn cli(args: &[&str]) -> Run {
    let mut cmd = Command::new(agent_bin());
    cmd.args(args);
    Agent::spawn(cmd).wait(EXIT_TIMEOUT)
}

/// `run --set FILE`: each range's purposes decide its allowed ports, for
/// IPv4 and IPv6. The same 443 connection is allowed to the app-connector
/// address and disallowed to the DLP range, whose only port is 11344.
#[test]
fn run_against_a_set_file_uses_per_purpose_ports() {
    with_bed(
        "run_against_a_set_file_uses_per_purpose_ports",
        &[CAS, CAS6],
        |topo| {
            let dir = TempDir::new("agent");
            let file = dir.0.join("lab.json");
            std::fs::write(
                &file,
                r#"{"schema": 1, "name": "lab", "source": "test", "published": "2026-11-22",
 "entries": [
  {"prefix": "13.64.196.27/32", "datacenter": "US1", "purpose": "app-connector", "direction": "inbound"},
  {"prefix": "2001:db8:ca5::/48", "datacenter": "EU2", "purpose": "dlp", "direction": "inbound"}
 ]}
"#,
            )
            .expect("writing the set file");
            let file = file.to_str().expect("utf-8 path");
            let agent = start_agent(topo, "tc", &["--set", file]);

            let v4 = (sa(LAN, 40101), sa(CAS, 443));
            tcp_echo(topo, topo.lan(), v4.0, topo.cloud(), v4.1);
            // CAS opens to the LAN's stunnel over IPv6.
            let stunnel = (sa(LAN6, 11344), sa(CAS6, 40102));
            tcp_echo(topo, topo.cloud(), stunnel.1, topo.lan(), stunnel.0);
            let v6_443 = (sa(LAN6, 40103), sa(CAS6, 443));
            tcp_echo(topo, topo.lan(), v6_443.0, topo.cloud(), v6_443.1);
            let report = agent.stop().report();

            let r = report.flow("tcp", v4.0, v4.1);
            for (f, v) in [
                ("verdict", json!("allowed")),
                ("service_port", json!(443)),
                ("prefix", json!("13.64.196.27/32")),
                ("datacenters", json!(["US1"])),
                ("purposes", json!(["app-connector"])),
            ] {
                assert_eq!(r[f], v, "{f}: {r}");
            }
            let r = report.flow("tcp", stunnel.0, stunnel.1);
            for (f, v) in [
                ("verdict", json!("allowed")),
                ("initiator", json!("remote")),
                ("service_port", json!(11344)),
                ("prefix", json!("2001:db8:ca5::/48")),
                ("datacenters", json!(["EU2"])),
                ("purposes", json!(["dlp"])),
            ] {
                assert_eq!(r[f], v, "{f}: {r}");
            }
            assert!(
                u64_of(r, "packets_in") > 0 && u64_of(r, "packets_out") > 0,
                "{r}"
            );
            let r = report.flow("tcp", v6_443.0, v6_443.1);
            assert_eq!(r["verdict"], json!("disallowed-port"), "{r}");
            assert_eq!(r["initiator"], json!("local"), "{r}");
            assert!(
                report.flagged("tcp", v6_443.0, v6_443.1),
                "{}",
                report.dump()
            );
            assert_eq!(report.finals().len(), 3, "{}", report.dump());
            assert_eq!(report.summary["set"], json!("lab"));
            assert_eq!(report.summary["port_policy"], json!("per-range"));
            assert_eq!(report.summary["allowed_ports"], json!([443, 11344]));
            assert_eq!(report.summary_u64("disallowed"), 1);
        },
    );
}

/// `sets import` of the published 2019-11 page, then `run --set` on the
/// imported file: the same verdicts as the built-in set's purposes give.
#[test]
fn run_against_an_imported_page() {
    with_bed("run_against_an_imported_page", &[CAS], |topo| {
        let dir = TempDir::new("agent");
        let file = dir.0.join("imported.json");
        let page = seed("network-requirements-2019-11.md");
        let import = cli(&[
            "sets",
            "import",
            page.to_str().expect("utf-8"),
            "--out",
            file.to_str().expect("utf-8"),
        ]);
        import.assert_success();
        assert!(import.stderr.contains("cas-2019-11"), "{}", import.stderr);
        let agent = start_agent(topo, "tc", &["--set", file.to_str().expect("utf-8")]);
        udp_out(topo);
        let https = (sa(LAN, 40111), sa(CAS, 443));
        tcp_echo(topo, topo.lan(), https.0, topo.cloud(), https.1);
        let stunnel = (sa(LAN, 11344), sa(CAS, 40112));
        tcp_echo(topo, topo.cloud(), stunnel.1, topo.lan(), stunnel.0);
        let report = agent.stop().report();
        check_udp_out(&report);
        assert_eq!(
            report.flow("tcp", https.0, https.1)["verdict"],
            json!("allowed")
        );
        let r = report.flow("tcp", stunnel.0, stunnel.1);
        assert_eq!(r["verdict"], json!("allowed"), "{r}");
        assert_eq!(r["service_port"], json!(11344), "{r}");
        assert_eq!(report.summary["set"], json!("cas-2019-11"));
        assert_eq!(report.summary["port_policy"], json!("per-range"));
    });
}

/// The first host address of the first prefix (of IPv6 when `v6`) of
/// `set` that only the Service Tags source lists, in `region`, for
/// `purpose`, and that overlaps no prefix of the page; and the prefix.
fn tag_only_address(
    set: &Value,
    region: Option<&str>,
    purpose: &str,
    v6: bool,
) -> (IpAddr, String) {
    let entries = set["entries"].as_array().expect("entries");
    let e = entries
        .iter()
        .find(|e| {
            e["region"].as_str() == region
                && e["purpose"] == purpose
                && e["prefix"].as_str().unwrap().contains(':') == v6
                && e["sources"] == json!(["tags-public-2025-11-10"])
                && !entries.iter().any(|o| {
                    let (p, q): (ipnet::IpNet, ipnet::IpNet) = (
                        e["prefix"].as_str().unwrap().parse().unwrap(),
                        o["prefix"].as_str().unwrap().parse().unwrap(),
                    );
                    o["sources"] != e["sources"] && (p.contains(&q) || q.contains(&p))
                })
        })
        .unwrap_or_else(|| panic!("no {purpose} prefix in {region:?}"));
    let prefix = e["prefix"].as_str().unwrap().to_owned();
    let net: ipnet::IpNet = prefix.parse().unwrap();
    let addr = match net {
        ipnet::IpNet::V4(n) if n.prefix_len() < 32 => {
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 1))
        }
        ipnet::IpNet::V6(n) if n.prefix_len() < 128 => {
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(n.network()) + 1))
        }
        n => n.addr(),
    };
    (addr, net.trunc().to_string())
}

/// `run --set` on a set merged from the 2024-11 page and the 2025-11
/// Service Tags, with `--region westus`: a tag-only app-connector address
/// of West US allows 443 and the DLP stunnel's 11344 and flags 8443; a
/// Front Door IPv6 address is portal, SIEM agent and log collector; an
/// address of another region is not audited.
#[test]
fn run_against_a_set_merged_from_page_and_tags() {
    let dir = TempDir::new("merged");
    let merged = dir.0.join("merged.json");
    let merged = merged.to_str().expect("UTF-8").to_owned();
    let m = cli(&[
        "sets",
        "merge",
        shared_data("pages/network-requirements-2024-11-03.md")
            .to_str()
            .expect("UTF-8"),
        shared_data("servicetags/ServiceTags_Public_cn376_2025-11-10_mcas-excerpt.json")
            .to_str()
            .expect("UTF-8"),
        "--out",
        &merged,
    ]);
    m.assert_success();
    let set: Value = serde_json::from_str(&std::fs::read_to_string(&merged).unwrap()).unwrap();
    let (west, west_prefix) = tag_only_address(&set, Some("westus"), "app-connector", false);
    let (uk, _) = tag_only_address(&set, Some("uksouth"), "app-connector", false);
    let fd6 = tag_only_address(&set, None, "portal", true);
    with_bed(
        "run_against_a_set_merged_from_page_and_tags",
        &[west, uk, fd6.0],
        |topo| {
            let agent = start_agent(topo, "tc", &["--set", &merged, "--region", "westus"]);
            let https = (sa(LAN, 40201), sa(west, 443));
            tcp_echo(topo, topo.lan(), https.0, topo.cloud(), https.1);
            let stunnel = (sa(LAN, 11344), sa(west, 40202));
            tcp_echo(topo, topo.cloud(), stunnel.1, topo.lan(), stunnel.0);
            let other = (sa(LAN, 40203), sa(west, 8443));
            udp_burst(topo, topo.lan(), other.0, topo.cloud(), other.1);
            let portal6 = (sa(LAN6, 40204), sa(fd6.0, 443));
            tcp_echo(topo, topo.lan(), portal6.0, topo.cloud(), portal6.1);
            let elsewhere = (sa(LAN, 40205), sa(uk, 443));
            tcp_echo(topo, topo.lan(), elsewhere.0, topo.cloud(), elsewhere.1);
            let report = agent.stop().report();

            let tags = json!(["app-connector", "dlp"]);
            for (proto, flow, verdict, port) in [
                ("tcp", https, "allowed", 443),
                ("tcp", stunnel, "allowed", 11344),
                ("udp", other, "disallowed-port", 8443),
            ] {
                let r = report.flow(proto, flow.0, flow.1);
                assert_eq!(r["verdict"], verdict, "{r}");
                assert_eq!(r["service_port"], port, "{r}");
                assert_eq!(r["prefix"], west_prefix.as_str(), "{r}");
                assert_eq!(r["purposes"], tags, "{r}");
                assert_eq!(r["datacenters"], json!([]), "{r}");
            }
            let r = report.flow("tcp", portal6.0, portal6.1);
            assert_eq!(r["verdict"], "allowed", "{r}");
            assert_eq!(r["prefix"], fd6.1.as_str(), "{r}");
            assert_eq!(
                r["purposes"],
                json!(["portal", "siem-agent", "log-collector"]),
                "{r}"
            );
            assert_eq!(report.finals().len(), 4, "{}", report.dump());
            assert_eq!(report.summary_u64("disallowed"), 1);
            assert_eq!(report.summary["port_policy"], json!("per-range"));
            assert_eq!(
                report.summary["set"],
                json!("cas-2024-02+tags-public-2025-11-10")
            );
        },
    );
}

/// A malformed set file: exit 2 naming the file, the entry and the reason;
/// nothing attached.
#[test]
fn exit_2_bad_set_file() {
    with_bed("exit_2_bad_set_file", &[CAS], |topo| {
        let dir = TempDir::new("agent");
        let file = dir.0.join("bad.json");
        std::fs::write(
            &file,
            r#"{"schema": 1, "name": "bad", "source": "test", "published": "2026-11-22",
 "entries": [
  {"prefix": "13.64.196.27/32", "datacenter": "US1", "purpose": "portal"},
  {"prefix": "10.0.0.0/33", "datacenter": "US1", "purpose": "portal"}
 ]}
"#,
        )
        .expect("writing the set file");
        let path = file.to_str().expect("utf-8");
        let run = spawn_agent(
            topo,
            &[
                "run",
                "--iface",
                Topology::GW_UPLINK,
                "--set",
                path,
                "--json",
                "-",
            ],
        )
        .wait(EXIT_TIMEOUT);
        run.assert_usage_error(&[path, "entries[1]", "10.0.0.0/33"]);
        assert_nothing_attached(topo);

        std::fs::write(&file, r#"{"schema": 3, "name": "x"}"#).expect("writing");
        let run = spawn_agent(
            topo,
            &[
                "run",
                "--iface",
                Topology::GW_UPLINK,
                "--set",
                path,
                "--json",
                "-",
            ],
        )
        .wait(EXIT_TIMEOUT);
        run.assert_usage_error(&[path, "schema"]);
        assert_nothing_attached(topo);
    });
}

/// `sets diff`: exit 0 for the same set, 1 for different versions, 2 for a
/// set that does not exist.
#[test]
fn sets_diff_exit_codes() {
    let same = cli(&["sets", "diff", "cas-2019-11", "cas-2019-11"]);
    assert_eq!(same.code(), Some(0), "{}{}", same.stdout, same.stderr);
    assert!(same.stdout.contains("no difference"), "{}", same.stdout);
    let changed = cli(&["sets", "diff", "cas-2017-07", "cas-2019-11"]);
    assert_eq!(
        changed.code(),
        Some(1),
        "{}{}",
        changed.stdout,
        changed.stderr
    );
    // 13.64.26.88 (US1 portal) is new in 2019; 104.42.231.28 (the 2017
    // portal address) is gone.
    assert!(
        changed.stdout.contains("+ 13.64.26.88/32"),
        "{}",
        changed.stdout
    );
    assert!(
        changed.stdout.contains("- 104.42.231.28/32"),
        "{}",
        changed.stdout
    );
    let missing = cli(&["sets", "diff", "cas-2019-11", "/nonexistent/set.json"]);
    assert_eq!(missing.code(), Some(2), "{}", missing.stderr);
    assert!(
        missing.stderr.contains("/nonexistent/set.json"),
        "{}",
        missing.stderr
    );
}

/// Waits (at most 10 s) until the agent's stderr contains `needle`.
fn wait_for_log(agent: &Agent, needle: &str) {
    agent.wait_for_log(needle, Duration::from_secs(10));
}

/// An interface that goes down and up, then is deleted and re-created, is
/// logged each way and counted again once it is back.
#[test]
fn interface_down_deleted_and_recreated_is_reattached() {
    with_bed(
        "interface_down_deleted_and_recreated_is_reattached",
        &[CAS],
        |topo| {
            let agent = start_agent(topo, "tc", &[]);
            udp_out(topo);
            topo.set_uplink(false).expect("uplink down");
            wait_for_log(&agent, "uplink is down; the programs stay attached");
            topo.set_uplink(true).expect("uplink up");
            wait_for_log(&agent, "uplink is up again; still attached");

            topo.delete_uplink().expect("deleting the uplink");
            wait_for_log(&agent, "disappeared; re-attaching when it returns");
            topo.recreate_uplink().expect("re-creating the uplink");
            wait_for_log(&agent, "uplink is back (ifindex");
            udp_burst(
                topo,
                topo.lan(),
                SocketAddr::new(LAN, 40002),
                topo.cloud(),
                UDP_OUT_REMOTE,
            );
            let report = agent.stop().report();
            let r = report.range(CAS_PREFIX).expect("the CAS range");
            assert_eq!(
                u64_of(r, "packets_out"),
                2 * UDP_COUNT as u64,
                "both bursts counted: {r}"
            );
            // The second burst is a flow on the new interface index.
            let rec = report.flow("udp", SocketAddr::new(LAN, 40002), UDP_OUT_REMOTE);
            assert_eq!(u64_of(rec, "packets_out"), UDP_COUNT as u64, "{rec}");
            assert_eq!(str_of(rec, "iface"), Topology::GW_UPLINK, "{rec}");
            assert_nothing_attached(topo);
        },
    );
}

/// Metric names (`cas_audit_...`) in every query of the Grafana dashboard.
fn dashboard_metrics() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/grafana/cas-audit.json");
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for var in dash["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = var["query"]["query"].as_str() {
            exprs.push(q.to_string());
        }
    }
    let mut names = Vec::new();
    for e in &exprs {
        let before = names.len();
        let mut rest = e.as_str();
        while let Some(at) = rest.find("cas_audit_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_string());
            rest = &tail[end..];
        }
        assert!(
            names.len() > before,
            "a query without a cas-audit metric: {e}"
        );
    }
    assert!(exprs.len() >= 15, "{exprs:?}");
    names.sort();
    names.dedup();
    names
}

/// `/metrics` agrees with the JSON summary, with bounded labels only; the
/// plain-text scrape passes `promtool check metrics`; every metric the
/// Grafana dashboard queries is served.
#[test]
fn metrics_equal_the_summary() {
    with_bed("metrics_equal_the_summary", &[CAS], |topo| {
        let addr: SocketAddr = "127.0.0.1:19477".parse().expect("addr");
        // An IPFIX collector nobody runs: the export counters have samples.
        let agent = start_agent(
            topo,
            "tc",
            &["--metrics", "127.0.0.1:19477", "--ipfix", "127.0.0.1:4739"],
        );
        udp_out(topo);
        tcp_echo(
            topo,
            topo.lan(),
            SocketAddr::new(LAN, 40100),
            topo.cloud(),
            SocketAddr::new(CAS, 443),
        );
        // Past the UDP flow's 3 s answer timeout, with a poll after it.
        std::thread::sleep(Duration::from_millis(4500));
        let resp = scrape(
            topo,
            addr,
            Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
        );
        let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.contains("application/openmetrics-text"), "{head}");
        assert!(body.contains("# UNIT cas_audit_bytes bytes\n"), "{body}");
        let plain = scrape(topo, addr, None);
        let (plain_head, text) = plain.split_once("\r\n\r\n").expect("HTTP response");
        assert!(
            plain_head.contains("text/plain; version=0.0.4"),
            "{plain_head}"
        );
        promtool_check(text);
        let served: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        for name in dashboard_metrics() {
            assert!(
                served.contains(&name.as_str()),
                "the dashboard queries {name}, which the agent does not serve:\n{text}"
            );
        }
        let report = agent.stop().report();

        let r = report.range(CAS_PREFIX).expect("the CAS range");
        for purpose in ["app-connector", "dlp"] {
            for (dir, field) in [("out", "packets_out"), ("in", "packets_in")] {
                let series = format!(
                    "cas_audit_packets_total{{datacenter=\"US1\",purpose=\"{purpose}\",direction=\"{dir}\"}}"
                );
                assert_eq!(sample(body, &series), u64_of(r, field), "{series}");
            }
            let series = format!(
                "cas_audit_bytes_total{{datacenter=\"US1\",purpose=\"{purpose}\",direction=\"out\"}}"
            );
            assert_eq!(sample(body, &series), u64_of(r, "bytes_out"), "{series}");
        }
        assert_eq!(
            sample(body, "cas_audit_datapath_matched_total"),
            report.summary_u64("matched")
        );
        for (metric, field) in [
            ("cas_audit_datapath_events_lost_total", "events_lost"),
            ("cas_audit_datapath_malformed_total", "malformed"),
            ("cas_audit_datapath_icmp_errors_total", "icmp_errors"),
        ] {
            assert_eq!(sample(body, metric), report.summary_u64(field), "{metric}");
        }
        // At the scrape the table holds the disallowed UDP flow (one way:
        // unanswered); the closed TCP connection was reported and removed.
        assert_eq!(sample(body, "cas_audit_flow_table_entries"), 1);
        assert_eq!(sample(body, "cas_audit_flow_table_capacity"), 65536);
        assert_eq!(
            sample(
                body,
                "cas_audit_flows{verdict=\"disallowed-port\",state=\"unanswered\"}"
            ),
            1
        );
        assert_eq!(
            sample(
                body,
                "cas_audit_flows_reported_total{verdict=\"allowed\",state=\"closed\"}"
            ),
            1
        );
        assert_eq!(sample(body, "cas_audit_datapath_flows_created_total"), 2);
        assert_eq!(sample(body, "cas_audit_log_records_lost_total"), 0);
        assert!(
            body.contains("cas_audit_address_set{set=\"cas-2019-11\",published=\"2019-11-01\"} 1"),
            "{body}"
        );
        // Bounded labels: no address or port ever appears.
        for needle in ["198.51.100", "13.64.196", "40001", "8443"] {
            assert!(!body.contains(needle), "{needle} in the metrics:\n{body}");
        }
    });
}

/// A set file for the reload test: `entries` as (prefix, purpose).
fn reload_set(entries: &[(&str, &str)]) -> String {
    let e: Vec<String> = entries
        .iter()
        .map(|(p, purpose)| {
            format!(r#"{{"prefix": "{p}", "datacenter": "US1", "purpose": "{purpose}"}}"#)
        })
        .collect();
    format!(
        "{{\"schema\": 1, \"name\": \"lab\", \"source\": \"test\", \"published\": \"2026-11-22\", \"entries\": [{}]}}\n",
        e.join(", ")
    )
}

/// A change of the set file, under traffic, swaps the set without losing a
/// packet of a range in both versions; an added range counts from then on,
/// a dropped one keeps what it counted; SIGHUP reloads too.
#[test]
fn reload_under_traffic_counts_exactly() {
    const SESSION: IpAddr = IpAddr::V4(Ipv4Addr::new(40, 81, 63, 1));
    with_bed(
        "reload_under_traffic_counts_exactly",
        &[CAS, MAIL, SESSION],
        |topo| {
            let dir = TempDir::new("agent");
            let file = dir.0.join("lab.json");
            std::fs::write(
                &file,
                reload_set(&[(CAS_PREFIX, "portal"), (MAIL_PREFIX, "portal")]),
            )
            .expect("set file");
            let file_s = file.to_str().expect("utf-8").to_owned();
            let agent = start_agent(topo, "tc", &["--set", &file_s]);
            let burst = |dst: IpAddr, n: usize| {
                udp_send(topo, topo.lan(), None, sa(dst, 443), n, 50).expect("sending")
            };
            burst(MAIL, 2);
            burst(SESSION, 2); // not in the set yet: not counted

            // 30 batches of 10 datagrams to CAS, 50 ms apart; the set changes
            // in the middle (CAS re-tagged, MAIL dropped, SESSION added).
            const BATCHES: usize = 30;
            let sink = udp_sink(topo, topo.cloud(), sa(CAS, 443)).expect("sink");
            std::thread::scope(|scope| {
                let sender = scope.spawn(|| {
                    for _ in 0..BATCHES {
                        burst(CAS, 10);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                });
                std::thread::sleep(Duration::from_millis(400));
                std::fs::write(
                    &file,
                    reload_set(&[(CAS_PREFIX, "app-connector"), ("40.81.63.1/32", "portal")]),
                )
                .expect("rewriting the set file");
                wait_for_log(&agent, "reloaded set lab");
                sender.join().expect("sender");
            });
            assert_eq!(
                sink.wait_for(BATCHES * 10, Duration::from_secs(5)),
                BATCHES * 10
            );
            sink.stop();
            let log = agent.stderr_now();
            assert!(
                log.contains(": +1 ranges, -1 ranges, 1 changed; 2 ranges audited"),
                "{log}"
            );
            assert!(log.contains("added: 40.81.63.1/32"), "{log}");
            assert!(log.contains("removed: 65.55.234.192/26"), "{log}");
            burst(MAIL, 2); // dropped: not counted
            burst(SESSION, 3);

            // SIGHUP reloads the unchanged file.
            // SAFETY: our own child.
            assert_eq!(unsafe { libc::kill(agent.pid(), libc::SIGHUP) }, 0);
            wait_for_log(&agent, "reload (SIGHUP): set lab unchanged");

            let report = agent.stop().report();
            let packets = |prefix: &str| report.range(prefix).map(|r| u64_of(r, "packets_out"));
            assert_eq!(
                packets(CAS_PREFIX),
                Some((BATCHES * 10) as u64),
                "no packet lost"
            );
            assert_eq!(
                packets(MAIL_PREFIX),
                Some(2),
                "counted before it was dropped"
            );
            assert_eq!(packets("40.81.63.1/32"), Some(3), "counted once added");
            let cas = report.range(CAS_PREFIX).expect("CAS range");
            assert_eq!(cas["purposes"], json!(["app-connector"]), "{cas}");
        },
    );
}
