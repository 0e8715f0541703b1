//! The readable report of a `check`: counts per data center and purpose,
//! the destinations that failed, and what to fix where.

use std::collections::{BTreeMap, BTreeSet};

use comfy_table::Cell;

use crate::{
    addrset::{DataCenter, Purpose, NO_DATACENTER},
    flow::endpoint,
    output::{
        human::{datacenters_text, num, table},
        record::{CheckRecord, CheckResult, CheckSummary},
    },
};

fn dc_text(dcs: &[DataCenter]) -> String {
    datacenters_text(dcs, " ")
}

/// The readable report: counts per data center and purpose, the failed
/// destinations, and what to fix where.
pub fn tables(records: &[CheckRecord], s: &CheckSummary) -> String {
    let mut out = String::new();
    // Counts per (data center, purpose).
    let mut groups: BTreeMap<(String, Purpose), [usize; 4]> = BTreeMap::new();
    for r in records {
        let dcs: Vec<String> = if r.datacenters.is_empty() {
            vec![NO_DATACENTER.into()]
        } else {
            r.datacenters.iter().map(ToString::to_string).collect()
        };
        for dc in &dcs {
            for p in &r.purposes {
                let g = groups.entry((dc.clone(), *p)).or_default();
                g[CheckResult::ALL
                    .iter()
                    .position(|o| *o == r.result)
                    .unwrap_or(0)] += 1;
            }
        }
    }
    let mut t = table(&[
        "data center",
        "purpose",
        "reachable",
        "refused",
        "unreachable",
        "unanswered",
    ]);
    for ((dc, p), c) in &groups {
        let mut row = vec![Cell::new(dc), Cell::new(p)];
        row.extend(c.iter().map(|n| num(*n as u64)));
        t.add_row(row);
    }
    out.push_str(&format!("{t}\n"));

    let failed: Vec<&CheckRecord> = records
        .iter()
        .filter(|r| r.result != CheckResult::Reachable)
        .collect();
    if !failed.is_empty() {
        let mut t = table(&[
            "destination",
            "data center",
            "purpose",
            "result",
            "what happened",
        ]);
        for r in &failed {
            let dst = endpoint(r.address, Some(r.port));
            t.add_row(vec![
                Cell::new(dst),
                Cell::new(dc_text(&r.datacenters)),
                Cell::new(
                    r.purposes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                Cell::new(r.result.as_str()),
                Cell::new(&r.detail),
            ]);
        }
        out.push_str(&format!("Not reachable:\n{t}\n"));

        // What to fix where: group the failures by who caused them.
        let mut culprits: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
        for r in &failed {
            let who = match (r.result, r.reporter, r.rst_hops) {
                (CheckResult::Unreachable, Some(rep), _) => format!(
                    "{rep} rejects with ICMP type {} code {}",
                    r.icmp_type.unwrap_or(0),
                    r.icmp_code.unwrap_or(0)
                ),
                (CheckResult::Refused, _, Some(h)) => format!(
                    "a device {h} hop{} away resets the connection",
                    if h == 1 { "" } else { "s" }
                ),
                (CheckResult::Refused, ..) => "connections are refused (RST)".into(),
                (CheckResult::Unanswered, ..) => {
                    "a firewall drops the traffic silently (no answer)".into()
                }
                _ => "no route or a local policy blocks the traffic".into(),
            };
            let e = culprits.entry(who).or_default();
            e.0 += 1;
            e.1.extend(r.purposes.iter().map(ToString::to_string));
        }
        out.push_str("To fix:\n");
        for (who, (n, purposes)) in &culprits {
            out.push_str(&format!(
                "  {who}: {n} destination{} ({})\n",
                if *n == 1 { "" } else { "s" },
                purposes.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    out.push_str(&format!(
        "{} of {} destinations reachable ({} refused, {} unreachable, {} unanswered){}\n",
        s.reachable,
        s.destinations,
        s.refused,
        s.unreachable,
        s.unanswered,
        if s.iface.is_none() {
            "; without --iface the reporters of failures are unknown"
        } else {
            ""
        }
    ));
    out
}
