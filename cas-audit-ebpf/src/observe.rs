//! The per-packet pipeline every program runs: the fast path for plain
//! packets, the full parse, ICMP errors, the lookup of both addresses, and
//! counting per range and per flow. Every packet is passed untouched.
//!
//! Either address may be the CAS side, whichever hook sees the packet
//! ([`cas_audit_common::rules::remote_side`]): on a router's LAN side an
//! egress packet comes *from* CAS, on its uplink it goes *to* CAS. A packet
//! is counted at the first audited hook it meets on this host
//! ([`counts_here`]); later hooks only add what they see to the flow.

use cas_audit_common::{proto, rules, Counter, Direction, RangeValue};

use crate::{
    count::{count, count_match},
    flow::observe_flow,
    handoff, icmp,
    lookup::{lookup_range, prefilter_passes, prefilter_passes_addr, Lookup},
    maps::{handoff_on, IFACES},
    packet::Packet,
    parse::{parse_l3, parse_l4, parse_quoted, quick_addrs, quick_handoff, L3Status, Quick, L4},
};

/// The hook a program is attached to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// TC or XDP ingress: the first hook a packet meets on this host.
    Ingress,
    /// TC egress.
    Egress,
}

/// Whether a packet is counted here: always at ingress; at egress unless
/// it arrived on an audited interface (counted there already). A packet
/// this host made arrived on no interface (`ingress_ifindex` 0).
#[inline(always)]
pub fn counts_here<P: Packet>(pkt: &P, hook: Hook) -> bool {
    if hook == Hook::Ingress {
        return true;
    }
    let from = pkt.arrived_on();
    // SAFETY: a plain u32 value of a hash map, read once.
    from == 0 || unsafe { IFACES.get(from) }.is_none()
}

/// The CAS side of a packet from `src` to `dst` (family `fam`): the range
/// and the packet's direction ([`rules::remote_side`]: the destination
/// first), or `None` when neither is in a range. The prefilter is asked
/// again here rather than carried from the caller: fewer live values make
/// fewer verifier states, and this runs for new flows only.
#[inline(always)]
pub fn cas_side(fam: u8, src: &[u8; 16], dst: &[u8; 16]) -> Option<(RangeValue, Direction)> {
    if prefilter_passes_addr(fam, dst) {
        if let Lookup::Hit(r) = lookup_range(fam, dst) {
            return Some((r, rules::remote_side(true)));
        }
    }
    if prefilter_passes_addr(fam, src) {
        if let Lookup::Hit(r) = lookup_range(fam, src) {
            return Some((r, rules::remote_side(false)));
        }
    }
    None
}

/// Looks at one packet seen at `hook`.
#[inline(always)]
pub fn observe<P: Packet>(pkt: &P, hook: Hook) {
    let segs = pkt.segments();
    count(Counter::Packets, segs as u64);
    // Fast path for the common packet that is not CAS traffic: neither
    // address's /16 holds a range.
    if segs == 1 {
        if let Quick::Addrs {
            family,
            proto,
            l4_off,
            end,
            src_hi,
            dst_hi,
        } = quick_addrs(pkt)
        {
            // A DNS response or ClientHello takes the full parse below.
            // Its ports are read first, while the packet pointers are still
            // in registers (the prefilter lookups are calls): about 1 ns less
            // for a non-CAS TCP segment with data (BENCHMARKS.md).
            if !(handoff_on() && quick_handoff(pkt, proto, l4_off, end))
                && !prefilter_passes(family, dst_hi)
                && !prefilter_passes(family, src_hi)
            {
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
            if q.ok && icmp::attach_error(pkt, hook, &l3, &l4, &q) {
                return;
            }
        }
    }
    let dst_pass = prefilter_passes_addr(l3.family, &l3.dst);
    let src_pass = prefilter_passes_addr(l3.family, &l3.src);
    let cas = dst_pass || src_pass;
    if !cas && !handoff_on() {
        return;
    }
    let l4 = if l3.status == L3Status::Ok {
        parse_l4(pkt, &l3)
    } else {
        L4::none()
    };
    // One call site: DNS responses and ClientHellos, CAS traffic or not.
    if handoff_on() && l4.ok {
        handoff::offer(pkt, hook, &l3, &l4);
    }
    if !cas {
        return;
    }
    let len = pkt.frame_len() as u64;
    if l4.ok {
        return observe_flow(pkt, hook, &l3, &l4, src_pass, dst_pass, segs as u64, len);
    }
    let Some((range, dir)) = cas_side(l3.family, &l3.src, &l3.dst) else {
        return;
    };
    match l3.status {
        L3Status::Fragment | L3Status::ExtLimit => {
            if !counts_here(pkt, hook) {
                return;
            }
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
