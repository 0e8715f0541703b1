//! Reloading the address set while the audit runs (SIGHUP, or a change of
//! the set file): the new ranges go in before dropped ones go out, range
//! ids are kept, the difference is logged.

use std::{collections::HashMap, path::PathBuf};

use super::session::Session;
use crate::{
    addrset::Need,
    addrset::{AddressSet, Range, Selection},
    error::Error,
    flow::{AllowedPorts, PortPolicy},
};

/// How the audited set is chosen, to load it again on a reload.
#[derive(Debug, Clone)]
pub struct SetSource {
    pub(super) selection: Selection,
    pub(super) ports: Option<AllowedPorts>,
    /// The set file and its modification time, watched for changes.
    pub(super) file: Option<(PathBuf, Option<std::time::SystemTime>)>,
}

impl SetSource {
    /// Loads the selection; one without ranges is an error.
    pub fn load(&self) -> Result<AddressSet, Error> {
        Ok(self.selection.load_some(Need::Entries)?)
    }

    /// The port policy of `ranges` (range id = index).
    pub fn policy(&self, ranges: &[Range]) -> PortPolicy {
        match (&self.ports, &self.selection.set) {
            (Some(p), _) => PortPolicy::global(p.clone()),
            (None, Some(_)) => PortPolicy::per_range(ranges),
            (None, None) => PortPolicy::global(AllowedPorts::default()),
        }
    }
}

/// A file's modification time.
pub fn mtime(p: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl Session {
    /// Reloads the address set if its file changed since it was read.
    pub(super) fn check_set_file(&mut self) {
        let Some((path, seen)) = self.source.file.clone() else {
            return;
        };
        let now = mtime(&path);
        if now != seen {
            self.source.file = Some((path.clone(), now));
            self.reload(&format!("{} changed", path.display()));
        }
    }

    /// Loads the set again and swaps it in (see
    /// [`crate::datapath::Datapath::reload`]); on any error the old set
    /// stays (a swap that failed half-way is undone).
    pub(super) fn reload(&mut self, why: &str) {
        let set = match self.source.load() {
            Ok(s) => s,
            Err(e) => {
                log::error!("reload ({why}) failed, keeping the current set: {e}");
                return;
            }
        };
        let mut ranges = self.ranges.clone();
        let mut active = vec![false; ranges.len()];
        let index: HashMap<ipnet::IpNet, usize> = ranges
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_placeholder())
            .map(|(id, r)| (r.prefix.trunc(), id))
            .collect();
        let (mut added, mut changed) = (Vec::new(), Vec::new());
        for r in set.ranges() {
            match index.get(&r.prefix.trunc()) {
                Some(&id) => {
                    if ranges[id] != r {
                        changed.push(r.prefix);
                    }
                    ranges[id] = r;
                    active[id] = true;
                }
                None => {
                    added.push(r.prefix);
                    ranges.push(r);
                    active.push(true);
                }
            }
        }
        let removed: Vec<ipnet::IpNet> = (0..self.active.len())
            .filter(|&id| self.active[id] && !active[id])
            .map(|id| ranges[id].prefix)
            .collect();
        // A re-listed range that had been dropped counts as added.
        for id in 0..self.active.len() {
            if !self.active[id] && active[id] {
                added.push(ranges[id].prefix);
            }
        }
        if added.is_empty() && removed.is_empty() && changed.is_empty() {
            log::info!(
                "reload ({why}): set {} unchanged",
                crate::text::shown(&set.name)
            );
            return;
        }
        let mut policy = self.source.policy(&ranges);
        self.learner.assign_ports(&mut policy);
        let learned: Vec<(u32, Range)> = self
            .learner
            .active()
            .into_iter()
            .map(|(id, r)| (id, r.clone()))
            .collect();
        let learned: Vec<(u32, &Range)> = learned.iter().map(|(id, r)| (*id, r)).collect();
        if let Err(e) = self.dp.reload(&ranges, &active, &policy, &learned) {
            use crate::datapath::DatapathError::{TooManyPortProfiles, TooManyRanges};
            if matches!(e, TooManyRanges { .. } | TooManyPortProfiles { .. }) {
                // Refused before the first write.
                log::error!("reload ({why}) failed, keeping the current set: {e}");
                return;
            }
            // Failed half-way: swap the current set back in.
            let mut current = self.active.clone();
            current.resize(ranges.len(), false);
            match self.dp.reload(&ranges, &current, &self.policy, &learned) {
                Ok(()) => log::error!("reload ({why}) failed, keeping the current set: {e}"),
                Err(e2) => log::error!(
                    "reload ({why}) failed: {e}; putting the current set back failed too: {e2}; the tries may hold part of each version until a restart (which converges them to its set)"
                ),
            }
            return;
        }
        let show = |v: &[ipnet::IpNet]| {
            let mut s: Vec<String> = v.iter().take(10).map(|p| p.to_string()).collect();
            if v.len() > 10 {
                s.push(format!("and {} more", v.len() - 10));
            }
            s.join(", ")
        };
        log::info!(
            "reloaded set {} ({why}): +{} ranges, -{} ranges, {} changed; {} ranges audited",
            crate::text::shown(&set.name),
            added.len(),
            removed.len(),
            changed.len(),
            active.iter().filter(|a| **a).count()
        );
        for (what, v) in [
            ("added", &added),
            ("removed", &removed),
            ("changed", &changed),
        ] {
            if !v.is_empty() {
                log::info!("  {what}: {}", show(v));
            }
        }
        self.ranges = ranges;
        self.active = active;
        self.policy = policy;
        self.learner
            .set_names(crate::addrset::names::NameMatcher::new(&set.dns));
    }
}
