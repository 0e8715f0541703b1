//! What one poll of the flow table and one batch of ring events do: judge
//! the flows, decide which are due ([`Tracker`]), write their records,
//! refresh the metrics; and the summary at exit.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use super::{
    evictions::Evictions, ifaces::Interfaces, learn::Learner, nat::CtResolver, reload::SetSource,
};
use crate::{
    addrset::Range,
    datapath::{events::RingRecord, Datapath, IngressMode},
    error::Error,
    flow::{Flow, PortPolicy, Reason, State, Tracker},
    host::clock::{monotonic_ns, Clock},
    output::{
        metrics::{ListenerCounters, Metrics},
        record::{FlowRecord, PortPolicyKind, Summary, Timestamp, WatchCounts},
        sink::Output,
    },
};

/// Time an ended TCP flow waits for its last ACK before it is reported.
pub const LINGER: Duration = Duration::from_secs(2);

/// The running audit's state.
pub struct Session {
    pub(super) dp: Datapath,
    /// Every range id in use, the new set's and those a reload dropped.
    pub(super) ranges: Vec<Range>,
    /// Whether the current set lists range `id`.
    pub(super) active: Vec<bool>,
    pub(super) source: SetSource,
    pub(super) ifnames: HashMap<u32, String>,
    pub(super) ingress: IngressMode,
    /// The audited interfaces, followed by index.
    pub(super) ifaces: Interfaces,
    pub(super) policy: PortPolicy,
    pub(super) clock: Clock,
    /// This machine's name, the `host` of every record.
    pub(super) host: String,
    pub(super) tracker: Tracker,
    pub(super) out: Output,
    /// Final states of the flows reported for good.
    pub(super) states: BTreeMap<State, u64>,
    pub(super) metrics: Option<Arc<Metrics>>,
    pub(super) flow_capacity: u32,
    /// Conntrack, for the inside host behind NAT.
    pub(super) nat: CtResolver,
    /// Names learned from DNS answers and ClientHellos.
    pub(super) learner: Learner,
    /// Flows the kernel table evicted before they were reported.
    pub(super) evictions: Evictions,
}

impl Session {
    fn write(&mut self, flow: &Flow, reason: Reason) {
        let range = self.range_of(flow.stats.range_id);
        let ifaces: Vec<String> = flow
            .ifindexes()
            .map(|i| {
                self.ifnames
                    .get(&i)
                    .cloned()
                    .unwrap_or_else(|| format!("if{i}"))
            })
            .collect();
        let state = flow.state(monotonic_ns(), self.tracker.answer_timeout());
        let mut rec = FlowRecord::new(
            flow,
            range,
            (&self.host, &ifaces),
            &self.clock,
            reason,
            state,
        );
        (rec.dns_name, rec.tls_server_name) = self.learner.names_of(flow);
        if reason.is_final() {
            *self.states.entry(state).or_default() += 1;
            if let Some(m) = &self.metrics {
                m.reported(flow.verdict, state);
            }
        }
        self.out.flow(&rec);
    }

    fn write_all(&mut self, records: &[(Flow, Reason)]) {
        for (flow, reason) in records {
            self.write(flow, *reason);
        }
    }

    /// One poll: interfaces, the set file, the flow table, the metrics.
    pub fn poll(&mut self) -> Result<(), Error> {
        self.retry_interfaces();
        self.check_set_file();
        let early = self.dp.counters()?;
        let snapshot = self.dp.flows()?;
        let counters = self.dp.counters()?;
        let evicted = self.evictions.update(&early, snapshot.len(), &counters);
        self.evictions
            .log(Duration::from_nanos(monotonic_ns()), self.flow_capacity);
        let referenced: std::collections::HashSet<u32> =
            snapshot.iter().map(|(_, s)| s.range_id).collect();
        self.expire_learned(&referenced);
        if let Some(m) = self.metrics.clone() {
            let now = monotonic_ns();
            let answer = self.tracker.answer_timeout();
            let live: Vec<_> = snapshot
                .iter()
                .map(|(k, s)| {
                    let f = Flow::new(*k, *s, self.policy.for_range(s.range_id));
                    (f.verdict, f.state(now, answer))
                })
                .collect();
            let (ranges, totals) = self.traffic()?;
            m.update(&counters, &ranges, &totals, &live, self.flow_capacity);
            m.flows_evicted(evicted);
            m.learned(&self.learner.summary(), self.learner.table.len());
            m.log_records_lost(self.out.log_records_lost());
            m.sinks(&self.out.sink_counts());
            m.interfaces(
                self.ifaces.gaps(),
                self.ifaces.uncovered_ms(std::time::Instant::now()),
                self.ifaces.attached_now(),
            );
            m.events_stale(self.tracker.stale);
        }
        self.out.watch();
        self.nat.drain();
        let due = self
            .tracker
            .poll(snapshot, monotonic_ns(), &self.policy, &mut self.nat);
        self.write_all(&due.records);
        let removed = self.dp.remove_flows(&due.remove)?;
        self.evictions.removed(removed);
        self.check_outputs()
    }

    /// A batch of ring records, in the kernel's order. A flag event's
    /// record shows the flow as of its first packet, from the event alone
    /// (no map lookup); an ended flow handed over is reported at the next
    /// poll, before anything of the connection that reused its 5-tuple.
    /// Records of flows already reported for good (queued while the agent
    /// was paused or behind) are dropped and counted (`events_stale`).
    pub fn on_events(&mut self, records: &[RingRecord]) -> Result<(), Error> {
        for r in records {
            match r {
                RingRecord::Flagged(ev) => {
                    let due = self.tracker.on_flagged(ev, &self.policy, &mut self.nat);
                    self.write_all(&due);
                }
                RingRecord::Ended(e) => {
                    self.tracker
                        .on_ended(e.key, e.stats, monotonic_ns(), &mut self.nat)
                }
                RingRecord::Payload(p) => self.on_payload(p),
            }
        }
        self.check_outputs()
    }

    /// Interface gaps and what the metrics endpoint refused, so far.
    fn watch_counts(&self) -> WatchCounts {
        let listener = self.metrics.as_ref().map(|m| &m.listener);
        let count = |f: fn(&ListenerCounters) -> u64| listener.map_or(0, f);
        WatchCounts {
            interface_gaps: self.ifaces.gaps(),
            interface_uncovered_ms: self.ifaces.uncovered_ms(std::time::Instant::now()),
            metrics_connections_refused: count(|l| l.refused.get()),
            metrics_connections_timed_out: count(|l| l.timed_out.get()),
            metrics_requests_too_large: count(|l| l.too_large.get()),
            metrics_accept_errors: count(|l| l.accept_errors.get()),
        }
    }

    /// Every range with its totals: the listed ones (by id), then the
    /// learned ones (for the metrics, which only sum them).
    fn traffic(&self) -> Result<(Vec<Range>, Vec<cas_audit_common::RangeStats>), Error> {
        let mut ranges = self.ranges.clone();
        let mut totals = self.dp.range_totals(self.ranges.len())?;
        for (r, t, _) in self.learned_traffic() {
            ranges.push(r);
            totals.push(t);
        }
        Ok((ranges, totals))
    }

    /// Stops the agent when the JSON lines or the readable lines cannot be
    /// written (a closed pipe ends it quietly); a sink that is only behind
    /// drops and counts, and goes on.
    fn check_outputs(&mut self) -> Result<(), Error> {
        match self.out.failure() {
            Some(e) => Err(sink_error(e)),
            None => Ok(()),
        }
    }

    /// Reports every remaining flow and writes the summary.
    pub fn finish(&mut self, set_name: &str, ifaces: &[String]) -> Result<Summary, Error> {
        let early = self.dp.counters()?;
        let snapshot = self.dp.flows()?;
        let entries = snapshot.len();
        let last = self
            .tracker
            .finish_all(snapshot, monotonic_ns(), &self.policy, &mut self.nat);
        self.write_all(&last);
        let c = self.dp.counters()?;
        let totals = self.dp.range_totals(self.ranges.len())?;
        let mut ranges = Summary::ranges_with_traffic(&self.ranges, &totals);
        for (r, t, name) in self.learned_traffic() {
            let mut rec = Summary::ranges_with_traffic(std::slice::from_ref(&r), &[t]);
            for x in &mut rec {
                x.dns_name = Some(name.clone());
            }
            ranges.extend(rec);
        }
        let mut s = Summary {
            ts: Timestamp::now(),
            ranges,
            flows: self.tracker.reported,
            disallowed: self.tracker.disallowed,
            flows_evicted: self.evictions.update(&early, entries, &c),
            log_records_lost: 0,
            sinks: Default::default(),
            events_stale: self.tracker.stale,
            counters: c,
            states: self.states.clone(),
            set: set_name.to_string(),
            interfaces: ifaces.to_vec(),
            allowed_ports: self
                .policy
                .profiles()
                .iter()
                .flat_map(|p| p.iter())
                .collect::<std::collections::BTreeSet<u16>>()
                .into_iter()
                .collect(),
            port_policy: if self.policy.is_global() {
                PortPolicyKind::Global
            } else {
                PortPolicyKind::PerRange
            },
            watch: self.watch_counts(),
            learned: self.learner.summary(),
        };
        self.out.summary(&mut s).map_err(sink_error)?;
        Ok(s)
    }
}

/// The error of an output that could not be written: exit 3, or a quiet
/// end for a closed pipe.
fn sink_error(e: crate::output::sink::SinkError) -> Error {
    Error::io(format!("writing {}", e.what))(e.source)
}
