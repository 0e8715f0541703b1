use std::{
    io::Read,
    net::{TcpListener, UdpSocket},
};

use fasyslog::Severity;

use super::{format::*, *};
use crate::{
    flow::{Reason, State, Verdict},
    output::record::sample_flow,
};

fn opts(target: Target, format: Format) -> SyslogOptions {
    SyslogOptions {
        target,
        format,
        ended: false,
    }
}

#[test]
fn targets() {
    assert_eq!(
        "udp://127.0.0.1:514".parse::<Target>().unwrap(),
        Target::Udp("127.0.0.1:514".parse().unwrap())
    );
    assert_eq!(
        "tcp://[2001:db8::1]:6514".parse::<Target>().unwrap(),
        Target::Tcp("[2001:db8::1]:6514".parse().unwrap())
    );
    assert_eq!(
        "unix:/dev/log".parse::<Target>().unwrap(),
        Target::Unix("/dev/log".into())
    );
    for bad in [
        "127.0.0.1:514",
        "udp://127.0.0.1",
        "unix:",
        "tls://h:1",
        "tcp://:x",
    ] {
        assert!(bad.parse::<Target>().is_err(), "{bad}");
    }
    assert_eq!(
        "udp://127.0.0.1:514".parse::<Target>().unwrap().to_string(),
        "udp://127.0.0.1:514"
    );
}

#[test]
fn severity_follows_verdict_and_state() {
    use Verdict::*;
    let cef = |v, s| severity(v, Some(s)).0;
    assert_eq!(cef(DisallowedPort, State::Established), 8);
    assert_eq!(cef(DisallowedPort, State::Closed), 8);
    assert_eq!(cef(DisallowedPort, State::Pending), 6);
    assert_eq!(cef(DisallowedPort, State::Refused), 3);
    assert_eq!(cef(Allowed, State::Unanswered), 7);
    assert_eq!(cef(Allowed, State::Closed), 1);
    assert_eq!(severity(DisallowedPort, None).1, Severity::WARNING);
    assert_eq!(
        severity(Allowed, Some(State::Closed)).1,
        Severity::INFORMATIONAL
    );
}

fn context() -> fasyslog::format::SyslogContext {
    let mut c = fasyslog::format::SyslogContext::const_new();
    c.facility(FACILITY)
        .hostname("gw1")
        .appname(APP_NAME)
        .procid("42");
    c
}

#[test]
fn rfc5424_message_carries_the_record_as_structured_data() {
    let rec = sample_flow();
    let m = message(&context(), Format::Rfc5424, &rec);
    // auth (4) * 8 + notice (5): a refused disallowed flow.
    assert!(m.starts_with("<37>1 "), "{m}");
    let fields: Vec<&str> = m.splitn(8, ' ').collect();
    assert_eq!(&fields[2..5], ["gw1", "cas-audit", "42"], "{m}");
    assert!(
        fields[5..]
            .join(" ")
            .starts_with("ended [cas-audit@32473 flow_id=\"1234567890123\" "),
        "{m}"
    );
    for kv in [
        "verdict=\"disallowed-port\"",
        "state=\"refused\"",
        "local_addr=\"198.51.100.2\"",
        "remote_port=\"8443\"",
        "datacenters=\"US1\"",
        "purposes=\"app-connector,dlp\"",
        "packets_out=\"3\"",
        "duration_ms=\"1500\"",
    ] {
        assert!(m.contains(kv), "{kv} not in {m}");
    }
    assert!(m.ends_with("on uplink"), "{m}");
}

/// An interface name holding a terminal escape sequence and a line break
/// reaches neither the CEF event nor the readable MSG raw.
#[test]
fn control_characters_never_reach_a_message_raw() {
    let mut rec = sample_flow();
    rec.iface = "up\x1b[2J\rfake\n".into();
    rec.interfaces = Vec::new();
    let c = cef(&rec);
    assert!(
        c.contains(" deviceInboundInterface=up\\\\x1b[2J\\\\rfake\\n "),
        "{c}"
    );
    let line = crate::output::human::flow_line(&rec, &crate::output::human::LineTime::utc());
    assert!(line.ends_with(" on up\\x1b[2J\\rfake\\n"), "{line}");
    for m in [c, line] {
        assert!(!m.contains(['\x1b', '\r', '\n']), "{m:?}");
    }
}

#[test]
fn cef_event_has_the_standard_keys_and_escapes() {
    let mut rec = sample_flow();
    rec.reason = Reason::Blocked;
    rec.iface = "up=link\\1".into();
    let c = cef(&rec);
    assert!(
        c.starts_with(concat!(
            "CEF:0|cas-audit|cas-audit|",
            env!("CARGO_PKG_VERSION"),
            "|blocked|CAS flow blocked: refused|3|"
        )),
        "{c}"
    );
    for kv in [
        " src=198.51.100.2 spt=40000 dst=13.64.196.27 dpt=8443 proto=TCP deviceDirection=1 in=54 out=222 act=blocked outcome=failure reason=blocked dvchost=gw1 ",
        " deviceInboundInterface=up\\=link\\\\1 externalId=1234567890123 ",
        " cs1Label=verdict cs1=disallowed-port cs2Label=state cs2=refused cs3Label=datacenters cs3=US1 cs4Label=purposes cs4=app-connector,dlp cs5Label=history cs5=Sr cs6Label=casPrefix cs6=13.64.196.27/32 ",
        " cn1Label=servicePort cn1=8443 cn2Label=packetsOut cn2=3 cn3Label=packetsIn cn3=1 ",
        " start=1795327914000 end=1795327915500 ",
    ] {
        assert!(c.contains(kv), "{kv:?} not in {c}");
    }
    // Opened by the CAS side: it is the source.
    rec.first_packet = cas_audit_common::Direction::In;
    let c = cef(&rec);
    assert!(
        c.contains(" src=13.64.196.27 spt=8443 dst=198.51.100.2 dpt=40000 "),
        "{c}"
    );
    assert!(c.contains(" deviceDirection=0 "), "{c}");
    let m = message(&context(), Format::Cef, &rec);
    assert!(m.contains(" blocked - CEF:0|"), "{m}");
}

#[test]
fn tcp_frames_are_octet_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = Target::Tcp(listener.local_addr().unwrap());
    let mut sink = Sender::spawn(&opts(target, Format::Cef), "gw1").unwrap();
    for _ in 0..3 {
        sink.offer(Arc::new(sample_flow()));
    }
    let (mut conn, _) = listener.accept().unwrap();
    let c = sink.close(Duration::from_secs(5));
    assert_eq!(
        c,
        crate::output::bounded::SinkCounts {
            sent: 3,
            dropped: 0
        }
    );
    let mut all = String::new();
    conn.read_to_string(&mut all).unwrap();
    let mut rest = all.as_str();
    let mut frames = 0;
    while !rest.is_empty() {
        let (len, tail) = rest.split_once(' ').unwrap();
        let len: usize = len.parse().unwrap();
        let (msg, tail) = tail.split_at(len);
        assert!(msg.starts_with("<37>1 ") && msg.contains("CEF:0|"), "{msg}");
        rest = tail;
        frames += 1;
    }
    assert_eq!(frames, 3);
}

#[test]
fn udp_sends_one_message_per_datagram() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut s = Sender::new(
        &opts(Target::Udp(rx.local_addr().unwrap()), Format::Rfc5424),
        "gw1",
    );
    let batch = vec![Arc::new(sample_flow()), Arc::new(sample_flow())];
    assert_eq!(s.send(&batch, Instant::now()), 2);
    let mut buf = [0u8; 4096];
    for _ in 0..2 {
        let n = rx.recv(&mut buf).unwrap();
        let m = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            m.starts_with("<37>1 ") && m.contains("[cas-audit@32473 "),
            "{m}"
        );
    }
}

#[test]
fn an_unreachable_siem_costs_counted_drops_and_a_retry_later() {
    // Nobody listens: connect is refused at once; the next try waits RETRY.
    let gone = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = gone.local_addr().unwrap();
    drop(gone);
    let mut s = Sender::new(&opts(Target::Tcp(addr), Format::Cef), "gw1");
    let t0 = Instant::now();
    let batch = vec![Arc::new(sample_flow())];
    assert_eq!(s.send(&batch, t0), 0);
    assert_eq!(s.conn.retry_at(), Some(t0 + RETRY));
    // Within RETRY: no new attempt.
    let listener = TcpListener::bind(addr);
    assert_eq!(s.send(&batch, t0 + RETRY / 2), 0);
    if listener.is_ok() {
        // The port could be bound again: after RETRY the sender connects.
        assert_eq!(s.send(&batch, t0 + RETRY), 1);
    }
    let missing = Target::Unix("/nonexistent/cas-audit-test.sock".into());
    let mut s = Sender::new(&opts(missing, Format::Rfc5424), "gw1");
    assert_eq!(s.send(&batch, Instant::now()), 0);
}
