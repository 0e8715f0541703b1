//! What leaves the agent is safe whatever came in: output files are never
//! reached through a symbolic link and are created 0640; names from a set
//! file or a page (a quote, a line feed, terminal escape sequences, 2 MB)
//! stay inside their label on `/metrics` (checked by promtool), on one
//! line of the log, escaped on the terminal, and cut at 256 characters;
//! `/metrics` serves every kernel counter.
//!
//! `run` and `check` run inside the test's own lan / gw / cloud
//! namespaces; `sets` commands attach nothing and run here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cas_audit_common::Counter;
use serde_json::Value;

use cas_audit_tests::observers::{promtool_check, sample, scrape};
use cas_audit_tests::process::{
    agent_bin_str, agent_here as here, agent_in as in_ns, Process as Agent, EXIT_TIMEOUT,
};
use cas_audit_tests::scratch::TempDir;
use cas_audit_tests::traffic::{udp_send, udp_sink};
use cas_audit_tests::{with_topology, Topology};

/// A real CAS endpoint (US1 app connector), only on the cloud namespace's `lo`.
const CAS: IpAddr = IpAddr::V4(Ipv4Addr::new(13, 64, 196, 27));
/// Longest shown part of a name (`cas_audit::text::MAX_SHOWN`).
const MAX_SHOWN: usize = cas_audit::text::MAX_SHOWN;

/// Runs `cmd` to its end (stdin closed), failing after [`EXIT_TIMEOUT`].
fn run(mut cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    let pid = child.id() as libc::pid_t;
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(EXIT_TIMEOUT);
        // SAFETY: plain syscall; at worst the process has exited already.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let out = child.wait_with_output().expect("waiting");
    drop(watchdog);
    out
}

/// Exit code, standard output and standard error of a finished command.
fn done(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The permission bits of `p`.
fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The mode a file created with 0640 has under this process's umask
/// (inherited by the commands it starts; proc(5) `Umask:`).
fn created_mode() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|m| u32::from_str_radix(m.trim(), 8).expect("octal umask"))
        .expect("Umask: line");
    0o640 & !umask
}

/// A schema-1 set file at `path` named `name`: 13.64.196.27/32, US1
/// `purpose` on 443.
fn set_file(path: &Path, name: &str, purpose: &str) {
    let doc = serde_json::json!({
        "schema": 1,
        "name": name,
        "source": "test",
        "published": "2026-11-22",
        "entries": [{"prefix": "13.64.196.27/32", "datacenter": "US1", "purpose": purpose, "ports": [443]}],
    });
    std::fs::write(path, doc.to_string()).expect("set file");
}

/// A symbolic link planted where an output file goes makes the command
/// exit 2 naming it, its target untouched (the agent runs as root: the
/// target could be any file); a new file is created 0640, as the log
/// directory's files are.
#[test]
fn output_files_are_never_reached_through_a_link() {
    with_topology(
        "output_files_are_never_reached_through_a_link",
        &[CAS],
        |topo| {
            let dir = TempDir::new("safe-output");
            let victim = dir.0.join("victim");
            std::fs::write(&victim, "precious\n").expect("victim");
            std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600))
                .expect("chmod");
            let link = dir.path("link.jsonl");
            std::os::unix::fs::symlink(&victim, &link).expect("symlink");
            let set = dir.0.join("set.json");
            set_file(&set, "lab", "portal");
            let set = set.to_str().expect("UTF-8");
            let page = dir.0.join("page.md");
            std::fs::write(
                &page,
                "---\nms.date: 3/9/2024\n---\n# Portal access\n\n13.64.196.27\n",
            )
            .expect("page");
            let page = page.to_str().expect("UTF-8");
            let (gw, lan, up) = (topo.gw(), topo.lan(), Topology::GW_UPLINK);
            let says = "it is a symbolic link, which is not followed";
            // The agent on the uplink for one second.
            let run_1s = ["run", "--iface", up, "--ingress", "tc", "--duration", "1"];
            for cmd in [
                in_ns(topo, gw, &[&run_1s[..], &["--json", &link]].concat()),
                in_ns(
                    topo,
                    lan,
                    &["check", "--set", set, "--timeout", "1", "--json", &link],
                ),
                here(&["sets", "export", "--format", "nft", "--out", &link]),
                here(&["sets", "import", page, "--out", &link]),
            ] {
                let shown = format!("{cmd:?}");
                let (code, _, stderr) = done(&run(cmd));
                assert_eq!(code, 2, "{shown}: {stderr}");
                assert!(
                    stderr.contains(&format!("creating {link}: {says}")),
                    "{shown}: {stderr}"
                );
                assert_eq!(
                    std::fs::read_to_string(&victim).expect("victim"),
                    "precious\n",
                    "{shown}"
                );
                assert_eq!(mode(&victim), 0o600, "{shown}");
            }
            assert!(
                topo.tcx_programs(gw, up).is_empty(),
                "a refused start left programs attached"
            );

            let json = dir.0.join("run.jsonl");
            let logs = dir.0.join("logs");
            let outputs = [
                "--json",
                json.to_str().expect("UTF-8"),
                "--log-dir",
                logs.to_str().expect("UTF-8"),
            ];
            let (code, _, stderr) = done(&run(in_ns(topo, gw, &[&run_1s[..], &outputs].concat())));
            assert_eq!(code, 0, "{stderr}");
            assert!(std::fs::read_to_string(&json)
                .expect("run.jsonl")
                .contains("\"summary\""));
            assert_eq!(mode(&json), created_mode(), "--json file");
            let mut log_files = 0;
            for e in std::fs::read_dir(&logs).expect("log dir") {
                assert_eq!(
                    mode(&e.expect("entry").path()),
                    created_mode(),
                    "--log-dir file"
                );
                log_files += 1;
            }
            assert!(log_files > 0);
            let export = dir.0.join("allow.nft");
            let (code, _, stderr) = done(&run(here(&[
                "sets",
                "export",
                "--format",
                "nft",
                "--out",
                export.to_str().expect("UTF-8"),
            ])));
            assert_eq!(code, 0, "{stderr}");
            assert_eq!(mode(&export), created_mode(), "sets export --out");
        },
    );
}

/// A set named with a quote, line feeds, terminal escape sequences and
/// 2 MB of text: `/metrics` keeps it in its label, cut at 256 characters
/// (promtool parses the scrape, no forged sample appears) and serves
/// `cas_audit_datapath_<name>_total` for every kernel counter with the
/// summary's value; the log has it on one line, escaped and cut; `sets
/// show` and `sets list` print it escaped and cut; a page heading with
/// escape sequences reaches `sets import`'s report escaped.
#[test]
fn hostile_names_stay_in_their_medium() {
    with_topology("hostile_names_stay_in_their_medium", &[CAS], |topo| {
        let dir = TempDir::new("safe-output");
        let head = "lab\"} 1\ncas_audit_forged_total 1\n\x1b[2J\x1b]0;owned\x07\u{202e}";
        let name = format!("{head}{}", "x".repeat(2 << 20));
        let set = dir.0.join("hostile.json");
        set_file(&set, &name, "app-connector");
        let set = set.to_str().expect("UTF-8");
        // What every medium shows: the first 256 characters, then `…`.
        let cut: String = name.chars().take(MAX_SHOWN).collect();
        let visible = format!("{}…", cas_audit::text::one_line(&cut));

        let addr: SocketAddr = "127.0.0.1:19479".parse().expect("addr");
        let mut cmd = topo.command(topo.gw(), &agent_bin_str());
        cmd.args([
            "run",
            "--iface",
            Topology::GW_UPLINK,
            "--ingress",
            "tc",
            "--json",
            "-",
            "--set",
            set,
            "--metrics",
            "127.0.0.1:19479",
        ]);
        let agent = Agent::spawn(cmd);
        agent.wait_ready();
        // A sink, so that no ICMP error answers: 3 packets, all out.
        let sink = udp_sink(topo, topo.cloud(), SocketAddr::new(CAS, 8443)).expect("sink");
        udp_send(topo, topo.lan(), None, SocketAddr::new(CAS, 8443), 3, 10).expect("sending");
        // A poll of the datapath after the traffic.
        std::thread::sleep(Duration::from_millis(1500));
        let resp = scrape(topo, addr, None);
        let (status, body) = resp.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(status.starts_with("HTTP/1.1 200 OK"), "{status}");
        let exited = agent.stop();
        assert_eq!(sink.stop(), 3, "datagrams received");
        assert_eq!(exited.status.code(), Some(0), "{}", exited.stderr);

        promtool_check(body);
        assert!(
            !body.lines().any(|l| l.starts_with("cas_audit_forged")),
            "a forged sample:\n{body}"
        );
        let info: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("cas_audit_address_set{"))
            .collect();
        // Quote and line feeds escaped (the format's rules), the other
        // control characters written visibly, their `\` escaped in turn.
        let escaped_head =
            r#"lab\"} 1\ncas_audit_forged_total 1\n\\x1b[2J\\x1b]0;owned\\x07\\u{202e}"#;
        let xs = MAX_SHOWN - head.chars().count();
        let label = format!("{escaped_head}{}…", "x".repeat(xs));
        assert_eq!(
            info,
            [format!(
                "cas_audit_address_set{{set=\"{label}\",published=\"2026-11-22\"}} 1"
            )],
            "{body}"
        );
        assert!(body.len() < 64 << 10, "a scrape of {} bytes", body.len());

        // Every kernel counter is served, with the summary's value (no
        // packet crosses the uplink after the scrape but the odd IPv6
        // neighbour discovery, which `packets` alone counts).
        let summary: Value = exited
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["type"] == "summary")
            .unwrap_or_else(|| panic!("no summary:\n{}", exited.stdout));
        for c in Counter::ALL {
            let series = format!("cas_audit_datapath_{}_total", c.name());
            let served = sample(body, &series);
            let summed = summary[c.name()]
                .as_u64()
                .unwrap_or_else(|| panic!("{} in {summary}", c.name()));
            if c == Counter::Packets {
                assert!(
                    served <= summed && served > 0,
                    "{series} {served}, summary {summed}"
                );
            } else {
                assert_eq!(served, summed, "{series}");
            }
        }
        assert_eq!(summary["matched"].as_u64(), Some(3), "{summary}");

        // The log: one line per record, no control character, the name cut.
        let named: Vec<&str> = exited
            .stderr
            .lines()
            .filter(|l| l.contains("of set lab"))
            .collect();
        assert_eq!(named.len(), 1, "{}", exited.stderr);
        assert!(
            named[0].contains(&format!("of set {visible} on uplink")),
            "{}",
            named[0]
        );
        for l in exited.stderr.lines() {
            assert!(!l.contains(|c: char| c.is_control()), "{l:?}");
            assert!(l.len() < 4096, "a log line of {} bytes", l.len());
            assert!(!l.starts_with("cas_audit_forged"), "{l}");
        }

        // The terminal: `sets show` and `sets list`.
        for args in [&["sets", "show", "--set", set][..], &["sets", "list", set]] {
            let (code, stdout, stderr) = done(&run(here(args)));
            assert_eq!(code, 0, "{args:?}: {stderr}");
            assert!(
                !stdout.contains(['\x1b', '\x07', '\r', '\u{202e}']),
                "{args:?}: {stdout:?}"
            );
            assert!(stdout.len() < 16 << 10, "{args:?}: {} bytes", stdout.len());
            assert!(stdout.contains("lab\"} 1"), "{args:?}: {stdout}");
        }
        let (_, stdout, _) = done(&run(here(&["sets", "show", "--set", set])));
        assert!(
            stdout.contains(&format!("\n{visible}: 1 entries")),
            "{stdout}"
        );

        let page = dir.0.join("page.md");
        std::fs::write(
            &page,
            "---\nms.date: 3/9/2024\n---\n# Portal access \x1b[2J\x1b]0;owned\x07\n\n13.64.196.27\n",
        )
        .expect("page");
        let (code, _, stderr) = done(&run(here(&[
            "sets",
            "import",
            page.to_str().expect("UTF-8"),
        ])));
        assert_eq!(code, 0, "{stderr}");
        assert!(!stderr.contains(['\x1b', '\x07']), "{stderr:?}");
        assert!(
            stderr.contains("Portal access \\x1b[2J\\x1b]0;owned\\x07"),
            "{stderr}"
        );
    });
}
