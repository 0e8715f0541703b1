//! The flow table: a flow's key, a new flow (initial state from
//! [`cas_audit_common::rules::open_flow`], judged with
//! [`cas_audit_common::rules::judge`], an event for a disallowed one), the
//! update of an existing flow (counters, flags, history, interfaces), and a
//! new connection on an ended flow's 5-tuple ([`rules::reopens`]: the
//! ended flow goes to the agent on the ring, the entry starts again).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
};
use aya_log_ebpf::debug;
use cas_audit_common::{
    history, record_kind,
    rules::{self, FirstPacket},
    sizes::FLOW_IFACES,
    tcp_flags, Counter, Direction, FlowEnded, FlowEvent, FlowKey, FlowStats, RangeValue,
};
use core::intrinsics::{atomic_or, atomic_xadd, AtomicOrdering};

use crate::{
    count::{count, count_match},
    lookup::port_allowed,
    maps::{EVENTS, FLOWS, SCRATCH},
    observe::{cas_side, counts_here, Hook},
    packet::Packet,
    parse::{L3, L4},
};

/// One packet as a flow sees it.
pub struct Seen {
    /// Its direction.
    pub dir: Direction,
    /// The interface it is on.
    pub ifindex: u32,
    /// Wire packets (GSO segments) to count: 0 at a hook after the one
    /// that counted it.
    pub packets: u64,
    /// Link-layer bytes, headers replicated per segment (0 as `packets`).
    pub bytes: u64,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u32,
    /// [`history`] kinds of this packet (originator side, unshifted).
    pub kinds: u64,
    /// IP TTL / hop limit.
    pub ttl: u8,
}

/// The flow key of a packet travelling in `dir` from `src:src_port` to
/// `dst:dst_port`: local is the host side, remote the CAS side.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn flow_key(
    proto: u8,
    fam: u8,
    dir: Direction,
    src: &[u8; 16],
    dst: &[u8; 16],
    src_port: u16,
    dst_port: u16,
) -> FlowKey {
    let mut key = FlowKey {
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

/// Turns `key` round: local and remote swap (the same packet seen with the
/// other address as the CAS side).
#[inline(always)]
pub fn reverse(key: &mut FlowKey) {
    core::mem::swap(&mut key.local_addr, &mut key.remote_addr);
    core::mem::swap(&mut key.local_port, &mut key.remote_port);
}

/// A packet with a good transport header one of whose addresses passed the
/// prefilter. An existing flow already knows its range, so the trie is only
/// walked for packets without a flow: on a hit this saves the trie walk
/// (about a quarter of the hit path), on a near miss (prefilter passed,
/// trie misses) it adds a flow-table miss. See BENCHMARKS.md.
///
/// The flow is looked for with the destination as the CAS side first, then
/// the source, so that both directions of a conversation, between two CAS
/// addresses too, land on one entry.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn observe_flow<P: Packet>(
    pkt: &P,
    hook: Hook,
    l3: &L3,
    l4: &L4,
    src_pass: bool,
    dst_pass: bool,
    segs: u64,
    len: u64,
) {
    // Each wire segment of a super-packet repeats the headers.
    let bytes = len + (segs - 1) * l4.hdr_end as u64;
    let mut key = flow_key(
        l3.proto,
        l3.family,
        Direction::Out,
        &l3.src,
        &l3.dst,
        l4.src_port,
        l4.dst_port,
    );
    // 1 where the packet is counted, 0 at a later hook: a factor, not a
    // branch (every branch carried through the flow path doubles the
    // verifier's states), and adding 0 is harmless.
    let counted = counts_here(pkt, hook) as u64;
    let mut seen = Seen {
        dir: Direction::Out,
        ifindex: pkt.ifindex(),
        packets: segs * counted,
        bytes: bytes * counted,
        tcp_flags: l4.tcp_flags,
        kinds: history::kinds(l3.proto, l4.tcp_flags, l4.payload),
        ttl: l3.ttl,
    };
    // One call site for an existing flow (each inlined copy of its update
    // costs verifier states): find it first, with the destination as the
    // CAS side, else the source. By reference: a by-value key would be
    // copied to the 512-byte stack.
    let mut st: *mut FlowStats = core::ptr::null_mut();
    #[allow(clippy::needless_borrows_for_generic_args)]
    if dst_pass {
        if let Some(p) = FLOWS.get_ptr_mut(&key) {
            st = p;
        }
    }
    if st.is_null() {
        reverse(&mut key);
        seen.dir = Direction::In;
        #[allow(clippy::needless_borrows_for_generic_args)]
        if src_pass {
            if let Some(p) = FLOWS.get_ptr_mut(&key) {
                st = p;
            }
        }
    }
    // SAFETY: a live map value of `key`.
    if !st.is_null() && unsafe { existing_flow(st, &key, &seen) } {
        return;
    }
    let Some((range, dir)) = cas_side(l3.family, &l3.src, &l3.dst) else {
        return;
    };
    let key = flow_key(
        l3.proto,
        l3.family,
        dir,
        &l3.src,
        &l3.dst,
        l4.src_port,
        l4.dst_port,
    );
    seen.dir = dir;
    count_match(range.id, dir, seen.packets, seen.bytes);
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    new_flow(pkt, &key, &range, &seen, now);
}

/// Adds a packet to the flow `st` it belongs to; false when the packet
/// opens a new connection on the ended flow instead ([`rules::reopens`]):
/// the ended flow has then been handed to the agent and removed, and the
/// caller creates the new one.
///
/// # Safety
/// `st` must point at the live `FlowStats` map value of `key`.
#[inline(always)]
unsafe fn existing_flow(st: *mut FlowStats, key: &FlowKey, seen: &Seen) -> bool {
    if rules::reopens(key.proto, seen.tcp_flags, (*st).history_mask) {
        hand_over_ended(st, key);
        return false;
    }
    let now = packet_time(seen.tcp_flags);
    // Its range was decided when the flow was created.
    count_match((*st).range_id, seen.dir, seen.packets, seen.bytes);
    add_to_flow(st, seen, now);
    true
}

/// When a packet of an existing flow was seen, for its `last_seen_ns`.
/// The coarse clock (`bpf_ktime_get_coarse_ns`, one tick of resolution: 4 ms
/// at `CONFIG_HZ=250`; kernel 5.11) costs a fraction of the precise one, and
/// lags it by up to a tick. A TCP packet that opens or ends a connection
/// (SYN, FIN, RST) takes the precise clock, so that a connection's
/// duration runs exactly to its last FIN or RST however short it is;
/// other packets move `last_seen_ns` only when the coarse clock passed it.
#[inline(always)]
fn packet_time(flags: u32) -> u64 {
    // SAFETY: neither helper has preconditions.
    unsafe {
        if flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) != 0 {
            bpf_ktime_get_ns()
        } else {
            bpf_ktime_get_coarse_ns()
        }
    }
}

/// Hands an ended flow to the agent (a [`FlowEnded`] record; a full ring
/// is counted in `flows_lost`) and removes it from the table.
///
/// # Safety
/// As [`existing_flow`].
#[inline(always)]
unsafe fn hand_over_ended(st: *const FlowStats, key: &FlowKey) {
    count(Counter::FlowsReopened, 1);
    match EVENTS.reserve::<FlowEnded>(0) {
        Some(mut entry) => {
            let rec = entry.as_mut_ptr();
            (*rec).kind = record_kind::ENDED;
            (*rec)._pad = 0;
            (*rec).key = *key;
            (*rec).stats = *st;
            entry.submit(0);
        }
        None => count(Counter::FlowsLost, 1),
    }
    let _ = FLOWS.remove(key);
}

/// Creates the flow of a CAS packet that has none yet, at `now`
/// (CLOCK_MONOTONIC), and raises an event when it is disallowed.
#[inline(always)]
fn new_flow<P: Packet>(pkt: &P, key: &FlowKey, range: &RangeValue, seen: &Seen, now: u64) {
    let Some(st) = SCRATCH.get_ptr_mut(0) else {
        return count(Counter::FlowInsertFailed, 1);
    };
    // SAFETY: this CPU's scratch slot, ours until the program returns. The
    // value is built here, not on the 512-byte stack.
    let st = unsafe { &mut *st };
    *st = rules::open_flow(&FirstPacket {
        dir: seen.dir,
        ifindex: seen.ifindex,
        proto: key.proto,
        packets: seen.packets,
        bytes: seen.bytes,
        tcp_flags: seen.tcp_flags,
        kinds: seen.kinds,
        ttl: seen.ttl,
        now,
        range_id: range.id,
    });
    let profile = range.ports;
    let judged = rules::judge(
        key.proto,
        st.initiator,
        key.local_port,
        key.remote_port,
        |port| port_allowed(profile, port),
    );
    let flagged = judged.verdict == rules::Verdict::DisallowedPort;
    let svc = judged.service_port.unwrap_or(0);
    st.flagged = flagged as u8;
    let initiator = st.initiator;

    // The value goes from the scratch slot, not a stack copy.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let inserted = FLOWS.insert(key, &*st, BPF_NOEXIST as u64);
    if inserted.is_err() {
        // Another CPU created it first: add to theirs.
        match FLOWS.get_ptr_mut(key) {
            // SAFETY: a live map value.
            Some(existing) => unsafe { add_to_flow(existing, seen, now) },
            None => count(Counter::FlowInsertFailed, 1),
        }
        return;
    }
    count(Counter::FlowsCreated, 1);
    if flagged {
        emit_event(key, range.id, svc, initiator, seen, now);
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

/// Hands a new disallowed flow to the agent; a full ring is counted in
/// `events_lost` (the agent still finds the flow in the table).
#[inline(always)]
fn emit_event(key: &FlowKey, range_id: u32, svc: u16, initiator: u8, seen: &Seen, now: u64) {
    match EVENTS.reserve::<FlowEvent>(0) {
        Some(mut entry) => {
            let ev = entry.as_mut_ptr();
            // SAFETY: a reserved ring-buffer record of FlowEvent's size;
            // every field is written before it is submitted.
            unsafe {
                (*ev).kind = record_kind::FLAGGED;
                (*ev).ifindex = seen.ifindex;
                (*ev).ts_ns = now;
                (*ev).key = *key;
                (*ev).range_id = range_id;
                (*ev).service_port = svc;
                (*ev).initiator = initiator;
                (*ev).dir = seen.dir as u8;
                (*ev).packets = seen.packets as u32;
                (*ev).bytes = seen.bytes as u32;
                (*ev).tcp_flags = seen.tcp_flags as u8;
                (*ev).kinds = seen.kinds as u8;
                (*ev).ttl = seen.ttl;
                (*ev)._pad = [0; 5];
            }
            entry.submit(0);
            count(Counter::Events, 1);
        }
        None => count(Counter::EventsLost, 1),
    }
}

/// Adds one packet, seen at `now` ([`packet_time`]), to an
/// existing flow: its counts (0 when an earlier hook counted it), flags,
/// history and interface.
///
/// # Safety
/// `st` must point at a live `FlowStats` map value.
#[inline(always)]
unsafe fn add_to_flow(st: *mut FlowStats, seen: &Seen, now: u64) {
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
    if now > (*st).last_seen_ns {
        (*st).last_seen_ns = now;
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
    if rules::opening_syn(seen.tcp_flags) && (*st).initiator == cas_audit_common::initiator::UNKNOWN
    {
        (*st).initiator = rules::opener(dir);
    }
    add_iface(st, seen.ifindex);
    let originator = dir as u8 == (*st).first_dir;
    let shift = if originator { 0 } else { history::KINDS };
    if (*st).history_mask & (seen.kinds << shift) != seen.kinds << shift {
        add_history(st, seen.kinds, shift, originator);
    }
}

/// Remembers that the flow was seen on interface `ifindex` (the first
/// [`FLOW_IFACES`] interfaces). Slots are only ever filled; two CPUs racing
/// for one slot lose an interface until the flow's next packet there.
///
/// # Safety
/// `st` must point at a live `FlowStats` map value.
#[inline(always)]
unsafe fn add_iface(st: *mut FlowStats, ifindex: u32) {
    let mut i = 0;
    while i < FLOW_IFACES {
        let v = (*st).ifindexes[i];
        if v == ifindex {
            return;
        }
        if v == 0 {
            (*st).ifindexes[i] = ifindex;
            return;
        }
        i += 1;
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
