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

use std::collections::{BTreeSet, HashSet};

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

/// An address or a name found on the page.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Addr(IpNet),
    Name(String),
}

/// A token with where it applies.
#[derive(Debug, Clone)]
struct Found {
    token: Token,
    datacenter: Option<DataCenter>,
    /// Ports the line says, if any.
    ports: Option<Vec<u16>>,
}

/// The text under one heading.
#[derive(Debug)]
struct Section {
    title: String,
    /// 1-based line of the heading (0 for the text before the first one).
    line: usize,
    level: usize,
    /// Empty when the heading is not recognised.
    purposes: Vec<Purpose>,
    found: Vec<Found>,
}

impl Section {
    fn recognised(&self) -> bool {
        !self.purposes.is_empty()
    }
}

/// The purposes a heading stands for (empty: not a known section).
fn section_purposes(title: &str) -> Vec<Purpose> {
    let t = title.to_ascii_lowercase();
    let has = |w: &str| t.contains(w);
    if has("session control") || has("access and session") {
        vec![Purpose::AccessSessionControls]
    } else if has("siem") {
        vec![Purpose::SiemAgent]
    } else if has("log collector") {
        vec![Purpose::LogCollector]
    } else if has("mail") {
        vec![Purpose::Mail]
    } else if has("dlp") {
        vec![Purpose::Dlp]
    } else if has("system ip address") {
        vec![Purpose::AppConnector, Purpose::Dlp]
    } else if has("app connector") || has("api connector") {
        vec![Purpose::AppConnector]
    } else if has("portal") {
        vec![Purpose::Portal]
    } else {
        Vec::new()
    }
}

/// A table being read.
#[derive(Debug, Clone, Copy)]
struct Table {
    /// The first column holds the data center.
    dc_column: bool,
}

/// The line-by-line reader.
#[derive(Debug)]
struct Reader {
    sections: Vec<Section>,
    warnings: Vec<String>,
    table: Option<Table>,
    /// The data center named by the last prose line of the section.
    lead_dc: Option<DataCenter>,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            sections: vec![Section {
                title: "(before the first heading)".into(),
                line: 0,
                level: 0,
                purposes: Vec::new(),
                found: Vec::new(),
            }],
            warnings: Vec::new(),
            table: None,
            lead_dc: None,
        }
    }
}

impl Reader {
    fn section(&mut self) -> &mut Section {
        self.sections.last_mut().expect("there is always a section")
    }

    fn push(&mut self, token: Token, datacenter: Option<DataCenter>, ports: Option<Vec<u16>>) {
        self.section().found.push(Found {
            token,
            datacenter,
            ports,
        });
    }

    /// A warning, only about recognised sections (the others are reported
    /// as a whole).
    fn warn(&mut self, message: String) {
        if self.section().recognised() {
            self.warnings.push(message);
        }
    }

    fn read(&mut self, lines: &[&str], body: usize) -> Result<(), ImportError> {
        let mut fence: Option<&str> = None;
        let mut comment = false;
        let mut skip_next = false;
        for (i, &raw) in lines.iter().enumerate().skip(body) {
            let n = i + 1;
            if std::mem::take(&mut skip_next) {
                continue;
            }
            if comment {
                comment = !raw.contains("-->");
                continue;
            }
            let q = unquote(raw);
            if let Some(marker) = fence {
                if q.starts_with(marker) {
                    fence = None;
                } else {
                    self.text(q, n)?;
                }
                continue;
            }
            if let Some(marker) = ["```", "~~~"].into_iter().find(|m| q.starts_with(m)) {
                fence = Some(marker);
                self.table = None;
                continue;
            }
            if q.starts_with("<!--") {
                comment = !q.contains("-->");
                continue;
            }
            if let Some((level, title)) = heading(raw) {
                self.heading(level, title, n);
                continue;
            }
            if q.starts_with('|') {
                let cells = split_row(q);
                if cells.iter().all(|c| is_separator(c)) {
                    continue;
                }
                let table = match self.table {
                    Some(t) => t,
                    None => {
                        let next_is_separator = lines
                            .get(i + 1)
                            .map(|l| unquote(l))
                            .filter(|l| l.starts_with('|'))
                            .is_some_and(|l| split_row(l).iter().all(|c| is_separator(c)));
                        if next_is_separator {
                            let first = cells.first().map(|c| c.to_ascii_lowercase());
                            let dc_column = first.is_some_and(|c| {
                                ["data center", "datacenter", "data centre", "region"]
                                    .iter()
                                    .any(|w| c.contains(w))
                            });
                            self.table = Some(Table { dc_column });
                            skip_next = true;
                            continue;
                        }
                        let t = Table { dc_column: false };
                        self.table = Some(t);
                        t
                    }
                };
                self.row(&cells, table, n)?;
                continue;
            }
            self.table = None;
            if q.is_empty() || q.starts_with("[!") {
                continue;
            }
            self.text(q, n)?;
        }
        Ok(())
    }

    fn heading(&mut self, level: usize, title: String, n: usize) {
        self.table = None;
        self.lead_dc = None;
        let purposes = section_purposes(&title);
        let current = self.section();
        if purposes.is_empty() && current.recognised() && level > current.level {
            // A subsection of a recognised section.
            return;
        }
        self.sections.push(Section {
            title,
            line: n,
            level,
            purposes,
            found: Vec::new(),
        });
    }

    /// A table row (not the header).
    fn row(&mut self, cells: &[String], table: Table, n: usize) -> Result<(), ImportError> {
        let (datacenter, rest) = match cells.split_first() {
            Some((label, rest)) if table.dc_column => {
                let dc = datacenter_label(label);
                if dc.is_none() && self.section().recognised() {
                    return Err(ImportError::UnknownDataCenter {
                        line: n,
                        text: label.trim().to_owned(),
                    });
                }
                (dc, rest)
            }
            _ => (self.lead_dc, cells),
        };
        for cell in rest {
            for piece in split_br(cell) {
                let piece = strip_links(&piece);
                let piece = piece.trim();
                if piece.is_empty() {
                    continue;
                }
                let words: Vec<&str> = piece.split_whitespace().collect();
                if let [word] = words[..] {
                    match classify(word, false) {
                        Class::Token(t) => self.push(t, datacenter, None),
                        Class::Bad(text) => {
                            return Err(ImportError::BadAddress { line: n, text });
                        }
                        Class::Other => {
                            let shown = clean(word).0;
                            if !shown.is_empty() {
                                self.warn(format!("line {n}: ignored table cell text {piece:?}"));
                            }
                        }
                    }
                } else if self.prose(piece, n, datacenter)? == 0 {
                    self.warn(format!("line {n}: ignored table cell text {piece:?}"));
                }
            }
        }
        Ok(())
    }

    /// A line outside tables: a data line if every word is a token, prose
    /// otherwise.
    fn text(&mut self, line: &str, n: usize) -> Result<(), ImportError> {
        let line = strip_links(strip_list_marker(line));
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            return Ok(());
        }
        let classes: Vec<Class> = words.iter().map(|w| classify(w, false)).collect();
        if classes.iter().all(|c| !matches!(c, Class::Other)) {
            let dc = self.lead_dc;
            for c in classes {
                match c {
                    Class::Token(t) => self.push(t, dc, None),
                    Class::Bad(text) => return Err(ImportError::BadAddress { line: n, text }),
                    Class::Other => {}
                }
            }
            return Ok(());
        }
        self.lead_dc = prose_datacenter(&line);
        let dc = self.lead_dc;
        self.prose(&line, n, dc)?;
        Ok(())
    }

    /// Takes the addresses and names of a prose text; returns how many.
    fn prose(
        &mut self,
        text: &str,
        n: usize,
        datacenter: Option<DataCenter>,
    ) -> Result<usize, ImportError> {
        let lower = text.to_ascii_lowercase();
        let ports = prose_ports(&lower);
        let mut taken = 0;
        for (pos, word) in prose_words(text) {
            match classify(word, true) {
                Class::Token(t) => {
                    if in_example(&lower, pos) {
                        let shown = match &t {
                            Token::Addr(a) => a.to_string(),
                            Token::Name(s) => s.clone(),
                        };
                        self.warn(format!(
                            "line {n}: ignored {shown:?}, given as an example (not a requirement)"
                        ));
                    } else {
                        self.push(t, datacenter, ports.clone());
                        taken += 1;
                    }
                }
                Class::Bad(text) => return Err(ImportError::BadAddress { line: n, text }),
                Class::Other => {}
            }
        }
        Ok(taken)
    }
}

/// The line without leading whitespace and `>` quote markers.
fn unquote(line: &str) -> &str {
    let mut s = line.trim();
    while let Some(rest) = s.strip_prefix('>') {
        s = rest.trim_start();
    }
    s
}

/// `## Title ##` → `(2, "Title")` (at most three spaces of indentation).
fn heading(line: &str) -> Option<(usize, String)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let s = line.trim();
    let level = s.len() - s.trim_start_matches('#').len();
    let rest = &s[level..];
    if !(1..=6).contains(&level) || !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let title = strip_links(rest.trim().trim_end_matches('#'));
    let title: String = unescape(&title)
        .chars()
        .filter(|c| !matches!(c, '*' | '`'))
        .collect();
    Some((level, title.trim().to_owned()))
}

/// A list item's text without its marker (`- `, `* `, `+ `, `1. `, `1) `).
fn strip_list_marker(line: &str) -> &str {
    for m in ["- ", "* ", "+ "] {
        if let Some(rest) = line.strip_prefix(m) {
            return rest.trim_start();
        }
    }
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits > 0 && digits <= 9 {
        let rest = &line[digits..];
        if let Some(rest) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return rest.trim_start();
        }
    }
    line
}

/// The cells of a table row, trimmed.
fn split_row(row: &str) -> Vec<String> {
    let row = row.trim();
    let row = row.strip_prefix('|').unwrap_or(row);
    let row = if row.ends_with('|') && !row.ends_with("\\|") {
        &row[..row.len() - 1]
    } else {
        row
    };
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut escaped = false;
    for c in row.chars() {
        if c == '|' && !escaped {
            cells.push(cell.trim().to_owned());
            cell.clear();
        } else {
            cell.push(c);
        }
        escaped = c == '\\' && !escaped;
    }
    cells.push(cell.trim().to_owned());
    cells
}

/// `---`, `:--`, `:-:`, ...
fn is_separator(cell: &str) -> bool {
    let c = cell.trim().trim_start_matches(':').trim_end_matches(':');
    !c.is_empty() && c.bytes().all(|b| b == b'-')
}

/// A cell split at `<br>`, `<br />`, `<br/>`, `</br>` (so `<br></br>` too).
fn split_br(cell: &str) -> Vec<String> {
    let lower = cell.to_ascii_lowercase();
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while let Some(off) = lower[i..].find('<') {
        let at = i + off;
        let tag = lower[at + 1..].trim_start_matches('/');
        let is_br = tag.starts_with("br")
            && tag[2..]
                .trim_start()
                .trim_start_matches('/')
                .trim_start()
                .starts_with('>');
        if is_br {
            let end = at + lower[at..].find('>').map_or(lower.len() - at, |e| e + 1);
            pieces.push(cell[start..at].to_owned());
            start = end;
            i = end;
        } else {
            i = at + 1;
        }
    }
    pieces.push(cell[start..].to_owned());
    pieces
}

/// The text with `[text](target)` replaced by `text` and images removed.
fn strip_links(text: &str) -> String {
    let mut out = text.to_owned();
    while let Some(mid) = out.find("](") {
        let Some(open) = out[..mid].rfind('[') else {
            break;
        };
        let Some(close) = out[mid + 2..].find(')').map(|c| mid + 2 + c) else {
            break;
        };
        let image = open > 0 && out.as_bytes()[open - 1] == b'!';
        let (start, replacement) = if image {
            (open - 1, String::new())
        } else {
            (open, out[open + 1..mid].to_owned())
        };
        out.replace_range(start..=close, &replacement);
    }
    out
}

/// Markdown backslash escapes removed (`\*` → `*`, `https:\//` → `https://`).
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek().is_some_and(char::is_ascii_punctuation) {
            continue;
        }
        out.push(c);
    }
    out
}

/// A word with markup and punctuation removed; and whether it was a URL.
fn clean(word: &str) -> (String, bool) {
    /// Strips surrounding markup and punctuation, keeping a `*.` wildcard.
    fn trim(s: &str) -> &str {
        let mut s = s;
        loop {
            let before = s;
            s = s.trim_matches(|c: char| {
                c.is_whitespace() || "<>\"'`()[]{},;|_!?".contains(c) || c == '\u{a0}'
            });
            s = s.trim_end_matches(['.', '*', '/']);
            if s.ends_with(':') && !s.ends_with("::") {
                s = &s[..s.len() - 1];
            }
            while s.starts_with('*') && !s[1..].starts_with('.') {
                s = &s[1..];
            }
            if s == before {
                return s;
            }
        }
    }
    let text = unescape(word);
    let mut s = trim(&text);
    let lower = s.to_ascii_lowercase();
    let mut url = false;
    for scheme in ["https://", "http://", "ftp://"] {
        if lower.starts_with(scheme) {
            s = &s[scheme.len()..];
            s = s.split('/').next().unwrap_or("");
            url = true;
            break;
        }
    }
    (trim(s).to_owned(), url)
}

/// What a word is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Class {
    Token(Token),
    /// Looks like an address but does not parse (the cleaned text).
    Bad(String),
    Other,
}

/// Top-level domains that make a prose word a host name.
const PROSE_TLDS: &[&str] = &[
    "com",
    "net",
    "org",
    "ms",
    "us",
    "io",
    "gov",
    "mil",
    "edu",
    "info",
    "biz",
    "co",
    "uk",
    "eu",
    "de",
    "fr",
    "jp",
    "cn",
    "in",
    "au",
    "ca",
    "cloud",
    "azure",
    "microsoft",
    "office",
    "windows",
];

/// Classifies a word: in `prose`, address-looking needs four dotted parts
/// (or three and a `/`) and names need a URL scheme or a common top-level
/// domain; elsewhere any dotted number and any host name counts.
fn classify(word: &str, prose: bool) -> Class {
    let (s, url) = clean(word);
    if s.is_empty() {
        return Class::Other;
    }
    if looks_like_address(&s, prose) {
        return match parse_prefix(&s) {
            Some(net) => Class::Token(Token::Addr(net)),
            None => Class::Bad(s),
        };
    }
    if valid_dns_name(&s) {
        let tld = s.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
        if !prose || url || PROSE_TLDS.contains(&tld.as_str()) {
            return Class::Token(Token::Name(s));
        }
    }
    Class::Other
}

/// Whether `s` is meant as an IPv4 or IPv6 address or prefix.
fn looks_like_address(s: &str, prose: bool) -> bool {
    let slash = s.contains('/');
    let first = s.chars().next().unwrap_or(' ');
    let dots = s.matches('.').count();
    if first.is_ascii_digit()
        && s.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '/')
    {
        let (need, need_with_slash) = if prose { (3, 2) } else { (2, 1) };
        return dots >= need || (slash && dots >= need_with_slash);
    }
    let colons = s.matches(':').count();
    let v6_chars = s
        .chars()
        .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '/'));
    v6_chars
        && (first.is_ascii_hexdigit() || first == ':')
        && (s.contains("::") || if prose { colons == 7 } else { colons >= 2 })
}

/// The words of a prose text with their byte offsets.
fn prose_words(text: &str) -> Vec<(usize, &str)> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        let sep = c.is_whitespace() || "()[]{},;\"|<>".contains(c);
        match (sep, start) {
            (true, Some(s)) => {
                words.push((s, &text[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push((s, &text[s..]));
    }
    words
}

/// Whether the word at `pos` follows "example" or "e.g." (as words, not
/// inside a host name such as `www.example.com`) in its sentence.
fn in_example(lower: &str, pos: usize) -> bool {
    let before = &lower[..pos];
    let part_of_name = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.');
    ["example", "e.g."]
        .iter()
        .flat_map(|w| before.match_indices(w).map(move |(i, _)| (i, i + w.len())))
        .filter(|&(start, end)| {
            !part_of_name(before[..start].chars().next_back())
                && (before[..end].ends_with('.') || !part_of_name(before[end..].chars().next()))
        })
        .map(|(_, end)| end)
        .max()
        .is_some_and(|k| !before[k..].contains(". "))
}

/// The ports a prose line gives: `port 80`, `ports 80 and 443`.
fn prose_ports(lower: &str) -> Option<Vec<u16>> {
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == ',')
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
        .collect();
    let mut ports = BTreeSet::new();
    for (i, w) in words.iter().enumerate() {
        if *w != "port" && *w != "ports" {
            continue;
        }
        for next in &words[i + 1..] {
            match next.parse::<u16>() {
                Ok(p) if p != 0 => {
                    ports.insert(p);
                }
                _ if matches!(*next, "" | "and" | "or") => {}
                _ => break,
            }
        }
    }
    (!ports.is_empty()).then(|| ports.into_iter().collect())
}

/// The one data center a prose line names, if exactly one.
fn prose_datacenter(line: &str) -> Option<DataCenter> {
    let mut lower = line.to_ascii_lowercase();
    let mut found = BTreeSet::new();
    for gov in ["gcc high", "us government", "gov us1", "government"] {
        if lower.contains(gov) {
            found.insert(DataCenter::GovUs1);
            lower = lower.replace(gov, " ");
        }
    }
    for word in lower.split(|c: char| !c.is_ascii_alphanumeric()) {
        match word {
            "us1" => found.insert(DataCenter::Us1),
            "us2" => found.insert(DataCenter::Us2),
            "us3" => found.insert(DataCenter::Us3),
            "eu1" => found.insert(DataCenter::Eu1),
            "eu2" => found.insert(DataCenter::Eu2),
            _ => false,
        };
    }
    match found.len() {
        1 => found.into_iter().next(),
        _ => None,
    }
}

/// A data-center cell: `US1`, `US1 data center`, `**Gov US1**`, `US Gov`,
/// `GCC High`.
fn datacenter_label(label: &str) -> Option<DataCenter> {
    let text: String = unescape(label)
        .chars()
        .filter(|c| !matches!(c, '*' | '`' | '_'))
        .collect();
    let lower = text.trim().to_ascii_lowercase();
    if lower.contains("gcc") || lower.contains("gov") {
        return Some(DataCenter::GovUs1);
    }
    let mut s = lower.as_str();
    for affix in ["data center", "datacenter", "data centre"] {
        s = s.trim();
        s = s.strip_suffix(affix).unwrap_or(s).trim();
        s = s.strip_prefix(affix).unwrap_or(s).trim();
    }
    s.trim_matches(|c: char| c == ':' || c == '-')
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addrset::Connection;
    use DataCenter::*;
    use Purpose::*;

    const PAGE_2019: &str = "network-requirements-2019-11.md";
    const PAGE_2017: &str = "network-requirements-2017-07.md";

    /// A published page: from the shared seeds next to the repository
    /// (`../shared/seeds`, the ground truth) when they are there, else the
    /// copy kept in `cas-audit/data/seeds` (a clone elsewhere). Missing both
    /// is a failure, not a skip: the built-in sets must be checked against
    /// their pages.
    fn page(file: &str) -> String {
        let shared = format!("{}/../../shared/seeds/{file}", env!("CARGO_MANIFEST_DIR"));
        let kept = format!("{}/data/seeds/{file}", env!("CARGO_MANIFEST_DIR"));
        let path = if std::path::Path::new(&shared).exists() {
            shared
        } else {
            kept
        };
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read the published page {path} ({e}): it is needed to check the \
                 built-in address sets (they are imported from it)"
            )
        })
    }

    /// The kept copies are the shared pages, byte for byte (when the shared
    /// seeds are there to compare with).
    #[test]
    fn kept_pages_are_the_shared_ones() {
        for file in [
            PAGE_2019,
            PAGE_2017,
            "connect-apps.md",
            "connect-exchange-online.md",
        ] {
            let shared = format!("{}/../../shared/seeds/{file}", env!("CARGO_MANIFEST_DIR"));
            let kept = format!("{}/data/seeds/{file}", env!("CARGO_MANIFEST_DIR"));
            let kept = std::fs::read(&kept).unwrap_or_else(|e| panic!("{kept}: {e}"));
            if let Ok(shared) = std::fs::read(&shared) {
                assert!(
                    shared == kept,
                    "{file}: the kept copy differs from {shared:?}",
                    shared = file
                );
            }
        }
    }

    fn import(file: &str) -> Import {
        import_page(&page(file), file, None).unwrap_or_else(|e| panic!("importing {file}: {e}"))
    }

    fn err(text: &str) -> ImportError {
        import_page(text, "t.md", None).unwrap_err()
    }

    /// Imports `page` and compares with (or, with `CAS_AUDIT_REGENERATE=1`,
    /// writes) the data file `data/<set>.json`.
    fn check_data_file(file: &str, data: &str, embedded: &str) {
        let json = import(file).set.to_json();
        if std::env::var("CAS_AUDIT_REGENERATE").as_deref() == Ok("1") {
            let path = format!("{}/data/{data}", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(&path, &json).unwrap_or_else(|e| panic!("writing {path}: {e}"));
            eprintln!("wrote {path}");
            return;
        }
        assert!(
            json == embedded,
            "data/{data} is not the import of {file}: \
             rerun with CAS_AUDIT_REGENERATE=1 to rewrite it"
        );
    }

    #[test]
    fn builtin_data_is_the_import_of_the_page() {
        check_data_file(
            PAGE_2019,
            "cas-2019-11.json",
            include_str!("../../../data/cas-2019-11.json"),
        );
        check_data_file(
            PAGE_2017,
            "cas-2017-07.json",
            include_str!("../../../data/cas-2017-07.json"),
        );
    }

    type Row = (&'static str, Purpose, Option<DataCenter>, usize, usize);

    fn rows(imp: &Import) -> Vec<(String, Purpose, Option<DataCenter>, usize, usize)> {
        imp.counts
            .iter()
            .map(|c| {
                (
                    c.section.clone(),
                    c.purpose,
                    c.datacenter,
                    c.addresses,
                    c.dns_names,
                )
            })
            .collect()
    }

    fn expect(rows: &[Row]) -> Vec<(String, Purpose, Option<DataCenter>, usize, usize)> {
        rows.iter()
            .map(|&(s, p, dc, a, d)| (s.to_owned(), p, dc, a, d))
            .collect()
    }

    /// Distinct addresses per table row, counted on the page with
    /// `grep -oE '[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(/[0-9]+)?' | sort -u | wc -l`
    /// (the US3 access row lists 90 addresses, 82 distinct; app connector
    /// US2 20/17, EU1 20/17; DLP US2 18/15, EU1 17/15), and the DNS names
    /// by hand.
    #[test]
    fn counts_2019_11() {
        let imp = import(PAGE_2019);
        const P: &str = "Portal access";
        const A: &str = "Access and session controls";
        const S: &str = "SIEM agent connection";
        const C: &str = "App connector";
        const D: &str = "Third-party DLP integration";
        const M: &str = "Mail server";
        const L: &str = "Log collector";
        #[rustfmt::skip]
        let want: &[Row] = &[
            // 12 names for everyone, 3 more for GCC High, one per data center.
            (P, Portal, None, 0, 12),
            (P, Portal, Some(Us1), 9, 1),
            (P, Portal, Some(Us2), 9, 1),
            (P, Portal, Some(Us3), 8, 1),
            (P, Portal, Some(Eu1), 9, 1),
            (P, Portal, Some(Eu2), 8, 1),
            (P, Portal, Some(GovUs1), 2, 4),
            (A, AccessSessionControls, None, 0, 1),
            (A, AccessSessionControls, Some(Us1), 70, 3),
            (A, AccessSessionControls, Some(Us2), 70, 3),
            (A, AccessSessionControls, Some(Us3), 82, 3),
            (A, AccessSessionControls, Some(Eu1), 70, 3),
            (A, AccessSessionControls, Some(Eu2), 60, 3),
            // The two OCSP hosts of the note.
            (S, SiemAgent, None, 0, 2),
            (S, SiemAgent, Some(Us1), 9, 0),
            (S, SiemAgent, Some(Us2), 9, 0),
            (S, SiemAgent, Some(Us3), 8, 0),
            (S, SiemAgent, Some(Eu1), 9, 0),
            (S, SiemAgent, Some(Eu2), 8, 0),
            (S, SiemAgent, Some(GovUs1), 2, 0),
            (C, AppConnector, Some(Us1), 21, 0),
            (C, AppConnector, Some(Us2), 17, 0),
            (C, AppConnector, Some(Us3), 10, 0),
            (C, AppConnector, Some(Eu1), 17, 0),
            (C, AppConnector, Some(Eu2), 10, 0),
            (C, AppConnector, Some(GovUs1), 3, 0),
            (D, Dlp, Some(Us1), 19, 0),
            (D, Dlp, Some(Us2), 15, 0),
            (D, Dlp, Some(Us3), 8, 0),
            (D, Dlp, Some(Eu1), 15, 0),
            (D, Dlp, Some(Eu2), 8, 0),
            // Six ranges, the MailChimp address and its name.
            (M, Mail, None, 7, 1),
            // The OCSP hosts, one blob host per data center.
            (L, LogCollector, None, 0, 2),
            (L, LogCollector, Some(Us1), 0, 1),
            (L, LogCollector, Some(Us2), 0, 1),
            (L, LogCollector, Some(Us3), 0, 1),
            (L, LogCollector, Some(Eu1), 0, 1),
            (L, LogCollector, Some(Eu2), 0, 1),
            (L, LogCollector, Some(GovUs1), 0, 1),
        ];
        assert_eq!(rows(&imp), expect(want));
        let set = &imp.set;
        assert_eq!(set.name, "cas-2019-11");
        assert_eq!(set.source, PAGE_2019);
        assert_eq!(set.published, "2019-11-01");
        // 45 portal + 352 access + 45 SIEM + 78 app connector + 65 DLP + 7 mail.
        assert_eq!(set.entries.len(), 592);
        assert_eq!(set.ranges().len(), 438);
        // 21 portal + 16 access + 2 SIEM + 1 mail + 8 log collector.
        assert_eq!(set.dns.len(), 48);
        assert_eq!(
            imp.warnings,
            [
                "line 81: ignored \"mod244533.us.portal.cloudappsecurity.com\", given as an \
                 example (not a requirement)",
                "line 187: ignored \"contoso.cloudappsecurity.com\", given as an example \
                 (not a requirement)",
            ]
        );
    }

    fn names(set: &AddressSet, purpose: Purpose, dc: Option<DataCenter>) -> Vec<String> {
        set.dns
            .iter()
            .filter(|d| d.purpose == purpose && d.datacenter == dc)
            .map(|d| d.name.clone())
            .collect()
    }

    #[test]
    fn dns_names_2019_11() {
        let set = import(PAGE_2019).set;
        assert_eq!(
            names(&set, Portal, None),
            [
                "portal.cloudappsecurity.com",
                "*.portal.cloudappsecurity.com",
                "cdn.cloudappsecurity.com",
                "adaproddiscovery.azureedge.net",
                "*.s-microsoft.com",
                "*.msecnd.net",
                "dev.virtualearth.net",
                "*.cloudappsecurity.com",
                "flow.microsoft.com",
                "static2.sharepointonline.com",
                "dc.services.visualstudio.com",
                "*.blob.core.windows.net",
            ]
        );
        // The GCC High list, then the table's Gov US1 row.
        assert_eq!(
            names(&set, Portal, Some(GovUs1)),
            [
                "portal.cloudappsecurity.us",
                "*.portal.cloudappsecurity.us",
                "cdn.cloudappsecurity.com",
                "*.us1.portal.cloudappsecurity.us",
            ]
        );
        assert_eq!(
            names(&set, Portal, Some(Us1)),
            ["*.us.portal.cloudappsecurity.com"]
        );
        // `\*.eu.portal.cloudappsecurity.com<` on the page.
        assert_eq!(
            names(&set, Portal, Some(Eu1)),
            ["*.eu.portal.cloudappsecurity.com"]
        );
        assert_eq!(names(&set, AccessSessionControls, None), ["*.cas.ms"]);
        assert_eq!(
            names(&set, AccessSessionControls, Some(Us1)),
            [
                "*.us1.cas.ms",
                "*.us1.access-control.cas.ms",
                "*.us1.saml.cas.ms"
            ]
        );
        assert_eq!(
            names(&set, LogCollector, Some(Us1)),
            ["adaprodconsole.blob.core.windows.net"]
        );
        assert_eq!(
            names(&set, LogCollector, Some(GovUs1)),
            ["gprd1usgvconsole1.blob.core.usgovcloudapi.net"]
        );
        assert_eq!(names(&set, Mail, None), ["mail1.cloudappsecurity.com"]);
        for purpose in [SiemAgent, LogCollector] {
            assert_eq!(
                names(&set, purpose, None),
                ["ocsp.msocsp.com", "ocsp.digicert.com"]
            );
        }
        for d in &set.dns {
            let ocsp = d.name.starts_with("ocsp.");
            assert_eq!(
                d.ports,
                if ocsp {
                    vec![80]
                } else {
                    d.purpose.default_ports().to_vec()
                },
                "{d:?}"
            );
            assert_eq!(d.direction, d.purpose.default_direction(), "{d:?}");
        }
        for e in &set.entries {
            assert_eq!(e.ports, e.purpose.default_ports(), "{e:?}");
            assert_eq!(e.direction, e.purpose.default_direction(), "{e:?}");
        }
        let mail = set
            .entries
            .iter()
            .find(|e| e.prefix.to_string() == "198.2.134.139/32");
        assert_eq!(mail.map(|e| (e.purpose, e.datacenter)), Some((Mail, None)));
    }

    #[test]
    fn counts_2017_07() {
        let imp = import(PAGE_2017);
        const S: &str = "Cloud App Security System IP addresses";
        let want: &[Row] = &[
            (S, AppConnector, None, 10, 0),
            (S, Dlp, None, 10, 0),
            ("CAS portal URL and IP addresses", Portal, None, 1, 0),
        ];
        assert_eq!(rows(&imp), expect(want));
        assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
        let set = &imp.set;
        assert_eq!(set.name, "cas-2017-07");
        assert_eq!(set.source, PAGE_2017);
        assert_eq!(set.published, "2017-07-03");
        assert_eq!(set.entries.len(), 21);
        assert_eq!(set.ranges().len(), 11);
        assert!(set.dns.is_empty());
        assert!(set.entries.iter().all(|e| e.datacenter.is_none()));
        let first: Vec<String> = set.entries[..10]
            .iter()
            .map(|e| e.prefix.to_string())
            .collect();
        assert_eq!(
            first,
            [
                "104.209.35.177/32",
                "13.91.98.185/32",
                "40.118.211.172/32",
                "13.93.216.68/32",
                "13.91.61.249/32",
                "13.93.233.42/32",
                "13.64.196.27/32",
                "13.64.198.97/32",
                "13.64.199.41/32",
                "13.64.198.19/32",
            ]
        );
        let portal = set.entries.last().unwrap();
        assert_eq!(portal.prefix.to_string(), "104.42.231.28/32");
        assert_eq!((portal.purpose, portal.ports.clone()), (Portal, vec![443]));
        let dlp = &set.entries[10];
        assert_eq!((dlp.purpose, dlp.direction), (Dlp, Connection::Inbound));
        assert_eq!(dlp.ports, [11344]);
    }

    #[test]
    fn the_name_can_be_chosen() {
        let imp = import_page(&page(PAGE_2017), "old.md", Some("legacy")).unwrap();
        assert_eq!(imp.set.name, "legacy");
        assert_eq!(imp.set.source, "old.md");
    }

    const SYNTHETIC: &str = "\
---
title: Synthetic
ms.date: 3/9/2024
---
# Network requirements

## Portal access

| Data center | IP addresses | DNS name |
|---|---|---|
| US1 data center | 10.0.0.1<br>10.0.0.2<br></br>10.0.0.3 | \\*.us.portal.contoso.com |
| **EU2** | `10.0.1.1`  <BR/> 10.0.1.0/24 | https:\\//eu2.portal.contoso.net/ |
| US2 | Dynamic | |

For US Government GCC High customers, also allow:

    portal.contoso.us  
    10.0.2.1

Instead, open your tenant URL (for example tenant.portal.contoso.com).

## Access and session controls

> [!div class=\"mx-tableFixed\"]
>
> |Data center|IP addresses||DNS name|
> |----|----|----|----|
> |US2|10.1.0.1<br />10.1.0.2|10.1.0.3<br />10.1.0.1|\\*.us2.cas.ms<|
> |Gov US1|2001:db8::1<br />2001:db8:1::/48||*.gov.cas.ms|

## Mail server

- 100.64.2.0/24  
- **198.51.100.7**

Also allow 203.0.113.5 (mailer.contoso.com) on port 587.

## Firewall appliance

- 198.51.100.200
    appliance.contoso.com

## Next steps

See [the docs](https://docs.contoso.com/x) and ![a picture](media/x.png).
";

    #[test]
    fn synthetic_page() {
        let imp = import_page(SYNTHETIC, "synthetic.md", None).unwrap();
        let want: &[Row] = &[
            ("Portal access", Portal, Some(Us1), 3, 1),
            ("Portal access", Portal, Some(Eu2), 2, 1),
            ("Portal access", Portal, Some(GovUs1), 1, 1),
            (
                "Access and session controls",
                AccessSessionControls,
                Some(Us2),
                3,
                1,
            ),
            (
                "Access and session controls",
                AccessSessionControls,
                Some(GovUs1),
                2,
                1,
            ),
            ("Mail server", Mail, None, 3, 1),
        ];
        assert_eq!(rows(&imp), expect(want));
        assert_eq!(
            imp.warnings,
            [
                "line 13: ignored table cell text \"Dynamic\"",
                "line 20: ignored \"tenant.portal.contoso.com\", given as an example (not a \
                 requirement)",
                "section \"Firewall appliance\" (line 38) is not a recognised section: \
                 skipped 1 address and 1 DNS name",
            ]
        );
        let set = &imp.set;
        assert_eq!(set.name, "cas-2024-03");
        assert_eq!(set.published, "2024-03-09");
        let entries: Vec<String> = set
            .entries
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {:?}",
                    e.prefix,
                    e.datacenter.map_or("-", DataCenter::as_str),
                    e.purpose,
                    e.ports
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                "10.0.0.1/32 US1 portal [443]",
                "10.0.0.2/32 US1 portal [443]",
                "10.0.0.3/32 US1 portal [443]",
                "10.0.1.1/32 EU2 portal [443]",
                "10.0.1.0/24 EU2 portal [443]",
                "10.0.2.1/32 Gov US1 portal [443]",
                "10.1.0.1/32 US2 access-session-controls [443]",
                "10.1.0.2/32 US2 access-session-controls [443]",
                "10.1.0.3/32 US2 access-session-controls [443]",
                "2001:db8::1/128 Gov US1 access-session-controls [443]",
                "2001:db8:1::/48 Gov US1 access-session-controls [443]",
                "100.64.2.0/24 - mail [25]",
                "198.51.100.7/32 - mail [25]",
                "203.0.113.5/32 - mail [587]",
            ]
        );
        let dns: Vec<String> = set
            .dns
            .iter()
            .map(|d| {
                format!(
                    "{} {} {} {:?}",
                    d.name,
                    d.datacenter.map_or("-", DataCenter::as_str),
                    d.purpose,
                    d.ports
                )
            })
            .collect();
        assert_eq!(
            dns,
            [
                "*.us.portal.contoso.com US1 portal [443]",
                "eu2.portal.contoso.net EU2 portal [443]",
                "portal.contoso.us Gov US1 portal [443]",
                "*.us2.cas.ms US2 access-session-controls [443]",
                "*.gov.cas.ms Gov US1 access-session-controls [443]",
                "mailer.contoso.com - mail [587]",
            ]
        );
        // The canonical file reads back to the same set.
        assert_eq!(AddressSet::from_json(&set.to_json()).unwrap(), *set);
    }

    /// The page with the first `from` replaced by `to`.
    fn edited(file: &str, from: &str, to: &str) -> String {
        let text = page(file);
        assert!(text.contains(from), "{from:?} in {file}");
        text.replacen(from, to, 1)
    }

    #[test]
    fn bad_addresses_name_their_line() {
        // The first US1 portal address (line 73 of the page).
        let text = edited(
            PAGE_2019,
            "|US1|13.64.26.88<br />",
            "|US1|13.64.26.888<br />",
        );
        let e = import_page(&text, PAGE_2019, None).unwrap_err();
        assert_eq!(
            e,
            ImportError::BadAddress {
                line: 73,
                text: "13.64.26.888".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "line 73: \"13.64.26.888\" is not a valid IP address or CIDR prefix"
        );
        // A mail range (line 170).
        let text = edited(PAGE_2019, "- 207.46.200.0/27", "- 10.0.0.0/33");
        assert_eq!(
            import_page(&text, PAGE_2019, None).unwrap_err().to_string(),
            "line 170: \"10.0.0.0/33\" is not a valid IP address or CIDR prefix"
        );
        // The MailChimp address in prose (line 180).
        let text = edited(PAGE_2019, "sent: 198.2.134.139", "sent: 198.2.134.1399");
        assert_eq!(
            import_page(&text, PAGE_2019, None).unwrap_err(),
            ImportError::BadAddress {
                line: 180,
                text: "198.2.134.1399".into()
            }
        );
        // An indented address of the 2017 page, trailing spaces kept (line 44).
        let text = edited(PAGE_2017, "    13.93.216.68\n", "    13.93.216.680  \n");
        assert_eq!(
            import_page(&text, PAGE_2017, None).unwrap_err(),
            ImportError::BadAddress {
                line: 44,
                text: "13.93.216.680".into()
            }
        );
        // An IPv6 prefix in a synthetic list.
        let text = "---\nms.date: 1/2/2020\n---\n## Mail server\n\n- 2001:db8::/129\n";
        assert_eq!(
            err(text),
            ImportError::BadAddress {
                line: 6,
                text: "2001:db8::/129".into()
            }
        );
        // Three dotted numbers in a list are a truncated address.
        let text = "---\nms.date: 1/2/2020\n---\n## Mail server\n- 10.0.0\n";
        assert_eq!(
            err(text).to_string(),
            "line 5: \"10.0.0\" is not a valid IP address or CIDR prefix"
        );
    }

    #[test]
    fn unknown_data_center_names_its_line() {
        let text = edited(
            PAGE_2019,
            "> |US2|13.80.125.22<br />20.36",
            "> |US4|13.80.125.22<br />20.36",
        );
        let e = import_page(&text, PAGE_2019, None).unwrap_err();
        assert_eq!(
            e,
            ImportError::UnknownDataCenter {
                line: 74,
                text: "US4".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "line 74: unknown data center \"US4\" (accepted: US1, US2, US3, EU1, EU2, Gov US1, \
             optionally followed by \"data center\")"
        );
    }

    #[test]
    fn pages_that_cannot_be_imported() {
        assert_eq!(err("## Portal access\n- 10.0.0.1\n"), ImportError::NoDate);
        assert_eq!(
            err("---\ntitle: x\n---\n## Portal access\n- 10.0.0.1\n").to_string(),
            "the page has no ms.date line in its front matter (expected e.g. `ms.date: 11/01/2019`)"
        );
        let e = err("---\ntitle: x\nms.date: 13/01/2019\n---\n");
        assert_eq!(
            e,
            ImportError::BadDate {
                line: 3,
                text: "13/01/2019".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "line 3: ms.date \"13/01/2019\" is not a date (expected MM/DD/YYYY)"
        );
        assert_eq!(
            err("---\nms.date: 2/30/2019\n---\n"),
            ImportError::BadDate {
                line: 2,
                text: "2/30/2019".into()
            }
        );
        let e = err("---\nms.date: 1/2/2020\n---\n## Something else\n- 10.0.0.1\n");
        assert_eq!(e, ImportError::NoSection);
        assert!(
            e.to_string()
                .starts_with("the page has no recognised section (expected headings"),
            "{e}"
        );
        let e =
            err("---\nms.date: 1/2/2020\n---\n## Portal access\nNothing yet.\n## Mail server\n");
        assert_eq!(
            e,
            ImportError::Empty {
                sections: vec!["Portal access".into(), "Mail server".into()]
            }
        );
        assert_eq!(
            e.to_string(),
            "the recognised sections (Portal access, Mail server) hold no IP address or DNS name"
        );
        // Other pages of the same documentation.
        let e = import_page(&page("connect-exchange-online.md"), "c.md", None).unwrap_err();
        assert_eq!(e, ImportError::NoSection);
        let e = import_page(&page("connect-apps.md"), "c.md", None).unwrap_err();
        assert_eq!(e, ImportError::NoDate);
    }

    #[test]
    fn subsections_stay_in_their_section() {
        let text = "---\nms.date: 2020-01-02\n---\n## App connector\n### US1\n- 10.0.0.1\n\
                    ## Other\n- 10.0.0.2\n- 10.0.0.3\n";
        let imp = import_page(text, "t.md", None).unwrap();
        assert_eq!(imp.set.published, "2020-01-02");
        let want: &[Row] = &[("App connector", AppConnector, None, 1, 0)];
        assert_eq!(rows(&imp), expect(want));
        assert_eq!(
            imp.warnings,
            [
                "section \"Other\" (line 7) is not a recognised section: skipped 2 addresses \
              and 0 DNS names"
            ]
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(
            split_br("a<br>b<br />c<br/>d<br></br>e<BR />f"),
            ["a", "b", "c", "d", "", "e", "f"]
        );
        assert_eq!(split_br("x<y"), ["x<y"]);
        assert_eq!(parse_date("7/3/2017").as_deref(), Some("2017-07-03"));
        assert_eq!(parse_date("02/29/2020").as_deref(), Some("2020-02-29"));
        assert_eq!(parse_date("02/29/2019"), None);
        assert_eq!(parse_date("11/01/19"), None);
        assert_eq!(
            clean("https:\\//a.b.windows.net/"),
            ("a.b.windows.net".into(), true)
        );
        assert_eq!(
            clean("\\*.eu.portal.cloudappsecurity.com<"),
            ("*.eu.portal.cloudappsecurity.com".into(), false)
        );
        assert_eq!(clean("**13.64.26.88**"), ("13.64.26.88".into(), false));
        assert_eq!(clean("(2001:db8::)."), ("2001:db8::".into(), false));
        assert_eq!(datacenter_label("US1 data center"), Some(Us1));
        assert_eq!(datacenter_label("**Gov US1**"), Some(GovUs1));
        assert_eq!(datacenter_label("GCC High"), Some(GovUs1));
        assert_eq!(datacenter_label("US Gov"), Some(GovUs1));
        assert_eq!(datacenter_label(""), None);
        assert_eq!(datacenter_label("US4"), None);
        assert_eq!(
            prose_ports("allow ports 80 and 443, then"),
            Some(vec![80, 443])
        );
        assert_eq!(prose_ports("the stunnel port number is 11344"), None);
        assert!(in_example("for example, open: x.com", 19));
        assert!(!in_example("see www.example.com. then x.com", 26));
        assert!(!in_example("for example this. then x.com", 23));
    }
}
