//! `iptables-restore` input (IPv4 only): the user chains `CAS-OUTBOUND` and
//! `CAS-INBOUND` in table `filter`, one rule per prefix.

use std::fmt::Write as _;

use super::{dns_comment, group_tags, join, plural, provenance, Plan, MULTIPORT_MAX};
use crate::addrset::Connection;

/// The iptables chain of a direction.
fn iptables_chain(direction: Connection) -> &'static str {
    match direction {
        Connection::Outbound => "CAS-OUTBOUND",
        Connection::Inbound => "CAS-INBOUND",
    }
}

/// The port matches of a group's rules: one per rule (a group with more
/// than 15 ports needs several `multiport` rules per prefix).
fn iptables_port_matches(ports: &[u16]) -> Vec<String> {
    if let [port] = ports {
        return vec![format!("-m tcp --dport {port}")];
    }
    ports
        .chunks(MULTIPORT_MAX)
        .map(|chunk| match chunk {
            [port] => format!("-m tcp --dport {port}"),
            _ => format!("-m multiport --dports {}", join(chunk.iter(), ",")),
        })
        .collect()
}

pub(super) fn iptables(plan: &Plan<'_>) -> String {
    let mut out = String::new();
    out.push_str(
        "# cas-audit allowlist for iptables-restore (IPv4): Microsoft Defender for\n\
         # Cloud Apps.\n",
    );
    provenance(&mut out, plan);
    out.push_str(
        "#\n\
         # Load with `iptables-restore --noflush < FILE`: only the chains\n\
         # CAS-OUTBOUND (connections to the service) and CAS-INBOUND (connections\n\
         # from it) of table filter are created or emptied and refilled; their\n\
         # rules accept, other packets return to the calling chain. Jump to them\n\
         # from your own chains, after accepting replies, e.g. on a router:\n\
         #\n\
         #   iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
         #   iptables -A FORWARD -j CAS-OUTBOUND\n\
         #   iptables -A FORWARD -j CAS-INBOUND\n\
         #\n\
         # (on a host: OUTPUT -j CAS-OUTBOUND, INPUT -j CAS-INBOUND).\n",
    );
    let (v6_groups, v6_prefixes) = plan
        .groups
        .iter()
        .filter(|g| g.v6)
        .fold((0, 0), |(g, p), group| (g + 1, p + group.blocks.len()));
    if v6_prefixes > 0 {
        let _ = writeln!(
            out,
            "#\n\
             # Left out: {} in {} (iptables is IPv4 only; use the nft\n\
             # export, or the ipset export with ip6tables).",
            plural(v6_prefixes, "IPv6 prefix", "IPv6 prefixes"),
            plural(v6_groups, "group", "groups"),
        );
    }
    out.push_str("*filter\n:CAS-OUTBOUND - [0:0]\n:CAS-INBOUND - [0:0]\n");
    for direction in Connection::ALL {
        let chain = iptables_chain(direction);
        let addr = match direction {
            Connection::Outbound => "-d",
            Connection::Inbound => "-s",
        };
        for g in plan.groups(direction).filter(|g| !g.v6) {
            let _ = writeln!(
                out,
                "# {}: {}",
                g.describe(),
                plural(g.blocks.len(), "prefix", "prefixes")
            );
            group_tags(&mut out, "", &g.tags);
            let matches = iptables_port_matches(&g.ports);
            for b in &g.blocks {
                for m in &matches {
                    let _ = writeln!(
                        out,
                        "-A {chain} {addr} {} -p tcp {m} -m comment --comment \"{}\" -j ACCEPT",
                        b.net,
                        b.tags.label()
                    );
                }
            }
        }
    }
    out.push_str("COMMIT\n");
    dns_comment(&mut out, plan);
    out
}
