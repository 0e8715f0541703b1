//! The tracker on made-up kernel values: reporting, reused 5-tuples,
//! both sides of a NAT.

use cas_audit_common::{family, history, initiator, proto, tcp_flags};

use super::*;
use crate::flow::{addr_bytes, AllowedPorts};

fn key(p: u8, remote_port: u16) -> FlowKey {
    FlowKey {
        local_addr: [198, 51, 100, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        remote_addr: [13, 64, 196, 27, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        local_port: 40000,
        remote_port,
        proto: p,
        family: family::V4,
        _pad: [0; 2],
    }
}

const S: u64 = 1_000_000_000;

fn tracker() -> Tracker {
    Tracker::new(60 * S, 2 * S, Duration::from_secs(3))
}

fn ports() -> PortPolicy {
    PortPolicy::global(AllowedPorts::default())
}

fn reasons(r: &[(Flow, Reason)]) -> Vec<(u16, Reason)> {
    r.iter().map(|(f, r)| (f.key.remote_port, *r)).collect()
}

fn closed(first: u64, last: u64) -> FlowStats {
    let k = history::KINDS;
    FlowStats {
        first_seen_ns: first,
        last_seen_ns: last,
        packets_out: 4,
        packets_in: 3,
        history_mask: history::SYN
            | history::ACK
            | history::FIN
            | (history::SYN_ACK | history::FIN) << k,
        initiator: initiator::LOCAL,
        tcp_flags_out: tcp_flags::SYN | tcp_flags::ACK | tcp_flags::FIN,
        tcp_flags_in: tcp_flags::SYN | tcp_flags::ACK | tcp_flags::FIN,
        ..Default::default()
    }
}

#[test]
fn flags_once_ends_after_linger_and_expires_when_idle() {
    let ports = ports();
    let mut t = tracker();
    let nc = &mut NoConntrack;
    let udp = (
        key(proto::UDP, 8443),
        FlowStats {
            first_seen_ns: 9 * S,
            last_seen_ns: 10 * S,
            packets_out: 5,
            history_mask: history::DATA,
            ..Default::default()
        },
    );
    let tcp = (key(proto::TCP, 443), closed(9 * S, 10 * S));

    // 2 s after its first datagram the UDP flow is flagged, not yet unanswered.
    let r = t.poll(vec![udp, tcp], 11 * S, &ports, nc);
    assert_eq!(reasons(&r.records), vec![(8443, Reason::Flagged)]);

    // Linger passed: the closed TCP flow ends (and its entry goes); the
    // UDP flow is not re-flagged, and is reported blocked once.
    let r = t.poll(vec![udp, tcp], 12 * S, &ports, nc);
    assert_eq!(
        reasons(&r.records),
        vec![(8443, Reason::Blocked), (443, Reason::Ended)]
    );
    assert_eq!(r.remove, vec![tcp.0]);
    assert!(t.poll(vec![udp], 13 * S, &ports, nc).records.is_empty());

    // Idle timeout: the UDP flow expires.
    let r = t.poll(vec![udp], 70 * S, &ports, nc);
    assert_eq!(reasons(&r.records), vec![(8443, Reason::Expired)]);
    assert_eq!((t.reported, t.disallowed, t.entries_reported), (2, 1, 2));
}

#[test]
fn evicted_flagged_flows_are_forgotten() {
    let ports = ports();
    let mut t = tracker();
    let nc = &mut NoConntrack;
    let s = FlowStats {
        last_seen_ns: S,
        ..Default::default()
    };
    let r = t.poll(vec![(key(proto::UDP, 9999), s)], 2 * S, &ports, nc);
    assert_eq!(r.records.len(), 1);
    // The kernel evicted it: nothing to report, and it is dropped.
    assert!(t.poll(vec![], 3 * S, &ports, nc).records.is_empty());
    assert!(t.conns.is_empty() && t.by_member.is_empty() && t.by_ident.is_empty());
    // Re-created later, it is flagged again.
    let r = t.poll(vec![(key(proto::UDP, 9999), s)], 4 * S, &ports, nc);
    assert_eq!(r.records[0].1, Reason::Flagged);
}

#[test]
fn exit_reports_everything_and_flags_late_ones() {
    let ports = ports();
    let mut t = tracker();
    let s = FlowStats {
        last_seen_ns: S,
        ..Default::default()
    };
    let r = t.finish_all(
        vec![(key(proto::UDP, 9999), s), (key(proto::TCP, 443), s)],
        2 * S,
        &ports,
        &mut NoConntrack,
    );
    assert_eq!(
        reasons(&r),
        vec![
            (9999, Reason::Flagged),
            (9999, Reason::Exit),
            (443, Reason::Exit)
        ]
    );
    assert_eq!((t.reported, t.disallowed), (2, 1));
}

/// A flag event for `key` first seen at `ts`.
fn event(key: FlowKey, ts: u64) -> FlowEvent {
    FlowEvent {
        kind: cas_audit_common::record_kind::FLAGGED,
        ifindex: 3,
        ts_ns: ts,
        key,
        tcp_flags: tcp_flags::SYN as u8,
        kinds: history::SYN as u8,
        dir: Direction::Out as u8,
        packets: 1,
        ..FlowEvent::default()
    }
}

#[test]
fn a_reused_5_tuple_is_a_new_flow_reported_after_the_ended_one() {
    let ports = ports();
    let mut t = tracker();
    let nc = &mut NoConntrack;
    let k = key(proto::TCP, 8443);
    // Connection 1: flagged from its event.
    let r = t.on_flagged(&event(k, S), &ports, nc);
    assert_eq!(reasons(&r), vec![(8443, Reason::Flagged)]);
    // It ends and connection 2 reuses the 5-tuple at once: the kernel
    // hands connection 1 over, then flags connection 2.
    t.on_ended(k, closed(S, S + 1000), S + 2000, nc);
    assert!(
        t.on_flagged(&event(k, S + 3000), &ports, nc).is_empty(),
        "deferred"
    );
    // Within the hold nothing is written yet.
    assert!(t.poll(vec![], S + 5000, &ports, nc).records.is_empty());
    // Then connection 1 ends with its own figures, and connection 2 is flagged.
    let r = t.poll(vec![(k, closed(S + 3000, S + 3000))], 2 * S, &ports, nc);
    assert_eq!(
        r.records
            .iter()
            .map(|(f, r)| (f.stats.first_seen_ns, *r))
            .collect::<Vec<_>>(),
        vec![(S, Reason::Ended), (S + 3000, Reason::Flagged)]
    );
    assert_eq!(r.records[0].0.stats.packets_out, 4);
    assert!(r.remove.is_empty(), "connection 2's entry stays");
    assert_eq!(t.reported, 1);
}

#[test]
fn a_connection_reported_before_its_deferred_flag_event_is_flagged_once() {
    let ports = ports();
    let mut t = tracker();
    let nc = &mut NoConntrack;
    let k = key(proto::TCP, 8443);
    t.on_flagged(&event(k, S), &ports, nc);
    // Connections 2 and 3 follow within one poll interval: 2 is
    // deferred behind 1, 3 behind 2.
    t.on_ended(k, closed(S, S + 10), S + 20, nc);
    assert!(t.on_flagged(&event(k, S + 30), &ports, nc).is_empty());
    t.on_ended(k, closed(S + 30, S + 40), S + 50, nc);
    assert!(t.on_flagged(&event(k, S + 60), &ports, nc).is_empty());
    let r = t.poll(vec![(k, closed(S + 60, S + 60))], 2 * S, &ports, nc);
    assert_eq!(
        r.records
            .iter()
            .map(|(f, r)| (f.stats.first_seen_ns - S, *r))
            .collect::<Vec<_>>(),
        vec![
            (0, Reason::Ended),
            (30, Reason::Flagged),
            (30, Reason::Ended),
            (60, Reason::Flagged)
        ]
    );
    // A late event of a reported connection is not a new one.
    assert!(t.on_flagged(&event(k, S + 30), &ports, nc).is_empty());
}

/// Conntrack for one masqueraded connection: 198.51.100.2:40000 ->
/// 13.64.196.27:8443 leaves as 203.0.113.1:40001.
struct Masquerade;

impl Resolve for Masquerade {
    fn nat(&mut self, key: &FlowKey) -> Nat {
        let inside: (IpAddr, u16) = ("198.51.100.2".parse().unwrap(), 40000);
        let outside: (IpAddr, u16) = ("203.0.113.1".parse().unwrap(), 40001);
        let local = (addr_of(key.family, &key.local_addr), key.local_port);
        if local == inside || local == outside {
            Nat {
                kind: NatKind::Snat,
                inside: Some(inside),
                translated: Some(outside),
            }
        } else {
            Nat::default()
        }
    }
}

#[test]
fn both_sides_of_a_nat_are_one_flow() {
    let ports = ports();
    let mut t = tracker();
    let lan = key(proto::TCP, 8443);
    let mut up = lan;
    up.local_addr = addr_bytes("203.0.113.1".parse().unwrap());
    up.local_port = 40001;
    // The LAN side counted the packets out, the uplink those in.
    let mut lan_st = closed(S, 2 * S);
    lan_st.packets_in = 0;
    lan_st.ifindexes[0] = 3;
    let mut up_st = closed(S + 50, 2 * S);
    up_st.packets_out = 0;
    up_st.ifindexes[0] = 5;
    let r = t.poll(
        vec![(up, up_st), (lan, lan_st)],
        3 * S,
        &ports,
        &mut Masquerade,
    );
    assert_eq!(reasons(&r.records), vec![(8443, Reason::Flagged)]);
    let r = t.poll(
        vec![(up, up_st), (lan, lan_st)],
        5 * S,
        &ports,
        &mut Masquerade,
    );
    assert_eq!(reasons(&r.records), vec![(8443, Reason::Ended)]);
    let f = &r.records[0].0;
    assert_eq!(f.local_addr, "198.51.100.2".parse::<IpAddr>().unwrap());
    assert_eq!(f.key.local_port, 40000);
    assert_eq!(
        f.nat.translated,
        Some(("203.0.113.1".parse().unwrap(), 40001))
    );
    assert_eq!((f.stats.packets_out, f.stats.packets_in), (4, 3));
    assert_eq!(f.ifindexes().collect::<Vec<_>>(), vec![3, 5]);
    assert_eq!(r.remove.len(), 2);
    assert_eq!((t.reported, t.entries_reported), (1, 2));
}

/// A bare SYN refused at once: the table already holds the RST when the
/// flow's event arrives. The flagged record comes from the event (history
/// `S`), not from the table (`Sr`); a flow whose event was lost is flagged
/// from the table once the grace passed.
#[test]
fn a_new_disallowed_flow_waits_for_its_event() {
    let ports = ports();
    let nc = &mut NoConntrack;
    let k = history::KINDS;
    let refused = FlowStats {
        first_seen_ns: 10 * S,
        last_seen_ns: 10 * S + 1000,
        packets_out: 1,
        packets_in: 1,
        history_mask: history::SYN | history::RST << k,
        history: *b"Sr\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
        initiator: initiator::LOCAL,
        rst_ttl: 63,
        flagged: 1,
        ..Default::default()
    };
    let syn = (key(proto::TCP, 8443), refused);
    let mut t = tracker();
    // Within the grace: neither flagged nor blocked from the table.
    assert!(t
        .poll(vec![syn], 10 * S + S / 2, &ports, nc)
        .records
        .is_empty());
    // The event came: flagged from it; the next poll reports it blocked.
    let r = t.on_flagged(&event(syn.0, 10 * S), &ports, nc);
    assert_eq!(reasons(&r), [(8443, Reason::Flagged)]);
    assert_eq!(crate::flow::evidence::history_string(&r[0].0.stats), "S");
    let r = t.poll(vec![syn], 10 * S + S / 2, &ports, nc);
    assert_eq!(reasons(&r.records), [(8443, Reason::Blocked)]);
    // Its event lost: past the grace, the table flags it.
    let mut t = tracker();
    let r = t.poll(vec![syn], 11 * S, &ports, nc);
    assert_eq!(
        reasons(&r.records),
        [(8443, Reason::Flagged), (8443, Reason::Blocked)]
    );
}

/// Ring records queued while the agent was paused or behind, of flows
/// reported for good since: dropped and counted, however many polls came
/// between; nothing is ever written after a flow's final record.
#[test]
fn records_of_flows_reported_for_good_are_stale() {
    let ports = ports();
    let nc = &mut NoConntrack;
    let udp = |port, first| {
        let s = FlowStats {
            first_seen_ns: first,
            last_seen_ns: first,
            packets_out: 5,
            history_mask: history::DATA,
            ..Default::default()
        };
        (key(proto::UDP, port), s)
    };
    let mut t = Tracker::new(2 * S, 2 * S, Duration::from_secs(3));
    // While the agent was stopped, 5 datagrams came and went; the first
    // poll after it resumed flags the flow from the table and expires it.
    let f = udp(8443, 10 * S);
    let r = t.poll(vec![f], 30 * S, &ports, nc);
    assert_eq!(
        reasons(&r.records),
        [
            (8443, Reason::Flagged),
            (8443, Reason::Blocked),
            (8443, Reason::Expired)
        ]
    );
    assert_eq!(r.records[2].0.stats.packets_out, 5);
    // Its flag event, read from the ring right after that poll: stale.
    assert!(t.on_flagged(&event(f.0, 10 * S), &ports, nc).is_empty());
    assert_eq!(t.stale, 1);
    // Another flow expires; its event comes two polls later (the reader
    // was behind): still stale, not a new flow with a second record.
    let g = udp(8444, 30 * S + S / 2);
    assert_eq!(
        reasons(&t.poll(vec![g], 32 * S, &ports, nc).records),
        [(8444, Reason::Flagged)]
    );
    assert_eq!(
        reasons(&t.poll(vec![g], 33 * S, &ports, nc).records),
        [(8444, Reason::Expired)]
    );
    assert!(t.poll(vec![], 34 * S, &ports, nc).records.is_empty());
    assert!(t.poll(vec![], 35 * S, &ports, nc).records.is_empty());
    assert!(t
        .on_flagged(&event(g.0, 30 * S + S / 2), &ports, nc)
        .is_empty());
    assert_eq!(t.stale, 2);
    // A flow first seen after the poll before the latest, not in a
    // snapshot yet: its event flags it as usual.
    let h = event(key(proto::UDP, 8445), 34 * S + S / 2);
    assert_eq!(
        reasons(&t.on_flagged(&h, &ports, nc)),
        [(8445, Reason::Flagged)]
    );
    assert_eq!(t.stale, 2);
    // A TCP flow reported ended by the agent while the kernel handed it
    // over (a new SYN reused its 5-tuple): one final record, not two.
    let k = key(proto::TCP, 443);
    let c = closed(36 * S, 36 * S);
    assert!(t.poll(vec![(k, c)], 37 * S, &ports, nc).records.is_empty());
    assert_eq!(
        reasons(&t.poll(vec![(k, c)], 39 * S, &ports, nc).records),
        [(443, Reason::Ended)]
    );
    t.on_ended(k, c, 39 * S, nc);
    assert_eq!(t.stale, 3);
    assert!(t.poll(vec![], 40 * S, &ports, nc).records.is_empty());
    assert_eq!(t.reported, 3);
}
