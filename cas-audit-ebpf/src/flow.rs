//! The flow table: a flow's key, a new flow (initial state from
//! [`cas_audit_common::rules::open_flow`], judged with
//! [`cas_audit_common::rules::judge`], an event for a disallowed one), and
//! the update of an existing flow (counters, flags, history).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
};
use aya_log_ebpf::debug;
use cas_audit_common::{
    history,
    rules::{self, FirstPacket},
    tcp_flags, Counter, Direction, FlowEvent, FlowKey, FlowStats, RangeValue,
};
use core::intrinsics::{atomic_or, atomic_xadd, AtomicOrdering};

use crate::{
    count::{count, count_match},
    lookup::{lookup_range, port_allowed, Lookup},
    maps::{EVENTS, FLOWS, SCRATCH},
    packet::Packet,
    parse::{L3, L4},
};

/// One packet as a flow sees it.
pub struct Seen {
    /// Its direction.
    pub dir: Direction,
    /// Wire packets (GSO segments).
    pub packets: u64,
    /// Link-layer bytes, headers replicated per segment.
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

/// A packet with a good transport header whose remote address passed the
/// prefilter. An existing flow already knows its range, so the trie is only
/// walked for packets without a flow: on a hit this saves the trie walk
/// (about a quarter of the hit path), on a near miss (prefilter passed,
/// trie misses) it adds a flow-table miss. See BENCHMARKS.md.
#[inline(always)]
pub fn observe_flow<P: Packet>(
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
    let seen = Seen {
        dir,
        packets: segs,
        bytes,
        tcp_flags: l4.tcp_flags,
        kinds: history::kinds(l3.proto, l4.tcp_flags, l4.payload),
        ttl: l3.ttl,
    };
    // By reference: a by-value key would be copied to the 512-byte stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    if let Some(st) = FLOWS.get_ptr_mut(&key) {
        // The coarse clock (one tick of resolution) is a fraction of the
        // precise one's cost. SAFETY: no preconditions.
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        // SAFETY: a live map value; its range was decided when it was created.
        let range_id = unsafe { (*st).range_id };
        count_match(range_id, dir, segs, bytes);
        // SAFETY: as above.
        unsafe { add_to_flow(st, &seen, now) };
        return;
    }
    let Lookup::Hit(range) = lookup_range(l3.family, remote) else {
        return;
    };
    count_match(range.id, dir, segs, bytes);
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    new_flow(pkt, &key, &range, &seen, now);
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
                (*ev)._pad = 0;
            }
            entry.submit(0);
            count(Counter::Events, 1);
        }
        None => count(Counter::EventsLost, 1),
    }
}

/// Adds one packet, seen at `now` (CLOCK_MONOTONIC_COARSE), to an
/// existing flow.
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
