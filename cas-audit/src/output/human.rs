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

/// The local time of day of a record, as printed at the start of a line.
fn time_of_day(rec: &FlowRecord) -> String {
    let t = rec.ts.to_string();
    t.get(11..19).unwrap_or(&t).to_string()
}

/// One readable line, as printed live for flagged and blocked flows.
pub fn flow_line(rec: &FlowRecord) -> String {
    let tags = tag_text(&rec.datacenters, &rec.purposes);
    let svc = rec
        .service_port
        .map(|p| format!("service port {p}"))
        .unwrap_or_else(|| "no service port".into());
    if rec.reason == Reason::Blocked {
        return format!(
            "{ts} {state:<15} {flow}  {svc}, {by}, {prefix} [{tags}] on {iface}",
            ts = time_of_day(rec),
            state = rec
                .state
                .map(|s| s.as_str().to_uppercase())
                .unwrap_or_default(),
            flow = rec.conversation(),
            by = rec.blocked_by(),
            prefix = rec.prefix,
            iface = rec.interfaces_text(),
        );
    }
    let first = match rec.first_packet {
        cas_audit_common::Direction::Out => "out",
        cas_audit_common::Direction::In => "in",
    };
    format!(
        "{ts} {verdict:<15} {flow}  {svc}, {opened}, {prefix} [{tags}] on {iface}",
        ts = time_of_day(rec),
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
        iface = rec.interfaces_text(),
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
    if c.get(Counter::FlowsLost) > 0 {
        out.push_str(&format!(
            "flows lost: {} ended flows whose 5-tuple was reused before the ring buffer had room for them (raise --ring-size)\n",
            c.get(Counter::FlowsLost)
        ));
    }
    if !s.states.is_empty() {
        let parts: Vec<String> = s.states.iter().map(|(s, n)| format!("{s} {n}")).collect();
        out.push_str(&format!("states: {}\n", parts.join(", ")));
    }
    out
}
