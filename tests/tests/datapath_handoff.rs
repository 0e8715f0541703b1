//! The kernel programs run on crafted packets through `BPF_PROG_TEST_RUN`:
//! which packets between two non-CAS hosts are handed to the agent on the
//! payload ring (DNS responses, ClientHellos) when `run` learns names.
//!
//! Such packets take the fast path first (`quick_handoff`), which reads the
//! TCP payload's first byte at the offset the data offset gives: each case
//! runs with no TCP options and with options (12 bytes, as timestamps
//! take; 40, the most TCP allows), IPv4 and IPv6, on every hook. A fast
//! path that reads the wrong byte keeps a ClientHello from the agent.
//!
//! These tests need root (CAP_BPF + CAP_NET_ADMIN) and an agent built with
//! its eBPF object (`CAS_AUDIT_EBPF=require`); otherwise each one is
//! skipped with a message.

use std::net::IpAddr;

use cas_audit_common::{family, payload_kind, Counter};
use cas_audit_tests::harness;
use cas_audit_tests::packet::{Pkt, ACK, PSH};
use cas_audit_tests::testrun::{Hook, LOCAL4, LOCAL6, OTHER4, OTHER6};

/// TCP option lengths tried: none, timestamps (12), the most (40).
const OPTIONS: [usize; 3] = [0, 12, 40];

/// The first bytes of a TLS record holding a ClientHello (RFC 8446 section
/// 5.1: handshake 22, legacy version 3.1, length 512; section 4: type 1),
/// followed by `len - 6` bytes of its body.
fn tls_record(kind: u8, handshake: u8, len: usize) -> Vec<u8> {
    let mut b = vec![kind, 3, 1, 2, 0, handshake];
    b.extend((6..len).map(|i| i as u8));
    b
}

/// A TCP segment from `LOCAL` to port 443 of a non-CAS host carrying
/// `payload`, with `options` bytes of TCP options.
fn to_443(v6: bool, options: usize, payload: Vec<u8>) -> Vec<u8> {
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        (LOCAL6.into(), OTHER6.into())
    } else {
        (LOCAL4.into(), OTHER4.into())
    };
    Pkt::tcp(src, dst, 40_000, 443, ACK | PSH)
        .tcp_options(options)
        .data(payload)
        .bytes()
}

#[test]
fn a_client_hello_to_443_is_handed_over_whatever_its_tcp_options() {
    let mut h = harness!(with_handoff);
    let hello = tls_record(22, 1, 517);
    for v6 in [false, true] {
        for options in OPTIONS {
            for hook in Hook::ALL {
                let what = format!("v6 {v6}, {options} option bytes, {hook:?}");
                h.reset();
                h.run(hook, &to_443(v6, options, hello.clone()));
                h.expect_counters(&[(Counter::Packets, 1), (Counter::ClientHellos, 1)]);
                let p = h.payloads();
                assert_eq!(p.len(), 1, "{what}: {p:?}");
                assert_eq!(p[0].hdr.what, payload_kind::TLS_HELLO, "{what}");
                assert_eq!(
                    p[0].hdr.family,
                    if v6 { family::V6 } else { family::V4 },
                    "{what}"
                );
                assert_eq!((p[0].hdr.src_port, p[0].hdr.dst_port), (40_000, 443));
                assert_eq!(p[0].hdr.len, 517, "{what}");
                assert_eq!(p[0].data[..6], hello[..6], "{what}");
                h.expect_no_flows();
            }
        }
    }
}

#[test]
fn other_segments_to_443_are_not_handed_over() {
    let mut h = harness!(with_handoff);
    let cases = [
        ("application data", tls_record(23, 0, 517)),
        (
            "a handshake record that is not a ClientHello",
            tls_record(22, 2, 90),
        ),
        ("one byte of data", vec![22]),
        ("no payload", Vec::new()),
    ];
    for (name, payload) in cases {
        for v6 in [false, true] {
            for options in OPTIONS {
                for hook in Hook::ALL {
                    h.reset();
                    h.run(hook, &to_443(v6, options, payload.clone()));
                    h.expect_counters(&[(Counter::Packets, 1)]);
                    let p = h.payloads();
                    assert!(
                        p.is_empty(),
                        "{name}, v6 {v6}, {options} option bytes, {hook:?}: {p:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_client_hello_to_another_port_is_not_handed_over() {
    let mut h = harness!(with_handoff);
    for hook in Hook::ALL {
        h.reset();
        let f = Pkt::tcp(LOCAL4, OTHER4, 40_000, 8443, ACK | PSH)
            .data(tls_record(22, 1, 517))
            .bytes();
        h.run(hook, &f);
        h.expect_counters(&[(Counter::Packets, 1)]);
        assert!(h.payloads().is_empty(), "{hook:?}");
    }
}

#[test]
fn dns_responses_are_handed_over_and_queries_are_not() {
    let mut h = harness!(with_handoff);
    for hook in Hook::ALL {
        h.reset();
        // A response (from port 53) over UDP, one over TCP, and a query.
        h.run(
            hook,
            &Pkt::udp(OTHER4, LOCAL4, 53, 40_000).payload(120).bytes(),
        );
        h.run(
            hook,
            &Pkt::tcp(OTHER6, LOCAL6, 53, 40_001, ACK | PSH)
                .tcp_options(12)
                .payload(80)
                .bytes(),
        );
        h.run(
            hook,
            &Pkt::udp(LOCAL4, OTHER4, 40_002, 53).payload(40).bytes(),
        );
        h.expect_counters(&[(Counter::Packets, 3), (Counter::DnsResponses, 2)]);
        let p = h.payloads();
        let got: Vec<(u8, u16, u32)> = p
            .iter()
            .map(|p| (p.hdr.what, p.hdr.dst_port, p.hdr.len))
            .collect();
        assert_eq!(
            got,
            [
                (payload_kind::DNS_UDP, 40_000, 120),
                (payload_kind::DNS_TCP, 40_001, 80)
            ],
            "{hook:?}"
        );
    }
}
