//! A machine-readable allowlist (JSON).

use serde::Serialize;

use super::Plan;
use crate::addrset::{Connection, DataCenter, Purpose};

#[derive(Serialize)]
struct JsonExport<'a> {
    set: &'a str,
    source: &'a str,
    published: &'a str,
    rules: Vec<JsonRule>,
    dns: Vec<JsonDns<'a>>,
    /// Entries left out because they name no port (only when there are any).
    #[serde(skip_serializing_if = "is_zero")]
    entries_without_ports: usize,
}

/// For `skip_serializing_if`, which passes a reference.
fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct JsonRule {
    /// The group's id (`out4-443`): the nft set is `out4_443`, the ipset
    /// `cas-out4-443`.
    id: String,
    direction: Connection,
    family: &'static str,
    protocol: &'static str,
    ports: Vec<u16>,
    prefixes: Vec<String>,
    datacenters: Vec<DataCenter>,
    /// Some prefix applies to every data center.
    global: bool,
    purposes: Vec<Purpose>,
}

#[derive(Serialize)]
struct JsonDns<'a> {
    name: &'a str,
    direction: Connection,
    protocol: &'static str,
    ports: &'a [u16],
    datacenters: Vec<DataCenter>,
    global: bool,
    purposes: Vec<Purpose>,
}

pub(super) fn json(plan: &Plan<'_>) -> String {
    let doc = JsonExport {
        set: &plan.set.name,
        source: &plan.set.source,
        published: &plan.set.published,
        rules: plan
            .groups
            .iter()
            .map(|g| JsonRule {
                id: g.id.clone(),
                direction: g.direction,
                family: g.family(),
                protocol: "tcp",
                ports: g.ports.clone(),
                prefixes: g.blocks.iter().map(|b| b.net.to_string()).collect(),
                datacenters: g.tags.datacenters.iter().copied().collect(),
                global: g.tags.global,
                purposes: g.tags.purposes.iter().copied().collect(),
            })
            .collect(),
        dns: plan
            .dns
            .iter()
            .map(|d| JsonDns {
                name: &d.name,
                direction: d.direction,
                protocol: "tcp",
                ports: &d.ports,
                datacenters: d.tags.datacenters.iter().copied().collect(),
                global: d.tags.global,
                purposes: d.tags.purposes.iter().copied().collect(),
            })
            .collect(),
        entries_without_ports: plan.portless,
    };
    // Serialising plain structs of strings and numbers cannot fail.
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}
