//! Privileged tests of the namespace test bed itself, with real traffic.
//! Each test is skipped (with a message) when not run as root.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use cas_audit_tests::traffic::{tcp_exchange, udp_send, udp_sink, TcpServer};
use cas_audit_tests::{cleanup_stale, list_netns, require_root, Topology};

/// A real CAS endpoint address; only ever configured inside the cloud namespace.
const CAS4: IpAddr = IpAddr::V4(Ipv4Addr::new(13, 64, 196, 27));
/// A simulated IPv6 endpoint on the cloud namespace's loopback.
const CAS6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xca5, 0, 0, 0, 0, 1));

const IFNAMES: [&str; 4] = [
    Topology::LAN_IF,
    Topology::GW_INSIDE,
    Topology::GW_UPLINK,
    Topology::CLOUD_IF,
];

fn setup(test: &str) -> Option<Topology> {
    if !require_root(test) {
        return None;
    }
    static SWEEP: Once = Once::new();
    SWEEP.call_once(cleanup_stale);
    let topo = Topology::new(&[CAS4, CAS6]).expect("building topology");
    assert_no_veth_in_root_ns();
    Some(topo)
}

/// Interface names (without `@peer`) of a namespace, or of the root namespace for `None`.
fn links(ns: Option<&str>) -> Vec<String> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.args(["-o", "link", "show"]).output().expect("ip link");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
        .collect()
}

fn assert_no_veth_in_root_ns() {
    let root = links(None);
    for name in IFNAMES {
        assert!(
            !root.iter().any(|l| l == name),
            "{name} is in the root namespace: {root:?}"
        );
    }
}

#[test]
fn namespaces_and_links_are_where_they_belong() {
    let Some(topo) = setup("namespaces_and_links_are_where_they_belong") else {
        return;
    };
    let all: HashSet<String> = list_netns().unwrap().into_iter().collect();
    for ns in topo.namespaces() {
        assert!(all.contains(ns), "{ns} missing from {all:?}");
    }
    assert_eq!(links(Some(topo.lan())), ["lo", "lan0"]);
    assert_eq!(links(Some(topo.gw())), ["lo", "inside", "uplink"]);
    assert_eq!(links(Some(topo.cloud())), ["lo", "edge"]);

    // Forwarding is on in the gw only (sysctls are per namespace).
    let fwd = |ns: &str, key: &str| {
        let out = topo
            .command(ns, "sysctl")
            .args(["-n", key])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(fwd(topo.gw(), "net.ipv4.ip_forward"), "1");
    assert_eq!(fwd(topo.gw(), "net.ipv6.conf.all.forwarding"), "1");
    assert_eq!(fwd(topo.lan(), "net.ipv4.ip_forward"), "0");

    // A thread in the lan namespace sees a different netns than ours.
    let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let theirs = topo.in_ns(topo.lan(), || {
        std::fs::read_link("/proc/thread-self/ns/net").unwrap()
    });
    assert_ne!(mine, theirs);

    // A namespace that does not exist is an error, not a panic.
    let dst = SocketAddr::new(CAS4, 8443);
    let err = udp_send(&topo, "casa-no-such-ns", None, dst, 1, 1).unwrap_err();
    assert!(
        format!("{err:#}").contains("/run/netns/casa-no-such-ns"),
        "{err:#}"
    );
}

#[test]
fn udp_lan_to_cloud_endpoint_arrives_exactly() {
    let Some(topo) = setup("udp_lan_to_cloud_endpoint_arrives_exactly") else {
        return;
    };
    let sink = udp_sink(&topo, topo.cloud(), SocketAddr::new(CAS4, 8443)).unwrap();
    udp_send(&topo, topo.lan(), None, SocketAddr::new(CAS4, 8443), 5, 100).unwrap();
    assert_eq!(sink.wait_for(5, Duration::from_secs(5)), 5);
    std::thread::sleep(Duration::from_millis(200));
    let sources = sink.sources();
    assert_eq!(sink.bytes(), 500);
    let got = sink.stop();
    eprintln!("udp v4: {got} of 5 datagrams, sources {sources:?}");
    assert_eq!(got, 5);
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].ip(), Topology::LAN_ADDR4, "no NAT on the path");
}

#[test]
fn udp_burst_with_fixed_source_v4_and_v6() {
    let Some(topo) = setup("udp_burst_with_fixed_source_v4_and_v6") else {
        return;
    };
    for (src, dst) in [(Topology::LAN_ADDR4, CAS4), (Topology::LAN_ADDR6, CAS6)] {
        let sink = udp_sink(&topo, topo.cloud(), SocketAddr::new(dst, 8443)).unwrap();
        let from = SocketAddr::new(src, 40_123);
        udp_send(&topo, topo.lan(), Some(from), sink.local_addr(), 200, 1200).unwrap();
        assert_eq!(sink.wait_for(200, Duration::from_secs(5)), 200);
        let sources = sink.sources();
        let got = sink.stop();
        eprintln!("udp burst {from} -> {dst}: {got} of 200, sources {sources:?}");
        assert_eq!(got, 200);
        assert_eq!(sources, [from]);
    }
}

#[test]
fn tcp_lan_to_cloud_endpoint_echoes() {
    let Some(topo) = setup("tcp_lan_to_cloud_endpoint_echoes") else {
        return;
    };
    let server = TcpServer::start(&topo, topo.cloud(), SocketAddr::new(CAS4, 443)).unwrap();
    let payload = b"GET / HTTP/1.1\r\nHost: cas.example\r\n\r\n".repeat(100);
    let back = tcp_exchange(
        &topo,
        topo.lan(),
        None,
        SocketAddr::new(CAS4, 443),
        &payload,
    )
    .unwrap();
    assert_eq!(back, payload);
    let peers = server.peers();
    let served = server.stop();
    eprintln!(
        "tcp v4: {} bytes echoed, {served} connection(s), peers {peers:?}",
        back.len()
    );
    assert_eq!(served, 1);
    assert_eq!(peers[0].ip(), Topology::LAN_ADDR4);
}

#[test]
fn tcp_v6_lan_to_cloud_echoes() {
    let Some(topo) = setup("tcp_v6_lan_to_cloud_echoes") else {
        return;
    };
    let server = TcpServer::start(
        &topo,
        topo.cloud(),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 443),
    )
    .unwrap();
    for dst in [Topology::CLOUD_ADDR6, CAS6] {
        let back = tcp_exchange(
            &topo,
            topo.lan(),
            None,
            SocketAddr::new(dst, 443),
            b"hello v6",
        )
        .unwrap();
        assert_eq!(back, b"hello v6");
    }
    let peers = server.peers();
    let served = server.stop();
    eprintln!("tcp v6: {served} connection(s), peers {peers:?}");
    assert_eq!(served, 2);
    assert!(
        peers.iter().all(|p| p.ip() == Topology::LAN_ADDR6),
        "{peers:?}"
    );
}

#[test]
fn tcp_cloud_to_lan_inbound_works() {
    let Some(topo) = setup("tcp_cloud_to_lan_inbound_works") else {
        return;
    };
    let addr = SocketAddr::new(Topology::LAN_ADDR4, 11344);
    let server = TcpServer::start(&topo, topo.lan(), addr).unwrap();
    let back = tcp_exchange(&topo, topo.cloud(), None, addr, b"inbound").unwrap();
    assert_eq!(back, b"inbound");
    let peers = server.peers();
    assert_eq!(server.stop(), 1);
    eprintln!("tcp inbound: peers {peers:?}");
    assert_eq!(peers[0].ip(), Topology::CLOUD_ADDR4);
}

#[test]
fn tcp_fixed_source_port_can_be_reused() {
    let Some(topo) = setup("tcp_fixed_source_port_can_be_reused") else {
        return;
    };
    let server = TcpServer::start(&topo, topo.cloud(), SocketAddr::new(CAS4, 443)).unwrap();
    let from = SocketAddr::new(Topology::LAN_ADDR4, 40_000);
    let started = std::time::Instant::now();
    for i in 0..3u8 {
        let back = tcp_exchange(
            &topo,
            topo.lan(),
            Some(from),
            SocketAddr::new(CAS4, 443),
            &[i; 10],
        )
        .unwrap();
        assert_eq!(back, [i; 10]);
    }
    let peers = server.peers();
    assert_eq!(server.stop(), 3);
    eprintln!(
        "tcp fixed source: 3 exchanges in {:?}, peers {peers:?}",
        started.elapsed()
    );
    assert!(peers.iter().all(|p| *p == from), "{peers:?}");
}

#[test]
fn drop_removes_namespaces_and_stale_sweep_works() {
    let Some(topo) = setup("drop_removes_namespaces_and_stale_sweep_works") else {
        return;
    };
    let names: Vec<String> = topo.namespaces().iter().map(|s| s.to_string()).collect();
    // A leftover from a "crashed" run: pid far above any pid_max, so gone.
    let stale = "casa9999999n0-lan";
    let st = Command::new("ip")
        .args(["netns", "add", stale])
        .status()
        .unwrap();
    assert!(st.success());
    cleanup_stale();
    let after_sweep = list_netns().unwrap();
    assert!(!after_sweep.iter().any(|n| n == stale), "{after_sweep:?}");
    for n in &names {
        assert!(
            after_sweep.contains(n),
            "live {n} was swept: {after_sweep:?}"
        );
    }
    drop(topo);
    let after_drop = list_netns().unwrap();
    for n in &names {
        assert!(!after_drop.contains(n), "{n} still there: {after_drop:?}");
    }
    assert_no_veth_in_root_ns();
}

#[test]
fn namespaces_removed_on_panic_and_on_build_error() {
    if !require_root("namespaces_removed_on_panic_and_on_build_error") {
        return;
    }
    // Unwinding out of a test drops the topology.
    let started = std::time::Instant::now();
    let names = std::sync::Mutex::new(Vec::<String>::new());
    let outcome = std::panic::catch_unwind(|| {
        let topo = Topology::new(&[CAS4]).unwrap();
        *names.lock().unwrap() = topo.namespaces().iter().map(|s| s.to_string()).collect();
        panic!("deliberate panic (testing that Topology's Drop runs while unwinding)");
    });
    assert!(outcome.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 3);
    eprintln!("build + teardown of one topology: {:?}", started.elapsed());
    let now = list_netns().unwrap();
    for n in names.iter() {
        assert!(!now.contains(n), "{n} survived a panic: {now:?}");
    }

    // A failing build (the same address twice on the cloud's lo) removes
    // what it had created.
    let err = Topology::new(&[CAS4, CAS4]).unwrap_err();
    let msg = format!("{err:#}");
    eprintln!("expected build error: {msg}");
    let tag = msg
        .split_whitespace()
        .find(|w| w.starts_with("casa"))
        .expect("tag in error")
        .trim_end_matches(':');
    let now = list_netns().unwrap();
    assert!(
        !now.iter().any(|n| n.starts_with(&format!("{tag}-"))),
        "{tag}: {now:?}"
    );
    assert_no_veth_in_root_ns();
}
