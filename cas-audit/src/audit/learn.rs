//! Names learned while the audit runs ([`crate::names`]): each DNS answer
//! and ClientHello the datapath hands over is matched against the set's
//! names; a match puts its address into the tries as a learned range (its
//! own range id, the name's tags and ports) for the answer's TTL, and
//! flows to it carry the name (`dns_name`, `tls_server_name`).
//!
//! With `--pin`, learned addresses leave the tries at exit (their TTLs
//! would otherwise outlive the agent that knows them); an agent taking over
//! a datapath whose agent died removes those it finds. A reload keeps them
//! (under the new policy's port profiles) until they expire.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
};

use cas_audit_common::{payload_kind, RangeStats};
use ipnet::IpNet;

use super::session::Session;
use crate::{
    addrset::{
        names::{NameMatcher, NameTags},
        Range,
    },
    datapath::events::PayloadRecord,
    flow::{addr_of, AllowedPorts, Flow, PortPolicy},
    host::clock::monotonic_ns,
    names::{dns, tls, LearnOptions, LearnedTable, Outcome, Via, HELLO_TTL},
    output::record::LearnedSummary,
};

/// Server names of ClientHellos to CAS addresses kept at most (oldest go first).
const HELLOS_MAX: usize = 65_536;
/// Learned addresses whose traffic is kept after their slot is reused;
/// beyond, the oldest are merged into nothing (their packets stay in the
/// metrics' totals).
const RETIRED_MAX: usize = 65_536;

/// A connection as the ClientHello saw it: client, client port, server, port.
type HelloKey = (IpAddr, u16, IpAddr, u16);

/// What the audit learned.
pub struct Learner {
    matcher: NameMatcher,
    /// The learned addresses.
    pub table: LearnedTable,
    hellos: HashMap<HelloKey, (String, u64)>,
    /// Totals of each learned slot when it was taken (a slot's counters
    /// carry its previous addresses' packets).
    baselines: HashMap<u32, RangeStats>,
    /// Traffic of learned addresses whose slot was freed, by prefix and name.
    retired: BTreeMap<(IpNet, String), (Range, RangeStats)>,
    /// Payloads that were no readable DNS response or ClientHello.
    unreadable: u64,
}

impl Learner {
    /// Learns the names of `matcher` into a table of `opts` whose first
    /// range id is `base`.
    pub fn new(matcher: NameMatcher, opts: LearnOptions, base: u32) -> Learner {
        Learner {
            matcher,
            table: LearnedTable::new(opts, base),
            hellos: HashMap::new(),
            baselines: HashMap::new(),
            retired: BTreeMap::new(),
            unreadable: 0,
        }
    }

    /// The names of the set (after a reload).
    pub fn set_names(&mut self, matcher: NameMatcher) {
        self.matcher = matcher;
    }

    /// Gives every learned range its name's ports in `policy`.
    pub fn assign_ports(&self, policy: &mut PortPolicy) {
        for (id, l) in self.table.all() {
            policy.assign(id, AllowedPorts::from_ports(l.range.ports.iter().copied()));
        }
    }

    /// The learned addresses now in the tries, with their ids.
    pub fn active(&self) -> Vec<(u32, &Range)> {
        self.table.active().map(|(id, l)| (id, &l.range)).collect()
    }

    /// The summary's `learned` object.
    pub fn summary(&self) -> LearnedSummary {
        let s = self.table.stats;
        LearnedSummary {
            capacity: u64::from(self.table.options().capacity),
            answers: s.answers,
            added: s.added,
            expired: s.expired,
            listed: s.listed,
            overflow: s.overflow,
            unreadable: self.unreadable,
        }
    }

    /// The names of a flow: the DNS name its remote address was learned as,
    /// and its ClientHello's server name (looked up as the datapath saw the
    /// connection: the inside host, or the address NAT gave it).
    pub fn names_of(&self, flow: &Flow) -> (Option<String>, Option<String>) {
        let dns = self.table.name_of(flow.remote_addr).map(str::to_string);
        let rport = flow.key.remote_port;
        let mut locals = vec![(flow.local_addr, flow.key.local_port)];
        locals.extend(flow.nat.translated);
        let sni = locals.into_iter().find_map(|(a, p)| {
            self.hellos
                .get(&(a, p, flow.remote_addr, rport))
                .map(|(n, _)| n.clone())
        });
        (dns, sni)
    }
}

impl Session {
    /// A DNS response or ClientHello from the payload ring.
    pub(super) fn on_payload(&mut self, p: &PayloadRecord) {
        let now = monotonic_ns();
        let fam = p.hdr.family;
        match p.hdr.what {
            payload_kind::DNS_UDP | payload_kind::DNS_TCP => {
                let ans = match dns::parse_response(&p.data, p.hdr.what == payload_kind::DNS_TCP) {
                    Ok(a) => a,
                    Err(dns::DnsError::Malformed(why)) => {
                        self.learner.unreadable += 1;
                        log::debug!(
                            "DNS payload from {} unread: {why}",
                            addr_of(fam, &p.hdr.src)
                        );
                        return;
                    }
                    Err(dns::DnsError::Rcode(_)) => return,
                };
                let Some(tags) = ans
                    .chain
                    .iter()
                    .find_map(|n| self.learner.matcher.lookup(n))
                else {
                    return;
                };
                for (addr, ttl) in &ans.addrs {
                    self.learn(*addr, &ans.query, &tags, Via::Dns, *ttl, now);
                }
            }
            payload_kind::TLS_HELLO => {
                let sni = match tls::server_name(&p.data) {
                    Ok(Some(n)) => n,
                    Ok(None) => return,
                    Err(_) => {
                        self.learner.unreadable += 1;
                        return;
                    }
                };
                let server = addr_of(fam, &p.hdr.dst);
                if let Some(tags) = self.learner.matcher.lookup(&sni) {
                    if self.learner.table.name_of(server).is_none() {
                        let ttl = HELLO_TTL.as_secs() as u32;
                        self.learn(server, &sni, &tags, Via::ClientHello, ttl, now);
                    }
                }
                if self.dp.range_id_of(server).is_some() {
                    let h = &mut self.learner.hellos;
                    if h.len() >= HELLOS_MAX {
                        // Oldest first: a map this size is walked rarely.
                        if let Some(k) = h.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) {
                            h.remove(&k);
                        }
                    }
                    let client = addr_of(fam, &p.hdr.src);
                    h.insert((client, p.hdr.src_port, server, p.hdr.dst_port), (sni, now));
                }
            }
            _ => self.learner.unreadable += 1,
        }
    }

    /// Learns `addr` as `name`; a new learned range, or one widened by a
    /// second name, goes into the tries.
    fn learn(&mut self, addr: IpAddr, name: &str, tags: &NameTags, via: Via, ttl: u32, now: u64) {
        let listed = self
            .dp
            .range_id_of(addr)
            .is_some_and(|id| id < self.learner.table.base());
        let (id, widened) = match self
            .learner
            .table
            .learn(addr, name, tags, via, ttl, now, listed)
        {
            Outcome::Added { id } => (id, false),
            Outcome::Widened { id } => (id, true),
            _ => return,
        };
        let Some(range) = self.learner.table.get(id).map(|l| l.range.clone()) else {
            return;
        };
        let profiles = self.policy.profiles().len();
        self.policy
            .assign(id, AllowedPorts::from_ports(range.ports.iter().copied()));
        let new_profile = self.policy.profiles().len() > profiles;
        if !widened {
            let base = self.dp.range_total(id).unwrap_or_default();
            self.learner.baselines.insert(id, base);
        }
        match self.dp.learn_insert(id, &range, &self.policy, new_profile) {
            Ok(()) => log::info!(
                "learned {addr} {} {name} (from a {}): {} [{}], ports {}, for {} s",
                if widened { "also as" } else { "as" },
                match via {
                    Via::Dns => "DNS answer",
                    Via::ClientHello => "ClientHello",
                },
                range.prefix,
                range
                    .purposes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                self.policy.for_range(id),
                self.learner.table.options().lifetime(ttl).as_secs()
            ),
            Err(e) => log::warn!("could not audit {addr} ({name}): {e}"),
        }
    }

    /// Takes the learned addresses whose lifetime ended out of the tries,
    /// and frees the slots no flow of the table (`referenced`: their range
    /// ids) names.
    pub(super) fn expire_learned(&mut self, referenced: &HashSet<u32>) {
        let gone = self.learner.table.expire(monotonic_ns());
        if !gone.is_empty() {
            let refs: Vec<&Range> = gone.iter().map(|(_, r)| r).collect();
            let keep: Vec<Range> = self
                .ranges
                .iter()
                .zip(&self.active)
                .filter(|(_, a)| **a)
                .map(|(r, _)| r.clone())
                .chain(self.learner.table.active().map(|(_, l)| l.range.clone()))
                .collect();
            match self.dp.learn_remove(&refs, keep.iter()) {
                Ok(()) => {
                    for (id, r) in &gone {
                        let name = self.learner.table.get(*id).map(|l| l.name.clone());
                        log::info!(
                            "forgot {} ({}): its TTL ended",
                            r.prefix.addr(),
                            name.unwrap_or_default()
                        );
                    }
                }
                Err(e) => log::warn!("could not remove expired learned addresses: {e}"),
            }
        }
        for (id, l) in self.learner.table.release(|id| referenced.contains(&id)) {
            let total = self.learned_total(id);
            self.learner.baselines.remove(&id);
            if self.learner.retired.len() < RETIRED_MAX {
                let e = self
                    .learner
                    .retired
                    .entry((l.range.prefix, l.name.clone()))
                    .or_insert_with(|| (l.range.clone(), RangeStats::default()));
                add(&mut e.1, &total);
            }
        }
    }

    /// Traffic of learned slot `id` since it was taken.
    fn learned_total(&self, id: u32) -> RangeStats {
        let now = self.dp.range_total(id).unwrap_or_default();
        let b = self.learner.baselines.get(&id).copied().unwrap_or_default();
        RangeStats {
            packets_out: now.packets_out.saturating_sub(b.packets_out),
            bytes_out: now.bytes_out.saturating_sub(b.bytes_out),
            packets_in: now.packets_in.saturating_sub(b.packets_in),
            bytes_in: now.bytes_in.saturating_sub(b.bytes_in),
        }
    }

    /// Every learned range (in the tries, expiring, retired) with its
    /// traffic and name.
    pub(super) fn learned_traffic(&self) -> Vec<(Range, RangeStats, String)> {
        let mut out: Vec<(Range, RangeStats, String)> = self
            .learner
            .table
            .all()
            .map(|(id, l)| (l.range.clone(), self.learned_total(id), l.name.clone()))
            .collect();
        out.extend(
            self.learner
                .retired
                .iter()
                .map(|((_, name), (r, t))| (r.clone(), *t, name.clone())),
        );
        out
    }

    /// The range of range id `id`: listed, or learned.
    pub(super) fn range_of(&self, id: u32) -> Option<&Range> {
        match self.ranges.get(id as usize) {
            Some(r) => Some(r),
            None => self.learner.table.get(id).map(|l| &l.range),
        }
    }

    /// Takes every learned address out of the tries (at exit with `--pin`:
    /// the next agent does not know them).
    pub(super) fn forget_learned(&mut self) {
        let gone: Vec<Range> = self
            .learner
            .active()
            .into_iter()
            .map(|(_, r)| r.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        let refs: Vec<&Range> = gone.iter().collect();
        let keep: Vec<&Range> = self
            .ranges
            .iter()
            .zip(&self.active)
            .filter(|(_, a)| **a)
            .map(|(r, _)| r)
            .collect();
        match self.dp.learn_remove(&refs, keep.into_iter()) {
            Ok(()) => log::info!(
                "took {} learned addresses out of the pinned tries",
                gone.len()
            ),
            Err(e) => log::warn!("could not remove the learned addresses: {e}"),
        }
    }
}

fn add(a: &mut RangeStats, b: &RangeStats) {
    a.packets_out += b.packets_out;
    a.bytes_out += b.bytes_out;
    a.packets_in += b.packets_in;
    a.bytes_in += b.bytes_in;
}
