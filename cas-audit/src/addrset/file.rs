//! Set files: the JSON schema, reading (every error names its place) and
//! writing, and the built-in sets embedded at compile time.
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
//!   CIDR prefix without host bits: `13.64.196.27/24` is refused, naming
//!   the network (`13.64.196.0/24`) and the address (`13.64.196.27/32`) it
//!   might mean, rather than silently becoming either.
//! * `dns` (optional, default empty) lists DNS names as the page writes them,
//!   wildcards included (`*.cas.ms`).
//! * In both lists `datacenter` is optional: `null` or absent means every
//!   data center (for example the mail servers). `purpose` is required.
//!   `direction` and `ports` are optional; absent, they are the purpose's
//!   [`Purpose::default_direction`] and [`Purpose::default_ports`]. `ports`
//!   is a non-empty list of TCP ports (1 to 65535); it is stored sorted and
//!   deduplicated.
//! * Names ([`DataCenter`], [`Purpose`], [`Connection`]) are parsed
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

use std::str::FromStr;

use ipnet::IpNet;
use serde::Deserialize;

use super::{
    parse_prefix, valid_dns_name, AddressSet, Connection, DataCenter, DnsName, Entry, Purpose,
    SetError,
};

/// The schema version of the JSON format understood by [`AddressSet::from_json`].
pub const SCHEMA_VERSION: u64 = 1;

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
    direction: Connection,
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

/// The built-in sets: name and embedded JSON, the default first.
pub(super) const BUILTINS: [(&str, &str); 2] = [
    ("cas-2019-11", include_str!("../../data/cas-2019-11.json")),
    ("cas-2017-07", include_str!("../../data/cas-2017-07.json")),
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
    direction: Connection,
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
        let text =
            crate::host::fs::read_text(std::path::Path::new(name_or_path)).map_err(|err| {
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
                if prefix != prefix.trunc() {
                    return Err(SetError::HostBits {
                        index,
                        text: e.prefix.clone(),
                        network: prefix.trunc(),
                        address: IpNet::from(prefix.addr()),
                    });
                }
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
}
