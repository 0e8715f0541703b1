//! The difference between two address-set versions, grouped the way a
//! firewall rollout applies it: per data center and purpose.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::Serialize;

use crate::addrset::{AddressSet, DataCenter, Purpose};

/// What changed for one data center and purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDiff {
    /// Data center (`None`: ranges shared by every data center).
    pub datacenter: Option<DataCenter>,
    /// Purpose.
    pub purpose: Purpose,
    /// Prefixes only in the newer set: to add to the firewall.
    pub added: Vec<IpNet>,
    /// Prefixes only in the older set: to remove.
    pub removed: Vec<IpNet>,
    /// DNS names only in the newer set.
    pub dns_added: Vec<String>,
    /// DNS names only in the older set.
    pub dns_removed: Vec<String>,
}

/// The difference from set `a` (old) to set `b` (new).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetDiff {
    /// Name of the old set.
    pub from: String,
    /// Name of the new set.
    pub to: String,
    /// Groups with at least one change, ordered by data center then purpose.
    pub groups: Vec<GroupDiff>,
}

type Key = (Option<DataCenter>, Purpose);

fn group(
    set: &AddressSet,
) -> (
    BTreeMap<Key, BTreeSet<IpNet>>,
    BTreeMap<Key, BTreeSet<String>>,
) {
    let mut p: BTreeMap<Key, BTreeSet<IpNet>> = BTreeMap::new();
    for e in &set.entries {
        p.entry((e.datacenter, e.purpose))
            .or_default()
            .insert(e.prefix.trunc());
    }
    let mut d: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
    for n in &set.dns {
        d.entry((n.datacenter, n.purpose))
            .or_default()
            .insert(n.name.clone());
    }
    (p, d)
}

impl SetDiff {
    /// Compares `a` (old) with `b` (new).
    pub fn between(a: &AddressSet, b: &AddressSet) -> SetDiff {
        let (pa, da) = group(a);
        let (pb, db) = group(b);
        let keys: BTreeSet<Key> = pa
            .keys()
            .chain(pb.keys())
            .chain(da.keys())
            .chain(db.keys())
            .copied()
            .collect();
        let empty_p = BTreeSet::new();
        let empty_d = BTreeSet::new();
        let groups = keys
            .into_iter()
            .filter_map(|k| {
                let (oa, ob) = (
                    pa.get(&k).unwrap_or(&empty_p),
                    pb.get(&k).unwrap_or(&empty_p),
                );
                let (na, nb) = (
                    da.get(&k).unwrap_or(&empty_d),
                    db.get(&k).unwrap_or(&empty_d),
                );
                let g = GroupDiff {
                    datacenter: k.0,
                    purpose: k.1,
                    added: ob.difference(oa).copied().collect(),
                    removed: oa.difference(ob).copied().collect(),
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
            groups,
        }
    }

    /// Whether the sets are the same (for every data center and purpose).
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Readable text: one block per data center and purpose, `+` to add, `-` to remove.
    pub fn text(&self) -> String {
        let mut out = format!("--- {}\n+++ {}\n", self.from, self.to);
        if self.groups.is_empty() {
            out.push_str("no difference\n");
            return out;
        }
        let (mut add, mut del) = (0, 0);
        for g in &self.groups {
            let dc = g
                .datacenter
                .map(|d| d.to_string())
                .unwrap_or_else(|| "(all data centers)".into());
            out.push_str(&format!(
                "\n{dc} {}: +{} -{} prefixes",
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
        }
        out.push_str(&format!(
            "\n{} groups changed: {add} prefixes to add, {del} to remove\n",
            self.groups.len()
        ));
        out
    }
}
