//! The types that cross the user/kernel boundary through a BPF map or the
//! event ring buffer, and the encodings of the bitmap maps.
//!
//! Every type is `#[repr(C)]` with its padding spelled out as named fields
//! that both sides zero; the sizes are asserted at the end of this file. With
//! the `user` feature the types implement [`aya::Pod`] so the agent can read
//! and write them in maps.
//!
//! Clocks: every `*_ns` timestamp is CLOCK_MONOTONIC nanoseconds (the clock
//! of `bpf_ktime_get_ns`), except [`FlowStats::last_seen_ns`], which may be
//! CLOCK_MONOTONIC_COARSE after a flow's first packet (see there).

use crate::sizes;

/// Direction of a packet relative to the CAS side, whichever hook sees it.
///
/// `Out` travels towards the remote (CAS) side: its destination is in a CAS
/// range. `In` comes from it: its source is in a CAS range and its
/// destination is not (or, between two CAS addresses, it answers a flow
/// whose first packet went the other way; see [`crate::rules::remote_side`]).
/// On an uplink, egress packets are usually `Out`; on the LAN-facing
/// interface of a router, egress packets are usually `In`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Towards CAS: local → remote.
    Out = 0,
    /// From CAS: remote → local.
    In = 1,
}

impl Direction {
    /// The direction stored as `v` in a map value (`0` out, anything else in).
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Direction {
        if v == Direction::Out as u8 {
            Direction::Out
        } else {
            Direction::In
        }
    }
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
/// adds the replicated headers of each segment. A packet is counted at the
/// first audited hook it meets on this host (see [`crate::names::IFACES`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeStats {
    /// Packets towards the range ([`Direction::Out`]).
    pub packets_out: u64,
    /// Bytes towards the range.
    pub bytes_out: u64,
    /// Packets from the range ([`Direction::In`]).
    pub packets_in: u64,
    /// Bytes from the range.
    pub bytes_in: u64,
}

/// Key of the flow table, normalised so both directions of a conversation
/// land on one entry: "local" is the host side, "remote" the CAS side.
///
/// It holds no interface: a connection seen on several audited interfaces
/// with the same addresses (a router without NAT, an asymmetric path) is
/// one entry, which lists the interfaces in [`FlowStats::ifindexes`].
/// IPv4 addresses use the first four bytes of the 16-byte fields and leave the
/// rest zero. Ports are in host byte order; zero for protocols without ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Local (host-side) address, network byte order.
    pub local_addr: [u8; 16],
    /// Remote (CAS-side) address, network byte order.
    pub remote_addr: [u8; 16],
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
    /// First packet: `bpf_ktime_get_ns` (CLOCK_MONOTONIC, nanoseconds).
    pub first_seen_ns: u64,
    /// Last packet: `bpf_ktime_get_ns` for a TCP packet with SYN, FIN or
    /// RST, else `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE, one
    /// scheduler tick of resolution, 1 to 10 ms), which may lag the precise
    /// clock by up to a tick and then leaves the value as it was. So a TCP
    /// connection's last FIN or RST is exact, and other packets are seen
    /// to within a tick; never earlier than `first_seen_ns`.
    pub last_seen_ns: u64,
    /// Packets local → remote.
    pub packets_out: u64,
    /// Bytes local → remote.
    pub bytes_out: u64,
    /// Packets remote → local.
    pub packets_in: u64,
    /// Bytes remote → local.
    pub bytes_in: u64,
    /// [`crate::history`] bits of the events seen so far (64-bit: the eBPF
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
    /// in order of first occurrence (see [`crate::history`]); unused bytes are zero.
    pub history: [u8; 16],
    /// Source address of the last ICMP error (the router or firewall that
    /// sent it), network byte order.
    pub reporter: [u8; 16],
    /// Indexes of the audited interfaces the flow was seen on, in order of
    /// first sight; unused slots are zero. A fifth interface is not
    /// remembered (the packets are still counted).
    pub ifindexes: [u32; sizes::FLOW_IFACES],
}

/// The first word of every ring-buffer record: which record it is.
pub mod record_kind {
    /// A [`crate::FlowEvent`].
    pub const FLAGGED: u32 = 1;
    /// A [`crate::FlowEnded`].
    pub const ENDED: u32 = 2;
    /// A [`crate::Payload`] (on the payload ring).
    pub const PAYLOAD: u32 = 3;
}

/// What a [`Payload`] holds ([`crate::rules::handoff`] decides).
pub mod payload_kind {
    /// A DNS message from UDP source port 53 (RFC 1035 section 4.2.1).
    pub const DNS_UDP: u8 = 1;
    /// The first bytes of a TCP segment from port 53: a DNS message behind
    /// its two-byte length (RFC 1035 section 4.2.2), when the segment
    /// starts one.
    pub const DNS_TCP: u8 = 2;
    /// A TLS record opening a handshake with a ClientHello (RFC 8446
    /// section 4.1.2), sent to TCP port 443.
    pub const TLS_HELLO: u8 = 3;
}

/// The fixed part of a [`Payload`] record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PayloadHeader {
    /// [`record_kind::PAYLOAD`].
    pub kind: u32,
    /// Interface the packet was seen on.
    pub ifindex: u32,
    /// When (`bpf_ktime_get_ns`: CLOCK_MONOTONIC, ns).
    pub ts_ns: u64,
    /// Source address, network byte order (IPv4 in the first 4 bytes).
    pub src: [u8; 16],
    /// Destination address, network byte order.
    pub dst: [u8; 16],
    /// Source port (host byte order).
    pub src_port: u16,
    /// Destination port (host byte order).
    pub dst_port: u16,
    /// [`payload_kind`] value.
    pub what: u8,
    /// [`family::V4`] or [`family::V6`].
    pub family: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 2],
    /// Transport payload bytes in the packet (after the TCP or UDP header).
    pub len: u32,
    /// Of those, the bytes in [`Payload::data`]: at most
    /// [`sizes::PAYLOAD_BYTES`].
    pub copied: u32,
}

/// Payload-ring record: the first bytes of a DNS response or a TLS
/// ClientHello, for the agent to learn names from.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Payload {
    /// Who sent it to whom, and how much.
    pub hdr: PayloadHeader,
    /// The transport payload's first [`PayloadHeader::copied`] bytes.
    pub data: [u8; sizes::PAYLOAD_BYTES],
}

/// Ring-buffer record: a new flow whose service port is not allowed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// [`record_kind::FLAGGED`].
    pub kind: u32,
    /// Interface the first packet was seen on.
    pub ifindex: u32,
    /// When the kernel saw it (`bpf_ktime_get_ns`: CLOCK_MONOTONIC, ns).
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
    /// Its [`crate::history`] kinds (originator side: it is the flow's
    /// first packet), so that the agent rebuilds the first-packet state
    /// with the kernel's own rule ([`crate::rules::open_flow`]).
    pub kinds: u8,
    /// Its IP TTL / IPv6 hop limit.
    pub ttl: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 5],
}

/// Ring-buffer record: an ended TCP flow (FIN both ways, or RST) whose
/// 5-tuple a new connection (an opening SYN) reuses. The kernel hands over
/// the ended flow's figures, then resets the entry for the new one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEnded {
    /// [`record_kind::ENDED`].
    pub kind: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// The flow.
    pub key: FlowKey,
    /// Its final state.
    pub stats: FlowStats,
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
    // SAFETY: all seven types are #[repr(C)], contain only integers and byte
    // arrays, and have no implicit padding (explicit `_pad` fields instead),
    // so every bit pattern is valid and they can be copied to and from maps.
    unsafe impl aya::Pod for super::RangeValue {}
    unsafe impl aya::Pod for super::RangeStats {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowStats {}
    unsafe impl aya::Pod for super::FlowEvent {}
    unsafe impl aya::Pod for super::FlowEnded {}
    unsafe impl aya::Pod for super::PayloadHeader {}
}

// Layout checks: the kernel and the agent must agree byte for byte.
const _: () = assert!(core::mem::size_of::<RangeValue>() == 8);
const _: () = assert!(core::mem::size_of::<RangeStats>() == 32);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<FlowStats>() == 128);
const _: () = assert!(core::mem::size_of::<FlowEvent>() == 80);
const _: () = assert!(core::mem::size_of::<FlowEnded>() == 176);
const _: () = assert!(core::mem::size_of::<PayloadHeader>() == 64);
const _: () = assert!(core::mem::size_of::<Payload>() == 64 + sizes::PAYLOAD_BYTES);
