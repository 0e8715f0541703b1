//! Importing a published "Network requirements" page (Markdown, as the docs
//! repository stores it) into an [`AddressSet`].
//!
//! [`import_page`] reads the page line by line:
//!
//! * **Date and name.** The front matter's `ms.date` (`MM/DD/YYYY`, leading
//!   zeros optional, or `YYYY-MM-DD`) becomes `published`; the default set
//!   name is `cas-YYYY-MM`.
//! * **Sections.** Every heading starts a section, recognised by keywords
//!   (case-insensitive): "access and session control" → `access-session-controls`,
//!   "SIEM" → `siem-agent`, "log collector" → `log-collector`, "mail" → `mail`,
//!   "DLP" → `dlp`, "system IP addresses" (the 2017 page's "Cloud App
//!   Security System IP addresses") → both `app-connector` and `dlp`,
//!   "app connector" / "API connector" → `app-connector`, "portal" ("Portal
//!   access", "CAS portal URL and IP addresses") → `portal`. The 2017 system
//!   section is tagged with both purposes because the page says its
//!   addresses are used "when connecting using ICAP and when connecting App
//!   connectors": the service connects from them both to app APIs and to
//!   the customer's stunnel. The 2017 portal section says its address is
//!   also used by the log collector and the SIEM agent; it is imported as
//!   `portal` only, like every section, by its heading. An unrecognised
//!   heading nested deeper than a
//!   recognised one stays part of it. Unrecognised sections without
//!   addresses or names ("View your data center", "Next steps", "See Also")
//!   are ignored silently; an unrecognised section *with* addresses or
//!   names is not imported and is reported in [`Import::warnings`] with how
//!   many it skipped.
//! * **Tables** (plain or `>`-quoted): when the header's first cell names a
//!   data center ("Data center", "Region"), the first cell of each row is
//!   the data center (`US1`, `US1 data center`, `**Gov US1**`, ...). Every
//!   other cell is split at `<br>`, `<br />`, `<br/>` and `<br></br>`; each
//!   piece is an address, a CIDR prefix or a DNS name (in any column, so
//!   several address columns and a DNS column both work). A non-empty piece
//!   that is none of these is reported as a warning.
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
//!   requirements: they are skipped with a warning.
//! * **Data center from the lead-in.** Outside tables with a data-center
//!   column, addresses and names take the data center that the last prose
//!   line before them names ("For US Government GCC High customers, ..." →
//!   `Gov US1`; a bare `US1`, ..., `EU2`); if it names none (or several),
//!   they apply to every data center (`datacenter: null`). The 2017 page
//!   names no data center, so all its entries are `null`.
//! * **Markup** is removed from every token: `\*` escapes, `**bold**`,
//!   backticks, `https://` / `https:\//` schemes and paths, trailing `/`,
//!   stray `<`, sentence punctuation; link targets and images are dropped
//!   (only link text is read).
//!
//! Connection and ports are the purpose's defaults
//! ([`Purpose::default_direction`], [`Purpose::default_ports`]) unless the
//! line says a port. Within a section, an address or name listed twice for
//! the same data center is taken once. [`Import::counts`] says, per section,
//! purpose and data center, how many distinct addresses and names were
//! taken.
//!
//! An address-looking token that does not parse (`13.64.26.888`,
//! `10.0.0.0/33`) is an [`ImportError::BadAddress`] naming its line, as is
//! an unknown data center in a table's data-center column.

use std::collections::HashSet;

mod reader;
mod words;

use self::reader::*;

use ipnet::IpNet;

use crate::addrset::{
    parse_prefix, valid_dns_name, AddressSet, DataCenter, DnsName, Entry, Purpose,
};

/// The result of [`import_page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The imported set.
    pub set: AddressSet,
    /// What was taken, per recognised section, purpose and data center:
    /// sections in page order, then the section's purposes, then data
    /// centers (`None` first, then [`DataCenter::ALL`] order). Only
    /// combinations with at least one address or name appear.
    pub counts: Vec<SectionCount>,
    /// What was read but not imported (unrecognised sections with
    /// addresses, example names, table cells that are not addresses).
    pub warnings: Vec<String>,
}

/// The distinct addresses and DNS names taken from one section for one
/// purpose and data center.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionCount {
    /// The section's heading, markup removed.
    pub section: String,
    /// The purpose its entries were tagged with.
    pub purpose: Purpose,
    /// The data center (`None`: every data center).
    pub datacenter: Option<DataCenter>,
    /// Distinct addresses and prefixes.
    pub addresses: usize,
    /// Distinct DNS names.
    pub dns_names: usize,
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
    /// A table's data-center cell names no known data center.
    #[error(
        "line {line}: unknown data center {text:?} \
         (accepted: US1, US2, US3, EU1, EU2, Gov US1, optionally followed by \"data center\")"
    )]
    UnknownDataCenter {
        /// 1-based line number.
        line: usize,
        /// The cell's text.
        text: String,
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
/// `source` (the page's file name) is recorded in the set; `name` defaults
/// to `cas-YYYY-MM` from the page's `ms.date`.
///
/// # Errors
///
/// [`ImportError::NoDate`] / [`ImportError::BadDate`] without a usable
/// `ms.date`, [`ImportError::BadAddress`] / [`ImportError::UnknownDataCenter`]
/// (with the line) for a bad token, [`ImportError::NoSection`] /
/// [`ImportError::Empty`] when nothing can be imported.
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
        sections,
        mut warnings,
        ..
    } = reader;

    let recognised: Vec<&Section> = sections.iter().filter(|s| !s.purposes.is_empty()).collect();
    if recognised.is_empty() {
        return Err(ImportError::NoSection);
    }
    for s in sections.iter().filter(|s| s.purposes.is_empty()) {
        let (addrs, names) = distinct(s.found.iter());
        if addrs + names > 0 {
            warnings.push(format!(
                "section {:?} (line {}) is not a recognised section: skipped {} and {}",
                s.title,
                s.line,
                plural(addrs, "address", "addresses"),
                plural(names, "DNS name", "DNS names"),
            ));
        }
    }

    let mut entries = Vec::new();
    let mut dns = Vec::new();
    let mut seen_entries = HashSet::new();
    let mut seen_names = HashSet::new();
    let mut counts = Vec::new();
    for s in &recognised {
        for &purpose in &s.purposes {
            for f in &s.found {
                let ports = f
                    .ports
                    .clone()
                    .unwrap_or_else(|| purpose.default_ports().to_vec());
                let direction = purpose.default_direction();
                match &f.token {
                    Token::Addr(prefix) => {
                        let e = Entry {
                            prefix: *prefix,
                            datacenter: f.datacenter,
                            purpose,
                            direction,
                            ports,
                        };
                        if seen_entries.insert(e.clone()) {
                            entries.push(e);
                        }
                    }
                    Token::Name(name) => {
                        let d = DnsName {
                            name: name.clone(),
                            datacenter: f.datacenter,
                            purpose,
                            direction,
                            ports,
                        };
                        if seen_names.insert(d.clone()) {
                            dns.push(d);
                        }
                    }
                }
            }
            let dcs = std::iter::once(None).chain(DataCenter::ALL.into_iter().map(Some));
            for dc in dcs {
                let (addresses, dns_names) =
                    distinct(s.found.iter().filter(|f| f.datacenter == dc));
                if addresses + dns_names > 0 {
                    counts.push(SectionCount {
                        section: s.title.clone(),
                        purpose,
                        datacenter: dc,
                        addresses,
                        dns_names,
                    });
                }
            }
        }
    }
    if entries.is_empty() && dns.is_empty() {
        return Err(ImportError::Empty {
            sections: recognised.iter().map(|s| s.title.clone()).collect(),
        });
    }
    let name = name.map_or_else(|| format!("cas-{}", &published[..7]), str::to_owned);
    Ok(Import {
        set: AddressSet {
            name,
            source: source.to_owned(),
            published,
            entries,
            dns,
        },
        counts,
        warnings,
    })
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

/// `M/D/YYYY` (or `YYYY-MM-DD`) as `YYYY-MM-DD`, if it is a real date.
fn parse_date(text: &str) -> Option<String> {
    let num = |s: &str, max_len: usize| -> Option<u32> {
        (!s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let parts: Vec<&str> = text.split('/').collect();
    let (y, m, d) = if let [m, d, y] = parts[..] {
        (y, m, d)
    } else if let [y, m, d] = text.split('-').collect::<Vec<_>>()[..] {
        (y, m, d)
    } else {
        return None;
    };
    let (year, month, day) = (num(y, 4)?, num(m, 2)?, num(d, 2)?);
    if y.len() != 4 || !(1..=12).contains(&month) {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    (1..=days)
        .contains(&day)
        .then(|| format!("{year:04}-{month:02}-{day:02}"))
}

#[cfg(test)]
mod tests;
