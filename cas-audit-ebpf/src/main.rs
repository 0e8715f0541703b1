//! cas-audit kernel programs: the entry points.
//!
//! `cas_tc_egress` looks at packets leaving an interface and matches their
//! destination; `cas_tc_ingress` and `cas_xdp_ingress` look at arriving
//! packets and match their source. What they do is [`observe::observe`]:
//! a match against the CAS prefix tries is counted per range and per flow;
//! a new flow whose service port is not an allowed one is reported on the
//! event ring buffer. Every program always passes the packet: the datapath
//! observes, it never changes a packet's fate.
//!
//! Modules, one concern each: [`packet`] (TC/XDP byte access), [`parse`]
//! (headers), [`lookup`] (prefilter, tries, port bitmaps), [`count`]
//! (counters), [`flow`] (the flow table and events), [`icmp`] (errors
//! quoting a flow), [`maps`], and [`bench`] (benchmark baselines).
#![no_std]
#![no_main]
// Atomic adds to flow counters: the bpf target has no `AtomicU64::fetch_add`,
// the intrinsic lowers to the BPF_ATOMIC add instruction.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod bench;
mod count;
mod flow;
mod icmp;
mod lookup;
mod maps;
mod observe;
mod packet;
mod parse;

use aya_ebpf::{
    bindings::{xdp_action::XDP_PASS, TC_ACT_UNSPEC},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use cas_audit_common::Direction;

/// TC egress: counts packets whose destination is a CAS address. Returns
/// `TC_ACT_UNSPEC` (TCX "next"): programs after it still decide.
#[classifier]
pub fn cas_tc_egress(ctx: TcContext) -> i32 {
    observe::observe(&ctx, Direction::Out);
    TC_ACT_UNSPEC
}

/// TC ingress: counts packets whose source is a CAS address.
#[classifier]
pub fn cas_tc_ingress(ctx: TcContext) -> i32 {
    observe::observe(&ctx, Direction::In);
    TC_ACT_UNSPEC
}

/// XDP ingress: counts packets whose source is a CAS address.
#[xdp]
pub fn cas_xdp_ingress(ctx: XdpContext) -> u32 {
    observe::observe(&ctx, Direction::In);
    XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// License of the object: GPL-compatible helpers are used.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
