//! Syslog messages of flow records.
//!
//! Every message is RFC 5424 (`<PRI>1 TIMESTAMP HOST cas-audit PID MSGID
//! SD MSG`; header and structured data by the `fasyslog` crate), with the
//! record's `reason` as MSGID, facility `auth` (4, security/authorization)
//! and a severity from [`severity`]. Its body is either
//!
//! - `rfc5424`: the record's fields as the structured-data element
//!   `cas-audit@32473` (parameter names as in the JSON lines) and the
//!   readable line as MSG, or
//! - `cef`: no structured data, and a CEF event (ArcSight Common Event
//!   Format, version 0) as MSG, with the standard keys and `cs1`–`cs6`,
//!   `cn1`–`cn3` labelled; see [`cef`].
//!
//! 32473 is RFC 5612's enterprise number for documentation: the SD-ID is
//! **experimental** (as the IPFIX enterprise elements, [`ENTERPRISE`]).

use std::fmt::Write as _;

use fasyslog::{Facility, SDElement, Severity};

use crate::{
    flow::{Reason, State, Verdict},
    output::{
        human::{datacenters_text, flow_line, purposes_text, LineTime},
        ipfix::encode::ENTERPRISE,
        record::FlowRecord,
    },
};

/// The facility of every message: security/authorization (4).
pub const FACILITY: Facility = Facility::AUTH;
/// The APP-NAME of every message, and the CEF device vendor and product.
pub const APP_NAME: &str = "cas-audit";

/// What the messages say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Readable text with the record as RFC 5424 structured data.
    #[default]
    Rfc5424,
    /// A CEF event in an RFC 5424 message.
    Cef,
}

impl Format {
    /// The name `--syslog-format` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Rfc5424 => "rfc5424",
            Format::Cef => "cef",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        [Format::Rfc5424, Format::Cef]
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("{s:?}: expected rfc5424 or cef"))
    }
}

/// The CEF severity (0–10) and syslog severity of a flow:
///
/// | verdict | state | CEF | syslog |
/// |---|---|---|---|
/// | `disallowed-port` | answered (`established`, `closed`, `reset`): traffic on a port the requirements do not allow got through | 8 | warning (4) |
/// | `disallowed-port` | `pending` (no answer yet) | 6 | warning (4) |
/// | `disallowed-port` | blocked (`unanswered`, `refused`, `unreachable`) | 3 | notice (5) |
/// | `allowed` | blocked: required CAS traffic does not get through | 7 | warning (4) |
/// | `allowed` | otherwise | 1 | informational (6) |
pub fn severity(verdict: Verdict, state: Option<State>) -> (u8, Severity) {
    let blocked = state.is_some_and(State::is_blocked);
    match (verdict, state) {
        (Verdict::DisallowedPort, _) if blocked => (3, Severity::NOTICE),
        (Verdict::DisallowedPort, Some(State::Pending) | None) => (6, Severity::WARNING),
        (Verdict::DisallowedPort, _) => (8, Severity::WARNING),
        (Verdict::Allowed, _) if blocked => (7, Severity::WARNING),
        (Verdict::Allowed, _) => (1, Severity::INFORMATIONAL),
    }
}

/// The whole RFC 5424 message (without transport framing).
pub fn message(ctx: &fasyslog::format::SyslogContext, format: Format, rec: &FlowRecord) -> String {
    let (_, sev) = severity(rec.verdict, rec.state);
    let msgid = Some(reason_str(rec.reason));
    match format {
        Format::Rfc5424 => ctx
            .format_rfc5424(
                sev,
                msgid,
                vec![structured(rec)],
                Some(flow_line(rec, &LineTime::utc())),
            )
            .to_string(),
        Format::Cef => ctx
            .format_rfc5424(sev, msgid, Vec::new(), Some(cef(rec)))
            .to_string(),
    }
}

fn reason_str(r: Reason) -> &'static str {
    match r {
        Reason::Flagged => "flagged",
        Reason::Blocked => "blocked",
        Reason::Ended => "ended",
        Reason::Expired => "expired",
        Reason::Exit => "exit",
    }
}

/// The record as the element `cas-audit@32473`, parameters named as the
/// JSON fields.
fn structured(rec: &FlowRecord) -> SDElement {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let params: [(&str, String); 22] = [
        ("flow_id", rec.flow_id.to_string()),
        ("verdict", rec.verdict.as_str().into()),
        ("state", opt(rec.state.map(|s| s.as_str().into()))),
        ("proto", rec.proto.to_string()),
        ("local_addr", rec.local_addr.to_string()),
        ("local_port", opt(rec.local_port.map(|p| p.to_string()))),
        ("remote_addr", rec.remote_addr.to_string()),
        ("remote_port", opt(rec.remote_port.map(|p| p.to_string()))),
        ("service_port", opt(rec.service_port.map(|p| p.to_string()))),
        ("iface", rec.iface.clone()),
        ("prefix", rec.prefix.clone()),
        ("datacenters", datacenters_text(&rec.datacenters, ",")),
        ("purposes", purposes_text(&rec.purposes)),
        ("history", rec.history.clone()),
        ("packets_out", rec.packets_out.to_string()),
        ("bytes_out", rec.bytes_out.to_string()),
        ("packets_in", rec.packets_in.to_string()),
        ("bytes_in", rec.bytes_in.to_string()),
        ("duration_ms", rec.duration_ms.to_string()),
        ("reporter", opt(rec.reporter.map(|a| a.to_string()))),
        ("dns_name", opt(rec.dns_name.clone())),
        ("tls_server_name", opt(rec.tls_server_name.clone())),
    ];
    let id = format!("{APP_NAME}@{ENTERPRISE}");
    let mut e = SDElement::new(id).expect("a valid SD-ID");
    for (name, value) in params {
        e.add_param(name, value).expect("a valid PARAM-NAME");
    }
    e
}

/// A CEF header field: on one line (control characters written as
/// [`crate::text::one_line`] does), then `\` and `|` escaped.
fn cef_header(s: &str) -> String {
    crate::text::one_line(s)
        .replace('\\', "\\\\")
        .replace('|', "\\|")
}

/// A CEF extension value: control characters other than the line feed
/// and tab (a terminal escape sequence in an interface name, a carriage
/// return) written visibly ([`crate::text::terminal`]), then `\` and `=`
/// escaped and line feeds written `\n`.
fn cef_value(s: &str) -> String {
    crate::text::terminal(s)
        .replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\n', "\\n")
}

/// The CEF event (`CEF:0|cas-audit|cas-audit|VERSION|REASON|NAME|SEVERITY|EXTENSION`):
///
/// - source and destination (`src`, `spt`, `dst`, `dpt`) are the side that
///   sent the first packet and the other; `deviceDirection` 1 when that is
///   the local side (outbound), 0 otherwise; `in` / `out` the bytes from
///   and to the CAS side;
/// - `proto` (TCP, UDP, ICMP, ICMPV6 or the number), `rt` (record time),
///   `start` / `end` (first and last packet; milliseconds since the
///   epoch), `dvchost` (the agent's host), `deviceInboundInterface` (the
///   audited interface), `externalId` (the `flow_id`), `reason`, `msg`;
/// - `act`: `blocked` (unanswered, refused, unreachable), `passed`
///   (established, closed, reset) or `observed` (pending); `outcome`:
///   `failure`, `success` or `unknown` alike;
/// - `cs1` verdict, `cs2` state, `cs3` data centers, `cs4` purposes,
///   `cs5` history, `cs6` CAS prefix; `cn1` service port, `cn2` packets
///   out, `cn3` packets in; each with its `…Label`.
pub fn cef(rec: &FlowRecord) -> String {
    let (sev, _) = severity(rec.verdict, rec.state);
    let name = match rec.reason {
        Reason::Flagged => "CAS flow on a port not allowed".to_string(),
        Reason::Blocked => format!(
            "CAS flow blocked: {}",
            rec.state.map_or("unknown", |s| s.as_str())
        ),
        r => format!(
            "CAS flow {}: {}",
            reason_str(r),
            rec.state.map_or("unknown", |s| s.as_str())
        ),
    };
    let outbound = rec.first_packet == cas_audit_common::Direction::Out;
    let local = (rec.local_addr, rec.local_port);
    let remote = (rec.remote_addr, rec.remote_port);
    let (src, dst) = if outbound {
        (local, remote)
    } else {
        (remote, local)
    };
    let (act, outcome) = match rec.state {
        Some(s) if s.is_blocked() => ("blocked", "failure"),
        Some(State::Pending) | None => ("observed", "unknown"),
        Some(_) => ("passed", "success"),
    };
    let ms = |t: &crate::output::record::Timestamp| t.0.unix_timestamp_nanos() / 1_000_000;
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", ms(&rec.ts).to_string()),
        ("start", ms(&rec.first_seen).to_string()),
        ("end", ms(&rec.last_seen).to_string()),
        ("src", src.0.to_string()),
    ];
    if let Some(p) = src.1 {
        ext.push(("spt", p.to_string()));
    }
    ext.push(("dst", dst.0.to_string()));
    if let Some(p) = dst.1 {
        ext.push(("dpt", p.to_string()));
    }
    ext.extend([
        ("proto", rec.proto.to_string().to_uppercase()),
        ("deviceDirection", u8::from(outbound).to_string()),
        ("in", rec.bytes_in.to_string()),
        ("out", rec.bytes_out.to_string()),
        ("act", act.into()),
        ("outcome", outcome.into()),
        ("reason", reason_str(rec.reason).into()),
        ("dvchost", rec.host.clone()),
        ("deviceInboundInterface", rec.iface.clone()),
        ("externalId", rec.flow_id.to_string()),
        ("cs1Label", "verdict".into()),
        ("cs1", rec.verdict.as_str().into()),
        ("cs2Label", "state".into()),
        ("cs2", rec.state.map_or("", |s| s.as_str()).into()),
        ("cs3Label", "datacenters".into()),
        ("cs3", datacenters_text(&rec.datacenters, ",")),
        ("cs4Label", "purposes".into()),
        ("cs4", purposes_text(&rec.purposes)),
        ("cs5Label", "history".into()),
        ("cs5", rec.history.clone()),
        ("cs6Label", "casPrefix".into()),
        ("cs6", rec.prefix.clone()),
    ]);
    if let Some(p) = rec.service_port {
        ext.extend([("cn1Label", "servicePort".into()), ("cn1", p.to_string())]);
    }
    // destinationDnsDomain: the CAS side's DNS name, else the ClientHello's
    // server name.
    if let Some(n) = rec.dns_name.as_ref().or(rec.tls_server_name.as_ref()) {
        ext.push(("destinationDnsDomain", n.clone()));
    }
    ext.extend([
        ("cn2Label", "packetsOut".into()),
        ("cn2", rec.packets_out.to_string()),
        ("cn3Label", "packetsIn".into()),
        ("cn3", rec.packets_in.to_string()),
        ("msg", flow_line(rec, &LineTime::utc())),
    ]);
    let mut s = format!(
        "CEF:0|{v}|{v}|{ver}|{class}|{name}|{sev}|",
        v = cef_header(APP_NAME),
        ver = cef_header(env!("CARGO_PKG_VERSION")),
        class = reason_str(rec.reason),
        name = cef_header(&name),
    );
    for (i, (k, v)) in ext.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{k}={}", cef_value(v));
    }
    s
}
