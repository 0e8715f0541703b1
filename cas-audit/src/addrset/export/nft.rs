//! nftables (`nft -f`): one named interval set per group, accept rules in
//! the chains `cas_outbound` and `cas_inbound`.

use std::fmt::Write as _;

use super::{dns_comment, group_tags, plural, provenance, Group, Plan};
use crate::addrset::Connection;

/// The nft `ip`/`ip6` match of a group: `ip daddr @out4_443 tcp dport 443`.
fn nft_match(g: &Group) -> String {
    let family = if g.v6 { "ip6" } else { "ip" };
    let addr = match g.direction {
        Connection::Outbound => "daddr",
        Connection::Inbound => "saddr",
    };
    let ports = if g.ports.len() == 1 {
        g.port_list("")
    } else {
        format!("{{ {} }}", g.port_list(", "))
    };
    format!("{family} {addr} @{} tcp dport {ports}", g.nft_name())
}

pub(super) fn nft(plan: &Plan<'_>) -> String {
    let mut out = String::new();
    out.push_str(
        "#!/usr/sbin/nft -f\n\
         # cas-audit allowlist for nftables: Microsoft Defender for Cloud Apps.\n",
    );
    provenance(&mut out, plan);
    out.push_str(
        "#\n\
         # Load with `nft -f FILE`. Loading replaces table inet cas_audit (and\n\
         # everything in it) in one transaction; no other table is touched.\n\
         #\n\
         # Regular chains: cas_outbound accepts connections to the service\n\
         # (daddr), cas_inbound connections from it (saddr); other packets\n\
         # return to the calling chain. nftables jumps only within a table, and\n\
         # an accept in one table does not override a drop in another, so call\n\
         # them from base chains in this table, loaded with this file, e.g.:\n\
         #\n\
         #   include \"/etc/nftables.d/cas-audit.nft\"\n\
         #   table inet cas_audit {\n\
         #   \tchain forward {\n\
         #   \t\ttype filter hook forward priority filter; policy drop;\n\
         #   \t\tct state established,related accept\n\
         #   \t\tjump cas_outbound\n\
         #   \t\tjump cas_inbound\n\
         #   \t}\n\
         #   }\n\
         #\n\
         # (on a host, jump to cas_outbound from an output chain and to\n\
         # cas_inbound from an input chain), or copy the sets and chains into\n\
         # your own table.\n\
         \n\
         table inet cas_audit\n\
         delete table inet cas_audit\n\
         \n\
         table inet cas_audit {\n",
    );
    for g in &plan.groups {
        let _ = writeln!(
            out,
            "\t# {}: {}",
            g.describe(),
            plural(g.blocks.len(), "prefix", "prefixes")
        );
        group_tags(&mut out, "\t", &g.tags);
        let _ = writeln!(out, "\tset {} {{", g.nft_name());
        let _ = writeln!(
            out,
            "\t\ttype {}\n\t\tflags interval\n\t\telements = {{",
            if g.v6 { "ipv6_addr" } else { "ipv4_addr" }
        );
        for b in &g.blocks {
            let _ = writeln!(out, "\t\t\t{},\t# {}", b.net, b.tags.label());
        }
        out.push_str("\t\t}\n\t}\n\n");
    }
    for (direction, chain, what) in [
        (
            Connection::Outbound,
            "cas_outbound",
            "Destinations your hosts connect to.",
        ),
        (
            Connection::Inbound,
            "cas_inbound",
            "Sources the service connects from.",
        ),
    ] {
        let _ = writeln!(out, "\t# {what}\n\tchain {chain} {{");
        for g in plan.groups(direction) {
            let _ = writeln!(out, "\t\t{} accept", nft_match(g));
        }
        out.push_str("\t}\n");
        if direction == Connection::Outbound {
            out.push('\n');
        }
    }
    out.push_str("}\n");
    dns_comment(&mut out, plan);
    out
}
