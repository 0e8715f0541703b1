//! The agent on a real gateway: NAT (nftables masquerade, snat, and a port
//! forward to an inside DLP stunnel on 11344; IPv4 and IPv6), the agent on
//! the uplink, on the LAN side and on both, an asymmetric path (answers by
//! a second uplink), and a source port reused by three connections.
//!
//! The expectations come from independent observers: `conntrack -L` in the
//! gateway namespace for the NAT mapping, tshark on each interface for the
//! packet counts. Each test builds its own lan / gw / cloud namespaces
//! (`with_topology`); nothing touches the root namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use serde_json::Value;

use cas_audit_tests::observers::{conntrack_list, count, nft, Capture, CtLine, Frame};
use cas_audit_tests::process::{agent_bin_str, Process as Agent};
use cas_audit_tests::traffic::{tcp_exchange, TcpServer};
use cas_audit_tests::{with_topology, Topology};

/// A real CAS endpoint (US1 app connector), only on the cloud's `lo`.
const CAS4: IpAddr = IpAddr::V4(Ipv4Addr::new(13, 64, 196, 27));
/// An IPv6 "CAS" endpoint of the lab set below (documentation prefix).
const CAS6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xca5, 0, 0, 0, 0, 1));
const LAN4: IpAddr = Topology::LAN_ADDR4;
const LAN6: IpAddr = Topology::LAN_ADDR6;
/// A port no CAS requirement allows: every connection to it is flagged.
const DISALLOWED: u16 = 8443;
/// The DLP stunnel port.
const STUNNEL: u16 = 11344;

/// A set file with the IPv4 endpoint's /32 and the lab's IPv6 /48.
fn lab_set() -> PathBuf {
    let path = std::env::temp_dir().join(format!("cas-audit-gateway-{}.json", std::process::id()));
    std::fs::write(
        &path,
        r#"{"schema": 1, "name": "gateway-lab", "source": "test", "published": "2026-11-30", "entries": [
            {"prefix": "13.64.196.27/32", "datacenter": "US1", "purpose": "app-connector"},
            {"prefix": "2001:db8:ca5::/48", "datacenter": "US1", "purpose": "app-connector"}]}
"#,
    )
    .expect("set file");
    path
}

/// The agent in the gw namespace on `ifaces`, JSON lines on stdout,
/// allowed ports 443 and 11344, ready.
fn start_agent(topo: &Topology, ifaces: &[&str]) -> Agent {
    start_agent_in(topo, topo.gw(), ifaces)
}

/// [`start_agent`] in namespace `ns`.
fn start_agent_in(topo: &Topology, ns: &str, ifaces: &[&str]) -> Agent {
    let set = lab_set();
    let mut cmd = topo.command(ns, &agent_bin_str());
    cmd.args(["run", "--json", "-", "--ingress", "tc", "--set"])
        .arg(&set)
        .args(["--allow-port", "443", "--allow-port", "11344"]);
    for i in ifaces {
        cmd.args(["--iface", i]);
    }
    let agent = Agent::spawn(cmd);
    agent.wait_ready();
    agent
}

/// Stops the agent and returns its flow records.
fn stop(agent: Agent) -> Vec<Value> {
    let run = agent.stop();
    run.assert_ok();
    run.json_lines()
        .into_iter()
        .filter(|v| v["type"] == "flow")
        .collect()
}

/// The records of the flows whose local side is `local:port` and remote
/// side `remote`.
fn records_of(recs: &[Value], local: IpAddr, port: u16, remote: IpAddr) -> Vec<&Value> {
    recs.iter()
        .filter(|r| {
            r["local_addr"] == local.to_string()
                && r["local_port"] == port
                && r["remote_addr"] == remote.to_string()
        })
        .collect()
}

/// The one final record (ended, expired or exit) of each flow in `recs`,
/// in order of first packet.
fn finals<'a>(recs: &[&'a Value]) -> Vec<&'a Value> {
    let mut f: Vec<&Value> = recs
        .iter()
        .copied()
        .filter(|r| matches!(r["reason"].as_str(), Some("ended" | "expired" | "exit")))
        .collect();
    f.sort_by(|a, b| a["first_seen"].as_str().cmp(&b["first_seen"].as_str()));
    f
}

/// The one final record of the flow `local:port` -> `remote`, and all its
/// records.
fn one_flow(recs: &[Value], local: IpAddr, port: u16, remote: IpAddr) -> (&Value, Vec<&Value>) {
    let mine = records_of(recs, local, port, remote);
    let f = finals(&mine);
    assert_eq!(f.len(), 1, "one flow {local}:{port} -> {remote}: {mine:#?}");
    (f[0], mine)
}

/// `n` bytes from the LAN's `local:port` to `remote` on the disallowed
/// port, echoed back, both sides closing.
fn connect_out(topo: &Topology, local: IpAddr, port: u16, remote: IpAddr, n: usize) {
    let back = tcp_exchange(
        topo,
        topo.lan(),
        Some(SocketAddr::new(local, port)),
        SocketAddr::new(remote, DISALLOWED),
        &vec![7u8; n],
    )
    .expect("exchange");
    assert_eq!(back.len(), n);
}

/// Packets out (to `remote`) and in (from it) that tshark saw in `frames`.
fn wire(frames: &[Frame], remote: IpAddr) -> (u64, u64) {
    (
        count(frames, |f| f.dst == remote).0,
        count(frames, |f| f.src == remote).0,
    )
}

/// The conntrack entry whose original source is `src:sport`.
fn ct_entry(topo: &Topology, v6: bool, src: IpAddr, sport: u16) -> CtLine {
    let all = conntrack_list(topo, topo.gw(), v6, "tcp").expect("conntrack -L");
    all.into_iter()
        .find(|c| c.orig.0 == src && c.orig.2 == sport)
        .unwrap_or_else(|| panic!("no conntrack entry from {src}:{sport}"))
}

/// A flow record's packets out and in.
fn packets(f: &Value) -> (u64, u64) {
    (
        f["packets_out"].as_u64().expect("packets_out"),
        f["packets_in"].as_u64().expect("packets_in"),
    )
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|s| s.as_str().expect("a string"))
        .collect()
}

/// Masquerade on the gateway's uplink (IPv4 and IPv6, one `inet` table).
fn masquerade(topo: &Topology) {
    nft(
        topo,
        topo.gw(),
        "table inet nat {\n chain post {\n  type nat hook postrouting priority srcnat;\n  oifname \"uplink\" masquerade\n }\n}\n",
    )
    .expect("nft");
}

/// Masquerade on the uplink (IPv4 and IPv6, one `inet` table). Wherever
/// the agent runs (uplink, LAN side, both) a disallowed connection is one
/// flow naming the inside host, with the address and port conntrack
/// translated it to, and the packets tshark counted.
#[test]
fn masquerade_names_the_inside_host_wherever_the_agent_runs() {
    with_topology(
        "masquerade_names_the_inside_host_wherever_the_agent_runs",
        &[CAS4, CAS6],
        |topo| {
            masquerade(topo);
            let s4 =
                TcpServer::start(topo, topo.cloud(), SocketAddr::new(CAS4, DISALLOWED)).unwrap();
            let s6 =
                TcpServer::start(topo, topo.cloud(), SocketAddr::new(CAS6, DISALLOWED)).unwrap();
            let placements: [&[&str]; 3] = [
                &[Topology::GW_UPLINK],
                &[Topology::GW_INSIDE],
                &[Topology::GW_INSIDE, Topology::GW_UPLINK],
            ];
            for (i, ifaces) in placements.iter().enumerate() {
                let port = 41000 + i as u16;
                let filter = format!("tcp port {DISALLOWED}");
                let up = Capture::start(topo, topo.gw(), Topology::GW_UPLINK, &filter).unwrap();
                let lan = Capture::start(topo, topo.gw(), Topology::GW_INSIDE, &filter).unwrap();
                let agent = start_agent(topo, ifaces);
                for (local, cas) in [(LAN4, CAS4), (LAN6, CAS6)] {
                    connect_out(topo, local, port, cas, 300);
                }
                let recs = stop(agent);
                let (up, lan) = (up.stop().unwrap(), lan.stop().unwrap());
                for (local, cas) in [(LAN4, CAS4), (LAN6, CAS6)] {
                    let ct = ct_entry(topo, cas.is_ipv6(), local, port);
                    let (f, mine) = one_flow(&recs, local, port, cas);
                    let flagged = mine.iter().filter(|r| r["reason"] == "flagged").count();
                    assert_eq!(flagged, 1, "{ifaces:?}: flagged once: {mine:#?}");
                    assert_eq!(f["verdict"], "disallowed-port");
                    assert_eq!(f["remote_port"], DISALLOWED);
                    assert_eq!(f["nat"], "snat", "{f:#}");
                    assert_eq!(f["nat_addr"], ct.reply.1.to_string(), "conntrack: {ct:?}");
                    assert_eq!(f["nat_port"], ct.reply.3, "conntrack: {ct:?}");
                    assert_eq!(strs(&f["interfaces"]), *ifaces, "{f:#}");
                    assert_eq!(f["iface"], ifaces[0]);
                    // Counts: wire packets of the connection, as tshark saw
                    // them, on whichever interface (the same on both).
                    let on_up = wire(&up, cas);
                    let on_lan = wire(&lan, cas);
                    assert_eq!(on_up, on_lan, "tshark: the same packets cross both");
                    eprintln!(
                        "{ifaces:?}: {local}:{port} -> {cas}: conntrack reply to {}:{}, tshark out/in {on_up:?}, record {} {}:{} out/in {:?}",
                        ct.reply.1, ct.reply.3, f["local_addr"], f["nat_addr"], f["nat_port"], packets(f)
                    );
                    assert!(on_up.0 >= 4 && on_up.1 >= 3, "tshark: {on_up:?}");
                    assert_eq!(packets(f), on_up, "{ifaces:?} {f:#}");
                    assert_eq!(f["state"], "closed", "{f:#}");
                }
            }
            assert_eq!((s4.stop(), s6.stop()), (3, 3));
        },
    );
}

/// A connection refused at once (its SYN answered by an RST) behind
/// masquerade: conntrack destroys the entry with the RST, before the agent
/// can ask for it (`conntrack -L` has no entry afterwards). The agent keeps
/// the entries conntrack announces as destroyed, so the flow still names the
/// inside host and the address and port tshark saw on the uplink, and with
/// the agent on both interfaces it is one flow, not one per side.
#[test]
fn a_refused_connection_behind_masquerade_names_the_inside_host() {
    with_topology(
        "a_refused_connection_behind_masquerade_names_the_inside_host",
        &[CAS4],
        |topo| {
            masquerade(topo);
            let placements: [&[&str]; 2] = [
                &[Topology::GW_UPLINK],
                &[Topology::GW_INSIDE, Topology::GW_UPLINK],
            ];
            for (i, ifaces) in placements.iter().enumerate() {
                let port = 42000 + i as u16;
                let filter = format!("tcp port {DISALLOWED}");
                let up = Capture::start(topo, topo.gw(), Topology::GW_UPLINK, &filter).unwrap();
                let agent = start_agent(topo, ifaces);
                // Nothing listens on the cloud side: the SYN is refused.
                let err = tcp_exchange(
                    topo,
                    topo.lan(),
                    Some(SocketAddr::new(LAN4, port)),
                    SocketAddr::new(CAS4, DISALLOWED),
                    b"x",
                )
                .expect_err("nothing listens");
                assert!(format!("{err:#}").contains("refused"), "{err:#}");
                let recs = stop(agent);
                let up = up.stop().unwrap();
                let left = conntrack_list(topo, topo.gw(), false, "tcp").expect("conntrack -L");
                assert!(
                    !left.iter().any(|c| c.orig.0 == LAN4 && c.orig.2 == port),
                    "conntrack still has the entry: {left:?}"
                );
                // What the uplink carried: the SYN from the translated
                // address and port, the RST back.
                let syn = up
                    .iter()
                    .find(|f| f.dst == CAS4)
                    .unwrap_or_else(|| panic!("tshark saw no SYN: {up:?}"));
                let (f, mine) = one_flow(&recs, LAN4, port, CAS4);
                eprintln!(
                    "{ifaces:?}: tshark SYN {}:{}, record {}:{} nat {} {}:{} out/in {:?}",
                    syn.src,
                    syn.sport,
                    f["local_addr"],
                    f["local_port"],
                    f["nat"],
                    f["nat_addr"],
                    f["nat_port"],
                    packets(f)
                );
                assert_eq!(f["state"], "refused", "{f:#}");
                assert_eq!(f["history"], "Sr", "{f:#}");
                assert_eq!(f["nat"], "snat", "{f:#}");
                assert_eq!(f["nat_addr"], syn.src.to_string(), "{f:#}");
                assert_eq!(f["nat_port"], syn.sport, "{f:#}");
                assert_eq!(strs(&f["interfaces"]), *ifaces, "{f:#}");
                assert_eq!(packets(f), wire(&up, CAS4), "{f:#}");
                assert_eq!(packets(f), (1, 1), "{f:#}");
                // Every record is of that one flow.
                let ids: std::collections::BTreeSet<String> =
                    recs.iter().map(|r| r["flow_id"].to_string()).collect();
                assert_eq!(ids.len(), 1, "{ifaces:?}: {mine:#?}\nall: {recs:#?}");
            }
        },
    );
}

/// The agent on the LAN host's own interface (no router involved): the
/// same connection is the same flow, local and remote as on the gateway,
/// its counts tshark's on that interface.
#[test]
fn a_hosts_own_interface_sees_the_same_flow() {
    with_topology(
        "a_hosts_own_interface_sees_the_same_flow",
        &[CAS4],
        |topo| {
            let server =
                TcpServer::start(topo, topo.cloud(), SocketAddr::new(CAS4, DISALLOWED)).unwrap();
            let filter = format!("tcp port {DISALLOWED}");
            let own = Capture::start(topo, topo.lan(), Topology::LAN_IF, &filter).unwrap();
            let agent = start_agent_in(topo, topo.lan(), &[Topology::LAN_IF]);
            tcp_exchange(
                topo,
                topo.lan(),
                Some(SocketAddr::new(LAN4, 44000)),
                SocketAddr::new(CAS4, DISALLOWED),
                &[5u8; 400],
            )
            .expect("exchange");
            let recs = stop(agent);
            let own = own.stop().unwrap();
            let mine = records_of(&recs, LAN4, 44000, CAS4);
            let f = finals(&mine);
            assert_eq!(f.len(), 1, "{mine:#?}");
            let f = f[0];
            assert_eq!(strs(&f["interfaces"]), [Topology::LAN_IF]);
            assert_eq!(
                (f["initiator"].as_str(), f["first_packet"].as_str()),
                (Some("local"), Some("out"))
            );
            assert_eq!(packets(f), wire(&own, CAS4));
            assert_eq!(f["state"], "closed");
            assert_eq!(mine.iter().filter(|r| r["reason"] == "flagged").count(), 1);
            assert_eq!(server.stop(), 1);
        },
    );
}

/// Source NAT to another address of the gateway and a port forward from
/// the gateway's public address to an inside DLP stunnel on 11344, IPv4
/// and IPv6, the agent on the uplink: the inside host is `local_*`,
/// the public side `nat_*`, as conntrack says.
#[test]
fn snat_and_a_port_forward_to_an_inside_stunnel() {
    with_topology(
        "snat_and_a_port_forward_to_an_inside_stunnel",
        &[CAS4, CAS6],
        |topo| {
            let snat4: IpAddr = "203.0.113.7".parse().unwrap();
            let snat6: IpAddr = "2001:db8:2::7".parse().unwrap();
            for (a, len) in [("203.0.113.7/32", ""), ("2001:db8:2::7/128", "nodad")] {
                let mut c = topo.command(topo.gw(), "ip");
                c.args(["addr", "add", a, "dev", Topology::GW_UPLINK]);
                if !len.is_empty() {
                    c.arg(len);
                }
                assert!(c.status().expect("ip").success());
            }
            nft(
                topo,
                topo.gw(),
                &format!(
                    "table ip nat {{
 chain pre {{ type nat hook prerouting priority dstnat; iifname \"uplink\" tcp dport {STUNNEL} dnat to {LAN4}:{STUNNEL}; }}
 chain post {{ type nat hook postrouting priority srcnat; oifname \"uplink\" ip saddr 198.51.100.0/24 snat to {snat4}; }}
}}
table ip6 nat {{
 chain pre {{ type nat hook prerouting priority dstnat; iifname \"uplink\" tcp dport {STUNNEL} dnat to [{LAN6}]:{STUNNEL}; }}
 chain post {{ type nat hook postrouting priority srcnat; oifname \"uplink\" ip6 saddr 2001:db8:1::/64 snat to {snat6}; }}
}}
"
                ),
            )
            .expect("nft");
            let stunnel4 =
                TcpServer::start(topo, topo.lan(), SocketAddr::new(LAN4, STUNNEL)).unwrap();
            let stunnel6 =
                TcpServer::start(topo, topo.lan(), SocketAddr::new(LAN6, STUNNEL)).unwrap();
            let s4 =
                TcpServer::start(topo, topo.cloud(), SocketAddr::new(CAS4, DISALLOWED)).unwrap();
            let s6 =
                TcpServer::start(topo, topo.cloud(), SocketAddr::new(CAS6, DISALLOWED)).unwrap();
            let filter = format!("tcp port {STUNNEL} or tcp port {DISALLOWED}");
            let up = Capture::start(topo, topo.gw(), Topology::GW_UPLINK, &filter).unwrap();
            let agent = start_agent(topo, &[Topology::GW_UPLINK]);
            let publics = [
                (CAS4, Topology::GW_UPLINK_ADDR4, LAN4, snat4),
                (CAS6, Topology::GW_UPLINK_ADDR6, LAN6, snat6),
            ];
            for (cas, public, local, _) in publics {
                // The CAS side connects to the gateway's public stunnel port.
                let back = tcp_exchange(
                    topo,
                    topo.cloud(),
                    Some(SocketAddr::new(cas, 52000)),
                    SocketAddr::new(public, STUNNEL),
                    &[1u8; 200],
                )
                .expect("to the stunnel");
                assert_eq!(back.len(), 200);
                // The inside host connects out, translated to the snat address.
                connect_out(topo, local, 42000, cas, 100);
            }
            let recs = stop(agent);
            let up = up.stop().unwrap();
            for (cas, public, local, snat) in publics {
                let v6 = cas.is_ipv6();
                // The port forward.
                let ct = ct_entry(topo, v6, cas, 52000);
                assert_eq!(
                    (ct.orig.1, ct.reply.0),
                    (public, local),
                    "conntrack: {ct:?}"
                );
                let (f, _) = one_flow(&recs, local, STUNNEL, cas);
                assert_eq!(f["nat"], "dnat", "{f:#}");
                assert_eq!(f["nat_addr"], ct.orig.1.to_string());
                assert_eq!(f["nat_port"], ct.orig.3);
                assert_eq!(f["remote_port"], 52000);
                assert_eq!(f["initiator"], "remote");
                assert_eq!(
                    (f["service_port"].as_u64(), f["verdict"].as_str()),
                    (Some(STUNNEL as u64), Some("allowed"))
                );
                let on_up = (
                    count(&up, |x| x.dst == cas && x.sport == STUNNEL).0,
                    count(&up, |x| x.src == cas && x.dport == STUNNEL).0,
                );
                assert_eq!(packets(f), on_up);
                // The source NAT.
                let ct = ct_entry(topo, v6, local, 42000);
                assert_eq!(ct.reply.1, snat, "conntrack: {ct:?}");
                let (f, _) = one_flow(&recs, local, 42000, cas);
                assert_eq!(f["nat"], "snat");
                assert_eq!(f["nat_addr"], snat.to_string());
                assert_eq!(f["nat_port"], ct.reply.3);
                assert_eq!(f["verdict"], "disallowed-port");
                let on_up = (
                    count(&up, |x| x.dst == cas && x.dport == DISALLOWED).0,
                    count(&up, |x| x.src == cas && x.sport == DISALLOWED).0,
                );
                assert_eq!(packets(f), on_up);
            }
            assert_eq!(
                (stunnel4.stop(), stunnel6.stop(), s4.stop(), s6.stop()),
                (1, 1, 1, 1)
            );
        },
    );
}

/// Packets to the cloud leave by `uplink`, its answers come back by
/// `uplink2`: with the agent on both, the connection is one flow naming
/// both interfaces, its counts tshark's on each.
#[test]
fn an_asymmetric_path_is_one_flow() {
    with_topology("an_asymmetric_path_is_one_flow", &[CAS4], |topo| {
        topo.add_return_uplink().expect("second uplink");
        let server =
            TcpServer::start(topo, topo.cloud(), SocketAddr::new(CAS4, DISALLOWED)).unwrap();
        let filter = format!("tcp port {DISALLOWED}");
        let up = Capture::start(topo, topo.gw(), Topology::GW_UPLINK, &filter).unwrap();
        let up2 = Capture::start(topo, topo.gw(), Topology::GW_UPLINK2, &filter).unwrap();
        let agent = start_agent(topo, &[Topology::GW_UPLINK, Topology::GW_UPLINK2]);
        connect_out(topo, LAN4, 43000, CAS4, 500);
        let recs = stop(agent);
        let (up, up2) = (up.stop().unwrap(), up2.stop().unwrap());
        let (f, mine) = one_flow(&recs, LAN4, 43000, CAS4);
        assert_eq!(
            strs(&f["interfaces"]),
            [Topology::GW_UPLINK, Topology::GW_UPLINK2]
        );
        let (out, _) = wire(&up, CAS4);
        let (none, inn) = wire(&up2, CAS4);
        assert_eq!((wire(&up, CAS4).1, none), (0, 0), "tshark: one way on each");
        assert_eq!(packets(f), (out, inn));
        assert_eq!(f["state"], "closed");
        assert_eq!(mine.iter().filter(|r| r["reason"] == "flagged").count(), 1);
        // No NAT here: the local side is what the datapath saw.
        assert_eq!(f["nat_addr"], Value::Null);
        assert_eq!(server.stop(), 1);
    });
}

/// Three connections from one fixed source port through a masquerading
/// gateway, each closed before the next SYN, the agent on both sides of
/// the NAT: three flows, each flagged once, each with its own packets as
/// tshark counts them per TCP stream.
#[test]
fn a_reused_source_port_is_one_flow_per_connection() {
    with_topology(
        "a_reused_source_port_is_one_flow_per_connection",
        &[CAS4],
        |topo| {
            nft(
            topo,
            topo.gw(),
            "table ip nat {\n chain post {\n  type nat hook postrouting priority srcnat;\n  oifname \"uplink\" masquerade\n }\n}\n",
        )
        .expect("nft");
            let server =
                TcpServer::start(topo, topo.cloud(), SocketAddr::new(CAS4, DISALLOWED)).unwrap();
            let filter = format!("tcp port {DISALLOWED}");
            let up = Capture::start(topo, topo.gw(), Topology::GW_UPLINK, &filter).unwrap();
            let agent = start_agent(topo, &[Topology::GW_INSIDE, Topology::GW_UPLINK]);
            for n in [100usize, 200, 300] {
                tcp_exchange(
                    topo,
                    topo.lan(),
                    Some(SocketAddr::new(LAN4, 40000)),
                    SocketAddr::new(CAS4, DISALLOWED),
                    &vec![4u8; n],
                )
                .expect("exchange");
            }
            let recs = stop(agent);
            let up = up.stop().unwrap();
            let mine = records_of(&recs, LAN4, 40000, CAS4);
            let f = finals(&mine);
            assert_eq!(f.len(), 3, "{mine:#?}");
            let brief: Vec<String> = mine
                .iter()
                .map(|r| {
                    format!(
                        "{} {} {} {}",
                        r["reason"], r["first_seen"], r["interfaces"], r["packets_out"]
                    )
                })
                .collect();
            assert_eq!(
                mine.iter().filter(|r| r["reason"] == "flagged").count(),
                3,
                "{brief:#?}"
            );
            // tshark's streams, in order.
            let mut streams: Vec<u32> = up.iter().filter_map(|x| x.stream).collect();
            streams.dedup();
            assert_eq!(streams.len(), 3, "tshark: three TCP streams");
            for (flow, s) in f.iter().zip(&streams) {
                let frames: Vec<Frame> = up
                    .iter()
                    .filter(|x| x.stream == Some(*s))
                    .cloned()
                    .collect();
                assert_eq!(packets(flow), wire(&frames, CAS4), "{flow:#}");
                eprintln!(
                    "tcp.stream {s}: tshark out/in {:?}, flow first seen {} out/in {:?}",
                    wire(&frames, CAS4),
                    flow["first_seen"],
                    packets(flow)
                );
                assert_eq!(flow["state"], "closed", "{flow:#}");
                assert_eq!(flow["nat"], "snat");
                assert_eq!(
                    strs(&flow["interfaces"]),
                    [Topology::GW_INSIDE, Topology::GW_UPLINK]
                );
            }
            assert_eq!(server.stop(), 3);
        },
    );
}
