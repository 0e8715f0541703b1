//! The kernel rules of issue 11 through `BPF_PROG_TEST_RUN`: either address
//! may be the CAS side whichever hook sees a packet; a packet between two
//! CAS addresses is one flow, counted once; a packet crossing two audited
//! interfaces is counted at the first; a new SYN on an ended TCP flow
//! starts a new flow after handing the ended one to the agent.
//!
//! Harness, address plan and frame builder: `cas_audit_tests::testrun` and
//! `cas_audit_tests::packet`. Needs root and an agent built with its eBPF
//! object; otherwise each test is skipped with a message.

use cas_audit::datapath::events::RingRecord;
use cas_audit::flow::evidence::history_string;
use cas_audit_common::RangeStats;
use cas_audit_common::{initiator, proto, Counter, Direction, FlowStats};
use cas_audit_tests::harness;
use cas_audit_tests::packet::{Pkt, ACK, FIN, PSH, RST, SYN};
use cas_audit_tests::testrun::{
    flow_stats, range_out, Hook, CAS4_A, CAS4_B, CAS6_A, LOCAL4, LOCAL6, RANGE_CAS4_A,
    RANGE_CAS4_B, RANGE_CAS6_A, RANGE_IDS_READ,
};

/// Another audited interface (any index the datapath is told about).
const UPLINK: u32 = 7;

#[test]
fn every_hook_finds_the_cas_side_of_either_address() {
    for hook in Hook::ALL {
        let mut h = harness!();
        // Towards CAS, then back: on the uplink egress sees the first, on
        // the LAN side of a router ingress does; one flow either way.
        let out = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN).build();
        let back = Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, SYN | ACK).build();
        h.run(hook, &out.bytes);
        h.run(hook, &back.bytes);
        h.expect_counters(&[
            (Counter::Packets, 2),
            (Counter::Matched, 2),
            (Counter::FlowsCreated, 1),
        ]);
        h.expect_ranges(&[(
            RANGE_CAS4_A,
            RangeStats {
                packets_out: 1,
                bytes_out: out.len(),
                packets_in: 1,
                bytes_in: back.len(),
            },
        )]);
        let key = h.key(LOCAL4, CAS4_A, 40000, 443, proto::TCP);
        let mut want = flow_stats(Direction::Out, RANGE_CAS4_A, 1, out.len(), SYN);
        want.packets_in = 1;
        want.bytes_in = back.len();
        want.tcp_flags_in = (SYN | ACK).into();
        want.initiator = initiator::LOCAL;
        h.expect_flows(&[(key, want)]);
        assert_eq!(history_string(&h.only_flow().1), "Sh", "{hook:?}");

        // IPv6, a flow first seen from the CAS side.
        let v6 = Pkt::udp(CAS6_A, LOCAL6, 443, 5000).payload(10).build();
        h.run(hook, &v6.bytes);
        let k6 = h.key(LOCAL6, CAS6_A, 5000, 443, proto::UDP);
        assert_eq!(
            h.flows()[&k6],
            FlowStats {
                first_seen_ns: h.flows()[&k6].first_seen_ns,
                last_seen_ns: h.flows()[&k6].last_seen_ns,
                history_mask: h.flows()[&k6].history_mask,
                history: h.flows()[&k6].history,
                ..flow_stats(Direction::In, RANGE_CAS6_A, 1, v6.len(), 0)
            },
            "{hook:?}"
        );
    }
}

#[test]
fn a_conversation_between_two_cas_addresses_is_one_flow_counted_once() {
    for hook in Hook::ALL {
        let mut h = harness!();
        // The first packet's destination is the remote side (range 1) ...
        let a = Pkt::tcp(CAS4_A, CAS4_B, 40000, 443, SYN).build();
        // ... and the answer lands on the same flow, counted for range 1 only.
        let b = Pkt::tcp(CAS4_B, CAS4_A, 443, 40000, SYN | ACK).build();
        h.run(hook, &a.bytes);
        h.run(hook, &b.bytes);
        h.expect_counters(&[
            (Counter::Packets, 2),
            (Counter::Matched, 2),
            (Counter::FlowsCreated, 1),
        ]);
        h.expect_ranges(&[(
            RANGE_CAS4_B,
            RangeStats {
                packets_out: 1,
                bytes_out: a.len(),
                packets_in: 1,
                bytes_in: b.len(),
            },
        )]);
        let (key, st) = h.only_flow();
        assert_eq!(
            key,
            h.key(CAS4_A, CAS4_B, 40000, 443, proto::TCP),
            "{hook:?}"
        );
        assert_eq!((st.packets_out, st.packets_in), (1, 1));
        assert_eq!(history_string(&st), "Sh");
    }
}

#[test]
fn a_packet_crossing_two_audited_interfaces_counts_once() {
    let mut h = harness!();
    // Test runs happen on the loopback: it plays the LAN side.
    let lan = h.lo;
    h.audit_iface(lan);
    h.audit_iface(UPLINK);
    // LAN host -> CAS, seen at the LAN side's ingress, then leaving by the
    // uplink (egress, arrived on an audited interface): counted once.
    let syn = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN).build();
    h.run(Hook::TcIngress, &syn.bytes);
    h.run_arrived(&syn.bytes, lan);
    // The answer arrives on the uplink (counted there) and leaves by the
    // LAN side: its egress there is not counted again.
    let sa = Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, SYN | ACK).build();
    h.run(Hook::Xdp, &sa.bytes);
    h.run_arrived(&sa.bytes, UPLINK);
    // Arrived on an interface nobody audits: counted at egress.
    let ack = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, ACK)
        .payload(20)
        .build();
    h.run_arrived(&ack.bytes, 99);
    h.expect_counters(&[
        (Counter::Packets, 5),
        (Counter::Matched, 3),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(
        RANGE_CAS4_A,
        RangeStats {
            packets_out: 2,
            bytes_out: syn.len() + ack.len(),
            packets_in: 1,
            bytes_in: sa.len(),
        },
    )]);
    let (_, st) = h.only_flow();
    assert_eq!((st.packets_out, st.packets_in), (2, 1));
    assert_eq!(history_string(&st), "ShD");
    // Not counted there, but seen: its history and interfaces are the flow's.
    let fresh = Pkt::udp(LOCAL4, CAS4_B, 5000, 8443).payload(8).build();
    h.run_arrived(&fresh.bytes, UPLINK);
    let f = h.flows()[&h.key(LOCAL4, CAS4_B, 5000, 8443, proto::UDP)];
    assert_eq!((f.packets_out, f.bytes_out, f.flagged), (0, 0, 1));
    assert_eq!(history_string(&f), "D");
    let totals = h.dp.range_totals(RANGE_IDS_READ).expect("range totals");
    assert_eq!(totals[RANGE_CAS4_B as usize], RangeStats::default());
}

/// The packets of one closed connection from 40000 to 443, local first.
fn closed_connection() -> Vec<(bool, cas_audit_tests::packet::Frame)> {
    let o = |flags| (true, Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, flags).build());
    let i = |flags| (false, Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, flags).build());
    vec![
        o(SYN),
        i(SYN | ACK),
        o(ACK),
        (
            true,
            Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, PSH | ACK)
                .payload(50)
                .build(),
        ),
        o(FIN | ACK),
        i(FIN | ACK),
        o(ACK),
    ]
}

#[test]
fn a_new_syn_on_an_ended_flow_starts_a_new_flow() {
    for hook in Hook::ALL {
        let mut h = harness!();
        let conn = closed_connection();
        for round in 0..3u64 {
            for (_, f) in &conn {
                h.run(hook, &f.bytes);
            }
            // Every round but the first handed the previous one over first.
            let recs = h.records();
            if round == 0 {
                assert!(recs.is_empty(), "{recs:?}");
            } else {
                assert_eq!(recs.len(), 1, "{hook:?} round {round}: {recs:?}");
                let RingRecord::Ended(e) = recs[0].clone() else {
                    panic!("{recs:?}")
                };
                assert_eq!(e.key, h.key(LOCAL4, CAS4_A, 40000, 443, proto::TCP));
                assert_eq!((e.stats.packets_out, e.stats.packets_in), (5, 2));
                assert_eq!(history_string(&e.stats), "ShADFf");
            }
        }
        let (_, st) = h.only_flow();
        assert_eq!(
            (st.packets_out, st.packets_in),
            (5, 2),
            "{hook:?}: its own counts"
        );
        let bytes_out: u64 = conn.iter().filter(|(o, _)| *o).map(|(_, f)| f.len()).sum();
        let bytes_in: u64 = conn.iter().filter(|(o, _)| !*o).map(|(_, f)| f.len()).sum();
        h.expect_counters(&[
            (Counter::Packets, 21),
            (Counter::Matched, 21),
            (Counter::FlowsCreated, 3),
            (Counter::FlowsReopened, 2),
        ]);
        h.expect_ranges(&[(
            RANGE_CAS4_A,
            RangeStats {
                packets_out: 15,
                bytes_out: 3 * bytes_out,
                packets_in: 6,
                bytes_in: 3 * bytes_in,
            },
        )]);
    }
}

#[test]
fn a_refused_attempt_then_a_new_one_are_two_flows_flagged_each() {
    let mut h = harness!();
    let syn = Pkt::tcp(LOCAL4, CAS4_B, 40000, 8443, SYN).build();
    let rst = Pkt::tcp(CAS4_B, LOCAL4, 8443, 40000, RST | ACK).build();
    for _ in 0..2 {
        h.run(Hook::TcEgress, &syn.bytes);
        h.run(Hook::TcIngress, &rst.bytes);
    }
    // A SYN retransmitted on an open attempt is the same flow.
    h.run(Hook::TcEgress, &syn.bytes);
    h.run(Hook::TcEgress, &syn.bytes);
    let kinds: Vec<&str> = h
        .records()
        .iter()
        .map(|r| match r {
            RingRecord::Flagged(_) => "flagged",
            RingRecord::Ended(_) => "ended",
            RingRecord::Payload(_) => "payload",
        })
        .collect();
    assert_eq!(kinds, ["flagged", "ended", "flagged", "ended", "flagged"]);
    let (_, st) = h.only_flow();
    assert_eq!((st.packets_out, st.packets_in), (2, 0));
    assert_eq!(history_string(&st), "S");
    h.expect_counters(&[
        (Counter::Packets, 6),
        (Counter::Matched, 6),
        (Counter::FlowsCreated, 3),
        (Counter::Events, 3),
        (Counter::FlowsReopened, 2),
    ]);
    // UDP never reopens: it expires.
    let mut h = harness!();
    let d = Pkt::udp(LOCAL4, CAS4_A, 5000, 443).payload(4).build();
    for _ in 0..3 {
        h.run(Hook::TcEgress, &d.bytes);
    }
    assert!(h.records().is_empty());
    h.expect_ranges(&[(RANGE_CAS4_A, range_out(3, 3 * d.len()))]);
}
