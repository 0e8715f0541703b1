//! The log on standard error: which messages `-v` shows, and how a line
//! looks on a terminal or in the systemd journal.
//!
//! - Verbosity ([`filter`]): the agent's own messages (target `cas_audit`)
//!   and the kernel programs' (`cas_audit_ebpf`, through aya-log) come
//!   first; libraries (aya's loader, tokio, ...) only say more from `-vv`.
//!   `RUST_LOG` replaces the filter.
//! - Format ([`LogFormat`]): text lines with a UTC timestamp and the level,
//!   or, for the journal, the priority as a `<N>` prefix (sd-daemon(3),
//!   syslog(3) levels: 3 error, 4 warning, 6 info, 7 debug) and no
//!   timestamp, which the journal adds itself. `auto` picks the journal
//!   when standard error is the journal stream systemd names in
//!   `JOURNAL_STREAM` (systemd.exec(5): `DEVICE:INODE` of that stream).

use crate::text::{one_line, terminal};
use std::{
    io::Write,
    os::fd::AsRawFd,
    str::FromStr,
    sync::atomic::{AtomicBool, Ordering},
};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// The journal when standard error is its stream, text otherwise.
    Auto,
    /// `[2026-11-22T06:15:38.123Z INFO  cas_audit::audit] message`.
    Text,
    /// `<6>message`: a syslog priority prefix, no timestamp.
    Journal,
}

impl LogFormat {
    /// Every format with its flag value.
    pub const ALL: [(LogFormat, &'static str); 3] = [
        (LogFormat::Auto, "auto"),
        (LogFormat::Text, "text"),
        (LogFormat::Journal, "journal"),
    ];

    /// `Auto` decided: whether lines go to the journal.
    pub fn journal(self) -> bool {
        match self {
            LogFormat::Auto => stderr_is_journal(),
            LogFormat::Text => false,
            LogFormat::Journal => true,
        }
    }
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        LogFormat::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(f, _)| *f)
            .ok_or_else(|| format!("{s:?} is not a log format (auto, text or journal)"))
    }
}

/// Whether standard error is the stream `JOURNAL_STREAM` names.
fn stderr_is_journal() -> bool {
    let Some(want) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = want.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: a zeroed stat is valid; fstat writes the struct it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above, on standard error's descriptor.
    let rc = unsafe { libc::fstat(std::io::stderr().as_raw_fd(), &mut st) };
    rc == 0 && st.st_dev == dev && st.st_ino == ino
}

/// The syslog priority of a log level (syslog(3): `LOG_ERR` 3 ... `LOG_DEBUG` 7).
pub fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// The filter for `-v` given `verbose` times: ours first, libraries last.
pub fn filter(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn,cas_audit=info,cas_audit_ebpf=info",
        1 => "warn,cas_audit=debug,cas_audit_ebpf=debug",
        2 => "debug,cas_audit=trace,cas_audit_ebpf=trace",
        _ => "trace",
    }
}

/// Whether the log went to the journal ([`init`]).
static JOURNAL: AtomicBool = AtomicBool::new(false);

/// Sets up the logger for `verbose` and `format`. Every record is one
/// line: control characters in a message (a line feed, a terminal escape
/// sequence from a set name or a page) are written escaped
/// ([`crate::text::one_line`]), so that no text a message quotes can
/// forge a record or reach the terminal raw.
pub fn init(verbose: u8, format: LogFormat) {
    let journal = format.journal();
    JOURNAL.store(journal, Ordering::Relaxed);
    let mut b = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(filter(verbose)),
    );
    if journal {
        b.format(|buf, rec| {
            let msg = rec.args().to_string();
            let msg = one_line(&msg);
            let target = rec.target();
            if target == "cas_audit" || target.starts_with("cas_audit::") {
                writeln!(buf, "<{}>{msg}", priority(rec.level()))
            } else {
                writeln!(buf, "<{}>{target}: {msg}", priority(rec.level()))
            }
        });
    } else {
        // env_logger's own layout (`[TIME LEVEL target] message`).
        b.format(|buf, rec| {
            let msg = rec.args().to_string();
            let style = buf.default_level_style(rec.level());
            writeln!(
                buf,
                "[{} {style}{:<5}{style:#} {}] {}",
                buf.timestamp_millis(),
                rec.level(),
                rec.target(),
                one_line(&msg)
            )
        });
    }
    b.init();
}

/// Writes the lines of a command's error on standard error: as
/// `cas-audit: ...` on a terminal, with the error priority in the journal.
/// A line with line breaks of its own (the verifier's log) goes on as
/// further lines, each with the prefix; other control characters are
/// escaped ([`crate::text::terminal`]).
pub fn print_error(lines: &[String]) {
    let journal = JOURNAL.load(Ordering::Relaxed);
    let mut err = std::io::stderr().lock();
    let lines = lines.iter().flat_map(|l| l.split('\n'));
    for (i, line) in lines.enumerate() {
        let line = terminal(line);
        let _ = match (journal, i) {
            (true, _) => writeln!(err, "<3>cas-audit: {line}"),
            (false, 0) => writeln!(err, "cas-audit: {line}"),
            (false, _) => writeln!(err, "  {line}"),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_syslogs() {
        assert_eq!(priority(log::Level::Error), 3);
        assert_eq!(priority(log::Level::Warn), 4);
        assert_eq!(priority(log::Level::Info), 6);
        assert_eq!(priority(log::Level::Debug), 7);
    }

    #[test]
    fn libraries_say_more_only_from_vv() {
        for v in [0, 1] {
            assert!(filter(v).starts_with("warn,"), "{v}");
        }
        assert!(filter(1).contains("cas_audit=debug"));
        assert!(filter(1).contains("cas_audit_ebpf=debug"));
        assert!(filter(2).starts_with("debug,"));
    }

    #[test]
    fn auto_needs_the_stream_systemd_named() {
        // The only test touching the variable (std serialises env access).
        std::env::set_var("JOURNAL_STREAM", "1:1");
        assert!(!LogFormat::Auto.journal());
        // SAFETY: fstat writes the struct it is given.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::fstat(std::io::stderr().as_raw_fd(), &mut st) },
            0
        );
        let here = format!("{}:{}", st.st_dev, st.st_ino);
        std::env::set_var("JOURNAL_STREAM", &here);
        assert!(LogFormat::Auto.journal());
        std::env::remove_var("JOURNAL_STREAM");
        assert!(!LogFormat::Auto.journal());
        assert!(LogFormat::Journal.journal());
        assert!(!LogFormat::Text.journal());
    }
}
