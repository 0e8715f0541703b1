//! The datapath's maps. Sizes are documented in `cas_audit_common::sizes`;
//! the agent may resize the flow table and ring buffer before load.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use cas_audit_common::{
    sizes::{
        EVENTS_BYTES, MAX_FLOWS, MAX_IFACES, MAX_PORT_PROFILES, MAX_RANGES, MAX_RANGES_V4,
        MAX_RANGES_V6, PAYLOADS_BYTES, PORT_WORDS, PREFILTER_WORDS,
    },
    Counter, FlowKey, FlowStats, RangeStats, RangeValue,
};

/// IPv4 CAS prefixes → range id.
#[map(name = "CAS_RANGES_V4")]
pub static RANGES_V4: LpmTrie<[u8; 4], RangeValue> = LpmTrie::with_max_entries(MAX_RANGES_V4, 0);

/// IPv6 CAS prefixes → range id.
#[map(name = "CAS_RANGES_V6")]
pub static RANGES_V6: LpmTrie<[u8; 16], RangeValue> = LpmTrie::with_max_entries(MAX_RANGES_V6, 0);

/// Per-range packet and byte counters, per CPU.
#[map(name = "CAS_RANGE_STATS")]
pub static RANGE_STATS: PerCpuArray<RangeStats> = PerCpuArray::with_max_entries(MAX_RANGES, 0);

/// Flow table (LRU: oldest flows are evicted when full).
#[map(name = "CAS_FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, FlowStats> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

/// Allowed service ports: one bitmap of 2048 32-bit words per port profile.
#[map(name = "CAS_ALLOWED_PORTS")]
pub static ALLOWED_PORTS: Array<u32> = Array::with_max_entries(MAX_PORT_PROFILES * PORT_WORDS, 0);

/// The audited interfaces (ifindex → 1), written by the agent as it
/// attaches: a packet leaving one of them that arrived on another was
/// counted on arrival.
#[map(name = "CAS_IFACES")]
pub static IFACES: HashMap<u32, u32> = HashMap::with_max_entries(MAX_IFACES, 0);

/// Records for the agent: disallowed new flows, ended flows whose 5-tuple
/// a new connection reuses.
#[map(name = "CAS_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// DNS responses and ClientHellos for the agent (a ring of its own: a
/// burst of them never crowds out flow events).
#[map(name = "CAS_PAYLOADS")]
pub static PAYLOADS: RingBuf = RingBuf::with_byte_size(PAYLOADS_BYTES, 0);

/// Whether DNS responses and ClientHellos are handed over
/// ([`cas_audit_common::names::HANDOFF`]): set by the agent at load, in a
/// frozen read-only map, so that the verifier drops the hand-off when 0.
#[unsafe(no_mangle)]
static CAS_HANDOFF: u8 = 0;

/// Whether the agent asked for DNS responses and ClientHellos.
#[inline(always)]
pub fn handoff_on() -> bool {
    // SAFETY: a read of a static the agent set before load; volatile, so
    // that the compiler does not fold the initial 0 in.
    unsafe { core::ptr::read_volatile(&CAS_HANDOFF) != 0 }
}

/// Global counters, per CPU.
#[map(name = "CAS_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Prefilter: one bit per value of the top 16 address bits, set when some
/// range overlaps it; IPv4 words first, then IPv6 (16 KiB). Array lookups
/// are inlined by the verifier when a call site sees a single map, hence
/// one map for both families.
#[map(name = "CAS_PREFILTER")]
pub static PREFILTER: Array<u32> = Array::with_max_entries(2 * PREFILTER_WORDS, 0);

/// Scratch space for a new flow's `FlowStats` (one per CPU): the value is
/// built here rather than on the 512-byte eBPF stack.
#[map(name = "CAS_SCRATCH")]
pub static SCRATCH: PerCpuArray<FlowStats> = PerCpuArray::with_max_entries(1, 0);
