//! The kernel programs run on crafted packets through `BPF_PROG_TEST_RUN`:
//! truncated and malformed frames: each is passed,
//! counted as malformed exactly once and nothing else.
//!
//! The harness, the address plan and the frame builder are the test-bed
//! library's `cas_audit_tests::testrun` and `cas_audit_tests::packet`.
//! These tests need root (CAP_BPF + CAP_NET_ADMIN) and an agent built with
//! its eBPF object (`CAS_AUDIT_EBPF=require`); otherwise each one is
//! skipped with a message.

use aya::programs::ProgramError;
use aya::sys::SyscallError;
use cas_audit_common::Counter;
use cas_audit_tests::harness;
use cas_audit_tests::packet::{Ext, Pkt, ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, PROTO_GRE, SYN};
use cas_audit_tests::testrun::{
    cas_to_cas_tcp, cas_to_cas_tcp6, skb_test_run_refuses, Harness, Hook, CAS4_A, CAS4_B, CAS6_A,
    CAS6_B, LOCAL4, OTHER4,
};

/// Runs `frame` through every hook, each on a fresh datapath, and checks it
/// is passed and counted as malformed, exactly once, and nothing else.
fn expect_malformed(what: &str, frame: &[u8]) {
    let Some(mut h) = Harness::new(what) else {
        return;
    };
    for hook in Hook::ALL {
        // Each hook from a clean state, as from a fresh load.
        h.reset();
        if hook != Hook::Xdp && skb_test_run_refuses(frame) {
            match h.try_run(hook, frame, None) {
                Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                    if io_error.raw_os_error() == Some(libc::EINVAL) => {}
                other => panic!(
                    "{what} on {hook:?}: expected the skb test run to refuse \
                     the frame with EINVAL, got {other:?}"
                ),
            }
            h.expect_counters(&[]);
            h.expect_ranges(&[]);
            h.expect_no_flows();
            continue;
        }
        h.run(hook, frame);
        let c = h.dp.counters().expect("counters");
        assert_eq!(
            (c.get(Counter::Packets), c.get(Counter::Malformed)),
            (1, 1),
            "{what} on {hook:?}: {c:?}"
        );
        h.expect_counters(&[(Counter::Packets, 1), (Counter::Malformed, 1)]);
        h.expect_ranges(&[]);
        h.expect_no_flows();
        assert!(h.events().is_empty(), "{what} on {hook:?}: events");
    }
}

#[test]
fn truncated_ethernet_header() {
    // BPF_PROG_TEST_RUN refuses data shorter than an Ethernet header
    // (bpf_test_init: `user_size < ETH_HLEN` → EINVAL) for skb and XDP
    // programs alike, so a frame under 14 bytes cannot reach the programs
    // this way. Check that refusal (nothing may be counted); should a kernel
    // ever accept it, the programs must call it malformed.
    let mut h = harness!();
    let short = &Pkt::tcp(LOCAL4, CAS4_A, 1, 443, SYN).build().bytes[..13];
    let mut ran = 0;
    for hook in Hook::ALL {
        match h.try_run(hook, short, None) {
            Ok(rv) => {
                assert_eq!(rv, hook.pass());
                ran += 1;
            }
            Err(e) => eprintln!("{hook:?}: 13-byte frame refused by the kernel: {e:?}"),
        }
    }
    h.expect_counters(&[(Counter::Packets, ran), (Counter::Malformed, ran)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
}

#[test]
fn truncated_vlan_tag() {
    let tagged = cas_to_cas_tcp().tag(ETH_P_8021Q).build();
    // The tag's TCI is there, its EtherType is not.
    expect_malformed(
        "802.1Q tag cut after the TCI",
        &tagged.bytes[..ETH_HLEN + 2],
    );
    expect_malformed("802.1Q tag cut after the TPID", &tagged.bytes[..ETH_HLEN]);
    let qinq = cas_to_cas_tcp().tag(ETH_P_8021AD).tag(ETH_P_8021Q).build();
    expect_malformed("inner tag of QinQ cut", &qinq.bytes[..ETH_HLEN + 4 + 3]);
}

#[test]
fn truncated_ipv4_header() {
    let f = cas_to_cas_tcp().build();
    expect_malformed("no IPv4 header", &f.bytes[..ETH_HLEN]);
    expect_malformed("19-byte IPv4 header", &f.bytes[..ETH_HLEN + 19]);
    // Behind a tag, so that the TC programs see it too.
    let tagged = cas_to_cas_tcp().tag(ETH_P_8021Q).build();
    expect_malformed(
        "tagged, 12-byte IPv4 header",
        &tagged.bytes[..tagged.l3_off + 12],
    );
    expect_malformed(
        "tagged, 19-byte IPv4 header",
        &tagged.bytes[..tagged.l3_off + 19],
    );
    expect_malformed("tagged, no IPv4 header", &tagged.bytes[..tagged.l3_off]);
}

#[test]
fn ipv4_ihl_past_the_end() {
    // ihl 15 (60 bytes) with total length 60, but only 40 bytes of IP header
    // in the frame.
    let mut f = cas_to_cas_tcp().payload(0).build();
    f.bytes.truncate(f.l3_off + 40);
    f.bytes[f.l3_off] = 0x4f;
    f.set_u16(f.l3_off + 2, 60);
    f.fix_ipv4_checksum();
    expect_malformed("ihl 15, 40 bytes of header", &f.bytes);
    // ihl 15 and total length 40 (smaller than the header itself).
    f.set_u16(f.l3_off + 2, 40);
    f.fix_ipv4_checksum();
    expect_malformed("ihl 15, total length 40", &f.bytes);
}

#[test]
fn ipv4_ihl_below_five() {
    let mut f = cas_to_cas_tcp().build();
    f.bytes[f.l3_off] = 0x44;
    f.fix_ipv4_checksum();
    expect_malformed("ihl 4", &f.bytes);
}

#[test]
fn ipv4_total_length_past_the_frame() {
    let mut f = cas_to_cas_tcp().payload(20).build();
    let tot = f.bytes.len() - f.l3_off;
    f.set_u16(f.l3_off + 2, tot as u16 + 1);
    f.fix_ipv4_checksum();
    expect_malformed("total length one byte past the frame", &f.bytes);
}

#[test]
fn ipv4_ethertype_with_version_6() {
    let mut f = cas_to_cas_tcp().build();
    f.bytes[f.l3_off] = 0x65;
    expect_malformed("IPv4 EtherType, version 6", &f.bytes);
}

#[test]
fn ipv6_ethertype_with_version_4() {
    let mut f = cas_to_cas_tcp6().build();
    f.bytes[f.l3_off] = 0x40;
    expect_malformed("IPv6 EtherType, version 4", &f.bytes);
}

#[test]
fn truncated_ipv6_header() {
    let f = cas_to_cas_tcp6().build();
    expect_malformed("no IPv6 header", &f.bytes[..ETH_HLEN]);
    expect_malformed("39-byte IPv6 header", &f.bytes[..ETH_HLEN + 39]);
    // Behind a tag, so that the TC programs see it too.
    let tagged = cas_to_cas_tcp6().tag(ETH_P_8021Q).build();
    expect_malformed(
        "tagged, 39-byte IPv6 header",
        &tagged.bytes[..tagged.l3_off + 39],
    );
    expect_malformed("tagged, no IPv6 header", &tagged.bytes[..tagged.l3_off]);
}

#[test]
fn ipv6_payload_length_past_the_frame() {
    let mut f = cas_to_cas_tcp6().payload(10).build();
    let plen = f.bytes.len() - f.l3_off - 40;
    f.set_u16(f.l3_off + 4, plen as u16 + 1);
    expect_malformed("payload length one byte past the frame", &f.bytes);
}

/// A payload length of 0 names a jumbogram only with a Jumbo Payload option
/// (RFC 2675) whose length the frame holds; anything else is malformed,
/// not a packet running to the end of the frame.
#[test]
fn ipv6_payload_length_zero_without_a_jumbo_option() {
    let mut f = cas_to_cas_tcp6().payload(10).build();
    f.set_u16(f.l3_off + 4, 0);
    expect_malformed("payload length 0, no hop-by-hop header", &f.bytes);
    let mut f = cas_to_cas_tcp6().ext(Ext::HopByHop).payload(10).build();
    f.set_u16(f.l3_off + 4, 0);
    expect_malformed(
        "payload length 0, hop-by-hop header without Jumbo",
        &f.bytes,
    );
    // A Jumbo Payload option, but not a jumbogram: a length the frame does
    // not hold, and one under 65,536 (RFC 2675: an error).
    for (len, what) in [(70_000, "longer than the frame"), (60, "under 65,536")] {
        let mut f = cas_to_cas_tcp6().ext(Ext::Jumbo(len)).payload(10).build();
        f.set_u16(f.l3_off + 4, 0);
        expect_malformed(
            &format!("payload length 0, Jumbo length {len} ({what})"),
            &f.bytes,
        );
    }
}

#[test]
fn truncated_ipv6_extension_header() {
    for e in [Ext::HopByHop, Ext::Routing, Ext::DestOpts, Ext::Auth] {
        // Next-header and length bytes missing: one byte of the header left.
        let f = cas_to_cas_tcp6().ext(e).build();
        let cut = f.clone().truncated(f.l3_off + 40 + 1);
        expect_malformed(&format!("{e:?} cut to 1 byte"), &cut.bytes);
        // The header's own length is there but the header is cut, so the
        // transport header that should follow it is missing.
        let cut = f.clone().truncated(f.l3_off + 40 + 4);
        expect_malformed(&format!("{e:?} cut to 4 bytes"), &cut.bytes);
    }
    let frag = Ext::Fragment {
        offset: 0,
        more: true,
    };
    let f = cas_to_cas_tcp6().ext(frag).build();
    let cut = f.clone().truncated(f.l3_off + 40 + 3);
    expect_malformed("fragment header cut to 3 bytes", &cut.bytes);
    // A second extension header, cut, behind a complete first one.
    let f = cas_to_cas_tcp6()
        .ext(Ext::HopByHop)
        .ext(Ext::DestOpts)
        .build();
    let cut = f.clone().truncated(f.l3_off + 40 + 16 + 1);
    expect_malformed("second extension header cut", &cut.bytes);
}

#[test]
fn truncated_ipv6_extension_header_before_an_unparsed_protocol() {
    // Known to fail against the datapath as written: parse_ipv6 never
    // compares the end of the extension-header chain with the frame length,
    // so this counts as a matched packet, creates a flow and (protocol 59
    // and GRE having no allowed port) emits a flow event.
    // As above, but what follows the cut header has no header the datapath
    // parses (59, No Next Header; 47, GRE), so only the extension header's
    // own length can tell that the packet is cut.
    for proto in [59, PROTO_GRE] {
        let f = Pkt::raw(CAS6_B, CAS6_A, proto).ext(Ext::HopByHop).build();
        assert_eq!(f.l4_off, f.l3_off + 40 + 16);
        let cut = f.clone().truncated(f.l3_off + 40 + 8);
        expect_malformed(
            &format!("16-byte hop-by-hop header cut to 8 bytes, then protocol {proto}"),
            &cut.bytes,
        );
    }
}

#[test]
fn truncated_tcp_header() {
    let f = cas_to_cas_tcp().build();
    let cut = f.clone().truncated(f.l4_off + 19);
    expect_malformed("IPv4, 19-byte TCP header", &cut.bytes);
    let cut = f.clone().truncated(f.l4_off);
    expect_malformed("IPv4, no TCP header", &cut.bytes);
    let f = cas_to_cas_tcp6().ext(Ext::DestOpts).build();
    let cut = f.clone().truncated(f.l4_off + 12);
    expect_malformed("IPv6, 12-byte TCP header", &cut.bytes);
}

#[test]
fn tcp_data_offset_below_five() {
    for doff in [0u8, 4] {
        let mut f = cas_to_cas_tcp().build();
        f.bytes[f.l4_off + 12] = doff << 4;
        expect_malformed(&format!("IPv4 TCP data offset {doff}"), &f.bytes);
        let mut f = cas_to_cas_tcp6().build();
        f.bytes[f.l4_off + 12] = doff << 4;
        expect_malformed(&format!("IPv6 TCP data offset {doff}"), &f.bytes);
    }
}

#[test]
fn tcp_data_offset_past_the_end() {
    // Known to fail against the datapath as written: parse_l4 checks only
    // that 20 bytes of TCP exist, so this counts as a matched packet and
    // creates a flow (and, for super-packets, inflates the per-segment
    // header bytes with hdr_end past the frame).
    // Data offset 15 (60 bytes) but only the 20-byte fixed header is in the
    // packet: the TCP header is cut short, like an IPv4 header whose ihl
    // points past the end, which the datapath does call malformed.
    let mut f = cas_to_cas_tcp().build();
    f.bytes[f.l4_off + 12] = 15 << 4;
    expect_malformed("IPv4 TCP data offset 15, 20 bytes of TCP", &f.bytes);
    // Data offset 6 (24 bytes) with 22 bytes of TCP left in the packet.
    let f = cas_to_cas_tcp6().payload(2).build();
    let mut f = f.clone().truncated(f.l4_end + 2);
    f.bytes[f.l4_off + 12] = 6 << 4;
    expect_malformed("IPv6 TCP data offset 6, 22 bytes of TCP", &f.bytes);
}

#[test]
fn truncated_udp_header() {
    let f = Pkt::udp(CAS4_A, CAS4_B, 40000, 443).payload(10).build();
    let cut = f.clone().truncated(f.l4_off + 7);
    expect_malformed("IPv4, 7-byte UDP header", &cut.bytes);
    let f = Pkt::udp(CAS6_B, CAS6_A, 40000, 443).payload(10).build();
    let cut = f.clone().truncated(f.l4_off + 4);
    expect_malformed("IPv6, 4-byte UDP header", &cut.bytes);
}

#[test]
fn truncated_icmp_header() {
    let f = Pkt::echo(CAS4_A, CAS4_B).build();
    let cut = f.clone().truncated(f.l4_off + 3);
    expect_malformed("3-byte ICMP header", &cut.bytes);
    let f = Pkt::echo(CAS6_B, CAS6_A).build();
    let cut = f.clone().truncated(f.l4_off + 2);
    expect_malformed("2-byte ICMPv6 header", &cut.bytes);
}

#[test]
fn truncated_transport_of_non_cas_traffic_is_not_inspected() {
    // The transport header is parsed only for CAS traffic; a cut TCP header
    // between two other hosts is just a packet.
    let mut h = harness!();
    let f = Pkt::tcp(LOCAL4, OTHER4, 40000, 443, SYN).build();
    let cut = f.clone().truncated(f.l4_off + 10);
    for hook in Hook::ALL {
        h.run(hook, &cut.bytes);
    }
    h.expect_counters(&[(Counter::Packets, 3)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
}
