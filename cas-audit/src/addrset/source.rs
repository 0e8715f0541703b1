//! Where a set's entries come from, and merging sets.
//!
//! Every set lists its inputs as [`Source`]s: a "Network requirements" page,
//! a Service Tags file, or (for a schema-1 set file, which says no more) the
//! set file itself. A source is identified by its content: the SHA-256 of
//! the file as read, and its date (a page's `ms.date`, a Service Tags
//! file's date). Change numbers are kept as the file gives them, but they
//! identify nothing: Microsoft's are not monotonic between files.
//!
//! Each [`Entry`] and [`DnsName`] names the sources that list it, by id, so
//! that a merged set still says where every prefix came from.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AddressSet, DnsName, Entry};

/// What kind of input a [`Source`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// A "Network requirements" page (Markdown, as published).
    Page,
    /// An Azure Service Tags file (the weekly download or the REST form).
    ServiceTags,
    /// A set file that names no sources of its own (schema 1).
    Set,
}

impl SourceKind {
    /// `page`, `service-tags`, `set`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            SourceKind::Page => "page",
            SourceKind::ServiceTags => "service-tags",
            SourceKind::Set => "set",
        }
    }
}

/// The version of one Service Tag a source used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagVersion {
    /// The tag's name, e.g. `MicrosoftCloudAppSecurity.WestEurope`.
    pub name: String,
    /// Its `properties.changeNumber`, if the file gives a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_number: Option<u64>,
    /// How many address prefixes it listed.
    pub prefixes: usize,
}

/// One input of a set, with its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The id entries name it by, unique in the set, e.g.
    /// `page-2024-02-29`, `tags-public-2024-06-10`.
    pub id: String,
    /// What kind of input it is.
    pub kind: SourceKind,
    /// Its file name (no directory).
    pub file: String,
    /// Its date, `YYYY-MM-DD`: a page's `ms.date`; a Service Tags file's
    /// date (from its name, else its modification time).
    pub published: String,
    /// The cloud a Service Tags file is for (`Public`, `AzureGovernment`,
    /// `China`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<String>,
    /// A Service Tags file's top-level `changeNumber`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_number: Option<u64>,
    /// The Service Tags it used, with their change numbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<TagVersion>,
    /// SHA-256 of the file as read (lower-case hex): the version's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Source {
    /// A source of `kind` read from `file` (its name), dated `published`,
    /// with the SHA-256 of `text`; its id is `<kind>-<published>` (`page-`,
    /// `tags-`; the cloud comes after `tags-` when given).
    #[must_use]
    pub fn new(kind: SourceKind, file: &str, published: &str, text: &str) -> Source {
        Source {
            id: format!("{}-{published}", short(kind)),
            kind,
            file: file.to_owned(),
            published: published.to_owned(),
            cloud: None,
            change_number: None,
            tags: Vec::new(),
            sha256: Some(sha256_hex(text.as_bytes())),
        }
    }

    /// The stand-in source of a schema-1 set file: its `source` text and
    /// date, id `set-<name>`.
    #[must_use]
    pub fn of_schema1(name: &str, source: &str, published: &str) -> Source {
        Source {
            id: format!("set-{name}"),
            kind: SourceKind::Set,
            file: source.to_owned(),
            published: published.to_owned(),
            cloud: None,
            change_number: None,
            tags: Vec::new(),
            sha256: None,
        }
    }
}

/// `page`, `tags`, `set`: the first word of a source id.
fn short(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Page => "page",
        SourceKind::ServiceTags => "tags",
        SourceKind::Set => "set",
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An entry without its sources: what makes two entries the same.
type EntryKey = Entry;

/// The same with the sources cleared.
fn key_of(e: &Entry) -> EntryKey {
    Entry {
        sources: Vec::new(),
        ..e.clone()
    }
}

impl AddressSet {
    /// One set of all `sets`, in order: the union of their sources (one
    /// source per content: the same file given twice is one source; ids
    /// are made unique with `-2`, `-3`, ...), their entries and DNS names
    /// (the same prefix or name with the same tags once, with the union of
    /// its sources), named `name` or the sets' names joined by `+`, its
    /// `source` the sources' files joined by ` + `, dated by the latest
    /// set.
    #[must_use]
    pub fn merge(sets: &[AddressSet], name: Option<&str>) -> AddressSet {
        let mut sources: Vec<Source> = Vec::new();
        let mut entries: Vec<Entry> = Vec::new();
        let mut entry_at: HashMap<EntryKey, usize> = HashMap::new();
        let mut dns: Vec<DnsName> = Vec::new();
        let mut dns_at: HashMap<DnsName, usize> = HashMap::new();
        for set in sets {
            let mut id_map: HashMap<&str, String> = HashMap::new();
            for s in &set.sources {
                let same = sources
                    .iter()
                    .find(|m| s.sha256.is_some() && m.sha256 == s.sha256 && m.kind == s.kind);
                let id = match same {
                    Some(m) => m.id.clone(),
                    None => {
                        let mut id = s.id.clone();
                        let mut n = 2;
                        while sources.iter().any(|m| m.id == id) {
                            id = format!("{}-{n}", s.id);
                            n += 1;
                        }
                        sources.push(Source {
                            id: id.clone(),
                            ..s.clone()
                        });
                        id
                    }
                };
                id_map.insert(s.id.as_str(), id);
            }
            let remap = |ids: &[String]| -> Vec<String> {
                ids.iter()
                    .map(|i| id_map.get(i.as_str()).cloned().unwrap_or_else(|| i.clone()))
                    .collect()
            };
            for e in &set.entries {
                let at = *entry_at.entry(key_of(e)).or_insert_with(|| {
                    entries.push(key_of(e));
                    entries.len() - 1
                });
                add_sources(&mut entries[at].sources, remap(&e.sources));
            }
            for d in &set.dns {
                let key = DnsName {
                    sources: Vec::new(),
                    ..d.clone()
                };
                let at = *dns_at.entry(key.clone()).or_insert_with(|| {
                    dns.push(key);
                    dns.len() - 1
                });
                add_sources(&mut dns[at].sources, remap(&d.sources));
            }
        }
        let distinct = |parts: &mut dyn Iterator<Item = &str>, sep: &str| {
            let mut seen: Vec<&str> = Vec::new();
            for p in parts {
                if !seen.contains(&p) {
                    seen.push(p);
                }
            }
            seen.join(sep)
        };
        let source = distinct(&mut sources.iter().map(|s| s.file.as_str()), " + ");
        AddressSet {
            name: name.map_or_else(
                || distinct(&mut sets.iter().map(|s| s.name.as_str()), "+"),
                str::to_owned,
            ),
            source,
            published: sets
                .iter()
                .map(|s| s.published.as_str())
                .max()
                .unwrap_or_default()
                .to_owned(),
            sources,
            entries,
            dns,
        }
    }
}

/// Adds `more` to the sorted, deduplicated `ids`.
fn add_sources(ids: &mut Vec<String>, more: Vec<String>) {
    ids.extend(more);
    ids.sort();
    ids.dedup();
}
