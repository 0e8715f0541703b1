//! Address sets: the IP addresses and CIDR ranges that Microsoft Defender for
//! Cloud Apps (formerly Cloud App Security, "CAS") documents as network
//! requirements, tagged with the data center and purpose they belong to.
//!
//! An address set is stored as JSON (schema 1):
//!
//! ```json
//! {
//!   "schema": 1,
//!   "name": "cas-2019-11",
//!   "source": "network-requirements-2019-11.md",
//!   "published": "2019-11-01",
//!   "entries": [
//!     {"prefix": "13.64.26.88/32", "datacenter": "US1", "purpose": "portal", "direction": "outbound"},
//!     {"prefix": "65.55.234.192/26", "datacenter": null, "purpose": "mail", "direction": "inbound"}
//!   ]
//! }
//! ```
//!
//! [`AddressSet::builtin`] returns the set transcribed from the November 2019
//! revision of the "Network requirements" page. [`AddressSet::ranges`] turns a
//! set into the distinct prefixes to load into a longest-prefix-match table.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The schema version of the JSON format understood by [`AddressSet::from_json`].
pub const SCHEMA_VERSION: u64 = 1;

/// The JSON text of the built-in address set.
const BUILTIN_JSON: &str = include_str!("../data/cas-2019-11.json");

/// A Defender for Cloud Apps data center, as shown in the portal's "About" box.
///
/// Displayed and serialised as `US1`, `US2`, `US3`, `EU1`, `EU2` and `Gov US1`.
/// Parsing is case-insensitive and also accepts `gov-us1`, `govus1` and
/// `gov_us1` for [`DataCenter::GovUs1`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DataCenter {
    /// `US1`.
    Us1,
    /// `US2`.
    Us2,
    /// `US3`.
    Us3,
    /// `EU1`.
    Eu1,
    /// `EU2`.
    Eu2,
    /// `Gov US1` (US Government, GCC High).
    GovUs1,
}

impl DataCenter {
    /// Every data center, in declaration order.
    pub const ALL: [DataCenter; 6] = [
        DataCenter::Us1,
        DataCenter::Us2,
        DataCenter::Us3,
        DataCenter::Eu1,
        DataCenter::Eu2,
        DataCenter::GovUs1,
    ];

    /// The canonical spelling, e.g. `"Gov US1"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            DataCenter::Us1 => "US1",
            DataCenter::Us2 => "US2",
            DataCenter::Us3 => "US3",
            DataCenter::Eu1 => "EU1",
            DataCenter::Eu2 => "EU2",
            DataCenter::GovUs1 => "Gov US1",
        }
    }

    /// This data center's bit in a tag mask.
    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for DataCenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataCenter {
    type Err = SetError;

    /// Parses a data center name case-insensitively (`"us1"`, `"Gov US1"`,
    /// `"gov-us1"`, `"govus1"`, `"gov_us1"`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "us1" => Ok(DataCenter::Us1),
            "us2" => Ok(DataCenter::Us2),
            "us3" => Ok(DataCenter::Us3),
            "eu1" => Ok(DataCenter::Eu1),
            "eu2" => Ok(DataCenter::Eu2),
            "gov us1" | "gov-us1" | "govus1" | "gov_us1" => Ok(DataCenter::GovUs1),
            _ => Err(SetError::UnknownDataCenter {
                index: None,
                value: s.to_owned(),
            }),
        }
    }
}

impl Serialize for DataCenter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DataCenter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why an address is needed: which section of the network requirements page
/// it comes from.
///
/// Displayed, serialised and parsed as `portal`, `access-session-controls`,
/// `siem-agent`, `app-connector`, `dlp`, `mail`, `log-collector` and
/// `auth-gateway`. Parsing is case-insensitive and accepts `_` for `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    /// `portal`: access to the web portal (outbound).
    Portal,
    /// `access-session-controls`: the reverse proxy used by access and
    /// session controls (outbound).
    AccessSessionControls,
    /// `siem-agent`: the SIEM agent's connection to the service (outbound).
    SiemAgent,
    /// `app-connector`: API connectors reaching third-party apps (inbound).
    AppConnector,
    /// `dlp`: third-party DLP (ICAP over stunnel) integration (inbound).
    Dlp,
    /// `mail`: notification mail servers (inbound).
    Mail,
    /// `log-collector`: log collector uploads (outbound).
    LogCollector,
    /// `auth-gateway`: authentication gateway.
    AuthGateway,
}

impl Purpose {
    /// Every purpose, in declaration order.
    pub const ALL: [Purpose; 8] = [
        Purpose::Portal,
        Purpose::AccessSessionControls,
        Purpose::SiemAgent,
        Purpose::AppConnector,
        Purpose::Dlp,
        Purpose::Mail,
        Purpose::LogCollector,
        Purpose::AuthGateway,
    ];

    /// The canonical spelling, e.g. `"access-session-controls"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Purpose::Portal => "portal",
            Purpose::AccessSessionControls => "access-session-controls",
            Purpose::SiemAgent => "siem-agent",
            Purpose::AppConnector => "app-connector",
            Purpose::Dlp => "dlp",
            Purpose::Mail => "mail",
            Purpose::LogCollector => "log-collector",
            Purpose::AuthGateway => "auth-gateway",
        }
    }

    /// This purpose's bit in a tag mask.
    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Purpose {
    type Err = SetError;

    /// Parses a purpose case-insensitively, accepting `_` in place of `-`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        Purpose::ALL
            .into_iter()
            .find(|p| p.as_str() == wanted)
            .ok_or_else(|| SetError::UnknownPurpose {
                index: None,
                value: s.to_owned(),
            })
    }
}

impl Serialize for Purpose {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Purpose {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Direction of the traffic relative to the customer's network.
///
/// Displayed, serialised and parsed (case-insensitively) as `outbound` and
/// `inbound`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// The customer's hosts connect to these addresses.
    Outbound,
    /// The service connects from these addresses to the customer.
    Inbound,
}

impl Direction {
    /// Both directions.
    pub const ALL: [Direction; 2] = [Direction::Outbound, Direction::Inbound];

    /// The canonical spelling: `"outbound"` or `"inbound"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = SetError;

    /// Parses `outbound` or `inbound`, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "outbound" => Ok(Direction::Outbound),
            "inbound" => Ok(Direction::Inbound),
            _ => Err(SetError::UnknownDirection {
                index: None,
                value: s.to_owned(),
            }),
        }
    }
}

impl Serialize for Direction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Direction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One documented address or range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Entry {
    /// The address (as a host prefix, `/32` or `/128`) or CIDR range, as
    /// written in the set; it is not truncated to its network address.
    pub prefix: IpNet,
    /// The data center it belongs to, or `None` for ranges used by every data
    /// center (such as the mail servers).
    pub datacenter: Option<DataCenter>,
    /// Why the address is needed.
    pub purpose: Purpose,
    /// Which way the traffic flows.
    pub direction: Direction,
}

/// A named list of [`Entry`] values, as loaded from a schema-1 JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSet {
    /// Short identifier, e.g. `cas-2019-11`.
    pub name: String,
    /// Where the addresses were transcribed from.
    pub source: String,
    /// Publication date of the source (ISO 8601 `YYYY-MM-DD`).
    pub published: String,
    /// The entries, in document order.
    pub entries: Vec<Entry>,
}

/// A distinct prefix of an [`AddressSet`] with every tag that applies to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Range {
    /// The prefix, truncated to its network address.
    pub prefix: IpNet,
    /// Data centers of the entries with this prefix or a strictly covering
    /// one (entries without a data center add nothing here).
    pub datacenters: BTreeSet<DataCenter>,
    /// Purposes of the entries with this prefix or a strictly covering one.
    pub purposes: BTreeSet<Purpose>,
}

/// An error loading an address set, or parsing a data center, purpose or
/// direction name.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    /// The text is not valid JSON or does not have the schema's shape
    /// (missing field, wrong type, ...).
    #[error("invalid address-set JSON at line {line}, column {column}: {message}")]
    Json {
        /// 1-based line of the error (0 if unknown).
        line: usize,
        /// 1-based column of the error (0 if unknown).
        column: usize,
        /// `serde_json`'s description, without its position suffix.
        message: String,
    },
    /// The `schema` field names a version this build does not understand.
    #[error(
        "unsupported address-set schema version {found} (this build understands schema {})",
        SCHEMA_VERSION
    )]
    UnsupportedSchema {
        /// The version found in the document.
        found: u64,
    },
    /// An entry's `prefix` is neither an IP address nor a CIDR prefix.
    #[error(
        "entries[{index}]: invalid prefix {text:?} \
         (expected an IP address or CIDR prefix such as 192.0.2.0/24 or 2001:db8::/32)"
    )]
    BadPrefix {
        /// 0-based position of the entry in `entries`.
        index: usize,
        /// The offending text.
        text: String,
    },
    /// A data center name is not one of [`DataCenter::ALL`].
    #[error(
        "{}unknown data center {value:?} (accepted: US1, US2, US3, EU1, EU2, Gov US1)",
        entry_context(.index)
    )]
    UnknownDataCenter {
        /// 0-based position of the entry in `entries`, if it came from a set.
        index: Option<usize>,
        /// The offending text.
        value: String,
    },
    /// A purpose name is not one of [`Purpose::ALL`].
    #[error(
        "{}unknown purpose {value:?} (accepted: portal, access-session-controls, siem-agent, \
         app-connector, dlp, mail, log-collector, auth-gateway)",
        entry_context(.index)
    )]
    UnknownPurpose {
        /// 0-based position of the entry in `entries`, if it came from a set.
        index: Option<usize>,
        /// The offending text.
        value: String,
    },
    /// A direction is neither `outbound` nor `inbound`.
    #[error(
        "{}unknown direction {value:?} (accepted: outbound, inbound)",
        entry_context(.index)
    )]
    UnknownDirection {
        /// 0-based position of the entry in `entries`, if it came from a set.
        index: Option<usize>,
        /// The offending text.
        value: String,
    },
}

/// `"entries[N]: "` when the error comes from an entry, nothing otherwise.
fn entry_context(index: &Option<usize>) -> String {
    match index {
        Some(i) => format!("entries[{i}]: "),
        None => String::new(),
    }
}

impl From<serde_json::Error> for SetError {
    fn from(err: serde_json::Error) -> Self {
        let (line, column) = (err.line(), err.column());
        let full = err.to_string();
        let suffix = format!(" at line {line} column {column}");
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
        SetError::Json {
            line,
            column,
            message,
        }
    }
}

impl SetError {
    /// Attaches the position of the entry to an unknown-name error.
    fn at_entry(self, i: usize) -> SetError {
        match self {
            SetError::UnknownDataCenter { value, .. } => SetError::UnknownDataCenter {
                index: Some(i),
                value,
            },
            SetError::UnknownPurpose { value, .. } => SetError::UnknownPurpose {
                index: Some(i),
                value,
            },
            SetError::UnknownDirection { value, .. } => SetError::UnknownDirection {
                index: Some(i),
                value,
            },
            other => other,
        }
    }
}

/// Just the version field, read before the rest of the document.
#[derive(Deserialize)]
struct RawHeader {
    schema: u64,
}

/// The schema-1 document with its names still as text, so that errors can
/// say which entry is wrong.
#[derive(Deserialize)]
struct RawSet {
    name: String,
    source: String,
    published: String,
    entries: Vec<RawEntry>,
}

#[derive(Deserialize)]
struct RawEntry {
    prefix: String,
    #[serde(default)]
    datacenter: Option<String>,
    purpose: String,
    direction: String,
}

/// Parses `"a.b.c.d/len"`, `"v6::/len"`, or a bare address (as a host prefix).
fn parse_prefix(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net);
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

impl AddressSet {
    /// The built-in set, transcribed from the 2019-11-01 revision of the
    /// Cloud App Security "Network requirements" page
    /// (`data/cas-2019-11.json`, embedded at compile time).
    ///
    /// # Panics
    ///
    /// Only if the embedded data is invalid, which a unit test rules out.
    #[must_use]
    pub fn builtin() -> AddressSet {
        match AddressSet::from_json(BUILTIN_JSON) {
            Ok(set) => set,
            Err(err) => panic!("embedded data/cas-2019-11.json is invalid: {err}"),
        }
    }

    /// Parses a schema-1 JSON address set.
    ///
    /// Prefixes may be CIDR prefixes (kept as written, host bits included) or
    /// bare addresses (stored as `/32` or `/128`). `datacenter` may be `null`
    /// or absent for ranges that apply to every data center. Names are parsed
    /// with the [`FromStr`] implementations of [`DataCenter`], [`Purpose`] and
    /// [`Direction`].
    ///
    /// # Errors
    ///
    /// [`SetError::Json`] if the text is not JSON of the expected shape,
    /// [`SetError::UnsupportedSchema`] if `schema` is not
    /// [`SCHEMA_VERSION`], and [`SetError::BadPrefix`],
    /// [`SetError::UnknownDataCenter`], [`SetError::UnknownPurpose`] or
    /// [`SetError::UnknownDirection`] (naming the entry) for a bad entry.
    pub fn from_json(text: &str) -> Result<AddressSet, SetError> {
        let header: RawHeader = serde_json::from_str(text)?;
        if header.schema != SCHEMA_VERSION {
            return Err(SetError::UnsupportedSchema {
                found: header.schema,
            });
        }
        let raw: RawSet = serde_json::from_str(text)?;
        let entries = raw
            .entries
            .into_iter()
            .enumerate()
            .map(|(index, e)| {
                let prefix = parse_prefix(&e.prefix).ok_or_else(|| SetError::BadPrefix {
                    index,
                    text: e.prefix.clone(),
                })?;
                let datacenter = e
                    .datacenter
                    .as_deref()
                    .map(DataCenter::from_str)
                    .transpose()
                    .map_err(|err| err.at_entry(index))?;
                let purpose = e
                    .purpose
                    .parse()
                    .map_err(|err: SetError| err.at_entry(index))?;
                let direction = e
                    .direction
                    .parse()
                    .map_err(|err: SetError| err.at_entry(index))?;
                Ok(Entry {
                    prefix,
                    datacenter,
                    purpose,
                    direction,
                })
            })
            .collect::<Result<Vec<_>, SetError>>()?;
        Ok(AddressSet {
            name: raw.name,
            source: raw.source,
            published: raw.published,
            entries,
        })
    }

    /// Keeps the entries of the given data centers, plus every entry without
    /// a data center (global ranges such as the mail servers).
    pub fn retain_datacenters(&mut self, dcs: &[DataCenter]) {
        self.entries.retain(|e| match e.datacenter {
            Some(dc) => dcs.contains(&dc),
            None => true,
        });
    }

    /// The distinct prefixes of the set, truncated to their network address,
    /// with every IPv4 range before every IPv6 range and each family sorted by
    /// address, then prefix length.
    ///
    /// Each range carries the union of the tags of the entries with that
    /// prefix and of the entries whose prefix strictly contains it, so a
    /// longest-prefix-match lookup that lands on the more specific prefix
    /// still reports the covering range's data centers and purposes.
    ///
    /// Runs in O(n · L) hash lookups, where L (at most 32 or 128) is the
    /// number of distinct prefix lengths in use.
    #[must_use]
    pub fn ranges(&self) -> Vec<Range> {
        /// Data-center and purpose bit masks.
        #[derive(Default, Clone, Copy)]
        struct Tags {
            dcs: u8,
            purposes: u8,
        }

        let mut own: HashMap<IpNet, Tags> = HashMap::with_capacity(self.entries.len());
        for e in &self.entries {
            let tags = own.entry(e.prefix.trunc()).or_default();
            if let Some(dc) = e.datacenter {
                tags.dcs |= dc.bit();
            }
            tags.purposes |= e.purpose.bit();
        }

        // Only the prefix lengths that actually occur can hold a supernet.
        let mut v4_lens = [false; 33];
        let mut v6_lens = [false; 129];
        for net in own.keys() {
            match net {
                IpNet::V4(n) => v4_lens[usize::from(n.prefix_len())] = true,
                IpNet::V6(n) => v6_lens[usize::from(n.prefix_len())] = true,
            }
        }
        let v4_lens: Vec<u8> = (0u8..=32).filter(|&l| v4_lens[usize::from(l)]).collect();
        let v6_lens: Vec<u8> = (0u8..=128).filter(|&l| v6_lens[usize::from(l)]).collect();

        let mut ranges: Vec<Range> = own
            .iter()
            .map(|(&net, &tags)| {
                let mut all = tags;
                let (lens, len) = match net {
                    IpNet::V4(n) => (&v4_lens, n.prefix_len()),
                    IpNet::V6(n) => (&v6_lens, n.prefix_len()),
                };
                for &l in lens.iter().take_while(|&&l| l < len) {
                    let sup = match net {
                        IpNet::V4(n) => Ipv4Net::new(n.addr(), l).map(|s| IpNet::V4(s.trunc())),
                        IpNet::V6(n) => Ipv6Net::new(n.addr(), l).map(|s| IpNet::V6(s.trunc())),
                    };
                    if let Some(t) = sup.ok().and_then(|s| own.get(&s)) {
                        all.dcs |= t.dcs;
                        all.purposes |= t.purposes;
                    }
                }
                Range {
                    prefix: net,
                    datacenters: DataCenter::ALL
                        .into_iter()
                        .filter(|dc| all.dcs & dc.bit() != 0)
                        .collect(),
                    purposes: Purpose::ALL
                        .into_iter()
                        .filter(|p| all.purposes & p.bit() != 0)
                        .collect(),
                }
            })
            .collect();
        ranges.sort_by_key(|r| sort_key(r.prefix));
        ranges
    }
}

/// IPv4 before IPv6, then address, then prefix length.
fn sort_key(net: IpNet) -> (u8, u128, u8) {
    match net {
        IpNet::V4(n) => (0, u128::from(u32::from(n.addr())), n.prefix_len()),
        IpNet::V6(n) => (1, u128::from(n.addr()), n.prefix_len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    use DataCenter::*;
    use Purpose::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn distinct(set: &AddressSet, purpose: Purpose, dc: Option<DataCenter>) -> usize {
        set.entries
            .iter()
            .filter(|e| e.purpose == purpose && e.datacenter == dc)
            .map(|e| e.prefix)
            .collect::<HashSet<_>>()
            .len()
    }

    fn range_of(ranges: &[Range], prefix: &str) -> Range {
        let p = net(prefix);
        ranges
            .iter()
            .find(|r| r.prefix == p)
            .unwrap_or_else(|| panic!("{prefix} not among the ranges"))
            .clone()
    }

    #[test]
    fn builtin_parses() {
        let set = AddressSet::builtin();
        assert_eq!(set.name, "cas-2019-11");
        assert_eq!(set.source, "network-requirements-2019-11.md");
        assert_eq!(set.published, "2019-11-01");
        assert_eq!(set.entries.len(), 592);
        assert_eq!(AddressSet::from_json(BUILTIN_JSON).unwrap(), set);
    }

    /// Distinct addresses per row of the 2019-11 page, counted from the page
    /// itself (one table row = one data center of one section).
    #[test]
    fn builtin_counts_per_row() {
        let set = AddressSet::builtin();
        let expected: &[(Purpose, Option<DataCenter>, usize)] = &[
            (Portal, Some(Us1), 9),
            (Portal, Some(Us2), 9),
            (Portal, Some(Us3), 8),
            (Portal, Some(Eu1), 9),
            (Portal, Some(Eu2), 8),
            (Portal, Some(GovUs1), 2),
            (AccessSessionControls, Some(Us1), 70),
            (AccessSessionControls, Some(Us2), 70),
            (AccessSessionControls, Some(Us3), 82),
            (AccessSessionControls, Some(Eu1), 70),
            (AccessSessionControls, Some(Eu2), 60),
            (AccessSessionControls, Some(GovUs1), 0),
            (SiemAgent, Some(Us1), 9),
            (SiemAgent, Some(Us2), 9),
            (SiemAgent, Some(Us3), 8),
            (SiemAgent, Some(Eu1), 9),
            (SiemAgent, Some(Eu2), 8),
            (SiemAgent, Some(GovUs1), 2),
            (AppConnector, Some(Us1), 21),
            (AppConnector, Some(Us2), 17),
            (AppConnector, Some(Us3), 10),
            (AppConnector, Some(Eu1), 17),
            (AppConnector, Some(Eu2), 10),
            (AppConnector, Some(GovUs1), 3),
            (Dlp, Some(Us1), 19),
            (Dlp, Some(Us2), 15),
            (Dlp, Some(Us3), 8),
            (Dlp, Some(Eu1), 15),
            (Dlp, Some(Eu2), 8),
            (Dlp, Some(GovUs1), 0),
            (Mail, None, 7),
        ];
        for &(purpose, dc, count) in expected {
            assert_eq!(distinct(&set, purpose, dc), count, "{purpose} {dc:?}");
        }
        let total: usize = expected.iter().map(|&(_, _, n)| n).sum();
        // Nothing outside those rows, and no duplicate within a row.
        assert_eq!(set.entries.len(), total);
        let unique: HashSet<_> = set
            .entries
            .iter()
            .map(|e| (e.prefix, e.datacenter, e.purpose))
            .collect();
        assert_eq!(unique.len(), total);
        // Every section has the documented direction.
        for e in &set.entries {
            let want = match e.purpose {
                Portal | AccessSessionControls | SiemAgent => Direction::Outbound,
                _ => Direction::Inbound,
            };
            assert_eq!(e.direction, want, "{e:?}");
            assert_eq!(e.datacenter.is_none(), e.purpose == Mail, "{e:?}");
        }
    }

    #[test]
    fn builtin_entries_in_page_order() {
        let set = AddressSet::builtin();
        let first = set.entries.first().unwrap();
        assert_eq!(first.prefix, net("13.64.26.88/32"));
        assert_eq!(first.datacenter, Some(Us1));
        assert_eq!(first.purpose, Portal);
        let last = set.entries.last().unwrap();
        assert_eq!(last.prefix, net("198.2.134.139/32"));
        assert_eq!(last.datacenter, None);
        let mut sections: Vec<Purpose> = set.entries.iter().map(|e| e.purpose).collect();
        sections.dedup();
        assert_eq!(
            sections,
            [
                Portal,
                AccessSessionControls,
                SiemAgent,
                AppConnector,
                Dlp,
                Mail
            ]
        );
        let mail: Vec<String> = set
            .entries
            .iter()
            .filter(|e| e.purpose == Mail)
            .map(|e| e.prefix.to_string())
            .collect();
        assert_eq!(
            mail,
            [
                "65.55.234.192/26",
                "207.46.200.0/27",
                "65.55.52.224/27",
                "94.245.112.0/27",
                "111.221.26.0/27",
                "207.46.50.192/26",
                "198.2.134.139/32",
            ]
        );
    }

    #[test]
    fn builtin_ranges() {
        let set = AddressSet::builtin();
        let ranges = set.ranges();
        assert_eq!(ranges.len(), 438);
        let distinct: HashSet<IpNet> = set.entries.iter().map(|e| e.prefix.trunc()).collect();
        assert_eq!(distinct.len(), 438);
        assert!(ranges
            .windows(2)
            .all(|w| sort_key(w[0].prefix) < sort_key(w[1].prefix)));

        let r = range_of(&ranges, "13.64.196.27/32");
        assert_eq!(r.datacenters, BTreeSet::from([Us1]));
        assert_eq!(r.purposes, BTreeSet::from([AppConnector, Dlp]));

        let r = range_of(&ranges, "13.80.125.22/32");
        assert_eq!(r.datacenters, BTreeSet::from([Us1, Us2, Us3, Eu1, Eu2]));
        assert_eq!(r.purposes, BTreeSet::from([Portal, SiemAgent]));

        let r = range_of(&ranges, "65.55.234.192/26");
        assert!(r.datacenters.is_empty());
        assert_eq!(r.purposes, BTreeSet::from([Mail]));

        // Listed twice in the US3 access-and-session-controls row.
        let r = range_of(&ranges, "52.139.2.0/32");
        assert_eq!(r.datacenters, BTreeSet::from([Us3]));
        assert_eq!(r.purposes, BTreeSet::from([AccessSessionControls]));
    }

    const CRAFTED: &str = r#"{
      "schema": 1,
      "name": "crafted",
      "source": "test",
      "published": "2024-01-01",
      "entries": [
        {"prefix": "2001:db8::/32", "datacenter": "EU2", "purpose": "portal", "direction": "outbound"},
        {"prefix": "2001:db8:1::1", "datacenter": "EU1", "purpose": "dlp", "direction": "inbound"},
        {"prefix": "10.1.2.3/32", "datacenter": "US2", "purpose": "siem-agent", "direction": "outbound"},
        {"prefix": "10.1.2.3/16", "datacenter": "EU1", "purpose": "app-connector", "direction": "inbound"},
        {"prefix": "10.0.0.0/8", "datacenter": "US1", "purpose": "portal", "direction": "outbound"},
        {"prefix": "10.0.0.0/8", "datacenter": "us3", "purpose": "Portal", "direction": "OUTBOUND"},
        {"prefix": "10.2.0.0/16", "purpose": "mail", "direction": "inbound"},
        {"prefix": "9.255.255.255", "datacenter": "gov-us1", "purpose": "log_collector", "direction": "outbound"},
        {"prefix": "11.0.0.0/8", "datacenter": null, "purpose": "auth-gateway", "direction": "inbound"}
      ]
    }"#;

    #[test]
    fn covered_ranges_inherit_tags() {
        let set = AddressSet::from_json(CRAFTED).unwrap();
        assert_eq!(set.entries[1].prefix, net("2001:db8:1::1/128"));
        assert_eq!(set.entries[3].prefix, net("10.1.2.3/16"));
        assert_eq!(set.entries[6].datacenter, None);
        let ranges = set.ranges();
        let got: Vec<String> = ranges.iter().map(|r| r.prefix.to_string()).collect();
        assert_eq!(
            got,
            [
                "9.255.255.255/32",
                "10.0.0.0/8",
                "10.1.0.0/16",
                "10.1.2.3/32",
                "10.2.0.0/16",
                "11.0.0.0/8",
                "2001:db8::/32",
                "2001:db8:1::1/128",
            ]
        );
        let r = range_of(&ranges, "10.0.0.0/8");
        assert_eq!(r.datacenters, BTreeSet::from([Us1, Us3]));
        assert_eq!(r.purposes, BTreeSet::from([Portal]));
        let r = range_of(&ranges, "10.1.0.0/16");
        assert_eq!(r.datacenters, BTreeSet::from([Us1, Us3, Eu1]));
        assert_eq!(r.purposes, BTreeSet::from([Portal, AppConnector]));
        let r = range_of(&ranges, "10.1.2.3/32");
        assert_eq!(r.datacenters, BTreeSet::from([Us1, Us2, Us3, Eu1]));
        assert_eq!(
            r.purposes,
            BTreeSet::from([Portal, SiemAgent, AppConnector])
        );
        let r = range_of(&ranges, "10.2.0.0/16");
        assert_eq!(r.datacenters, BTreeSet::from([Us1, Us3]));
        assert_eq!(r.purposes, BTreeSet::from([Portal, Mail]));
        // Adjacent but not covered.
        let r = range_of(&ranges, "9.255.255.255/32");
        assert_eq!(r.datacenters, BTreeSet::from([GovUs1]));
        assert_eq!(r.purposes, BTreeSet::from([LogCollector]));
        let r = range_of(&ranges, "11.0.0.0/8");
        assert!(r.datacenters.is_empty());
        assert_eq!(r.purposes, BTreeSet::from([AuthGateway]));
        let r = range_of(&ranges, "2001:db8:1::1/128");
        assert_eq!(r.datacenters, BTreeSet::from([Eu1, Eu2]));
        assert_eq!(r.purposes, BTreeSet::from([Portal, Dlp]));
    }

    #[test]
    fn ranges_scale_to_100k_prefixes() {
        let mut entries = Vec::new();
        for i in 0..100_000u32 {
            let (prefix, dc) = if i % 2 == 0 {
                let addr = std::net::Ipv4Addr::from(0x0a00_0000 + i * 4);
                (IpNet::V4(Ipv4Net::new(addr, 30).unwrap()), Us2)
            } else {
                let addr = std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i) << 64);
                (IpNet::V6(Ipv6Net::new(addr, 64).unwrap()), Eu1)
            };
            entries.push(Entry {
                prefix,
                datacenter: Some(dc),
                purpose: AppConnector,
                direction: Direction::Inbound,
            });
        }
        entries.push(Entry {
            prefix: net("10.0.0.0/8"),
            datacenter: Some(Us1),
            purpose: Portal,
            direction: Direction::Outbound,
        });
        let set = AddressSet {
            name: "synthetic".into(),
            source: "test".into(),
            published: "2024-01-01".into(),
            entries,
        };
        let ranges = set.ranges();
        assert_eq!(ranges.len(), 100_001);
        assert_eq!(ranges[0].prefix, net("10.0.0.0/8"));
        assert_eq!(ranges[1].datacenters, BTreeSet::from([Us1, Us2]));
        assert_eq!(ranges[1].purposes, BTreeSet::from([Portal, AppConnector]));
        assert_eq!(ranges[100_000].datacenters, BTreeSet::from([Eu1]));
    }

    #[test]
    fn retain_datacenters_keeps_global_ranges() {
        let mut set = AddressSet::builtin();
        set.retain_datacenters(&[GovUs1]);
        assert_eq!(set.entries.len(), 2 + 2 + 3 + 7);
        assert_eq!(distinct(&set, Mail, None), 7);
        assert!(set
            .entries
            .iter()
            .all(|e| matches!(e.datacenter, None | Some(GovUs1))));

        let mut set = AddressSet::builtin();
        set.retain_datacenters(&[]);
        assert_eq!(set.entries.len(), 7);
        assert!(set.entries.iter().all(|e| e.purpose == Mail));

        let mut set = AddressSet::builtin();
        set.retain_datacenters(&[Us1, Eu2]);
        assert_eq!(
            set.entries.len(),
            (9 + 70 + 9 + 21 + 19) + (8 + 60 + 8 + 10 + 8) + 7
        );
    }

    fn err(text: &str) -> String {
        AddressSet::from_json(text).unwrap_err().to_string()
    }

    fn doc(entry: &str) -> String {
        format!(
            r#"{{"schema": 1, "name": "t", "source": "s", "published": "p", "entries": [{{"prefix": "10.0.0.0/8", "datacenter": "US1", "purpose": "portal", "direction": "outbound"}}, {entry}]}}"#
        )
    }

    #[test]
    fn error_messages() {
        let e = AddressSet::from_json("{\n  \"schema\": 1,\n  \"name\": \"x\",,\n}").unwrap_err();
        assert_eq!(
            e,
            SetError::Json {
                line: 3,
                column: 15,
                message: "key must be a string".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "invalid address-set JSON at line 3, column 15: key must be a string"
        );
        assert_eq!(
            err(r#"{"schema": 1, "name": "x"}"#),
            "invalid address-set JSON at line 1, column 26: missing field `source`"
        );
        assert_eq!(
            err(r#"{"name": "x"}"#),
            "invalid address-set JSON at line 1, column 13: missing field `schema`"
        );
        assert_eq!(
            err(r#"{"schema": 2, "name": "x"}"#),
            "unsupported address-set schema version 2 (this build understands schema 1)"
        );
        assert_eq!(
            err(&doc(
                r#"{"prefix": "10.0.0.300/8", "datacenter": "US1", "purpose": "portal", "direction": "outbound"}"#
            )),
            "entries[1]: invalid prefix \"10.0.0.300/8\" (expected an IP address or CIDR prefix \
             such as 192.0.2.0/24 or 2001:db8::/32)"
        );
        assert_eq!(
            AddressSet::from_json(&doc(
                r#"{"prefix": "10.0.0.0/33", "datacenter": "US1", "purpose": "portal", "direction": "outbound"}"#
            ))
            .unwrap_err(),
            SetError::BadPrefix {
                index: 1,
                text: "10.0.0.0/33".into()
            }
        );
        assert_eq!(
            err(&doc(
                r#"{"prefix": "10.0.0.1", "datacenter": "US4", "purpose": "portal", "direction": "outbound"}"#
            )),
            "entries[1]: unknown data center \"US4\" (accepted: US1, US2, US3, EU1, EU2, Gov US1)"
        );
        assert_eq!(
            err(&doc(
                r#"{"prefix": "10.0.0.1", "datacenter": "US1", "purpose": "web", "direction": "outbound"}"#
            )),
            "entries[1]: unknown purpose \"web\" (accepted: portal, access-session-controls, \
             siem-agent, app-connector, dlp, mail, log-collector, auth-gateway)"
        );
        assert_eq!(
            err(&doc(
                r#"{"prefix": "10.0.0.1", "datacenter": "US1", "purpose": "dlp", "direction": "both"}"#
            )),
            "entries[1]: unknown direction \"both\" (accepted: outbound, inbound)"
        );
        assert_eq!(
            "Gov US2".parse::<DataCenter>().unwrap_err().to_string(),
            "unknown data center \"Gov US2\" (accepted: US1, US2, US3, EU1, EU2, Gov US1)"
        );
        assert_eq!(
            "".parse::<Purpose>().unwrap_err(),
            SetError::UnknownPurpose {
                index: None,
                value: String::new()
            }
        );
        assert_eq!(
            "up".parse::<Direction>().unwrap_err().to_string(),
            "unknown direction \"up\" (accepted: outbound, inbound)"
        );
    }

    #[test]
    fn from_str_round_trips() {
        for dc in DataCenter::ALL {
            assert_eq!(dc.to_string().parse::<DataCenter>().unwrap(), dc);
            assert_eq!(
                dc.to_string().to_lowercase().parse::<DataCenter>().unwrap(),
                dc
            );
            assert_eq!(
                dc.to_string().to_uppercase().parse::<DataCenter>().unwrap(),
                dc
            );
            let json = serde_json::to_string(&dc).unwrap();
            assert_eq!(json, format!("\"{dc}\""));
            assert_eq!(serde_json::from_str::<DataCenter>(&json).unwrap(), dc);
        }
        let names: Vec<String> = DataCenter::ALL.iter().map(|d| d.to_string()).collect();
        assert_eq!(names, ["US1", "US2", "US3", "EU1", "EU2", "Gov US1"]);
        for alias in ["gov-us1", "GovUS1", "gov_us1", "GOV US1", " Gov US1 "] {
            assert_eq!(alias.parse::<DataCenter>().unwrap(), GovUs1, "{alias}");
        }

        for p in Purpose::ALL {
            assert_eq!(p.to_string().parse::<Purpose>().unwrap(), p);
            assert_eq!(p.to_string().to_uppercase().parse::<Purpose>().unwrap(), p);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
            assert_eq!(serde_json::from_str::<Purpose>(&json).unwrap(), p);
        }
        let names: Vec<String> = Purpose::ALL.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            names,
            [
                "portal",
                "access-session-controls",
                "siem-agent",
                "app-connector",
                "dlp",
                "mail",
                "log-collector",
                "auth-gateway",
            ]
        );
        assert_eq!("siem_agent".parse::<Purpose>().unwrap(), SiemAgent);

        for d in Direction::ALL {
            assert_eq!(d.to_string().parse::<Direction>().unwrap(), d);
            assert_eq!(
                d.to_string().to_uppercase().parse::<Direction>().unwrap(),
                d
            );
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<Direction>(&json).unwrap(), d);
        }
        assert_eq!(Direction::Outbound.to_string(), "outbound");
        assert_eq!(Direction::Inbound.to_string(), "inbound");

        let bad = serde_json::from_str::<DataCenter>("\"XX\"").unwrap_err();
        assert!(
            bad.to_string().starts_with("unknown data center \"XX\""),
            "{bad}"
        );

        let entry = AddressSet::builtin().entries[0];
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            r#"{"prefix":"13.64.26.88/32","datacenter":"US1","purpose":"portal","direction":"outbound"}"#
        );
    }
}
