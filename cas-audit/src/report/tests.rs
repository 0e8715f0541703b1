//! Unit tests of `report` over hand-written record lines: exact counts,
//! deduplication, each filter, skipped lines, paths.

use serde_json::{json, Value};

use super::*;

/// A flow record as the agent writes it, with `changes` applied (a null
/// removes the field, as in older logs).
fn flow(changes: Value) -> String {
    let mut rec = json!({
        "type": "flow", "ts": "2026-11-22T10:00:05.000000Z", "reason": "exit",
        "state": "established", "history": "Dd", "icmp_type": null, "icmp_code": null,
        "reporter": null, "rst_ttl": null, "rst_hops": null,
        "iface": "uplink", "proto": "udp",
        "local_addr": "198.51.100.2", "local_port": 40001,
        "remote_addr": "13.64.196.27", "remote_port": 8443,
        "initiator": "unknown", "first_packet": "out", "service_port": 8443,
        "prefix": "13.64.196.27/32", "datacenters": ["US1"], "purposes": ["app-connector", "dlp"],
        "verdict": "disallowed-port",
        "packets_out": 5, "bytes_out": 710, "packets_in": 0, "bytes_in": 0,
        "tcp_flags_out": [], "tcp_flags_in": [],
        "first_seen": "2026-11-22T10:00:00.000000Z", "last_seen": "2026-11-22T10:00:01.000000Z",
    });
    for (k, v) in changes.as_object().expect("an object") {
        if v == &json!("-") {
            rec.as_object_mut().unwrap().remove(k);
        } else {
            rec[k] = v.clone();
        }
    }
    rec.to_string()
}

/// Files as `(name, lines)`.
type Files = Vec<(&'static str, Vec<String>)>;

fn records(files: &[(&'static str, Vec<String>)]) -> Files {
    files.to_vec()
}

/// Reads `inputs` (name, bytes) as `report` does and counts what `filters`
/// match, `top` rows per breakdown.
fn evidence_of_bytes(inputs: &[(&str, &[u8])], filters: &Filters, top: usize) -> Evidence {
    let mut r = Records::default();
    let mut t = Tallies::new(filters.clone());
    let mut sink = |f: SavedFlow| t.add(&f);
    for (name, bytes) in inputs {
        r.read(name, *bytes, &mut sink).unwrap();
    }
    r.finish(&mut sink);
    Evidence::new(&r, t, top)
}

/// [`evidence_of_bytes`] of files of lines.
fn evidence_of(files: &[(&'static str, Vec<String>)], filters: &Filters, top: usize) -> Evidence {
    let texts: Vec<(&str, String)> = files
        .iter()
        .map(|(name, lines)| (*name, lines.join("\n") + "\n"))
        .collect();
    let inputs: Vec<(&str, &[u8])> = texts.iter().map(|(n, t)| (*n, t.as_bytes())).collect();
    evidence_of_bytes(&inputs, filters, top)
}

fn t(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).unwrap()
}

fn tally(flows: u64, packets_out: u64, bytes_out: u64, packets_in: u64, bytes_in: u64) -> Tally {
    Tally {
        flows,
        packets_out,
        packets_in,
        bytes_out,
        bytes_in,
    }
}

/// Six flows over two files: a UDP flow blocked by ICMP (three records),
/// a closed TCP connection, a refused one, an old-format mail flow without
/// state fields, an unanswered IPv6 flow, and the first flow's 5-tuple
/// again later (a new flow).
fn sample() -> Files {
    let a = vec![
        flow(
            json!({"reason": "flagged", "state": "pending", "packets_out": 1, "bytes_out": 142,
                    "last_seen": "2026-11-22T10:00:00.000000Z"}),
        ),
        flow(
            json!({"proto": "tcp", "local_port": 40002, "remote_port": 443, "service_port": 443,
                    "verdict": "allowed", "state": "closed", "reason": "ended", "history": "ShADadFf",
                    "packets_out": 10, "bytes_out": 1500, "packets_in": 9, "bytes_in": 2500,
                    "first_seen": "2026-11-22T09:59:00.000000Z", "last_seen": "2026-11-22T09:59:01.000000Z"}),
        ),
        flow(
            json!({"reason": "blocked", "state": "unreachable", "packets_out": 3, "bytes_out": 426,
                    "icmp_type": 3, "icmp_code": 3, "reporter": "203.0.113.9"}),
        ),
        flow(
            json!({"proto": "tcp", "local_addr": "198.51.100.3", "local_port": 40003,
                    "remote_addr": "40.81.63.1", "remote_port": 8080, "service_port": 8080,
                    "prefix": "40.81.63.1/32", "purposes": ["access-session-controls"],
                    "state": "refused", "history": "Sr", "packets_out": 1, "bytes_out": 74,
                    "packets_in": 1, "bytes_in": 54,
                    "first_seen": "2026-11-22T10:01:00.000000Z", "last_seen": "2026-11-22T10:01:00.100000Z"}),
        ),
    ];
    let b = vec![
        flow(
            json!({"reason": "exit", "state": "unreachable", "icmp_type": 3, "icmp_code": 3,
                    "reporter": "203.0.113.9"}),
        ),
        flow(
            json!({"local_addr": "198.51.100.3", "local_port": 2525, "remote_addr": "65.55.234.193",
                    "remote_port": 25, "service_port": 25, "prefix": "65.55.234.192/26",
                    "datacenters": [], "purposes": ["mail"], "verdict": "allowed",
                    "state": "-", "history": "-", "icmp_type": "-", "icmp_code": "-", "reporter": "-",
                    "rst_ttl": "-", "rst_hops": "-",
                    "packets_out": 2, "bytes_out": 200, "packets_in": 2, "bytes_in": 300,
                    "first_seen": "2026-11-22T08:00:00.000000Z", "last_seen": "2026-11-22T08:00:02.000000Z"}),
        ),
        flow(
            json!({"proto": "tcp", "local_addr": "2001:db8:1::2", "local_port": 40005,
                    "remote_addr": "2001:db8:ca5::1", "remote_port": 443, "service_port": 443,
                    "prefix": "2001:db8:ca5::/48", "datacenters": ["EU1"], "purposes": ["portal"],
                    "verdict": "allowed", "state": "unanswered", "history": "S",
                    "packets_out": 2, "bytes_out": 148,
                    "first_seen": "2026-11-22T11:00:00.000000Z", "last_seen": "2026-11-22T11:00:01.000000Z"}),
        ),
        flow(
            json!({"state": "unanswered", "packets_out": 1, "bytes_out": 142,
                    "first_seen": "2026-11-22T12:00:00.000000Z", "last_seen": "2026-11-22T12:00:00.000000Z"}),
        ),
        r#"{"type":"summary","flows":6,"log_records_lost":0}"#.to_string(),
    ];
    records(&[("a.jsonl", a), ("b.jsonl", b)])
}

#[test]
fn counts_are_exact() {
    let ev = evidence_of(&sample(), &Filters::default(), 10);
    assert_eq!(ev.files, ["a.jsonl", "b.jsonl"]);
    assert_eq!((ev.records, ev.runs, ev.skipped), (8, 1, 0));
    // 5 + 10 + 1 + 2 + 2 + 1 packets out ...
    assert_eq!(ev.total, tally(6, 21, 2774, 12, 2854));
    assert_eq!(
        ev.first_seen.as_deref(),
        Some("2026-11-22T08:00:00.000000Z")
    );
    assert_eq!(ev.last_seen.as_deref(), Some("2026-11-22T12:00:00.000000Z"));

    let dc = |d: Option<&str>| DataCenterKey {
        datacenter: d.map(Into::into),
    };
    assert_eq!(
        ev.by_datacenter,
        vec![
            Row {
                key: dc(Some("US1")),
                tally: tally(4, 17, 2426, 10, 2554)
            },
            Row {
                key: dc(None),
                tally: tally(1, 2, 200, 2, 300)
            },
            Row {
                key: dc(Some("EU1")),
                tally: tally(1, 2, 148, 0, 0)
            },
        ]
    );
    let purpose = |p: &str| PurposeKey {
        purpose: Some(p.into()),
    };
    assert_eq!(
        ev.by_purpose,
        vec![
            Row {
                key: purpose("app-connector"),
                tally: tally(3, 16, 2352, 9, 2500)
            },
            Row {
                key: purpose("dlp"),
                tally: tally(3, 16, 2352, 9, 2500)
            },
            Row {
                key: purpose("access-session-controls"),
                tally: tally(1, 1, 74, 1, 54)
            },
            Row {
                key: purpose("mail"),
                tally: tally(1, 2, 200, 2, 300)
            },
            Row {
                key: purpose("portal"),
                tally: tally(1, 2, 148, 0, 0)
            },
        ]
    );
    let state = |s: &str| StateKey { state: s.into() };
    assert_eq!(
        ev.by_state,
        vec![
            Row {
                key: state("unanswered"),
                tally: tally(2, 3, 290, 0, 0)
            },
            Row {
                key: state("closed"),
                tally: tally(1, 10, 1500, 9, 2500)
            },
            Row {
                key: state("refused"),
                tally: tally(1, 1, 74, 1, 54)
            },
            Row {
                key: state("unknown"),
                tally: tally(1, 2, 200, 2, 300)
            },
            Row {
                key: state("unreachable"),
                tally: tally(1, 5, 710, 0, 0)
            },
        ]
    );
    let verdict = |v: &str| VerdictKey { verdict: v.into() };
    assert_eq!(
        ev.by_verdict,
        vec![
            Row {
                key: verdict("allowed"),
                tally: tally(3, 14, 1848, 11, 2800)
            },
            Row {
                key: verdict("disallowed-port"),
                tally: tally(3, 7, 926, 1, 54)
            },
        ]
    );
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let host = |s: &str| HostKey { local_addr: ip(s) };
    assert_eq!(
        ev.by_local_host,
        vec![
            Row {
                key: host("198.51.100.2"),
                tally: tally(3, 16, 2352, 9, 2500)
            },
            Row {
                key: host("198.51.100.3"),
                tally: tally(2, 3, 274, 3, 354)
            },
            Row {
                key: host("2001:db8:1::2"),
                tally: tally(1, 2, 148, 0, 0)
            },
        ]
    );
    let svc = |s: &str, p: u16| ServiceKey {
        local_addr: ip(s),
        service_port: Some(p),
    };
    assert_eq!(
        ev.by_local_service,
        vec![
            Row {
                key: svc("198.51.100.2", 8443),
                tally: tally(2, 6, 852, 0, 0)
            },
            Row {
                key: svc("198.51.100.2", 443),
                tally: tally(1, 10, 1500, 9, 2500)
            },
            Row {
                key: svc("198.51.100.3", 25),
                tally: tally(1, 2, 200, 2, 300)
            },
            Row {
                key: svc("198.51.100.3", 8080),
                tally: tally(1, 1, 74, 1, 54)
            },
            Row {
                key: svc("2001:db8:1::2", 443),
                tally: tally(1, 2, 148, 0, 0)
            },
        ]
    );
    assert_eq!((ev.blocked_flows, ev.blocked_destinations), (4, 3));
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        ev.top_blocked,
        vec![
            BlockedDestination {
                remote_addr: ip("13.64.196.27"),
                service_port: Some(8443),
                flows: 2,
                states: s(&["unanswered", "unreachable"]),
                datacenters: s(&["US1"]),
                purposes: s(&["app-connector", "dlp"]),
                reporters: vec![ip("203.0.113.9")],
                icmp: vec![IcmpSeen {
                    icmp_type: 3,
                    icmp_code: 3
                }],
                local_hosts: 1,
            },
            BlockedDestination {
                remote_addr: ip("40.81.63.1"),
                service_port: Some(8080),
                flows: 1,
                states: s(&["refused"]),
                datacenters: s(&["US1"]),
                purposes: s(&["access-session-controls"]),
                reporters: vec![],
                icmp: vec![],
                local_hosts: 1,
            },
            BlockedDestination {
                remote_addr: ip("2001:db8:ca5::1"),
                service_port: Some(443),
                flows: 1,
                states: s(&["unanswered"]),
                datacenters: s(&["EU1"]),
                purposes: s(&["portal"]),
                reporters: vec![],
                icmp: vec![],
                local_hosts: 1,
            },
        ]
    );
    // --top 1
    let ev1 = evidence_of(&sample(), &Filters::default(), 1);
    assert_eq!(ev1.top_blocked, ev.top_blocked[..1]);
    assert_eq!((ev1.blocked_flows, ev1.blocked_destinations), (4, 3));
}

/// The JSON document: field names and shapes are a contract.
#[test]
fn json_document_fields() {
    let recs = records(&[(
        "x.jsonl",
        vec![
            flow(
                json!({"state": "unreachable", "icmp_type": 3, "icmp_code": 13,
                        "reporter": "198.51.100.1"}),
            ),
            "garbage".into(),
        ],
    )]);
    let filters = Filters {
        until: Some(t("2026-11-23T00:00:00Z")),
        ..Filters::default()
    };
    let v = serde_json::to_value(evidence_of(&recs, &filters, 10)).unwrap();
    let tally =
        json!({"flows": 1, "packets_out": 5, "packets_in": 0, "bytes_out": 710, "bytes_in": 0});
    let with = |key: Value| {
        let mut o = key;
        o.as_object_mut()
            .unwrap()
            .extend(tally.as_object().unwrap().clone());
        o
    };
    assert_eq!(
        v,
        json!({
            "files": ["x.jsonl"], "records": 1, "runs": 0, "skipped": 1,
            "skipped_lines": ["x.jsonl:2: not a JSON object"],
            "log_records_lost": 0,
            "filters": {"since": null, "until": "2026-11-23T00:00:00.000000Z", "states": [],
                        "datacenters": [], "purposes": [], "hosts": []},
            "flows": 1, "packets_out": 5, "packets_in": 0, "bytes_out": 710, "bytes_in": 0,
            "first_seen": "2026-11-22T10:00:00.000000Z", "last_seen": "2026-11-22T10:00:01.000000Z",
            "by_datacenter": [with(json!({"datacenter": "US1"}))],
            "by_purpose": [with(json!({"purpose": "app-connector"})), with(json!({"purpose": "dlp"}))],
            "by_dns_name": [with(json!({"dns_name": null}))],
            "by_state": [with(json!({"state": "unreachable"}))],
            "by_verdict": [with(json!({"verdict": "disallowed-port"}))],
            "by_local_host": [with(json!({"local_addr": "198.51.100.2"}))],
            "by_local_service": [with(json!({"local_addr": "198.51.100.2", "service_port": 8443}))],
            "blocked_flows": 1, "blocked_destinations": 1,
            "top_blocked": [{"remote_addr": "13.64.196.27", "service_port": 8443, "flows": 1,
                             "states": ["unreachable"], "datacenters": ["US1"],
                             "purposes": ["app-connector", "dlp"], "reporters": ["198.51.100.1"],
                             "icmp": [{"icmp_type": 3, "icmp_code": 13}], "local_hosts": 1}],
            "rows": {"by_datacenter": 1, "by_purpose": 2, "by_dns_name": 1, "by_state": 1, "by_verdict": 1,
                     "by_local_host": 1, "by_local_service": 1},
        })
    );
}

/// A flow's records are one flow, its last record counts; another
/// interface or another first_seen is another flow.
#[test]
fn dedupe_keeps_the_last_record() {
    let recs = records(&[
        (
            "1.jsonl",
            vec![
                flow(json!({"reason": "flagged", "packets_out": 1, "state": "pending"})),
                flow(json!({"iface": "eth2", "packets_out": 7})),
            ],
        ),
        (
            "2.jsonl",
            vec![
                flow(json!({"reason": "exit", "packets_out": 9, "state": "unanswered"})),
                flow(json!({"first_seen": "2026-11-22T10:00:00.000001Z", "packets_out": 4})),
            ],
        ),
    ]);
    let ev = evidence_of(&recs, &Filters::default(), 10);
    assert_eq!(ev.total.flows, 3);
    assert_eq!(ev.records, 4);
    assert_eq!(ev.total.packets_out, 9 + 7 + 4);
    assert_eq!(
        ev.by_state
            .iter()
            .map(|r| (r.key.state.as_str(), r.tally.flows))
            .collect::<Vec<_>>(),
        [("established", 2), ("unanswered", 1)]
    );
    // The same instant written another way is the same flow.
    let recs = records(&[(
        "3.jsonl",
        vec![
            flow(json!({})),
            flow(json!({"first_seen": "2026-11-22T11:00:00+01:00", "packets_out": 6})),
        ],
    )]);
    let ev = evidence_of(&recs, &Filters::default(), 10);
    assert_eq!((ev.total.flows, ev.total.packets_out), (1, 6));
}

fn flows_with(filters: Filters) -> u64 {
    evidence_of(&sample(), &filters, 10).total.flows
}

#[test]
fn each_filter() {
    let f = Filters::default;
    assert_eq!(flows_with(f()), 6);
    // Time: flows that overlap the window.
    assert_eq!(
        flows_with(Filters {
            since: Some(t("2026-11-22T10:00:00.5Z")),
            ..f()
        }),
        4,
        "the UDP flow (until 10:00:01), the refused, IPv6 and later flows"
    );
    assert_eq!(
        flows_with(Filters {
            since: Some(t("2026-11-22T10:00:01.000001Z")),
            ..f()
        }),
        3
    );
    assert_eq!(
        flows_with(Filters {
            until: Some(t("2026-11-22T09:59:00Z")),
            ..f()
        }),
        2,
        "mail (08:00) and the TCP connection starting at 09:59:00"
    );
    assert_eq!(
        flows_with(Filters {
            since: Some(t("2026-11-22T09:00:00Z")),
            until: Some(t("2026-11-22T10:30:00Z")),
            ..f()
        }),
        3
    );
    // States, and records without one.
    assert_eq!(
        flows_with(Filters {
            states: vec![Some(State::Unanswered)],
            ..f()
        }),
        2
    );
    assert_eq!(
        flows_with(Filters {
            states: vec![Some(State::Refused), Some(State::Closed), None],
            ..f()
        }),
        3
    );
    assert_eq!(
        flows_with(Filters {
            states: vec![Some(State::Reset)],
            ..f()
        }),
        0
    );
    // Data centers: ranges without one (mail) do not match.
    assert_eq!(
        flows_with(Filters {
            datacenters: vec![DataCenter::Us1],
            ..f()
        }),
        4
    );
    assert_eq!(
        flows_with(Filters {
            datacenters: vec![DataCenter::Eu1, DataCenter::GovUs1],
            ..f()
        }),
        1
    );
    assert_eq!(
        flows_with(Filters {
            purposes: vec![Purpose::Dlp],
            ..f()
        }),
        3
    );
    assert_eq!(
        flows_with(Filters {
            purposes: vec![Purpose::Mail, Purpose::Portal],
            ..f()
        }),
        2
    );
    // Hosts: an address, a prefix, IPv6.
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    assert_eq!(
        flows_with(Filters {
            hosts: vec![net("198.51.100.3/32")],
            ..f()
        }),
        2
    );
    assert_eq!(
        flows_with(Filters {
            hosts: vec![net("198.51.100.0/24")],
            ..f()
        }),
        5
    );
    assert_eq!(
        flows_with(Filters {
            hosts: vec![net("2001:db8:1::/64")],
            ..f()
        }),
        1
    );
    // Filters combine with AND.
    assert_eq!(
        flows_with(Filters {
            hosts: vec![net("198.51.100.0/24")],
            datacenters: vec![DataCenter::Us1],
            states: vec![Some(State::Unanswered), Some(State::Unreachable)],
            ..f()
        }),
        2
    );
    assert_eq!(
        flows_with(Filters {
            hosts: vec![net("198.51.100.3/32")],
            states: vec![Some(State::Unanswered)],
            ..f()
        }),
        0
    );
}

/// A data center written in another spelling in a record still matches.
#[test]
fn data_centers_are_canonical() {
    let recs = records(&[("g.jsonl", vec![flow(json!({"datacenters": ["gov-us1"]}))])]);
    let ev = evidence_of(
        &recs,
        &Filters {
            datacenters: vec![DataCenter::GovUs1],
            ..Filters::default()
        },
        10,
    );
    assert_eq!(ev.total.flows, 1);
    assert_eq!(
        ev.by_datacenter[0].key.datacenter.as_deref(),
        Some("Gov US1")
    );
}

#[test]
fn bad_lines_are_skipped_and_named() {
    let mut text = String::new();
    text.push_str(&flow(json!({})));
    text.push('\n');
    text.push_str("not json\n"); // 2
    text.push('\n'); // 3: empty
    text.push_str("{\"type\":\"check\",\"address\":\"13.64.196.27\"}\n"); // 4
    text.push_str("[1,2]\n"); // 5
    let no_local = flow(json!({"local_addr": "-"}));
    text.push_str(&no_local); // 6
    text.push('\n');
    text.push_str(&flow(json!({"first_seen": "yesterday"}))); // 7
    text.push('\n');
    text.push_str("{\"n\":1}\n"); // 8: no type
    let mut bytes = text.into_bytes();
    bytes.extend(b"\xff\xfe\n"); // 9
    let last = flow(json!({"local_port": 40002}));
    bytes.extend(&last.as_bytes()[..40]); // 10: cut short, no newline
    let ev = evidence_of_bytes(&[("f.jsonl", &bytes[..])], &Filters::default(), 10);
    assert_eq!((ev.records, ev.skipped, ev.total.flows), (1, 9, 1));
    assert_eq!(
        ev.skipped_lines,
        [
            "f.jsonl:2: not a JSON object".to_string(),
            "f.jsonl:3: not a JSON object".to_string(),
            "f.jsonl:4: not a cas-audit run record (type \"check\")".to_string(),
            "f.jsonl:5: not a JSON object".to_string(),
            format!(
                "f.jsonl:6: bad flow record: missing field `local_addr` at line 1 column {}",
                no_local.len()
            ),
        ]
    );
    // A record cut short (the agent killed mid-write, or a full disk
    // without truncation) is a bad line too.
    let ev = evidence_of_bytes(
        &[("t.jsonl", &last.as_bytes()[..40])],
        &Filters::default(),
        10,
    );
    assert_eq!(
        ev.skipped_lines,
        ["t.jsonl:1: not JSON: EOF while parsing a string at line 1 column 40"]
    );
    // The ones after the first few are counted, not named.
    let h = format!("{}\n", flow(json!({"first_seen": "yesterday"})));
    let ev = evidence_of_bytes(
        &[
            ("g.jsonl", &b"{\"n\":1}\n\xff\n"[..]),
            ("h.jsonl", h.as_bytes()),
        ],
        &Filters::default(),
        10,
    );
    assert_eq!(
        ev.skipped_lines,
        [
            "g.jsonl:1: not a cas-audit run record (no \"type\")",
            "g.jsonl:2: not UTF-8 text",
            "h.jsonl:1: bad flow record: first_seen \"yesterday\" is not an RFC 3339 time",
        ]
    );
}

#[test]
fn times_and_states_parse() {
    assert_eq!(
        "2026-11-22T10:00:00Z".parse::<TimeSpec>(),
        Ok(TimeSpec::At(t("2026-11-22T10:00:00Z")))
    );
    assert_eq!(
        "2026-11-22T11:00:00+01:00"
            .parse::<TimeSpec>()
            .map(|t| t.resolve(OffsetDateTime::UNIX_EPOCH)),
        Ok(t("2026-11-22T10:00:00Z"))
    );
    assert_eq!(
        "2026-11-22".parse::<TimeSpec>(),
        Ok(TimeSpec::At(t("2026-11-22T00:00:00Z")))
    );
    let now = t("2026-11-22T12:00:00Z");
    assert_eq!(
        "2h".parse::<TimeSpec>().map(|s| s.resolve(now)),
        Ok(t("2026-11-22T10:00:00Z"))
    );
    assert_eq!(
        "90".parse::<TimeSpec>().map(|s| s.resolve(now)),
        Ok(t("2026-11-22T11:58:30Z"))
    );
    for bad in ["yesterday", "2026-11-22T10:00:00", "2026-13-01", ""] {
        assert_eq!(
            bad.parse::<TimeSpec>(),
            Err(format!("{bad:?} is neither an RFC 3339 time (2026-11-22T10:00:00Z) nor a duration before now (2h)")),
        );
    }
    assert_eq!(
        "2w".parse::<TimeSpec>(),
        Err("\"2w\": unknown duration unit \"w\" (use s, m, h or d)".into())
    );
    assert_eq!(
        "refused".parse::<StateFilter>(),
        Ok(StateFilter(Some(State::Refused)))
    );
    assert_eq!("unknown".parse::<StateFilter>(), Ok(StateFilter(None)));
    assert_eq!(
        "blocked".parse::<StateFilter>(),
        Err("unknown state \"blocked\" (one of pending, established, closed, reset, unanswered, refused, unreachable), or unknown".into())
    );
}

/// A directory: its *.jsonl files in name order (log file suffixes in
/// write order); a missing path is a usage error, an unreadable file a
/// failure.
#[test]
fn paths() {
    let dir = std::env::temp_dir().join(format!("cas-audit-summarize-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub.jsonl")).unwrap();
    for n in [
        "cas-audit-20261122T100000Z-10.jsonl",
        "cas-audit-20261122T100000Z.jsonl",
        "cas-audit-20261122T100000Z-2.jsonl",
        "cas-audit-20261121T230000Z.jsonl",
        "a.jsonl",
        "notes.txt",
        "z.jsonl.gz",
    ] {
        std::fs::write(dir.join(n), "").unwrap();
    }
    let got = expand_paths(std::slice::from_ref(&dir)).unwrap();
    let names: Vec<String> = got
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "a.jsonl",
            "cas-audit-20261121T230000Z.jsonl",
            "cas-audit-20261122T100000Z.jsonl",
            "cas-audit-20261122T100000Z-2.jsonl",
            "cas-audit-20261122T100000Z-10.jsonl",
            "z.jsonl.gz",
        ]
    );
    let load = |p: &[PathBuf]| evidence(p, &Filters::default(), 10);
    let e = load(&[dir.join("missing.jsonl")]).err().unwrap();
    assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
    assert_eq!(
        e.to_string(),
        format!(
            "{}: no such file or directory",
            dir.join("missing.jsonl").display()
        )
    );
    // Reading /proc/self/mem at offset 0 fails with EIO: a bad input.
    let e = load(&[PathBuf::from("/proc/self/mem")]).err().unwrap();
    assert_eq!(e.exit_code(), crate::error::EXIT_USAGE, "{e}");
    assert_eq!(
        e.to_string(),
        "/proc/self/mem: Input/output error (os error 5)"
    );
    // Devices, FIFOs and directories given by name are refused at once.
    let fifo = dir.join("fifo.jsonl");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (p, what) in [
        (fifo.as_path(), "a FIFO"),
        (std::path::Path::new("/dev/zero"), "a character device"),
    ] {
        let e = load(&[p.to_path_buf()]).err().unwrap();
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE, "{e}");
        assert_eq!(
            e.to_string(),
            format!("{}: it is {what}, not a regular file", p.display())
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The sample written as the agent would, rotated into plain and
/// gzip-compressed files (one of them two gzip members, as `cat a.gz b.gz`
/// makes): the same figures as the plain files.
#[test]
fn gzip_files_read_like_plain_ones() {
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("cas-audit-gz-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let gz = |text: &str| {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let files = sample();
    let (a, b) = (&files[0].1, &files[1].1);
    let a_text = a.join("\n") + "\n";
    let (b1, b2) = b.split_at(2);
    let mut b_gz = gz(&(b1.join("\n") + "\n"));
    b_gz.extend(gz(&(b2.join("\n") + "\n")));
    std::fs::write(dir.join("cas-audit-20261122T100000Z.jsonl.gz"), gz(&a_text)).unwrap();
    std::fs::write(dir.join("cas-audit-20261122T110000Z.jsonl.gz"), b_gz).unwrap();
    let ev = evidence(std::slice::from_ref(&dir), &Filters::default(), 10).unwrap();
    let plain = evidence_of(&files, &Filters::default(), 10);
    assert_eq!((ev.records, ev.runs, ev.skipped), (8, 1, 0));
    assert_eq!(ev.total, plain.total);
    assert_eq!(ev.by_state, plain.by_state);
    assert_eq!(ev.top_blocked, plain.top_blocked);
    // A file cut short in the middle of its gzip stream is a bad input.
    let whole = gz(&a_text);
    std::fs::write(dir.join("cut.jsonl.gz"), &whole[..whole.len() / 2]).unwrap();
    let e = evidence(&[dir.join("cut.jsonl.gz")], &Filters::default(), 10)
        .err()
        .unwrap();
    assert_eq!(e.exit_code(), crate::error::EXIT_USAGE, "{e}");
    assert!(e.to_string().contains("cut.jsonl.gz: "), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A flow's final record wins over what is written after it; an `exit`
/// record gives way to a later run's report of the same flow (a restart
/// with --pin), but not to a later live notice.
#[test]
fn the_final_record_of_a_flow_counts() {
    let ended = flow(json!({"reason": "ended", "state": "closed", "packets_out": 7}));
    let stale = flow(json!({"reason": "blocked", "state": "unanswered", "packets_out": 1}));
    let ev = evidence_of(
        &records(&[("a.jsonl", vec![ended.clone(), stale.clone()])]),
        &Filters::default(),
        10,
    );
    assert_eq!(
        (ev.records, ev.total.flows, ev.total.packets_out),
        (2, 1, 7)
    );
    assert_eq!(ev.by_state[0].key.state, "closed");
    assert_eq!(ev.blocked_flows, 0);
    // exit, then the next run's expired record: the latter.
    let exit = flow(json!({"reason": "exit", "state": "established", "packets_out": 3}));
    let expired = flow(json!({"reason": "expired", "state": "established", "packets_out": 9}));
    let ev = evidence_of(
        &records(&[("a.jsonl", vec![exit.clone()]), ("b.jsonl", vec![expired])]),
        &Filters::default(),
        10,
    );
    assert_eq!((ev.total.flows, ev.total.packets_out), (1, 9));
    // exit, then a live notice of the same flow: the exit record.
    let ev = evidence_of(
        &records(&[("a.jsonl", vec![exit, stale])]),
        &Filters::default(),
        10,
    );
    assert_eq!((ev.total.flows, ev.total.packets_out), (1, 3));
}

/// A line longer than MAX_LINE is skipped without being kept whole; the
/// lines after it are read.
#[test]
fn long_lines_are_skipped() {
    let mut text = vec![b'{'; MAX_LINE + 10];
    text.push(b'\n');
    text.extend(flow(json!({})).as_bytes());
    text.push(b'\n');
    let ev = evidence_of_bytes(&[("l.jsonl", &text)], &Filters::default(), 10);
    assert_eq!((ev.records, ev.skipped, ev.total.flows), (1, 1, 1));
    assert_eq!(
        ev.skipped_lines,
        [format!("l.jsonl:1: longer than {MAX_LINE} bytes")]
    );
}

/// `--top` keeps the first rows of every breakdown, and says how many
/// there were; the JSON document is one line.
#[test]
fn top_applies_to_every_table() {
    let ev = evidence_of(&sample(), &Filters::default(), 1);
    assert_eq!(ev.by_local_host.len(), 1);
    assert_eq!(ev.by_local_service.len(), 1);
    assert_eq!(ev.by_state.len(), 1);
    assert_eq!(ev.top_blocked.len(), 1);
    assert_eq!(
        ev.rows,
        RowCounts {
            by_datacenter: 3,
            by_purpose: 5,
            by_dns_name: 1,
            by_state: 5,
            by_verdict: 2,
            by_local_host: 3,
            by_local_service: 5,
        }
    );
    // The counts are the whole selection's, whatever --top keeps.
    assert_eq!(ev.total.flows, 6);
    let text = ev.table();
    assert!(
        text.contains("... and 2 more local hosts (--top 1 of 3; --top all shows every row)"),
        "{text}"
    );
    let all = evidence_of(&sample(), &Filters::default(), usize::MAX);
    assert_eq!(all.by_local_service.len(), 5);
    assert!(!all.table().contains("more local hosts"));
}

#[test]
fn table_names_everything() {
    let ev = evidence_of(&sample(), &Filters::default(), 10);
    let text = ev.table();
    for want in [
        "2 files: 8 flow records, 1 run summary, 0 lines skipped",
        "6 flows from 2026-11-22T08:00:00.000000Z to 2026-11-22T12:00:00.000000Z: 21 packets / 2774 bytes out, 12 packets / 2854 bytes in",
        "│ Data center ┆ Flows ┆ Pkts out ┆ Bytes out ┆ Pkts in ┆ Bytes in │",
        "│ global      ┆     1 ┆        2 ┆       200 ┆       2 ┆      300 │",
        "│ unknown     ┆     1 ┆        2 ┆       200 ┆       2 ┆      300 │",
        "Blocked: 4 flows to 3 destinations; top 3:",
        "│ 13.64.196.27:8443     ┆     2 ┆ unanswered, unreachable ┆",
        "┆ 203.0.113.9 ┆ 3/3            ┆           1 │",
        "│ [2001:db8:ca5::1]:443 ┆     1 ┆ unanswered              ┆ EU1 ",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    let none = evidence_of_bytes(&[], &Filters::default(), 10).table();
    assert_eq!(
        none,
        "0 files: 0 flow records, 0 run summaries, 0 lines skipped\nNo flows.\n"
    );
}

/// A blocked destination in a range of no data center reads `global`, as
/// in the data-center breakdown (not `-`, which reads as "unknown").
#[test]
fn a_blocked_destination_of_every_data_center_reads_global() {
    let line = flow(json!({"state": "refused", "datacenters": [], "purposes": ["portal"]}));
    let text = evidence_of_bytes(
        &[("g.jsonl", format!("{line}\n").as_bytes())],
        &Filters::default(),
        10,
    )
    .table();
    assert!(text.contains("Blocked: 1 flow to 1 destination"), "{text}");
    assert!(
        text.contains("│ 13.64.196.27:8443 ┆     1 ┆ refused ┆ global       ┆ portal   ┆"),
        "{text}"
    );
}

/// Lines as the agent writes them (the type first) take the one-parse
/// path, and read as the same flow; one cut short is named.
#[test]
fn agent_written_lines() {
    use crate::output::record::{FlowRecord, RecordRef};
    let rec: FlowRecord = serde_json::from_str(&flow(json!({"reason": "ended"}))).unwrap();
    let line = serde_json::to_string(&RecordRef::Flow(&rec)).unwrap();
    assert!(line.starts_with(r#"{"type":"flow","#), "{line}");
    let text = format!("{line}\n{}\n{line}\n", &line[..60]);
    let ev = evidence_of_bytes(&[("w.jsonl", text.as_bytes())], &Filters::default(), 10);
    assert_eq!((ev.records, ev.total.flows, ev.skipped), (2, 1, 1));
    assert_eq!(ev.total.packets_out, 5);
    assert_eq!(
        ev.skipped_lines,
        ["w.jsonl:2: bad flow record: EOF while parsing a string at line 1 column 60"]
    );
}

/// Counters read from files are summed with saturation: two crafted
/// records can neither wrap a sum to a small number nor panic.
#[test]
fn crafted_counters_saturate() {
    let big = u64::MAX - 1;
    let a = flow(json!({"local_port": 40001, "packets_out": big, "bytes_out": big}));
    let b = flow(json!({"local_port": 40002, "packets_out": 5, "bytes_out": 5}));
    let s1 = format!(r#"{{"type":"summary","flows":1,"log_records_lost":{big}}}"#);
    let s2 = r#"{"type":"summary","flows":1,"log_records_lost":2}"#.to_string();
    let ev = evidence_of(
        &records(&[("a.jsonl", vec![a, b, s1, s2])]),
        &Filters::default(),
        10,
    );
    assert_eq!(ev.total.flows, 2);
    assert_eq!(ev.total.packets_out, u64::MAX);
    assert_eq!(ev.total.bytes_out, u64::MAX);
    assert_eq!(ev.log_records_lost, u64::MAX);
}
