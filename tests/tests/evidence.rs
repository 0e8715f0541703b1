//! Privileged integration tests of the evidence features: `run --log-dir`
//! (rotation, a full disk) and `cas-audit report` on what it wrote.
//!
//! Conventions of `agent.rs`: each test builds its own [`Topology`], runs
//! the agent in the gw namespace on its `uplink` veth, sends known traffic
//! between the lan and cloud namespaces, stops the agent with SIGTERM and
//! checks what it wrote. The namespaces are deleted when the topology is
//! dropped, a running agent is killed on drop, and the full-disk test's
//! tmpfs (mounted on a directory this test creates under /tmp, never over a
//! system path) is unmounted on drop, even when a test fails.
//!
//! The binary is `$CAS_AUDIT_BIN`, else `<workspace>/target/debug/cas-audit`.
//! Tests are skipped (with a message) when not run as root.

use std::collections::{BTreeMap, HashSet};
use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use cas_audit::output::logdir::{compare_names, parse_name};
use cas_audit_tests::process::{agent_bin, agent_bin_str, Exited as Run, Process as Agent};
use cas_audit_tests::scratch::TempDir;
use cas_audit_tests::traffic::{tcp_exchange, udp_send, udp_sink, TcpServer};
use cas_audit_tests::{with_topology, Topology};

/// A real CAS endpoint (US1, app-connector and dlp); only ever configured on
/// the cloud namespace's loopback.
const CAS: IpAddr = IpAddr::V4(Ipv4Addr::new(13, 64, 196, 27));
const LAN: IpAddr = Topology::LAN_ADDR4;
/// UDP payload of every datagram here, and its wire size.
const UDP_LEN: usize = 100;
const UDP_FRAME: u64 = 14 + 20 + 8 + UDP_LEN as u64;

// ---------------------------------------------------------------------------
// Harness (as in agent.rs)
// ---------------------------------------------------------------------------

/// Builds a topology whose cloud answers for [`CAS`], runs `f`, drops the
/// topology and checks that its namespaces are gone.
fn with_bed(test: &str, f: impl FnOnce(&Topology)) {
    with_topology(test, &[CAS], f)
}

/// `cas-audit run --iface uplink --ingress tc ARGS...` in the gw
/// namespace, ready.
fn start_agent(topo: &Topology, args: &[&str]) -> Agent {
    let mut cmd = topo.command(topo.gw(), &agent_bin_str());
    cmd.args(["run", "--iface", Topology::GW_UPLINK, "--ingress", "tc"])
        .args(args);
    let agent = Agent::spawn(cmd);
    agent.wait_ready();
    agent
}

/// SIGTERM, wait, and insist on exit status 0.
fn stop_ok(agent: Agent) -> Run {
    let run = agent.stop_with(libc::SIGTERM);
    run.assert_ok();
    run
}

/// A tmpfs of `size` mounted on a new directory `dir` (inside a
/// [`TempDir`]); unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        assert!(
            dir.to_str()
                .is_some_and(|d| d.starts_with("/tmp/cas-audit-evidence-test-")),
            "refusing to mount on {}",
            dir.display()
        );
        std::fs::create_dir(dir).expect("creating the mount point");
        let c = |s: &[u8]| CString::new(s).expect("no NUL");
        let (src, target, fstype) = (c(b"tmpfs"), c(dir.as_os_str().as_bytes()), c(b"tmpfs"));
        let data = c(format!("size={size},mode=0755").as_bytes());
        // SAFETY: valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting a tmpfs on {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        Tmpfs(dir.to_path_buf())
    }

    /// Free bytes.
    fn free(&self) -> u64 {
        let p = CString::new(self.0.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: statvfs fills the zeroed struct; the path is valid.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(p.as_ptr(), &mut st) };
        assert_eq!(rc, 0, "statvfs: {}", std::io::Error::last_os_error());
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(p) = CString::new(self.0.as_os_str().as_bytes()) {
            // SAFETY: valid path; detaches our own mount.
            if unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) } != 0 {
                eprintln!(
                    "cas-audit-tests: umount {}: {}",
                    self.0.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// `cas-audit ARGS` in the root namespace (report attaches nothing).
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(agent_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running cas-audit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Log files of `dir` in name order: (name, contents). Every name must be
/// a log file name.
fn log_files(dir: &Path) -> Vec<(String, String)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().into_string().expect("UTF-8"))
        .collect();
    for n in &names {
        assert!(
            parse_name(n).is_some(),
            "unexpected file {n} in the log dir"
        );
    }
    names.sort_by(|a, b| compare_names(a, b));
    names
        .into_iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(&n)).expect("reading a log file");
            (n, text)
        })
        .collect()
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn is_flow(v: &Value) -> bool {
    v["type"] == "flow"
}

/// Flow identity, as `report` deduplicates.
fn flow_id(v: &Value) -> String {
    format!(
        "{} {} {}:{} {}:{} {}",
        v["proto"],
        v["iface"],
        v["local_addr"],
        v["local_port"],
        v["remote_addr"],
        v["remote_port"],
        v["first_seen"]
    )
}

/// One datagram from the lan's `port` to `to`.
fn udp_one(topo: &Topology, port: u16, to: SocketAddr) {
    udp_send(
        topo,
        topo.lan(),
        Some(SocketAddr::new(LAN, port)),
        to,
        1,
        UDP_LEN,
    )
    .expect("sending UDP");
}

/// `n` flows of one datagram each, from LAN ports `first..` to CAS port
/// `port`, into a sink that never answers; returns once the sink has them.
fn unanswered_flows(topo: &Topology, first: u16, n: u16, port: u16) {
    let sink = udp_sink(topo, topo.cloud(), SocketAddr::new(CAS, port)).expect("sink");
    for i in 0..n {
        udp_one(topo, first + i, SocketAddr::new(CAS, port));
    }
    assert_eq!(
        sink.wait_for(n as usize, Duration::from_secs(5)),
        n as usize
    );
    sink.stop();
}

fn sysctl(topo: &Topology, ns: &str, kv: &str) {
    let st = topo
        .command(ns, "sysctl")
        .args(["-q", "-w", kv])
        .status()
        .expect("running sysctl");
    assert!(st.success(), "sysctl {kv} in {ns}");
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Flows of each kind in [`log_dir_rotates_and_report_counts`].
const UNANSWERED: u16 = 12;
const UNREACHABLE: u16 = 6;
const CLOSED: u16 = 3;
/// `--log-max-size` there: two or three records a file.
const MAX_SIZE: u64 = 2048;

/// `run --log-dir` with 2 KiB files: the files, read in name order, hold
/// exactly what `--json -` printed (every record once, the summary last),
/// none is over the bound; `report DIR --format json` counts the flows
/// exactly.
#[test]
fn log_dir_rotates_and_report_counts() {
    with_bed("log_dir_rotates_and_report_counts", |topo| {
        // Every UDP datagram to a closed port gets its ICMP error.
        sysctl(topo, topo.cloud(), "net.ipv4.icmp_ratelimit=0");
        let tmp = TempDir::new("evidence");
        let dir = tmp.0.join("evidence");
        let dir_s = dir.to_str().expect("UTF-8").to_owned();
        let agent = start_agent(
            topo,
            &[
                "--json",
                "-",
                "--log-dir",
                &dir_s,
                "--log-max-size",
                "2K",
                "--answer-timeout",
                "1",
            ],
        );
        let mode = std::fs::metadata(&dir)
            .expect("the log dir")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode & !0o750, 0, "log dir mode {mode:o}");

        // Unanswered: UDP to a sink that never answers.
        unanswered_flows(topo, 41000, UNANSWERED, 8443);
        // Unreachable: UDP to a closed port, ICMP port unreachable from CAS.
        for i in 0..UNREACHABLE {
            udp_one(topo, 42000 + i, SocketAddr::new(CAS, 8444));
        }
        // Closed: TCP exchanges to 443.
        let server =
            TcpServer::start(topo, topo.cloud(), SocketAddr::new(CAS, 443)).expect("server");
        for i in 0..CLOSED {
            let payload = vec![7u8; 500];
            let back = tcp_exchange(
                topo,
                topo.lan(),
                Some(SocketAddr::new(LAN, 43000 + i)),
                SocketAddr::new(CAS, 443),
                &payload,
            )
            .expect("TCP exchange");
            assert_eq!(back, payload);
        }
        assert_eq!(server.stop(), CLOSED as usize);
        // Answer timeout (1 s) and the 2 s linger of ended TCP flows, polled.
        std::thread::sleep(Duration::from_millis(3500));
        let run = stop_ok(agent);

        // The files hold exactly the JSON lines, in name order.
        let files = log_files(&dir);
        let joined: String = files.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(joined, run.stdout, "log files differ from --json -");
        assert!(files.len() >= 10, "{} files: no rotation?", files.len());
        for (name, text) in &files {
            assert!(text.ends_with('\n'), "{name} does not end a record");
            let lines = text.lines().count();
            assert!(
                text.len() as u64 <= MAX_SIZE || lines == 1,
                "{name}: {} bytes in {lines} records",
                text.len()
            );
            // Rotation happens before a record that would not fit.
            assert!(lines >= 1, "{name} is empty");
        }
        let recs = parse_lines(&run.stdout);
        let summary = recs.last().expect("records");
        assert_eq!(summary["type"], "summary", "the summary is not last");
        assert_eq!(summary["log_records_lost"], 0, "{summary}");
        assert_eq!(recs.iter().filter(|r| r["type"] == "summary").count(), 1);

        // Each flow's last record, from the agent's own output.
        let mut last: BTreeMap<String, &Value> = BTreeMap::new();
        for r in recs.iter().filter(|r| is_flow(r)) {
            last.insert(flow_id(r), r);
        }
        let flows: Vec<&Value> = last.values().copied().collect();
        let total = (UNANSWERED + UNREACHABLE + CLOSED) as usize;
        assert_eq!(flows.len(), total, "distinct flows in the records");
        let states: HashSet<(u64, String)> = flows
            .iter()
            .map(|f| {
                (
                    f["service_port"].as_u64().unwrap(),
                    f["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            states,
            HashSet::from([
                (8443, "unanswered".to_string()),
                (8444, "unreachable".to_string()),
                (443, "closed".to_string()),
            ]),
            "final states per service port"
        );
        let sum = |field: &str, port: Option<u64>| -> u64 {
            flows
                .iter()
                .filter(|f| port.is_none_or(|p| f["service_port"] == p))
                .map(|f| f[field].as_u64().unwrap())
                .sum()
        };
        let tcp = |field: &str| sum(field, Some(443));
        let counts = |flows: u64, po: u64, bo: u64, pi: u64, bi: u64| json!({"flows": flows, "packets_out": po, "bytes_out": bo, "packets_in": pi, "bytes_in": bi});
        let (n_ua, n_ur, n_cl) = (UNANSWERED as u64, UNREACHABLE as u64, CLOSED as u64);
        let all = counts(
            n_ua + n_ur + n_cl,
            n_ua + n_ur + tcp("packets_out"),
            (n_ua + n_ur) * UDP_FRAME + tcp("bytes_out"),
            tcp("packets_in"),
            tcp("bytes_in"),
        );
        assert!(tcp("packets_in") >= 3 * n_cl, "TCP packets in");

        // report DIR --format json: exact figures.
        let (code, out, err) = cli(&["report", &dir_s, "--format", "json"]);
        assert_eq!(code, 0, "report: {err}");
        let rep: Value = serde_json::from_str(&out).expect("report JSON");
        let with = |key: Value, c: &Value| {
            let mut o = key;
            o.as_object_mut()
                .unwrap()
                .extend(c.as_object().unwrap().clone());
            o
        };
        let ua = counts(n_ua, n_ua, n_ua * UDP_FRAME, 0, 0);
        let ur = counts(n_ur, n_ur, n_ur * UDP_FRAME, 0, 0);
        let cl = counts(
            n_cl,
            tcp("packets_out"),
            tcp("bytes_out"),
            tcp("packets_in"),
            tcp("bytes_in"),
        );
        let disallowed = counts(n_ua + n_ur, n_ua + n_ur, (n_ua + n_ur) * UDP_FRAME, 0, 0);
        let files_read: Vec<String> = files.iter().map(|(n, _)| format!("{dir_s}/{n}")).collect();
        let flow_records = recs.iter().filter(|r| is_flow(r)).count();
        let first = flows
            .iter()
            .map(|f| f["first_seen"].as_str().unwrap())
            .min()
            .unwrap();
        let lastseen = flows
            .iter()
            .map(|f| f["last_seen"].as_str().unwrap())
            .max()
            .unwrap();
        let want = json!({
            "files": files_read, "records": flow_records, "runs": 1, "skipped": 0,
            "skipped_lines": [], "log_records_lost": 0,
            "filters": {"since": null, "until": null, "states": [], "datacenters": [],
                        "purposes": [], "hosts": []},
            "flows": all["flows"], "packets_out": all["packets_out"], "packets_in": all["packets_in"],
            "bytes_out": all["bytes_out"], "bytes_in": all["bytes_in"],
            "first_seen": first, "last_seen": lastseen,
            "by_datacenter": [with(json!({"datacenter": "US1"}), &all)],
            "by_purpose": [with(json!({"purpose": "app-connector"}), &all),
                           with(json!({"purpose": "dlp"}), &all)],
            "by_dns_name": [with(json!({"dns_name": null}), &all)],
            "by_state": [with(json!({"state": "unanswered"}), &ua),
                         with(json!({"state": "unreachable"}), &ur),
                         with(json!({"state": "closed"}), &cl)],
            "by_verdict": [with(json!({"verdict": "disallowed-port"}), &disallowed),
                           with(json!({"verdict": "allowed"}), &cl)],
            "by_local_host": [with(json!({"local_addr": "198.51.100.2"}), &all)],
            "by_dns_name": [with(json!({"dns_name": null}), &all)],
            "by_local_service": [
                with(json!({"local_addr": "198.51.100.2", "service_port": 8443}), &ua),
                with(json!({"local_addr": "198.51.100.2", "service_port": 8444}), &ur),
                with(json!({"local_addr": "198.51.100.2", "service_port": 443}), &cl)],
            "blocked_flows": n_ua + n_ur, "blocked_destinations": 2,
            "top_blocked": [
                {"remote_addr": "13.64.196.27", "service_port": 8443, "flows": n_ua,
                 "states": ["unanswered"], "datacenters": ["US1"], "purposes": ["app-connector", "dlp"],
                 "reporters": [], "icmp": [], "local_hosts": 1},
                {"remote_addr": "13.64.196.27", "service_port": 8444, "flows": n_ur,
                 "states": ["unreachable"], "datacenters": ["US1"], "purposes": ["app-connector", "dlp"],
                 "reporters": ["13.64.196.27"], "icmp": [{"icmp_type": 3, "icmp_code": 3}],
                 "local_hosts": 1}],
            "rows": {"by_datacenter": 1, "by_purpose": 2, "by_dns_name": 1, "by_state": 3, "by_verdict": 2,
                     "by_local_host": 1, "by_local_service": 3},
        });
        assert_eq!(rep, want, "report:\n{out}");
        println!("report {dir_s} --format json:\n{out}");

        // A filter, and the table.
        let (code, out, err) = cli(&[
            "report",
            &dir_s,
            "--format",
            "json",
            "--state",
            "unreachable",
        ]);
        assert_eq!(code, 0, "{err}");
        let rep: Value = serde_json::from_str(&out).expect("report JSON");
        assert_eq!(rep["flows"], n_ur, "{out}");
        assert_eq!(
            rep["by_state"],
            json!([with(json!({"state": "unreachable"}), &ur)])
        );
        let (code, out, err) = cli(&["report", &dir_s]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains(&format!(
                "{} files: {flow_records} flow records, 1 run summary, 0 lines skipped",
                files.len()
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "Blocked: {} flows to 2 destinations; top 2:",
                n_ua + n_ur
            )),
            "{out}"
        );
        println!("report {dir_s}:\n{out}");
        // A missing path is a usage error.
        let (code, _, err) = cli(&["report", &format!("{dir_s}/missing")]);
        assert_eq!(code, 2, "{err}");
    });
}

/// Flows sent while the disk is full, and after space returns.
const FULL_FLOWS: u16 = 40;
const LATER_FLOWS: u16 = 10;

/// `--log-dir` on a full tmpfs: the agent keeps running and exits 0, logs
/// one error naming the directory, resumes once space returns, and
/// `log_records_lost` is exactly the number of flow records its `--json`
/// file (on a normal filesystem) has and the log files lack.
#[test]
fn log_dir_on_a_full_disk_counts_lost_records() {
    with_bed("log_dir_on_a_full_disk_counts_lost_records", |topo| {
        let tmp = TempDir::new("evidence");
        let disk = Tmpfs::mount(&tmp.0.join("disk"), "256k");
        // Leave 16 KiB: about twenty records.
        let filler = disk.0.join("filler");
        let fill = disk.free() - 16 * 1024;
        std::fs::write(&filler, vec![0u8; fill as usize]).expect("writing the filler");
        let dir = disk.0.join("evidence");
        let dir_s = dir.to_str().expect("UTF-8").to_owned();
        let json = tmp.0.join("records.jsonl");
        let json_s = json.to_str().expect("UTF-8").to_owned();
        let mut agent = start_agent(topo, &["--json", &json_s, "--log-dir", &dir_s]);

        let sink = udp_sink(topo, topo.cloud(), SocketAddr::new(CAS, 8443)).expect("sink");
        for i in 0..FULL_FLOWS {
            udp_one(topo, 44000 + i, SocketAddr::new(CAS, 8443));
        }
        // Flagged records are written in the next batch; give it time.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(agent.running(), "agent died: {}", agent.stderr_now());
        let err = agent.stderr_now();
        let msg = format!("cannot write to log directory {dir_s}: No space left on device");
        assert_eq!(err.matches(&msg).count(), 1, "stderr:\n{err}");

        // Space returns.
        std::fs::remove_file(&filler).expect("removing the filler");
        for i in 0..LATER_FLOWS {
            udp_one(topo, 45000 + i, SocketAddr::new(CAS, 8443));
        }
        assert_eq!(
            sink.wait_for((FULL_FLOWS + LATER_FLOWS) as usize, Duration::from_secs(5)),
            (FULL_FLOWS + LATER_FLOWS) as usize
        );
        sink.stop();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(agent.running(), "agent died: {}", agent.stderr_now());
        let run = stop_ok(agent);
        assert!(
            run.stderr
                .contains(&format!("log directory {dir_s} is writable again")),
            "stderr:\n{}",
            run.stderr
        );
        assert_eq!(
            run.stderr.matches(&msg).count(),
            1,
            "stderr:\n{}",
            run.stderr
        );

        let reference = std::fs::read_to_string(&json).expect("reading the --json file");
        let all = parse_lines(&reference);
        let summary = all.last().expect("records");
        assert_eq!(summary["type"], "summary");
        let lost = summary["log_records_lost"]
            .as_u64()
            .expect("log_records_lost");

        let files = log_files(&dir);
        let logged_text: String = files.iter().map(|(_, t)| t.as_str()).collect();
        let logged = parse_lines(&logged_text);
        // The log holds whole records, each one a line of the reference,
        // in the same order: a subsequence, nothing torn or doubled.
        let ref_lines: Vec<&str> = reference.lines().collect();
        let mut at = 0;
        for l in logged_text.lines() {
            match ref_lines[at..].iter().position(|r| *r == l) {
                Some(k) => at += k + 1,
                None => panic!("log line not in the --json output, or out of order: {l}"),
            }
        }
        let ref_flows = all.iter().filter(|r| is_flow(r)).count() as u64;
        let log_flows = logged.iter().filter(|r| is_flow(r)).count() as u64;
        println!(
            "full disk: {ref_flows} flow records in --json, {log_flows} in {} log files, log_records_lost {lost}",
            files.len()
        );
        assert!(lost > 0, "nothing lost: the disk was not full?");
        assert_eq!(
            ref_flows - log_flows,
            lost,
            "{ref_flows} flow records in --json, {log_flows} in the log dir"
        );
        // Space came back before the exit: the summary is in the log too, last.
        assert_eq!(logged.last(), Some(summary), "summary in the log dir");
        // Every flow sent after space returned has its flagged record.
        let flagged_later: HashSet<u64> = logged
            .iter()
            .filter(|r| is_flow(r) && r["reason"] == "flagged")
            .map(|r| r["local_port"].as_u64().unwrap())
            .filter(|p| (45000..45000 + LATER_FLOWS as u64).contains(p))
            .collect();
        assert_eq!(flagged_later.len(), LATER_FLOWS as usize, "{logged_text}");
        // The readable summary says so too.
        assert!(
            run.stdout.contains(&format!(
                "log records lost: {lost} (not written to the log directory)"
            )),
            "{}",
            run.stdout
        );

        // report warns that the log is incomplete.
        let (code, out, err) = cli(&["report", &dir_s, "--format", "json"]);
        assert_eq!(code, 0, "{err}");
        let rep: Value = serde_json::from_str(&out).expect("report JSON");
        assert_eq!(rep["log_records_lost"], lost);
        assert_eq!(rep["skipped"], 0);
        assert_eq!(rep["flows"], (FULL_FLOWS + LATER_FLOWS) as u64, "{out}");
        assert!(err.contains("the logs are incomplete"), "{err}");
        drop(disk);
    });
}

/// `--log-dir` on a disk that fills up while the agent runs and is still
/// full when it stops: the room the agent kept free at start (a reserve
/// file of allocated blocks, deleted just before the summary) takes the
/// summary record, so `report DIR` says how many records are missing (it
/// said 0 when the summary did not fit), and exactly as many flow records
/// as the `--json` file (on another filesystem) has and the log lacks.
#[test]
fn log_dir_full_at_exit_still_counts_the_loss() {
    with_bed("log_dir_full_at_exit_still_counts_the_loss", |topo| {
        let tmp = TempDir::new("evidence");
        let disk = Tmpfs::mount(&tmp.0.join("disk"), "8m");
        let dir = disk.0.join("evidence");
        let dir_s = dir.to_str().expect("UTF-8").to_owned();
        let json = tmp.0.join("records.jsonl");
        let json_s = json.to_str().expect("UTF-8").to_owned();
        let free_before = disk.free();
        let agent = start_agent(topo, &["--json", &json_s, "--log-dir", &dir_s]);
        // The room kept for the summary, looked at after the outcome.
        let reserve = dir.join(".cas-audit-reserve");
        let kept = std::fs::metadata(&reserve).ok();
        let taken = free_before - disk.free();
        // Fill what is left but 8 KiB: a few records.
        let fill = disk.free() - 8 * 1024;
        std::fs::write(disk.0.join("filler"), vec![0u8; fill as usize]).expect("filler");

        unanswered_flows(topo, 46000, FULL_FLOWS, 8443);
        std::thread::sleep(Duration::from_millis(1500));
        let run = stop_ok(agent);
        assert!(
            run.stderr.contains(&format!(
                "cannot write to log directory {dir_s}: No space left on device"
            )),
            "{}",
            run.stderr
        );
        assert!(!reserve.exists(), "the reserve outlived the agent");

        let reference = std::fs::read_to_string(&json).expect("reading the --json file");
        let all = parse_lines(&reference);
        let summary = all.last().expect("records");
        assert_eq!(summary["type"], "summary");
        let lost = summary["log_records_lost"].as_u64().expect("lost");
        let files = log_files(&dir);
        let logged_text: String = files.iter().map(|(_, t)| t.as_str()).collect();
        let logged = parse_lines(&logged_text);
        let ref_flows = all.iter().filter(|r| is_flow(r)).count() as u64;
        let log_flows = logged.iter().filter(|r| is_flow(r)).count() as u64;
        println!(
            "full at exit: {ref_flows} flow records in --json, {log_flows} in the log dir, log_records_lost {lost}"
        );
        assert!(lost > 0, "nothing lost: the disk was not full?");
        assert_eq!(ref_flows - log_flows, lost);
        assert_eq!(
            logged.last(),
            Some(summary),
            "the summary is in the log dir, last"
        );
        let (code, out, err) = cli(&["report", &dir_s, "--format", "json"]);
        assert_eq!(code, 0, "{err}");
        let rep: Value = serde_json::from_str(&out).expect("report JSON");
        assert_eq!(rep["log_records_lost"], lost, "{out}");
        assert_eq!(rep["runs"], 1, "{out}");
        assert!(err.contains("the logs are incomplete"), "{err}");
        println!("report {dir_s}: {}", err.trim_end());
        // The reserve: allocated blocks (not a sparse file), 0640.
        use std::os::unix::fs::MetadataExt;
        let meta = kept.expect("a reserve file while the agent ran");
        assert!(
            meta.len() > 1 << 20 && meta.blocks() * 512 >= meta.len(),
            "{} bytes, {} blocks",
            meta.len(),
            meta.blocks()
        );
        assert!(taken >= meta.len(), "the reserve is allocated");
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        drop(disk);
    });
}
