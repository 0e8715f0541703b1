//! The evidence a flow carries: its Zeek-style history text, the ICMP error
//! that quoted it, the distance of a refusing RST, and the one readable text
//! of what blocked it (used by `run`'s lines and `check`'s table alike).

use std::net::IpAddr;

use cas_audit_common::FlowStats;
use serde::Serialize;

use super::addr_of;

/// The flow's history string.
pub fn history_string(st: &FlowStats) -> String {
    st.history
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect()
}

/// The ICMP error that quoted the flow, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IcmpError {
    /// ICMP or ICMPv6 type.
    pub icmp_type: u8,
    /// Code.
    pub icmp_code: u8,
    /// Who sent it.
    pub reporter: IpAddr,
}

impl IcmpError {
    /// The last error recorded for a flow.
    pub fn of(st: &FlowStats) -> Option<IcmpError> {
        (st.icmp_errors > 0).then(|| IcmpError {
            icmp_type: st.icmp_type,
            icmp_code: st.icmp_code,
            reporter: addr_of(st.reporter_family, &st.reporter),
        })
    }

    /// A readable name of the type and code (RFC 792, RFC 1812, RFC 4443).
    pub fn describe(&self, v6: bool) -> &'static str {
        match (v6, self.icmp_type, self.icmp_code) {
            (false, 3, 0) => "net unreachable",
            (false, 3, 1) => "host unreachable",
            (false, 3, 2) => "protocol unreachable",
            (false, 3, 3) => "port unreachable",
            (false, 3, 9) => "net administratively prohibited",
            (false, 3, 10) => "host administratively prohibited",
            (false, 3, 13) => "administratively prohibited",
            (true, 1, 0) => "no route to destination",
            (true, 1, 1) => "administratively prohibited",
            (true, 1, 3) => "address unreachable",
            (true, 1, 4) => "port unreachable",
            (true, 1, 5) => "source address failed policy",
            (true, 1, 6) => "reject route to destination",
            _ => "destination unreachable",
        }
    }
}

/// How many hops away the sender of a packet that arrived with `ttl` is:
/// 1 for a directly attached neighbour. Assumes the sender started from
/// the nearest common initial TTL at or above `ttl` (64, 128 or 255).
pub fn hops_from_ttl(ttl: u8) -> u8 {
    let initial: u16 = match ttl {
        0..=64 => 64,
        65..=128 => 128,
        _ => 255,
    };
    (initial - ttl as u16 + 1) as u8
}

/// The evidence of what blocked a flow, readable, when the kernel saw one:
/// the ICMP error and its sender (`ICMP administratively prohibited (type 3
/// code 13) from 198.51.100.1`) or the refusing RST's distance (`RST from 2
/// hops away (TTL 63)`). `v6` picks the ICMPv6 names.
pub fn blocked_by(icmp: Option<IcmpError>, rst_ttl: Option<u8>, v6: bool) -> Option<String> {
    if let Some(e) = icmp {
        return Some(format!(
            "ICMP {} (type {} code {}) from {}",
            e.describe(v6),
            e.icmp_type,
            e.icmp_code,
            e.reporter
        ));
    }
    rst_ttl.map(|ttl| {
        let h = hops_from_ttl(ttl);
        format!(
            "RST from {h} hop{} away (TTL {ttl})",
            if h == 1 { "" } else { "s" }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops() {
        assert_eq!(hops_from_ttl(64), 1);
        assert_eq!(hops_from_ttl(63), 2);
        assert_eq!(hops_from_ttl(128), 1);
        assert_eq!(hops_from_ttl(120), 9);
        assert_eq!(hops_from_ttl(255), 1);
    }
}
