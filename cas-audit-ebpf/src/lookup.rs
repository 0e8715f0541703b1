//! Address lookup: the prefilter bitmap, then the LPM tries; and the
//! allowed-port bitmaps of a range's port profile.

use aya_ebpf::maps::lpm_trie::Key;
use cas_audit_common::{family, port_bit, prefilter_bit, RangeValue};

use crate::maps::{ALLOWED_PORTS, PREFILTER, RANGES_V4, RANGES_V6};

/// What the tries say of an address.
#[derive(Clone, Copy)]
pub enum Lookup {
    /// In no CAS range.
    Miss,
    /// In this range (the longest matching prefix).
    Hit(RangeValue),
}

/// Whether some range may hold addresses of family `fam` whose top 16 bits
/// are `hi16`: a bitmap in an array map, which the kernel inlines. False
/// means a miss.
#[inline(always)]
pub fn prefilter_passes(fam: u8, hi16: u16) -> bool {
    let (word, bit) = prefilter_bit(fam, hi16);
    match PREFILTER.get(word) {
        Some(w) => *w & bit != 0,
        None => false,
    }
}

/// Whether `addr` (family `fam`, network byte order) passes the prefilter.
#[inline(always)]
pub fn prefilter_passes_addr(fam: u8, addr: &[u8; 16]) -> bool {
    prefilter_passes(fam, u16::from_be_bytes([addr[0], addr[1]]))
}

/// Looks `addr` up in the trie of its family (after the prefilter passed).
#[inline(always)]
pub fn lookup_range(fam: u8, addr: &[u8; 16]) -> Lookup {
    let hit = if fam == family::V4 {
        RANGES_V4.get(Key::new(32, [addr[0], addr[1], addr[2], addr[3]]))
    } else {
        RANGES_V6.get(Key::new(128, *addr))
    };
    match hit {
        Some(v) => Lookup::Hit(*v),
        None => Lookup::Miss,
    }
}

/// Whether `port` is allowed in port profile `profile`.
#[inline(always)]
pub fn port_allowed(profile: u32, port: u16) -> bool {
    let (word, bit) = port_bit(profile, port);
    match ALLOWED_PORTS.get(word) {
        Some(w) => *w & bit != 0,
        None => false,
    }
}
