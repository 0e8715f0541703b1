//! Set files: the JSON schema, reading (every error names its place) and
//! writing, and the built-in sets embedded at compile time.
//!
//! # Schema 2 (written since cas-audit reads Service Tags)
//!
//! ```json
//! {
//!   "schema": 2,
//!   "name": "cas-2024-02+tags-public-2025-11-10",
//!   "source": "network-requirements-2024-11-03.md + ServiceTags_Public_cn376_2025-11-10_mcas-excerpt.json",
//!   "published": "2025-11-10",
//!   "sources": [
//!     {"id": "page-2024-02-29", "kind": "page", "file": "network-requirements-2024-11-03.md", "published": "2024-02-29", "sha256": "402c1c2c..."},
//!     {"id": "tags-public-2025-11-10", "kind": "service-tags", "file": "ServiceTags_Public_cn376_2025-11-10_mcas-excerpt.json", "published": "2025-11-10",
//!      "cloud": "Public", "change_number": 376, "tags": [{"name": "MicrosoftCloudAppSecurity", "change_number": 13, "prefixes": 2302}], "sha256": "56f469ad..."}
//!   ],
//!   "entries": [
//!     {"prefix": "13.64.26.88/32", "datacenter": "US1", "purpose": "portal", "direction": "outbound", "ports": [443], "sources": ["page-2024-02-29"]},
//!     {"prefix": "13.64.16.129/32", "datacenter": null, "region": "westus", "cloud": "Public", "purpose": "app-connector", "direction": "inbound", "ports": [443], "sources": ["tags-public-2025-11-10"]},
//!     {"prefix": "2620:1ec:49::/48", "datacenter": null, "cloud": "Public", "purpose": "portal", "direction": "outbound", "ports": [443], "shared": true, "sources": ["tags-public-2025-11-10"]}
//!   ],
//!   "dns": [
//!     {"name": "*.us.portal.cloudappsecurity.com", "datacenter": "US1", "purpose": "portal", "direction": "outbound", "ports": [443], "sources": ["page-2024-02-29"]}
//!   ]
//! }
//! ```
//!
//! * `schema` (required) is `1` or `2`; it is checked before anything else.
//! * `name`, `source` (where the addresses were taken from: file names,
//!   joined by ` + ` for a merged set) and `published` (`YYYY-MM-DD`, the
//!   latest source's date) are required strings.
//! * `sources` (optional) lists the inputs ([`Source`]): `id` (unique),
//!   `kind` (`page`, `service-tags`, `set`), `file`, `published`, and as
//!   known `cloud`, `change_number` (the file's), `tags` (each Service Tag
//!   used: `name`, `change_number`, `prefixes`) and `sha256` (of the file:
//!   what identifies a version). Absent or empty, the set file itself is
//!   the one source (`set-<name>`).
//! * `entries` (required) lists addresses and ranges. `prefix` (required) is
//!   an IPv4 or IPv6 address (stored as a `/32` or `/128` host prefix) or a
//!   CIDR prefix without host bits: `13.64.196.27/24` is refused, naming
//!   the network (`13.64.196.0/24`) and the address (`13.64.196.27/32`) it
//!   might mean, rather than silently becoming either.
//! * `dns` (optional, default empty) lists DNS names as the page writes them,
//!   wildcards included (`*.cas.ms`).
//! * In both lists `datacenter` is optional: `null` or absent means every
//!   data center (for example the mail servers) or none given. `purpose` is
//!   required. `direction` and `ports` are optional; absent, they are the
//!   purpose's [`Purpose::default_direction`] and
//!   [`Purpose::default_ports`]. `ports` is a non-empty list of TCP ports (1
//!   to 65535); it is stored sorted and deduplicated. `sources` (optional)
//!   names the ids of the sources that list it; absent, every source of the
//!   set (the writer leaves it out when the set has one source).
//! * Entries only: `region` (an Azure region, [`Region`]), `cloud` (as
//!   Service Tags spell it) and `shared` (`true`: other Microsoft services
//!   use the address too) are optional.
//! * Names ([`DataCenter`], [`Purpose`], [`Connection`], [`Region`]) are
//!   parsed case-insensitively by their [`FromStr`] implementations.
//! * Unknown keys are rejected (a misspelt `"port"` would otherwise silently
//!   mean the default ports).
//!
//! # Schema 1 (still read)
//!
//! Schema 1 is schema 2 without `sources`, and without `region`, `cloud`,
//! `shared` and `sources` in the entries: the set file is the one source.
//!
//! Every error says where it is: JSON syntax and shape errors give the line
//! and column, entry errors name the entry (`entries[3]: ...`,
//! `dns[0]: ...`), and [`AddressSet::load`] prefixes the file name.
//! [`AddressSet::to_json`] writes the canonical layout of the files in
//! `data/`: one source, entry or DNS name per line, every required field
//! written.

use std::{collections::HashSet, str::FromStr};

use serde::Deserialize;

use super::{
    host_bits, parse_prefix, valid_dns_name, AddressSet, Connection, DataCenter, DnsName, Entry,
    Purpose, Region, SetError, Source,
};

/// The schema version [`AddressSet::to_json`] writes.
pub const SCHEMA_VERSION: u64 = 2;

/// Every schema version [`AddressSet::from_json`] reads.
pub const SCHEMA_VERSIONS: [u64; 2] = [1, 2];

/// Just the version field, read before the rest of the document.
#[derive(Deserialize)]
struct RawHeader {
    schema: u64,
}

/// A schema-1 or 2 document with its names still as text, so that errors
/// can say which entry is wrong (what schema 1 lacks is rejected by
/// [`AddressSet::from_json`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSet {
    #[allow(dead_code)]
    schema: u64,
    name: String,
    source: String,
    published: String,
    #[serde(default)]
    sources: Option<Vec<Source>>,
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
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    cloud: Option<String>,
    purpose: String,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    ports: Option<Vec<i64>>,
    #[serde(default)]
    shared: Option<bool>,
    #[serde(default)]
    sources: Option<Vec<String>>,
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
    #[serde(default)]
    sources: Option<Vec<String>>,
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

/// The sources an entry names: checked against the set's, sorted; absent,
/// all of them.
fn entry_sources(named: Option<Vec<String>>, ids: &HashSet<&str>) -> Result<Vec<String>, SetError> {
    let mut list = match named {
        None => ids.iter().map(|s| (*s).to_owned()).collect(),
        Some(list) => {
            if let Some(bad) = list.iter().find(|i| !ids.contains(i.as_str())) {
                return Err(SetError::UnknownSource {
                    index: None,
                    id: bad.clone(),
                });
            }
            list
        }
    };
    list.sort();
    list.dedup();
    Ok(list)
}

/// Fields schema 1 does not have, named for the error.
fn schema1_extra(raw: &RawSet) -> Option<String> {
    if raw.sources.is_some() {
        return Some("sources".into());
    }
    raw.entries.iter().enumerate().find_map(|(i, e)| {
        let field = if e.region.is_some() {
            "region"
        } else if e.cloud.is_some() {
            "cloud"
        } else if e.shared.is_some() {
            "shared"
        } else if e.sources.is_some() {
            "sources"
        } else {
            return None;
        };
        Some(format!("entries[{i}].{field}"))
    })
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

/// The fields after the prefix or name, as [`AddressSet::to_json`] writes
/// them; `place` (the region and cloud, or nothing) comes after the data
/// center.
fn json_tags(
    datacenter: Option<DataCenter>,
    place: &str,
    purpose: Purpose,
    direction: Connection,
    ports: &[u16],
) -> String {
    let dc = datacenter.map_or_else(|| "null".to_owned(), |d| json_str(d.as_str()));
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "\"datacenter\": {dc}{place}, \"purpose\": {}, \"direction\": {}, \"ports\": [{}]",
        json_str(purpose.as_str()),
        json_str(direction.as_str()),
        ports.join(", ")
    )
}

/// A source on one line, fields in the documented order.
fn source_line(s: &Source) -> String {
    let mut out = format!(
        "{{\"id\": {}, \"kind\": {}, \"file\": {}, \"published\": {}",
        json_str(&s.id),
        json_str(s.kind.as_str()),
        json_str(&s.file),
        json_str(&s.published)
    );
    if let Some(c) = &s.cloud {
        out.push_str(&format!(", \"cloud\": {}", json_str(c)));
    }
    if let Some(n) = s.change_number {
        out.push_str(&format!(", \"change_number\": {n}"));
    }
    if !s.tags.is_empty() {
        let tags: Vec<String> = s
            .tags
            .iter()
            .map(|t| {
                let n = t
                    .change_number
                    .map_or_else(String::new, |n| format!(", \"change_number\": {n}"));
                format!(
                    "{{\"name\": {}{n}, \"prefixes\": {}}}",
                    json_str(&t.name),
                    t.prefixes
                )
            })
            .collect();
        out.push_str(&format!(", \"tags\": [{}]", tags.join(", ")));
    }
    if let Some(h) = &s.sha256 {
        out.push_str(&format!(", \"sha256\": {}", json_str(h)));
    }
    out.push('}');
    out
}

/// `, "sources": [...]` when entries name their sources (a set of several).
fn json_sources(ids: &[String], several: bool) -> String {
    if !several {
        return String::new();
    }
    let ids: Vec<String> = ids.iter().map(|i| json_str(i)).collect();
    format!(", \"sources\": [{}]", ids.join(", "))
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

    /// Parses a schema-1 or schema-2 JSON address set (see the module
    /// documentation).
    ///
    /// # Errors
    ///
    /// [`SetError::Json`] if the text is not JSON of the expected shape,
    /// [`SetError::UnsupportedSchema`] if `schema` is not one of
    /// [`SCHEMA_VERSIONS`], [`SetError::DuplicateSource`] for two sources of
    /// one id, and [`SetError::BadPrefix`], [`SetError::UnknownDataCenter`],
    /// [`SetError::BadRegion`], [`SetError::UnknownPurpose`],
    /// [`SetError::UnknownDirection`], [`SetError::BadPort`],
    /// [`SetError::EmptyPorts`] or [`SetError::UnknownSource`] (naming the
    /// entry) for a bad entry; [`SetError::BadDnsName`] or
    /// [`SetError::InDns`] for a bad DNS name.
    pub fn from_json(text: &str) -> Result<AddressSet, SetError> {
        let header: RawHeader = serde_json::from_str(text)?;
        if !SCHEMA_VERSIONS.contains(&header.schema) {
            return Err(SetError::UnsupportedSchema {
                found: header.schema,
            });
        }
        let raw: RawSet = serde_json::from_str(text)?;
        if header.schema == 1 {
            if let Some(field) = schema1_extra(&raw) {
                return Err(SetError::Json {
                    line: 0,
                    column: 0,
                    message: format!("{field} is a schema-2 field (this set says \"schema\": 1)"),
                });
            }
        }
        let sources = match raw.sources {
            Some(list) if !list.is_empty() => list,
            _ => vec![Source::of_schema1(&raw.name, &raw.source, &raw.published)],
        };
        let mut ids = HashSet::new();
        for (index, s) in sources.iter().enumerate() {
            if !ids.insert(s.id.as_str()) {
                return Err(SetError::DuplicateSource {
                    index,
                    id: s.id.clone(),
                });
            }
        }
        let entries = raw
            .entries
            .into_iter()
            .enumerate()
            .map(|(index, e)| {
                let prefix = parse_prefix(&e.prefix).ok_or_else(|| SetError::BadPrefix {
                    index,
                    text: e.prefix.clone(),
                })?;
                if let Some((network, address)) = host_bits(&prefix) {
                    return Err(SetError::HostBits {
                        index,
                        text: e.prefix.clone(),
                        network,
                        address,
                    });
                }
                let t = Tags::parse(
                    e.datacenter.as_deref(),
                    &e.purpose,
                    e.direction.as_deref(),
                    e.ports.as_deref(),
                )
                .map_err(|err| err.at_entry(index))?;
                let region = e
                    .region
                    .as_deref()
                    .map(Region::from_str)
                    .transpose()
                    .map_err(|err| err.at_entry(index))?;
                Ok(Entry {
                    prefix,
                    datacenter: t.datacenter,
                    region,
                    cloud: e.cloud.filter(|c| !c.trim().is_empty()),
                    purpose: t.purpose,
                    direction: t.direction,
                    ports: t.ports,
                    shared: e.shared.unwrap_or(false),
                    sources: entry_sources(e.sources, &ids).map_err(|err| err.at_entry(index))?,
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
                    sources: entry_sources(d.sources, &ids).map_err(|err| err.at_dns(index))?,
                })
            })
            .collect::<Result<Vec<_>, SetError>>()?;
        Ok(AddressSet {
            name: raw.name,
            source: raw.source,
            published: raw.published,
            sources,
            entries,
            dns,
        })
    }

    /// The canonical schema-2 text of the set: the layout of the files in
    /// `data/`, one source, entry or DNS name per line with every required
    /// field written (`"datacenter": null` for every data center; `region`,
    /// `cloud`, `shared` when set; `sources` when the set has several),
    /// ending with a newline. [`AddressSet::from_json`] reads it back to an
    /// equal set (entries of a one-source set name that source).
    #[must_use]
    pub fn to_json(&self) -> String {
        let several = self.sources.len() > 1;
        let mut out = format!(
            "{{\n  \"schema\": {SCHEMA_VERSION},\n  \"name\": {},\n  \"source\": {},\n  \"published\": {},\n",
            json_str(&self.name),
            json_str(&self.source),
            json_str(&self.published)
        );
        let sources: Vec<String> = self.sources.iter().map(source_line).collect();
        let entries: Vec<String> = self
            .entries
            .iter()
            .map(|e| {
                let mut place = String::new();
                if let Some(r) = &e.region {
                    place.push_str(&format!(", \"region\": {}", json_str(r.as_str())));
                }
                if let Some(c) = &e.cloud {
                    place.push_str(&format!(", \"cloud\": {}", json_str(c)));
                }
                let mut tags = json_tags(e.datacenter, &place, e.purpose, e.direction, &e.ports);
                if e.shared {
                    tags.push_str(", \"shared\": true");
                }
                format!(
                    "{{\"prefix\": {}, {tags}{}}}",
                    json_str(&e.prefix.to_string()),
                    json_sources(&e.sources, several)
                )
            })
            .collect();
        let dns: Vec<String> = self
            .dns
            .iter()
            .map(|d| {
                format!(
                    "{{\"name\": {}, {}{}}}",
                    json_str(&d.name),
                    json_tags(d.datacenter, "", d.purpose, d.direction, &d.ports),
                    json_sources(&d.sources, several)
                )
            })
            .collect();
        for (key, lines, last) in [
            ("sources", sources, false),
            ("entries", entries, false),
            ("dns", dns, true),
        ] {
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
