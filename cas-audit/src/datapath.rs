//! The kernel datapath: loading the eBPF object, filling its maps, attaching
//! the programs to interfaces and reading back what they counted.

use std::{fmt, net::IpAddr, os::fd::AsFd};

use aya::{
    maps::{
        lpm_trie::Key, Array, HashMap as BpfHashMap, LpmTrie, Map, MapData, MapError, PerCpuArray,
        RingBuf,
    },
    programs::{
        tc::{self, SchedClassifierLinkId, TcAttachType},
        xdp::XdpLinkId,
        ProgramError, SchedClassifier, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use aya_log::EbpfLogger;
use cas_audit_common::{
    family, names, port_bit, prefilter_bit, sizes, Counter, FlowKey, FlowStats, RangeStats,
    RangeValue,
};
use ipnet::IpNet;

use crate::{
    addrset::Range,
    netdev,
    pin::{LinkHook, PinDir, PinError, PINNED_MAPS},
    ports::{AllowedPorts, PortPolicy},
};

/// Errors of the datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The binary was built without its eBPF object.
    #[error("this cas-audit binary was built without its eBPF object (no bpf-linker or nightly rust-src at build time); rebuild with `cargo xtask build`")]
    NoObject,
    /// Loading the object or a program failed.
    #[error("loading the eBPF programs failed: {0}")]
    Load(String),
    /// An interface name that does not exist.
    #[error("unknown interface {0:?}")]
    UnknownInterface(String),
    /// Attaching a program failed.
    #[error("attaching {hook} to {iface} failed: {source}")]
    Attach {
        /// Interface.
        iface: String,
        /// Which hook.
        hook: &'static str,
        /// Why.
        #[source]
        source: ProgramError,
    },
    /// A pinned link could not be taken over or pinned.
    #[error("{hook} link on {iface}: {source}")]
    Link {
        /// Interface name.
        iface: String,
        /// Which hook.
        hook: &'static str,
        /// Why.
        #[source]
        source: aya::programs::links::LinkError,
    },
    /// The pinned state cannot be used.
    #[error(transparent)]
    Pin(#[from] PinError),
    /// A raw BPF syscall failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A map operation failed.
    #[error("{what}: {source}")]
    Map {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: MapError,
    },
    /// More distinct allowed-port sets than the datapath holds.
    #[error(
        "the address set needs {have} distinct allowed-port sets; the datapath holds at most {max}"
    )]
    TooManyPortProfiles {
        /// Port sets needed.
        have: usize,
        /// Capacity.
        max: u32,
    },
    /// More ranges than the tries hold.
    #[error("the address set has {have} {family} prefixes; the datapath holds at most {max}")]
    TooManyRanges {
        /// "IPv4" or "IPv6".
        family: &'static str,
        /// Prefixes in the set.
        have: usize,
        /// Capacity.
        max: u32,
    },
}

fn map_err(what: impl Into<String>) -> impl FnOnce(MapError) -> DatapathError {
    let what = what.into();
    move |source| DatapathError::Map { what, source }
}

/// How ingress packets are observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
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

enum IngressLink {
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
}

struct Links {
    iface: String,
    egress: SchedClassifierLinkId,
    ingress: IngressLink,
}

/// Reader of the kernel programs' log records (aya-log), forwarding them
/// to the agent's logger.
pub type KernelLog = EbpfLogger<&'static dyn log::Log>;

/// Values of the global datapath counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; Counter::COUNT as usize]);

impl Counters {
    /// Value of one counter.
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }
}

/// Whether `iface` is administratively up (`None`: no such interface).
pub fn is_up(iface: &str) -> Option<bool> {
    if iface.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: a datagram socket only used for the ioctl below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: ifreq is plain data; the name fits (checked) with its NUL.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: a valid socket and ifreq.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) };
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return None;
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Some(flags as i32 & libc::IFF_UP != 0)
}

/// Interface index of `iface` in the current network namespace.
pub fn ifindex(iface: &str) -> Result<u32, DatapathError> {
    let name = std::ffi::CString::new(iface)
        .map_err(|_| DatapathError::UnknownInterface(iface.to_string()))?;
    // SAFETY: a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        Err(DatapathError::UnknownInterface(iface.to_string()))
    } else {
        Ok(idx)
    }
}

/// How to load the datapath.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Kernel flow-table size.
    pub max_flows: u32,
    /// Event ring-buffer size in bytes (a power of two, at least a page);
    /// `None`: [`sizes::EVENTS_BYTES`].
    pub ring_bytes: Option<u32>,
    /// Pin maps and links here, and take over a datapath pinned there.
    pub pin: Option<PinDir>,
    /// Name of the address set (recorded in the pinned state).
    pub set_name: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_flows: sizes::MAX_FLOWS,
            ring_bytes: None,
            pin: None,
            set_name: String::new(),
        }
    }
}

/// The loaded eBPF object with its maps filled.
pub struct Datapath {
    ebpf: Ebpf,
    // Kept alive: dropping it closes the log ring buffer and later program
    // loads fail with EBADF.
    logger: Option<KernelLog>,
    links: Vec<Links>,
    attachments: Vec<Attachment>,
    /// The pin directory.
    pin: Option<PinDir>,
    /// Range ids of a taken-over datapath (see [`Datapath::range_ids`]).
    range_ids: Option<Vec<u32>>,
}

impl Datapath {
    /// Loads the embedded object with room for `max_flows` flows, fills the
    /// prefix tries with `ranges` (range id = index) and allows `ports` for
    /// every range.
    pub fn load(
        ranges: &[Range],
        ports: &AllowedPorts,
        max_flows: u32,
    ) -> Result<Datapath, DatapathError> {
        Self::load_object(
            crate::EBPF_OBJECT,
            ranges,
            &PortPolicy::global(ports.clone()),
            max_flows,
        )
    }

    /// Like [`Datapath::load`] with per-range allowed ports.
    pub fn load_with_policy(
        ranges: &[Range],
        policy: &PortPolicy,
        max_flows: u32,
    ) -> Result<Datapath, DatapathError> {
        Self::load_object(crate::EBPF_OBJECT, ranges, policy, max_flows)
    }

    /// Loads an explicit object (tests, benchmarks).
    pub fn load_object(
        object: &[u8],
        ranges: &[Range],
        policy: &PortPolicy,
        max_flows: u32,
    ) -> Result<Datapath, DatapathError> {
        Self::load_with(
            object,
            ranges,
            policy,
            &LoadOptions {
                max_flows,
                ..LoadOptions::default()
            },
        )
    }

    /// Loads `object` as `opts` say. With a pin directory that holds a
    /// pinned datapath for the same ranges and ports, its maps are taken
    /// over (counters keep running) instead of filled.
    pub fn load_with(
        object: &[u8],
        ranges: &[Range],
        policy: &PortPolicy,
        opts: &LoadOptions,
    ) -> Result<Datapath, DatapathError> {
        let max_flows = opts.max_flows;
        if object.is_empty() {
            return Err(DatapathError::NoObject);
        }
        let (v4, v6) = check_capacity(ranges)?;
        let profiles = policy.profiles().len() as u32;
        if profiles > sizes::MAX_PORT_PROFILES {
            return Err(DatapathError::TooManyPortProfiles {
                have: profiles as usize,
                max: sizes::MAX_PORT_PROFILES,
            });
        }
        // Size the range maps to the set (plus headroom for a reload) rather
        // than to the compiled-in maximum: the per-CPU counters cost
        // 32 bytes per range per CPU.
        let room = |n: usize, max: u32| (n as u32).saturating_add(RANGE_HEADROOM).min(max);
        // Kernel log records below the agent's level are not even written.
        let log_level = log::max_level() as u8;
        let resumed = match &opts.pin {
            Some(dir) => dir.prepare()?,
            None => false,
        };
        let ring_bytes = opts.ring_bytes.unwrap_or(sizes::EVENTS_BYTES);
        let mut loader = EbpfLoader::new();
        loader
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .map_max_entries(names::FLOWS, max_flows)
            .map_max_entries(names::EVENTS, ring_bytes)
            .map_max_entries(names::RANGES_V4, room(v4, sizes::MAX_RANGES_V4))
            .map_max_entries(names::RANGES_V6, room(v6, sizes::MAX_RANGES_V6))
            .map_max_entries(names::RANGE_STATS, room(ranges.len(), sizes::MAX_RANGES))
            .map_max_entries(
                names::ALLOWED_PORTS,
                (profiles + PROFILE_HEADROOM).min(sizes::MAX_PORT_PROFILES) * sizes::PORT_WORDS,
            );
        let map_paths: Vec<(&str, std::path::PathBuf)> = match &opts.pin {
            Some(dir) => PINNED_MAPS.iter().map(|n| (*n, dir.map_path(n))).collect(),
            None => Vec::new(),
        };
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(object)
            .map_err(|e| DatapathError::Load(format!("{e:#}")))?;
        let logger = match EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                log::warn!("kernel log messages unavailable: {e}");
                None
            }
        };
        for name in [
            names::PROG_TC_EGRESS,
            names::PROG_TC_INGRESS,
            names::PROG_XDP_INGRESS,
        ] {
            let prog = ebpf
                .program_mut(name)
                .ok_or_else(|| DatapathError::Load(format!("program {name} missing")))?;
            let res = if name == names::PROG_XDP_INGRESS {
                let p: &mut Xdp = prog
                    .try_into()
                    .map_err(|e: ProgramError| DatapathError::Load(e.to_string()))?;
                p.load()
            } else {
                let p: &mut SchedClassifier = prog
                    .try_into()
                    .map_err(|e: ProgramError| DatapathError::Load(e.to_string()))?;
                p.load()
            };
            res.map_err(|e| DatapathError::Load(format!("{name}: {}", verifier_detail(&e))))?;
        }
        let mut dp = Datapath {
            ebpf,
            logger,
            links: Vec::new(),
            attachments: Vec::new(),
            pin: opts.pin.clone(),
            range_ids: None,
        };
        match &opts.pin {
            Some(dir) if resumed => {
                // Range ids index the pinned counters: take the maps over
                // only if they hold exactly these ranges, ids and ports.
                match dp.pinned_ids(ranges, policy)? {
                    Ok(ids) => dp.range_ids = Some(ids),
                    Err(why) => {
                        return Err(PinError::OtherSet {
                            dir: dir.root().to_path_buf(),
                            why,
                        }
                        .into())
                    }
                }
                let cap = dp.map_capacity(names::FLOWS);
                if max_flows != cap {
                    log::warn!(
                        "the pinned flow table holds {cap} flows; --max-flows {max_flows} applies after `cas-audit detach`"
                    );
                }
                log::info!(
                    "took over the pinned datapath in {} ({} ranges of set {}): its counters keep running",
                    dir.root().display(),
                    ranges.len(),
                    opts.set_name
                );
            }
            pin => {
                dp.set_ranges(ranges, policy)?;
                dp.set_prefilters(ranges)?;
                dp.set_allowed_ports(policy)?;
                if let Some(dir) = pin {
                    dir.mark_complete()?;
                    log::info!("pinned the datapath's maps in {}", dir.root().display());
                }
            }
        }
        Ok(dp)
    }

    /// The range id of each of `ranges` in a datapath taken over from a
    /// pin directory (a reload there may have left other ids than the
    /// position in the set); `None` for a datapath loaded afresh, whose ids
    /// are the positions.
    pub fn range_ids(&self) -> Option<&[u32]> {
        self.range_ids.as_deref()
    }

    /// Compares the (pinned) tries and port bitmaps with `ranges` and the
    /// ports `policy` gives them (by position): the pinned id of each range,
    /// or `Ok(Err(reason))` at the first difference.
    fn pinned_ids(
        &self,
        ranges: &[Range],
        policy: &PortPolicy,
    ) -> Result<Result<Vec<u32>, String>, DatapathError> {
        let mut pinned: std::collections::HashMap<String, RangeValue> =
            std::collections::HashMap::new();
        let trie4: LpmTrie<&MapData, [u8; 4], RangeValue> =
            LpmTrie::try_from(self.ebpf.map(names::RANGES_V4).expect("v4 trie"))
                .map_err(map_err("opening the IPv4 trie"))?;
        for item in trie4.iter() {
            let (k, v) = item.map_err(map_err("reading the IPv4 trie"))?;
            let net = ipnet::Ipv4Net::new(k.data().into(), k.prefix_len() as u8)
                .map_err(|e| DatapathError::Load(format!("pinned IPv4 trie: {e}")))?;
            pinned.insert(IpNet::V4(net.trunc()).to_string(), v);
        }
        let trie6: LpmTrie<&MapData, [u8; 16], RangeValue> =
            LpmTrie::try_from(self.ebpf.map(names::RANGES_V6).expect("v6 trie"))
                .map_err(map_err("opening the IPv6 trie"))?;
        for item in trie6.iter() {
            let (k, v) = item.map_err(map_err("reading the IPv6 trie"))?;
            let net = ipnet::Ipv6Net::new(k.data().into(), k.prefix_len() as u8)
                .map_err(|e| DatapathError::Load(format!("pinned IPv6 trie: {e}")))?;
            pinned.insert(IpNet::V6(net.trunc()).to_string(), v);
        }
        if pinned.len() != ranges.len() {
            return Ok(Err(format!(
                "{} ranges pinned, {} wanted",
                pinned.len(),
                ranges.len()
            )));
        }
        let words: Array<&MapData, u32> =
            Array::try_from(self.ebpf.map(names::ALLOWED_PORTS).expect("ports map"))
                .map_err(map_err("opening the allowed ports"))?;
        let mut profile_ports: std::collections::HashMap<u32, Vec<u16>> = Default::default();
        let mut ids = Vec::with_capacity(ranges.len());
        for (id, r) in ranges.iter().enumerate() {
            let key = r.prefix.trunc().to_string();
            let Some(v) = pinned.get(&key) else {
                return Ok(Err(format!("{key} is not pinned")));
            };
            ids.push(v.id);
            if let std::collections::hash_map::Entry::Vacant(e) = profile_ports.entry(v.ports) {
                let mut ports = Vec::new();
                for w in 0..sizes::PORT_WORDS {
                    let word = words
                        .get(&(v.ports * sizes::PORT_WORDS + w), 0)
                        .map_err(map_err("reading the allowed ports"))?;
                    for bit in 0..32 {
                        if word & (1 << bit) != 0 {
                            ports.push((w * 32 + bit) as u16);
                        }
                    }
                }
                e.insert(ports);
            }
            let want: Vec<u16> = policy.for_range(id as u32).iter().collect();
            if profile_ports[&v.ports] != want {
                return Ok(Err(format!(
                    "{key} allows ports {:?} pinned, {want:?} wanted",
                    profile_ports[&v.ports]
                )));
            }
        }
        Ok(Ok(ids))
    }

    /// The pin directory, if the datapath is pinned.
    pub fn pin_dir(&self) -> Option<&PinDir> {
        self.pin.as_ref()
    }

    /// `max_entries` of a map of the object (0 if unknown).
    pub fn map_capacity(&self, name: &str) -> u32 {
        let data = match self.ebpf.map(name) {
            Some(
                Map::LruHashMap(m)
                | Map::HashMap(m)
                | Map::Array(m)
                | Map::PerCpuArray(m)
                | Map::LpmTrie(m)
                | Map::RingBuf(m),
            ) => m,
            _ => return 0,
        };
        data.info().map(|i| i.max_entries()).unwrap_or(0)
    }

    fn set_ranges(&mut self, ranges: &[Range], policy: &PortPolicy) -> Result<(), DatapathError> {
        self.insert_ranges(ranges.iter().enumerate(), policy)
    }

    /// Inserts or updates `(range id, range)` entries in the tries.
    fn insert_ranges<'a>(
        &mut self,
        ranges: impl Iterator<Item = (usize, &'a Range)> + Clone,
        policy: &PortPolicy,
    ) -> Result<(), DatapathError> {
        let value = |id: usize| RangeValue {
            id: id as u32,
            ports: policy.profile_of(id as u32),
        };
        let mut trie4: LpmTrie<&mut MapData, [u8; 4], RangeValue> =
            LpmTrie::try_from(self.ebpf.map_mut(names::RANGES_V4).expect("v4 trie"))
                .map_err(map_err("opening the IPv4 trie"))?;
        for (id, r) in ranges.clone() {
            if let IpNet::V4(n) = r.prefix {
                trie4
                    .insert(
                        &Key::new(n.prefix_len().into(), n.addr().octets()),
                        value(id),
                        0,
                    )
                    .map_err(map_err(format!("inserting {n}")))?;
            }
        }
        let mut trie6: LpmTrie<&mut MapData, [u8; 16], RangeValue> =
            LpmTrie::try_from(self.ebpf.map_mut(names::RANGES_V6).expect("v6 trie"))
                .map_err(map_err("opening the IPv6 trie"))?;
        for (id, r) in ranges {
            if let IpNet::V6(n) = r.prefix {
                trie6
                    .insert(
                        &Key::new(n.prefix_len().into(), n.addr().octets()),
                        value(id),
                        0,
                    )
                    .map_err(map_err(format!("inserting {n}")))?;
            }
        }
        Ok(())
    }

    /// Sets, for each family, the prefilter bit of every top-16-bit value
    /// that some range overlaps.
    fn set_prefilters(&mut self, ranges: &[Range]) -> Result<(), DatapathError> {
        let words = prefilter_words(ranges.iter());
        self.write_words(
            names::PREFILTER,
            words.into_iter().enumerate().map(|(i, w)| (i as u32, w)),
        )
    }

    /// Replaces the audited ranges while the programs run, so that no
    /// range listed before and after is ever unmatched: `ranges` are all
    /// range ids in use (old ones the new set dropped included, so their
    /// counters stay readable), `active[id]` says which of them the new set
    /// lists. Port bitmaps and the prefilter's new bits go in first, then
    /// the tries get the new and changed entries, then dropped prefixes
    /// leave the tries, and last the prefilter loses the bits nothing needs.
    pub fn reload(
        &mut self,
        ranges: &[Range],
        active: &[bool],
        policy: &PortPolicy,
    ) -> Result<(), DatapathError> {
        let stats_cap = self.map_capacity(names::RANGE_STATS) as usize;
        if ranges.len() > stats_cap {
            return Err(DatapathError::TooManyRanges {
                family: "IPv4 and IPv6",
                have: ranges.len(),
                max: stats_cap as u32,
            });
        }
        let profile_cap = (self.map_capacity(names::ALLOWED_PORTS) / sizes::PORT_WORDS) as usize;
        if policy.profiles().len() > profile_cap {
            return Err(DatapathError::TooManyPortProfiles {
                have: policy.profiles().len(),
                max: profile_cap as u32,
            });
        }
        for (fam, name) in [(true, names::RANGES_V4), (false, names::RANGES_V6)] {
            let want = ranges
                .iter()
                .zip(active)
                .filter(|(r, a)| **a && r.prefix.addr().is_ipv4() == fam)
                .count();
            let cap = self.map_capacity(name) as usize;
            if want > cap {
                return Err(DatapathError::TooManyRanges {
                    family: if fam { "IPv4" } else { "IPv6" },
                    have: want,
                    max: cap as u32,
                });
            }
        }
        // Ports: every word of every profile (profiles may have moved).
        let mut words = vec![0u32; policy.profiles().len() * sizes::PORT_WORDS as usize];
        for (profile, ports) in policy.profiles().iter().enumerate() {
            for p in ports.iter() {
                let (w, bit) = port_bit(profile as u32, p);
                words[w as usize] |= bit;
            }
        }
        self.write_words_with(
            names::ALLOWED_PORTS,
            words.into_iter().enumerate().map(|(i, w)| (i as u32, w)),
            true,
        )?;
        // The union of old and new: every id in use.
        self.set_prefilters(ranges)?;
        let live: Vec<(usize, &Range)> = ranges
            .iter()
            .enumerate()
            .filter(|(id, _)| active[*id])
            .collect();
        self.insert_ranges(live.iter().copied(), policy)?;
        let dropped: Vec<&Range> = ranges
            .iter()
            .zip(active)
            .filter(|(_, a)| !**a)
            .map(|(r, _)| r)
            .collect();
        self.remove_prefixes(&dropped)?;
        let words = prefilter_words(live.iter().map(|(_, r)| *r));
        self.write_words_with(
            names::PREFILTER,
            words.into_iter().enumerate().map(|(i, w)| (i as u32, w)),
            true,
        )
    }

    /// Removes prefixes from the tries (absent ones are fine).
    fn remove_prefixes(&mut self, ranges: &[&Range]) -> Result<(), DatapathError> {
        let mut trie4: LpmTrie<&mut MapData, [u8; 4], RangeValue> =
            LpmTrie::try_from(self.ebpf.map_mut(names::RANGES_V4).expect("v4 trie"))
                .map_err(map_err("opening the IPv4 trie"))?;
        for r in ranges {
            if let IpNet::V4(n) = r.prefix {
                match trie4.remove(&Key::new(n.prefix_len().into(), n.addr().octets())) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err(format!("removing {n}"))(e)),
                }
            }
        }
        let mut trie6: LpmTrie<&mut MapData, [u8; 16], RangeValue> =
            LpmTrie::try_from(self.ebpf.map_mut(names::RANGES_V6).expect("v6 trie"))
                .map_err(map_err("opening the IPv6 trie"))?;
        for r in ranges {
            if let IpNet::V6(n) = r.prefix {
                match trie6.remove(&Key::new(n.prefix_len().into(), n.addr().octets())) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err(format!("removing {n}"))(e)),
                }
            }
        }
        Ok(())
    }
}

/// The prefilter words (IPv4 then IPv6) with the bit of every top-16-bit
/// value that one of `ranges` overlaps.
fn prefilter_words<'a>(ranges: impl Iterator<Item = &'a Range>) -> Vec<u32> {
    {
        let mut words = vec![0u32; 2 * sizes::PREFILTER_WORDS as usize];
        for r in ranges {
            let (fam, first, last) = match r.prefix {
                IpNet::V4(n) => (
                    family::V4,
                    u32::from(n.network()) >> 16,
                    u32::from(n.broadcast()) >> 16,
                ),
                IpNet::V6(n) => (
                    family::V6,
                    (u128::from(n.network()) >> 112) as u32,
                    (u128::from(n.broadcast()) >> 112) as u32,
                ),
            };
            for hi in first..=last {
                let (w, bit) = prefilter_bit(fam, hi as u16);
                words[w as usize] |= bit;
            }
        }
        words
    }
}

impl Datapath {
    /// Sets every prefilter bit, so that every packet goes to the trie: the
    /// datapath as it was without the prefilter (for benchmarks).
    pub fn disable_prefilter(&mut self) -> Result<(), DatapathError> {
        self.write_words(
            names::PREFILTER,
            (0..2 * sizes::PREFILTER_WORDS).map(|i| (i, u32::MAX)),
        )
    }

    fn set_allowed_ports(&mut self, policy: &PortPolicy) -> Result<(), DatapathError> {
        let mut words = std::collections::BTreeMap::<u32, u32>::new();
        for (profile, ports) in policy.profiles().iter().enumerate() {
            for p in ports.iter() {
                let (w, bit) = port_bit(profile as u32, p);
                *words.entry(w).or_default() |= bit;
            }
        }
        self.write_words(names::ALLOWED_PORTS, words)
    }

    /// Writes `(index, word)` pairs into the `u32` array map `name`,
    /// skipping zero words (a fresh array is all zeros).
    fn write_words(
        &mut self,
        name: &str,
        words: impl IntoIterator<Item = (u32, u32)>,
    ) -> Result<(), DatapathError> {
        self.write_words_with(name, words, false)
    }

    /// As [`Self::write_words`]; with `zeros`, zero words are written too
    /// (to clear bits of an array in use).
    fn write_words_with(
        &mut self,
        name: &str,
        words: impl IntoIterator<Item = (u32, u32)>,
        zeros: bool,
    ) -> Result<(), DatapathError> {
        let mut arr: Array<&mut MapData, u32> =
            Array::try_from(self.ebpf.map_mut(name).expect("array map in the object"))
                .map_err(map_err(format!("opening {name}")))?;
        for (i, w) in words {
            if w != 0 || zeros {
                arr.set(i, w, 0)
                    .map_err(map_err(format!("writing {name}")))?;
            }
        }
        Ok(())
    }

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

        let (ingress, hook) = self.attach_ingress(iface, mode)?;
        self.links.push(Links {
            iface: iface.to_string(),
            egress,
            ingress,
        });
        let a = Attachment {
            iface: iface.to_string(),
            ifindex,
            ingress: hook,
            tcx,
        };
        self.attachments.push(a.clone());
        Ok(a)
    }

    fn classifier(&mut self, name: &str) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .expect("classifier present and loaded")
    }

    fn xdp(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(names::PROG_XDP_INGRESS)
            .and_then(|p| p.try_into().ok())
            .expect("xdp program present and loaded")
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

    /// Forgets the attachment of `iface`, whose device is gone (the kernel
    /// detached its programs with it).
    pub fn forget(&mut self, iface: &str) {
        self.attachments.retain(|a| a.iface != iface);
        let (gone, kept): (Vec<Links>, Vec<Links>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|l| l.iface == iface);
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

    /// Mutable access to the loaded object (tests run programs through it).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Takes the kernel log reader, to be polled by the caller.
    pub fn take_logger(&mut self) -> Option<KernelLog> {
        self.logger.take()
    }

    /// Takes the event ring buffer out of the object.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or_else(|| DatapathError::Load("event ring buffer missing".into()))?;
        RingBuf::try_from(map).map_err(map_err("opening the event ring buffer"))
    }

    /// Global counters summed over CPUs.
    pub fn counters(&self) -> Result<Counters, DatapathError> {
        let arr: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(names::COUNTERS).expect("counters"))
                .map_err(map_err("opening the counters"))?;
        let mut out = Counters::default();
        for c in Counter::ALL {
            let v = arr
                .get(&(c as u32), 0)
                .map_err(map_err("reading the counters"))?;
            out.0[c as usize] = v.iter().sum();
        }
        Ok(out)
    }

    /// Per-range totals (summed over CPUs) for range ids `0..n`.
    pub fn range_totals(&self, n: usize) -> Result<Vec<RangeStats>, DatapathError> {
        let arr: PerCpuArray<&MapData, RangeStats> =
            PerCpuArray::try_from(self.ebpf.map(names::RANGE_STATS).expect("range stats"))
                .map_err(map_err("opening the range counters"))?;
        (0..n as u32)
            .map(|i| {
                let v = arr
                    .get(&i, 0)
                    .map_err(map_err("reading the range counters"))?;
                Ok(v.iter().fold(RangeStats::default(), |a, s| RangeStats {
                    packets_out: a.packets_out + s.packets_out,
                    bytes_out: a.bytes_out + s.bytes_out,
                    packets_in: a.packets_in + s.packets_in,
                    bytes_in: a.bytes_in + s.bytes_in,
                }))
            })
            .collect()
    }

    /// A snapshot of the flow table. Entries that vanish while iterating
    /// (evicted or removed) are skipped.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowStats)>, DatapathError> {
        let map_data = match self.ebpf.map(names::FLOWS).expect("flows") {
            Map::LruHashMap(m) | Map::HashMap(m) => m,
            _ => {
                return Err(DatapathError::Load(
                    "the flow table is not a hash map".into(),
                ))
            }
        };
        match crate::batch::lookup_all::<FlowKey, FlowStats>(map_data.fd().as_fd()) {
            Ok(v) => return Ok(v),
            Err(crate::batch::BatchError::Unsupported) => {}
            Err(crate::batch::BatchError::Io(e)) => {
                return Err(DatapathError::Io {
                    what: "reading the flow table",
                    source: e,
                })
            }
        }
        // No batch support: one key at a time.
        let map: BpfHashMap<&MapData, FlowKey, FlowStats> =
            BpfHashMap::try_from(self.ebpf.map(names::FLOWS).expect("flows"))
                .map_err(map_err("opening the flow table"))?;
        let keys: Vec<FlowKey> = map.keys().filter_map(Result::ok).collect();
        Ok(keys
            .into_iter()
            .filter_map(|k| map.get(&k, 0).ok().map(|v| (k, v)))
            .collect())
    }

    /// One flow's current state.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowStats> {
        let map: BpfHashMap<&MapData, FlowKey, FlowStats> =
            BpfHashMap::try_from(self.ebpf.map(names::FLOWS)?).ok()?;
        map.get(key, 0).ok()
    }

    /// Removes flows from the kernel table (after they were reported).
    pub fn remove_flows(&mut self, keys: &[FlowKey]) -> Result<(), DatapathError> {
        let mut map: BpfHashMap<&mut MapData, FlowKey, FlowStats> =
            BpfHashMap::try_from(self.ebpf.map_mut(names::FLOWS).expect("flows"))
                .map_err(map_err("opening the flow table"))?;
        for k in keys {
            match map.remove(k) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("removing a flow")(e)),
            }
        }
        Ok(())
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Range ids reserved beyond the loaded set's size.
const RANGE_HEADROOM: u32 = 1024;

/// Port profiles reserved beyond the loaded set's (8 KiB each), for a reload.
const PROFILE_HEADROOM: u32 = 8;

/// IPv4 and IPv6 range counts, checked against the tries' capacity.
fn check_capacity(ranges: &[Range]) -> Result<(usize, usize), DatapathError> {
    let v4 = ranges.iter().filter(|r| r.prefix.addr().is_ipv4()).count();
    let v6 = ranges.len() - v4;
    if v4 > sizes::MAX_RANGES_V4 as usize {
        return Err(DatapathError::TooManyRanges {
            family: "IPv4",
            have: v4,
            max: sizes::MAX_RANGES_V4,
        });
    }
    if v6 > sizes::MAX_RANGES_V6 as usize {
        return Err(DatapathError::TooManyRanges {
            family: "IPv6",
            have: v6,
            max: sizes::MAX_RANGES_V6,
        });
    }
    Ok((v4, v6))
}

/// The verifier log's last lines when a program is rejected, else the error.
fn verifier_detail(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError { verifier_log, .. } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{e}\n{}", tail.join("\n"))
        }
        other => other.to_string(),
    }
}

/// Formats a kernel address (family, 16 bytes) as an [`IpAddr`].
pub fn addr_of(family: u8, bytes: &[u8; 16]) -> IpAddr {
    if family == cas_audit_common::family::V4 {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        IpAddr::from(*bytes)
    }
}
