//! Readable output: the live line of a flagged or blocked flow, the
//! summary tables of `run`, and the cell helpers every table uses.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};

use super::record::{FlowRecord, Summary};
use crate::{
    addrset::{datacenter_text, DataCenter, Purpose},
    flow::{Initiator, Proto, Reason},
};

/// A table in the one style every command uses.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    t
}

/// A right-aligned number cell.
pub fn num(n: impl Into<u64>) -> Cell {
    Cell::new(n.into()).set_alignment(CellAlignment::Right)
}

/// `a, b, c`, or `-` for an empty list.
pub fn list<T: ToString>(v: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = v.into_iter().map(|x| x.to_string()).collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

/// The data centers of a range as text: their names, or
/// [`crate::addrset::NO_DATACENTER`] for a range every data center uses.
pub fn datacenters_text(dcs: &[DataCenter], sep: &str) -> String {
    if dcs.is_empty() {
        datacenter_text(None).into_owned()
    } else {
        dcs.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(sep)
    }
}

/// `portal,siem-agent`: the purposes of a range.
pub fn purposes_text(purposes: &[Purpose]) -> String {
    let p: Vec<&str> = purposes.iter().map(|p| p.as_str()).collect();
    p.join(",")
}

/// `US1,EU1 portal,siem-agent`: data centers, then purposes.
pub fn tag_text(dcs: &[DataCenter], purposes: &[Purpose]) -> String {
    format!("{} {}", datacenters_text(dcs, ","), purposes_text(purposes))
}

/// How live lines write the time: the date, the time and the offset from
/// UTC (`2026-11-22 07:15:38+01:00`), in the system's time zone (`TZ`, an
/// IANA name or a POSIX TZ string, else `/etc/localtime`; see tzset(3)) or
/// in UTC (`run --utc`).
#[derive(Debug, Clone)]
pub struct LineTime(jiff::tz::TimeZone);

impl LineTime {
    /// The system's time zone (UTC when it cannot be found).
    pub fn local() -> LineTime {
        LineTime(jiff::tz::TimeZone::system())
    }

    /// UTC.
    pub fn utc() -> LineTime {
        LineTime(jiff::tz::TimeZone::UTC)
    }

    /// A time zone by its `TZ` text (IANA name or POSIX string).
    pub fn from_tz(tz: &str) -> Option<LineTime> {
        jiff::tz::TimeZone::get(tz)
            .or_else(|_| jiff::tz::TimeZone::posix(tz))
            .ok()
            .map(LineTime)
    }

    /// `t` as a live line starts: date, time, offset.
    pub fn format(&self, t: time::OffsetDateTime) -> String {
        let ts = jiff::Timestamp::from_nanosecond(t.unix_timestamp_nanos())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        ts.to_zoned(self.0.clone())
            .strftime("%Y-%m-%d %H:%M:%S%:z")
            .to_string()
    }
}

/// One readable line, as printed live for flagged and blocked flows, its
/// time written as `lt` says.
pub fn flow_line(rec: &FlowRecord, lt: &LineTime) -> String {
    let tags = tag_text(&rec.datacenters, &rec.purposes);
    let svc = rec
        .service_port
        .map(|p| format!("service port {p}"))
        .unwrap_or_else(|| "no service port".into());
    if rec.reason == Reason::Blocked {
        return format!(
            "{ts} {state:<15} {flow}  {svc}, {by}, {prefix} [{tags}] on {iface}",
            ts = lt.format(rec.ts.0),
            state = rec
                .state
                .map(|s| s.as_str().to_uppercase())
                .unwrap_or_default(),
            flow = rec.conversation(),
            by = rec.blocked_by(),
            prefix = rec.prefix,
            iface = crate::text::shown(&rec.interfaces_text()),
        );
    }
    let first = match rec.first_packet {
        cas_audit_common::Direction::Out => "out",
        cas_audit_common::Direction::In => "in",
    };
    format!(
        "{ts} {verdict:<15} {flow}  {svc}, {opened}, {prefix} [{tags}] on {iface}",
        ts = lt.format(rec.ts.0),
        verdict = rec.verdict.as_str().to_uppercase(),
        flow = rec.conversation(),
        opened = match rec.initiator {
            Initiator::Unknown if rec.proto == Proto(cas_audit_common::proto::TCP) => {
                format!("start not seen, first packet {first}")
            }
            Initiator::Unknown => format!("first packet {first}"),
            who => format!("opened by {}", who.as_str()),
        },
        prefix = rec.prefix,
        iface = crate::text::shown(&rec.interfaces_text()),
    )
}

/// The readable summary of a run: a table of ranges, the disallowed flows
/// (their latest records) and the totals.
pub fn summary_table(s: &Summary, disallowed: &[FlowRecord]) -> String {
    use cas_audit_common::Counter;
    let mut out = String::new();
    let mut t = table(&[
        "CAS range",
        "Data centers",
        "Purposes",
        "Pkts out",
        "Bytes out",
        "Pkts in",
        "Bytes in",
    ]);
    for r in &s.ranges {
        t.add_row(vec![
            Cell::new(&r.prefix),
            Cell::new(datacenters_text(&r.datacenters, ", ")),
            Cell::new(list(r.purposes.iter().map(|p| p.as_str()))),
            num(r.packets_out),
            num(r.bytes_out),
            num(r.packets_in),
            num(r.bytes_in),
        ]);
    }
    if s.ranges.is_empty() {
        out.push_str("No traffic to or from CAS ranges.\n");
    } else {
        out.push_str(&format!("{t}\n"));
    }
    if !disallowed.is_empty() {
        let mut d = table(&[
            "Disallowed flow",
            "Service port",
            "Opened by",
            "Range",
            "Pkts out/in",
        ]);
        for f in disallowed {
            d.add_row(vec![
                Cell::new(f.conversation()),
                Cell::new(f.service_port.map(|p| p.to_string()).unwrap_or("-".into())),
                Cell::new(f.initiator.as_str()),
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
    let c = &s.counters;
    out.push_str(&format!(
        "{} flows, {} disallowed; {} packets seen, {} to/from CAS; events lost {}, malformed {}, flows evicted {}\n",
        s.flows,
        s.disallowed,
        c.get(Counter::Packets),
        c.get(Counter::Matched),
        c.get(Counter::EventsLost),
        c.get(Counter::Malformed),
        s.flows_evicted
    ));
    if s.log_records_lost > 0 {
        out.push_str(&format!(
            "log records lost: {} (not written to the log directory)\n",
            s.log_records_lost
        ));
    }
    let w = &s.watch;
    if w.interface_gaps > 0 {
        out.push_str(&format!(
            "interface gaps: {} (an audited interface was removed: no counting until it was back); {} ms without the programs while an interface of its name existed\n",
            w.interface_gaps, w.interface_uncovered_ms
        ));
    }
    if w.metrics_connections_refused + w.metrics_connections_timed_out + w.metrics_accept_errors > 0
    {
        out.push_str(&format!(
            "metrics endpoint: {} connections refused (too many open at once), {} timed out, {} failed accepts\n",
            w.metrics_connections_refused, w.metrics_connections_timed_out, w.metrics_accept_errors
        ));
    }
    if c.get(Counter::FlowsLost) > 0 {
        out.push_str(&format!(
            "flows lost: {} ended flows whose 5-tuple was reused before the ring buffer had room for them (raise --ring-size)\n",
            c.get(Counter::FlowsLost)
        ));
    }
    if s.events_stale > 0 {
        out.push_str(&format!(
            "events stale: {} ring records of flows already reported, dropped (read after the agent was paused or behind)\n",
            s.events_stale
        ));
    }
    let dropped: Vec<String> = s
        .sinks
        .iter()
        .filter(|(_, c)| c.dropped > 0)
        .map(|(name, c)| format!("{name} {} of {}", c.dropped, c.sent + c.dropped))
        .collect();
    if !dropped.is_empty() {
        out.push_str(&format!(
            "dropped by sinks that could not keep up or deliver: {}\n",
            dropped.join(", ")
        ));
    }
    if !s.states.is_empty() {
        let parts: Vec<String> = s.states.iter().map(|(s, n)| format!("{s} {n}")).collect();
        out.push_str(&format!("states: {}\n", parts.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_what_was_stale_and_dropped() {
        let mut s = Summary {
            events_stale: 3,
            ..Default::default()
        };
        let counts = |sent, dropped| crate::output::bounded::SinkCounts { sent, dropped };
        s.sinks.insert("json".into(), counts(5, 2));
        s.sinks.insert("ipfix".into(), counts(7, 0));
        let text = summary_table(&s, &[]);
        assert!(text.contains("events stale: 3 ring records"), "{text}");
        assert!(
            text.contains("dropped by sinks that could not keep up or deliver: json 2 of 7\n"),
            "{text}"
        );
        let quiet = summary_table(&Summary::default(), &[]);
        assert!(
            !quiet.contains("stale") && !quiet.contains("dropped"),
            "{quiet}"
        );
    }

    #[test]
    fn line_times_have_the_date_and_the_zone() {
        let t = time::macros::datetime!(2026-11-22 06:15:38.9 UTC);
        assert_eq!(LineTime::utc().format(t), "2026-11-22 06:15:38+00:00");
        // POSIX TZ strings need no time-zone database.
        let ist = LineTime::from_tz("IST-5:30").expect("a POSIX TZ");
        assert_eq!(ist.format(t), "2026-11-22 11:45:38+05:30");
        let est = LineTime::from_tz("EST5").expect("a POSIX TZ");
        assert_eq!(est.format(t), "2026-11-22 01:15:38-05:00");
    }
}
