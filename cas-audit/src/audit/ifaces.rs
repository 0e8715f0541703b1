//! Following the audited interfaces by index, from the kernel's link
//! events ([`crate::host::links`]), never from a lookup by name:
//!
//! - a **rename** keeps the index: the programs stay attached, the rename
//!   is logged, and later lines and records use the new name;
//! - **down** and **up** are logged; the programs stay attached;
//! - a **removal** (`RTM_DELLINK` of the index the programs are on, or its
//!   absence from a complete dump) starts a gap: counted
//!   (`interface_gaps`), logged, and the attachment forgotten;
//! - a **creation** of an interface of the name given with `--iface`
//!   (`RTM_NEWLINK`, a new index) is attached at once; the time it existed
//!   without the programs, from the event as read to the attach, is
//!   counted (`interface_uncovered_ms`) and logged. A failed attach is
//!   retried at every event and every poll, and logged once per gap;
//! - lost events (a full socket buffer) are logged, and a dump of every
//!   interface sets the view right. Nothing else, in particular no failed
//!   lookup and no shortage of descriptors or memory, is taken for a
//!   removal.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::session::Session;
use crate::host::links::{Link, LinkChange};

/// One `--iface`.
#[derive(Debug)]
struct Watched {
    /// The name given with `--iface`.
    wanted: String,
    /// The device the programs are on: its index and current name.
    device: Option<(u32, String)>,
    /// Whether it was up when last seen.
    up: bool,
    /// While the programs are off: since when, and since when a device
    /// of the wanted name exists without them.
    gap: Option<(Instant, Option<Instant>)>,
    /// Failed attaches in this gap (the first is logged).
    failures: u32,
}

/// What the datapath must do after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The device `index`, attached, is now called `to`.
    Renamed {
        /// Its index.
        index: u32,
        /// Its name before.
        from: String,
        /// Its name now.
        to: String,
    },
    /// The device `index`, attached, is gone.
    Removed {
        /// Its index.
        index: u32,
        /// Its last name.
        name: String,
        /// The `--iface` it stood for.
        wanted: String,
    },
    /// An interface named `wanted` exists without the programs: attach.
    Attach {
        /// The `--iface` name.
        wanted: String,
    },
}

/// The audited interfaces and every interface the agent knows of.
#[derive(Debug)]
pub struct Interfaces {
    list: Vec<Watched>,
    /// Every interface known, by index.
    links: BTreeMap<u32, Link>,
    gaps: u64,
    /// Closed stretches of time uncovered.
    uncovered: Duration,
    /// Lost-event notices since the last listing (the first is logged).
    lost: u64,
}

impl Interfaces {
    /// The interfaces attached at start: `(--iface name, its device)`.
    pub fn new(attached: impl IntoIterator<Item = (String, Link)>) -> Interfaces {
        let mut list = Vec::new();
        let mut links = BTreeMap::new();
        for (wanted, link) in attached {
            list.push(Watched {
                wanted,
                device: Some((link.index, link.name.clone())),
                up: link.up,
                gap: None,
                failures: 0,
            });
            links.insert(link.index, link);
        }
        Interfaces {
            list,
            links,
            gaps: 0,
            uncovered: Duration::ZERO,
            lost: 0,
        }
    }

    /// Applies what the kernel said; returns what the datapath must do.
    pub fn on_change(&mut self, change: &LinkChange, now: Instant) -> Vec<Step> {
        match change {
            LinkChange::New(l) => {
                self.links.insert(l.index, l.clone());
            }
            LinkChange::Del(l) => {
                self.links.remove(&l.index);
            }
            LinkChange::Lost(why) => {
                if self.lost == 0 {
                    log::warn!("interface events were lost ({why}): re-reading the list of interfaces; until then nothing is taken for removed");
                }
                self.lost += 1;
                return Vec::new();
            }
            LinkChange::Listing {
                links,
                touched,
                complete,
            } => {
                let mut view: BTreeMap<u32, Link> = links
                    .iter()
                    .filter(|l| !touched.contains(&l.index))
                    .map(|l| (l.index, l.clone()))
                    .collect();
                // For these, the events already applied are newer.
                for i in touched {
                    if let Some(l) = self.links.get(i) {
                        view.insert(*i, l.clone());
                    }
                }
                if !complete {
                    // An absence from an incomplete listing proves nothing.
                    for (i, l) in &self.links {
                        view.entry(*i).or_insert_with(|| l.clone());
                    }
                }
                if self.lost > 0 {
                    log::info!(
                        "interfaces re-read after lost events: {} interfaces{}",
                        view.len(),
                        if *complete {
                            ""
                        } else {
                            " (some unreadable: none taken for removed)"
                        }
                    );
                    self.lost = 0;
                }
                self.links = view;
            }
        }
        self.reconcile(now)
    }

    /// Compares the audited interfaces with the known ones: renames,
    /// down and up (logged here), removals, and interfaces to attach
    /// (again at every call while an attach fails).
    pub fn reconcile(&mut self, now: Instant) -> Vec<Step> {
        let Interfaces {
            list,
            links,
            gaps,
            uncovered,
            ..
        } = self;
        let mut steps = Vec::new();
        for w in list.iter_mut() {
            let removed = match &mut w.device {
                Some((index, name)) => match links.get(index) {
                    None => Some((*index, name.clone())),
                    Some(l) => {
                        if l.name != *name {
                            steps.push(Step::Renamed {
                                index: *index,
                                from: std::mem::replace(name, l.name.clone()),
                                to: l.name.clone(),
                            });
                        }
                        if l.up != w.up {
                            if l.up {
                                log::info!("{name} is up again; still attached");
                            } else {
                                log::warn!("{name} is down; the programs stay attached");
                            }
                            w.up = l.up;
                        }
                        None
                    }
                },
                None => None,
            };
            if let Some((index, name)) = removed {
                steps.push(Step::Removed {
                    index,
                    name,
                    wanted: w.wanted.clone(),
                });
                w.device = None;
                w.gap = Some((now, None));
                w.failures = 0;
                *gaps += 1;
            }
            if w.device.is_none() {
                let present = links.values().any(|l| l.name == w.wanted);
                let (_, seen) = w.gap.get_or_insert((now, None));
                match (present, *seen) {
                    (true, None) => *seen = Some(now),
                    (false, Some(t)) => {
                        // Gone again before it could be attached.
                        *uncovered += now.saturating_duration_since(t);
                        *seen = None;
                    }
                    _ => {}
                }
                if present {
                    steps.push(Step::Attach {
                        wanted: w.wanted.clone(),
                    });
                }
            }
        }
        steps
    }

    /// The programs are on `wanted` again, device `index`. Returns how
    /// long the gap lasted and how long of it the device existed
    /// without them.
    pub fn attached(&mut self, wanted: &str, index: u32, now: Instant) -> (Duration, Duration) {
        let Some(w) = self.list.iter_mut().find(|w| w.wanted == wanted) else {
            return Default::default();
        };
        let link = self
            .links
            .entry(index)
            .or_insert_with(|| Link {
                index,
                name: wanted.to_string(),
                up: false,
            })
            .clone();
        w.device = Some((index, link.name));
        w.up = link.up;
        w.failures = 0;
        let Some((since, seen)) = w.gap.take() else {
            return Default::default();
        };
        let off = seen.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.uncovered += off;
        (now.saturating_duration_since(since), off)
    }

    /// An attach to `wanted` failed; whether it is the first of its gap.
    pub fn attach_failed(&mut self, wanted: &str) -> bool {
        self.list
            .iter_mut()
            .find(|w| w.wanted == wanted)
            .is_some_and(|w| {
                w.failures += 1;
                w.failures == 1
            })
    }

    /// Gaps so far.
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// Milliseconds uncovered so far, the stretches still open included.
    pub fn uncovered_ms(&self, now: Instant) -> u64 {
        let open: Duration = self
            .list
            .iter()
            .filter_map(|w| w.gap.and_then(|(_, seen)| seen))
            .map(|t| now.saturating_duration_since(t))
            .sum();
        u64::try_from((self.uncovered + open).as_millis()).unwrap_or(u64::MAX)
    }

    /// Audited interfaces with the programs on now.
    pub fn attached_now(&self) -> usize {
        self.list.iter().filter(|w| w.device.is_some()).count()
    }
}

impl Session {
    /// What the kernel said about the interfaces, applied.
    pub(super) fn on_links(&mut self, changes: &[LinkChange]) {
        for c in changes {
            let steps = self.ifaces.on_change(c, Instant::now());
            self.apply(steps);
        }
    }

    /// Attaches again where an earlier attach failed (at every poll).
    pub(super) fn retry_interfaces(&mut self) {
        let steps = self.ifaces.reconcile(Instant::now());
        self.apply(steps);
    }

    fn apply(&mut self, steps: Vec<Step>) {
        for step in steps {
            match step {
                Step::Renamed { index, from, to } => {
                    log::info!(
                        "{from} (ifindex {index}) was renamed {to}: the programs stay attached; records name it {to} from now on"
                    );
                    self.ifnames.insert(index, to.clone());
                    self.dp.renamed(index, &to);
                }
                Step::Removed {
                    index,
                    name,
                    wanted,
                } => {
                    let it = if name == wanted {
                        "it".to_string()
                    } else {
                        format!("an interface named {wanted}")
                    };
                    log::warn!(
                        "{name} (ifindex {index}) disappeared; re-attaching when {it} returns; no counting on it until then (interface_gaps)"
                    );
                    self.dp.forget(index);
                }
                Step::Attach { wanted } => self.attach_again(&wanted),
            }
        }
    }

    fn attach_again(&mut self, wanted: &str) {
        match self.dp.attach(wanted, self.ingress) {
            Ok(a) => {
                let (gap, off) = self.ifaces.attached(wanted, a.ifindex, Instant::now());
                log::info!(
                    "{} is back (ifindex {}): re-attached, egress {}, ingress {}; {} ms after it appeared, {:.1} s after the gap began",
                    a.iface,
                    a.ifindex,
                    if a.tcx { "tcx" } else { "tc clsact" },
                    a.ingress,
                    off.as_millis(),
                    gap.as_secs_f64()
                );
                self.ifnames.insert(a.ifindex, a.iface.clone());
            }
            Err(e) => {
                if self.ifaces.attach_failed(wanted) {
                    log::warn!("re-attaching to {wanted} failed: {e}; retrying at every change and every second");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            up: true,
        }
    }

    fn watching(index: u32, name: &str) -> Interfaces {
        Interfaces::new([(name.to_string(), link(index, name))])
    }

    #[test]
    fn a_rename_keeps_the_programs_and_follows_the_name() {
        let mut i = watching(5, "up0");
        let t = Instant::now();
        let steps = i.on_change(&LinkChange::New(link(5, "up9")), t);
        assert_eq!(
            steps,
            [Step::Renamed {
                index: 5,
                from: "up0".into(),
                to: "up9".into()
            }]
        );
        // A new device taking the old name is not the audited one.
        assert!(i.on_change(&LinkChange::New(link(6, "up0")), t).is_empty());
        assert_eq!((i.gaps(), i.attached_now()), (0, 1));
        // Removing the renamed device: a gap, and the name's new device
        // is attached.
        let steps = i.on_change(&LinkChange::Del(link(5, "up9")), t);
        assert_eq!(
            steps,
            [
                Step::Removed {
                    index: 5,
                    name: "up9".into(),
                    wanted: "up0".into()
                },
                Step::Attach {
                    wanted: "up0".into()
                }
            ]
        );
        assert_eq!((i.gaps(), i.attached_now()), (1, 0));
    }

    #[test]
    fn a_recreated_interface_is_attached_from_its_event_and_the_gap_counted() {
        let mut i = watching(5, "uplink");
        let t0 = Instant::now();
        let steps = i.on_change(&LinkChange::Del(link(5, "uplink")), t0);
        assert!(matches!(steps.as_slice(), [Step::Removed { index: 5, .. }]));
        // Other interfaces come and go: nothing to do.
        assert!(i
            .on_change(&LinkChange::New(link(6, "other")), t0)
            .is_empty());
        let t1 = t0 + Duration::from_secs(3);
        let steps = i.on_change(&LinkChange::New(link(7, "uplink")), t1);
        assert_eq!(
            steps,
            [Step::Attach {
                wanted: "uplink".into()
            }]
        );
        // Uncovered from the event on, until the attach.
        let t2 = t1 + Duration::from_millis(4);
        assert_eq!(i.uncovered_ms(t2), 4);
        assert!(i.attach_failed("uplink"), "the first failure is logged");
        assert!(!i.attach_failed("uplink"), "not the second");
        // Retried at the next poll.
        assert_eq!(i.reconcile(t2).len(), 1);
        let t3 = t1 + Duration::from_millis(10);
        let (gap, off) = i.attached("uplink", 7, t3);
        assert_eq!(
            (gap, off),
            (Duration::from_millis(3010), Duration::from_millis(10))
        );
        assert_eq!(
            (i.gaps(), i.uncovered_ms(t3 + Duration::from_secs(9))),
            (1, 10)
        );
        assert!(i.reconcile(t3).is_empty());
        assert_eq!(i.attached_now(), 1);
        // Down and up are not removals.
        let mut down = link(7, "uplink");
        down.up = false;
        assert!(i.on_change(&LinkChange::New(down), t3).is_empty());
        assert!(i
            .on_change(&LinkChange::New(link(7, "uplink")), t3)
            .is_empty());
        assert_eq!(i.gaps(), 1);
    }

    #[test]
    fn lost_events_and_incomplete_listings_never_remove() {
        let mut i = watching(5, "uplink");
        let t = Instant::now();
        assert!(i
            .on_change(&LinkChange::Lost("overflow".into()), t)
            .is_empty());
        // An incomplete listing without the device: still attached.
        let partial = LinkChange::Listing {
            links: vec![link(1, "lo")],
            touched: BTreeSet::new(),
            complete: false,
        };
        assert!(i.on_change(&partial, t).is_empty());
        assert_eq!((i.gaps(), i.attached_now()), (0, 1));
        // A complete one that lists it renamed: a rename.
        let renamed = LinkChange::Listing {
            links: vec![link(1, "lo"), link(5, "wan")],
            touched: BTreeSet::new(),
            complete: true,
        };
        assert!(matches!(
            i.on_change(&renamed, t).as_slice(),
            [Step::Renamed { index: 5, .. }]
        ));
        // An event newer than the dump wins: 5 was deleted while the dump
        // ran, though the dump still lists it.
        assert_eq!(i.on_change(&LinkChange::Del(link(5, "wan")), t).len(), 1);
        let stale = LinkChange::Listing {
            links: vec![link(1, "lo"), link(5, "wan")],
            touched: BTreeSet::from([5]),
            complete: true,
        };
        assert!(i.on_change(&stale, t).is_empty());
        assert_eq!((i.gaps(), i.attached_now()), (1, 0));
        // A complete listing without the device is a removal.
        let mut j = watching(5, "uplink");
        let gone = LinkChange::Listing {
            links: vec![link(1, "lo")],
            touched: BTreeSet::new(),
            complete: true,
        };
        assert!(matches!(
            j.on_change(&gone, t).as_slice(),
            [Step::Removed { index: 5, .. }]
        ));
    }

    #[test]
    fn a_name_gone_again_before_the_attach_closes_its_uncovered_time() {
        let mut i = watching(5, "uplink");
        let t0 = Instant::now();
        i.on_change(&LinkChange::Del(link(5, "uplink")), t0);
        i.on_change(&LinkChange::New(link(8, "uplink")), t0);
        let t1 = t0 + Duration::from_millis(20);
        assert!(i
            .on_change(&LinkChange::Del(link(8, "uplink")), t1)
            .is_empty());
        assert_eq!(i.uncovered_ms(t1 + Duration::from_secs(5)), 20);
    }
}
