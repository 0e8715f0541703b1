//! Baselines for `cargo xtask bench`: programs of the same types as the real
//! ones that do nothing, or only parse, so that the benchmark can report the
//! datapath's own cost. The agent never attaches them.

use aya_ebpf::{
    bindings::{xdp_action::XDP_PASS, TC_ACT_UNSPEC},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::{
    packet::Packet,
    parse::{parse_l3, parse_l4, L3Status},
};

/// Returns at once (TC).
#[classifier]
pub fn cas_bench_empty_tc(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// Returns at once (XDP).
#[xdp]
pub fn cas_bench_empty_xdp(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// Parses the headers as the real programs do, nothing else (TC).
#[classifier]
pub fn cas_bench_parse_tc(ctx: TcContext) -> i32 {
    parse_only(&ctx);
    TC_ACT_UNSPEC
}

/// Parses the headers as the real programs do, nothing else (XDP).
#[xdp]
pub fn cas_bench_parse_xdp(ctx: XdpContext) -> u32 {
    parse_only(&ctx);
    XDP_PASS
}

#[inline(always)]
fn parse_only<P: Packet>(pkt: &P) {
    let l3 = parse_l3(pkt, pkt.segments() > 1);
    if l3.status == L3Status::Ok {
        core::hint::black_box(parse_l4(pkt, &l3).ok);
    }
}
