//! The line reader: sections, tables, lists and code blocks, and what
//! each line holds.

use std::collections::BTreeMap;

use super::words::*;
use super::*;

/// An address or a name found on the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token {
    Addr(IpNet),
    Name(String),
}

/// Where the page places a token: a data center, an Azure region, both or
/// neither.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Place {
    pub(super) datacenter: Option<DataCenter>,
    pub(super) region: Option<Region>,
}

impl Place {
    /// This place with what `more` says on top.
    fn with(&self, more: &Place) -> Place {
        Place {
            datacenter: more.datacenter.or(self.datacenter),
            region: more.region.clone().or_else(|| self.region.clone()),
        }
    }
}

/// A token with where it applies.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub(super) token: Token,
    pub(super) place: Place,
    /// Ports the line says, if any.
    pub(super) ports: Option<Vec<u16>>,
    /// 1-based line.
    pub(super) line: usize,
}

/// The text under one heading.
#[derive(Debug)]
pub(super) struct Section {
    pub(super) title: String,
    /// 1-based line of the heading (0 for the text before the first one).
    pub(super) line: usize,
    pub(super) level: usize,
    /// Empty when the heading is not recognised.
    pub(super) purposes: Vec<Purpose>,
    pub(super) found: Vec<Found>,
}

impl Section {
    pub(super) fn recognised(&self) -> bool {
        !self.purposes.is_empty()
    }
}

/// Every purpose a heading names, in [`Purpose::ALL`] order (empty: not a
/// known section). Combined headings ("Portal access, SIEM agent and log
/// collector", "App connector access and external DLP integration") give
/// each purpose they name.
pub(super) fn section_purposes(title: &str) -> Vec<Purpose> {
    let t: String = title
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { ' ' })
        .collect();
    let t = format!(" {} ", t.split_whitespace().collect::<Vec<_>>().join(" "));
    let has = |w: &str| t.contains(&format!(" {w}"));
    let mut purposes = Vec::new();
    let mut add = |yes: bool, p: &[Purpose]| {
        if yes {
            purposes.extend_from_slice(p);
        }
    };
    add(has("portal"), &[Purpose::Portal]);
    add(
        has("session control")
            || has("access control")
            || has("access and session")
            || has("reverse proxy"),
        &[Purpose::AccessSessionControls],
    );
    add(has("siem"), &[Purpose::SiemAgent]);
    add(
        has("app connector") || has("api connector"),
        &[Purpose::AppConnector],
    );
    add(has("dlp") || has("icap"), &[Purpose::Dlp]);
    // The 2017 page's "Cloud App Security System IP addresses": used "when
    // connecting using ICAP and when connecting App connectors".
    add(
        has("system ip address"),
        &[Purpose::AppConnector, Purpose::Dlp],
    );
    add(has("mail") || has("email"), &[Purpose::Mail]);
    add(has("log collector"), &[Purpose::LogCollector]);
    add(
        has("authentication gateway") || has("auth gateway"),
        &[Purpose::AuthGateway],
    );
    purposes.sort();
    purposes.dedup();
    purposes
}

/// A table being read.
#[derive(Debug, Clone, Default)]
pub(super) struct Table {
    /// The header's first cell names the data center column ("Data
    /// center", "Region").
    dc_column: bool,
    /// The place each header cell names (column form: `| US1 | EU1 |`).
    columns: Vec<Option<Place>>,
}

impl Table {
    fn from_header(cells: &[String]) -> Table {
        let first = cells.first().map(|c| c.to_ascii_lowercase());
        Table {
            dc_column: first.is_some_and(|c| {
                ["data center", "datacenter", "data centre", "region"]
                    .iter()
                    .any(|w| c.contains(w))
            }),
            columns: cells.iter().map(|c| label_place(c)).collect(),
        }
    }
}

/// The line-by-line reader.
#[derive(Debug)]
pub(super) struct Reader {
    pub(super) sections: Vec<Section>,
    pub(super) warnings: Vec<String>,
    /// What the reader did with a line besides taking tokens: labels,
    /// repairs, skipped text (line → notes).
    pub(super) notes: BTreeMap<usize, Vec<String>>,
    table: Option<Table>,
    /// The place named by the last prose line of the section.
    lead: Place,
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
            notes: BTreeMap::new(),
            table: None,
            lead: Place::default(),
        }
    }
}

/// Whether a cell holds an address or a name.
fn has_token(cell: &str) -> bool {
    data_words(&strip_links(cell))
        .iter()
        .any(|w| !matches!(classify(w, false), Class::Other))
}

impl Reader {
    pub(super) fn section(&mut self) -> &mut Section {
        self.sections.last_mut().expect("there is always a section")
    }

    fn push(&mut self, token: Token, place: &Place, ports: Option<Vec<u16>>, line: usize) {
        let place = place.clone();
        self.section().found.push(Found {
            token,
            place,
            ports,
            line,
        });
    }

    /// A warning (also noted on its line).
    fn warn(&mut self, n: usize, message: String) {
        self.note(n, message.clone());
        self.warnings.push(format!("line {n}: {message}"));
    }

    fn note(&mut self, n: usize, message: String) {
        self.notes.entry(n).or_default().push(message);
    }

    pub(super) fn read(&mut self, lines: &[&str], body: usize) -> Result<(), ImportError> {
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
                if cells.iter().all(|c| is_separator(c) || c.is_empty()) {
                    // A separator row (with as many cells as it likes);
                    // first in a table, the table has no header.
                    self.table.get_or_insert_with(Table::default);
                    continue;
                }
                // Taken out while the row is read, not cloned: a header
                // may have any number of cells.
                let table = match self.table.take() {
                    Some(t) => t,
                    None => {
                        let next_is_separator = lines
                            .get(i + 1)
                            .map(|l| unquote(l))
                            .filter(|l| l.starts_with('|'))
                            .is_some_and(|l| split_row(l).iter().all(|c| is_separator(c)));
                        if next_is_separator {
                            self.table = Some(Table::from_header(&cells));
                            skip_next = true;
                            continue;
                        }
                        Table::default()
                    }
                };
                self.row(&cells, &table, n)?;
                self.table = Some(table);
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

    pub(super) fn heading(&mut self, level: usize, title: String, n: usize) {
        self.table = None;
        self.lead = Place::default();
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

    /// A table row (not the header): a first cell without addresses is the
    /// row's label (a data center, a region, or a name for the row); a
    /// header cell naming a place places its column.
    fn row(&mut self, cells: &[String], table: &Table, n: usize) -> Result<(), ImportError> {
        let mut place = self.lead.clone();
        let mut first = 0;
        if let [label, rest @ ..] = cells {
            if !rest.is_empty() && !has_token(label) {
                first = 1;
                let text = plain_label(&strip_links(label));
                match label_place(&text) {
                    Some(p) => place = place.with(&p),
                    None if text.is_empty() => {}
                    None if table.dc_column => self.warn(
                        n,
                        format!(
                            "unknown data center {text:?}: its addresses are kept without a \
                             data center"
                        ),
                    ),
                    None => self.note(n, format!("row {text:?}")),
                }
            }
        }
        for (i, cell) in cells.iter().enumerate().skip(first) {
            let column = match table.columns.get(i) {
                Some(Some(p)) => place.with(p),
                _ => place.clone(),
            };
            for piece in split_br(cell) {
                let piece = strip_links(&piece);
                let piece = piece.trim();
                if piece.is_empty() {
                    continue;
                }
                if self.data(piece, n, &column)?.is_none()
                    && self.prose(piece, n, &column)? == 0
                    && !clean(piece).0.is_empty()
                {
                    self.skipped(piece, n);
                }
            }
        }
        Ok(())
    }

    /// Text with no address or name that the reader skips: a warning in a
    /// recognised section, unless it names a Service Tag (a note).
    fn skipped(&mut self, text: &str, n: usize) {
        if !tag_mentions(text).is_empty() {
            return;
        }
        if self.section().recognised() {
            self.warn(n, format!("ignored table cell text {text:?}"));
        }
    }

    /// A line outside tables: a data line, or prose.
    fn text(&mut self, line: &str, n: usize) -> Result<(), ImportError> {
        let line = strip_links(strip_list_marker(line));
        if line.trim().is_empty() {
            return Ok(());
        }
        let lead = self.lead.clone();
        if self.data(&line, n, &lead)?.is_some() {
            return Ok(());
        }
        self.lead = Place {
            datacenter: prose_datacenter(&line),
            region: None,
        };
        let lead = self.lead.clone();
        self.prose(&line, n, &lead)?;
        Ok(())
    }

    /// A list of addresses and names (a cell, a list item, a code-block
    /// line), optionally after a region or data-center label (`West Europe:
    /// 1.2.3.4, 5.6.7.8`): every word an address or a name, separated by
    /// white space, commas, semicolons or `and`. Returns how many were
    /// taken, or `None` when the text is not such a list.
    fn data(&mut self, text: &str, n: usize, place: &Place) -> Result<Option<usize>, ImportError> {
        let (text, repaired) = repair_dotted(text);
        let (place, body) = match split_label(&text) {
            Some((label, body)) => match label_place(label) {
                Some(p) => (place.with(&p), body),
                None if is_data(body) => {
                    self.note(
                        n,
                        format!(
                            "{:?} is no known Azure region or data center: its addresses \
                             are kept without it",
                            plain_label(label)
                        ),
                    );
                    (place.clone(), body)
                }
                None => (place.clone(), text.as_str()),
            },
            None => (place.clone(), text.as_str()),
        };
        if !is_data(body) {
            return Ok(None);
        }
        for r in repaired {
            self.warn(
                n,
                format!("read {r} for the address written with a stray comma"),
            );
        }
        let mut taken = 0;
        for w in data_words(body) {
            match classify(w, false) {
                Class::Token(t) => {
                    self.push(t, &place, None, n);
                    taken += 1;
                }
                Class::Bad(text) => return Err(ImportError::BadAddress { line: n, text }),
                Class::Other => {}
            }
        }
        Ok(Some(taken))
    }

    /// Takes the addresses and names of a prose text; returns how many.
    fn prose(&mut self, text: &str, n: usize, place: &Place) -> Result<usize, ImportError> {
        let lower = text.to_ascii_lowercase();
        let ports = prose_ports(&lower);
        let examples = Examples::new(&lower);
        let mut taken = 0;
        for (pos, word) in prose_words(text) {
            match classify(word, true) {
                Class::Token(t) => {
                    if examples.covers(pos) {
                        let shown = match &t {
                            Token::Addr(a) => a.to_string(),
                            Token::Name(s) => s.clone(),
                        };
                        let message =
                            format!("ignored {shown:?}, given as an example (not a requirement)");
                        if self.section().recognised() {
                            self.warn(n, message);
                        } else {
                            self.note(n, message);
                        }
                    } else {
                        self.push(t, place, ports.clone(), n);
                        taken += 1;
                    }
                }
                Class::Bad(text) => return Err(ImportError::BadAddress { line: n, text }),
                Class::Other => {}
            }
        }
        for tag in tag_mentions(text) {
            self.note(
                n,
                format!(
                    "names the Service Tag {tag}: import a Service Tags file for its addresses"
                ),
            );
        }
        Ok(taken)
    }
}

/// Whether every word of `text` is an address or a name (`and`, `or` and
/// `&` aside), and there is one.
fn is_data(text: &str) -> bool {
    let words: Vec<&str> = data_words(text)
        .into_iter()
        .filter(|w| !matches!(w.to_ascii_lowercase().as_str(), "and" | "or" | "&"))
        .collect();
    !words.is_empty()
        && words
            .iter()
            .all(|w| !matches!(classify(w, false), Class::Other))
}
