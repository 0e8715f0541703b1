//! Where `run`'s records go: JSON lines to standard output or a file, the
//! log directory, readable lines and the summary table on standard
//! output, and the exports (IPFIX, syslog).

use std::{
    collections::{BTreeMap, HashMap},
    io::{self, Write},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use super::{
    bounded::{Bounded, SinkCounts},
    human::{self, LineTime},
    logdir::LogDir,
    record::{FlowRecord, RecordRef, Summary},
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

/// Where records go.
pub struct Output {
    json: Option<Box<dyn Write + Send>>,
    /// `--log-dir`: every record too, in rotated files.
    log: Option<LogDir>,
    /// The record being written, as JSON.
    line: Vec<u8>,
    /// Readable lines and the summary table on standard output, their
    /// times written as it says.
    human: Option<LineTime>,
    /// Latest record of each disallowed flow, in the order they were flagged.
    disallowed: Vec<FlowRecord>,
    disallowed_index: HashMap<String, usize>,
    exports: Vec<Export>,
}

/// Most disallowed flows kept for the summary table (the JSON has them all).
const MAX_TABLE_FLOWS: usize = 1000;

impl Output {
    /// `json`: the JSON-lines sink, if any; `human`: print readable lines
    /// (their times as it says) and the summary table on standard output.
    pub fn new(json: Option<Box<dyn Write + Send>>, human: Option<LineTime>) -> Self {
        Output {
            json,
            log: None,
            line: Vec::new(),
            human,
            disallowed: Vec::new(),
            disallowed_index: HashMap::new(),
            exports: Vec::new(),
        }
    }

    /// Also hands flow records to `exports`.
    pub fn with_exports(mut self, exports: Vec<Export>) -> Self {
        self.exports = exports;
        self
    }

    /// What each export sent and dropped so far, by name.
    pub fn sink_counts(&self) -> BTreeMap<String, SinkCounts> {
        self.exports
            .iter()
            .map(|e| (e.sink.name().to_string(), e.sink.counts()))
            .collect()
    }

    /// Also writes every record into the log directory `log`.
    pub fn with_log_dir(mut self, log: Option<LogDir>) -> Self {
        self.log = log;
        self
    }

    /// Writes one record to the JSON sink and the log directory. Failures
    /// of the log directory are counted there, not returned.
    fn record(&mut self, rec: RecordRef<'_>) -> io::Result<()> {
        if self.json.is_none() && self.log.is_none() {
            return Ok(());
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, &rec)?;
        if let Some(log) = self.log.as_mut() {
            log.write_record(&self.line);
        }
        if let Some(w) = self.json.as_mut() {
            self.line.push(b'\n');
            w.write_all(&self.line)?;
        }
        Ok(())
    }

    /// Writes one flow record (and, for flagged and blocked flows, a
    /// readable line). JSON lines are buffered: call [`Output::flush`] after
    /// a batch.
    pub fn flow(&mut self, rec: &FlowRecord) -> io::Result<()> {
        self.record(RecordRef::Flow(rec))?;
        let mut shared = None;
        for e in &self.exports {
            if e.wants(rec.reason) {
                let r = shared.get_or_insert_with(|| Arc::new(rec.clone()));
                e.sink.offer(r.clone());
            }
        }
        let live = rec.reason == Reason::Blocked
            || (rec.reason == Reason::Flagged && rec.verdict == Verdict::DisallowedPort);
        if let (Some(lt), true) = (&self.human, live) {
            let mut so = io::stdout().lock();
            writeln!(so, "{}", human::flow_line(rec, lt))?;
            so.flush()?;
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
        Ok(())
    }

    /// Hands buffered JSON lines to the operating system.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(log) = self.log.as_mut() {
            log.flush();
        }
        match self.json.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }

    /// Records the log directory could not write so far (0 without one).
    pub fn log_records_lost(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| l.records_lost())
    }

    /// Writes the summary record (with `log_records_lost` and `sinks`
    /// filled in, once the exports sent what they could within
    /// [`EXPORT_GRACE`]) and table; the log directory's last file is
    /// flushed and fsync'd after it.
    pub fn summary(&mut self, s: &mut Summary) -> io::Result<()> {
        s.sinks = self
            .exports
            .iter_mut()
            .map(|e| (e.sink.name().to_string(), e.sink.close(EXPORT_GRACE)))
            .collect();
        if let Some(log) = self.log.as_mut() {
            log.flush();
            s.log_records_lost = log.records_lost();
        }
        self.record(RecordRef::Summary(s))?;
        if let Some(log) = self.log.as_mut() {
            log.close();
        }
        if let Some(w) = self.json.as_mut() {
            w.flush()?;
        }
        if self.human.is_some() {
            let mut so = io::stdout().lock();
            write!(so, "\n{}", human::summary_table(s, &self.disallowed))?;
            so.flush()?;
        }
        Ok(())
    }
}
