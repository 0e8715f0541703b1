//! The line reader: sections, tables, lists and code blocks, and what
//! each line holds.

use super::words::*;
use super::*;

/// An address or a name found on the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token {
    Addr(IpNet),
    Name(String),
}

/// A token with where it applies.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub(super) token: Token,
    pub(super) datacenter: Option<DataCenter>,
    /// Ports the line says, if any.
    pub(super) ports: Option<Vec<u16>>,
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

/// The purposes a heading stands for (empty: not a known section).
pub(super) fn section_purposes(title: &str) -> Vec<Purpose> {
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
pub(super) struct Table {
    /// The first column holds the data center.
    pub(super) dc_column: bool,
}

/// The line-by-line reader.
#[derive(Debug)]
pub(super) struct Reader {
    pub(super) sections: Vec<Section>,
    pub(super) warnings: Vec<String>,
    pub(super) table: Option<Table>,
    /// The data center named by the last prose line of the section.
    pub(super) lead_dc: Option<DataCenter>,
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
    pub(super) fn section(&mut self) -> &mut Section {
        self.sections.last_mut().expect("there is always a section")
    }

    pub(super) fn push(
        &mut self,
        token: Token,
        datacenter: Option<DataCenter>,
        ports: Option<Vec<u16>>,
    ) {
        self.section().found.push(Found {
            token,
            datacenter,
            ports,
        });
    }

    /// A warning, only about recognised sections (the others are reported
    /// as a whole).
    pub(super) fn warn(&mut self, message: String) {
        if self.section().recognised() {
            self.warnings.push(message);
        }
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

    pub(super) fn heading(&mut self, level: usize, title: String, n: usize) {
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
    pub(super) fn row(
        &mut self,
        cells: &[String],
        table: Table,
        n: usize,
    ) -> Result<(), ImportError> {
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
    pub(super) fn text(&mut self, line: &str, n: usize) -> Result<(), ImportError> {
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
    pub(super) fn prose(
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
