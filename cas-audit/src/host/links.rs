//! The network interfaces of the agent's network namespace as rtnetlink
//! reports them (`NETLINK_ROUTE`, rtnetlink(7)): a socket in the link
//! multicast group (`RTNLGRP_LINK`) receives an `RTM_NEWLINK` for every
//! interface created or changed (renamed, up, down) and an `RTM_DELLINK`
//! for every one removed, each with its index; a dump (`RTM_GETLINK` with
//! `NLM_F_DUMP`) lists them all. Messages are rust-netlink's typed route
//! messages (`netlink-packet-route`).
//!
//! An index, not a name, is an interface: a rename keeps it (the kernel's
//! `dev_change_name`), a re-created interface gets a new one. Nothing here
//! asks the kernel by name, so no lookup can fail for lack of descriptors:
//! the socket is opened once, at start.
//!
//! When events come faster than they are read, the kernel drops them and
//! the next receive fails with `ENOBUFS` (netlink(7)); the monitor then
//! asks for a dump and hands it over ([`LinkChange::Listing`]) with the
//! indexes events named while it ran, whose events are newer than the dump.
//! A dump that cannot be sent (`ENOMEM`, `ENOBUFS`, `EBUSY`) is asked again
//! by [`LinkMonitor::retry`].

use std::{
    collections::BTreeSet,
    io,
    os::fd::{AsRawFd, RawFd},
};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
};
use netlink_packet_route::{
    link::{LinkAttribute, LinkFlags, LinkMessage},
    RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Largest datagram read at once: a dump part is at most 32 KiB
/// (the kernel's `netlink_dump` allocation), an event one message.
const RECV_BYTES: usize = 64 * 1024;
/// Receive buffer asked for (the kernel caps it at `net.core.rmem_max`).
const RCVBUF_BYTES: usize = 1 << 20;

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its index (`ifi_index`).
    pub index: u32,
    /// Its name (`IFLA_IFNAME`; empty if the message had none).
    pub name: String,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
}

/// What the kernel said about the interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    /// `RTM_NEWLINK`: an interface was created or changed.
    New(Link),
    /// `RTM_DELLINK`: an interface was removed.
    Del(Link),
    /// Events may have been missed (the reason); a dump was asked for and
    /// will come as a [`LinkChange::Listing`].
    Lost(String),
    /// A dump: every interface.
    Listing {
        /// The interfaces listed.
        links: Vec<Link>,
        /// Indexes named by events received while the dump ran: for them
        /// the events, already handed over, are newer than the dump.
        touched: BTreeSet<u32>,
        /// Whether every message of the dump could be read: an absence
        /// from an incomplete listing proves nothing.
        complete: bool,
    },
}

/// A dump under way.
#[derive(Debug)]
struct Dump {
    seq: u32,
    links: Vec<Link>,
    touched: BTreeSet<u32>,
    complete: bool,
    /// Events were lost while it ran, or the kernel marked it interrupted
    /// (`NLM_F_DUMP_INTR`): ask another once it ends.
    again: bool,
}

/// Parses datagrams of link messages, keeping the state of a dump.
#[derive(Debug, Default)]
struct Parser {
    /// Our port id: dump answers are addressed to it.
    port: u32,
    dump: Option<Dump>,
}

impl Parser {
    /// Whether a message with this header answers our dump.
    fn ours(&self, seq: u32, port: u32) -> bool {
        self.dump.as_ref().is_some_and(|d| d.seq == seq) && port == self.port
    }

    /// Reads every message of one datagram. Returns whether a dump
    /// should be asked (events were lost, or a dump must be repeated).
    fn datagram(&mut self, bytes: &[u8], out: &mut Vec<LinkChange>) -> bool {
        let mut ask = false;
        let mut off = 0;
        while off < bytes.len() {
            let rest = &bytes[off..];
            let Ok(buf) = NetlinkBuffer::new_checked(rest) else {
                out.push(LinkChange::Lost("a malformed netlink message".into()));
                return self.interrupt_dump() || ask;
            };
            let (len, seq, port, flags) = (
                buf.length() as usize,
                buf.sequence_number(),
                buf.port_number(),
                buf.flags(),
            );
            // NLMSG_ALIGN; new_checked guarantees len >= the header.
            off += (len + 3) & !3;
            let ours = self.ours(seq, port);
            if ours && flags & NLM_F_DUMP_INTR != 0 {
                if let Some(d) = self.dump.as_mut() {
                    d.again = true;
                }
            }
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len]) {
                Ok(msg) => ask |= self.message(msg.payload, ours, out),
                Err(_) if ours => {
                    if let Some(d) = self.dump.as_mut() {
                        d.complete = false;
                    }
                }
                Err(e) => {
                    out.push(LinkChange::Lost(format!(
                        "an unreadable link message ({e})"
                    )));
                    ask |= self.interrupt_dump();
                }
            }
        }
        ask
    }

    /// One parsed message; whether a dump should be asked.
    fn message(
        &mut self,
        payload: NetlinkPayload<RouteNetlinkMessage>,
        ours: bool,
        out: &mut Vec<LinkChange>,
    ) -> bool {
        match payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                let link = link_of(&m);
                match self.dump.as_mut() {
                    Some(d) if ours => d.links.push(link),
                    d => {
                        if let Some(d) = d {
                            d.touched.insert(link.index);
                        }
                        out.push(LinkChange::New(link));
                    }
                }
                false
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                let link = link_of(&m);
                if let Some(d) = self.dump.as_mut() {
                    d.touched.insert(link.index);
                }
                out.push(LinkChange::Del(link));
                false
            }
            NetlinkPayload::Done(_) if ours => {
                let d = self.dump.take().expect("ours implies a dump");
                if d.again {
                    return true;
                }
                out.push(LinkChange::Listing {
                    links: d.links,
                    touched: d.touched,
                    complete: d.complete,
                });
                false
            }
            NetlinkPayload::Error(e) if ours => {
                self.dump = None;
                out.push(LinkChange::Lost(format!(
                    "the interface dump failed ({})",
                    e.to_io()
                )));
                true
            }
            NetlinkPayload::Overrun(_) => {
                out.push(LinkChange::Lost("the kernel reported an overrun".into()));
                self.interrupt_dump()
            }
            _ => false,
        }
    }

    /// Events were lost: a dump under way must be repeated once it ends.
    /// Returns whether a dump should be asked now (none is under way).
    fn interrupt_dump(&mut self) -> bool {
        match self.dump.as_mut() {
            Some(d) => {
                d.again = true;
                false
            }
            None => true,
        }
    }
}

/// A link from a message (its header and `IFLA_IFNAME`).
fn link_of(m: &LinkMessage) -> Link {
    let name = m
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default();
    Link {
        index: m.header.index,
        name,
        up: m.header.flags.contains(LinkFlags::Up),
    }
}

/// A non-blocking rtnetlink socket subscribed to link events.
#[derive(Debug)]
pub struct LinkMonitor {
    socket: Socket,
    buf: Vec<u8>,
    seq: u32,
    parser: Parser,
    /// A dump could not be asked: ask again at [`LinkMonitor::retry`].
    dump_wanted: bool,
}

impl LinkMonitor {
    /// Opens the socket, subscribed to `RTNLGRP_LINK`, non-blocking.
    ///
    /// # Errors
    /// The OS error: no netlink (`EPROTONOSUPPORT`, a seccomp filter),
    /// no descriptor left (`EMFILE`).
    pub fn open() -> io::Result<LinkMonitor> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, libc::RTMGRP_LINK as u32))?;
        socket.set_non_blocking(true)?;
        // A larger buffer makes overruns rarer; the default will do.
        let _ = socket.set_rx_buf_sz(RCVBUF_BYTES as libc::c_int);
        let mut addr = SocketAddr::new(0, 0);
        socket.get_address(&mut addr)?;
        Ok(LinkMonitor {
            socket,
            buf: Vec::with_capacity(RECV_BYTES),
            seq: 0,
            parser: Parser {
                port: addr.port_number(),
                dump: None,
            },
            dump_wanted: false,
        })
    }

    /// Asks the kernel for a dump of every interface (a no-op while one is
    /// under way); it arrives through [`LinkMonitor::read`].
    ///
    /// # Errors
    /// The request could not be sent; [`LinkMonitor::retry`] asks again.
    pub fn request_dump(&mut self) -> io::Result<()> {
        if self.parser.dump.is_some() {
            return Ok(());
        }
        self.seq = self.seq.wrapping_add(1).max(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(
            header,
            NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())),
        );
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        match self.socket.send(&out, 0) {
            Ok(_) => {
                self.dump_wanted = false;
                self.parser.dump = Some(Dump {
                    seq: self.seq,
                    links: Vec::new(),
                    touched: BTreeSet::new(),
                    complete: true,
                    again: false,
                });
                Ok(())
            }
            Err(e) => {
                self.dump_wanted = true;
                Err(e)
            }
        }
    }

    /// Asks again for a dump that could not be asked before, if any.
    ///
    /// # Errors
    /// As [`LinkMonitor::request_dump`].
    pub fn retry(&mut self) -> io::Result<()> {
        if self.dump_wanted {
            self.request_dump()?;
        }
        Ok(())
    }

    /// Reads every message waiting, without blocking, in the kernel's
    /// order. An overflow (`ENOBUFS`) or a truncated datagram becomes a
    /// [`LinkChange::Lost`] and a dump is asked for.
    ///
    /// # Errors
    /// A receive error other than `EAGAIN` and `ENOBUFS` before anything
    /// was read.
    pub fn read(&mut self) -> io::Result<Vec<LinkChange>> {
        let mut out = Vec::new();
        loop {
            self.buf.clear();
            let n = match self.socket.recv(&mut self.buf, libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    out.push(LinkChange::Lost(
                        "the socket's receive buffer overflowed".into(),
                    ));
                    self.lost();
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
            };
            if n > self.buf.len() {
                out.push(LinkChange::Lost(format!(
                    "a datagram of {n} bytes, more than the {RECV_BYTES} read"
                )));
                self.lost();
                continue;
            }
            if self.parser.datagram(&self.buf, &mut out) {
                let _ = self.request_dump();
            }
        }
        Ok(out)
    }

    /// Events were lost: dump now, or after the dump under way.
    fn lost(&mut self) {
        if self.parser.interrupt_dump() {
            let _ = self.request_dump();
        }
    }
}

impl AsRawFd for LinkMonitor {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, NLM_F_MULTIPART};

    fn link_msg(index: u32, name: &str, up: bool) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if up {
            m.header.flags = LinkFlags::Up;
        }
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m
    }

    /// One netlink message's bytes.
    fn wire(
        payload: NetlinkPayload<RouteNetlinkMessage>,
        seq: u32,
        port: u32,
        flags: u16,
    ) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        header.port_number = port;
        header.flags = flags;
        let mut msg = NetlinkMessage::new(header, payload);
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        out
    }

    fn new(index: u32, name: &str, seq: u32, port: u32) -> Vec<u8> {
        wire(
            RouteNetlinkMessage::NewLink(link_msg(index, name, true)).into(),
            seq,
            port,
            NLM_F_MULTIPART,
        )
    }

    fn del(index: u32, name: &str) -> Vec<u8> {
        wire(
            RouteNetlinkMessage::DelLink(link_msg(index, name, false)).into(),
            77,
            4242,
            0,
        )
    }

    fn done(seq: u32, port: u32) -> Vec<u8> {
        wire(
            NetlinkPayload::Done(DoneMessage::default()),
            seq,
            port,
            NLM_F_MULTIPART,
        )
    }

    fn dumping(port: u32, seq: u32) -> Parser {
        Parser {
            port,
            dump: Some(Dump {
                seq,
                links: Vec::new(),
                touched: BTreeSet::new(),
                complete: true,
                again: false,
            }),
        }
    }

    #[test]
    fn events_are_new_and_del_links_by_index() {
        let mut p = Parser {
            port: 9,
            ..Parser::default()
        };
        let mut out = Vec::new();
        // An `ip link` request's notification carries ip's sequence number
        // and port id: it is an event, not an answer to us.
        let mut bytes = new(7, "uplink", 12, 4242);
        bytes.extend(del(7, "uplink"));
        assert!(!p.datagram(&bytes, &mut out));
        assert_eq!(
            out,
            [
                LinkChange::New(Link {
                    index: 7,
                    name: "uplink".into(),
                    up: true
                }),
                LinkChange::Del(Link {
                    index: 7,
                    name: "uplink".into(),
                    up: false
                }),
            ]
        );
    }

    #[test]
    fn a_dump_lists_links_and_the_indexes_events_touched_meanwhile() {
        let mut p = dumping(9, 3);
        let mut out = Vec::new();
        let mut bytes = new(1, "lo", 3, 9);
        bytes.extend(new(5, "uplink", 3, 9));
        // An event in the middle: a rename of 5 by someone else.
        bytes.extend(new(5, "up9", 40, 4242));
        bytes.extend(done(3, 9));
        assert!(!p.datagram(&bytes, &mut out));
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(
            out[0],
            LinkChange::New(Link {
                index: 5,
                name: "up9".into(),
                up: true
            })
        );
        let LinkChange::Listing {
            links,
            touched,
            complete,
        } = &out[1]
        else {
            panic!("{out:?}")
        };
        assert_eq!(
            links.iter().map(|l| l.index).collect::<Vec<_>>(),
            [1, 5],
            "{links:?}"
        );
        assert_eq!(touched, &BTreeSet::from([5]));
        assert!(complete);
        assert!(p.dump.is_none());
    }

    #[test]
    fn a_dump_interrupted_or_with_lost_events_is_asked_again() {
        // NLM_F_DUMP_INTR: the list changed while it was dumped.
        let mut p = dumping(9, 3);
        let mut out = Vec::new();
        let intr = wire(
            RouteNetlinkMessage::NewLink(link_msg(1, "lo", true)).into(),
            3,
            9,
            NLM_F_MULTIPART | NLM_F_DUMP_INTR,
        );
        assert!(!p.datagram(&intr, &mut out));
        assert!(p.datagram(&done(3, 9), &mut out), "asked again");
        assert!(out.is_empty(), "{out:?}");

        // An overflow during a dump: no listing from it, another dump.
        let mut p = dumping(9, 4);
        assert!(!p.interrupt_dump(), "the dump under way is repeated later");
        assert!(p.datagram(&done(4, 9), &mut out));
        assert!(out.is_empty(), "{out:?}");
        // Without a dump under way: ask one now.
        assert!(p.interrupt_dump());
    }

    #[test]
    fn garbage_is_lost_events_never_a_removal() {
        let mut p = Parser {
            port: 9,
            ..Parser::default()
        };
        let mut out = Vec::new();
        // A header claiming more bytes than there are.
        let mut bytes = new(5, "uplink", 0, 0);
        bytes[0] = 0xff;
        assert!(p.datagram(&bytes, &mut out));
        assert!(matches!(out.as_slice(), [LinkChange::Lost(_)]), "{out:?}");
        // An RTM_NEWLINK whose body is cut short.
        let mut out = Vec::new();
        let mut short = new(5, "uplink", 0, 0);
        short.truncate(16 + 4);
        short[0..4].copy_from_slice(&20u32.to_ne_bytes());
        assert!(p.datagram(&short, &mut out));
        assert!(matches!(out.as_slice(), [LinkChange::Lost(_)]), "{out:?}");
    }

    #[test]
    fn an_unreadable_dump_answer_makes_the_listing_incomplete() {
        let mut p = dumping(9, 3);
        let mut out = Vec::new();
        let mut short = new(5, "uplink", 3, 9);
        short.truncate(16 + 4);
        short[0..4].copy_from_slice(&20u32.to_ne_bytes());
        short.extend(done(3, 9));
        assert!(!p.datagram(&short, &mut out));
        assert!(
            matches!(
                out.as_slice(),
                [LinkChange::Listing {
                    complete: false,
                    ..
                }]
            ),
            "{out:?}"
        );
    }
}
