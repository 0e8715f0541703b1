//! The kernel's ring-buffer records as the agent decodes them: any bytes
//! are parsed (`RingRecord::parse`) or refused; flow events go through
//! the connection tracker and into flow records as `run` writes them, and
//! payloads (DNS responses, ClientHellos) through the parsers the name
//! learner uses; never a panic.
//!
//! The input is a sequence of records, each a length byte and that many
//! bytes (a ring item), so that one input can hold several events of one
//! connection.
#![no_main]

use std::time::Duration;

use cas_audit::{
    datapath::events::RingRecord,
    flow::{tracker::NoConntrack, AllowedPorts, PortPolicy, State, Tracker},
    host::clock::Clock,
    names::{dns, tls},
    output::record::FlowRecord,
};
use cas_audit_common::payload_kind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let policy = PortPolicy::global(AllowedPorts::default());
    let mut tracker = Tracker::new(1_000_000_000, 2_000_000_000, Duration::from_secs(3));
    let mut nat = NoConntrack;
    let mut due = Vec::new();
    let mut now = 0u64;
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (item, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        match RingRecord::parse(item) {
            Some(RingRecord::Flagged(ev)) => {
                now = now.max(ev.ts_ns);
                due.extend(tracker.on_flagged(&ev, &policy, &mut nat));
            }
            Some(RingRecord::Ended(e)) => {
                now = now.max(e.stats.last_seen_ns);
                tracker.on_ended(e.key, e.stats, now, &mut nat);
            }
            // The payload ring's DNS responses and ClientHellos, read by
            // the parsers the learner uses.
            Some(RingRecord::Payload(p)) => match p.hdr.what {
                payload_kind::DNS_UDP | payload_kind::DNS_TCP => {
                    let _ = dns::parse_response(&p.data, p.hdr.what == payload_kind::DNS_TCP);
                }
                payload_kind::TLS_HELLO => {
                    let _ = tls::server_name(&p.data);
                }
                _ => {}
            },
            None => {}
        }
    }
    let later = now.saturating_add(10_000_000_000);
    due.extend(tracker.poll(Vec::new(), later, &policy, &mut nat).records);
    due.extend(tracker.finish_all(Vec::new(), later, &policy, &mut nat));
    let clock = Clock::new();
    let ifaces = vec!["uplink".to_string()];
    for (flow, reason) in &due {
        let state: State = flow.state(later, Duration::from_secs(3));
        let rec = FlowRecord::new(flow, None, ("gw", &ifaces), &clock, *reason, state);
        let _ = serde_json::to_string(&rec).expect("a flow record serialises");
    }
});
