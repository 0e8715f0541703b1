//! Names learned from what the datapath hands over: DNS answers ([`dns`])
//! and TLS ClientHellos ([`tls`]), matched against the set's DNS names
//! ([`crate::addrset::names`]), kept in a bounded table of learned
//! addresses ([`LearnedTable`]) whose entries the agent puts into the
//! kernel's tries as ranges of their own, for the answer's TTL.
//!
//! - A learned address is a host range (`/32`, `/128`) with the name's
//!   data centers, purposes and ports, under a range id of the learned
//!   block (the top of the range counters, [`LearnedTable::base`]).
//! - Its lifetime is the answer's TTL, raised to [`LearnOptions::ttl_floor`]
//!   (clients and their caches keep answers longer than short TTLs say)
//!   and lowered to [`LearnOptions::ttl_cap`]; each new answer extends it.
//!   An address learned from a ClientHello (no TTL) lives [`HELLO_TTL`],
//!   within the same bounds.
//! - When it expires the address leaves the tries (no new flow to it is
//!   audited); its slot is reused only once no flow in the kernel table
//!   refers to its range id any more ([`LearnedTable::release`]).
//! - An address already in a listed range keeps that range: only its name
//!   is remembered, for the flows' `dns_name`.
//! - The table holds [`LearnOptions::capacity`] addresses; what does not
//!   fit is counted ([`LearnStats::overflow`]) and not audited.

pub mod dns;
pub mod tls;

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    time::Duration,
};

use ipnet::IpNet;

use crate::addrset::{names::NameTags, Range};

/// How long an address learned from a ClientHello's server name lives
/// (before [`LearnOptions::ttl_floor`] and [`LearnOptions::ttl_cap`]): about
/// as long as resolvers keep a CDN's answers.
pub const HELLO_TTL: Duration = Duration::from_secs(300);

/// Bounds of the learned table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnOptions {
    /// Addresses the table holds (0: nothing is learned, and the datapath
    /// hands nothing over).
    pub capacity: u32,
    /// Shortest lifetime of a learned address, whatever its TTL.
    pub ttl_floor: Duration,
    /// Longest lifetime of a learned address, whatever its TTL.
    pub ttl_cap: Duration,
}

impl Default for LearnOptions {
    fn default() -> Self {
        LearnOptions {
            capacity: 4096,
            ttl_floor: Duration::from_secs(60),
            ttl_cap: Duration::from_secs(3600),
        }
    }
}

impl LearnOptions {
    /// The lifetime of an answer with this TTL (seconds), within the bounds.
    pub fn lifetime(&self, ttl_secs: u32) -> Duration {
        Duration::from_secs(u64::from(ttl_secs))
            .clamp(self.ttl_floor, self.ttl_cap.max(self.ttl_floor))
    }
}

/// Where a learned name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A DNS answer.
    Dns,
    /// A TLS ClientHello's server name.
    ClientHello,
}

/// One learned address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    /// The name the client asked for (the DNS question, or the server name).
    pub name: String,
    /// How it was learned.
    pub via: Via,
    /// Its range: the host prefix with the name's tags.
    pub range: Range,
    /// When it leaves the tries (CLOCK_MONOTONIC ns).
    pub expires_ns: u64,
}

#[derive(Debug, Clone)]
enum Slot {
    Free,
    /// In the tries.
    Active(Learned),
    /// Out of the tries, its range id still named by kernel flows.
    Draining(Learned),
}

/// What learning an address did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new learned range: put it into the tries under `id`.
    Added {
        /// Its range id.
        id: u32,
    },
    /// Known already: its lifetime was extended.
    Refreshed,
    /// Known already, and now also the address of a name whose tags or
    /// ports it did not have (two names of the set on one address, as CDNs
    /// do): its range now carries the union, as a listed address of several
    /// purposes does; put it into the tries again under `id`.
    Widened {
        /// Its range id.
        id: u32,
    },
    /// In a listed range: only the name is remembered.
    Listed,
    /// The table is full: not learned (counted).
    Full,
}

/// What the table did since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LearnStats {
    /// Answers (an address of a matching name) learned or refreshed.
    pub answers: u64,
    /// Addresses put into the tries.
    pub added: u64,
    /// Addresses that left them when their lifetime ended.
    pub expired: u64,
    /// Addresses in a listed range whose name was remembered.
    pub listed: u64,
    /// Addresses not learned: the table was full.
    pub overflow: u64,
}

/// The bounded table of learned addresses.
#[derive(Debug, Clone)]
pub struct LearnedTable {
    opts: LearnOptions,
    base: u32,
    slots: Vec<Slot>,
    by_addr: HashMap<IpAddr, usize>,
    free: VecDeque<usize>,
    /// Names of answer addresses in listed ranges, until they expire.
    listed: HashMap<IpAddr, (String, u64)>,
    /// What it did.
    pub stats: LearnStats,
}

impl LearnedTable {
    /// An empty table whose slot `i` is range id `base + i`.
    pub fn new(opts: LearnOptions, base: u32) -> LearnedTable {
        let n = opts.capacity as usize;
        LearnedTable {
            opts,
            base,
            slots: vec![Slot::Free; n],
            by_addr: HashMap::new(),
            free: (0..n).collect(),
            listed: HashMap::new(),
            stats: LearnStats::default(),
        }
    }

    /// Its bounds.
    pub fn options(&self) -> &LearnOptions {
        &self.opts
    }

    /// The range id of slot 0.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// Learns that `addr` is `name` (tags `tags`) for `ttl_secs` from
    /// `now_ns`; `listed`: the address is in a listed range.
    #[allow(clippy::too_many_arguments)]
    pub fn learn(
        &mut self,
        addr: IpAddr,
        name: &str,
        tags: &NameTags,
        via: Via,
        ttl_secs: u32,
        now_ns: u64,
        listed: bool,
    ) -> Outcome {
        let until = now_ns.saturating_add(self.opts.lifetime(ttl_secs).as_nanos() as u64);
        self.stats.answers += 1;
        if listed {
            if self.listed.len() >= self.opts.capacity as usize && !self.listed.contains_key(&addr)
            {
                self.stats.overflow += 1;
                return Outcome::Full;
            }
            let e = self
                .listed
                .entry(addr)
                .or_insert_with(|| (name.to_string(), 0));
            *e = (name.to_string(), e.1.max(until));
            self.stats.listed += 1;
            return Outcome::Listed;
        }
        let learned = |range_prefix: IpNet| Learned {
            name: name.to_string(),
            via,
            range: Range {
                prefix: range_prefix,
                datacenters: tags.datacenters.clone(),
                purposes: tags.purposes.clone(),
                ports: tags.ports.clone(),
            },
            expires_ns: until,
        };
        if let Some(&i) = self.by_addr.get(&addr) {
            match &mut self.slots[i] {
                Slot::Active(l) => {
                    l.expires_ns = l.expires_ns.max(until);
                    l.name = name.to_string();
                    let r = &mut l.range;
                    let before = (r.datacenters.len(), r.purposes.len(), r.ports.len());
                    r.datacenters.extend(tags.datacenters.iter().copied());
                    r.purposes.extend(tags.purposes.iter().copied());
                    r.ports.extend(tags.ports.iter().copied());
                    let after = (r.datacenters.len(), r.purposes.len(), r.ports.len());
                    return if after == before {
                        Outcome::Refreshed
                    } else {
                        Outcome::Widened {
                            id: self.base + i as u32,
                        }
                    };
                }
                s @ Slot::Draining(_) => {
                    *s = Slot::Active(learned(IpNet::from(addr)));
                    self.stats.added += 1;
                    return Outcome::Added {
                        id: self.base + i as u32,
                    };
                }
                Slot::Free => {}
            }
        }
        let Some(i) = self.free.pop_front() else {
            self.stats.overflow += 1;
            return Outcome::Full;
        };
        self.slots[i] = Slot::Active(learned(IpNet::from(addr)));
        self.by_addr.insert(addr, i);
        self.stats.added += 1;
        Outcome::Added {
            id: self.base + i as u32,
        }
    }

    /// Ends the lifetimes due at `now_ns`: the ranges to take out of the
    /// tries, with their ids.
    pub fn expire(&mut self, now_ns: u64) -> Vec<(u32, Range)> {
        self.listed.retain(|_, (_, until)| *until > now_ns);
        let mut out = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if let Slot::Active(l) = s {
                if l.expires_ns <= now_ns {
                    out.push((self.base + i as u32, l.range.clone()));
                    *s = Slot::Draining(l.clone());
                }
            }
        }
        self.stats.expired += out.len() as u64;
        out
    }

    /// Every address in the tries (at exit, or to put back after a reload).
    pub fn active(&self) -> impl Iterator<Item = (u32, &Learned)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| match s {
            Slot::Active(l) => Some((self.base + i as u32, l)),
            _ => None,
        })
    }

    /// Every learned address with its id, in the tries or expiring.
    pub fn all(&self) -> impl Iterator<Item = (u32, &Learned)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| match s {
            Slot::Active(l) | Slot::Draining(l) => Some((self.base + i as u32, l)),
            Slot::Free => None,
        })
    }

    /// Frees the expired slots whose range id no kernel flow names
    /// (`referenced` says which do): their ids, for reuse.
    pub fn release(&mut self, referenced: impl Fn(u32) -> bool) -> Vec<(u32, Learned)> {
        let mut out = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            let id = self.base + i as u32;
            if matches!(s, Slot::Draining(_)) && !referenced(id) {
                if let Slot::Draining(l) = std::mem::replace(s, Slot::Free) {
                    self.by_addr.remove(&l.range.prefix.addr());
                    self.free.push_back(i);
                    out.push((id, l));
                }
            }
        }
        out
    }

    /// The learned address under range id `id` (in the tries or expired).
    pub fn get(&self, id: u32) -> Option<&Learned> {
        let i = id.checked_sub(self.base)? as usize;
        match self.slots.get(i)? {
            Slot::Active(l) | Slot::Draining(l) => Some(l),
            Slot::Free => None,
        }
    }

    /// The name `addr` was learned as (a learned address, or an answer's
    /// address in a listed range).
    pub fn name_of(&self, addr: IpAddr) -> Option<&str> {
        if let Some(l) = self.by_addr.get(&addr).and_then(|&i| match &self.slots[i] {
            Slot::Active(l) | Slot::Draining(l) => Some(l),
            Slot::Free => None,
        }) {
            return Some(&l.name);
        }
        self.listed.get(&addr).map(|(n, _)| n.as_str())
    }

    /// Learned addresses now in the tries.
    pub fn len(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Active(_)))
            .count()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn tags(port: u16) -> NameTags {
        NameTags {
            ports: [port].into(),
            ..NameTags::default()
        }
    }

    #[test]
    fn learn_refresh_expire_release_and_overflow() {
        let opts = LearnOptions {
            capacity: 2,
            ttl_floor: Duration::from_secs(2),
            ttl_cap: Duration::from_secs(10),
        };
        assert_eq!(opts.lifetime(0), Duration::from_secs(2));
        assert_eq!(opts.lifetime(86_400), Duration::from_secs(10));
        let mut t = LearnedTable::new(opts, 100);
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        let b: IpAddr = "2001:db8::7".parse().unwrap();
        let c: IpAddr = "203.0.113.8".parse().unwrap();
        let ocsp = "ocsp.msocsp.com";
        assert_eq!(
            t.learn(a, ocsp, &tags(80), Via::Dns, 5, 0, false),
            Outcome::Added { id: 100 }
        );
        assert_eq!(
            t.learn(a, ocsp, &tags(80), Via::Dns, 8, S, false),
            Outcome::Refreshed
        );
        assert_eq!(
            t.learn(b, "x.cas.ms", &tags(443), Via::ClientHello, 1, 0, false),
            Outcome::Added { id: 101 }
        );
        assert_eq!(
            t.learn(c, "y.cas.ms", &tags(443), Via::Dns, 1, 0, false),
            Outcome::Full
        );
        assert_eq!(
            t.learn(c, "y.cas.ms", &tags(443), Via::Dns, 1, 0, true),
            Outcome::Listed
        );
        assert_eq!(t.name_of(c), Some("y.cas.ms"));
        assert_eq!(
            t.get(100).unwrap().range.prefix.to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(
            t.get(101).unwrap().range.prefix.to_string(),
            "2001:db8::7/128"
        );
        assert_eq!(t.len(), 2);
        // b lives 2 s (the floor), a 9 s (refreshed at 1 s with 8 s).
        let gone = t.expire(2 * S);
        assert_eq!(gone.iter().map(|g| g.0).collect::<Vec<_>>(), vec![101]);
        assert_eq!(t.name_of(c), None, "listed names expire too");
        // A flow still names 101: its slot stays, and so does its name.
        assert!(t.release(|id| id == 101).is_empty());
        assert_eq!(t.name_of(b), Some("x.cas.ms"));
        assert_eq!(
            t.learn(c, "y.cas.ms", &tags(443), Via::Dns, 1, 2 * S, false),
            Outcome::Full
        );
        assert_eq!(t.release(|_| false).len(), 1);
        assert_eq!(t.name_of(b), None);
        assert_eq!(
            t.learn(c, "y.cas.ms", &tags(443), Via::Dns, 1, 2 * S, false),
            Outcome::Added { id: 101 }
        );
        // A second name on c, with another port: the range is widened.
        assert_eq!(
            t.learn(c, "ocsp.msocsp.com", &tags(80), Via::Dns, 1, 2 * S, false),
            Outcome::Widened { id: 101 }
        );
        assert_eq!(
            t.get(101)
                .unwrap()
                .range
                .ports
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            [80, 443]
        );
        assert_eq!(
            t.learn(c, "y.cas.ms", &tags(443), Via::Dns, 1, 2 * S, false),
            Outcome::Refreshed
        );
        // c (floor: 2 s from 2 s) ends at 4 s, a at 9 s.
        assert_eq!(t.expire(4 * S).len(), 1);
        assert_eq!(t.expire(9 * S).len(), 1);
        assert_eq!(t.stats.overflow, 2);
        assert_eq!(t.stats.added, 3);
        assert_eq!(t.stats.expired, 3);
        assert_eq!(t.active().count(), 0);
    }
}
