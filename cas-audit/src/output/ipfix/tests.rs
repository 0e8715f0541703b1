//! The encoder read back by a decoder written from RFC 7011 alone (it
//! knows nothing of the encoder's field list: it follows the template set
//! in the message), and the exporter against a UDP socket on loopback.

use std::{collections::HashMap, net::UdpSocket};

use super::{encode::*, *};
use crate::{flow::Reason, output::record::sample_flow};

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// A decoded field: its key (`id` or `pen/id`) and raw value.
type Fields = Vec<(String, Vec<u8>)>;

/// Header (version, length, sequence, domain), templates seen, data records.
struct Decoded {
    version: u16,
    length: u16,
    sequence: u32,
    domain: u32,
    templates: HashMap<u16, Vec<(String, u16)>>,
    records: Vec<(u16, Fields)>,
}

/// Decodes one message, with `known` templates from earlier messages.
fn decode(b: &[u8], known: &HashMap<u16, Vec<(String, u16)>>) -> Decoded {
    let mut d = Decoded {
        version: u16_at(b, 0),
        length: u16_at(b, 2),
        sequence: u32_at(b, 8),
        domain: u32_at(b, 12),
        templates: known.clone(),
        records: Vec::new(),
    };
    assert_eq!(d.length as usize, b.len(), "message length");
    let mut at = 16;
    while at < b.len() {
        let (set_id, set_len) = (u16_at(b, at), u16_at(b, at + 2) as usize);
        let end = at + set_len;
        let mut p = at + 4;
        if set_id == 2 {
            while p + 4 <= end {
                let (tid, count) = (u16_at(b, p), u16_at(b, p + 2));
                p += 4;
                let mut fields = Vec::new();
                for _ in 0..count {
                    let (id, len) = (u16_at(b, p), u16_at(b, p + 2));
                    p += 4;
                    let key = if id & 0x8000 != 0 {
                        let pen = u32_at(b, p);
                        p += 4;
                        format!("{pen}/{}", id & 0x7fff)
                    } else {
                        id.to_string()
                    };
                    fields.push((key, len));
                }
                d.templates.insert(tid, fields);
            }
        } else {
            let fields = d.templates[&set_id].clone();
            while p < end {
                let mut rec = Vec::new();
                for (key, len) in &fields {
                    let n = if *len == 0xffff {
                        let first = b[p] as usize;
                        p += 1;
                        if first == 255 {
                            p += 2;
                            u16_at(b, p - 2) as usize
                        } else {
                            first
                        }
                    } else {
                        *len as usize
                    };
                    rec.push((key.clone(), b[p..p + n].to_vec()));
                    p += n;
                }
                d.records.push((set_id, rec));
            }
        }
        at = end;
    }
    d
}

fn field<'a>(rec: &'a Fields, key: &str) -> &'a [u8] {
    &rec.iter().find(|(k, _)| k == key).unwrap().1
}

fn num(rec: &Fields, key: &str) -> u64 {
    field(rec, key)
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

fn text(rec: &Fields, key: &str) -> String {
    String::from_utf8(field(rec, key).to_vec()).unwrap()
}

#[test]
fn one_uniflow_record_per_direction_with_standard_and_own_elements() {
    let rec = sample_flow();
    let mut m = MessageBuilder::new(MAX_MESSAGE);
    m.start(true);
    assert!(m.add(&rec, 7));
    let (bytes, n) = m.finish(1_795_000_000, 41, DOMAIN);
    assert_eq!(n, 2);
    let d = decode(bytes, &HashMap::new());
    assert_eq!((d.version, d.sequence, d.domain), (10, 41, 1));
    assert_eq!(u32_at(bytes, 4), 1_795_000_000);
    assert_eq!(d.templates.len(), 2);
    assert_eq!(d.templates[&TEMPLATE_V6][0], ("27".to_string(), 16));
    assert_eq!(d.records.len(), 2);
    let (tid, out) = &d.records[0];
    let (_, back) = &d.records[1];
    assert_eq!(*tid, TEMPLATE_V4);
    // Out: local -> remote; in: remote -> local.
    assert_eq!(field(out, "8"), [198, 51, 100, 2]);
    assert_eq!(field(out, "12"), [13, 64, 196, 27]);
    assert_eq!((num(out, "7"), num(out, "11")), (40000, 8443));
    assert_eq!(field(back, "8"), [13, 64, 196, 27]);
    assert_eq!((num(back, "7"), num(back, "11")), (8443, 40000));
    assert_eq!((num(out, "2"), num(out, "1")), (3, 222));
    assert_eq!((num(back, "2"), num(back, "1")), (1, 54));
    assert_eq!(num(out, "4"), 6);
    assert_eq!(num(out, "6"), 0x02);
    assert_eq!(num(back, "6"), 0x14);
    assert_eq!(num(out, "152"), 1_795_327_914_000);
    assert_eq!(num(out, "153"), 1_795_327_915_500);
    assert_eq!((num(out, "10"), num(out, "14"), num(out, "61")), (0, 7, 1));
    assert_eq!(
        (num(back, "10"), num(back, "14"), num(back, "61")),
        (7, 0, 0)
    );
    assert_eq!(num(out, "136"), 3);
    assert_eq!(num(out, "148"), 1_234_567_890_123);
    assert_eq!(text(out, "32473/1"), "disallowed-port");
    assert_eq!(text(out, "32473/2"), "refused");
    assert_eq!(text(out, "32473/3"), "US1");
    assert_eq!(text(out, "32473/4"), "app-connector,dlp");
    assert_eq!(text(out, "32473/5"), "Sr");
    assert_eq!(text(out, "32473/6"), "13.64.196.27/32");
    assert_eq!(num(out, "32473/7"), 8443);
}

#[test]
fn ipv6_flows_one_way_and_long_strings() {
    let mut rec = sample_flow();
    rec.local_addr = "2001:db8:1::2".parse().unwrap();
    rec.remote_addr = "2001:db8:ca5::1".parse().unwrap();
    rec.packets_in = 0;
    rec.bytes_in = 0;
    rec.history = "S".repeat(300);
    rec.reason = Reason::Expired;
    let mut m = MessageBuilder::new(MAX_MESSAGE);
    m.start(true);
    assert!(m.add(&rec, 1));
    let (bytes, n) = m.finish(0, 0, DOMAIN);
    assert_eq!(n, 1);
    let d = decode(bytes, &HashMap::new());
    let (tid, out) = &d.records[0];
    assert_eq!(*tid, TEMPLATE_V6);
    assert_eq!(field(out, "27")[..4], [0x20, 0x01, 0x0d, 0xb8]);
    assert_eq!(text(out, "32473/5").len(), 300);
    assert_eq!(num(out, "136"), 1);
}

#[test]
fn messages_stay_under_the_limit_and_number_data_records() {
    let rec = sample_flow();
    let mut m = MessageBuilder::new(MAX_MESSAGE);
    m.start(false);
    let mut added = 0;
    while m.add(&rec, 1) {
        added += 1;
    }
    let (bytes, n) = m.finish(0, 0, DOMAIN);
    assert!(bytes.len() <= MAX_MESSAGE, "{}", bytes.len());
    assert_eq!(n, 2 * added);
    assert!(added >= 4, "{added} flows per message");
}

#[test]
fn exporter_sends_templates_first_and_sequence_counts_data_records() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut ex = Exporter::new(collector.local_addr().unwrap());
    let batch: Vec<_> = (0..20).map(|_| Arc::new(sample_flow())).collect();
    let t0 = Instant::now();
    let sent = ex.send(&batch, t0);
    assert_eq!(sent.iter().map(|(n, _)| n).sum::<u64>(), 20);
    assert!(sent.iter().all(|(_, ok)| *ok));
    let mut templates = HashMap::new();
    let mut expected_seq = 0;
    let mut buf = [0u8; 2048];
    for (i, (flows, _)) in sent.iter().enumerate() {
        let n = collector.recv(&mut buf).unwrap();
        let d = decode(&buf[..n], &templates);
        assert_eq!(d.sequence, expected_seq, "message {i}");
        // Only the first message carries the templates.
        assert_eq!(d.templates.len() > templates.len(), i == 0, "message {i}");
        assert_eq!(d.records.len() as u64, 2 * flows);
        expected_seq += d.records.len() as u32;
        templates = d.templates;
    }
    // Due again after the refresh timeout.
    assert!(!ex.templates_due(t0 + Duration::from_secs(59)));
    assert!(ex.templates_due(t0 + TEMPLATE_REFRESH));
    // ... and after so many messages.
    ex.messages_since_templates = TEMPLATE_REFRESH_MESSAGES;
    assert!(ex.templates_due(t0));
}

#[test]
fn a_collector_that_is_gone_costs_counted_drops() {
    // A port nobody listens on: the kernel answers ICMP port unreachable,
    // and the connected socket's next send fails.
    let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = gone.local_addr().unwrap();
    drop(gone);
    let mut sink = Exporter::spawn(addr).unwrap();
    for _ in 0..50 {
        sink.offer(Arc::new(sample_flow()));
        std::thread::sleep(Duration::from_millis(1));
    }
    let c = sink.close(Duration::from_secs(5));
    assert_eq!(c.sent + c.dropped, 50, "{c:?}");
    assert!(c.dropped > 0, "{c:?}");
}

#[test]
fn resolve_names_and_addresses() {
    assert_eq!(
        resolve("127.0.0.1:4739").unwrap(),
        "127.0.0.1:4739".parse().unwrap()
    );
    assert_eq!(
        resolve("[2001:db8::1]:4739").unwrap(),
        "[2001:db8::1]:4739".parse().unwrap()
    );
    assert_eq!(resolve("localhost:4739").unwrap().port(), 4739);
    assert!(resolve("127.0.0.1").is_err());
    assert!(resolve("127.0.0.1:99999").is_err());
}
