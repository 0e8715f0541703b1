//! Privileged tests of `run --pin` and `cas-audit detach`: the kernel keeps
//! counting while the agent is down, even after SIGKILL, and a restarted
//! agent takes over without losing a packet.
//!
//! Each test mounts its own BPF filesystem on a temporary directory (so the
//! host's /sys/fs/bpf is untouched; `ip netns exec` would hide a mount made
//! there anyway), builds a lan / gw / cloud topology, runs the agent on the
//! gateway's uplink, and removes everything, even on failure.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use cas_audit_tests::process::{agent_bin_str, Process as Agent, EXIT_TIMEOUT};
use cas_audit_tests::scratch::Bpffs;
use cas_audit_tests::traffic::{udp_send, udp_sink};
use cas_audit_tests::{with_topology, Topology};

/// A real CAS endpoint (US1 app connector), only on the cloud namespace's `lo`.
const CAS: IpAddr = IpAddr::V4(Ipv4Addr::new(13, 64, 196, 27));
const CAS_PREFIX: &str = "13.64.196.27/32";

fn with_pin_bed(test: &str, f: impl FnOnce(&Topology, &Path)) {
    with_pin_bed_for(test, &[CAS], f)
}

fn with_pin_bed_for(test: &str, cloud: &[IpAddr], f: impl FnOnce(&Topology, &Path)) {
    with_topology(test, cloud, |topo| {
        let fs = Bpffs::mount(
            std::env::temp_dir().join(format!("cas-audit-{test}-{}", std::process::id())),
        );
        f(topo, &fs.0.join("cas-audit"));
    })
}

/// The agent in the gw namespace, pinned in `pin`, once it is ready.
fn start(topo: &Topology, pin: &Path, extra: &[&str]) -> Agent {
    let mut cmd = topo.command(topo.gw(), &agent_bin_str());
    cmd.args([
        "run",
        "--iface",
        Topology::GW_UPLINK,
        "--ingress",
        "tc",
        "--json",
        "-",
    ])
    .arg("--pin")
    .arg(pin)
    .args(extra);
    let agent = Agent::spawn(cmd);
    agent.wait_ready();
    agent
}

fn send(topo: &Topology, n: usize) {
    send_to(topo, CAS, n)
}

fn send_to(topo: &Topology, to: IpAddr, n: usize) {
    let dst = SocketAddr::new(to, 443);
    let sink = udp_sink(topo, topo.cloud(), dst).expect("sink");
    udp_send(topo, topo.lan(), None, dst, n, 100).expect("sending");
    assert_eq!(
        sink.wait_for(n, Duration::from_secs(5)),
        n,
        "datagrams that arrived"
    );
    sink.stop();
}

/// Waits for the agent to exit; returns (exit code or -signal, stdout, stderr).
fn finish(agent: Agent) -> (i32, String, String) {
    let run = agent.wait(EXIT_TIMEOUT);
    (run.code_or_signal(), run.stdout.clone(), run.stderr.clone())
}

fn summary(out: &str) -> Value {
    let last = out.lines().last().expect("a summary line");
    let v: Value = serde_json::from_str(last).expect("JSON");
    assert_eq!(v["type"], "summary", "{last}");
    v
}

fn range_packets_out(summary: &Value) -> u64 {
    packets_out_of(summary, CAS_PREFIX)
}

fn packets_out_of(summary: &Value, prefix: &str) -> u64 {
    summary["ranges"]
        .as_array()
        .expect("ranges")
        .iter()
        .find(|r| r["prefix"] == prefix)
        .map(|r| r["packets_out"].as_u64().expect("packets_out"))
        .unwrap_or(0)
}

fn agent(topo: &Topology, args: &[&str]) -> (i32, String, String) {
    let out = topo
        .command(topo.gw(), &agent_bin_str())
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

/// TCX programs attached to the gateway's uplink (egress + ingress), by
/// name.
fn attached_programs(topo: &Topology) -> Vec<String> {
    topo.tcx_programs(topo.gw(), Topology::GW_UPLINK)
}

#[test]
fn sigkill_restart_loses_no_packet() {
    with_pin_bed("sigkill_restart_loses_no_packet", |topo, pin| {
        let a = start(topo, pin, &[]);
        send(topo, 5);
        a.signal(libc::SIGKILL);
        let (code, ..) = finish(a);
        assert_eq!(code, -libc::SIGKILL);
        // Nobody is running: the pinned links keep the programs attached.
        assert_eq!(
            attached_programs(topo),
            ["cas_tc_egress", "cas_tc_ingress"],
            "egress and ingress stay attached"
        );
        send(topo, 7);
        // `status` reads the pinned datapath with no agent running.
        let (code, out, err) = agent(
            topo,
            &["status", "--pin", pin.to_str().expect("UTF-8"), "--json"],
        );
        assert_eq!(code, 0, "status: {err}");
        let st: Value = serde_json::from_str(&out).expect("status JSON");
        assert_eq!(st["counters"]["matched"], 12, "{st}");
        assert_eq!(st["ranges_v4"], 438, "{st}");
        assert_eq!(st["flow_capacity"], 65536, "{st}");
        let links: Vec<(String, String, bool)> = st["links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| {
                (
                    l["hook"].as_str().expect("hook").to_owned(),
                    l["program"].as_str().expect("program").to_owned(),
                    l["present"].as_bool().expect("present"),
                )
            })
            .collect();
        assert_eq!(
            links,
            [
                ("egress".to_owned(), "cas_tc_egress".to_owned(), true),
                ("ingress".to_owned(), "cas_tc_ingress".to_owned(), true)
            ],
            "{st}"
        );

        let b = start(topo, pin, &[]);
        send(topo, 3);
        b.signal(libc::SIGTERM);
        let (code, out, err) = finish(b);
        assert_eq!(code, 0, "stderr:\n{err}");
        assert!(
            err.contains("took over the pinned datapath"),
            "stderr:\n{err}"
        );
        assert!(err.contains("took over uplink"), "stderr:\n{err}");
        let s = summary(&out);
        assert_eq!(
            range_packets_out(&s),
            15,
            "5 before the kill, 7 while down, 3 after: {s}"
        );
        assert_eq!(s["matched"], 15, "{s}");

        // Still attached after a clean exit (one program per hook: the
        // takeover replaced, not added), until detach.
        assert_eq!(attached_programs(topo), ["cas_tc_egress", "cas_tc_ingress"]);
        let (code, out, err) = agent(topo, &["detach", "--pin", pin.to_str().expect("UTF-8")]);
        assert_eq!(code, 0, "detach: {err}");
        assert!(out.contains("removed link uplink egress"), "{out}");
        assert!(out.contains("removed link uplink ingress"), "{out}");
        assert!(out.contains("removed map CAS_FLOWS"), "{out}");
        assert!(!pin.exists(), "{} left behind", pin.display());
        assert!(
            attached_programs(topo).is_empty(),
            "programs left after detach"
        );
        // Detaching twice is harmless.
        let (code, out, _) = agent(topo, &["detach", "--pin", pin.to_str().expect("UTF-8")]);
        assert_eq!(code, 0);
        assert!(out.contains("nothing pinned"), "{out}");
    });
}

/// A takeover with another selection converges the pinned tries to it (a
/// restart after the set file changed, or with other filters, is a reload);
/// what the pinned maps cannot hold, or a layout from another version, is
/// refused with exit 2 and the reset hint.
#[test]
fn other_sets_are_taken_over_incompatible_state_is_refused() {
    with_pin_bed(
        "other_sets_are_taken_over_incompatible_state_is_refused",
        |topo, pin| {
            let pin_s = pin.to_str().expect("UTF-8");
            let run = |extra: &[&str]| {
                let mut args = vec!["run", "--iface", Topology::GW_UPLINK, "--pin", pin_s];
                args.extend_from_slice(extra);
                args.extend_from_slice(&["--duration", "1"]);
                agent(topo, &args)
            };
            // A pinned datapath for the built-in set...
            let a = start(topo, pin, &[]);
            a.signal(libc::SIGTERM);
            assert_eq!(finish(a).0, 0);
            let all = pinned_v4(pin);
            // An address an agent that died had learned from DNS (an entry
            // with the top range id, in the learned block), put there with
            // bpftool.
            let info = bpftool_map(&["show"], pin, "CAS_RANGE_STATS");
            let top = info["max_entries"].as_u64().expect("max_entries") as u32 - 1;
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:#04x}")).collect::<Vec<_>>();
            let mut key = 32u32.to_le_bytes().to_vec();
            key.extend([203, 0, 113, 200]);
            let mut value = top.to_le_bytes().to_vec();
            value.extend(0u32.to_le_bytes());
            let st = std::process::Command::new("bpftool")
                .args(["map", "update", "pinned"])
                .arg(pin.join("maps").join("CAS_RANGES_V4"))
                .arg("key")
                .args(hex(&key))
                .arg("value")
                .args(hex(&value))
                .status()
                .expect("bpftool");
            assert!(st.success());
            assert!(pinned_v4(pin).contains("203.0.113.200/32"));
            // ...is taken over for another selection of it: the tries then
            // hold that selection (bpftool reads them), without the learned
            // address, and the whole set again after the next restart.
            let (code, _, err) = run(&["--datacenter", "EU1"]);
            assert_eq!(code, 0, "stderr:\n{err}");
            assert!(
                err.contains("removed 1 learned addresses left in the pinned tries"),
                "stderr:\n{err}"
            );
            let eu1 = pinned_v4(pin);
            assert!(eu1.len() < all.len() && eu1.is_subset(&all), "{eu1:?}");
            assert!(
                err.contains(&format!(
                    "({} ranges of set cas-2019-11): +0 ranges, -{} ranges",
                    eu1.len(),
                    all.len() - eu1.len()
                )),
                "stderr:\n{err}"
            );
            let (code, _, err) = run(&[]);
            assert_eq!(code, 0, "stderr:\n{err}");
            assert_eq!(pinned_v4(pin), all);
            let (code, _, err) = agent(topo, &["detach", "--pin", pin_s]);
            assert_eq!(code, 0, "{err}");
            // The pinned maps keep the sizes they were made with: a set of
            // 2,000 ranges does not fit in those made for one (and 1,024
            // spare range ids).
            let tmp = cas_audit_tests::scratch::TempDir::new("pinning");
            let file = tmp.0.join("lab.json");
            let fs = file.to_str().expect("UTF-8");
            set_file(&file, &[CAS_PREFIX]);
            let (code, _, err) = run(&["--set", fs]);
            assert_eq!(code, 0, "stderr:\n{err}");
            let big: Vec<(String, &str)> = (0..2000)
                .map(|i| (format!("20.{}.{}.0/24", i / 256, i % 256), "portal"))
                .collect();
            write_set(&file, &big);
            let (code, _, err) = run(&["--set", fs]);
            assert_eq!(code, 2, "stderr:\n{err}");
            assert!(
                err.contains(&format!(
                    "the pinned datapath in {pin_s} cannot hold this set"
                )) && err.contains(&format!("cas-audit detach --pin {pin_s}")),
                "stderr:\n{err}"
            );
            assert_eq!(pinned_v4(pin).len(), 1, "the refused set left nothing");
            // A layout from another version is refused with the reset hint.
            std::fs::create_dir(pin.join("layout-v0")).expect("layout marker");
            let (code, _, err) = agent(
                topo,
                &[
                    "run",
                    "--iface",
                    Topology::GW_UPLINK,
                    "--pin",
                    pin_s,
                    "--duration",
                    "1",
                ],
            );
            assert_eq!(code, 2, "stderr:\n{err}");
            assert!(
                err.contains("has layout-v0, this cas-audit needs layout-v4-")
                    && err.contains(&format!("cas-audit detach --pin {pin_s}")),
                "stderr:\n{err}"
            );
            let (code, _, err) = agent(topo, &["detach", "--pin", pin_s]);
            assert_eq!(code, 0, "{err}");
            assert!(attached_programs(topo).is_empty());
            // Not a BPF filesystem.
            let plain =
                std::env::temp_dir().join(format!("cas-audit-plain-{}", std::process::id()));
            let (code, _, err) = agent(
                topo,
                &[
                    "run",
                    "--iface",
                    Topology::GW_UPLINK,
                    "--pin",
                    plain.to_str().expect("UTF-8"),
                    "--duration",
                    "1",
                ],
            );
            let _ = std::fs::remove_dir_all(&plain);
            assert_eq!(code, 2, "stderr:\n{err}");
            assert!(err.contains("is not on a BPF filesystem"), "stderr:\n{err}");
        },
    );
}

/// Under `ip netns exec` the agent runs in a mount namespace of its own
/// with a fresh /sys: a BPF filesystem mounted on /sys/fs/bpf there, by the
/// agent or by hand, dies with it, and so would the pins. `--pin` there is
/// refused with exit 2 and a hint, before anything is attached, and
/// `doctor` says so.
#[test]
fn pins_that_would_die_with_the_agent_are_refused() {
    with_topology(
        "pins_that_would_die_with_the_agent_are_refused",
        &[CAS],
        |topo| {
            let dir = format!("/sys/fs/bpf/cas-audit-test-{}", std::process::id());
            let (code, out, err) = agent(
                topo,
                &[
                    "run",
                    "--iface",
                    Topology::GW_UPLINK,
                    "--pin",
                    &dir,
                    "--duration",
                    "1",
                ],
            );
            assert_eq!(code, 2, "stderr:\n{err}");
            assert!(
                err.contains(&format!("pins in {dir} would not outlive cas-audit"))
                    && err.contains("ip netns exec")
                    && err.contains("mount -t bpf bpf /run/cas-audit-bpf"),
                "stderr:\n{err}"
            );
            assert!(!err.contains("keeps counting"), "stderr:\n{err}");
            assert!(out.is_empty(), "nothing audited: {out}");
            assert!(attached_programs(topo).is_empty());

            // A bpffs mounted by hand inside that namespace is refused too.
            let script = format!(
                "mount -t bpf bpf /sys/fs/bpf && exec {} run --iface {} --pin {dir} --duration 1",
                agent_bin_str(),
                Topology::GW_UPLINK
            );
            let out = topo
                .command(topo.gw(), "sh")
                .args(["-c", &script])
                .stdin(Stdio::null())
                .output()
                .expect("sh");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "stderr:\n{err}");
            assert!(err.contains("is not mounted outside it"), "stderr:\n{err}");
            assert!(attached_programs(topo).is_empty());

            // doctor tells it before anyone tries.
            let (_, out, err) = agent(topo, &["doctor"]);
            assert!(
                out.contains("pins under /sys/fs/bpf would not outlive the agent"),
                "stdout:\n{out}\nstderr:\n{err}"
            );
        },
    );
}

/// A set file with `prefixes` (US1 portal, port 443).
fn set_file(path: &Path, prefixes: &[&str]) {
    let e: Vec<(String, &str)> = prefixes.iter().map(|p| (p.to_string(), "portal")).collect();
    write_set(path, &e);
}

/// A pinned agent reloads a changed set (a range dropped, one added), is
/// killed, and a new agent with the new set takes over: the range ids the
/// reload left are kept, and every packet is counted.
#[test]
fn takeover_after_a_reload_keeps_the_range_ids() {
    const MAIL: IpAddr = IpAddr::V4(Ipv4Addr::new(65, 55, 234, 193));
    const SESSION: IpAddr = IpAddr::V4(Ipv4Addr::new(40, 81, 63, 1));
    with_pin_bed_for(
        "takeover_after_a_reload_keeps_the_range_ids",
        &[CAS, MAIL, SESSION],
        |topo, pin| {
            let file =
                std::env::temp_dir().join(format!("cas-audit-pin-set-{}.json", std::process::id()));
            set_file(&file, &[CAS_PREFIX, "65.55.234.192/26"]);
            let fs = file.to_str().expect("UTF-8");
            let a = start(topo, pin, &["--set", fs]);
            send_to(topo, MAIL, 2);
            send(topo, 4);
            set_file(&file, &[CAS_PREFIX, "40.81.63.1/32"]);
            // The file is polled once a second.
            a.wait_for_log("reloaded set lab", Duration::from_secs(10));
            send_to(topo, SESSION, 3);
            a.signal(libc::SIGKILL);
            finish(a);
            send(topo, 5);

            let b = start(topo, pin, &["--set", fs]);
            send_to(topo, SESSION, 1);
            b.signal(libc::SIGTERM);
            let (code, out, err) = finish(b);
            let _ = std::fs::remove_file(&file);
            assert_eq!(code, 0, "stderr:\n{err}");
            assert!(
                err.contains("took over the pinned datapath"),
                "stderr:\n{err}"
            );
            let s = summary(&out);
            assert_eq!(packets_out_of(&s, CAS_PREFIX), 9, "{s}");
            assert_eq!(packets_out_of(&s, "40.81.63.1/32"), 4, "{s}");
            // The dropped range's id keeps its counts, under no prefix.
            assert_eq!(
                packets_out_of(&s, "unknown (dropped before a restart)"),
                2,
                "{s}"
            );
            let (code, _, err) = agent(topo, &["detach", "--pin", pin.to_str().expect("UTF-8")]);
            assert_eq!(code, 0, "{err}");
        },
    );
}

/// `entries` (prefix, purpose) as a set file named `lab`, written whole
/// (a new file renamed over the old one: a reload never reads half of it).
fn write_set(path: &Path, entries: &[(String, &str)]) {
    let e: Vec<String> = entries
        .iter()
        .map(|(p, purpose)| {
            format!(r#"{{"prefix": "{p}", "datacenter": "US1", "purpose": "{purpose}"}}"#)
        })
        .collect();
    let tmp = path.with_extension("new");
    std::fs::write(
        &tmp,
        format!(
            "{{\"schema\": 1, \"name\": \"lab\", \"source\": \"test\", \"published\": \"2026-11-22\", \"entries\": [{}]}}\n",
            e.join(", ")
        ),
    )
    .expect("set file");
    std::fs::rename(&tmp, path).expect("renaming the set file");
}

/// `bpftool -j map CMD pinned PIN/maps/MAP`: its JSON.
fn bpftool_map(cmd: &[&str], pin: &Path, map: &str) -> Value {
    let map = pin.join("maps").join(map);
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map"])
        .args(cmd)
        .arg("pinned")
        .arg(&map)
        .output()
        .expect("running bpftool");
    assert!(
        out.status.success(),
        "bpftool map {cmd:?} {}: {}",
        map.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bpftool JSON")
}

/// The prefixes in the pinned IPv4 trie, as bpftool (not cas-audit) reads
/// them: each key is the prefix length (u32, little-endian) and 4 bytes of
/// address.
fn pinned_v4(pin: &Path) -> std::collections::BTreeSet<String> {
    let dump = bpftool_map(&["dump"], pin, "CAS_RANGES_V4");
    dump.as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let b: Vec<u8> = e["key"]
                .as_array()
                .expect("raw key bytes")
                .iter()
                .map(|x| {
                    u8::from_str_radix(x.as_str().expect("hex").trim_start_matches("0x"), 16)
                        .expect("hex byte")
                })
                .collect();
            let len = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
            format!("{}.{}.{}.{}/{len}", b[4], b[5], b[6], b[7])
        })
        .collect()
}

/// A swap journaled in the pin directory and not ended.
fn journaled(pin: &Path) -> bool {
    std::fs::read_dir(pin)
        .expect("pin directory")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("reload-"))
}

/// SIGKILL at several delays after SIGHUP with a changed set of 1,000
/// ranges (500 dropped, 500 added, 250 kept ones moved to other ports),
/// walking the delay over the swap until kills have landed inside it both
/// ways round, and one inside its trie writes: the pinned
/// trie (read by bpftool) then holds neither version. Every restart
/// succeeds, with the old set (the swap rolled back) and with the new one
/// (finished), leaves exactly its set in the trie, and the range both
/// versions list keeps every packet it counted.
#[test]
fn sigkill_inside_a_reload_then_restart_with_either_set() {
    const N: usize = 1000;
    with_pin_bed(
        "sigkill_inside_a_reload_then_restart_with_either_set",
        |topo, pin| {
            let tmp = cas_audit_tests::scratch::TempDir::new("pinning");
            let file = tmp.0.join("lab.json");
            let fs = file.to_str().expect("UTF-8").to_owned();
            let pin_s = pin.to_str().expect("UTF-8").to_owned();
            // Old: CAS and 999 /24s of 20.0.0.0/14; new: CAS, the first
            // 499 of them (half as dlp: port 11344) and 500 of 21.0.0.0/14.
            let net = |a: u8, i: usize| format!("{a}.{}.{}.0/24", i / 256, i % 256);
            let mut old = vec![(CAS_PREFIX.to_owned(), "portal")];
            old.extend((0..N - 1).map(|i| (net(20, i), "portal")));
            let mut new = vec![(CAS_PREFIX.to_owned(), "portal")];
            new.extend(
                (0..N / 2 - 1).map(|i| (net(20, i), if i % 2 == 0 { "dlp" } else { "portal" })),
            );
            new.extend((0..N / 2).map(|i| (net(21, i), "portal")));
            let prefixes = |v: &[(String, &str)]| -> std::collections::BTreeSet<String> {
                v.iter().map(|(p, _)| p.clone()).collect()
            };
            let (old_set, new_set) = (prefixes(&old), prefixes(&new));

            write_set(&file, &old);
            let mut a = start(topo, pin, &["--set", &fs]);
            send(topo, 3);
            let mut sent = 3;
            // The kill comes a delay after the swap's first write (its
            // journal appears in the pin directory just before): the delay
            // walks on while bpftool finds the old trie, back once it finds
            // the new one.
            let step = Duration::from_micros(400);
            let mut delay = Duration::ZERO;
            let (mut rolled_back, mut finished, mut torn, mut tried) = (0, 0, 0, Vec::new());
            for _ in 0..40 {
                if rolled_back > 0 && finished > 0 && torn > 0 {
                    break;
                }
                write_set(&file, &new);
                a.signal(libc::SIGHUP);
                let t = std::time::Instant::now();
                while !journaled(pin) && t.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_micros(50));
                }
                std::thread::sleep(delay);
                a.signal(libc::SIGKILL);
                assert_eq!(finish(a).0, -libc::SIGKILL);
                let trie = pinned_v4(pin);
                let journal = journaled(pin);
                tried.push((delay.as_micros(), trie.len(), journal));
                let (code, out, err) = agent(topo, &["status", "--pin", &pin_s, "--json"]);
                assert_eq!(code, 0, "status: {err}");
                let st: Value = serde_json::from_str(&out).expect("status JSON");
                assert_eq!(st["reload_unfinished"], journal, "{st}");
                // Inside the swap: the trie holds part of each version, or
                // the swap's journal is there (port bitmaps and prefilter
                // are written before the trie, and after it).
                let half = trie != old_set && trie != new_set;
                let inside = half || journal;
                torn += usize::from(half);
                if trie == new_set {
                    delay = delay.saturating_sub(step);
                } else if trie == old_set {
                    delay += step;
                }
                // Restart with the old set or the new one, in turn when
                // the kill landed inside the swap.
                let with_old = !inside || rolled_back <= finished;
                let (entries, want) = if with_old {
                    (&old, &old_set)
                } else {
                    (&new, &new_set)
                };
                write_set(&file, entries);
                let b = start(topo, pin, &["--set", &fs]);
                let err = b.stderr_now();
                assert!(err.contains("took over the pinned datapath"), "{err}");
                assert_eq!(pinned_v4(pin), *want, "after the restart ({tried:?})");
                assert!(!journaled(pin), "a journal left after the restart");
                if inside {
                    let said = if with_old {
                        rolled_back += 1;
                        "rolling it back"
                    } else {
                        finished += 1;
                        "finishing it"
                    };
                    assert!(
                        err.contains(&format!(
                            "stopped in the middle of a reload of the ranges in {}: {said}",
                            pin.display()
                        )),
                        "{err}"
                    );
                    for l in err.lines().filter(|l| l.contains("cas_audit::datapath")) {
                        println!("{l}");
                    }
                }
                send(topo, 1);
                sent += 1;
                a = if with_old {
                    b
                } else {
                    // Back to the old set for the next round: a takeover
                    // with another set converges too.
                    b.signal(libc::SIGTERM);
                    let (code, _, err) = finish(b);
                    assert_eq!(code, 0, "{err}");
                    write_set(&file, &old);
                    let c = start(topo, pin, &["--set", &fs]);
                    assert_eq!(pinned_v4(pin), old_set);
                    c
                };
            }
            println!("kills (µs after the swap began, ranges in the trie, journal): {tried:?}; rolled back {rolled_back}, finished {finished}, half-swapped tries {torn}");
            assert!(
                rolled_back > 0 && finished > 0 && torn > 0,
                "no kill landed inside the swap both ways, and one in the trie: {tried:?}"
            );
            a.signal(libc::SIGTERM);
            let (code, out, err) = finish(a);
            assert_eq!(code, 0, "{err}");
            let s = summary(&out);
            assert_eq!(
                range_packets_out(&s),
                sent,
                "every packet to the range both sets list: {s}"
            );
            let (code, _, err) = agent(topo, &["detach", "--pin", pin.to_str().expect("UTF-8")]);
            assert_eq!(code, 0, "{err}");
        },
    );
}

/// `GET /metrics` from inside the gw namespace with bash's /dev/tcp (a
/// client that is not ours): the body.
fn scrape(topo: &Topology, port: u16) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET /metrics HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3 && timeout 5 cat <&3"
    );
    let out = topo
        .command(topo.gw(), "bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    assert!(out.status.success(), "scrape: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of an unlabelled sample.
fn sample(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
        .trim()
        .parse()
        .expect("a number")
}

/// 200 new flows (one datagram each, from 200 source ports) into a table
/// of 64: the evictions are logged at once and served as
/// `cas_audit_flows_evicted_total`, equal to the summary's `flows_evicted`,
/// and every flow the sink received is reported or evicted. Then an agent
/// takes the pinned datapath over and runs with no traffic: it evicted
/// nothing (the flows the agent before created and reported are not its
/// evictions).
#[test]
fn evictions_are_logged_served_and_only_this_agents() {
    const FLOWS: u16 = 200;
    const PORT: u16 = 19479;
    with_pin_bed(
        "evictions_are_logged_served_and_only_this_agents",
        |topo, pin| {
            let metrics = format!("127.0.0.1:{PORT}");
            let a = start(
                topo,
                pin,
                &[
                    "--max-flows",
                    "64",
                    "--idle-timeout",
                    "1",
                    "--metrics",
                    &metrics,
                ],
            );
            let dst = SocketAddr::new(CAS, 443);
            let sink = udp_sink(topo, topo.cloud(), dst).expect("sink");
            for i in 0..FLOWS {
                let from = SocketAddr::new(Topology::LAN_ADDR4, 40000 + i);
                udp_send(topo, topo.lan(), Some(from), dst, 1, 100).expect("sending");
            }
            assert_eq!(
                sink.wait_for(FLOWS as usize, Duration::from_secs(5)),
                FLOWS as usize
            );
            let sources: std::collections::HashSet<SocketAddr> =
                sink.sources().into_iter().collect();
            assert_eq!(sources.len(), FLOWS as usize, "distinct flows the sink saw");
            sink.stop();
            a.wait_for_log(
                "flows evicted before they were reported",
                Duration::from_secs(5),
            );
            // Every flow expires (idle 1 s) and is reported; then the figures are final.
            std::thread::sleep(Duration::from_secs(3));
            let body = scrape(topo, PORT);
            let served = sample(&body, "cas_audit_flows_evicted_total");
            a.signal(libc::SIGTERM);
            let (code, out, err) = finish(a);
            assert_eq!(code, 0, "{err}");
            let s = summary(&out);
            let evicted = s["flows_evicted"].as_u64().expect("flows_evicted");
            println!(
                "table of 64, {FLOWS} flows: {} reported, {evicted} evicted (metric {served})",
                s["flows"]
            );
            assert!(evicted > 0, "a table of 64 held {FLOWS} flows? {s}");
            assert_eq!(served, evicted, "metric and summary");
            assert_eq!(
                s["flows"].as_u64().expect("flows") + evicted,
                u64::from(FLOWS),
                "{s}"
            );
            assert_eq!(s["flows_created"], u64::from(FLOWS), "{s}");
            let line = err
                .lines()
                .find(|l| l.contains("flows evicted before they were reported"))
                .expect("the eviction line");
            assert!(
                line.contains("the flow table (64 entries) is full"),
                "{line}"
            );
            assert!(line.contains("raise --max-flows"), "{line}");
            println!("{line}");

            // The next agent takes over: nothing new, nothing evicted.
            let b = start(topo, pin, &[]);
            std::thread::sleep(Duration::from_millis(1500));
            b.signal(libc::SIGTERM);
            let (code, out, err) = finish(b);
            assert_eq!(code, 0, "{err}");
            let s = summary(&out);
            assert_eq!(
                s["flows_created"],
                u64::from(FLOWS),
                "the pinned counter: {s}"
            );
            assert_eq!(s["flows"], 0, "{s}");
            assert_eq!(s["flows_evicted"], 0, "{s}");
            assert!(!err.contains("flows evicted"), "{err}");
            let (code, _, err) = agent(topo, &["detach", "--pin", pin.to_str().expect("UTF-8")]);
            assert_eq!(code, 0, "{err}");
        },
    );
}
