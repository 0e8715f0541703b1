//! Prometheus metrics (`run --metrics ADDR`), encoded by the
//! `prometheus-client` crate: OpenMetrics 1.0 for clients that ask for it
//! (`Accept: application/openmetrics-text`, as Prometheus does), else the
//! Prometheus text format 0.0.4 ([`text_format`]), which `promtool check
//! metrics` and older scrapers read. Every metric has HELP text; the byte
//! counter has the unit `bytes`.
//!
//! Labels are bounded: data center (7 values with "global"), purpose (8),
//! direction (2), verdict (2), state (7) and the set name; never an
//! address or a port. The values are refreshed at every poll of the
//! datapath (once a second) and served on each scrape.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::atomic::AtomicU64,
};

use cas_audit_common::{Counter, Counters, RangeStats};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter as PCounter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use super::{bounded::SinkCounts, record::LearnedSummary};

/// The learned-name counters: the summary's `learned` field each stands
/// for, and its HELP text. No name or address is ever a label.
const LEARNED: [(&str, &str); 5] = [
    (
        "answers",
        "DNS answers and ClientHellos naming one of the set's names, learned or refreshed",
    ),
    (
        "added",
        "Addresses put into the kernel tries as learned ranges",
    ),
    (
        "expired",
        "Learned addresses taken out of the tries when their TTL ended",
    ),
    (
        "overflow",
        "Addresses not learned because the learned table was full (--max-learned)",
    ),
    (
        "unreadable",
        "Payloads handed over that were no readable DNS response or ClientHello",
    ),
];
use crate::{
    addrset::{Range, NO_DATACENTER},
    flow::{State, Verdict},
};

mod server;

pub use server::{serve, serve_on, serve_with, Limits, ListenerCounters};

/// Labels of the traffic counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabels {
    /// A data center of the range, or [`NO_DATACENTER`] (ranges every data center uses).
    pub datacenter: String,
    /// A purpose of the range.
    pub purpose: String,
    /// `out` (to CAS) or `in` (from CAS).
    pub direction: String,
}

/// Labels of the flow gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowLabels {
    /// `allowed` or `disallowed-port`.
    pub verdict: String,
    /// The flow's state.
    pub state: String,
}

/// Labels of the sink counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// `ipfix`, `syslog`, `json`, `lines` or `log_dir`.
    pub sink: String,
}

/// Labels of the set information metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SetLabels {
    /// Set name.
    pub set: LabelText,
    /// Its publication date.
    pub published: LabelText,
}

/// A label value from outside (the set file's name and date), escaped
/// for the exposition formats and shortened
/// ([`crate::text::prometheus_label`]): `prometheus-client` 0.22 writes
/// label values as they are, so a `"` or a line feed in a set name would
/// otherwise end the value or the sample and forge others.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LabelText(String);

impl LabelText {
    /// `value`, escaped.
    pub fn new(value: &str) -> LabelText {
        LabelText(crate::text::prometheus_label(value))
    }
}

impl EncodeLabelValue for LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

type Counter64 = PCounter<u64, AtomicU64>;

/// The agent's metrics.
pub struct Metrics {
    registry: Registry,
    packets: Family<TrafficLabels, Counter64>,
    bytes: Family<TrafficLabels, Counter64>,
    flows: Family<FlowLabels, Gauge>,
    reported: Family<FlowLabels, Counter64>,
    /// One counter per kernel counter, `cas_audit_datapath_<name>_total`.
    kernel: HashMap<Counter, Counter64>,
    table_entries: Gauge,
    log_lost: Counter64,
    events_stale: Counter64,
    evicted: Counter64,
    table_capacity: Gauge,
    export_sent: Family<SinkLabels, Counter64>,
    export_dropped: Family<SinkLabels, Counter64>,
    /// What the metrics listeners refused or cut short.
    pub listener: ListenerCounters,
    iface_gaps: Counter64,
    iface_uncovered: PCounter<f64, AtomicU64>,
    iface_attached: Gauge,
    /// Names learned: `cas_audit_learned_<name>_total` per [`LEARNED`] field.
    learned: HashMap<&'static str, Counter64>,
    learned_now: Gauge,
    learned_capacity: Gauge,
    /// Last values added, to turn absolute kernel counters into increments.
    last: std::sync::Mutex<HashMap<String, u64>>,
}

impl Metrics {
    /// Metrics for the set `set` (published `published`).
    pub fn new(set: &str, published: &str) -> Metrics {
        // Full names, not a registry prefix: the crate writes
        // prefix_name_unit, and the byte counter's name is its unit.
        let mut registry = Registry::default();
        let packets = Family::<TrafficLabels, Counter64>::default();
        registry.register(
            "cas_audit_packets",
            "Wire packets to (out) and from (in) CAS ranges, by data center and purpose of the range (a range with several counts in each)",
            packets.clone(),
        );
        let bytes = Family::<TrafficLabels, Counter64>::default();
        // cas_audit + unit bytes: cas_audit_bytes_total, `# UNIT cas_audit_bytes bytes`.
        registry.register_with_unit(
            "cas_audit",
            "Link-layer bytes to and from CAS ranges, by data center and purpose of the range",
            Unit::Bytes,
            bytes.clone(),
        );
        let flows = Family::<FlowLabels, Gauge>::default();
        registry.register(
            "cas_audit_flows",
            "Flows in the kernel flow table, by verdict and state",
            flows.clone(),
        );
        let reported = Family::<FlowLabels, Counter64>::default();
        registry.register(
            "cas_audit_flows_reported",
            "Flows reported for good (ended, expired, exit), by verdict and final state",
            reported.clone(),
        );
        let mut kernel = HashMap::new();
        for c in Counter::ALL {
            let m = Counter64::default();
            registry.register(
                format!("cas_audit_datapath_{}", c.name()),
                c.help(),
                m.clone(),
            );
            kernel.insert(c, m);
        }
        let table_entries = Gauge::default();
        registry.register(
            "cas_audit_flow_table_entries",
            "Entries in the kernel flow table",
            table_entries.clone(),
        );
        let table_capacity = Gauge::default();
        registry.register(
            "cas_audit_flow_table_capacity",
            "Capacity of the kernel flow table (--max-flows)",
            table_capacity.clone(),
        );
        let log_lost = Counter64::default();
        registry.register(
            "cas_audit_log_records_lost",
            "JSON-lines records the --log-dir could not write (full disk, I/O errors)",
            log_lost.clone(),
        );
        let events_stale = Counter64::default();
        registry.register(
            "cas_audit_events_stale",
            "Ring records of flows already reported for good, dropped (queued while the agent was paused or behind)",
            events_stale.clone(),
        );
        let evicted = Counter64::default();
        registry.register(
            "cas_audit_flows_evicted",
            "Flows the full kernel flow table pushed out before this agent reported them (their packets stay in the range counters; raise --max-flows)",
            evicted.clone(),
        );
        let export_sent = Family::<SinkLabels, Counter64>::default();
        registry.register(
            "cas_audit_export_sent",
            "Items handed to a sink's transport or writer: flows (ipfix), messages (syslog), records (json, lines, log_dir)",
            export_sent.clone(),
        );
        let export_dropped = Family::<SinkLabels, Counter64>::default();
        registry.register(
            "cas_audit_export_dropped",
            "Items a sink lost: its queue full (a reader, disk, collector or SIEM behind), its transport failed, or still queued at exit",
            export_dropped.clone(),
        );
        let listener = ListenerCounters::register(&mut registry);
        let iface_gaps = Counter64::default();
        registry.register(
            "cas_audit_interface_gaps",
            "Times an audited interface lost its programs (its device was removed); each gap lasts until the programs are attached to the interface of that name again",
            iface_gaps.clone(),
        );
        let iface_uncovered = PCounter::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "cas_audit_interface_uncovered",
            "Time an interface of an audited name existed without the programs, from the kernel's RTM_NEWLINK as the agent read it to the attach",
            Unit::Seconds,
            iface_uncovered.clone(),
        );
        let iface_attached = Gauge::default();
        registry.register(
            "cas_audit_interfaces_attached",
            "Audited interfaces (--iface) the programs are attached to now",
            iface_attached.clone(),
        );
        let info = Family::<SetLabels, Gauge>::default();
        registry.register(
            "cas_audit_address_set",
            "The address set audited (value 1)",
            info.clone(),
        );
        let mut learned = HashMap::new();
        for (name, help) in LEARNED {
            let m = Counter64::default();
            registry.register(format!("cas_audit_learned_{name}"), help, m.clone());
            learned.insert(name, m);
        }
        let learned_now = Gauge::default();
        registry.register(
            "cas_audit_learned_addresses",
            "Learned addresses in the kernel tries now",
            learned_now.clone(),
        );
        let learned_capacity = Gauge::default();
        registry.register(
            "cas_audit_learned_capacity",
            "Learned addresses the tries hold at most (--max-learned)",
            learned_capacity.clone(),
        );
        info.get_or_create(&SetLabels {
            set: LabelText::new(set),
            published: LabelText::new(published),
        })
        .set(1);
        Metrics {
            registry,
            packets,
            bytes,
            flows,
            reported,
            kernel,
            table_entries,
            log_lost,
            events_stale,
            evicted,
            table_capacity,
            export_sent,
            export_dropped,
            listener,
            iface_gaps,
            iface_uncovered,
            iface_attached,
            learned,
            learned_now,
            learned_capacity,
            last: Default::default(),
        }
    }

    /// Updates the learned-name metrics from the summary's figures and the
    /// addresses in the tries now.
    pub fn learned(&self, s: &LearnedSummary, now: usize) {
        for (name, v) in [
            ("answers", s.answers),
            ("added", s.added),
            ("expired", s.expired),
            ("overflow", s.overflow),
            ("unreadable", s.unreadable),
        ] {
            self.advance(format!("learned_{name}"), &self.learned[name], v);
        }
        self.learned_now.set(now as i64);
        self.learned_capacity.set(s.capacity as i64);
    }

    fn advance(&self, key: String, counter: &Counter64, value: u64) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let prev = last.entry(key).or_insert(0);
        if value > *prev {
            counter.inc_by(value - *prev);
            *prev = value;
        }
    }

    /// Updates the metrics from the datapath's counters, per-range totals
    /// (indexed like `ranges`), the flows in the table and the table size.
    pub fn update(
        &self,
        counters: &Counters,
        ranges: &[Range],
        totals: &[RangeStats],
        live: &[(Verdict, State)],
        capacity: u32,
    ) {
        for (c, v) in counters.iter() {
            self.advance(format!("datapath_{}", c.name()), &self.kernel[&c], v);
        }
        // Per label set: the sum over the ranges that carry it.
        let mut sums: HashMap<TrafficLabels, (u64, u64)> = HashMap::new();
        for (r, t) in ranges.iter().zip(totals) {
            let dcs: Vec<String> = if r.datacenters.is_empty() {
                vec![NO_DATACENTER.into()]
            } else {
                r.datacenters.iter().map(|d| d.to_string()).collect()
            };
            for dc in &dcs {
                for p in &r.purposes {
                    for (dir, pk, by) in [
                        ("out", t.packets_out, t.bytes_out),
                        ("in", t.packets_in, t.bytes_in),
                    ] {
                        let e = sums
                            .entry(TrafficLabels {
                                datacenter: dc.clone(),
                                purpose: p.to_string(),
                                direction: dir.into(),
                            })
                            .or_default();
                        e.0 = e.0.saturating_add(pk);
                        e.1 = e.1.saturating_add(by);
                    }
                }
            }
        }
        for (labels, (pk, by)) in sums {
            let key = format!(
                "{}|{}|{}",
                labels.datacenter, labels.purpose, labels.direction
            );
            self.advance(format!("p|{key}"), &self.packets.get_or_create(&labels), pk);
            self.advance(format!("b|{key}"), &self.bytes.get_or_create(&labels), by);
        }
        self.flows.clear();
        for v in [Verdict::Allowed, Verdict::DisallowedPort] {
            for s in State::ALL {
                let n = live.iter().filter(|(lv, ls)| *lv == v && *ls == s).count();
                if n > 0 {
                    self.flows
                        .get_or_create(&FlowLabels {
                            verdict: v.as_str().into(),
                            state: s.as_str().into(),
                        })
                        .set(n as i64);
                }
            }
        }
        self.table_entries.set(live.len() as i64);
        self.table_capacity.set(capacity as i64);
    }

    /// Sets the records the log directory could not write so far.
    pub fn log_records_lost(&self, n: u64) {
        self.advance("log_records_lost".into(), &self.log_lost, n);
    }

    /// Sets the interface gaps so far, the time uncovered so far (ms) and
    /// the audited interfaces attached now.
    pub fn interfaces(&self, gaps: u64, uncovered_ms: u64, attached: usize) {
        self.advance("iface_gaps".into(), &self.iface_gaps, gaps);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let prev = last.entry("iface_uncovered_ms".into()).or_insert(0);
        if uncovered_ms > *prev {
            self.iface_uncovered
                .inc_by((uncovered_ms - *prev) as f64 / 1000.0);
            *prev = uncovered_ms;
        }
        self.iface_attached.set(attached as i64);
    }

    /// Sets the ring records dropped as stale so far.
    pub fn events_stale(&self, n: u64) {
        self.advance("events_stale".into(), &self.events_stale, n);
    }

    /// Sets the flows evicted so far (the summary's `flows_evicted`).
    pub fn flows_evicted(&self, n: u64) {
        self.advance("flows_evicted".into(), &self.evicted, n);
    }

    /// Sets what each sink sent and dropped so far.
    pub fn sinks(&self, counts: &BTreeMap<String, SinkCounts>) {
        for (name, c) in counts {
            let labels = SinkLabels { sink: name.clone() };
            self.advance(
                format!("sent|{name}"),
                &self.export_sent.get_or_create(&labels),
                c.sent,
            );
            self.advance(
                format!("dropped|{name}"),
                &self.export_dropped.get_or_create(&labels),
                c.dropped,
            );
        }
    }

    /// Counts a flow reported for good.
    pub fn reported(&self, verdict: Verdict, state: State) {
        self.reported
            .get_or_create(&FlowLabels {
                verdict: verdict.as_str().into(),
                state: state.as_str().into(),
            })
            .inc();
    }

    /// The exposition text, OpenMetrics 1.0.
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

/// Content type of OpenMetrics 1.0 text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format 0.0.4.
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus text format 0.0.4 of OpenMetrics text written by
/// `prometheus-client`: a counter family's HELP and TYPE name its samples
/// (`x_total`, where OpenMetrics names the family `x`), and the `# UNIT`
/// and `# EOF` lines, which 0.0.4 does not have, go. Samples are the same.
pub fn text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let total = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                let _ = writeln!(out, "{p}{name}{total} {tail}");
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Where `--metrics` listens: `HOST:PORT` (an IPv4 address, `[IPv6]`, or
/// a host name standing for every address it resolves to, such as
/// `localhost:9477`) or `:PORT` (every address, IPv4 and IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    /// The host; `None` for every address.
    pub host: Option<String>,
    /// The TCP port.
    pub port: u16,
}

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not a listening address: expected HOST:PORT (127.0.0.1:9477, [::1]:9477, localhost:9477) or :PORT"
            )
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        // An IPv6 address, and only one, is written in brackets.
        let (host, bracketed) = match host.strip_prefix('[') {
            Some(h) => (h.strip_suffix(']').ok_or_else(bad)?, true),
            None => (host, false),
        };
        if host.contains(|c: char| c.is_whitespace() || c == '/')
            || bracketed != host.contains(':')
            || (bracketed && host.parse::<std::net::Ipv6Addr>().is_err())
        {
            return Err(bad());
        }
        Ok(ListenAddr {
            host: (!host.is_empty()).then(|| host.to_string()),
            port,
        })
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            None => write!(f, ":{}", self.port),
            Some(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Some(h) => write!(f, "{h}:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_has_help_and_type_in_both_formats() {
        let m = Metrics::new("cas-2019-11", "2019-11-01");
        m.reported(Verdict::Allowed, State::Closed);
        m.sinks(&BTreeMap::from([(
            "ipfix".to_string(),
            SinkCounts {
                sent: 3,
                dropped: 1,
            },
        )]));
        let om = m.render();
        assert!(om.contains("# UNIT cas_audit_bytes bytes\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let text = text_format(&om);
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        let meta = |kind: &str, name: &str| text.contains(&format!("# {kind} {name} "));
        let mut samples = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(meta("HELP", name) && meta("TYPE", name), "{name}:\n{text}");
            samples += 1;
        }
        assert!(samples >= 19, "{samples} samples:\n{text}");
        assert!(
            text.contains("# TYPE cas_audit_bytes_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("cas_audit_export_dropped_total{sink=\"ipfix\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE cas_audit_flow_table_entries gauge\n"),
            "{text}"
        );
    }

    /// A set name or date with `"`, `\` or a line feed stays inside its
    /// label (no forged sample, the scrape still parses: promtool checks
    /// a real one in tests/tests/agent.rs), and a 2 MB name costs 256
    /// characters of every scrape.
    #[test]
    fn a_hostile_set_name_stays_in_its_label() {
        let m = Metrics::new(
            "lab\"} 1\ncas_audit_forged_total 1\n# EOF\n\\",
            "2026-11-22\n",
        );
        let om = m.render();
        let info: Vec<&str> = om
            .lines()
            .filter(|l| l.starts_with("cas_audit_address_set"))
            .collect();
        assert_eq!(
            info,
            [
                r#"cas_audit_address_set{set="lab\"} 1\ncas_audit_forged_total 1\n# EOF\n\\",published="2026-11-22\n"} 1"#
            ],
            "{om}"
        );
        assert!(
            !om.lines().any(|l| l.starts_with("cas_audit_forged")),
            "{om}"
        );
        assert_eq!(om.lines().filter(|l| *l == "# EOF").count(), 1, "{om}");
        let long = Metrics::new(&"x".repeat(2 << 20), "2026-11-22").render();
        let info = long
            .lines()
            .find(|l| l.starts_with("cas_audit_address_set{"))
            .unwrap();
        assert_eq!(
            info,
            format!(
                "cas_audit_address_set{{set=\"{}…\",published=\"2026-11-22\"}} 1",
                "x".repeat(crate::text::MAX_SHOWN)
            )
        );
    }

    #[test]
    fn listen_addresses() {
        let ok = |s: &str, host: Option<&str>, port: u16| {
            let a: ListenAddr = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!((a.host.as_deref(), a.port), (host, port), "{s}");
            assert_eq!(a.to_string(), s);
        };
        ok(":9477", None, 9477);
        ok("127.0.0.1:9477", Some("127.0.0.1"), 9477);
        ok("localhost:9477", Some("localhost"), 9477);
        ok("[::1]:9477", Some("::1"), 9477);
        ok("[::]:0", Some("::"), 0);
        for bad in [
            "9477",
            "localhost",
            ":",
            ":99999",
            "::1:9477",
            "[::1:9477",
            "a b:1",
            "",
        ] {
            let e = bad.parse::<ListenAddr>().unwrap_err();
            assert!(e.contains("expected HOST:PORT"), "{bad}: {e}");
        }
    }
}
