//! ICMP and ICMPv6 destination-unreachable errors (RFC 792, RFC 4443)
//! attached to the flow whose packet they quote.

use cas_audit_common::{Counter, Direction};
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use crate::{
    count::count,
    flow::flow_key,
    lookup::{lookup, Lookup},
    maps::FLOWS,
    packet::Packet,
    parse::{Quoted, L3, L4},
};

/// Attaches an ICMP destination-unreachable error to the flow whose packet
/// it quotes. Returns false when the quoted packet is not CAS traffic (the
/// error is then an ordinary packet).
///
/// The quoted packet travelled the other way: an error arriving (`In`)
/// quotes a packet the local side sent. The reporter is the error's source:
/// the router or firewall that refused the packet, or the CAS host itself.
#[inline(always)]
pub fn attach_error<P: Packet>(pkt: &P, l3: &L3, l4: &L4, q: &Quoted, dir: Direction) -> bool {
    let key = flow_key(
        pkt.ifindex(),
        q.proto,
        q.family,
        dir.reverse(),
        &q.src,
        &q.dst,
        q.src_port,
        q.dst_port,
    );
    if let Lookup::Miss = lookup(q.family, &key.remote_addr) {
        return false;
    }
    #[allow(clippy::needless_borrows_for_generic_args)] // see flow::observe_flow
    let Some(st) = FLOWS.get_ptr_mut(&key) else {
        count(Counter::IcmpUnmatched, 1);
        return true;
    };
    // SAFETY: a live map value. The fields describe the last error; two
    // errors racing on two CPUs may mix type and reporter, which is harmless.
    unsafe {
        (*st).icmp_type = l4.icmp_type;
        (*st).icmp_code = l4.icmp_code;
        (*st).reporter_family = l3.family;
        (*st).reporter = l3.src;
        atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*st).icmp_errors, 1);
    }
    count(Counter::IcmpErrors, 1);
    true
}
