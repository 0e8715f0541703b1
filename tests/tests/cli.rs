//! What the command line tells its operator: the exit-code policy as a
//! table over every command (the README's table is the one checked),
//! inputs that cannot hang the agent (FIFO, /dev/zero, 2 GiB), two agents
//! on one interface, a closed pipe, journal priorities, `-v`, live lines
//! with their zone, `report` on gzip and standard input, and the flagged
//! record's history.
//!
//! Commands that attach, connect or pin run inside the test's own lan / gw
//! / cloud namespaces; the others (sets, report) attach nothing and run in
//! the test's namespace.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use cas_audit_tests::process::{
    agent_bin, agent_here as here, agent_in as in_ns, Process as Agent, EXIT_TIMEOUT,
};
use cas_audit_tests::scratch::{Bpffs, TempDir};
use cas_audit_tests::traffic::{udp_send, udp_sink, TcpServer};
use cas_audit_tests::{with_topology, Topology};

/// A real CAS endpoint (US1 app connector), only on the cloud namespace's `lo`.
const CAS: IpAddr = IpAddr::V4(Ipv4Addr::new(13, 64, 196, 27));
/// Longest any refused command may take: a hang is a failure, not a wait.
const REFUSED_WITHIN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// What a finished command left.
#[derive(Debug)]
struct Done {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Where a command's standard output goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Out {
    /// Collected.
    Pipe,
    /// `/dev/full`: every write fails with ENOSPC.
    Full,
    /// A pipe whose reading end is closed before the command writes.
    Closed,
}

/// Runs `cmd` (stdin closed), killing it and failing after `limit`.
fn finish(mut cmd: Command, out: Out, limit: Duration) -> Done {
    cmd.stdin(Stdio::null()).stderr(Stdio::piped());
    match out {
        Out::Pipe | Out::Closed => cmd.stdout(Stdio::piped()),
        Out::Full => cmd.stdout(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full"),
        ),
    };
    let shown = format!("{cmd:?}");
    let started = Instant::now();
    let mut child: Child = cmd.spawn().unwrap_or_else(|e| panic!("{shown}: {e}"));
    let stdout = child.stdout.take().map(|mut o| {
        if out == Out::Closed {
            drop(o);
            return std::thread::spawn(String::new);
        }
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = o.read_to_string(&mut s);
            s
        })
    });
    let mut err = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{shown} did not exit within {limit:?}; stderr:\n{}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    Done {
        code: status
            .code()
            .unwrap_or_else(|| -status.signal().unwrap_or(0)),
        stdout: stdout
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    }
}

/// `cas-audit run --iface uplink --ingress tc EXTRA` in the gateway, with
/// `env` set, once it is ready.
fn agent_on_uplink(topo: &Topology, extra: &[&str], env: &[(&str, &str)]) -> Agent {
    let mut cmd = in_ns(
        topo,
        topo.gw(),
        &["run", "--iface", Topology::GW_UPLINK, "--ingress", "tc"],
    );
    cmd.args(extra).envs(env.iter().copied());
    let agent = Agent::spawn(cmd);
    agent.wait_ready();
    agent
}

/// The cas-audit programs attached to the gateway's uplink through TCX.
fn attached(topo: &Topology) -> Vec<String> {
    topo.tcx_programs(topo.gw(), Topology::GW_UPLINK)
}

/// Every key of every object in `v` is snake_case.
fn assert_snake_case(v: &Value, what: &str) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                assert!(
                    !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                    "{what}: key {k:?} is not snake_case"
                );
                assert_snake_case(x, what);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| assert_snake_case(x, what)),
        _ => {}
    }
}

/// Standard output as one JSON document or as JSON lines, each checked
/// for snake_case keys.
fn json_lines(out: &str, what: &str) -> Vec<Value> {
    let docs: Vec<Value> = match serde_json::from_str(out) {
        Ok(doc) => vec![doc],
        Err(_) => out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {l}"))
            })
            .collect(),
    };
    assert!(!docs.is_empty(), "{what}: no JSON on standard output");
    for d in &docs {
        assert_snake_case(d, what);
    }
    docs
}

/// A set file with one US1 entry for `prefix`, its purpose and ports.
fn set_file(path: &str, prefix: &str, purpose: &str, ports: &str) {
    std::fs::write(
        path,
        format!(
            r#"{{"schema": 1, "name": "lab", "source": "test", "published": "2026-11-22",
 "entries": [{{"prefix": "{prefix}", "datacenter": "US1", "purpose": "{purpose}", "direction": "outbound", "ports": [{ports}]}}]}}
"#
        ),
    )
    .expect("writing a set file");
}

fn which(prog: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// The exit-code table
// ---------------------------------------------------------------------------

/// The README's exit-code table: command → codes it returns (a cell other
/// than `–`).
fn readme_table() -> BTreeMap<String, Vec<i32>> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let mut lines = readme
        .lines()
        .skip_while(|l| l.trim() != "| command | 0 | 1 | 2 | 3 |");
    assert!(lines.next().is_some(), "no exit-code table in the README");
    lines.next(); // |---|
    let mut table = BTreeMap::new();
    for row in lines.take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 5, "{row}");
        let codes: Vec<i32> = (0..4)
            .filter(|i| cells[i + 1] != "–")
            .map(|i| i as i32)
            .collect();
        for cmd in cells[0].split('`').skip(1).step_by(2) {
            table.insert(cmd.to_string(), codes.clone());
        }
    }
    table
}

/// One run of a command and the code it must end with.
struct Case {
    /// The README's name of the command.
    cmd: &'static str,
    what: &'static str,
    command: Command,
    out: Out,
    code: i32,
    /// Standard error contains this.
    says: &'static str,
    /// Standard output is JSON (documents or lines) with snake_case keys.
    json: bool,
}

fn case(cmd: &'static str, what: &'static str, command: Command, code: i32) -> Case {
    Case {
        cmd,
        what,
        command,
        out: Out::Pipe,
        code,
        says: "",
        json: false,
    }
}

impl Case {
    fn out(mut self, out: Out) -> Case {
        self.out = out;
        self
    }
    fn says(mut self, s: &'static str) -> Case {
        self.says = s;
        self
    }
    fn json(mut self) -> Case {
        self.json = true;
        self
    }
}

/// Every command, every code the README lists for it, for real: the
/// README's table, the library's policy (what --help and the man pages
/// print) and what the binary does are one.
#[test]
fn exit_codes_of_every_command() {
    // The README's table is the library's policy.
    let table = readme_table();
    for (cmd, codes) in &table {
        let lib: Vec<i32> = cas_audit::error::exit_codes(cmd)
            .iter()
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(&lib, codes, "README and exit_codes({cmd:?}) disagree");
    }
    with_topology("exit_codes_of_every_command", &[CAS], |topo| {
        let dir = TempDir::new("cli");
        let (reach, closed) = (dir.path("reach.json"), dir.path("closed.json"));
        set_file(&reach, "13.64.196.27/32", "portal", "443");
        set_file(&closed, "13.64.196.27/32", "portal", "4443");
        let log = dir.path("log.jsonl");
        std::fs::write(
            &log,
            concat!(
                r#"{"type":"flow","ts":"2026-11-22T10:00:05.000000Z","reason":"ended","state":"closed","history":"ShADadFf","iface":"uplink","proto":"tcp","local_addr":"198.51.100.2","local_port":40001,"remote_addr":"13.64.196.27","remote_port":443,"initiator":"local","first_packet":"out","service_port":443,"prefix":"13.64.196.27/32","datacenters":["US1"],"purposes":["app-connector"],"verdict":"allowed","packets_out":5,"bytes_out":500,"packets_in":5,"bytes_in":600,"first_seen":"2026-11-22T10:00:00.000000Z","last_seen":"2026-11-22T10:00:01.000000Z"}"#,
                "\n"
            ),
        )
        .expect("log");
        let page = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../cas-audit/data/seeds/network-requirements-2019-11.md");
        let page = if page.is_file() {
            page
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/seeds/network-requirements-2019-11.md")
        };
        let page = page.to_str().expect("UTF-8").to_owned();
        let fs = Bpffs::mount(dir.0.join("bpffs"));
        let pin = fs.0.join("cas-audit");
        let pin = pin.to_str().expect("UTF-8");
        let gw = topo.gw();
        let lan = topo.lan();
        let up = Topology::GW_UPLINK;
        let server =
            TcpServer::start(topo, topo.cloud(), SocketAddr::new(CAS, 443)).expect("server");
        let nobody = which("setpriv").map(|p| p.to_str().expect("UTF-8").to_owned());
        let doctor_unprivileged = {
            let mut c = topo.command(gw, nobody.as_deref().expect("setpriv (util-linux)"));
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ])
            .arg(agent_bin())
            .arg("doctor");
            c
        };

        let cases = vec![
            // run
            case("run", "audits until --duration", in_ns(topo, gw, &["run", "--iface", up, "--duration", "1", "--json"]), 0).json(),
            case("run", "a --json path that cannot be created", in_ns(topo, gw, &["run", "--iface", up, "--json", "/nonexistent/dir/x.jsonl"]), 2).says("/nonexistent/dir/x.jsonl"),
            case("run", "an interface given twice", in_ns(topo, gw, &["run", "--iface", &format!("{up},{up}")]), 2).says("--iface uplink is given twice"),
            case("run", "an empty selection", in_ns(topo, gw, &["run", "--iface", up, "--set", "cas-2017-07", "--purpose", "auth-gateway"]), 2)
                .says("cas-2017-07: nothing selected: the set has 21 entries; --purpose auth-gateway kept 0 entries"),
            case("run", "--pin off a bpffs", in_ns(topo, gw, &["run", "--iface", up, "--pin", &dir.path("not-bpffs/pin")]), 2).says("is not on a BPF filesystem"),
            case("run", "an output that fails while running", in_ns(topo, gw, &["run", "--iface", up, "--duration", "1", "--json", "/dev/full"]), 3).says("No space left on device"),
            case("run", "pinned, for status and detach", in_ns(topo, gw, &["run", "--iface", up, "--duration", "1", "--pin", pin]), 0),
            // status, detach
            case("status", "the pinned datapath", in_ns(topo, gw, &["status", "--pin", pin, "--json"]), 0).json(),
            case("status", "standard output full", in_ns(topo, gw, &["status", "--pin", pin]), 3).out(Out::Full),
            case("status", "nothing pinned", in_ns(topo, gw, &["status", "--pin", "/nonexistent/pin"]), 2).says("nothing is pinned in /nonexistent/pin"),
            case("detach", "the pinned datapath", in_ns(topo, gw, &["detach", "--pin", pin]), 0),
            case("detach", "a bad flag", in_ns(topo, gw, &["detach", "--pinned"]), 2),
            case("detach", "standard output full", in_ns(topo, gw, &["detach", "--pin", "/nonexistent/pin"]), 3).out(Out::Full),
            // check, from the lan
            case("check", "every destination reachable", in_ns(topo, lan, &["check", "--set", &reach, "--timeout", "2", "--json"]), 0).json(),
            case("check", "a destination refused", in_ns(topo, lan, &["check", "--set", &closed, "--timeout", "2"]), 1),
            case("check", "a --json path that cannot be created", in_ns(topo, lan, &["check", "--set", &reach, "--json", "/nonexistent/x"]), 2).says("creating /nonexistent/x"),
            case("check", "an empty selection", in_ns(topo, lan, &["check", "--purpose", "dlp", "--datacenter", "EU2"]), 2).says("kept 0 outbound entries"),
            case("check", "an output that fails while running", in_ns(topo, lan, &["check", "--set", &reach, "--timeout", "2", "--json", "/dev/full"]), 3).says("No space left on device"),
            // doctor
            case("doctor", "no check fails as root", in_ns(topo, gw, &["doctor", "--json"]), 0).json(),
            case("doctor", "no capabilities", doctor_unprivileged, 1),
            case("doctor", "an unknown interface", in_ns(topo, gw, &["doctor", "--iface", "nope0"]), 2).says("nope0"),
            case("doctor", "standard output full", in_ns(topo, gw, &["doctor"]), 3).out(Out::Full),
            // report
            case("report", "a log", here(&["report", &log, "--json"]), 0).json(),
            case("report", "a missing path", here(&["report", "/nonexistent/log.jsonl"]), 2).says("no such file or directory"),
            case("report", "standard output full", here(&["report", &log]), 3).out(Out::Full),
            // sets
            case("sets list", "the built-in sets", here(&["sets", "list"]), 0),
            case("sets list", "a missing file", here(&["sets", "list", "/nonexistent/set.json"]), 2).says("/nonexistent/set.json"),
            case("sets list", "standard output full", here(&["sets", "list"]), 3).out(Out::Full),
            case("sets show", "a selection", here(&["sets", "show", "--datacenter", "EU2", "--purpose", "portal", "--json"]), 0).json(),
            case("sets show", "an empty selection", here(&["sets", "show", "--set", "cas-2017-07", "--purpose", "auth-gateway"]), 2).says("nothing selected"),
            case("sets show", "standard output full", here(&["sets", "show"]), 3).out(Out::Full),
            case("sets diff", "the same set", here(&["sets", "diff", "cas-2019-11", "cas-2019-11", "--json"]), 0).json(),
            case("sets diff", "two versions", here(&["sets", "diff", "cas-2017-07", "cas-2019-11"]), 1),
            case("sets diff", "a missing set", here(&["sets", "diff", "cas-2019-11", "/nonexistent/set.json"]), 2),
            case("sets diff", "standard output full", here(&["sets", "diff", "cas-2017-07", "cas-2017-07"]), 3).out(Out::Full),
            case("sets export", "an allowlist", here(&["sets", "export", "--format", "nft"]), 0),
            case("sets export", "an --out path that cannot be created", here(&["sets", "export", "--format", "nft", "--out", "/nonexistent/x.nft"]), 2).says("creating /nonexistent/x.nft"),
            case("sets export", "standard output full", here(&["sets", "export", "--format", "ipset"]), 3).out(Out::Full),
            case("sets import", "a published page", here(&["sets", "import", &page, "--out", &dir.path("imported.json")]), 0),
            case("sets import", "a device as the page", here(&["sets", "import", "/dev/zero"]), 2).says("/dev/zero: it is a character device, not a regular file"),
            case("sets import", "standard output full", here(&["sets", "import", &page]), 3).out(Out::Full),
        ];

        let mut covered: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for c in cases {
            let shown = format!("{} ({}): {:?}", c.cmd, c.what, c.command);
            let done = finish(c.command, c.out, EXIT_TIMEOUT);
            assert_eq!(
                done.code, c.code,
                "{shown}\nstdout:\n{}\nstderr:\n{}",
                done.stdout, done.stderr
            );
            assert!(
                done.stderr.contains(c.says),
                "{shown}: stderr lacks {:?}:\n{}",
                c.says,
                done.stderr
            );
            if c.json {
                json_lines(&done.stdout, &shown);
            }
            let listed = table
                .get(c.cmd)
                .unwrap_or_else(|| panic!("{} not in the README's table", c.cmd));
            assert!(
                listed.contains(&c.code),
                "{shown}: exit {} not in the README for {}",
                c.code,
                c.cmd
            );
            covered.entry(c.cmd.to_string()).or_default().push(c.code);
        }
        server.stop();
        // Every code of every command was seen.
        for (cmd, codes) in &table {
            let seen = covered.get(cmd).cloned().unwrap_or_default();
            for code in codes {
                assert!(seen.contains(code), "no case of {cmd} exiting with {code}");
            }
        }
        // Nothing left attached or pinned by the refused starts.
        assert!(
            attached(topo).is_empty(),
            "programs left on the uplink: {:?}",
            attached(topo)
        );
        assert!(!Path::new(&pin).exists(), "{pin} left behind");
        assert!(
            !dir.0.join("not-bpffs").exists(),
            "a refused --pin created a directory"
        );
    });
}

// ---------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------

/// A FIFO, /dev/zero or a 2 GiB file as a set, a page or a log is refused
/// at once (exit 2, naming it), never read until memory or patience runs
/// out; `run` with such a set leaves nothing attached.
#[test]
fn unsafe_inputs_are_refused_at_once() {
    with_topology("unsafe_inputs_are_refused_at_once", &[CAS], |topo| {
        let dir = TempDir::new("cli");
        let fifo = dir.path("set.fifo");
        let c = std::ffi::CString::new(fifo.as_bytes()).expect("path");
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let big = dir.path("big.json");
        std::fs::File::create(&big)
            .and_then(|f| f.set_len(2 << 30))
            .expect("a sparse 2 GiB file");
        let up = Topology::GW_UPLINK;
        for (input, says) in [
            (fifo.as_str(), "it is a FIFO, not a regular file"),
            ("/dev/zero", "it is a character device, not a regular file"),
            (
                big.as_str(),
                "it is 2147483648 bytes (2.0 GiB); at most 64M is read",
            ),
        ] {
            let mut runs = vec![
                in_ns(topo, topo.gw(), &["run", "--iface", up, "--set", input]),
                here(&["sets", "show", "--set", input]),
                here(&["sets", "import", input]),
            ];
            // A large log is no error: report reads it as a stream.
            if input != big {
                runs.push(here(&["report", input]));
            }
            for cmd in runs {
                let shown = format!("{cmd:?}");
                let d = finish(cmd, Out::Pipe, REFUSED_WITHIN);
                assert_eq!(d.code, 2, "{shown}: {}", d.stderr);
                assert!(
                    d.stderr.contains(input) && d.stderr.contains(says),
                    "{shown}:\n{}",
                    d.stderr
                );
                assert!(d.elapsed < REFUSED_WITHIN, "{shown} took {:?}", d.elapsed);
            }
        }
        assert!(attached(topo).is_empty(), "{:?}", attached(topo));
    });
}

// ---------------------------------------------------------------------------
// One interface, one agent
// ---------------------------------------------------------------------------

/// A second agent on an interface the first watches is refused (exit 2)
/// before it attaches anything, and the first one counts every packet once.
#[test]
fn a_second_agent_on_one_interface_is_refused() {
    with_topology(
        "a_second_agent_on_one_interface_is_refused",
        &[CAS],
        |topo| {
            let up = Topology::GW_UPLINK;
            let first = agent_on_uplink(topo, &["--json", "-"], &[]);
            let second = finish(
                in_ns(topo, topo.gw(), &["run", "--iface", up, "--ingress", "tc"]),
                Out::Pipe,
                REFUSED_WITHIN,
            );
            assert_eq!(second.code, 2, "{}", second.stderr);
            assert!(
                second
                    .stderr
                    .contains("uplink is already watched by cas-audit (program ")
                    && second.stderr.contains("cas_tc_egress"),
                "{}",
                second.stderr
            );
            assert!(!second.stderr.contains("auditing "), "{}", second.stderr);
            assert_eq!(
                attached(topo),
                ["cas_tc_egress", "cas_tc_ingress"],
                "one agent's programs"
            );
            let dst = SocketAddr::new(CAS, 443);
            let sink = udp_sink(topo, topo.cloud(), dst).expect("sink");
            udp_send(topo, topo.lan(), None, dst, 5, 100).expect("sending");
            assert_eq!(sink.wait_for(5, Duration::from_secs(5)), 5);
            sink.stop();
            let run = first.stop();
            assert_eq!(run.code_or_signal(), 0, "{}", run.stderr);
            let summary: Value =
                serde_json::from_str(run.stdout.lines().last().expect("summary")).expect("JSON");
            assert_eq!(summary["matched"], 5, "counted once: {summary}");
            assert!(attached(topo).is_empty());
        },
    );
}

/// `--metrics` takes `:PORT` and host names; a port in use is exit 2
/// before anything is attached.
#[test]
fn metrics_addresses_and_a_port_in_use() {
    with_topology("metrics_addresses_and_a_port_in_use", &[CAS], |topo| {
        let up = Topology::GW_UPLINK;
        for (addr, scrape) in [
            (":19481", "127.0.0.1:19481"),
            ("localhost:19482", "127.0.0.1:19482"),
        ] {
            let agent = agent_on_uplink(topo, &["--metrics", addr], &[]);
            let target: SocketAddr = scrape.parse().expect("addr");
            let body = topo.in_ns(topo.gw(), move || {
                use std::io::Write;
                let mut c = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5))
                    .expect("connect");
                c.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                    .expect("request");
                let mut s = String::new();
                c.read_to_string(&mut s).expect("response");
                s
            });
            assert!(
                body.starts_with("HTTP/1.1 200 OK") && body.contains("cas_audit_address_set"),
                "{addr}: {body}"
            );
            let run = agent.stop();
            assert_eq!(run.code_or_signal(), 0, "{}", run.stderr);
        }
        // The port is taken: refused before attaching.
        let taken = topo.in_ns(topo.gw(), || {
            std::net::TcpListener::bind("127.0.0.1:19483").expect("bind")
        });
        let d = finish(
            in_ns(
                topo,
                topo.gw(),
                &["run", "--iface", up, "--metrics", "127.0.0.1:19483"],
            ),
            Out::Pipe,
            REFUSED_WITHIN,
        );
        drop(taken);
        assert_eq!(d.code, 2, "{}", d.stderr);
        assert!(
            d.stderr
                .contains("serving metrics on 127.0.0.1:19483: Address already in use"),
            "{}",
            d.stderr
        );
        assert!(attached(topo).is_empty());
    });
}

// ---------------------------------------------------------------------------
// Failure output
// ---------------------------------------------------------------------------

/// A reader that goes away ends the command quietly with 0 (as ripgrep
/// does), with nothing on standard error.
#[test]
fn a_closed_pipe_ends_quietly() {
    for args in [
        &["sets", "show"][..],
        &["sets", "export", "--format", "nft"],
        &["sets", "list"],
    ] {
        let d = finish(here(args), Out::Closed, EXIT_TIMEOUT);
        assert_eq!((d.code, d.stderr.as_str()), (0, ""), "{args:?}");
    }
}

/// Journal priorities: errors `<3>`, warnings `<4>`, without a timestamp;
/// `auto` picks them when standard error is the stream JOURNAL_STREAM names.
#[test]
fn journal_lines_carry_priorities() {
    let dir = TempDir::new("cli");
    let d = finish(
        here(&[
            "--log-format",
            "journal",
            "sets",
            "show",
            "--set",
            "/nonexistent/set.json",
        ]),
        Out::Pipe,
        EXIT_TIMEOUT,
    );
    assert_eq!(d.code, 2);
    assert!(
        d.stderr.starts_with(
            "<3>cas-audit: address set /nonexistent/set.json: cannot read the set file"
        ),
        "{}",
        d.stderr
    );
    let d = finish(
        here(&[
            "--log-format",
            "journal",
            "report",
            &dir.0.to_string_lossy(),
        ]),
        Out::Pipe,
        EXIT_TIMEOUT,
    );
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert!(
        d.stderr
            .starts_with("<4>no *.jsonl or *.jsonl.gz files in "),
        "{}",
        d.stderr
    );
    // auto: standard error is a file whose device and inode JOURNAL_STREAM names.
    let err_path = dir.0.join("stderr");
    let err_file = std::fs::File::create(&err_path).expect("stderr file");
    let meta = std::fs::metadata(&err_path).expect("stat");
    use std::os::unix::fs::MetadataExt;
    let st = Command::new(agent_bin())
        .args(["sets", "show", "--set", "/nonexistent/set.json"])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .status()
        .expect("running");
    assert_eq!(st.code(), Some(2));
    let text = std::fs::read_to_string(&err_path).expect("stderr");
    assert!(text.starts_with("<3>cas-audit: "), "{text}");
    // Without it (or another stream), text with the plain prefix.
    let d = finish(
        here(&["sets", "show", "--set", "/nonexistent/set.json"]),
        Out::Pipe,
        EXIT_TIMEOUT,
    );
    assert!(
        d.stderr.starts_with("cas-audit: address set "),
        "{}",
        d.stderr
    );
}

/// `-v` shows the agent's own debug lines but not aya's; `-vv` shows both.
#[test]
fn verbose_shows_our_decisions_before_library_internals() {
    with_topology(
        "verbose_shows_our_decisions_before_library_internals",
        &[CAS],
        |topo| {
            let up = Topology::GW_UPLINK;
            let lines = |v: &str| {
                let mut cmd = in_ns(
                    topo,
                    topo.gw(),
                    &[
                        v,
                        "run",
                        "--iface",
                        up,
                        "--ingress",
                        "tc",
                        "--duration",
                        "1",
                    ],
                );
                // Text lines: standard error is a pipe, not the journal.
                cmd.env_remove("RUST_LOG").env_remove("JOURNAL_STREAM");
                let d = finish(cmd, Out::Pipe, EXIT_TIMEOUT);
                assert_eq!(d.code, 0, "{}", d.stderr);
                let count = |target: &str| {
                    d.stderr
                        .lines()
                        .filter(|l| l.contains(&format!(" {target}")))
                        .count()
                };
                (count("aya"), count("cas_audit"), d.stderr)
            };
            let (aya, ours, text) = lines("-v");
            assert_eq!(aya, 0, "library lines at -v:\n{text}");
            assert!(
                ours > 0 && text.contains("DEBUG cas_audit"),
                "no debug line of ours at -v:\n{text}"
            );
            let (aya, _, text) = lines("-vv");
            assert!(aya > 0, "no library line at -vv:\n{text}");
        },
    );
}

/// Live lines carry the date, the time and the offset: local time (here
/// TZ=IST-5:30) by default, UTC with --utc.
#[test]
fn live_lines_show_date_time_and_zone() {
    with_topology("live_lines_show_date_time_and_zone", &[CAS], |topo| {
        for (extra, zone) in [(None, "+05:30"), (Some("--utc"), "+00:00")] {
            let extra: Vec<&str> = extra.into_iter().collect();
            let agent = agent_on_uplink(topo, &extra, &[("TZ", "IST-5:30")]);
            udp_send(topo, topo.lan(), None, SocketAddr::new(CAS, 8443), 1, 10).expect("sending");
            let run = agent.stop();
            let line = run
                .stdout
                .lines()
                .find(|l| l.contains("DISALLOWED-PORT"))
                .unwrap_or_else(|| panic!("no live line:\n{}", run.stdout));
            let (date, rest) = line.split_at(10);
            assert!(
                date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-',
                "{line}"
            );
            assert_eq!(&rest[9..15], zone, "{line}");
        }
    });
}

// ---------------------------------------------------------------------------
// report
// ---------------------------------------------------------------------------

/// `report -` reads standard input; a gzip-compressed log reads like the
/// plain one.
#[test]
fn report_reads_standard_input_and_gzip() {
    let dir = TempDir::new("cli");
    let log = dir.path("cas-audit-20261122T100000Z.jsonl");
    let rec = |port: u16, state: &str| {
        format!(
            r#"{{"type":"flow","ts":"2026-11-22T10:00:05.000000Z","reason":"expired","state":"{state}","iface":"uplink","proto":"udp","local_addr":"198.51.100.2","local_port":{port},"remote_addr":"13.64.196.27","remote_port":8443,"initiator":"unknown","first_packet":"out","service_port":8443,"prefix":"13.64.196.27/32","datacenters":["US1"],"purposes":["dlp"],"verdict":"disallowed-port","packets_out":2,"bytes_out":200,"packets_in":0,"bytes_in":0,"first_seen":"2026-11-22T10:00:00.000000Z","last_seen":"2026-11-22T10:00:01.000000Z"}}"#
        )
    };
    std::fs::write(
        &log,
        format!(
            "{}\n{}\n",
            rec(40001, "unanswered"),
            rec(40002, "unreachable")
        ),
    )
    .expect("log");
    let mut c = here(&["report", "-", "--json"]);
    c.stdin(std::fs::File::open(&log).expect("log"));
    let out = c.output().expect("report -");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (
            v["files"][0].as_str(),
            v["flows"].as_u64(),
            v["blocked_flows"].as_u64()
        ),
        (Some("standard input"), Some(2), Some(2))
    );
    assert_eq!(
        out.stdout.iter().filter(|b| **b == b'\n').count(),
        1,
        "compact: one line"
    );
    let st = Command::new("gzip").arg(&log).status().expect("gzip");
    assert!(st.success());
    let d = finish(
        here(&["report", &dir.0.to_string_lossy(), "--json"]),
        Out::Pipe,
        EXIT_TIMEOUT,
    );
    assert_eq!(d.code, 0, "{}", d.stderr);
    let v: Value = serde_json::from_str(&d.stdout).expect("JSON");
    assert_eq!(
        (v["flows"].as_u64(), v["records"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    assert!(
        v["files"][0].as_str().expect("file").ends_with(".jsonl.gz"),
        "{v}"
    );
}

// ---------------------------------------------------------------------------
// The flagged record's history
// ---------------------------------------------------------------------------

/// A bare SYN to a closed, disallowed port: the flagged record (built from
/// the kernel's first-packet event with the kernel's rule) says `S`, as
/// the packets do; the flow's final record says `Sr` (the refusing RST).
#[test]
fn flagged_record_history_of_a_bare_syn() {
    with_topology("flagged_record_history_of_a_bare_syn", &[CAS], |topo| {
        let agent = agent_on_uplink(topo, &["--json", "-"], &[]);
        let dst = SocketAddr::new(CAS, 8443);
        let refused = topo.in_ns(topo.lan(), move || {
            std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(3))
                .map(|_| ())
                .map_err(|e| e.kind())
        });
        assert_eq!(refused, Err(std::io::ErrorKind::ConnectionRefused));
        let run = agent.stop();
        assert_eq!(run.code_or_signal(), 0, "{}", run.stderr);
        let recs: Vec<Value> = run
            .stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
            .filter(|v| v["type"] == "flow" && v["remote_port"] == 8443)
            .collect();
        let reasons: Vec<(&str, &str, &str)> = recs
            .iter()
            .map(|r| {
                (
                    r["reason"].as_str().expect("reason"),
                    r["history"].as_str().expect("history"),
                    r["state"].as_str().expect("state"),
                )
            })
            .collect();
        assert_eq!(
            reasons.first(),
            Some(&("flagged", "S", "pending")),
            "{reasons:?}"
        );
        assert_eq!(
            reasons.last().map(|r| (r.1, r.2)),
            Some(("Sr", "refused")),
            "{reasons:?}"
        );
    });
}
