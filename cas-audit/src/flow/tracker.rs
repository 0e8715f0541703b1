//! Decides when each flow is reported: when first flagged, when it ends or
//! expires, and at exit. Pure logic over snapshots of the kernel table.

use std::{collections::HashSet, time::Duration};

use cas_audit_common::{FlowKey, FlowStats};

use serde::{Deserialize, Serialize};

use super::{Ending, Flow, PortPolicy, Verdict};

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

/// Reporting state across polls of the flow table.
#[derive(Debug)]
pub struct Tracker {
    flagged: HashSet<FlowKey>,
    blocked: HashSet<FlowKey>,
    idle_ns: u64,
    linger_ns: u64,
    answer: Duration,
    /// Flows reported for good (ended, expired, exit).
    pub reported: u64,
    /// Of those, disallowed ones.
    pub disallowed: u64,
}

impl Tracker {
    /// A flow is expired after `idle_ns` without packets; an ended TCP flow
    /// is reported once `linger_ns` passed after its last packet (so the
    /// final ACK lands in the same record).
    /// A flow not answered `answer` after its first packet is unanswered.
    pub fn new(idle_ns: u64, linger_ns: u64, answer: Duration) -> Self {
        Tracker {
            flagged: HashSet::new(),
            blocked: HashSet::new(),
            idle_ns,
            linger_ns,
            answer,
            reported: 0,
            disallowed: 0,
        }
    }

    /// Marks a flow flagged; true when it was not flagged before.
    pub fn flag(&mut self, flow: &Flow) -> bool {
        flow.verdict == Verdict::DisallowedPort && self.flagged.insert(flow.key)
    }

    /// Marks a flow blocked; true when it was not blocked before.
    fn block(&mut self, flow: &Flow, now_ns: u64) -> bool {
        flow.state(now_ns, self.answer).is_blocked() && self.blocked.insert(flow.key)
    }

    /// The answer timeout.
    pub fn answer_timeout(&self) -> Duration {
        self.answer
    }

    fn finish(&mut self, flow: &Flow) {
        self.flagged.remove(&flow.key);
        self.blocked.remove(&flow.key);
        self.reported += 1;
        if flow.verdict == Verdict::DisallowedPort {
            self.disallowed += 1;
        }
    }

    /// Looks at a snapshot taken at `now_ns` and returns the records due, in
    /// order. Flows returned with [`Reason::Ended`] or [`Reason::Expired`]
    /// must be removed from the kernel table by the caller.
    pub fn poll(
        &mut self,
        snapshot: Vec<(FlowKey, FlowStats)>,
        now_ns: u64,
        ports: &PortPolicy,
    ) -> Vec<(Flow, Reason)> {
        let mut out = Vec::new();
        // Forget flagged flows the kernel evicted, so the set stays bounded.
        let live: HashSet<FlowKey> = snapshot.iter().map(|(k, _)| *k).collect();
        self.flagged.retain(|k| live.contains(k));
        self.blocked.retain(|k| live.contains(k));
        for (k, s) in snapshot {
            let flow = Flow::new(k, s, ports.for_range(s.range_id));
            let young = now_ns.saturating_sub(s.first_seen_ns) < EVENT_GRACE.as_nanos() as u64;
            if young && flow.verdict == Verdict::DisallowedPort && !self.flagged.contains(&k) {
                // Its event is on its way: nothing about it before that.
                continue;
            }
            if self.flag(&flow) {
                out.push((flow.clone(), Reason::Flagged));
            }
            if self.block(&flow, now_ns) {
                out.push((flow.clone(), Reason::Blocked));
            }
            let idle = now_ns.saturating_sub(s.last_seen_ns);
            let reason = if flow.ending() != Ending::Open && idle >= self.linger_ns {
                Some(Reason::Ended)
            } else if idle >= self.idle_ns {
                Some(Reason::Expired)
            } else {
                None
            };
            if let Some(r) = reason {
                self.finish(&flow);
                out.push((flow, r));
            }
        }
        out
    }

    /// Reports every flow still in the table (at exit), flagging first any
    /// disallowed flow not reported as flagged yet.
    pub fn finish_all(
        &mut self,
        snapshot: Vec<(FlowKey, FlowStats)>,
        ports: &PortPolicy,
    ) -> Vec<(Flow, Reason)> {
        let mut out = Vec::new();
        for (k, s) in snapshot {
            let flow = Flow::new(k, s, ports.for_range(s.range_id));
            if self.flag(&flow) {
                out.push((flow.clone(), Reason::Flagged));
            }
            self.finish(&flow);
            out.push((flow, Reason::Exit));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use cas_audit_common::{family, history, initiator, proto, tcp_flags};

    use super::*;
    use crate::flow::AllowedPorts;

    fn key(p: u8, remote_port: u16) -> FlowKey {
        FlowKey {
            local_addr: [198, 51, 100, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [13, 64, 196, 27, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ifindex: 3,
            local_port: 40000,
            remote_port,
            proto: p,
            family: family::V4,
            _pad: [0; 2],
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn flags_once_ends_after_linger_and_expires_when_idle() {
        let ports = PortPolicy::global(AllowedPorts::default());
        let mut t = Tracker::new(60 * S, 2 * S, Duration::from_secs(3));
        let udp = (
            key(proto::UDP, 8443),
            FlowStats {
                first_seen_ns: 9 * S,
                last_seen_ns: 10 * S,
                packets_out: 5,
                history_mask: history::DATA,
                ..Default::default()
            },
        );
        let k = history::KINDS;
        let closed = FlowStats {
            first_seen_ns: 9 * S,
            last_seen_ns: 10 * S,
            history_mask: history::SYN
                | history::ACK
                | history::FIN
                | (history::SYN_ACK | history::FIN) << k,
            initiator: initiator::LOCAL,
            tcp_flags_out: tcp_flags::SYN | tcp_flags::ACK | tcp_flags::FIN,
            tcp_flags_in: tcp_flags::SYN | tcp_flags::ACK | tcp_flags::FIN,
            ..Default::default()
        };
        let tcp = (key(proto::TCP, 443), closed);

        // 2 s after its first datagram the UDP flow is flagged, not yet unanswered.
        let r = t.poll(vec![udp, tcp], 11 * S, &ports);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].1, Reason::Flagged);
        assert_eq!(r[0].0.key.remote_port, 8443);

        // Linger passed: the closed TCP flow ends; the UDP flow is not
        // re-flagged, and is reported blocked once: its answer timeout passed.
        let r = t.poll(vec![udp, tcp], 12 * S, &ports);
        assert_eq!(
            r.iter()
                .map(|(f, r)| (f.key.remote_port, *r))
                .collect::<Vec<_>>(),
            vec![(8443, Reason::Blocked), (443, Reason::Ended)]
        );
        assert!(t.poll(vec![udp], 13 * S, &ports).is_empty());

        // Idle timeout: the UDP flow expires.
        let r = t.poll(vec![udp], 70 * S, &ports);
        assert_eq!(
            r.iter()
                .map(|(f, r)| (f.key.remote_port, *r))
                .collect::<Vec<_>>(),
            vec![(8443, Reason::Expired)]
        );
        assert_eq!((t.reported, t.disallowed), (2, 1));
    }

    #[test]
    fn a_new_disallowed_flow_waits_for_its_event() {
        let ports = PortPolicy::global(AllowedPorts::default());
        let mut t = Tracker::new(60 * S, 2 * S, Duration::from_secs(3));
        let k = history::KINDS;
        // A bare SYN refused at once: the table already holds the RST.
        let refused = FlowStats {
            first_seen_ns: 10 * S,
            last_seen_ns: 10 * S + 1000,
            packets_out: 1,
            packets_in: 1,
            history_mask: history::SYN | history::RST << k,
            initiator: initiator::LOCAL,
            rst_ttl: 63,
            ..Default::default()
        };
        let syn = (key(proto::TCP, 8443), refused);
        // Within the grace: neither flagged nor blocked from the table.
        assert!(t.poll(vec![syn], 10 * S + S / 2, &ports).is_empty());
        // The event came: flagged from it; the next poll reports it blocked.
        let first = Flow::new(
            syn.0,
            FlowStats {
                history_mask: history::SYN,
                ..refused
            },
            ports.for_range(0),
        );
        assert!(t.flag(&first));
        let r = t.poll(vec![syn], 10 * S + S / 2, &ports);
        assert_eq!(
            r.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
            [Reason::Blocked]
        );
        // Its event lost: past the grace, the table flags it.
        let mut t = Tracker::new(60 * S, 2 * S, Duration::from_secs(3));
        let r = t.poll(vec![syn], 11 * S, &ports);
        assert_eq!(
            r.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
            [Reason::Flagged, Reason::Blocked]
        );
    }

    #[test]
    fn evicted_flagged_flows_are_forgotten() {
        let ports = PortPolicy::global(AllowedPorts::default());
        let mut t = Tracker::new(60 * S, 2 * S, Duration::from_secs(3));
        let s = FlowStats {
            last_seen_ns: S,
            ..Default::default()
        };
        let r = t.poll(vec![(key(proto::UDP, 9999), s)], 2 * S, &ports);
        assert_eq!(r.len(), 1);
        assert_eq!(t.flagged.len(), 1);
        // The kernel evicted it: nothing to report, and the key is dropped.
        assert!(t.poll(vec![], 3 * S, &ports).is_empty());
        assert!(t.flagged.is_empty());
        // Re-created later, it is flagged again.
        let r = t.poll(vec![(key(proto::UDP, 9999), s)], 4 * S, &ports);
        assert_eq!(r[0].1, Reason::Flagged);
    }

    #[test]
    fn exit_reports_everything_and_flags_late_ones() {
        let ports = PortPolicy::global(AllowedPorts::default());
        let mut t = Tracker::new(60 * S, 2 * S, Duration::from_secs(3));
        let s = FlowStats {
            last_seen_ns: S,
            ..Default::default()
        };
        let r = t.finish_all(
            vec![(key(proto::UDP, 9999), s), (key(proto::TCP, 443), s)],
            &ports,
        );
        let got: Vec<_> = r.iter().map(|(f, r)| (f.key.remote_port, *r)).collect();
        assert_eq!(
            got,
            vec![
                (9999, Reason::Flagged),
                (9999, Reason::Exit),
                (443, Reason::Exit)
            ]
        );
        assert_eq!((t.reported, t.disallowed), (2, 1));
    }
}
