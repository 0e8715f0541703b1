//! `cas-audit status`: what a pinned datapath is doing, read from the
//! kernel (the pinned links and maps), whether or not an agent runs.

use std::{collections::HashMap, path::PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use cas_audit_common::{names, Counters};
use serde::Serialize;

use super::{print, print_text, Outcome};
use crate::{
    datapath::{maps, PinDir, PinnedMaps, PINNED_MAPS},
    error::Error,
    host::netdev,
};

/// What `status` needs.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// The pin directory.
    pub pin: PathBuf,
    /// One JSON document instead of text.
    pub json: bool,
}

/// `cas-audit status`.
///
/// # Errors
/// See [`status`]; writing to standard output.
pub fn run(cfg: StatusConfig) -> Result<Outcome, Error> {
    let s = status(&PinDir::new(&cfg.pin))?;
    if cfg.json {
        print(&(serde_json::to_string(&s).expect("serialisable") + "\n"))?;
    } else {
        print_text(&text(&s))?;
    }
    Ok(Outcome::Success)
}

/// One pinned link.
#[derive(Debug, Clone, Serialize)]
pub struct LinkStatus {
    /// Interface name.
    pub iface: String,
    /// Its index when the link was made.
    pub ifindex: u32,
    /// `egress` or `ingress`.
    pub hook: String,
    /// Kernel link id.
    pub link_id: u32,
    /// Program id and name behind the link.
    pub program_id: u32,
    /// The program's name.
    pub program: String,
    /// Whether an interface of that name with that index exists now.
    pub present: bool,
}

/// The status of a pinned datapath.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The pin directory.
    pub pin_dir: String,
    /// The layout marker.
    pub layout: String,
    /// Pinned links.
    pub links: Vec<LinkStatus>,
    /// Ranges in the tries (IPv4, IPv6).
    pub ranges_v4: usize,
    /// IPv6 ranges.
    pub ranges_v6: usize,
    /// Flows in the table.
    pub flows: usize,
    /// Its capacity.
    pub flow_capacity: u32,
    /// Event ring-buffer size in bytes.
    pub ring_bytes: u32,
    /// The global counters since the datapath was pinned, by their names.
    pub counters: Counters,
    /// Whether a swap of the ranges is journaled in the pin directory: an
    /// agent is reloading now, or was stopped in the middle of a reload
    /// (the tries may hold part of each version until the next start,
    /// which converges them to its set).
    pub reload_unfinished: bool,
}

/// Reads the status of the datapath pinned in `dir`.
///
/// # Errors
/// [`Error::Usage`] when nothing (or only part of a datapath) is pinned
/// there; map errors.
pub fn status(dir: &PinDir) -> Result<Status, Error> {
    if !dir.exists() {
        return Err(Error::Usage(format!(
            "nothing is pinned in {} (run the agent with --pin {})",
            dir.root().display(),
            dir.root().display()
        )));
    }
    for name in PINNED_MAPS {
        if !dir.map_path(name).exists() {
            return Err(Error::Usage(format!(
                "the pinned state in {} is incomplete: map {name} missing",
                dir.root().display()
            )));
        }
    }
    let programs: HashMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_string()))
        .collect();
    let mut links = Vec::new();
    for l in dir.links() {
        let (link_id, program_id) = match PinnedLink::from_pin(&l.path) {
            Ok(p) => {
                let fd: FdLink = p.into();
                match fd.info() {
                    Ok(i) => (i.id(), i.program_id()),
                    Err(_) => (0, 0),
                }
            }
            Err(_) => (0, 0),
        };
        links.push(LinkStatus {
            present: netdev::ifindex(&l.iface).ok() == Some(l.ifindex),
            hook: l.hook.as_str().to_string(),
            program: programs.get(&program_id).cloned().unwrap_or_default(),
            iface: l.iface,
            ifindex: l.ifindex,
            link_id,
            program_id,
        });
    }
    let pinned = PinnedMaps::open(dir)?;
    let tries = maps::tries(&pinned)?;
    let v4 = tries.iter().filter(|(n, _)| n.addr().is_ipv4()).count();
    Ok(Status {
        pin_dir: dir.root().display().to_string(),
        layout: PinDir::layout_name(),
        links,
        ranges_v4: v4,
        ranges_v6: tries.len() - v4,
        flows: maps::flows(&pinned)?.len(),
        flow_capacity: maps::capacity(&pinned, names::FLOWS),
        ring_bytes: maps::capacity(&pinned, names::EVENTS),
        counters: maps::counters(&pinned)?,
        reload_unfinished: dir.interrupted().is_some(),
    })
}

/// The readable status.
pub fn text(s: &Status) -> String {
    let mut out = format!("pinned datapath in {} ({})\n", s.pin_dir, s.layout);
    for l in &s.links {
        out.push_str(&format!(
            "  {:<12} {:<8} link {:<6} program {} ({}){}\n",
            l.iface,
            l.hook,
            l.link_id,
            l.program_id,
            l.program,
            if l.present {
                String::new()
            } else {
                format!("; ifindex {} is gone", l.ifindex)
            }
        ));
    }
    out.push_str(&format!(
        "ranges: {} IPv4, {} IPv6\nflow table: {} of {} ({:.1} %)\nevent ring: {} bytes\n",
        s.ranges_v4,
        s.ranges_v6,
        s.flows,
        s.flow_capacity,
        if s.flow_capacity > 0 {
            100.0 * s.flows as f64 / s.flow_capacity as f64
        } else {
            0.0
        },
        s.ring_bytes
    ));
    if s.reload_unfinished {
        out.push_str("reload: unfinished (an agent is reloading, or was stopped in the middle: the next start converges the tries to its set)\n");
    }
    out.push_str("counters since pinned:\n");
    for (c, v) in s.counters.iter() {
        out.push_str(&format!("  {:<18} {v}\n", c.name()));
    }
    out
}
