//! The difference between two address-set versions, grouped the way a
//! firewall rollout applies it: per data center, Azure region and purpose.
//!
//! Addresses are compared by coverage, not by how they are written: a `/30`
//! equals its four `/32`s, and a `/29` replacing a `/30` adds the other
//! `/30`. What was added (removed) in a group is the fewest CIDR prefixes
//! covering exactly the addresses the new (old) set has there and the other
//! has not. DNS names are compared by name.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::Serialize;

use crate::addrset::{
    ranges::{cidrs, coverage, subtract},
    AddressSet, DataCenter, Purpose, Region,
};

/// What changed for one data center, region and purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDiff {
    /// Data center (`None`: none given, e.g. ranges of every data center).
    pub datacenter: Option<DataCenter>,
    /// Azure region the entries give (`None`: none given).
    pub region: Option<Region>,
    /// Purpose.
    pub purpose: Purpose,
    /// Addresses only in the newer set, as CIDR prefixes: to add to the
    /// firewall.
    pub added: Vec<IpNet>,
    /// Addresses only in the older set: to remove.
    pub removed: Vec<IpNet>,
    /// DNS names only in the newer set.
    pub dns_added: Vec<String>,
    /// DNS names only in the older set.
    pub dns_removed: Vec<String>,
}

impl GroupDiff {
    /// The group's Azure region: its own, else its data center's.
    #[must_use]
    pub fn location(&self) -> Option<Region> {
        crate::addrset::tags::location(self.datacenter, self.region.as_ref())
    }
}

/// The difference from set `a` (old) to set `b` (new).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetDiff {
    /// Name of the old set.
    pub from: String,
    /// Name of the new set.
    pub to: String,
    /// Where the old set's addresses come from (its `source`: file names).
    pub from_source: String,
    /// Where the new set's addresses come from.
    pub to_source: String,
    /// Groups with at least one change, ordered by data center, region,
    /// then purpose.
    pub groups: Vec<GroupDiff>,
}

type Key = (Option<DataCenter>, Option<Region>, Purpose);

/// The prefixes and DNS names of each group.
fn group(set: &AddressSet) -> (BTreeMap<Key, Vec<IpNet>>, BTreeMap<Key, BTreeSet<String>>) {
    let mut p: BTreeMap<Key, Vec<IpNet>> = BTreeMap::new();
    for e in &set.entries {
        p.entry((e.datacenter, e.region.clone(), e.purpose))
            .or_default()
            .push(e.prefix);
    }
    let mut d: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
    for n in &set.dns {
        d.entry((n.datacenter, None, n.purpose))
            .or_default()
            .insert(n.name.clone());
    }
    (p, d)
}

/// The prefixes covering the addresses of `a` that `b` does not cover.
fn only_in(a: &[IpNet], b: &[IpNet]) -> Vec<IpNet> {
    let (ca, cb) = (coverage(a.iter().copied()), coverage(b.iter().copied()));
    let mut out = Vec::new();
    for (fam, v6) in [(0, false), (1, true)] {
        for iv in subtract(&ca[fam], &cb[fam]) {
            out.extend(cidrs(iv, v6));
        }
    }
    out
}

impl SetDiff {
    /// Compares `a` (old) with `b` (new).
    pub fn between(a: &AddressSet, b: &AddressSet) -> SetDiff {
        let (pa, da) = group(a);
        let (pb, db) = group(b);
        let keys: BTreeSet<&Key> = pa
            .keys()
            .chain(pb.keys())
            .chain(da.keys())
            .chain(db.keys())
            .collect();
        let (empty_p, empty_d) = (Vec::new(), BTreeSet::new());
        let groups = keys
            .into_iter()
            .filter_map(|k| {
                let (oa, ob) = (pa.get(k).unwrap_or(&empty_p), pb.get(k).unwrap_or(&empty_p));
                let (na, nb) = (da.get(k).unwrap_or(&empty_d), db.get(k).unwrap_or(&empty_d));
                let g = GroupDiff {
                    datacenter: k.0,
                    region: k.1.clone(),
                    purpose: k.2,
                    added: only_in(ob, oa),
                    removed: only_in(oa, ob),
                    dns_added: nb.difference(na).cloned().collect(),
                    dns_removed: na.difference(nb).cloned().collect(),
                };
                let changed = !(g.added.is_empty()
                    && g.removed.is_empty()
                    && g.dns_added.is_empty()
                    && g.dns_removed.is_empty());
                changed.then_some(g)
            })
            .collect();
        SetDiff {
            from: a.name.clone(),
            to: b.name.clone(),
            from_source: a.source.clone(),
            to_source: b.source.clone(),
            groups,
        }
    }

    /// Whether the sets are the same (for every group).
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Readable text: one block per group, `+` to add, `-` to remove, then
    /// the totals per purpose and per region ([`GroupDiff::location`]).
    pub fn text(&self) -> String {
        let mut out = format!(
            "--- {} ({})\n+++ {} ({})\n",
            self.from, self.from_source, self.to, self.to_source
        );
        if self.groups.is_empty() {
            out.push_str("no difference\n");
            return out;
        }
        let (mut add, mut del) = (0, 0);
        let mut per_purpose: BTreeMap<Purpose, (usize, usize)> = BTreeMap::new();
        let mut per_region: BTreeMap<Option<Region>, (usize, usize)> = BTreeMap::new();
        for g in &self.groups {
            let place = match (g.datacenter, &g.region) {
                (Some(d), Some(r)) => format!("{d} {r}"),
                (Some(d), None) => d.to_string(),
                (None, Some(r)) => r.to_string(),
                (None, None) => "(all data centers)".into(),
            };
            out.push_str(&format!(
                "\n{place} {}: +{} -{} prefixes",
                g.purpose,
                g.added.len(),
                g.removed.len()
            ));
            if !g.dns_added.is_empty() || !g.dns_removed.is_empty() {
                out.push_str(&format!(
                    ", +{} -{} DNS names",
                    g.dns_added.len(),
                    g.dns_removed.len()
                ));
            }
            out.push('\n');
            for p in &g.added {
                out.push_str(&format!("+ {p}\n"));
            }
            for p in &g.removed {
                out.push_str(&format!("- {p}\n"));
            }
            for n in &g.dns_added {
                out.push_str(&format!("+ {n}\n"));
            }
            for n in &g.dns_removed {
                out.push_str(&format!("- {n}\n"));
            }
            add += g.added.len();
            del += g.removed.len();
            for (t, n) in [
                (per_purpose.entry(g.purpose).or_default(), &g),
                (per_region.entry(g.location()).or_default(), &g),
            ] {
                t.0 += n.added.len();
                t.1 += n.removed.len();
            }
        }
        out.push_str(&format!(
            "\n{} groups changed: {add} prefixes to add, {del} to remove\n",
            self.groups.len()
        ));
        let totals = |items: Vec<(String, (usize, usize))>| {
            items
                .into_iter()
                .filter(|(_, (a, d))| a + d > 0)
                .map(|(k, (a, d))| format!("{k} +{a} -{d}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let purposes = totals(
            per_purpose
                .iter()
                .map(|(p, n)| (p.to_string(), *n))
                .collect(),
        );
        let regions = totals(
            per_region
                .iter()
                .map(|(r, n)| {
                    let name = r.as_ref().map_or("(no region)".into(), ToString::to_string);
                    (name, *n)
                })
                .collect(),
        );
        out.push_str(&format!(
            "per purpose: {}\nper region: {}\n",
            if purposes.is_empty() { "-" } else { &purposes },
            if regions.is_empty() { "-" } else { &regions }
        ));
        out
    }
}
