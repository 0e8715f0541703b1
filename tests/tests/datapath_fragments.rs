//! The kernel programs run on crafted packets through `BPF_PROG_TEST_RUN`:
//! IPv4 and IPv6 fragments.
//!
//! The harness, the address plan and the frame builder are the test-bed
//! library's `cas_audit_tests::testrun` and `cas_audit_tests::packet`.
//! These tests need root (CAP_BPF + CAP_NET_ADMIN) and an agent built with
//! its eBPF object (`CAS_AUDIT_EBPF=require`); otherwise each one is
//! skipped with a message.

use cas_audit_common::{proto, Counter, Direction, RangeStats};
use cas_audit_tests::harness;
use cas_audit_tests::packet::{Ext, Pkt, ACK, PSH};
use cas_audit_tests::testrun::{
    flow_stats, range_in, range_out, Hook, CAS4_A, CAS4_B, CAS6_A, CAS6_B, LOCAL4, LOCAL6, OTHER4,
    RANGE_CAS4_A, RANGE_CAS4_B, RANGE_CAS6_A, RANGE_CAS6_B,
};

#[test]
fn ipv4_first_fragment_creates_a_flow() {
    let mut h = harness!();
    let f = Pkt::udp(LOCAL4, CAS4_A, 40001, 443)
        .payload(1472)
        .fragment(0, true)
        .build();
    h.run(Hook::TcEgress, &f.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(RANGE_CAS4_A, range_out(1, f.len()))]);
    let key = h.key(LOCAL4, CAS4_A, 40001, 443, proto::UDP);
    h.expect_flows(&[(key, flow_stats(Direction::Out, RANGE_CAS4_A, 1, f.len(), 0))]);
}

#[test]
fn ipv4_non_first_fragment() {
    let mut h = harness!();
    // The rest of a UDP datagram: offset 1480 bytes, no UDP header.
    let out = Pkt::raw(LOCAL4, CAS4_A, proto::UDP)
        .payload(200)
        .fragment(185, false)
        .build();
    let back = Pkt::raw(CAS4_B, LOCAL4, proto::TCP)
        .payload(100)
        .fragment(1, true)
        .build();
    h.run(Hook::TcEgress, &out.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::Fragments, 1),
    ]);
    h.run(Hook::TcIngress, &back.bytes);
    h.run(Hook::Xdp, &back.bytes);
    h.expect_counters(&[
        (Counter::Packets, 3),
        (Counter::Matched, 3),
        (Counter::Fragments, 3),
    ]);
    h.expect_ranges(&[
        (RANGE_CAS4_A, range_out(1, out.len())),
        (RANGE_CAS4_B, range_in(2, 2 * back.len())),
    ]);
    h.expect_no_flows();
    // A fragment that is not CAS traffic is not a "CAS fragment".
    h.run(
        Hook::TcEgress,
        &Pkt::raw(LOCAL4, OTHER4, proto::UDP)
            .payload(64)
            .fragment(185, false)
            .build()
            .bytes,
    );
    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 3),
        (Counter::Fragments, 3),
    ]);
    h.expect_no_flows();
}

#[test]
fn ipv6_first_fragment_creates_a_flow() {
    let mut h = harness!();
    let f = Pkt::tcp(LOCAL6, CAS6_A, 40002, 443, PSH | ACK)
        .ext(Ext::Fragment {
            offset: 0,
            more: true,
        })
        .payload(1200)
        .build();
    h.run(Hook::TcEgress, &f.bytes);
    let back = Pkt::udp(CAS6_A, LOCAL6, 443, 40003)
        .ext(Ext::HopByHop)
        .ext(Ext::Fragment {
            offset: 0,
            more: true,
        })
        .payload(1200)
        .build();
    h.run(Hook::Xdp, &back.bytes);
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 2),
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
    h.expect_flows(&[
        (
            h.key(LOCAL6, CAS6_A, 40002, 443, proto::TCP),
            flow_stats(Direction::Out, RANGE_CAS6_A, 1, f.len(), PSH | ACK),
        ),
        (
            h.key(LOCAL6, CAS6_A, 40003, 443, proto::UDP),
            flow_stats(Direction::In, RANGE_CAS6_A, 1, back.len(), 0),
        ),
    ]);
}

#[test]
fn ipv6_non_first_fragment() {
    let mut h = harness!();
    let out = Pkt::raw(LOCAL6, CAS6_A, proto::TCP)
        .ext(Ext::Fragment {
            offset: 150,
            more: true,
        })
        .payload(1200)
        .build();
    let back = Pkt::raw(CAS6_B, LOCAL6, proto::UDP)
        .ext(Ext::DestOpts)
        .ext(Ext::Fragment {
            offset: 300,
            more: false,
        })
        .payload(77)
        .build();
    h.run(Hook::TcEgress, &out.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::Fragments, 1),
    ]);
    h.run(Hook::TcIngress, &back.bytes);
    h.run(Hook::Xdp, &back.bytes);
    h.expect_counters(&[
        (Counter::Packets, 3),
        (Counter::Matched, 3),
        (Counter::Fragments, 3),
    ]);
    h.expect_ranges(&[
        (RANGE_CAS6_A, range_out(1, out.len())),
        (RANGE_CAS6_B, range_in(2, 2 * back.len())),
    ]);
    h.expect_no_flows();
}
