//! `cas-audit sets`: list, show, compare, export and import address sets.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use super::{print, print_to, Outcome};
use crate::{
    addrset::{
        self, datacenter_text,
        diff::SetDiff,
        export::{export, ExportFormat},
        import::import_page,
        AddressSet, DataCenter, Purpose,
    },
    error::Error,
    output::human::table,
};

/// Output formats of `sets show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowFormat {
    /// A readable table.
    Table,
    /// The set file (schema 1) of the selection.
    Json,
    /// `kind,value,datacenter,purpose,direction,ports`, one row per entry or DNS name.
    Csv,
}

impl ShowFormat {
    /// Every format with its name.
    pub const ALL: [(ShowFormat, &'static str); 3] = [
        (ShowFormat::Table, "table"),
        (ShowFormat::Json, "json"),
        (ShowFormat::Csv, "csv"),
    ];
}

impl std::str::FromStr for ShowFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ShowFormat::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(f, _)| *f)
            .ok_or_else(|| format!("{s:?} is not a format (table, json or csv)"))
    }
}

/// A set and the part of it selected.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// A built-in set name or a set file; `None`: the default built-in set.
    pub set: Option<String>,
    /// Only these data centers (entries without one are kept).
    pub datacenters: Vec<DataCenter>,
    /// Only these purposes.
    pub purposes: Vec<Purpose>,
}

impl Selection {
    /// Loads the set and keeps the selection ([`addrset::select_some`]).
    ///
    /// # Errors
    /// A set that cannot be loaded; a selection without what `need` says.
    pub fn load(&self, need: addrset::Need) -> Result<AddressSet, Error> {
        Ok(addrset::select_some(
            self.set.as_deref(),
            &self.datacenters,
            &self.purposes,
            need,
        )?)
    }
}

/// What a `sets` subcommand does.
#[derive(Debug, Clone)]
pub enum SetsConfig {
    /// The built-in sets and these set files, with counts.
    List {
        /// Set files.
        files: Vec<String>,
    },
    /// A selection as a table, JSON or CSV.
    Show {
        /// The selection.
        selection: Selection,
        /// The format.
        format: ShowFormat,
    },
    /// What changed from `a` to `b`.
    Diff {
        /// The old set.
        a: String,
        /// The new set.
        b: String,
        /// JSON instead of text.
        json: bool,
    },
    /// A selection as a firewall allowlist.
    Export {
        /// The selection.
        selection: Selection,
        /// The firewall syntax.
        format: ExportFormat,
        /// A file instead of standard output.
        out: Option<PathBuf>,
    },
    /// A published page into a set file.
    Import {
        /// The page.
        page: PathBuf,
        /// The set's name.
        name: Option<String>,
        /// A file instead of standard output.
        out: Option<PathBuf>,
    },
}

/// `cas-audit sets ...`: [`Outcome::Negative`] when `diff` finds a difference.
///
/// # Errors
/// A set or page that cannot be read; writing the output.
pub fn run(cfg: SetsConfig) -> Result<Outcome, Error> {
    match cfg {
        SetsConfig::List { files } => print(&list(&files)?)?,
        SetsConfig::Show { selection, format } => print(&show(
            &selection.load(addrset::Need::EntriesOrNames)?,
            format,
        ))?,
        SetsConfig::Diff { a, b, json } => {
            let (text, same) = diff(&a, &b, json)?;
            print(&text)?;
            if !same {
                return Ok(Outcome::Negative);
            }
        }
        SetsConfig::Export {
            selection,
            format,
            out,
        } => print_to(
            &export(&selection.load(addrset::Need::Entries)?, format),
            out.as_deref(),
        )?,
        SetsConfig::Import { page, name, out } => {
            let (json, report) = import(&page, name.as_deref())?;
            eprint!("{report}");
            print_to(&json, out.as_deref())?;
        }
    }
    Ok(Outcome::Success)
}

fn join<T: ToString>(v: impl IntoIterator<Item = T>) -> String {
    v.into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `sets list [FILE...]`: the built-in sets and the given files, with counts.
pub fn list(files: &[String]) -> Result<String, Error> {
    let mut t = table(&[
        "Set",
        "Kind",
        "Source",
        "Published",
        "Entries",
        "Prefixes",
        "DNS names",
        "Data centers",
    ]);
    let mut rows: Vec<(AddressSet, String)> = AddressSet::builtins()
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            (
                s,
                if i == 0 {
                    "built-in (default)".into()
                } else {
                    "built-in".into()
                },
            )
        })
        .collect();
    for f in files {
        rows.push((AddressSet::load(f)?, format!("file {f}")));
    }
    for (s, kind) in rows {
        let dcs: BTreeSet<DataCenter> = s.entries.iter().filter_map(|e| e.datacenter).collect();
        t.add_row(vec![
            s.name.clone(),
            kind,
            s.source.clone(),
            s.published.clone(),
            s.entries.len().to_string(),
            s.ranges().len().to_string(),
            s.dns.len().to_string(),
            if dcs.is_empty() {
                datacenter_text(None).into_owned()
            } else {
                join(dcs)
            },
        ]);
    }
    Ok(format!("{t}\n"))
}

/// `sets show`: the selected entries as a table, JSON or CSV.
pub fn show(set: &AddressSet, format: ShowFormat) -> String {
    match format {
        ShowFormat::Json => set.to_json(),
        ShowFormat::Csv => {
            let mut out = String::from("kind,value,datacenter,purpose,direction,ports\n");
            let ports = |p: &[u16]| join(p.iter()).replace(", ", " ");
            for e in &set.entries {
                out.push_str(&format!(
                    "prefix,{},{},{},{},{}\n",
                    e.prefix,
                    e.datacenter.map(|d| d.to_string()).unwrap_or_default(),
                    e.purpose,
                    e.direction,
                    ports(&e.ports)
                ));
            }
            for n in &set.dns {
                out.push_str(&format!(
                    "dns,{},{},{},{},{}\n",
                    n.name,
                    n.datacenter.map(|d| d.to_string()).unwrap_or_default(),
                    n.purpose,
                    n.direction,
                    ports(&n.ports)
                ));
            }
            out
        }
        ShowFormat::Table => {
            let mut t = table(&[
                "Prefix / DNS name",
                "Data center",
                "Purpose",
                "Direction",
                "Ports",
            ]);
            for e in &set.entries {
                t.add_row(vec![
                    e.prefix.to_string(),
                    datacenter_text(e.datacenter).into_owned(),
                    e.purpose.to_string(),
                    e.direction.to_string(),
                    join(e.ports.iter()),
                ]);
            }
            for n in &set.dns {
                t.add_row(vec![
                    n.name.clone(),
                    datacenter_text(n.datacenter).into_owned(),
                    n.purpose.to_string(),
                    n.direction.to_string(),
                    join(n.ports.iter()),
                ]);
            }
            format!(
                "{t}\n{}: {} entries ({} distinct prefixes), {} DNS names; source {}, published {}\n",
                set.name,
                set.entries.len(),
                set.ranges().len(),
                set.dns.len(),
                set.source,
                set.published
            )
        }
    }
}

/// `sets diff A B`: the text (or JSON), and whether the sets are the same.
pub fn diff(a: &str, b: &str, json: bool) -> Result<(String, bool), Error> {
    let d = SetDiff::between(&AddressSet::load(a)?, &AddressSet::load(b)?);
    let text = if json {
        serde_json::to_string(&d).expect("serialisable") + "\n"
    } else {
        d.text()
    };
    Ok((text, d.is_empty()))
}

/// `sets import PAGE.md`: the set file and a report of what was taken
/// (per section and data center) and the warnings.
pub fn import(page: &Path, name: Option<&str>) -> Result<(String, String), Error> {
    let text = crate::host::fs::read_text(page).map_err(|source| Error::Input {
        path: page.display().to_string(),
        source,
    })?;
    let source = page
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let imp = import_page(&text, &source, name)
        .map_err(|e| Error::Usage(format!("{}: {e}", page.display())))?;
    let mut t = table(&[
        "Section",
        "Purpose",
        "Data center",
        "Addresses",
        "DNS names",
    ]);
    for c in &imp.counts {
        t.add_row(vec![
            c.section.clone(),
            c.purpose.to_string(),
            datacenter_text(c.datacenter).into_owned(),
            c.addresses.to_string(),
            c.dns_names.to_string(),
        ]);
    }
    let mut report = format!(
        "{t}\nimported {} as {}: {} entries ({} distinct prefixes), {} DNS names\n",
        page.display(),
        imp.set.name,
        imp.set.entries.len(),
        imp.set.ranges().len(),
        imp.set.dns.len()
    );
    for w in &imp.warnings {
        report.push_str(&format!("warning: {w}\n"));
    }
    Ok((imp.set.to_json(), report))
}
