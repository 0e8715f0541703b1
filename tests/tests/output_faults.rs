//! `run`'s output under faults (issue #16, items 3 and 4), in namespace
//! labs with real traffic:
//!
//! - a `--json -` reader that stops reading: the agent keeps counting,
//!   serves `/metrics`, keeps its memory flat, counts and reports what it
//!   dropped, and honours SIGTERM within a second;
//! - the agent paused (SIGSTOP) while flows come and go: after SIGCONT,
//!   nothing is written after a flow's final record, and `report` over the
//!   output gives the packets tshark saw.
//!
//! Tests are skipped (with a message) when not run as root.

use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use cas_audit_tests::observers::{sample, scrape, Capture};
use cas_audit_tests::process::{agent_bin, agent_bin_str, Process as Agent};
use cas_audit_tests::scratch::TempDir;
use cas_audit_tests::{with_topology, Topology};

/// A real CAS endpoint (US1, app-connector and dlp); only ever configured on
/// the cloud namespace's loopback. Port 8443 is not allowed: every flow to
/// it is flagged.
const CAS: IpAddr = IpAddr::V4(Ipv4Addr::new(13, 64, 196, 27));
const DISALLOWED: u16 = 8443;
const LAN: IpAddr = Topology::LAN_ADDR4;

/// Sends `per_flow` datagrams of 100 bytes from each of the lan's ports
/// `ports` to CAS:8443 (one flow per port).
fn flows(topo: &Topology, ports: std::ops::Range<u16>, per_flow: usize) {
    topo.try_in_ns(topo.lan(), move || -> std::io::Result<()> {
        let dst = SocketAddr::new(CAS, DISALLOWED);
        for port in ports {
            let s = UdpSocket::bind(SocketAddr::new(LAN, port))?;
            for _ in 0..per_flow {
                s.send_to(&[7u8; 100], dst)?;
            }
        }
        Ok(())
    })
    .expect("entering the lan namespace")
    .expect("sending the flows");
}

/// Resident memory of `pid`, in KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A FIFO at `path`, opened for reading without blocking (so the agent's
/// open for writing does not wait) and shrunk to one page, never read
/// until the test says so.
fn stalled_fifo(path: &str) -> OwnedFd {
    let c = CString::new(path).expect("path");
    // SAFETY: plain syscalls on a valid path and the descriptor they return.
    unsafe {
        assert_eq!(libc::mkfifo(c.as_ptr(), 0o600), 0, "mkfifo {path}");
        let fd = libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
        assert!(fd >= 0, "opening {path}");
        assert!(libc::fcntl(fd, libc::F_SETPIPE_SZ, 4096) >= 4096);
        OwnedFd::from_raw_fd(fd)
    }
}

/// Everything the FIFO holds now.
fn drain(fd: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        // SAFETY: a valid descriptor and buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A reader of `run --json -` that stops reading while flows keep coming:
/// the agent warns once, drops and counts (metrics and summary), answers
/// `/metrics`, keeps a flat RSS, still counts every flow, and stops within
/// a second of SIGTERM with exit code 3 naming what it could not write.
#[test]
fn a_stalled_json_reader_costs_counted_drops_not_the_agent() {
    with_topology(
        "a_stalled_json_reader_costs_counted_drops_not_the_agent",
        &[CAS],
        |topo| {
            let dir = TempDir::new("output-faults");
            let fifo = dir.path("stdout");
            let reader = stalled_fifo(&fifo);
            let metrics: SocketAddr = "127.0.0.1:19491".parse().expect("addr");
            let agent_cmd = format!(
                "exec {} run --iface {} --ingress tc --json - --metrics {metrics} --output-buffer 64K > {fifo}",
                agent_bin_str(),
                Topology::GW_UPLINK
            );
            let mut cmd = topo.command(topo.gw(), "sh");
            cmd.args(["-c", &agent_cmd]);
            let agent = Agent::spawn(cmd);
            agent.wait_ready();

            // 6 rounds of 150 new flagged flows (each a flagged record of
            // about 900 bytes, then a blocked one): far more than the FIFO
            // and the 64K queue hold.
            let rounds = 6u16;
            let per_round = 150u16;
            let mut rss = Vec::new();
            for r in 0..rounds {
                let first = 20000 + r * per_round;
                flows(topo, first..first + per_round, 1);
                std::thread::sleep(Duration::from_millis(400));
                rss.push(rss_kib(agent.pid()));
            }
            agent.wait_for_log(
                "JSON lines to standard output is not keeping up",
                Duration::from_secs(5),
            );
            // The metrics endpoint answers while the reader is stalled,
            // with the drops counted.
            let asked = Instant::now();
            let body = scrape(topo, metrics, None);
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "{:?}",
                asked.elapsed()
            );
            assert!(body.starts_with("HTTP/1.1 200"), "{body}");
            let dropped = sample(&body, "cas_audit_export_dropped_total{sink=\"json\"}");
            assert!(dropped > 0, "{body}");
            // Memory stays flat once the queue is full.
            let (lo, hi) = (rss[2..].iter().min(), rss[2..].iter().max());
            let (lo, hi) = (*lo.expect("samples"), *hi.expect("samples"));
            assert!(
                hi - lo < 8 << 10,
                "VmRSS grew from {lo} to {hi} KiB: {rss:?}"
            );

            let pid = agent.pid();
            let sent_at = Instant::now();
            let run = agent.stop_with(libc::SIGTERM);
            let took = sent_at.elapsed();
            assert!(
                took < Duration::from_secs(1),
                "exit {took:?} after SIGTERM; stderr:\n{}",
                run.stderr
            );
            assert_eq!(
                run.code_or_signal(),
                3,
                "pid {pid}; stderr:\n{}",
                run.stderr
            );
            // The warning came once, with the count.
            assert_eq!(
                run.stderr.matches("is not keeping up").count(),
                1,
                "{}",
                run.stderr
            );
            // What it could not write, as the last error says it.
            let err = run
                .stderr
                .lines()
                .find(|l| l.contains("writing JSON lines to standard output: "))
                .unwrap_or_else(|| panic!("no error line:\n{}", run.stderr));
            let nums: Vec<u64> = err
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            assert!(
                err.contains("records not written because it did not keep up"),
                "{err}"
            );
            let (not_written, written) = (nums[0], nums[1]);
            assert!(not_written >= dropped, "{err}");
            // The summary went to the log instead, with every flow counted.
            let summary: Value = run
                .stderr
                .lines()
                .find_map(|l| {
                    l.split_once("summary (it may be missing from ")
                        .map(|x| x.1)
                })
                .and_then(|rest| rest.split_once("): ").map(|x| x.1))
                .map(|j| serde_json::from_str(j).expect("summary JSON"))
                .unwrap_or_else(|| panic!("no summary in the log:\n{}", run.stderr));
            let total = u64::from(rounds * per_round);
            assert_eq!(summary["disallowed"], total, "{summary}");
            assert_eq!(summary["flows"], total, "{summary}");
            let json = &summary["sinks"]["json"];
            let offered = json["sent"].as_u64().unwrap() + json["dropped"].as_u64().unwrap();
            assert!(json["dropped"].as_u64().unwrap() >= dropped, "{summary}");
            assert!(written + not_written > offered, "{err} / {summary}");
            // What reached the FIFO: exactly the records counted written,
            // whole (the agent writes whole lines, at most a pipe's atomic
            // 4096 bytes at a time).
            let text = drain(&reader);
            assert!(text.is_empty() || text.ends_with('\n'), "a cut line");
            let whole: Vec<&str> = text.lines().collect();
            assert_eq!(whole.len() as u64, written, "{err}");
            for l in whole {
                let v: Value = serde_json::from_str(l).expect("a whole JSON line");
                assert_eq!(v["type"], "flow", "{l}");
            }
        },
    );
}

/// Identity of a flow's records, as `report` folds them.
fn flow_key(v: &Value) -> String {
    format!(
        "{} {} {}",
        v["local_port"], v["remote_port"], v["first_seen"]
    )
}

/// The agent stopped (SIGSTOP) while 40 flows of 5 datagrams come and go
/// (their flag events wait in the ring), then continued: every flow gets
/// one final record with its 5 packets and nothing after it; the events
/// the agent found stale are counted; `report` over the output counts the
/// datagrams tshark saw on the uplink.
#[test]
fn a_paused_agent_writes_nothing_after_a_final_record() {
    with_topology(
        "a_paused_agent_writes_nothing_after_a_final_record",
        &[CAS],
        |topo| {
            let dir = TempDir::new("output-faults");
            let out = dir.path("flows.jsonl");
            let cap = Capture::start(
                topo,
                topo.gw(),
                Topology::GW_UPLINK,
                &format!("udp and dst port {DISALLOWED}"),
            )
            .expect("tshark");
            let mut cmd = topo.command(topo.gw(), &agent_bin_str());
            cmd.args(["run", "--iface", Topology::GW_UPLINK, "--ingress", "tc"])
                .args(["--json", &out, "--idle-timeout", "2"]);
            let agent = Agent::spawn(cmd);
            agent.wait_ready();
            let n = 40u16;
            agent.signal(libc::SIGSTOP);
            flows(topo, 30000..30000 + n, 5);
            // Idle past the timeout while stopped: due the moment it resumes.
            std::thread::sleep(Duration::from_secs(3));
            agent.signal(libc::SIGCONT);
            std::thread::sleep(Duration::from_millis(2500));
            let run = agent.stop_with(libc::SIGTERM);
            assert_eq!(run.code_or_signal(), 0, "{}", run.stderr);
            let frames = cap.stop().expect("capture");
            assert_eq!(frames.len(), usize::from(n) * 5, "tshark on the uplink");

            let text = std::fs::read_to_string(&out).expect("the JSON lines");
            let records: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect();
            let mut finished = std::collections::HashMap::new();
            for (i, r) in records
                .iter()
                .enumerate()
                .filter(|(_, r)| r["type"] == "flow")
            {
                let k = flow_key(r);
                assert!(
                    !finished.contains_key(&k),
                    "record {i} after the final record {} of its flow: {r}",
                    finished[&k]
                );
                if ["ended", "expired", "exit"].contains(&r["reason"].as_str().unwrap()) {
                    assert_eq!(r["packets_out"], 5, "{r}");
                    finished.insert(k, i);
                }
            }
            assert_eq!(finished.len(), usize::from(n), "{text}");
            let summary = records.last().expect("a summary");
            assert_eq!(summary["type"], "summary");
            assert_eq!(summary["disallowed"], n, "{summary}");
            assert_eq!(summary["events"], n, "{summary}");
            let stale = summary["events_stale"].as_u64().expect("events_stale");
            assert!(stale <= u64::from(n), "{summary}");
            // Flags from the events, or from the table when an event came
            // after its flow was reported (then it was counted stale).
            let flagged = records.iter().filter(|r| r["reason"] == "flagged").count();
            assert_eq!(flagged, usize::from(n), "{text}");

            let rep = Command::new(agent_bin())
                .args(["report", &out, "--json"])
                .stdin(Stdio::null())
                .output()
                .expect("report");
            assert_eq!(rep.status.code(), Some(0));
            let doc: Value = serde_json::from_slice(&rep.stdout).expect("report JSON");
            assert_eq!(doc["flows"], n, "{doc}");
            assert_eq!(doc["packets_out"], frames.len(), "{doc}");
        },
    );
}
