//! `run --log-dir`: the JSON-lines records, kept as evidence in rotated,
//! size-bounded files.
//!
//! Files are named `cas-audit-YYYYMMDDTHHMMSSZ.jsonl` after the UTC time
//! they were opened, with a `-N` suffix when that name is taken. Their order
//! is the order of [`compare_names`]: the timestamp, then the suffix (plain
//! byte order would put `...Z-1.jsonl` before `...Z.jsonl`). A new file never
//! sorts before an existing one: if the clock stepped back, it takes the
//! newest file's timestamp with the next suffix.
//!
//! * A file is rotated before a record would take it past
//!   [`LogDirOptions::max_size`], or once it is [`LogDirOptions::max_age`]
//!   old, always between records: a record is never split across files. A
//!   record larger than the size bound gets a file of its own.
//! * At each rotation the oldest `cas-audit-*.jsonl` files are deleted
//!   until the others and a full current file fit in
//!   [`LogDirOptions::max_total`]; the file being written is never deleted.
//! * Records are buffered for the current batch and handed to the operating
//!   system by [`LogDir::flush`] (the agent calls it after each batch of
//!   records), so a SIGKILL loses nothing flushed. A file is flushed and
//!   fsync'd when it is closed; a file closed without a record is removed.
//! * A failed write (`ENOSPC`, `EIO`, ...) never stops the agent: the
//!   records not written are counted ([`LogDir::records_lost`]), a record
//!   cut short is truncated away, one error naming the directory and the OS
//!   error is logged (again at most once a minute while it lasts), and the
//!   next record is tried again, in a new file if need be.
//! * Room for the last records: [`LogDir::reserve`] keeps space allocated in
//!   a file of its own ([`reserve`]), deleted by [`LogDir::release_reserve`]
//!   just before the summary record, so that the count of lost records
//!   reaches the directory even when the disk is full.

use std::{
    cmp::Ordering,
    fs::{DirBuilder, File},
    io::{self, Write},
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    time::Duration,
};

use time::OffsetDateTime;

use crate::units::size_text;

pub mod reserve;

/// Default `--log-max-size`: 64 MiB.
pub const DEFAULT_MAX_SIZE: u64 = 64 << 20;
/// Default `--log-max-age`: 24 hours.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Default `--log-max-total`: 1 GiB.
pub const DEFAULT_MAX_TOTAL: u64 = 1 << 30;

/// File names start with this...
pub const FILE_PREFIX: &str = "cas-audit-";
/// ...and end with this.
pub const FILE_SUFFIX: &str = ".jsonl";

/// Buffered bytes that make [`LogDir::write_record`] flush by itself.
const FLUSH_AT: usize = 64 << 10;
/// Least time between two error messages about the same failure.
const ERROR_INTERVAL: Duration = Duration::from_secs(60);
/// Most suffixes tried for one timestamp before giving up on a file name.
const MAX_SUFFIX_TRIES: u64 = 10_000;

/// Where and how much to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirOptions {
    /// The directory (created with mode 0750 if missing).
    pub dir: PathBuf,
    /// A file is rotated before a record would take it past this many bytes.
    pub max_size: u64,
    /// A file is rotated (at its next record) once it is this old.
    pub max_age: Duration,
    /// Bound on all `cas-audit-*.jsonl` files in the directory together.
    pub max_total: u64,
}

impl LogDirOptions {
    /// The defaults for `dir`: 64 MiB files, rotated daily, 1 GiB in all.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogDirOptions {
            dir: dir.into(),
            max_size: DEFAULT_MAX_SIZE,
            max_age: DEFAULT_MAX_AGE,
            max_total: DEFAULT_MAX_TOTAL,
        }
    }

    /// Checks that the bounds are consistent.
    pub fn validate(&self) -> Result<(), LogDirError> {
        if self.max_size == 0 || self.max_age.is_zero() {
            return Err(LogDirError::Bounds(
                "--log-max-size and --log-max-age must be positive".into(),
            ));
        }
        if self.max_total < self.max_size {
            return Err(LogDirError::Bounds(format!(
                "--log-max-total ({}) must be at least --log-max-size ({})",
                size_text(self.max_total),
                size_text(self.max_size)
            )));
        }
        Ok(())
    }
}

/// Why a log directory cannot be used at all (checked at start; failures
/// while running are counted, not returned).
#[derive(Debug, thiserror::Error)]
pub enum LogDirError {
    /// Inconsistent bounds (a usage error).
    #[error("{0}")]
    Bounds(String),
    /// The directory cannot be created or is not a directory.
    #[error("cannot create log directory {}: {error}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The first file cannot be created.
    #[error("cannot create a log file in {}: {error}", dir.display())]
    Open {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        error: io::Error,
    },
}

/// The clock of a [`LogDir`]: wall time names files, monotonic time
/// measures their age and spaces error messages. Injectable for tests.
pub trait LogClock: Send {
    /// Now, in UTC.
    fn wall(&self) -> OffsetDateTime;
    /// A monotonic time (any origin).
    fn mono(&self) -> Duration;
}

/// The system clocks (CLOCK_REALTIME, CLOCK_MONOTONIC).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl LogClock for SystemClock {
    fn wall(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
    fn mono(&self) -> Duration {
        Duration::from_nanos(crate::host::clock::monotonic_ns())
    }
}

/// An open log file: appends, fsync, truncation. Implemented for
/// [`File`] (opened in append mode); tests inject failing ones.
pub trait LogFile: Write + Send {
    /// Makes the data durable (`fsync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes (further writes append after it).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

impl LogFile for File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
}

/// Creates a new log file at a path that must not exist yet
/// (`AlreadyExists` makes the caller try the next suffix).
pub type Opener = Box<dyn FnMut(&Path) -> io::Result<Box<dyn LogFile>> + Send>;

/// The real opener: `O_CREAT | O_EXCL | O_NOFOLLOW | O_APPEND`, mode 0640
/// ([`crate::host::fs::create_new`]).
pub fn file_opener() -> Opener {
    Box::new(|path: &Path| {
        let f = crate::host::fs::create_new(path)?;
        Ok(Box::new(f) as Box<dyn LogFile>)
    })
}

/// Position of a log file name in write order: its timestamp and suffix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NameKey {
    /// `YYYYMMDDTHHMMSSZ`.
    pub stamp: String,
    /// The `-N` suffix; 0 without one.
    pub n: u64,
}

/// The [`NameKey`] of `cas-audit-YYYYMMDDTHHMMSSZ[-N].jsonl`, or `None`
/// for any other name.
pub fn parse_name(name: &str) -> Option<NameKey> {
    let rest = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    let (stamp, n) = match rest.split_once('-') {
        Some((stamp, n)) => {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.starts_with('0') {
                return None;
            }
            (stamp, n.parse().ok()?)
        }
        None => (rest, 0),
    };
    let b = stamp.as_bytes();
    let ok = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    ok.then(|| NameKey {
        stamp: stamp.to_string(),
        n,
    })
}

/// The file name of `key`.
pub fn file_name(key: &NameKey) -> String {
    match key.n {
        0 => format!("{FILE_PREFIX}{}{FILE_SUFFIX}", key.stamp),
        n => format!("{FILE_PREFIX}{}-{n}{FILE_SUFFIX}", key.stamp),
    }
}

/// Name order: log file names by [`NameKey`] (oldest first), before or
/// after other names by plain byte order of what precedes the suffix.
pub fn compare_names(a: &str, b: &str) -> Ordering {
    fn key(name: &str) -> (String, u64, &str) {
        match parse_name(name) {
            Some(k) => (format!("{FILE_PREFIX}{}", k.stamp), k.n, name),
            None => (name.to_string(), 0, name),
        }
    }
    key(a).cmp(&key(b))
}

/// `YYYYMMDDTHHMMSSZ` of a time.
fn stamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A log file in the directory.
#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    key: NameKey,
    size: u64,
}

/// The `cas-audit-*.jsonl` files in `dir`, oldest first.
fn log_files(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let Some(key) = e.file_name().to_str().and_then(parse_name) else {
            continue;
        };
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_file() {
            out.push(Entry {
                path: e.path(),
                key,
                size: meta.len(),
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

struct Current {
    file: Box<dyn LogFile>,
    path: PathBuf,
    key: NameKey,
    /// Bytes in the file (records written, none cut short).
    size: u64,
    /// When it was opened (monotonic).
    opened: Duration,
}

/// A failure that is going on.
struct Trouble {
    /// When it was last logged (monotonic).
    logged: Duration,
}

/// The writer of a log directory. See the [module](self) documentation.
pub struct LogDir {
    opts: LogDirOptions,
    clock: Box<dyn LogClock>,
    opener: Opener,
    current: Option<Current>,
    /// Records not yet handed to the OS, each ending in a newline...
    pending: Vec<u8>,
    /// ...and the offset just past each of them in `pending`.
    ends: Vec<usize>,
    lost: u64,
    trouble: Option<Trouble>,
    /// Error messages logged so far.
    errors_logged: u64,
    /// Space kept free for the last records, and how much is wanted.
    reserve: Option<reserve::Reserve>,
    reserve_wanted: u64,
    /// Whether a reserve that could not be taken was logged.
    reserve_warned: bool,
}

impl LogDir {
    /// Creates the directory if missing (mode 0750), deletes the oldest
    /// files beyond the total bound, and opens the first file.
    pub fn open(opts: LogDirOptions) -> Result<LogDir, LogDirError> {
        Self::with_io(opts, Box::new(SystemClock), file_opener())
    }

    /// [`LogDir::open`] with another clock and file opener.
    pub fn with_io(
        opts: LogDirOptions,
        clock: Box<dyn LogClock>,
        opener: Opener,
    ) -> Result<LogDir, LogDirError> {
        opts.validate()?;
        create_dir(&opts.dir).map_err(|error| LogDirError::CreateDir {
            dir: opts.dir.clone(),
            error,
        })?;
        let mut log = LogDir {
            opts,
            clock,
            opener,
            current: None,
            pending: Vec::new(),
            ends: Vec::new(),
            lost: 0,
            trouble: None,
            errors_logged: 0,
            reserve: None,
            reserve_wanted: 0,
            reserve_warned: false,
        };
        log.open_next().map_err(|error| LogDirError::Open {
            dir: log.opts.dir.clone(),
            error,
        })?;
        log::info!(
            "writing JSON lines to {} (files up to {}, {} in all)",
            log.current_path().unwrap_or(&log.opts.dir).display(),
            size_text(log.opts.max_size),
            size_text(log.opts.max_total)
        );
        Ok(log)
    }

    /// The options.
    pub fn options(&self) -> &LogDirOptions {
        &self.opts
    }

    /// The file being written, if one is open.
    pub fn current_path(&self) -> Option<&Path> {
        self.current.as_ref().map(|c| c.path.as_path())
    }

    /// Records that could not be written (the summary record reports it as
    /// `log_records_lost`). Records still buffered are not counted: call
    /// [`LogDir::flush`] first.
    pub fn records_lost(&self) -> u64 {
        self.lost
    }

    /// Error messages logged so far (one per failure, then at most one a
    /// minute while it lasts).
    pub fn errors_logged(&self) -> u64 {
        self.errors_logged
    }

    /// Adds one record: `json` is its JSON text, without a newline (compact
    /// JSON has none). Rotates first if the record would not fit in the
    /// current file or the file is too old.
    pub fn write_record(&mut self, json: &[u8]) {
        debug_assert!(!json.contains(&b'\n'));
        let len = json.len() as u64 + 1;
        let rotate = self.current.as_ref().is_some_and(|cur| {
            let size = cur.size + self.pending.len() as u64;
            let full = size + len > self.opts.max_size;
            let old = self.clock.mono().saturating_sub(cur.opened) >= self.opts.max_age;
            size > 0 && (full || old)
        });
        if rotate {
            self.close_current();
        }
        if self.current.is_none() {
            if let Err(e) = self.open_next() {
                self.lost += 1;
                self.failed(&e);
                return;
            }
        }
        self.pending.extend_from_slice(json);
        self.pending.push(b'\n');
        self.ends.push(self.pending.len());
        if self.pending.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Hands the buffered records to the operating system. Records that
    /// cannot be written are counted as lost; a record cut short is
    /// truncated away (if that fails too, the next record starts a new
    /// file).
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let Some(cur) = self.current.as_mut() else {
            // Not reached: records are only buffered with a file open.
            self.lost += self.ends.len() as u64;
            self.pending.clear();
            self.ends.clear();
            return;
        };
        let (written, err) = write_some(&mut *cur.file, &self.pending);
        let whole = self.ends.partition_point(|&e| e <= written);
        let boundary = if whole == 0 { 0 } else { self.ends[whole - 1] };
        cur.size += boundary as u64;
        let lost = (self.ends.len() - whole) as u64;
        self.pending.clear();
        self.ends.clear();
        let Some(e) = err else {
            self.recovered();
            return;
        };
        self.lost += lost;
        let mut torn = false;
        if written > boundary {
            if let Err(te) = cur.file.truncate(cur.size) {
                log::warn!(
                    "cannot truncate {} to its last whole record: {te}; continuing in a new file",
                    cur.path.display()
                );
                torn = true;
            }
        }
        self.failed(&e);
        if torn {
            self.close_current();
        }
    }

    /// Flushes and fsyncs the current file and closes it. The next record
    /// opens a new file.
    pub fn close(&mut self) {
        self.close_current();
    }

    fn close_current(&mut self) {
        self.flush();
        let Some(mut cur) = self.current.take() else {
            return;
        };
        if let Err(e) = cur.file.flush().and_then(|()| cur.file.sync()) {
            self.failed(&e);
        }
        let empty = cur.size == 0;
        drop(cur.file);
        // A file that got no record (the agent failed to start, or the disk
        // was full all along) is not left behind.
        if empty {
            let _ = std::fs::remove_file(&cur.path);
        }
        sync_dir(&self.opts.dir);
    }

    /// Opens the next file and deletes the oldest ones beyond the bound.
    fn open_next(&mut self) -> io::Result<()> {
        let newest = log_files(&self.opts.dir)
            .ok()
            .and_then(|v| v.last().cloned());
        let now = stamp(self.clock.wall());
        let mut key = match newest {
            Some(e) if e.key.stamp >= now => NameKey {
                stamp: e.key.stamp,
                n: e.key.n + 1,
            },
            _ => NameKey { stamp: now, n: 0 },
        };
        let mut made_dir = false;
        let mut tries = 0;
        let (file, path) = loop {
            let path = self.opts.dir.join(file_name(&key));
            match (self.opener)(&path) {
                Ok(f) => break (f, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < MAX_SUFFIX_TRIES => {
                    key.n += 1;
                    tries += 1;
                }
                // The directory was removed while running: make it again, once.
                Err(e) if e.kind() == io::ErrorKind::NotFound && !made_dir => {
                    create_dir(&self.opts.dir)?;
                    made_dir = true;
                }
                Err(e) => return Err(e),
            }
        };
        log::debug!("log file {}", path.display());
        self.current = Some(Current {
            file,
            path,
            key,
            size: 0,
            opened: self.clock.mono(),
        });
        self.prune();
        self.take_reserve();
        Ok(())
    }

    /// Deletes the oldest files until the others and a full current file
    /// fit in the total bound.
    fn prune(&mut self) {
        let Some(cur) = &self.current else { return };
        let files = match log_files(&self.opts.dir) {
            Ok(f) => f,
            Err(e) => {
                log::warn!("cannot list log directory {}: {e}", self.opts.dir.display());
                return;
            }
        };
        let room = self.opts.max_total - self.opts.max_size.min(self.opts.max_total);
        let others: Vec<&Entry> = files.iter().filter(|e| e.key != cur.key).collect();
        let mut total: u64 = others.iter().map(|e| e.size).sum();
        let mut removed = false;
        for e in others {
            if total <= room {
                break;
            }
            match std::fs::remove_file(&e.path) {
                Ok(()) => {
                    log::info!(
                        "removed {} ({} bytes): log files over --log-max-total",
                        e.path.display(),
                        e.size
                    );
                    total -= e.size;
                    removed = true;
                }
                Err(err) => log::warn!("cannot remove {}: {err}", e.path.display()),
            }
        }
        if removed {
            sync_dir(&self.opts.dir);
        }
    }

    /// Notes a failure; logs it unless it was logged less than a minute ago.
    fn failed(&mut self, e: &io::Error) {
        let now = self.clock.mono();
        let dir = self.opts.dir.display();
        match &mut self.trouble {
            None => {
                log::error!(
                    "cannot write to log directory {dir}: {e}; records not written are counted in log_records_lost ({} so far), and each new record is tried again",
                    self.lost
                );
                self.trouble = Some(Trouble { logged: now });
            }
            Some(t) if now.saturating_sub(t.logged) >= ERROR_INTERVAL => {
                log::error!(
                    "still cannot write to log directory {dir}: {e}; {} records lost so far",
                    self.lost
                );
                t.logged = now;
            }
            Some(_) => return,
        }
        self.errors_logged += 1;
    }

    /// A write succeeded: ends a failure, if one was going on.
    fn recovered(&mut self) {
        if self.trouble.take().is_some() {
            self.take_reserve();
            log::warn!(
                "log directory {} is writable again; {} records were lost",
                self.opts.dir.display(),
                self.lost
            );
        }
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        self.close_current();
        self.release_reserve();
    }
}

/// Writes as much of `buf` as the file takes: the bytes written and the
/// error that stopped it, if any.
fn write_some(f: &mut dyn LogFile, buf: &[u8]) -> (usize, Option<io::Error>) {
    let mut done = 0;
    // Each round writes at least one byte or returns; interrupted calls are
    // retried a bounded number of times.
    let mut interrupted = 0;
    while done < buf.len() {
        match f.write(&buf[done..]) {
            Ok(0) => return (done, Some(io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupted < 100 => {
                interrupted += 1
            }
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o750).create(dir)?;
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a directory",
        ));
    }
    Ok(())
}

/// fsync of the directory, so that new and removed names are durable too.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests;
