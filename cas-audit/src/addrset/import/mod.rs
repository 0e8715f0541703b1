//! Importers: one file per source format Microsoft publishes, and
//! [`load_input`], which recognises an input by its content.
//!
//! - [`page`]: the "Network requirements" page (Markdown, as published);
//! - [`servicetags`]: the Azure Service Tags file (JSON).

pub mod page;
pub mod servicetags;

use std::path::Path;

use serde::{de::IgnoredAny, Deserialize};

use super::{AddressSet, SetError};

pub use page::{import_page, Import};

/// What an input is, by its content: JSON with `values` is a Service Tags
/// file, JSON with `schema` a set file, anything else a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A "Network requirements" page.
    Page,
    /// An Azure Service Tags file.
    ServiceTags,
    /// A cas-audit set file.
    Set,
}

/// The top-level keys that tell the JSON formats apart.
#[derive(Deserialize)]
struct Keys {
    #[serde(default)]
    values: Option<IgnoredAny>,
    #[serde(default)]
    schema: Option<IgnoredAny>,
}

/// The format of `text`.
///
/// # Errors
/// JSON (the text starts with `{`) that is not an object with `values` or
/// `schema`: the reason.
pub fn detect(text: &str) -> Result<Format, String> {
    let t = text.trim_start_matches('\u{feff}').trim_start();
    if !t.starts_with('{') {
        return Ok(Format::Page);
    }
    match serde_json::from_str::<Keys>(t) {
        Ok(k) if k.values.is_some() => Ok(Format::ServiceTags),
        Ok(k) if k.schema.is_some() => Ok(Format::Set),
        Ok(_) => Err(
            "JSON, but neither a Service Tags file (no \"values\") nor a set file \
                      (no \"schema\")"
                .into(),
        ),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

/// An input read, with what its importer says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// A page and its import report.
    Page(page::Import),
    /// A Service Tags file and its import report.
    ServiceTags(servicetags::Import),
    /// A set: built-in, or a set file.
    Set(AddressSet),
}

impl Imported {
    /// The set it gave.
    #[must_use]
    pub fn into_set(self) -> AddressSet {
        match self {
            Imported::Page(i) => i.set,
            Imported::ServiceTags(i) => i.set,
            Imported::Set(s) => s,
        }
    }
}

/// Why an input cannot be imported.
#[derive(thiserror::Error, Debug)]
pub enum InputError {
    /// The file cannot be read.
    #[error("{path}: cannot read it: {message}")]
    Read {
        /// The path as given.
        path: String,
        /// The OS error.
        message: String,
        /// Its kind.
        kind: std::io::ErrorKind,
    },
    /// JSON of neither known kind.
    #[error("{path}: {message}")]
    Json {
        /// The path as given.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A page that cannot be imported.
    #[error("{path}: {reason}")]
    Page {
        /// The path as given.
        path: String,
        /// Why.
        reason: page::ImportError,
    },
    /// A Service Tags file that cannot be imported.
    #[error("{path}: {reason}")]
    ServiceTags {
        /// The path as given.
        path: String,
        /// Why.
        reason: servicetags::TagsError,
    },
    /// A set file that cannot be loaded (the error names the file).
    #[error("{0}")]
    Set(SetError),
}

/// Reads one input: a built-in set name, or a file in any of the
/// [`Format`]s; `name` names the imported set (a page's or Service Tags
/// file's; a set keeps its own).
///
/// A Service Tags file is dated by its name ([`servicetags::date_in_name`]),
/// else by its modification time (UTC), which its report then says.
///
/// # Errors
/// [`InputError`]: the file cannot be read, or its importer refuses it.
pub fn load_input(input: &str, name: Option<&str>) -> Result<Imported, InputError> {
    if let Some(set) = AddressSet::builtin_named(input) {
        return Ok(Imported::Set(set));
    }
    let path = Path::new(input);
    let read_error = |e: std::io::Error| InputError::Read {
        path: input.to_owned(),
        message: e.to_string(),
        kind: e.kind(),
    };
    let text = crate::host::fs::read_text(path).map_err(read_error)?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| input.to_owned());
    let format = detect(&text).map_err(|message| InputError::Json {
        path: input.to_owned(),
        message,
    })?;
    match format {
        Format::Page => page::import_page(&text, &file, name)
            .map(Imported::Page)
            .map_err(|reason| InputError::Page {
                path: input.to_owned(),
                reason,
            }),
        Format::ServiceTags => {
            let (date, from_mtime) = match servicetags::date_in_name(&file) {
                Some(d) => (d, false),
                None => {
                    let modified = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .map_err(read_error)?;
                    let date = time::OffsetDateTime::from(modified).date();
                    (date.to_string(), true)
                }
            };
            let mut imp =
                servicetags::import_service_tags(&text, &file, &date, name).map_err(|reason| {
                    InputError::ServiceTags {
                        path: input.to_owned(),
                        reason,
                    }
                })?;
            if from_mtime {
                imp.warnings.push(format!(
                    "the file name carries no date: dated {date} by its modification time \
                     (name it like ServiceTags_Public_YYYYMMDD.json to keep the publication date)"
                ));
            }
            Ok(Imported::ServiceTags(imp))
        }
        Format::Set => AddressSet::from_json(&text)
            .map(Imported::Set)
            .map_err(|reason| {
                InputError::Set(SetError::File {
                    path: input.to_owned(),
                    reason: Box::new(reason),
                })
            }),
    }
}

/// `M/D/YYYY` (or `YYYY-MM-DD`) as `YYYY-MM-DD`, if it is a real date.
pub(crate) fn parse_date(text: &str) -> Option<String> {
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
