//! Every rule the kernel programs and the agent must apply alike: which
//! side of a packet is the CAS side, the history letters of a packet, the
//! initial state of a new flow, a flow's service port and verdict, when a
//! TCP flow has ended and when a new connection reuses its 5-tuple. The kernel
//! applies them as packets pass; the agent applies the same functions to
//! what the kernel hands it (events, table snapshots), so the two never
//! disagree.

use crate::{initiator, payload_kind, proto, tcp_flags, Direction, FlowStats};

/// Zeek-style history letters (as in Zeek's `conn.log` `history` field).
/// The originator is the side that sent the flow's first packet (upper
/// case), the responder the other (lower case). A flow's
/// [`FlowStats::history_mask`] holds the originator's kinds in bits
/// `0..KINDS` and the responder's in bits `KINDS..2 * KINDS`.
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
        use crate::tcp_flags as f;
        if proto != crate::proto::TCP {
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

    /// The history of a flow whose first packet showed `kinds`: its
    /// letters in kind order, upper case (its sender is the originator),
    /// the rest zero.
    #[inline(always)]
    pub const fn first(kinds: u64) -> [u8; 16] {
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut kind = 0;
        while kind < KINDS {
            if kinds & (1 << kind) != 0 {
                out[n] = letter(kind, true);
                n += 1;
            }
            kind += 1;
        }
        out
    }

    /// The kinds of the originator (`.0`) and of the responder (`.1`) in a
    /// flow's history mask.
    #[inline(always)]
    pub const fn sides(mask: u64) -> (u64, u64) {
        let all = (1u64 << KINDS) - 1;
        (mask & all, (mask >> KINDS) & all)
    }
}

/// Which side of a packet is the remote (CAS) side, whichever hook sees
/// it: the destination when it is in a CAS range (`Out`), else the source
/// (`In`). The egress/ingress hook does not decide it, so the LAN side of a
/// router, its uplink and a host's own interface all see the same flows.
///
/// A packet between two CAS addresses is counted once, for one range: the
/// kernel first looks for a flow the packet already belongs to in either
/// orientation, so a conversation between two CAS addresses is one flow
/// whose remote side is the destination of its first packet.
#[inline(always)]
pub const fn remote_side(dst_in_cas: bool) -> Direction {
    if dst_in_cas {
        Direction::Out
    } else {
        Direction::In
    }
}

/// The first packet of a flow, as the kernel saw it (and hands it to the
/// agent in a [`crate::FlowEvent`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstPacket {
    /// Its direction.
    pub dir: Direction,
    /// The interface it was seen on.
    pub ifindex: u32,
    /// IP protocol number.
    pub proto: u8,
    /// Wire packets (GSO segments); 0 when the packet was counted at an
    /// earlier audited hook (a flow seen first after NAT).
    pub packets: u64,
    /// Link-layer bytes, headers replicated per segment (0 as `packets`).
    pub bytes: u64,
    /// TCP flags ([`tcp_flags`] bits; 0 for other protocols).
    pub tcp_flags: u32,
    /// [`history`] kinds it shows.
    pub kinds: u64,
    /// IP TTL / hop limit.
    pub ttl: u8,
    /// When it was seen (CLOCK_MONOTONIC ns).
    pub now: u64,
    /// Range id of the remote address.
    pub range_id: u32,
}

/// The SYN that opens a connection: SYN without ACK.
#[inline(always)]
pub const fn opening_syn(flags: u32) -> bool {
    flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
}

/// Who opened a connection whose opening SYN travels in `dir`
/// ([`initiator`] value).
#[inline(always)]
pub const fn opener(dir: Direction) -> u8 {
    match dir {
        Direction::Out => initiator::LOCAL,
        Direction::In => initiator::REMOTE,
    }
}

/// The state of a new flow after its first packet `p` (not yet judged:
/// [`FlowStats::flagged`] is 0).
#[inline(always)]
pub fn open_flow(p: &FirstPacket) -> FlowStats {
    let mut st = FlowStats {
        first_seen_ns: p.now,
        last_seen_ns: p.now,
        range_id: p.range_id,
        first_dir: p.dir as u8,
        history_mask: p.kinds,
        history: history::first(p.kinds),
        ..FlowStats::default()
    };
    st.ifindexes[0] = p.ifindex;
    match p.dir {
        Direction::Out => {
            st.packets_out = p.packets;
            st.bytes_out = p.bytes;
            st.tcp_flags_out = p.tcp_flags;
        }
        Direction::In => {
            st.packets_in = p.packets;
            st.bytes_in = p.bytes;
            st.tcp_flags_in = p.tcp_flags;
            if p.tcp_flags & tcp_flags::RST != 0 {
                st.rst_ttl = p.ttl;
            }
        }
    }
    if p.proto == proto::TCP && opening_syn(p.tcp_flags) {
        st.initiator = opener(p.dir);
    }
    st
}

/// Whether a flow's service port is one the CAS requirements allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum Verdict {
    /// The service port is allowed (or the protocol is ICMP, which has none).
    Allowed,
    /// The service port is not allowed, or the protocol has no ports at all
    /// (GRE, ESP, ...), which no CAS allowlist names.
    DisallowedPort,
}

impl Verdict {
    /// Both verdicts.
    pub const ALL: [Verdict; 2] = [Verdict::Allowed, Verdict::DisallowedPort];

    /// The contract string (`allowed`, `disallowed-port`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::DisallowedPort => "disallowed-port",
        }
    }
}

/// A flow's service port and verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judgement {
    /// The port the conversation is for; `None` for protocols without ports.
    pub service_port: Option<u16>,
    /// Whether it is allowed.
    pub verdict: Verdict,
}

/// The service port of a flow: the port the conversation is *for*.
///
/// For TCP with a known initiator it is the port of the side that did not
/// send the first SYN. Otherwise (start not seen, UDP, ...) it is the remote
/// (CAS) side's port, unless only the local port is an allowed port.
/// `allowed` tells whether a port is allowed.
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

/// Judges a flow of protocol `proto_nr` between `local_port` and
/// `remote_port` whose [`initiator`] is `initiator_` (ignored for anything
/// but TCP): TCP and UDP by their [`service_port`]; ICMP and ICMPv6 are
/// allowed (no port); any other protocol is disallowed, since no CAS
/// allowlist names it.
#[inline(always)]
pub fn judge(
    proto_nr: u8,
    initiator_: u8,
    local_port: u16,
    remote_port: u16,
    allowed: impl Fn(u16) -> bool,
) -> Judgement {
    match proto_nr {
        proto::TCP | proto::UDP => {
            let init = if proto_nr == proto::TCP {
                initiator_
            } else {
                initiator::UNKNOWN
            };
            let port = service_port(init, local_port, remote_port, &allowed);
            let verdict = if allowed(port) {
                Verdict::Allowed
            } else {
                Verdict::DisallowedPort
            };
            Judgement {
                service_port: Some(port),
                verdict,
            }
        }
        proto::ICMP | proto::ICMPV6 => Judgement {
            service_port: None,
            verdict: Verdict::Allowed,
        },
        _ => Judgement {
            service_port: None,
            verdict: Verdict::DisallowedPort,
        },
    }
}

/// How a TCP flow ended, from its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Still open (or not TCP).
    Open,
    /// FIN seen from both sides.
    Closed,
    /// RST seen from either side.
    Reset,
}

/// Whether a packet with TCP flags `flags` opens a new connection on an
/// existing flow of protocol `proto_nr` whose history mask is `mask`: an
/// opening SYN after the flow ended (FIN both ways, or RST). A NAT box and
/// a client with a fixed source port reuse 5-tuples; each connection is one
/// attempt, so the ended flow is reported with its own figures and the SYN
/// starts a new flow. UDP and other protocols never reopen (they expire).
#[inline(always)]
pub const fn reopens(proto_nr: u8, flags: u32, mask: u64) -> bool {
    proto_nr == proto::TCP && opening_syn(flags) && !matches!(ending(proto_nr, mask), Ending::Open)
}

/// How a flow of protocol `proto_nr` with history mask `mask` ended: TCP
/// flows end with an RST from either side or a FIN from both; other
/// protocols never end (they expire).
#[inline(always)]
pub const fn ending(proto_nr: u8, mask: u64) -> Ending {
    if proto_nr != proto::TCP {
        return Ending::Open;
    }
    let (o, r) = history::sides(mask);
    if (o | r) & history::RST != 0 {
        Ending::Reset
    } else if o & history::FIN != 0 && r & history::FIN != 0 {
        Ending::Closed
    } else {
        Ending::Open
    }
}

/// DNS: the port servers answer from (RFC 1035 section 4.2).
pub const DNS_PORT: u16 = 53;
/// HTTPS: the port whose ClientHellos are handed over.
pub const HTTPS_PORT: u16 = 443;
/// TLS record content type `handshake` (RFC 8446 section 5.1): the first
/// byte of a payload that may hold a ClientHello.
pub const TLS_HANDSHAKE: u8 = 22;

/// Which [`payload_kind`] a packet with a payload of protocol `proto_nr`
/// from `src_port` to `dst_port` may be handed over as, before its bytes
/// are looked at; 0 for none. DNS responses come from port 53 (UDP or
/// TCP: only answers, never queries); a ClientHello goes to TCP port 443
/// (confirmed by [`client_hello`]).
#[inline(always)]
pub const fn handoff(proto_nr: u8, src_port: u16, dst_port: u16) -> u8 {
    match proto_nr {
        proto::UDP if src_port == DNS_PORT => payload_kind::DNS_UDP,
        proto::TCP if src_port == DNS_PORT => payload_kind::DNS_TCP,
        proto::TCP if dst_port == HTTPS_PORT => payload_kind::TLS_HELLO,
        _ => 0,
    }
}

/// Whether the first six bytes of a TCP payload open a TLS handshake with a
/// ClientHello: a handshake record (content type 22) of a TLS 1.x record
/// version (major 3; RFC 8446 section 5.1 and appendix D), whose first
/// handshake message is a client_hello (type 1, section 4). Any other
/// payload to port 443 (application data, a TLS alert, HTTP/2 over plain
/// TCP) is not handed over.
#[inline(always)]
pub const fn client_hello(first: [u8; 6]) -> bool {
    first[0] == TLS_HANDSHAKE && first[1] == 3 && first[5] == 1
}
