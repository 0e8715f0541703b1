//! `cas-audit report`: summarises saved JSON-lines records (files written
//! by `run --json FILE` or `run --log-dir`, plain or gzip-compressed, or
//! standard input), as a stream: memory does not grow with the size of the
//! logs.
//!
//! A flow has several records (`flagged`, `blocked`, then `ended`,
//! `expired` or `exit`); they are folded by flow identity (protocol,
//! interface, local address and port, remote address and port, first_seen)
//! into the one that describes the flow: its final record (`ended`,
//! `expired`), else its latest `exit` record (a later run may report a
//! flow again after a restart), else its latest live notice. A live notice
//! written after a flow's final record does not replace it. Files must be
//! given oldest first (a directory's files are read in
//! [`crate::output::logdir::compare_names`] order).
//! Summary records count as runs. Fields added to flow records over time
//! (`state`, `history`, `icmp_type`, `icmp_code`, `reporter`) may be
//! missing from older logs: a missing state is `unknown`.
//!
//! A line that is not JSON, or not a cas-audit record, is counted as
//! skipped (the first few are named by file and line), never an error.

mod read;
mod stream;
mod table;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use ipnet::IpNet;
use serde::Serialize;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

pub use self::read::{expand_paths, Records, DONE_WINDOW, MAX_LINE, MAX_PENDING};
use self::{read::SavedFlow, table::plural};
use crate::{
    addrset::{DataCenter, Purpose},
    error::Error,
    flow::{State, Verdict},
    host::clock::rfc3339,
    units::parse_duration,
};

/// Skipped lines named in warnings and in the JSON document.
pub const MAX_SKIPPED_SHOWN: usize = 5;

/// Output format of `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// Readable tables.
    Table,
    /// One JSON document.
    Json,
}

impl FromStr for ReportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(ReportFormat::Table),
            "json" => Ok(ReportFormat::Json),
            _ => Err(format!("{s:?} is not a format (table or json)")),
        }
    }
}

/// A `--since` / `--until` value: a time, or a duration before now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSpec {
    /// An RFC 3339 time (or a date: its midnight, UTC).
    At(OffsetDateTime),
    /// That long before now.
    Ago(Duration),
}

impl TimeSpec {
    /// The time this stands for, `now` being now.
    pub fn resolve(self, now: OffsetDateTime) -> OffsetDateTime {
        match self {
            TimeSpec::At(t) => t,
            TimeSpec::Ago(d) => now - d,
        }
    }
}

impl FromStr for TimeSpec {
    type Err = String;

    /// `2026-11-22T10:00:00Z`, `2026-11-22T10:00:00+01:00`, `2026-11-22`
    /// (midnight UTC), or a duration such as `2h` (that long before now).
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
            return Ok(TimeSpec::At(t));
        }
        let date = time::macros::format_description!("[year]-[month]-[day]");
        if let Ok(d) = time::Date::parse(s, date) {
            return Ok(TimeSpec::At(d.midnight().assume_utc()));
        }
        if s.starts_with(|c: char| c.is_ascii_digit()) && !s.contains('-') {
            return parse_duration(s).map(TimeSpec::Ago);
        }
        Err(format!(
            "{s:?} is neither an RFC 3339 time (2026-11-22T10:00:00Z) nor a duration before now (2h)"
        ))
    }
}

/// A `--state` value: a state, or `unknown` for records without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateFilter(pub Option<State>);

impl FromStr for StateFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == UNKNOWN {
            return Ok(StateFilter(None));
        }
        s.parse::<State>()
            .map(|st| StateFilter(Some(st)))
            .map_err(|e| format!("{e}, or unknown"))
    }
}

/// The state of a record without one (older logs).
pub const UNKNOWN: &str = "unknown";

/// Which flows to count. Every given filter must match (AND); within one
/// repeated filter, any value may match (OR).
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Flows still seen at or after this time (`last_seen >= since`).
    pub since: Option<OffsetDateTime>,
    /// Flows first seen at or before this time (`first_seen <= until`).
    pub until: Option<OffsetDateTime>,
    /// Final states (`None`: records without a state).
    pub states: Vec<Option<State>>,
    /// Flows whose range is in one of these data centers.
    pub datacenters: Vec<DataCenter>,
    /// Flows whose range has one of these purposes.
    pub purposes: Vec<Purpose>,
    /// Flows whose local address is in one of these prefixes.
    pub hosts: Vec<IpNet>,
}

/// Everything `report` needs.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    /// Files and directories, oldest first; `-` for standard input.
    pub paths: Vec<PathBuf>,
    /// The filters.
    pub filters: Filters,
    /// Rows of every table and list (`usize::MAX`: all).
    pub top: usize,
    /// Output format.
    pub format: ReportFormat,
}

/// Flows, packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Flows.
    pub flows: u64,
    /// Packets local → remote.
    pub packets_out: u64,
    /// Packets remote → local.
    pub packets_in: u64,
    /// Bytes local → remote.
    pub bytes_out: u64,
    /// Bytes remote → local.
    pub bytes_in: u64,
}

impl Tally {
    /// Adds a flow. Its figures come from a file: the sums saturate at
    /// `u64::MAX` rather than wrap (or panic) on crafted values.
    fn add(&mut self, f: &SavedFlow) {
        self.flows = self.flows.saturating_add(1);
        self.packets_out = self.packets_out.saturating_add(f.packets_out);
        self.packets_in = self.packets_in.saturating_add(f.packets_in);
        self.bytes_out = self.bytes_out.saturating_add(f.bytes_out);
        self.bytes_in = self.bytes_in.saturating_add(f.bytes_in);
    }
}

/// One row of a breakdown: its key fields, then its [`Tally`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row<K> {
    /// What the row counts.
    #[serde(flatten)]
    pub key: K,
    /// The counts.
    #[serde(flatten)]
    pub tally: Tally,
}

/// Key of `by_datacenter` (null: ranges without a data center).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DataCenterKey {
    /// The data center.
    pub datacenter: Option<String>,
}

/// Key of `by_purpose`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PurposeKey {
    /// The purpose.
    pub purpose: Option<String>,
}

/// Key of `by_dns_name` (null: flows to an address no name was seen for).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct NameKey {
    /// The flow's `dns_name`, else its `tls_server_name`.
    pub dns_name: Option<String>,
}

/// Key of `by_state`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct StateKey {
    /// The final state, `unknown` without one.
    pub state: String,
}

/// Key of `by_verdict`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct VerdictKey {
    /// `allowed` or `disallowed-port`.
    pub verdict: String,
}

/// Key of `by_local_host`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct HostKey {
    /// The local (host-side) address.
    pub local_addr: IpAddr,
}

/// Key of `by_local_service`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ServiceKey {
    /// The local (host-side) address.
    pub local_addr: IpAddr,
    /// The service port (null for protocols without ports).
    pub service_port: Option<u16>,
}

/// An ICMP error type and code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct IcmpSeen {
    /// ICMP or ICMPv6 type.
    pub icmp_type: u8,
    /// Code.
    pub icmp_code: u8,
}

/// A destination some flows could not reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockedDestination {
    /// The CAS address.
    pub remote_addr: IpAddr,
    /// The service port (null for protocols without ports).
    pub service_port: Option<u16>,
    /// Blocked flows to it.
    pub flows: u64,
    /// Their states (`unanswered`, `refused`, `unreachable`).
    pub states: Vec<String>,
    /// Data centers of its range.
    pub datacenters: Vec<String>,
    /// Purposes of its range.
    pub purposes: Vec<String>,
    /// Senders of the ICMP errors about it (routers, firewalls, the host).
    pub reporters: Vec<IpAddr>,
    /// The ICMP errors' types and codes.
    pub icmp: Vec<IcmpSeen>,
    /// Local hosts that tried.
    pub local_hosts: u64,
}

/// The filters as applied, for the JSON document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AppliedFilters {
    /// `--since`, resolved.
    pub since: Option<String>,
    /// `--until`, resolved.
    pub until: Option<String>,
    /// `--state`.
    pub states: Vec<String>,
    /// `--datacenter`.
    pub datacenters: Vec<String>,
    /// `--purpose`.
    pub purposes: Vec<String>,
    /// `--host`.
    pub hosts: Vec<String>,
}

/// What `report` found: the `--format json` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// Files read, in order.
    pub files: Vec<String>,
    /// Flow records read (all of them, before deduplication and filters).
    pub records: u64,
    /// Summary records read (one per agent run that ended cleanly).
    pub runs: u64,
    /// Lines that are not cas-audit records.
    pub skipped: u64,
    /// The first few of them: `file:line: why`.
    pub skipped_lines: Vec<String>,
    /// Sum of the summaries' `log_records_lost`: records the agent could
    /// not write into its log directory (so missing here).
    pub log_records_lost: u64,
    /// The filters applied.
    pub filters: AppliedFilters,
    /// Distinct flows that match, and their packets and bytes.
    #[serde(flatten)]
    pub total: Tally,
    /// Earliest `first_seen` of those flows.
    pub first_seen: Option<String>,
    /// Latest `last_seen` of those flows.
    pub last_seen: Option<String>,
    /// By data center (a flow counts once in each of its range's).
    pub by_datacenter: Vec<Row<DataCenterKey>>,
    /// By purpose (a flow counts once in each of its range's).
    pub by_purpose: Vec<Row<PurposeKey>>,
    /// By DNS name (the `dns_name` the remote address was learned as, else
    /// the ClientHello's `tls_server_name`).
    pub by_dns_name: Vec<Row<NameKey>>,
    /// By final state.
    pub by_state: Vec<Row<StateKey>>,
    /// By verdict.
    pub by_verdict: Vec<Row<VerdictKey>>,
    /// By local host.
    pub by_local_host: Vec<Row<HostKey>>,
    /// By local host and service port.
    pub by_local_service: Vec<Row<ServiceKey>>,
    /// Flows whose state is unanswered, refused or unreachable.
    pub blocked_flows: u64,
    /// Distinct destinations (address and service port) of those flows.
    pub blocked_destinations: u64,
    /// The `--top` destinations with the most blocked flows.
    pub top_blocked: Vec<BlockedDestination>,
    /// How many rows each breakdown has before `--top` keeps the first.
    pub rows: RowCounts,
}

/// Rows of each breakdown before `--top`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RowCounts {
    /// `by_datacenter`.
    pub by_datacenter: u64,
    /// `by_purpose`.
    pub by_purpose: u64,
    /// `by_dns_name`.
    pub by_dns_name: u64,
    /// `by_state`.
    pub by_state: u64,
    /// `by_verdict`.
    pub by_verdict: u64,
    /// `by_local_host`.
    pub by_local_host: u64,
    /// `by_local_service`.
    pub by_local_service: u64,
}

// ---------------------------------------------------------------------------
// Filtering and counting
// ---------------------------------------------------------------------------

impl Filters {
    fn matches(&self, f: &SavedFlow) -> bool {
        let any = |empty: bool, hit: bool| empty || hit;
        self.since.is_none_or(|t| f.last_seen >= t)
            && self.until.is_none_or(|t| f.first_seen <= t)
            && any(self.states.is_empty(), self.states.contains(&f.state))
            && any(
                self.datacenters.is_empty(),
                self.datacenters
                    .iter()
                    .any(|d| f.datacenters.has(&DataCenter::ALL, d)),
            )
            && any(
                self.purposes.is_empty(),
                self.purposes
                    .iter()
                    .any(|p| f.purposes.has(&Purpose::ALL, p)),
            )
            && any(
                self.hosts.is_empty(),
                self.hosts.iter().any(|n| n.contains(&f.local_addr)),
            )
    }

    fn applied(&self) -> AppliedFilters {
        AppliedFilters {
            since: self.since.map(rfc3339),
            until: self.until.map(rfc3339),
            states: self
                .states
                .iter()
                .map(|s| s.map_or(UNKNOWN, State::as_str).to_string())
                .collect(),
            datacenters: self.datacenters.iter().map(|d| d.to_string()).collect(),
            purposes: self.purposes.iter().map(|p| p.to_string()).collect(),
            hosts: self.hosts.iter().map(|h| h.to_string()).collect(),
        }
    }
}

/// The first `top` rows, sorted by flows (most first), then by key; and
/// how many there were.
fn rows<K: Ord>(m: BTreeMap<K, Tally>, top: usize) -> (Vec<Row<K>>, u64) {
    let total = m.len() as u64;
    let mut v: Vec<Row<K>> = m
        .into_iter()
        .map(|(key, tally)| Row { key, tally })
        .collect();
    // Stable: equal counts keep the key order of the map.
    v.sort_by_key(|r| std::cmp::Reverse(r.tally.flows));
    v.truncate(top);
    (v, total)
}

#[derive(Debug, Default)]
struct BlockedAcc {
    flows: u64,
    states: BTreeSet<State>,
    datacenters: read::Bits,
    purposes: read::Bits,
    reporters: BTreeSet<IpAddr>,
    icmp: BTreeSet<IcmpSeen>,
    hosts: HashSet<IpAddr>,
}

/// The counts of the flows that match the filters, added one flow at a
/// time: what [`Evidence`] is made of. Its size grows with the distinct
/// keys of the breakdowns (hosts, services, blocked destinations), not
/// with the flows. Keys stay the flows' own values (no text, no
/// allocation per flow) until [`Evidence::new`] names and sorts them.
#[derive(Debug, Default)]
pub struct Tallies {
    filters: Filters,
    total: Tally,
    first: Option<OffsetDateTime>,
    last: Option<OffsetDateTime>,
    by_dc: HashMap<Option<DataCenter>, Tally>,
    by_purpose: HashMap<Option<Purpose>, Tally>,
    by_name: HashMap<Option<String>, Tally>,
    by_state: HashMap<Option<State>, Tally>,
    by_verdict: HashMap<Verdict, Tally>,
    by_host: HashMap<IpAddr, Tally>,
    by_service: HashMap<(IpAddr, Option<u16>), Tally>,
    blocked: HashMap<(IpAddr, Option<u16>), BlockedAcc>,
    blocked_flows: u64,
}

impl Tallies {
    /// Counts nothing yet, keeping the flows `filters` match.
    pub fn new(filters: Filters) -> Tallies {
        Tallies {
            filters,
            ..Tallies::default()
        }
    }

    /// Counts `f` if the filters match it.
    fn add(&mut self, f: &SavedFlow) {
        if !self.filters.matches(f) {
            return;
        }
        self.total.add(f);
        self.first = Some(self.first.map_or(f.first_seen, |t| t.min(f.first_seen)));
        self.last = Some(self.last.map_or(f.last_seen, |t| t.max(f.last_seen)));
        if f.datacenters.is_empty() {
            self.by_dc.entry(None).or_default().add(f);
        }
        for d in f.datacenters.items(&DataCenter::ALL) {
            self.by_dc.entry(Some(d)).or_default().add(f);
        }
        if f.purposes.is_empty() {
            self.by_purpose.entry(None).or_default().add(f);
        }
        for p in f.purposes.items(&Purpose::ALL) {
            self.by_purpose.entry(Some(p)).or_default().add(f);
        }
        match self.by_name.get_mut(&f.name) {
            Some(t) => t.add(f),
            None => self.by_name.entry(f.name.clone()).or_default().add(f),
        }
        self.by_state.entry(f.state).or_default().add(f);
        self.by_verdict.entry(f.verdict).or_default().add(f);
        self.by_host.entry(f.local_addr).or_default().add(f);
        self.by_service
            .entry((f.local_addr, f.service_port))
            .or_default()
            .add(f);
        if let Some(state) = f.state.filter(|s| s.is_blocked()) {
            self.blocked_flows += 1;
            let b = self
                .blocked
                .entry((f.remote_addr, f.service_port))
                .or_default();
            b.flows += 1;
            b.states.insert(state);
            b.datacenters = b.datacenters.union(f.datacenters);
            b.purposes = b.purposes.union(f.purposes);
            b.reporters.extend(f.reporter);
            b.icmp.extend(f.icmp);
            b.hosts.insert(f.local_addr);
        }
    }
}

/// `m` with its keys named by `key`, in the order of those names.
fn named<A, K: Ord>(m: HashMap<A, Tally>, key: impl Fn(A) -> K) -> BTreeMap<K, Tally> {
    m.into_iter().map(|(a, t)| (key(a), t)).collect()
}

impl Evidence {
    /// The figures of `tallies` over what `records` read, the first `top`
    /// rows of every breakdown.
    pub fn new(records: &Records, tallies: Tallies, top: usize) -> Evidence {
        let blocked_destinations = tallies.blocked.len() as u64;
        let mut top_blocked: Vec<BlockedDestination> = tallies
            .blocked
            .into_iter()
            .map(|((remote_addr, service_port), b)| {
                let dcs: BTreeSet<String> = b
                    .datacenters
                    .items(&DataCenter::ALL)
                    .map(|d| d.to_string())
                    .collect();
                let purposes: BTreeSet<String> = b
                    .purposes
                    .items(&Purpose::ALL)
                    .map(|p| p.to_string())
                    .collect();
                let states: BTreeSet<String> = b.states.iter().map(|s| s.to_string()).collect();
                BlockedDestination {
                    remote_addr,
                    service_port,
                    flows: b.flows,
                    states: states.into_iter().collect(),
                    datacenters: dcs.into_iter().collect(),
                    purposes: purposes.into_iter().collect(),
                    reporters: b.reporters.into_iter().collect(),
                    icmp: b.icmp.into_iter().collect(),
                    local_hosts: b.hosts.len() as u64,
                }
            })
            .collect();
        // Most flows first, then by destination, as the map used to order them.
        top_blocked.sort_by(|a, b| {
            b.flows
                .cmp(&a.flows)
                .then((a.remote_addr, a.service_port).cmp(&(b.remote_addr, b.service_port)))
        });
        top_blocked.truncate(top);
        let (by_datacenter, n_dc) = rows(
            named(tallies.by_dc, |d| DataCenterKey {
                datacenter: d.map(|d| d.to_string()),
            }),
            top,
        );
        let (by_purpose, n_purpose) = rows(
            named(tallies.by_purpose, |p| PurposeKey {
                purpose: p.map(|p| p.to_string()),
            }),
            top,
        );
        let (by_dns_name, n_name) =
            rows(named(tallies.by_name, |dns_name| NameKey { dns_name }), top);
        let (by_state, n_state) = rows(
            named(tallies.by_state, |s| StateKey {
                state: s.map_or(UNKNOWN, State::as_str).to_string(),
            }),
            top,
        );
        let (by_verdict, n_verdict) = rows(
            named(tallies.by_verdict, |v| VerdictKey {
                verdict: v.as_str().to_string(),
            }),
            top,
        );
        let (by_local_host, n_host) = rows(
            named(tallies.by_host, |local_addr| HostKey { local_addr }),
            top,
        );
        let (by_local_service, n_service) = rows(
            named(tallies.by_service, |(local_addr, service_port)| {
                ServiceKey {
                    local_addr,
                    service_port,
                }
            }),
            top,
        );
        Evidence {
            files: records.files.clone(),
            records: records.records,
            runs: records.runs,
            skipped: records.skipped,
            skipped_lines: records.skipped_lines.clone(),
            log_records_lost: records.log_records_lost,
            filters: tallies.filters.applied(),
            total: tallies.total,
            first_seen: tallies.first.map(rfc3339),
            last_seen: tallies.last.map(rfc3339),
            by_datacenter,
            by_purpose,
            by_dns_name,
            by_state,
            by_verdict,
            by_local_host,
            by_local_service,
            blocked_flows: tallies.blocked_flows,
            blocked_destinations,
            top_blocked,
            rows: RowCounts {
                by_datacenter: n_dc,
                by_purpose: n_purpose,
                by_dns_name: n_name,
                by_state: n_state,
                by_verdict: n_verdict,
                by_local_host: n_host,
                by_local_service: n_service,
            },
        }
    }
}

/// Reads `paths` and counts the flows `filters` match: the report's
/// figures with `top` rows per breakdown.
///
/// # Errors
/// [`Error::Usage`] for a missing path; [`Error::Input`] for an input that
/// cannot be read.
pub fn evidence(paths: &[PathBuf], filters: &Filters, top: usize) -> Result<Evidence, Error> {
    count(filters, top, |records, mut sink| {
        read::load(paths, records, &mut sink)
    })
}

/// [`evidence`] of one input stream named `name`, plain or gzip (as
/// `report -` reads standard input): for a caller that holds the bytes,
/// such as the record reader's fuzz target (`fuzz/`).
///
/// # Errors
/// The input cannot be read, or is not valid gzip.
pub fn evidence_of_stream(
    name: &str,
    input: impl std::io::Read + Send + 'static,
    filters: &Filters,
    top: usize,
) -> std::io::Result<Evidence> {
    count(filters, top, |records, mut sink| {
        records.read(name, read::text_of(input)?, &mut sink)
    })
}

/// Counts the flows `filters` match among what `read` hands its sink.
fn count<E>(
    filters: &Filters,
    top: usize,
    read: impl FnOnce(&mut Records, &mut dyn FnMut(SavedFlow)) -> Result<(), E>,
) -> Result<Evidence, E> {
    let mut records = Records::default();
    let mut tallies = Tallies::new(filters.clone());
    let mut sink = |f: SavedFlow| tallies.add(&f);
    read(&mut records, &mut sink)?;
    records.finish(&mut sink);
    Ok(Evidence::new(&records, tallies, top))
}

/// `cas-audit report`: reads, counts, and returns the text to print
/// (tables, or one compact JSON document). Skipped lines and lost records
/// are warned about on standard error.
pub fn report(cfg: &ReportConfig) -> Result<String, Error> {
    let ev = evidence(&cfg.paths, &cfg.filters, cfg.top)?;
    if ev.skipped > 0 {
        log::warn!(
            "skipped {} line{} that {}: {}{}",
            ev.skipped,
            plural(ev.skipped),
            if ev.skipped == 1 {
                "is not a cas-audit record"
            } else {
                "are not cas-audit records"
            },
            ev.skipped_lines.join("; "),
            if ev.skipped as usize > ev.skipped_lines.len() {
                "; ..."
            } else {
                ""
            }
        );
    }
    if ev.log_records_lost > 0 {
        log::warn!(
            "the agent could not write {} record{} into its log directory (log_records_lost): the logs are incomplete",
            ev.log_records_lost,
            plural(ev.log_records_lost)
        );
    }
    Ok(match cfg.format {
        // Fields of saved records (interfaces, prefixes, ...) come from
        // files: escaped for the terminal.
        ReportFormat::Table => crate::text::terminal(&ev.table()).into_owned(),
        ReportFormat::Json => serde_json::to_string(&ev).expect("serialisable") + "\n",
    })
}

#[cfg(test)]
mod tests;
