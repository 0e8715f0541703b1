//! Counting: the global counters and the per-range packet and byte
//! counters, both per-CPU arrays (no atomics needed: only this CPU writes
//! its slot while the program runs).

use cas_audit_common::{Counter, Direction};

use crate::maps::{COUNTERS, RANGE_STATS};

/// Adds `n` to a global counter.
#[inline(always)]
pub fn count(counter: Counter, n: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *c += n };
    }
}

/// Adds `packets` wire packets and `bytes` link-layer bytes travelling in
/// `dir` to range `range_id`.
#[inline(always)]
pub fn count_range(range_id: u32, dir: Direction, packets: u64, bytes: u64) {
    if let Some(s) = RANGE_STATS.get_ptr_mut(range_id) {
        // SAFETY: per-CPU slot.
        unsafe {
            match dir {
                Direction::Out => {
                    (*s).packets_out += packets;
                    (*s).bytes_out += bytes;
                }
                Direction::In => {
                    (*s).packets_in += packets;
                    (*s).bytes_in += bytes;
                }
            }
        }
    }
}

/// Counts a packet of a CAS range: the `matched` counter and the range's.
#[inline(always)]
pub fn count_match(range_id: u32, dir: Direction, packets: u64, bytes: u64) {
    count(Counter::Matched, packets);
    count_range(range_id, dir, packets, bytes);
}
