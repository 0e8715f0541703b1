//! `cas-audit sets`: list, show, compare, export and import address sets.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use ipnet::IpNet;

use super::{print, print_text, print_to, Outcome};
use crate::{
    addrset::Need,
    addrset::{
        datacenter_text,
        diff::SetDiff,
        export::{export, ExportFormat},
        import::{load_input, Imported, InputError},
        AddressSet, DataCenter, Purpose,
    },
    error::Error,
    output::human::table,
    text::{csv_field, shown},
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

pub use crate::addrset::Selection;

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
    /// Pages, Service Tags files and sets (files or built-in names) into
    /// one set file (`sets import`, `sets merge`).
    Import {
        /// The inputs, in order.
        inputs: Vec<String>,
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
        SetsConfig::List { files } => print_text(&list(&files)?)?,
        SetsConfig::Show { selection, format } => {
            let text = show(&selection.load_some(Need::EntriesOrNames)?, format);
            if format == ShowFormat::Table {
                print_text(&text)?
            } else {
                print(&text)?
            }
        }
        SetsConfig::Diff { a, b, json } => {
            let (text, same) = diff(&a, &b, json)?;
            if json {
                print(&text)?
            } else {
                print_text(&text)?
            }
            if !same {
                return Ok(Outcome::Negative);
            }
        }
        SetsConfig::Export {
            selection,
            format,
            out,
        } => print_to(
            &export(&selection.load_some(Need::Entries)?, format),
            out.as_deref(),
        )?,
        SetsConfig::Import { inputs, name, out } => {
            let (json, report) = import(&inputs, name.as_deref())?;
            eprint!("{}", crate::text::terminal(&report));
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
            shown(&s.name).to_string(),
            kind,
            shown(&s.source).to_string(),
            shown(&s.published).to_string(),
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

/// `sets show`: the selected entries as a table, JSON or CSV, with where
/// each comes from (its region, cloud, sources; `shared` when other
/// Microsoft services use the address too).
pub fn show(set: &AddressSet, format: ShowFormat) -> String {
    let opt = |o: Option<String>| o.unwrap_or_default();
    match format {
        ShowFormat::Json => set.to_json(),
        ShowFormat::Csv => {
            let mut out = String::from(
                "kind,value,datacenter,purpose,direction,ports,region,cloud,shared,sources\n",
            );
            // Fields from the set file may hold commas, quotes, line breaks.
            let words = |v: &[String]| csv_field(&v.join(" ")).into_owned();
            let ports = |p: &[u16]| join(p.iter()).replace(", ", " ");
            for e in &set.entries {
                out.push_str(&format!(
                    "prefix,{},{},{},{},{},{},{},{},{}\n",
                    e.prefix,
                    opt(e.datacenter.map(|d| d.to_string())),
                    e.purpose,
                    e.direction,
                    ports(&e.ports),
                    csv_field(&opt(e.region.as_ref().map(ToString::to_string))),
                    csv_field(&opt(e.cloud.clone())),
                    if e.shared { "yes" } else { "" },
                    words(&e.sources)
                ));
            }
            for n in &set.dns {
                out.push_str(&format!(
                    "dns,{},{},{},{},{},,,,{}\n",
                    n.name,
                    opt(n.datacenter.map(|d| d.to_string())),
                    n.purpose,
                    n.direction,
                    ports(&n.ports),
                    words(&n.sources)
                ));
            }
            out
        }
        ShowFormat::Table => {
            let mut t = table(&[
                "Prefix / DNS name",
                "Data center",
                "Region",
                "Purpose",
                "Direction",
                "Ports",
                "Sources",
            ]);
            for e in &set.entries {
                let mut sources = join(e.sources.iter());
                if e.shared {
                    sources.push_str(" (shared)");
                }
                // An entry placed by region only is not "every data center".
                let dc = match (e.datacenter, &e.region) {
                    (None, Some(_)) => "-".to_owned(),
                    (dc, _) => datacenter_text(dc).into_owned(),
                };
                t.add_row(vec![
                    e.prefix.to_string(),
                    dc,
                    e.region.as_ref().map_or("-".into(), ToString::to_string),
                    e.purpose.to_string(),
                    e.direction.to_string(),
                    join(e.ports.iter()),
                    shown(&sources).to_string(),
                ]);
            }
            for n in &set.dns {
                t.add_row(vec![
                    n.name.clone(),
                    datacenter_text(n.datacenter).into_owned(),
                    "-".into(),
                    n.purpose.to_string(),
                    n.direction.to_string(),
                    join(n.ports.iter()),
                    shown(&join(n.sources.iter())).to_string(),
                ]);
            }
            let mut out = format!(
                "{t}\n{}: {} entries ({} distinct prefixes), {} DNS names; source {}, published {}\n",
                shown(&set.name),
                set.entries.len(),
                set.ranges().len(),
                set.dns.len(),
                shown(&set.source),
                shown(&set.published)
            );
            for src in &set.sources {
                let mut facts = vec![
                    src.kind.as_str().to_owned(),
                    src.file.clone(),
                    src.published.clone(),
                ];
                facts.extend(src.cloud.clone());
                facts.extend(src.change_number.map(|n| format!("changeNumber {n}")));
                facts.extend(src.sha256.as_ref().map(|h| format!("sha256 {h}")));
                out.push_str(&format!(
                    "  {}: {}\n",
                    shown(&src.id),
                    shown(&facts.join(", "))
                ));
            }
            out
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

/// `sets import INPUT...` / `sets merge A B ...`: the set file of the
/// inputs (merged when there are several) and a report of what each gave.
///
/// # Errors
/// An input that cannot be read ([`Error::Io`]) or imported
/// ([`Error::Usage`], [`Error::Set`]).
pub fn import(inputs: &[String], name: Option<&str>) -> Result<(String, String), Error> {
    let one = inputs.len() == 1;
    let mut report = String::new();
    let mut sets = Vec::new();
    for input in inputs {
        let imported = load_input(input, if one { name } else { None }).map_err(|e| match e {
            InputError::Read { kind, message, .. } => Error::Input {
                path: input.clone(),
                source: std::io::Error::new(kind, message),
            },
            InputError::Set(s) => Error::Set(s),
            other => Error::Usage(other.to_string()),
        })?;
        report.push_str(&input_report(input, &imported));
        sets.push(imported.into_set());
    }
    let set = if one {
        sets.remove(0)
    } else {
        AddressSet::merge(&sets, name)
    };
    report.push_str(&set_summary(&set, if one { "imported" } else { "merged" }));
    Ok((set.to_json(), report))
}

/// What one input gave, for `sets import` and `sets merge`.
fn input_report(input: &str, imported: &Imported) -> String {
    let mut out = String::new();
    let warnings = match imported {
        Imported::Page(imp) => {
            let src = &imp.set.sources[0];
            out.push_str(&format!(
                "{input}: page dated {} (ms.date), sha256 {}\n",
                shown(&src.published),
                src.sha256.as_deref().unwrap_or("-")
            ));
            let mut t = table(&[
                "Section",
                "Purpose",
                "Data center",
                "Region",
                "Addresses",
                "DNS names",
            ]);
            for c in &imp.counts {
                t.add_row(vec![
                    shown(&c.section).to_string(),
                    c.purpose.to_string(),
                    datacenter_text(c.datacenter).into_owned(),
                    c.region.as_ref().map_or("-".into(), ToString::to_string),
                    c.addresses.to_string(),
                    c.dns_names.to_string(),
                ]);
            }
            out.push_str(&format!("{t}\nWhat each line gave:\n"));
            for l in &imp.lines {
                let mut what = Vec::new();
                if l.addresses + l.dns_names > 0 {
                    what.push(format!(
                        "{} {}, {} {} -> {} {}",
                        l.addresses,
                        if l.addresses == 1 {
                            "address"
                        } else {
                            "addresses"
                        },
                        l.dns_names,
                        if l.dns_names == 1 {
                            "DNS name"
                        } else {
                            "DNS names"
                        },
                        join(l.purposes.iter()),
                        l.places.join(", ")
                    ));
                }
                what.extend(l.notes.iter().cloned());
                out.push_str(&format!(
                    "  line {} ({}): {}\n",
                    l.line,
                    shown(&l.section),
                    what.join("; ")
                ));
            }
            &imp.warnings
        }
        Imported::ServiceTags(imp) => {
            let src = &imp.set.sources[0];
            out.push_str(&format!(
                "{input}: Service Tags, cloud {}, changeNumber {}, dated {}, {} tags, sha256 {}\n",
                shown(src.cloud.as_deref().unwrap_or("-")),
                src.change_number.map_or("-".into(), |n| n.to_string()),
                shown(&src.published),
                imp.tags_in_file,
                src.sha256.as_deref().unwrap_or("-")
            ));
            let mut t = table(&["Tag", "changeNumber", "IPv4", "IPv6", "Taken as"]);
            for tag in &imp.tags {
                t.add_row(vec![
                    shown(&tag.name).to_string(),
                    tag.change_number.map_or("-".into(), |n| n.to_string()),
                    tag.prefixes.0.to_string(),
                    tag.prefixes.1.to_string(),
                    tag.used_as.clone(),
                ]);
            }
            let regions: Vec<String> = imp
                .regions
                .iter()
                .map(|(r, n)| {
                    format!(
                        "{} {n}",
                        r.as_ref().map_or("(no region)".into(), ToString::to_string)
                    )
                })
                .collect();
            out.push_str(&format!(
                "{t}\nGlobal prefixes per region: {}\n",
                if regions.is_empty() {
                    "-".into()
                } else {
                    regions.join(", ")
                }
            ));
            &imp.warnings
        }
        Imported::Set(set) => {
            out.push_str(&format!(
                "{input}: set {} ({} sources, published {})\n",
                set.name,
                set.sources.len(),
                set.published
            ));
            return out;
        }
    };
    for w in warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

/// The closing line of an import: the set's figures.
fn set_summary(set: &AddressSet, verb: &str) -> String {
    let ranges = set.ranges();
    let v6 = ranges.iter().filter(|r| r.prefix.addr().is_ipv6()).count();
    let mut per_purpose: BTreeMap<Purpose, BTreeSet<IpNet>> = BTreeMap::new();
    for e in &set.entries {
        per_purpose
            .entry(e.purpose)
            .or_default()
            .insert(e.prefix.trunc());
    }
    let purposes: Vec<String> = per_purpose
        .iter()
        .map(|(p, n)| format!("{p} {}", n.len()))
        .collect();
    format!(
        "{verb} set {}: {} entries ({} distinct prefixes: {} IPv4, {v6} IPv6), {} DNS names, \
         from {} {}; prefixes per purpose: {}\n",
        set.name,
        set.entries.len(),
        ranges.len(),
        ranges.len() - v6,
        set.dns.len(),
        set.sources.len(),
        if set.sources.len() == 1 {
            "source"
        } else {
            "sources"
        },
        purposes.join(", ")
    )
}
