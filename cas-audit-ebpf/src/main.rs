//! cas-audit kernel programs: the entry points.
//!
//! `cas_tc_egress` looks at packets leaving an interface, `cas_tc_ingress`
//! and `cas_xdp_ingress` at arriving ones. What they do is
//! [`observe::observe`]: both addresses are matched against the CAS prefix
//! tries (the CAS side is the remote side whatever the hook); a match is
//! counted per range and per flow, once per packet however many audited
//! interfaces it crosses; a new flow whose service port is not an allowed
//! one, and an ended flow whose 5-tuple a new connection reuses, are handed
//! to the agent on the ring buffer. Every program always passes the packet:
//! the datapath observes, it never changes a packet's fate.
//!
//! Modules, one concern each: [`packet`] (TC/XDP byte access), [`parse`]
//! (headers), [`lookup`] (prefilter, tries, port bitmaps), [`count`]
//! (counters), [`flow`] (the flow table and events), [`icmp`] (errors
//! quoting a flow), [`handoff`] (DNS responses and ClientHellos for the
//! agent), [`maps`], and [`bench`] (benchmark baselines).
#![no_std]
#![no_main]
// Atomic adds to flow counters: the bpf target has no `AtomicU64::fetch_add`,
// the intrinsic lowers to the BPF_ATOMIC add instruction.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod bench;
mod count;
mod flow;
mod handoff;
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
use observe::Hook;

/// TC egress: counts packets to or from a CAS address that did not arrive
/// on an audited interface. Returns `TC_ACT_UNSPEC` (TCX "next"): programs
/// after it still decide.
#[classifier]
pub fn cas_tc_egress(ctx: TcContext) -> i32 {
    observe::observe(&ctx, Hook::Egress);
    TC_ACT_UNSPEC
}

/// TC ingress: counts packets to or from a CAS address.
#[classifier]
pub fn cas_tc_ingress(ctx: TcContext) -> i32 {
    observe::observe(&ctx, Hook::Ingress);
    TC_ACT_UNSPEC
}

/// XDP ingress: counts packets to or from a CAS address.
#[xdp]
pub fn cas_xdp_ingress(ctx: XdpContext) -> u32 {
    observe::observe(&ctx, Hook::Ingress);
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
