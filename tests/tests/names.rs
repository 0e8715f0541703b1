//! Names learned from DNS answers (`run`), in a namespace lab with a real
//! DNS server: dnsmasq in the cloud namespace answers the built-in set's
//! names with lab addresses (documentation ranges, on the cloud's `lo`);
//! the LAN host resolves through it (`getent` with the namespace's own
//! resolv.conf, `dig` over UDP and TCP) and connects; the agent on the
//! gateway's uplink learns the addresses from the answers it sees.
//!
//! Expectations: the flow to the OCSP name on port 80 is allowed and named;
//! the same name on 8080 is disallowed (with `--set`, port 80 is for the
//! certificate-check names only); a `*.cas.ms` name is learned (over TCP
//! DNS); an AAAA answer too; once the TTL ended the address leaves the
//! tries: the datagrams sent to it afterwards are counted nowhere (tshark
//! on the uplink counts them; the summary's learned range holds exactly the
//! TCP packets tshark saw).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use cas_audit_tests::dns::Dnsmasq;
use cas_audit_tests::observers::{count, Capture};
use cas_audit_tests::process::{agent_bin_str, Process as Agent};
use cas_audit_tests::traffic::{tcp_exchange, udp_send, TcpServer};
use cas_audit_tests::{with_topology, Topology};

/// The address dnsmasq gives `ocsp.msocsp.com` (a certificate-check name).
const OCSP4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 200));
/// Its AAAA answer.
const OCSP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xca5, 0, 0, 0, 0, 0x200));
/// The address of `contoso.cas.ms` (matches `*.cas.ms`).
const PROXY4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 201));
/// The DNS server: the cloud's `edge` address.
const DNS: IpAddr = Topology::CLOUD_ADDR4;
/// dnsmasq's TTL for its answers, seconds.
const TTL: &str = "3";

/// `dig @DNS args...` in the LAN namespace: its standard output.
fn dig(topo: &Topology, args: &[&str]) -> String {
    let out = topo
        .command(topo.lan(), "dig")
        .arg(format!("@{DNS}"))
        .args(["+time=1", "+tries=1"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running dig (install bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `getent ahostsv4 name` in the LAN namespace, through its own
/// resolv.conf (`ip netns exec` mounts /etc/netns/NS/resolv.conf).
fn getent(topo: &Topology, name: &str) -> String {
    let dir = std::path::Path::new("/etc/netns").join(topo.lan());
    std::fs::create_dir_all(&dir).expect("/etc/netns/NS");
    std::fs::write(dir.join("resolv.conf"), format!("nameserver {DNS}\n")).expect("resolv.conf");
    let out = Command::new("ip")
        .args(["netns", "exec", topo.lan(), "getent", "ahostsv4", name])
        .stdin(Stdio::null())
        .output()
        .expect("getent");
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn exchange(topo: &Topology, dst: IpAddr, port: u16) {
    let back = tcp_exchange(
        topo,
        topo.lan(),
        None,
        SocketAddr::new(dst, port),
        &[9u8; 100],
    )
    .expect("exchange");
    assert_eq!(back.len(), 100);
}

/// The agent on the gateway's uplink with the built-in set (names
/// learned), JSON lines on standard output, `extra` arguments; ready.
fn start_agent(topo: &Topology, extra: &[&str]) -> Agent {
    let mut cmd = topo.command(topo.gw(), &agent_bin_str());
    cmd.args([
        "run",
        "--json",
        "-",
        "--ingress",
        "tc",
        "--iface",
        Topology::GW_UPLINK,
    ])
    .args(["--set", "cas-2019-11"])
    .args(extra);
    let agent = Agent::spawn(cmd);
    agent.wait_ready();
    agent
}

/// The summary record among `recs`.
fn summary_of(recs: &[Value]) -> &Value {
    recs.iter()
        .find(|r| r["type"] == "summary")
        .expect("summary")
}

/// The one final record of the TCP flow to `dst:port`.
fn flow_to(recs: &[Value], dst: IpAddr, port: u16) -> &Value {
    let f: Vec<&Value> = recs
        .iter()
        .filter(|r| {
            r["type"] == "flow"
                && r["proto"] == "tcp"
                && r["remote_addr"] == dst.to_string()
                && r["remote_port"] == port
                && matches!(r["reason"].as_str(), Some("ended" | "expired" | "exit"))
        })
        .collect();
    assert_eq!(f.len(), 1, "one flow to {dst}:{port}: {recs:#?}");
    f[0]
}

#[test]
fn names_from_dns_answers_are_audited_for_their_ttl() {
    with_topology("names_dns", &[OCSP4, OCSP6, PROXY4], |topo| {
        let _dns = Dnsmasq::start(
            topo,
            topo.cloud(),
            DNS,
            TTL.parse().unwrap(),
            &[
                ("ocsp.msocsp.com", &[OCSP4, OCSP6]),
                ("contoso.cas.ms", &[PROXY4]),
            ],
        )
        .expect("dnsmasq");
        let servers: Vec<TcpServer> = [(OCSP4, 80), (OCSP4, 8080), (OCSP6, 80), (PROXY4, 443)]
            .into_iter()
            .map(|(a, p)| {
                TcpServer::start(topo, topo.cloud(), SocketAddr::new(a, p)).expect("server")
            })
            .collect();
        let cap = Capture::start(
            topo,
            topo.gw(),
            Topology::GW_UPLINK,
            &format!("host {OCSP4}"),
        )
        .expect("tshark");
        let agent = start_agent(topo, &["--learn-ttl-min", "1", "--learn-ttl-max", TTL]);
        let learned = |addr: IpAddr| {
            agent.wait_for_log(&format!("learned {addr} as "), Duration::from_secs(5))
        };

        // getent (the system resolver, UDP): the OCSP name, then port 80 and 8080.
        assert!(getent(topo, "ocsp.msocsp.com").contains(&OCSP4.to_string()));
        learned(OCSP4);
        exchange(topo, OCSP4, 80);
        exchange(topo, OCSP4, 8080);
        // An AAAA answer.
        assert!(dig(topo, &["+short", "AAAA", "ocsp.msocsp.com"]).contains("2001:db8:ca5::200"));
        learned(OCSP6);
        exchange(topo, OCSP6, 80);
        // A wildcard name, over TCP DNS.
        assert!(dig(topo, &["+tcp", "+short", "contoso.cas.ms"]).contains(&PROXY4.to_string()));
        learned(PROXY4);
        exchange(topo, PROXY4, 443);

        // The TTL ends: the address leaves the tries; datagrams after it
        // (a new flow) are not counted.
        agent.wait_for_log(
            &format!("forgot {OCSP4} (ocsp.msocsp.com)"),
            Duration::from_secs(10),
        );
        udp_send(topo, topo.lan(), None, SocketAddr::new(OCSP4, 80), 5, 64).expect("udp");
        std::thread::sleep(Duration::from_millis(300));
        let run = agent.stop();
        let frames = cap.stop().expect("capture");
        for s in servers {
            s.stop();
        }
        assert_eq!(run.code_or_signal(), 0, "stderr:\n{}", run.stderr);
        let recs = run.json_lines();

        let ocsp = flow_to(&recs, OCSP4, 80);
        eprintln!("OCSP flow: {ocsp}");
        assert_eq!(ocsp["verdict"], "allowed");
        assert_eq!(ocsp["service_port"], 80);
        assert_eq!(ocsp["dns_name"], "ocsp.msocsp.com");
        assert_eq!(ocsp["prefix"], "203.0.113.200/32");
        assert_eq!(
            ocsp["purposes"],
            serde_json::json!(["siem-agent", "log-collector"])
        );
        assert_eq!(ocsp["tls_server_name"], Value::Null);
        let alt = flow_to(&recs, OCSP4, 8080);
        assert_eq!(alt["verdict"], "disallowed-port");
        assert_eq!(alt["dns_name"], "ocsp.msocsp.com");
        let v6 = flow_to(&recs, OCSP6, 80);
        assert_eq!(v6["verdict"], "allowed");
        assert_eq!(v6["dns_name"], "ocsp.msocsp.com");
        let proxy = flow_to(&recs, PROXY4, 443);
        assert_eq!(proxy["verdict"], "allowed");
        assert_eq!(proxy["dns_name"], "contoso.cas.ms");
        assert_eq!(
            proxy["purposes"],
            serde_json::json!(["access-session-controls"])
        );
        assert!(
            !recs
                .iter()
                .any(|r| r["proto"] == "udp" && r["remote_addr"] == OCSP4.to_string()),
            "no flow after the TTL ended"
        );

        // tshark: the TCP packets of both flows and the 5 datagrams; the
        // learned range counted exactly the TCP ones.
        let tcp = |f: &cas_audit_tests::observers::Frame| {
            f.dport == 80 || f.sport == 80 || f.dport == 8080 || f.sport == 8080
        };
        let udp_seen = count(&frames, |f| f.dst == OCSP4 && f.stream.is_none()).0;
        assert_eq!(udp_seen, 5, "tshark saw the datagrams after the TTL");
        let tcp_out = count(&frames, |f| f.dst == OCSP4 && f.stream.is_some() && tcp(f)).0;
        let tcp_in = count(&frames, |f| f.src == OCSP4 && f.stream.is_some() && tcp(f)).0;
        let summary = summary_of(&recs);
        let range = summary["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["prefix"] == "203.0.113.200/32")
            .expect("the learned range in the summary");
        eprintln!("tshark: {tcp_out} out, {tcp_in} in, {udp_seen} datagrams after the TTL; summary: {range}");
        assert_eq!(range["dns_name"], "ocsp.msocsp.com");
        assert_eq!(range["packets_out"], tcp_out);
        assert_eq!(range["packets_in"], tcp_in);
        let l = &summary["learned"];
        assert_eq!(l["added"], 3, "{l}");
        assert!(l["expired"].as_u64().unwrap() >= 1, "{l}");
        assert_eq!(l["overflow"], 0);
        assert!(summary["dns_responses"].as_u64().unwrap() >= 3);
        assert_eq!(summary["payloads_lost"], 0);
    });
}

/// A lab address no DNS answer names: only the ClientHello tells.
const HELLO4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 202));

/// Where no DNS answer was seen (the client had the address cached, or
/// used DNS over HTTPS), a new TCP flow to 443 whose ClientHello names one
/// of the set's names makes its remote address a learned one: the flow
/// carries `tls_server_name`, and is audited with the name's purpose.
/// The ClientHello is a real one, from `openssl s_client` in the LAN
/// namespace (to an echo server: the handshake itself fails, as it may).
#[test]
fn a_client_hello_names_its_flow_and_learns_the_address() {
    with_topology("names_hello", &[HELLO4], |topo| {
        let server =
            TcpServer::start(topo, topo.cloud(), SocketAddr::new(HELLO4, 443)).expect("server");
        let agent = start_agent(topo, &[]);
        let client = topo
            .command(topo.lan(), "timeout")
            .args(["5", "openssl", "s_client", "-connect"])
            .arg(format!("{HELLO4}:443"))
            .args(["-servername", "Portal.CloudAppSecurity.com", "-tls1_2"])
            .stdin(Stdio::null())
            .output()
            .expect("openssl s_client");
        eprintln!(
            "s_client: {}",
            String::from_utf8_lossy(&client.stderr)
                .lines()
                .next()
                .unwrap_or("")
        );
        std::thread::sleep(Duration::from_millis(500));
        let run = agent.stop();
        assert!(
            run.stderr.contains(&format!(
                "learned {HELLO4} as portal.cloudappsecurity.com (from a ClientHello)"
            )),
            "stderr:\n{}\nstdout:\n{}",
            run.stderr,
            run.stdout
        );
        server.stop();
        assert_eq!(run.code_or_signal(), 0, "stderr:\n{}", run.stderr);
        let recs = run.json_lines();
        let f = flow_to(&recs, HELLO4, 443);
        eprintln!("flow: {f}");
        assert_eq!(f["tls_server_name"], "portal.cloudappsecurity.com");
        assert_eq!(f["verdict"], "allowed");
        assert_eq!(f["purposes"], serde_json::json!(["portal"]));
        assert_eq!(f["prefix"], "203.0.113.202/32");
        let summary = summary_of(&recs);
        assert_eq!(summary["client_hellos"], 1, "{summary}");
        assert_eq!(summary["learned"]["added"], 1);
        assert_eq!(summary["payloads_lost"], 0);
    });
}

/// One address that dnsmasq gives two names of the set.
const SHARED4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 203));

/// Two names of the set on one address (CDNs do this): a
/// certificate-check name (port 80 only) answered first, then a portal name
/// (443). The address carries the union of their tags and ports, as a listed
/// address of several purposes does: HTTPS to it is allowed, and so is 80;
/// 8080 is not. (Before: the first name's tags stayed, and the HTTPS flow
/// was `disallowed-port`.)
#[test]
fn an_address_of_two_names_carries_both_their_ports() {
    with_topology("names_shared", &[SHARED4], |topo| {
        let _dns = Dnsmasq::start(
            topo,
            topo.cloud(),
            DNS,
            60,
            &[
                ("ocsp.digicert.com", &[SHARED4]),
                ("dc.services.visualstudio.com", &[SHARED4]),
            ],
        )
        .expect("dnsmasq");
        let servers: Vec<TcpServer> = [80, 443, 8080]
            .into_iter()
            .map(|p| TcpServer::start(topo, topo.cloud(), SocketAddr::new(SHARED4, p)))
            .collect::<Result<_, _>>()
            .expect("servers");
        let agent = start_agent(topo, &[]);
        for (name, how) in [
            ("ocsp.digicert.com", "as"),
            ("dc.services.visualstudio.com", "also as"),
        ] {
            assert!(dig(topo, &[name, "A", "+short"]).contains(&SHARED4.to_string()));
            agent.wait_for_log(
                &format!("learned {SHARED4} {how} {name} "),
                Duration::from_secs(5),
            );
        }
        for port in [80, 443, 8080] {
            exchange(topo, SHARED4, port);
        }
        let run = agent.stop();
        for s in servers {
            s.stop();
        }
        let recs = run.json_lines();
        for (port, verdict) in [(80, "allowed"), (443, "allowed"), (8080, "disallowed-port")] {
            let f = flow_to(&recs, SHARED4, port);
            assert_eq!(f["verdict"], verdict, "port {port}: {f:#}");
            let purposes: Vec<&str> = f["purposes"]
                .as_array()
                .expect("purposes")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(
                purposes.contains(&"portal") && purposes.contains(&"siem-agent"),
                "port {port}: {f:#}"
            );
        }
    });
}
