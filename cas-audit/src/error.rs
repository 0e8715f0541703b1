//! Errors the agent reports to its user, and the one exit-code policy of
//! every command ([`EXIT_CODES`]).

use crate::datapath::DatapathError;

/// Exit code of success.
pub const EXIT_SUCCESS: i32 = 0;
/// Exit code of a command's own negative answer (`check`: not everything
/// is reachable; `sets diff`: the sets differ; `doctor`: a check failed).
pub const EXIT_NEGATIVE: i32 = 1;
/// Exit code for usage, configuration and environment errors found before
/// or while starting: restarting the same command cannot help.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for failures while running (after the start): an output that
/// can no longer be written, a map that can no longer be read.
pub const EXIT_FAILURE: i32 = 3;

/// The exit-code policy, one row per code: the code and what it means for
/// every command. The README's table, the man pages' EXIT STATUS and each
/// subcommand's `--help` are this table.
pub const EXIT_CODES: [(i32, &str); 4] = [
    (EXIT_SUCCESS, "success"),
    (
        EXIT_NEGATIVE,
        "the command's own negative answer, for the three commands that have one: check (a destination is not reachable), sets diff (the sets differ), doctor (a check failed)",
    ),
    (
        EXIT_USAGE,
        "a usage, configuration or environment error found before or while starting: a bad flag or value, a path that is not a readable regular file or cannot be created, an empty selection, a bad set file, an unknown or repeated interface, an interface another cas-audit already watches, a port in use, missing privileges, a kernel or pin directory that cannot be used",
    ),
    (
        EXIT_FAILURE,
        "a failure while running: an output that can no longer be written (a closed pipe is not one: the command stops quietly with 0), a kernel map that can no longer be read",
    ),
];

/// The commands with an exit code 1, and what it means for each.
pub const NEGATIVE_ANSWERS: [(&str, &str); 3] = [
    ("check", "some destination is not reachable"),
    ("sets diff", "the sets differ"),
    ("doctor", "a check failed"),
];

/// The exit codes `command` (`run`, `sets diff`, ...; `""` for the
/// program as a whole) can return, with their meaning for it.
pub fn exit_codes(command: &str) -> Vec<(i32, String)> {
    EXIT_CODES
        .iter()
        .filter_map(|&(code, meaning)| {
            if code != EXIT_NEGATIVE || command.is_empty() {
                return Some((code, meaning.to_string()));
            }
            NEGATIVE_ANSWERS
                .iter()
                .find(|(c, _)| *c == command)
                .map(|(_, m)| (code, m.to_string()))
        })
        .collect()
}

/// An error that stops a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Missing privileges, or a kernel that cannot run the datapath.
    #[error(transparent)]
    Preflight(#[from] crate::host::caps::PreflightError),
    /// A bad flag value or combination, or nothing to do (an empty
    /// selection).
    #[error("{0}")]
    Usage(String),
    /// A bad address set (file, place and reason).
    #[error("address set {0}")]
    Set(crate::addrset::SetError),
    /// The datapath failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// The log directory cannot be used.
    #[error(transparent)]
    LogDir(#[from] crate::output::logdir::LogDirError),
    /// An output file cannot be created.
    #[error(transparent)]
    Output(#[from] crate::output::OpenError),
    /// An input (saved records, a page) that cannot be read as one.
    #[error("{path}: {source}")]
    Input {
        /// The path as given.
        path: String,
        /// Why ([`crate::host::fs`] says what is wrong with it).
        #[source]
        source: std::io::Error,
    },
    /// Something the start needs that the system refused (a port in use, a
    /// signal handler).
    #[error("{what}: {source}")]
    Setup {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An error found while starting: whatever it is, a configuration or
    /// environment problem (exit 2), shown as the error itself.
    #[error(transparent)]
    Start(Box<Error>),
    /// Writing output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

// Not `#[from]`: that would also make the set error this one's cause, and
// the binary would print it twice.
impl From<crate::addrset::SetError> for Error {
    fn from(e: crate::addrset::SetError) -> Self {
        Error::Set(e)
    }
}

impl Error {
    /// The process exit code for this error ([`EXIT_CODES`]); a closed
    /// pipe on standard output is a quiet success.
    pub fn exit_code(&self) -> i32 {
        if self.is_broken_pipe() {
            return EXIT_SUCCESS;
        }
        match self {
            Error::Io { .. } => EXIT_FAILURE,
            // Only these can happen while running (reading the flow table,
            // the counters).
            Error::Datapath(DatapathError::Map { .. } | DatapathError::Io { .. }) => EXIT_FAILURE,
            Error::Preflight(_)
            | Error::Usage(_)
            | Error::Set(_)
            | Error::Datapath(_)
            | Error::LogDir(_)
            | Error::Output(_)
            | Error::Input { .. }
            | Error::Setup { .. }
            | Error::Start(_) => EXIT_USAGE,
        }
    }

    /// This error, found while starting: exit code 2 whatever it is.
    pub fn at_start(self) -> Error {
        if self.exit_code() == EXIT_USAGE || self.is_broken_pipe() {
            self
        } else {
            Error::Start(Box::new(self))
        }
    }

    /// Whether the error is, or was caused by, a closed pipe (`EPIPE`):
    /// whoever read the output is gone.
    pub fn is_broken_pipe(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return true;
            }
            cur = e.source();
        }
        false
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// Wraps an I/O error of the start with what was being done.
    pub fn setup(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Setup { what, source }
    }

    /// The error and those of its causes that say something new, one line
    /// each: what the user reads.
    pub fn lines(&self) -> Vec<String> {
        let top = self.to_string();
        let mut lines = vec![top.clone()];
        let mut said = top;
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            let text = s.to_string();
            if !said.contains(&text) {
                lines.push(format!("caused by: {text}"));
                said.push('\n');
                said.push_str(&text);
            }
            src = s.source();
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn codes_follow_the_policy() {
        let usage = Error::Usage("bad".into());
        assert_eq!(usage.exit_code(), EXIT_USAGE);
        let running = Error::io("writing the JSON lines")(io::Error::other("disk gone"));
        assert_eq!(running.exit_code(), EXIT_FAILURE);
        let started = Error::io("writing")(io::Error::other("x")).at_start();
        assert_eq!(started.exit_code(), EXIT_USAGE);
        assert_eq!(started.to_string(), "writing: x");
        let pipe = Error::io("writing to standard output")(io::ErrorKind::BrokenPipe.into());
        assert_eq!(pipe.exit_code(), EXIT_SUCCESS);
        assert!(pipe.at_start().is_broken_pipe());
        let input = Error::Input {
            path: "/dev/zero".into(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "it is a character device"),
        };
        assert_eq!(input.exit_code(), EXIT_USAGE);
    }

    #[test]
    fn causes_that_repeat_are_not_shown() {
        let e = Error::io("writing /x")(io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(
            e.lines(),
            ["writing /x: No space left on device (os error 28)"]
        );
        let e = Error::io("writing /x")(io::Error::other(Error::Usage("deeper".into())));
        assert_eq!(e.lines(), ["writing /x: deeper"]);
        // A wrapped error shows as itself, once.
        let e = Error::setup("serving metrics on 127.0.0.1:9477")(io::Error::from_raw_os_error(
            libc::EADDRINUSE,
        ))
        .at_start();
        assert_eq!(
            e.lines(),
            ["serving metrics on 127.0.0.1:9477: Address already in use (os error 98)"]
        );
    }

    #[test]
    fn every_command_has_0_2_3_and_only_three_have_1() {
        for cmd in ["run", "report", "status", "sets show", "check", "sets diff"] {
            let codes: Vec<i32> = exit_codes(cmd).iter().map(|(c, _)| *c).collect();
            let negative = NEGATIVE_ANSWERS.iter().any(|(c, _)| *c == cmd);
            let want: &[i32] = if negative { &[0, 1, 2, 3] } else { &[0, 2, 3] };
            assert_eq!(codes, want, "{cmd}");
        }
        assert_eq!(
            exit_codes("check")[1].1,
            "some destination is not reachable"
        );
        assert_eq!(exit_codes("").len(), 4);
    }
}
