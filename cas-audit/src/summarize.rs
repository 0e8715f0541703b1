//! `cas-audit report`: summarises saved JSON-lines records (files written
//! by `run --json FILE` or `run --log-dir`).
//!
//! A flow has several records (`flagged`, `blocked`, then `ended`,
//! `expired` or `exit`); they are deduplicated by flow identity (protocol,
//! interface, local address and port, remote address and port, first_seen)
//! and the last one read is kept, so files must be given oldest first (a
//! directory's `*.jsonl` files are read in [`compare_names`] order).
//! Summary records count as runs. Fields added to flow records over time
//! (`state`, `history`, `icmp_type`, `icmp_code`, `reporter`) may be
//! missing from older logs: a missing state is `unknown`.
//!
//! A line that is not JSON, or not a cas-audit record, is counted as
//! skipped (the first few are named by file and line), never an error.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    io::{self, BufRead, BufReader},
    net::IpAddr,
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::{
    addrset::{DataCenter, Purpose},
    error::Error,
    logdir::compare_names,
    report::rfc3339,
    state::State,
    units::parse_duration,
};

/// Skipped lines named in warnings and in the JSON document.
pub const MAX_SKIPPED_SHOWN: usize = 5;

/// Output format of `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Readable tables.
    Table,
    /// One JSON document.
    Json,
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
    /// Files and directories, oldest first.
    pub paths: Vec<PathBuf>,
    /// The filters.
    pub filters: Filters,
    /// Blocked destinations listed.
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
    fn add(&mut self, f: &SavedFlow) {
        self.flows += 1;
        self.packets_out += f.packets_out;
        self.packets_in += f.packets_in;
        self.bytes_out += f.bytes_out;
        self.bytes_in += f.bytes_in;
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
}

// ---------------------------------------------------------------------------
// Reading records
// ---------------------------------------------------------------------------

/// The fields of a flow record that `report` reads.
#[derive(Debug, Deserialize)]
struct RawFlow {
    proto: String,
    iface: String,
    local_addr: IpAddr,
    #[serde(default)]
    local_port: Option<u16>,
    remote_addr: IpAddr,
    #[serde(default)]
    remote_port: Option<u16>,
    #[serde(default)]
    service_port: Option<u16>,
    #[serde(default)]
    datacenters: Vec<String>,
    #[serde(default)]
    purposes: Vec<String>,
    verdict: String,
    packets_out: u64,
    bytes_out: u64,
    packets_in: u64,
    bytes_in: u64,
    first_seen: String,
    last_seen: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    icmp_type: Option<u8>,
    #[serde(default)]
    icmp_code: Option<u8>,
    #[serde(default)]
    reporter: Option<IpAddr>,
}

/// The record type, and what `report` reads of a summary.
#[derive(Debug, Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    log_records_lost: Option<u64>,
}

/// A flow as its last record describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SavedFlow {
    local_addr: IpAddr,
    remote_addr: IpAddr,
    service_port: Option<u16>,
    datacenters: Vec<String>,
    purposes: Vec<String>,
    verdict: String,
    packets_out: u64,
    bytes_out: u64,
    packets_in: u64,
    bytes_in: u64,
    first_seen: OffsetDateTime,
    last_seen: OffsetDateTime,
    /// Canonical state, `None` when the record has none.
    state: Option<String>,
    icmp: Option<IcmpSeen>,
    reporter: Option<IpAddr>,
}

/// What identifies a flow across its records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlowId {
    proto: String,
    iface: String,
    local_addr: IpAddr,
    local_port: Option<u16>,
    remote_addr: IpAddr,
    remote_port: Option<u16>,
    first_seen: i128,
}

fn timestamp(field: &str, s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|_| format!("bad flow record: {field} {s:?} is not an RFC 3339 time"))
}

/// A data center or purpose as written, in its canonical spelling if known.
fn canonical<T: FromStr + fmt::Display>(s: String) -> String {
    s.parse::<T>().map(|v| v.to_string()).unwrap_or(s)
}

impl RawFlow {
    fn into_flow(self) -> Result<(FlowId, SavedFlow), String> {
        let first_seen = timestamp("first_seen", &self.first_seen)?;
        let last_seen = timestamp("last_seen", &self.last_seen)?;
        let id = FlowId {
            proto: self.proto,
            iface: self.iface,
            local_addr: self.local_addr,
            local_port: self.local_port,
            remote_addr: self.remote_addr,
            remote_port: self.remote_port,
            first_seen: first_seen.unix_timestamp_nanos(),
        };
        let flow = SavedFlow {
            local_addr: self.local_addr,
            remote_addr: self.remote_addr,
            service_port: self.service_port,
            datacenters: self
                .datacenters
                .into_iter()
                .map(canonical::<DataCenter>)
                .collect(),
            purposes: self
                .purposes
                .into_iter()
                .map(canonical::<Purpose>)
                .collect(),
            verdict: self.verdict,
            packets_out: self.packets_out,
            bytes_out: self.bytes_out,
            packets_in: self.packets_in,
            bytes_in: self.bytes_in,
            first_seen,
            last_seen,
            state: self.state.map(canonical::<State>),
            icmp: match (self.icmp_type, self.icmp_code) {
                (Some(icmp_type), Some(icmp_code)) => Some(IcmpSeen {
                    icmp_type,
                    icmp_code,
                }),
                _ => None,
            },
            reporter: self.reporter,
        };
        Ok((id, flow))
    }
}

/// Records read so far, deduplicated.
#[derive(Debug, Default)]
pub struct Records {
    files: Vec<String>,
    flows: Vec<SavedFlow>,
    index: HashMap<FlowId, usize>,
    records: u64,
    runs: u64,
    log_records_lost: u64,
    skipped: u64,
    skipped_lines: Vec<String>,
}

impl Records {
    /// Reads the records of one file (named `name` in messages).
    pub fn read(&mut self, name: &str, reader: impl BufRead) -> io::Result<()> {
        self.files.push(name.to_string());
        let mut reader = reader;
        let mut buf = Vec::new();
        let mut lineno = 0usize;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                return Ok(());
            }
            lineno += 1;
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            if let Err(why) = self.line(&buf) {
                self.skipped += 1;
                if self.skipped_lines.len() < MAX_SKIPPED_SHOWN {
                    self.skipped_lines.push(format!("{name}:{lineno}: {why}"));
                }
            }
        }
    }

    /// One line: a flow record, a summary record, or an error saying why
    /// it is neither.
    fn line(&mut self, bytes: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
        if !text.trim_start().starts_with('{') {
            return Err("not a JSON object".into());
        }
        let head: Head = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        match head.kind.as_deref() {
            Some("flow") => {
                let raw: RawFlow =
                    serde_json::from_str(text).map_err(|e| format!("bad flow record: {e}"))?;
                let (id, flow) = raw.into_flow()?;
                self.records += 1;
                match self.index.get(&id) {
                    Some(&i) => self.flows[i] = flow,
                    None => {
                        self.index.insert(id, self.flows.len());
                        self.flows.push(flow);
                    }
                }
                Ok(())
            }
            Some("summary") => {
                self.runs += 1;
                self.log_records_lost += head.log_records_lost.unwrap_or(0);
                Ok(())
            }
            Some(other) => Err(format!("not a cas-audit run record (type {other:?})")),
            None => Err("not a cas-audit run record (no \"type\")".into()),
        }
    }

    /// Distinct flows read so far.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }
}

/// The files `paths` stand for: files as given, directories' `*.jsonl`
/// files in name order. A missing path is a usage error.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                Error::Usage(format!("{}: no such file or directory", p.display()))
            }
            _ => Error::io(format!("reading {}", p.display()))(e),
        })?;
        if !meta.is_dir() {
            out.push(p.clone());
            continue;
        }
        let mut names = Vec::new();
        for e in std::fs::read_dir(p).map_err(Error::io(format!("reading {}", p.display())))? {
            let e = e.map_err(Error::io(format!("reading {}", p.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let is_file = e.file_type().map(|t| t.is_file()).unwrap_or(false)
                || std::fs::metadata(e.path())
                    .map(|m| m.is_file())
                    .unwrap_or(false);
            if name.ends_with(".jsonl") && is_file {
                names.push(name);
            }
        }
        if names.is_empty() {
            log::warn!("no *.jsonl files in {}", p.display());
        }
        names.sort_by(|a, b| compare_names(a, b));
        out.extend(names.into_iter().map(|n| p.join(n)));
    }
    Ok(out)
}

/// Reads every file of `cfg.paths`.
pub fn load(paths: &[PathBuf]) -> Result<Records, Error> {
    let mut records = Records::default();
    for path in expand_paths(paths)? {
        let what = || format!("reading {}", path.display());
        let f = std::fs::File::open(&path).map_err(Error::io(what()))?;
        records
            .read(&path.display().to_string(), BufReader::new(f))
            .map_err(Error::io(what()))?;
    }
    Ok(records)
}

// ---------------------------------------------------------------------------
// Filtering and counting
// ---------------------------------------------------------------------------

impl Filters {
    fn matches(&self, f: &SavedFlow) -> bool {
        let any = |empty: bool, hit: bool| empty || hit;
        self.since.is_none_or(|t| f.last_seen >= t)
            && self.until.is_none_or(|t| f.first_seen <= t)
            && any(
                self.states.is_empty(),
                self.states
                    .iter()
                    .any(|s| s.map(State::as_str) == f.state.as_deref()),
            )
            && any(
                self.datacenters.is_empty(),
                self.datacenters
                    .iter()
                    .any(|d| f.datacenters.iter().any(|x| x == d.as_str())),
            )
            && any(
                self.purposes.is_empty(),
                self.purposes
                    .iter()
                    .any(|p| f.purposes.iter().any(|x| x == p.as_str())),
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

/// Rows sorted by flows (most first), then by key.
fn rows<K: Ord>(m: BTreeMap<K, Tally>) -> Vec<Row<K>> {
    let mut v: Vec<Row<K>> = m
        .into_iter()
        .map(|(key, tally)| Row { key, tally })
        .collect();
    // Stable: equal counts keep the key order of the map.
    v.sort_by_key(|r| std::cmp::Reverse(r.tally.flows));
    v
}

#[derive(Default)]
struct BlockedAcc {
    flows: u64,
    states: BTreeSet<String>,
    datacenters: BTreeSet<String>,
    purposes: BTreeSet<String>,
    reporters: BTreeSet<IpAddr>,
    icmp: BTreeSet<IcmpSeen>,
    hosts: BTreeSet<IpAddr>,
}

/// Whether a state (as written) is one of the blocked ones.
fn is_blocked(state: Option<&str>) -> bool {
    state
        .and_then(|s| s.parse::<State>().ok())
        .is_some_and(State::is_blocked)
}

impl Evidence {
    /// Counts the flows of `records` that match `filters`; lists the `top`
    /// blocked destinations.
    pub fn build(records: &Records, filters: &Filters, top: usize) -> Evidence {
        let mut total = Tally::default();
        let (mut first, mut last): (Option<OffsetDateTime>, Option<OffsetDateTime>) = (None, None);
        let mut by_dc = BTreeMap::new();
        let mut by_purpose = BTreeMap::new();
        let mut by_state = BTreeMap::new();
        let mut by_verdict = BTreeMap::new();
        let mut by_host = BTreeMap::new();
        let mut by_service = BTreeMap::new();
        let mut blocked: BTreeMap<(IpAddr, Option<u16>), BlockedAcc> = BTreeMap::new();
        let mut blocked_flows = 0;
        for f in records.flows.iter().filter(|f| filters.matches(f)) {
            total.add(f);
            first = Some(first.map_or(f.first_seen, |t| t.min(f.first_seen)));
            last = Some(last.map_or(f.last_seen, |t| t.max(f.last_seen)));
            if f.datacenters.is_empty() {
                by_dc
                    .entry(DataCenterKey { datacenter: None })
                    .or_insert_with(Tally::default)
                    .add(f);
            }
            for d in dedup(&f.datacenters) {
                by_dc
                    .entry(DataCenterKey {
                        datacenter: Some(d.clone()),
                    })
                    .or_insert_with(Tally::default)
                    .add(f);
            }
            if f.purposes.is_empty() {
                by_purpose
                    .entry(PurposeKey { purpose: None })
                    .or_insert_with(Tally::default)
                    .add(f);
            }
            for p in dedup(&f.purposes) {
                by_purpose
                    .entry(PurposeKey {
                        purpose: Some(p.clone()),
                    })
                    .or_insert_with(Tally::default)
                    .add(f);
            }
            by_state
                .entry(StateKey {
                    state: f.state.clone().unwrap_or_else(|| UNKNOWN.into()),
                })
                .or_insert_with(Tally::default)
                .add(f);
            by_verdict
                .entry(VerdictKey {
                    verdict: f.verdict.clone(),
                })
                .or_insert_with(Tally::default)
                .add(f);
            by_host
                .entry(HostKey {
                    local_addr: f.local_addr,
                })
                .or_insert_with(Tally::default)
                .add(f);
            by_service
                .entry(ServiceKey {
                    local_addr: f.local_addr,
                    service_port: f.service_port,
                })
                .or_insert_with(Tally::default)
                .add(f);
            if is_blocked(f.state.as_deref()) {
                blocked_flows += 1;
                let b = blocked.entry((f.remote_addr, f.service_port)).or_default();
                b.flows += 1;
                b.states.extend(f.state.clone());
                b.datacenters.extend(f.datacenters.iter().cloned());
                b.purposes.extend(f.purposes.iter().cloned());
                b.reporters.extend(f.reporter);
                b.icmp.extend(f.icmp);
                b.hosts.insert(f.local_addr);
            }
        }
        let blocked_destinations = blocked.len() as u64;
        let mut top_blocked: Vec<BlockedDestination> = blocked
            .into_iter()
            .map(|((remote_addr, service_port), b)| BlockedDestination {
                remote_addr,
                service_port,
                flows: b.flows,
                states: b.states.into_iter().collect(),
                datacenters: b.datacenters.into_iter().collect(),
                purposes: b.purposes.into_iter().collect(),
                reporters: b.reporters.into_iter().collect(),
                icmp: b.icmp.into_iter().collect(),
                local_hosts: b.hosts.len() as u64,
            })
            .collect();
        top_blocked.sort_by_key(|b| std::cmp::Reverse(b.flows));
        top_blocked.truncate(top);
        Evidence {
            files: records.files.clone(),
            records: records.records,
            runs: records.runs,
            skipped: records.skipped,
            skipped_lines: records.skipped_lines.clone(),
            log_records_lost: records.log_records_lost,
            filters: filters.applied(),
            total,
            first_seen: first.map(rfc3339),
            last_seen: last.map(rfc3339),
            by_datacenter: rows(by_dc),
            by_purpose: rows(by_purpose),
            by_state: rows(by_state),
            by_verdict: rows(by_verdict),
            by_local_host: rows(by_host),
            by_local_service: rows(by_service),
            blocked_flows,
            blocked_destinations,
            top_blocked,
        }
    }

    /// The readable report.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{} file{}: {} flow record{}, {} run summar{}, {} line{} skipped\n",
            self.files.len(),
            plural(self.files.len() as u64),
            self.records,
            plural(self.records),
            self.runs,
            if self.runs == 1 { "y" } else { "ies" },
            self.skipped,
            plural(self.skipped),
        ));
        if self.log_records_lost > 0 {
            out.push_str(&format!(
                "incomplete: the agent could not write {} record{} (log_records_lost)\n",
                self.log_records_lost,
                plural(self.log_records_lost)
            ));
        }
        let f = &self.filters;
        let mut shown = Vec::new();
        if let Some(t) = &f.since {
            shown.push(format!("since {t}"));
        }
        if let Some(t) = &f.until {
            shown.push(format!("until {t}"));
        }
        for (name, v) in [
            ("state", &f.states),
            ("data center", &f.datacenters),
            ("purpose", &f.purposes),
            ("host", &f.hosts),
        ] {
            if !v.is_empty() {
                shown.push(format!("{name} {}", v.join(" or ")));
            }
        }
        if !shown.is_empty() {
            out.push_str(&format!("filters: {}\n", shown.join(", ")));
        }
        let (Some(first), Some(last)) = (&self.first_seen, &self.last_seen) else {
            out.push_str("No flows.\n");
            return out;
        };
        let t = &self.total;
        out.push_str(&format!(
            "{} flow{} from {first} to {last}: {} packets / {} bytes out, {} packets / {} bytes in\n",
            t.flows,
            plural(t.flows),
            t.packets_out,
            t.bytes_out,
            t.packets_in,
            t.bytes_in
        ));
        let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
        let port = |p: Option<u16>| p.map_or_else(|| "-".into(), |p| p.to_string());
        out.push_str(&breakdown(
            &["Data center"],
            self.by_datacenter
                .iter()
                .map(|r| (vec![opt(&r.key.datacenter)], r.tally)),
        ));
        out.push_str(&breakdown(
            &["Purpose"],
            self.by_purpose
                .iter()
                .map(|r| (vec![opt(&r.key.purpose)], r.tally)),
        ));
        out.push_str(&breakdown(
            &["State"],
            self.by_state
                .iter()
                .map(|r| (vec![r.key.state.clone()], r.tally)),
        ));
        out.push_str(&breakdown(
            &["Verdict"],
            self.by_verdict
                .iter()
                .map(|r| (vec![r.key.verdict.clone()], r.tally)),
        ));
        out.push_str(&breakdown(
            &["Local host"],
            self.by_local_host
                .iter()
                .map(|r| (vec![r.key.local_addr.to_string()], r.tally)),
        ));
        out.push_str(&breakdown(
            &["Local host", "Service port"],
            self.by_local_service.iter().map(|r| {
                (
                    vec![r.key.local_addr.to_string(), port(r.key.service_port)],
                    r.tally,
                )
            }),
        ));
        if self.blocked_flows == 0 {
            out.push_str("No blocked flows.\n");
            return out;
        }
        out.push_str(&format!(
            "Blocked: {} flow{} to {} destination{}; top {}:\n",
            self.blocked_flows,
            plural(self.blocked_flows),
            self.blocked_destinations,
            plural(self.blocked_destinations),
            self.top_blocked.len()
        ));
        if self.top_blocked.is_empty() {
            return out;
        }
        let mut tb = Table::new();
        tb.load_preset(UTF8_FULL_CONDENSED);
        tb.set_header(vec![
            "Destination",
            "Flows",
            "States",
            "Data centers",
            "Purposes",
            "Reporters",
            "ICMP type/code",
            "Local hosts",
        ]);
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        for b in &self.top_blocked {
            let dest = match (b.remote_addr, b.service_port) {
                (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
                (a, Some(p)) => format!("{a}:{p}"),
                (a, None) => a.to_string(),
            };
            tb.add_row(vec![
                Cell::new(dest),
                num(b.flows),
                Cell::new(list(&b.states)),
                Cell::new(list(&b.datacenters)),
                Cell::new(list(&b.purposes)),
                Cell::new(list(
                    &b.reporters
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>(),
                )),
                Cell::new(list(
                    &b.icmp
                        .iter()
                        .map(|i| format!("{}/{}", i.icmp_type, i.icmp_code))
                        .collect::<Vec<_>>(),
                )),
                num(b.local_hosts),
            ]);
        }
        out.push_str(&format!("{tb}\n"));
        out
    }
}

fn dedup(v: &[String]) -> BTreeSet<&String> {
    v.iter().collect()
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn num(n: u64) -> Cell {
    Cell::new(n).set_alignment(CellAlignment::Right)
}

/// A table of one breakdown: its key columns, then the counts.
fn breakdown(keys: &[&str], rows: impl Iterator<Item = (Vec<String>, Tally)>) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    let mut header: Vec<&str> = keys.to_vec();
    header.extend(["Flows", "Pkts out", "Bytes out", "Pkts in", "Bytes in"]);
    t.set_header(header);
    for (key, n) in rows {
        let mut cells: Vec<Cell> = key.into_iter().map(Cell::new).collect();
        cells.extend([
            num(n.flows),
            num(n.packets_out),
            num(n.bytes_out),
            num(n.packets_in),
            num(n.bytes_in),
        ]);
        t.add_row(cells);
    }
    format!("{t}\n")
}

/// `cas-audit report`: reads, counts, and returns the text to print
/// (table or JSON). Skipped lines and lost records are warned about on
/// standard error.
pub fn report(cfg: &ReportConfig) -> Result<String, Error> {
    let records = load(&cfg.paths)?;
    let ev = Evidence::build(&records, &cfg.filters, cfg.top);
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
        ReportFormat::Table => ev.table(),
        ReportFormat::Json => {
            let mut s = serde_json::to_string_pretty(&ev).map_err(|e| Error::Io {
                what: "writing the report".into(),
                source: e.into(),
            })?;
            s.push('\n');
            s
        }
    })
}

#[cfg(test)]
mod tests;
