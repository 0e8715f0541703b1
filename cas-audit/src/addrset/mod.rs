//! Address sets: the IP addresses, CIDR ranges and DNS names that Microsoft
//! Defender for Cloud Apps (formerly Cloud App Security, "CAS") documents as
//! network requirements, tagged with the data center, purpose, direction and
//! ports they belong to. No kernel, no command line here.
//!
//! - this module: [`AddressSet`], [`Entry`], [`DnsName`];
//! - [`tags`]: [`DataCenter`], [`Region`], [`Purpose`], [`Connection`] (who
//!   connects to whom);
//! - [`source`]: where entries come from ([`Source`]: a page, a Service
//!   Tags file, a set file) and merging sets ([`AddressSet::merge`]);
//! - [`select`]: the part of a set a command works on ([`Selection`]);
//! - [`file`](mod@file): the set-file schema, reading and writing, the built-in sets;
//! - [`ranges`]: a set as distinct prefixes with their tags, for the tries;
//! - [`names`]: the set's DNS names as a matcher (exact, `*.` wildcards);
//! - [`import`], [`export`], [`diff`]: from pages and Service Tags, to
//!   firewalls, between versions.
//!
//! # Built-in sets
//!
//! [`AddressSet::builtins`] are the sets imported (by
//! [`import::import_page`]) from the published "Network requirements"
//! pages: `cas-2019-11` (November 2019, the default, [`AddressSet::builtin`])
//! and `cas-2017-07` (July 2017). [`AddressSet::ranges`] turns a set into the
//! distinct prefixes to load into a longest-prefix-match table.

pub mod diff;
pub mod export;
pub mod file;
pub mod import;
pub mod names;
pub mod ranges;
pub mod select;
pub mod source;
pub mod tags;

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

pub use self::{
    file::SCHEMA_VERSION,
    ranges::Range,
    select::{Need, Selection},
    source::{Source, SourceKind, TagVersion},
    tags::{datacenter_text, Connection, DataCenter, Purpose, Region, NO_DATACENTER},
};

/// One documented address or range.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Entry {
    /// The address (as a host prefix, `/32` or `/128`) or CIDR range,
    /// without host bits (a set file with them is refused).
    pub prefix: IpNet,
    /// The data center it belongs to, or `None` for ranges used by every data
    /// center (such as the mail servers) and for ranges the source gives no
    /// data center (Service Tags, the pages' per-region proxy lists).
    pub datacenter: Option<DataCenter>,
    /// The Azure region the source places it in (a regional Service Tag,
    /// a page's "West Europe: ..." list), if it gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    /// The Azure cloud the source places it in (`Public`,
    /// `AzureGovernment`, `China`, as Service Tags files spell it), if it
    /// gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud: Option<String>,
    /// Why the address is needed.
    pub purpose: Purpose,
    /// Which way the traffic flows.
    pub direction: Connection,
    /// The TCP ports of the traffic: sorted, deduplicated and non-empty
    /// (the purpose's [`Purpose::default_ports`] unless the set says
    /// otherwise).
    pub ports: Vec<u16>,
    /// The address is not the service's alone: other Microsoft services
    /// use it too (the `AzureFrontDoor.MicrosoftSecurity` tag, shared with
    /// Intune and other Microsoft security services). Traffic to it is not
    /// proof of Defender for Cloud Apps traffic.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// Ids of the set's [`Source`]s that list it, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

impl Entry {
    /// An entry with the purpose's default direction and ports, no region,
    /// cloud or source.
    #[must_use]
    pub fn new(prefix: IpNet, datacenter: Option<DataCenter>, purpose: Purpose) -> Entry {
        Entry {
            prefix,
            datacenter,
            region: None,
            cloud: None,
            purpose,
            direction: purpose.default_direction(),
            ports: purpose.default_ports().to_vec(),
            shared: false,
            sources: Vec::new(),
        }
    }

    /// The Azure region it is in: its own, else its data center's
    /// ([`DataCenter::region`]); `None` for an entry of every data center.
    #[must_use]
    pub fn location(&self) -> Option<Region> {
        tags::location(self.datacenter, self.region.as_ref())
    }
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
    pub direction: Connection,
    /// The TCP ports: sorted, deduplicated and non-empty.
    pub ports: Vec<u16>,
    /// Ids of the set's [`Source`]s that list it, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

/// A named list of [`Entry`] and [`DnsName`] values with where they come
/// from, as loaded from a set file (see [`file`](mod@file)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSet {
    /// Short identifier, e.g. `cas-2019-11`.
    pub name: String,
    /// Where the addresses were taken from: the file name of the page or
    /// Service Tags file, or the names of the merged ones joined by ` + `.
    pub source: String,
    /// Publication date of the source, the latest of merged sources (ISO
    /// 8601 `YYYY-MM-DD`).
    pub published: String,
    /// The inputs the entries come from, each with its version.
    pub sources: Vec<Source>,
    /// The address entries, in document order.
    pub entries: Vec<Entry>,
    /// The DNS names, in document order.
    pub dns: Vec<DnsName>,
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
        "unsupported address-set schema version {found} (this build understands schemas 1 and 2)"
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
    /// An entry's prefix has bits set after its length
    /// (`13.64.196.27/24`): it may mean the network or the one address, so
    /// it is refused rather than guessed.
    #[error(
        "entries[{index}]: prefix {text:?} has host bits set: the network is {network} \
         (write that, or {address} for the one address)"
    )]
    HostBits {
        /// 0-based position of the entry in `entries`.
        index: usize,
        /// The prefix as written.
        text: String,
        /// The network it would be truncated to.
        network: IpNet,
        /// The address as a host prefix.
        address: IpNet,
    },
    /// A data center name is not one of [`DataCenter::ALL`].
    #[error(
        "{}unknown data center {value:?} (accepted: US1, US2, US3, EU1, EU2, Gov US1, GCC, GCC High)",
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
         app-connector, dlp, mail, log-collector, auth-gateway, unknown)",
        entry_context(.index)
    )]
    UnknownPurpose {
        /// 0-based position of the entry in `entries`, if it came from an
        /// entry.
        index: Option<usize>,
        /// The offending text.
        value: String,
    },
    /// A region is not an Azure region name ([`Region`]'s `FromStr`).
    #[error(
        "{}invalid region {value:?} (expected an Azure region such as westeurope or \"West Europe\")",
        entry_context(.index)
    )]
    BadRegion {
        /// 0-based position of the entry in `entries`, if it came from an
        /// entry.
        index: Option<usize>,
        /// The offending text.
        value: String,
    },
    /// An entry names a source the set does not list.
    #[error("{}unknown source {id:?} (not in the set's \"sources\")", entry_context(.index))]
    UnknownSource {
        /// 0-based position of the entry in `entries`, if it came from an
        /// entry.
        index: Option<usize>,
        /// The id.
        id: String,
    },
    /// Two of the set's sources have the same id.
    #[error("sources[{index}]: duplicate id {id:?}")]
    DuplicateSource {
        /// 0-based position in `sources`.
        index: usize,
        /// The id.
        id: String,
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
    /// A selection that leaves nothing to work on: the set, then what
    /// each filter kept (`cas-2017-07 has 21 entries; --purpose auth-gateway
    /// kept 0`).
    #[error("{set}: nothing selected: {steps}")]
    EmptySelection {
        /// The set's name.
        set: String,
        /// What each step kept.
        steps: String,
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
            SetError::BadRegion { value, .. } => SetError::BadRegion { index, value },
            SetError::UnknownSource { id, .. } => SetError::UnknownSource { index, id },
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

/// What a prefix with host bits set (`13.64.196.27/24`) may mean: the
/// network (`13.64.196.0/24`) or the one address (`13.64.196.27/32`);
/// `None` when it has none. Such a prefix is refused wherever it is read
/// (set files, pages, Service Tags) rather than guessed.
pub(crate) fn host_bits(net: &IpNet) -> Option<(IpNet, IpNet)> {
    (*net != net.trunc()).then(|| (net.trunc(), IpNet::from(net.addr())))
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

#[cfg(test)]
mod tests;
