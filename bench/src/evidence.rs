//! `cas-audit report` on a large generated log: wall time and peak
//! memory (the target: 1,000,000 records in under 3 s and 200 MB).
//!
//! The log is written with the agent's own record types
//! (`cas_audit::output::record`), as a long run would: flows to CAS
//! ranges of the built-in set from 2,000 local hosts, each with its
//! final record (`ended` or `expired`, some `exit` at the end) and, for
//! disallowed and blocked flows, a `flagged` or `blocked` notice written
//! earlier; a few hundred flows are open at any time, so records of
//! different flows interleave. The report's flow count is checked against
//! the number of flows written.

use std::{
    io::{BufWriter, Write},
    net::{IpAddr, Ipv4Addr},
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use cas_audit::{
    addrset::AddressSet,
    flow::{nat::NatKind, Initiator, Proto, Reason, State, Verdict},
    output::record::{FlowRecord, RecordRef, Summary, TcpFlags, Timestamp},
};
use cas_audit_common::Direction;
use serde::Serialize;
use time::OffsetDateTime;

use crate::{sets::Rng, stats::Stat};

/// What to measure.
pub struct Config {
    /// Flow records in the log.
    pub records: u64,
    /// Runs of `report` on it.
    pub rounds: usize,
}

/// One input form, measured.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// `plain` or `gzip`.
    pub input: String,
    /// Size of the file read.
    pub file_mib: f64,
    /// Wall time of `cas-audit report FILE --json`, seconds.
    pub wall_s: Stat,
    /// CPU time (user + system, every thread), seconds: what the wall
    /// time would be on one idle core.
    pub cpu_s: Stat,
    /// Peak resident memory of the process (`ru_maxrss`), MiB.
    pub rss_mib: Stat,
    /// Bytes printed.
    pub output_bytes: u64,
}

/// The results of this part.
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceResults {
    /// Flow records written.
    pub records: u64,
    /// Distinct flows among them (what the report must count).
    pub flows: u64,
    /// Distinct local hosts.
    pub hosts: u64,
    /// Seconds it took to write the log.
    pub generate_s: f64,
    /// The runs, plain then gzip.
    pub runs: Vec<Run>,
}

/// A number below `n`.
fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.next() % n
}

/// Local hosts of the generated log.
const HOSTS: u64 = 2_000;

/// Writes the log to `path`; returns (records, flows).
fn generate(path: &Path, records: u64) -> Result<(u64, u64)> {
    let set = AddressSet::builtin();
    let ranges = set.ranges();
    let mut rng = Rng(0x5eed_cafe);
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let start = OffsetDateTime::from_unix_timestamp(1_795_000_000).expect("a time");
    // Open flows waiting for their final record: (due, record).
    let mut open: Vec<(u64, FlowRecord)> = Vec::new();
    let (mut written, mut flows, mut tick) = (0u64, 0u64, 0u64);
    let mut line = Vec::with_capacity(1024);
    let mut put = |w: &mut BufWriter<std::fs::File>, rec: RecordRef<'_>| -> Result<()> {
        line.clear();
        serde_json::to_writer(&mut line, &rec)?;
        line.push(b'\n');
        w.write_all(&line)?;
        Ok(())
    };
    while written < records {
        tick += 1;
        let now = start + time::Duration::milliseconds(tick as i64);
        // Finish the flows that are due.
        let mut i = 0;
        while i < open.len() && written < records {
            if open[i].0 <= tick {
                let (_, mut r) = open.swap_remove(i);
                r.ts = Timestamp(now);
                r.last_seen = Timestamp(now);
                put(&mut w, RecordRef::Flow(&r))?;
                written += 1;
            } else {
                i += 1;
            }
        }
        if written >= records || open.len() > 400 {
            continue;
        }
        // A new flow.
        flows += 1;
        let range = &ranges[below(&mut rng, ranges.len() as u64) as usize];
        let kind = below(&mut rng, 100);
        let (port, verdict, state, live) = match kind {
            0..=59 => (443, Verdict::Allowed, State::Closed, None),
            60..=79 => (
                8443,
                Verdict::DisallowedPort,
                State::Closed,
                Some(Reason::Flagged),
            ),
            80..=89 => (
                443,
                Verdict::Allowed,
                State::Unanswered,
                Some(Reason::Blocked),
            ),
            90..=94 => (443, Verdict::Allowed, State::Refused, Some(Reason::Blocked)),
            _ => (
                8080,
                Verdict::DisallowedPort,
                State::Unreachable,
                Some(Reason::Flagged),
            ),
        };
        let host = below(&mut rng, HOSTS) as u32;
        let mut r = FlowRecord {
            ts: Timestamp(now),
            reason: live.unwrap_or(Reason::Ended),
            flow_id: flows,
            duration_ms: 0,
            host: "gw".into(),
            state: Some(if live.is_some() {
                State::Pending
            } else {
                state
            }),
            history: if state == State::Closed {
                "ShADadFf"
            } else {
                "S"
            }
            .into(),
            icmp_type: (state == State::Unreachable).then_some(3),
            icmp_code: (state == State::Unreachable).then_some(13),
            reporter: (state == State::Unreachable)
                .then_some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1))),
            rst_ttl: (state == State::Refused).then_some(63),
            rst_hops: (state == State::Refused).then_some(2),
            iface: "uplink".into(),
            interfaces: vec!["uplink".into()],
            nat: NatKind::None,
            nat_addr: None,
            nat_port: None,
            proto: Proto(cas_audit_common::proto::TCP),
            local_addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + host)),
            local_port: Some(1024 + (flows % 60_000) as u16),
            remote_addr: range.prefix.addr(),
            remote_port: Some(port),
            initiator: Initiator::Local,
            first_packet: Direction::Out,
            service_port: Some(port),
            prefix: range.prefix.to_string(),
            datacenters: range.datacenters.iter().copied().collect(),
            purposes: range.purposes.iter().copied().collect(),
            dns_name: None,
            tls_server_name: None,
            verdict,
            packets_out: 1 + below(&mut rng, 20),
            bytes_out: 60 + below(&mut rng, 20_000),
            packets_in: below(&mut rng, 20),
            bytes_in: below(&mut rng, 40_000),
            tcp_flags_out: TcpFlags(0x12),
            tcp_flags_in: TcpFlags(0x10),
            first_seen: Timestamp(now),
            last_seen: Timestamp(now),
        };
        if live.is_some() {
            put(&mut w, RecordRef::Flow(&r))?;
            written += 1;
            r.state = Some(state);
            r.reason = if state == State::Closed {
                Reason::Ended
            } else {
                Reason::Expired
            };
        }
        // Due within the next few hundred ticks; the last ones at exit.
        open.push((tick + 1 + below(&mut rng, 300), r));
    }
    // The flows still open when the log's run ended: exit records.
    for (_, mut r) in open.drain(..) {
        r.reason = Reason::Exit;
        put(&mut w, RecordRef::Flow(&r))?;
        written += 1;
    }
    put(&mut w, RecordRef::Summary(&Summary::default()))?;
    w.flush()?;
    Ok((written, flows))
}

/// Runs `agent report FILE --json`; (wall s, CPU s, peak RSS MiB, stdout).
fn report_once(agent: &Path, file: &Path) -> Result<(f64, f64, f64, Vec<u8>)> {
    let t = Instant::now();
    let child = Command::new(agent)
        .args(["report", "--top", "10", "--json"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", agent.display()))?;
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut v).map(|_| v)
    });
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: our child, not yet reaped.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = t.elapsed().as_secs_f64();
    if rc != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let out = reader.join().expect("reader")?;
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("cas-audit report failed (status {status})");
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = secs(ru.ru_utime) + secs(ru.ru_stime);
    Ok((wall, cpu, ru.ru_maxrss as f64 / 1024.0, out))
}

/// Generates the log in `dir`, measures `report` on it, plain and gzip.
pub fn run(cfg: &Config, agent: &Path, dir: &Path) -> Result<EvidenceResults> {
    let plain = dir.join("report-bench.jsonl");
    let t = Instant::now();
    let (records, flows) = generate(&plain, cfg.records)?;
    let generate_s = t.elapsed().as_secs_f64();
    let gz = dir.join("report-bench.jsonl.gz");
    let status = Command::new("gzip")
        .args(["-k", "-f", "-1"])
        .arg(&plain)
        .status()
        .context("running gzip")?;
    if !status.success() {
        bail!("gzip failed: {status}");
    }
    let mut runs = Vec::new();
    for (input, file) in [("plain", &plain), ("gzip", &gz)] {
        let (mut wall, mut cpu, mut rss, mut out_len) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for _ in 0..cfg.rounds {
            let (w, c, r, out) = report_once(agent, file)?;
            let doc: serde_json::Value = serde_json::from_slice(&out)?;
            // Every flow counted once, every record read.
            if doc["flows"] != flows || doc["records"] != records {
                bail!(
                    "the report counted {} flows from {} records; {flows} flows and {records} records were written",
                    doc["flows"],
                    doc["records"]
                );
            }
            wall.push(w);
            cpu.push(c);
            rss.push(r);
            out_len = out.len() as u64;
        }
        runs.push(Run {
            input: input.into(),
            file_mib: std::fs::metadata(file)?.len() as f64 / (1 << 20) as f64,
            wall_s: Stat::of(wall),
            cpu_s: Stat::of(cpu),
            rss_mib: Stat::of(rss),
            output_bytes: out_len,
        });
    }
    let _ = std::fs::remove_file(&plain);
    let _ = std::fs::remove_file(&gz);
    Ok(EvidenceResults {
        records,
        flows,
        hosts: HOSTS,
        generate_s,
        runs,
    })
}
