//! Flows as the agent presents them: addresses, the CAS range they touch,
//! who opened them, their service port and the [`Verdict`].

use std::{net::IpAddr, time::Duration};

use cas_audit_common::{
    family, initiator, proto, service_port, tcp_flags, Direction, FlowKey, FlowStats,
};
use serde::Serialize;

use crate::{
    datapath::addr_of,
    ports::AllowedPorts,
    state::{classify, State},
};

/// Whether a flow's service port is one the CAS requirements allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The service port is allowed (or the protocol is ICMP, which has none).
    Allowed,
    /// The service port is not allowed, or the protocol has no ports at all
    /// (GRE, ESP, ...), which no CAS allowlist names.
    DisallowedPort,
}

impl Verdict {
    /// The contract string.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::DisallowedPort => "disallowed-port",
        }
    }
}

/// Who opened the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    fn from_kernel(v: u8) -> Self {
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

/// How a flow ended, as far as its TCP flags tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Still open (or not TCP).
    Open,
    /// FIN seen in both directions.
    Closed,
    /// RST seen.
    Reset,
}

/// A flow between a local host and a CAS address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Kernel key.
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
}

/// Whether the protocol carries ports.
pub fn has_ports(p: u8) -> bool {
    p == proto::TCP || p == proto::UDP
}

impl Flow {
    /// Builds the presentation of a kernel flow entry and judges it.
    pub fn new(key: FlowKey, stats: FlowStats, allowed: &AllowedPorts) -> Flow {
        let init = if key.proto == proto::TCP {
            Initiator::from_kernel(stats.initiator)
        } else {
            Initiator::Unknown
        };
        let (service_port, verdict) = judge(&key, stats.initiator, allowed);
        Flow {
            local_addr: addr_of(key.family, &key.local_addr),
            remote_addr: addr_of(key.family, &key.remote_addr),
            key,
            stats,
            initiator: init,
            service_port,
            verdict,
        }
    }

    /// How the flow ended, from its TCP flags.
    pub fn ending(&self) -> Ending {
        if self.key.proto != proto::TCP {
            return Ending::Open;
        }
        let (o, i) = (self.stats.tcp_flags_out, self.stats.tcp_flags_in);
        if (o | i) & tcp_flags::RST != 0 {
            Ending::Reset
        } else if o & tcp_flags::FIN != 0 && i & tcp_flags::FIN != 0 {
            Ending::Closed
        } else {
            Ending::Open
        }
    }

    /// Direction of the first packet seen.
    pub fn first_packet(&self) -> &'static str {
        if self.stats.first_dir == Direction::Out as u8 {
            "out"
        } else {
            "in"
        }
    }

    /// Whether the flow is IPv6.
    pub fn is_v6(&self) -> bool {
        self.key.family == family::V6
    }

    /// What happened to the flow, as of `now_ns` (CLOCK_MONOTONIC): flows
    /// not answered within `answer_timeout` of their first packet are
    /// unanswered.
    pub fn state(&self, now_ns: u64, answer_timeout: Duration) -> State {
        let age = Duration::from_nanos(now_ns.saturating_sub(self.stats.first_seen_ns));
        classify(self.key.proto, &self.stats, age, answer_timeout)
    }
}

/// Service port and verdict of a flow (the same rule the kernel applies
/// when it decides whether to raise an event).
pub fn judge(
    key: &FlowKey,
    kernel_initiator: u8,
    allowed: &AllowedPorts,
) -> (Option<u16>, Verdict) {
    match key.proto {
        proto::TCP | proto::UDP => {
            let init = if key.proto == proto::TCP {
                kernel_initiator
            } else {
                initiator::UNKNOWN
            };
            let port = service_port(init, key.local_port, key.remote_port, |p| {
                allowed.contains(p)
            });
            let v = if allowed.contains(port) {
                Verdict::Allowed
            } else {
                Verdict::DisallowedPort
            };
            (Some(port), v)
        }
        proto::ICMP | proto::ICMPV6 => (None, Verdict::Allowed),
        _ => (None, Verdict::DisallowedPort),
    }
}

/// Protocol name for output: `tcp`, `udp`, `icmp`, `icmpv6` or the number.
pub fn proto_name(p: u8) -> String {
    match p {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMP => "icmp".into(),
        proto::ICMPV6 => "icmpv6".into(),
        n => n.to_string(),
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

    fn key(p: u8, local_port: u16, remote_port: u16) -> FlowKey {
        FlowKey {
            local_addr: [198, 51, 100, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [13, 64, 196, 27, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ifindex: 2,
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
        let mut st = FlowStats {
            tcp_flags_out: tcp_flags::SYN | tcp_flags::ACK | tcp_flags::FIN,
            tcp_flags_in: tcp_flags::SYN | tcp_flags::ACK,
            initiator: initiator::LOCAL,
            ..Default::default()
        };
        let f = Flow::new(key(proto::TCP, 40000, 443), st, &ports);
        assert_eq!(f.ending(), Ending::Open);
        assert_eq!(f.initiator, Initiator::Local);
        assert_eq!(flag_names(st.tcp_flags_out), vec!["FIN", "SYN", "ACK"]);
        st.tcp_flags_in |= tcp_flags::FIN;
        assert_eq!(
            Flow::new(key(proto::TCP, 40000, 443), st, &ports).ending(),
            Ending::Closed
        );
        st.tcp_flags_in |= tcp_flags::RST;
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
