//! The kernel programs run on crafted packets through `BPF_PROG_TEST_RUN`:
//! link layer and IP header parsing: VLAN tags
//! (802.1Q, 802.1ad, QinQ), non-IP frames, IPv4 options and IPv6
//! extension headers.
//!
//! The harness, the address plan and the frame builder are the test-bed
//! library's `cas_audit_tests::testrun` and `cas_audit_tests::packet`.
//! These tests need root (CAP_BPF + CAP_NET_ADMIN) and an agent built with
//! its eBPF object (`CAS_AUDIT_EBPF=require`); otherwise each one is
//! skipped with a message.

use cas_audit_common::{initiator, proto, Counter, Direction, FlowStats, RangeStats};
use cas_audit_tests::harness;
use cas_audit_tests::packet::{
    arp_request, ether_frame, Ext, Pkt, ACK, ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_LLDP, SYN,
};
use cas_audit_tests::testrun::{
    flow_stats, full_ext_chain, range_in, range_out, Harness, Hook, CAS4_A, CAS4_B, CAS6_A, CAS6_B,
    LOCAL4, LOCAL6, OTHER6, RANGE_CAS4_A, RANGE_CAS4_B, RANGE_CAS6_A, RANGE_CAS6_B,
};

// ---------------------------------------------------------------------------
// VLAN tags
// ---------------------------------------------------------------------------

fn vlan_hit(tags: &[u16]) {
    let Some(mut h) = Harness::new(&format!("vlan_hit {tags:x?}")) else {
        return;
    };
    let mut out = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN);
    let mut back = Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, SYN | ACK);
    let mut out6 = Pkt::udp(LOCAL6, CAS6_A, 40000, 443).payload(20);
    for t in tags {
        out = out.tag(*t);
        back = back.tag(*t);
        out6 = out6.tag(*t);
    }
    let (out, back, out6) = (out.build(), back.build(), out6.build());
    assert_eq!(out.l3_off, ETH_HLEN + 4 * tags.len());
    h.run(Hook::TcEgress, &out.bytes);
    h.run(Hook::Xdp, &back.bytes);
    h.run(Hook::TcIngress, &back.bytes);
    h.run(Hook::TcEgress, &out6.bytes);
    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 4),
        (Counter::FlowsCreated, 2),
    ]);
    h.expect_ranges(&[
        (
            RANGE_CAS4_A,
            RangeStats {
                packets_out: 1,
                bytes_out: out.len(),
                packets_in: 2,
                bytes_in: 2 * back.len(),
            },
        ),
        (RANGE_CAS6_A, range_out(1, out6.len())),
    ]);
    let key = h.key(LOCAL4, CAS4_A, 40000, 443, proto::TCP);
    let key6 = h.key(LOCAL6, CAS6_A, 40000, 443, proto::UDP);
    h.expect_flows(&[
        (
            key,
            FlowStats {
                packets_out: 1,
                bytes_out: out.len(),
                packets_in: 2,
                bytes_in: 2 * back.len(),
                range_id: RANGE_CAS4_A,
                tcp_flags_out: SYN.into(),
                tcp_flags_in: (SYN | ACK).into(),
                initiator: initiator::LOCAL,
                first_dir: Direction::Out as u8,
                ..FlowStats::default()
            },
        ),
        (
            key6,
            flow_stats(Direction::Out, RANGE_CAS6_A, 1, out6.len(), 0),
        ),
    ]);
}

#[test]
fn vlan_8021q_hit() {
    vlan_hit(&[ETH_P_8021Q]);
}

#[test]
fn vlan_8021ad_hit() {
    vlan_hit(&[ETH_P_8021AD]);
}

#[test]
fn vlan_qinq_hit() {
    vlan_hit(&[ETH_P_8021AD, ETH_P_8021Q]);
}

#[test]
fn vlan_double_8021q_hit() {
    vlan_hit(&[ETH_P_8021Q, ETH_P_8021Q]);
}

#[test]
fn three_vlan_tags_are_not_ip() {
    let mut h = harness!();
    let f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN)
        .tag(ETH_P_8021AD)
        .tag(ETH_P_8021Q)
        .tag(ETH_P_8021Q)
        .build();
    let back = Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, SYN | ACK)
        .tag(ETH_P_8021AD)
        .tag(ETH_P_8021Q)
        .tag(ETH_P_8021Q)
        .build();
    h.run(Hook::TcEgress, &f.bytes);
    h.expect_counters(&[(Counter::Packets, 1), (Counter::NotIp, 1)]);
    h.run(Hook::TcIngress, &back.bytes);
    h.run(Hook::Xdp, &back.bytes);
    h.expect_counters(&[(Counter::Packets, 3), (Counter::NotIp, 3)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
}

#[test]
fn arp_and_lldp_are_not_ip() {
    let mut h = harness!();
    let arp = arp_request(LOCAL4, CAS4_A);
    h.run(Hook::TcEgress, &arp);
    h.expect_counters(&[(Counter::Packets, 1), (Counter::NotIp, 1)]);
    h.run(Hook::TcIngress, &arp);
    h.run(Hook::Xdp, &arp);
    h.run(
        Hook::Xdp,
        &ether_frame(ETH_P_LLDP, &[0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 1]),
    );
    h.expect_counters(&[(Counter::Packets, 4), (Counter::NotIp, 4)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
    assert!(h.events().is_empty());
}

// ---------------------------------------------------------------------------
// IPv4 options and IPv6 extension headers
// ---------------------------------------------------------------------------

#[test]
fn ipv4_options_every_header_length() {
    let mut h = harness!();
    let mut flows = Vec::new();
    let (mut out_bytes, mut in_bytes) = (0, 0);
    for ihl in 6u16..=15 {
        let words = usize::from(ihl) - 5;
        let out = Pkt::tcp(LOCAL4, CAS4_A, 41000 + ihl, 443, SYN)
            .ip_option_words(words)
            .build();
        assert_eq!(out.bytes[out.l3_off] & 0x0f, ihl as u8);
        assert_eq!(out.l4_off - out.l3_off, usize::from(ihl) * 4);
        h.run(Hook::TcEgress, &out.bytes);
        let back = Pkt::udp(CAS4_B, LOCAL4, 443, 42000 + ihl)
            .ip_option_words(words)
            .payload(3)
            .build();
        h.run(Hook::Xdp, &back.bytes);
        out_bytes += out.len();
        in_bytes += back.len();
        let mut st = flow_stats(Direction::Out, RANGE_CAS4_A, 1, out.len(), SYN);
        st.initiator = initiator::LOCAL;
        flows.push((h.key(LOCAL4, CAS4_A, 41000 + ihl, 443, proto::TCP), st));
        flows.push((
            h.key(LOCAL4, CAS4_B, 42000 + ihl, 443, proto::UDP),
            flow_stats(Direction::In, RANGE_CAS4_B, 1, back.len(), 0),
        ));
    }
    h.expect_counters(&[
        (Counter::Packets, 20),
        (Counter::Matched, 20),
        (Counter::FlowsCreated, 20),
    ]);
    h.expect_ranges(&[
        (RANGE_CAS4_A, range_out(10, out_bytes)),
        (RANGE_CAS4_B, range_in(10, in_bytes)),
    ]);
    h.expect_flows(&flows);
}

#[test]
fn ipv6_each_extension_header() {
    let mut h = harness!();
    let exts = [
        Ext::HopByHop,
        Ext::Routing,
        Ext::DestOpts,
        Ext::Fragment {
            offset: 0,
            more: true,
        },
        Ext::Auth,
    ];
    let mut flows = Vec::new();
    let (mut out_bytes, mut in_bytes) = (0, 0);
    for (i, e) in exts.iter().enumerate() {
        let port = 43000 + i as u16;
        let tcp = Pkt::tcp(LOCAL6, CAS6_A, port, 443, SYN).ext(*e).build();
        h.run(Hook::TcEgress, &tcp.bytes);
        let udp = Pkt::udp(CAS6_A, LOCAL6, 443, port)
            .ext(*e)
            .payload(9)
            .build();
        h.run(Hook::TcIngress, &udp.bytes);
        let udp_xdp = Pkt::udp(CAS6_B, LOCAL6, 443, port)
            .ext(*e)
            .payload(9)
            .build();
        h.run(Hook::Xdp, &udp_xdp.bytes);
        out_bytes += tcp.len();
        in_bytes += udp.len();
        let mut st = flow_stats(Direction::Out, RANGE_CAS6_A, 1, tcp.len(), SYN);
        st.initiator = initiator::LOCAL;
        flows.push((h.key(LOCAL6, CAS6_A, port, 443, proto::TCP), st));
        flows.push((
            h.key(LOCAL6, CAS6_A, port, 443, proto::UDP),
            flow_stats(Direction::In, RANGE_CAS6_A, 1, udp.len(), 0),
        ));
        flows.push((
            h.key(LOCAL6, CAS6_B, port, 443, proto::UDP),
            flow_stats(Direction::In, RANGE_CAS6_B, 1, udp_xdp.len(), 0),
        ));
    }
    h.expect_counters(&[
        (Counter::Packets, 15),
        (Counter::Matched, 15),
        (Counter::FlowsCreated, 15),
    ]);
    let xdp_bytes: u64 = flows
        .iter()
        .filter(|(_, s)| s.range_id == RANGE_CAS6_B)
        .map(|(_, s)| s.bytes_in)
        .sum();
    h.expect_ranges(&[
        (
            RANGE_CAS6_A,
            RangeStats {
                packets_out: 5,
                bytes_out: out_bytes,
                packets_in: 5,
                bytes_in: in_bytes,
            },
        ),
        (RANGE_CAS6_B, range_in(5, xdp_bytes)),
    ]);
    h.expect_flows(&flows);
}

#[test]
fn ipv6_ext_chain_at_the_limit_is_parsed() {
    let mut h = harness!();
    let f = full_ext_chain(Pkt::tcp(LOCAL6, CAS6_A, 44000, 443, SYN)).build();
    h.run(Hook::TcEgress, &f.bytes);
    let back = full_ext_chain(Pkt::tcp(CAS6_A, LOCAL6, 443, 44000, SYN | ACK)).build();
    h.run(Hook::Xdp, &back.bytes);
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(
        RANGE_CAS6_A,
        RangeStats {
            packets_out: 1,
            bytes_out: f.len(),
            packets_in: 1,
            bytes_in: back.len(),
        },
    )]);
    let key = h.key(LOCAL6, CAS6_A, 44000, 443, proto::TCP);
    h.expect_flows(&[(
        key,
        FlowStats {
            packets_out: 1,
            bytes_out: f.len(),
            packets_in: 1,
            bytes_in: back.len(),
            range_id: RANGE_CAS6_A,
            tcp_flags_out: SYN.into(),
            tcp_flags_in: (SYN | ACK).into(),
            initiator: initiator::LOCAL,
            first_dir: Direction::Out as u8,
            ..FlowStats::default()
        },
    )]);
}

#[test]
fn ipv6_ext_chain_over_the_limit() {
    let mut h = harness!();
    let out = full_ext_chain(Pkt::tcp(LOCAL6, CAS6_A, 44000, 443, SYN))
        .ext(Ext::DestOpts)
        .build();
    let back = full_ext_chain(Pkt::udp(CAS6_B, LOCAL6, 443, 44000))
        .ext(Ext::HopByHop)
        .payload(5)
        .build();
    h.run(Hook::TcEgress, &out.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::ExtHeaderLimit, 1),
    ]);
    h.run(Hook::TcIngress, &back.bytes);
    h.run(Hook::Xdp, &back.bytes);
    h.expect_counters(&[
        (Counter::Packets, 3),
        (Counter::Matched, 3),
        (Counter::ExtHeaderLimit, 3),
    ]);
    h.expect_ranges(&[
        (RANGE_CAS6_A, range_out(1, out.len())),
        (RANGE_CAS6_B, range_in(2, 2 * back.len())),
    ]);
    h.expect_no_flows();
    assert!(h.events().is_empty());

    // The same chain to a non-CAS address is not looked at further.
    let miss = full_ext_chain(Pkt::tcp(LOCAL6, OTHER6, 44000, 443, SYN))
        .ext(Ext::DestOpts)
        .build();
    h.run(Hook::TcEgress, &miss.bytes);
    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 3),
        (Counter::ExtHeaderLimit, 3),
    ]);
}
