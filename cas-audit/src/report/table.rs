//! The readable report: what was read, the breakdowns, the blocked
//! destinations.

use comfy_table::Cell;

use super::{Evidence, Tally};
use crate::{
    addrset::NO_DATACENTER,
    flow::endpoint,
    output::human::{list, num, table},
};

impl Evidence {
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
        let r = &self.rows;
        out.push_str(&breakdown(
            &["Data center"],
            self.by_datacenter.iter().map(|r| {
                let dc = r.key.datacenter.as_deref().unwrap_or(NO_DATACENTER);
                (vec![dc.to_string()], r.tally)
            }),
            r.by_datacenter,
            "data centers",
        ));
        out.push_str(&breakdown(
            &["Purpose"],
            self.by_purpose
                .iter()
                .map(|r| (vec![opt(&r.key.purpose)], r.tally)),
            r.by_purpose,
            "purposes",
        ));
        // Only when some flow has a name (a set's DNS name was seen).
        if self.by_dns_name.iter().any(|r| r.key.dns_name.is_some()) {
            out.push_str(&breakdown(
                &["DNS name"],
                self.by_dns_name
                    .iter()
                    .map(|r| (vec![opt(&r.key.dns_name)], r.tally)),
                r.by_dns_name,
                "DNS names",
            ));
        }
        out.push_str(&breakdown(
            &["State"],
            self.by_state
                .iter()
                .map(|r| (vec![r.key.state.clone()], r.tally)),
            r.by_state,
            "states",
        ));
        out.push_str(&breakdown(
            &["Verdict"],
            self.by_verdict
                .iter()
                .map(|r| (vec![r.key.verdict.clone()], r.tally)),
            r.by_verdict,
            "verdicts",
        ));
        out.push_str(&breakdown(
            &["Local host"],
            self.by_local_host
                .iter()
                .map(|r| (vec![r.key.local_addr.to_string()], r.tally)),
            r.by_local_host,
            "local hosts",
        ));
        out.push_str(&breakdown(
            &["Local host", "Service port"],
            self.by_local_service.iter().map(|r| {
                (
                    vec![r.key.local_addr.to_string(), port(r.key.service_port)],
                    r.tally,
                )
            }),
            r.by_local_service,
            "local host and service port pairs",
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
        let mut tb = table(&[
            "Destination",
            "Flows",
            "States",
            "Data centers",
            "Purposes",
            "Reporters",
            "ICMP type/code",
            "Local hosts",
        ]);
        for b in &self.top_blocked {
            tb.add_row(vec![
                Cell::new(endpoint(b.remote_addr, b.service_port)),
                num(b.flows),
                Cell::new(list(&b.states)),
                // Ranges of no data center, as in every other table.
                Cell::new(if b.datacenters.is_empty() {
                    NO_DATACENTER.to_string()
                } else {
                    list(&b.datacenters)
                }),
                Cell::new(list(&b.purposes)),
                Cell::new(list(&b.reporters)),
                Cell::new(list(
                    b.icmp
                        .iter()
                        .map(|i| format!("{}/{}", i.icmp_type, i.icmp_code)),
                )),
                num(b.local_hosts),
            ]);
        }
        out.push_str(&format!("{tb}\n"));
        out
    }
}

pub(super) fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A table of one breakdown: its key columns, then the counts; a line
/// says how many of `total` rows (`what`) `--top` left out.
fn breakdown(
    keys: &[&str],
    rows: impl Iterator<Item = (Vec<String>, Tally)>,
    total: u64,
    what: &str,
) -> String {
    let mut header: Vec<&str> = keys.to_vec();
    header.extend(["Flows", "Pkts out", "Bytes out", "Pkts in", "Bytes in"]);
    let mut t = table(&header);
    let mut shown = 0u64;
    for (key, n) in rows {
        shown += 1;
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
    if shown < total {
        format!(
            "{t}\n... and {} more {what} (--top {shown} of {total}; --top all shows every row)\n",
            total - shown
        )
    } else {
        format!("{t}\n")
    }
}
