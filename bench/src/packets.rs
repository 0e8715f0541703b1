//! Hand-built Ethernet frames: the test-run inputs and the load generator's
//! frames.

use std::net::IpAddr;

/// 802.1Q tag protocol id.
pub const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// TCP SYN.
pub const SYN: u8 = 0x02;
/// TCP ACK.
pub const ACK: u8 = 0x10;

/// IP protocol numbers used here.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;

/// A packet to build: Ethernet, an optional 802.1Q tag, IPv4 or IPv6 and a
/// TCP or UDP header, then `payload` bytes.
#[derive(Clone, Debug)]
pub struct Pkt {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// VLAN id of one 802.1Q tag, if any.
    pub vlan: Option<u16>,
    /// Source address (the family decides IPv4 or IPv6).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// [`TCP`] or [`UDP`].
    pub proto: u8,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags (ignored for UDP).
    pub flags: u8,
    /// Payload bytes after the transport header.
    pub payload: usize,
}

impl Pkt {
    /// A TCP segment with `flags` and no payload.
    pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Pkt {
        Pkt {
            dst_mac: [0x02, 0xca, 0x5a, 0, 0, 0x02],
            src_mac: [0x02, 0xca, 0x5a, 0, 0, 0x01],
            vlan: None,
            src,
            dst,
            proto: TCP,
            sport,
            dport,
            flags,
            payload: 0,
        }
    }

    /// A UDP datagram with `payload` bytes.
    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: usize) -> Pkt {
        Pkt {
            proto: UDP,
            payload,
            ..Pkt::tcp(src, dst, sport, dport, 0)
        }
    }

    /// With one 802.1Q tag.
    pub fn vlan(mut self, vid: u16) -> Pkt {
        self.vlan = Some(vid);
        self
    }

    /// The Ethernet frame (no FCS). Checksums: the IPv4 header's is
    /// correct; the transport checksum is zero (nothing here verifies it).
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128 + self.payload);
        f.extend(self.dst_mac);
        f.extend(self.src_mac);
        if let Some(vid) = self.vlan {
            f.extend(ETH_P_8021Q.to_be_bytes());
            f.extend((vid & 0x0fff).to_be_bytes());
        }
        let l4 = self.transport();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend(ETH_P_IP.to_be_bytes());
                let mut h = vec![0x45, 0];
                h.extend(((20 + l4.len()) as u16).to_be_bytes());
                h.extend([0x12, 0x34, 0x40, 0]); // id, DF
                h.push(64);
                h.push(self.proto);
                h.extend([0, 0]);
                h.extend(s.octets());
                h.extend(d.octets());
                let c = checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend(h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend(ETH_P_IPV6.to_be_bytes());
                f.extend([0x60, 0, 0, 0]);
                f.extend((l4.len() as u16).to_be_bytes());
                f.push(self.proto);
                f.push(64);
                f.extend(s.octets());
                f.extend(d.octets());
            }
            _ => panic!("mixed address families: {} -> {}", self.src, self.dst),
        }
        f.extend(l4);
        f
    }

    fn transport(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(20 + self.payload);
        h.extend(self.sport.to_be_bytes());
        h.extend(self.dport.to_be_bytes());
        if self.proto == TCP {
            h.extend(0x1000_0001u32.to_be_bytes());
            h.extend(0u32.to_be_bytes());
            h.push(5 << 4);
            h.push(self.flags);
            h.extend(65535u16.to_be_bytes());
            h.extend([0, 0, 0, 0]);
        } else {
            h.extend(((8 + self.payload) as u16).to_be_bytes());
            h.extend([0, 0]);
        }
        h.extend((0..self.payload).map(|i| i as u8));
        h
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout() {
        let a: IpAddr = "198.51.100.2".parse().unwrap();
        let b: IpAddr = "13.64.196.27".parse().unwrap();
        let f = Pkt::tcp(a, b, 40000, 443, ACK).build();
        assert_eq!(f.len(), 14 + 20 + 20);
        assert_eq!(&f[12..14], &ETH_P_IP.to_be_bytes());
        assert_eq!(checksum(&f[14..34]), 0, "IPv4 header checksum");
        let t = Pkt::tcp(a, b, 40000, 443, ACK).vlan(100).build();
        assert_eq!(t.len(), f.len() + 4);
        assert_eq!(&t[12..14], &ETH_P_8021Q.to_be_bytes());
        let u = Pkt::udp(a, b, 1, 2, 10).build();
        assert_eq!(u.len(), 14 + 20 + 8 + 10);
        let v6 = Pkt::tcp(
            "2001:db8:1::2".parse().unwrap(),
            "2a01:111:f100::42".parse().unwrap(),
            1,
            2,
            SYN,
        )
        .build();
        assert_eq!(v6.len(), 14 + 40 + 20);
    }
}
