//! Reading saved records: files and directories, line by line, each line
//! a [`crate::output::record`] type or a counted, skipped line.

use std::{
    collections::HashMap,
    io::{self, BufRead, BufReader},
    net::IpAddr,
    path::PathBuf,
};

use serde::Deserialize;
use time::OffsetDateTime;

use super::{IcmpSeen, MAX_SKIPPED_SHOWN};
use crate::{
    addrset::{DataCenter, Purpose},
    error::Error,
    flow::{Proto, State, Verdict},
    output::{
        logdir::compare_names,
        record::{FlowRecord, Summary},
    },
};

/// The record type, read before the rest of a line.
#[derive(Debug, Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// A flow as its last record describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SavedFlow {
    pub(super) local_addr: IpAddr,
    pub(super) remote_addr: IpAddr,
    pub(super) service_port: Option<u16>,
    pub(super) datacenters: Vec<DataCenter>,
    pub(super) purposes: Vec<Purpose>,
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

/// What identifies a flow across its records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlowId {
    proto: Proto,
    iface: String,
    local_addr: IpAddr,
    local_port: Option<u16>,
    remote_addr: IpAddr,
    remote_port: Option<u16>,
    first_seen: i128,
}

fn saved(r: FlowRecord) -> (FlowId, SavedFlow) {
    let id = FlowId {
        proto: r.proto,
        iface: r.iface,
        local_addr: r.local_addr,
        local_port: r.local_port,
        remote_addr: r.remote_addr,
        remote_port: r.remote_port,
        first_seen: r.first_seen.0.unix_timestamp_nanos(),
    };
    let flow = SavedFlow {
        local_addr: r.local_addr,
        remote_addr: r.remote_addr,
        service_port: r.service_port,
        datacenters: r.datacenters,
        purposes: r.purposes,
        name: r.dns_name.or(r.tls_server_name),
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
    };
    (id, flow)
}

/// Deserializes `text` as a `T`; an error names the field it is about.
fn parse<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || inner.is_eof() || inner.is_syntax() {
            inner.to_string()
        } else {
            // The field's name says more than the position in the line.
            let msg = inner.to_string();
            let msg = match msg.rfind(" at line ") {
                Some(i) => msg[..i].to_string(),
                None => msg,
            };
            format!("{path} {msg}")
        }
    })
}

/// Records read so far, deduplicated.
#[derive(Debug, Default)]
pub struct Records {
    pub(super) files: Vec<String>,
    pub(super) flows: Vec<SavedFlow>,
    index: HashMap<FlowId, usize>,
    pub(super) records: u64,
    pub(super) runs: u64,
    pub(super) log_records_lost: u64,
    pub(super) skipped: u64,
    pub(super) skipped_lines: Vec<String>,
}

impl Records {
    /// Reads the records of one file (named `name` in messages).
    pub fn read(&mut self, name: &str, reader: impl BufRead) -> io::Result<()> {
        self.files.push(name.to_string());
        let mut reader = reader;
        let mut buf = Vec::new();
        let mut lineno = 0usize;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                return Ok(());
            }
            lineno += 1;
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            if let Err(why) = self.line(&buf) {
                self.skipped += 1;
                if self.skipped_lines.len() < MAX_SKIPPED_SHOWN {
                    self.skipped_lines.push(format!("{name}:{lineno}: {why}"));
                }
            }
        }
    }

    /// One line: a flow record, a summary record, or an error saying why
    /// it is neither.
    fn line(&mut self, bytes: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
        if !text.trim_start().starts_with('{') {
            return Err("not a JSON object".into());
        }
        let head: Head = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        match head.kind.as_deref() {
            Some("flow") => {
                let rec: FlowRecord = parse(text).map_err(|e| format!("bad flow record: {e}"))?;
                let (id, flow) = saved(rec);
                self.records += 1;
                match self.index.get(&id) {
                    Some(&i) => self.flows[i] = flow,
                    None => {
                        self.index.insert(id, self.flows.len());
                        self.flows.push(flow);
                    }
                }
                Ok(())
            }
            Some("summary") => {
                let s: Summary = parse(text).map_err(|e| format!("bad summary record: {e}"))?;
                self.runs += 1;
                self.log_records_lost += s.log_records_lost;
                Ok(())
            }
            Some(other) => Err(format!("not a cas-audit run record (type {other:?})")),
            None => Err("not a cas-audit run record (no \"type\")".into()),
        }
    }

    /// Distinct flows read so far.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }
}

/// The files `paths` stand for: files as given, directories' `*.jsonl`
/// files in name order. A missing path is a usage error.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                Error::Usage(format!("{}: no such file or directory", p.display()))
            }
            _ => Error::io(format!("reading {}", p.display()))(e),
        })?;
        if !meta.is_dir() {
            out.push(p.clone());
            continue;
        }
        let mut names = Vec::new();
        for e in std::fs::read_dir(p).map_err(Error::io(format!("reading {}", p.display())))? {
            let e = e.map_err(Error::io(format!("reading {}", p.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let is_file = e.file_type().map(|t| t.is_file()).unwrap_or(false)
                || std::fs::metadata(e.path())
                    .map(|m| m.is_file())
                    .unwrap_or(false);
            if name.ends_with(".jsonl") && is_file {
                names.push(name);
            }
        }
        if names.is_empty() {
            log::warn!("no *.jsonl files in {}", p.display());
        }
        names.sort_by(|a, b| compare_names(a, b));
        out.extend(names.into_iter().map(|n| p.join(n)));
    }
    Ok(out)
}

/// Reads every file of `cfg.paths`.
pub fn load(paths: &[PathBuf]) -> Result<Records, Error> {
    let mut records = Records::default();
    for path in expand_paths(paths)? {
        let what = || format!("reading {}", path.display());
        let f = crate::host::fs::open_input(&path).map_err(Error::io(what()))?;
        records
            .read(&path.display().to_string(), BufReader::new(f))
            .map_err(Error::io(what()))?;
    }
    Ok(records)
}
