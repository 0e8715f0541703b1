//! Replacing the audited ranges while the programs run: a reload
//! ([`Datapath::reload`]) and the takeover of a pinned datapath
//! ([`Datapath::take_over`]), which is a reload from whatever the pinned
//! tries hold.
//!
//! Taking over, whatever the pinned tries hold (the set this agent audits,
//! another version of it, or a mix of two left by an agent killed in the
//! middle of a reload), the agent makes them hold exactly its own set and
//! keeps every counter:
//!
//! - A prefix that is pinned keeps its range id, so its counters continue.
//! - A prefix of the set that is not pinned gets an id no counter uses yet.
//! - A pinned prefix the set does not list leaves the tries; its id keeps
//!   what it counted (a dropped range, shown as
//!   `unknown (dropped before a restart)` when it counted anything), as does
//!   every id whose counters are not zero.
//! - Pinned entries with ids in the learned block are addresses the agent
//!   before learned from DNS answers and ClientHellos: they leave the tries
//!   (their TTLs died with that agent); the new agent learns them again
//!   from the next answer.
//!
//! Both swaps are journaled in the pin directory ([`PinDir::begin_swap`]),
//! so a restart after a kill in the middle of either says what it found;
//! and since a takeover converges from any state, it finishes the swap (a
//! restart with the new set) or rolls it back (with the old one).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::IpNet;

use cas_audit_common::{names, sizes, RangeValue};

use super::{indexed, maps, pin::SetDigest, Datapath, DatapathError, PinDir, PinError};
use crate::{addrset::Range, flow::PortPolicy};

/// Every range id in use after a takeover: the range at each id and
/// whether the set lists it (ids of dropped ranges hold a range without
/// tags, [`Range::is_placeholder`]).
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The range at each id.
    pub ranges: Vec<Range>,
    /// Whether the set lists the range at each id.
    pub active: Vec<bool>,
}

/// The ranges a datapath's tries hold as listed (not learned) ones: each
/// prefix with the ports it allows.
pub(super) type Listed = BTreeMap<IpNet, Vec<u16>>;

/// The [`SetDigest`] of listed ranges.
pub(super) fn digest(listed: &Listed) -> SetDigest {
    SetDigest::of(listed.iter().map(|(p, ports)| (*p, ports.as_slice())))
}

/// The listed ranges of `ranges` (by id) that `active` marks, with the
/// ports `policy` gives them.
pub(super) fn listed_of(ranges: &[Range], active: &[bool], policy: &PortPolicy) -> Listed {
    ranges
        .iter()
        .zip(active)
        .enumerate()
        .filter(|(_, (_, a))| **a)
        .map(|(id, (r, _))| {
            (
                r.prefix.trunc(),
                policy.for_range(id as u32).iter().collect(),
            )
        })
        .collect()
}

impl Datapath {
    /// Replaces the audited ranges while the programs run, so that no
    /// range listed before and after is ever unmatched: `ranges` are all
    /// range ids in use (old ones the new set dropped included, so their
    /// counters stay readable), `active[id]` says which of them the new set
    /// lists. Port bitmaps and the prefilter's new bits go in first, then
    /// the tries get the new and changed entries, then dropped prefixes
    /// leave the tries, and last the prefilter loses the bits nothing needs.
    /// When the tries cannot hold both versions at once, dropped prefixes
    /// leave before new ones come in.
    ///
    /// A pinned datapath journals the swap in its pin directory
    /// ([`PinDir::begin_swap`]) before the first write and ends it after
    /// the last, so that an agent killed in the middle leaves a trace; a
    /// failed swap leaves the journal too (the caller rolls back).
    pub fn reload(
        &mut self,
        ranges: &[Range],
        active: &[bool],
        policy: &PortPolicy,
        learned: &[(u32, &Range)],
    ) -> Result<(), DatapathError> {
        let stats_cap = self.learned_base() as usize;
        if ranges.len() > stats_cap {
            return Err(DatapathError::TooManyRanges {
                family: "IPv4 and IPv6",
                have: ranges.len(),
                max: stats_cap as u32,
            });
        }
        let profile_cap = (self.map_capacity(names::ALLOWED_PORTS) / sizes::PORT_WORDS) as usize;
        if policy.profiles().len() > profile_cap {
            return Err(DatapathError::TooManyPortProfiles {
                have: policy.profiles().len(),
                max: profile_cap as u32,
            });
        }
        let target = listed_of(ranges, active, policy);
        let mut out_first = false;
        for (fam, name) in [(true, names::RANGES_V4), (false, names::RANGES_V6)] {
            let of_fam = |p: &&ipnet::IpNet| p.addr().is_ipv4() == fam;
            let want = target.keys().filter(of_fam).count();
            let cap = self.map_capacity(name) as usize;
            if want > cap {
                return Err(DatapathError::TooManyRanges {
                    family: if fam { "IPv4" } else { "IPv6" },
                    have: want,
                    max: cap as u32,
                });
            }
            let leaving = self
                .listed
                .keys()
                .filter(of_fam)
                .filter(|p| !target.contains_key(p))
                .count();
            let learned = learned
                .iter()
                .filter(|(_, r)| r.prefix.addr().is_ipv4() == fam)
                .count();
            out_first |= want + leaving + learned > cap;
        }
        if let Some(dir) = &self.pin {
            dir.begin_swap(digest(&self.listed), digest(&target))?;
        }
        // Ports: every profile (profiles may have moved); only the words
        // that change are written.
        let words = maps::port_words(policy);
        self.put_words(names::ALLOWED_PORTS, indexed(words), false)?;
        // The union of old and new (placeholders of unknown prefixes apart).
        let known = ranges.iter().filter(|r| !r.is_placeholder());
        let words = maps::prefilter_words(known.chain(learned.iter().map(|(_, r)| *r)));
        self.put_words(names::PREFILTER, indexed(words), true)?;
        // Learned addresses stay, under the profile numbers of the new policy.
        let live: Vec<(usize, &Range)> = ranges
            .iter()
            .enumerate()
            .filter(|(id, _)| active[*id])
            .chain(learned.iter().map(|(id, r)| (*id as usize, *r)))
            .collect();
        // A prefix listed at one id is not dropped with another.
        let dropped: Vec<&Range> = ranges
            .iter()
            .zip(active)
            .filter(|(r, a)| !**a && !target.contains_key(&r.prefix.trunc()))
            .map(|(r, _)| r)
            .collect();
        if out_first {
            maps::remove_prefixes(&mut self.ebpf, &dropped)?;
        }
        maps::insert_ranges(&mut self.ebpf, live.iter().copied(), policy)?;
        if !out_first {
            maps::remove_prefixes(&mut self.ebpf, &dropped)?;
        }
        let words = maps::prefilter_words(live.iter().map(|(_, r)| *r));
        self.put_words(names::PREFILTER, indexed(words), false)?;
        if let Some(dir) = &self.pin {
            dir.end_swaps()?;
        }
        self.listed = target;
        Ok(())
    }

    /// Makes the pinned maps hold `ranges` (the set, by position) with the
    /// ports `policy` gives them, keeping the id of every pinned prefix.
    /// Logs what it found and what it did.
    ///
    /// # Errors
    /// [`PinError::TooSmall`] when the pinned maps cannot hold the set
    /// (more range ids or port sets than they were made for); map errors.
    pub(super) fn take_over(
        &mut self,
        ranges: &[Range],
        policy: &PortPolicy,
        dir: &PinDir,
        set_name: &str,
    ) -> Result<(), DatapathError> {
        let refuse = |why: String| -> DatapathError {
            PinError::TooSmall {
                dir: dir.root().to_path_buf(),
                why,
            }
            .into()
        };
        let pinned = maps::tries(&self.ebpf)?;
        let wanted: HashMap<IpNet, usize> = ranges
            .iter()
            .enumerate()
            .map(|(pos, r)| (r.prefix.trunc(), pos))
            .collect();
        // A pinned prefix of the set is listed whatever its id; the learned
        // block starts above every such id.
        let top_listed = pinned
            .iter()
            .filter(|(p, _)| wanted.contains_key(p))
            .map(|(_, v)| v.id + 1)
            .max()
            .unwrap_or(0);
        if top_listed > self.learned_base() {
            let cap = self.map_capacity(names::RANGE_STATS);
            let learned = cap.saturating_sub(top_listed);
            log::warn!(
                "room for {learned} learned addresses, not {}: the pinned ranges use ids up to {}",
                self.learned,
                top_listed - 1
            );
            self.learned = learned;
        }
        let base = self.learned_base();
        let (listed, learned): (Vec<_>, Vec<_>) = pinned
            .into_iter()
            .partition(|(p, v)| v.id < base || wanted.contains_key(p));
        // Ids in use: every listed entry's, and every id that counted.
        let mut in_use: BTreeSet<u32> = listed.iter().map(|(_, v)| v.id).collect();
        let totals = maps::range_totals(&self.ebpf, base as usize)?;
        in_use.extend(
            totals
                .iter()
                .enumerate()
                .filter(|(_, t)| t.packets_out + t.packets_in > 0)
                .map(|(id, _)| id as u32),
        );
        let pinned_ids: HashMap<IpNet, u32> = listed.iter().map(|(p, v)| (*p, v.id)).collect();
        let mut free = (0..base).filter(|id| !in_use.contains(id));
        let mut ids = Vec::with_capacity(ranges.len());
        for r in ranges {
            let id = match pinned_ids.get(&r.prefix.trunc()) {
                Some(id) => *id,
                None => free.next().ok_or_else(|| {
                    refuse(format!(
                        "its range counters hold {base} ids, {} in use, and the set has {} ranges",
                        in_use.len(),
                        ranges.len()
                    ))
                })?,
            };
            ids.push(id);
        }
        let len = ids
            .iter()
            .chain(&in_use)
            .max()
            .map_or(0, |m| *m as usize + 1);
        let mut layout = Layout {
            ranges: vec![Range::placeholder(); len],
            active: vec![false; len],
        };
        for (p, v) in &listed {
            if !wanted.contains_key(p) {
                // Dropped: out of the tries, its id and counts kept.
                layout.ranges[v.id as usize] = Range {
                    prefix: *p,
                    ..Range::placeholder()
                };
            }
        }
        for (r, id) in ranges.iter().zip(&ids) {
            layout.ranges[*id as usize] = r.clone();
            layout.active[*id as usize] = true;
        }
        let by_id = policy.for_layout(&layout.ranges);

        // What the tries hold now, with the ports and port set of each.
        let mut profile_ports: HashMap<u32, Vec<u16>> = HashMap::new();
        for (_, v) in &listed {
            if let std::collections::hash_map::Entry::Vacant(e) = profile_ports.entry(v.ports) {
                e.insert(maps::profile_ports(&self.ebpf, v.ports)?);
            }
        }
        self.listed = listed
            .iter()
            .map(|(p, v)| (*p, profile_ports[&v.ports].clone()))
            .collect();
        let target = listed_of(&layout.ranges, &layout.active, &by_id);
        let same = listed.len() == target.len()
            && listed.iter().all(|(p, v)| {
                target.get(p) == Some(&profile_ports[&v.ports]) && by_id.profile_of(v.id) == v.ports
            });

        let interrupted = dir.interrupted();
        if let Some(i) = interrupted {
            let to = digest(&target);
            log::warn!(
                "the agent before was stopped in the middle of a reload of the ranges in {}: {}",
                dir.root().display(),
                if to == i.to {
                    "finishing it (this agent has the set it was reloading to)"
                } else if to == i.from {
                    "rolling it back (this agent has the set it was reloading from)"
                } else {
                    "replacing both versions with this agent's set"
                }
            );
        }
        if !learned.is_empty() {
            // Addresses the agent before learned: it died without taking
            // them out, and nobody would expire them.
            let bare = |entries: &[(IpNet, RangeValue)]| -> Vec<Range> {
                entries
                    .iter()
                    .map(|(p, _)| Range {
                        prefix: *p,
                        ..Range::placeholder()
                    })
                    .collect()
            };
            let gone = bare(&learned);
            let refs: Vec<&Range> = gone.iter().collect();
            self.learn_remove(&refs, bare(&listed).iter())?;
            log::info!(
                "removed {} learned addresses left in the pinned tries by an agent that did not exit cleanly",
                learned.len()
            );
        }
        let dropped = listed
            .iter()
            .filter(|(p, _)| !target.contains_key(p))
            .count();
        let added = target
            .keys()
            .filter(|p| !pinned_ids.contains_key(p))
            .count();
        let changed = listed
            .iter()
            .filter(|(p, v)| target.get(p).is_some_and(|t| *t != profile_ports[&v.ports]))
            .count();
        // After an interrupted swap the prefilter may hold bits of both
        // versions and the port bitmaps may be renumbered: rewrite all.
        if !same || interrupted.is_some() {
            self.reload(&layout.ranges, &layout.active, &by_id, &[])
                .map_err(|e| match e {
                    DatapathError::TooManyRanges { .. }
                    | DatapathError::TooManyPortProfiles { .. } => refuse(e.to_string()),
                    e => e,
                })?;
        }
        log::info!(
            "took over the pinned datapath in {} ({} ranges of set {}): {}; its counters keep running",
            dir.root().display(),
            ranges.len(),
            set_name,
            if same {
                "the same ranges and ports".to_string()
            } else {
                format!("+{added} ranges, -{dropped} ranges, {changed} with other ports")
            }
        );
        self.layout = Some(layout);
        Ok(())
    }
}
