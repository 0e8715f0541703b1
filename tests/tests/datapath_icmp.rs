//! The kernel programs run on crafted packets through `BPF_PROG_TEST_RUN`:
//! ICMP and ICMPv6 errors quoting a packet, attached
//! to the flow they are about.
//!
//! The harness, the address plan and the frame builder are the test-bed
//! library's `cas_audit_tests::testrun` and `cas_audit_tests::packet`.
//! These tests need root (CAP_BPF + CAP_NET_ADMIN) and an agent built with
//! its eBPF object (`CAS_AUDIT_EBPF=require`); otherwise each one is
//! skipped with a message.

use cas_audit::flow::evidence::history_string;
use cas_audit_common::{family, Counter};
use cas_audit_tests::harness;
use cas_audit_tests::packet::{Pkt, SYN};
use cas_audit_tests::testrun::{Hook, CAS4_A, CAS6_A, LOCAL4, LOCAL6, OTHER4, OTHER6};

#[test]
fn icmp_unreachable_is_attached_to_the_flow_it_quotes() {
    // IPv4: admin-prohibited (3/13) from a firewall that is not a CAS address.
    for hook in Hook::INGRESS {
        let mut h = harness!();
        let syn = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN).build();
        h.run(Hook::TcEgress, &syn.bytes);
        let err = Pkt::icmp_error(OTHER4, LOCAL4, 3, 13, &syn).build();
        h.run(hook, &err.bytes);
        h.expect_counters(&[
            (Counter::Packets, 2),
            (Counter::Matched, 1),
            (Counter::FlowsCreated, 1),
            (Counter::IcmpErrors, 1),
        ]);
        let st = h.only_flow().1;
        assert_eq!(st.icmp_errors, 1, "{hook:?}");
        assert_eq!((st.icmp_type, st.icmp_code), (3, 13));
        assert_eq!(st.reporter_family, family::V4);
        assert_eq!(st.reporter[..4], OTHER4.octets());
        assert_eq!(st.reporter[4..], [0; 12]);
        // The error itself is no flow and no CAS traffic.
        assert_eq!(history_string(&st), "S");
        assert_eq!((st.packets_out, st.packets_in), (1, 0));
    }
    // IPv6: admin-prohibited (1/1), quoting a UDP datagram.
    let mut h = harness!();
    let dgram = Pkt::udp(LOCAL6, CAS6_A, 40000, 443).payload(30).build();
    h.run(Hook::TcEgress, &dgram.bytes);
    let err = Pkt::icmp_error(OTHER6, LOCAL6, 1, 1, &dgram).build();
    h.run(Hook::TcIngress, &err.bytes);
    h.run(Hook::TcIngress, &err.bytes);
    let st = h.only_flow().1;
    assert_eq!((st.icmp_errors, st.icmp_type, st.icmp_code), (2, 1, 1));
    assert_eq!(st.reporter_family, family::V6);
    assert_eq!(st.reporter, OTHER6.octets());
    h.expect_counters(&[
        (Counter::Packets, 3),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
        (Counter::IcmpErrors, 2),
    ]);
}

#[test]
fn icmp_errors_that_are_not_about_a_cas_flow_are_ordinary_packets() {
    let mut h = harness!();
    // Quoting a non-CAS packet: the error is neither attached nor counted.
    let other = Pkt::tcp(LOCAL4, OTHER4, 40000, 443, SYN).build();
    h.run(
        Hook::TcIngress,
        &Pkt::icmp_error(OTHER4, LOCAL4, 3, 13, &other).build().bytes,
    );
    // Fragmentation needed (3/4) is path-MTU discovery, not a rejection.
    let syn = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN).build();
    h.run(Hook::TcEgress, &syn.bytes);
    h.run(
        Hook::TcIngress,
        &Pkt::icmp_error(OTHER4, LOCAL4, 3, 4, &syn).build().bytes,
    );
    // A truncated quote (no transport ports) is passed over too.
    let cut = Pkt::icmp_error(OTHER4, LOCAL4, 3, 13, &syn).build();
    // Cut two bytes into the quoted transport header: no whole ports.
    let quote_at = cut.bytes.len() - (syn.bytes.len() - syn.l3_off);
    let cut = cut.truncated(quote_at + (syn.l4_off - syn.l3_off) + 2);
    h.run(Hook::TcIngress, &cut.bytes);
    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
    ]);
    assert_eq!(h.only_flow().1.icmp_errors, 0);
    // An error about a CAS flow the table does not hold is counted as such.
    let gone = Pkt::tcp(LOCAL4, CAS4_A, 40001, 443, SYN).build();
    h.run(
        Hook::TcIngress,
        &Pkt::icmp_error(OTHER4, LOCAL4, 3, 1, &gone).build().bytes,
    );
    h.expect_counters(&[
        (Counter::Packets, 5),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
        (Counter::IcmpUnmatched, 1),
    ]);
}

#[test]
fn an_error_from_the_cas_host_itself_names_it_as_reporter() {
    let mut h = harness!();
    let dgram = Pkt::udp(LOCAL4, CAS4_A, 40000, 8443).payload(10).build();
    h.run(Hook::TcEgress, &dgram.bytes);
    h.run(
        Hook::Xdp,
        &Pkt::icmp_error(CAS4_A, LOCAL4, 3, 3, &dgram).build().bytes,
    );
    let st = h.only_flow().1;
    assert_eq!((st.icmp_errors, st.icmp_type, st.icmp_code), (1, 3, 3));
    assert_eq!(st.reporter[..4], CAS4_A.octets());
    // Attached, not a flow of its own.
    assert_eq!(h.flows().len(), 1);
}
