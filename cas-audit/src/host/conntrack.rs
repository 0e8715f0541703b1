//! The kernel's connection tracking, asked over ctnetlink
//! (`NETLINK_NETFILTER`, subsystem `NFNL_SUBSYS_CTNETLINK`,
//! `IPCTNL_MSG_CT_GET` with a tuple; see the kernel's
//! `net/netfilter/nf_conntrack_netlink.c`): the conntrack entry a packet's
//! 5-tuple belongs to, with its original and reply tuples, which tell the
//! inside host behind source NAT and the public address behind
//! destination NAT. Messages are rust-netlink's typed conntrack messages
//! (`netlink-packet-netfilter`).
//!
//! Conntrack is per network namespace: the answers are about the
//! namespace the agent runs in. Needs `CAP_NET_ADMIN`; the kernel loads
//! `nf_conntrack_netlink` on the first request.

use std::{io, net::IpAddr, os::fd::AsRawFd, time::Duration};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_netfilter::{
    conntrack::{ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple},
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

/// How long one answer may take before the lookup fails.
const TIMEOUT: Duration = Duration::from_millis(500);

/// `NFNLGRP_CONNTRACK_DESTROY` (`linux/netfilter/nfnetlink.h`): the
/// multicast group on which ctnetlink announces every destroyed entry.
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
/// Receive buffer asked for the event socket: about 4,000 announcements
/// (each skb of one is under 1 KiB) between two reads.
const EVENTS_RCVBUF: libc::c_int = 4 << 20;

/// One direction of a connection: protocol, addresses and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtTuple {
    /// IP protocol number.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (TCP/UDP).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

impl CtTuple {
    /// The same tuple seen from the other end.
    pub fn reversed(&self) -> CtTuple {
        CtTuple {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

/// A conntrack entry: the tuple of the packet that created it and the
/// tuple its answers carry (after NAT, the translated addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtEntry {
    /// `CTA_TUPLE_ORIG`: as the connection's first packet arrived.
    pub orig: CtTuple,
    /// `CTA_TUPLE_REPLY`: as its answers are expected.
    pub reply: CtTuple,
}

/// A ctnetlink socket of the agent's network namespace.
pub struct Conntrack {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Conntrack {
    /// Opens the socket.
    ///
    /// # Errors
    /// The OS error: no netlink (`EPROTONOSUPPORT`), no privilege (`EPERM`).
    pub fn open() -> io::Result<Conntrack> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: TIMEOUT.as_micros() as libc::suseconds_t,
        };
        set_socket_option(&socket, libc::SO_RCVTIMEO, &tv)?;
        Ok(Conntrack {
            socket,
            seq: 0,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// The entry `t` belongs to, in either direction (the kernel finds a
    /// tuple among both directions of every entry); `None` when conntrack
    /// has none.
    ///
    /// # Errors
    /// A failed send or receive, a timeout, an error answer other than
    /// `ENOENT`, or an answer that does not parse.
    pub fn get(&mut self, t: &CtTuple) -> io::Result<Option<CtEntry>> {
        self.seq = self.seq.wrapping_add(1);
        let family = if t.src.is_ipv4() {
            NetfilterProtoFamily::IPv4
        } else {
            NetfilterProtoFamily::IPv6
        };
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(
            header,
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(family, 0, 0),
                ConntrackMessage::Get(vec![ConntrackAttribute::CtaTupleOrig(tuple_nlas(t))]),
            )),
        );
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        self.socket.send(&out, 0)?;
        loop {
            self.buf.clear();
            self.socket.recv(&mut self.buf, 0)?;
            let reply = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if reply.header.sequence_number != self.seq {
                // An answer to an earlier request that timed out.
                continue;
            }
            return match reply.payload {
                NetlinkPayload::Error(e) => match e.code {
                    Some(c) if -c.get() == libc::ENOENT => Ok(None),
                    Some(c) => Err(io::Error::from_raw_os_error(-c.get())),
                    None => Ok(None),
                },
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
                    ..
                }) => Ok(entry_of(&attrs)),
                other => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected ctnetlink answer {other:?}"),
                )),
            };
        }
    }
}

/// The entries conntrack destroys in the agent's network namespace, as
/// ctnetlink announces them (`IPCTNL_MSG_CT_DELETE` on the multicast group
/// `NFNLGRP_CONNTRACK_DESTROY`; the kernel sends it before it unlinks the
/// entry, so an entry a [`Conntrack::get`] no longer finds has been
/// announced). A connection refused at once, its SYN answered by an RST,
/// is destroyed with the RST: this is how its NAT can still be told.
///
/// The socket does not block; announcements past its receive buffer
/// (4 MiB asked) between two [`CtEvents::drain`]s are lost and counted.
/// Needs `CAP_NET_ADMIN`; with `net.netfilter.nf_conntrack_events` at 0
/// nothing is announced.
pub struct CtEvents {
    socket: Socket,
    buf: Vec<u8>,
    lost: u64,
}

impl CtEvents {
    /// Opens the socket and joins the group.
    ///
    /// # Errors
    /// The OS error: no netlink (`EPROTONOSUPPORT`), no privilege (`EPERM`).
    pub fn open() -> io::Result<CtEvents> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.add_membership(NFNLGRP_CONNTRACK_DESTROY)?;
        socket.set_non_blocking(true)?;
        // SO_RCVBUFFORCE passes net.core.rmem_max with CAP_NET_ADMIN;
        // without it, SO_RCVBUF gets what the limit allows.
        if set_socket_option(&socket, libc::SO_RCVBUFFORCE, &EVENTS_RCVBUF).is_err() {
            // The smaller buffer is still a buffer: no error.
            let _ = set_socket_option(&socket, libc::SO_RCVBUF, &EVENTS_RCVBUF);
        }
        Ok(CtEvents {
            socket,
            buf: Vec::with_capacity(64 * 1024),
            lost: 0,
        })
    }

    /// Calls `each` with every entry announced since the last call.
    pub fn drain(&mut self, mut each: impl FnMut(CtEntry)) {
        loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, 0) {
                Ok(_) => {}
                // The buffer overflowed: announcements were dropped.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.lost += 1;
                    continue;
                }
                // Nothing more (EAGAIN), or the socket failed: the next
                // call tries again.
                Err(_) => return,
            }
            let mut off = 0;
            while off < self.buf.len() {
                let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[off..])
                else {
                    break;
                };
                if let NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::Conntrack(ConntrackMessage::Delete(attrs)),
                    ..
                }) = &msg.payload
                {
                    if let Some(e) = entry_of(attrs) {
                        each(e);
                    }
                }
                // Messages are 4-byte aligned (NLMSG_ALIGN).
                let len = (msg.header.length as usize + 3) & !3;
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    /// Times the receive buffer overflowed and announcements were lost.
    pub fn lost(&self) -> u64 {
        self.lost
    }
}

/// `setsockopt(SOL_SOCKET, opt, value)` on `socket`.
fn set_socket_option<T>(socket: &Socket, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: a valid socket, and a value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether this network namespace tracks any connection now
/// (`net.netfilter.nf_conntrack_count` > 0). Without the conntrack module,
/// or with no entry, nothing can be translated either, so lookups are
/// pointless.
pub fn tracking() -> bool {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// The nested attributes of a tuple.
fn tuple_nlas(t: &CtTuple) -> Vec<Tuple> {
    vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(t.src),
            IPTuple::DestinationAddress(t.dst),
        ]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(Protocol::from(t.proto)),
            ProtoTuple::SourcePort(t.sport),
            ProtoTuple::DestinationPort(t.dport),
        ]),
    ]
}

/// A tuple from its nested attributes, if complete.
fn tuple_of(nlas: &[Tuple]) -> Option<CtTuple> {
    let (mut src, mut dst, mut proto) = (None, None, None);
    let (mut sport, mut dport) = (0, 0);
    for n in nlas {
        match n {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(ps) => {
                for p in ps {
                    match p {
                        ProtoTuple::Protocol(p) => proto = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(p) => sport = *p,
                        ProtoTuple::DestinationPort(p) => dport = *p,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(CtTuple {
        proto: proto?,
        src: src?,
        dst: dst?,
        sport,
        dport,
    })
}

/// The entry of a `IPCTNL_MSG_CT_NEW` answer's attributes.
fn entry_of(attrs: &[ConntrackAttribute]) -> Option<CtEntry> {
    let (mut orig, mut reply) = (None, None);
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => orig = tuple_of(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple_of(t),
            _ => {}
        }
    }
    Some(CtEntry {
        orig: orig?,
        reply: reply?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_round_trip_through_their_attributes() {
        let t = CtTuple {
            proto: 6,
            src: "198.51.100.2".parse().unwrap(),
            dst: "13.64.196.27".parse().unwrap(),
            sport: 40000,
            dport: 8443,
        };
        assert_eq!(tuple_of(&tuple_nlas(&t)), Some(t));
        assert_eq!(t.reversed().reversed(), t);
        let e = entry_of(&[
            ConntrackAttribute::CtaTupleOrig(tuple_nlas(&t)),
            ConntrackAttribute::CtaTupleReply(tuple_nlas(&t.reversed())),
        ]);
        assert_eq!(
            e,
            Some(CtEntry {
                orig: t,
                reply: t.reversed()
            })
        );
        assert_eq!(
            entry_of(&[ConntrackAttribute::CtaTupleOrig(tuple_nlas(&t))]),
            None
        );
    }
}
