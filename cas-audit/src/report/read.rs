//! Reading saved records as a stream: files, directories, gzip, standard
//! input, line by line (each line bounded), each line a
//! [`crate::output::record`] type or a counted, skipped line; a flow's
//! records folded into the one that describes it.
//!
//! Memory does not grow with the size of the logs: a flow is kept only
//! until its final record (`ended`, `expired`) is read, and then handed
//! to the counts; what is remembered of it afterwards is a 64-bit hash
//! of its identity, in a window of the last [`DONE_WINDOW`] flows.

use std::{
    collections::{hash_map::DefaultHasher, HashMap, HashSet, VecDeque},
    hash::{BuildHasherDefault, Hash, Hasher},
    io::{self, BufRead, BufReader, Read},
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use time::OffsetDateTime;

use super::{IcmpSeen, MAX_SKIPPED_SHOWN};
use crate::{
    addrset::{DataCenter, Purpose},
    error::Error,
    flow::{Reason, State, Verdict},
    host::fs::{open_input, STDIN},
    output::{
        logdir::compare_names,
        record::{FlowRecord, Summary},
    },
};

/// Longest line read (1 MiB; a flow record is under 1 KiB): a longer one
/// is skipped, without being held in memory.
pub const MAX_LINE: usize = 1 << 20;
/// Flows whose final record has not been read yet that are kept (their
/// latest record) before the oldest is counted as it stands.
pub const MAX_PENDING: usize = 1 << 20;
/// Flows whose final record was read that are remembered (as hashes), so
/// that a stale record of one (written after its end) is not counted as
/// a flow of its own.
pub const DONE_WINDOW: usize = 1 << 20;

/// The record type, read before the rest of a line.
#[derive(Debug, Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

/// A set of data centers or purposes, as bits over their `ALL` order:
/// a flow carries no allocation from the parser to the counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Bits(u16);

impl Bits {
    /// The set of `items`, positions in `all`.
    fn of<T: PartialEq>(all: &[T], items: &[T]) -> Bits {
        Bits(
            all.iter()
                .enumerate()
                .filter(|(_, x)| items.contains(x))
                .fold(0, |b, (i, _)| b | 1 << i),
        )
    }

    /// Whether `x` (of `all`) is in the set.
    pub(super) fn has<T: PartialEq>(self, all: &[T], x: &T) -> bool {
        all.iter()
            .position(|a| a == x)
            .is_some_and(|i| self.0 & 1 << i != 0)
    }

    /// The members, in the order of `all`.
    pub(super) fn items<T: Copy>(self, all: &[T]) -> impl Iterator<Item = T> + '_ {
        all.iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & 1 << i != 0)
            .map(|(_, x)| *x)
    }

    /// Whether the set is empty.
    pub(super) fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members of both.
    pub(super) fn union(self, other: Bits) -> Bits {
        Bits(self.0 | other.0)
    }
}

/// A flow as its last record describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SavedFlow {
    pub(super) local_addr: IpAddr,
    pub(super) remote_addr: IpAddr,
    pub(super) service_port: Option<u16>,
    /// Over [`DataCenter::ALL`].
    pub(super) datacenters: Bits,
    /// Over [`Purpose::ALL`].
    pub(super) purposes: Bits,
    /// The name the remote address was learned as (DNS), else the
    /// ClientHello's server name; `None` without either (or older logs).
    pub(super) name: Option<String>,
    pub(super) verdict: Verdict,
    pub(super) packets_out: u64,
    pub(super) bytes_out: u64,
    pub(super) packets_in: u64,
    pub(super) bytes_in: u64,
    pub(super) first_seen: OffsetDateTime,
    pub(super) last_seen: OffsetDateTime,
    /// `None` when the record has none (older logs).
    pub(super) state: Option<State>,
    pub(super) icmp: Option<IcmpSeen>,
    pub(super) reporter: Option<IpAddr>,
}

/// What identifies a flow across its records (protocol, interface, both
/// ends, first packet), as a hash: two flows share one with a chance of
/// about n²/2⁶⁵ among n flows.
fn flow_id(r: &FlowRecord) -> u64 {
    let mut h = DefaultHasher::new();
    (
        r.proto.0,
        &r.iface,
        r.local_addr,
        r.local_port,
        r.remote_addr,
        r.remote_port,
        r.first_seen.0.unix_timestamp_nanos(),
    )
        .hash(&mut h);
    h.finish()
}

fn saved(r: &FlowRecord) -> SavedFlow {
    SavedFlow {
        local_addr: r.local_addr,
        remote_addr: r.remote_addr,
        service_port: r.service_port,
        datacenters: Bits::of(&DataCenter::ALL, &r.datacenters),
        purposes: Bits::of(&Purpose::ALL, &r.purposes),
        name: r.dns_name.clone().or_else(|| r.tls_server_name.clone()),
        verdict: r.verdict,
        packets_out: r.packets_out,
        bytes_out: r.bytes_out,
        packets_in: r.packets_in,
        bytes_in: r.bytes_in,
        first_seen: r.first_seen.0,
        last_seen: r.last_seen.0,
        state: r.state,
        icmp: match (r.icmp_type, r.icmp_code) {
            (Some(icmp_type), Some(icmp_code)) => Some(IcmpSeen {
                icmp_type,
                icmp_code,
            }),
            _ => None,
        },
        reporter: r.reporter,
    }
}

/// Deserializes `text` as a `T`; an error names the field it is about
/// (the line is parsed a second time, with the field path, only then).
fn parse<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, String> {
    if let Ok(v) = serde_json::from_str(text) {
        return Ok(v);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let e = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let path = e.path().to_string();
    let inner = e.into_inner();
    if path == "." || inner.is_eof() || inner.is_syntax() {
        Err(inner.to_string())
    } else {
        // The field's name says more than the position in the line.
        let msg = inner.to_string();
        let msg = match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        Err(format!("{path} {msg}"))
    }
}

/// The hasher of maps keyed by a [`flow_id`], already a hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ById = BuildHasherDefault<IdHasher>;

/// A line that is a record.
enum Line {
    /// A flow record: its flow's identity, why it was written, the flow.
    Flow(u64, Reason, SavedFlow),
    /// A run's summary: what it says was lost.
    Summary {
        /// Its `log_records_lost`.
        log_records_lost: u64,
    },
}

/// One line: a flow record, a summary record, or why it is neither.
fn parse_line(bytes: &[u8]) -> Result<Line, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    if !text.trim_start().starts_with('{') {
        return Err("not a JSON object".into());
    }
    // The agent writes the type first: one parse of the line for its
    // records, two for anything else.
    let kind = if text.starts_with(r#"{"type":"flow","#) {
        Some("flow".into())
    } else if text.starts_with(r#"{"type":"summary","#) {
        Some("summary".into())
    } else {
        let head: Head = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        head.kind
    };
    match kind.as_deref() {
        Some("flow") => {
            // Parsed, identified and reduced where it is read (on a parser
            // thread): what it allocated is freed there.
            let rec: FlowRecord = parse(text).map_err(|e| format!("bad flow record: {e}"))?;
            Ok(Line::Flow(flow_id(&rec), rec.reason, saved(&rec)))
        }
        Some("summary") => {
            let s: Summary = parse(text).map_err(|e| format!("bad summary record: {e}"))?;
            Ok(Line::Summary {
                log_records_lost: s.log_records_lost,
            })
        }
        Some(other) => Err(format!("not a cas-audit run record (type {other:?})")),
        None => Err("not a cas-audit run record (no \"type\")".into()),
    }
}

/// A flow waiting for its final record.
#[derive(Debug)]
struct Pending {
    flow: SavedFlow,
    /// Its record is an `exit` one: final for the run that wrote it, but
    /// a later run (a restart with `--pin`) may report the flow again.
    exit: bool,
    /// When it was last replaced, to find the oldest.
    seq: u64,
}

/// Records read so far: the counts of what was read, and the flows still
/// waiting for their final record. Flows are handed to a sink as soon as
/// their final record is read ([`Records::line`]), the rest at the end
/// ([`Records::finish`]).
#[derive(Debug, Default)]
pub struct Records {
    pub(super) files: Vec<String>,
    pub(super) records: u64,
    pub(super) runs: u64,
    pub(super) log_records_lost: u64,
    pub(super) skipped: u64,
    pub(super) skipped_lines: Vec<String>,
    pending: HashMap<u64, Pending, ById>,
    /// Pending flows by age, `(id, seq)`; stale entries are skipped.
    order: VecDeque<(u64, u64)>,
    seq: u64,
    /// Flows whose final record was read, oldest first.
    done: HashSet<u64, ById>,
    done_order: VecDeque<u64>,
}

impl Records {
    /// Reads the records of one input (named `name` in messages), handing
    /// each flow whose final record is read to `sink`. Lines are parsed on
    /// every core ([`super::stream`]) and folded here in order.
    ///
    /// # Errors
    /// Reading fails.
    pub(super) fn read(
        &mut self,
        name: &str,
        reader: impl BufRead + Send,
        sink: &mut impl FnMut(SavedFlow),
    ) -> io::Result<()> {
        self.files.push(name.to_string());
        super::stream::for_each_line(reader, parse_line, |lineno, line| match line {
            Ok(Line::Flow(id, reason, flow)) => {
                self.records += 1;
                self.flow(id, reason, flow, sink);
            }
            Ok(Line::Summary { log_records_lost }) => {
                self.runs += 1;
                // From a file: saturate rather than wrap to 0 (or panic).
                self.log_records_lost = self.log_records_lost.saturating_add(log_records_lost);
            }
            Err(why) => {
                self.skipped += 1;
                if self.skipped_lines.len() < MAX_SKIPPED_SHOWN {
                    self.skipped_lines.push(format!("{name}:{lineno}: {why}"));
                }
            }
        })
    }

    /// Folds one flow record: a final one (`ended`, `expired`) goes to
    /// `sink` at once; the others wait, the latest kept, except that a
    /// flow's `exit` record is not replaced by a later live notice
    /// (`flagged`, `blocked`) of it. A record of a flow already ended is
    /// stale and dropped.
    fn flow(&mut self, id: u64, reason: Reason, flow: SavedFlow, sink: &mut impl FnMut(SavedFlow)) {
        if self.done.contains(&id) {
            return;
        }
        match reason {
            Reason::Ended | Reason::Expired => {
                self.pending.remove(&id);
                sink(flow);
                self.remember_done(id);
            }
            reason => {
                let exit = reason == Reason::Exit;
                if !exit && self.pending.get(&id).is_some_and(|p| p.exit) {
                    return;
                }
                self.seq += 1;
                self.pending.insert(
                    id,
                    Pending {
                        flow,
                        exit,
                        seq: self.seq,
                    },
                );
                self.order.push_back((id, self.seq));
                if self.pending.len() > MAX_PENDING {
                    self.fold_oldest(sink);
                }
                // Keep the age queue from growing with replaced entries.
                if self.order.len() > 2 * self.pending.len() + 1024 {
                    let pending = &self.pending;
                    self.order
                        .retain(|(id, seq)| pending.get(id).is_some_and(|p| p.seq == *seq));
                }
            }
        }
    }

    /// Counts the oldest pending flow as it stands, to bound memory.
    fn fold_oldest(&mut self, sink: &mut impl FnMut(SavedFlow)) {
        while let Some((id, seq)) = self.order.pop_front() {
            if self.pending.get(&id).is_some_and(|p| p.seq == seq) {
                let p = self.pending.remove(&id).expect("present");
                sink(p.flow);
                self.remember_done(id);
                return;
            }
        }
    }

    fn remember_done(&mut self, id: u64) {
        if self.done.insert(id) {
            self.done_order.push_back(id);
            if self.done_order.len() > DONE_WINDOW {
                if let Some(old) = self.done_order.pop_front() {
                    self.done.remove(&old);
                }
            }
        }
    }

    /// Hands the flows still waiting (their latest record: `exit`, or a
    /// live notice of an agent that stopped without one) to `sink`.
    pub(super) fn finish(&mut self, sink: &mut impl FnMut(SavedFlow)) {
        let mut rest: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        rest.sort_by_key(|p| p.seq);
        self.order.clear();
        for p in rest {
            sink(p.flow);
        }
    }
}

/// The inputs `paths` stand for: files as given, `-` for standard input,
/// directories' `*.jsonl` and `*.jsonl.gz` files in name order (a
/// compressed file sorts as its uncompressed name). A missing path is a
/// usage error.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for p in paths {
        if p == Path::new(STDIN) {
            out.push(p.clone());
            continue;
        }
        let meta = std::fs::metadata(p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                Error::Usage(format!("{}: no such file or directory", p.display()))
            }
            _ => input_error(p)(e),
        })?;
        if !meta.is_dir() {
            out.push(p.clone());
            continue;
        }
        let mut names = Vec::new();
        for e in std::fs::read_dir(p).map_err(input_error(p))? {
            let e = e.map_err(input_error(p))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let is_file = e.file_type().map(|t| t.is_file()).unwrap_or(false)
                || std::fs::metadata(e.path())
                    .map(|m| m.is_file())
                    .unwrap_or(false);
            if (name.ends_with(".jsonl") || name.ends_with(".jsonl.gz")) && is_file {
                names.push(name);
            }
        }
        if names.is_empty() {
            log::warn!("no *.jsonl or *.jsonl.gz files in {}", p.display());
        }
        names.sort_by(|a, b| {
            compare_names(a.trim_end_matches(".gz"), b.trim_end_matches(".gz")).then(a.cmp(b))
        });
        out.extend(names.into_iter().map(|n| p.join(n)));
    }
    Ok(out)
}

fn input_error(p: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = p.display().to_string();
    move |source| Error::Input { path, source }
}

/// The gzip magic (RFC 1952, 2.3.1).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// `input` as lines of text: decompressed when it starts like a gzip
/// stream (every member of a multi-member file, as `gzip` writes them on
/// concatenation), as it is otherwise.
pub(super) fn text_of(input: impl Read + Send + 'static) -> io::Result<Box<dyn BufRead + Send>> {
    let mut r = BufReader::with_capacity(1 << 16, input);
    let gz = r.fill_buf()?.starts_with(&GZIP_MAGIC);
    Ok(if gz {
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(r),
        ))
    } else {
        Box::new(r)
    })
}

/// Reads every input of `paths` into `records`, handing flows to `sink`.
///
/// # Errors
/// [`Error::Usage`] for a missing path; [`Error::Input`] for an input
/// that is not a regular file, cannot be read, or is not valid gzip.
pub(super) fn load(
    paths: &[PathBuf],
    records: &mut Records,
    sink: &mut impl FnMut(SavedFlow),
) -> Result<(), Error> {
    for path in expand_paths(paths)? {
        let name = if path == Path::new(STDIN) {
            "standard input".to_string()
        } else {
            path.display().to_string()
        };
        let input = open_input(&path).map_err(input_error(&path))?;
        let text = text_of(input).map_err(input_error(&path))?;
        records
            .read(&name, text, sink)
            .map_err(input_error(&path))?;
    }
    Ok(())
}
