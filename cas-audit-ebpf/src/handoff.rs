//! The hand-off of DNS responses and TLS ClientHellos to the agent, which
//! learns from them the addresses of the address set's DNS names: a DNS
//! response's answers, a ClientHello's server name (RFC 6066 section 3).
//!
//! Only the packets [`rules::handoff`] names are looked at further, and a
//! ClientHello is confirmed by its first six bytes ([`rules::client_hello`]).
//! Each goes to the agent once, at the first audited hook it meets
//! ([`counts_here`]), as a [`Payload`] on the payload ring with its first
//! [`PAYLOAD_BYTES`] bytes (longer ones are cut, `payloads_cut`; a full
//! ring is `payloads_lost`). The packet itself passes untouched.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use cas_audit_common::{
    payload_kind, record_kind, rules, sizes::PAYLOAD_BYTES, Counter, Payload, PayloadHeader,
};

use crate::{
    count::count,
    maps::PAYLOADS,
    observe::{counts_here, Hook},
    packet::Packet,
    parse::{L3, L4},
};

/// Hands a DNS response or a ClientHello over; anything else is left alone.
#[inline(always)]
pub fn offer<P: Packet>(pkt: &P, hook: Hook, l3: &L3, l4: &L4) {
    if !l4.payload {
        return;
    }
    let what = rules::handoff(l3.proto, l4.src_port, l4.dst_port);
    if what == 0 {
        return;
    }
    if what == payload_kind::TLS_HELLO {
        match pkt.load::<[u8; 6]>(l4.hdr_end) {
            Ok(first) if rules::client_hello(first) => {}
            _ => return,
        }
    }
    if !counts_here(pkt, hook) {
        return;
    }
    count(
        if what == payload_kind::TLS_HELLO {
            Counter::ClientHellos
        } else {
            Counter::DnsResponses
        },
        1,
    );
    let Some(mut entry) = PAYLOADS.reserve::<Payload>(0) else {
        return count(Counter::PayloadsLost, 1);
    };
    let len = l3.end - l4.hdr_end;
    let copied = if len > PAYLOAD_BYTES as u32 {
        count(Counter::PayloadsCut, 1);
        PAYLOAD_BYTES as u32
    } else {
        len
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: a reserved record of Payload's size: the header is written
    // whole, `data` gets `copied` (at most PAYLOAD_BYTES) bytes.
    let ok = unsafe {
        (*rec).hdr = PayloadHeader {
            kind: record_kind::PAYLOAD,
            ifindex: pkt.ifindex(),
            ts_ns: bpf_ktime_get_ns(),
            src: l3.src,
            dst: l3.dst,
            src_port: l4.src_port,
            dst_port: l4.dst_port,
            what,
            family: l3.family,
            _pad: [0; 2],
            len,
            copied,
        };
        pkt.copy_out(l4.hdr_end, (*rec).data.as_mut_ptr(), copied)
    };
    if ok {
        entry.submit(0);
    } else {
        entry.discard(0);
        count(Counter::PayloadsLost, 1);
    }
}
