//! The JSON-lines records: one set of serde types, written by `run` and
//! `check` and read back by `report`. A public contract: field names are
//! stable, fields may be added; records written by older versions (fields
//! missing) still read.
//!
//! Every record is an object with a `type`: `flow`, `summary`, `check` or
//! `check-summary` ([`Record`]).

use std::{collections::BTreeMap, fmt, net::IpAddr};

use cas_audit_common::{Counters, Direction, RangeStats};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::bounded::SinkCounts;
pub use super::check_record::{CheckRecord, CheckResult, CheckSummary};
use crate::{
    addrset::{DataCenter, Purpose, Range},
    flow::{
        endpoint,
        evidence::{self, history_string, hops_from_ttl, IcmpError},
        flag_names, has_ports,
        nat::NatKind,
        Flow, Initiator, Proto, Reason, State, Verdict,
    },
    host::clock::{rfc3339, Clock},
};

/// A wall-clock time, written as RFC 3339 in UTC with exactly six
/// fractional digits (`2026-11-22T06:11:56.393825Z`) so that timestamps
/// also sort as text; read from any RFC 3339 time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub OffsetDateTime);

impl Timestamp {
    /// Now.
    pub fn now() -> Timestamp {
        Timestamp(OffsetDateTime::now_utc())
    }
}

impl Default for Timestamp {
    fn default() -> Self {
        Timestamp(OffsetDateTime::UNIX_EPOCH)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&rfc3339(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Timestamp {
    /// The form this type writes (`2026-11-22T06:11:56.393825Z`), read
    /// without the general RFC 3339 parser: `report` reads three per
    /// record, millions of records. `None` for any other form.
    fn parse_written(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        if b.len() != 27 || b[26] != b'Z' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            b[r].iter().try_fold(0u32, |n, c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        let seps = [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
        ];
        if seps.iter().any(|&(i, c)| b[i] != c) {
            return None;
        }
        let month = time::Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
        let date =
            time::Date::from_calendar_date(num(0..4)? as i32, month, num(8..10)? as u8).ok()?;
        let t = time::Time::from_hms_micro(
            num(11..13)? as u8,
            num(14..16)? as u8,
            num(17..19)? as u8,
            num(20..26)?,
        )
        .ok()?;
        Some(Timestamp(date.with_time(t).assume_utc()))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if let Some(t) = Timestamp::parse_written(&s) {
            return Ok(t);
        }
        OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
            .map(Timestamp)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time")))
    }
}

/// A union of TCP flags ([`cas_audit_common::tcp_flags`] bits), written as
/// their names in header bit order (`["FIN","SYN","ACK"]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u32);

impl Serialize for TcpFlags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(flag_names(self.0))
    }
}

impl<'de> Deserialize<'de> for TcpFlags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than a Vec of names: `report` reads two lists
        // per record, millions of records.
        struct Names;
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = TcpFlags;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of TCP flag names")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TcpFlags, A::Error> {
                let mut bits = 0;
                while let Some(n) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
                    let (b, _) = cas_audit_common::tcp_flags::NAMES
                        .iter()
                        .find(|(_, name)| *name == n)
                        .ok_or_else(|| {
                            serde::de::Error::custom(format!("unknown TCP flag {n:?}"))
                        })?;
                    bits |= b;
                }
                Ok(TcpFlags(bits))
            }
        }
        d.deserialize_seq(Names)
    }
}

/// Any record, by its `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Record {
    /// A flow (`run`).
    Flow(FlowRecord),
    /// The end of a `run`.
    Summary(Summary),
    /// One destination of a `check`.
    Check(CheckRecord),
    /// The end of a `check`.
    CheckSummary(CheckSummary),
}

/// A borrowed record, for writing without a copy.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RecordRef<'a> {
    /// A flow.
    Flow(&'a FlowRecord),
    /// A run's summary.
    Summary(&'a Summary),
    /// A check's destination.
    Check(&'a CheckRecord),
    /// A check's summary.
    CheckSummary(&'a CheckSummary),
}

/// A `{"type":"flow"}` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// When the record was written.
    pub ts: Timestamp,
    /// Why it was written.
    pub reason: Reason,
    /// The flow's stable id ([`crate::flow::flow_id`]): the same in each of
    /// its records, its IPFIX data records and syslog messages; 0 in
    /// records written before it existed.
    #[serde(default)]
    pub flow_id: u64,
    /// Milliseconds from the flow's first packet to its last.
    #[serde(default)]
    pub duration_ms: u64,
    /// The host name of the machine that wrote the record.
    #[serde(default)]
    pub host: String,
    /// What happened to the flow (absent in records before 2026-11).
    #[serde(default)]
    pub state: Option<State>,
    /// Zeek-style history (see [`crate::flow::state`]).
    #[serde(default)]
    pub history: String,
    /// Type of the ICMP/ICMPv6 error that quoted the flow; null without one.
    #[serde(default)]
    pub icmp_type: Option<u8>,
    /// Its code; null without one.
    #[serde(default)]
    pub icmp_code: Option<u8>,
    /// Who sent the error (router, firewall, or the CAS host); null without one.
    #[serde(default)]
    pub reporter: Option<IpAddr>,
    /// IP TTL / hop limit of the remote side's first RST; null without one.
    #[serde(default)]
    pub rst_ttl: Option<u8>,
    /// Hops to the sender of that RST, estimated from its TTL (1: a
    /// neighbour); a firewall answering for the destination is usually closer.
    #[serde(default)]
    pub rst_hops: Option<u8>,
    /// Interface name: the first the flow was seen on (see `interfaces`).
    pub iface: String,
    /// Every audited interface the flow was seen on, in order of first
    /// sight (absent in records before 2026-12).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or the protocol number.
    pub proto: Proto,
    /// Host-side address.
    pub local_addr: IpAddr,
    /// Host-side port; null for protocols without ports.
    #[serde(default)]
    pub local_port: Option<u16>,
    /// What connection tracking says of the local side: `none` (tracked, not
    /// translated), `snat` (the local side was translated on the way out:
    /// masquerade, snat), `dnat` (the CAS side connected to `nat_addr`,
    /// forwarded to the local side), `unknown` (conntrack has no entry: no
    /// connection tracking here, or the entry was gone before the agent
    /// asked; `local_*` is then the address the datapath saw).
    #[serde(default)]
    pub nat: NatKind,
    /// The translated local side: the address the CAS side saw (snat) or
    /// connected to (dnat); null without NAT or when conntrack cannot say.
    #[serde(default)]
    pub nat_addr: Option<IpAddr>,
    /// Its port; null as `nat_addr`.
    #[serde(default)]
    pub nat_port: Option<u16>,
    /// CAS-side address.
    pub remote_addr: IpAddr,
    /// CAS-side port; null for protocols without ports.
    #[serde(default)]
    pub remote_port: Option<u16>,
    /// `local`, `remote` or `unknown`.
    pub initiator: Initiator,
    /// Direction of the first packet seen: `out` or `in`.
    #[serde(with = "direction")]
    pub first_packet: Direction,
    /// The port the conversation is for; null for protocols without ports.
    #[serde(default)]
    pub service_port: Option<u16>,
    /// The CAS range the remote address is in ("" when a restart lost it).
    #[serde(default)]
    pub prefix: String,
    /// Data centers of the range.
    #[serde(default)]
    pub datacenters: Vec<DataCenter>,
    /// Purposes of the range.
    #[serde(default)]
    pub purposes: Vec<Purpose>,
    /// The name the client asked DNS for when the remote address came in
    /// an answer to one of the set's names (learned, or in a listed
    /// range); null when none was seen.
    #[serde(default)]
    pub dns_name: Option<String>,
    /// The server name of the flow's TLS ClientHello (SNI); null when none
    /// was seen (not TLS to port 443, started before the agent, no SNI).
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// `allowed` or `disallowed-port`.
    pub verdict: Verdict,
    /// Wire packets local → remote.
    pub packets_out: u64,
    /// Bytes local → remote.
    pub bytes_out: u64,
    /// Wire packets remote → local.
    pub packets_in: u64,
    /// Bytes remote → local.
    pub bytes_in: u64,
    /// TCP flags seen local → remote.
    #[serde(default)]
    pub tcp_flags_out: TcpFlags,
    /// TCP flags seen remote → local.
    #[serde(default)]
    pub tcp_flags_in: TcpFlags,
    /// First packet.
    pub first_seen: Timestamp,
    /// Last packet.
    pub last_seen: Timestamp,
}

/// `out` / `in` for [`Direction`].
mod direction {
    use cas_audit_common::Direction;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Direction, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match d {
            Direction::Out => "out",
            Direction::In => "in",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Direction, D::Error> {
        match <std::borrow::Cow<'de, str>>::deserialize(d)?.as_ref() {
            "out" => Ok(Direction::Out),
            "in" => Ok(Direction::In),
            other => Err(serde::de::Error::custom(format!(
                "direction {other:?} is neither \"out\" nor \"in\""
            ))),
        }
    }
}

impl FlowRecord {
    /// Builds the record of `flow`, whose remote address is in `range`,
    /// seen by `host` on `ifaces` (names, in order of first sight); kernel
    /// times become wall times through `clock`.
    pub fn new(
        flow: &Flow,
        range: Option<&Range>,
        (host, ifaces): (&str, &[String]),
        clock: &Clock,
        reason: Reason,
        state: State,
    ) -> Self {
        let ports = has_ports(flow.key.proto);
        let icmp = IcmpError::of(&flow.stats);
        let rst_ttl = (flow.stats.rst_ttl != 0).then_some(flow.stats.rst_ttl);
        FlowRecord {
            ts: Timestamp::now(),
            reason,
            flow_id: flow.id(),
            duration_ms: flow
                .stats
                .last_seen_ns
                .saturating_sub(flow.stats.first_seen_ns)
                / 1_000_000,
            host: host.to_string(),
            state: Some(state),
            history: history_string(&flow.stats),
            icmp_type: icmp.map(|e| e.icmp_type),
            icmp_code: icmp.map(|e| e.icmp_code),
            reporter: icmp.map(|e| e.reporter),
            rst_ttl,
            rst_hops: rst_ttl.map(hops_from_ttl),
            iface: ifaces.first().cloned().unwrap_or_default(),
            interfaces: ifaces.to_vec(),
            proto: Proto(flow.key.proto),
            local_addr: flow.local_addr,
            local_port: ports.then_some(flow.key.local_port),
            nat: flow.nat.kind,
            nat_addr: flow.nat.translated.map(|t| t.0),
            nat_port: flow.nat.translated.filter(|_| ports).map(|t| t.1),
            remote_addr: flow.remote_addr,
            remote_port: ports.then_some(flow.key.remote_port),
            initiator: flow.initiator,
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
            dns_name: None,
            tls_server_name: None,
            verdict: flow.verdict,
            packets_out: flow.stats.packets_out,
            bytes_out: flow.stats.bytes_out,
            packets_in: flow.stats.packets_in,
            bytes_in: flow.stats.bytes_in,
            tcp_flags_out: TcpFlags(flow.stats.tcp_flags_out),
            tcp_flags_in: TcpFlags(flow.stats.tcp_flags_in),
            first_seen: Timestamp(clock.wall(flow.stats.first_seen_ns)),
            last_seen: Timestamp(clock.wall(flow.stats.last_seen_ns)),
        }
    }

    /// `proto local -> remote`, naming the conversation in tables and
    /// lines; behind NAT with the translated side: `(as 203.0.113.1:40001)`
    /// after source NAT, `(via 203.0.113.1:11344)` after a port forward.
    pub fn conversation(&self) -> String {
        let nat = match (self.nat, self.nat_addr) {
            (NatKind::Snat, Some(a)) => format!(" (as {})", endpoint(a, self.nat_port)),
            (NatKind::Dnat, Some(a)) => format!(" (via {})", endpoint(a, self.nat_port)),
            _ => String::new(),
        };
        format!(
            "{} {}{nat} -> {}",
            self.proto,
            endpoint(self.local_addr, self.local_port),
            endpoint(self.remote_addr, self.remote_port)
        )
    }

    /// The interfaces the flow was seen on, `inside+uplink`.
    pub fn interfaces_text(&self) -> String {
        if self.interfaces.is_empty() {
            self.iface.clone()
        } else {
            self.interfaces.join("+")
        }
    }

    /// The ICMP error recorded for the flow, if any.
    pub fn icmp_error(&self) -> Option<IcmpError> {
        match (self.icmp_type, self.icmp_code, self.reporter) {
            (Some(icmp_type), Some(icmp_code), Some(reporter)) => Some(IcmpError {
                icmp_type,
                icmp_code,
                reporter,
            }),
            _ => None,
        }
    }

    /// What blocked the flow, readable: the ICMP error and its reporter,
    /// the RST's distance ([`evidence::blocked_by`]), or the lack of an
    /// answer.
    pub fn blocked_by(&self) -> String {
        let v6 = self.proto.0 == cas_audit_common::proto::ICMPV6 || self.remote_addr.is_ipv6();
        let seen = match self.state {
            Some(State::Unreachable) => evidence::blocked_by(self.icmp_error(), None, v6),
            Some(State::Refused) => match evidence::blocked_by(None, self.rst_ttl, v6) {
                Some(t) => Some(t),
                None => Some("RST".into()),
            },
            _ => None,
        };
        match (seen, self.state) {
            (Some(t), _) => t,
            (None, Some(State::Unanswered)) => format!("no answer (history {})", self.history),
            _ => format!("history {}", self.history),
        }
    }
}

/// One range in the summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RangeRecord {
    /// The prefix.
    pub prefix: String,
    /// Its data centers.
    #[serde(default)]
    pub datacenters: Vec<DataCenter>,
    /// Its purposes.
    #[serde(default)]
    pub purposes: Vec<Purpose>,
    /// For a learned address: the name it was learned as (absent for
    /// listed ranges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// Packets towards it.
    pub packets_out: u64,
    /// Bytes towards it.
    pub bytes_out: u64,
    /// Packets from it.
    pub packets_in: u64,
    /// Bytes from it.
    pub bytes_in: u64,
}

/// What the prefix of a range whose id a restart kept without its prefix
/// reads as.
pub const DROPPED_RANGE: &str = "unknown (dropped before a restart)";

/// `global` (one port list for every range) or `per-range` (each range's
/// purposes decide, with `--set`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortPolicyKind {
    /// One list for every range.
    #[default]
    Global,
    /// Each range's own ports.
    PerRange,
}

/// The `{"type":"summary"}` record written once at exit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// When it was written.
    #[serde(default)]
    pub ts: Timestamp,
    /// Ranges that saw traffic.
    #[serde(default)]
    pub ranges: Vec<RangeRecord>,
    /// Flows reported (each flow once, when it ended, expired or at exit).
    #[serde(default)]
    pub flows: u64,
    /// Of those, flows whose verdict is `disallowed-port`.
    #[serde(default)]
    pub disallowed: u64,
    /// Flows evicted from the full kernel flow table before they were
    /// reported (their packets are still in the range counters).
    #[serde(default)]
    pub flows_evicted: u64,
    /// Records `--log-dir` could not write (full disk, I/O errors, or its
    /// queue full while the disk was behind); 0 without it. Filled in by
    /// the sink that writes the summary.
    #[serde(default)]
    pub log_records_lost: u64,
    /// Per sink: items sent and dropped, for the exports (`ipfix`: flows,
    /// `syslog`: messages) and the local outputs (`json`, `lines`: the
    /// readable lines, `log_dir`: records; a drop is a record its queue
    /// could not hold while the writer was behind, or one still queued at
    /// exit). Filled in by the sink that writes the summary, with the
    /// counts before the summary itself.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkCounts>,
    /// Ring records (flag events, ended flows) of flows already reported
    /// for good or forgotten, queued while the agent was paused or behind:
    /// dropped, so that nothing follows a flow's final record.
    #[serde(default)]
    pub events_stale: u64,
    /// The kernel counters (`packets`, `matched`, `malformed`, `not_ip`,
    /// `fragments`, `ext_header_limit`, `events_lost`, `flows_created`,
    /// `flow_insert_failed`, `events`, `icmp_errors`, `icmp_unmatched`).
    #[serde(flatten)]
    pub counters: Counters,
    /// Flows reported for good (ended, expired, exit) by their final state.
    #[serde(default)]
    pub states: BTreeMap<State, u64>,
    /// The address set audited against.
    #[serde(default)]
    pub set: String,
    /// Interfaces audited.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Allowed service ports (for `per-range`, the union over all ranges).
    #[serde(default)]
    pub allowed_ports: Vec<u16>,
    /// Whose ports apply.
    #[serde(default)]
    pub port_policy: PortPolicyKind,
    /// Names learned from DNS answers and ClientHellos.
    #[serde(default)]
    pub learned: LearnedSummary,
    /// Interface gaps and what the metrics endpoint refused.
    #[serde(flatten)]
    pub watch: WatchCounts,
}

/// How the agent kept watching: the summary's interface-gap and listener
/// fields (flattened into it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WatchCounts {
    /// Times an audited interface lost its programs: its device was
    /// removed (`RTM_DELLINK`). Each gap lasts until the programs are on
    /// the interface of that name again, or until exit.
    pub interface_gaps: u64,
    /// Milliseconds during which an interface of an audited name existed
    /// without the programs: from the `RTM_NEWLINK` of its creation, as the
    /// agent read it, to the attach (the kernel created it a little
    /// earlier: a lower bound).
    pub interface_uncovered_ms: u64,
    /// Connections to `--metrics` closed at once: the most served at once
    /// were open.
    pub metrics_connections_refused: u64,
    /// Connections to `--metrics` closed because the client was too slow.
    pub metrics_connections_timed_out: u64,
    /// Requests to `--metrics` whose head was too long.
    pub metrics_requests_too_large: u64,
    /// Failed accepts on `--metrics` (descriptors, memory), each followed
    /// by a pause.
    pub metrics_accept_errors: u64,
}

/// What the agent learned from DNS answers and ClientHellos (the
/// `learned` object of the summary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedSummary {
    /// Addresses the learned table holds at most (`--max-learned`).
    #[serde(default)]
    pub capacity: u64,
    /// Answers (an address of one of the set's names) learned or refreshed.
    #[serde(default)]
    pub answers: u64,
    /// Addresses put into the tries as learned ranges.
    #[serde(default)]
    pub added: u64,
    /// Of those, addresses whose lifetime ended (taken out of the tries).
    #[serde(default)]
    pub expired: u64,
    /// Answer addresses in a listed range (they keep it; only the name is kept).
    #[serde(default)]
    pub listed: u64,
    /// Addresses not learned because the table was full.
    #[serde(default)]
    pub overflow: u64,
    /// Payloads handed over that were no readable DNS response or
    /// ClientHello (cut before their question, garbage on port 53 or 443).
    #[serde(default)]
    pub unreadable: u64,
}

impl Summary {
    /// Ranges with traffic, from the per-range totals (range id = index).
    pub fn ranges_with_traffic(ranges: &[Range], totals: &[RangeStats]) -> Vec<RangeRecord> {
        ranges
            .iter()
            .zip(totals)
            .filter(|(_, t)| t.packets_out > 0 || t.packets_in > 0)
            .map(|(r, t)| RangeRecord {
                prefix: if r.is_placeholder() {
                    DROPPED_RANGE.into()
                } else {
                    r.prefix.to_string()
                },
                datacenters: r.datacenters.iter().copied().collect(),
                purposes: r.purposes.iter().copied().collect(),
                dns_name: None,
                packets_out: t.packets_out,
                bytes_out: t.bytes_out,
                packets_in: t.packets_in,
                bytes_in: t.bytes_in,
            })
            .collect()
    }
}

/// A refused TCP flow to a disallowed port, for the sinks' tests.
#[cfg(test)]
pub(crate) fn sample_flow() -> FlowRecord {
    serde_json::from_value(serde_json::json!({
        "ts": "2026-11-22T06:11:56.393825Z", "reason": "ended", "flow_id": 1234567890123_u64,
        "duration_ms": 1500, "host": "gw1", "state": "refused", "history": "Sr",
        "icmp_type": null, "icmp_code": null, "reporter": null, "rst_ttl": 63, "rst_hops": 2,
        "iface": "uplink", "proto": "tcp", "local_addr": "198.51.100.2", "local_port": 40000,
        "remote_addr": "13.64.196.27", "remote_port": 8443, "initiator": "local",
        "first_packet": "out", "service_port": 8443, "prefix": "13.64.196.27/32",
        "datacenters": ["US1"], "purposes": ["app-connector", "dlp"],
        "verdict": "disallowed-port", "packets_out": 3, "bytes_out": 222, "packets_in": 1,
        "bytes_in": 54, "tcp_flags_out": ["SYN"], "tcp_flags_in": ["RST", "ACK"],
        "first_seen": "2026-11-22T06:11:54.000000Z", "last_seen": "2026-11-22T06:11:55.500000Z"
    }))
    .expect("a valid flow record")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_audit_common::Counter;

    #[test]
    fn every_counter_is_a_summary_field_by_its_one_name() {
        let mut s = Summary::default();
        for c in Counter::ALL {
            s.counters.0[c as usize] = c as u64 + 100;
        }
        let v = serde_json::to_value(RecordRef::Summary(&s)).unwrap();
        assert_eq!(v["type"], "summary");
        for c in Counter::ALL {
            assert_eq!(v[c.name()], c as u64 + 100, "{}", c.name());
        }
        let back: Record = serde_json::from_value(v).unwrap();
        let Record::Summary(back) = back else {
            panic!("not a summary")
        };
        assert_eq!(back.counters, s.counters);
    }

    #[test]
    fn timestamps_and_flags_round_trip() {
        let t = Timestamp(
            OffsetDateTime::from_unix_timestamp_nanos(1_795_000_000_120_000_000).unwrap(),
        );
        let j = serde_json::to_string(&t).unwrap();
        assert_eq!(j, "\"2026-11-18T11:06:40.120000Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&j).unwrap(), t);
        // The fast path reads what the general parser reads, and leaves
        // every other form to it.
        for text in [
            "2026-11-18T11:06:40.120000Z",
            "1999-12-31T23:59:59.999999Z",
            "2024-02-29T00:00:00.000001Z",
        ] {
            let general =
                OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .unwrap();
            assert_eq!(
                Timestamp::parse_written(text),
                Some(Timestamp(general)),
                "{text}"
            );
        }
        for other in [
            "2026-11-18T12:06:40.120000+01:00",
            "2026-11-18T11:06:40Z",
            "2026-02-30T11:06:40.120000Z",
            "2026-11-18T11:06:4x.120000Z",
            "2026-11-18 11:06:40.120000Z",
        ] {
            assert_eq!(Timestamp::parse_written(other), None, "{other}");
        }
        assert_eq!(
            serde_json::from_str::<Timestamp>("\"2026-11-18T12:06:40.120000+01:00\"").unwrap(),
            t
        );
        let f = TcpFlags(cas_audit_common::tcp_flags::SYN | cas_audit_common::tcp_flags::ACK);
        let j = serde_json::to_string(&f).unwrap();
        assert_eq!(j, "[\"SYN\",\"ACK\"]");
        assert_eq!(serde_json::from_str::<TcpFlags>(&j).unwrap(), f);
        assert!(serde_json::from_str::<TcpFlags>("[\"XMAS\"]").is_err());
    }
}

#[cfg(test)]
mod schema {
    use super::{RecordRef, Summary};

    /// The published JSON Schema of the records.
    fn published() -> serde_json::Value {
        serde_json::from_str(include_str!("../../../schema/cas-audit-run.schema.json"))
            .expect("the schema is JSON")
    }

    /// Every field of the summary record as the agent writes it (each
    /// kernel counter by its one name included) is a property of the
    /// published schema, and a required one, and so is the name of every
    /// sink in `sinks`: a new field, counter or sink cannot be forgotten.
    #[test]
    fn the_published_schema_has_every_summary_field_and_sink() {
        let schema = published();
        let summary = &schema["$defs"]["summary"];
        let written = serde_json::to_value(RecordRef::Summary(&Summary::default())).unwrap();
        let required = summary["required"].as_array().unwrap();
        for field in written.as_object().unwrap().keys() {
            assert!(
                summary["properties"].get(field).is_some(),
                "{field} missing from the summary's properties"
            );
            assert!(
                required.iter().any(|r| r == field),
                "{field} missing from the summary's required fields"
            );
        }
        let names = summary["properties"]["sinks"]["propertyNames"]["enum"]
            .as_array()
            .unwrap();
        for sink in ["ipfix", "syslog", "json", "lines", "log_dir"] {
            assert!(names.iter().any(|n| n == sink), "sink {sink} missing");
        }
    }
}
