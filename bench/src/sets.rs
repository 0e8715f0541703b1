//! The address sets benchmarked: the built-in set and synthetic sets of
//! N prefixes, plus the addresses the test packets use.

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cas_audit::addrset::{AddressSet, Range};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The audited host.
pub const LOCAL4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The audited host, IPv6.
pub const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
/// A CAS address in every set (built-in: US1 app connector, a /32).
pub const HIT4: Ipv4Addr = Ipv4Addr::new(13, 64, 196, 27);
/// Not in any set, but in the same /16 as [`HIT4`]: the prefilter passes it
/// and the trie answers "miss".
pub const NEAR4: Ipv4Addr = Ipv4Addr::new(13, 64, 196, 28);
/// Not in any set, and no prefix of any set shares its /16.
pub const MISS4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
/// The IPv6 prefix every synthetic set holds (the built-in set has no IPv6).
pub const HIT6_NET: &str = "2a01:111:f100::/44";
/// An address in [`HIT6_NET`].
pub const HIT6: Ipv6Addr = Ipv6Addr::new(0x2a01, 0x111, 0xf100, 0, 0, 0, 0, 0x42);
/// Same /16 as [`HIT6_NET`], outside it.
pub const NEAR6: Ipv6Addr = Ipv6Addr::new(0x2a01, 0x111, 0xf200, 0, 0, 0, 0, 1);
/// No prefix of any set shares its /16 (documentation space).
pub const MISS6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 9);

/// One benchmarked set.
pub struct BenchSet {
    /// "builtin" or "synthetic-N".
    pub name: String,
    /// The ranges (range id = index).
    pub ranges: Vec<Range>,
    /// Whether the set has IPv6 ranges (the IPv6 hit cases need one).
    pub has_v6: bool,
}

fn range(prefix: IpNet) -> Range {
    Range {
        prefix,
        datacenters: BTreeSet::new(),
        purposes: BTreeSet::new(),
        ports: BTreeSet::new(),
    }
}

/// The built-in set (cas-2019-11).
pub fn builtin() -> BenchSet {
    let ranges = AddressSet::builtin().ranges();
    BenchSet {
        name: "builtin".into(),
        has_v6: ranges.iter().any(|r| r.prefix.addr().is_ipv6()),
        ranges,
    }
}

/// splitmix64: small, seeded, deterministic.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Whether a random IPv4 prefix may be used: public-looking unicast, not
/// in the test bed's or documentation networks, and not in the /16 of
/// [`HIT4`] / [`NEAR4`] or of [`MISS4`] (so those cases mean the same in
/// every set).
fn usable_v4(a: u32) -> bool {
    let first = a >> 24;
    let hi16 = a >> 16;
    !(first == 0
        || first == 10
        || first == 127
        || first >= 224
        || hi16 == u32::from(HIT4) >> 16
        || hi16 == u32::from(MISS4) >> 16
        || hi16 == (198 << 8 | 51)
        || hi16 == (192 << 8))
}

/// `n` distinct prefixes, seeded by `n`: the fixed [`HIT4`]/32 and
/// [`HIT6_NET`], then about 80 % IPv4 (half /32, half /24) and 20 % IPv6
/// (half /48, half /64) drawn at random, IPv6 from 2400::/8 to 2bff::/16
/// except the /16 of [`HIT6_NET`].
pub fn synthetic(n: usize) -> BenchSet {
    let mut rng = Rng(0x5eed_ca5a ^ n as u64);
    let mut seen: HashSet<IpNet> = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for fixed in [
        IpNet::V4(Ipv4Net::new(HIT4, 32).expect("prefix")),
        HIT6_NET.parse().expect("prefix"),
    ] {
        seen.insert(fixed);
        out.push(range(fixed));
    }
    let hit6_hi = HIT6.segments()[0];
    while out.len() < n {
        let r = rng.next();
        let net = if r % 10 < 8 {
            let a = (r >> 32) as u32;
            if !usable_v4(a) {
                continue;
            }
            let len = if r & 2 == 0 { 32 } else { 24 };
            IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(a), len)
                    .expect("prefix")
                    .trunc(),
            )
        } else {
            let hi = 0x2400 + (rng.next() % 0x800) as u16;
            if hi == hit6_hi {
                continue;
            }
            let low = rng.next();
            let mut seg = [0u16; 8];
            seg[0] = hi;
            seg[1] = (low >> 48) as u16;
            seg[2] = (low >> 32) as u16;
            seg[3] = (low >> 16) as u16;
            let len = if r & 2 == 0 { 48 } else { 64 };
            IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(seg), len)
                    .expect("prefix")
                    .trunc(),
            )
        };
        if seen.insert(net) {
            out.push(range(net));
        }
    }
    BenchSet {
        name: format!("synthetic-{n}"),
        ranges: out,
        has_v6: true,
    }
}

/// Checks the address plan against a set: the hit addresses are in it,
/// the near misses are not, and the far misses share no /16 with it.
pub fn check_plan(set: &BenchSet) -> anyhow::Result<()> {
    let contains = |a: IpAddr| set.ranges.iter().any(|r| r.prefix.contains(&a));
    let shares_16 = |a: IpAddr| {
        set.ranges.iter().any(|r| {
            let (lo, hi) = hi16_span(&r.prefix);
            let x = hi16(a);
            r.prefix.addr().is_ipv4() == a.is_ipv4() && lo <= x && x <= hi
        })
    };
    anyhow::ensure!(contains(HIT4.into()), "{}: {HIT4} not in the set", set.name);
    anyhow::ensure!(!contains(NEAR4.into()), "{}: {NEAR4} in the set", set.name);
    anyhow::ensure!(shares_16(NEAR4.into()), "{}: {NEAR4}'s /16 empty", set.name);
    anyhow::ensure!(!shares_16(MISS4.into()), "{}: {MISS4}'s /16 used", set.name);
    anyhow::ensure!(!shares_16(MISS6.into()), "{}: {MISS6}'s /16 used", set.name);
    if set.has_v6 {
        anyhow::ensure!(contains(HIT6.into()), "{}: {HIT6} not in the set", set.name);
        anyhow::ensure!(!contains(NEAR6.into()), "{}: {NEAR6} in the set", set.name);
    }
    Ok(())
}

fn hi16(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(a) => u32::from(a) >> 16,
        IpAddr::V6(a) => u32::from(a.segments()[0]),
    }
}

fn hi16_span(p: &IpNet) -> (u32, u32) {
    match p {
        IpNet::V4(n) => (u32::from(n.network()) >> 16, u32::from(n.broadcast()) >> 16),
        IpNet::V6(n) => (
            u32::from(n.network().segments()[0]),
            u32::from(n.broadcast().segments()[0]),
        ),
    }
}

/// Fraction of the 65,536 top-16-bit values of `v4` (or IPv6) that some
/// range overlaps: the share of uniformly random addresses the prefilter
/// lets through to the trie.
pub fn prefilter_fill(set: &BenchSet, v4: bool) -> f64 {
    let mut bits = vec![false; 65536];
    for r in &set.ranges {
        if r.prefix.addr().is_ipv4() == v4 {
            let (lo, hi) = hi16_span(&r.prefix);
            for b in &mut bits[lo as usize..=hi as usize] {
                *b = true;
            }
        }
    }
    bits.iter().filter(|b| **b).count() as f64 / 65536.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_sets_are_deterministic_and_fit_the_plan() {
        for n in [1000, 10_000] {
            let a = synthetic(n);
            let b = synthetic(n);
            assert_eq!(a.ranges.len(), n);
            assert_eq!(a.ranges, b.ranges);
            check_plan(&a).unwrap();
            let v6 = a
                .ranges
                .iter()
                .filter(|r| r.prefix.addr().is_ipv6())
                .count();
            assert!(v6 > n / 10 && v6 < n * 3 / 10, "{v6} IPv6 of {n}");
        }
    }

    #[test]
    fn builtin_fits_the_plan() {
        check_plan(&builtin()).unwrap();
    }
}
