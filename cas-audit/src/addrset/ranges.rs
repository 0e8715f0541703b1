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

/// An inclusive address range of one family, IPv4 addresses in the low 32
/// bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Interval {
    pub(crate) start: u128,
    pub(crate) end: u128,
}

impl Interval {
    /// The addresses of `net` (host bits ignored).
    pub(crate) fn of(net: IpNet) -> Interval {
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

/// The addresses a list of prefixes covers, per family (IPv4, IPv6): sorted,
/// disjoint, adjacent ranges joined. A `/30` and its four `/32`s cover the
/// same.
pub(crate) fn coverage(nets: impl IntoIterator<Item = IpNet>) -> [Vec<Interval>; 2] {
    let mut fams: [Vec<Interval>; 2] = [Vec::new(), Vec::new()];
    for n in nets {
        fams[usize::from(n.addr().is_ipv6())].push(Interval::of(n));
    }
    fams.map(|mut v| {
        v.sort();
        let mut out: Vec<Interval> = Vec::with_capacity(v.len());
        for iv in v {
            match out.last_mut() {
                Some(last) if iv.start <= last.end.saturating_add(1) => {
                    last.end = last.end.max(iv.end);
                }
                _ => out.push(iv),
            }
        }
        out
    })
}

/// The addresses of `a` not in `b` (both as [`coverage`] gives them).
pub(crate) fn subtract(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let mut out = Vec::new();
    let mut j = 0;
    for &iv in a {
        let mut start = iv.start;
        let mut open = true;
        while j < b.len() && b[j].end < start {
            j += 1;
        }
        let mut k = j;
        while open && k < b.len() && b[k].start <= iv.end {
            if b[k].start > start {
                out.push(Interval {
                    start,
                    end: b[k].start - 1,
                });
            }
            match b[k].end.checked_add(1) {
                Some(next) if next <= iv.end => start = start.max(next),
                _ => open = false,
            }
            k += 1;
        }
        if open {
            out.push(Interval { start, end: iv.end });
        }
    }
    out
}

/// The fewest CIDR prefixes that cover exactly `iv` (of IPv6 when `v6`).
pub(crate) fn cidrs(iv: Interval, v6: bool) -> Vec<IpNet> {
    let bits: u32 = if v6 { 128 } else { 32 };
    // The last address of the block of 2^len addresses at `start`.
    let block_end = |start: u128, len: u32| -> Option<u128> {
        if len >= 128 {
            (start == 0).then_some(u128::MAX)
        } else {
            start.checked_add((1u128 << len) - 1)
        }
    };
    let mut out = Vec::new();
    let mut start = iv.start;
    loop {
        // The largest aligned block at `start` that ends within `iv`.
        let mut len = bits.min(start.trailing_zeros());
        while len > 0 && block_end(start, len).is_none_or(|e| e > iv.end) {
            len -= 1;
        }
        let prefix_len = u8::try_from(bits - len).expect("at most 128");
        out.push(if v6 {
            IpNet::V6(Ipv6Net::new(start.into(), prefix_len).expect("valid length"))
        } else {
            let addr = u32::try_from(start).expect("an IPv4 address");
            IpNet::V4(Ipv4Net::new(addr.into(), prefix_len).expect("valid length"))
        });
        let last = block_end(start, len).expect("checked above");
        if last >= iv.end {
            return out;
        }
        start = last + 1;
    }
}
