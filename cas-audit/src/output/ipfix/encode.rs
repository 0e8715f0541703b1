//! IPFIX messages (RFC 7011) for flow records: the message header (§3.1),
//! template sets (§3.4.1) and data sets (§3.3.2), with variable-length
//! strings (§7). Pure code: bytes in, bytes out.
//!
//! Each flow becomes one *uniflow* data record per direction that carried
//! packets (out: local → remote, in: remote → local), so collectors that do
//! not read RFC 5103 biflows still count both ways.

use std::net::IpAddr;

use crate::{
    flow::Reason,
    output::{
        human::{datacenters_text, purposes_text},
        record::FlowRecord,
    },
};

/// IPFIX version number (RFC 7011 §3.1).
pub const VERSION: u16 = 10;
/// Set ID of a template set (§3.3.2).
pub const TEMPLATE_SET: u16 = 2;
/// Template ID of flows over IPv4.
pub const TEMPLATE_V4: u16 = 256;
/// Template ID of flows over IPv6.
pub const TEMPLATE_V6: u16 = 257;
/// The private enterprise number of cas-audit's own information elements:
/// **experimental**. 32473 is the number RFC 5612 reserves for
/// documentation and examples; cas-audit has none of its own yet, so these
/// elements may be renumbered. Collectors skip enterprise elements they do
/// not know (nfdump does) and read the standard ones.
pub const ENTERPRISE: u32 = 32473;
/// Field length of a variable-length element (§7).
const VARLEN: u16 = 0xffff;
/// Length of the message header.
const HEADER: usize = 16;
/// Length of a set header.
const SET_HEADER: usize = 4;

/// One field specifier of the templates: IANA information element id (or
/// an enterprise element of [`ENTERPRISE`]) and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Information element id.
    pub id: u16,
    /// Whether it is one of [`ENTERPRISE`]'s elements.
    pub enterprise: bool,
    /// Octets, or 65535 for a variable-length string.
    pub len: u16,
}

/// An IANA element; the name is the registry's, for the reader.
const fn iana(id: u16, len: u16, _name: &str) -> Field {
    Field {
        id,
        enterprise: false,
        len,
    }
}

/// One of cas-audit's elements ([`ENTERPRISE`]).
const fn own(id: u16, len: u16, name: &str) -> Field {
    Field {
        enterprise: true,
        ..iana(id, len, name)
    }
}

/// The fields after the addresses, in template order (IANA "IPFIX
/// Information Elements" registry ids; enterprise ids are cas-audit's).
pub const FIELDS: [Field; 22] = [
    iana(7, 2, "sourceTransportPort"),
    iana(11, 2, "destinationTransportPort"),
    iana(4, 1, "protocolIdentifier"),
    iana(6, 2, "tcpControlBits"),
    iana(2, 8, "packetDeltaCount"),
    iana(1, 8, "octetDeltaCount"),
    iana(152, 8, "flowStartMilliseconds"),
    iana(153, 8, "flowEndMilliseconds"),
    iana(10, 4, "ingressInterface"),
    iana(14, 4, "egressInterface"),
    iana(61, 1, "flowDirection"),
    iana(136, 1, "flowEndReason"),
    iana(148, 8, "flowId"),
    own(1, VARLEN, "casVerdict"),
    own(2, VARLEN, "casState"),
    own(3, VARLEN, "casDataCenters"),
    own(4, VARLEN, "casPurposes"),
    own(5, VARLEN, "casHistory"),
    own(6, VARLEN, "casPrefix"),
    own(7, 2, "casServicePort"),
    own(8, VARLEN, "casDnsName"),
    own(9, VARLEN, "casTlsServerName"),
];

/// The address fields of a template: source and destination.
pub fn address_fields(v6: bool) -> [Field; 2] {
    if v6 {
        [
            iana(27, 16, "sourceIPv6Address"),
            iana(28, 16, "destinationIPv6Address"),
        ]
    } else {
        [
            iana(8, 4, "sourceIPv4Address"),
            iana(12, 4, "destinationIPv4Address"),
        ]
    }
}

/// `flowEndReason` (IE 136) of a record's reason: idle timeout (1), end
/// of flow detected (3), forced end (4: the agent stopped).
pub fn end_reason(reason: Reason) -> u8 {
    match reason {
        Reason::Expired => 1,
        Reason::Exit => 4,
        _ => 3,
    }
}

/// The template set announcing both templates.
pub fn template_set() -> Vec<u8> {
    let mut b = Vec::with_capacity(256);
    put16(&mut b, TEMPLATE_SET);
    put16(&mut b, 0);
    for (id, v6) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
        put16(&mut b, id);
        put16(&mut b, (2 + FIELDS.len()) as u16);
        for f in address_fields(v6).iter().chain(&FIELDS) {
            if f.enterprise {
                put16(&mut b, f.id | 0x8000);
                put16(&mut b, f.len);
                b.extend_from_slice(&ENTERPRISE.to_be_bytes());
            } else {
                put16(&mut b, f.id);
                put16(&mut b, f.len);
            }
        }
    }
    let len = b.len() as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    b
}

/// The data records of `rec` (one per direction that carried packets),
/// appended to `out` in [`FIELDS`] order; `ifindex` is the audited
/// interface. Returns how many were written.
pub fn data_records(out: &mut Vec<u8>, rec: &FlowRecord, ifindex: u32) -> u32 {
    let mut n = 0;
    let ports = (rec.local_port.unwrap_or(0), rec.remote_port.unwrap_or(0));
    let outward = [
        (rec.packets_out, rec.bytes_out, rec.tcp_flags_out.0, true),
        (rec.packets_in, rec.bytes_in, rec.tcp_flags_in.0, false),
    ];
    for (packets, bytes, flags, out_dir) in outward {
        if packets == 0 {
            continue;
        }
        let (src, dst, sport, dport) = if out_dir {
            (rec.local_addr, rec.remote_addr, ports.0, ports.1)
        } else {
            (rec.remote_addr, rec.local_addr, ports.1, ports.0)
        };
        put_addr(out, src);
        put_addr(out, dst);
        put16(out, sport);
        put16(out, dport);
        out.push(rec.proto.0);
        put16(out, flags as u16);
        out.extend_from_slice(&packets.to_be_bytes());
        out.extend_from_slice(&bytes.to_be_bytes());
        out.extend_from_slice(&millis(&rec.first_seen).to_be_bytes());
        out.extend_from_slice(&millis(&rec.last_seen).to_be_bytes());
        let (ingress, egress) = if out_dir { (0, ifindex) } else { (ifindex, 0) };
        out.extend_from_slice(&ingress.to_be_bytes());
        out.extend_from_slice(&egress.to_be_bytes());
        out.push(u8::from(out_dir));
        out.push(end_reason(rec.reason));
        out.extend_from_slice(&rec.flow_id.to_be_bytes());
        put_str(out, rec.verdict.as_str());
        put_str(out, rec.state.map_or("", |s| s.as_str()));
        put_str(out, &datacenters_text(&rec.datacenters, ","));
        put_str(out, &purposes_text(&rec.purposes));
        put_str(out, &rec.history);
        put_str(out, &rec.prefix);
        put16(out, rec.service_port.unwrap_or(0));
        put_str(out, rec.dns_name.as_deref().unwrap_or(""));
        put_str(out, rec.tls_server_name.as_deref().unwrap_or(""));
        n += 1;
    }
    n
}

/// The template a record's data records use.
pub fn template_of(rec: &FlowRecord) -> u16 {
    if rec.local_addr.is_ipv6() {
        TEMPLATE_V6
    } else {
        TEMPLATE_V4
    }
}

/// Builds one message at a time: header, an optional template set, then
/// data sets (one per run of records of the same template).
#[derive(Debug)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    max: usize,
    /// Offset of the open data set's header, and its template.
    set: Option<(usize, u16)>,
    records: u32,
    scratch: Vec<u8>,
}

impl MessageBuilder {
    /// A builder of messages of at most `max` octets.
    pub fn new(max: usize) -> MessageBuilder {
        MessageBuilder {
            buf: Vec::with_capacity(max),
            max,
            set: None,
            records: 0,
            scratch: Vec::with_capacity(512),
        }
    }

    /// Starts a message (discarding any unfinished one), with the template
    /// set first when `templates`.
    pub fn start(&mut self, templates: bool) {
        self.buf.clear();
        self.buf.resize(HEADER, 0);
        self.set = None;
        self.records = 0;
        if templates {
            self.buf.extend_from_slice(&template_set());
        }
    }

    /// Whether the message holds no data record yet.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Adds the data records of `rec`; false (and nothing added) when they
    /// do not fit in the message. A flow without packets adds nothing and
    /// fits.
    pub fn add(&mut self, rec: &FlowRecord, ifindex: u32) -> bool {
        self.scratch.clear();
        let n = data_records(&mut self.scratch, rec, ifindex);
        if n == 0 {
            return true;
        }
        let template = template_of(rec);
        let new_set = self.set.map(|(_, t)| t) != Some(template);
        let need = self.scratch.len() + if new_set { SET_HEADER } else { 0 };
        if self.buf.len() + need > self.max {
            return false;
        }
        if new_set {
            self.close_set();
            self.set = Some((self.buf.len(), template));
            put16(&mut self.buf, template);
            put16(&mut self.buf, 0);
        }
        self.buf.extend_from_slice(&self.scratch);
        self.records += n;
        true
    }

    /// Finishes the message: the header with `export_time` (seconds since
    /// the epoch), `sequence` (data records sent before this message in
    /// the observation domain) and `domain`. Returns the bytes and how many
    /// data records they hold.
    pub fn finish(&mut self, export_time: u32, sequence: u32, domain: u32) -> (&[u8], u32) {
        self.close_set();
        let len = self.buf.len() as u16;
        let h = &mut self.buf[..HEADER];
        h[0..2].copy_from_slice(&VERSION.to_be_bytes());
        h[2..4].copy_from_slice(&len.to_be_bytes());
        h[4..8].copy_from_slice(&export_time.to_be_bytes());
        h[8..12].copy_from_slice(&sequence.to_be_bytes());
        h[12..16].copy_from_slice(&domain.to_be_bytes());
        (&self.buf, self.records)
    }

    fn close_set(&mut self) {
        if let Some((at, _)) = self.set.take() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }
}

fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn put_addr(b: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(a) => b.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => b.extend_from_slice(&a.octets()),
    }
}

/// A variable-length string (§7): one length octet below 255, else 255
/// and two length octets; cut at 65535 octets (on a character boundary).
fn put_str(b: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(0xffff);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let s = &s.as_bytes()[..end];
    if s.len() < 255 {
        b.push(s.len() as u8);
    } else {
        b.push(255);
        put16(b, s.len() as u16);
    }
    b.extend_from_slice(s);
}

/// Milliseconds since the epoch (`dateTimeMilliseconds`, §6.1.8).
fn millis(t: &crate::output::record::Timestamp) -> u64 {
    u64::try_from(t.0.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}
