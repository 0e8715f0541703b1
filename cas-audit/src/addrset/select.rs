//! The part of a set a command works on: `--set`, `--datacenter`,
//! `--region`, `--purpose`.
//!
//! Filters combine with AND; a repeated filter keeps what matches any of
//! its values; an empty filter keeps everything. Entries that belong to no
//! place (no data center and no region: the mail servers, the global names)
//! are kept by `--datacenter` and `--region` alike, since every tenant needs
//! them.

use super::{tags::location, AddressSet, Connection, DataCenter, Entry, Purpose, Region, SetError};

/// What a command needs a selection to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Entries (prefixes): `run` audits them, `sets export` allows them.
    Entries,
    /// Outbound entries or DNS names: `check` connects to both.
    Outbound,
    /// Entries or DNS names: `sets show` lists both.
    EntriesOrNames,
}

impl Need {
    /// What of `set` counts: (entries, DNS names).
    fn counts(self, set: &AddressSet) -> (usize, usize) {
        let n = match self {
            Need::Outbound => set
                .entries
                .iter()
                .filter(|e| e.direction == Connection::Outbound)
                .count(),
            Need::Entries | Need::EntriesOrNames => set.entries.len(),
        };
        let names = if self != Need::Entries {
            set.dns.len()
        } else {
            0
        };
        (n, names)
    }

    /// `12 outbound entries`, `3 entries and 2 DNS names`, ...
    fn describe(self, (n, names): (usize, usize)) -> String {
        let entries = match self {
            Need::Outbound => format!("{n} outbound entries"),
            _ => format!("{n} entries"),
        };
        if self != Need::Entries {
            format!("{entries} and {names} DNS names")
        } else {
            entries
        }
    }
}

/// A set and the part of it selected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// A built-in set name or a set file; `None`: the default built-in set.
    pub set: Option<String>,
    /// Only these data centers (entries without one are kept).
    pub datacenters: Vec<DataCenter>,
    /// Only these Azure regions: an entry's own region, else its data
    /// center's ([`Entry::location`]); entries with neither are kept.
    pub regions: Vec<Region>,
    /// Only these purposes.
    pub purposes: Vec<Purpose>,
}

impl Selection {
    /// Loads the set (a built-in name or a set file; default: the built-in
    /// default set) and keeps the selection ([`Selection::apply`]).
    ///
    /// # Errors
    /// The [`SetError`] of [`AddressSet::load`].
    pub fn load(&self) -> Result<AddressSet, SetError> {
        let mut set = match &self.set {
            Some(n) => AddressSet::load(n)?,
            None => AddressSet::builtin(),
        };
        self.apply(&mut set);
        Ok(set)
    }

    /// [`Selection::load`], refusing a selection that keeps nothing
    /// `need`s: the error names the set and what each filter kept.
    ///
    /// # Errors
    /// The [`SetError`] of [`AddressSet::load`]; [`SetError::EmptySelection`].
    pub fn load_some(&self, need: Need) -> Result<AddressSet, SetError> {
        let mut set = match &self.set {
            Some(n) => AddressSet::load(n)?,
            None => AddressSet::builtin(),
        };
        let mut steps = vec![format!("the set has {}", need.describe(need.counts(&set)))];
        let list = |v: Vec<&str>| v.join(",");
        if !self.datacenters.is_empty() {
            set.retain_datacenters(&self.datacenters);
            steps.push(format!(
                "--datacenter {} kept {} (with those of no data center)",
                list(self.datacenters.iter().map(|d| d.as_str()).collect()),
                need.describe(need.counts(&set))
            ));
        }
        if !self.regions.is_empty() {
            set.retain_regions(&self.regions);
            steps.push(format!(
                "--region {} kept {} (with those placed nowhere)",
                list(self.regions.iter().map(|r| r.as_str()).collect()),
                need.describe(need.counts(&set))
            ));
        }
        if !self.purposes.is_empty() {
            set.retain_purposes(&self.purposes);
            steps.push(format!(
                "--purpose {} kept {}",
                list(self.purposes.iter().map(|p| p.as_str()).collect()),
                need.describe(need.counts(&set))
            ));
        }
        if need.counts(&set) == (0, 0) {
            return Err(SetError::EmptySelection {
                set: set.name,
                steps: steps.join("; "),
            });
        }
        Ok(set)
    }

    /// Keeps the selected entries and DNS names of `set`.
    pub fn apply(&self, set: &mut AddressSet) {
        if !self.datacenters.is_empty() {
            set.retain_datacenters(&self.datacenters);
        }
        if !self.regions.is_empty() {
            set.retain_regions(&self.regions);
        }
        if !self.purposes.is_empty() {
            set.retain_purposes(&self.purposes);
        }
    }
}

impl AddressSet {
    /// Keeps the entries and DNS names of the given data centers, plus every
    /// one without a data center (global ranges such as the mail servers,
    /// ranges placed by region only).
    pub fn retain_datacenters(&mut self, dcs: &[DataCenter]) {
        let keep = |dc: Option<DataCenter>| dc.is_none_or(|dc| dcs.contains(&dc));
        self.entries.retain(|e| keep(e.datacenter));
        self.dns.retain(|d| keep(d.datacenter));
    }

    /// Keeps the entries in the given regions ([`Entry::location`]) and the
    /// DNS names of data centers in them, plus every one placed nowhere.
    pub fn retain_regions(&mut self, regions: &[Region]) {
        let keep = |r: Option<Region>| r.is_none_or(|r| regions.contains(&r));
        self.entries.retain(|e: &Entry| keep(e.location()));
        self.dns.retain(|d| keep(location(d.datacenter, None)));
    }

    /// Keeps the entries and DNS names of the given purposes (an empty
    /// slice keeps nothing).
    pub fn retain_purposes(&mut self, purposes: &[Purpose]) {
        self.entries.retain(|e| purposes.contains(&e.purpose));
        self.dns.retain(|d| purposes.contains(&d.purpose));
    }
}
