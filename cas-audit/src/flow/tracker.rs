//! Decides when each connection is reported: when first flagged, when
//! first seen blocked, when it ends or expires, and at exit. Pure logic
//! over what the kernel hands over: snapshots of the flow table, flag
//! events and ended flows from the ring.
//!
//! A connection is usually one kernel entry. It is several when audited
//! hooks on both sides of a NAT see it with different addresses: entries
//! whose conntrack entry names the same inside host ([`Resolve`]) are one
//! connection, reported once ([`super::conn::merge`]). A 5-tuple reused by
//! a new connection is a new one: the kernel hands the ended entry over
//! ([`Tracker::on_ended`]), and it is reported before anything of its
//! successor.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::Duration,
};

use cas_audit_common::{rules, Direction, FlowEvent, FlowKey, FlowStats};
use serde::{Deserialize, Serialize};

use super::{
    addr_of, conn,
    nat::{Nat, NatKind},
    Ending, Flow, PortPolicy, Verdict,
};

/// Why a flow record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The flow was first flagged (its service port is not allowed).
    Flagged,
    /// The flow was first seen blocked: unanswered, refused or unreachable.
    Blocked,
    /// The TCP connection closed (FIN both ways) or was reset.
    Ended,
    /// No packet for the idle timeout.
    Expired,
    /// Still open when the agent stopped.
    Exit,
}

impl Reason {
    /// Whether this is a flow's last record (ended, expired, exit).
    pub fn is_final(self) -> bool {
        matches!(self, Reason::Ended | Reason::Expired | Reason::Exit)
    }
}

/// How long the table leaves a new disallowed flow to its ring-buffer
/// event: the event's flagged record shows the flow as of its first
/// packet (`S` for a bare SYN), the table's as of the poll (`Sr` once the
/// RST came back). Past it (an event lost to a full ring), the poll flags
/// the flow itself.
pub const EVENT_GRACE: Duration = Duration::from_secs(1);

/// What connection tracking says of a kernel flow (the agent asks conntrack;
/// tests make it up).
pub trait Resolve {
    /// The NAT view of the flow `key`; [`NatKind::Unknown`] when there is none.
    fn nat(&mut self, key: &FlowKey) -> Nat;
}

/// No connection tracking: every flow is its own connection.
pub struct NoConntrack;

impl Resolve for NoConntrack {
    fn nat(&mut self, _: &FlowKey) -> Nat {
        Nat::default()
    }
}

/// Time an ended flow handed over on the ring waits for its partners (the
/// entries of the other side of a NAT, handed over by the same packet).
const HOLD_NS: u64 = 100_000_000;

/// Who a connection is: protocol, the inside host, the CAS side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Ident {
    proto: u8,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
}

/// Where a kernel entry of a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    /// In the table (`seen`: in the latest snapshot).
    Live { seen: bool },
    /// Handed over on the ring (ended, its 5-tuple reused) at `arrived_ns`.
    Frozen { arrived_ns: u64 },
    /// Gone from the table without a word (evicted): its last figures stay.
    Gone,
}

#[derive(Debug)]
struct Member {
    key: FlowKey,
    stats: FlowStats,
    life: Life,
    nat: Nat,
    /// Conntrack lookups made for it.
    asked: u8,
}

#[derive(Debug)]
struct Conn {
    ident: Ident,
    members: Vec<Member>,
    flagged: bool,
    blocked: bool,
}

/// Records due and kernel entries to remove.
#[derive(Debug, Default)]
pub struct Due {
    /// Records to write, in order.
    pub records: Vec<(Flow, Reason)>,
    /// Kernel flow entries of the connections reported for good.
    pub remove: Vec<FlowKey>,
}

/// Reporting state across polls of the flow table.
#[derive(Debug)]
pub struct Tracker {
    conns: BTreeMap<u64, Conn>,
    next_id: u64,
    by_member: HashMap<(FlowKey, u64), u64>,
    by_ident: HashMap<Ident, Vec<u64>>,
    /// Flag events of a new connection on a 5-tuple whose previous
    /// connection is not reported yet.
    deferred: Vec<FlowEvent>,
    /// Kernel entries (key, first seen) of the connections reported for
    /// good since the last poll began: a late flag event of one of them is
    /// not a new connection.
    done: std::collections::HashSet<(FlowKey, u64)>,
    /// `now` of the latest poll, and of the one before it (0: none yet).
    /// An entry first seen before `settled_ns` was in the table when the
    /// latest snapshot was read (unless removed): one the tracker does not
    /// know was reported for good or forgotten already.
    latest_ns: u64,
    settled_ns: u64,
    idle_ns: u64,
    linger_ns: u64,
    answer: Duration,
    /// Connections reported for good (ended, expired, exit).
    pub reported: u64,
    /// Of those, disallowed ones.
    pub disallowed: u64,
    /// Kernel flow entries of the connections reported for good.
    pub entries_reported: u64,
    /// Ring records of entries already reported for good or forgotten,
    /// dropped (`events_stale`).
    pub stale: u64,
}

impl Tracker {
    /// A flow is expired after `idle_ns` without packets; an ended TCP flow
    /// is reported once `linger_ns` passed after its last packet (so the
    /// final ACK lands in the same record).
    /// A flow not answered `answer` after its first packet is unanswered.
    pub fn new(idle_ns: u64, linger_ns: u64, answer: Duration) -> Self {
        Tracker {
            conns: BTreeMap::new(),
            next_id: 0,
            by_member: HashMap::new(),
            by_ident: HashMap::new(),
            deferred: Vec::new(),
            done: Default::default(),
            latest_ns: 0,
            settled_ns: 0,
            idle_ns,
            linger_ns,
            answer,
            reported: 0,
            disallowed: 0,
            entries_reported: 0,
            stale: 0,
        }
    }

    /// Whether a ring record of kernel entry `key` first seen at
    /// `first_ns` comes after the entry's end: the entry is not known, and
    /// it was reported for good in the latest poll, or first seen before
    /// the poll before it (a snapshot since would have shown it). Such a
    /// record was queued while the agent was paused or behind; it is
    /// counted, and nothing is written for it.
    fn is_stale(&mut self, key: &FlowKey, first_ns: u64) -> bool {
        let stale = !self.by_member.contains_key(&(*key, first_ns))
            && (self.done.contains(&(*key, first_ns)) || first_ns < self.settled_ns);
        self.stale += u64::from(stale);
        stale
    }

    /// The answer timeout.
    pub fn answer_timeout(&self) -> Duration {
        self.answer
    }

    /// The connection kernel entry `key` (first seen at `stats.first_seen_ns`)
    /// belongs to, created or joined as needed; its stats and life updated.
    fn assign(&mut self, key: FlowKey, stats: FlowStats, life: Life, res: &mut dyn Resolve) -> u64 {
        let Some(&id) = self.by_member.get(&(key, stats.first_seen_ns)) else {
            let nat = res.nat(&key);
            return self.assign_new(key, stats, life, nat);
        };
        let c = self.conns.get_mut(&id).expect("indexed connection");
        let m = c
            .members
            .iter_mut()
            .find(|m| m.key == key && m.stats.first_seen_ns == stats.first_seen_ns)
            .expect("indexed member");
        m.stats = stats;
        // A snapshot taken before the entry was handed over does not make
        // it live again.
        if !matches!(m.life, Life::Frozen { .. }) {
            m.life = life;
        }
        if m.nat.kind == NatKind::Unknown && m.asked < 2 && matches!(life, Life::Live { .. }) {
            // Asked too early (before conntrack confirmed the entry)?
            m.asked += 1;
            m.nat = res.nat(&key);
            let ident = ident_of(&key, &m.nat);
            if c.members.len() == 1 && ident != c.ident {
                // Known under its inside host from now on.
                let old = std::mem::replace(&mut c.ident, ident);
                if let Some(ids) = self.by_ident.get_mut(&old) {
                    ids.retain(|i| *i != id);
                    if ids.is_empty() {
                        self.by_ident.remove(&old);
                    }
                }
                self.by_ident.entry(ident).or_default().push(id);
            }
        }
        id
    }

    /// Places a kernel entry not seen before, whose NAT view is `nat`.
    fn assign_new(&mut self, key: FlowKey, stats: FlowStats, life: Life, nat: Nat) -> u64 {
        let ident = ident_of(&key, &nat);
        let member = Member {
            key,
            stats,
            life,
            nat,
            asked: 1,
        };
        let ids = self.by_ident.entry(ident).or_default();
        // The latest connection of this identity takes the entry unless it
        // has one with this key already (then this is a new connection on a
        // reused 5-tuple).
        let join = ids
            .last()
            .copied()
            .filter(|id| !self.conns[id].members.iter().any(|m| m.key == key));
        let id = match join {
            Some(id) => {
                self.conns
                    .get_mut(&id)
                    .expect("connection")
                    .members
                    .push(member);
                id
            }
            None => {
                let id = self.next_id;
                self.next_id += 1;
                ids.push(id);
                self.conns.insert(
                    id,
                    Conn {
                        ident,
                        members: vec![member],
                        flagged: false,
                        blocked: false,
                    },
                );
                id
            }
        };
        self.by_member.insert((key, stats.first_seen_ns), id);
        id
    }

    /// Whether a connection of `ident` waits to be reported after its
    /// 5-tuple was reused.
    fn predecessor_pending(&self, ident: &Ident) -> bool {
        self.by_ident.get(ident).is_some_and(|ids| {
            ids.iter().any(|i| {
                self.conns[i]
                    .members
                    .iter()
                    .any(|m| matches!(m.life, Life::Frozen { .. }))
            })
        })
    }

    /// A new disallowed flow from the ring: the flagged record (as of its
    /// first packet, [`rules::open_flow`]), once per connection. Deferred
    /// while the previous connection on its 5-tuple is not reported yet.
    pub fn on_flagged(
        &mut self,
        ev: &FlowEvent,
        ports: &PortPolicy,
        res: &mut dyn Resolve,
    ) -> Vec<(Flow, Reason)> {
        let mut out = Vec::new();
        self.flag_event(ev, ports, res, &mut out);
        out
    }

    fn flag_event(
        &mut self,
        ev: &FlowEvent,
        ports: &PortPolicy,
        res: &mut dyn Resolve,
        out: &mut Vec<(Flow, Reason)>,
    ) {
        if self.is_stale(&ev.key, ev.ts_ns) {
            return;
        }
        // The flow as of its first packet, built with the kernel's own rule.
        let mut first = rules::open_flow(&rules::FirstPacket {
            dir: Direction::from_u8(ev.dir),
            ifindex: ev.ifindex,
            proto: ev.key.proto,
            packets: ev.packets.into(),
            bytes: ev.bytes.into(),
            tcp_flags: ev.tcp_flags.into(),
            kinds: ev.kinds.into(),
            ttl: ev.ttl,
            now: ev.ts_ns,
            range_id: ev.range_id,
        });
        first.flagged = 1;
        let id = match self.by_member.get(&(ev.key, ev.ts_ns)) {
            Some(&id) => id,
            None => {
                let nat = res.nat(&ev.key);
                if self.predecessor_pending(&ident_of(&ev.key, &nat)) {
                    self.deferred.push(*ev);
                    return;
                }
                self.assign_new(ev.key, first, Life::Live { seen: true }, nat)
            }
        };
        let c = self.conns.get_mut(&id).expect("connection");
        // The flagged record shows the first packet, whatever a poll has
        // put in the table since (a refusing RST: `Sr`): the connection's
        // identity and NAT view, the event's figures.
        let current = present(c, ports);
        let flow = Flow::with_nat(
            current.key,
            first,
            ports.for_range(first.range_id),
            current.nat,
        );
        if flow.verdict == Verdict::DisallowedPort && !c.flagged {
            c.flagged = true;
            out.push((flow, Reason::Flagged));
        }
    }

    /// An ended flow the kernel handed over when a new connection reused
    /// its 5-tuple, at `now_ns`. Reported at the next poll (after its
    /// partners on the other side of a NAT arrived too), before anything
    /// of the new connection; dropped as stale when the flow was reported
    /// for good already (the agent and the kernel ended it at once).
    pub fn on_ended(&mut self, key: FlowKey, stats: FlowStats, now_ns: u64, res: &mut dyn Resolve) {
        if self.is_stale(&key, stats.first_seen_ns) {
            return;
        }
        self.assign(key, stats, Life::Frozen { arrived_ns: now_ns }, res);
    }

    /// Looks at a snapshot taken at `now_ns` and returns the records due, in
    /// order, and the kernel entries the caller must remove.
    pub fn poll(
        &mut self,
        snapshot: Vec<(FlowKey, FlowStats)>,
        now_ns: u64,
        ports: &PortPolicy,
        res: &mut dyn Resolve,
    ) -> Due {
        self.sweep(snapshot, now_ns, ports, res, false)
    }

    /// [`Tracker::poll`]; at `exit`, every connection is due (`exit` for
    /// those still in the table, at once for ended ones).
    fn sweep(
        &mut self,
        mut snapshot: Vec<(FlowKey, FlowStats)>,
        now_ns: u64,
        ports: &PortPolicy,
        res: &mut dyn Resolve,
        exit: bool,
    ) -> Due {
        self.done.clear();
        self.settled_ns = std::mem::replace(&mut self.latest_ns, now_ns);
        for c in self.conns.values_mut() {
            for m in &mut c.members {
                if let Life::Live { seen } = &mut m.life {
                    *seen = false;
                }
            }
        }
        // Oldest first, so that the entries of one connection meet before
        // a reused 5-tuple's next connection.
        snapshot.sort_by_key(|(_, s)| s.first_seen_ns);
        for (k, s) in snapshot {
            self.assign(k, s, Life::Live { seen: true }, res);
        }
        let mut due = Due::default();
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            let c = self.conns.get_mut(&id).expect("connection");
            for m in &mut c.members {
                if m.life == (Life::Live { seen: false }) {
                    m.life = Life::Gone;
                }
            }
            let live = c
                .members
                .iter()
                .any(|m| matches!(m.life, Life::Live { .. }));
            let frozen: Vec<u64> = c
                .members
                .iter()
                .filter_map(|m| match m.life {
                    Life::Frozen { arrived_ns } => Some(arrived_ns),
                    _ => None,
                })
                .collect();
            if !live && frozen.is_empty() {
                // Evicted from the table before it was reported.
                self.forget(id);
                continue;
            }
            if !exit && !live && frozen.iter().any(|t| now_ns.saturating_sub(*t) < HOLD_NS) {
                continue;
            }
            let flow = present(c, ports);
            let young =
                now_ns.saturating_sub(flow.stats.first_seen_ns) < EVENT_GRACE.as_nanos() as u64;
            if !exit && live && young && flow.verdict == Verdict::DisallowedPort && !c.flagged {
                // Its event is on its way: nothing about it before that.
                continue;
            }
            if flow.verdict == Verdict::DisallowedPort && !c.flagged {
                c.flagged = true;
                due.records.push((flow.clone(), Reason::Flagged));
            }
            if !exit && flow.state(now_ns, self.answer).is_blocked() && !c.blocked {
                c.blocked = true;
                due.records.push((flow.clone(), Reason::Blocked));
            }
            let idle = now_ns.saturating_sub(flow.stats.last_seen_ns);
            let reason = if !live {
                Some(Reason::Ended)
            } else if exit {
                Some(Reason::Exit)
            } else if flow.ending() != Ending::Open && idle >= self.linger_ns {
                Some(Reason::Ended)
            } else if idle >= self.idle_ns {
                Some(Reason::Expired)
            } else {
                None
            };
            if let Some(r) = reason {
                due.remove.extend(
                    c.members
                        .iter()
                        .filter(|m| matches!(m.life, Life::Live { .. }))
                        .map(|m| m.key),
                );
                self.finish(id, &flow);
                due.records.push((flow, r));
            }
        }
        self.run_deferred(ports, res, &mut due.records);
        due
    }

    /// Flag events whose predecessor has been reported since.
    fn run_deferred(
        &mut self,
        ports: &PortPolicy,
        res: &mut dyn Resolve,
        out: &mut Vec<(Flow, Reason)>,
    ) {
        for ev in std::mem::take(&mut self.deferred) {
            self.flag_event(&ev, ports, res, out);
        }
    }

    fn forget(&mut self, id: u64) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        for m in &c.members {
            self.by_member.remove(&(m.key, m.stats.first_seen_ns));
        }
        if let Some(ids) = self.by_ident.get_mut(&c.ident) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_ident.remove(&c.ident);
            }
        }
    }

    fn finish(&mut self, id: u64, flow: &Flow) {
        if let Some(c) = self.conns.get(&id) {
            self.entries_reported += c.members.len() as u64;
            self.done
                .extend(c.members.iter().map(|m| (m.key, m.stats.first_seen_ns)));
        }
        self.forget(id);
        self.reported += 1;
        if flow.verdict == Verdict::DisallowedPort {
            self.disallowed += 1;
        }
    }

    /// Reports every connection still known (at exit), flagging first any
    /// disallowed one not reported as flagged yet.
    pub fn finish_all(
        &mut self,
        snapshot: Vec<(FlowKey, FlowStats)>,
        now_ns: u64,
        ports: &PortPolicy,
        res: &mut dyn Resolve,
    ) -> Vec<(Flow, Reason)> {
        self.sweep(snapshot, now_ns, ports, res, true).records
    }
}

/// The identity of kernel entry `key` whose NAT view is `nat`.
fn ident_of(key: &FlowKey, nat: &Nat) -> Ident {
    Ident {
        proto: key.proto,
        local: nat
            .inside
            .unwrap_or((addr_of(key.family, &key.local_addr), key.local_port)),
        remote: (addr_of(key.family, &key.remote_addr), key.remote_port),
    }
}

/// A connection as one flow: its entries merged, the inside host as the
/// local side, judged.
fn present(c: &Conn, ports: &PortPolicy) -> Flow {
    let stats = conn::merge(c.members.iter().map(|m| &m.stats)).expect("a connection has an entry");
    let first = c
        .members
        .iter()
        .min_by_key(|m| m.stats.first_seen_ns)
        .expect("a connection has an entry");
    let nat = c
        .members
        .iter()
        .map(|m| m.nat)
        .find(|n| n.kind != NatKind::Unknown)
        .unwrap_or_default();
    Flow::with_nat(first.key, stats, ports.for_range(stats.range_id), nat)
}

#[cfg(test)]
mod tests;
