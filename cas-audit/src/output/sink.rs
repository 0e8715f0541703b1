//! Where `run`'s records go: JSON lines to standard output or a file, the
//! log directory, readable lines and the summary table on standard
//! output, and the exports (IPFIX, syslog); each behind a bounded queue
//! with a thread of its own ([`super::bounded`], [`super::writer`]).

use std::{
    collections::{BTreeMap, HashMap},
    io::{self, Write},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use super::{
    bounded::{Bounded, SinkCounts, Stall},
    human::{self, LineTime},
    logdir::LogDir,
    record::{FlowRecord, RecordRef, Summary},
    writer::{Line, LogWriter, Stream},
};
use crate::flow::{Reason, Verdict};

/// Longest wait at exit for an export to send what is queued.
pub const EXPORT_GRACE: Duration = Duration::from_secs(2);

/// A system fed with some of the flow records, through a [`Bounded`] queue.
pub struct Export {
    sink: Bounded<Arc<FlowRecord>>,
    picks: Picks,
}

/// Which records an export takes.
#[derive(Debug, Clone, Copy)]
enum Picks {
    /// Flows reported for good (each flow once, with its final counts).
    Final,
    /// Flagged and blocked flows, and with `ended` the flows reported for good.
    Alerts { ended: bool },
}

impl Export {
    /// An IPFIX exporter: flows reported for good.
    pub fn ipfix(sink: Bounded<Arc<FlowRecord>>) -> Export {
        Export {
            sink,
            picks: Picks::Final,
        }
    }

    /// A syslog sender: flagged and blocked flows, and with `ended` the
    /// flows reported for good.
    pub fn syslog(sink: Bounded<Arc<FlowRecord>>, ended: bool) -> Export {
        Export {
            sink,
            picks: Picks::Alerts { ended },
        }
    }

    fn wants(&self, reason: Reason) -> bool {
        match self.picks {
            Picks::Final => reason.is_final(),
            Picks::Alerts { ended } => {
                matches!(reason, Reason::Flagged | Reason::Blocked) || (ended && reason.is_final())
            }
        }
    }
}

/// Where JSON lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonTarget {
    /// Standard output (`--json -`).
    Stdout,
    /// A file, created (mode 0640) or truncated; never through a symbolic
    /// link ([`crate::host::fs::create_output`]).
    File(PathBuf),
}

impl JsonTarget {
    /// `-` for standard output, else a file path.
    pub fn parse(s: &str) -> JsonTarget {
        if s == "-" {
            JsonTarget::Stdout
        } else {
            JsonTarget::File(PathBuf::from(s))
        }
    }

    /// What it is, for messages: `JSON lines to standard output`, `JSON
    /// lines to PATH`.
    pub fn what(&self) -> String {
        match self {
            JsonTarget::Stdout => "JSON lines to standard output".into(),
            JsonTarget::File(p) => format!("JSON lines to {}", p.display()),
        }
    }

    /// Opens the target, block-buffered (standard output alone would be
    /// line-buffered: one write(2) per record); flush after every batch.
    ///
    /// # Errors
    /// The file cannot be created; it is a symbolic link, a directory, or
    /// a FIFO nobody reads ([`crate::host::fs::create_output`]).
    pub fn open(&self) -> Result<Box<dyn Write + Send>, crate::output::OpenError> {
        Ok(match self {
            JsonTarget::Stdout => Box::new(io::BufWriter::with_capacity(1 << 16, io::stdout())),
            JsonTarget::File(p) => Box::new(io::BufWriter::with_capacity(
                1 << 16,
                crate::host::fs::create_output(p).map_err(|source| crate::output::OpenError {
                    path: p.clone(),
                    source,
                })?,
            )),
        })
    }
}

/// Default `--output-buffer`: bytes each local sink (JSON lines, readable
/// lines, log directory) may hold while its writer is behind.
pub const DEFAULT_BUFFER: u64 = 4 << 20;
/// Longest wait at exit for the local sinks to write what they hold
/// before the summary is made; a stalled one is not waited for longer.
pub const LOCAL_GRACE: Duration = Duration::from_millis(400);
/// Time the local sinks get at exit to write the summary itself.
const SUMMARY_GRACE: Duration = Duration::from_millis(100);

/// An output that could not be written: what it is, and why.
#[derive(Debug, thiserror::Error)]
#[error("writing {what}: {source}")]
pub struct SinkError {
    /// The output (`JSON lines to standard output`, ...).
    pub what: String,
    /// Why: the writer's error, or the records it had to drop.
    #[source]
    pub source: io::Error,
}

/// A local sink and what it writes to (for messages).
struct Local {
    sink: Bounded<Line>,
    what: String,
}

/// Where records go. Every sink sits behind a [`Bounded`] queue with a
/// thread of its own: writing a record never blocks the agent; a sink that
/// cannot keep up drops what its queue cannot hold, and counts it.
pub struct Output {
    json: Option<Local>,
    /// `--log-dir`: every record too, in rotated files; and the records
    /// the directory itself could not write.
    log: Option<Local>,
    log_lost: Arc<AtomicU64>,
    /// Readable lines and the summary table on standard output, their
    /// times written as it says.
    lines: Option<(Local, LineTime)>,
    /// Bytes each local sink may hold.
    buffer: usize,
    /// Latest record of each disallowed flow, in the order they were flagged.
    disallowed: Vec<FlowRecord>,
    disallowed_index: HashMap<String, usize>,
    exports: Vec<Export>,
}

/// Most disallowed flows kept for the summary table (the JSON has them all).
const MAX_TABLE_FLOWS: usize = 1000;

impl Output {
    /// `json`: the JSON-lines writer, if any, and what it writes to;
    /// `human`: readable lines (their times as it says) and the summary
    /// table on standard output; `buffer`: bytes each may hold while it is
    /// behind ([`DEFAULT_BUFFER`]).
    ///
    /// # Errors
    /// A sink's thread cannot be started.
    pub fn new(
        json: Option<(Box<dyn Write + Send>, String)>,
        human: Option<LineTime>,
        buffer: usize,
    ) -> io::Result<Self> {
        let json = match json {
            Some((out, what)) => Some(Local {
                sink: Stream::spawn("json", out, true, buffer)?,
                what,
            }),
            None => None,
        };
        let lines = match human {
            Some(lt) => {
                let what = "readable lines to standard output".to_string();
                let out = Box::new(io::stdout());
                let sink = Stream::spawn("lines", out, false, buffer)?;
                Some((Local { sink, what }, lt))
            }
            None => None,
        };
        Ok(Output {
            json,
            log: None,
            log_lost: Arc::default(),
            lines,
            buffer,
            disallowed: Vec::new(),
            disallowed_index: HashMap::new(),
            exports: Vec::new(),
        })
    }

    /// Also hands flow records to `exports`.
    pub fn with_exports(mut self, exports: Vec<Export>) -> Self {
        self.exports = exports;
        self
    }

    /// Also writes every record into the log directory `log`.
    ///
    /// # Errors
    /// Its thread cannot be started.
    pub fn with_log_dir(mut self, log: Option<LogDir>) -> io::Result<Self> {
        if let Some(log) = log {
            let what = format!("the log directory {}", log.options().dir.display());
            let sink = LogWriter::spawn(log, self.log_lost.clone(), self.buffer)?;
            self.log = Some(Local { sink, what });
        }
        Ok(self)
    }

    /// The local sinks (JSON lines, readable lines, log directory).
    fn locals(&self) -> impl Iterator<Item = &Local> {
        let lines = self.lines.as_ref().map(|(l, _)| l);
        self.json.iter().chain(lines).chain(self.log.as_ref())
    }

    /// What each sink sent and dropped so far, by name: the exports
    /// (`ipfix`, `syslog`) and the local sinks (`json`, `lines`, `log_dir`).
    pub fn sink_counts(&self) -> BTreeMap<String, SinkCounts> {
        let exports = self
            .exports
            .iter()
            .map(|e| (e.sink.name(), e.sink.counts()));
        let locals = self.locals().map(|l| (l.sink.name(), l.sink.counts()));
        exports
            .chain(locals)
            .map(|(name, c)| (name.to_string(), c))
            .collect()
    }

    /// Writes one record to the JSON sink and the log directory.
    fn record(&mut self, rec: RecordRef<'_>) {
        if self.json.is_none() && self.log.is_none() {
            return;
        }
        let line: Line = match serde_json::to_vec(&rec) {
            Ok(v) => v.into(),
            // Not reached: the records are plain data with string keys.
            Err(e) => return log::error!("a record cannot be written as JSON: {e}"),
        };
        for l in self.log.iter().chain(self.json.iter()) {
            l.sink.offer(line.clone());
        }
    }

    /// Hands one flow record to the sinks that take it (and, for flagged
    /// and blocked flows, a readable line).
    pub fn flow(&mut self, rec: &FlowRecord) {
        self.record(RecordRef::Flow(rec));
        let mut shared = None;
        for e in &self.exports {
            if e.wants(rec.reason) {
                let r = shared.get_or_insert_with(|| Arc::new(rec.clone()));
                e.sink.offer(r.clone());
            }
        }
        let live = rec.reason == Reason::Blocked
            || (rec.reason == Reason::Flagged && rec.verdict == Verdict::DisallowedPort);
        if let (Some((l, lt)), true) = (&self.lines, live) {
            let text = format!("{}\n", human::flow_line(rec, lt));
            l.sink.offer(text.into_bytes().into());
        }
        if rec.verdict == Verdict::DisallowedPort {
            let id = rec.conversation();
            match self.disallowed_index.get(&id) {
                Some(&i) => self.disallowed[i] = rec.clone(),
                None if self.disallowed.len() < MAX_TABLE_FLOWS => {
                    self.disallowed_index.insert(id, self.disallowed.len());
                    self.disallowed.push(rec.clone());
                }
                None => {}
            }
        }
    }

    /// The first failure of the JSON lines or readable lines (a closed
    /// pipe, a full disk): the agent stops on it. The log directory and
    /// the exports count their failures instead.
    pub fn failure(&self) -> Option<SinkError> {
        let lines = self.lines.as_ref().map(|(l, _)| l);
        self.json.iter().chain(lines).find_map(|l| {
            l.sink.take_error().map(|source| SinkError {
                what: l.what.clone(),
                source,
            })
        })
    }

    /// Says, once per stall, that a sink fell behind (and how much it
    /// dropped so far), and when it caught up. Called once a poll.
    pub fn watch(&mut self) {
        for e in &mut self.exports {
            let unit = if e.sink.name() == "ipfix" {
                "flows"
            } else {
                "messages"
            };
            say_stall(
                &format!("the {} export", e.sink.name()),
                unit,
                e.sink.stall(),
            );
        }
        let lines = self.lines.as_mut().map(|(l, _)| l);
        for l in self.json.iter_mut().chain(lines).chain(self.log.as_mut()) {
            say_stall(&l.what, "records", l.sink.stall());
        }
    }

    /// Records missing from the log directory (0 without one): those it
    /// could not write (full disk, I/O errors) and those its queue dropped.
    pub fn log_records_lost(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| {
            self.log_lost.load(Ordering::Relaxed) + l.sink.counts().dropped
        })
    }

    /// Writes the summary record and table where they can go, and closes
    /// every sink. The local sinks first get [`LOCAL_GRACE`] to write what
    /// they hold, so that the summary's `sinks` and `log_records_lost`
    /// count every record before it; the exports get [`EXPORT_GRACE`] to
    /// send theirs. A stalled sink is not waited for beyond that: what it
    /// still holds is counted dropped.
    ///
    /// # Errors
    /// The JSON lines or the readable lines failed, or lost records (the
    /// first such output; the others are logged). The summary then goes
    /// to the log on standard error too.
    pub fn summary(&mut self, s: &mut Summary) -> Result<(), SinkError> {
        let local_deadline = Instant::now() + LOCAL_GRACE;
        for l in self.locals() {
            l.sink.sync(local_deadline);
        }
        let export_deadline = Instant::now() + EXPORT_GRACE;
        s.sinks = self
            .exports
            .iter_mut()
            .map(|e| (e.sink.name().to_string(), e.sink.close_by(export_deadline)))
            .collect();
        s.sinks.extend(
            self.locals()
                .map(|l| (l.sink.name().to_string(), l.sink.counts())),
        );
        s.log_records_lost = self.log_records_lost();
        self.record(RecordRef::Summary(s));
        if let Some((l, _)) = &self.lines {
            let table = human::summary_table(s, &self.disallowed);
            l.sink.offer(format!("\n{table}").into_bytes().into());
        }
        let close = local_deadline.max(Instant::now() + SUMMARY_GRACE);
        let mut problems = Vec::new();
        let lines = self.lines.as_mut().map(|(l, _)| l);
        for l in self.json.iter_mut().chain(lines) {
            let c = l.sink.close_by(close);
            let source = match l.sink.take_error() {
                Some(e) => e,
                None if c.dropped > 0 => io::Error::other(format!(
                    "{} records not written because it did not keep up ({} written)",
                    c.dropped, c.sent
                )),
                None => continue,
            };
            problems.push(SinkError {
                what: l.what.clone(),
                source,
            });
        }
        if let Some(l) = self.log.as_mut() {
            l.sink.close_by(close);
        }
        let mut problems = problems.into_iter();
        let Some(first) = problems.next() else {
            return Ok(());
        };
        for other in problems {
            log::error!("{other}");
        }
        // A reader that went away ends the run quietly, as before.
        let gone = first.source.kind() == io::ErrorKind::BrokenPipe;
        match serde_json::to_string(&RecordRef::Summary(s)) {
            Ok(text) if !gone => {
                log::warn!("summary (it may be missing from {}): {text}", first.what)
            }
            _ => {}
        }
        Err(first)
    }
}

/// Logs a sink's [`Stall`]: `what` fell behind, or caught up.
fn say_stall(what: &str, unit: &str, stall: Option<Stall>) {
    match stall {
        Some(Stall::Began { dropped }) => log::warn!(
            "{what} is not keeping up: its queue is full, and {unit} are dropped rather than waited for ({dropped} so far; counted in the summary's sinks and in cas_audit_export_dropped_total)"
        ),
        Some(Stall::Ended { dropped }) => {
            log::info!("{what} caught up; {dropped} {unit} were dropped while it was behind")
        }
        None => {}
    }
}

impl Drop for Output {
    /// After an early stop (an output failed), the local sinks get a
    /// moment to write what they hold and the log directory closes its
    /// file; a stalled one is left to the process's exit.
    fn drop(&mut self) {
        let deadline = Instant::now() + SUMMARY_GRACE;
        let lines = self.lines.as_mut().map(|(l, _)| l);
        for l in self.json.iter_mut().chain(lines).chain(self.log.as_mut()) {
            l.sink.close_by(deadline);
        }
    }
}
