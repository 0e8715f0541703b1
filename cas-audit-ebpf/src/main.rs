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
    helpers::bpf_ktime_get_ns,
    macros::{classifier, xdp},
    maps::lpm_trie::Key,
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use cas_audit_common::{
    family, initiator, port_bit, prefilter_bit, proto, service_port, tcp_flags, Counter, Direction,
    FlowEvent, FlowKey, FlowStats, RangeValue,
};
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use crate::{
    maps::{
        ALLOWED_PORTS, COUNTERS, EVENTS, FLOWS, PREFILTER, RANGES_V4, RANGES_V6,
        RANGE_STATS,
    },
    packet::Packet,
    parse::{parse_l3, parse_l4, quick_remote, L3Status, L3, L4, QUICK_SLOW},
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

/// A packet with a good transport header whose remote address passed the
/// prefilter: the trie decides, then the flow is updated or created.
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
    let mut key = FlowKey {
        ifindex: pkt.ifindex(),
        proto: l3.proto,
        family: l3.family,
        ..FlowKey::default()
    };
    if dir == Direction::Out {
        key.local_addr = l3.src;
        key.remote_addr = l3.dst;
        key.local_port = l4.src_port;
        key.remote_port = l4.dst_port;
    } else {
        key.local_addr = l3.dst;
        key.remote_addr = l3.src;
        key.local_port = l4.dst_port;
        key.remote_port = l4.src_port;
    }
    let range = lookup_range(l3.family, remote);
    if range.id == u32::MAX {
        return;
    }
    count(Counter::Matched, segs);
    count_range(range.id, dir, segs, bytes);
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(st) = FLOWS.get_ptr_mut(&key) {
        // SAFETY: a live map value; counters use atomic adds because both
        // directions of a flow may be processed on different CPUs at once.
        unsafe {
            add_to_flow(
                st,
                dir,
                segs,
                bytes,
                l4.tcp_flags,
                now,
                opening_syn(l4.tcp_flags),
                opener(dir),
            )
        };
        return;
    }
    new_flow(pkt, &key, dir, &range, segs, bytes, l4.tcp_flags, now);
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
fn opening_syn(flags: u32) -> u8 {
    if flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN {
        1
    } else {
        0
    }
}

/// Creates the flow of a CAS packet that has none yet.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn new_flow<P: Packet>(
    pkt: &P,
    key: &FlowKey,
    dir: Direction,
    range: &RangeValue,
    packets: u64,
    bytes: u64,
    flags: u32,
    now: u64,
) {
    let range_id = range.id;
    let syn = opening_syn(flags);
    let opener = opener(dir);
    let mut st = FlowStats {
        first_seen_ns: now,
        last_seen_ns: now,
        range_id,
        first_dir: dir as u8,
        ..FlowStats::default()
    };
    if dir == Direction::Out {
        st.packets_out = packets;
        st.bytes_out = bytes;
        st.tcp_flags_out = flags;
    } else {
        st.packets_in = packets;
        st.bytes_in = bytes;
        st.tcp_flags_in = flags;
    }
    if key.proto == proto::TCP && syn != 0 {
        st.initiator = opener;
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

    if FLOWS.insert(key, st, BPF_NOEXIST as u64).is_err() {
        // Another CPU created it first: add to theirs.
        match FLOWS.get_ptr_mut(key) {
            Some(existing) => unsafe {
                add_to_flow(existing, dir, packets, bytes, flags, now, syn, opener)
            },
            None => count(Counter::FlowInsertFailed, 1),
        }
        return;
    }
    count(Counter::FlowsCreated, 1);
    if flagged {
        let ev = FlowEvent {
            ts_ns: now,
            key: *key,
            range_id,
            service_port: svc,
            initiator: st.initiator,
            dir: dir as u8,
            _pad: [0; 4],
        };
        if EVENTS.output::<FlowEvent>(&ev, 0).is_ok() {
            count(Counter::Events, 1);
        } else {
            count(Counter::EventsLost, 1);
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
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn add_to_flow(
    st: *mut FlowStats,
    dir: Direction,
    packets: u64,
    bytes: u64,
    flags: u32,
    now: u64,
    syn: u8,
    opener: u8,
) {
    let (p, b) = if dir == Direction::Out {
        (&raw mut (*st).packets_out, &raw mut (*st).bytes_out)
    } else {
        (&raw mut (*st).packets_in, &raw mut (*st).bytes_in)
    };
    atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, packets);
    atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(b, bytes);
    (*st).last_seen_ns = now;
    // Flag bits only ever get set; a lost race re-sets them on the next packet.
    if dir == Direction::Out {
        (*st).tcp_flags_out |= flags;
    } else {
        (*st).tcp_flags_in |= flags;
    }
    if syn != 0 && (*st).initiator == initiator::UNKNOWN {
        (*st).initiator = opener;
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
