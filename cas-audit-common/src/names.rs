//! Names of the maps and programs in the eBPF object, and the sizes compiled
//! into it, so that the agent and the kernel side cannot drift apart.

/// LPM trie of IPv4 CAS prefixes: `Key<[u8; 4]>` (network byte order) → [`crate::RangeValue`].
pub const RANGES_V4: &str = "CAS_RANGES_V4";
/// LPM trie of IPv6 CAS prefixes: `Key<[u8; 16]>` (network byte order) → [`crate::RangeValue`].
pub const RANGES_V6: &str = "CAS_RANGES_V6";
/// Per-CPU array of [`crate::RangeStats`], indexed by range id.
pub const RANGE_STATS: &str = "CAS_RANGE_STATS";
/// LRU hash of [`crate::FlowKey`] → [`crate::FlowStats`].
pub const FLOWS: &str = "CAS_FLOWS";
/// Allowed service ports, one bitmap per port profile: array of `u32`
/// words; profile `p`, port `n` is bit `n % 32` of word `p * PORT_WORDS + n / 32`
/// (see [`crate::port_bit`]).
pub const ALLOWED_PORTS: &str = "CAS_ALLOWED_PORTS";
/// Ring buffer of flow records for the agent: [`crate::FlowEvent`]s (a
/// new disallowed flow) and [`crate::FlowEnded`]s (an ended flow whose
/// 5-tuple a new connection reuses), told apart by their first word
/// ([`crate::record_kind`]).
pub const EVENTS: &str = "CAS_EVENTS";
/// Ring buffer of [`crate::Payload`]s: the first bytes of DNS responses
/// and TLS ClientHellos, for the agent to learn names from. A ring of its
/// own, so that a burst of DNS answers never crowds out flow events.
pub const PAYLOADS: &str = "CAS_PAYLOADS";
/// Read-only global (`u8`, set at load): non-zero makes the programs hand
/// DNS responses and ClientHellos over on [`PAYLOADS`]. The kernel knows
/// its value (a frozen map), so with 0 the verifier removes that code.
pub const HANDOFF: &str = "CAS_HANDOFF";
/// Per-CPU array of `u64` datapath counters indexed by [`crate::Counter`].
pub const COUNTERS: &str = "CAS_COUNTERS";
/// Prefilter: bitmaps over the top 16 address bits (array of `u32`
/// words), IPv4 first, then IPv6 (see [`crate::prefilter_bit`]); a clear
/// bit means no range can match, so the trie is skipped. One map for
/// both families keeps one map per lookup site, which lets the verifier
/// inline the lookup.
pub const PREFILTER: &str = "CAS_PREFILTER";
/// Hash of the audited interfaces: ifindex (`u32`) → `u32` (1). The TC
/// egress program counts a forwarded packet only when the interface it
/// arrived on is not in it (it was counted there, at ingress), so that a
/// packet crossing two audited interfaces counts once.
pub const IFACES: &str = "CAS_IFACES";
/// Benchmark baseline: a TC program that only returns.
pub const PROG_BENCH_EMPTY_TC: &str = "cas_bench_empty_tc";
/// Benchmark baseline: an XDP program that only returns.
pub const PROG_BENCH_EMPTY_XDP: &str = "cas_bench_empty_xdp";
/// Benchmark baseline: TC, parsing headers only.
pub const PROG_BENCH_PARSE_TC: &str = "cas_bench_parse_tc";
/// Benchmark baseline: XDP, parsing headers only.
pub const PROG_BENCH_PARSE_XDP: &str = "cas_bench_parse_xdp";
/// TC classifier for egress.
pub const PROG_TC_EGRESS: &str = "cas_tc_egress";
/// TC classifier for ingress.
pub const PROG_TC_INGRESS: &str = "cas_tc_ingress";
/// XDP program for ingress.
pub const PROG_XDP_INGRESS: &str = "cas_xdp_ingress";

/// Map sizes compiled into the object (the agent may resize some before load).
pub mod sizes {
    /// IPv4 prefixes the trie holds. The 2019-11 set has a few hundred; room for
    /// synthetic sets of 100,000 prefixes.
    pub const MAX_RANGES_V4: u32 = 131_072;
    /// IPv6 prefixes the trie holds.
    pub const MAX_RANGES_V6: u32 = 131_072;
    /// Range ids (IPv4 and IPv6 together): size of the per-range counter array.
    pub const MAX_RANGES: u32 = MAX_RANGES_V4 + MAX_RANGES_V6;
    /// Default flow table size (LRU: the least recently used flow is evicted when full;
    /// the agent reports evictions as `flows_evicted`).
    pub const MAX_FLOWS: u32 = 65_536;
    /// Words of one allowed-port bitmap: 65536 ports / 32 bits.
    pub const PORT_WORDS: u32 = 2048;
    /// Words of one family's prefilter bitmap: 65536 values of the top 16 bits / 32.
    pub const PREFILTER_WORDS: u32 = 2048;
    /// Port profiles (distinct allowed-port sets) the datapath holds; the
    /// agent sizes the map to the profiles it uses (8 KiB each).
    pub const MAX_PORT_PROFILES: u32 = 256;
    /// Ring-buffer size in bytes (power of two, multiple of the page size).
    pub const EVENTS_BYTES: u32 = 256 * 1024;
    /// Payload ring size in bytes: about 480 hand-offs of
    /// [`PAYLOAD_BYTES`] (a record always takes its full size).
    pub const PAYLOADS_BYTES: u32 = 1024 * 1024;
    /// Bytes of a DNS response or ClientHello copied to the agent: a whole
    /// first TCP segment at a 1500-byte MTU (1460), the 1232-byte UDP
    /// answers DNS Flag Day 2020 recommends, and a browser's ClientHello
    /// padded to 517 bytes (RFC 7685). A power of two, so that the
    /// verifier sees the copy's bound. Longer payloads are cut here and
    /// counted (`payloads_cut`).
    pub const PAYLOAD_BYTES: usize = 2048;
    /// Interfaces one datapath audits at most ([`crate::names::IFACES`]).
    pub const MAX_IFACES: u32 = 256;
    /// Interfaces a flow remembers ([`crate::FlowStats::ifindexes`]).
    pub const FLOW_IFACES: usize = 4;
    /// Upper bound on IPv6 extension headers walked before giving up on the L4 header.
    pub const MAX_IPV6_EXT_HEADERS: u32 = 6;
}
