//! The subcommands, one file each, all of one shape: a config in, an
//! [`Outcome`] or an [`Error`] out. They call the library and print; the
//! binary turns the result into the exit code ([`exit_code`]), once.

pub mod check;
pub mod detach;
pub mod doctor;
pub mod report;
pub mod run;
pub mod sets;
pub mod status;

use std::{io::Write, path::Path};

use crate::error::{Error, EXIT_NEGATIVE, EXIT_SUCCESS};

/// What a command answers when it did its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Yes: done, reachable, the same, no check failed (exit 0).
    Success,
    /// The command's own negative answer: `check` found something
    /// unreachable, `sets diff` found a difference, a `doctor` check
    /// failed (exit 1).
    Negative,
}

/// The exit code of a command's result ([`crate::error::EXIT_CODES`]).
pub fn exit_code(result: &Result<Outcome, Error>) -> i32 {
    match result {
        Ok(Outcome::Success) => EXIT_SUCCESS,
        Ok(Outcome::Negative) => EXIT_NEGATIVE,
        Err(e) => e.exit_code(),
    }
}

/// Writes readable `text` (tables, lines) to standard output, every
/// control character but its line feeds and tabs escaped
/// ([`crate::text::terminal`]): names and fields from files, pages and
/// interfaces cannot move the cursor, recolour or clear the terminal.
///
/// # Errors
/// [`Error::Io`] when standard output cannot be written.
pub fn print_text(text: &str) -> Result<(), Error> {
    print(&crate::text::terminal(text))
}

/// Writes `text` (JSON, CSV, firewall rules: data, as it is) to standard
/// output.
///
/// # Errors
/// [`Error::Io`] when standard output cannot be written.
pub fn print(text: &str) -> Result<(), Error> {
    let mut so = std::io::stdout().lock();
    so.write_all(text.as_bytes())
        .and_then(|_| so.flush())
        .map_err(Error::io("writing to standard output"))
}

/// Writes `text` to the file `out` (created with mode 0640 or truncated,
/// never through a symbolic link: [`crate::host::fs::create_output`]), or
/// to standard output.
///
/// # Errors
/// [`Error::Output`] when the file cannot be created (a bad path, a
/// symbolic link: exit 2); [`Error::Io`] when it cannot be written.
pub fn print_to(text: &str, out: Option<&Path>) -> Result<(), Error> {
    let Some(p) = out else {
        return print(text);
    };
    let mut f = crate::host::fs::create_output(p).map_err(|source| crate::output::OpenError {
        path: p.to_path_buf(),
        source,
    })?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.flush())
        .map_err(Error::io(format!("writing {}", p.display())))
}

/// A current-thread tokio runtime for the commands that need one.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("starting the runtime"))
}
