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

use crate::addrset::{
    ranges::Interval, AddressSet, Connection, DataCenter, Purpose, NO_DATACENTER,
};
// Names from the set in `#` comments: on one line (a line feed would end
// the comment), cut at 256 characters.
use crate::text::shown;

mod ipset;
mod iptables;
mod json;
mod nft;

use self::{ipset::ipset, iptables::iptables, json::json, nft::nft};

/// The firewall syntaxes [`export`] can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl ExportFormat {
    /// Every format with its name.
    pub const ALL: [(ExportFormat, &'static str); 4] = [
        (ExportFormat::Nft, "nft"),
        (ExportFormat::Iptables, "iptables"),
        (ExportFormat::Ipset, "ipset"),
        (ExportFormat::Json, "json"),
    ];
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ExportFormat::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s))
            .map(|(f, _)| *f)
            .ok_or_else(|| format!("{s:?} is not an export format (nft, iptables, ipset or json)"))
    }
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

    /// Data centers, [`NO_DATACENTER`] first when some entry has none.
    fn datacenter_names(&self) -> Vec<&'static str> {
        let mut names = Vec::with_capacity(self.datacenters.len() + 1);
        if self.global {
            names.push(NO_DATACENTER);
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
    direction: Connection,
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
            Connection::Outbound => "out",
            Connection::Inbound => "in",
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
    direction: Connection,
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
        type Key = (Connection, bool, Vec<u16>);
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

        let mut dns: BTreeMap<(Connection, Vec<u16>, String), Tags> = BTreeMap::new();
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

    fn groups(&self, direction: Connection) -> impl Iterator<Item = &Group> + '_ {
        self.groups.iter().filter(move |g| g.direction == direction)
    }
}

/// The ports, sorted and deduplicated (they should already be).
fn ports_of(ports: &[u16]) -> Vec<u16> {
    let set: BTreeSet<u16> = ports.iter().copied().collect();
    set.into_iter().collect()
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

/// `# ` + the set's name, source and publication date (and the number of
/// entries left out for want of a port, if any).
fn provenance(out: &mut String, plan: &Plan<'_>) {
    let set = plan.set;
    let _ = writeln!(out, "# Address set: {}", shown(&set.name));
    let _ = writeln!(
        out,
        "# Source: {} (published {})",
        shown(&set.source),
        shown(&set.published)
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
            shown(&d.name),
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

#[cfg(test)]
mod tests;
