//! Unit tests of the address-set model, its file format and its ranges.

use super::*;
use std::collections::{BTreeSet, HashSet};

use super::{file::BUILTINS, ranges::sort_key};
use ipnet::{Ipv4Net, Ipv6Net};

use DataCenter::*;
use Purpose::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn distinct(set: &AddressSet, purpose: Purpose, dc: Option<DataCenter>) -> usize {
    set.entries
        .iter()
        .filter(|e| e.purpose == purpose && e.datacenter == dc)
        .map(|e| e.prefix)
        .collect::<HashSet<_>>()
        .len()
}

fn range_of(ranges: &[Range], prefix: &str) -> Range {
    let p = net(prefix);
    ranges
        .iter()
        .find(|r| r.prefix == p)
        .unwrap_or_else(|| panic!("{prefix} not among the ranges"))
        .clone()
}

#[test]
fn builtin_parses() {
    let set = AddressSet::builtin();
    assert_eq!(set.name, "cas-2019-11");
    assert_eq!(set.source, "network-requirements-2019-11.md");
    assert_eq!(set.published, "2019-11-01");
    assert_eq!(set.entries.len(), 592);
    assert_eq!(AddressSet::from_json(BUILTINS[0].1).unwrap(), set);
}

/// Distinct addresses per row of the 2019-11 page, counted from the page
/// itself (one table row = one data center of one section).
#[test]
fn builtin_counts_per_row() {
    let set = AddressSet::builtin();
    let expected: &[(Purpose, Option<DataCenter>, usize)] = &[
        (Portal, Some(Us1), 9),
        (Portal, Some(Us2), 9),
        (Portal, Some(Us3), 8),
        (Portal, Some(Eu1), 9),
        (Portal, Some(Eu2), 8),
        (Portal, Some(GovUs1), 2),
        (AccessSessionControls, Some(Us1), 70),
        (AccessSessionControls, Some(Us2), 70),
        (AccessSessionControls, Some(Us3), 82),
        (AccessSessionControls, Some(Eu1), 70),
        (AccessSessionControls, Some(Eu2), 60),
        (AccessSessionControls, Some(GovUs1), 0),
        (SiemAgent, Some(Us1), 9),
        (SiemAgent, Some(Us2), 9),
        (SiemAgent, Some(Us3), 8),
        (SiemAgent, Some(Eu1), 9),
        (SiemAgent, Some(Eu2), 8),
        (SiemAgent, Some(GovUs1), 2),
        (AppConnector, Some(Us1), 21),
        (AppConnector, Some(Us2), 17),
        (AppConnector, Some(Us3), 10),
        (AppConnector, Some(Eu1), 17),
        (AppConnector, Some(Eu2), 10),
        (AppConnector, Some(GovUs1), 3),
        (Dlp, Some(Us1), 19),
        (Dlp, Some(Us2), 15),
        (Dlp, Some(Us3), 8),
        (Dlp, Some(Eu1), 15),
        (Dlp, Some(Eu2), 8),
        (Dlp, Some(GovUs1), 0),
        (Mail, None, 7),
    ];
    for &(purpose, dc, count) in expected {
        assert_eq!(distinct(&set, purpose, dc), count, "{purpose} {dc:?}");
    }
    let total: usize = expected.iter().map(|&(_, _, n)| n).sum();
    // Nothing outside those rows, and no duplicate within a row.
    assert_eq!(set.entries.len(), total);
    let unique: HashSet<_> = set
        .entries
        .iter()
        .map(|e| (e.prefix, e.datacenter, e.purpose))
        .collect();
    assert_eq!(unique.len(), total);
    // Every section has the documented direction.
    for e in &set.entries {
        let want = match e.purpose {
            Portal | AccessSessionControls | SiemAgent => Connection::Outbound,
            _ => Connection::Inbound,
        };
        assert_eq!(e.direction, want, "{e:?}");
        assert_eq!(e.datacenter.is_none(), e.purpose == Mail, "{e:?}");
    }
}

#[test]
fn builtin_entries_in_page_order() {
    let set = AddressSet::builtin();
    let first = set.entries.first().unwrap();
    assert_eq!(first.prefix, net("13.64.26.88/32"));
    assert_eq!(first.datacenter, Some(Us1));
    assert_eq!(first.purpose, Portal);
    let last = set.entries.last().unwrap();
    assert_eq!(last.prefix, net("198.2.134.139/32"));
    assert_eq!(last.datacenter, None);
    let mut sections: Vec<Purpose> = set.entries.iter().map(|e| e.purpose).collect();
    sections.dedup();
    assert_eq!(
        sections,
        [
            Portal,
            AccessSessionControls,
            SiemAgent,
            AppConnector,
            Dlp,
            Mail
        ]
    );
    let mail: Vec<String> = set
        .entries
        .iter()
        .filter(|e| e.purpose == Mail)
        .map(|e| e.prefix.to_string())
        .collect();
    assert_eq!(
        mail,
        [
            "65.55.234.192/26",
            "207.46.200.0/27",
            "65.55.52.224/27",
            "94.245.112.0/27",
            "111.221.26.0/27",
            "207.46.50.192/26",
            "198.2.134.139/32",
        ]
    );
}

#[test]
fn builtin_ranges() {
    let set = AddressSet::builtin();
    let ranges = set.ranges();
    assert_eq!(ranges.len(), 438);
    let distinct: HashSet<IpNet> = set.entries.iter().map(|e| e.prefix.trunc()).collect();
    assert_eq!(distinct.len(), 438);
    assert!(ranges
        .windows(2)
        .all(|w| sort_key(w[0].prefix) < sort_key(w[1].prefix)));

    let r = range_of(&ranges, "13.64.196.27/32");
    assert_eq!(r.datacenters, BTreeSet::from([Us1]));
    assert_eq!(r.purposes, BTreeSet::from([AppConnector, Dlp]));

    let r = range_of(&ranges, "13.80.125.22/32");
    assert_eq!(r.datacenters, BTreeSet::from([Us1, Us2, Us3, Eu1, Eu2]));
    assert_eq!(r.purposes, BTreeSet::from([Portal, SiemAgent]));

    let r = range_of(&ranges, "65.55.234.192/26");
    assert!(r.datacenters.is_empty());
    assert_eq!(r.purposes, BTreeSet::from([Mail]));

    // Listed twice in the US3 access-and-session-controls row.
    let r = range_of(&ranges, "52.139.2.0/32");
    assert_eq!(r.datacenters, BTreeSet::from([Us3]));
    assert_eq!(r.purposes, BTreeSet::from([AccessSessionControls]));
}

const CRAFTED: &str = r#"{
      "schema": 1,
      "name": "crafted",
      "source": "test",
      "published": "2024-01-01",
      "entries": [
        {"prefix": "2001:db8::/32", "datacenter": "EU2", "purpose": "portal", "direction": "outbound"},
        {"prefix": "2001:db8:1::1", "datacenter": "EU1", "purpose": "dlp", "direction": "inbound"},
        {"prefix": "10.1.2.3/32", "datacenter": "US2", "purpose": "siem-agent", "direction": "outbound"},
        {"prefix": "10.1.0.0/16", "datacenter": "EU1", "purpose": "app-connector", "direction": "inbound"},
        {"prefix": "10.0.0.0/8", "datacenter": "US1", "purpose": "portal", "direction": "outbound"},
        {"prefix": "10.0.0.0/8", "datacenter": "us3", "purpose": "Portal", "direction": "OUTBOUND"},
        {"prefix": "10.2.0.0/16", "purpose": "mail", "direction": "inbound"},
        {"prefix": "9.255.255.255", "datacenter": "gov-us1", "purpose": "log_collector", "direction": "outbound"},
        {"prefix": "11.0.0.0/8", "datacenter": null, "purpose": "auth-gateway", "direction": "inbound"}
      ]
    }"#;

#[test]
fn covered_ranges_inherit_tags() {
    let set = AddressSet::from_json(CRAFTED).unwrap();
    assert_eq!(set.entries[1].prefix, net("2001:db8:1::1/128"));
    assert_eq!(set.entries[3].prefix, net("10.1.0.0/16"));
    assert_eq!(set.entries[6].datacenter, None);
    let ranges = set.ranges();
    let got: Vec<String> = ranges.iter().map(|r| r.prefix.to_string()).collect();
    assert_eq!(
        got,
        [
            "9.255.255.255/32",
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.3/32",
            "10.2.0.0/16",
            "11.0.0.0/8",
            "2001:db8::/32",
            "2001:db8:1::1/128",
        ]
    );
    let r = range_of(&ranges, "10.0.0.0/8");
    assert_eq!(r.datacenters, BTreeSet::from([Us1, Us3]));
    assert_eq!(r.purposes, BTreeSet::from([Portal]));
    let r = range_of(&ranges, "10.1.0.0/16");
    assert_eq!(r.datacenters, BTreeSet::from([Us1, Us3, Eu1]));
    assert_eq!(r.purposes, BTreeSet::from([Portal, AppConnector]));
    let r = range_of(&ranges, "10.1.2.3/32");
    assert_eq!(r.datacenters, BTreeSet::from([Us1, Us2, Us3, Eu1]));
    assert_eq!(
        r.purposes,
        BTreeSet::from([Portal, SiemAgent, AppConnector])
    );
    let r = range_of(&ranges, "10.2.0.0/16");
    assert_eq!(r.datacenters, BTreeSet::from([Us1, Us3]));
    assert_eq!(r.purposes, BTreeSet::from([Portal, Mail]));
    // Adjacent but not covered.
    let r = range_of(&ranges, "9.255.255.255/32");
    assert_eq!(r.datacenters, BTreeSet::from([GovUs1]));
    assert_eq!(r.purposes, BTreeSet::from([LogCollector]));
    let r = range_of(&ranges, "11.0.0.0/8");
    assert!(r.datacenters.is_empty());
    assert_eq!(r.purposes, BTreeSet::from([AuthGateway]));
    let r = range_of(&ranges, "2001:db8:1::1/128");
    assert_eq!(r.datacenters, BTreeSet::from([Eu1, Eu2]));
    assert_eq!(r.purposes, BTreeSet::from([Portal, Dlp]));
}

#[test]
fn ranges_scale_to_100k_prefixes() {
    let mut entries = Vec::new();
    for i in 0..100_000u32 {
        let (prefix, dc) = if i % 2 == 0 {
            let addr = std::net::Ipv4Addr::from(0x0a00_0000 + i * 4);
            (IpNet::V4(Ipv4Net::new(addr, 30).unwrap()), Us2)
        } else {
            let addr = std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i) << 64);
            (IpNet::V6(Ipv6Net::new(addr, 64).unwrap()), Eu1)
        };
        entries.push(Entry::new(prefix, Some(dc), AppConnector));
    }
    entries.push(Entry::new(net("10.0.0.0/8"), Some(Us1), Portal));
    let set = AddressSet {
        name: "synthetic".into(),
        source: "test".into(),
        published: "2024-01-01".into(),
        sources: Vec::new(),
        entries,
        dns: Vec::new(),
    };
    let ranges = set.ranges();
    assert_eq!(ranges.len(), 100_001);
    assert_eq!(ranges[0].prefix, net("10.0.0.0/8"));
    assert_eq!(ranges[1].datacenters, BTreeSet::from([Us1, Us2]));
    assert_eq!(ranges[1].purposes, BTreeSet::from([Portal, AppConnector]));
    assert_eq!(ranges[100_000].datacenters, BTreeSet::from([Eu1]));
}

#[test]
fn retain_datacenters_keeps_global_ranges() {
    let mut set = AddressSet::builtin();
    set.retain_datacenters(&[GovUs1]);
    assert_eq!(set.entries.len(), 2 + 2 + 3 + 7);
    assert_eq!(distinct(&set, Mail, None), 7);
    assert!(set
        .entries
        .iter()
        .all(|e| matches!(e.datacenter, None | Some(GovUs1))));

    let mut set = AddressSet::builtin();
    set.retain_datacenters(&[]);
    assert_eq!(set.entries.len(), 7);
    assert!(set.entries.iter().all(|e| e.purpose == Mail));

    let mut set = AddressSet::builtin();
    set.retain_datacenters(&[Us1, Eu2]);
    assert_eq!(
        set.entries.len(),
        (9 + 70 + 9 + 21 + 19) + (8 + 60 + 8 + 10 + 8) + 7
    );
}

fn err(text: &str) -> String {
    AddressSet::from_json(text).unwrap_err().to_string()
}

fn doc(entry: &str) -> String {
    format!(
        r#"{{"schema": 1, "name": "t", "source": "s", "published": "p", "entries": [{{"prefix": "10.0.0.0/8", "datacenter": "US1", "purpose": "portal", "direction": "outbound"}}, {entry}]}}"#
    )
}

#[test]
fn error_messages() {
    let e = AddressSet::from_json("{\n  \"schema\": 1,\n  \"name\": \"x\",,\n}").unwrap_err();
    assert_eq!(
        e,
        SetError::Json {
            line: 3,
            column: 15,
            message: "key must be a string".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "invalid address-set JSON at line 3, column 15: key must be a string"
    );
    assert_eq!(
        err(r#"{"schema": 1, "name": "x"}"#),
        "invalid address-set JSON at line 1, column 26: missing field `source`"
    );
    assert_eq!(
        err(r#"{"name": "x"}"#),
        "invalid address-set JSON at line 1, column 13: missing field `schema`"
    );
    assert_eq!(
        err(r#"{"schema": 3, "name": "x"}"#),
        "unsupported address-set schema version 3 (this build understands schemas 1 and 2)"
    );
    assert_eq!(
        err(&doc(
            r#"{"prefix": "10.0.0.300/8", "datacenter": "US1", "purpose": "portal", "direction": "outbound"}"#
        )),
        "entries[1]: invalid prefix \"10.0.0.300/8\" (expected an IP address or CIDR prefix \
             such as 198.51.100.0/24 or 2001:db8::/32)"
    );
    assert_eq!(
            AddressSet::from_json(&doc(
                r#"{"prefix": "10.0.0.0/33", "datacenter": "US1", "purpose": "portal", "direction": "outbound"}"#
            ))
            .unwrap_err(),
            SetError::BadPrefix {
                index: 1,
                text: "10.0.0.0/33".into()
            }
        );
    assert_eq!(
        err(&doc(
            r#"{"prefix": "13.64.196.27/24", "datacenter": "US1", "purpose": "portal"}"#
        )),
        "entries[1]: prefix \"13.64.196.27/24\" has host bits set: the network is \
         13.64.196.0/24 (write that, or 13.64.196.27/32 for the one address)"
    );
    assert_eq!(
        err(&doc(
            r#"{"prefix": "2001:db8:ca5::1/48", "datacenter": "US1", "purpose": "portal"}"#
        )),
        "entries[1]: prefix \"2001:db8:ca5::1/48\" has host bits set: the network is \
         2001:db8:ca5::/48 (write that, or 2001:db8:ca5::1/128 for the one address)"
    );
    assert_eq!(
        err(&doc(
            r#"{"prefix": "10.0.0.1", "datacenter": "US4", "purpose": "portal", "direction": "outbound"}"#
        )),
        "entries[1]: unknown data center \"US4\" (accepted: US1, US2, US3, EU1, EU2, Gov US1, GCC, \
         GCC High)"
    );
    assert_eq!(
        err(&doc(
            r#"{"prefix": "10.0.0.1", "datacenter": "US1", "purpose": "web", "direction": "outbound"}"#
        )),
        "entries[1]: unknown purpose \"web\" (accepted: portal, access-session-controls, \
             siem-agent, app-connector, dlp, mail, log-collector, auth-gateway, unknown)"
    );
    assert_eq!(
        err(&doc(
            r#"{"prefix": "10.0.0.1", "datacenter": "US1", "purpose": "dlp", "direction": "both"}"#
        )),
        "entries[1]: unknown direction \"both\" (accepted: outbound, inbound)"
    );
    assert_eq!(
        "Gov US2".parse::<DataCenter>().unwrap_err().to_string(),
        "unknown data center \"Gov US2\" (accepted: US1, US2, US3, EU1, EU2, Gov US1, GCC, GCC High)"
    );
    assert_eq!(
        "".parse::<Purpose>().unwrap_err(),
        SetError::UnknownPurpose {
            index: None,
            value: String::new()
        }
    );
    assert_eq!(
        "up".parse::<Connection>().unwrap_err().to_string(),
        "unknown direction \"up\" (accepted: outbound, inbound)"
    );
}

#[test]
fn from_str_round_trips() {
    for dc in DataCenter::ALL {
        assert_eq!(dc.to_string().parse::<DataCenter>().unwrap(), dc);
        assert_eq!(
            dc.to_string().to_lowercase().parse::<DataCenter>().unwrap(),
            dc
        );
        assert_eq!(
            dc.to_string().to_uppercase().parse::<DataCenter>().unwrap(),
            dc
        );
        let json = serde_json::to_string(&dc).unwrap();
        assert_eq!(json, format!("\"{dc}\""));
        assert_eq!(serde_json::from_str::<DataCenter>(&json).unwrap(), dc);
    }
    let names: Vec<String> = DataCenter::ALL.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        names,
        ["US1", "US2", "US3", "EU1", "EU2", "Gov US1", "GCC", "GCC High"]
    );
    for alias in ["gov-us1", "GovUS1", "gov_us1", "GOV US1", " Gov US1 "] {
        assert_eq!(alias.parse::<DataCenter>().unwrap(), GovUs1, "{alias}");
    }
    for alias in ["gcc-high", "GCCHigh", "gcc_high", "GCC HIGH"] {
        assert_eq!(alias.parse::<DataCenter>().unwrap(), GccHigh, "{alias}");
    }
    let regions: Vec<(DataCenter, String)> = DataCenter::ALL
        .iter()
        .map(|&d| (d, d.region().to_string()))
        .collect();
    assert_eq!(
        regions,
        [
            (Us1, "westus".to_owned()),
            (Us2, "eastus2".into()),
            (Us3, "westus2".into()),
            (Eu1, "westeurope".into()),
            (Eu2, "uksouth".into()),
            (GovUs1, "usgovvirginia".into()),
            (Gcc, "usgovvirginia".into()),
            (GccHigh, "usgovvirginia".into()),
        ]
    );
    for (text, arm) in [
        ("West Europe", "westeurope"),
        ("WestEurope", "westeurope"),
        ("west-europe", "westeurope"),
        (" US Gov Virginia ", "usgovvirginia"),
        ("West US 2", "westus2"),
    ] {
        let r: Region = text.parse().unwrap();
        assert_eq!(r.as_str(), arm, "{text}");
        assert!(r.is_known(), "{text}");
    }
    assert_eq!(
        "usgovarizona".parse::<Region>().unwrap().cloud(),
        "AzureGovernment"
    );
    assert_eq!("chinaeast2".parse::<Region>().unwrap().cloud(), "China");
    assert_eq!("westus3".parse::<Region>().unwrap().cloud(), "Public");
    assert!(!"marsnorth".parse::<Region>().unwrap().is_known());
    for bad in ["", "  ", "West/Europe", "westeurope!"] {
        assert_eq!(
            bad.parse::<Region>().unwrap_err(),
            SetError::BadRegion {
                index: None,
                value: bad.into()
            }
        );
    }

    for p in Purpose::ALL {
        assert_eq!(p.to_string().parse::<Purpose>().unwrap(), p);
        assert_eq!(p.to_string().to_uppercase().parse::<Purpose>().unwrap(), p);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, format!("\"{p}\""));
        assert_eq!(serde_json::from_str::<Purpose>(&json).unwrap(), p);
    }
    let names: Vec<String> = Purpose::ALL.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        names,
        [
            "portal",
            "access-session-controls",
            "siem-agent",
            "app-connector",
            "dlp",
            "mail",
            "log-collector",
            "auth-gateway",
            "unknown",
        ]
    );
    assert_eq!("siem_agent".parse::<Purpose>().unwrap(), SiemAgent);

    for d in Connection::ALL {
        assert_eq!(d.to_string().parse::<Connection>().unwrap(), d);
        assert_eq!(
            d.to_string().to_uppercase().parse::<Connection>().unwrap(),
            d
        );
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Connection>(&json).unwrap(), d);
    }
    assert_eq!(Connection::Outbound.to_string(), "outbound");
    assert_eq!(Connection::Inbound.to_string(), "inbound");

    let bad = serde_json::from_str::<DataCenter>("\"XX\"").unwrap_err();
    assert!(
        bad.to_string().starts_with("unknown data center \"XX\""),
        "{bad}"
    );

    let entry = AddressSet::builtin().entries[0].clone();
    assert_eq!(
        serde_json::to_string(&entry).unwrap(),
        r#"{"prefix":"13.64.26.88/32","datacenter":"US1","purpose":"portal","direction":"outbound","ports":[443],"sources":["page-2019-11-01"]}"#
    );
}
#[test]
fn purpose_defaults() {
    let got: Vec<(Purpose, &[u16], Connection)> = Purpose::ALL
        .iter()
        .map(|&p| (p, p.default_ports(), p.default_direction()))
        .collect();
    let out = Connection::Outbound;
    let inb = Connection::Inbound;
    let want: Vec<(Purpose, &[u16], Connection)> = vec![
        (Portal, &[443], out),
        (AccessSessionControls, &[443], out),
        (SiemAgent, &[443], out),
        (AppConnector, &[443], inb),
        (Dlp, &[11344], inb),
        (Mail, &[25], inb),
        (LogCollector, &[443], out),
        (AuthGateway, &[443], out),
        (Unknown, &[443], out),
    ];
    assert_eq!(got, want);
}

#[test]
fn builtins_in_order() {
    let sets = AddressSet::builtins();
    let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["cas-2019-11", "cas-2017-07"]);
    assert_eq!(AddressSet::builtin_names(), names);
    assert_eq!(sets[0], AddressSet::builtin());
    for set in &sets {
        assert_eq!(AddressSet::builtin_named(&set.name).as_ref(), Some(set));
        assert_eq!(AddressSet::load(&set.name).as_ref(), Ok(set));
    }
    assert_eq!(AddressSet::builtin_named("cas-2020-01"), None);
    let old = &sets[1];
    assert_eq!(old.source, "network-requirements-2017-07.md");
    assert_eq!(old.published, "2017-07-03");
    assert_eq!(old.entries.len(), 21);
    assert!(old.dns.is_empty());
    assert_eq!(distinct(old, AppConnector, None), 10);
    assert_eq!(distinct(old, Dlp, None), 10);
    assert_eq!(distinct(old, Portal, None), 1);
}

/// The data files are exactly what the canonical writer produces.
#[test]
fn data_files_are_canonical() {
    for (name, json) in BUILTINS {
        let set = AddressSet::from_json(json).unwrap();
        assert_eq!(set.name, name);
        assert!(set.to_json() == json, "data/{name}.json is not canonical");
        assert_eq!(AddressSet::from_json(&set.to_json()).unwrap(), set);
    }
}

#[test]
fn builtin_dns_and_ports() {
    let set = AddressSet::builtin();
    assert_eq!(set.dns.len(), 48);
    let find = |name: &str, purpose: Purpose| {
        set.dns
            .iter()
            .find(|d| d.name == name && d.purpose == purpose)
            .unwrap_or_else(|| panic!("{name} {purpose}"))
            .clone()
    };
    let d = find("*.us.portal.cloudappsecurity.com", Portal);
    assert_eq!(d.datacenter, Some(Us1));
    assert_eq!(d.ports, [443]);
    let d = find("adaprodconsole.blob.core.windows.net", LogCollector);
    assert_eq!(
        (d.datacenter, d.direction),
        (Some(Us1), Connection::Outbound)
    );
    assert_eq!(d.ports, [443]);
    for purpose in [SiemAgent, LogCollector] {
        for name in ["ocsp.msocsp.com", "ocsp.digicert.com"] {
            let d = find(name, purpose);
            assert_eq!((d.datacenter, d.ports), (None, vec![80]));
        }
    }
    let ranges = set.ranges();
    assert_eq!(
        range_of(&ranges, "13.64.196.27/32").ports,
        BTreeSet::from([443, 11344])
    );
    assert_eq!(
        range_of(&ranges, "65.55.234.192/26").ports,
        BTreeSet::from([25])
    );
    assert_eq!(
        range_of(&ranges, "13.80.125.22/32").ports,
        BTreeSet::from([443])
    );
}

const WITH_DNS: &str = r#"{
      "schema": 1,
      "name": "lab \"quoted\"",
      "source": "test",
      "published": "2024-01-01",
      "entries": [
        {"prefix": "10.0.0.0/8", "datacenter": "US1", "purpose": "portal", "ports": [8443, 443, 443]},
        {"prefix": "10.1.0.0/16", "purpose": "dlp"},
        {"prefix": "10.1.2.0/24", "purpose": "mail", "direction": "outbound", "ports": [587]},
        {"prefix": "2001:db8::/32", "purpose": "siem-agent", "ports": null}
      ],
      "dns": [
        {"name": "*.cas.ms", "purpose": "access-session-controls"},
        {"name": "ocsp.digicert.com", "datacenter": "eu1", "purpose": "log-collector", "direction": "Outbound", "ports": [80]}
      ]
    }"#;

#[test]
fn optional_fields_and_dns() {
    let set = AddressSet::from_json(WITH_DNS).unwrap();
    assert_eq!(set.name, "lab \"quoted\"");
    let e = &set.entries;
    assert_eq!(
        (e[0].direction, e[0].ports.clone()),
        (Connection::Outbound, vec![443, 8443])
    );
    assert_eq!(
        (e[1].direction, e[1].ports.clone()),
        (Connection::Inbound, vec![11344])
    );
    assert_eq!(
        (e[2].direction, e[2].ports.clone()),
        (Connection::Outbound, vec![587])
    );
    assert_eq!(e[3].ports, [443]);
    assert_eq!(
        set.dns,
        [
            DnsName {
                name: "*.cas.ms".into(),
                datacenter: None,
                purpose: AccessSessionControls,
                direction: Connection::Outbound,
                ports: vec![443],
                sources: vec!["set-lab \"quoted\"".into()],
            },
            DnsName {
                name: "ocsp.digicert.com".into(),
                datacenter: Some(Eu1),
                purpose: LogCollector,
                direction: Connection::Outbound,
                ports: vec![80],
                sources: vec!["set-lab \"quoted\"".into()],
            },
        ]
    );
    let ranges = set.ranges();
    assert_eq!(
        range_of(&ranges, "10.0.0.0/8").ports,
        BTreeSet::from([443, 8443])
    );
    assert_eq!(
        range_of(&ranges, "10.1.0.0/16").ports,
        BTreeSet::from([443, 8443, 11344])
    );
    assert_eq!(
        range_of(&ranges, "10.1.2.0/24").ports,
        BTreeSet::from([443, 587, 8443, 11344])
    );
    assert_eq!(
        range_of(&ranges, "2001:db8::/32").ports,
        BTreeSet::from([443])
    );

    let json = set.to_json();
    assert_eq!(
        json,
        r#"{
  "schema": 2,
  "name": "lab \"quoted\"",
  "source": "test",
  "published": "2024-01-01",
  "sources": [
    {"id": "set-lab \"quoted\"", "kind": "set", "file": "test", "published": "2024-01-01"}
  ],
  "entries": [
    {"prefix": "10.0.0.0/8", "datacenter": "US1", "purpose": "portal", "direction": "outbound", "ports": [443, 8443]},
    {"prefix": "10.1.0.0/16", "datacenter": null, "purpose": "dlp", "direction": "inbound", "ports": [11344]},
    {"prefix": "10.1.2.0/24", "datacenter": null, "purpose": "mail", "direction": "outbound", "ports": [587]},
    {"prefix": "2001:db8::/32", "datacenter": null, "purpose": "siem-agent", "direction": "outbound", "ports": [443]}
  ],
  "dns": [
    {"name": "*.cas.ms", "datacenter": null, "purpose": "access-session-controls", "direction": "outbound", "ports": [443]},
    {"name": "ocsp.digicert.com", "datacenter": "EU1", "purpose": "log-collector", "direction": "outbound", "ports": [80]}
  ]
}
"#
    );
    assert_eq!(AddressSet::from_json(&json).unwrap(), set);

    let empty = AddressSet {
        name: "empty".into(),
        source: "s".into(),
        published: "2024-01-01".into(),
        sources: vec![Source::of_schema1("empty", "s", "2024-01-01")],
        entries: Vec::new(),
        dns: Vec::new(),
    };
    assert_eq!(
        empty.to_json(),
        "{\n  \"schema\": 2,\n  \"name\": \"empty\",\n  \"source\": \"s\",\n  \
             \"published\": \"2024-01-01\",\n  \"sources\": [\n    {\"id\": \"set-empty\", \
             \"kind\": \"set\", \"file\": \"s\", \"published\": \"2024-01-01\"}\n  ],\n  \
             \"entries\": [],\n  \"dns\": []\n}\n"
    );
    assert_eq!(AddressSet::from_json(&empty.to_json()).unwrap(), empty);
}

#[test]
fn retain_purposes_and_datacenters_filter_dns() {
    let mut set = AddressSet::builtin();
    set.retain_purposes(&[Mail, LogCollector]);
    assert_eq!(set.entries.len(), 7);
    assert_eq!(set.dns.len(), 1 + 8);
    assert!(set
        .dns
        .iter()
        .all(|d| matches!(d.purpose, Mail | LogCollector)));
    set.retain_datacenters(&[Eu2]);
    let dns: Vec<&str> = set.dns.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        dns,
        [
            "mail1.cloudappsecurity.com",
            "prod4uksconsole1.blob.core.windows.net",
            "ocsp.msocsp.com",
            "ocsp.digicert.com",
        ]
    );
    set.retain_purposes(&[]);
    assert!(set.entries.is_empty() && set.dns.is_empty());
}

fn dns_doc(name: &str) -> String {
    format!(
        r#"{{"schema": 1, "name": "t", "source": "s", "published": "p", "entries": [], "dns": [{{"name": "a.cas.ms", "purpose": "portal"}}, {name}]}}"#
    )
}

#[test]
fn port_and_dns_errors() {
    let bad = |ports: &str| {
        err(&doc(&format!(
            r#"{{"prefix": "10.0.0.1", "purpose": "portal", "ports": {ports}}}"#
        )))
    };
    assert_eq!(
        bad("[443, 0]"),
        "entries[1]: invalid port 0 (ports are 1 to 65535)"
    );
    assert_eq!(
        bad("[65536]"),
        "entries[1]: invalid port 65536 (ports are 1 to 65535)"
    );
    assert_eq!(
        bad("[-1]"),
        "entries[1]: invalid port -1 (ports are 1 to 65535)"
    );
    assert_eq!(
        bad("[]"),
        "entries[1]: empty port list (omit \"ports\" to use the purpose's default ports)"
    );
    assert_eq!(
        AddressSet::from_json(&doc(
            r#"{"prefix": "10.0.0.1", "purpose": "portal", "ports": []}"#
        ))
        .unwrap_err(),
        SetError::EmptyPorts { index: Some(1) }
    );
    assert!(
        bad(r#"["443"]"#).starts_with("invalid address-set JSON at line 1, column "),
        "{}",
        bad(r#"["443"]"#)
    );
    // A misspelt key is an error, not the default ports.
    assert_eq!(
            err("{\"schema\": 1, \"name\": \"t\", \"source\": \"s\", \"published\": \"p\",\n\
                 \"entries\": [{\"prefix\": \"10.0.0.1\", \"purpose\": \"dlp\", \"port\": [1344]}]}"),
            "invalid address-set JSON at line 2, column 59: unknown field `port`, expected one \
             of `prefix`, `datacenter`, `region`, `cloud`, `purpose`, `direction`, `ports`, \
             `shared`, `sources`"
        );

    assert_eq!(
        err(&dns_doc(
            r#"{"name": "https://x.cas.ms/", "purpose": "portal"}"#
        )),
        "dns[1]: invalid DNS name \"https://x.cas.ms/\" \
             (expected a host name such as portal.cloudappsecurity.com or *.cas.ms)"
    );
    for name in [
        "",
        "cas",
        "a..ms",
        "x.*.cas.ms",
        "-a.cas.ms",
        "a.cas.m5",
        "a b.ms",
    ] {
        let e = AddressSet::from_json(&dns_doc(&format!(
            r#"{{"name": "{name}", "purpose": "portal"}}"#
        )))
        .unwrap_err();
        assert_eq!(
            e,
            SetError::BadDnsName {
                index: 1,
                text: name.into()
            },
            "{name:?}"
        );
    }
    assert_eq!(
        err(&dns_doc(r#"{"name": "x.cas.ms", "purpose": "proxy"}"#)),
        "dns[1]: unknown purpose \"proxy\" (accepted: portal, access-session-controls, \
             siem-agent, app-connector, dlp, mail, log-collector, auth-gateway, unknown)"
    );
    assert_eq!(
        err(&dns_doc(
            r#"{"name": "x.cas.ms", "purpose": "portal", "datacenter": "XX"}"#
        )),
        "dns[1]: unknown data center \"XX\" (accepted: US1, US2, US3, EU1, EU2, Gov US1, GCC, \
         GCC High)"
    );
    assert_eq!(
        err(&dns_doc(
            r#"{"name": "x.cas.ms", "purpose": "portal", "direction": "in"}"#
        )),
        "dns[1]: unknown direction \"in\" (accepted: outbound, inbound)"
    );
    assert_eq!(
        AddressSet::from_json(&dns_doc(
            r#"{"name": "x.cas.ms", "purpose": "portal", "ports": [70000]}"#
        ))
        .unwrap_err(),
        SetError::InDns {
            index: 1,
            reason: Box::new(SetError::BadPort {
                index: None,
                value: 70000
            })
        }
    );
    assert!(err(&dns_doc(r#"{"name": "x.cas.ms"}"#)).contains("missing field `purpose`"));
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("cas-audit-addrset-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.json");
    std::fs::write(&good, WITH_DNS).unwrap();
    let good = good.to_str().unwrap();
    assert_eq!(
        AddressSet::load(good).unwrap(),
        AddressSet::from_json(WITH_DNS).unwrap()
    );

    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        doc(r#"{"prefix": "10.0.0.0/33", "purpose": "portal"}"#),
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    let e = AddressSet::load(bad).unwrap_err();
    assert_eq!(
        e,
        SetError::File {
            path: bad.into(),
            reason: Box::new(SetError::BadPrefix {
                index: 1,
                text: "10.0.0.0/33".into()
            })
        }
    );
    assert_eq!(
        e.to_string(),
        format!(
            "{bad}: entries[1]: invalid prefix \"10.0.0.0/33\" (expected an IP address or \
                 CIDR prefix such as 198.51.100.0/24 or 2001:db8::/32)"
        )
    );

    let missing = dir.join("missing.json");
    let missing = missing.to_str().unwrap();
    let e = AddressSet::load(missing).unwrap_err();
    assert!(
        matches!(&e, SetError::Io { path, .. } if path == missing),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "{missing}: cannot read the set file: No such file or directory (os error 2) \
                 (and it is not a built-in set: cas-2019-11, cas-2017-07)"
        )
    );
    let e = AddressSet::load(dir.to_str().unwrap()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read the set file: ", dir.display())),
        "{e}"
    );
    assert!(!e.to_string().contains("built-in"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A one-source set of `entries` (prefix, data center, region, purpose).
fn small_set(
    name: &str,
    entries: &[(&str, Option<DataCenter>, Option<&str>, Purpose)],
) -> AddressSet {
    let source = Source::new(SourceKind::Page, &format!("{name}.md"), "2024-01-01", name);
    let id = source.id.clone();
    AddressSet {
        name: name.into(),
        source: format!("{name}.md"),
        published: "2024-01-01".into(),
        sources: vec![source],
        entries: entries
            .iter()
            .map(|&(p, dc, r, purpose)| Entry {
                region: r.map(|r| r.parse().unwrap()),
                sources: vec![id.clone()],
                ..Entry::new(net(p), dc, purpose)
            })
            .collect(),
        dns: Vec::new(),
    }
}

#[test]
fn merge_keeps_every_source() {
    let a = small_set(
        "a",
        &[
            ("10.0.0.1/32", Some(Us1), None, Portal),
            ("10.0.0.2/32", Some(Us1), None, Portal),
        ],
    );
    let b = small_set(
        "b",
        &[
            ("10.0.0.1/32", Some(Us1), None, Portal),
            ("2001:db8::/48", None, Some("westus"), AppConnector),
        ],
    );
    // Same date, different content: two sources, the second id made unique.
    let m = AddressSet::merge(&[a.clone(), b.clone()], None);
    assert_eq!(m.name, "a+b");
    assert_eq!(m.source, "a.md + b.md");
    let ids: Vec<&str> = m.sources.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["page-2024-01-01", "page-2024-01-01-2"]);
    let got: Vec<(String, Vec<String>)> = m
        .entries
        .iter()
        .map(|e| (e.prefix.to_string(), e.sources.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "10.0.0.1/32".to_owned(),
                vec!["page-2024-01-01".to_owned(), "page-2024-01-01-2".into()]
            ),
            ("10.0.0.2/32".into(), vec!["page-2024-01-01".into()]),
            ("2001:db8::/48".into(), vec!["page-2024-01-01-2".into()]),
        ]
    );
    // The file names every entry's sources and reads back the same.
    let json = m.to_json();
    assert!(
        json.contains(r#""sources": ["page-2024-01-01", "page-2024-01-01-2"]}"#),
        "{json}"
    );
    assert_eq!(AddressSet::from_json(&json).unwrap(), m);
    // The same input twice is one source; merging is idempotent.
    let twice = AddressSet::merge(&[a.clone(), a.clone()], Some("a"));
    assert_eq!(twice.sources, a.sources);
    assert_eq!(twice.entries, a.entries);
    assert_eq!(AddressSet::merge(&[m.clone(), b], Some(&m.name)), m);
    // A schema-1 set merges as its own source.
    let old = AddressSet::from_json(CRAFTED).unwrap();
    let m2 = AddressSet::merge(&[old.clone(), a], None);
    assert_eq!(m2.sources[0].id, "set-crafted");
    assert_eq!(m2.sources[0].kind, SourceKind::Set);
    assert_eq!(m2.entries.len(), old.entries.len() + 2);
}

#[test]
fn schema_2_fields_and_errors() {
    let doc2 = |entry: &str| {
        format!(
            r#"{{"schema": 2, "name": "t", "source": "s", "published": "2024-01-01",
              "sources": [{{"id": "x", "kind": "service-tags", "file": "f.json", "published": "2024-01-01"}}],
              "entries": [{entry}]}}"#
        )
    };
    let set = AddressSet::from_json(&doc2(
        r#"{"prefix": "10.0.0.0/30", "region": "West Europe", "cloud": "Public", "purpose": "app-connector", "shared": true}"#,
    ))
    .unwrap();
    let e = &set.entries[0];
    assert_eq!(e.region.as_ref().map(Region::as_str), Some("westeurope"));
    assert_eq!((e.cloud.as_deref(), e.shared), (Some("Public"), true));
    assert_eq!(e.sources, ["x"]);
    assert_eq!(
        err(&doc2(
            r#"{"prefix": "10.0.0.1", "purpose": "portal", "sources": ["y"]}"#
        )),
        "entries[0]: unknown source \"y\" (not in the set's \"sources\")"
    );
    assert_eq!(
        err(&doc2(
            r#"{"prefix": "10.0.0.1", "purpose": "portal", "region": "west/europe"}"#
        )),
        "entries[0]: invalid region \"west/europe\" (expected an Azure region such as westeurope \
         or \"West Europe\")"
    );
    // Schema 1 has none of the new fields.
    assert_eq!(
        err(&doc(
            r#"{"prefix": "10.0.0.1", "purpose": "portal", "region": "westus"}"#
        )),
        "invalid address-set JSON at line 0, column 0: entries[1].region is a schema-2 field \
         (this set says \"schema\": 1)"
    );
}

#[test]
fn regions_select() {
    let mut s = Selection {
        regions: vec!["westus".parse().unwrap()],
        ..Selection::default()
    };
    let set = s.load().unwrap();
    // US1's entries (its region) and the mail servers (no place).
    assert_eq!(set.entries.len(), (9 + 70 + 9 + 21 + 19) + 7);
    assert!(set
        .entries
        .iter()
        .all(|e| matches!(e.datacenter, None | Some(Us1))));
    s.regions = vec!["usgovvirginia".parse().unwrap()];
    s.purposes = vec![Portal];
    let set = s.load().unwrap();
    let dcs: BTreeSet<Option<DataCenter>> = set.dns.iter().map(|d| d.datacenter).collect();
    assert_eq!(dcs, BTreeSet::from([None, Some(GovUs1), Some(GccHigh)]));
    let mut tagged = small_set(
        "t",
        &[
            ("10.0.0.1/32", None, Some("westus"), AppConnector),
            ("10.0.0.2/32", None, Some("uksouth"), AppConnector),
            ("10.0.0.3/32", Some(Eu2), None, AppConnector),
            ("10.0.0.4/32", None, None, Mail),
        ],
    );
    tagged.retain_regions(&["uksouth".parse().unwrap()]);
    let left: Vec<String> = tagged
        .entries
        .iter()
        .map(|e| e.prefix.to_string())
        .collect();
    assert_eq!(left, ["10.0.0.2/32", "10.0.0.3/32", "10.0.0.4/32"]);
}

#[test]
fn diff_compares_coverage() {
    use super::diff::SetDiff;
    let quad = small_set(
        "quad",
        &[
            ("10.0.0.0/32", None, Some("westus"), Dlp),
            ("10.0.0.1/32", None, Some("westus"), Dlp),
            ("10.0.0.2/31", None, Some("westus"), Dlp),
            ("2001:db8::/127", Some(Us1), None, Portal),
        ],
    );
    let one = small_set(
        "one",
        &[
            ("10.0.0.0/30", None, Some("westus"), Dlp),
            ("2001:db8::1/128", Some(Us1), None, Portal),
            ("2001:db8::/128", Some(Us1), None, Portal),
        ],
    );
    assert!(SetDiff::between(&quad, &one).is_empty());
    let wider = small_set(
        "wider",
        &[
            ("10.0.0.0/29", None, Some("westus"), Dlp),
            ("10.0.0.1/32", None, Some("uksouth"), Dlp),
            ("2001:db8::/128", Some(Us1), None, Portal),
        ],
    );
    let d = SetDiff::between(&one, &wider);
    let got: Vec<(String, Vec<String>, Vec<String>)> = d
        .groups
        .iter()
        .map(|g| {
            (
                format!(
                    "{:?} {:?} {}",
                    g.datacenter,
                    g.region.as_ref().map(Region::as_str),
                    g.purpose
                ),
                g.added.iter().map(ToString::to_string).collect(),
                g.removed.iter().map(ToString::to_string).collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "None Some(\"uksouth\") dlp".to_owned(),
                vec!["10.0.0.1/32".to_owned()],
                vec![]
            ),
            (
                "None Some(\"westus\") dlp".into(),
                vec!["10.0.0.4/30".into()],
                vec![]
            ),
            (
                "Some(Us1) None portal".into(),
                vec![],
                vec!["2001:db8::1/128".into()]
            ),
        ]
    );
    let text = d.text();
    assert!(text.ends_with(
        "3 groups changed: 2 prefixes to add, 1 to remove\nper purpose: portal +0 -1, dlp +2 -0\n\
         per region: uksouth +1 -0, westus +1 -1\n"
    ), "{text}");
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["groups"][0]["region"], "uksouth");
    assert_eq!(json["groups"][2]["region"], serde_json::Value::Null);
}

#[test]
fn coverage_arithmetic() {
    use super::ranges::{cidrs, coverage, subtract, Interval};
    let iv = |a: u128, b: u128| Interval { start: a, end: b };
    let show = |v: Vec<IpNet>| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        show(cidrs(iv(0x0a00_0001, 0x0a00_0006), false)),
        ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
    );
    assert_eq!(
        show(cidrs(iv(0, u128::from(u32::MAX)), false)),
        ["0.0.0.0/0"]
    );
    assert_eq!(show(cidrs(iv(0, u128::MAX), true)), ["::/0"]);
    assert_eq!(
        show(cidrs(iv(u128::MAX, u128::MAX), true)),
        ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"]
    );
    let [v4, v6] = coverage([
        net("10.0.0.0/31"),
        net("10.0.0.2/31"),
        net("10.0.1.0/24"),
        net("::/0"),
    ]);
    assert_eq!(
        v4,
        [iv(0x0a00_0000, 0x0a00_0003), iv(0x0a00_0100, 0x0a00_01ff)]
    );
    assert_eq!(v6, [iv(0, u128::MAX)]);
    assert_eq!(
        subtract(&[iv(0, 100)], &[iv(10, 20), iv(30, 40), iv(100, 200)]),
        [iv(0, 9), iv(21, 29), iv(41, 99)]
    );
    assert_eq!(subtract(&[iv(5, 6)], &[iv(0, u128::MAX)]), []);
    assert_eq!(
        subtract(&[iv(0, u128::MAX)], &[iv(0, 0)]),
        [iv(1, u128::MAX)]
    );
}

/// [`Selection::load_some`] of a set, data centers and purposes.
fn select_some(
    set: Option<&str>,
    datacenters: &[DataCenter],
    purposes: &[Purpose],
    need: Need,
) -> Result<AddressSet, SetError> {
    Selection {
        set: set.map(Into::into),
        datacenters: datacenters.to_vec(),
        purposes: purposes.to_vec(),
        ..Selection::default()
    }
    .load_some(need)
}

#[test]
fn an_empty_selection_says_what_each_filter_kept() {
    let e = select_some(
        Some("cas-2017-07"),
        &[],
        &[Purpose::AuthGateway],
        Need::Entries,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cas-2017-07: nothing selected: the set has 21 entries; --purpose auth-gateway kept 0 entries"
    );
    let e = select_some(None, &[DataCenter::Eu2], &[Purpose::Dlp], Need::Outbound).unwrap_err();
    let SetError::EmptySelection { set, steps } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(set, "cas-2019-11");
    assert!(
        steps.starts_with("the set has ")
            && steps.contains("DNS names; --datacenter EU2 kept ")
            && steps.ends_with("; --purpose dlp kept 0 outbound entries and 0 DNS names"),
        "{steps}"
    );
    // DLP entries exist for EU2, inbound: they are what `run` needs.
    let set = select_some(None, &[DataCenter::Eu2], &[Purpose::Dlp], Need::Entries).unwrap();
    assert!(!set.entries.is_empty());
    // A set file without entries.
    let path = std::env::temp_dir().join(format!("cas-audit-empty-set-{}", std::process::id()));
    std::fs::write(
        &path,
        r#"{"schema": 1, "name": "none", "source": "s", "published": "p", "entries": []}"#,
    )
    .unwrap();
    let e = select_some(path.to_str(), &[], &[], Need::Entries).unwrap_err();
    assert_eq!(
        e.to_string(),
        "none: nothing selected: the set has 0 entries"
    );
    std::fs::remove_file(&path).unwrap();
}
