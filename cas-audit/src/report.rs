//! Output: JSON-lines records (a public contract: field names are stable),
//! readable lines for flagged flows and the summary table.

use std::{
    collections::HashMap,
    io::{self, Write},
    net::IpAddr,
};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use serde::Serialize;
use time::OffsetDateTime;

use crate::{
    addrset::{DataCenter, Purpose, Range},
    flow::{flag_names, has_ports, proto_name, Flow},
    logdir::LogDir,
    state::{history_string, hops_from_ttl, IcmpError, State},
};

/// Converts kernel monotonic timestamps (`bpf_ktime_get_ns`) to wall time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    /// Measures the current offset between CLOCK_REALTIME and CLOCK_MONOTONIC.
    pub fn new() -> Clock {
        let real = OffsetDateTime::now_utc().unix_timestamp_nanos();
        Clock {
            offset_ns: real - monotonic_ns() as i128,
        }
    }

    /// Wall time of a kernel timestamp.
    pub fn wall(&self, mono_ns: u64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(mono_ns as i128 + self.offset_ns)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock `bpf_ktime_get_ns` reads).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// RFC 3339 text of a time in UTC with exactly six fractional digits, so
/// that timestamps also sort correctly as text.
pub fn rfc3339(t: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

/// Why a flow record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// A `{"type":"flow"}` record.
#[derive(Debug, Clone, Serialize)]
pub struct FlowRecord {
    /// Always "flow".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the record was written.
    pub ts: String,
    /// Why it was written (an addition to the contract's fields).
    pub reason: Reason,
    /// What happened to the flow: `pending`, `established`, `closed`,
    /// `reset`, `unanswered`, `refused` or `unreachable`.
    pub state: State,
    /// Zeek-style history (see [`crate::state`]).
    pub history: String,
    /// Type of the ICMP/ICMPv6 error that quoted the flow; null without one.
    pub icmp_type: Option<u8>,
    /// Its code; null without one.
    pub icmp_code: Option<u8>,
    /// Who sent the error (router, firewall, or the CAS host); null without one.
    pub reporter: Option<IpAddr>,
    /// IP TTL / hop limit of the remote side's first RST; null without one.
    pub rst_ttl: Option<u8>,
    /// Hops to the sender of that RST, estimated from its TTL (1: a
    /// neighbour); a firewall answering for the destination is usually closer.
    pub rst_hops: Option<u8>,
    /// Interface name.
    pub iface: String,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or the protocol number.
    pub proto: String,
    /// Host-side address.
    pub local_addr: IpAddr,
    /// Host-side port; null for protocols without ports.
    pub local_port: Option<u16>,
    /// CAS-side address.
    pub remote_addr: IpAddr,
    /// CAS-side port; null for protocols without ports.
    pub remote_port: Option<u16>,
    /// `local`, `remote` or `unknown`.
    pub initiator: &'static str,
    /// Direction of the first packet seen: `out` or `in`.
    pub first_packet: &'static str,
    /// The port the conversation is for; null for protocols without ports.
    pub service_port: Option<u16>,
    /// The CAS range the remote address is in.
    pub prefix: String,
    /// Data centers of the range.
    pub datacenters: Vec<DataCenter>,
    /// Purposes of the range.
    pub purposes: Vec<Purpose>,
    /// `allowed` or `disallowed-port`.
    pub verdict: &'static str,
    /// Wire packets local → remote.
    pub packets_out: u64,
    /// Bytes local → remote.
    pub bytes_out: u64,
    /// Wire packets remote → local.
    pub packets_in: u64,
    /// Bytes remote → local.
    pub bytes_in: u64,
    /// TCP flags seen local → remote.
    pub tcp_flags_out: Vec<&'static str>,
    /// TCP flags seen remote → local.
    pub tcp_flags_in: Vec<&'static str>,
    /// First packet.
    pub first_seen: String,
    /// Last packet.
    pub last_seen: String,
}

impl FlowRecord {
    /// Builds the record of `flow`, whose remote address is in `range`.
    pub fn new(
        flow: &Flow,
        range: Option<&Range>,
        iface: &str,
        clock: &Clock,
        reason: Reason,
        state: State,
    ) -> Self {
        let ports = has_ports(flow.key.proto);
        let icmp = IcmpError::of(&flow.stats);
        let rst_ttl = (flow.stats.rst_ttl != 0).then_some(flow.stats.rst_ttl);
        FlowRecord {
            kind: "flow",
            ts: rfc3339(OffsetDateTime::now_utc()),
            reason,
            state,
            history: history_string(&flow.stats),
            icmp_type: icmp.map(|e| e.icmp_type),
            icmp_code: icmp.map(|e| e.icmp_code),
            reporter: icmp.map(|e| e.reporter),
            rst_ttl,
            rst_hops: rst_ttl.map(hops_from_ttl),
            iface: iface.to_string(),
            proto: proto_name(flow.key.proto),
            local_addr: flow.local_addr,
            local_port: ports.then_some(flow.key.local_port),
            remote_addr: flow.remote_addr,
            remote_port: ports.then_some(flow.key.remote_port),
            initiator: flow.initiator.as_str(),
            first_packet: flow.first_packet(),
            service_port: flow.service_port,
            prefix: range
                .filter(|r| !r.is_placeholder())
                .map(|r| r.prefix.to_string())
                .unwrap_or_default(),
            datacenters: range
                .map(|r| r.datacenters.iter().copied().collect())
                .unwrap_or_default(),
            purposes: range
                .map(|r| r.purposes.iter().copied().collect())
                .unwrap_or_default(),
            verdict: flow.verdict.as_str(),
            packets_out: flow.stats.packets_out,
            bytes_out: flow.stats.bytes_out,
            packets_in: flow.stats.packets_in,
            bytes_in: flow.stats.bytes_in,
            tcp_flags_out: flag_names(flow.stats.tcp_flags_out),
            tcp_flags_in: flag_names(flow.stats.tcp_flags_in),
            first_seen: rfc3339(clock.wall(flow.stats.first_seen_ns)),
            last_seen: rfc3339(clock.wall(flow.stats.last_seen_ns)),
        }
    }

    /// `proto local -> remote`, identifying the flow in tables.
    pub fn flow_id(&self) -> String {
        let ep = |a: &IpAddr, p: Option<u16>| match (a, p) {
            (IpAddr::V6(_), Some(p)) => format!("[{a}]:{p}"),
            (_, Some(p)) => format!("{a}:{p}"),
            (_, None) => a.to_string(),
        };
        format!(
            "{} {} -> {}",
            self.proto,
            ep(&self.local_addr, self.local_port),
            ep(&self.remote_addr, self.remote_port)
        )
    }

    /// What blocked the flow, readable: the ICMP error and its reporter,
    /// the RST's distance, or the lack of an answer.
    pub fn blocked_by(&self) -> String {
        match (self.state, self.icmp_type, self.icmp_code, self.reporter) {
            (State::Unreachable, Some(t), Some(c), Some(r)) => {
                let e = IcmpError {
                    icmp_type: t,
                    icmp_code: c,
                    reporter: r,
                };
                let v6 = self.proto == "icmpv6" || self.remote_addr.is_ipv6();
                format!("ICMP {} (type {t} code {c}) from {r}", e.describe(v6))
            }
            (State::Refused, ..) => match (self.rst_ttl, self.rst_hops) {
                (Some(ttl), Some(h)) => format!(
                    "RST from {h} hop{} away (TTL {ttl})",
                    if h == 1 { "" } else { "s" }
                ),
                _ => "RST".into(),
            },
            (State::Unanswered, ..) => format!("no answer (history {})", self.history),
            _ => format!("history {}", self.history),
        }
    }

    /// One readable line, as printed live for flagged and blocked flows.
    pub fn line(&self) -> String {
        let tags = tag_text(&self.datacenters, &self.purposes);
        let svc = self
            .service_port
            .map(|p| format!("service port {p}"))
            .unwrap_or_else(|| "no service port".into());
        if self.reason == Reason::Blocked {
            return format!(
                "{ts} {state:<15} {flow}  {svc}, {by}, {prefix} [{tags}] on {iface}",
                ts = &self.ts.get(11..19).unwrap_or(&self.ts),
                state = self.state.as_str().to_uppercase(),
                flow = self.flow_id(),
                by = self.blocked_by(),
                prefix = self.prefix,
                iface = self.iface,
            );
        }
        format!(
            "{ts} {verdict:<15} {flow}  {svc}, {opened}, {prefix} [{tags}] on {iface}",
            ts = &self.ts.get(11..19).unwrap_or(&self.ts),
            verdict = self.verdict.to_uppercase(),
            flow = self.flow_id(),
            opened = match self.initiator {
                "unknown" if self.proto == "tcp" => {
                    format!("start not seen, first packet {}", self.first_packet)
                }
                "unknown" => format!("first packet {}", self.first_packet),
                who => format!("opened by {who}"),
            },
            prefix = self.prefix,
            iface = self.iface,
        )
    }
}

fn tag_text(dcs: &[DataCenter], purposes: &[Purpose]) -> String {
    let d: Vec<String> = dcs.iter().map(ToString::to_string).collect();
    let p: Vec<String> = purposes.iter().map(ToString::to_string).collect();
    let d = if d.is_empty() {
        "-".to_string()
    } else {
        d.join(",")
    };
    format!("{d} {}", p.join(","))
}

/// One range in the summary.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RangeRecord {
    /// The prefix.
    pub prefix: String,
    /// Its data centers.
    pub datacenters: Vec<DataCenter>,
    /// Its purposes.
    pub purposes: Vec<Purpose>,
    /// Packets towards it.
    pub packets_out: u64,
    /// Bytes towards it.
    pub bytes_out: u64,
    /// Packets from it.
    pub packets_in: u64,
    /// Bytes from it.
    pub bytes_in: u64,
}

/// The `{"type":"summary"}` record written once at exit.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Always "summary".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When it was written.
    pub ts: String,
    /// Ranges that saw traffic.
    pub ranges: Vec<RangeRecord>,
    /// Flows reported (each flow once, when it ended, expired or at exit).
    pub flows: u64,
    /// Of those, flows whose verdict is `disallowed-port`.
    pub disallowed: u64,
    /// Flow events the kernel could not queue (the flows are still reported).
    pub events_lost: u64,
    /// Truncated or malformed packets passed untouched.
    pub malformed: u64,
    /// Flows evicted from the full kernel flow table before they were
    /// reported (their packets are still in the range counters).
    pub flows_evicted: u64,
    /// Flows the kernel could not insert into its table.
    pub flow_insert_failed: u64,
    /// Records `--log-dir` could not write (full disk, I/O errors); 0
    /// without it. Filled in by [`Output::summary`].
    pub log_records_lost: u64,
    /// Packets seen on the audited interfaces (wire packets).
    pub packets: u64,
    /// Packets to or from a CAS range.
    pub matched: u64,
    /// Non-IP packets (ARP, ...), passed untouched.
    pub not_ip: u64,
    /// CAS packets counted per range only: non-first fragments.
    pub fragments: u64,
    /// CAS packets counted per range only: too many IPv6 extension headers.
    pub ext_header_limit: u64,
    /// ICMP/ICMPv6 destination-unreachable errors attached to the flow they quoted.
    pub icmp_errors: u64,
    /// Such errors about a CAS address whose flow was not in the table.
    pub icmp_unmatched: u64,
    /// Flows reported for good (ended, expired, exit) by their final state.
    pub states: std::collections::BTreeMap<State, u64>,
    /// The address set audited against.
    pub set: String,
    /// Interfaces audited.
    pub interfaces: Vec<String>,
    /// Allowed service ports (for `per-range`, the union over all ranges).
    pub allowed_ports: Vec<u16>,
    /// `global` (one port list for every range) or `per-range` (each range's
    /// purposes decide, with `--set`).
    pub port_policy: &'static str,
}

impl Summary {
    /// Ranges with traffic, from the per-range totals.
    pub fn ranges_with_traffic(
        ranges: &[Range],
        totals: &[cas_audit_common::RangeStats],
    ) -> Vec<RangeRecord> {
        ranges
            .iter()
            .zip(totals)
            .filter(|(_, t)| t.packets_out + t.packets_in > 0)
            .map(|(r, t)| RangeRecord {
                prefix: if r.is_placeholder() {
                    "unknown (dropped before a restart)".into()
                } else {
                    r.prefix.to_string()
                },
                datacenters: r.datacenters.iter().copied().collect(),
                purposes: r.purposes.iter().copied().collect(),
                packets_out: t.packets_out,
                bytes_out: t.bytes_out,
                packets_in: t.packets_in,
                bytes_in: t.bytes_in,
            })
            .collect()
    }

    /// The readable summary: a table of ranges and the totals.
    pub fn table(&self, disallowed: &[FlowRecord]) -> String {
        let mut out = String::new();
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header(vec![
            "CAS range",
            "Data centers",
            "Purposes",
            "Pkts out",
            "Bytes out",
            "Pkts in",
            "Bytes in",
        ]);
        for r in &self.ranges {
            t.add_row(vec![
                Cell::new(&r.prefix),
                Cell::new(join(&r.datacenters)),
                Cell::new(join(&r.purposes)),
                num(r.packets_out),
                num(r.bytes_out),
                num(r.packets_in),
                num(r.bytes_in),
            ]);
        }
        if self.ranges.is_empty() {
            out.push_str("No traffic to or from CAS ranges.\n");
        } else {
            out.push_str(&format!("{t}\n"));
        }
        if !disallowed.is_empty() {
            let mut d = Table::new();
            d.load_preset(UTF8_FULL_CONDENSED);
            d.set_header(vec![
                "Disallowed flow",
                "Service port",
                "Opened by",
                "Range",
                "Pkts out/in",
            ]);
            for f in disallowed {
                let flow = f.flow_id();
                d.add_row(vec![
                    Cell::new(flow),
                    Cell::new(f.service_port.map(|p| p.to_string()).unwrap_or("-".into())),
                    Cell::new(f.initiator),
                    Cell::new(format!(
                        "{} [{}]",
                        f.prefix,
                        tag_text(&f.datacenters, &f.purposes)
                    )),
                    Cell::new(format!("{}/{}", f.packets_out, f.packets_in)),
                ]);
            }
            out.push_str(&format!("{d}\n"));
        }
        out.push_str(&format!(
            "{} flows, {} disallowed; {} packets seen, {} to/from CAS; events lost {}, malformed {}, flows evicted {}\n",
            self.flows, self.disallowed, self.packets, self.matched, self.events_lost, self.malformed, self.flows_evicted
        ));
        if self.log_records_lost > 0 {
            out.push_str(&format!(
                "log records lost: {} (not written to the log directory)\n",
                self.log_records_lost
            ));
        }
        if !self.states.is_empty() {
            let parts: Vec<String> = self
                .states
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect();
            out.push_str(&format!("states: {}\n", parts.join(", ")));
        }
        out
    }
}

fn join<T: ToString>(v: &[T]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn num(n: u64) -> Cell {
    Cell::new(n).set_alignment(CellAlignment::Right)
}

/// Where records go.
pub struct Output {
    json: Option<Box<dyn Write + Send>>,
    /// `--log-dir`: every record too, in rotated files.
    log: Option<LogDir>,
    /// The record being written, as JSON.
    line: Vec<u8>,
    human: bool,
    /// Latest record of each disallowed flow, in the order they were flagged.
    disallowed: Vec<FlowRecord>,
    disallowed_index: HashMap<String, usize>,
}

/// Most disallowed flows kept for the summary table (the JSON has them all).
const MAX_TABLE_FLOWS: usize = 1000;

impl Output {
    /// `json`: the JSON-lines sink, if any; `human`: print readable lines and
    /// the summary table on standard output.
    pub fn new(json: Option<Box<dyn Write + Send>>, human: bool) -> Self {
        Output {
            json,
            log: None,
            line: Vec::new(),
            human,
            disallowed: Vec::new(),
            disallowed_index: HashMap::new(),
        }
    }

    /// Also writes every record into the log directory `log`.
    pub fn with_log_dir(mut self, log: Option<LogDir>) -> Self {
        self.log = log;
        self
    }

    /// Writes one record to the JSON sink and the log directory. Failures
    /// of the log directory are counted there, not returned.
    fn record<T: Serialize>(&mut self, rec: &T) -> io::Result<()> {
        if self.json.is_none() && self.log.is_none() {
            return Ok(());
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, rec)?;
        if let Some(log) = self.log.as_mut() {
            log.write_record(&self.line);
        }
        if let Some(w) = self.json.as_mut() {
            self.line.push(b'\n');
            w.write_all(&self.line)?;
        }
        Ok(())
    }

    /// Writes one flow record (and, for flagged and blocked flows, a
    /// readable line). JSON lines are buffered: call [`Output::flush`] after
    /// a batch.
    pub fn flow(&mut self, rec: &FlowRecord) -> io::Result<()> {
        self.record(rec)?;
        if self.human && rec.reason == Reason::Blocked {
            let mut so = io::stdout().lock();
            writeln!(so, "{}", rec.line())?;
            so.flush()?;
        }
        if rec.verdict == "disallowed-port" {
            if self.human && rec.reason == Reason::Flagged {
                let mut so = io::stdout().lock();
                writeln!(so, "{}", rec.line())?;
                so.flush()?;
            }
            let id = rec.flow_id();
            match self.disallowed_index.get(&id) {
                Some(&i) => self.disallowed[i] = rec.clone(),
                None if self.disallowed.len() < MAX_TABLE_FLOWS => {
                    self.disallowed_index.insert(id, self.disallowed.len());
                    self.disallowed.push(rec.clone());
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Hands buffered JSON lines to the operating system.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(log) = self.log.as_mut() {
            log.flush();
        }
        match self.json.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }

    /// Records the log directory could not write so far (0 without one).
    pub fn log_records_lost(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| l.records_lost())
    }

    /// Writes the summary record (with `log_records_lost` filled in) and
    /// table; the log directory's last file is flushed and fsync'd after it.
    pub fn summary(&mut self, s: &mut Summary) -> io::Result<()> {
        if let Some(log) = self.log.as_mut() {
            log.flush();
            s.log_records_lost = log.records_lost();
        }
        self.record(&*s)?;
        if let Some(log) = self.log.as_mut() {
            log.close();
        }
        if let Some(w) = self.json.as_mut() {
            w.flush()?;
        }
        if self.human {
            let mut so = io::stdout().lock();
            write!(so, "\n{}", s.table(&self.disallowed))?;
            so.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_fixed_width() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_795_000_000_120_000_000).unwrap();
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.120000Z");
        let c = Clock {
            offset_ns: 1_000_000_000,
        };
        assert_eq!(rfc3339(c.wall(5_000_000)), "1970-01-01T00:00:01.005000Z");
    }
}
