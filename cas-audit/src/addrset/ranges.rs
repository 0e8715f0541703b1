//! A set as distinct prefixes with their tags: what the kernel's tries
//! hold (range id = position).

use std::collections::{BTreeSet, HashMap};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;

use super::{AddressSet, DataCenter, Purpose};

/// A distinct prefix of an [`AddressSet`] with every tag that applies to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Range {
    /// The prefix, truncated to its network address.
    pub prefix: IpNet,
    /// Data centers of the entries with this prefix or a strictly covering
    /// one (entries without a data center add nothing here).
    pub datacenters: BTreeSet<DataCenter>,
    /// Purposes of the entries with this prefix or a strictly covering one.
    pub purposes: BTreeSet<Purpose>,
    /// Ports of the entries with this prefix or a strictly covering one.
    pub ports: BTreeSet<u16>,
}

impl Range {
    /// Stands for a range id whose range is unknown (dropped by a reload of
    /// a pinned datapath before the agent restarted): no purpose, nothing
    /// matches it.
    pub fn placeholder() -> Range {
        Range {
            prefix: IpNet::V4(ipnet::Ipv4Net::default()),
            datacenters: BTreeSet::new(),
            purposes: BTreeSet::new(),
            ports: BTreeSet::new(),
        }
    }

    /// Whether this is a [`Range::placeholder`].
    pub fn is_placeholder(&self) -> bool {
        self.purposes.is_empty()
    }
}

impl AddressSet {
    /// The distinct prefixes of the set, truncated to their network address,
    /// with every IPv4 range before every IPv6 range and each family sorted by
    /// address, then prefix length.
    ///
    /// Each range carries the union of the tags (data centers, purposes,
    /// ports) of the entries with that prefix and of the entries whose
    /// prefix strictly contains it, so a longest-prefix-match lookup that
    /// lands on the more specific prefix still reports the covering range's
    /// data centers, purposes and ports.
    ///
    /// Runs in O(n · L) hash lookups, where L (at most 32 or 128) is the
    /// number of distinct prefix lengths in use.
    #[must_use]
    pub fn ranges(&self) -> Vec<Range> {
        /// Data-center and purpose bit masks, and the ports.
        #[derive(Default, Clone)]
        struct Tags {
            dcs: u16,
            purposes: u16,
            ports: BTreeSet<u16>,
        }

        let mut own: HashMap<IpNet, Tags> = HashMap::with_capacity(self.entries.len());
        for e in &self.entries {
            let tags = own.entry(e.prefix.trunc()).or_default();
            if let Some(dc) = e.datacenter {
                tags.dcs |= dc.bit();
            }
            tags.purposes |= e.purpose.bit();
            tags.ports.extend(e.ports.iter().copied());
        }

        // Only the prefix lengths that actually occur can hold a supernet.
        let mut v4_lens = [false; 33];
        let mut v6_lens = [false; 129];
        for net in own.keys() {
            match net {
                IpNet::V4(n) => v4_lens[usize::from(n.prefix_len())] = true,
                IpNet::V6(n) => v6_lens[usize::from(n.prefix_len())] = true,
            }
        }
        let v4_lens: Vec<u8> = (0u8..=32).filter(|&l| v4_lens[usize::from(l)]).collect();
        let v6_lens: Vec<u8> = (0u8..=128).filter(|&l| v6_lens[usize::from(l)]).collect();

        let mut ranges: Vec<Range> = own
            .iter()
            .map(|(&net, tags)| {
                let mut all = tags.clone();
                let (lens, len) = match net {
                    IpNet::V4(n) => (&v4_lens, n.prefix_len()),
                    IpNet::V6(n) => (&v6_lens, n.prefix_len()),
                };
                for &l in lens.iter().take_while(|&&l| l < len) {
                    let sup = match net {
                        IpNet::V4(n) => Ipv4Net::new(n.addr(), l).map(|s| IpNet::V4(s.trunc())),
                        IpNet::V6(n) => Ipv6Net::new(n.addr(), l).map(|s| IpNet::V6(s.trunc())),
                    };
                    if let Some(t) = sup.ok().and_then(|s| own.get(&s)) {
                        all.dcs |= t.dcs;
                        all.purposes |= t.purposes;
                        all.ports.extend(t.ports.iter().copied());
                    }
                }
                Range {
                    prefix: net,
                    datacenters: DataCenter::ALL
                        .into_iter()
                        .filter(|dc| all.dcs & dc.bit() != 0)
                        .collect(),
                    purposes: Purpose::ALL
                        .into_iter()
                        .filter(|p| all.purposes & p.bit() != 0)
                        .collect(),
                    ports: all.ports,
                }
            })
            .collect();
        ranges.sort_by_key(|r| sort_key(r.prefix));
        ranges
    }
}

/// IPv4 before IPv6, then address, then prefix length.
pub(super) fn sort_key(net: IpNet) -> (u8, u128, u8) {
    match net {
        IpNet::V4(n) => (0, u128::from(u32::from(n.addr())), n.prefix_len()),
        IpNet::V6(n) => (1, u128::from(n.addr()), n.prefix_len()),
    }
}
