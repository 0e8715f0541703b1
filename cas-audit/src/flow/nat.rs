//! Which inside host a flow is behind NAT, from the conntrack entry its
//! 5-tuple belongs to (pure: the agent asks conntrack, this module reads
//! the answer).
//!
//! A conntrack entry holds the tuple of the connection's first packet
//! (`orig`) and the tuple its answers carry (`reply`); NAT shows as a
//! difference between the two (the kernel's `nf_nat` rewrites the reply
//! tuple). The datapath sees the connection with the addresses of the hook
//! it is on: before source NAT on the LAN side, after it on the uplink.
//! Either way the inside host is
//!
//! - for a connection the local side opened (its address is `orig.src`
//!   or `reply.dst`): `orig.src:orig.sport`, translated to
//!   `reply.dst:reply.dport` (masquerade, snat);
//! - for one the CAS side opened (`orig.dst` or `reply.src`): `reply.src:reply.sport`,
//!   reached as `orig.dst:orig.dport` (dnat: a port forward).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::host::conntrack::{CtEntry, CtTuple};

/// What connection tracking says of a flow's local side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatKind {
    /// Conntrack tracks the connection and did not translate the local side.
    None,
    /// The local side opened it and was translated on the way out
    /// (masquerade, snat): `nat_*` is the address the CAS side saw.
    Snat,
    /// The CAS side opened it to `nat_*`, translated to the local side
    /// (dnat: a port forward).
    Dnat,
    /// Conntrack has no entry for it (this namespace tracks no connections,
    /// and so translates none; the entry expired before the agent asked; a
    /// protocol without ports), or the agent could not ask.
    #[default]
    Unknown,
}

/// A flow's local side as conntrack knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Nat {
    /// What conntrack said.
    pub kind: NatKind,
    /// The inside host and port (the datapath's own view when `kind` is
    /// `Unknown`: `None` here).
    pub inside: Option<(IpAddr, u16)>,
    /// The translated side: the address and port the CAS side saw (snat)
    /// or connected to (dnat); `None` without NAT.
    pub translated: Option<(IpAddr, u16)>,
}

/// The tuples to ask conntrack for a flow between `local` and `remote`
/// (protocol `proto`): as a packet the local side sends, then as one it
/// receives. The first that conntrack knows is the flow's entry.
pub fn queries(proto: u8, local: (IpAddr, u16), remote: (IpAddr, u16)) -> [CtTuple; 2] {
    let out = CtTuple {
        proto,
        src: local.0,
        dst: remote.0,
        sport: local.1,
        dport: remote.1,
    };
    [out, out.reversed()]
}

/// Reads entry `e` for a flow whose datapath local side is `local` and
/// remote (CAS) side `remote`; `None` when the entry is not the flow's.
pub fn resolve(local: (IpAddr, u16), remote: (IpAddr, u16), e: &CtEntry) -> Option<Nat> {
    let ends = |t: &CtTuple| ((t.src, t.sport), (t.dst, t.dport));
    let (o_src, o_dst) = ends(&e.orig);
    let (r_src, r_dst) = ends(&e.reply);
    let local_opened = (local == o_src && remote == o_dst) || (local == r_dst && remote == r_src);
    let remote_opened = (local == o_dst && remote == o_src) || (local == r_src && remote == r_dst);
    let (inside, translated, kind) = if local_opened {
        (o_src, r_dst, NatKind::Snat)
    } else if remote_opened {
        (r_src, o_dst, NatKind::Dnat)
    } else {
        return None;
    };
    Some(if inside == translated {
        Nat {
            kind: NatKind::None,
            inside: Some(inside),
            translated: None,
        }
    } else {
        Nat {
            kind,
            inside: Some(inside),
            translated: Some(translated),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn t(src: &str, sport: u16, dst: &str, dport: u16) -> CtTuple {
        CtTuple {
            proto: 6,
            src: a(src),
            dst: a(dst),
            sport,
            dport,
        }
    }

    #[test]
    fn masquerade_seen_on_either_side() {
        // 198.51.100.2:40000 -> 13.64.196.27:8443, masqueraded to 203.0.113.1:40001.
        let e = CtEntry {
            orig: t("198.51.100.2", 40000, "13.64.196.27", 8443),
            reply: t("13.64.196.27", 8443, "203.0.113.1", 40001),
        };
        let want = Nat {
            kind: NatKind::Snat,
            inside: Some((a("198.51.100.2"), 40000)),
            translated: Some((a("203.0.113.1"), 40001)),
        };
        let cas = (a("13.64.196.27"), 8443);
        // LAN side: before NAT.
        assert_eq!(resolve((a("198.51.100.2"), 40000), cas, &e), Some(want));
        // Uplink: after NAT.
        assert_eq!(resolve((a("203.0.113.1"), 40001), cas, &e), Some(want));
        // Another flow's view.
        assert_eq!(resolve((a("203.0.113.1"), 40002), cas, &e), None);
        let [q1, q2] = queries(6, (a("203.0.113.1"), 40001), cas);
        assert_eq!(q2, e.reply);
        assert_eq!(q1, e.reply.reversed());
    }

    #[test]
    fn port_forward_to_an_inside_stunnel() {
        // A CAS host connects to the gateway's 203.0.113.1:11344, forwarded
        // to 198.51.100.2:11344.
        let e = CtEntry {
            orig: t("13.64.196.27", 50000, "203.0.113.1", 11344),
            reply: t("198.51.100.2", 11344, "13.64.196.27", 50000),
        };
        let want = Nat {
            kind: NatKind::Dnat,
            inside: Some((a("198.51.100.2"), 11344)),
            translated: Some((a("203.0.113.1"), 11344)),
        };
        let cas = (a("13.64.196.27"), 50000);
        assert_eq!(resolve((a("203.0.113.1"), 11344), cas, &e), Some(want));
        assert_eq!(resolve((a("198.51.100.2"), 11344), cas, &e), Some(want));
    }

    #[test]
    fn untranslated() {
        let e = CtEntry {
            orig: t("198.51.100.2", 40000, "13.64.196.27", 443),
            reply: t("13.64.196.27", 443, "198.51.100.2", 40000),
        };
        let got = resolve((a("198.51.100.2"), 40000), (a("13.64.196.27"), 443), &e);
        assert_eq!(
            got,
            Some(Nat {
                kind: NatKind::None,
                inside: Some((a("198.51.100.2"), 40000)),
                translated: None,
            })
        );
        assert_eq!(
            serde_json::to_string(&NatKind::default()).unwrap(),
            "\"unknown\""
        );
    }
}
