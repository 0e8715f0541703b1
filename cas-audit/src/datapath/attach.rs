//! Attaching the programs to interfaces and detaching them: TCX or a
//! clsact qdisc for egress (kernel >= 6.6: TCX), native or generic XDP or
//! TC for ingress, and pinned links a restarted agent takes over with
//! `BPF_LINK_UPDATE`.

use std::fmt;

use aya::programs::{
    tc::{self, SchedClassifierLinkId, TcAttachType},
    xdp::XdpLinkId,
    XdpMode,
};
use cas_audit_common::names;

use super::{
    pin::{LinkHook, PinError},
    Datapath, DatapathError,
};
use crate::host::netdev::{self, ifindex};

/// How ingress packets are observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngressMode {
    /// Native XDP on physical NICs whose driver supports it, TC otherwise.
    Auto,
    /// XDP: native (driver) mode, falling back to generic mode with a warning.
    Xdp,
    /// TC ingress classifier.
    Tc,
}

/// The ingress hook actually in use on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngressHook {
    /// XDP in driver (native) mode.
    XdpNative,
    /// XDP in generic (skb) mode.
    XdpGeneric,
    /// TC ingress classifier.
    Tc,
    /// XDP through a pinned link taken over from a previous agent, in the
    /// mode it was attached with.
    XdpPinned,
}

impl fmt::Display for IngressHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IngressHook::XdpNative => "xdp (native)",
            IngressHook::XdpGeneric => "xdp (generic)",
            IngressHook::Tc => "tc ingress",
            IngressHook::XdpPinned => "xdp (pinned link)",
        })
    }
}

/// One interface the programs are attached to.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Interface name.
    pub iface: String,
    /// Interface index.
    pub ifindex: u32,
    /// Ingress hook chosen.
    pub ingress: IngressHook,
    /// Whether egress went through TCX (kernel >= 6.6) rather than a clsact qdisc.
    pub tcx: bool,
}

pub(super) enum IngressLink {
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
}

pub(super) struct Links {
    iface: String,
    ifindex: u32,
    egress: SchedClassifierLinkId,
    ingress: IngressLink,
}

impl IngressMode {
    /// Every mode with its flag value.
    pub const ALL: [(IngressMode, &'static str); 3] = [
        (IngressMode::Auto, "auto"),
        (IngressMode::Xdp, "xdp"),
        (IngressMode::Tc, "tc"),
    ];
}

impl std::str::FromStr for IngressMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        IngressMode::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(m, _)| *m)
            .ok_or_else(|| format!("{s:?} is not an ingress mode (auto, xdp or tc)"))
    }
}

/// Refuses `iface` when cas-audit programs are attached to it through TCX
/// (egress or ingress): another agent watches it, or a datapath pinned
/// there (its egress link is always one of these). Kernels without TCX
/// (before 6.6) have no such query: nothing is refused there.
///
/// # Errors
/// [`DatapathError::AlreadyWatched`] naming the programs found.
pub fn refuse_if_watched(iface: &str) -> Result<(), DatapathError> {
    if !netdev::tcx_available() {
        return Ok(());
    }
    let ours = [names::PROG_TC_EGRESS, names::PROG_TC_INGRESS];
    let mut found = Vec::new();
    for hook in [TcAttachType::Egress, TcAttachType::Ingress] {
        match aya::programs::SchedClassifier::query_tcx(iface, hook) {
            Ok((_, progs)) => found.extend(
                progs
                    .iter()
                    .filter_map(|p| Some((p.id(), p.name_as_str()?.to_string())))
                    .filter(|(_, n)| ours.contains(&n.as_str())),
            ),
            Err(e) => log::debug!("querying the TCX programs on {iface}: {e}"),
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    let programs: Vec<String> = found
        .iter()
        .map(|(id, n)| format!("program {id} {n}"))
        .collect();
    Err(DatapathError::AlreadyWatched {
        iface: iface.to_string(),
        programs: programs.join(", "),
    })
}

impl Datapath {
    /// Attaches the egress classifier and an ingress hook to `iface`. A
    /// pinned datapath pins the links; a link pinned by a previous agent
    /// on the same interface gets this object's program atomically
    /// (`BPF_LINK_UPDATE`), so that counting never stops.
    pub fn attach(&mut self, iface: &str, mode: IngressMode) -> Result<Attachment, DatapathError> {
        if self.pin.is_some() {
            return self.attach_pinned(iface, mode);
        }
        self.attach_plain(iface, mode)
    }

    fn attach_pinned(
        &mut self,
        iface: &str,
        mode: IngressMode,
    ) -> Result<Attachment, DatapathError> {
        use aya::programs::{
            links::FdLink, links::PinnedLink, tc::SchedClassifierLink, xdp::XdpLink,
        };
        let ifindex = ifindex(iface)?;
        let dir = self.pin.clone().expect("pinned");
        let egress_path = dir.link_path(iface, ifindex, LinkHook::Egress);
        let ingress_path = dir.link_path(iface, ifindex, LinkHook::Ingress);
        let pin_err = |what: &'static str, path: &std::path::Path| {
            let path = path.to_path_buf();
            move |e: std::io::Error| {
                DatapathError::Pin(PinError::Io {
                    what,
                    path,
                    source: e,
                })
            }
        };
        let link_err = |hook: &'static str| {
            let iface = iface.to_string();
            move |source: aya::programs::links::LinkError| DatapathError::Link {
                iface,
                hook,
                source,
            }
        };
        let attach_err = |hook: &'static str| {
            let iface = iface.to_string();
            move |source| DatapathError::Attach {
                iface,
                hook,
                source,
            }
        };
        // Links of an earlier interface of this name (deleted and created
        // again: another index) are stale: drop their pins.
        for l in dir.links() {
            if l.iface == iface && l.ifindex != ifindex {
                std::fs::remove_file(&l.path).map_err(pin_err("removing", &l.path))?;
                log::info!("removed the stale pinned link {}", l.path.display());
            }
        }

        // Egress: take over the pinned link, or attach and pin.
        let took_egress = if egress_path.exists() {
            let link: FdLink = PinnedLink::from_pin(&egress_path)
                .map_err(link_err("tc egress"))?
                .into();
            let link = SchedClassifierLink::try_from(link).map_err(link_err("tc egress"))?;
            let prog = self.classifier(names::PROG_TC_EGRESS);
            let id = prog.attach_to_link(link).map_err(attach_err("tc egress"))?;
            // The pin keeps the link; this process need not.
            drop(prog.take_link(id).map_err(attach_err("tc egress"))?);
            true
        } else {
            let prog = self.classifier(names::PROG_TC_EGRESS);
            let id = prog
                .attach(iface, TcAttachType::Egress)
                .map_err(attach_err("tc egress"))?;
            let link = prog.take_link(id).map_err(attach_err("tc egress"))?;
            FdLink::try_from(link)
                .map_err(link_err("tc egress (pinning needs TCX, kernel >= 6.6)"))?
                .pin(&egress_path)
                .map_err(|e| pin_err("pinning", &egress_path)(std::io::Error::other(e)))?;
            false
        };

        // Ingress: the pinned link's type decides the program.
        let hook = if ingress_path.exists() {
            let tc = PinnedLink::from_pin(&ingress_path)
                .map(FdLink::from)
                .map_err(link_err("ingress"))
                .and_then(|l| SchedClassifierLink::try_from(l).map_err(link_err("tc ingress")));
            match tc {
                Ok(link) => {
                    let prog = self.classifier(names::PROG_TC_INGRESS);
                    let id = prog
                        .attach_to_link(link)
                        .map_err(attach_err("tc ingress"))?;
                    drop(prog.take_link(id).map_err(attach_err("tc ingress"))?);
                    IngressHook::Tc
                }
                Err(_) => {
                    let link: FdLink = PinnedLink::from_pin(&ingress_path)
                        .map_err(link_err("xdp"))?
                        .into();
                    let link = XdpLink::try_from(link).map_err(link_err("xdp"))?;
                    let prog = self.xdp();
                    let id = prog.attach_to_link(link).map_err(attach_err("xdp"))?;
                    drop(prog.take_link(id).map_err(attach_err("xdp"))?);
                    IngressHook::XdpPinned
                }
            }
        } else {
            let a = self.attach_ingress(iface, mode)?;
            let link: FdLink = match a.0 {
                IngressLink::Tc(id) => {
                    let l = self
                        .classifier(names::PROG_TC_INGRESS)
                        .take_link(id)
                        .map_err(attach_err("tc ingress"))?;
                    FdLink::try_from(l).map_err(link_err("tc ingress"))?
                }
                IngressLink::Xdp(id) => {
                    let l = self.xdp().take_link(id).map_err(attach_err("xdp"))?;
                    FdLink::try_from(l).map_err(link_err("xdp (pinning needs an XDP link)"))?
                }
            };
            link.pin(&ingress_path)
                .map_err(|e| pin_err("pinning", &ingress_path)(std::io::Error::other(e)))?;
            a.1
        };
        log::info!(
            "{} {}: links pinned in {}",
            if took_egress { "took over" } else { "attached" },
            iface,
            dir.root().display()
        );
        let a = Attachment {
            iface: iface.to_string(),
            ifindex,
            ingress: hook,
            tcx: true,
        };
        super::maps::set_audited(&mut self.ebpf, ifindex, true)?;
        self.attachments.push(a.clone());
        Ok(a)
    }

    /// Attaches the ingress program `mode` asks for.
    fn attach_ingress(
        &mut self,
        iface: &str,
        mode: IngressMode,
    ) -> Result<(IngressLink, IngressHook), DatapathError> {
        let attach_err = |hook: &'static str| {
            let iface = iface.to_string();
            move |source| DatapathError::Attach {
                iface,
                hook,
                source,
            }
        };
        let want_xdp = match mode {
            IngressMode::Tc => false,
            IngressMode::Xdp => true,
            IngressMode::Auto => netdev::native_xdp_candidate(iface),
        };
        log::debug!(
            "{iface}: --ingress {} -> {}",
            IngressMode::ALL
                .iter()
                .find(|(m, _)| *m == mode)
                .map_or("?", |(_, n)| n),
            if want_xdp {
                "native XDP first"
            } else {
                "tc ingress"
            }
        );
        if want_xdp {
            let prog = self.xdp();
            match prog.attach(iface, XdpMode::Driver) {
                Ok(id) => return Ok((IngressLink::Xdp(id), IngressHook::XdpNative)),
                Err(e) if mode == IngressMode::Xdp => {
                    log::warn!("native XDP on {iface} failed ({e}); using generic XDP");
                    let id = prog
                        .attach(iface, XdpMode::Skb)
                        .map_err(attach_err("xdp"))?;
                    return Ok((IngressLink::Xdp(id), IngressHook::XdpGeneric));
                }
                Err(e) => log::info!("native XDP on {iface} failed ({e}); using tc ingress"),
            }
        }
        let id = self
            .classifier(names::PROG_TC_INGRESS)
            .attach(iface, TcAttachType::Ingress)
            .map_err(attach_err("tc ingress"))?;
        Ok((IngressLink::Tc(id), IngressHook::Tc))
    }

    fn attach_plain(
        &mut self,
        iface: &str,
        mode: IngressMode,
    ) -> Result<Attachment, DatapathError> {
        let ifindex = ifindex(iface)?;
        let tcx = netdev::tcx_available();
        if !tcx {
            // Netlink attach needs a clsact qdisc; an existing one is fine.
            if let Err(e) = tc::qdisc_add_clsact(iface) {
                log::debug!("clsact on {iface}: {e}");
            }
        }
        let attach_err = |hook: &'static str| {
            let iface = iface.to_string();
            move |source| DatapathError::Attach {
                iface,
                hook,
                source,
            }
        };
        let egress = self
            .classifier(names::PROG_TC_EGRESS)
            .attach(iface, TcAttachType::Egress)
            .map_err(attach_err("tc egress"))?;

        let (ingress, hook) = match self.attach_ingress(iface, mode) {
            Ok(attached) => attached,
            Err(e) => {
                // Nothing left half attached: a retry attaches both again
                // (TCX refuses a program twice on one hook).
                if let Err(d) = self.classifier(names::PROG_TC_EGRESS).detach(egress) {
                    log::warn!(
                        "detaching tc egress from {iface} after a failed ingress attach: {d}"
                    );
                }
                return Err(e);
            }
        };
        self.links.push(Links {
            iface: iface.to_string(),
            ifindex,
            egress,
            ingress,
        });
        let a = Attachment {
            iface: iface.to_string(),
            ifindex,
            ingress: hook,
            tcx,
        };
        super::maps::set_audited(&mut self.ebpf, ifindex, true)?;
        self.attachments.push(a.clone());
        Ok(a)
    }

    /// Detaches every program from every interface. Idempotent.
    pub fn detach_all(&mut self) {
        for l in std::mem::take(&mut self.links) {
            if let Err(e) = self.classifier(names::PROG_TC_EGRESS).detach(l.egress) {
                log::warn!("detaching tc egress from {}: {e}", l.iface);
            }
            let res = match l.ingress {
                IngressLink::Tc(id) => self.classifier(names::PROG_TC_INGRESS).detach(id),
                IngressLink::Xdp(id) => self.xdp().detach(id),
            };
            if let Err(e) = res {
                log::warn!("detaching ingress from {}: {e}", l.iface);
            }
        }
    }

    /// Interfaces attached so far.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Forgets the attachment of the device `ifindex`, which is gone (the
    /// kernel detached its programs with it): releases its links and
    /// clears its audited mark (the index may go to another device).
    pub fn forget(&mut self, ifindex: u32) {
        if self.attachments.iter().any(|a| a.ifindex == ifindex) {
            if let Err(e) = super::maps::set_audited(&mut self.ebpf, ifindex, false) {
                log::warn!("{e}");
            }
        }
        self.attachments.retain(|a| a.ifindex != ifindex);
        let (gone, kept): (Vec<Links>, Vec<Links>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|l| l.ifindex == ifindex);
        self.links = kept;
        for l in gone {
            // The links died with the device; detaching only releases them.
            let _ = self.classifier(names::PROG_TC_EGRESS).detach(l.egress);
            let _ = match l.ingress {
                IngressLink::Tc(id) => self.classifier(names::PROG_TC_INGRESS).detach(id),
                IngressLink::Xdp(id) => self.xdp().detach(id),
            };
        }
    }

    /// Notes that the device `ifindex` is now called `to` (a rename keeps
    /// the index, and the programs stay attached). Under `--pin`, its
    /// pinned links are renamed too, so that an agent started with
    /// `--iface TO` takes them over.
    pub fn renamed(&mut self, ifindex: u32, to: &str) {
        let mut from = None;
        for a in self.attachments.iter_mut().filter(|a| a.ifindex == ifindex) {
            from = Some(std::mem::replace(&mut a.iface, to.to_string()));
        }
        for l in self.links.iter_mut().filter(|l| l.ifindex == ifindex) {
            l.iface = to.to_string();
        }
        let (Some(dir), Some(from)) = (self.pin.as_ref(), from) else {
            return;
        };
        for hook in [LinkHook::Egress, LinkHook::Ingress] {
            let old = dir.link_path(&from, ifindex, hook);
            let new = dir.link_path(to, ifindex, hook);
            if let Err(e) = std::fs::rename(&old, &new) {
                log::warn!(
                    "renaming the pinned link {} to {}: {e}",
                    old.display(),
                    new.display()
                );
            }
        }
    }
}
