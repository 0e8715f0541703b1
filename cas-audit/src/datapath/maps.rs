//! Typed access to every map of the datapath: the one place that reads and
//! writes them, whether they belong to a loaded object ([`aya::Ebpf`], the
//! running agent) or are opened from their pins ([`PinnedMaps`], `status`
//! without an agent). Names and encodings come from `cas_audit_common`.

use std::{collections::HashMap, os::fd::AsFd};

use aya::{
    maps::{
        lpm_trie::Key, Array, HashMap as BpfHashMap, LpmTrie, Map, MapData, MapError, PerCpuArray,
    },
    Ebpf,
};
use cas_audit_common::{
    family, names, port_bit, prefilter_bit, sizes, Counter, Counters, FlowKey, FlowStats,
    RangeStats, RangeValue,
};
use ipnet::IpNet;

use super::{pin::PinDir, DatapathError};
use crate::{addrset::Range, flow::PortPolicy, host::bpf};

/// Where the maps come from.
pub trait MapSource {
    /// The map called `name`, if the source has it.
    fn map(&self, name: &str) -> Option<&Map>;
}

impl MapSource for Ebpf {
    fn map(&self, name: &str) -> Option<&Map> {
        Ebpf::map(self, name)
    }
}

/// The data maps of a pinned datapath, opened from their pins.
pub struct PinnedMaps {
    maps: HashMap<&'static str, Map>,
}

impl MapSource for PinnedMaps {
    fn map(&self, name: &str) -> Option<&Map> {
        self.maps.get(name)
    }
}

/// The maps whose contents outlive the agent (pinned with `--pin`).
pub const PINNED_MAPS: [&str; 9] = [
    names::RANGES_V4,
    names::RANGES_V6,
    names::RANGE_STATS,
    names::FLOWS,
    names::ALLOWED_PORTS,
    names::EVENTS,
    names::COUNTERS,
    names::PREFILTER,
    names::IFACES,
];

impl PinnedMaps {
    /// Opens every map pinned in `dir`.
    ///
    /// # Errors
    /// [`DatapathError::Map`] naming a map that is missing or cannot be opened.
    pub fn open(dir: &PinDir) -> Result<PinnedMaps, DatapathError> {
        let mut maps = HashMap::new();
        for name in PINNED_MAPS {
            let data = MapData::from_pin(dir.map_path(name))
                .map_err(map_err(format!("opening the pinned map {name}")))?;
            let map = match name {
                names::RANGES_V4 | names::RANGES_V6 => Map::LpmTrie(data),
                names::RANGE_STATS | names::COUNTERS => Map::PerCpuArray(data),
                names::FLOWS => Map::LruHashMap(data),
                names::IFACES => Map::HashMap(data),
                names::EVENTS => Map::RingBuf(data),
                _ => Map::Array(data),
            };
            maps.insert(name, map);
        }
        Ok(PinnedMaps { maps })
    }
}

/// Wraps a map error with what was being done.
pub(super) fn map_err(what: impl Into<String>) -> impl FnOnce(MapError) -> DatapathError {
    let what = what.into();
    move |source| DatapathError::Map { what, source }
}

fn get<'a>(src: &'a impl MapSource, name: &str) -> Result<&'a Map, DatapathError> {
    src.map(name)
        .ok_or_else(|| DatapathError::Load(format!("map {name} missing")))
}

/// `max_entries` of map `name` (0 if unknown); bytes for the ring buffer.
pub fn capacity(src: &impl MapSource, name: &str) -> u32 {
    let data = match src.map(name) {
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

/// The global counters, summed over CPUs.
pub fn counters(src: &impl MapSource) -> Result<Counters, DatapathError> {
    let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(get(src, names::COUNTERS)?)
        .map_err(map_err("opening the counters"))?;
    let mut out = Counters::default();
    for c in Counter::ALL {
        let v = arr
            .get(&(c as u32), 0)
            .map_err(map_err("reading the counters"))?;
        out.set(c, v.iter().fold(0u64, |a, x| a.saturating_add(*x)));
    }
    Ok(out)
}

/// One range's totals (summed over CPUs).
pub fn range_total(src: &impl MapSource, id: u32) -> Result<RangeStats, DatapathError> {
    Ok(range_totals_of(src, [id])?.remove(0))
}

/// What the tries say of `addr`: its range (longest match), if any.
pub fn lookup(src: &impl MapSource, addr: std::net::IpAddr) -> Option<RangeValue> {
    match addr {
        std::net::IpAddr::V4(a) => {
            let t: LpmTrie<&MapData, [u8; 4], RangeValue> =
                LpmTrie::try_from(src.map(names::RANGES_V4)?).ok()?;
            t.get(&Key::new(32, a.octets()), 0).ok()
        }
        std::net::IpAddr::V6(a) => {
            let t: LpmTrie<&MapData, [u8; 16], RangeValue> =
                LpmTrie::try_from(src.map(names::RANGES_V6)?).ok()?;
            t.get(&Key::new(128, a.octets()), 0).ok()
        }
    }
}

/// Per-range totals (summed over CPUs) for range ids `0..n`.
pub fn range_totals(src: &impl MapSource, n: usize) -> Result<Vec<RangeStats>, DatapathError> {
    range_totals_of(src, 0..n as u32)
}

/// The totals (summed over CPUs) of range ids `ids`.
fn range_totals_of(
    src: &impl MapSource,
    ids: impl IntoIterator<Item = u32>,
) -> Result<Vec<RangeStats>, DatapathError> {
    let arr: PerCpuArray<&MapData, RangeStats> =
        PerCpuArray::try_from(get(src, names::RANGE_STATS)?)
            .map_err(map_err("opening the range counters"))?;
    ids.into_iter()
        .map(|i| {
            let v = arr
                .get(&i, 0)
                .map_err(map_err("reading the range counters"))?;
            Ok(v.iter().fold(RangeStats::default(), |a, s| RangeStats {
                packets_out: a.packets_out.saturating_add(s.packets_out),
                bytes_out: a.bytes_out.saturating_add(s.bytes_out),
                packets_in: a.packets_in.saturating_add(s.packets_in),
                bytes_in: a.bytes_in.saturating_add(s.bytes_in),
            }))
        })
        .collect()
}

/// A snapshot of the flow table, read with `BPF_MAP_LOOKUP_BATCH` (one key
/// at a time where the kernel lacks it). Entries that vanish while reading
/// (evicted or removed) are skipped.
pub fn flows(src: &impl MapSource) -> Result<Vec<(FlowKey, FlowStats)>, DatapathError> {
    let map = get(src, names::FLOWS)?;
    let data = match map {
        Map::LruHashMap(m) | Map::HashMap(m) => m,
        _ => {
            return Err(DatapathError::Load(
                "the flow table is not a hash map".into(),
            ))
        }
    };
    match bpf::lookup_all::<FlowKey, FlowStats>(data.fd().as_fd()) {
        Ok(v) => return Ok(v),
        Err(bpf::BatchError::Unsupported) => {}
        Err(bpf::BatchError::Io(e)) => {
            return Err(DatapathError::Io {
                what: "reading the flow table",
                source: e,
            })
        }
    }
    let table: BpfHashMap<&MapData, FlowKey, FlowStats> =
        BpfHashMap::try_from(map).map_err(map_err("opening the flow table"))?;
    let keys: Vec<FlowKey> = table.keys().filter_map(Result::ok).collect();
    Ok(keys
        .into_iter()
        .filter_map(|k| table.get(&k, 0).ok().map(|v| (k, v)))
        .collect())
}

/// One flow's current state.
pub fn flow(src: &impl MapSource, key: &FlowKey) -> Option<FlowStats> {
    let table: BpfHashMap<&MapData, FlowKey, FlowStats> =
        BpfHashMap::try_from(src.map(names::FLOWS)?).ok()?;
    table.get(key, 0).ok()
}

/// Every prefix in the two tries with its value, truncated to its network.
pub fn tries(src: &impl MapSource) -> Result<Vec<(IpNet, RangeValue)>, DatapathError> {
    let mut out = Vec::new();
    let trie4: LpmTrie<&MapData, [u8; 4], RangeValue> =
        LpmTrie::try_from(get(src, names::RANGES_V4)?).map_err(map_err("opening the IPv4 trie"))?;
    for item in trie4.iter() {
        let (k, v) = item.map_err(map_err("reading the IPv4 trie"))?;
        let net = ipnet::Ipv4Net::new(k.data().into(), k.prefix_len() as u8)
            .map_err(|e| DatapathError::Load(format!("IPv4 trie: {e}")))?;
        out.push((IpNet::V4(net.trunc()), v));
    }
    let trie6: LpmTrie<&MapData, [u8; 16], RangeValue> =
        LpmTrie::try_from(get(src, names::RANGES_V6)?).map_err(map_err("opening the IPv6 trie"))?;
    for item in trie6.iter() {
        let (k, v) = item.map_err(map_err("reading the IPv6 trie"))?;
        let net = ipnet::Ipv6Net::new(k.data().into(), k.prefix_len() as u8)
            .map_err(|e| DatapathError::Load(format!("IPv6 trie: {e}")))?;
        out.push((IpNet::V6(net.trunc()), v));
    }
    Ok(out)
}

/// The ports allowed in port profile `profile`, ascending.
pub fn profile_ports(src: &impl MapSource, profile: u32) -> Result<Vec<u16>, DatapathError> {
    let words: Array<&MapData, u32> = Array::try_from(get(src, names::ALLOWED_PORTS)?)
        .map_err(map_err("opening the allowed ports"))?;
    let mut ports = Vec::new();
    for w in 0..sizes::PORT_WORDS {
        let word = words
            .get(&(profile * sizes::PORT_WORDS + w), 0)
            .map_err(map_err("reading the allowed ports"))?;
        for bit in 0..32 {
            if word & (1 << bit) != 0 {
                ports.push((w * 32 + bit) as u16);
            }
        }
    }
    Ok(ports)
}

// ---------------------------------------------------------------------------
// Writing (the agent's own object only)
// ---------------------------------------------------------------------------

fn get_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Map, DatapathError> {
    ebpf.map_mut(name)
        .ok_or_else(|| DatapathError::Load(format!("map {name} missing")))
}

/// Inserts or updates `(range id, range)` entries in the tries, each with
/// the port profile `policy` gives its id.
pub fn insert_ranges<'a>(
    ebpf: &mut Ebpf,
    ranges: impl Iterator<Item = (usize, &'a Range)> + Clone,
    policy: &PortPolicy,
) -> Result<(), DatapathError> {
    let value = |id: usize| RangeValue {
        id: id as u32,
        ports: policy.profile_of(id as u32),
    };
    let mut trie4: LpmTrie<&mut MapData, [u8; 4], RangeValue> =
        LpmTrie::try_from(get_mut(ebpf, names::RANGES_V4)?)
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
        LpmTrie::try_from(get_mut(ebpf, names::RANGES_V6)?)
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

/// Whether a map error says the key is not there: aya reports a lookup of
/// a missing key as `KeyNotFound`, a deletion as the syscall's `ENOENT`
/// (an entry the kernel evicted, or a prefix already gone).
fn absent(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Removes prefixes from the tries (absent ones are fine).
pub fn remove_prefixes(ebpf: &mut Ebpf, ranges: &[&Range]) -> Result<(), DatapathError> {
    let gone = |r: Result<(), MapError>, n: &dyn std::fmt::Display| match r {
        Err(e) if !absent(&e) => Err(map_err(format!("removing {n}"))(e)),
        _ => Ok(()),
    };
    let mut trie4: LpmTrie<&mut MapData, [u8; 4], RangeValue> =
        LpmTrie::try_from(get_mut(ebpf, names::RANGES_V4)?)
            .map_err(map_err("opening the IPv4 trie"))?;
    for r in ranges {
        if let IpNet::V4(n) = r.prefix {
            gone(
                trie4.remove(&Key::new(n.prefix_len().into(), n.addr().octets())),
                &n,
            )?;
        }
    }
    let mut trie6: LpmTrie<&mut MapData, [u8; 16], RangeValue> =
        LpmTrie::try_from(get_mut(ebpf, names::RANGES_V6)?)
            .map_err(map_err("opening the IPv6 trie"))?;
    for r in ranges {
        if let IpNet::V6(n) = r.prefix {
            gone(
                trie6.remove(&Key::new(n.prefix_len().into(), n.addr().octets())),
                &n,
            )?;
        }
    }
    Ok(())
}

/// Writes `(index, word)` pairs into the `u32` array map `name`.
pub fn write_words(
    ebpf: &mut Ebpf,
    name: &str,
    words: impl IntoIterator<Item = (u32, u32)>,
) -> Result<(), DatapathError> {
    let mut arr: Array<&mut MapData, u32> =
        Array::try_from(get_mut(ebpf, name)?).map_err(map_err(format!("opening {name}")))?;
    for (i, w) in words {
        arr.set(i, w, 0)
            .map_err(map_err(format!("writing {name}")))?;
    }
    Ok(())
}

/// Adds interface `ifindex` to the audited ones ([`names::IFACES`]), or
/// removes it (absent is fine).
pub fn set_audited(ebpf: &mut Ebpf, ifindex: u32, audited: bool) -> Result<(), DatapathError> {
    let mut m: BpfHashMap<&mut MapData, u32, u32> =
        BpfHashMap::try_from(get_mut(ebpf, names::IFACES)?)
            .map_err(map_err("opening the audited interfaces"))?;
    let res = if audited {
        m.insert(ifindex, 1, 0)
    } else {
        m.remove(&ifindex)
    };
    match res {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(map_err(format!("marking interface {ifindex} audited"))(e)),
    }
}

/// Removes flows from the table (absent ones are fine); returns how many
/// were there.
pub fn remove_flows(ebpf: &mut Ebpf, keys: &[FlowKey]) -> Result<usize, DatapathError> {
    let mut table: BpfHashMap<&mut MapData, FlowKey, FlowStats> =
        BpfHashMap::try_from(get_mut(ebpf, names::FLOWS)?)
            .map_err(map_err("opening the flow table"))?;
    let mut removed = 0;
    for k in keys {
        match table.remove(k) {
            Ok(()) => removed += 1,
            Err(e) if absent(&e) => {}
            Err(e) => return Err(map_err("removing a flow")(e)),
        }
    }
    Ok(removed)
}

/// The prefilter word and bit of a host prefix's top 16 bits.
pub fn prefilter_bit_of(prefix: &IpNet) -> (u32, u32) {
    let (fam, hi) = match prefix {
        IpNet::V4(n) => (family::V4, (u32::from(n.network()) >> 16) as u16),
        IpNet::V6(n) => (family::V6, (u128::from(n.network()) >> 112) as u16),
    };
    prefilter_bit(fam, hi)
}

/// Every word of the `u32` array map `name`, read with
/// `BPF_MAP_LOOKUP_BATCH` (one key at a time where the kernel lacks it).
pub fn read_words(src: &impl MapSource, name: &str) -> Result<Vec<u32>, DatapathError> {
    let map = get(src, name)?;
    let mut out = vec![0u32; capacity(src, name) as usize];
    if let Map::Array(data) = map {
        match bpf::lookup_all::<u32, u32>(data.fd().as_fd()) {
            Ok(v) => {
                for (i, w) in v {
                    if let Some(x) = out.get_mut(i as usize) {
                        *x = w;
                    }
                }
                return Ok(out);
            }
            Err(bpf::BatchError::Unsupported) => {}
            Err(bpf::BatchError::Io(e)) => {
                return Err(DatapathError::Io {
                    what: "reading an array map",
                    source: e,
                })
            }
        }
    }
    let arr: Array<&MapData, u32> =
        Array::try_from(map).map_err(map_err(format!("opening {name}")))?;
    for (i, x) in out.iter_mut().enumerate() {
        *x = arr
            .get(&(i as u32), 0)
            .map_err(map_err(format!("reading {name}")))?;
    }
    Ok(out)
}

/// The prefilter words (IPv4 then IPv6) with the bit of every top-16-bit
/// value that one of `ranges` overlaps.
pub fn prefilter_words<'a>(ranges: impl Iterator<Item = &'a Range>) -> Vec<u32> {
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

/// The allowed-port words of every profile of `policy`, indexed from 0.
pub fn port_words(policy: &PortPolicy) -> Vec<u32> {
    let mut words = vec![0u32; policy.profiles().len() * sizes::PORT_WORDS as usize];
    for (profile, ports) in policy.profiles().iter().enumerate() {
        for p in ports.iter() {
            let (w, bit) = port_bit(profile as u32, p);
            words[w as usize] |= bit;
        }
    }
    words
}
