//! The set's DNS names as a matcher: which of them a name a client asked
//! for (or a CNAME on the way to its address) is, and the tags, purposes
//! and ports it takes from them.
//!
//! A set's name is exact (`portal.cloudappsecurity.com`) or a wildcard
//! whose first label is `*` (`*.cas.ms`), which matches any name with at
//! least one more label in front of its suffix (`contoso.cas.ms`,
//! `a.b.cas.ms`; not `cas.ms` itself), as firewall FQDN rules read the
//! pages' wildcards. Comparison ignores ASCII case and a trailing dot (RFC
//! 4343; a fully qualified name as DNS writes it). A name matching several
//! of the set's names (an exact one and wildcards, or a name listed for two
//! purposes) takes the union of their tags, as a prefix inside a listed
//! range does ([`super::AddressSet::ranges`]).

use std::collections::{BTreeSet, HashMap};

use super::{DataCenter, DnsName, Purpose};

/// What the set says of a name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameTags {
    /// Data centers of the matching names (none: every data center).
    pub datacenters: BTreeSet<DataCenter>,
    /// Their purposes.
    pub purposes: BTreeSet<Purpose>,
    /// Their ports.
    pub ports: BTreeSet<u16>,
}

impl NameTags {
    fn add(&mut self, d: &DnsName) {
        self.datacenters.extend(d.datacenter);
        self.purposes.insert(d.purpose);
        self.ports.extend(d.ports.iter().copied());
    }

    fn union(&mut self, o: &NameTags) {
        self.datacenters.extend(o.datacenters.iter().copied());
        self.purposes.extend(o.purposes.iter().copied());
        self.ports.extend(o.ports.iter().copied());
    }
}

/// The set's names, ready to match.
#[derive(Debug, Clone, Default)]
pub struct NameMatcher {
    exact: HashMap<String, NameTags>,
    /// Wildcards by their suffix (`cas.ms` for `*.cas.ms`).
    wild: HashMap<String, NameTags>,
}

/// A name in the form names are compared in: ASCII lower case, without a
/// trailing dot.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl NameMatcher {
    /// The matcher of `names` (the same name listed twice merges).
    pub fn new(names: &[DnsName]) -> NameMatcher {
        let mut m = NameMatcher::default();
        for d in names {
            let n = normalize(&d.name);
            match n.strip_prefix("*.") {
                Some(suffix) => m.wild.entry(suffix.to_string()).or_default().add(d),
                None => m.exact.entry(n).or_default().add(d),
            }
        }
        m
    }

    /// Whether the set has no names.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wild.is_empty()
    }

    /// The tags of `name` (any case, trailing dot or not): the union of
    /// the set's names it matches; `None` when it matches none.
    pub fn lookup(&self, name: &str) -> Option<NameTags> {
        let n = normalize(name);
        let mut out: Option<NameTags> = self.exact.get(&n).cloned();
        // Every proper suffix after a dot: `a.b.cas.ms` tries `b.cas.ms`,
        // `cas.ms` and `ms`.
        let mut rest = n.as_str();
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(t) = self.wild.get(suffix) {
                out.get_or_insert_with(NameTags::default).union(t);
            }
            rest = suffix;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addrset::Connection;

    fn name(n: &str, dc: Option<DataCenter>, p: Purpose, ports: &[u16]) -> DnsName {
        DnsName {
            name: n.into(),
            datacenter: dc,
            purpose: p,
            direction: Connection::Outbound,
            ports: ports.to_vec(),
            sources: Vec::new(),
        }
    }

    #[test]
    fn exact_wildcards_case_and_trailing_dot() {
        let m = NameMatcher::new(&[
            name("ocsp.msocsp.com", None, Purpose::SiemAgent, &[80]),
            name("ocsp.msocsp.com", None, Purpose::LogCollector, &[80]),
            name("*.cas.ms", None, Purpose::AccessSessionControls, &[443]),
            name(
                "*.us1.cas.ms",
                Some(DataCenter::Us1),
                Purpose::AccessSessionControls,
                &[443],
            ),
        ]);
        let o = m.lookup("OCSP.MSOCSP.com.").expect("exact, any case, dot");
        assert_eq!(
            o.purposes,
            [Purpose::SiemAgent, Purpose::LogCollector].into()
        );
        assert_eq!(o.ports, [80].into());
        assert!(o.datacenters.is_empty());
        let w = m.lookup("contoso.cas.ms").expect("wildcard");
        assert!(w.datacenters.is_empty());
        let deep = m.lookup("a.contoso.us1.cas.ms").expect("deeper names too");
        assert_eq!(deep.datacenters, [DataCenter::Us1].into());
        assert_eq!(deep.ports, [443].into());
        assert_eq!(
            m.lookup("cas.ms"),
            None,
            "the wildcard's own suffix is not matched"
        );
        assert_eq!(m.lookup("xcas.ms"), None);
        assert_eq!(m.lookup("ocsp.msocsp.com.evil.example"), None);
        assert!(!m.is_empty());
    }
}
