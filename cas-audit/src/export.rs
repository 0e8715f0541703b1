//! Firewall allowlists generated from an [`AddressSet`].
//!
//! [`export`] turns an (already filtered) address set into the rules a
//! customer's firewall needs so that the service keeps working:
//!
//! * **outbound** entries (portal, access and session controls, SIEM agent)
//!   are *destinations* the customer's hosts must reach;
//! * **inbound** entries (app connector, DLP, mail) are *sources* the service
//!   connects from, to the customer's service ports.
//!
//! The entries are grouped by direction, address family and port list; every
//! group becomes one named set (nft, ipset) or one block of rules (iptables)
//! and one rule object (JSON). Within a group the prefixes are truncated to
//! their network address, deduplicated, and dropped when another prefix of
//! the group covers them, so the elements are disjoint and no firewall
//! rejects the list as conflicting (nft interval sets do). Adjacent prefixes
//! are not merged: every element is a documented address or range, labelled
//! with the data centers and purposes of the entries it covers. Every
//! connection is TCP.
//!
//! DNS names cannot go into IP rules: the nft, iptables and ipset outputs
//! list them in comments at the end, and the JSON output in its `dns` array,
//! so nothing in the set is silently dropped.
//!
//! The output is deterministic (sorted, no timestamps), so exports of two
//! revisions of a set can be compared with `diff`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use ipnet::IpNet;
use serde::Serialize;

use crate::addrset::{AddressSet, DataCenter, Direction, Purpose};

/// The firewall syntaxes [`export`] can write.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// A complete `nft -f` file: table `inet cas_audit` with one interval set
    /// per group and the regular chains `cas_outbound` and `cas_inbound`.
    Nft,
    /// `iptables-restore` input (IPv4 only): the user chains `CAS-OUTBOUND`
    /// and `CAS-INBOUND` in table `filter`, one rule per prefix.
    Iptables,
    /// `ipset restore` input: one `hash:net` set per group.
    Ipset,
    /// A machine-readable allowlist (JSON).
    ///
    /// `{"set", "source", "published", "rules": [{"id", "direction",
    /// "family", "protocol", "ports", "prefixes", "datacenters", "global",
    /// "purposes"}], "dns": [{"name", "direction", "protocol", "ports",
    /// "datacenters", "global", "purposes"}]}`, where `global` says that some
    /// entry applies to every data center.
    Json,
}

/// Ipset set names are at most 31 characters long.
const IPSET_MAXNAMELEN: usize = 31;

/// The `ipset` default `maxelem` of a hash set.
const IPSET_DEFAULT_MAXELEM: usize = 65_536;

/// `-m multiport` takes at most 15 ports per rule.
const MULTIPORT_MAX: usize = 15;

/// Renders `set` as a firewall allowlist in `format`.
///
/// The text ends with a newline. See the module documentation for what is
/// allowed; see [`ExportFormat`] for the layout of each format.
#[must_use]
pub fn export(set: &AddressSet, format: ExportFormat) -> String {
    let plan = Plan::new(set);
    match format {
        ExportFormat::Nft => nft(&plan),
        ExportFormat::Iptables => iptables(&plan),
        ExportFormat::Ipset => ipset(&plan),
        ExportFormat::Json => json(&plan),
    }
}

// ---------------------------------------------------------------------------
// The plan: groups of disjoint, labelled prefixes
// ---------------------------------------------------------------------------

/// Data centers and purposes behind a prefix, a group or a DNS name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tags {
    /// Some entry applies to every data center (no data center given).
    global: bool,
    datacenters: BTreeSet<DataCenter>,
    purposes: BTreeSet<Purpose>,
}

impl Tags {
    fn add(&mut self, datacenter: Option<DataCenter>, purpose: Purpose) {
        match datacenter {
            Some(dc) => {
                self.datacenters.insert(dc);
            }
            None => self.global = true,
        }
        self.purposes.insert(purpose);
    }

    fn merge(&mut self, other: &Tags) {
        self.global |= other.global;
        self.datacenters.extend(other.datacenters.iter().copied());
        self.purposes.extend(other.purposes.iter().copied());
    }

    /// Data centers, `"global"` first when some entry has none.
    fn datacenter_names(&self) -> Vec<&'static str> {
        let mut names = Vec::with_capacity(self.datacenters.len() + 1);
        if self.global {
            names.push("global");
        }
        names.extend(self.datacenters.iter().map(|dc| dc.as_str()));
        names
    }

    fn purpose_names(&self) -> Vec<&'static str> {
        self.purposes.iter().map(|p| p.as_str()).collect()
    }

    /// `"US1,Gov US1 portal,siem-agent"`: data centers, then purposes.
    fn label(&self) -> String {
        format!(
            "{} {}",
            self.datacenter_names().join(","),
            self.purpose_names().join(",")
        )
    }
}

/// One prefix of a group, with the tags of the entries it covers.
#[derive(Debug, Clone)]
struct Block {
    net: IpNet,
    tags: Tags,
}

/// The allowed prefixes of one direction, family and port list.
#[derive(Debug, Clone)]
struct Group {
    direction: Direction,
    v6: bool,
    ports: Vec<u16>,
    /// `out4-443`, `in4-11344`, ... (`{dir}{family}-g{n}` if that would make
    /// an ipset name longer than 31 characters).
    id: String,
    blocks: Vec<Block>,
    /// Union of the blocks' tags.
    tags: Tags,
}

impl Group {
    fn dir_short(&self) -> &'static str {
        match self.direction {
            Direction::Outbound => "out",
            Direction::Inbound => "in",
        }
    }

    fn family(&self) -> &'static str {
        if self.v6 {
            "ipv6"
        } else {
            "ipv4"
        }
    }

    fn family_label(&self) -> &'static str {
        if self.v6 {
            "IPv6"
        } else {
            "IPv4"
        }
    }

    /// `"443"` or `"80,443"`.
    fn port_list(&self, sep: &str) -> String {
        join(self.ports.iter(), sep)
    }

    /// `"outbound tcp 443, IPv4"`.
    fn describe(&self) -> String {
        format!(
            "{} tcp {}, {}",
            self.direction,
            self.port_list(","),
            self.family_label()
        )
    }

    fn nft_name(&self) -> String {
        self.id.replace('-', "_")
    }

    fn ipset_name(&self) -> String {
        format!("cas-{}", self.id)
    }
}

/// A DNS name with the merged tags of every entry naming it.
#[derive(Debug, Clone)]
struct Dns {
    name: String,
    direction: Direction,
    ports: Vec<u16>,
    tags: Tags,
}

/// What every format renders.
#[derive(Debug)]
struct Plan<'a> {
    set: &'a AddressSet,
    groups: Vec<Group>,
    dns: Vec<Dns>,
    /// Entries without any port (which [`AddressSet`] should not contain):
    /// left out, and said so.
    portless: usize,
}

impl<'a> Plan<'a> {
    fn new(set: &'a AddressSet) -> Plan<'a> {
        // (direction, is IPv6, ports) -> (prefix, tags) of each entry.
        type Key = (Direction, bool, Vec<u16>);
        let mut raw: BTreeMap<Key, Vec<(IpNet, Tags)>> = BTreeMap::new();
        let mut portless = 0;
        for e in &set.entries {
            if e.ports.is_empty() {
                portless += 1;
                continue;
            }
            let mut tags = Tags::default();
            tags.add(e.datacenter, e.purpose);
            let key = (e.direction, e.prefix.addr().is_ipv6(), ports_of(&e.ports));
            raw.entry(key).or_default().push((e.prefix, tags));
        }
        let mut groups: Vec<Group> = raw
            .into_iter()
            .map(|((direction, v6, ports), members)| {
                let blocks = disjoint_prefixes(members);
                let mut tags = Tags::default();
                for b in &blocks {
                    tags.merge(&b.tags);
                }
                Group {
                    direction,
                    v6,
                    ports,
                    id: String::new(),
                    blocks,
                    tags,
                }
            })
            .collect();
        for (index, g) in groups.iter_mut().enumerate() {
            let family = if g.v6 { '6' } else { '4' };
            let mut id = format!("{}{family}-{}", g.dir_short(), g.port_list("-"));
            if format!("cas-{id}").len() > IPSET_MAXNAMELEN {
                id = format!("{}{family}-g{index}", g.dir_short());
            }
            g.id = id;
        }

        let mut dns: BTreeMap<(Direction, Vec<u16>, String), Tags> = BTreeMap::new();
        for d in &set.dns {
            let key = (d.direction, ports_of(&d.ports), d.name.clone());
            dns.entry(key).or_default().add(d.datacenter, d.purpose);
        }
        let dns = dns
            .into_iter()
            .map(|((direction, ports, name), tags)| Dns {
                name,
                direction,
                ports,
                tags,
            })
            .collect();
        Plan {
            set,
            groups,
            dns,
            portless,
        }
    }

    fn groups(&self, direction: Direction) -> impl Iterator<Item = &Group> + '_ {
        self.groups.iter().filter(move |g| g.direction == direction)
    }
}

/// The ports, sorted and deduplicated (they should already be).
fn ports_of(ports: &[u16]) -> Vec<u16> {
    let set: BTreeSet<u16> = ports.iter().copied().collect();
    set.into_iter().collect()
}

/// An inclusive address range, IPv4 addresses in the low 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interval {
    start: u128,
    end: u128,
}

impl Interval {
    fn of(net: IpNet) -> Interval {
        match net.trunc() {
            IpNet::V4(n) => Interval {
                start: u128::from(u32::from(n.network())),
                end: u128::from(u32::from(n.broadcast())),
            },
            IpNet::V6(n) => Interval {
                start: u128::from(n.network()),
                end: u128::from(n.broadcast()),
            },
        }
    }
}

/// Drops every prefix that another member covers (or duplicates), folding
/// its tags into the covering one, and returns the remaining prefixes sorted
/// by address. CIDR prefixes either nest or are disjoint, so one sweep over
/// the members sorted by start (widest first) finds the covering ones.
/// Adjacent prefixes are kept apart, so every element still names a
/// documented address or range.
fn disjoint_prefixes(mut members: Vec<(IpNet, Tags)>) -> Vec<Block> {
    members.sort_by_key(|(net, _)| {
        let iv = Interval::of(*net);
        (iv.start, std::cmp::Reverse(iv.end))
    });
    let mut blocks: Vec<Block> = Vec::new();
    let mut covering: Option<Interval> = None;
    for (net, tags) in members {
        let iv = Interval::of(net);
        match (covering, blocks.last_mut()) {
            (Some(c), Some(last)) if c.start <= iv.start && iv.end <= c.end => {
                last.tags.merge(&tags);
            }
            _ => {
                covering = Some(iv);
                blocks.push(Block {
                    net: net.trunc(),
                    tags,
                });
            }
        }
    }
    blocks
}

// ---------------------------------------------------------------------------
// Shared text helpers
// ---------------------------------------------------------------------------

fn join<T: ToString>(items: impl Iterator<Item = T>, sep: &str) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(sep)
}

/// Text from the address set made safe for a `#` comment line: control
/// characters (a newline would end the comment) are escaped.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `# ` + the set's name, source and publication date (and the number of
/// entries left out for want of a port, if any).
fn provenance(out: &mut String, plan: &Plan<'_>) {
    let set = plan.set;
    let _ = writeln!(out, "# Address set: {}", clean(&set.name));
    let _ = writeln!(
        out,
        "# Source: {} (published {})",
        clean(&set.source),
        clean(&set.published)
    );
    if plan.portless > 0 {
        let _ = writeln!(
            out,
            "# Left out: {} without any port.",
            plural(plan.portless, "entry", "entries")
        );
    }
}

/// The closing comment listing the DNS names (nothing when there are none).
fn dns_comment(out: &mut String, plan: &Plan<'_>) {
    if plan.dns.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "# DNS names to allow in your proxy (IP rules cannot match names): {}",
        plan.dns.len()
    );
    for d in &plan.dns {
        let _ = writeln!(
            out,
            "#   {} tcp {}: {} ({})",
            d.direction,
            join(d.ports.iter(), ","),
            clean(&d.name),
            d.tags.label()
        );
    }
}

/// `"data centers: US1, EU1"` and `"purposes: portal"` lines of a group.
fn group_tags(out: &mut String, indent: &str, tags: &Tags) {
    let _ = writeln!(
        out,
        "{indent}# data centers: {}",
        tags.datacenter_names().join(", ")
    );
    let _ = writeln!(
        out,
        "{indent}# purposes: {}",
        tags.purpose_names().join(", ")
    );
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

// ---------------------------------------------------------------------------
// nft
// ---------------------------------------------------------------------------

/// The nft `ip`/`ip6` match of a group: `ip daddr @out4_443 tcp dport 443`.
fn nft_match(g: &Group) -> String {
    let family = if g.v6 { "ip6" } else { "ip" };
    let addr = match g.direction {
        Direction::Outbound => "daddr",
        Direction::Inbound => "saddr",
    };
    let ports = if g.ports.len() == 1 {
        g.port_list("")
    } else {
        format!("{{ {} }}", g.port_list(", "))
    };
    format!("{family} {addr} @{} tcp dport {ports}", g.nft_name())
}

fn nft(plan: &Plan<'_>) -> String {
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
            Direction::Outbound,
            "cas_outbound",
            "Destinations your hosts connect to.",
        ),
        (
            Direction::Inbound,
            "cas_inbound",
            "Sources the service connects from.",
        ),
    ] {
        let _ = writeln!(out, "\t# {what}\n\tchain {chain} {{");
        for g in plan.groups(direction) {
            let _ = writeln!(out, "\t\t{} accept", nft_match(g));
        }
        out.push_str("\t}\n");
        if direction == Direction::Outbound {
            out.push('\n');
        }
    }
    out.push_str("}\n");
    dns_comment(&mut out, plan);
    out
}

// ---------------------------------------------------------------------------
// iptables
// ---------------------------------------------------------------------------

/// The iptables chain of a direction.
fn iptables_chain(direction: Direction) -> &'static str {
    match direction {
        Direction::Outbound => "CAS-OUTBOUND",
        Direction::Inbound => "CAS-INBOUND",
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

fn iptables(plan: &Plan<'_>) -> String {
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
    for direction in Direction::ALL {
        let chain = iptables_chain(direction);
        let addr = match direction {
            Direction::Outbound => "-d",
            Direction::Inbound => "-s",
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

// ---------------------------------------------------------------------------
// ipset
// ---------------------------------------------------------------------------

/// The `iptables` rule suggested for matching a group's set.
fn ipset_usage(g: &Group) -> String {
    let (tool, dir) = match (g.v6, g.direction) {
        (false, Direction::Outbound) => ("iptables", "dst"),
        (false, Direction::Inbound) => ("iptables", "src"),
        (true, Direction::Outbound) => ("ip6tables", "dst"),
        (true, Direction::Inbound) => ("ip6tables", "src"),
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

fn ipset(plan: &Plan<'_>) -> String {
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

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct JsonExport<'a> {
    set: &'a str,
    source: &'a str,
    published: &'a str,
    rules: Vec<JsonRule>,
    dns: Vec<JsonDns<'a>>,
    /// Entries left out because they name no port (only when there are any).
    #[serde(skip_serializing_if = "is_zero")]
    entries_without_ports: usize,
}

/// For `skip_serializing_if`, which passes a reference.
fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct JsonRule {
    /// The group's id (`out4-443`): the nft set is `out4_443`, the ipset
    /// `cas-out4-443`.
    id: String,
    direction: Direction,
    family: &'static str,
    protocol: &'static str,
    ports: Vec<u16>,
    prefixes: Vec<String>,
    datacenters: Vec<DataCenter>,
    /// Some prefix applies to every data center.
    global: bool,
    purposes: Vec<Purpose>,
}

#[derive(Serialize)]
struct JsonDns<'a> {
    name: &'a str,
    direction: Direction,
    protocol: &'static str,
    ports: &'a [u16],
    datacenters: Vec<DataCenter>,
    global: bool,
    purposes: Vec<Purpose>,
}

fn json(plan: &Plan<'_>) -> String {
    let doc = JsonExport {
        set: &plan.set.name,
        source: &plan.set.source,
        published: &plan.set.published,
        rules: plan
            .groups
            .iter()
            .map(|g| JsonRule {
                id: g.id.clone(),
                direction: g.direction,
                family: g.family(),
                protocol: "tcp",
                ports: g.ports.clone(),
                prefixes: g.blocks.iter().map(|b| b.net.to_string()).collect(),
                datacenters: g.tags.datacenters.iter().copied().collect(),
                global: g.tags.global,
                purposes: g.tags.purposes.iter().copied().collect(),
            })
            .collect(),
        dns: plan
            .dns
            .iter()
            .map(|d| JsonDns {
                name: &d.name,
                direction: d.direction,
                protocol: "tcp",
                ports: &d.ports,
                datacenters: d.tags.datacenters.iter().copied().collect(),
                global: d.tags.global,
                purposes: d.tags.purposes.iter().copied().collect(),
            })
            .collect(),
        entries_without_ports: plan.portless,
    };
    // Serialising plain structs of strings and numbers cannot fail.
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addrset::{DnsName, Entry};

    use DataCenter::*;
    use Purpose::*;

    fn entry(prefix: &str, dc: Option<DataCenter>, purpose: Purpose, ports: &[u16]) -> Entry {
        let direction = match purpose {
            Portal | AccessSessionControls | SiemAgent | LogCollector => Direction::Outbound,
            _ => Direction::Inbound,
        };
        Entry {
            prefix: prefix.parse().unwrap(),
            datacenter: dc,
            purpose,
            direction,
            ports: ports.to_vec(),
        }
    }

    fn dns(name: &str, dc: Option<DataCenter>, purpose: Purpose, ports: &[u16]) -> DnsName {
        DnsName {
            name: name.into(),
            datacenter: dc,
            purpose,
            direction: Direction::Outbound,
            ports: ports.to_vec(),
        }
    }

    fn set(entries: Vec<Entry>, dns: Vec<DnsName>) -> AddressSet {
        AddressSet {
            name: "small".into(),
            source: "hand-made".into(),
            published: "2024-05-01".into(),
            entries,
            dns,
        }
    }

    /// Duplicates, a covered prefix, host bits, IPv6, a global entry, two
    /// ports, and DNS names listed twice.
    fn small() -> AddressSet {
        set(
            vec![
                entry("198.51.100.77/32", Some(Us2), AccessSessionControls, &[443]),
                entry("100.64.2.10/32", Some(Us1), Portal, &[443]),
                entry("2001:db8::/32", Some(Eu2), Portal, &[443]),
                entry("100.64.2.10/32", Some(Eu1), SiemAgent, &[443]),
                entry("198.51.100.0/24", Some(Us1), AccessSessionControls, &[443]),
                entry("100.64.2.99/32", Some(Us1), LogCollector, &[443, 80]),
                entry("203.0.113.5/32", Some(GovUs1), Dlp, &[11344]),
                entry("203.0.113.3/28", Some(Us1), AppConnector, &[443]),
                entry("203.0.113.200/32", None, Mail, &[25]),
            ],
            vec![
                dns("*.us.example.com", Some(Us2), Portal, &[443]),
                dns("*.us.example.com", Some(Us1), Portal, &[443]),
                dns("collector.example.com", None, LogCollector, &[443]),
            ],
        )
    }

    const SMALL_NFT: &str = r#"#!/usr/sbin/nft -f
# cas-audit allowlist for nftables: Microsoft Defender for Cloud Apps.
# Address set: small
# Source: hand-made (published 2024-05-01)
#
# Load with `nft -f FILE`. Loading replaces table inet cas_audit (and
# everything in it) in one transaction; no other table is touched.
#
# Regular chains: cas_outbound accepts connections to the service
# (daddr), cas_inbound connections from it (saddr); other packets
# return to the calling chain. nftables jumps only within a table, and
# an accept in one table does not override a drop in another, so call
# them from base chains in this table, loaded with this file, e.g.:
#
#   include "/etc/nftables.d/cas-audit.nft"
#   table inet cas_audit {
#   	chain forward {
#   		type filter hook forward priority filter; policy drop;
#   		ct state established,related accept
#   		jump cas_outbound
#   		jump cas_inbound
#   	}
#   }
#
# (on a host, jump to cas_outbound from an output chain and to
# cas_inbound from an input chain), or copy the sets and chains into
# your own table.

table inet cas_audit
delete table inet cas_audit

table inet cas_audit {
	# outbound tcp 80,443, IPv4: 1 prefix
	# data centers: US1
	# purposes: log-collector
	set out4_80_443 {
		type ipv4_addr
		flags interval
		elements = {
			100.64.2.99/32,	# US1 log-collector
		}
	}

	# outbound tcp 443, IPv4: 2 prefixes
	# data centers: US1, US2, EU1
	# purposes: portal, access-session-controls, siem-agent
	set out4_443 {
		type ipv4_addr
		flags interval
		elements = {
			100.64.2.10/32,	# US1,EU1 portal,siem-agent
			198.51.100.0/24,	# US1,US2 access-session-controls
		}
	}

	# outbound tcp 443, IPv6: 1 prefix
	# data centers: EU2
	# purposes: portal
	set out6_443 {
		type ipv6_addr
		flags interval
		elements = {
			2001:db8::/32,	# EU2 portal
		}
	}

	# inbound tcp 25, IPv4: 1 prefix
	# data centers: global
	# purposes: mail
	set in4_25 {
		type ipv4_addr
		flags interval
		elements = {
			203.0.113.200/32,	# global mail
		}
	}

	# inbound tcp 443, IPv4: 1 prefix
	# data centers: US1
	# purposes: app-connector
	set in4_443 {
		type ipv4_addr
		flags interval
		elements = {
			203.0.113.0/28,	# US1 app-connector
		}
	}

	# inbound tcp 11344, IPv4: 1 prefix
	# data centers: Gov US1
	# purposes: dlp
	set in4_11344 {
		type ipv4_addr
		flags interval
		elements = {
			203.0.113.5/32,	# Gov US1 dlp
		}
	}

	# Destinations your hosts connect to.
	chain cas_outbound {
		ip daddr @out4_80_443 tcp dport { 80, 443 } accept
		ip daddr @out4_443 tcp dport 443 accept
		ip6 daddr @out6_443 tcp dport 443 accept
	}

	# Sources the service connects from.
	chain cas_inbound {
		ip saddr @in4_25 tcp dport 25 accept
		ip saddr @in4_443 tcp dport 443 accept
		ip saddr @in4_11344 tcp dport 11344 accept
	}
}

# DNS names to allow in your proxy (IP rules cannot match names): 2
#   outbound tcp 443: *.us.example.com (US1,US2 portal)
#   outbound tcp 443: collector.example.com (global log-collector)
"#;

    const SMALL_IPTABLES: &str = r#"# cas-audit allowlist for iptables-restore (IPv4): Microsoft Defender for
# Cloud Apps.
# Address set: small
# Source: hand-made (published 2024-05-01)
#
# Load with `iptables-restore --noflush < FILE`: only the chains
# CAS-OUTBOUND (connections to the service) and CAS-INBOUND (connections
# from it) of table filter are created or emptied and refilled; their
# rules accept, other packets return to the calling chain. Jump to them
# from your own chains, after accepting replies, e.g. on a router:
#
#   iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
#   iptables -A FORWARD -j CAS-OUTBOUND
#   iptables -A FORWARD -j CAS-INBOUND
#
# (on a host: OUTPUT -j CAS-OUTBOUND, INPUT -j CAS-INBOUND).
#
# Left out: 1 IPv6 prefix in 1 group (iptables is IPv4 only; use the nft
# export, or the ipset export with ip6tables).
*filter
:CAS-OUTBOUND - [0:0]
:CAS-INBOUND - [0:0]
# outbound tcp 80,443, IPv4: 1 prefix
# data centers: US1
# purposes: log-collector
-A CAS-OUTBOUND -d 100.64.2.99/32 -p tcp -m multiport --dports 80,443 -m comment --comment "US1 log-collector" -j ACCEPT
# outbound tcp 443, IPv4: 2 prefixes
# data centers: US1, US2, EU1
# purposes: portal, access-session-controls, siem-agent
-A CAS-OUTBOUND -d 100.64.2.10/32 -p tcp -m tcp --dport 443 -m comment --comment "US1,EU1 portal,siem-agent" -j ACCEPT
-A CAS-OUTBOUND -d 198.51.100.0/24 -p tcp -m tcp --dport 443 -m comment --comment "US1,US2 access-session-controls" -j ACCEPT
# inbound tcp 25, IPv4: 1 prefix
# data centers: global
# purposes: mail
-A CAS-INBOUND -s 203.0.113.200/32 -p tcp -m tcp --dport 25 -m comment --comment "global mail" -j ACCEPT
# inbound tcp 443, IPv4: 1 prefix
# data centers: US1
# purposes: app-connector
-A CAS-INBOUND -s 203.0.113.0/28 -p tcp -m tcp --dport 443 -m comment --comment "US1 app-connector" -j ACCEPT
# inbound tcp 11344, IPv4: 1 prefix
# data centers: Gov US1
# purposes: dlp
-A CAS-INBOUND -s 203.0.113.5/32 -p tcp -m tcp --dport 11344 -m comment --comment "Gov US1 dlp" -j ACCEPT
COMMIT

# DNS names to allow in your proxy (IP rules cannot match names): 2
#   outbound tcp 443: *.us.example.com (US1,US2 portal)
#   outbound tcp 443: collector.example.com (global log-collector)
"#;

    const SMALL_IPSET: &str = r#"# cas-audit allowlist for ipset restore: Microsoft Defender for Cloud Apps.
# Address set: small
# Source: hand-made (published 2024-05-01)
#
# Load with `ipset restore < FILE`: each set is created if missing and
# emptied and refilled; other sets are not touched. Match them from
# your rules, after accepting replies, e.g. on a router:
#
#   iptables -A FORWARD -m set --match-set cas-out4-80-443 dst -p tcp -m multiport --dports 80,443 -j ACCEPT
#   iptables -A FORWARD -m set --match-set cas-out4-443 dst -p tcp --dport 443 -j ACCEPT
#   ip6tables -A FORWARD -m set --match-set cas-out6-443 dst -p tcp --dport 443 -j ACCEPT
#   iptables -A FORWARD -m set --match-set cas-in4-25 src -p tcp --dport 25 -j ACCEPT
#   iptables -A FORWARD -m set --match-set cas-in4-443 src -p tcp --dport 443 -j ACCEPT
#   iptables -A FORWARD -m set --match-set cas-in4-11344 src -p tcp --dport 11344 -j ACCEPT
#
# (on a host: OUTPUT for the dst sets, INPUT for the src sets).

# outbound tcp 80,443, IPv4: 1 prefix
# data centers: US1
# purposes: log-collector
create cas-out4-80-443 hash:net family inet comment -exist
flush cas-out4-80-443
add cas-out4-80-443 100.64.2.99/32 comment "US1 log-collector" -exist

# outbound tcp 443, IPv4: 2 prefixes
# data centers: US1, US2, EU1
# purposes: portal, access-session-controls, siem-agent
create cas-out4-443 hash:net family inet comment -exist
flush cas-out4-443
add cas-out4-443 100.64.2.10/32 comment "US1,EU1 portal,siem-agent" -exist
add cas-out4-443 198.51.100.0/24 comment "US1,US2 access-session-controls" -exist

# outbound tcp 443, IPv6: 1 prefix
# data centers: EU2
# purposes: portal
create cas-out6-443 hash:net family inet6 comment -exist
flush cas-out6-443
add cas-out6-443 2001:db8::/32 comment "EU2 portal" -exist

# inbound tcp 25, IPv4: 1 prefix
# data centers: global
# purposes: mail
create cas-in4-25 hash:net family inet comment -exist
flush cas-in4-25
add cas-in4-25 203.0.113.200/32 comment "global mail" -exist

# inbound tcp 443, IPv4: 1 prefix
# data centers: US1
# purposes: app-connector
create cas-in4-443 hash:net family inet comment -exist
flush cas-in4-443
add cas-in4-443 203.0.113.0/28 comment "US1 app-connector" -exist

# inbound tcp 11344, IPv4: 1 prefix
# data centers: Gov US1
# purposes: dlp
create cas-in4-11344 hash:net family inet comment -exist
flush cas-in4-11344
add cas-in4-11344 203.0.113.5/32 comment "Gov US1 dlp" -exist

# DNS names to allow in your proxy (IP rules cannot match names): 2
#   outbound tcp 443: *.us.example.com (US1,US2 portal)
#   outbound tcp 443: collector.example.com (global log-collector)
"#;

    #[test]
    fn small_nft_exact() {
        assert_eq!(export(&small(), ExportFormat::Nft), SMALL_NFT);
    }

    #[test]
    fn small_iptables_exact() {
        assert_eq!(export(&small(), ExportFormat::Iptables), SMALL_IPTABLES);
    }

    #[test]
    fn small_ipset_exact() {
        assert_eq!(export(&small(), ExportFormat::Ipset), SMALL_IPSET);
    }

    #[test]
    fn small_json_exact() {
        let text = export(&small(), ExportFormat::Json);
        assert!(text.ends_with("}\n"), "{text}");
        let got: serde_json::Value = serde_json::from_str(&text).unwrap();
        let want = serde_json::json!({
            "set": "small",
            "source": "hand-made",
            "published": "2024-05-01",
            "rules": [
                {"id": "out4-80-443", "direction": "outbound", "family": "ipv4", "protocol": "tcp",
                 "ports": [80, 443], "prefixes": ["100.64.2.99/32"],
                 "datacenters": ["US1"], "global": false, "purposes": ["log-collector"]},
                {"id": "out4-443", "direction": "outbound", "family": "ipv4", "protocol": "tcp",
                 "ports": [443], "prefixes": ["100.64.2.10/32", "198.51.100.0/24"],
                 "datacenters": ["US1", "US2", "EU1"], "global": false,
                 "purposes": ["portal", "access-session-controls", "siem-agent"]},
                {"id": "out6-443", "direction": "outbound", "family": "ipv6", "protocol": "tcp",
                 "ports": [443], "prefixes": ["2001:db8::/32"],
                 "datacenters": ["EU2"], "global": false, "purposes": ["portal"]},
                {"id": "in4-25", "direction": "inbound", "family": "ipv4", "protocol": "tcp",
                 "ports": [25], "prefixes": ["203.0.113.200/32"],
                 "datacenters": [], "global": true, "purposes": ["mail"]},
                {"id": "in4-443", "direction": "inbound", "family": "ipv4", "protocol": "tcp",
                 "ports": [443], "prefixes": ["203.0.113.0/28"],
                 "datacenters": ["US1"], "global": false, "purposes": ["app-connector"]},
                {"id": "in4-11344", "direction": "inbound", "family": "ipv4", "protocol": "tcp",
                 "ports": [11344], "prefixes": ["203.0.113.5/32"],
                 "datacenters": ["Gov US1"], "global": false, "purposes": ["dlp"]},
            ],
            "dns": [
                {"name": "*.us.example.com", "direction": "outbound", "protocol": "tcp",
                 "ports": [443], "datacenters": ["US1", "US2"], "global": false,
                 "purposes": ["portal"]},
                {"name": "collector.example.com", "direction": "outbound", "protocol": "tcp",
                 "ports": [443], "datacenters": [], "global": true,
                 "purposes": ["log-collector"]},
            ],
        });
        assert_eq!(got, want);
        // Pretty-printed, keys in the order above.
        assert!(
            text.starts_with("{\n  \"set\": \"small\",\n  \"source\""),
            "{text}"
        );
    }

    #[test]
    fn output_does_not_depend_on_entry_order() {
        let a = small();
        let mut b = small();
        b.entries.reverse();
        b.dns.reverse();
        for format in [
            ExportFormat::Nft,
            ExportFormat::Iptables,
            ExportFormat::Ipset,
            ExportFormat::Json,
        ] {
            assert_eq!(export(&a, format), export(&b, format), "{format:?}");
        }
    }

    #[test]
    fn covered_and_duplicate_prefixes_fold_into_the_covering_one() {
        let s = set(
            vec![
                entry("10.1.2.3/32", Some(Us2), Portal, &[443]),
                entry("10.0.0.0/8", Some(Us1), Portal, &[443]),
                entry("10.1.0.0/16", Some(Eu1), SiemAgent, &[443]),
                entry("10.200.0.0/8", Some(Us3), Portal, &[443]),
                entry("9.255.255.255/32", Some(GovUs1), Portal, &[443]),
                entry("11.0.0.0/8", None, Portal, &[443]),
                entry("2001:db8:1::1/128", Some(Eu1), Portal, &[443]),
                entry("2001:db8::/32", Some(Eu2), Portal, &[443]),
            ],
            vec![],
        );
        let plan = Plan::new(&s);
        let got: Vec<(String, String)> = plan
            .groups
            .iter()
            .flat_map(|g| &g.blocks)
            .map(|b| (b.net.to_string(), b.tags.label()))
            .collect();
        let want = [
            ("9.255.255.255/32", "Gov US1 portal"),
            ("10.0.0.0/8", "US1,US2,US3,EU1 portal,siem-agent"),
            ("11.0.0.0/8", "global portal"),
            ("2001:db8::/32", "EU1,EU2 portal"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, l)| ((*n).to_owned(), (*l).to_owned()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(plan.groups.len(), 2);
        let nft = export(&s, ExportFormat::Nft);
        assert!(
            nft.contains("\t# outbound tcp 443, IPv4: 3 prefixes\n"),
            "{nft}"
        );
    }

    #[test]
    fn long_port_lists() {
        let many: Vec<u16> = (8000..8016).collect();
        let s = set(
            vec![
                entry("198.51.100.1/32", Some(Us1), Portal, &many),
                entry("198.51.100.2/32", Some(Us1), Portal, &[8443, 80, 443, 80]),
            ],
            vec![],
        );
        let plan = Plan::new(&s);
        let ids: Vec<&str> = plan.groups.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, ["out4-80-443-8443", "out4-g1"]);
        assert!(plan.groups.iter().all(|g| g.ipset_name().len() <= 31));

        let ipt = export(&s, ExportFormat::Iptables);
        let rules: Vec<&str> = ipt.lines().filter(|l| l.starts_with("-A ")).collect();
        assert_eq!(
            rules,
            [
                "-A CAS-OUTBOUND -d 198.51.100.2/32 -p tcp -m multiport --dports 80,443,8443 \
                 -m comment --comment \"US1 portal\" -j ACCEPT",
                "-A CAS-OUTBOUND -d 198.51.100.1/32 -p tcp -m multiport --dports \
                 8000,8001,8002,8003,8004,8005,8006,8007,8008,8009,8010,8011,8012,8013,8014 \
                 -m comment --comment \"US1 portal\" -j ACCEPT",
                "-A CAS-OUTBOUND -d 198.51.100.1/32 -p tcp -m tcp --dport 8015 \
                 -m comment --comment \"US1 portal\" -j ACCEPT",
            ]
        );
        let nft = export(&s, ExportFormat::Nft);
        assert!(
            nft.contains("\t\tip daddr @out4_80_443_8443 tcp dport { 80, 443, 8443 } accept\n"),
            "{nft}"
        );
        assert!(
            nft.contains("\t\tip daddr @out4_g1 tcp dport { 8000, 8001, "),
            "{nft}"
        );
        let ipset = export(&s, ExportFormat::Ipset);
        assert!(ipset.contains("\ncreate cas-out4-g1 hash:net family inet comment -exist\n"));
    }

    #[test]
    fn ipset_stores_a_zero_prefix_as_two_halves() {
        let s = set(
            vec![
                entry("0.0.0.0/0", Some(Us1), Portal, &[443]),
                entry("::/0", Some(Us1), Portal, &[443]),
            ],
            vec![],
        );
        let ipset = export(&s, ExportFormat::Ipset);
        let adds: Vec<&str> = ipset.lines().filter(|l| l.starts_with("add ")).collect();
        assert_eq!(
            adds,
            [
                "add cas-out4-443 0.0.0.0/1 comment \"US1 portal\" -exist",
                "add cas-out4-443 128.0.0.0/1 comment \"US1 portal\" -exist",
                "add cas-out6-443 ::/1 comment \"US1 portal\" -exist",
                "add cas-out6-443 8000::/1 comment \"US1 portal\" -exist",
            ]
        );
        assert!(export(&s, ExportFormat::Nft).contains("\t\t\t0.0.0.0/0,\t# US1 portal\n"));
    }

    #[test]
    fn ipset_raises_maxelem_for_big_sets() {
        let entries = (0..70_000u32)
            .map(|i| {
                let addr = std::net::Ipv4Addr::from(0x0a00_0000 + i);
                entry(&format!("{addr}/32"), Some(Us1), Portal, &[443])
            })
            .collect();
        let ipset = export(&set(entries, vec![]), ExportFormat::Ipset);
        assert!(ipset.contains(
            "\ncreate cas-out4-443 hash:net family inet maxelem 131072 comment -exist\n"
        ));
        assert_eq!(
            ipset.lines().filter(|l| l.starts_with("add ")).count(),
            70_000
        );
    }

    #[test]
    fn text_from_the_set_cannot_leave_a_comment() {
        let mut s = small();
        s.name = "evil\nflush ruleset".into();
        s.source = "x\r\n*filter".into();
        s.dns[0].name = "a.example\n-A INPUT -j DROP".into();
        for format in [
            ExportFormat::Nft,
            ExportFormat::Iptables,
            ExportFormat::Ipset,
        ] {
            let text = export(&s, format);
            assert!(
                text.contains("# Address set: evil\\nflush ruleset\n"),
                "{text}"
            );
            assert!(
                text.contains("# Source: x\\r\\n*filter (published"),
                "{text}"
            );
            assert!(text.contains("#   outbound tcp 443: a.example\\n-A INPUT -j DROP ("));
            assert!(!text
                .lines()
                .any(|l| l == "flush ruleset" || l.starts_with("-A INPUT")));
        }
        let json: serde_json::Value =
            serde_json::from_str(&export(&s, ExportFormat::Json)).unwrap();
        assert_eq!(json["set"], "evil\nflush ruleset");
    }

    #[test]
    fn entries_without_ports_are_reported() {
        let mut s = small();
        s.entries
            .push(entry("198.51.100.77/32", Some(Us1), Portal, &[]));
        s.entries
            .push(entry("198.51.100.78/32", Some(Us1), Portal, &[]));
        for format in [
            ExportFormat::Nft,
            ExportFormat::Iptables,
            ExportFormat::Ipset,
        ] {
            let text = export(&s, format);
            assert!(text.contains("\n# Left out: 2 entries without any port.\n"));
            assert!(!text.contains("198.51.100.77"), "{text}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&export(&s, ExportFormat::Json)).unwrap();
        assert_eq!(json["entries_without_ports"], 2);
        let json: serde_json::Value =
            serde_json::from_str(&export(&small(), ExportFormat::Json)).unwrap();
        assert!(json.get("entries_without_ports").is_none());
    }

    #[test]
    fn empty_set() {
        let s = set(vec![], vec![]);
        let nft = export(&s, ExportFormat::Nft);
        assert!(
            nft.ends_with(
                "table inet cas_audit\n\
             delete table inet cas_audit\n\
             \n\
             table inet cas_audit {\n\
             \t# Destinations your hosts connect to.\n\
             \tchain cas_outbound {\n\
             \t}\n\
             \n\
             \t# Sources the service connects from.\n\
             \tchain cas_inbound {\n\
             \t}\n\
             }\n"
            ),
            "{nft}"
        );
        let ipt = export(&s, ExportFormat::Iptables);
        assert!(ipt.ends_with("*filter\n:CAS-OUTBOUND - [0:0]\n:CAS-INBOUND - [0:0]\nCOMMIT\n"));
        let ipset = export(&s, ExportFormat::Ipset);
        assert!(ipset.contains("#   (no sets: the address set has no entries)\n"));
        assert!(!ipset.lines().any(|l| !l.is_empty() && !l.starts_with('#')));
        let json: serde_json::Value =
            serde_json::from_str(&export(&s, ExportFormat::Json)).unwrap();
        assert_eq!(json["rules"], serde_json::json!([]));
        assert_eq!(json["dns"], serde_json::json!([]));
    }

    #[test]
    fn builtin_groups_cover_every_entry() {
        let s = AddressSet::builtin();
        let plan = Plan::new(&s);
        let ids: Vec<&str> = plan.groups.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, ["out4-443", "in4-25", "in4-443", "in4-11344"]);
        for e in &s.entries {
            let g = plan
                .groups
                .iter()
                .find(|g| g.direction == e.direction && g.ports == e.ports)
                .unwrap();
            let b = g
                .blocks
                .iter()
                .find(|b| b.net.contains(&e.prefix.trunc()))
                .unwrap_or_else(|| panic!("{e:?} not exported"));
            assert!(b.tags.purposes.contains(&e.purpose), "{e:?}");
            match e.datacenter {
                Some(dc) => assert!(b.tags.datacenters.contains(&dc), "{e:?}"),
                None => assert!(b.tags.global, "{e:?}"),
            }
        }
    }

    #[test]
    fn format_names() {
        use clap::ValueEnum;
        let names: Vec<String> = ExportFormat::value_variants()
            .iter()
            .map(|f| f.to_possible_value().unwrap().get_name().to_owned())
            .collect();
        assert_eq!(names, ["nft", "iptables", "ipset", "json"]);
        assert_eq!(
            ExportFormat::from_str("IPSET", true).unwrap(),
            ExportFormat::Ipset
        );
    }
}
