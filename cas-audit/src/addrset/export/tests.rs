//! Exact outputs of every export format.

use super::*;
use crate::addrset::{DnsName, Entry};

use DataCenter::*;
use Purpose::*;

fn entry(prefix: &str, dc: Option<DataCenter>, purpose: Purpose, ports: &[u16]) -> Entry {
    let direction = match purpose {
        Portal | AccessSessionControls | SiemAgent | LogCollector => Connection::Outbound,
        _ => Connection::Inbound,
    };
    Entry {
        direction,
        ports: ports.to_vec(),
        ..Entry::new(prefix.parse().unwrap(), dc, purpose)
    }
}

fn dns(name: &str, dc: Option<DataCenter>, purpose: Purpose, ports: &[u16]) -> DnsName {
    DnsName {
        name: name.into(),
        datacenter: dc,
        purpose,
        direction: Connection::Outbound,
        ports: ports.to_vec(),
        sources: Vec::new(),
    }
}

fn set(entries: Vec<Entry>, dns: Vec<DnsName>) -> AddressSet {
    AddressSet {
        name: "small".into(),
        source: "hand-made".into(),
        published: "2024-05-01".into(),
        sources: Vec::new(),
        entries,
        dns,
    }
}

/// Duplicates, a covered prefix, host bits, IPv6, a global entry, two
/// ports, and DNS names listed twice.
fn small() -> AddressSet {
    set(
        vec![
            entry("198.51.100.77/32", Some(Us2), AccessSessionControls, &[443]),
            entry("100.64.2.10/32", Some(Us1), Portal, &[443]),
            entry("2001:db8::/32", Some(Eu2), Portal, &[443]),
            entry("100.64.2.10/32", Some(Eu1), SiemAgent, &[443]),
            entry("198.51.100.0/24", Some(Us1), AccessSessionControls, &[443]),
            entry("100.64.2.99/32", Some(Us1), LogCollector, &[443, 80]),
            entry("203.0.113.5/32", Some(GovUs1), Dlp, &[11344]),
            entry("203.0.113.3/28", Some(Us1), AppConnector, &[443]),
            entry("203.0.113.200/32", None, Mail, &[25]),
        ],
        vec![
            dns("*.us.example.com", Some(Us2), Portal, &[443]),
            dns("*.us.example.com", Some(Us1), Portal, &[443]),
            dns("collector.example.com", None, LogCollector, &[443]),
        ],
    )
}

const SMALL_NFT: &str = r#"#!/usr/sbin/nft -f
# cas-audit allowlist for nftables: Microsoft Defender for Cloud Apps.
# Address set: small
# Source: hand-made (published 2024-05-01)
#
# Load with `nft -f FILE`. Loading replaces table inet cas_audit (and
# everything in it) in one transaction; no other table is touched.
#
# Regular chains: cas_outbound accepts connections to the service
# (daddr), cas_inbound connections from it (saddr); other packets
# return to the calling chain. nftables jumps only within a table, and
# an accept in one table does not override a drop in another, so call
# them from base chains in this table, loaded with this file, e.g.:
#
#   include "/etc/nftables.d/cas-audit.nft"
#   table inet cas_audit {
#   	chain forward {
#   		type filter hook forward priority filter; policy drop;
#   		ct state established,related accept
#   		jump cas_outbound
#   		jump cas_inbound
#   	}
#   }
#
# (on a host, jump to cas_outbound from an output chain and to
# cas_inbound from an input chain), or copy the sets and chains into
# your own table.

table inet cas_audit
delete table inet cas_audit

table inet cas_audit {
	# outbound tcp 80,443, IPv4: 1 prefix
	# data centers: US1
	# purposes: log-collector
	set out4_80_443 {
		type ipv4_addr
		flags interval
		elements = {
			100.64.2.99/32,	# US1 log-collector
		}
	}

	# outbound tcp 443, IPv4: 2 prefixes
	# data centers: US1, US2, EU1
	# purposes: portal, access-session-controls, siem-agent
	set out4_443 {
		type ipv4_addr
		flags interval
		elements = {
			100.64.2.10/32,	# US1,EU1 portal,siem-agent
			198.51.100.0/24,	# US1,US2 access-session-controls
		}
	}

	# outbound tcp 443, IPv6: 1 prefix
	# data centers: EU2
	# purposes: portal
	set out6_443 {
		type ipv6_addr
		flags interval
		elements = {
			2001:db8::/32,	# EU2 portal
		}
	}

	# inbound tcp 25, IPv4: 1 prefix
	# data centers: global
	# purposes: mail
	set in4_25 {
		type ipv4_addr
		flags interval
		elements = {
			203.0.113.200/32,	# global mail
		}
	}

	# inbound tcp 443, IPv4: 1 prefix
	# data centers: US1
	# purposes: app-connector
	set in4_443 {
		type ipv4_addr
		flags interval
		elements = {
			203.0.113.0/28,	# US1 app-connector
		}
	}

	# inbound tcp 11344, IPv4: 1 prefix
	# data centers: Gov US1
	# purposes: dlp
	set in4_11344 {
		type ipv4_addr
		flags interval
		elements = {
			203.0.113.5/32,	# Gov US1 dlp
		}
	}

	# Destinations your hosts connect to.
	chain cas_outbound {
		ip daddr @out4_80_443 tcp dport { 80, 443 } accept
		ip daddr @out4_443 tcp dport 443 accept
		ip6 daddr @out6_443 tcp dport 443 accept
	}

	# Sources the service connects from.
	chain cas_inbound {
		ip saddr @in4_25 tcp dport 25 accept
		ip saddr @in4_443 tcp dport 443 accept
		ip saddr @in4_11344 tcp dport 11344 accept
	}
}

# DNS names to allow in your proxy (IP rules cannot match names): 2
#   outbound tcp 443: *.us.example.com (US1,US2 portal)
#   outbound tcp 443: collector.example.com (global log-collector)
"#;

const SMALL_IPTABLES: &str = r#"# cas-audit allowlist for iptables-restore (IPv4): Microsoft Defender for
# Cloud Apps.
# Address set: small
# Source: hand-made (published 2024-05-01)
#
# Load with `iptables-restore --noflush < FILE`: only the chains
# CAS-OUTBOUND (connections to the service) and CAS-INBOUND (connections
# from it) of table filter are created or emptied and refilled; their
# rules accept, other packets return to the calling chain. Jump to them
# from your own chains, after accepting replies, e.g. on a router:
#
#   iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
#   iptables -A FORWARD -j CAS-OUTBOUND
#   iptables -A FORWARD -j CAS-INBOUND
#
# (on a host: OUTPUT -j CAS-OUTBOUND, INPUT -j CAS-INBOUND).
#
# Left out: 1 IPv6 prefix in 1 group (iptables is IPv4 only; use the nft
# export, or the ipset export with ip6tables).
*filter
:CAS-OUTBOUND - [0:0]
:CAS-INBOUND - [0:0]
# outbound tcp 80,443, IPv4: 1 prefix
# data centers: US1
# purposes: log-collector
-A CAS-OUTBOUND -d 100.64.2.99/32 -p tcp -m multiport --dports 80,443 -m comment --comment "US1 log-collector" -j ACCEPT
# outbound tcp 443, IPv4: 2 prefixes
# data centers: US1, US2, EU1
# purposes: portal, access-session-controls, siem-agent
-A CAS-OUTBOUND -d 100.64.2.10/32 -p tcp -m tcp --dport 443 -m comment --comment "US1,EU1 portal,siem-agent" -j ACCEPT
-A CAS-OUTBOUND -d 198.51.100.0/24 -p tcp -m tcp --dport 443 -m comment --comment "US1,US2 access-session-controls" -j ACCEPT
# inbound tcp 25, IPv4: 1 prefix
# data centers: global
# purposes: mail
-A CAS-INBOUND -s 203.0.113.200/32 -p tcp -m tcp --dport 25 -m comment --comment "global mail" -j ACCEPT
# inbound tcp 443, IPv4: 1 prefix
# data centers: US1
# purposes: app-connector
-A CAS-INBOUND -s 203.0.113.0/28 -p tcp -m tcp --dport 443 -m comment --comment "US1 app-connector" -j ACCEPT
# inbound tcp 11344, IPv4: 1 prefix
# data centers: Gov US1
# purposes: dlp
-A CAS-INBOUND -s 203.0.113.5/32 -p tcp -m tcp --dport 11344 -m comment --comment "Gov US1 dlp" -j ACCEPT
COMMIT

# DNS names to allow in your proxy (IP rules cannot match names): 2
#   outbound tcp 443: *.us.example.com (US1,US2 portal)
#   outbound tcp 443: collector.example.com (global log-collector)
"#;

const SMALL_IPSET: &str = r#"# cas-audit allowlist for ipset restore: Microsoft Defender for Cloud Apps.
# Address set: small
# Source: hand-made (published 2024-05-01)
#
# Load with `ipset restore < FILE`: each set is created if missing and
# emptied and refilled; other sets are not touched. Match them from
# your rules, after accepting replies, e.g. on a router:
#
#   iptables -A FORWARD -m set --match-set cas-out4-80-443 dst -p tcp -m multiport --dports 80,443 -j ACCEPT
#   iptables -A FORWARD -m set --match-set cas-out4-443 dst -p tcp --dport 443 -j ACCEPT
#   ip6tables -A FORWARD -m set --match-set cas-out6-443 dst -p tcp --dport 443 -j ACCEPT
#   iptables -A FORWARD -m set --match-set cas-in4-25 src -p tcp --dport 25 -j ACCEPT
#   iptables -A FORWARD -m set --match-set cas-in4-443 src -p tcp --dport 443 -j ACCEPT
#   iptables -A FORWARD -m set --match-set cas-in4-11344 src -p tcp --dport 11344 -j ACCEPT
#
# (on a host: OUTPUT for the dst sets, INPUT for the src sets).

# outbound tcp 80,443, IPv4: 1 prefix
# data centers: US1
# purposes: log-collector
create cas-out4-80-443 hash:net family inet comment -exist
flush cas-out4-80-443
add cas-out4-80-443 100.64.2.99/32 comment "US1 log-collector" -exist

# outbound tcp 443, IPv4: 2 prefixes
# data centers: US1, US2, EU1
# purposes: portal, access-session-controls, siem-agent
create cas-out4-443 hash:net family inet comment -exist
flush cas-out4-443
add cas-out4-443 100.64.2.10/32 comment "US1,EU1 portal,siem-agent" -exist
add cas-out4-443 198.51.100.0/24 comment "US1,US2 access-session-controls" -exist

# outbound tcp 443, IPv6: 1 prefix
# data centers: EU2
# purposes: portal
create cas-out6-443 hash:net family inet6 comment -exist
flush cas-out6-443
add cas-out6-443 2001:db8::/32 comment "EU2 portal" -exist

# inbound tcp 25, IPv4: 1 prefix
# data centers: global
# purposes: mail
create cas-in4-25 hash:net family inet comment -exist
flush cas-in4-25
add cas-in4-25 203.0.113.200/32 comment "global mail" -exist

# inbound tcp 443, IPv4: 1 prefix
# data centers: US1
# purposes: app-connector
create cas-in4-443 hash:net family inet comment -exist
flush cas-in4-443
add cas-in4-443 203.0.113.0/28 comment "US1 app-connector" -exist

# inbound tcp 11344, IPv4: 1 prefix
# data centers: Gov US1
# purposes: dlp
create cas-in4-11344 hash:net family inet comment -exist
flush cas-in4-11344
add cas-in4-11344 203.0.113.5/32 comment "Gov US1 dlp" -exist

# DNS names to allow in your proxy (IP rules cannot match names): 2
#   outbound tcp 443: *.us.example.com (US1,US2 portal)
#   outbound tcp 443: collector.example.com (global log-collector)
"#;

#[test]
fn small_nft_exact() {
    assert_eq!(export(&small(), ExportFormat::Nft), SMALL_NFT);
}

#[test]
fn small_iptables_exact() {
    assert_eq!(export(&small(), ExportFormat::Iptables), SMALL_IPTABLES);
}

#[test]
fn small_ipset_exact() {
    assert_eq!(export(&small(), ExportFormat::Ipset), SMALL_IPSET);
}

#[test]
fn small_json_exact() {
    let text = export(&small(), ExportFormat::Json);
    assert!(text.ends_with("}\n"), "{text}");
    let got: serde_json::Value = serde_json::from_str(&text).unwrap();
    let want = serde_json::json!({
        "set": "small",
        "source": "hand-made",
        "published": "2024-05-01",
        "rules": [
            {"id": "out4-80-443", "direction": "outbound", "family": "ipv4", "protocol": "tcp",
             "ports": [80, 443], "prefixes": ["100.64.2.99/32"],
             "datacenters": ["US1"], "global": false, "purposes": ["log-collector"]},
            {"id": "out4-443", "direction": "outbound", "family": "ipv4", "protocol": "tcp",
             "ports": [443], "prefixes": ["100.64.2.10/32", "198.51.100.0/24"],
             "datacenters": ["US1", "US2", "EU1"], "global": false,
             "purposes": ["portal", "access-session-controls", "siem-agent"]},
            {"id": "out6-443", "direction": "outbound", "family": "ipv6", "protocol": "tcp",
             "ports": [443], "prefixes": ["2001:db8::/32"],
             "datacenters": ["EU2"], "global": false, "purposes": ["portal"]},
            {"id": "in4-25", "direction": "inbound", "family": "ipv4", "protocol": "tcp",
             "ports": [25], "prefixes": ["203.0.113.200/32"],
             "datacenters": [], "global": true, "purposes": ["mail"]},
            {"id": "in4-443", "direction": "inbound", "family": "ipv4", "protocol": "tcp",
             "ports": [443], "prefixes": ["203.0.113.0/28"],
             "datacenters": ["US1"], "global": false, "purposes": ["app-connector"]},
            {"id": "in4-11344", "direction": "inbound", "family": "ipv4", "protocol": "tcp",
             "ports": [11344], "prefixes": ["203.0.113.5/32"],
             "datacenters": ["Gov US1"], "global": false, "purposes": ["dlp"]},
        ],
        "dns": [
            {"name": "*.us.example.com", "direction": "outbound", "protocol": "tcp",
             "ports": [443], "datacenters": ["US1", "US2"], "global": false,
             "purposes": ["portal"]},
            {"name": "collector.example.com", "direction": "outbound", "protocol": "tcp",
             "ports": [443], "datacenters": [], "global": true,
             "purposes": ["log-collector"]},
        ],
    });
    assert_eq!(got, want);
    // Pretty-printed, keys in the order above.
    assert!(
        text.starts_with("{\n  \"set\": \"small\",\n  \"source\""),
        "{text}"
    );
}

#[test]
fn output_does_not_depend_on_entry_order() {
    let a = small();
    let mut b = small();
    b.entries.reverse();
    b.dns.reverse();
    for format in [
        ExportFormat::Nft,
        ExportFormat::Iptables,
        ExportFormat::Ipset,
        ExportFormat::Json,
    ] {
        assert_eq!(export(&a, format), export(&b, format), "{format:?}");
    }
}

#[test]
fn covered_and_duplicate_prefixes_fold_into_the_covering_one() {
    let s = set(
        vec![
            entry("10.1.2.3/32", Some(Us2), Portal, &[443]),
            entry("10.0.0.0/8", Some(Us1), Portal, &[443]),
            entry("10.1.0.0/16", Some(Eu1), SiemAgent, &[443]),
            entry("10.200.0.0/8", Some(Us3), Portal, &[443]),
            entry("9.255.255.255/32", Some(GovUs1), Portal, &[443]),
            entry("11.0.0.0/8", None, Portal, &[443]),
            entry("2001:db8:1::1/128", Some(Eu1), Portal, &[443]),
            entry("2001:db8::/32", Some(Eu2), Portal, &[443]),
        ],
        vec![],
    );
    let plan = Plan::new(&s);
    let got: Vec<(String, String)> = plan
        .groups
        .iter()
        .flat_map(|g| &g.blocks)
        .map(|b| (b.net.to_string(), b.tags.label()))
        .collect();
    let want = [
        ("9.255.255.255/32", "Gov US1 portal"),
        ("10.0.0.0/8", "US1,US2,US3,EU1 portal,siem-agent"),
        ("11.0.0.0/8", "global portal"),
        ("2001:db8::/32", "EU1,EU2 portal"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(n, l)| ((*n).to_owned(), (*l).to_owned()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(plan.groups.len(), 2);
    let nft = export(&s, ExportFormat::Nft);
    assert!(
        nft.contains("\t# outbound tcp 443, IPv4: 3 prefixes\n"),
        "{nft}"
    );
}

#[test]
fn long_port_lists() {
    let many: Vec<u16> = (8000..8016).collect();
    let s = set(
        vec![
            entry("198.51.100.1/32", Some(Us1), Portal, &many),
            entry("198.51.100.2/32", Some(Us1), Portal, &[8443, 80, 443, 80]),
        ],
        vec![],
    );
    let plan = Plan::new(&s);
    let ids: Vec<&str> = plan.groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, ["out4-80-443-8443", "out4-g1"]);
    assert!(plan.groups.iter().all(|g| g.ipset_name().len() <= 31));

    let ipt = export(&s, ExportFormat::Iptables);
    let rules: Vec<&str> = ipt.lines().filter(|l| l.starts_with("-A ")).collect();
    assert_eq!(
        rules,
        [
            "-A CAS-OUTBOUND -d 198.51.100.2/32 -p tcp -m multiport --dports 80,443,8443 \
                 -m comment --comment \"US1 portal\" -j ACCEPT",
            "-A CAS-OUTBOUND -d 198.51.100.1/32 -p tcp -m multiport --dports \
                 8000,8001,8002,8003,8004,8005,8006,8007,8008,8009,8010,8011,8012,8013,8014 \
                 -m comment --comment \"US1 portal\" -j ACCEPT",
            "-A CAS-OUTBOUND -d 198.51.100.1/32 -p tcp -m tcp --dport 8015 \
                 -m comment --comment \"US1 portal\" -j ACCEPT",
        ]
    );
    let nft = export(&s, ExportFormat::Nft);
    assert!(
        nft.contains("\t\tip daddr @out4_80_443_8443 tcp dport { 80, 443, 8443 } accept\n"),
        "{nft}"
    );
    assert!(
        nft.contains("\t\tip daddr @out4_g1 tcp dport { 8000, 8001, "),
        "{nft}"
    );
    let ipset = export(&s, ExportFormat::Ipset);
    assert!(ipset.contains("\ncreate cas-out4-g1 hash:net family inet comment -exist\n"));
}

#[test]
fn ipset_stores_a_zero_prefix_as_two_halves() {
    let s = set(
        vec![
            entry("0.0.0.0/0", Some(Us1), Portal, &[443]),
            entry("::/0", Some(Us1), Portal, &[443]),
        ],
        vec![],
    );
    let ipset = export(&s, ExportFormat::Ipset);
    let adds: Vec<&str> = ipset.lines().filter(|l| l.starts_with("add ")).collect();
    assert_eq!(
        adds,
        [
            "add cas-out4-443 0.0.0.0/1 comment \"US1 portal\" -exist",
            "add cas-out4-443 128.0.0.0/1 comment \"US1 portal\" -exist",
            "add cas-out6-443 ::/1 comment \"US1 portal\" -exist",
            "add cas-out6-443 8000::/1 comment \"US1 portal\" -exist",
        ]
    );
    assert!(export(&s, ExportFormat::Nft).contains("\t\t\t0.0.0.0/0,\t# US1 portal\n"));
}

#[test]
fn ipset_raises_maxelem_for_big_sets() {
    let entries = (0..70_000u32)
        .map(|i| {
            let addr = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            entry(&format!("{addr}/32"), Some(Us1), Portal, &[443])
        })
        .collect();
    let ipset = export(&set(entries, vec![]), ExportFormat::Ipset);
    assert!(ipset
        .contains("\ncreate cas-out4-443 hash:net family inet maxelem 131072 comment -exist\n"));
    assert_eq!(
        ipset.lines().filter(|l| l.starts_with("add ")).count(),
        70_000
    );
}

#[test]
fn text_from_the_set_cannot_leave_a_comment() {
    let mut s = small();
    s.name = "evil\nflush ruleset".into();
    s.source = "x\r\n*filter".into();
    s.dns[0].name = "a.example\n-A INPUT -j DROP".into();
    for format in [
        ExportFormat::Nft,
        ExportFormat::Iptables,
        ExportFormat::Ipset,
    ] {
        let text = export(&s, format);
        assert!(
            text.contains("# Address set: evil\\nflush ruleset\n"),
            "{text}"
        );
        assert!(
            text.contains("# Source: x\\r\\n*filter (published"),
            "{text}"
        );
        assert!(text.contains("#   outbound tcp 443: a.example\\n-A INPUT -j DROP ("));
        assert!(!text
            .lines()
            .any(|l| l == "flush ruleset" || l.starts_with("-A INPUT")));
    }
    let json: serde_json::Value = serde_json::from_str(&export(&s, ExportFormat::Json)).unwrap();
    assert_eq!(json["set"], "evil\nflush ruleset");
}

#[test]
fn entries_without_ports_are_reported() {
    let mut s = small();
    s.entries
        .push(entry("198.51.100.77/32", Some(Us1), Portal, &[]));
    s.entries
        .push(entry("198.51.100.78/32", Some(Us1), Portal, &[]));
    for format in [
        ExportFormat::Nft,
        ExportFormat::Iptables,
        ExportFormat::Ipset,
    ] {
        let text = export(&s, format);
        assert!(text.contains("\n# Left out: 2 entries without any port.\n"));
        assert!(!text.contains("198.51.100.77"), "{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&export(&s, ExportFormat::Json)).unwrap();
    assert_eq!(json["entries_without_ports"], 2);
    let json: serde_json::Value =
        serde_json::from_str(&export(&small(), ExportFormat::Json)).unwrap();
    assert!(json.get("entries_without_ports").is_none());
}

#[test]
fn empty_set() {
    let s = set(vec![], vec![]);
    let nft = export(&s, ExportFormat::Nft);
    assert!(
        nft.ends_with(
            "table inet cas_audit\n\
             delete table inet cas_audit\n\
             \n\
             table inet cas_audit {\n\
             \t# Destinations your hosts connect to.\n\
             \tchain cas_outbound {\n\
             \t}\n\
             \n\
             \t# Sources the service connects from.\n\
             \tchain cas_inbound {\n\
             \t}\n\
             }\n"
        ),
        "{nft}"
    );
    let ipt = export(&s, ExportFormat::Iptables);
    assert!(ipt.ends_with("*filter\n:CAS-OUTBOUND - [0:0]\n:CAS-INBOUND - [0:0]\nCOMMIT\n"));
    let ipset = export(&s, ExportFormat::Ipset);
    assert!(ipset.contains("#   (no sets: the address set has no entries)\n"));
    assert!(!ipset.lines().any(|l| !l.is_empty() && !l.starts_with('#')));
    let json: serde_json::Value = serde_json::from_str(&export(&s, ExportFormat::Json)).unwrap();
    assert_eq!(json["rules"], serde_json::json!([]));
    assert_eq!(json["dns"], serde_json::json!([]));
}

#[test]
fn builtin_groups_cover_every_entry() {
    let s = AddressSet::builtin();
    let plan = Plan::new(&s);
    let ids: Vec<&str> = plan.groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, ["out4-443", "in4-25", "in4-443", "in4-11344"]);
    for e in &s.entries {
        let g = plan
            .groups
            .iter()
            .find(|g| g.direction == e.direction && g.ports == e.ports)
            .unwrap();
        let b = g
            .blocks
            .iter()
            .find(|b| b.net.contains(&e.prefix.trunc()))
            .unwrap_or_else(|| panic!("{e:?} not exported"));
        assert!(b.tags.purposes.contains(&e.purpose), "{e:?}");
        match e.datacenter {
            Some(dc) => assert!(b.tags.datacenters.contains(&dc), "{e:?}"),
            None => assert!(b.tags.global, "{e:?}"),
        }
    }
}

#[test]
fn format_names() {
    let names: Vec<&str> = ExportFormat::ALL.iter().map(|(_, n)| *n).collect();
    assert_eq!(names, ["nft", "iptables", "ipset", "json"]);
    assert_eq!(
        "IPSET".parse::<ExportFormat>().unwrap(),
        ExportFormat::Ipset
    );
}
