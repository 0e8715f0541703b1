//! The service ports a CAS flow may use.

use std::collections::{BTreeSet, HashMap};

use crate::addrset::Range;

/// Ports allowed by default: 443 (HTTPS), 80 (OCSP certificate checks) and
/// 11344 (the DLP integration's stunnel).
pub const DEFAULT_ALLOWED_PORTS: [u16; 3] = [80, 443, 11344];

/// A set of allowed service ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllowedPorts(BTreeSet<u16>);

impl Default for AllowedPorts {
    fn default() -> Self {
        AllowedPorts(DEFAULT_ALLOWED_PORTS.into_iter().collect())
    }
}

impl AllowedPorts {
    /// The given ports, or the defaults when `ports` is empty.
    pub fn from_flags(ports: &[u16]) -> Self {
        if ports.is_empty() {
            Self::default()
        } else {
            AllowedPorts(ports.iter().copied().collect())
        }
    }

    /// Whether `port` is allowed.
    pub fn contains(&self, port: u16) -> bool {
        self.0.contains(&port)
    }

    /// The given ports (may be empty: nothing allowed).
    pub fn from_ports(ports: impl IntoIterator<Item = u16>) -> Self {
        AllowedPorts(ports.into_iter().collect())
    }

    /// The ports in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().copied()
    }
}

impl std::fmt::Display for AllowedPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v: Vec<String> = self.0.iter().map(u16::to_string).collect();
        f.write_str(&v.join(", "))
    }
}

/// Which ports are allowed for which CAS range.
///
/// Either one set for every range (`--allow-port`, or the defaults), or per
/// range: the union of the ports of the range's purposes in the address set.
/// Ranges with the same ports share a profile; the kernel holds one bitmap
/// per profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPolicy {
    profiles: Vec<AllowedPorts>,
    /// Profile of each range id; empty means profile 0 for all.
    range_profile: Vec<u32>,
}

impl PortPolicy {
    /// The same ports for every range.
    pub fn global(ports: AllowedPorts) -> Self {
        PortPolicy {
            profiles: vec![ports],
            range_profile: Vec::new(),
        }
    }

    /// Per-range ports from the address set (range id = index).
    pub fn per_range(ranges: &[Range]) -> Self {
        let mut profiles: Vec<AllowedPorts> = Vec::new();
        let mut index: HashMap<AllowedPorts, u32> = HashMap::new();
        let range_profile = ranges
            .iter()
            .map(|r| {
                let ports = AllowedPorts::from_ports(r.ports.iter().copied());
                *index.entry(ports.clone()).or_insert_with(|| {
                    profiles.push(ports);
                    profiles.len() as u32 - 1
                })
            })
            .collect();
        if profiles.is_empty() {
            profiles.push(AllowedPorts::from_ports([]));
        }
        PortPolicy {
            profiles,
            range_profile,
        }
    }

    /// Gives range `id` (a learned address) the profile of `ports`, added
    /// if no range has it yet; returns it. With one set for every range
    /// (no `--set`, or `--allow-port`), the learned range takes that one:
    /// the global ports apply to every range, learned or listed.
    pub fn assign(&mut self, id: u32, ports: AllowedPorts) -> u32 {
        if self.is_global() {
            return 0;
        }
        let profile = match self.profiles.iter().position(|p| *p == ports) {
            Some(p) => p as u32,
            None => {
                self.profiles.push(ports);
                self.profiles.len() as u32 - 1
            }
        };
        let i = id as usize;
        if self.range_profile.len() <= i {
            self.range_profile.resize(i + 1, 0);
        }
        self.range_profile[i] = profile;
        profile
    }

    /// The profile of range `id`.
    pub fn profile_of(&self, id: u32) -> u32 {
        self.range_profile.get(id as usize).copied().unwrap_or(0)
    }

    /// The ports allowed for range `id`.
    pub fn for_range(&self, id: u32) -> &AllowedPorts {
        &self.profiles[self.profile_of(id) as usize]
    }

    /// The distinct port sets, indexed by profile.
    pub fn profiles(&self) -> &[AllowedPorts] {
        &self.profiles
    }

    /// Whether one set applies to every range.
    pub fn is_global(&self) -> bool {
        self.range_profile.is_empty()
    }
}

impl std::fmt::Display for PortPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_global() {
            write!(f, "{}", self.profiles[0])
        } else {
            let v: Vec<String> = self.profiles.iter().map(|p| format!("{{{p}}}")).collect();
            write!(f, "per range: {}", v.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_override() {
        let d = AllowedPorts::from_flags(&[]);
        assert_eq!(d.iter().collect::<Vec<_>>(), vec![80, 443, 11344]);
        let o = AllowedPorts::from_flags(&[8443, 443, 8443]);
        assert_eq!(o.iter().collect::<Vec<_>>(), vec![443, 8443]);
        assert!(!o.contains(80));
        assert_eq!(o.to_string(), "443, 8443");
    }

    #[test]
    fn learned_ranges_take_their_names_ports_only_with_a_set() {
        let mut g = PortPolicy::global(AllowedPorts::default());
        assert_eq!(g.assign(5000, AllowedPorts::from_ports([80])), 0);
        assert!(g.for_range(5000).contains(443) && g.for_range(5000).contains(80));
        let r = |p: &str, ports: &[u16]| Range {
            prefix: p.parse().unwrap(),
            datacenters: Default::default(),
            purposes: Default::default(),
            ports: ports.iter().copied().collect(),
        };
        let mut p = PortPolicy::per_range(&[r("13.64.196.27/32", &[443])]);
        assert_eq!(p.assign(4000, AllowedPorts::from_ports([443])), 0);
        assert_eq!(p.assign(4001, AllowedPorts::from_ports([80])), 1);
        assert!(p.for_range(4001).contains(80) && !p.for_range(4001).contains(443));
        assert!(!p.for_range(4000).contains(80));
        assert_eq!(p.profiles().len(), 2);
    }
}
