//! The kernel programs run on crafted packets through `BPF_PROG_TEST_RUN`:
//! hits and misses, directions, TCP flags and the
//! initiator, GSO/GRO super-packets, flow history and RST TTL.
//!
//! The harness, the address plan and the frame builder are the test-bed
//! library's `cas_audit_tests::testrun` and `cas_audit_tests::packet`.
//! These tests need root (CAP_BPF + CAP_NET_ADMIN) and an agent built with
//! its eBPF object (`CAS_AUDIT_EBPF=require`); otherwise each one is
//! skipped with a message.

use std::net::{Ipv4Addr, Ipv6Addr};

use cas_audit::flow::evidence::history_string;
use cas_audit::host::clock::monotonic_ns;
use cas_audit_common::{
    family, history, initiator, proto, tcp_flags, Counter, Direction, FlowStats, RangeStats,
};
use cas_audit_tests::harness;
use cas_audit_tests::packet::{Ext, Pkt, ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};
use cas_audit_tests::testrun::{
    flow_stats, range_in, range_out, Harness, Hook, CAS4_A, CAS4_B, CAS6_A, CAS6_B, LOCAL4, LOCAL6,
    NEAR_CAS4_A, NEAR_CAS4_B, OTHER4, OTHER6, RANGE_CAS4_A, RANGE_CAS4_B, RANGE_CAS6_A,
    RANGE_CAS6_B,
};

// ---------------------------------------------------------------------------
// Hits and misses
// ---------------------------------------------------------------------------

#[test]
fn ipv4_egress_hit() {
    let mut h = harness!();
    let f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN)
        .tcp_options(20)
        .build();
    h.run(Hook::TcEgress, &f.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(RANGE_CAS4_A, range_out(1, f.len()))]);

    let (key, st) = h.only_flow();
    assert_eq!(key, h.key(LOCAL4, CAS4_A, 40000, 443, proto::TCP));
    assert_eq!(
        st.ifindexes,
        [h.lo, 0, 0, 0],
        "test runs happen on the loopback device"
    );
    let mut want = flow_stats(Direction::Out, RANGE_CAS4_A, 1, f.len(), SYN);
    want.initiator = initiator::LOCAL;
    h.expect_flows(&[(key, want)]);
    assert_eq!(st.first_seen_ns, st.last_seen_ns, "one packet");
    assert!(h.events().is_empty());
}

#[test]
fn ipv4_egress_hit_in_a_wider_prefix() {
    let mut h = harness!();
    let f = Pkt::udp(LOCAL4, CAS4_B, 5353, 443).payload(30).build();
    h.run(Hook::TcEgress, &f.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(RANGE_CAS4_B, range_out(1, f.len()))]);
    let key = h.key(LOCAL4, CAS4_B, 5353, 443, proto::UDP);
    h.expect_flows(&[(key, flow_stats(Direction::Out, RANGE_CAS4_B, 1, f.len(), 0))]);
}

#[test]
fn ipv4_egress_miss() {
    let mut h = harness!();
    for other in [OTHER4, NEAR_CAS4_A, NEAR_CAS4_B] {
        // Neither address is CAS, whichever way the packet goes.
        h.run(
            Hook::TcEgress,
            &Pkt::tcp(LOCAL4, other, 40000, 443, SYN).build().bytes,
        );
        h.run(
            Hook::TcEgress,
            &Pkt::tcp(other, LOCAL4, 443, 40000, ACK).build().bytes,
        );
    }
    h.expect_counters(&[(Counter::Packets, 6)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
    assert!(h.events().is_empty());
}

#[test]
fn ipv4_ingress_miss() {
    let mut h = harness!();
    for hook in Hook::INGRESS {
        for other in [OTHER4, NEAR_CAS4_A, NEAR_CAS4_B] {
            h.run(
                hook,
                &Pkt::tcp(other, LOCAL4, 443, 40000, ACK).build().bytes,
            );
            h.run(
                hook,
                &Pkt::tcp(LOCAL4, other, 40000, 443, SYN).build().bytes,
            );
        }
    }
    h.expect_counters(&[(Counter::Packets, 12)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
}

fn ingress_hit(h: &mut Harness, hook: Hook) {
    let f = Pkt::tcp(CAS4_B, LOCAL4, 443, 40000, PSH | ACK)
        .payload(100)
        .build();
    h.run(hook, &f.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(RANGE_CAS4_B, range_in(1, f.len()))]);
    let (_, st) = h.only_flow();
    assert_eq!(
        st.ifindexes[0], h.lo,
        "{hook:?}: test runs use the loopback"
    );
    // Normalised: local is the destination of an arriving packet.
    let want_key = h.key(LOCAL4, CAS4_B, 40000, 443, proto::TCP);
    h.expect_flows(&[(
        want_key,
        flow_stats(Direction::In, RANGE_CAS4_B, 1, f.len(), PSH | ACK),
    )]);
    assert!(h.events().is_empty());
}

#[test]
fn ipv4_tc_ingress_hit() {
    let mut h = harness!();
    ingress_hit(&mut h, Hook::TcIngress);
}

#[test]
fn ipv4_xdp_ingress_hit() {
    let mut h = harness!();
    ingress_hit(&mut h, Hook::Xdp);
}

#[test]
fn both_directions_share_one_flow() {
    let mut h = harness!();
    let syn = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN).build();
    let syn_ack = Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, SYN | ACK).build();
    let ack = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, ACK).build();
    let data_out = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, PSH | ACK)
        .payload(517)
        .build();
    let data_in = Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, PSH | ACK)
        .payload(1400)
        .build();
    h.run(Hook::TcEgress, &syn.bytes);
    h.run(Hook::Xdp, &syn_ack.bytes);
    h.run(Hook::TcEgress, &ack.bytes);
    h.run(Hook::TcEgress, &data_out.bytes);
    h.run(Hook::TcIngress, &data_in.bytes);

    let out_bytes = syn.len() + ack.len() + data_out.len();
    let in_bytes = syn_ack.len() + data_in.len();
    h.expect_counters(&[
        (Counter::Packets, 5),
        (Counter::Matched, 5),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(
        RANGE_CAS4_A,
        RangeStats {
            packets_out: 3,
            bytes_out: out_bytes,
            packets_in: 2,
            bytes_in: in_bytes,
        },
    )]);
    let key = h.key(LOCAL4, CAS4_A, 40000, 443, proto::TCP);
    h.expect_flows(&[(
        key,
        FlowStats {
            packets_out: 3,
            bytes_out: out_bytes,
            packets_in: 2,
            bytes_in: in_bytes,
            range_id: RANGE_CAS4_A,
            tcp_flags_out: (SYN | ACK | PSH).into(),
            tcp_flags_in: (SYN | ACK | PSH).into(),
            initiator: initiator::LOCAL,
            first_dir: Direction::Out as u8,
            ..FlowStats::default()
        },
    )]);
}

#[test]
fn ipv6_hit_both_directions() {
    let mut h = harness!();
    let out = Pkt::tcp(LOCAL6, CAS6_A, 50000, 443, SYN).build();
    let back_xdp = Pkt::tcp(CAS6_A, LOCAL6, 443, 50000, SYN | ACK).build();
    let back_tc = Pkt::tcp(CAS6_A, LOCAL6, 443, 50000, PSH | ACK)
        .payload(64)
        .build();
    h.run(Hook::TcEgress, &out.bytes);
    h.run(Hook::Xdp, &back_xdp.bytes);
    h.run(Hook::TcIngress, &back_tc.bytes);
    // A second conversation, to range 3, that starts from the remote side.
    let udp_in = Pkt::udp(CAS6_B, LOCAL6, 443, 60000).payload(10).build();
    h.run(Hook::TcIngress, &udp_in.bytes);

    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 4),
        (Counter::FlowsCreated, 2),
    ]);
    h.expect_ranges(&[
        (
            RANGE_CAS6_A,
            RangeStats {
                packets_out: 1,
                bytes_out: out.len(),
                packets_in: 2,
                bytes_in: back_xdp.len() + back_tc.len(),
            },
        ),
        (RANGE_CAS6_B, range_in(1, udp_in.len())),
    ]);
    let tcp_key = h.key(LOCAL6, CAS6_A, 50000, 443, proto::TCP);
    assert_eq!(tcp_key.family, family::V6);
    let udp_key = h.key(LOCAL6, CAS6_B, 60000, 443, proto::UDP);
    h.expect_flows(&[
        (
            tcp_key,
            FlowStats {
                packets_out: 1,
                bytes_out: out.len(),
                packets_in: 2,
                bytes_in: back_xdp.len() + back_tc.len(),
                range_id: RANGE_CAS6_A,
                tcp_flags_out: SYN.into(),
                tcp_flags_in: (SYN | ACK | PSH).into(),
                initiator: initiator::LOCAL,
                first_dir: Direction::Out as u8,
                ..FlowStats::default()
            },
        ),
        (
            udp_key,
            flow_stats(Direction::In, RANGE_CAS6_B, 1, udp_in.len(), 0),
        ),
    ]);
}

#[test]
fn ipv6_miss_both_directions() {
    let mut h = harness!();
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(LOCAL6, OTHER6, 50000, 443, SYN).build().bytes,
    );
    // Neither address is CAS, whichever hook sees it.
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(OTHER6, LOCAL6, 443, 50000, ACK).build().bytes,
    );
    for hook in Hook::INGRESS {
        h.run(
            hook,
            &Pkt::tcp(OTHER6, LOCAL6, 443, 50000, ACK).build().bytes,
        );
        h.run(
            hook,
            &Pkt::tcp(LOCAL6, OTHER6, 50000, 443, SYN).build().bytes,
        );
    }
    h.expect_counters(&[(Counter::Packets, 6)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
}

#[test]
fn ethernet_padding_counts_as_frame_bytes() {
    let mut h = harness!();
    // A bare ACK is 54 bytes; on the wire it is padded to 60. The IP total
    // length stays 40: the padding is legal and counted as frame bytes.
    let mut f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, ACK).build();
    assert_eq!(f.len(), 54);
    f.bytes.resize(60, 0);
    h.run(Hook::TcEgress, &f.bytes);
    h.run(
        Hook::Xdp,
        &Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, ACK).build().bytes,
    );
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(
        RANGE_CAS4_A,
        RangeStats {
            packets_out: 1,
            bytes_out: 60,
            packets_in: 1,
            bytes_in: 54,
        },
    )]);
}

/// The prefilter over the top 16 address bits must pass every address of a
/// prefix shorter than /16 (and stop those just outside it) so that the
/// trie still decides.
#[test]
fn prefilter_passes_every_address_of_a_wide_prefix() {
    let Some(mut h) = Harness::with_ranges(
        "prefilter_passes_every_address_of_a_wide_prefix",
        &["10.0.0.0/8", "2000::/12"],
    ) else {
        return;
    };
    let v4 = |a: [u8; 4]| Pkt::tcp(LOCAL4, Ipv4Addr::from(a), 40000, 443, SYN).build();
    // The local IPv6 address of the plan is inside 2000::/12: use one outside.
    let local6: Ipv6Addr = "fd00::2".parse().unwrap();
    let v6 = |a: &str| Pkt::tcp(local6, a.parse::<Ipv6Addr>().unwrap(), 40000, 443, SYN).build();
    let hits = [
        v4([10, 0, 0, 1]),
        v4([10, 128, 7, 7]),
        v4([10, 255, 255, 254]),
        v6("2000::1"),
        v6("2007:1234::1"),
        v6("200f:ffff:ffff::1"),
    ];
    let misses = [
        v4([9, 255, 255, 255]),
        v4([11, 0, 0, 1]),
        v6("1fff:ffff::1"),
        v6("2010::1"),
    ];
    for f in hits.iter().chain(misses.iter()) {
        h.run(Hook::TcEgress, &f.bytes);
    }
    h.expect_counters(&[
        (Counter::Packets, 10),
        (Counter::Matched, 6),
        (Counter::FlowsCreated, 6),
    ]);
    assert_eq!(h.flows().len(), 6);
}

// ---------------------------------------------------------------------------
// TCP flags and the initiator
// ---------------------------------------------------------------------------

#[test]
fn syn_from_local_sets_initiator_local() {
    let mut h = harness!();
    let f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN).build();
    h.run(Hook::TcEgress, &f.bytes);
    let (_, st) = h.only_flow();
    assert_eq!(st.initiator, initiator::LOCAL);
    assert_eq!(st.first_dir, Direction::Out as u8);
    // A SYN from the other side later does not change it.
    h.run(
        Hook::Xdp,
        &Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, SYN).build().bytes,
    );
    let (_, st) = h.only_flow();
    assert_eq!(st.initiator, initiator::LOCAL);
    assert_eq!(st.tcp_flags_in, tcp_flags::SYN);
}

#[test]
fn syn_from_remote_sets_initiator_remote() {
    let mut h = harness!();
    for hook in Hook::INGRESS {
        let port = if hook == Hook::Xdp { 50001 } else { 50000 };
        h.run(
            hook,
            &Pkt::tcp(CAS6_A, LOCAL6, port, 11344, SYN).build().bytes,
        );
        let st =
            h.dp.flow(&h.key(LOCAL6, CAS6_A, 11344, port, proto::TCP))
                .expect("flow created");
        assert_eq!(st.initiator, initiator::REMOTE, "{hook:?}");
        assert_eq!(st.first_dir, Direction::In as u8, "{hook:?}");
        assert_eq!(st.tcp_flags_in, tcp_flags::SYN, "{hook:?}");
        assert_eq!(st.tcp_flags_out, 0, "{hook:?}");
    }
}

#[test]
fn syn_ack_alone_leaves_initiator_unknown() {
    let mut h = harness!();
    let syn_ack = Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, SYN | ACK).build();
    h.run(Hook::Xdp, &syn_ack.bytes);
    let ack = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, ACK).build();
    h.run(Hook::TcEgress, &ack.bytes);
    let key = h.key(LOCAL4, CAS4_A, 40000, 443, proto::TCP);
    h.expect_flows(&[(
        key,
        FlowStats {
            packets_out: 1,
            bytes_out: ack.len(),
            packets_in: 1,
            bytes_in: syn_ack.len(),
            range_id: RANGE_CAS4_A,
            tcp_flags_out: ACK.into(),
            tcp_flags_in: (SYN | ACK).into(),
            initiator: initiator::UNKNOWN,
            first_dir: Direction::In as u8,
            ..FlowStats::default()
        },
    )]);
    // A SYN-ACK from the local side does not set it either.
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN | ACK)
            .build()
            .bytes,
    );
    assert_eq!(h.only_flow().1.initiator, initiator::UNKNOWN);
    // The first bare SYN seen on an existing flow does.
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN).build().bytes,
    );
    assert_eq!(h.only_flow().1.initiator, initiator::LOCAL);
    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 4),
        (Counter::FlowsCreated, 1),
    ]);
}

#[test]
fn tcp_flag_unions_are_exact() {
    let mut h = harness!();
    let out = [SYN, ACK, PSH | ACK, URG | ACK, RST];
    let inn = [SYN | ACK, ECE | ACK, CWR | ACK, FIN | ACK];
    let (mut out_bytes, mut in_bytes) = (0, 0);
    for (i, flags) in out.iter().enumerate() {
        let f = Pkt::tcp(LOCAL6, CAS6_A, 40000, 443, *flags)
            .payload(i * 10)
            .build();
        h.run(Hook::TcEgress, &f.bytes);
        out_bytes += f.len();
        if let Some(flags) = inn.get(i) {
            let f = Pkt::tcp(CAS6_A, LOCAL6, 443, 40000, *flags)
                .payload(i * 7)
                .build();
            h.run(
                if i % 2 == 0 {
                    Hook::Xdp
                } else {
                    Hook::TcIngress
                },
                &f.bytes,
            );
            in_bytes += f.len();
        }
    }
    let key = h.key(LOCAL6, CAS6_A, 40000, 443, proto::TCP);
    h.expect_flows(&[(
        key,
        FlowStats {
            packets_out: 5,
            bytes_out: out_bytes,
            packets_in: 4,
            bytes_in: in_bytes,
            range_id: RANGE_CAS6_A,
            tcp_flags_out: tcp_flags::SYN
                | tcp_flags::ACK
                | tcp_flags::PSH
                | tcp_flags::URG
                | tcp_flags::RST,
            tcp_flags_in: tcp_flags::SYN
                | tcp_flags::ACK
                | tcp_flags::ECE
                | tcp_flags::CWR
                | tcp_flags::FIN,
            initiator: initiator::LOCAL,
            first_dir: Direction::Out as u8,
            ..FlowStats::default()
        },
    )]);
    h.expect_ranges(&[(
        RANGE_CAS6_A,
        RangeStats {
            packets_out: 5,
            bytes_out: out_bytes,
            packets_in: 4,
            bytes_in: in_bytes,
        },
    )]);
}

#[test]
fn udp_flows_have_no_flags_and_no_initiator() {
    let mut h = harness!();
    h.run(
        Hook::TcEgress,
        &Pkt::udp(LOCAL4, CAS4_A, 40000, 443)
            .payload(2)
            .build()
            .bytes,
    );
    let (_, st) = h.only_flow();
    assert_eq!((st.initiator, st.tcp_flags_out, st.tcp_flags_in), (0, 0, 0));
}

// ---------------------------------------------------------------------------
// GSO / GRO super-packets
// ---------------------------------------------------------------------------

#[test]
fn gso_segments_on_tc_egress() {
    let mut h = harness!();
    // 4 segments of 800 bytes behind 14 + 20 + 32 bytes of headers (test
    // runs take at most a page of data, so the super-packet stays small).
    let f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, PSH | ACK)
        .tcp_options(12)
        .payload(3200)
        .build();
    let hdr = f.l4_end as u64;
    assert_eq!(hdr, 14 + 20 + 32);
    h.run_gso(Hook::TcEgress, &f.bytes, 4);
    let bytes = f.len() + 3 * hdr;
    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 4),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(RANGE_CAS4_A, range_out(4, bytes))]);
    let key = h.key(LOCAL4, CAS4_A, 40000, 443, proto::TCP);
    h.expect_flows(&[(
        key,
        flow_stats(Direction::Out, RANGE_CAS4_A, 4, bytes, PSH | ACK),
    )]);
}

#[test]
fn gro_segments_on_tc_ingress_ipv6_with_extension_header() {
    let mut h = harness!();
    let f = Pkt::tcp(CAS6_A, LOCAL6, 443, 40000, ACK)
        .ext(Ext::DestOpts)
        .payload(2800)
        .build();
    let hdr = f.l4_end as u64;
    assert_eq!(hdr, 14 + 40 + 8 + 20);
    h.run_gso(Hook::TcIngress, &f.bytes, 2);
    let bytes = f.len() + hdr;
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(RANGE_CAS6_A, range_in(2, bytes))]);
    h.expect_flows(&[(
        h.key(LOCAL6, CAS6_A, 40000, 443, proto::TCP),
        flow_stats(Direction::In, RANGE_CAS6_A, 2, bytes, ACK),
    )]);
}

#[test]
fn gso_segs_one_is_a_plain_packet() {
    let mut h = harness!();
    let f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, ACK)
        .payload(10)
        .build();
    h.run_gso(Hook::TcEgress, &f.bytes, 1);
    h.expect_ranges(&[(RANGE_CAS4_A, range_out(1, f.len()))]);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
    ]);
}

#[test]
fn big_tcp_super_packet_with_zero_total_length() {
    // BIG TCP (IPv4) super-packets carry total length 0.
    let mut h = harness!();
    let mut f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, ACK)
        .payload(3000)
        .build();
    f.set_u16(f.l3_off + 2, 0);
    f.fix_ipv4_checksum();
    h.run_gso(Hook::TcEgress, &f.bytes, 3);
    let bytes = f.len() + 2 * f.l4_end as u64;
    h.expect_counters(&[
        (Counter::Packets, 3),
        (Counter::Matched, 3),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(RANGE_CAS4_A, range_out(3, bytes))]);
    // The same packet without GSO is malformed.
    h.run(Hook::TcEgress, &f.bytes);
    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 3),
        (Counter::FlowsCreated, 1),
        (Counter::Malformed, 1),
    ]);
}

#[test]
fn gso_malformed_counts_every_segment() {
    // Total length is not checked for super-packets, the header length is.
    let mut h = harness!();
    let mut f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, ACK).build();
    f.bytes.truncate(f.l3_off + 40);
    f.bytes[f.l3_off] = 0x4f;
    f.fix_ipv4_checksum();
    h.run_gso(Hook::TcEgress, &f.bytes, 5);
    h.expect_counters(&[(Counter::Packets, 5), (Counter::Malformed, 5)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
}

// ---------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------

/// Runs `hook` on `frame` and returns CLOCK_MONOTONIC just before and just
/// after: the window the program's clock reading must fall in.
fn run_timed(h: &mut Harness, hook: Hook, frame: &[u8]) -> (u64, u64) {
    let before = monotonic_ns();
    h.run(hook, frame);
    (before, monotonic_ns())
}

/// A TCP connection shorter than a clock tick lasts from its SYN to its
/// last FIN or RST exactly (the coarse clock, which lags by up to a tick,
/// is only used for the packets in between).
#[test]
fn a_short_connection_lasts_from_its_syn_to_its_last_fin_or_rst() {
    let mut h = harness!();
    let pause = std::time::Duration::from_millis(2);
    for last in [FIN | ACK, RST | ACK] {
        h.reset();
        let out = |flags| Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, flags).bytes();
        let syn = run_timed(&mut h, Hook::TcEgress, &out(SYN));
        std::thread::sleep(pause);
        let inn = Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, SYN | ACK).bytes();
        h.run(Hook::Xdp, &inn);
        std::thread::sleep(pause);
        h.run(Hook::TcEgress, &out(ACK | PSH));
        std::thread::sleep(pause);
        let end = run_timed(&mut h, Hook::TcEgress, &out(last));
        let st = h.only_flow().1;
        assert!(
            (syn.0..=syn.1).contains(&st.first_seen_ns),
            "first_seen {} outside the SYN's run {syn:?}",
            st.first_seen_ns
        );
        assert!(
            (end.0..=end.1).contains(&st.last_seen_ns),
            "flags {last:#x}: last_seen {} outside the last packet's run {end:?} (lag {} ns)",
            st.last_seen_ns,
            end.0.saturating_sub(st.last_seen_ns)
        );
    }
}

// ---------------------------------------------------------------------------
// Flow history and RST TTL
// ---------------------------------------------------------------------------

#[test]
fn history_follows_a_connection_on_both_hooks() {
    for hook in Hook::INGRESS {
        let mut h = harness!();
        let out = |flags, n| {
            Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, flags)
                .payload(n)
                .build()
        };
        let inn = |flags, n| {
            Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, flags)
                .payload(n)
                .build()
        };
        let key = h.key(LOCAL4, CAS4_A, 40000, 443, proto::TCP);
        let mut seen = Vec::new();
        for (dir_out, f) in [
            (true, out(SYN, 0)),
            (true, out(SYN, 0)), // a retry adds nothing
            (false, inn(SYN | ACK, 0)),
            (true, out(ACK, 0)),
            (true, out(ACK | PSH, 100)),
            (false, inn(ACK, 0)),
            (false, inn(ACK | PSH, 300)),
            (true, out(FIN | ACK, 0)),
            (false, inn(FIN | ACK, 0)),
            (true, out(ACK, 0)),
        ] {
            h.run(if dir_out { Hook::TcEgress } else { hook }, &f.bytes);
            seen.push(history_string(&h.flows()[&key]));
        }
        assert_eq!(
            seen,
            ["S", "S", "Sh", "ShA", "ShAD", "ShADa", "ShADad", "ShADadF", "ShADadFf", "ShADadFf"],
            "{hook:?}"
        );
        let st = h.flows()[&key];
        let k = history::KINDS;
        assert_eq!(
            st.history_mask,
            history::SYN
                | history::ACK
                | history::DATA
                | history::FIN
                | (history::SYN_ACK | history::ACK | history::DATA | history::FIN) << k
        );
        assert_eq!(st.rst_ttl, 0);
    }
}

#[test]
fn a_flow_opened_by_the_remote_side_has_it_as_originator() {
    let mut h = harness!();
    h.run(
        Hook::Xdp,
        &Pkt::tcp(CAS4_A, LOCAL4, 50000, 11344, SYN).build().bytes,
    );
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(LOCAL4, CAS4_A, 11344, 50000, RST | ACK)
            .ttl(61)
            .build()
            .bytes,
    );
    let st = h.only_flow().1;
    assert_eq!(history_string(&st), "Sr");
    // The RST went out: not a remote RST, no TTL recorded.
    assert_eq!(st.rst_ttl, 0);
}

#[test]
fn the_first_remote_rst_records_its_ttl() {
    for hook in Hook::INGRESS {
        let mut h = harness!();
        h.run(
            Hook::TcEgress,
            &Pkt::tcp(LOCAL6, CAS6_A, 40000, 443, SYN).build().bytes,
        );
        h.run(
            hook,
            &Pkt::tcp(CAS6_A, LOCAL6, 443, 40000, RST | ACK)
                .ttl(57)
                .build()
                .bytes,
        );
        h.run(
            hook,
            &Pkt::tcp(CAS6_A, LOCAL6, 443, 40000, RST | ACK)
                .ttl(64)
                .build()
                .bytes,
        );
        let st = h.only_flow().1;
        assert_eq!(
            (history_string(&st).as_str(), st.rst_ttl),
            ("Sr", 57),
            "{hook:?}"
        );
    }
}

#[test]
fn udp_history_counts_datagrams_each_way() {
    let mut h = harness!();
    h.run(
        Hook::TcEgress,
        &Pkt::udp(LOCAL4, CAS4_A, 40000, 443)
            .payload(10)
            .build()
            .bytes,
    );
    assert_eq!(history_string(&h.only_flow().1), "D");
    h.run(
        Hook::Xdp,
        &Pkt::udp(CAS4_A, LOCAL4, 443, 40000)
            .payload(10)
            .build()
            .bytes,
    );
    assert_eq!(history_string(&h.only_flow().1), "Dd");
}
