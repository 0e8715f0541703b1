//! Header parsing: Ethernet, up to two VLAN tags, IPv4 (with options),
//! IPv6 (bounded extension-header walk), TCP, UDP, ICMP and ICMPv6.
//!
//! Results are plain structs with status codes rather than `Option`s held
//! across helper calls, which keeps the verifier's view of the stack simple.

use cas_audit_common::{family, payload_kind, proto, rules, sizes::MAX_IPV6_EXT_HEADERS};

use crate::packet::Packet;

const ETH_HLEN: u32 = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const VLAN_HLEN: u32 = 4;
/// VLAN tags we step over (802.1Q inside 802.1ad, "QinQ").
const MAX_VLAN_TAGS: u32 = 2;

const IPV6_HLEN: u32 = 40;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;

/// What the network-layer parse found.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum L3Status {
    /// Addresses and transport protocol known; `l4_off` points at its header.
    Ok = 0,
    /// A header is truncated or inconsistent.
    Malformed = 1,
    /// Not IPv4/IPv6 (ARP, too many VLAN tags, ...).
    NotIp = 2,
    /// A non-first fragment: addresses known, no transport header.
    Fragment = 3,
    /// IPv6 extension-header chain longer than we walk: no transport header.
    ExtLimit = 4,
}

/// Network-layer view of a packet.
pub struct L3 {
    pub status: L3Status,
    pub family: u8,
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Offset of the transport header.
    pub l4_off: u32,
    /// Offset just past the IP packet (its length field, or the frame's end
    /// for super-packets and IPv6 jumbograms); headers must end before it.
    pub end: u32,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
}

impl L3 {
    #[inline(always)]
    const fn new(status: L3Status) -> Self {
        L3 {
            status,
            family: 0,
            proto: 0,
            src: [0; 16],
            dst: [0; 16],
            l4_off: 0,
            end: 0,
            ttl: 0,
        }
    }
}

/// Parses link and network layers. `gso` relaxes the IP length check, which
/// does not hold for GSO/GRO super-packets.
#[inline(always)]
pub fn parse_l3<P: Packet>(pkt: &P, gso: bool) -> L3 {
    let len = pkt.frame_len();
    let mut off = ETH_HLEN - 2;
    let Ok(mut ethertype) = pkt.load::<[u8; 2]>(off).map(u16::from_be_bytes) else {
        return L3::new(L3Status::Malformed);
    };
    off = ETH_HLEN;
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        // The tag's own EtherType follows its 2-byte TCI.
        let Ok(inner) = pkt.load::<[u8; 2]>(off + 2) else {
            return L3::new(L3Status::Malformed);
        };
        ethertype = u16::from_be_bytes(inner);
        off += VLAN_HLEN;
        tags += 1;
    }
    match ethertype {
        ETH_P_IP => parse_ipv4(pkt, off, len, gso),
        ETH_P_IPV6 => parse_ipv6(pkt, off, len, gso),
        _ => L3::new(L3Status::NotIp),
    }
}

#[inline(always)]
fn parse_ipv4<P: Packet>(pkt: &P, off: u32, len: u32, gso: bool) -> L3 {
    let Ok(h) = pkt.load::<[u8; 20]>(off) else {
        return L3::new(L3Status::Malformed);
    };
    let version = h[0] >> 4;
    let ihl = ((h[0] & 0x0f) as u32) * 4;
    let tot_len = u16::from_be_bytes([h[2], h[3]]) as u32;
    if version != 4 || ihl < 20 {
        return L3::new(L3Status::Malformed);
    }
    // BIG TCP super-packets carry tot_len 0; any other packet must hold its
    // whole header and must not claim more bytes than the frame has.
    if !gso && (tot_len < ihl || off + tot_len > len) {
        return L3::new(L3Status::Malformed);
    }
    if off + ihl > len {
        return L3::new(L3Status::Malformed);
    }
    let mut l3 = L3::new(L3Status::Ok);
    l3.family = family::V4;
    l3.proto = h[9];
    l3.ttl = h[8];
    l3.src[..4].copy_from_slice(&h[12..16]);
    l3.dst[..4].copy_from_slice(&h[16..20]);
    l3.l4_off = off + ihl;
    l3.end = if gso || tot_len == 0 {
        len
    } else {
        off + tot_len
    };
    let frag_off = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    if frag_off != 0 {
        l3.status = L3Status::Fragment;
    }
    l3
}

#[inline(always)]
fn parse_ipv6<P: Packet>(pkt: &P, off: u32, len: u32, gso: bool) -> L3 {
    let Ok(h) = pkt.load::<[u8; 40]>(off) else {
        return L3::new(L3Status::Malformed);
    };
    if h[0] >> 4 != 6 {
        return L3::new(L3Status::Malformed);
    }
    let payload_len = u16::from_be_bytes([h[4], h[5]]) as u32;
    if !gso && payload_len != 0 && off + IPV6_HLEN + payload_len > len {
        return L3::new(L3Status::Malformed);
    }
    // A payload length of 0 is a jumbogram only with a Jumbo Payload
    // option (RFC 2675); a super-packet (`gso`) has none and needs none.
    if !gso && payload_len == 0 && !is_jumbogram(pkt, off, h[6], len) {
        return L3::new(L3Status::Malformed);
    }
    let mut l3 = L3::new(L3Status::Ok);
    l3.family = family::V6;
    l3.end = if gso || payload_len == 0 {
        len
    } else {
        off + IPV6_HLEN + payload_len
    };
    l3.ttl = h[7];
    l3.src.copy_from_slice(&h[8..24]);
    l3.dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut cur = off + IPV6_HLEN;
    let mut walked = 0;
    while walked < MAX_IPV6_EXT_HEADERS {
        let ext_len = match next {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let Ok(e) = pkt.load::<[u8; 2]>(cur) else {
                    return L3::new(L3Status::Malformed);
                };
                next = e[0];
                (e[1] as u32 + 1) * 8
            }
            NEXTHDR_AUTH => {
                let Ok(e) = pkt.load::<[u8; 2]>(cur) else {
                    return L3::new(L3Status::Malformed);
                };
                next = e[0];
                (e[1] as u32 + 2) * 4
            }
            NEXTHDR_FRAGMENT => {
                let Ok(e) = pkt.load::<[u8; 4]>(cur) else {
                    return L3::new(L3Status::Malformed);
                };
                next = e[0];
                if u16::from_be_bytes([e[2], e[3]]) >> 3 != 0 {
                    l3.status = L3Status::Fragment;
                }
                8
            }
            _ => break,
        };
        cur += ext_len;
        walked += 1;
        if l3.status == L3Status::Fragment {
            break;
        }
    }
    // The chain must fit in the packet, whatever follows it.
    if cur > l3.end {
        return L3::new(L3Status::Malformed);
    }
    l3.proto = next;
    l3.l4_off = cur;
    if l3.status == L3Status::Ok
        && matches!(
            next,
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_AUTH | NEXTHDR_FRAGMENT
        )
    {
        l3.status = L3Status::ExtLimit;
    }
    l3
}

/// Option type of the Jumbo Payload option (RFC 2675 section 2).
const IPV6_TLV_JUMBO: u8 = 0xC2;

/// Whether the IPv6 packet at `off` (next header `next`, payload length 0)
/// is a jumbogram as RFC 2675 defines it: a Hop-by-Hop Options header whose
/// first option is the Jumbo Payload option (type 0xC2, length 4, at the
/// 4n+2 alignment it requires), with a Jumbo Payload Length above 65,535
/// that the frame holds.
#[inline(always)]
fn is_jumbogram<P: Packet>(pkt: &P, off: u32, next: u8, len: u32) -> bool {
    if next != NEXTHDR_HOP {
        return false;
    }
    let Ok(o) = pkt.load::<[u8; 8]>(off + IPV6_HLEN) else {
        return false;
    };
    let jumbo = u32::from_be_bytes([o[4], o[5], o[6], o[7]]);
    o[2] == IPV6_TLV_JUMBO
        && o[3] == 4
        && jumbo > 0xffff
        && (off + IPV6_HLEN) as u64 + jumbo as u64 <= len as u64
}

/// Transport-layer view of a packet. Ports are in host byte order.
pub struct L4 {
    pub ok: bool,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u32,
    /// Offset just past the transport header (for per-segment header bytes).
    pub hdr_end: u32,
    /// Whether payload follows the transport header.
    pub payload: bool,
    /// ICMP/ICMPv6 type and code (0 for other protocols).
    pub icmp_type: u8,
    pub icmp_code: u8,
}

impl L4 {
    /// No transport header (a fragment, an extension-header chain too long).
    #[inline(always)]
    pub const fn none() -> L4 {
        L4 {
            ok: false,
            src_port: 0,
            dst_port: 0,
            tcp_flags: 0,
            hdr_end: 0,
            payload: false,
            icmp_type: 0,
            icmp_code: 0,
        }
    }
}

/// Whether a plain packet ([`quick_addrs`]) of protocol `proto` whose
/// transport header is at `l4_off` (the packet ending at `end`) may be a
/// DNS response or a ClientHello ([`rules::handoff`] on its ports; to port
/// 443, a payload starting with a TLS handshake record): such packets take
/// the full parse. Every other packet to port 443 (ACKs, application data)
/// stays on the fast path.
#[inline(always)]
pub fn quick_handoff<P: Packet>(pkt: &P, proto: u8, l4_off: u32, end: u32) -> bool {
    // Ports, sequence and acknowledgment numbers, data offset (TCP); a
    // UDP header and the start of its DNS message.
    let Some(h) = pkt.peek::<[u8; 14]>(l4_off) else {
        return false;
    };
    let what = rules::handoff(
        proto,
        u16::from_be_bytes([h[0], h[1]]),
        u16::from_be_bytes([h[2], h[3]]),
    );
    if what != payload_kind::TLS_HELLO {
        return what != 0;
    }
    // The payload's first byte: one byte read at its own offset (the
    // data offset is at most 60), straight from the linear area when it is
    // there, else through the load-bytes helper (a socket's TCP payload
    // often sits in the skb's pages past the linear area: every forwarded
    // ClientHello of a LAN host).
    let doff = (h[12] >> 4) as u32 * 4;
    if l4_off + doff >= end {
        return false;
    }
    pkt.peek_byte(l4_off, doff)
        .or_else(|| pkt.load_byte(l4_off + doff))
        == Some(rules::TLS_HANDSHAKE)
}

/// Parses the transport header at `l3.l4_off`. Protocols without ports give
/// zero ports; `ok` is false when the header is truncated or inconsistent.
#[inline(always)]
pub fn parse_l4<P: Packet>(pkt: &P, l3: &L3) -> L4 {
    let off = l3.l4_off;
    let mut l4 = L4 {
        ok: true,
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        hdr_end: off,
        payload: false,
        icmp_type: 0,
        icmp_code: 0,
    };
    match l3.proto {
        proto::TCP => match pkt.load::<[u8; 20]>(off) {
            Ok(h) => {
                let doff = ((h[12] >> 4) as u32) * 4;
                if doff < 20 || off + doff > l3.end {
                    l4.ok = false;
                }
                l4.src_port = u16::from_be_bytes([h[0], h[1]]);
                l4.dst_port = u16::from_be_bytes([h[2], h[3]]);
                l4.tcp_flags = h[13] as u32;
                l4.hdr_end = off + doff;
            }
            Err(()) => l4.ok = false,
        },
        proto::UDP => match pkt.load::<[u8; 8]>(off) {
            Ok(h) => {
                l4.src_port = u16::from_be_bytes([h[0], h[1]]);
                l4.dst_port = u16::from_be_bytes([h[2], h[3]]);
                l4.hdr_end = off + 8;
                l4.ok = l4.hdr_end <= l3.end;
            }
            Err(()) => l4.ok = false,
        },
        proto::ICMP | proto::ICMPV6 => match pkt.load::<[u8; 4]>(off) {
            Ok(h) => {
                l4.icmp_type = h[0];
                l4.icmp_code = h[1];
                l4.hdr_end = off + 4;
                l4.ok = l4.hdr_end <= l3.end;
            }
            Err(()) => l4.ok = false,
        },
        _ => {}
    }
    l4.payload = l3.end > l4.hdr_end;
    l4
}

/// ICMP destination unreachable.
const ICMP_DEST_UNREACH: u8 = 3;
/// ICMP "fragmentation needed": path-MTU discovery, not a rejection.
const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6 destination unreachable.
const ICMPV6_DEST_UNREACH: u8 = 1;
/// Bytes of the ICMP error header before the quoted packet.
const ICMP_ERROR_HLEN: u32 = 8;

/// The packet an ICMP destination-unreachable error quotes: its addresses,
/// protocol and ports (the first 8 bytes of its transport header, which
/// every error carries). `ok` is false for anything else.
pub struct Quoted {
    pub ok: bool,
    pub family: u8,
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
}

/// Parses the packet quoted by an ICMP (type 3, except code 4) or ICMPv6
/// (type 1) destination-unreachable error. The quote must be the same
/// family as the error and a TCP or UDP packet (an IPv6 quote without
/// extension headers); other quotes are left to the normal path.
#[inline(always)]
pub fn parse_quoted<P: Packet>(pkt: &P, l3: &L3, l4: &L4) -> Quoted {
    let mut q = Quoted {
        ok: false,
        family: 0,
        proto: 0,
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
    };
    let is_error = if l3.proto == proto::ICMP {
        l4.icmp_type == ICMP_DEST_UNREACH && l4.icmp_code != ICMP_FRAG_NEEDED
    } else {
        l3.proto == proto::ICMPV6 && l4.icmp_type == ICMPV6_DEST_UNREACH
    };
    if !is_error {
        return q;
    }
    let off = l3.l4_off + ICMP_ERROR_HLEN;
    let l4_off = if l3.family == family::V4 {
        let Ok(h) = pkt.load::<[u8; 20]>(off) else {
            return q;
        };
        let ihl = ((h[0] & 0x0f) as u32) * 4;
        if h[0] >> 4 != 4 || ihl < 20 {
            return q;
        }
        q.proto = h[9];
        q.src[..4].copy_from_slice(&h[12..16]);
        q.dst[..4].copy_from_slice(&h[16..20]);
        off + ihl
    } else {
        let Ok(h) = pkt.load::<[u8; 40]>(off) else {
            return q;
        };
        if h[0] >> 4 != 6 {
            return q;
        }
        q.proto = h[6];
        q.src.copy_from_slice(&h[8..24]);
        q.dst.copy_from_slice(&h[24..40]);
        off + IPV6_HLEN
    };
    if q.proto != proto::TCP && q.proto != proto::UDP {
        return q;
    }
    let Ok(ports) = pkt.load::<[u8; 4]>(l4_off) else {
        return q;
    };
    if l4_off + 4 > l3.end {
        return q;
    }
    q.src_port = u16::from_be_bytes([ports[0], ports[1]]);
    q.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
    q.family = l3.family;
    q.ok = true;
    q
}

/// The fast path's answer for a packet (see [`quick_addrs`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Quick {
    /// Not a packet the fast path decides: take the full parse.
    Slow,
    /// A plain packet of `family` whose source and destination addresses
    /// start with the 16 bits `src_hi` and `dst_hi` (network byte order).
    Addrs {
        /// [`family::V4`] or [`family::V6`].
        family: u8,
        /// Its transport protocol.
        proto: u8,
        /// Offset of its transport header.
        l4_off: u32,
        /// Offset just past the IP packet.
        end: u32,
        /// The source address's top 16 bits.
        src_hi: u16,
        /// The destination address's top 16 bits.
        dst_hi: u16,
    },
}

/// The fast path's view of a common packet: family and the top 16 bits of
/// both addresses (either may be the CAS side), or [`Quick::Slow`].
///
/// Only untagged IPv4 without options and IPv6 without extension headers,
/// both with consistent lengths, entirely in the linear area, and not ICMP
/// (which may quote a CAS flow), qualify. For
/// those the full parse would find nothing malformed before the address
/// lookup either, so a prefilter miss here is exactly a miss there: the
/// counters are the same whichever path a packet takes.
#[inline(always)]
pub fn quick_addrs<P: Packet>(pkt: &P) -> Quick {
    let len = pkt.frame_len();
    let Some(h) = pkt.peek::<[u8; 34]>(0) else {
        return Quick::Slow;
    };
    match u16::from_be_bytes([h[12], h[13]]) {
        ETH_P_IP => {
            let tot_len = u16::from_be_bytes([h[16], h[17]]) as u32;
            // ICMP may be an error about a CAS flow from a non-CAS router.
            if h[14] != 0x45 || tot_len < 20 || ETH_HLEN + tot_len > len || h[23] == proto::ICMP {
                return Quick::Slow;
            }
            Quick::Addrs {
                family: family::V4,
                proto: h[23],
                l4_off: ETH_HLEN + 20,
                end: ETH_HLEN + tot_len,
                src_hi: u16::from_be_bytes([h[26], h[27]]),
                dst_hi: u16::from_be_bytes([h[30], h[31]]),
            }
        }
        ETH_P_IPV6 => {
            let payload_len = u16::from_be_bytes([h[18], h[19]]) as u32;
            if h[14] >> 4 != 6
                || payload_len == 0
                || ETH_HLEN + IPV6_HLEN + payload_len > len
                || !matches!(h[20], proto::TCP | proto::UDP)
            {
                return Quick::Slow;
            }
            // The destination starts at 38: read its top bits on their own.
            let Some(d) = pkt.peek::<[u8; 2]>(ETH_HLEN + 24) else {
                return Quick::Slow;
            };
            Quick::Addrs {
                family: family::V6,
                proto: h[20],
                l4_off: ETH_HLEN + IPV6_HLEN,
                end: ETH_HLEN + IPV6_HLEN + payload_len,
                src_hi: u16::from_be_bytes([h[22], h[23]]),
                dst_hi: u16::from_be_bytes(d),
            }
        }
        _ => Quick::Slow,
    }
}
