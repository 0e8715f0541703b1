//! Part 4: importing address data as Microsoft publishes it: the full
//! weekly Service Tags download (3.5 MB, 2,604 tags), the same file grown
//! past 4 MB, a page, the page with one 840 KB line (prose; links nested
//! deep: linear time in a line's length), and a page merged with Service
//! Tags; in-process
//! (the library call `sets import` makes) and through the release binary
//! (`cas-audit sets import FILE --out FILE`: start, read, import, write).
//!
//! Input comes from `../shared/data` beside the workspace (the published
//! files); without it the part is skipped with a message.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use cas_audit::addrset::import::load_input;
use cas_audit::addrset::AddressSet;
use serde::Serialize;

use crate::stats::Stat;

/// One measured import.
#[derive(Debug, Clone, Serialize)]
pub struct ImportCase {
    /// What was imported.
    pub name: String,
    /// Input size in bytes (the sum of the inputs).
    pub bytes: u64,
    /// Entries of the resulting set.
    pub entries: usize,
    /// In-process milliseconds per round.
    pub ms: Stat,
    /// Through the binary, milliseconds per round (`None`: no binary).
    pub cli_ms: Option<Stat>,
}

/// Part 4's results.
#[derive(Debug, Clone, Serialize)]
pub struct ImportResults {
    /// Rounds per case.
    pub rounds: usize,
    /// The cases.
    pub cases: Vec<ImportCase>,
}

/// The shared data directory, if it is there.
pub fn data_dir(workspace: &Path) -> Option<PathBuf> {
    let d = workspace.join("../shared/data");
    d.join("servicetags/ServiceTags_Public_20240610.json")
        .is_file()
        .then_some(d)
}

/// The full download with every tag but the CAS ones listed twice (names
/// suffixed), written to `dir`: a file past 4 MB, as the downloads of
/// 2025 are.
fn grown(full: &Path, dir: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(full)?;
    let mut doc: serde_json::Value = serde_json::from_str(&text)?;
    let values = doc["values"].as_array_mut().context("values")?;
    let copies: Vec<serde_json::Value> = values
        .iter()
        .filter(|v| {
            !v["name"]
                .as_str()
                .unwrap_or("")
                .contains("CloudAppSecurity")
        })
        .map(|v| {
            let mut v = v.clone();
            let name = format!("{}.Copy", v["name"].as_str().unwrap_or(""));
            v["name"] = name.clone().into();
            v["id"] = name.into();
            v
        })
        .collect();
    values.extend(copies);
    let path = dir.join("ServiceTags_Public_20240610_grown.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
    Ok(path)
}

/// The page with one prose line of 840 KB appended (the size of the line
/// that took 12 s when the page reader was quadratic in a line's length):
/// addresses, links and "e.g." mentions, every word something the reader
/// looks at. Written to `dir`.
fn long_line(page: &Path, dir: &Path) -> Result<PathBuf> {
    let mut text = std::fs::read_to_string(page)?;
    text.push('\n');
    let mut line = String::new();
    while line.len() < 840_000 {
        line.push_str(
            "the portal at 13.64.196.27, see [the docs](https://learn.invalid/x), e.g. 13.64.196.28. ",
        );
    }
    text.push_str(&line);
    text.push('\n');
    let path = dir.join("network-requirements-long-line.md");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The page with one 840 KB line of links nested 168,000 deep around an
/// address (`[[[…[13.64.196.27](a)](a)…](a)`): each link's removal makes
/// the next, which a reader that searches again from the start of the
/// line for every link does in time quadratic in the line's length.
/// Written to `dir`.
fn nested_links(page: &Path, dir: &Path) -> Result<PathBuf> {
    let mut text = std::fs::read_to_string(page)?;
    let depth = 168_000;
    text.push('\n');
    text.push_str(&"[".repeat(depth));
    text.push_str("13.64.196.27");
    text.push_str(&"](a)".repeat(depth));
    text.push('\n');
    let path = dir.join("network-requirements-nested-links.md");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Name of the case with the 840 KB prose line.
pub const LONG_LINE_CASE: &str = "page 2024-11 + one 840 KB prose line";
/// Name of the case with the 840 KB line of nested links.
pub const NESTED_CASE: &str = "page 2024-11 + one 840 KB line of nested links";

/// Milliseconds of `f`, `rounds` times.
fn time(rounds: usize, mut f: impl FnMut() -> Result<usize>) -> Result<(Stat, usize)> {
    let mut samples = Vec::with_capacity(rounds);
    let mut n = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        n = f()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((Stat::of(samples), n))
}

/// The set of `inputs` as `sets import` makes it (merged when several).
fn import(inputs: &[PathBuf]) -> Result<AddressSet> {
    let sets = inputs
        .iter()
        .map(|p| {
            load_input(p.to_str().context("UTF-8 path")?, None)
                .map(|i| i.into_set())
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(if sets.len() == 1 {
        sets.into_iter().next().expect("one")
    } else {
        AddressSet::merge(&sets, None)
    })
}

/// Runs part 4 (`agent`: the release binary, when it exists).
pub fn run(
    data: &Path,
    agent: Option<&Path>,
    out_dir: &Path,
    rounds: usize,
) -> Result<ImportResults> {
    let full = data.join("servicetags/ServiceTags_Public_20240610.json");
    let grown = grown(&full, out_dir)?;
    let page = data.join("pages/network-requirements-2024-11-03.md");
    let long = long_line(&page, out_dir)?;
    let nested = nested_links(&page, out_dir)?;
    let cases: Vec<(&str, Vec<PathBuf>)> = vec![
        (
            "Service Tags, Public 2024-06-10 (full download)",
            vec![full],
        ),
        (
            "Service Tags, the same grown past 4 MB",
            vec![grown.clone()],
        ),
        ("page 2024-11", vec![page.clone()]),
        (LONG_LINE_CASE, vec![long.clone()]),
        (NESTED_CASE, vec![nested.clone()]),
        (
            "page 2024-11 + Service Tags 2025-11 (merge)",
            vec![
                data.join("pages/network-requirements-2024-11-03.md"),
                data.join("servicetags/ServiceTags_Public_cn376_2025-11-10_mcas-excerpt.json"),
            ],
        ),
    ];
    let out_file = out_dir.join("import-bench.json");
    let mut results = Vec::new();
    for (name, inputs) in cases {
        let bytes = inputs
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()))
            .sum::<std::io::Result<u64>>()?;
        // One round first to warm the page cache; not counted.
        import(&inputs)?;
        let (ms, entries) = time(rounds, || Ok(import(&inputs)?.entries.len()))?;
        let cli_ms = match agent {
            Some(bin) => Some(
                time(rounds, || {
                    let status = Command::new(bin)
                        .args(["sets", "import"])
                        .args(&inputs)
                        .arg("--out")
                        .arg(&out_file)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()?;
                    if !status.success() {
                        bail!("cas-audit sets import {inputs:?}: {status}");
                    }
                    Ok(0)
                })?
                .0,
            ),
            None => None,
        };
        eprintln!(
            "import {name}: {:.1} ms in-process, {} through the binary",
            ms.median,
            cli_ms
                .as_ref()
                .map_or("-".into(), |s| format!("{:.1} ms", s.median))
        );
        results.push(ImportCase {
            name: name.into(),
            bytes,
            entries,
            ms,
            cli_ms,
        });
    }
    let _ = std::fs::remove_file(&out_file);
    let _ = std::fs::remove_file(&grown);
    let _ = std::fs::remove_file(&long);
    let _ = std::fs::remove_file(&nested);
    Ok(ImportResults {
        rounds,
        cases: results,
    })
}
