//! cas-audit kernel programs.
//!
//! `cas_tc_egress` looks at packets leaving an interface and matches their
//! destination; `cas_tc_ingress` and `cas_xdp_ingress` look at arriving
//! packets and match their source. A match against the CAS prefix tries is
//! counted per range and per flow; a new flow whose service port is not an
//! allowed one is reported on the event ring buffer. Every program always
//! passes the packet: the datapath observes, it never changes a packet's fate.
#![no_std]
#![no_main]
// Atomic adds to flow counters: the bpf target has no `AtomicU64::fetch_add`,
// the intrinsic lowers to the BPF_ATOMIC add instruction.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod bench;
mod maps;
mod packet;
mod parse;

use aya_ebpf::{
    bindings::{xdp_action::XDP_PASS, BPF_NOEXIST, TC_ACT_UNSPEC},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::{classifier, xdp},
    maps::lpm_trie::Key,
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use cas_audit_common::{
    family, history, initiator, port_bit, prefilter_bit, proto, service_port, tcp_flags, Counter,
    Direction, FlowEvent, FlowKey, FlowStats, RangeValue,
};
use core::intrinsics::{atomic_or, atomic_xadd, AtomicOrdering};

use crate::{
    maps::{
        ALLOWED_PORTS, COUNTERS, EVENTS, FLOWS, PREFILTER, RANGES_V4, RANGES_V6, RANGE_STATS,
        SCRATCH,
    },
    packet::Packet,
    parse::{parse_l3, parse_l4, parse_quoted, quick_remote, L3Status, Quoted, L3, L4, QUICK_SLOW},
};

/// TC egress: counts packets whose destination is a CAS address.
#[classifier]
pub fn cas_tc_egress(ctx: TcContext) -> i32 {
    observe(&ctx, Direction::Out);
    TC_ACT_UNSPEC
}

/// TC ingress: counts packets whose source is a CAS address.
#[classifier]
pub fn cas_tc_ingress(ctx: TcContext) -> i32 {
    observe(&ctx, Direction::In);
    TC_ACT_UNSPEC
}

/// XDP ingress: counts packets whose source is a CAS address.
#[xdp]
pub fn cas_xdp_ingress(ctx: XdpContext) -> u32 {
    observe(&ctx, Direction::In);
    XDP_PASS
}

/// Adds `n` to a global counter (per-CPU, no atomics needed).
#[inline(always)]
fn count(counter: Counter, n: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *c += n };
    }
}

/// Whether `port` is allowed in port profile `profile`.
#[inline(always)]
fn port_allowed(profile: u32, port: u16) -> bool {
    let (word, bit) = port_bit(profile, port);
    match ALLOWED_PORTS.get(word) {
        Some(w) => *w & bit != 0,
        None => false,
    }
}

/// A trie miss.
const MISS: RangeValue = RangeValue {
    id: u32::MAX,
    ports: 0,
};

/// Whether some range may hold addresses whose top 16 bits are `hi16`: a
/// bitmap in an array map, which the kernel inlines. False means a miss.
#[inline(always)]
fn prefilter_passes(fam: u8, hi16: u16) -> bool {
    let (word, bit) = prefilter_bit(fam, hi16);
    match PREFILTER.get(word) {
        Some(w) => *w & bit != 0,
        None => false,
    }
}

/// Looks up the remote address in the trie (after the prefilter passed);
/// a miss gives range id `u32::MAX`.
#[inline(always)]
fn lookup_range(fam: u8, addr: &[u8; 16]) -> RangeValue {
    let hit = if fam == family::V4 {
        RANGES_V4.get(Key::new(32, [addr[0], addr[1], addr[2], addr[3]]))
    } else {
        RANGES_V6.get(Key::new(128, *addr))
    };
    match hit {
        Some(v) => *v,
        None => MISS,
    }
}

#[inline(always)]
fn observe<P: Packet>(pkt: &P, dir: Direction) {
    let segs = pkt.segments();
    count(Counter::Packets, segs as u64);
    // Fast path for the common packet that is not CAS traffic.
    if segs == 1 {
        let q = quick_remote(pkt, dir == Direction::Out);
        if q != QUICK_SLOW && !prefilter_passes((q >> 16) as u8, q as u16) {
            return;
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
            if q.ok && icmp_error(pkt, &l3, &l4, &q, dir) {
                return;
            }
        }
    }
    let remote = if dir == Direction::Out {
        &l3.dst
    } else {
        &l3.src
    };
    if !prefilter_passes(l3.family, u16::from_be_bytes([remote[0], remote[1]])) {
        return;
    }
    let len = pkt.frame_len() as u64;
    if l3.status != L3Status::Fragment && l3.status != L3Status::ExtLimit {
        let l4 = parse_l4(pkt, &l3);
        if l4.ok {
            return observe_flow(pkt, &l3, &l4, remote, dir, segs as u64, len);
        }
    }
    let range = lookup_range(l3.family, remote);
    if range.id == u32::MAX {
        return;
    }
    let range_id = range.id;
    match l3.status {
        L3Status::Fragment | L3Status::ExtLimit => {
            count_range(range_id, dir, segs as u64, len);
            count(Counter::Matched, segs as u64);
            let c = if l3.status == L3Status::Fragment {
                Counter::Fragments
            } else {
                Counter::ExtHeaderLimit
            };
            return count(c, segs as u64);
        }
        _ => {}
    }
    // A CAS packet whose transport header is broken.
    count(Counter::Malformed, segs as u64)
}

/// One packet as a flow sees it.
struct Seen {
    dir: Direction,
    /// Wire packets (GSO segments).
    packets: u64,
    bytes: u64,
    tcp_flags: u32,
    /// [`history`] kinds of this packet (originator side, unshifted).
    kinds: u64,
    ttl: u8,
    /// CLOCK_MONOTONIC_COARSE for an existing flow, CLOCK_MONOTONIC for a new one.
    now: u64,
}

/// A packet with a good transport header whose remote address passed the
/// prefilter. An existing flow already knows its range, so the trie is only
/// walked for packets without a flow: on a hit this saves the trie walk
/// (about a quarter of the hit path), on a near miss (prefilter passed,
/// trie misses) it adds a flow-table miss. See BENCHMARKS.md.
#[inline(always)]
fn observe_flow<P: Packet>(
    pkt: &P,
    l3: &L3,
    l4: &L4,
    remote: &[u8; 16],
    dir: Direction,
    segs: u64,
    len: u64,
) {
    // Each wire segment of a super-packet repeats the headers.
    let bytes = len + (segs - 1) * l4.hdr_end as u64;
    let key = flow_key(
        pkt.ifindex(),
        l3.proto,
        l3.family,
        dir,
        &l3.src,
        &l3.dst,
        l4.src_port,
        l4.dst_port,
    );
    let mut seen = Seen {
        dir,
        packets: segs,
        bytes,
        tcp_flags: l4.tcp_flags,
        kinds: history::kinds(l3.proto, l4.tcp_flags, l4.payload),
        ttl: l3.ttl,
        // Read below: the coarse clock for an existing flow, the precise
        // one for a new flow.
        now: 0,
    };
    // By reference: a by-value key would be copied to the 512-byte stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    if let Some(st) = FLOWS.get_ptr_mut(&key) {
        // The coarse clock (one tick of resolution) is a fraction of the
        // precise one's cost. SAFETY: no preconditions.
        seen.now = unsafe { bpf_ktime_get_coarse_ns() };
        // SAFETY: a live map value; its range was decided when it was created.
        let range_id = unsafe { (*st).range_id };
        count(Counter::Matched, segs);
        count_range(range_id, dir, segs, bytes);
        // SAFETY: as above.
        unsafe { add_to_flow(st, &seen) };
        return;
    }
    let range = lookup_range(l3.family, remote);
    if range.id == u32::MAX {
        return;
    }
    count(Counter::Matched, segs);
    count_range(range.id, dir, segs, bytes);
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    seen.now = unsafe { bpf_ktime_get_ns() };
    new_flow(pkt, &key, &range, &seen);
}

/// The flow key of a packet travelling in `dir` from `src` to `dst`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn flow_key(
    ifindex: u32,
    proto: u8,
    fam: u8,
    dir: Direction,
    src: &[u8; 16],
    dst: &[u8; 16],
    src_port: u16,
    dst_port: u16,
) -> FlowKey {
    let mut key = FlowKey {
        ifindex,
        proto,
        family: fam,
        ..FlowKey::default()
    };
    if dir == Direction::Out {
        key.local_addr = *src;
        key.remote_addr = *dst;
        key.local_port = src_port;
        key.remote_port = dst_port;
    } else {
        key.local_addr = *dst;
        key.remote_addr = *src;
        key.local_port = dst_port;
        key.remote_port = src_port;
    }
    key
}

/// Attaches an ICMP destination-unreachable error to the flow whose packet
/// it quotes. Returns false when the quoted packet is not CAS traffic (the
/// error is then an ordinary packet).
///
/// The quoted packet travelled the other way: an error arriving (`In`)
/// quotes a packet the local side sent. The reporter is the error's source:
/// the router or firewall that refused the packet, or the CAS host itself.
#[inline(always)]
fn icmp_error<P: Packet>(pkt: &P, l3: &L3, l4: &L4, q: &Quoted, dir: Direction) -> bool {
    let quoted_dir = if dir == Direction::In {
        Direction::Out
    } else {
        Direction::In
    };
    let key = flow_key(
        pkt.ifindex(),
        q.proto,
        q.family,
        quoted_dir,
        &q.src,
        &q.dst,
        q.src_port,
        q.dst_port,
    );
    if !prefilter_passes(
        q.family,
        u16::from_be_bytes([key.remote_addr[0], key.remote_addr[1]]),
    ) {
        return false;
    }
    if lookup_range(q.family, &key.remote_addr).id == u32::MAX {
        return false;
    }
    #[allow(clippy::needless_borrows_for_generic_args)] // see observe_flow
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

/// Who opened a connection whose opening SYN travels in `dir`.
#[inline(always)]
fn opener(dir: Direction) -> u8 {
    if dir == Direction::Out {
        initiator::LOCAL
    } else {
        initiator::REMOTE
    }
}

#[inline(always)]
fn count_range(range_id: u32, dir: Direction, packets: u64, bytes: u64) {
    if let Some(s) = RANGE_STATS.get_ptr_mut(range_id) {
        // SAFETY: per-CPU slot.
        unsafe {
            if dir == Direction::Out {
                (*s).packets_out += packets;
                (*s).bytes_out += bytes;
            } else {
                (*s).packets_in += packets;
                (*s).bytes_in += bytes;
            }
        }
    }
}

/// The SYN that opens a connection: SYN without ACK.
#[inline(always)]
fn opening_syn(flags: u32) -> bool {
    flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
}

/// Creates the flow of a CAS packet that has none yet.
#[inline(always)]
fn new_flow<P: Packet>(pkt: &P, key: &FlowKey, range: &RangeValue, seen: &Seen) {
    let Some(st) = SCRATCH.get_ptr_mut(0) else {
        return count(Counter::FlowInsertFailed, 1);
    };
    // SAFETY: this CPU's scratch slot, ours until the program returns.
    let st = unsafe { &mut *st };
    let dir = seen.dir;
    let now = seen.now;
    *st = FlowStats {
        first_seen_ns: now,
        last_seen_ns: now,
        range_id: range.id,
        first_dir: dir as u8,
        history_mask: seen.kinds,
        ..FlowStats::default()
    };
    // The first packet's letters, in kind order (its sender is the originator).
    let mut n = 0;
    let mut kind = 0;
    while kind < history::KINDS {
        if seen.kinds & (1 << kind) != 0 && n < st.history.len() {
            st.history[n] = history::letter(kind, true);
            n += 1;
        }
        kind += 1;
    }
    if dir == Direction::Out {
        st.packets_out = seen.packets;
        st.bytes_out = seen.bytes;
        st.tcp_flags_out = seen.tcp_flags;
    } else {
        st.packets_in = seen.packets;
        st.bytes_in = seen.bytes;
        st.tcp_flags_in = seen.tcp_flags;
        if seen.tcp_flags & tcp_flags::RST != 0 {
            st.rst_ttl = seen.ttl;
        }
    }
    if key.proto == proto::TCP && opening_syn(seen.tcp_flags) {
        st.initiator = opener(dir);
    }
    let allowed = |port| port_allowed(range.ports, port);
    let svc = service_port(st.initiator, key.local_port, key.remote_port, allowed);
    let flagged = match key.proto {
        proto::TCP | proto::UDP => !allowed(svc),
        proto::ICMP | proto::ICMPV6 => false,
        // Other protocols have no port an allowlist could name.
        _ => true,
    };
    st.flagged = flagged as u8;
    let initiator = st.initiator;

    // The value goes from the scratch slot, not a stack copy.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let inserted = FLOWS.insert(key, &*st, BPF_NOEXIST as u64);
    if inserted.is_err() {
        // Another CPU created it first: add to theirs.
        match FLOWS.get_ptr_mut(key) {
            // SAFETY: a live map value.
            Some(existing) => unsafe { add_to_flow(existing, seen) },
            None => count(Counter::FlowInsertFailed, 1),
        }
        return;
    }
    count(Counter::FlowsCreated, 1);
    if flagged {
        match EVENTS.reserve::<FlowEvent>(0) {
            Some(mut entry) => {
                let ev = entry.as_mut_ptr();
                // SAFETY: a reserved ring-buffer record of FlowEvent's size;
                // every field is written before it is submitted.
                unsafe {
                    (*ev).ts_ns = now;
                    (*ev).key = *key;
                    (*ev).range_id = range.id;
                    (*ev).service_port = svc;
                    (*ev).initiator = initiator;
                    (*ev).dir = dir as u8;
                    (*ev).packets = seen.packets as u32;
                    (*ev).bytes = seen.bytes as u32;
                    (*ev).tcp_flags = seen.tcp_flags as u8;
                    (*ev)._pad = [0; 3];
                }
                entry.submit(0);
                count(Counter::Events, 1);
            }
            None => count(Counter::EventsLost, 1),
        }
        debug!(
            pkt,
            "flagged flow proto {} ports {}->{} service port {}",
            key.proto,
            key.local_port,
            key.remote_port,
            svc
        );
    }
}

/// Adds one packet to an existing flow.
///
/// # Safety
/// `st` must point at a live `FlowStats` map value.
#[inline(always)]
unsafe fn add_to_flow(st: *mut FlowStats, seen: &Seen) {
    let dir = seen.dir;
    // Counters use atomic adds: both directions of a flow may be processed
    // on different CPUs at once.
    let (p, b) = if dir == Direction::Out {
        (&raw mut (*st).packets_out, &raw mut (*st).bytes_out)
    } else {
        (&raw mut (*st).packets_in, &raw mut (*st).bytes_in)
    };
    atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, seen.packets);
    atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(b, seen.bytes);
    // The coarse clock may lag the precise first_seen_ns by up to a tick.
    if seen.now > (*st).last_seen_ns {
        (*st).last_seen_ns = seen.now;
    }
    // Flag bits only ever get set; a lost race re-sets them on the next packet.
    if dir == Direction::Out {
        (*st).tcp_flags_out |= seen.tcp_flags;
    } else {
        (*st).tcp_flags_in |= seen.tcp_flags;
        if seen.tcp_flags & tcp_flags::RST != 0 && (*st).rst_ttl == 0 {
            (*st).rst_ttl = seen.ttl;
        }
    }
    if opening_syn(seen.tcp_flags) && (*st).initiator == initiator::UNKNOWN {
        (*st).initiator = opener(dir);
    }
    let originator = dir as u8 == (*st).first_dir;
    let shift = if originator { 0 } else { history::KINDS };
    if (*st).history_mask & (seen.kinds << shift) != seen.kinds << shift {
        add_history(st, seen.kinds, shift, originator);
    }
}

/// Appends the letters of `kinds` not yet in the flow's history. Each
/// letter's bit is claimed with an atomic fetch-or; its slot is the number
/// of bits that were set before, so two CPUs never write the same slot.
///
/// # Safety
/// `st` must point at a live `FlowStats` map value.
#[inline(always)]
unsafe fn add_history(st: *mut FlowStats, kinds: u64, shift: u32, originator: bool) {
    let mut kind = 0;
    while kind < history::KINDS {
        let bit = 1u64 << (kind + shift);
        if kinds & (1 << kind) != 0 && (*st).history_mask & bit == 0 {
            let old = atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(
                &raw mut (*st).history_mask,
                bit,
            );
            if old & bit == 0 {
                let slot = old.count_ones() as usize;
                if slot < (*st).history.len() {
                    (*st).history[slot] = history::letter(kind, originator);
                }
            }
        }
        kind += 1;
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// License of the object: GPL-compatible helpers are used.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
