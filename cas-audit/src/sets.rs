//! `cas-audit sets`: list, show, compare, export and import address sets.

use std::{collections::BTreeSet, path::Path};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use crate::{
    addrset::{AddressSet, DataCenter, Purpose},
    diff::SetDiff,
    error::Error,
    export::{export, ExportFormat},
    import::import_page,
};

/// Exit code of `sets diff` when the sets differ.
pub const EXIT_DIFFERENT: i32 = 1;

/// Output formats of `sets show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowFormat {
    /// A readable table.
    Table,
    /// The set file (schema 1) of the selection.
    Json,
    /// `kind,value,datacenter,purpose,direction,ports`, one row per entry or DNS name.
    Csv,
}

/// Loads `name_or_file` (default: the built-in default set) and keeps the
/// selected data centers and purposes.
pub fn select(
    name_or_file: Option<&str>,
    dcs: &[DataCenter],
    purposes: &[Purpose],
) -> Result<AddressSet, Error> {
    let mut set = match name_or_file {
        Some(n) => AddressSet::load(n)?,
        None => AddressSet::builtin(),
    };
    if !dcs.is_empty() {
        set.retain_datacenters(dcs);
    }
    if !purposes.is_empty() {
        set.retain_purposes(purposes);
    }
    Ok(set)
}

fn join<T: ToString>(v: impl IntoIterator<Item = T>) -> String {
    v.into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn dc_text(dc: Option<DataCenter>) -> String {
    dc.map(|d| d.to_string()).unwrap_or_else(|| "-".into())
}

/// `sets list [FILE...]`: the built-in sets and the given files, with counts.
pub fn list(files: &[String]) -> Result<String, Error> {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
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
                "-".into()
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
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED);
            t.set_header(vec![
                "Prefix / DNS name",
                "Data center",
                "Purpose",
                "Direction",
                "Ports",
            ]);
            for e in &set.entries {
                t.add_row(vec![
                    e.prefix.to_string(),
                    dc_text(e.datacenter),
                    e.purpose.to_string(),
                    e.direction.to_string(),
                    join(e.ports.iter()),
                ]);
            }
            for n in &set.dns {
                t.add_row(vec![
                    n.name.clone(),
                    dc_text(n.datacenter),
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

/// `sets diff A B`: the text (or JSON) and the exit code (0 same, 1 different).
pub fn diff(a: &str, b: &str, json: bool) -> Result<(String, i32), Error> {
    let d = SetDiff::between(&AddressSet::load(a)?, &AddressSet::load(b)?);
    let text = if json {
        serde_json::to_string_pretty(&d).expect("serialisable") + "\n"
    } else {
        d.text()
    };
    Ok((text, if d.is_empty() { 0 } else { EXIT_DIFFERENT }))
}

/// `sets export`: the firewall allowlist of the selection.
pub fn export_set(set: &AddressSet, format: ExportFormat) -> String {
    export(set, format)
}

/// `sets import PAGE.md`: the set file and a report of what was taken
/// (per section and data center) and the warnings.
pub fn import(page: &Path, name: Option<&str>) -> Result<(String, String), Error> {
    let text =
        std::fs::read_to_string(page).map_err(Error::io(format!("reading {}", page.display())))?;
    let source = page
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let imp = import_page(&text, &source, name)
        .map_err(|e| Error::Usage(format!("{}: {e}", page.display())))?;
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
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
            dc_text(c.datacenter),
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
