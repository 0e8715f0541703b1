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
}

impl fmt::Display for IngressHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IngressHook::XdpNative => "xdp (native)",
            IngressHook::XdpGeneric => "xdp (generic)",
            IngressHook::Tc => "tc ingress",
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

/// The loaded eBPF object with its maps filled.
pub struct Datapath {
    ebpf: Ebpf,
    // Kept alive: dropping it closes the log ring buffer and later program
    // loads fail with EBADF.
    logger: Option<KernelLog>,
    links: Vec<Links>,
    attachments: Vec<Attachment>,
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
        let mut ebpf = EbpfLoader::new()
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .map_max_entries(names::FLOWS, max_flows)
            .map_max_entries(names::RANGES_V4, room(v4, sizes::MAX_RANGES_V4))
            .map_max_entries(names::RANGES_V6, room(v6, sizes::MAX_RANGES_V6))
            .map_max_entries(names::RANGE_STATS, room(ranges.len(), sizes::MAX_RANGES))
            .map_max_entries(names::ALLOWED_PORTS, profiles * sizes::PORT_WORDS)
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
        };
        dp.set_ranges(ranges, policy)?;
        dp.set_prefilters(ranges)?;
        dp.set_allowed_ports(policy)?;
        Ok(dp)
    }

    fn set_ranges(&mut self, ranges: &[Range], policy: &PortPolicy) -> Result<(), DatapathError> {
        let value = |id: usize| RangeValue {
            id: id as u32,
            ports: policy.profile_of(id as u32),
        };
        let mut trie4: LpmTrie<&mut MapData, [u8; 4], RangeValue> =
            LpmTrie::try_from(self.ebpf.map_mut(names::RANGES_V4).expect("v4 trie"))
                .map_err(map_err("opening the IPv4 trie"))?;
        for (id, r) in ranges.iter().enumerate() {
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
        for (id, r) in ranges.iter().enumerate() {
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
        self.write_words(
            names::PREFILTER,
            words.into_iter().enumerate().map(|(i, w)| (i as u32, w)),
        )
    }

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
        let mut arr: Array<&mut MapData, u32> =
            Array::try_from(self.ebpf.map_mut(name).expect("array map in the object"))
                .map_err(map_err(format!("opening {name}")))?;
        for (i, w) in words {
            if w != 0 {
                arr.set(i, w, 0)
                    .map_err(map_err(format!("writing {name}")))?;
            }
        }
        Ok(())
    }

    /// Attaches the egress classifier and an ingress hook to `iface`.
    pub fn attach(&mut self, iface: &str, mode: IngressMode) -> Result<Attachment, DatapathError> {
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

        let want_xdp = match mode {
            IngressMode::Tc => false,
            IngressMode::Xdp => true,
            IngressMode::Auto => netdev::native_xdp_candidate(iface),
        };
        let mut ingress = None;
        if want_xdp {
            let prog = self.xdp();
            match prog.attach(iface, XdpMode::Driver) {
                Ok(id) => ingress = Some((IngressLink::Xdp(id), IngressHook::XdpNative)),
                Err(e) if mode == IngressMode::Xdp => {
                    log::warn!("native XDP on {iface} failed ({e}); using generic XDP");
                    let id = prog
                        .attach(iface, XdpMode::Skb)
                        .map_err(attach_err("xdp"))?;
                    ingress = Some((IngressLink::Xdp(id), IngressHook::XdpGeneric));
                }
                Err(e) => log::info!("native XDP on {iface} failed ({e}); using tc ingress"),
            }
        }
        let (ingress, hook) = match ingress {
            Some(i) => i,
            None => {
                let id = self
                    .classifier(names::PROG_TC_INGRESS)
                    .attach(iface, TcAttachType::Ingress)
                    .map_err(attach_err("tc ingress"))?;
                (IngressLink::Tc(id), IngressHook::Tc)
            }
        };
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
