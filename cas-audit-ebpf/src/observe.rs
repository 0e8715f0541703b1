//! The per-packet pipeline every program runs: the fast path for plain
//! packets, the full parse, ICMP errors, the lookup of the remote address,
//! and counting per range and per flow. Every packet is passed untouched.

use cas_audit_common::{proto, Counter, Direction};

use crate::{
    count::{count, count_match},
    flow::observe_flow,
    icmp,
    lookup::{lookup_range, prefilter_passes, prefilter_passes_addr, Lookup},
    packet::Packet,
    parse::{parse_l3, parse_l4, parse_quoted, quick_remote, L3Status, Quick},
};

/// Looks at one packet travelling in `dir` (egress: its destination is the
/// remote side; ingress: its source).
#[inline(always)]
pub fn observe<P: Packet>(pkt: &P, dir: Direction) {
    let segs = pkt.segments();
    count(Counter::Packets, segs as u64);
    // Fast path for the common packet that is not CAS traffic.
    if segs == 1 {
        if let Quick::Remote { family, hi16 } = quick_remote(pkt, dir == Direction::Out) {
            if !prefilter_passes(family, hi16) {
                return;
            }
        }
    }
    let l3 = parse_l3(pkt, segs > 1);
    match l3.status {
        L3Status::Malformed => return count(Counter::Malformed, segs as u64),
        L3Status::NotIp => return count(Counter::NotIp, segs as u64),
        _ => {}
    }
    if l3.status == L3Status::Ok && (l3.proto == proto::ICMP || l3.proto == proto::ICMPV6) {
        let l4 = parse_l4(pkt, &l3);
        if l4.ok {
            let q = parse_quoted(pkt, &l3, &l4);
            if q.ok && icmp::attach_error(pkt, &l3, &l4, &q, dir) {
                return;
            }
        }
    }
    let remote = if dir == Direction::Out {
        &l3.dst
    } else {
        &l3.src
    };
    if !prefilter_passes_addr(l3.family, remote) {
        return;
    }
    let len = pkt.frame_len() as u64;
    if l3.status != L3Status::Fragment && l3.status != L3Status::ExtLimit {
        let l4 = parse_l4(pkt, &l3);
        if l4.ok {
            return observe_flow(pkt, &l3, &l4, remote, dir, segs as u64, len);
        }
    }
    let Lookup::Hit(range) = lookup_range(l3.family, remote) else {
        return;
    };
    match l3.status {
        L3Status::Fragment | L3Status::ExtLimit => {
            count_match(range.id, dir, segs as u64, len);
            let c = if l3.status == L3Status::Fragment {
                Counter::Fragments
            } else {
                Counter::ExtHeaderLimit
            };
            count(c, segs as u64)
        }
        // A CAS packet whose transport header is broken.
        _ => count(Counter::Malformed, segs as u64),
    }
}
