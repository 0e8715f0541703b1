//! Privileged tests of firewall rollout checks and flow states.
//!
//! The test bed's gw namespace is the firewall between the LAN and the
//! simulated CAS hosts (on the cloud namespace's `lo`). It runs real
//! nftables rules per destination, IPv4 and IPv6:
//!
//! | destination | firewall rule                         | expected     |
//! |-------------|---------------------------------------|--------------|
//! | OPEN        | accept (a server listens)             | reachable / established |
//! | DROPPED     | `drop`                                | unanswered   |
//! | RESET       | `reject with tcp reset`               | refused, RST 1 hop away |
//! | PROHIBITED  | `reject with icmp(v6) admin-prohibited` | unreachable, reporter = firewall |
//! | CLOSED      | accept, nothing listens               | refused by the host, 2 hops away |
//!
//! `cas-audit check` runs in the lan namespace watching `lan0`; its JSON
//! records, table and exit code are asserted exactly. `cas-audit run` on
//! the same interface must give the flows the same states.
//!
//! Nothing touches the root namespace; the topology is removed on drop.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use cas_audit_tests::process::{agent_bin_str, Process, EXIT_TIMEOUT};
use cas_audit_tests::traffic::TcpServer;
use cas_audit_tests::{shared_data, with_topology, Topology};

// Real CAS portal / app-connector addresses (cas-2019-11), only ever
// configured on the cloud namespace's loopback.
const OPEN4: IpAddr = IpAddr::V4(Ipv4Addr::new(13, 64, 26, 88));
const DROPPED4: IpAddr = IpAddr::V4(Ipv4Addr::new(13, 64, 29, 32));
const RESET4: IpAddr = IpAddr::V4(Ipv4Addr::new(13, 80, 125, 22));
const PROHIBITED4: IpAddr = IpAddr::V4(Ipv4Addr::new(13, 91, 91, 243));
const CLOSED4: IpAddr = IpAddr::V4(Ipv4Addr::new(40, 74, 1, 235));
// The published pages list no IPv6 ranges: documentation addresses stand in.
const OPEN6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xca5, 0, 0, 0, 0, 0x10));
const DROPPED6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xca5, 0, 0, 0, 0, 0x11));
const RESET6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xca5, 0, 0, 0, 0, 0x12));
const PROHIBITED6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xca5, 0, 0, 0, 0, 0x13));
const CLOSED6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xca5, 0, 0, 0, 0, 0x14));

const ALL: [IpAddr; 10] = [
    OPEN4,
    DROPPED4,
    RESET4,
    PROHIBITED4,
    CLOSED4,
    OPEN6,
    DROPPED6,
    RESET6,
    PROHIBITED6,
    CLOSED6,
];

/// `check --timeout`: long enough for a loaded CI machine, short for the test.
const TIMEOUT_S: &str = "2";

fn agent_bin() -> String {
    agent_bin_str()
}

/// The set file: one outbound 443 entry per destination.
fn set_file(dir: &std::path::Path) -> PathBuf {
    let e = |a: IpAddr, dc: &str, purpose: &str| {
        let len = if a.is_ipv4() { 32 } else { 128 };
        format!(
            r#"{{"prefix": "{a}/{len}", "datacenter": "{dc}", "purpose": "{purpose}", "direction": "outbound", "ports": [443]}}"#
        )
    };
    let entries = [
        e(OPEN4, "US1", "portal"),
        e(DROPPED4, "US1", "portal"),
        e(RESET4, "EU1", "app-connector"),
        e(PROHIBITED4, "EU1", "app-connector"),
        e(CLOSED4, "US1", "siem-agent"),
        e(OPEN6, "US1", "portal"),
        e(DROPPED6, "US1", "portal"),
        e(RESET6, "EU1", "app-connector"),
        e(PROHIBITED6, "EU1", "app-connector"),
        e(CLOSED6, "US1", "siem-agent"),
    ];
    let text = format!(
        "{{\"schema\": 1, \"name\": \"rollout-test\", \"source\": \"rollout.rs\", \"published\": \"2026-11-22\",\n \"entries\": [\n  {}\n ]}}\n",
        entries.join(",\n  ")
    );
    let path = dir.join("rollout-set.json");
    std::fs::write(&path, text).expect("writing the set file");
    path
}

/// The firewall: nftables rules in the gw namespace's forward hook.
fn firewall(topo: &Topology) {
    let rules = format!(
        "table inet casfw {{
  chain forward {{
    type filter hook forward priority 0; policy accept;
    ip daddr {DROPPED4} tcp dport 443 drop
    ip daddr {RESET4} tcp dport 443 reject with tcp reset
    ip daddr {PROHIBITED4} tcp dport 443 reject with icmp type admin-prohibited
    ip6 daddr {DROPPED6} tcp dport 443 drop
    ip6 daddr {RESET6} tcp dport 443 reject with tcp reset
    ip6 daddr {PROHIBITED6} tcp dport 443 reject with icmpv6 type admin-prohibited
  }}
}}
"
    );
    let mut child = topo
        .command(topo.gw(), "nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running nft (install nftables)");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(rules.as_bytes())
        .expect("writing the rules");
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft -f failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the bed with the firewall, runs `f`, removes everything.
fn with_firewall(test: &str, f: impl FnOnce(&Topology, &std::path::Path)) {
    with_topology(test, &ALL, |topo| {
        firewall(topo);
        let dir = tempdir(test);
        let servers: Vec<TcpServer> = [OPEN4, OPEN6]
            .into_iter()
            .map(|a| {
                TcpServer::start(topo, topo.cloud(), SocketAddr::new(a, 443)).expect("TCP server")
            })
            .collect();
        f(topo, &dir);
        for s in servers {
            s.stop();
        }
        let _ = std::fs::remove_dir_all(&dir);
    })
}

fn tempdir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cas-audit-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Runs the agent binary in the lan namespace; returns (exit code, stdout, stderr).
fn agent_in_lan(topo: &Topology, args: &[&str]) -> (i32, String, String) {
    let out: std::process::Output = topo
        .command(topo.lan(), &agent_bin())
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("running cas-audit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// What a destination's check record must say.
struct Want {
    result: &'static str,
    state: &'static str,
    /// Acceptable histories (the server may ACK a FIN on its own or with its
    /// own FIN).
    history: &'static [&'static str],
    reporter: Option<IpAddr>,
    icmp: Option<(u64, u64)>,
    rst_hops: Option<u64>,
}

fn want(addr: IpAddr) -> Want {
    let v6 = addr.is_ipv6();
    let fw = if v6 {
        Topology::GW_INSIDE_ADDR6
    } else {
        Topology::GW_INSIDE_ADDR4
    };
    let w = |result, state, history| Want {
        result,
        state,
        history,
        reporter: None,
        icmp: None,
        rst_hops: None,
    };
    match addr {
        a if a == OPEN4 || a == OPEN6 => w("reachable", "closed", &["ShAFaf", "ShAFf"]),
        a if a == DROPPED4 || a == DROPPED6 => w("unanswered", "unanswered", &["S"]),
        a if a == RESET4 || a == RESET6 => Want {
            rst_hops: Some(1),
            ..w("refused", "refused", &["Sr"])
        },
        a if a == PROHIBITED4 || a == PROHIBITED6 => Want {
            reporter: Some(fw),
            icmp: Some(if v6 { (1, 1) } else { (3, 13) }),
            ..w("unreachable", "unreachable", &["S"])
        },
        a if a == CLOSED4 || a == CLOSED6 => Want {
            rst_hops: Some(2),
            ..w("refused", "refused", &["Sr"])
        },
        _ => unreachable!(),
    }
}

#[test]
fn check_names_what_blocked_each_destination() {
    with_firewall("check_names_what_blocked_each_destination", |topo, dir| {
        let set = set_file(dir);
        let set = set.to_str().expect("UTF-8");
        let (code, out, err) = agent_in_lan(
            topo,
            &[
                "check",
                "--set",
                set,
                "--iface",
                Topology::LAN_IF,
                "--timeout",
                TIMEOUT_S,
                "--json",
                "-",
            ],
        );
        assert_eq!(code, 1, "exit code; stderr:\n{err}\nstdout:\n{out}");
        let recs = lines(&out);
        assert_eq!(recs.len(), ALL.len() + 1, "{out}");
        let summary = recs.last().expect("summary");
        assert_eq!(summary["type"], "check-summary", "{summary}");
        assert_eq!(summary["destinations"], 10);
        assert_eq!(summary["reachable"], 2);
        assert_eq!(summary["refused"], 4);
        assert_eq!(summary["unreachable"], 2);
        assert_eq!(summary["unanswered"], 2);
        assert_eq!(summary["ok"], false);
        assert_eq!(summary["iface"], Topology::LAN_IF);

        let by: BTreeMap<String, &Value> = recs[..ALL.len()]
            .iter()
            .map(|r| (r["address"].as_str().expect("address").to_owned(), r))
            .collect();
        for addr in ALL {
            let r = by
                .get(&addr.to_string())
                .unwrap_or_else(|| panic!("no record for {addr}: {out}"));
            let w = want(addr);
            assert_eq!(r["type"], "check", "{r}");
            assert_eq!(r["port"], 443, "{r}");
            assert_eq!(r["result"], w.result, "{addr}: {r}");
            assert_eq!(r["state"], w.state, "{addr}: {r}");
            assert!(
                w.history.contains(&r["history"].as_str().unwrap_or("")),
                "{addr}: history not one of {:?}: {r}",
                w.history
            );
            let lan = if addr.is_ipv6() {
                Topology::LAN_ADDR6
            } else {
                Topology::LAN_ADDR4
            };
            assert_eq!(r["local_addr"], lan.to_string(), "{addr}: {r}");
            match w.reporter {
                Some(rep) => assert_eq!(r["reporter"], rep.to_string(), "{addr}: {r}"),
                None => assert!(r["reporter"].is_null(), "{addr}: {r}"),
            }
            match w.icmp {
                Some((t, c)) => {
                    assert_eq!(r["icmp_type"], t, "{addr}: {r}");
                    assert_eq!(r["icmp_code"], c, "{addr}: {r}");
                }
                None => assert!(r["icmp_type"].is_null(), "{addr}: {r}"),
            }
            match w.rst_hops {
                Some(h) => assert_eq!(r["rst_hops"], h, "{addr}: {r}"),
                None => assert!(r["rst_hops"].is_null(), "{addr}: {r}"),
            }
            // Retried SYNs are one attempt: one record, and at least one SYN.
            assert!(r["packets_out"].as_u64().expect("packets_out") >= 1, "{r}");
            if w.result == "unanswered" {
                assert_eq!(r["packets_in"], 0, "{addr}: {r}");
            }
        }
    });
}

#[test]
fn check_table_tells_what_to_fix_and_exit_codes() {
    with_firewall(
        "check_table_tells_what_to_fix_and_exit_codes",
        |topo, dir| {
            let set = set_file(dir);
            let set = set.to_str().expect("UTF-8");
            let (code, out, err) = agent_in_lan(
                topo,
                &[
                    "check",
                    "--set",
                    set,
                    "--iface",
                    Topology::LAN_IF,
                    "--timeout",
                    TIMEOUT_S,
                ],
            );
            assert_eq!(code, 1, "stderr:\n{err}");
            // Per data center and purpose: reachable, refused, unreachable, unanswered.
            let row = |dc: &str, p: &str| -> Vec<String> {
                out.lines()
                    .find(|l| {
                        let cells: Vec<&str> = l.split(['│', '┆']).map(str::trim).collect();
                        cells.len() > 3 && cells[1] == dc && cells[2] == p
                    })
                    .unwrap_or_else(|| panic!("no row {dc} {p} in:\n{out}"))
                    .split(['│', '┆'])
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .collect()
            };
            assert_eq!(row("US1", "portal"), ["US1", "portal", "2", "0", "0", "2"]);
            assert_eq!(
                row("EU1", "app-connector"),
                ["EU1", "app-connector", "0", "2", "2", "0"]
            );
            assert_eq!(
                row("US1", "siem-agent"),
                ["US1", "siem-agent", "0", "2", "0", "0"]
            );
            for needle in [
                "198.51.100.1 rejects with ICMP type 3 code 13: 1 destination (app-connector)",
                "2001:db8:1::1 rejects with ICMP type 1 code 1: 1 destination (app-connector)",
                "a device 1 hop away resets the connection: 2 destinations (app-connector)",
                "a device 2 hops away resets the connection: 2 destinations (siem-agent)",
                "a firewall drops the traffic silently (no answer): 2 destinations (portal)",
                "2 of 10 destinations reachable (4 refused, 2 unreachable, 2 unanswered)",
                "ICMP administratively prohibited (type 3 code 13) from 198.51.100.1",
            ] {
                assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
            }

            // Only the open destinations: exit 0.
            let open = dir.join("open.json");
            std::fs::write(
            &open,
            format!(
                "{{\"schema\": 1, \"name\": \"open\", \"source\": \"t\", \"published\": \"2026-11-22\", \"entries\": [\
                 {{\"prefix\": \"{OPEN4}/32\", \"datacenter\": \"US1\", \"purpose\": \"portal\"}},\
                 {{\"prefix\": \"{OPEN6}/128\", \"datacenter\": \"US1\", \"purpose\": \"portal\"}}]}}"
            ),
        )
        .expect("set file");
            let (code, out, err) = agent_in_lan(
                topo,
                &[
                    "check",
                    "--set",
                    open.to_str().expect("UTF-8"),
                    "--iface",
                    Topology::LAN_IF,
                    "--timeout",
                    TIMEOUT_S,
                ],
            );
            assert_eq!(code, 0, "stderr:\n{err}\nstdout:\n{out}");
            assert!(out.contains("2 of 2 destinations reachable"), "{out}");

            // Usage errors: exit 2.
            for bad in [
                vec!["check", "--concurrency", "0"],
                vec!["check", "--timeout", "-1"],
                vec!["check", "--datacenter", "US9"],
                vec!["check", "--iface", "nosuchif0", "--set", set],
            ] {
                let (code, _, err) = agent_in_lan(topo, &bad);
                assert_eq!(code, 2, "{bad:?}: stderr:\n{err}");
            }
        },
    );
}

#[test]
fn run_records_the_same_states() {
    with_firewall("run_records_the_same_states", |topo, dir| {
        let set = set_file(dir);
        let set = set.to_str().expect("UTF-8");
        let json = dir.join("flows.jsonl");
        // The agent watches lan0 for 8 s while check makes the attempts.
        let mut cmd = topo.command(topo.lan(), &agent_bin());
        cmd.args([
            "run",
            "--iface",
            Topology::LAN_IF,
            "--set",
            set,
            "--ingress",
            "tc",
            "--answer-timeout",
            "1",
            "--duration",
            "8",
            "--json",
            json.to_str().expect("UTF-8"),
        ]);
        let agent = Process::spawn(cmd);
        agent.wait_ready();
        let (code, _, err) = agent_in_lan(
            topo,
            &["check", "--set", set, "--timeout", TIMEOUT_S, "--json", "-"],
        );
        assert_eq!(code, 1, "check without --iface; stderr:\n{err}");
        let run = agent.wait(Duration::from_secs(30));
        assert!(run.status.success(), "agent failed: {}", run.stderr);
        let text = std::fs::read_to_string(&json).expect("JSON lines");
        let recs = lines(&text);
        // The last record of each flow (exit or ended) has its final state.
        let mut last: BTreeMap<String, &Value> = BTreeMap::new();
        let mut blocked: BTreeMap<String, usize> = BTreeMap::new();
        for r in recs.iter().filter(|r| r["type"] == "flow") {
            let a = r["remote_addr"].as_str().expect("addr").to_owned();
            if r["reason"] == "blocked" {
                *blocked.entry(a.clone()).or_default() += 1;
            }
            last.insert(a, r);
        }
        for addr in ALL {
            let r = last
                .get(&addr.to_string())
                .unwrap_or_else(|| panic!("no flow for {addr}:\n{text}"));
            let w = want(addr);
            assert_eq!(r["state"], w.state, "{addr}: {r}");
            assert!(
                w.history.contains(&r["history"].as_str().unwrap_or("")),
                "{addr}: history not one of {:?}: {r}",
                w.history
            );
            assert_eq!(
                r["reporter"],
                w.reporter
                    .map(|a| a.to_string())
                    .map_or(Value::Null, Value::from),
                "{addr}: {r}"
            );
            // Blocked flows are reported as blocked exactly once, live.
            let n = blocked.get(&addr.to_string()).copied().unwrap_or(0);
            let is_blocked = w.result != "reachable";
            assert_eq!(n, is_blocked as usize, "{addr}: blocked records");
        }
        let summary = recs.last().expect("summary");
        assert_eq!(summary["type"], "summary");
        // Every SYN to a prohibited destination drew one ICMP error, and each
        // was attached to its flow.
        let syns: u64 = [PROHIBITED4, PROHIBITED6]
            .iter()
            .map(|a| {
                last[&a.to_string()]["packets_out"]
                    .as_u64()
                    .expect("packets_out")
            })
            .sum();
        assert!(syns >= 2, "{text}");
        assert_eq!(summary["icmp_errors"], syns, "{summary}");
        assert_eq!(summary["icmp_unmatched"], 0, "{summary}");
        let states = &summary["states"];
        assert_eq!(states["closed"], 2, "{summary}");
        assert_eq!(states["refused"], 4, "{summary}");
        assert_eq!(states["unreachable"], 2, "{summary}");
        assert_eq!(states["unanswered"], 2, "{summary}");

        // The forensic report over the saved records.
        let json_s = json.to_str().expect("UTF-8");
        let (code, out, err) = agent_in_lan(topo, &["report", json_s, "--format", "json"]);
        assert_eq!(code, 0, "report: {err}");
        let rep: Value = serde_json::from_str(&out).expect("report JSON");
        assert_eq!(rep["flows"], 10, "{rep}");
        let by_state: BTreeMap<String, u64> = rep["by_state"]
            .as_array()
            .expect("by_state")
            .iter()
            .map(|r| {
                (
                    r["state"].as_str().expect("state").to_owned(),
                    r["flows"].as_u64().expect("flows"),
                )
            })
            .collect();
        assert_eq!(
            by_state,
            BTreeMap::from([
                ("closed".to_owned(), 2),
                ("refused".to_owned(), 4),
                ("unanswered".to_owned(), 2),
                ("unreachable".to_owned(), 2)
            ]),
            "{rep}"
        );
        assert_eq!(rep["blocked_flows"], 8, "{rep}");
        assert_eq!(rep["blocked_destinations"], 8, "{rep}");
        // The prohibited destinations name the firewall as reporter.
        for (addr, fw) in [
            (PROHIBITED4, Topology::GW_INSIDE_ADDR4),
            (PROHIBITED6, Topology::GW_INSIDE_ADDR6),
        ] {
            let d = rep["top_blocked"]
                .as_array()
                .expect("top_blocked")
                .iter()
                .find(|d| d["remote_addr"] == addr.to_string())
                .unwrap_or_else(|| panic!("{addr} not among the blocked: {rep}"));
            assert_eq!(d["reporters"], serde_json::json!([fw.to_string()]), "{d}");
            assert_eq!(d["states"], serde_json::json!(["unreachable"]), "{d}");
        }
        // Filters: only refused flows of the app connectors.
        let (code, out, err) = agent_in_lan(
            topo,
            &[
                "report",
                json_s,
                "--format",
                "json",
                "--state",
                "refused",
                "--purpose",
                "app-connector",
            ],
        );
        assert_eq!(code, 0, "report: {err}");
        let rep: Value = serde_json::from_str(&out).expect("report JSON");
        assert_eq!(rep["flows"], 2, "{rep}");
        // The readable form names the blocked destinations too.
        let (code, out, _) = agent_in_lan(topo, &["report", json_s]);
        assert_eq!(code, 0);
        assert!(out.contains(&PROHIBITED4.to_string()), "{out}");
    });
}

// ---------------------------------------------------------------------------
// A set merged from a published page and a Service Tags file
// ---------------------------------------------------------------------------

/// The outbound portal destinations of US1 in a merged set file, computed
/// from its JSON: each entry's probe address (a host prefix's own, else
/// network + 1), with the data centers of its entries.
fn us1_portal_destinations(set: &Value) -> BTreeMap<IpAddr, Vec<String>> {
    let mut out: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    for e in set["entries"].as_array().expect("entries") {
        let dc = e["datacenter"].as_str();
        if e["purpose"] != "portal"
            || e["direction"] != "outbound"
            || !matches!(dc, None | Some("US1"))
        {
            continue;
        }
        let net: ipnet::IpNet = e["prefix"].as_str().unwrap().parse().unwrap();
        let addr = match net {
            ipnet::IpNet::V4(n) if n.prefix_len() < 31 => {
                IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 1))
            }
            ipnet::IpNet::V6(n) if n.prefix_len() < 127 => {
                IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + 1))
            }
            n => n.addr(),
        };
        let dcs = out.entry(addr).or_default();
        dcs.extend(dc.map(str::to_owned));
        dcs.sort();
        dcs.dedup();
    }
    out
}

/// `check --set` on a set merged from the 2024-11 page and the 2025-11
/// Service Tags (its shared Front Door prefixes, IPv4 and IPv6): every US1
/// portal destination of both sources is probed; a dropped page address is
/// unanswered, an IPv6 Front Door address rejected by the firewall is
/// unreachable, the others reachable.
#[test]
fn check_a_set_merged_from_page_and_tags() {
    let dir = tempdir("check_a_set_merged_from_page_and_tags");
    let merged = dir.join("merged.json");
    let merged = merged.to_str().expect("UTF-8");
    let mut cmd = std::process::Command::new(agent_bin());
    cmd.args(["sets", "merge"])
        .arg(shared_data("pages/network-requirements-2024-11-03.md"))
        .arg(shared_data(
            "servicetags/ServiceTags_Public_cn376_2025-11-10_mcas-excerpt.json",
        ))
        .args(["--out", merged]);
    let merge = Process::spawn(cmd).wait(EXIT_TIMEOUT);
    assert!(merge.status.success(), "{}", merge.stderr);
    let set: Value = serde_json::from_str(&std::fs::read_to_string(merged).unwrap()).unwrap();
    let dests = us1_portal_destinations(&set);
    // 11 US1 addresses of the page, 4 IPv4 and 3 IPv6 Front Door prefixes.
    assert_eq!(dests.len(), 18, "{dests:?}");
    let v6: Vec<IpAddr> = dests.keys().filter(|a| a.is_ipv6()).copied().collect();
    assert_eq!(v6.len(), 3);
    let addrs: Vec<IpAddr> = dests.keys().copied().collect();
    let dropped = IpAddr::V4(Ipv4Addr::new(13, 64, 26, 88));
    let rejected = v6[0];
    assert_eq!(dests[&dropped], ["US1"]);
    assert!(dests[&rejected].is_empty());
    with_topology("check_a_set_merged_from_page_and_tags", &addrs, |topo| {
        let rules = format!(
            "table inet casfw {{ chain forward {{ type filter hook forward priority 0; \
             policy accept; ip daddr {dropped} tcp dport 443 drop; ip6 daddr {rejected} tcp \
             dport 443 reject with icmpv6 type admin-prohibited; }}; }}"
        );
        let nft = topo
            .command(topo.gw(), "nft")
            .arg(&rules)
            .output()
            .expect("nft");
        assert!(
            nft.status.success(),
            "{}",
            String::from_utf8_lossy(&nft.stderr)
        );
        // One dual-stack listener answers for every address.
        let server =
            TcpServer::start(topo, topo.cloud(), "[::]:443".parse().unwrap()).expect("TCP server");
        let (code, out, err) = agent_in_lan(
            topo,
            &[
                "check",
                "--set",
                merged,
                "--datacenter",
                "US1",
                "--purpose",
                "portal",
                "--iface",
                Topology::LAN_IF,
                "--timeout",
                TIMEOUT_S,
                "--json",
                "-",
            ],
        );
        server.stop();
        assert_eq!(code, 1, "stderr:\n{err}\nstdout:\n{out}");
        let recs = lines(&out);
        let summary = recs.last().expect("summary");
        // 18 listed addresses, and the page's exact portal names: no DNS
        // server answers in the lab, so each of them is `unresolved`.
        let (named, listed): (Vec<&Value>, Vec<&Value>) = recs[..recs.len() - 1]
            .iter()
            .partition(|r| r["name"].is_string());
        assert_eq!(named.len(), 7, "{named:#?}");
        assert!(
            named.iter().all(|r| r["result"] == "unresolved"),
            "{named:#?}"
        );
        assert_eq!(summary["destinations"], 25, "{summary}");
        assert_eq!(summary["unresolved"], 7, "{summary}");
        assert_eq!(summary["reachable"], 16, "{summary}");
        assert_eq!(summary["unanswered"], 1, "{summary}");
        assert_eq!(summary["unreachable"], 1, "{summary}");
        assert_eq!(summary["refused"], 0, "{summary}");
        for r in listed {
            let addr: IpAddr = r["address"].as_str().unwrap().parse().unwrap();
            assert_eq!(r["purposes"], serde_json::json!(["portal"]), "{r}");
            assert_eq!(r["datacenters"], serde_json::json!(dests[&addr]), "{r}");
            let want = if addr == dropped {
                "unanswered"
            } else if addr == rejected {
                "unreachable"
            } else {
                "reachable"
            };
            assert_eq!(r["result"], want, "{r}");
        }
        let r = recs
            .iter()
            .find(|r| r["address"] == rejected.to_string())
            .unwrap();
        assert_eq!(r["reporter"], Topology::GW_INSIDE_ADDR6.to_string(), "{r}");
    });
    let _ = std::fs::remove_dir_all(&dir);
}
