//! The kernel programs run on crafted packets through `BPF_PROG_TEST_RUN`:
//! flow events in the ring buffer (which new flows are
//! flagged) and the verdict (every packet is passed).
//!
//! The harness, the address plan and the frame builder are the test-bed
//! library's `cas_audit_tests::testrun` and `cas_audit_tests::packet`.
//! These tests need root (CAP_BPF + CAP_NET_ADMIN) and an agent built with
//! its eBPF object (`CAS_AUDIT_EBPF=require`); otherwise each one is
//! skipped with a message.

use cas_audit_common::{history, initiator, proto, record_kind, Counter, Direction, FlowEvent};
use cas_audit_tests::harness;
use cas_audit_tests::packet::{arp_request, Ext, Pkt, ACK, ETH_HLEN, PROTO_GRE, PSH, SYN};
use cas_audit_tests::testrun::{
    cas_to_cas_tcp, flow_stats, full_ext_chain, gso_ctx, Hook, CAS4_A, CAS4_B, CAS6_A, LOCAL4,
    LOCAL6, OTHER4, RANGE_CAS4_A, RANGE_CAS4_B, RANGE_CAS6_A, TC_ACT_UNSPEC,
};

// ---------------------------------------------------------------------------
// Flow events
// ---------------------------------------------------------------------------

#[test]
fn udp_to_a_disallowed_port_emits_one_event() {
    let mut h = harness!();
    let f = Pkt::udp(LOCAL4, CAS4_A, 40000, 8443).payload(12).build();
    h.run(Hook::TcEgress, &f.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
        (Counter::Events, 1),
    ]);
    let key = h.key(LOCAL4, CAS4_A, 40000, 8443, proto::UDP);
    let ev = h.events();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert!(ev[0].ts_ns > 0);
    assert_eq!(
        ev[0],
        FlowEvent {
            kind: record_kind::FLAGGED,
            ifindex: h.lo,
            ts_ns: ev[0].ts_ns,
            key,
            range_id: RANGE_CAS4_A,
            service_port: 8443,
            initiator: initiator::UNKNOWN,
            dir: Direction::Out as u8,
            packets: 1,
            bytes: f.len() as u32,
            tcp_flags: 0,
            kinds: history::DATA as u8,
            ttl: 64,
            _pad: [0; 5],
        }
    );
    let mut st = flow_stats(Direction::Out, RANGE_CAS4_A, 1, f.len(), 0);
    st.flagged = 1;
    h.expect_flows(&[(key, st)]);
    assert_eq!(h.only_flow().1.first_seen_ns, ev[0].ts_ns);

    // The flow's next packets (either way) emit nothing more.
    h.run(Hook::TcEgress, &f.bytes);
    let back = Pkt::udp(CAS4_A, LOCAL4, 8443, 40000).payload(40).build();
    h.run(Hook::Xdp, &back.bytes);
    h.expect_counters(&[
        (Counter::Packets, 3),
        (Counter::Matched, 3),
        (Counter::FlowsCreated, 1),
        (Counter::Events, 1),
    ]);
    assert!(h.events().is_empty());
    let mut st = flow_stats(Direction::Out, RANGE_CAS4_A, 2, 2 * f.len(), 0);
    st.packets_in = 1;
    st.bytes_in = back.len();
    st.flagged = 1;
    h.expect_flows(&[(key, st)]);
}

#[test]
fn udp_from_a_disallowed_remote_port_emits_an_event_on_ingress() {
    let mut h = harness!();
    let f = Pkt::udp(CAS6_A, LOCAL6, 3478, 50000).payload(20).build();
    h.run(Hook::Xdp, &f.bytes);
    let key = h.key(LOCAL6, CAS6_A, 50000, 3478, proto::UDP);
    let ev = h.events();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(
        ev[0],
        FlowEvent {
            kind: record_kind::FLAGGED,
            ifindex: h.lo,
            ts_ns: ev[0].ts_ns,
            key,
            range_id: RANGE_CAS6_A,
            service_port: 3478,
            initiator: initiator::UNKNOWN,
            dir: Direction::In as u8,
            packets: 1,
            bytes: f.len() as u32,
            tcp_flags: 0,
            kinds: history::DATA as u8,
            ttl: 64,
            _pad: [0; 5],
        }
    );
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
        (Counter::Events, 1),
    ]);
}

#[test]
fn tcp_syn_to_443_emits_no_event() {
    let mut h = harness!();
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN).build().bytes,
    );
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(LOCAL6, CAS6_A, 40000, 80, SYN).build().bytes,
    );
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 2),
    ]);
    assert!(h.events().is_empty());
    assert!(h.flows().values().all(|s| s.flagged == 0));
}

#[test]
fn tcp_syn_to_a_disallowed_port_emits_an_event() {
    let mut h = harness!();
    let syn = Pkt::tcp(LOCAL4, CAS4_B, 443, 22, SYN).build();
    h.run(Hook::TcEgress, &syn.bytes);
    let key = h.key(LOCAL4, CAS4_B, 443, 22, proto::TCP);
    let ev = h.events();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(
        ev[0],
        FlowEvent {
            kind: record_kind::FLAGGED,
            ifindex: h.lo,
            ts_ns: ev[0].ts_ns,
            key,
            range_id: RANGE_CAS4_B,
            // The local side opened the connection: the remote port is the
            // service, even though the local port is an allowed one.
            service_port: 22,
            initiator: initiator::LOCAL,
            dir: Direction::Out as u8,
            packets: 1,
            bytes: syn.len() as u32,
            tcp_flags: SYN,
            kinds: history::SYN as u8,
            ttl: 64,
            _pad: [0; 5],
        }
    );
}

#[test]
fn remote_syn_to_local_11344_emits_no_event() {
    let mut h = harness!();
    for hook in Hook::INGRESS {
        let port = if hook == Hook::Xdp { 50001 } else { 50000 };
        h.run(
            hook,
            &Pkt::tcp(CAS4_B, LOCAL4, port, 11344, SYN).build().bytes,
        );
    }
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 2),
    ]);
    assert!(h.events().is_empty());
    for (k, s) in h.flows() {
        assert_eq!(
            (k.local_port, s.initiator, s.flagged),
            (11344, initiator::REMOTE, 0)
        );
    }
}

#[test]
fn remote_syn_to_a_disallowed_local_port_emits_an_event() {
    let mut h = harness!();
    // The CAS side connects from port 443 to local port 8080: the service
    // is the local port, and it is not allowed.
    h.run(
        Hook::TcIngress,
        &Pkt::tcp(CAS4_A, LOCAL4, 443, 8080, SYN).build().bytes,
    );
    let ev = h.events();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(
        (ev[0].service_port, ev[0].initiator, ev[0].dir),
        (8080, initiator::REMOTE, Direction::In as u8)
    );
    assert_eq!(ev[0].key, h.key(LOCAL4, CAS4_A, 8080, 443, proto::TCP));
}

#[test]
fn udp_from_a_local_allowed_port_emits_no_event() {
    // Start unseen (UDP): the remote port is the service unless only the
    // local port is allowed, as here.
    let mut h = harness!();
    h.run(
        Hook::TcEgress,
        &Pkt::udp(LOCAL4, CAS4_A, 443, 50000)
            .payload(1)
            .build()
            .bytes,
    );
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
    ]);
    assert!(h.events().is_empty());
}

#[test]
fn tcp_midstream_to_a_local_allowed_port_emits_no_event() {
    // The SYN was not seen (initiator unknown): the remote port is the
    // service unless only the local port is allowed, as here, where the CAS
    // side is a client of the local port 443.
    let mut h = harness!();
    h.run(
        Hook::TcIngress,
        &Pkt::tcp(CAS4_A, LOCAL4, 50000, 443, PSH | ACK)
            .payload(100)
            .build()
            .bytes,
    );
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(LOCAL6, CAS6_A, 443, 50001, ACK).build().bytes,
    );
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 2),
    ]);
    assert!(h.events().is_empty());
    // Neither port allowed: the remote one is judged.
    h.run(
        Hook::Xdp,
        &Pkt::tcp(CAS4_B, LOCAL4, 50000, 40000, ACK).build().bytes,
    );
    let ev = h.events();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(
        (ev[0].service_port, ev[0].initiator, ev[0].dir),
        (50000, initiator::UNKNOWN, Direction::In as u8)
    );
}

#[test]
fn icmp_emits_no_event() {
    let mut h = harness!();
    let e4 = Pkt::echo(LOCAL4, CAS4_A).payload(56).build();
    let e6 = Pkt::echo(CAS6_A, LOCAL6).payload(56).build();
    h.run(Hook::TcEgress, &e4.bytes);
    h.run(Hook::Xdp, &e6.bytes);
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 2),
    ]);
    assert!(h.events().is_empty());
    h.expect_flows(&[
        (
            h.key(LOCAL4, CAS4_A, 0, 0, proto::ICMP),
            flow_stats(Direction::Out, RANGE_CAS4_A, 1, e4.len(), 0),
        ),
        (
            h.key(LOCAL6, CAS6_A, 0, 0, proto::ICMPV6),
            flow_stats(Direction::In, RANGE_CAS6_A, 1, e6.len(), 0),
        ),
    ]);
}

#[test]
fn gre_emits_an_event() {
    let mut h = harness!();
    let f = Pkt::raw(LOCAL4, CAS4_A, PROTO_GRE).payload(24).build();
    h.run(Hook::TcEgress, &f.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
        (Counter::Events, 1),
    ]);
    let key = h.key(LOCAL4, CAS4_A, 0, 0, PROTO_GRE);
    let ev = h.events();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(
        ev[0],
        FlowEvent {
            kind: record_kind::FLAGGED,
            ifindex: h.lo,
            ts_ns: ev[0].ts_ns,
            key,
            range_id: RANGE_CAS4_A,
            service_port: 0,
            initiator: initiator::UNKNOWN,
            dir: Direction::Out as u8,
            packets: 1,
            bytes: f.len() as u32,
            tcp_flags: 0,
            kinds: history::DATA as u8,
            ttl: 64,
            _pad: [0; 5],
        }
    );
    let mut st = flow_stats(Direction::Out, RANGE_CAS4_A, 1, f.len(), 0);
    st.flagged = 1;
    h.expect_flows(&[(key, st)]);
}

// ---------------------------------------------------------------------------
// Verdicts
// ---------------------------------------------------------------------------

#[test]
fn every_packet_is_passed() {
    let mut h = harness!();
    let frames: Vec<Vec<u8>> = vec![
        Pkt::tcp(LOCAL4, CAS4_A, 1, 443, SYN).build().bytes,
        Pkt::tcp(CAS4_A, LOCAL4, 443, 1, SYN | ACK).build().bytes,
        Pkt::tcp(LOCAL4, OTHER4, 1, 443, SYN).build().bytes,
        Pkt::udp(LOCAL6, CAS6_A, 1, 8443).build().bytes,
        Pkt::raw(LOCAL4, CAS4_A, PROTO_GRE).build().bytes,
        Pkt::raw(LOCAL4, CAS4_A, proto::UDP)
            .fragment(7, false)
            .payload(8)
            .build()
            .bytes,
        full_ext_chain(Pkt::tcp(LOCAL6, CAS6_A, 1, 443, SYN))
            .ext(Ext::DestOpts)
            .build()
            .bytes,
        cas_to_cas_tcp().build().truncated(ETH_HLEN + 20 + 5).bytes,
        arp_request(LOCAL4, CAS4_A),
        vec![0; ETH_HLEN],
        vec![0xff; 1500],
    ];
    for f in &frames {
        for hook in Hook::ALL {
            // `run` asserts the pass verdict.
            h.run(hook, f);
        }
        let ctx = gso_ctx(3, 100);
        for hook in [Hook::TcEgress, Hook::TcIngress] {
            let rv = h.try_run(hook, f, Some(&ctx)).expect("gso test run");
            assert_eq!(rv, TC_ACT_UNSPEC);
        }
    }
    let c = h.dp.counters().expect("counters");
    assert_eq!(c.get(Counter::Packets), frames.len() as u64 * (3 + 2 * 3));
}
