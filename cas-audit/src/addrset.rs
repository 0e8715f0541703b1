//! Address sets: the IP addresses, CIDR ranges and DNS names that Microsoft
//! Defender for Cloud Apps (formerly Cloud App Security, "CAS") documents as
//! network requirements, tagged with the data center, purpose, direction and
//! ports they belong to.
//!
//! # Set files (schema 1)
//!
//! An address set is stored as JSON:
//!
//! ```json
//! {
//!   "schema": 1,
//!   "name": "cas-2019-11",
//!   "source": "network-requirements-2019-11.md",
//!   "published": "2019-11-01",
//!   "entries": [
//!     {"prefix": "13.64.26.88/32", "datacenter": "US1", "purpose": "portal", "direction": "outbound", "ports": [443]},
//!     {"prefix": "65.55.234.192/26", "datacenter": null, "purpose": "mail"}
//!   ],
//!   "dns": [
//!     {"name": "*.us.portal.cloudappsecurity.com", "datacenter": "US1", "purpose": "portal", "direction": "outbound", "ports": [443]},
//!     {"name": "ocsp.digicert.com", "datacenter": null, "purpose": "siem-agent", "ports": [80]}
//!   ]
//! }
//! ```
//!
//! * `schema` (required) must be `1`; it is checked before anything else.
//! * `name`, `source` (where the addresses were taken from, usually the
//!   page's file name) and `published` (the page's date, `YYYY-MM-DD`) are
//!   required strings.
//! * `entries` (required) lists addresses and ranges. `prefix` (required) is
//!   an IPv4 or IPv6 address (stored as a `/32` or `/128` host prefix) or a
//!   CIDR prefix, kept as written (host bits included).
//! * `dns` (optional, default empty) lists DNS names as the page writes them,
//!   wildcards included (`*.cas.ms`).
//! * In both lists `datacenter` is optional: `null` or absent means every
//!   data center (for example the mail servers). `purpose` is required.
//!   `direction` and `ports` are optional; absent, they are the purpose's
//!   [`Purpose::default_direction`] and [`Purpose::default_ports`]. `ports`
//!   is a non-empty list of TCP ports (1 to 65535); it is stored sorted and
//!   deduplicated.
//! * Names ([`DataCenter`], [`Purpose`], [`Direction`]) are parsed
//!   case-insensitively by their [`FromStr`] implementations.
//! * Unknown keys are rejected (a misspelt `"port"` would otherwise silently
//!   mean the default ports).
//!
//! Every error says where it is: JSON syntax and shape errors give the line
//! and column, entry errors name the entry (`entries[3]: ...`,
//! `dns[0]: ...`), and [`AddressSet::load`] prefixes the file name.
//! [`AddressSet::to_json`] writes the canonical layout of the files in
//! `data/`: one entry or DNS name per line, every field written.
//!
//! # Built-in sets
//!
//! [`AddressSet::builtins`] are the sets imported (by
//! [`crate::import::import_page`]) from the published "Network requirements"
//! pages: `cas-2019-11` (November 2019, the default, [`AddressSet::builtin`])
//! and `cas-2017-07` (July 2017). [`AddressSet::ranges`] turns a set into the
//! distinct prefixes to load into a longest-prefix-match table.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The schema version of the JSON format understood by [`AddressSet::from_json`].
pub const SCHEMA_VERSION: u64 = 1;

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

    /// The TCP ports used when a set file does not give `ports`: 443 for
    /// the HTTPS purposes; 11344 for `dlp` (the default port of the
    /// customer's stunnel, which the service connects to); 25 for `mail`
    /// (SMTP: the page gives no port for the mail servers, so this is an
    /// assumption).
    #[must_use]
    pub const fn default_ports(self) -> &'static [u16] {
        match self {
            Purpose::Portal
            | Purpose::AccessSessionControls
            | Purpose::SiemAgent
            | Purpose::AppConnector
            | Purpose::LogCollector
            | Purpose::AuthGateway => &[443],
            Purpose::Dlp => &[11344],
            Purpose::Mail => &[25],
        }
    }

    /// The direction used when a set file does not give `direction`:
    /// outbound (the customer connects) for `portal`,
    /// `access-session-controls`, `siem-agent`, `log-collector` and
    /// `auth-gateway`; inbound (the service connects) for `app-connector`,
    /// `dlp` and `mail`.
    #[must_use]
    pub const fn default_direction(self) -> Direction {
        match self {
            Purpose::Portal
            | Purpose::AccessSessionControls
            | Purpose::SiemAgent
            | Purpose::LogCollector
            | Purpose::AuthGateway => Direction::Outbound,
            Purpose::AppConnector | Purpose::Dlp | Purpose::Mail => Direction::Inbound,
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
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
    /// The TCP ports of the traffic: sorted, deduplicated and non-empty
    /// (the purpose's [`Purpose::default_ports`] unless the set says
    /// otherwise).
    pub ports: Vec<u16>,
}

/// One documented DNS name, as the page writes it (wildcards included,
/// markup removed), e.g. `*.us1.access-control.cas.ms`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DnsName {
    /// The host name, possibly starting with a `*.` wildcard label.
    pub name: String,
    /// The data center it belongs to, or `None` for every data center.
    pub datacenter: Option<DataCenter>,
    /// Why the name is needed.
    pub purpose: Purpose,
    /// Which way the traffic flows.
    pub direction: Direction,
    /// The TCP ports: sorted, deduplicated and non-empty.
    pub ports: Vec<u16>,
}

/// A named list of [`Entry`] and [`DnsName`] values, as loaded from a
/// schema-1 JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSet {
    /// Short identifier, e.g. `cas-2019-11`.
    pub name: String,
    /// Where the addresses were taken from (the page's file name).
    pub source: String,
    /// Publication date of the source (ISO 8601 `YYYY-MM-DD`).
    pub published: String,
    /// The address entries, in document order.
    pub entries: Vec<Entry>,
    /// The DNS names, in document order.
    pub dns: Vec<DnsName>,
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
    /// Ports of the entries with this prefix or a strictly covering one.
    pub ports: BTreeSet<u16>,
}

impl Range {
    /// Stands for a range id whose range is unknown (dropped by a reload of
    /// a pinned datapath before the agent restarted): no purpose, nothing
    /// matches it.
    pub fn placeholder() -> Range {
        Range {
            prefix: IpNet::V4(ipnet::Ipv4Net::default()),
            datacenters: BTreeSet::new(),
            purposes: BTreeSet::new(),
            ports: BTreeSet::new(),
        }
    }

    /// Whether this is a [`Range::placeholder`].
    pub fn is_placeholder(&self) -> bool {
        self.purposes.is_empty()
    }
}

/// An error loading an address set, or parsing a data center, purpose or
/// direction name.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    /// The text is not valid JSON or does not have the schema's shape
    /// (missing field, unknown field, wrong type, ...).
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
         (expected an IP address or CIDR prefix such as 198.51.100.0/24 or 2001:db8::/32)"
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
        /// 0-based position of the entry in `entries`, if it came from an
        /// entry (inside [`SetError::InDns`]: `None`).
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
        /// 0-based position of the entry in `entries`, if it came from an
        /// entry.
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
        /// 0-based position of the entry in `entries`, if it came from an
        /// entry.
        index: Option<usize>,
        /// The offending text.
        value: String,
    },
    /// A port is 0 or above 65535.
    #[error("{}invalid port {value} (ports are 1 to 65535)", entry_context(.index))]
    BadPort {
        /// 0-based position of the entry in `entries`, if it came from an
        /// entry.
        index: Option<usize>,
        /// The offending number.
        value: i64,
    },
    /// `ports` is an empty list.
    #[error(
        "{}empty port list (omit \"ports\" to use the purpose's default ports)",
        entry_context(.index)
    )]
    EmptyPorts {
        /// 0-based position of the entry in `entries`, if it came from an
        /// entry.
        index: Option<usize>,
    },
    /// A DNS name is not a host name (with an optional `*.` wildcard).
    #[error(
        "dns[{index}]: invalid DNS name {text:?} \
         (expected a host name such as portal.cloudappsecurity.com or *.cas.ms)"
    )]
    BadDnsName {
        /// 0-based position of the name in `dns`.
        index: usize,
        /// The offending text.
        text: String,
    },
    /// Something else is wrong with an element of `dns`.
    #[error("dns[{index}]: {reason}")]
    InDns {
        /// 0-based position of the name in `dns`.
        index: usize,
        /// What is wrong (an error without an entry index).
        reason: Box<SetError>,
    },
    /// A set file could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The path as given.
        path: String,
        /// Why, e.g. `cannot read the set file: No such file or directory`.
        message: String,
    },
    /// A set file is invalid.
    #[error("{path}: {reason}")]
    File {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: Box<SetError>,
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
    /// Attaches the position of the entry to an error of one of its fields.
    fn at_entry(self, i: usize) -> SetError {
        let index = Some(i);
        match self {
            SetError::UnknownDataCenter { value, .. } => {
                SetError::UnknownDataCenter { index, value }
            }
            SetError::UnknownPurpose { value, .. } => SetError::UnknownPurpose { index, value },
            SetError::UnknownDirection { value, .. } => SetError::UnknownDirection { index, value },
            SetError::BadPort { value, .. } => SetError::BadPort { index, value },
            SetError::EmptyPorts { .. } => SetError::EmptyPorts { index },
            other => other,
        }
    }

    /// Wraps an error of one of the fields of `dns[i]`.
    fn at_dns(self, index: usize) -> SetError {
        SetError::InDns {
            index,
            reason: Box::new(self),
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
#[serde(deny_unknown_fields)]
struct RawSet {
    #[allow(dead_code)]
    schema: u64,
    name: String,
    source: String,
    published: String,
    entries: Vec<RawEntry>,
    #[serde(default)]
    dns: Vec<RawDns>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    prefix: String,
    #[serde(default)]
    datacenter: Option<String>,
    purpose: String,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    ports: Option<Vec<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    name: String,
    #[serde(default)]
    datacenter: Option<String>,
    purpose: String,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    ports: Option<Vec<i64>>,
}

/// The parsed tags of an entry or DNS name.
struct Tags {
    datacenter: Option<DataCenter>,
    purpose: Purpose,
    direction: Direction,
    ports: Vec<u16>,
}

impl Tags {
    /// Parses the names and checks the ports of an entry or DNS name
    /// (errors without an index).
    fn parse(
        datacenter: Option<&str>,
        purpose: &str,
        direction: Option<&str>,
        ports: Option<&[i64]>,
    ) -> Result<Tags, SetError> {
        let datacenter = datacenter.map(DataCenter::from_str).transpose()?;
        let purpose: Purpose = purpose.parse()?;
        let direction = match direction {
            Some(d) => d.parse()?,
            None => purpose.default_direction(),
        };
        let ports = match ports {
            None => purpose.default_ports().to_vec(),
            Some([]) => return Err(SetError::EmptyPorts { index: None }),
            Some(list) => {
                let mut ports = list
                    .iter()
                    .map(|&p| {
                        u16::try_from(p)
                            .ok()
                            .filter(|&p| p != 0)
                            .ok_or(SetError::BadPort {
                                index: None,
                                value: p,
                            })
                    })
                    .collect::<Result<Vec<u16>, SetError>>()?;
                ports.sort_unstable();
                ports.dedup();
                ports
            }
        };
        Ok(Tags {
            datacenter,
            purpose,
            direction,
            ports,
        })
    }
}

/// Parses `"a.b.c.d/len"`, `"v6::/len"`, or a bare address (as a host prefix).
pub(crate) fn parse_prefix(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net);
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

/// Whether `name` is a host name with at least two labels, an alphabetic
/// top-level label, and at most a leading `*` wildcard label.
pub(crate) fn valid_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return false;
    }
    let last = labels[labels.len() - 1];
    if last.len() < 2 || !last.chars().all(|c| c.is_ascii_alphabetic()) {
        return false;
    }
    labels.iter().enumerate().all(|(i, label)| {
        (i == 0 && *label == "*")
            || (!label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    })
}

/// The built-in sets: name and embedded JSON, the default first.
const BUILTINS: [(&str, &str); 2] = [
    ("cas-2019-11", include_str!("../data/cas-2019-11.json")),
    ("cas-2017-07", include_str!("../data/cas-2017-07.json")),
];

/// Parses an embedded set.
///
/// # Panics
///
/// If the embedded data is invalid, which a unit test rules out.
fn parse_builtin((name, json): (&str, &str)) -> AddressSet {
    match AddressSet::from_json(json) {
        Ok(set) => set,
        Err(err) => panic!("embedded data/{name}.json is invalid: {err}"),
    }
}

/// A JSON string literal.
fn json_str(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| String::from("\"\""))
}

/// The fields after the prefix or name, as [`AddressSet::to_json`] writes them.
fn json_tags(
    datacenter: Option<DataCenter>,
    purpose: Purpose,
    direction: Direction,
    ports: &[u16],
) -> String {
    let dc = datacenter.map_or_else(|| "null".to_owned(), |d| json_str(d.as_str()));
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "\"datacenter\": {dc}, \"purpose\": {}, \"direction\": {}, \"ports\": [{}]",
        json_str(purpose.as_str()),
        json_str(direction.as_str()),
        ports.join(", ")
    )
}

impl AddressSet {
    /// The default built-in set, imported from the 2019-11-01 revision of
    /// the Cloud App Security "Network requirements" page
    /// (`data/cas-2019-11.json`, embedded at compile time).
    ///
    /// # Panics
    ///
    /// Only if the embedded data is invalid, which a unit test rules out.
    #[must_use]
    pub fn builtin() -> AddressSet {
        parse_builtin(BUILTINS[0])
    }

    /// Every built-in set, the default ([`AddressSet::builtin`],
    /// `cas-2019-11`) first, then `cas-2017-07`.
    ///
    /// # Panics
    ///
    /// Only if the embedded data is invalid, which a unit test rules out.
    #[must_use]
    pub fn builtins() -> Vec<AddressSet> {
        BUILTINS.into_iter().map(parse_builtin).collect()
    }

    /// The names of the built-in sets, the default first.
    #[must_use]
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTINS.iter().map(|&(name, _)| name).collect()
    }

    /// The built-in set called `name` (exactly, e.g. `cas-2017-07`).
    ///
    /// # Panics
    ///
    /// Only if the embedded data is invalid, which a unit test rules out.
    #[must_use]
    pub fn builtin_named(name: &str) -> Option<AddressSet> {
        BUILTINS
            .into_iter()
            .find(|&(n, _)| n == name)
            .map(parse_builtin)
    }

    /// A built-in set by name, or else a set file by path.
    ///
    /// # Errors
    ///
    /// [`SetError::Io`] if `name_or_path` is not a built-in name and the
    /// file cannot be read, [`SetError::File`] (wrapping the error of
    /// [`AddressSet::from_json`]) if it is not a valid set. Both display as
    /// `PATH: reason`.
    pub fn load(name_or_path: &str) -> Result<AddressSet, SetError> {
        if let Some(set) = AddressSet::builtin_named(name_or_path) {
            return Ok(set);
        }
        let text = std::fs::read_to_string(name_or_path).map_err(|err| {
            let mut message = format!("cannot read the set file: {err}");
            if err.kind() == std::io::ErrorKind::NotFound {
                message.push_str(&format!(
                    " (and it is not a built-in set: {})",
                    AddressSet::builtin_names().join(", ")
                ));
            }
            SetError::Io {
                path: name_or_path.to_owned(),
                message,
            }
        })?;
        AddressSet::from_json(&text).map_err(|err| SetError::File {
            path: name_or_path.to_owned(),
            reason: Box::new(err),
        })
    }

    /// Parses a schema-1 JSON address set (see the module documentation).
    ///
    /// # Errors
    ///
    /// [`SetError::Json`] if the text is not JSON of the expected shape,
    /// [`SetError::UnsupportedSchema`] if `schema` is not
    /// [`SCHEMA_VERSION`], and [`SetError::BadPrefix`],
    /// [`SetError::UnknownDataCenter`], [`SetError::UnknownPurpose`],
    /// [`SetError::UnknownDirection`], [`SetError::BadPort`] or
    /// [`SetError::EmptyPorts`] (naming the entry) for a bad entry;
    /// [`SetError::BadDnsName`] or [`SetError::InDns`] for a bad DNS name.
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
                let t = Tags::parse(
                    e.datacenter.as_deref(),
                    &e.purpose,
                    e.direction.as_deref(),
                    e.ports.as_deref(),
                )
                .map_err(|err| err.at_entry(index))?;
                Ok(Entry {
                    prefix,
                    datacenter: t.datacenter,
                    purpose: t.purpose,
                    direction: t.direction,
                    ports: t.ports,
                })
            })
            .collect::<Result<Vec<_>, SetError>>()?;
        let dns = raw
            .dns
            .into_iter()
            .enumerate()
            .map(|(index, d)| {
                if !valid_dns_name(&d.name) {
                    return Err(SetError::BadDnsName {
                        index,
                        text: d.name,
                    });
                }
                let t = Tags::parse(
                    d.datacenter.as_deref(),
                    &d.purpose,
                    d.direction.as_deref(),
                    d.ports.as_deref(),
                )
                .map_err(|err| err.at_dns(index))?;
                Ok(DnsName {
                    name: d.name,
                    datacenter: t.datacenter,
                    purpose: t.purpose,
                    direction: t.direction,
                    ports: t.ports,
                })
            })
            .collect::<Result<Vec<_>, SetError>>()?;
        Ok(AddressSet {
            name: raw.name,
            source: raw.source,
            published: raw.published,
            entries,
            dns,
        })
    }

    /// The canonical schema-1 text of the set: the layout of the files in
    /// `data/`, one entry or DNS name per line with every field written
    /// (`"datacenter": null` for every data center), ending with a newline.
    /// [`AddressSet::from_json`] reads it back to an equal set.
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut out = format!(
            "{{\n  \"schema\": {SCHEMA_VERSION},\n  \"name\": {},\n  \"source\": {},\n  \"published\": {},\n",
            json_str(&self.name),
            json_str(&self.source),
            json_str(&self.published)
        );
        let entries: Vec<String> = self
            .entries
            .iter()
            .map(|e| {
                format!(
                    "{{\"prefix\": {}, {}}}",
                    json_str(&e.prefix.to_string()),
                    json_tags(e.datacenter, e.purpose, e.direction, &e.ports)
                )
            })
            .collect();
        let dns: Vec<String> = self
            .dns
            .iter()
            .map(|d| {
                format!(
                    "{{\"name\": {}, {}}}",
                    json_str(&d.name),
                    json_tags(d.datacenter, d.purpose, d.direction, &d.ports)
                )
            })
            .collect();
        for (key, lines, last) in [("entries", entries, false), ("dns", dns, true)] {
            let comma = if last { "" } else { "," };
            if lines.is_empty() {
                out.push_str(&format!("  \"{key}\": []{comma}\n"));
            } else {
                out.push_str(&format!(
                    "  \"{key}\": [\n    {}\n  ]{comma}\n",
                    lines.join(",\n    ")
                ));
            }
        }
        out.push_str("}\n");
        out
    }

    /// Keeps the entries and DNS names of the given data centers, plus every
    /// one without a data center (global ranges such as the mail servers).
    pub fn retain_datacenters(&mut self, dcs: &[DataCenter]) {
        let keep = |dc: Option<DataCenter>| dc.is_none_or(|dc| dcs.contains(&dc));
        self.entries.retain(|e| keep(e.datacenter));
        self.dns.retain(|d| keep(d.datacenter));
    }

    /// Keeps the entries and DNS names of the given purposes (an empty
    /// slice keeps nothing).
    pub fn retain_purposes(&mut self, purposes: &[Purpose]) {
        self.entries.retain(|e| purposes.contains(&e.purpose));
        self.dns.retain(|d| purposes.contains(&d.purpose));
    }

    /// The distinct prefixes of the set, truncated to their network address,
    /// with every IPv4 range before every IPv6 range and each family sorted by
    /// address, then prefix length.
    ///
    /// Each range carries the union of the tags (data centers, purposes,
    /// ports) of the entries with that prefix and of the entries whose
    /// prefix strictly contains it, so a longest-prefix-match lookup that
    /// lands on the more specific prefix still reports the covering range's
    /// data centers, purposes and ports.
    ///
    /// Runs in O(n · L) hash lookups, where L (at most 32 or 128) is the
    /// number of distinct prefix lengths in use.
    #[must_use]
    pub fn ranges(&self) -> Vec<Range> {
        /// Data-center and purpose bit masks, and the ports.
        #[derive(Default, Clone)]
        struct Tags {
            dcs: u8,
            purposes: u8,
            ports: BTreeSet<u16>,
        }

        let mut own: HashMap<IpNet, Tags> = HashMap::with_capacity(self.entries.len());
        for e in &self.entries {
            let tags = own.entry(e.prefix.trunc()).or_default();
            if let Some(dc) = e.datacenter {
                tags.dcs |= dc.bit();
            }
            tags.purposes |= e.purpose.bit();
            tags.ports.extend(e.ports.iter().copied());
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
            .map(|(&net, tags)| {
                let mut all = tags.clone();
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
                        all.ports.extend(t.ports.iter().copied());
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
                    ports: all.ports,
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
        assert_eq!(AddressSet::from_json(BUILTINS[0].1).unwrap(), set);
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
                ports: vec![443],
            });
        }
        entries.push(Entry {
            prefix: net("10.0.0.0/8"),
            datacenter: Some(Us1),
            purpose: Portal,
            direction: Direction::Outbound,
            ports: vec![443],
        });
        let set = AddressSet {
            name: "synthetic".into(),
            source: "test".into(),
            published: "2024-01-01".into(),
            entries,
            dns: Vec::new(),
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
             such as 198.51.100.0/24 or 2001:db8::/32)"
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

        let entry = AddressSet::builtin().entries[0].clone();
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            r#"{"prefix":"13.64.26.88/32","datacenter":"US1","purpose":"portal","direction":"outbound","ports":[443]}"#
        );
    }
    #[test]
    fn purpose_defaults() {
        let got: Vec<(Purpose, &[u16], Direction)> = Purpose::ALL
            .iter()
            .map(|&p| (p, p.default_ports(), p.default_direction()))
            .collect();
        let out = Direction::Outbound;
        let inb = Direction::Inbound;
        let want: Vec<(Purpose, &[u16], Direction)> = vec![
            (Portal, &[443], out),
            (AccessSessionControls, &[443], out),
            (SiemAgent, &[443], out),
            (AppConnector, &[443], inb),
            (Dlp, &[11344], inb),
            (Mail, &[25], inb),
            (LogCollector, &[443], out),
            (AuthGateway, &[443], out),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn builtins_in_order() {
        let sets = AddressSet::builtins();
        let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["cas-2019-11", "cas-2017-07"]);
        assert_eq!(AddressSet::builtin_names(), names);
        assert_eq!(sets[0], AddressSet::builtin());
        for set in &sets {
            assert_eq!(AddressSet::builtin_named(&set.name).as_ref(), Some(set));
            assert_eq!(AddressSet::load(&set.name).as_ref(), Ok(set));
        }
        assert_eq!(AddressSet::builtin_named("cas-2020-01"), None);
        let old = &sets[1];
        assert_eq!(old.source, "network-requirements-2017-07.md");
        assert_eq!(old.published, "2017-07-03");
        assert_eq!(old.entries.len(), 21);
        assert!(old.dns.is_empty());
        assert_eq!(distinct(old, AppConnector, None), 10);
        assert_eq!(distinct(old, Dlp, None), 10);
        assert_eq!(distinct(old, Portal, None), 1);
    }

    /// The data files are exactly what the canonical writer produces.
    #[test]
    fn data_files_are_canonical() {
        for (name, json) in BUILTINS {
            let set = AddressSet::from_json(json).unwrap();
            assert_eq!(set.name, name);
            assert!(set.to_json() == json, "data/{name}.json is not canonical");
            assert_eq!(AddressSet::from_json(&set.to_json()).unwrap(), set);
        }
    }

    #[test]
    fn builtin_dns_and_ports() {
        let set = AddressSet::builtin();
        assert_eq!(set.dns.len(), 48);
        let find = |name: &str, purpose: Purpose| {
            set.dns
                .iter()
                .find(|d| d.name == name && d.purpose == purpose)
                .unwrap_or_else(|| panic!("{name} {purpose}"))
                .clone()
        };
        let d = find("*.us.portal.cloudappsecurity.com", Portal);
        assert_eq!(d.datacenter, Some(Us1));
        assert_eq!(d.ports, [443]);
        let d = find("adaprodconsole.blob.core.windows.net", LogCollector);
        assert_eq!(
            (d.datacenter, d.direction),
            (Some(Us1), Direction::Outbound)
        );
        assert_eq!(d.ports, [443]);
        for purpose in [SiemAgent, LogCollector] {
            for name in ["ocsp.msocsp.com", "ocsp.digicert.com"] {
                let d = find(name, purpose);
                assert_eq!((d.datacenter, d.ports), (None, vec![80]));
            }
        }
        let ranges = set.ranges();
        assert_eq!(
            range_of(&ranges, "13.64.196.27/32").ports,
            BTreeSet::from([443, 11344])
        );
        assert_eq!(
            range_of(&ranges, "65.55.234.192/26").ports,
            BTreeSet::from([25])
        );
        assert_eq!(
            range_of(&ranges, "13.80.125.22/32").ports,
            BTreeSet::from([443])
        );
    }

    const WITH_DNS: &str = r#"{
      "schema": 1,
      "name": "lab \"quoted\"",
      "source": "test",
      "published": "2024-01-01",
      "entries": [
        {"prefix": "10.0.0.0/8", "datacenter": "US1", "purpose": "portal", "ports": [8443, 443, 443]},
        {"prefix": "10.1.0.0/16", "purpose": "dlp"},
        {"prefix": "10.1.2.0/24", "purpose": "mail", "direction": "outbound", "ports": [587]},
        {"prefix": "2001:db8::/32", "purpose": "siem-agent", "ports": null}
      ],
      "dns": [
        {"name": "*.cas.ms", "purpose": "access-session-controls"},
        {"name": "ocsp.digicert.com", "datacenter": "eu1", "purpose": "log-collector", "direction": "Outbound", "ports": [80]}
      ]
    }"#;

    #[test]
    fn optional_fields_and_dns() {
        let set = AddressSet::from_json(WITH_DNS).unwrap();
        assert_eq!(set.name, "lab \"quoted\"");
        let e = &set.entries;
        assert_eq!(
            (e[0].direction, e[0].ports.clone()),
            (Direction::Outbound, vec![443, 8443])
        );
        assert_eq!(
            (e[1].direction, e[1].ports.clone()),
            (Direction::Inbound, vec![11344])
        );
        assert_eq!(
            (e[2].direction, e[2].ports.clone()),
            (Direction::Outbound, vec![587])
        );
        assert_eq!(e[3].ports, [443]);
        assert_eq!(
            set.dns,
            [
                DnsName {
                    name: "*.cas.ms".into(),
                    datacenter: None,
                    purpose: AccessSessionControls,
                    direction: Direction::Outbound,
                    ports: vec![443],
                },
                DnsName {
                    name: "ocsp.digicert.com".into(),
                    datacenter: Some(Eu1),
                    purpose: LogCollector,
                    direction: Direction::Outbound,
                    ports: vec![80],
                },
            ]
        );
        let ranges = set.ranges();
        assert_eq!(
            range_of(&ranges, "10.0.0.0/8").ports,
            BTreeSet::from([443, 8443])
        );
        assert_eq!(
            range_of(&ranges, "10.1.0.0/16").ports,
            BTreeSet::from([443, 8443, 11344])
        );
        assert_eq!(
            range_of(&ranges, "10.1.2.0/24").ports,
            BTreeSet::from([443, 587, 8443, 11344])
        );
        assert_eq!(
            range_of(&ranges, "2001:db8::/32").ports,
            BTreeSet::from([443])
        );

        let json = set.to_json();
        assert_eq!(
            json,
            r#"{
  "schema": 1,
  "name": "lab \"quoted\"",
  "source": "test",
  "published": "2024-01-01",
  "entries": [
    {"prefix": "10.0.0.0/8", "datacenter": "US1", "purpose": "portal", "direction": "outbound", "ports": [443, 8443]},
    {"prefix": "10.1.0.0/16", "datacenter": null, "purpose": "dlp", "direction": "inbound", "ports": [11344]},
    {"prefix": "10.1.2.0/24", "datacenter": null, "purpose": "mail", "direction": "outbound", "ports": [587]},
    {"prefix": "2001:db8::/32", "datacenter": null, "purpose": "siem-agent", "direction": "outbound", "ports": [443]}
  ],
  "dns": [
    {"name": "*.cas.ms", "datacenter": null, "purpose": "access-session-controls", "direction": "outbound", "ports": [443]},
    {"name": "ocsp.digicert.com", "datacenter": "EU1", "purpose": "log-collector", "direction": "outbound", "ports": [80]}
  ]
}
"#
        );
        assert_eq!(AddressSet::from_json(&json).unwrap(), set);

        let empty = AddressSet {
            name: "empty".into(),
            source: "s".into(),
            published: "2024-01-01".into(),
            entries: Vec::new(),
            dns: Vec::new(),
        };
        assert_eq!(
            empty.to_json(),
            "{\n  \"schema\": 1,\n  \"name\": \"empty\",\n  \"source\": \"s\",\n  \
             \"published\": \"2024-01-01\",\n  \"entries\": [],\n  \"dns\": []\n}\n"
        );
        assert_eq!(AddressSet::from_json(&empty.to_json()).unwrap(), empty);
    }

    #[test]
    fn retain_purposes_and_datacenters_filter_dns() {
        let mut set = AddressSet::builtin();
        set.retain_purposes(&[Mail, LogCollector]);
        assert_eq!(set.entries.len(), 7);
        assert_eq!(set.dns.len(), 1 + 8);
        assert!(set
            .dns
            .iter()
            .all(|d| matches!(d.purpose, Mail | LogCollector)));
        set.retain_datacenters(&[Eu2]);
        let dns: Vec<&str> = set.dns.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            dns,
            [
                "mail1.cloudappsecurity.com",
                "prod4uksconsole1.blob.core.windows.net",
                "ocsp.msocsp.com",
                "ocsp.digicert.com",
            ]
        );
        set.retain_purposes(&[]);
        assert!(set.entries.is_empty() && set.dns.is_empty());
    }

    fn dns_doc(name: &str) -> String {
        format!(
            r#"{{"schema": 1, "name": "t", "source": "s", "published": "p", "entries": [], "dns": [{{"name": "a.cas.ms", "purpose": "portal"}}, {name}]}}"#
        )
    }

    #[test]
    fn port_and_dns_errors() {
        let bad = |ports: &str| {
            err(&doc(&format!(
                r#"{{"prefix": "10.0.0.1", "purpose": "portal", "ports": {ports}}}"#
            )))
        };
        assert_eq!(
            bad("[443, 0]"),
            "entries[1]: invalid port 0 (ports are 1 to 65535)"
        );
        assert_eq!(
            bad("[65536]"),
            "entries[1]: invalid port 65536 (ports are 1 to 65535)"
        );
        assert_eq!(
            bad("[-1]"),
            "entries[1]: invalid port -1 (ports are 1 to 65535)"
        );
        assert_eq!(
            bad("[]"),
            "entries[1]: empty port list (omit \"ports\" to use the purpose's default ports)"
        );
        assert_eq!(
            AddressSet::from_json(&doc(
                r#"{"prefix": "10.0.0.1", "purpose": "portal", "ports": []}"#
            ))
            .unwrap_err(),
            SetError::EmptyPorts { index: Some(1) }
        );
        assert!(
            bad(r#"["443"]"#).starts_with("invalid address-set JSON at line 1, column "),
            "{}",
            bad(r#"["443"]"#)
        );
        // A misspelt key is an error, not the default ports.
        assert_eq!(
            err("{\"schema\": 1, \"name\": \"t\", \"source\": \"s\", \"published\": \"p\",\n\
                 \"entries\": [{\"prefix\": \"10.0.0.1\", \"purpose\": \"dlp\", \"port\": [1344]}]}"),
            "invalid address-set JSON at line 2, column 59: unknown field `port`, expected one \
             of `prefix`, `datacenter`, `purpose`, `direction`, `ports`"
        );

        assert_eq!(
            err(&dns_doc(
                r#"{"name": "https://x.cas.ms/", "purpose": "portal"}"#
            )),
            "dns[1]: invalid DNS name \"https://x.cas.ms/\" \
             (expected a host name such as portal.cloudappsecurity.com or *.cas.ms)"
        );
        for name in [
            "",
            "cas",
            "a..ms",
            "x.*.cas.ms",
            "-a.cas.ms",
            "a.cas.m5",
            "a b.ms",
        ] {
            let e = AddressSet::from_json(&dns_doc(&format!(
                r#"{{"name": "{name}", "purpose": "portal"}}"#
            )))
            .unwrap_err();
            assert_eq!(
                e,
                SetError::BadDnsName {
                    index: 1,
                    text: name.into()
                },
                "{name:?}"
            );
        }
        assert_eq!(
            err(&dns_doc(r#"{"name": "x.cas.ms", "purpose": "proxy"}"#)),
            "dns[1]: unknown purpose \"proxy\" (accepted: portal, access-session-controls, \
             siem-agent, app-connector, dlp, mail, log-collector, auth-gateway)"
        );
        assert_eq!(
            err(&dns_doc(
                r#"{"name": "x.cas.ms", "purpose": "portal", "datacenter": "XX"}"#
            )),
            "dns[1]: unknown data center \"XX\" (accepted: US1, US2, US3, EU1, EU2, Gov US1)"
        );
        assert_eq!(
            err(&dns_doc(
                r#"{"name": "x.cas.ms", "purpose": "portal", "direction": "in"}"#
            )),
            "dns[1]: unknown direction \"in\" (accepted: outbound, inbound)"
        );
        assert_eq!(
            AddressSet::from_json(&dns_doc(
                r#"{"name": "x.cas.ms", "purpose": "portal", "ports": [70000]}"#
            ))
            .unwrap_err(),
            SetError::InDns {
                index: 1,
                reason: Box::new(SetError::BadPort {
                    index: None,
                    value: 70000
                })
            }
        );
        assert!(err(&dns_doc(r#"{"name": "x.cas.ms"}"#)).contains("missing field `purpose`"));
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("cas-audit-addrset-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(&good, WITH_DNS).unwrap();
        let good = good.to_str().unwrap();
        assert_eq!(
            AddressSet::load(good).unwrap(),
            AddressSet::from_json(WITH_DNS).unwrap()
        );

        let bad = dir.join("bad.json");
        std::fs::write(
            &bad,
            doc(r#"{"prefix": "10.0.0.0/33", "purpose": "portal"}"#),
        )
        .unwrap();
        let bad = bad.to_str().unwrap();
        let e = AddressSet::load(bad).unwrap_err();
        assert_eq!(
            e,
            SetError::File {
                path: bad.into(),
                reason: Box::new(SetError::BadPrefix {
                    index: 1,
                    text: "10.0.0.0/33".into()
                })
            }
        );
        assert_eq!(
            e.to_string(),
            format!(
                "{bad}: entries[1]: invalid prefix \"10.0.0.0/33\" (expected an IP address or \
                 CIDR prefix such as 198.51.100.0/24 or 2001:db8::/32)"
            )
        );

        let missing = dir.join("missing.json");
        let missing = missing.to_str().unwrap();
        let e = AddressSet::load(missing).unwrap_err();
        assert!(
            matches!(&e, SetError::Io { path, .. } if path == missing),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "{missing}: cannot read the set file: No such file or directory (os error 2) \
                 (and it is not a built-in set: cas-2019-11, cas-2017-07)"
            )
        );
        let e = AddressSet::load(dir.to_str().unwrap()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}: cannot read the set file: ", dir.display())),
            "{e}"
        );
        assert!(!e.to_string().contains("built-in"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
