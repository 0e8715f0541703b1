//! ICMP and ICMPv6 destination-unreachable errors (RFC 792, RFC 4443)
//! attached to the flow whose packet they quote.

use cas_audit_common::{Counter, Direction, FlowStats};
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use crate::{
    count::count,
    flow::{flow_key, reverse},
    lookup::{lookup_range, prefilter_passes_addr, Lookup},
    maps::FLOWS,
    observe::{counts_here, Hook},
    packet::Packet,
    parse::{Quoted, L3, L4},
};

/// Attaches an ICMP destination-unreachable error to the flow whose packet
/// it quotes. Returns false when the quoted packet is not CAS traffic (the
/// error is then an ordinary packet).
///
/// The quoted packet's CAS side is found as for any packet: a flow with
/// its destination as the CAS side, else with its source; an error quoting
/// a CAS packet of no known flow is counted in `icmp_unmatched`. The
/// reporter is the error's source: the router or firewall that refused the
/// packet, or the CAS host itself. An error crossing two audited
/// interfaces is counted once (at the first, [`counts_here`]); the flow a
/// later hook finds (the other side of a NAT) is marked too.
#[inline(always)]
pub fn attach_error<P: Packet>(pkt: &P, hook: Hook, l3: &L3, l4: &L4, q: &Quoted) -> bool {
    let dst_pass = prefilter_passes_addr(q.family, &q.dst);
    let src_pass = prefilter_passes_addr(q.family, &q.src);
    if !dst_pass && !src_pass {
        return false;
    }
    let mut key = flow_key(
        q.proto,
        q.family,
        Direction::Out,
        &q.src,
        &q.dst,
        q.src_port,
        q.dst_port,
    );
    let first = counts_here(pkt, hook);
    #[allow(clippy::needless_borrows_for_generic_args)] // see flow::observe_flow
    if dst_pass {
        if let Some(st) = FLOWS.get_ptr_mut(&key) {
            // SAFETY: a live map value.
            unsafe { record(st, l3, l4, first) };
            return true;
        }
    }
    reverse(&mut key);
    #[allow(clippy::needless_borrows_for_generic_args)]
    if src_pass {
        if let Some(st) = FLOWS.get_ptr_mut(&key) {
            // SAFETY: a live map value.
            unsafe { record(st, l3, l4, first) };
            return true;
        }
    }
    let cas = (dst_pass && matches!(lookup_range(q.family, &q.dst), Lookup::Hit(_)))
        || (src_pass && matches!(lookup_range(q.family, &q.src), Lookup::Hit(_)));
    if cas && first {
        count(Counter::IcmpUnmatched, 1);
    }
    cas
}

/// Records an error on its flow; `first`: this is the first audited hook
/// the error meets (it is counted), else the flow is only marked.
///
/// # Safety
/// `st` must point at a live `FlowStats` map value.
#[inline(always)]
unsafe fn record(st: *mut FlowStats, l3: &L3, l4: &L4, first: bool) {
    // The fields describe the last error; two errors racing on two CPUs
    // may mix type and reporter, which is harmless.
    (*st).icmp_type = l4.icmp_type;
    (*st).icmp_code = l4.icmp_code;
    (*st).reporter_family = l3.family;
    (*st).reporter = l3.src;
    if first || (*st).icmp_errors == 0 {
        atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*st).icmp_errors, 1);
    }
    if first {
        count(Counter::IcmpErrors, 1);
    }
}
