//! `cas-audit status`: what a pinned datapath is doing, read from the
//! kernel (the pinned links and maps), whether or not an agent runs.

use std::collections::HashMap;

use aya::{
    maps::{Array, LpmTrie, Map, MapData, PerCpuArray},
    programs::links::{FdLink, PinnedLink},
};
use cas_audit_common::{names, Counter, FlowKey, FlowStats, RangeValue};
use serde::Serialize;

use crate::{
    error::Error,
    pin::{PinDir, PINNED_MAPS},
};

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
    /// The global counters since the datapath was pinned.
    pub counters: HashMap<String, u64>,
}

fn open(dir: &PinDir, name: &str) -> Result<MapData, Error> {
    MapData::from_pin(dir.map_path(name))
        .map_err(|e| Error::io(format!("opening the pinned map {name}"))(std::io::Error::other(e)))
}

fn io(what: &str) -> impl FnOnce(aya::maps::MapError) -> Error + '_ {
    move |e| Error::io(what.to_string())(std::io::Error::other(e))
}

/// Reads the status of the datapath pinned in `dir`.
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
            present: crate::datapath::ifindex(&l.iface).ok() == Some(l.ifindex),
            hook: match l.hook {
                crate::pin::LinkHook::Egress => "egress".into(),
                crate::pin::LinkHook::Ingress => "ingress".into(),
            },
            program: programs.get(&program_id).cloned().unwrap_or_default(),
            iface: l.iface,
            ifindex: l.ifindex,
            link_id,
            program_id,
        });
    }
    let v4: LpmTrie<MapData, [u8; 4], RangeValue> =
        LpmTrie::try_from(Map::LpmTrie(open(dir, names::RANGES_V4)?))
            .map_err(io("reading the IPv4 trie"))?;
    let v6: LpmTrie<MapData, [u8; 16], RangeValue> =
        LpmTrie::try_from(Map::LpmTrie(open(dir, names::RANGES_V6)?))
            .map_err(io("reading the IPv6 trie"))?;
    let flows_map = open(dir, names::FLOWS)?;
    let flow_capacity = flows_map.info().map(|i| i.max_entries()).unwrap_or(0);
    let flows = {
        use std::os::fd::AsFd as _;
        match crate::batch::lookup_all::<FlowKey, FlowStats>(flows_map.fd().as_fd()) {
            Ok(v) => v.len(),
            Err(_) => 0,
        }
    };
    let ring = open(dir, names::EVENTS)?;
    let ring_bytes = ring.info().map(|i| i.max_entries()).unwrap_or(0);
    let counters_map: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(open(dir, names::COUNTERS)?))
            .map_err(io("reading the counters"))?;
    let mut counters = HashMap::new();
    for c in Counter::ALL {
        let v = counters_map
            .get(&(c as u32), 0)
            .map_err(io("reading the counters"))?;
        counters.insert(format!("{c:?}"), v.iter().sum());
    }
    // The prefilter map is opened to check it is readable.
    let _: Array<MapData, u32> = Array::try_from(Map::Array(open(dir, names::PREFILTER)?))
        .map_err(io("reading the prefilter"))?;
    Ok(Status {
        pin_dir: dir.root().display().to_string(),
        layout: PinDir::layout_name(),
        links,
        ranges_v4: v4.keys().filter_map(Result::ok).count(),
        ranges_v6: v6.keys().filter_map(Result::ok).count(),
        flows,
        flow_capacity,
        ring_bytes,
        counters,
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
    out.push_str("counters since pinned:\n");
    for c in Counter::ALL {
        let name = format!("{c:?}");
        out.push_str(&format!(
            "  {:<18} {}\n",
            name,
            s.counters.get(&name).copied().unwrap_or(0)
        ));
    }
    out
}
