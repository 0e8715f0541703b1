//! Results: the JSON document, the targets and the Markdown section of
//! BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::agent::AgentResults;
use crate::net::{Condition, NetResults};
use crate::prog::{Case, Hook, ProgResults};

/// The machine and the run.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// CPUs online.
    pub cpus: usize,
    /// Whether the CPU flags say "hypervisor".
    pub virtual_machine: bool,
    /// `uname -r`.
    pub kernel: String,
    /// Memory, MiB.
    pub mem_mib: u64,
}

impl Machine {
    /// Reads /proc.
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let virtual_machine = cpuinfo
            .lines()
            .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let mem_mib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024;
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            virtual_machine,
            kernel,
            mem_mib,
        }
    }
}

/// One target of the issue, judged.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What.
    pub name: String,
    /// Set (prog targets) or "" for the others.
    pub set: String,
    /// The limit, as written.
    pub limit: String,
    /// The measured value.
    pub measured: f64,
    /// Unit of `measured`.
    pub unit: String,
    /// Met or not; `None` when it could not be measured.
    pub met: Option<bool>,
    /// By how much it was missed (in `unit`), or the margin when met
    /// (negative: to spare).
    pub over: f64,
    /// Notes (e.g. why it could not be measured).
    pub note: String,
}

/// The whole document written to results.json.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Format version.
    pub schema: u32,
    /// Label of the run (section name in BENCHMARKS.md).
    pub label: String,
    /// `--quick`.
    pub quick: bool,
    /// UTC date and time.
    pub date: String,
    /// `git describe`-like revision of the tree measured.
    pub revision: String,
    /// The machine.
    pub machine: Machine,
    /// Part 1.
    pub prog: Option<ProgResults>,
    /// Part 3a: the ring buffer with a bare consumer.
    pub ring: Option<crate::ring::RingResults>,
    /// Part 2.
    pub net: Option<NetResults>,
    /// Part 3.
    pub agent: Option<AgentResults>,
    /// Part 3b: the agent's CPU per DNS answer.
    pub learn: Option<crate::learn::LearnResults>,
    /// Part 4.
    pub import: Option<crate::import::ImportResults>,
    /// Part 5: `cas-audit report` on a large log.
    pub evidence: Option<crate::evidence::EvidenceResults>,
    /// The targets.
    pub targets: Vec<Target>,
    /// Wall time of the run, seconds.
    pub wall_s: f64,
}

/// Judges the targets from whatever parts ran.
pub fn targets(
    prog: Option<&ProgResults>,
    net: Option<&NetResults>,
    agent: Option<&AgentResults>,
    import: Option<&crate::import::ImportResults>,
) -> Vec<Target> {
    let mut out = Vec::new();
    if let Some(p) = prog {
        let limits = [
            (Case::V4Miss, 15.0, "IPv4 miss"),
            (Case::V6Miss, 15.0, "IPv6 miss"),
            (Case::V4Hit, 150.0, "hit on an existing flow"),
            (Case::V4NewEvent, 500.0, "new flow with event"),
        ];
        for (case, limit, what) in limits {
            for hook in [Hook::Tc, Hook::Xdp] {
                for c in p
                    .cases
                    .iter()
                    .filter(|c| c.case_id == case && c.hook == hook)
                {
                    let d = c.delta_ns.median;
                    out.push(Target {
                        name: format!("{what}, {} (ns above empty)", hook_name(hook)),
                        set: c.set.clone(),
                        limit: format!("≤ {limit} ns"),
                        measured: d,
                        unit: "ns".into(),
                        met: Some(d <= limit),
                        over: d - limit,
                        note: String::new(),
                    });
                }
            }
        }
    }
    if let Some(n) = net {
        let cond = |c: Condition| n.conditions.iter().find(|r| r.condition == c);
        if let (Some(cas), Some(nft)) = (cond(Condition::CasAudit), cond(Condition::NftSet)) {
            let r = cas.tcp_ratio.median * 100.0;
            out.push(Target {
                name: "TCP throughput with cas-audit, % of no program".into(),
                set: "builtin".into(),
                limit: "≥ 95 %".into(),
                measured: r,
                unit: "%".into(),
                met: Some(r >= 95.0),
                over: 95.0 - r,
                note: String::new(),
            });
            // Per round: cas-audit / nftables.
            let per_round: Vec<f64> = cas
                .tcp_gbps
                .samples
                .iter()
                .zip(&nft.tcp_gbps.samples)
                .map(|(a, b)| a / b * 100.0)
                .collect();
            let m = crate::stats::Stat::of(per_round).median;
            out.push(Target {
                name: "TCP throughput with cas-audit, % of the nftables set".into(),
                set: "builtin".into(),
                limit: "≥ 100 %".into(),
                measured: m,
                unit: "%".into(),
                met: Some(m >= 100.0),
                over: 100.0 - m,
                note: format!(
                    "round-to-round spread of no program: {:.1} %",
                    spread_pct(&n.conditions[0].tcp_gbps)
                ),
            });
        }
    }
    if let Some(a) = agent {
        if let Some(ph) = a
            .phases
            .iter()
            .find(|p| p.phase.events && p.phase.rate == 100_000)
        {
            let reached = ph.sent_per_s >= 0.95 * ph.phase.rate as f64;
            out.push(Target {
                name: "ring-buffer events lost at 100,000 events/s".into(),
                set: "builtin".into(),
                limit: "0".into(),
                measured: ph.events_lost as f64,
                unit: "events".into(),
                met: reached.then_some(ph.events_lost == 0),
                over: ph.events_lost as f64,
                note: if reached {
                    format!(
                        "{} sent at {:.0}/s, {:.0} flagged records/s",
                        ph.sent, ph.sent_per_s, ph.flagged_per_s
                    )
                } else {
                    format!("the load generator reached only {:.0}/s", ph.sent_per_s)
                },
            });
        }
    }
    if let Some(i) = import {
        for c in i.cases.iter().filter(|c| {
            c.name.starts_with("Service Tags")
                || [crate::import::LONG_LINE_CASE, crate::import::NESTED_CASE]
                    .contains(&c.name.as_str())
        }) {
            let (m, how) = match &c.cli_ms {
                Some(cli) => (cli.median, "through the binary"),
                None => (c.ms.median, "in-process"),
            };
            out.push(Target {
                name: format!("sets import, {} ({:.1} MB)", c.name, c.bytes as f64 / 1e6),
                set: String::new(),
                limit: "well under 1 s (≤ 250 ms)".into(),
                measured: m,
                unit: "ms".into(),
                met: Some(m <= 250.0),
                over: m - 250.0,
                note: format!("{how}; {:.1} ms in-process", c.ms.median),
            });
        }
    }
    out
}

/// The targets of `report` on a million records: under 3 s and 200 MB
/// (judged on the plain file; met only when a million records were read).
pub fn evidence_targets(e: &crate::evidence::EvidenceResults) -> Vec<Target> {
    let Some(plain) = e.runs.iter().find(|r| r.input == "plain") else {
        return Vec::new();
    };
    let full = e.records >= 1_000_000;
    let note = if full {
        format!("{} records, {} flows", e.records, e.flows)
    } else {
        format!("only {} records (--quick)", e.records)
    };
    let (t, m) = (plain.wall_s.median, plain.rss_mib.median * 1.048_576);
    vec![
        Target {
            name: "report on 1,000,000 records: wall time".into(),
            set: String::new(),
            limit: "< 3 s".into(),
            measured: t,
            unit: "s".into(),
            met: full.then_some(t < 3.0),
            over: t - 3.0,
            note: note.clone(),
        },
        Target {
            name: "report on 1,000,000 records: peak memory".into(),
            set: String::new(),
            limit: "< 200 MB".into(),
            measured: m,
            unit: "MB".into(),
            met: full.then_some(m < 200.0),
            over: m - 200.0,
            note,
        },
    ]
}

fn spread_pct(s: &crate::stats::Stat) -> f64 {
    if s.median > 0.0 {
        (s.max - s.min) / s.median * 100.0
    } else {
        0.0
    }
}

fn hook_name(h: Hook) -> &'static str {
    match h {
        Hook::Tc => "TC",
        Hook::Xdp => "XDP",
    }
}

fn begin_marker(label: &str) -> String {
    format!("<!-- bench:begin {label} -->")
}

fn end_marker(label: &str) -> String {
    format!("<!-- bench:end {label} -->")
}

/// Replaces (or appends) the section of `label` in the Markdown file.
pub fn write_markdown(path: &Path, r: &Results) -> Result<()> {
    let section = markdown(r);
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# Benchmarks\n\nWritten by `cargo xtask bench`.\n".to_string()
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (b, e) = (begin_marker(&r.label), end_marker(&r.label));
    let new = match (old.find(&b), old.find(&e)) {
        (Some(i), Some(j)) if j > i => {
            format!("{}{}{}", &old[..i], section, &old[j + e.len()..])
        }
        _ => format!("{}\n{}\n", old.trim_end(), section),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

fn fmt_ns(v: f64) -> String {
    format!("{v:.0}")
}

fn fmt_delta(s: &crate::stats::Stat) -> String {
    format!("{:+.0} ({:+.0}…{:+.0})", s.median, s.min, s.max)
}

/// The generated section (between its markers).
pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(s, "{}", begin_marker(&r.label));
    let _ = writeln!(s, "## Results: {}\n", r.label);
    let _ = writeln!(
        s,
        "Generated by `cargo xtask bench{}` on {} — revision `{}`; {} ({} CPUs{}), \
         Linux {}, {} MiB; wall time {:.0} s.\n",
        if r.quick { " --quick" } else { "" },
        r.date,
        r.revision,
        m.cpu,
        m.cpus,
        if m.virtual_machine {
            ", virtual machine"
        } else {
            ""
        },
        m.kernel,
        m.mem_mib,
        r.wall_s
    );

    if !r.targets.is_empty() {
        let _ = writeln!(s, "### Targets\n");
        let verdict = |t: &Target| match t.met {
            Some(true) if t.over == 0.0 => "met".to_string(),
            Some(true) => format!("met ({:.1} to spare)", -t.over),
            Some(false) => format!("**missed by {:.1} {}**", t.over, t.unit),
            None => "not measured".to_string(),
        };
        // Per-packet targets: one row per target, one column per set.
        let prog: Vec<&Target> = r.targets.iter().filter(|t| t.unit == "ns").collect();
        if !prog.is_empty() {
            let mut sets: Vec<&str> = Vec::new();
            let mut names: Vec<&str> = Vec::new();
            for t in &prog {
                if !sets.contains(&t.set.as_str()) {
                    sets.push(&t.set);
                }
                if !names.contains(&t.name.as_str()) {
                    names.push(&t.name);
                }
            }
            let _ = writeln!(s, "| target | limit | {} |", sets.join(" | "));
            let _ = writeln!(s, "|---|---|{}", "---|".repeat(sets.len()));
            for name in names {
                let limit = prog
                    .iter()
                    .find(|t| t.name == name)
                    .map_or("", |t| t.limit.as_str());
                let cells: Vec<String> = sets
                    .iter()
                    .map(|set| {
                        prog.iter()
                            .find(|t| t.name == name && t.set == *set)
                            .map_or("–".into(), |t| {
                                format!("{:.0}: {}", t.measured, verdict(t))
                            })
                    })
                    .collect();
                let _ = writeln!(s, "| {name} | {limit} | {} |", cells.join(" | "));
            }
            s.push('\n');
        }
        let other: Vec<&Target> = r.targets.iter().filter(|t| t.unit != "ns").collect();
        if !other.is_empty() {
            let _ = writeln!(s, "| target | limit | measured | verdict |");
            let _ = writeln!(s, "|---|---|---|---|");
            for t in other {
                let note = if t.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", t.note)
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.1} {} | {}{} |",
                    t.name,
                    t.limit,
                    t.measured,
                    t.unit,
                    verdict(t),
                    note
                );
            }
            s.push('\n');
        }
    }

    if let Some(p) = &r.prog {
        let _ = writeln!(s, "### ns per packet through BPF_PROG_TEST_RUN\n");
        let _ = writeln!(
            s,
            "{} rounds; single-packet cases: repeat {}; new-flow cases: {} distinct \
             packets, one test run each. Medians over rounds; Δ = real − empty \
             (median of per-round differences, min…max). TC = `cas_tc_egress` on \
             local → CAS packets, XDP = `cas_xdp_ingress` on CAS → local packets.\n",
            p.config.rounds, p.config.repeat, p.config.new_flows
        );
        for set in &p.sets {
            let _ = writeln!(
                s,
                "**{}**: {} IPv4 + {} IPv6 prefixes; the prefilter passes {:.1} % of IPv4 \
                 and {:.1} % of IPv6 /16s; loaded in {:.2} s.\n",
                set.name,
                set.v4,
                set.v6,
                set.prefilter_fill_v4 * 100.0,
                set.prefilter_fill_v6 * 100.0,
                set.load_s
            );
            let _ = writeln!(
                s,
                "| case | TC empty | TC parse | TC real | TC Δ | XDP empty | XDP parse | XDP real | XDP Δ |"
            );
            let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|--:|");
            let mut seen: Vec<&str> = Vec::new();
            for c in p.cases.iter().filter(|c| c.set == set.name) {
                if seen.contains(&c.case.as_str()) {
                    continue;
                }
                seen.push(&c.case);
                let cell = |h: Hook| {
                    p.cases
                        .iter()
                        .find(|x| x.set == set.name && x.case == c.case && x.hook == h)
                        .map(|x| {
                            format!(
                                "{} | {} | {} | {}",
                                fmt_ns(x.empty_ns.median),
                                fmt_ns(x.parse_ns.median),
                                fmt_ns(x.real_ns.median),
                                fmt_delta(&x.delta_ns)
                            )
                        })
                        .unwrap_or_else(|| "– | – | – | –".into())
                };
                let lost = p
                    .cases
                    .iter()
                    .filter(|x| x.set == set.name && x.case == c.case)
                    .map(|x| x.events_lost)
                    .sum::<u64>();
                let note = if lost > 0 {
                    format!(" ({lost} events lost)")
                } else {
                    String::new()
                };
                let _ = writeln!(
                    s,
                    "| {}{} | {} | {} |",
                    c.case,
                    note,
                    cell(Hook::Tc),
                    cell(Hook::Xdp)
                );
            }
            s.push('\n');
        }
    }

    if let Some(n) = &r.net {
        let _ = writeln!(s, "### Throughput over veth (iperf3)\n");
        let _ = writeln!(
            s,
            "lan → gw → cloud namespaces, server on a CAS address; {} rounds of {} s per \
             test, conditions interleaved; UDP offered at {} Mbit/s in {}-byte datagrams. \
             Ratios are per round against no program, then medians. The nftables set \
             holds {} prefixes.\n",
            n.config.rounds, n.config.seconds, n.config.udp_mbps, n.config.udp_len, n.nft_elements
        );
        let _ = writeln!(
            s,
            "| condition | TCP Gbit/s | TCP vs none | TCP retransmits | UDP received Mbit/s | UDP lost | UDP vs none | packets matched |"
        );
        let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|");
        for c in &n.conditions {
            let _ = writeln!(
                s,
                "| {} | {:.2} ({:.2}…{:.2}) | {:.1} % | {:.0} | {:.0} | {:.2} % | {:.1} % | {} |",
                c.condition.name(),
                c.tcp_gbps.median,
                c.tcp_gbps.min,
                c.tcp_gbps.max,
                c.tcp_ratio.median * 100.0,
                c.tcp_retransmits.median,
                c.udp_rx_mbps.median,
                c.udp_loss_pct.median,
                c.udp_ratio.median * 100.0,
                if c.condition == Condition::None {
                    "–".to_string()
                } else {
                    c.matched_packets.to_string()
                }
            );
        }
        s.push('\n');
    }

    if let Some(rr) = &r.ring {
        let _ = writeln!(s, "### The event ring buffer alone\n");
        let _ = writeln!(
            s,
            "One thread test-runs `cas_tc_egress` on distinct new disallowed flows (one \
             event each), paced or as fast as it goes; another polls and drains the ring \
             buffer without processing the events. The ceiling of the kernel side.\n"
        );
        let _ = writeln!(s, "| offered/s | produced/s | consumed/s | lost |");
        let _ = writeln!(s, "|--:|--:|--:|--:|");
        for x in &rr.runs {
            let offered = if x.offered == 0 {
                "unpaced".to_string()
            } else {
                x.offered.to_string()
            };
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.0} | {} |",
                offered, x.produced_per_s, x.consumed_per_s, x.lost
            );
        }
        if let Some(x) = rr.runs.iter().find(|x| x.offered == 0) {
            let _ = writeln!(
                s,
                "\nUnpaced, the one producer thread (a test run per event) reached {:.0} \
                 events/s: past that the producer, not the ring buffer, is the limit.",
                x.produced_per_s
            );
        }
        let _ = writeln!(
            s,
            "\nReading the full flow table ({} flows) the way the agent does once a second \
             (`Datapath::flows`) took {:.0} ms.\n",
            rr.table_flows, rr.snapshot_ms
        );
    }

    if let Some(a) = &r.agent {
        let _ = writeln!(s, "### The agent under load\n");
        let _ = writeln!(
            s,
            "The real agent (`cas-audit run --iface uplink --ingress tc --json -`) on the \
             gateway; new flows injected at the gateway's TC ingress by a paced AF_PACKET \
             sender. CPU is percent of one core over the load; RSS at its end.\n"
        );
        let _ = writeln!(
            s,
            "| phase | offered/s | sent/s | seen by the datapath | flagged records/s | events lost | agent CPU | RSS MiB (peak) |"
        );
        let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|");
        for p in a.phases.iter().filter(|p| p.phase.ipfix.is_none()) {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {} | {:.0} | {} | {:.1} % | {:.1} ({:.1}) |",
                p.phase.name,
                p.phase.rate,
                p.sent_per_s,
                p.seen,
                p.flagged_per_s,
                p.events_lost,
                p.cpu_pct,
                p.rss_mib,
                p.rss_peak_mib
            );
        }
        let _ = writeln!(
            s,
            "\nHighest rate of new flows with events taken without loss: {} per second.\n",
            a.lossless_events_per_s
        );
        let exports: Vec<_> = a
            .phases
            .iter()
            .filter(|p| p.phase.ipfix.is_some())
            .collect();
        if !exports.is_empty() {
            let _ = writeln!(s, "#### IPFIX export on and off\n");
            let _ = writeln!(
                s,
                "The same load of new allowed flows, with `--idle-timeout 1 --max-flows 524288` \
                 so that flows are reported for good (and exported) while it lasts; with \
                 `--ipfix` to a UDP receiver in the cloud namespace. CPU is percent of one \
                 core over the load and the {:.1} s after it.\n",
                crate::agent::EXPORT_TAIL.as_secs_f64()
            );
            let _ = writeln!(
                s,
                "| phase | sent/s | flows reported | IPFIX flows sent | dropped | messages received | agent CPU | RSS MiB (peak) |"
            );
            let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|");
            for p in exports {
                let _ = writeln!(
                    s,
                    "| {} | {:.0} | {} | {} | {} | {} | {:.1} % | {:.1} ({:.1}) |",
                    p.phase.name,
                    p.sent_per_s,
                    p.flows_reported,
                    p.ipfix_sent,
                    p.ipfix_dropped,
                    p.ipfix_messages,
                    p.cpu_pct,
                    p.rss_mib,
                    p.rss_peak_mib
                );
            }
            let _ = writeln!(s);
        }
    }
    if let Some(l) = &r.learn {
        crate::learn::markdown(&mut s, l);
    }
    if let Some(i) = &r.import {
        let _ = writeln!(s, "### Importing published address data\n");
        let _ = writeln!(
            s,
            "{} rounds, medians (min…max). In-process: the library call `sets import` makes \
             (read, recognise, import, merge); binary: `cas-audit sets import FILE... --out \
             FILE` from start to exit.\n",
            i.rounds
        );
        let _ = writeln!(s, "| input | size | entries | in-process ms | binary ms |");
        let _ = writeln!(s, "|---|--:|--:|--:|--:|");
        let cell =
            |st: &crate::stats::Stat| format!("{:.1} ({:.1}…{:.1})", st.median, st.min, st.max);
        for c in &i.cases {
            let _ = writeln!(
                s,
                "| {} | {:.2} MB | {} | {} | {} |",
                c.name,
                c.bytes as f64 / 1e6,
                c.entries,
                cell(&c.ms),
                c.cli_ms.as_ref().map_or("–".into(), cell)
            );
        }
        s.push('\n');
    }
    if let Some(e) = &r.evidence {
        let _ = writeln!(s, "### `cas-audit report` on a large log\n");
        let _ = writeln!(
            s,
            "A generated log of {} flow records ({} flows from {} local hosts to the \
             built-in set's ranges, their records interleaved as a long run writes them; \
             written in {:.1} s), read by `cas-audit report FILE --top 10 --json`, plain \
             and compressed with `gzip -1`. Each run's flow count is checked. Peak memory \
             is the process's `ru_maxrss`; CPU is the user and system time of all its \
             threads (lines are parsed on every core).\n",
            e.records, e.flows, e.hosts, e.generate_s
        );
        let _ = writeln!(
            s,
            "| input | file MiB | wall s (min…max) | CPU s, all threads | peak RSS MiB | output bytes |"
        );
        let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|");
        for x in &e.runs {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.2} ({:.2}…{:.2}) | {:.2} | {:.1} | {} |",
                x.input,
                x.file_mib,
                x.wall_s.median,
                x.wall_s.min,
                x.wall_s.max,
                x.cpu_s.median,
                x.rss_mib.median,
                x.output_bytes
            );
        }
        s.push('\n');
    }
    let _ = writeln!(s, "{}", end_marker(&r.label));
    s
}
