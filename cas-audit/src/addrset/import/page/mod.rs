//! Importing a published "Network requirements" page (Markdown, as the docs
//! repository stores it) into an [`AddressSet`].
//!
//! The importer reads what a page *means*, not the layout of the versions it
//! was shown (2017, 2019, 2021, 2023, 2024, 2025 differ in every table):
//!
//! * **Date and name.** The front matter's `ms.date` (`MM/DD/YYYY`, leading
//!   zeros optional, or `YYYY-MM-DD`) becomes `published`; the default set
//!   name is `cas-YYYY-MM`.
//! * **Sections.** Every heading starts a section; its purposes are every
//!   purpose the heading names (case-insensitive): "portal" → `portal`;
//!   "access and session controls", "session control", "access control",
//!   "reverse proxy" → `access-session-controls`; "SIEM" → `siem-agent`;
//!   "app connector", "API connector" → `app-connector`; "DLP", "ICAP" →
//!   `dlp`; "mail", "email" → `mail`; "log collector" → `log-collector`;
//!   "authentication gateway" → `auth-gateway`; the 2017 page's "Cloud App
//!   Security System IP addresses" → `app-connector` and `dlp` (the page says
//!   they are used "when connecting using ICAP and when connecting App
//!   connectors"). So "Portal access, SIEM agent and log collector" gives
//!   three purposes and "App connector access and external DLP integration"
//!   two. An unrecognised heading nested deeper than a recognised one stays
//!   part of it ("Commercial customers", "US Government offerings").
//!   Unrecognised sections without addresses or names ("View your data
//!   center", "Next steps") are ignored; an unrecognised section *with*
//!   them is kept with purpose `unknown` and named in a warning: nothing is
//!   dropped.
//! * **Places.** A token's data center and Azure region come from, in
//!   order: a label before it in its cell or line (`West Europe: ip, ip`,
//!   `US Gov Virginia: ...`, `US1: ...`), its column's header cell (`| US1 |
//!   EU1 |`), its row's first cell when that holds no address (`US1`, `US1
//!   data center`, `**Gov US1**`, `GCC`, `GCC High`, with or without a
//!   header row; a first cell that is neither is the row's name, e.g.
//!   "**Session controls**"), and the last prose line before it ("For US
//!   Government GCC High customers, ..." → `GCC High`; a bare `US1` ...
//!   `EU2`; several or none: every data center). A region label is a name
//!   of [`KNOWN_REGIONS`](crate::addrset::tags::KNOWN_REGIONS); an entry
//!   with a region gets the region's cloud. A table whose header names a
//!   data-center column with an unknown label in a row is warned about and
//!   the row's addresses are kept without a data center.
//! * **Tables** (plain, `>`-quoted, indented inside list items, with or
//!   without a header row, with separator rows of any cell count): every
//!   cell is split at `<br>` (any spelling), then at white space, commas and
//!   semicolons (`,`, `;`, and their full-width forms); each word is an
//!   address, a CIDR prefix or a DNS name. A piece that is none of these
//!   and holds no prose address is reported as a warning.
//! * **Lists, code blocks and bare lines** whose every word is an address,
//!   prefix or DNS name (`- 65.55.234.192/26`, indented `*.cas.ms`, the 2017
//!   page's indented addresses with trailing spaces) are taken whole.
//! * **Prose** lines (notes included) give their IPv4/IPv6 addresses and
//!   the DNS names written as URLs or with a common top-level domain (`com`,
//!   `net`, `ms`, `us`, ...): the MailChimp server `198.2.134.139
//!   (mail1.cloudappsecurity.com)`, the OCSP hosts. A prose line that says
//!   `port N` gives those names and addresses port N (the OCSP hosts: 80);
//!   otherwise [`Purpose::default_ports`] applies. Names introduced as an
//!   example ("for example contoso.cloudappsecurity.com") are not
//!   requirements: they are skipped with a warning. A line naming a
//!   Service Tag (`MicrosoftCloudAppSecurity`,
//!   `AzureFrontDoor.MicrosoftSecurity`) is noted: the tag's addresses are
//!   in the Service Tags file ([`super::servicetags`]).
//! * **Markup** is removed from every token: `\*` escapes, `**bold**`,
//!   backticks, `https://` / `https:\//` schemes and paths, trailing `/`,
//!   stray `<`, sentence punctuation, curly quotes and other non-ASCII
//!   punctuation; link targets and images are dropped (only link text is
//!   read). Host names must have a lower-case top-level domain (a Service
//!   Tag name is not a host).
//! * **Typos.** A comma typed inside a dotted address (`40.83,.194.193` on
//!   the 2021 page) is read as a dot, with a warning.
//!
//! Connection and ports are the purpose's defaults
//! ([`Purpose::default_direction`], [`Purpose::default_ports`]) unless the
//! line says a port. Within a section, an address or name listed twice for
//! the same place is taken once. [`Import::counts`] says, per section,
//! purpose, data center and region, how many distinct addresses and names
//! were taken; [`Import::lines`] says what was done with every line that
//! held an address or a name.
//!
//! An address-looking token that does not parse (`13.64.26.888`,
//! `10.0.0.0/33`) is an [`ImportError::BadAddress`] naming its line.

use std::collections::HashSet;

mod reader;
mod words;

use self::reader::*;
use super::parse_date;

use ipnet::IpNet;

use crate::addrset::{
    host_bits, parse_prefix, valid_dns_name, AddressSet, DataCenter, DnsName, Entry, Purpose,
    Region, Source, SourceKind,
};

/// The result of [`import_page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The imported set.
    pub set: AddressSet,
    /// What was taken, per section, purpose, data center and region:
    /// sections in page order, then the section's purposes, then places
    /// (no data center first, then [`DataCenter::ALL`] order; no region
    /// first, then by name). Only combinations with at least one address
    /// or name appear.
    pub counts: Vec<SectionCount>,
    /// Every line that held an address or a name (or a label, a repair, a
    /// Service Tag): what was done with it, in line order.
    pub lines: Vec<LineReport>,
    /// What needs a look: sections kept as `unknown`, example names
    /// skipped, table cells that are not addresses, unknown data-center
    /// labels, repaired typos.
    pub warnings: Vec<String>,
}

/// The distinct addresses and DNS names taken from one section for one
/// purpose and place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionCount {
    /// The section's heading, markup removed.
    pub section: String,
    /// The purpose its entries were tagged with.
    pub purpose: Purpose,
    /// The data center (`None`: every data center, or none given).
    pub datacenter: Option<DataCenter>,
    /// The Azure region the page gives, if any.
    pub region: Option<Region>,
    /// Distinct addresses and prefixes.
    pub addresses: usize,
    /// Distinct DNS names.
    pub dns_names: usize,
}

/// What the importer did with one line of the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineReport {
    /// 1-based line number.
    pub line: usize,
    /// The section it is in.
    pub section: String,
    /// The purposes its tokens were tagged with (`unknown` for an
    /// unrecognised section; empty when it held none).
    pub purposes: Vec<Purpose>,
    /// Addresses and prefixes taken (each time it appears on the line).
    pub addresses: usize,
    /// DNS names taken.
    pub dns_names: usize,
    /// The places its tokens were given: `US1`, `westeurope`, `GCC High
    /// usgovarizona`, `-` for none.
    pub places: Vec<String>,
    /// Labels read, repairs, names skipped, Service Tags named.
    pub notes: Vec<String>,
}

/// Why a page cannot be imported.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ImportError {
    /// The page has no front matter with an `ms.date` line.
    #[error(
        "the page has no ms.date line in its front matter (expected e.g. `ms.date: 11/01/2019`)"
    )]
    NoDate,
    /// The `ms.date` value is not a date.
    #[error("line {line}: ms.date {text:?} is not a date (expected MM/DD/YYYY)")]
    BadDate {
        /// 1-based line number.
        line: usize,
        /// The value.
        text: String,
    },
    /// An address or CIDR prefix that does not parse.
    #[error("line {line}: {text:?} is not a valid IP address or CIDR prefix")]
    BadAddress {
        /// 1-based line number.
        line: usize,
        /// The token, markup removed.
        text: String,
    },
    /// An address with host bits set after its length: the network or
    /// the one address? Refused (a set file holding it would be refused too).
    #[error(
        "line {line}: prefix {text:?} has host bits set: it is neither the network {network} \
         nor the one address {address}, and is refused rather than guessed"
    )]
    HostBits {
        /// 1-based line number.
        line: usize,
        /// The prefix.
        text: String,
        /// The network it would be truncated to.
        network: IpNet,
        /// The address as a host prefix.
        address: IpNet,
    },
    /// No heading is one of the known sections.
    #[error(
        "the page has no recognised section (expected headings such as \"Portal access\", \
         \"Access and session controls\", \"SIEM agent connection\", \"App connector\", \
         \"Third-party DLP integration\", \"Mail server\" or \"Log collector\")"
    )]
    NoSection,
    /// Recognised sections, but not a single address or name in them.
    #[error("the recognised sections ({}) hold no IP address or DNS name", .sections.join(", "))]
    Empty {
        /// The recognised sections' headings.
        sections: Vec<String>,
    },
}

/// Imports a "Network requirements" page (see the module documentation).
///
/// `source` (the page's file name) is recorded in the set and its one
/// [`Source`] (kind `page`, id `page-<ms.date>`, the SHA-256 of `text`);
/// `name` defaults to `cas-YYYY-MM` from the page's `ms.date`.
///
/// # Errors
///
/// [`ImportError::NoDate`] / [`ImportError::BadDate`] without a usable
/// `ms.date`, [`ImportError::BadAddress`] (with the line) for a bad token,
/// [`ImportError::NoSection`] / [`ImportError::Empty`] when nothing can be
/// imported.
pub fn import_page(text: &str, source: &str, name: Option<&str>) -> Result<Import, ImportError> {
    let lines: Vec<&str> = text.lines().collect();
    let (body, date) = front_matter(&lines);
    let (date_line, date_text) = date.ok_or(ImportError::NoDate)?;
    let published = parse_date(date_text).ok_or_else(|| ImportError::BadDate {
        line: date_line + 1,
        text: date_text.to_owned(),
    })?;

    let mut reader = Reader::default();
    reader.read(&lines, body)?;
    let Reader {
        mut sections,
        mut warnings,
        notes,
        ..
    } = reader;
    for f in sections.iter().flat_map(|s| &s.found) {
        if let Token::Addr(prefix) = &f.token {
            if let Some((network, address)) = host_bits(prefix) {
                return Err(ImportError::HostBits {
                    line: f.line,
                    text: prefix.to_string(),
                    network,
                    address,
                });
            }
        }
    }

    let recognised: Vec<String> = sections
        .iter()
        .filter(|s| s.recognised())
        .map(|s| s.title.clone())
        .collect();
    if recognised.is_empty() {
        return Err(ImportError::NoSection);
    }
    for s in sections.iter_mut().filter(|s| !s.recognised()) {
        let (addrs, names) = distinct(s.found.iter());
        if addrs + names > 0 {
            warnings.push(format!(
                "section {:?} (line {}) is not a recognised section: kept {} and {} with \
                 purpose unknown",
                s.title,
                s.line,
                plural(addrs, "address", "addresses"),
                plural(names, "DNS name", "DNS names"),
            ));
            s.purposes = vec![Purpose::Unknown];
        }
    }

    let page = Source::new(SourceKind::Page, source, &published, text);
    let ids = vec![page.id.clone()];
    let mut entries = Vec::new();
    let mut dns = Vec::new();
    let mut seen_entries = HashSet::new();
    let mut seen_names = HashSet::new();
    let mut counts = Vec::new();
    for s in &sections {
        for &purpose in &s.purposes {
            for f in &s.found {
                let ports = f
                    .ports
                    .clone()
                    .unwrap_or_else(|| purpose.default_ports().to_vec());
                match &f.token {
                    Token::Addr(prefix) => {
                        let e = Entry {
                            region: f.place.region.clone(),
                            cloud: f.place.region.as_ref().map(|r| r.cloud().to_owned()),
                            ports,
                            sources: ids.clone(),
                            ..Entry::new(*prefix, f.place.datacenter, purpose)
                        };
                        if seen_entries.insert(e.clone()) {
                            entries.push(e);
                        }
                    }
                    Token::Name(name) => {
                        let d = DnsName {
                            name: name.clone(),
                            datacenter: f.place.datacenter,
                            purpose,
                            direction: purpose.default_direction(),
                            ports,
                            sources: ids.clone(),
                        };
                        if seen_names.insert(d.clone()) {
                            dns.push(d);
                        }
                    }
                }
            }
            let places: std::collections::BTreeSet<&Place> =
                s.found.iter().map(|f| &f.place).collect();
            for place in places {
                let (addresses, dns_names) = distinct(s.found.iter().filter(|f| &f.place == place));
                counts.push(SectionCount {
                    section: s.title.clone(),
                    purpose,
                    datacenter: place.datacenter,
                    region: place.region.clone(),
                    addresses,
                    dns_names,
                });
            }
        }
    }
    if entries.is_empty() && dns.is_empty() {
        return Err(ImportError::Empty {
            sections: recognised,
        });
    }
    let name = name.map_or_else(|| format!("cas-{}", &published[..7]), str::to_owned);
    Ok(Import {
        set: AddressSet {
            name,
            source: source.to_owned(),
            published,
            sources: vec![page],
            entries,
            dns,
        },
        counts,
        lines: line_reports(&sections, notes),
        warnings,
    })
}

/// One [`LineReport`] per line with tokens or notes, in line order.
fn line_reports(
    sections: &[Section],
    mut notes: std::collections::BTreeMap<usize, Vec<String>>,
) -> Vec<LineReport> {
    let mut by_line: std::collections::BTreeMap<usize, LineReport> = Default::default();
    for s in sections {
        for f in &s.found {
            let r = by_line.entry(f.line).or_insert_with(|| LineReport {
                line: f.line,
                section: s.title.clone(),
                purposes: s.purposes.clone(),
                addresses: 0,
                dns_names: 0,
                places: Vec::new(),
                notes: Vec::new(),
            });
            match f.token {
                Token::Addr(_) => r.addresses += 1,
                Token::Name(_) => r.dns_names += 1,
            }
            let place = place_text(&f.place);
            if !r.places.contains(&place) {
                r.places.push(place);
            }
        }
    }
    let section_at = |line: usize| {
        sections
            .iter()
            .rev()
            .find(|s| s.line <= line)
            .map(|s| s.title.clone())
            .unwrap_or_default()
    };
    for (&line, n) in notes.iter_mut() {
        let r = by_line.entry(line).or_insert_with(|| LineReport {
            line,
            section: section_at(line),
            purposes: Vec::new(),
            addresses: 0,
            dns_names: 0,
            places: Vec::new(),
            notes: Vec::new(),
        });
        r.notes.append(n);
    }
    by_line.into_values().collect()
}

/// `US1`, `westeurope`, `GCC High usgovarizona`, or `-`.
fn place_text(p: &Place) -> String {
    let parts: Vec<String> = p
        .datacenter
        .map(|d| d.to_string())
        .into_iter()
        .chain(p.region.as_ref().map(ToString::to_string))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// `"1 address"`, `"2 addresses"`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Distinct addresses and distinct names among `found`.
fn distinct<'a>(found: impl Iterator<Item = &'a Found>) -> (usize, usize) {
    let mut addrs = HashSet::new();
    let mut names = HashSet::new();
    for f in found {
        match &f.token {
            Token::Addr(a) => {
                addrs.insert(*a);
            }
            Token::Name(n) => {
                names.insert(n.clone());
            }
        }
    }
    (addrs.len(), names.len())
}

/// The index of the first body line, and the `ms.date` line (index and
/// value) of the front matter, if any.
fn front_matter<'a>(lines: &[&'a str]) -> (usize, Option<(usize, &'a str)>) {
    if lines.first().map(|l| l.trim()) != Some("---") {
        return (0, None);
    }
    let Some(end) = lines.iter().skip(1).position(|l| l.trim() == "---") else {
        return (0, None);
    };
    let end = end + 1;
    let date = lines[1..end].iter().enumerate().find_map(|(i, l)| {
        l.trim()
            .strip_prefix("ms.date:")
            .map(|v| (i + 1, v.trim().trim_matches(|c| c == '"' || c == '\'')))
    });
    (end + 1, date)
}

#[cfg(test)]
mod tests;
