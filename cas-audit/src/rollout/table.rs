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
    let mut groups: BTreeMap<(String, Purpose), [usize; 7]> = BTreeMap::new();
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
    // The name and TLS results get a column only when some destination has one.
    let shown: Vec<usize> = (0..CheckResult::ALL.len())
        .filter(|&i| i < 4 || groups.values().any(|c| c[i] > 0))
        .collect();
    let mut head = vec!["data center", "purpose"];
    head.extend(shown.iter().map(|&i| CheckResult::ALL[i].as_str()));
    let mut t = table(&head);
    for ((dc, p), c) in &groups {
        let mut row = vec![Cell::new(dc), Cell::new(p)];
        row.extend(shown.iter().map(|&i| num(c[i] as u64)));
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
            let dst = match (&r.name, r.address) {
                (Some(n), Some(a)) => format!("{n} ({})", endpoint(a, Some(r.port))),
                (Some(n), None) => format!("{n}:{}", r.port),
                (None, Some(a)) => endpoint(a, Some(r.port)),
                (None, None) => format!("?:{}", r.port),
            };
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
                _ if r.proxy_status.is_some() => r.detail.clone(),
                (CheckResult::Unresolved, ..) => {
                    "names do not resolve (DNS, or the resolver given)".into()
                }
                (CheckResult::Intercepted, ..) => format!(
                    "a TLS-inspecting device answers with certificates issued by {}",
                    r.issuer.as_deref().unwrap_or("an unknown issuer")
                ),
                (CheckResult::TlsFailed, ..) => {
                    "TLS handshakes fail after the TCP handshake completes".into()
                }
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
    let mut more = String::new();
    for (n, what) in [
        (s.unresolved, "unresolved"),
        (s.intercepted, "intercepted"),
        (s.tls_failed, "tls-failed"),
    ] {
        if n > 0 {
            more.push_str(&format!(", {n} {what}"));
        }
    }
    if !s.skipped.is_empty() {
        out.push_str(&format!(
            "Not probed (a tenant's names: give --tenant NAME): {}\n",
            s.skipped.join(", ")
        ));
    }
    out.push_str(&format!(
        "{} of {} destinations reachable ({} refused, {} unreachable, {} unanswered{more}){}\n",
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
