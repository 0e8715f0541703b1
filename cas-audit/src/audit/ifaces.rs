//! Following the audited interfaces: down and up are logged, a deleted
//! interface is forgotten and attached again when it returns.

use super::session::Session;
use crate::host::netdev;

/// What the agent last saw of an audited interface.
#[derive(Debug, Clone, Copy)]
pub struct IfaceSeen {
    /// Its index while attached; `None` while it is gone.
    pub ifindex: Option<u32>,
    /// Whether it was up.
    pub up: bool,
}

impl Session {
    /// Notices interfaces that went down or up, disappeared, or came back
    /// (re-created: a new index), and re-attaches to those that returned.
    pub(super) fn watch_interfaces(&mut self) {
        for i in 0..self.ifaces.len() {
            let (name, seen) = self.ifaces[i].clone();
            let now = netdev::ifindex(&name).ok();
            let up = netdev::is_up(&name).unwrap_or(false);
            let mut next = IfaceSeen { ifindex: now, up };
            match (seen.ifindex, now) {
                (Some(a), Some(b)) if a == b => {
                    if seen.up != up {
                        if up {
                            log::info!("{name} is up again; still attached");
                        } else {
                            log::warn!("{name} is down; the programs stay attached");
                        }
                    }
                }
                (Some(a), now) => {
                    log::warn!("{name} (ifindex {a}) disappeared; re-attaching when it returns");
                    self.dp.forget(&name);
                    next.ifindex = None;
                    if now.is_some() {
                        next.ifindex = self.reattach(&name);
                    }
                }
                (None, Some(_)) => next.ifindex = self.reattach(&name),
                (None, None) => {}
            }
            self.ifaces[i].1 = next;
        }
    }

    /// Attaches to an interface that came back; its index, or `None` to
    /// try again at the next poll.
    fn reattach(&mut self, name: &str) -> Option<u32> {
        match self.dp.attach(name, self.ingress) {
            Ok(a) => {
                log::info!(
                    "{} is back (ifindex {}): re-attached, egress {}, ingress {}",
                    a.iface,
                    a.ifindex,
                    if a.tcx { "tcx" } else { "tc clsact" },
                    a.ingress
                );
                self.ifnames.insert(a.ifindex, a.iface.clone());
                Some(a.ifindex)
            }
            Err(e) => {
                log::warn!("re-attaching to {name} failed: {e}; retrying");
                None
            }
        }
    }
}
