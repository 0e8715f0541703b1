//! Hand-built Ethernet frames: the inputs of the `BPF_PROG_TEST_RUN` tests
//! (`tests/tests/datapath_*.rs`) and of the benchmark (`bench/`: the
//! per-packet program runs, the ring-buffer load and the load generator).
//!
//! A [`Pkt`] describes one packet; [`Pkt::build`] lays it out as a
//! [`Frame`] (the bytes and where each header starts), [`Pkt::bytes`] gives
//! just the bytes. Non-IP frames come from [`ether_frame`] and
//! [`arp_request`].
//!
//! # Layout
//!
//! ```text
//! Ethernet II         dst MAC, src MAC                       12 bytes
//! 0-3 VLAN tags       TPID (0x8100 / 0x88a8), TCI            4 bytes each
//! EtherType           0x0800 (IPv4) / 0x86dd (IPv6)          2 bytes
//! IPv4 + options      RFC 791, IHL 5..15                     20..60 bytes
//!   or IPv6           RFC 8200                               40 bytes
//!      + extension headers ([`Ext`]), in the order given
//! transport           TCP (RFC 9293) with NOP options        20..60 bytes
//!                     UDP (RFC 768)                          8 bytes
//!                     ICMP (RFC 792) / ICMPv6 (RFC 4443)     8 bytes
//!                     nothing for [`Pkt::raw`]
//! payload             bytes 0, 1, 2, ... (mod 256), the quoted packet, or
//!                     given bytes ([`Pkt::data`])
//! ```
//!
//! No preamble, no FCS and no padding to the 60-byte Ethernet minimum.
//! Every multi-byte field is in network byte order (big-endian).
//!
//! # Fixed values
//!
//! - MACs: destination 02:ca:5a:00:00:02, source 02:ca:5a:00:00:01 (the test
//!   bed's lan0 → gw inside pair, see [`Pkt::macs`]).
//! - VLAN tags: PCP 0, DEI 0, VID 100 for the outermost tag, 101 for the
//!   next, ... (see [`Pkt::vlan`] for another VID).
//! - IPv4: TOS 0, identification 0x1234, flags and fragment offset 0
//!   unless [`Pkt::fragment`] or [`Pkt::dont_fragment`], TTL 64
//!   ([`Pkt::ttl`]). IPv6: traffic class and flow label 0, hop limit 64.
//! - TCP: sequence number 0x1000_0001, acknowledgment number 0, window
//!   65535, urgent pointer 0.
//! - ICMP / ICMPv6 echo request: identifier 0x1234, sequence number 1.
//!
//! # Checksums
//!
//! The IPv4 header checksum and the ICMP (v4) echo checksum are correct
//! (RFC 1071, [`checksum`]). The TCP, UDP, ICMPv6 and ICMP error checksums
//! are zero: nothing that reads these frames (the datapath, the test run,
//! a veth in the benchmark's load generator) verifies them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// EtherType of ARP (RFC 826).
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of LLDP (IEEE 802.1AB).
pub const ETH_P_LLDP: u16 = 0x88cc;
/// Tag protocol id of an IEEE 802.1Q (customer) VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// Tag protocol id of an IEEE 802.1ad (service, "QinQ" outer) VLAN tag.
pub const ETH_P_8021AD: u16 = 0x88a8;
/// Length of the Ethernet header without VLAN tags.
pub const ETH_HLEN: usize = 14;

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of GRE.
pub const PROTO_GRE: u8 = 47;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// TCP FIN, as in the header's flags byte.
pub const FIN: u8 = 0x01;
/// TCP SYN.
pub const SYN: u8 = 0x02;
/// TCP RST.
pub const RST: u8 = 0x04;
/// TCP PSH.
pub const PSH: u8 = 0x08;
/// TCP ACK.
pub const ACK: u8 = 0x10;
/// TCP URG.
pub const URG: u8 = 0x20;
/// TCP ECE.
pub const ECE: u8 = 0x40;
/// TCP CWR.
pub const CWR: u8 = 0x80;

/// The destination MAC of every frame unless [`Pkt::macs`] says otherwise.
pub const DST_MAC: [u8; 6] = [0x02, 0xca, 0x5a, 0, 0, 0x02];
/// The source MAC of every frame unless [`Pkt::macs`] says otherwise.
pub const SRC_MAC: [u8; 6] = [0x02, 0xca, 0x5a, 0, 0, 0x01];

/// The home address a type 2 routing header ([`Ext::Routing`]) carries:
/// the test bed's lan host.
pub const ROUTING_HOME_ADDR: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1, 0, 0, 0, 0, 0x2);

/// The transport layer of a [`Pkt`].
#[derive(Clone, Debug)]
pub enum Transport {
    /// TCP with `options` bytes of options (NOPs; a multiple of 4, at most
    /// 40).
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flags byte ([`SYN`], [`ACK`], ...).
        flags: u8,
        /// Bytes of options.
        options: usize,
    },
    /// UDP; the length field covers the payload.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP echo request (type 8), or ICMPv6 echo request (type 128) over
    /// IPv6.
    Echo,
    /// An ICMP (ICMPv6 over IPv6) error of `ty` and `code` with an unused
    /// 4-byte field; the payload is the quoted packet (see
    /// [`Pkt::icmp_error`]).
    IcmpError {
        /// Type (3 destination unreachable; ICMPv6 1).
        ty: u8,
        /// Code.
        code: u8,
    },
    /// Any protocol number with no transport header written (GRE, or the
    /// middle of a fragmented datagram).
    Raw(u8),
}

/// An IPv6 extension header (RFC 8200 section 4), written with the next
/// header number of what follows it.
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    /// Hop-by-hop options (RFC 8200 4.3): 16 bytes, Hdr Ext Len 1, one
    /// PadN option of 12 zero bytes.
    HopByHop,
    /// Routing header type 2 (RFC 6275 6.4): 24 bytes, Hdr Ext Len 2,
    /// segments left 1, home address [`ROUTING_HOME_ADDR`].
    Routing,
    /// Destination options (RFC 8200 4.6): 8 bytes, one PadN option of 4
    /// zero bytes.
    DestOpts,
    /// Fragment header (RFC 8200 4.5): 8 bytes, identification 0xcafe0001.
    Fragment {
        /// Fragment offset in 8-byte units.
        offset: u16,
        /// The M (more fragments) flag.
        more: bool,
    },
    /// Authentication header (RFC 4302) with a 96-bit ICV: 24 bytes
    /// (Payload Len 4), SPI 0x100, sequence number 1, ICV 0xa5 bytes.
    Auth,
    /// Hop-by-hop options (RFC 8200 4.3) holding the Jumbo Payload option
    /// (RFC 2675 section 2): 8 bytes, Hdr Ext Len 0, option type 0xC2,
    /// length 4, then this Jumbo Payload Length. The builder still writes
    /// the IPv6 payload length; a jumbogram has 0 there (set it).
    Jumbo(u32),
}

impl Ext {
    /// Its next header number: 0, 43, 60, 44 or 51.
    pub fn number(self) -> u8 {
        match self {
            Ext::HopByHop | Ext::Jumbo(_) => 0,
            Ext::Routing => 43,
            Ext::Fragment { .. } => 44,
            Ext::Auth => 51,
            Ext::DestOpts => 60,
        }
    }

    /// Its bytes, followed by a header of protocol `next`.
    pub fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Ext::HopByHop => {
                let mut b = vec![next, 1, 1, 12];
                b.extend([0; 12]);
                b
            }
            Ext::DestOpts => vec![next, 0, 1, 4, 0, 0, 0, 0],
            Ext::Jumbo(len) => {
                let mut b = vec![next, 0, 0xc2, 4];
                b.extend(len.to_be_bytes());
                b
            }
            Ext::Routing => {
                let mut b = vec![next, 2, 2, 1, 0, 0, 0, 0];
                b.extend(ROUTING_HOME_ADDR.octets());
                b
            }
            Ext::Fragment { offset, more } => {
                let field = (offset << 3) | u16::from(more);
                let mut b = vec![next, 0];
                b.extend(field.to_be_bytes());
                b.extend(0xcafe_0001u32.to_be_bytes());
                b
            }
            Ext::Auth => {
                let mut b = vec![next, 4, 0, 0];
                b.extend(0x100u32.to_be_bytes()); // SPI
                b.extend(1u32.to_be_bytes()); // sequence number
                b.extend([0xa5; 12]); // ICV
                b
            }
        }
    }
}

/// A packet description; [`Pkt::build`] turns it into an Ethernet frame.
///
/// Built from a constructor ([`Pkt::tcp`], [`Pkt::udp`], [`Pkt::echo`],
/// [`Pkt::icmp_error`], [`Pkt::raw`]) and changed with the builder methods,
/// for example
/// `Pkt::tcp(local, remote, 40000, 443, SYN).tag(ETH_P_8021Q).payload(100)`.
/// The addresses' family decides IPv4 or IPv6.
#[derive(Clone, Debug)]
pub struct Pkt {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    /// VLAN tags (TPID, TCI), outermost first.
    tags: Vec<(u16, u16)>,
    src: IpAddr,
    dst: IpAddr,
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    ip_options: Vec<u8>,
    /// IPv4 flags and fragment offset field (DF = 0x4000, MF = 0x2000).
    frag: u16,
    /// IPv6 extension headers, in order.
    exts: Vec<Ext>,
    transport: Transport,
    payload: Vec<u8>,
    /// IPv4 TTL / IPv6 hop limit.
    ttl: u8,
}

/// A built frame and where its headers are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame, from the destination MAC on.
    pub bytes: Vec<u8>,
    /// Offset of the IP header.
    pub l3_off: usize,
    /// Offset of the transport header (past any IPv4 options or IPv6
    /// extension headers).
    pub l4_off: usize,
    /// Offset just past the transport header: the header bytes every GSO
    /// segment repeats.
    pub l4_end: usize,
}

impl Frame {
    /// Length of the frame in bytes (as the datapath counts it).
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether the frame has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Whether the IP header says version 6.
    pub fn is_v6(&self) -> bool {
        self.bytes[self.l3_off] >> 4 == 6
    }

    /// Cuts the frame to `len` bytes and rewrites the IP length field (and
    /// the IPv4 header checksum) to match, so that only the header the cut
    /// lands in is short.
    pub fn truncated(mut self, len: usize) -> Frame {
        assert!(len <= self.bytes.len());
        self.bytes.truncate(len);
        let ip_len = len - self.l3_off;
        if self.is_v6() {
            self.set_u16(self.l3_off + 4, (ip_len - 40) as u16);
        } else {
            self.set_u16(self.l3_off + 2, ip_len as u16);
            self.fix_ipv4_checksum();
        }
        self
    }

    /// Writes `v` big-endian at byte offset `off`.
    pub fn set_u16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Recomputes the IPv4 header checksum over the IHL the header states
    /// (or up to the end of the frame if that is shorter).
    pub fn fix_ipv4_checksum(&mut self) {
        let ihl = usize::from(self.bytes[self.l3_off] & 0x0f) * 4;
        let end = (self.l3_off + ihl).min(self.bytes.len());
        self.set_u16(self.l3_off + 10, 0);
        let c = checksum(&self.bytes[self.l3_off..end]);
        self.set_u16(self.l3_off + 10, c);
    }
}

/// The Internet checksum (RFC 1071) of `data`, an odd last byte padded
/// with zero: the one's complement of the one's complement sum of its
/// big-endian 16-bit words. Over a header that holds its own correct
/// checksum it is 0.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Pkt {
    /// A packet from `src` to `dst` (both IPv4 or both IPv6) carrying
    /// `transport` and no payload.
    pub fn new(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, transport: Transport) -> Pkt {
        let (src, dst) = (src.into(), dst.into());
        assert_eq!(src.is_ipv6(), dst.is_ipv6(), "mixed address families");
        Pkt {
            dst_mac: DST_MAC,
            src_mac: SRC_MAC,
            tags: Vec::new(),
            src,
            dst,
            ip_options: Vec::new(),
            frag: 0,
            exts: Vec::new(),
            transport,
            payload: Vec::new(),
            ttl: 64,
        }
    }

    /// A TCP segment with `flags` (e.g. `SYN | ACK`), no options and no
    /// payload.
    pub fn tcp(
        src: impl Into<IpAddr>,
        dst: impl Into<IpAddr>,
        sport: u16,
        dport: u16,
        flags: u8,
    ) -> Pkt {
        Pkt::new(
            src,
            dst,
            Transport::Tcp {
                sport,
                dport,
                flags,
                options: 0,
            },
        )
    }

    /// A UDP datagram with no payload.
    pub fn udp(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, sport: u16, dport: u16) -> Pkt {
        Pkt::new(src, dst, Transport::Udp { sport, dport })
    }

    /// An ICMP echo request (ICMPv6 over IPv6).
    pub fn echo(src: impl Into<IpAddr>, dst: impl Into<IpAddr>) -> Pkt {
        Pkt::new(src, dst, Transport::Echo)
    }

    /// IP protocol `proto` with no transport header: what follows the IP
    /// header (and extension headers) is the payload alone.
    pub fn raw(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, proto: u8) -> Pkt {
        Pkt::new(src, dst, Transport::Raw(proto))
    }

    /// An ICMP error (ICMPv6 over IPv6) of type `ty` and `code` from `src`
    /// to `dst` quoting `quoted` from its IP header on, whole (RFC 792
    /// quotes at least 8 bytes past the IP header, RFC 4443 as much as
    /// fits; the datapath needs the ports).
    pub fn icmp_error(
        src: impl Into<IpAddr>,
        dst: impl Into<IpAddr>,
        ty: u8,
        code: u8,
        quoted: &Frame,
    ) -> Pkt {
        let mut p = Pkt::new(src, dst, Transport::IcmpError { ty, code });
        p.payload = quoted.bytes[quoted.l3_off..].to_vec();
        p
    }

    /// Other MAC addresses than [`DST_MAC`] and [`SRC_MAC`].
    pub fn macs(mut self, dst: [u8; 6], src: [u8; 6]) -> Pkt {
        self.dst_mac = dst;
        self.src_mac = src;
        self
    }

    /// Adds a VLAN tag with tag protocol id `tpid` ([`ETH_P_8021Q`],
    /// [`ETH_P_8021AD`]) inside the tags already there; its VID is 100 for
    /// the first tag, 101 for the second, ...
    pub fn tag(self, tpid: u16) -> Pkt {
        let vid = 100 + self.tags.len() as u16;
        self.vlan(tpid, vid)
    }

    /// Adds a VLAN tag with `tpid` and VLAN id `vid` (12 bits; PCP and DEI
    /// 0) inside the tags already there.
    pub fn vlan(mut self, tpid: u16, vid: u16) -> Pkt {
        self.tags.push((tpid, vid & 0x0fff));
        self
    }

    /// IPv4 options: `words` 32-bit words (NOP options ending in EOL).
    pub fn ip_option_words(mut self, words: usize) -> Pkt {
        let mut o = vec![1u8; words * 4];
        if let Some(last) = o.last_mut() {
            *last = 0;
        }
        self.ip_options = o;
        self
    }

    /// IPv4 fragment: `offset` in 8-byte units, `more` = MF.
    pub fn fragment(mut self, offset: u16, more: bool) -> Pkt {
        self.frag = offset | if more { 0x2000 } else { 0 };
        self
    }

    /// IPv4 "don't fragment" flag (DF) set, offset 0.
    pub fn dont_fragment(mut self) -> Pkt {
        self.frag = 0x4000;
        self
    }

    /// Appends an IPv6 extension header (after those already there).
    pub fn ext(mut self, e: Ext) -> Pkt {
        self.exts.push(e);
        self
    }

    /// TCP options: `n` bytes of NOPs (a multiple of 4, at most 40).
    pub fn tcp_options(mut self, n: usize) -> Pkt {
        match &mut self.transport {
            Transport::Tcp { options, .. } => *options = n,
            other => panic!("TCP options on {other:?}"),
        }
        self
    }

    /// IPv4 TTL / IPv6 hop limit (default 64).
    pub fn ttl(mut self, ttl: u8) -> Pkt {
        self.ttl = ttl;
        self
    }

    /// `n` payload bytes after the transport header: 0, 1, 2, ... mod 256.
    pub fn payload(mut self, n: usize) -> Pkt {
        self.payload = (0..n).map(|i| i as u8).collect();
        self
    }

    /// `bytes` as the payload after the transport header, as they are (a
    /// DNS message, a TLS record, ...); the length fields cover them.
    pub fn data(mut self, bytes: Vec<u8>) -> Pkt {
        self.payload = bytes;
        self
    }

    /// The IP protocol number (IPv4 protocol / last IPv6 next header).
    pub fn proto(&self) -> u8 {
        match self.transport {
            Transport::Tcp { .. } => PROTO_TCP,
            Transport::Udp { .. } => PROTO_UDP,
            Transport::Echo | Transport::IcmpError { .. } if self.src.is_ipv6() => PROTO_ICMPV6,
            Transport::Echo | Transport::IcmpError { .. } => PROTO_ICMP,
            Transport::Raw(p) => p,
        }
    }

    fn transport_header(&self) -> Vec<u8> {
        match self.transport {
            Transport::Tcp {
                sport,
                dport,
                flags,
                options,
            } => {
                assert_eq!(options % 4, 0, "TCP options are whole words");
                assert!(options <= 40);
                let mut h = Vec::new();
                h.extend(sport.to_be_bytes());
                h.extend(dport.to_be_bytes());
                h.extend(0x1000_0001u32.to_be_bytes()); // sequence number
                h.extend(0u32.to_be_bytes()); // acknowledgment number
                h.push((((20 + options) / 4) as u8) << 4);
                h.push(flags);
                h.extend(65535u16.to_be_bytes()); // window
                h.extend([0, 0, 0, 0]); // checksum, urgent pointer
                h.extend(std::iter::repeat_n(1u8, options)); // NOP
                h
            }
            Transport::Udp { sport, dport } => {
                let mut h = Vec::new();
                h.extend(sport.to_be_bytes());
                h.extend(dport.to_be_bytes());
                h.extend(((8 + self.payload.len()) as u16).to_be_bytes());
                h.extend([0, 0]);
                h
            }
            Transport::Echo => {
                let ty = if self.src.is_ipv6() { 128 } else { 8 };
                let mut h = vec![ty, 0, 0, 0, 0x12, 0x34, 0, 1];
                if !self.src.is_ipv6() {
                    let mut m = h.clone();
                    m.extend(&self.payload);
                    let c = checksum(&m);
                    h[2..4].copy_from_slice(&c.to_be_bytes());
                }
                h
            }
            Transport::IcmpError { ty, code } => vec![ty, code, 0, 0, 0, 0, 0, 0],
            Transport::Raw(_) => Vec::new(),
        }
    }

    /// The Ethernet frame and its header offsets.
    pub fn build(&self) -> Frame {
        let mut f = Vec::with_capacity(128 + self.payload.len());
        f.extend(self.dst_mac);
        f.extend(self.src_mac);
        for (tpid, tci) in &self.tags {
            f.extend(tpid.to_be_bytes());
            f.extend(tci.to_be_bytes());
        }
        let l4 = self.transport_header();
        let l4_len = l4.len() + self.payload.len();
        let l3_off;
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend(ETH_P_IP.to_be_bytes());
                l3_off = f.len();
                assert_eq!(self.ip_options.len() % 4, 0, "IPv4 options are whole words");
                assert!(self.ip_options.len() <= 40);
                let ihl = 20 + self.ip_options.len();
                let mut h = vec![0x40 | (ihl / 4) as u8, 0];
                h.extend(((ihl + l4_len) as u16).to_be_bytes());
                h.extend(0x1234u16.to_be_bytes()); // identification
                h.extend(self.frag.to_be_bytes());
                h.push(self.ttl);
                h.push(self.proto());
                h.extend([0, 0]); // checksum, below
                h.extend(s.octets());
                h.extend(d.octets());
                h.extend(&self.ip_options);
                let c = checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend(h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend(ETH_P_IPV6.to_be_bytes());
                l3_off = f.len();
                let mut exts = Vec::new();
                for (i, e) in self.exts.iter().enumerate() {
                    let next = match self.exts.get(i + 1) {
                        Some(n) => n.number(),
                        None => self.proto(),
                    };
                    exts.extend(e.bytes(next));
                }
                let first = self.exts.first().map_or(self.proto(), |e| e.number());
                f.extend([0x60, 0, 0, 0]);
                f.extend(((exts.len() + l4_len) as u16).to_be_bytes());
                f.push(first);
                f.push(self.ttl); // hop limit
                f.extend(s.octets());
                f.extend(d.octets());
                f.extend(exts);
            }
            _ => unreachable!("checked in Pkt::new"),
        }
        let l4_off = f.len();
        f.extend(&l4);
        let l4_end = f.len();
        f.extend(&self.payload);
        Frame {
            bytes: f,
            l3_off,
            l4_off,
            l4_end,
        }
    }

    /// The Ethernet frame's bytes alone (`build().bytes`).
    pub fn bytes(&self) -> Vec<u8> {
        self.build().bytes
    }
}

/// A broadcast Ethernet frame from [`SRC_MAC`] with `ethertype` and
/// `body`, for non-IP frames.
pub fn ether_frame(ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend(SRC_MAC);
    f.extend(ethertype.to_be_bytes());
    f.extend(body);
    f
}

/// An ARP request (RFC 826, Ethernet / IPv4) from [`SRC_MAC`]: who has
/// `target`, tell `sender`.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut b = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    b.extend(SRC_MAC);
    b.extend(sender.octets());
    b.extend([0; 6]);
    b.extend(target.octets());
    ether_frame(ETH_P_ARP, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    const B4: Ipv4Addr = Ipv4Addr::new(13, 64, 196, 27);
    const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
    const B6: Ipv6Addr = Ipv6Addr::new(0x2a01, 0x111, 0xf100, 0, 0, 0, 0, 0x42);

    #[test]
    fn ipv4_tcp_layout() {
        let f = Pkt::tcp(A4, B4, 40000, 443, ACK).build();
        assert_eq!(f.len(), 14 + 20 + 20);
        assert_eq!((f.l3_off, f.l4_off, f.l4_end), (14, 34, 54));
        assert_eq!(&f.bytes[..12], &[DST_MAC, SRC_MAC].concat()[..]);
        assert_eq!(&f.bytes[12..14], &ETH_P_IP.to_be_bytes());
        assert_eq!(checksum(&f.bytes[14..34]), 0, "IPv4 header checksum");
        assert_eq!(f.bytes[14 + 9], PROTO_TCP);
        assert_eq!(&f.bytes[34..36], &40000u16.to_be_bytes());
        assert_eq!(f.bytes[34 + 13], ACK);
        let o = Pkt::tcp(A4, B4, 1, 2, SYN)
            .ip_option_words(3)
            .tcp_options(8)
            .build();
        assert_eq!(
            (o.bytes[14], o.l4_off, o.bytes[o.l4_off + 12]),
            (0x48, 46, 7 << 4)
        );
        assert_eq!(checksum(&o.bytes[14..46]), 0);
    }

    #[test]
    fn tags_macs_and_flags() {
        let plain = Pkt::tcp(A4, B4, 1, 2, SYN).build();
        let t = Pkt::tcp(A4, B4, 1, 2, SYN)
            .tag(ETH_P_8021AD)
            .tag(ETH_P_8021Q)
            .build();
        assert_eq!(t.len(), plain.len() + 8);
        assert_eq!(&t.bytes[12..20], &[0x88, 0xa8, 0, 100, 0x81, 0x00, 0, 101]);
        let v = Pkt::tcp(A4, B4, 1, 2, SYN)
            .vlan(ETH_P_8021Q, 0x1234)
            .build();
        assert_eq!(&v.bytes[12..16], &[0x81, 0x00, 0x02, 0x34]);
        let m = Pkt::tcp(A4, B4, 1, 2, SYN).macs([1; 6], [2; 6]).bytes();
        assert_eq!(&m[..12], &[[1; 6], [2; 6]].concat()[..]);
        let df = Pkt::tcp(A4, B4, 1, 2, SYN).dont_fragment().build();
        assert_eq!(&df.bytes[20..22], &[0x40, 0]);
        assert_eq!(checksum(&df.bytes[14..34]), 0);
        let mf = Pkt::raw(A4, B4, PROTO_UDP).fragment(185, true).build();
        assert_eq!(&mf.bytes[20..22], &(0x2000u16 | 185).to_be_bytes());
    }

    #[test]
    fn udp_and_echo() {
        let u = Pkt::udp(A4, B4, 1, 2).payload(10).build();
        assert_eq!(u.len(), 14 + 20 + 8 + 10);
        assert_eq!(&u.bytes[38..40], &18u16.to_be_bytes());
        assert_eq!(&u.bytes[42..45], &[0, 1, 2]);
        let e = Pkt::echo(A4, B4).payload(5).build();
        assert_eq!((e.bytes[23], e.bytes[34]), (PROTO_ICMP, 8));
        assert_eq!(checksum(&e.bytes[34..]), 0, "ICMP checksum");
        let e6 = Pkt::echo(A6, B6).build();
        assert_eq!((e6.bytes[20], e6.bytes[54]), (PROTO_ICMPV6, 128));
    }

    #[test]
    fn given_payload_bytes() {
        let msg = b"\x12\x34\x81\x80 a DNS message".to_vec();
        let u = Pkt::udp(B4, A4, 53, 40000).data(msg.clone()).build();
        assert_eq!(&u.bytes[u.l4_end..], &msg[..]);
        assert_eq!(&u.bytes[16..18], &(20 + 8 + msg.len() as u16).to_be_bytes());
        assert_eq!(&u.bytes[38..40], &(8 + msg.len() as u16).to_be_bytes());
        assert_eq!(checksum(&u.bytes[14..34]), 0);
        let t = Pkt::tcp(A6, B6, 40000, 443, ACK)
            .data(vec![22, 3, 1])
            .build();
        assert_eq!(&t.bytes[t.l4_end..], &[22, 3, 1]);
        assert_eq!(&t.bytes[18..20], &(20 + 3u16).to_be_bytes());
    }

    #[test]
    fn ipv6_extension_chain() {
        let f = Pkt::tcp(A6, B6, 1, 2, SYN)
            .ext(Ext::HopByHop)
            .ext(Ext::Routing)
            .ext(Ext::Fragment {
                offset: 3,
                more: true,
            })
            .ext(Ext::Auth)
            .ext(Ext::DestOpts)
            .build();
        assert_eq!(&f.bytes[12..14], &ETH_P_IPV6.to_be_bytes());
        assert_eq!(f.l4_off, 14 + 40 + 16 + 24 + 8 + 24 + 8);
        let plen = u16::from_be_bytes([f.bytes[18], f.bytes[19]]);
        assert_eq!(usize::from(plen), f.bytes.len() - 54);
        // Next header chain: IPv6 → 0 → 43 → 44 → 51 → 60 → TCP.
        let mut at = 54;
        let mut next = f.bytes[20];
        for (want, len) in [(0, 16), (43, 24), (44, 8), (51, 24), (60, 8)] {
            assert_eq!(next, want);
            next = f.bytes[at];
            at += len;
        }
        assert_eq!((next, at), (PROTO_TCP, f.l4_off));
        assert_eq!(
            &f.bytes[54 + 16 + 8..54 + 16 + 24],
            &ROUTING_HOME_ADDR.octets()
        );
        assert_eq!(&f.bytes[54 + 40 + 2..54 + 40 + 4], &[0, 3 << 3 | 1]);
    }

    #[test]
    fn icmp_error_quotes_from_the_ip_header_and_truncation_fixes_lengths() {
        let inner = Pkt::udp(A4, B4, 40000, 443)
            .payload(4)
            .tag(ETH_P_8021Q)
            .build();
        let err = Pkt::icmp_error(B4, A4, 3, 13, &inner).build();
        assert_eq!(
            &err.bytes[err.l4_off..err.l4_end],
            &[3, 13, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&err.bytes[err.l4_end..], &inner.bytes[inner.l3_off..]);
        let cut = err.clone().truncated(err.l4_end + 10);
        assert_eq!(cut.bytes.len(), err.l4_end + 10);
        assert_eq!(&cut.bytes[16..18], &(20 + 8 + 10u16).to_be_bytes());
        assert_eq!(checksum(&cut.bytes[14..34]), 0);
        let v6 = Pkt::udp(A6, B6, 1, 2)
            .payload(30)
            .build()
            .truncated(14 + 40 + 8);
        assert_eq!(&v6.bytes[18..20], &8u16.to_be_bytes());
    }

    #[test]
    fn non_ip_frames() {
        let a = arp_request(A4, B4);
        assert_eq!(a.len(), 14 + 28);
        assert_eq!(&a[..6], &[0xff; 6]);
        assert_eq!(&a[12..14], &ETH_P_ARP.to_be_bytes());
        assert_eq!(&a[38..42], &B4.octets());
    }
}
