//! The inside host behind NAT, asked of the kernel's connection tracking
//! for every new flow ([`crate::flow::tracker::Resolve`]).
//!
//! Why ctnetlink from the agent rather than conntrack lookups in the
//! datapath (`bpf_skb_ct_lookup`, kernel >= 5.19): the kfunc hands back an
//! `nf_conn` whose tuples can only be read with the kernel's structure
//! layout (CO-RE relocations), which aya-ebpf 0.2 cannot express; and a
//! lookup per new flow in the agent costs no time on the packet path. The
//! answer comes once per flow, from the same table the NAT itself uses.
//!
//! An entry conntrack has destroyed before the agent asks (a connection
//! refused at once: the RST destroys it) is found among the destroyed
//! entries ctnetlink announced ([`CtEvents`]), kept for [`GONE_TTL`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use cas_audit_common::FlowKey;

use crate::{
    flow::{
        addr_of, has_ports,
        nat::{queries, resolve, Nat},
        tracker::Resolve,
    },
    host::conntrack::{tracking, Conntrack, CtEntry, CtEvents, CtTuple},
};

/// How long a yes to "does this namespace track connections?" is kept.
const TRACKING_TTL: Duration = Duration::from_millis(500);
/// How long a destroyed entry is kept for the flows that ask after it: a
/// flow is asked for when its flag event arrives and again at the next
/// poll of the flow table (a second later).
pub const GONE_TTL: Duration = Duration::from_secs(10);
/// Destroyed entries kept at most (the oldest go first): about 2.5 MiB.
pub const GONE_MAX: usize = 16_384;

/// Entries conntrack destroyed lately, by both their tuples.
#[derive(Default)]
struct Gone {
    by_tuple: HashMap<CtTuple, CtEntry>,
    order: VecDeque<(Instant, CtEntry)>,
}

impl Gone {
    fn insert(&mut self, e: CtEntry, now: Instant) {
        self.expire(now);
        while self.order.len() >= GONE_MAX {
            self.pop();
        }
        self.by_tuple.insert(e.orig, e);
        self.by_tuple.insert(e.reply, e);
        self.order.push_back((now, e));
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > GONE_TTL)
        {
            self.pop();
        }
    }

    /// Drops the oldest entry (and its tuples, unless a later entry with
    /// the same tuple took them).
    fn pop(&mut self) {
        let Some((_, e)) = self.order.pop_front() else {
            return;
        };
        for t in [e.orig, e.reply] {
            if self.by_tuple.get(&t) == Some(&e) {
                self.by_tuple.remove(&t);
            }
        }
    }

    fn get(&self, t: &CtTuple) -> Option<&CtEntry> {
        self.by_tuple.get(t)
    }
}

/// Conntrack lookups for the tracker.
pub struct CtResolver {
    ct: Option<Conntrack>,
    events: Option<CtEvents>,
    gone: Gone,
    lost_said: bool,
    /// When the namespace was last seen tracking connections.
    tracking: Option<Instant>,
    failed: bool,
}

impl CtResolver {
    /// Opens a ctnetlink socket; without one (no privilege, no netfilter
    /// netlink) every flow's NAT is `unknown`, which it says once.
    pub fn open() -> CtResolver {
        let ct = match Conntrack::open() {
            Ok(c) => Some(c),
            Err(e) => {
                log::warn!("cannot ask connection tracking ({e}): nat is \"unknown\" and local_* the address the datapath saw, for every flow");
                None
            }
        };
        let events = match ct.as_ref().map(|_| CtEvents::open()) {
            Some(Ok(ev)) => Some(ev),
            Some(Err(e)) => {
                log::warn!("cannot follow destroyed conntrack entries ({e}): a connection refused at once behind NAT is named as the datapath saw it (nat \"unknown\")");
                None
            }
            None => None,
        };
        CtResolver {
            ct,
            events,
            gone: Gone::default(),
            lost_said: false,
            tracking: None,
            failed: false,
        }
    }

    /// Reads the destroyed entries announced since the last call (each
    /// poll of the flow table, and before a lookup in them), so that the
    /// socket's buffer does not overflow between lookups.
    pub fn drain(&mut self) {
        let Some(ev) = self.events.as_mut() else {
            return;
        };
        let now = Instant::now();
        let gone = &mut self.gone;
        ev.drain(|e| gone.insert(e, now));
        gone.expire(now);
        if ev.lost() > 0 && !self.lost_said {
            log::warn!("conntrack announced entries faster than the agent read them: some connections that ended at once behind NAT may show nat \"unknown\"");
            self.lost_said = true;
        }
    }

    /// Whether the namespace tracks connections. A yes is kept for
    /// [`TRACKING_TTL`]; a no is asked again each time, since the flow
    /// being asked for may have made the namespace's first entry just now
    /// (a flag event can arrive before conntrack saw the packet: TC ingress
    /// runs before it).
    fn tracking(&mut self) -> bool {
        if self.tracking.is_some_and(|at| at.elapsed() < TRACKING_TTL) {
            return true;
        }
        let v = tracking();
        self.tracking = v.then(Instant::now);
        v
    }
}

impl Resolve for CtResolver {
    fn nat(&mut self, key: &FlowKey) -> Nat {
        if !has_ports(key.proto) || self.ct.is_none() {
            return Nat::default();
        }
        let local = (addr_of(key.family, &key.local_addr), key.local_port);
        let remote = (addr_of(key.family, &key.remote_addr), key.remote_port);
        let asked = queries(key.proto, local, remote);
        if self.tracking() {
            let Some(ct) = self.ct.as_mut() else {
                return Nat::default();
            };
            for q in &asked {
                match ct.get(q) {
                    Ok(Some(e)) => {
                        if let Some(n) = resolve(local, remote, &e) {
                            return n;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if !self.failed {
                            log::warn!("asking connection tracking failed ({e}): nat is \"unknown\" for the flows it could not answer");
                            self.failed = true;
                        }
                        return Nat::default();
                    }
                }
            }
        }
        // Not in the table (any more): destroyed since it was announced.
        self.drain();
        asked
            .iter()
            .filter_map(|q| self.gone.get(q))
            .find_map(|e| resolve(local, remote, e))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sport: u16) -> CtEntry {
        let orig = CtTuple {
            proto: 6,
            src: "198.51.100.2".parse().unwrap(),
            dst: "13.64.196.27".parse().unwrap(),
            sport,
            dport: 8443,
        };
        let mut reply = orig.reversed();
        reply.dst = "203.0.113.1".parse().unwrap();
        CtEntry { orig, reply }
    }

    #[test]
    fn destroyed_entries_are_found_by_either_tuple_until_they_expire() {
        let mut g = Gone::default();
        let t0 = Instant::now();
        let (a, b) = (entry(40000), entry(40001));
        g.insert(a, t0);
        g.insert(b, t0 + Duration::from_secs(5));
        assert_eq!(g.get(&a.orig), Some(&a));
        assert_eq!(g.get(&a.reply), Some(&a));
        g.expire(t0 + GONE_TTL + Duration::from_secs(1));
        assert_eq!(g.get(&a.orig), None);
        assert_eq!(g.get(&b.reply), Some(&b));
        assert_eq!(g.order.len(), 1);
    }

    #[test]
    fn a_later_entry_of_the_same_tuple_outlives_the_earlier() {
        let mut g = Gone::default();
        let t0 = Instant::now();
        let a = entry(40000);
        let mut a2 = a;
        a2.reply.dport = 999;
        g.insert(a, t0);
        g.insert(a2, t0 + Duration::from_secs(1));
        g.pop();
        assert_eq!(g.get(&a.orig), Some(&a2));
        assert_eq!(g.get(&a.reply), None);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut g = Gone::default();
        let t0 = Instant::now();
        for i in 0..(GONE_MAX + 10) {
            g.insert(entry(i as u16), t0);
        }
        assert_eq!(g.order.len(), GONE_MAX);
        assert_eq!(g.by_tuple.len(), 2 * GONE_MAX);
        assert_eq!(g.get(&entry(0).orig), None);
        assert!(g.get(&entry((GONE_MAX + 9) as u16).orig).is_some());
    }
}
