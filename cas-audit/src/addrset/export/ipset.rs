//! `ipset restore` input: one `hash:net` set per group.

use std::fmt::Write as _;

use super::{
    dns_comment, group_tags, join, plural, provenance, Group, Plan, Tags, IPSET_DEFAULT_MAXELEM,
    MULTIPORT_MAX,
};
use crate::addrset::Connection;
use ipnet::IpNet;

/// The `iptables` rule suggested for matching a group's set.
fn ipset_usage(g: &Group) -> String {
    let (tool, dir) = match (g.v6, g.direction) {
        (false, Connection::Outbound) => ("iptables", "dst"),
        (false, Connection::Inbound) => ("iptables", "src"),
        (true, Connection::Outbound) => ("ip6tables", "dst"),
        (true, Connection::Inbound) => ("ip6tables", "src"),
    };
    let ports = if g.ports.len() == 1 {
        format!("--dport {}", g.ports[0])
    } else {
        // Over 15 ports need several rules; the first 15 show the form.
        let shown: Vec<u16> = g.ports.iter().copied().take(MULTIPORT_MAX).collect();
        format!("-m multiport --dports {}", join(shown.iter(), ","))
    };
    format!(
        "{tool} -A FORWARD -m set --match-set {} {dir} -p tcp {ports} -j ACCEPT",
        g.ipset_name()
    )
}

pub(super) fn ipset(plan: &Plan<'_>) -> String {
    let mut out = String::new();
    out.push_str("# cas-audit allowlist for ipset restore: Microsoft Defender for Cloud Apps.\n");
    provenance(&mut out, plan);
    out.push_str(
        "#\n\
         # Load with `ipset restore < FILE`: each set is created if missing and\n\
         # emptied and refilled; other sets are not touched. Match them from\n\
         # your rules, after accepting replies, e.g. on a router:\n\
         #\n",
    );
    for g in &plan.groups {
        let _ = writeln!(out, "#   {}", ipset_usage(g));
    }
    if plan.groups.is_empty() {
        out.push_str("#   (no sets: the address set has no entries)\n");
    }
    out.push_str(
        "#\n\
         # (on a host: OUTPUT for the dst sets, INPUT for the src sets).\n",
    );
    for g in &plan.groups {
        let _ = writeln!(out);
        // hash:net cannot hold a /0: it is stored as two /1 halves.
        let nets: Vec<(IpNet, &Tags)> = g
            .blocks
            .iter()
            .flat_map(|b| {
                let halves = if b.net.prefix_len() == 0 {
                    b.net.subnets(1).map(Iterator::collect).unwrap_or_default()
                } else {
                    vec![b.net]
                };
                halves.into_iter().map(move |n| (n, &b.tags))
            })
            .collect();
        let _ = writeln!(
            out,
            "# {}: {}",
            g.describe(),
            plural(nets.len(), "prefix", "prefixes")
        );
        group_tags(&mut out, "", &g.tags);
        let name = g.ipset_name();
        let family = if g.v6 { "inet6" } else { "inet" };
        let maxelem = if nets.len() > IPSET_DEFAULT_MAXELEM {
            format!(" maxelem {}", nets.len().next_power_of_two())
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "create {name} hash:net family {family}{maxelem} comment -exist\nflush {name}"
        );
        for (net, tags) in nets {
            let _ = writeln!(out, "add {name} {net} comment \"{}\" -exist", tags.label());
        }
    }
    dns_comment(&mut out, plan);
    out
}
