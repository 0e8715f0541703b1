//! Judging one flow: pure code over the kernel's [`FlowKey`] and
//! [`FlowStats`], tested on made-up kernel values.
//!
//! - this module: [`Flow`] (addresses, who opened it, its service port and
//!   [`Verdict`], from `cas_audit_common::rules`), address and protocol
//!   formatting;
//! - [`state`]: the one place a flow's [`State`] is decided;
//! - [`evidence`]: history text, ICMP errors, hops from a TTL, what blocked a flow;
//! - [`tracker`]: when a flow is reported, and why ([`Reason`]); several
//!   kernel entries of one connection ([`conn`]) across a NAT ([`nat`]);
//! - [`ports`]: the allowed-port policy.

pub mod conn;
pub mod evidence;
pub mod nat;
pub mod ports;
pub mod state;
pub mod tracker;

use std::{fmt, net::IpAddr, time::Duration};

use cas_audit_common::{family, initiator, proto, rules, tcp_flags, FlowKey, FlowStats};
pub use cas_audit_common::{
    rules::{Ending, Verdict},
    Direction,
};
use serde::{Deserialize, Serialize};

pub use self::{
    ports::{AllowedPorts, PortPolicy},
    state::State,
    tracker::{Reason, Tracker},
};

/// Who opened the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Initiator {
    /// The host side sent the first SYN.
    Local,
    /// The CAS side sent the first SYN.
    Remote,
    /// Not seen (flow started before the agent, or not TCP).
    Unknown,
}

impl Initiator {
    /// The initiator a kernel [`initiator`] value stands for.
    pub fn from_kernel(v: u8) -> Self {
        match v {
            initiator::LOCAL => Initiator::Local,
            initiator::REMOTE => Initiator::Remote,
            _ => Initiator::Unknown,
        }
    }

    /// The contract string.
    pub fn as_str(self) -> &'static str {
        match self {
            Initiator::Local => "local",
            Initiator::Remote => "remote",
            Initiator::Unknown => "unknown",
        }
    }
}

/// A flow between a local host and a CAS address: one connection, from
/// one kernel entry or several merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Kernel key; behind NAT, with the inside host as the local side.
    pub key: FlowKey,
    /// Kernel state at the time of reading.
    pub stats: FlowStats,
    /// Host-side address.
    pub local_addr: IpAddr,
    /// CAS-side address.
    pub remote_addr: IpAddr,
    /// Who opened it.
    pub initiator: Initiator,
    /// The port the conversation is for; `None` for protocols without ports.
    pub service_port: Option<u16>,
    /// The judgement.
    pub verdict: Verdict,
    /// What conntrack says of the local side.
    pub nat: nat::Nat,
}

/// Whether the protocol carries ports.
pub fn has_ports(p: u8) -> bool {
    p == proto::TCP || p == proto::UDP
}

impl Flow {
    /// Builds the presentation of a kernel flow entry and judges it.
    pub fn new(key: FlowKey, stats: FlowStats, allowed: &AllowedPorts) -> Flow {
        Flow::with_nat(key, stats, allowed, nat::Nat::default())
    }

    /// Like [`Flow::new`] for a flow whose local side conntrack knows as
    /// `nat`: the inside host becomes the local side (address and port),
    /// and the flow is judged with its port.
    pub fn with_nat(
        mut key: FlowKey,
        stats: FlowStats,
        allowed: &AllowedPorts,
        nat: nat::Nat,
    ) -> Flow {
        if let Some((addr, port)) = nat.inside {
            key.local_addr = addr_bytes(addr);
            key.local_port = port;
        }
        let init = if key.proto == proto::TCP {
            Initiator::from_kernel(stats.initiator)
        } else {
            Initiator::Unknown
        };
        let judged = rules::judge(
            key.proto,
            stats.initiator,
            key.local_port,
            key.remote_port,
            |p| allowed.contains(p),
        );
        Flow {
            local_addr: addr_of(key.family, &key.local_addr),
            remote_addr: addr_of(key.family, &key.remote_addr),
            key,
            stats,
            initiator: init,
            service_port: judged.service_port,
            verdict: judged.verdict,
            nat,
        }
    }

    /// Indexes of the interfaces the flow was seen on, in order of first sight.
    pub fn ifindexes(&self) -> impl Iterator<Item = u32> + '_ {
        self.stats.ifindexes.iter().copied().filter(|i| *i != 0)
    }

    /// How the flow ended ([`rules::ending`], from its history).
    pub fn ending(&self) -> Ending {
        rules::ending(self.key.proto, self.stats.history_mask)
    }

    /// Direction of the first packet seen.
    pub fn first_packet(&self) -> Direction {
        Direction::from_u8(self.stats.first_dir)
    }

    /// Whether the flow is IPv6.
    pub fn is_v6(&self) -> bool {
        self.key.family == family::V6
    }

    /// The flow's stable id ([`flow_id`]).
    pub fn id(&self) -> u64 {
        flow_id(&self.key, self.stats.first_seen_ns)
    }

    /// What happened to the flow, as of `now_ns` (CLOCK_MONOTONIC): flows
    /// not answered within `answer_timeout` of their first packet are
    /// unanswered.
    pub fn state(&self, now_ns: u64, answer_timeout: Duration) -> State {
        let age = Duration::from_nanos(now_ns.saturating_sub(self.stats.first_seen_ns));
        state::classify(self.key.proto, &self.stats, age, answer_timeout)
    }
}

/// Bits of a [`flow_id`]: 53, so that it is exact as a JSON number in
/// every reader (IEEE 754 doubles: JavaScript, jq, most SIEMs).
pub const FLOW_ID_BITS: u32 = 53;

/// The stable id of a flow, the same in each of its records, its IPFIX
/// data records (`flowId`, IE 148) and its syslog messages: FNV-1a (64
/// bits, offset basis 0xcbf29ce484222325, prime 0x100000001b3) over the
/// flow's identity, in this order: address family, IP protocol, local and
/// remote address (16 bytes each, IPv4 in the first 4; behind NAT the
/// inside host is the local side), local and remote port (big-endian u16)
/// and the kernel time of its first packet (CLOCK_MONOTONIC ns, big-endian
/// u64), keeping
/// the low [`FLOW_ID_BITS`] bits. The first-packet time tells apart two
/// flows that reuse one 5-tuple; it is the same in the flagged event and in
/// the flow table, and across an agent restart over a pinned datapath.
pub fn flow_id(key: &FlowKey, first_seen_ns: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&[key.family, key.proto]);
    eat(&key.local_addr);
    eat(&key.remote_addr);
    eat(&key.local_port.to_be_bytes());
    eat(&key.remote_port.to_be_bytes());
    eat(&first_seen_ns.to_be_bytes());
    h & ((1 << FLOW_ID_BITS) - 1)
}

/// An IP protocol number, written as `tcp`, `udp`, `icmp`, `icmpv6` or
/// the number (the `proto` field of the records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Proto(pub u8);

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            proto::TCP => f.write_str("tcp"),
            proto::UDP => f.write_str("udp"),
            proto::ICMP => f.write_str("icmp"),
            proto::ICMPV6 => f.write_str("icmpv6"),
            n => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Proto(proto::TCP)),
            "udp" => Ok(Proto(proto::UDP)),
            "icmp" => Ok(Proto(proto::ICMP)),
            "icmpv6" => Ok(Proto(proto::ICMPV6)),
            n => n
                .parse()
                .map(Proto)
                .map_err(|_| format!("unknown protocol {s:?}")),
        }
    }
}

impl Serialize for Proto {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Proto {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Protocol name for output: `tcp`, `udp`, `icmp`, `icmpv6` or the number.
pub fn proto_name(p: u8) -> String {
    Proto(p).to_string()
}

/// Formats a kernel address (family, 16 bytes in network byte order) as an [`IpAddr`].
pub fn addr_of(family: u8, bytes: &[u8; 16]) -> IpAddr {
    if family == cas_audit_common::family::V4 {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        IpAddr::from(*bytes)
    }
}

/// An address as the kernel stores it (16 bytes, IPv4 in the first four).
pub fn addr_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// An endpoint as text: `addr:port`, `[v6]:port`, or the address alone
/// without a port.
pub fn endpoint(addr: IpAddr, port: Option<u16>) -> String {
    match (addr, port) {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

/// Names of the TCP flags set in `bits`, in header bit order.
pub fn flag_names(bits: u32) -> Vec<&'static str> {
    tcp_flags::NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_audit_common::history;

    /// Service port and verdict of `key` ([`rules::judge`]).
    fn judge(key: &FlowKey, init: u8, ports: &AllowedPorts) -> (Option<u16>, Verdict) {
        let j = rules::judge(key.proto, init, key.local_port, key.remote_port, |p| {
            ports.contains(p)
        });
        (j.service_port, j.verdict)
    }

    fn key(p: u8, local_port: u16, remote_port: u16) -> FlowKey {
        FlowKey {
            local_addr: [198, 51, 100, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [13, 64, 196, 27, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            local_port,
            remote_port,
            proto: p,
            family: family::V4,
            _pad: [0; 2],
        }
    }

    #[test]
    fn tcp_service_port_follows_the_opener() {
        let ports = AllowedPorts::default();
        // Local opened to remote 443.
        assert_eq!(
            judge(&key(proto::TCP, 40000, 443), initiator::LOCAL, &ports),
            (Some(443), Verdict::Allowed)
        );
        // Remote opened to the local stunnel port.
        assert_eq!(
            judge(&key(proto::TCP, 11344, 51000), initiator::REMOTE, &ports),
            (Some(11344), Verdict::Allowed)
        );
        // Remote opened to a local port that is not allowed, from remote port 443:
        // the service port is the local one, whatever the remote port is.
        assert_eq!(
            judge(&key(proto::TCP, 22, 443), initiator::REMOTE, &ports),
            (Some(22), Verdict::DisallowedPort)
        );
        // Local opened to remote 8443.
        assert_eq!(
            judge(&key(proto::TCP, 40000, 8443), initiator::LOCAL, &ports),
            (Some(8443), Verdict::DisallowedPort)
        );
    }

    #[test]
    fn unknown_start_uses_remote_port_unless_only_local_is_allowed() {
        let ports = AllowedPorts::default();
        assert_eq!(
            judge(&key(proto::TCP, 40000, 443), initiator::UNKNOWN, &ports),
            (Some(443), Verdict::Allowed)
        );
        assert_eq!(
            judge(&key(proto::TCP, 11344, 50123), initiator::UNKNOWN, &ports),
            (Some(11344), Verdict::Allowed)
        );
        assert_eq!(
            judge(&key(proto::TCP, 40000, 8443), initiator::UNKNOWN, &ports),
            (Some(8443), Verdict::DisallowedPort)
        );
        // Both allowed: the remote (CAS) side's port.
        assert_eq!(
            judge(&key(proto::TCP, 80, 443), initiator::UNKNOWN, &ports),
            (Some(443), Verdict::Allowed)
        );
    }

    #[test]
    fn udp_ignores_the_initiator_field() {
        let ports = AllowedPorts::default();
        assert_eq!(
            judge(&key(proto::UDP, 443, 8443), initiator::LOCAL, &ports),
            (Some(443), Verdict::Allowed)
        );
        assert_eq!(
            judge(&key(proto::UDP, 40000, 8443), initiator::UNKNOWN, &ports),
            (Some(8443), Verdict::DisallowedPort)
        );
    }

    #[test]
    fn flow_ids_are_stable_and_fit_a_double() {
        let k = key(proto::TCP, 40000, 443);
        // Pinned: the id is a contract across versions. The value was
        // computed by an independent FNV-1a (Python) over the documented bytes.
        assert_eq!(flow_id(&k, 1_000), 0x6_d993_dd62_417d);
        assert_ne!(flow_id(&k, 1_000), flow_id(&k, 1_001));
        assert_ne!(
            flow_id(&k, 1_000),
            flow_id(&key(proto::TCP, 40001, 443), 1_000)
        );
        for t in 0..1000u64 {
            assert!(flow_id(&k, t * 7_919) < 1 << FLOW_ID_BITS);
        }
    }

    #[test]
    fn portless_protocols() {
        let ports = AllowedPorts::default();
        assert_eq!(
            judge(&key(proto::ICMP, 0, 0), 0, &ports),
            (None, Verdict::Allowed)
        );
        assert_eq!(
            judge(&key(47, 0, 0), 0, &ports),
            (None, Verdict::DisallowedPort)
        );
        assert_eq!(proto_name(47), "47");
        assert_eq!(proto_name(proto::ICMPV6), "icmpv6");
    }

    #[test]
    fn endings_and_flags() {
        let ports = AllowedPorts::default();
        // The history the kernel keeps for these flags (local opened).
        let resp = |k: u64| k << history::KINDS;
        let mut st = FlowStats {
            tcp_flags_out: tcp_flags::SYN | tcp_flags::ACK | tcp_flags::FIN,
            tcp_flags_in: tcp_flags::SYN | tcp_flags::ACK,
            history_mask: history::SYN | history::ACK | history::FIN | resp(history::SYN_ACK),
            initiator: initiator::LOCAL,
            ..Default::default()
        };
        let f = Flow::new(key(proto::TCP, 40000, 443), st, &ports);
        assert_eq!(f.ending(), Ending::Open);
        assert_eq!(f.initiator, Initiator::Local);
        assert_eq!(flag_names(st.tcp_flags_out), vec!["FIN", "SYN", "ACK"]);
        st.tcp_flags_in |= tcp_flags::FIN;
        st.history_mask |= resp(history::FIN);
        assert_eq!(
            Flow::new(key(proto::TCP, 40000, 443), st, &ports).ending(),
            Ending::Closed
        );
        st.tcp_flags_in |= tcp_flags::RST;
        st.history_mask |= resp(history::RST);
        assert_eq!(
            Flow::new(key(proto::TCP, 40000, 443), st, &ports).ending(),
            Ending::Reset
        );
        // UDP never reports an initiator.
        let u = Flow::new(key(proto::UDP, 40000, 443), st, &ports);
        assert_eq!(u.initiator, Initiator::Unknown);
        assert_eq!(u.ending(), Ending::Open);
    }
}
