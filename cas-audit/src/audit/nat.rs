//! The inside host behind NAT, asked of the kernel's connection tracking
//! for every new flow ([`crate::flow::tracker::Resolve`]).
//!
//! Why ctnetlink from the agent rather than conntrack lookups in the
//! datapath (`bpf_skb_ct_lookup`, kernel >= 5.19): the kfunc hands back an
//! `nf_conn` whose tuples can only be read with the kernel's structure
//! layout (CO-RE relocations), which aya-ebpf 0.2 cannot express; and a
//! lookup per new flow in the agent costs no time on the packet path. The
//! answer comes once per flow, from the same table the NAT itself uses.

use std::time::{Duration, Instant};

use cas_audit_common::FlowKey;

use crate::{
    flow::{
        addr_of, has_ports,
        nat::{queries, resolve, Nat},
        tracker::Resolve,
    },
    host::conntrack::{tracking, Conntrack},
};

/// How long the answer to "does this namespace track connections?" is kept.
const TRACKING_TTL: Duration = Duration::from_millis(500);

/// Conntrack lookups for the tracker.
pub struct CtResolver {
    ct: Option<Conntrack>,
    tracking: Option<(Instant, bool)>,
    failed: bool,
}

impl CtResolver {
    /// Opens a ctnetlink socket; without one (no privilege, no netfilter
    /// netlink) every flow's NAT is `unknown`, which it says once.
    pub fn open() -> CtResolver {
        let ct = match Conntrack::open() {
            Ok(c) => Some(c),
            Err(e) => {
                log::warn!("cannot ask connection tracking ({e}): nat is \"unknown\" and local_* the address the datapath saw, for every flow");
                None
            }
        };
        CtResolver {
            ct,
            tracking: None,
            failed: false,
        }
    }

    /// Whether the namespace tracks connections, re-read at most every
    /// [`TRACKING_TTL`].
    fn tracking(&mut self) -> bool {
        match self.tracking {
            Some((at, v)) if at.elapsed() < TRACKING_TTL => v,
            _ => {
                let v = tracking();
                self.tracking = Some((Instant::now(), v));
                v
            }
        }
    }
}

impl Resolve for CtResolver {
    fn nat(&mut self, key: &FlowKey) -> Nat {
        if !has_ports(key.proto) || self.ct.is_none() || !self.tracking() {
            return Nat::default();
        }
        let local = (addr_of(key.family, &key.local_addr), key.local_port);
        let remote = (addr_of(key.family, &key.remote_addr), key.remote_port);
        let Some(ct) = self.ct.as_mut() else {
            return Nat::default();
        };
        for q in queries(key.proto, local, remote) {
            match ct.get(&q) {
                Ok(Some(e)) => {
                    if let Some(n) = resolve(local, remote, &e) {
                        return n;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    if !self.failed {
                        log::warn!("asking connection tracking failed ({e}): nat is \"unknown\" for the flows it could not answer");
                        self.failed = true;
                    }
                    return Nat::default();
                }
            }
        }
        Nat::default()
    }
}
