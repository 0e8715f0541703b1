//! The kernel datapath: loading the eBPF object, filling its maps,
//! attaching the programs to interfaces and reading back what they counted.
//!
//! - this module: [`Datapath`] (load, take over a pinned one, reload) and
//!   its error type;
//! - [`maps`]: typed access to every map, for `run`, `status` and `detach` alike;
//! - [`attach`]: TCX / TC / XDP attach and detach, pinned or not;
//! - [`pin`]: the pin directory; [`events`]: the event ring's reader thread.
//!
//! Minimum kernel: 5.8 (BPF ring buffer, CAP_BPF); TCX and pinned links
//! need 6.6.

pub mod attach;
pub mod events;
pub mod maps;
pub mod pin;

use aya::{
    maps::{MapData, MapError, RingBuf},
    programs::{ProgramError, SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
use aya_log::EbpfLogger;
use cas_audit_common::{names, sizes, Counters, FlowKey, FlowStats, RangeStats};

use self::{attach::Links, maps::map_err};
pub use self::{
    attach::{Attachment, IngressHook, IngressMode},
    maps::{MapSource, PinnedMaps, PINNED_MAPS},
    pin::{PinDir, PinError, Prepared},
};
use crate::{addrset::Range, flow::PortPolicy};

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
    #[error(transparent)]
    UnknownInterface(#[from] crate::host::netdev::UnknownInterface),
    /// Another cas-audit (an agent, or a datapath pinned by `run --pin`)
    /// already has its programs on the interface: a second one would count
    /// every packet twice.
    #[error("{iface} is already watched by cas-audit ({programs}): stop the other agent first; a datapath pinned by `run --pin` is taken over with `run --pin DIR` or removed with `cas-audit detach --pin DIR`")]
    AlreadyWatched {
        /// Interface name.
        iface: String,
        /// The programs found there (`program 12 cas_tc_egress, ...`).
        programs: String,
    },
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

/// Reader of the kernel programs' log records (aya-log), forwarding them
/// to the agent's logger.
pub type KernelLog = EbpfLogger<&'static dyn log::Log>;

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
    /// Range ids (and trie entries) reserved for learned addresses, at the
    /// top of the range counters ([`Datapath::learned_base`]); 0: none.
    pub learned: u32,
    /// Whether the programs hand DNS responses and ClientHellos over on the
    /// payload ring ([`names::HANDOFF`]).
    pub handoff: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_flows: sizes::MAX_FLOWS,
            ring_bytes: None,
            pin: None,
            set_name: String::new(),
            learned: 0,
            handoff: false,
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
    /// A pin directory this start filled afresh, and whether it created the
    /// directory itself: what [`Datapath::abandon`] undoes.
    fresh_pin: Option<bool>,
    /// Range ids reserved for learned addresses (the top of the counters).
    learned: u32,
}

impl Datapath {
    /// Loads the embedded object with room for `max_flows` flows, fills the
    /// prefix tries with `ranges` (range id = index) and allows `ports` for
    /// every range.
    pub fn load(
        ranges: &[Range],
        ports: &crate::flow::AllowedPorts,
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
    ///
    /// A fresh pin directory is left as it was found when loading fails.
    pub fn load_with(
        object: &[u8],
        ranges: &[Range],
        policy: &PortPolicy,
        opts: &LoadOptions,
    ) -> Result<Datapath, DatapathError> {
        if object.is_empty() {
            return Err(DatapathError::NoObject);
        }
        let prepared = match &opts.pin {
            Some(dir) => Some(dir.prepare()?),
            None => None,
        };
        let resumed = prepared == Some(Prepared::Resumed);
        let loaded = Self::load_prepared(object, ranges, policy, opts, resumed);
        match (loaded, &opts.pin, prepared) {
            (Err(e), Some(dir), Some(Prepared::Fresh { made_root })) => {
                dir.discard(made_root);
                Err(e)
            }
            (Ok(mut dp), _, Some(Prepared::Fresh { made_root })) => {
                dp.fresh_pin = Some(made_root);
                Ok(dp)
            }
            (loaded, ..) => loaded,
        }
    }

    /// Undoes a start that was refused after loading: detaches what was
    /// attached and, for a pin directory this start filled, removes what it
    /// pinned (a datapath taken over is left to the next agent).
    pub fn abandon(&mut self) {
        self.detach_all();
        if let (Some(dir), Some(made_root)) = (&self.pin, self.fresh_pin) {
            dir.discard(made_root);
        }
    }

    /// [`Datapath::load_with`] once the pin directory (if any) is ready.
    fn load_prepared(
        object: &[u8],
        ranges: &[Range],
        policy: &PortPolicy,
        opts: &LoadOptions,
        resumed: bool,
    ) -> Result<Datapath, DatapathError> {
        let max_flows = opts.max_flows;
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
        let room = |n: usize, max: u32| {
            (n as u32)
                .saturating_add(RANGE_HEADROOM)
                .saturating_add(opts.learned)
                .min(max)
        };
        // Kernel log records below the agent's level are not even written.
        let log_level = log::max_level() as u8;
        let ring_bytes = opts.ring_bytes.unwrap_or(sizes::EVENTS_BYTES);
        log::debug!(
            "loading the datapath: {v4} IPv4 and {v6} IPv6 ranges, {profiles} port sets, flow table {max_flows}, event ring {ring_bytes} bytes, kernel log level {log_level}{}",
            if resumed { ", taking over the pinned maps" } else { "" }
        );
        let handoff = u8::from(opts.handoff);
        let mut loader = EbpfLoader::new();
        loader
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .override_global(names::HANDOFF, &handoff, true)
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
            fresh_pin: None,
            learned: 0,
        };
        // The learned block: the top ids of the counters (a pinned array
        // keeps its size, so the block may be smaller than asked).
        let cap = dp.map_capacity(names::RANGE_STATS);
        dp.learned = opts
            .learned
            .min(cap.saturating_sub(ranges.len() as u32 + RANGE_HEADROOM));
        if dp.learned < opts.learned {
            log::warn!(
                "room for {} learned addresses, not {} (the range counters hold {cap})",
                dp.learned,
                opts.learned
            );
        }
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
                maps::insert_ranges(&mut dp.ebpf, ranges.iter().enumerate(), policy)?;
                let words = maps::prefilter_words(ranges.iter());
                maps::write_words(&mut dp.ebpf, names::PREFILTER, indexed(words), false)?;
                let words = maps::port_words(policy);
                maps::write_words(&mut dp.ebpf, names::ALLOWED_PORTS, indexed(words), false)?;
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
        &mut self,
        ranges: &[Range],
        policy: &PortPolicy,
    ) -> Result<Result<Vec<u32>, String>, DatapathError> {
        let pinned: std::collections::HashMap<ipnet::IpNet, cas_audit_common::RangeValue> =
            maps::tries(&self.ebpf)?.into_iter().collect();
        if pinned.len() < ranges.len() {
            return Ok(Err(format!(
                "{} ranges pinned, {} wanted",
                pinned.len(),
                ranges.len()
            )));
        }
        let mut profile_ports: std::collections::HashMap<u32, Vec<u16>> = Default::default();
        let mut ids = Vec::with_capacity(ranges.len());
        for (id, r) in ranges.iter().enumerate() {
            let key = r.prefix.trunc();
            let Some(v) = pinned.get(&key) else {
                return Ok(Err(format!("{key} is not pinned")));
            };
            ids.push(v.id);
            if let std::collections::hash_map::Entry::Vacant(e) = profile_ports.entry(v.ports) {
                e.insert(maps::profile_ports(&self.ebpf, v.ports)?);
            }
            let want: Vec<u16> = policy.for_range(id as u32).iter().collect();
            if profile_ports[&v.ports] != want {
                return Ok(Err(format!(
                    "{key} allows ports {:?} pinned, {want:?} wanted",
                    profile_ports[&v.ports]
                )));
            }
        }
        // Entries beyond the set's in the learned block (the top range
        // ids) are addresses an agent that died had learned: they go, as
        // they would have at its exit. Any other entry beyond the set's is
        // a range of another selection (a reload takes dropped ranges out).
        let wanted: std::collections::HashSet<ipnet::IpNet> =
            ranges.iter().map(|r| r.prefix.trunc()).collect();
        let base = self.learned_base();
        let mut stale = Vec::new();
        for (p, v) in pinned.iter().filter(|(p, _)| !wanted.contains(*p)) {
            if v.id < base {
                return Ok(Err(format!("{p} is pinned, not wanted")));
            }
            stale.push(Range {
                prefix: *p,
                ..Range::placeholder()
            });
        }
        if !stale.is_empty() {
            log::info!(
                "removing {} learned addresses left in the pinned tries",
                stale.len()
            );
            let refs: Vec<&Range> = stale.iter().collect();
            maps::remove_prefixes(&mut self.ebpf, &refs)?;
            let words = maps::prefilter_words(ranges.iter());
            maps::write_words(&mut self.ebpf, names::PREFILTER, indexed(words), true)?;
        }
        Ok(Ok(ids))
    }

    /// The pin directory, if the datapath is pinned.
    pub fn pin_dir(&self) -> Option<&PinDir> {
        self.pin.as_ref()
    }

    /// `max_entries` of a map of the object (0 if unknown).
    pub fn map_capacity(&self, name: &str) -> u32 {
        maps::capacity(&self.ebpf, name)
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
        learned: &[(u32, &Range)],
    ) -> Result<(), DatapathError> {
        let stats_cap = self.learned_base() as usize;
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
        let words = maps::port_words(policy);
        maps::write_words(&mut self.ebpf, names::ALLOWED_PORTS, indexed(words), true)?;
        // The union of old and new: every id in use.
        let words = maps::prefilter_words(ranges.iter());
        maps::write_words(&mut self.ebpf, names::PREFILTER, indexed(words), false)?;
        // Learned addresses stay, under the profile numbers of the new policy.
        let live: Vec<(usize, &Range)> = ranges
            .iter()
            .enumerate()
            .filter(|(id, _)| active[*id])
            .chain(learned.iter().map(|(id, r)| (*id as usize, *r)))
            .collect();
        maps::insert_ranges(&mut self.ebpf, live.iter().copied(), policy)?;
        let dropped: Vec<&Range> = ranges
            .iter()
            .zip(active)
            .filter(|(_, a)| !**a)
            .map(|(r, _)| r)
            .collect();
        maps::remove_prefixes(&mut self.ebpf, &dropped)?;
        let words = maps::prefilter_words(live.iter().map(|(_, r)| *r));
        maps::write_words(&mut self.ebpf, names::PREFILTER, indexed(words), true)
    }

    /// Range id of the first learned address: the top
    /// [`Datapath::learned_capacity`] ids of the range counters.
    pub fn learned_base(&self) -> u32 {
        self.map_capacity(names::RANGE_STATS) - self.learned
    }

    /// Range ids (and trie entries) reserved for learned addresses.
    pub fn learned_capacity(&self) -> u32 {
        self.learned
    }

    /// Puts a learned range into the tries under `id` (a learned id), with
    /// the port profile `policy` gives it: a `new_profile`'s bitmap first,
    /// then the prefilter bit, then the trie entry, so that no packet sees
    /// the entry without its ports.
    pub fn learn_insert(
        &mut self,
        id: u32,
        range: &Range,
        policy: &PortPolicy,
        new_profile: bool,
    ) -> Result<(), DatapathError> {
        if new_profile {
            let profile = policy.profile_of(id);
            let words = maps::port_words(policy);
            let per = sizes::PORT_WORDS as usize;
            let start = profile as usize * per;
            let cap = self.map_capacity(names::ALLOWED_PORTS) as usize;
            if start + per > cap {
                return Err(DatapathError::TooManyPortProfiles {
                    have: profile as usize + 1,
                    max: (cap / per) as u32,
                });
            }
            maps::write_words(
                &mut self.ebpf,
                names::ALLOWED_PORTS,
                (start..start + per).map(|i| (i as u32, words[i])),
                true,
            )?;
        }
        maps::set_prefilter(&mut self.ebpf, range)?;
        maps::insert_ranges(
            &mut self.ebpf,
            std::iter::once((id as usize, range)),
            policy,
        )
    }

    /// Takes learned ranges out of the tries, then clears the prefilter
    /// bits that none of `keep` (every range still in the tries) needs.
    pub fn learn_remove<'a>(
        &mut self,
        gone: &[&Range],
        keep: impl Iterator<Item = &'a Range>,
    ) -> Result<(), DatapathError> {
        maps::remove_prefixes(&mut self.ebpf, gone)?;
        let words = maps::prefilter_words(keep);
        let touched: std::collections::BTreeSet<u32> = gone
            .iter()
            .map(|r| maps::prefilter_word(&r.prefix))
            .collect();
        maps::write_words(
            &mut self.ebpf,
            names::PREFILTER,
            touched.into_iter().map(|w| (w, words[w as usize])),
            true,
        )
    }

    /// The range id of the tries' range holding `addr` (listed or learned).
    pub fn range_id_of(&self, addr: std::net::IpAddr) -> Option<u32> {
        maps::lookup(&self.ebpf, addr).map(|v| v.id)
    }

    /// One range's totals (summed over CPUs).
    pub fn range_total(&self, id: u32) -> Result<RangeStats, DatapathError> {
        maps::range_total(&self.ebpf, id)
    }

    /// Takes the payload ring (DNS responses, ClientHellos) out of the object.
    pub fn take_payloads(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        let map = self
            .ebpf
            .take_map(names::PAYLOADS)
            .ok_or_else(|| DatapathError::Load("payload ring buffer missing".into()))?;
        RingBuf::try_from(map).map_err(map_err("opening the payload ring buffer"))
    }

    /// Sets every prefilter bit, so that every packet goes to the trie: the
    /// datapath as it was without the prefilter (for benchmarks).
    pub fn disable_prefilter(&mut self) -> Result<(), DatapathError> {
        maps::write_words(
            &mut self.ebpf,
            names::PREFILTER,
            (0..2 * sizes::PREFILTER_WORDS).map(|i| (i, u32::MAX)),
            false,
        )
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
        maps::counters(&self.ebpf)
    }

    /// Per-range totals (summed over CPUs) for range ids `0..n`.
    pub fn range_totals(&self, n: usize) -> Result<Vec<RangeStats>, DatapathError> {
        maps::range_totals(&self.ebpf, n)
    }

    /// A snapshot of the flow table.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowStats)>, DatapathError> {
        maps::flows(&self.ebpf)
    }

    /// One flow's current state.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowStats> {
        maps::flow(&self.ebpf, key)
    }

    /// Removes flows from the kernel table (after they were reported).
    pub fn remove_flows(&mut self, keys: &[FlowKey]) -> Result<(), DatapathError> {
        maps::remove_flows(&mut self.ebpf, keys)
    }

    pub(super) fn classifier(&mut self, name: &str) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .expect("classifier present and loaded")
    }

    pub(super) fn xdp(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(names::PROG_XDP_INGRESS)
            .and_then(|p| p.try_into().ok())
            .expect("xdp program present and loaded")
    }
}

/// `(index, word)` pairs of a word vector.
fn indexed(words: Vec<u32>) -> impl Iterator<Item = (u32, u32)> {
    words.into_iter().enumerate().map(|(i, w)| (i as u32, w))
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
