//! Types shared by the cas-audit kernel programs (`cas-audit-ebpf`) and the
//! agent (`cas-audit`).
//!
//! Every type here crosses the user/kernel boundary through a BPF map or the
//! event ring buffer, so each is `#[repr(C)]` with its padding spelled out as
//! named fields that both sides zero. With the `user` feature the types
//! implement [`aya::Pod`] so the agent can read and write them in maps.
#![no_std]

/// Names of the maps and programs in the eBPF object, so the agent and the
/// kernel side cannot drift apart.
pub mod names {
    /// LPM trie of IPv4 CAS prefixes: `Key<[u8; 4]>` (network byte order) → [`crate::RangeValue`].
    pub const RANGES_V4: &str = "CAS_RANGES_V4";
    /// LPM trie of IPv6 CAS prefixes: `Key<[u8; 16]>` (network byte order) → [`crate::RangeValue`].
    pub const RANGES_V6: &str = "CAS_RANGES_V6";
    /// Per-CPU array of [`crate::RangeStats`], indexed by range id.
    pub const RANGE_STATS: &str = "CAS_RANGE_STATS";
    /// LRU hash of [`crate::FlowKey`] → [`crate::FlowStats`].
    pub const FLOWS: &str = "CAS_FLOWS";
    /// Allowed service ports, one bitmap per port profile: array of `u32`
    /// words; profile `p`, port `n` is bit `n % 32` of word `p * PORT_WORDS + n / 32`.
    pub const ALLOWED_PORTS: &str = "CAS_ALLOWED_PORTS";
    /// Ring buffer of [`crate::FlowEvent`]s.
    pub const EVENTS: &str = "CAS_EVENTS";
    /// Per-CPU array of `u64` datapath counters indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "CAS_COUNTERS";
    /// Prefilter: bitmaps over the top 16 address bits (array of `u32`
    /// words), IPv4 first, then IPv6 (see [`crate::prefilter_bit`]); a clear
    /// bit means no range can match, so the trie is skipped. One map for
    /// both families keeps one map per lookup site, which lets the verifier
    /// inline the lookup.
    pub const PREFILTER: &str = "CAS_PREFILTER";
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
}

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
    /// Upper bound on IPv6 extension headers walked before giving up on the L4 header.
    pub const MAX_IPV6_EXT_HEADERS: u32 = 6;
}

/// Direction of a packet relative to the audited host or network.
///
/// `Out` is a packet leaving through the interface (egress): its destination
/// is the remote (CAS) side. `In` arrives (ingress): its source is the remote side.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Egress: local → remote.
    Out = 0,
    /// Ingress: remote → local.
    In = 1,
}

/// Who opened a TCP connection, as learned from the first SYN (without ACK).
pub mod initiator {
    /// The start of the connection was not seen (or the flow is not TCP).
    pub const UNKNOWN: u8 = 0;
    /// The local side sent the first SYN.
    pub const LOCAL: u8 = 1;
    /// The remote (CAS) side sent the first SYN.
    pub const REMOTE: u8 = 2;
}

/// Address families as stored in [`FlowKey::family`].
pub mod family {
    /// IPv4: the address occupies the first 4 bytes, the rest are zero.
    pub const V4: u8 = 4;
    /// IPv6.
    pub const V6: u8 = 6;
}

/// IP protocol numbers the datapath understands.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// TCP flag bits as they appear in byte 13 of the TCP header.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u32 = 0x01;
    /// SYN.
    pub const SYN: u32 = 0x02;
    /// RST.
    pub const RST: u32 = 0x04;
    /// PSH.
    pub const PSH: u32 = 0x08;
    /// ACK.
    pub const ACK: u32 = 0x10;
    /// URG.
    pub const URG: u32 = 0x20;
    /// ECE.
    pub const ECE: u32 = 0x40;
    /// CWR.
    pub const CWR: u32 = 0x80;
    /// Names in bit order, for presentation.
    pub const NAMES: [(u32, &str); 8] = [
        (FIN, "FIN"),
        (SYN, "SYN"),
        (RST, "RST"),
        (PSH, "PSH"),
        (ACK, "ACK"),
        (URG, "URG"),
        (ECE, "ECE"),
        (CWR, "CWR"),
    ];
}

/// Global datapath counters (per-CPU `u64`, index into [`names::COUNTERS`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Packets the programs looked at (wire packets: GSO segments counted).
    Packets = 0,
    /// Packets whose remote address is in a CAS range.
    Matched = 1,
    /// Truncated or malformed packets (passed untouched, not counted elsewhere).
    Malformed = 2,
    /// Packets that are not IPv4/IPv6 (ARP, LLDP, more than two VLAN tags, ...).
    NotIp = 3,
    /// CAS packets counted per range but not per flow: non-first IP fragments.
    Fragments = 4,
    /// CAS packets counted per range but not per flow: IPv6 extension-header
    /// chain longer than [`sizes::MAX_IPV6_EXT_HEADERS`].
    ExtHeaderLimit = 5,
    /// Flow events that did not fit in the ring buffer.
    EventsLost = 6,
    /// Flows created in the kernel flow table.
    FlowsCreated = 7,
    /// Flow-table inserts that failed (the packet is still counted per range).
    FlowInsertFailed = 8,
    /// Flow events emitted.
    Events = 9,
    /// ICMP/ICMPv6 destination-unreachable errors that quoted a packet of a
    /// flow in the table (attached to that flow).
    IcmpErrors = 10,
    /// Such errors quoting a CAS address whose flow was not in the table
    /// (never seen, or already reported and removed).
    IcmpUnmatched = 11,
}

impl Counter {
    /// Number of counters (size of the counter array).
    pub const COUNT: u32 = 12;
    /// All counters in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Packets,
        Counter::Matched,
        Counter::Malformed,
        Counter::NotIp,
        Counter::Fragments,
        Counter::ExtHeaderLimit,
        Counter::EventsLost,
        Counter::FlowsCreated,
        Counter::FlowInsertFailed,
        Counter::Events,
        Counter::IcmpErrors,
        Counter::IcmpUnmatched,
    ];
}

/// Value of the prefix tries: which range a prefix is and which allowed-port
/// profile judges its flows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeValue {
    /// Range id: index into the per-range counters, resolved to the range's
    /// prefix and tags by the agent.
    pub id: u32,
    /// Allowed-port profile of the range.
    pub ports: u32,
}

/// Packet and byte counters of one CAS range (one per CPU; the agent sums them).
///
/// Bytes are link-layer frame bytes (Ethernet header included, FCS excluded).
/// For GSO/GRO super-packets `packets` counts the wire segments and `bytes`
/// adds the replicated headers of each segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeStats {
    /// Packets towards the range (egress).
    pub packets_out: u64,
    /// Bytes towards the range (egress).
    pub bytes_out: u64,
    /// Packets from the range (ingress).
    pub packets_in: u64,
    /// Bytes from the range (ingress).
    pub bytes_in: u64,
}

/// Key of the flow table, normalised so both directions of a conversation
/// land on one entry: "local" is the host side, "remote" the CAS side.
///
/// IPv4 addresses use the first four bytes of the 16-byte fields and leave the
/// rest zero. Ports are in host byte order; zero for protocols without ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Local (host-side) address, network byte order.
    pub local_addr: [u8; 16],
    /// Remote (CAS-side) address, network byte order.
    pub remote_addr: [u8; 16],
    /// Interface index the flow was seen on.
    pub ifindex: u32,
    /// Local port (host byte order).
    pub local_port: u16,
    /// Remote port (host byte order).
    pub remote_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// [`family::V4`] or [`family::V6`].
    pub family: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 2],
}

/// State of one flow. Counters are updated with atomic adds; the agent reads
/// a snapshot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// First packet, `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub first_seen_ns: u64,
    /// Last packet, `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub last_seen_ns: u64,
    /// Packets local → remote.
    pub packets_out: u64,
    /// Bytes local → remote.
    pub bytes_out: u64,
    /// Packets remote → local.
    pub packets_in: u64,
    /// Bytes remote → local.
    pub bytes_in: u64,
    /// [`history`] bits of the events seen so far (64-bit: the eBPF
    /// target's atomic fetch-or is 64-bit only). A letter's slot in
    /// `history` is the number of bits set before its own.
    pub history_mask: u64,
    /// Range id of the remote address (index into the range counters).
    pub range_id: u32,
    /// Union of the TCP flags local → remote ([`tcp_flags`] bits).
    pub tcp_flags_out: u32,
    /// Union of the TCP flags remote → local.
    pub tcp_flags_in: u32,
    /// ICMP/ICMPv6 errors that quoted one of this flow's packets.
    pub icmp_errors: u32,
    /// [`initiator`] value: who sent the first SYN.
    pub initiator: u8,
    /// Direction of the first packet seen ([`Direction`] as `u8`); the
    /// history's originator.
    pub first_dir: u8,
    /// Non-zero when the kernel emitted a disallowed-port event for this flow.
    pub flagged: u8,
    /// IP TTL / hop limit of the first RST from the remote side (0: none).
    pub rst_ttl: u8,
    /// Type of the last ICMP error quoting this flow (valid when `icmp_errors > 0`).
    pub icmp_type: u8,
    /// Its code.
    pub icmp_code: u8,
    /// Family of `reporter` ([`family`] value).
    pub reporter_family: u8,
    /// Explicit padding, always zero.
    pub _pad: u8,
    /// Zeek-style connection history: one letter per event kind and side,
    /// in order of first occurrence (see [`history`]); unused bytes are zero.
    pub history: [u8; 16],
    /// Source address of the last ICMP error (the router or firewall that
    /// sent it), network byte order.
    pub reporter: [u8; 16],
}

/// Zeek-style history letters. The originator is the side that sent the
/// flow's first packet (upper case), the responder the other (lower case).
pub mod history {
    /// SYN without ACK.
    pub const SYN: u64 = 1 << 0;
    /// SYN with ACK.
    pub const SYN_ACK: u64 = 1 << 1;
    /// A pure ACK (no payload, no SYN/FIN/RST).
    pub const ACK: u64 = 1 << 2;
    /// Payload (TCP data or a UDP/ICMP datagram with a body).
    pub const DATA: u64 = 1 << 3;
    /// FIN.
    pub const FIN: u64 = 1 << 4;
    /// RST.
    pub const RST: u64 = 1 << 5;
    /// Event kinds per side; the responder's bits are the originator's
    /// shifted left by this.
    pub const KINDS: u32 = 6;
    /// Letters of the kinds, originator side (upper case).
    pub const LETTERS: [u8; 6] = *b"SHADFR";

    /// The event kinds one packet shows: for TCP from its flags and whether
    /// it carries payload; any other packet is a datagram (`DATA`).
    #[inline(always)]
    pub const fn kinds(proto: u8, flags: u32, payload: bool) -> u64 {
        use super::tcp_flags as f;
        if proto != super::proto::TCP {
            return DATA;
        }
        let mut k = 0;
        if flags & f::SYN != 0 {
            k |= if flags & f::ACK != 0 { SYN_ACK } else { SYN };
        }
        if flags & f::FIN != 0 {
            k |= FIN;
        }
        if flags & f::RST != 0 {
            k |= RST;
        }
        if payload {
            k |= DATA;
        } else if flags & (f::SYN | f::FIN | f::RST) == 0 && flags & f::ACK != 0 {
            k |= ACK;
        }
        k
    }

    /// The letter of kind bit `kind` (0..KINDS) for the originator or the
    /// responder.
    #[inline(always)]
    pub const fn letter(kind: u32, originator: bool) -> u8 {
        let l = LETTERS[kind as usize];
        if originator {
            l
        } else {
            l.to_ascii_lowercase()
        }
    }
}

/// Ring-buffer record: a new flow whose service port is not allowed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// When the kernel saw it (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    /// The flow.
    pub key: FlowKey,
    /// Range id of the remote address.
    pub range_id: u32,
    /// The service port the kernel judged (host byte order).
    pub service_port: u16,
    /// [`initiator`] value at creation.
    pub initiator: u8,
    /// Direction of the packet that created the flow.
    pub dir: u8,
    /// Wire packets of that first packet (GSO segments).
    pub packets: u32,
    /// Its bytes (headers replicated per segment).
    pub bytes: u32,
    /// Its TCP flags ([`tcp_flags`] bits; 0 for other protocols).
    pub tcp_flags: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 3],
}

/// The service port of a flow: the port the conversation is *for*.
///
/// For TCP with a known initiator it is the port of the side that did not
/// send the first SYN. Otherwise (start not seen, UDP, ...) it is the remote
/// (CAS) side's port, unless only the local port is an allowed port.
/// `allowed` tells whether a port is allowed. Kernel and agent share this
/// function so that they always agree.
#[inline(always)]
pub fn service_port(
    initiator_: u8,
    local_port: u16,
    remote_port: u16,
    allowed: impl Fn(u16) -> bool,
) -> u16 {
    let local_serves = initiator_ == initiator::REMOTE
        || (initiator_ == initiator::UNKNOWN && !allowed(remote_port) && allowed(local_port));
    if local_serves {
        local_port
    } else {
        remote_port
    }
}

/// Word index and bit mask of the prefilter bit for an address of family
/// `fam` ([`family::V4`] or [`family::V6`]) whose top 16 bits (network byte
/// order, first two bytes) are `hi`.
#[inline(always)]
pub fn prefilter_bit(fam: u8, hi: u16) -> (u32, u32) {
    let base = if fam == family::V4 {
        0
    } else {
        sizes::PREFILTER_WORDS
    };
    (base + ((hi as u32) >> 5), 1u32 << (hi as u32 & 31))
}

/// Word index (in the allowed-port map) and bit mask of `port` in `profile`.
#[inline(always)]
pub fn port_bit(profile: u32, port: u16) -> (u32, u32) {
    (
        profile * sizes::PORT_WORDS + ((port as u32) >> 5),
        1u32 << (port as u32 & 31),
    )
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all four types are #[repr(C)], contain only integers and byte
    // arrays, and have no implicit padding (explicit `_pad` fields instead),
    // so every bit pattern is valid and they can be copied to and from maps.
    unsafe impl aya::Pod for super::RangeValue {}
    unsafe impl aya::Pod for super::RangeStats {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowStats {}
    unsafe impl aya::Pod for super::FlowEvent {}
}

// Layout checks: the kernel and the agent must agree byte for byte.
const _: () = assert!(core::mem::size_of::<RangeValue>() == 8);
const _: () = assert!(core::mem::size_of::<RangeStats>() == 32);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 44);
const _: () = assert!(core::mem::size_of::<FlowStats>() == 112);
const _: () = assert!(core::mem::size_of::<FlowEvent>() == 72);
