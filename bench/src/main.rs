//! `cas-audit-bench`: the benchmarks behind `cargo xtask bench`.
//!
//! 1. ns per packet through `BPF_PROG_TEST_RUN` ([`prog`]);
//! 2. TCP and UDP throughput over veth between namespaces ([`net`]);
//! 3. the real agent under load: events per second, CPU, memory ([`agent`]);
//! 4. importing published address data: Service Tags, pages, merges ([`import`]).
//! 5. `cas-audit report` on a generated million-record log ([`evidence`]).
//! 6. the agent's CPU per DNS answer it learns, or matches with nothing
//!    ([`learn`]).
//!
//! Writes `results.json` (and, unless `--quick`, the section of
//! BENCHMARKS.md named by `--label`). Needs root, an agent built with its
//! eBPF object, iperf3 and nft. Everything that touches the network runs in
//! network namespaces it creates and removes.

mod agent;
mod agentproc;
mod evidence;
mod import;
mod learn;
mod net;
mod prog;
mod report;
mod ring;
mod sets;
mod stats;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};

use crate::report::{Machine, Results};

#[derive(Parser)]
#[command(
    name = "cas-audit-bench",
    about = "Benchmarks of the cas-audit datapath and agent"
)]
struct Cli {
    /// One short round of everything (CI smoke run, under a minute); does
    /// not touch BENCHMARKS.md unless --markdown is given.
    #[arg(long)]
    quick: bool,
    /// The agent binary (default: target/release/cas-audit).
    #[arg(long, value_name = "PATH")]
    agent: Option<PathBuf>,
    /// Directory for results.json (default: target/bench).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Markdown file whose section --label is rewritten (default:
    /// BENCHMARKS.md at the workspace root).
    #[arg(long, value_name = "PATH")]
    markdown: Option<PathBuf>,
    /// Name of the run: its section in the Markdown file and its JSON file
    /// (results-LABEL.json besides results.json).
    #[arg(long, default_value = "latest")]
    label: String,
    /// Offered UDP rate of the throughput runs, Mbit/s.
    #[arg(long, default_value_t = 2000)]
    udp_mbps: u32,
    /// Parts to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    parts: Vec<Part>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// ns per packet through BPF_PROG_TEST_RUN.
    Prog,
    /// iperf3 throughput.
    Net,
    /// The event ring buffer with a bare consumer.
    Ring,
    /// The agent under load.
    Agent,
    /// The agent's CPU per DNS answer (learned, or matching no name).
    Learn,
    /// Importing published address data (needs ../shared/data).
    Import,
    /// `cas-audit report` on a generated log of a million records.
    Report,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .current_dir(workspace())
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}+changes")
            } else {
                rev
            }
        }
        None => "unknown".into(),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !cas_audit_tests::is_root() {
        bail!("the benchmarks load BPF programs and create network namespaces: run as root (cargo xtask bench)");
    }
    let parts = if cli.parts.is_empty() {
        vec![
            Part::Prog,
            Part::Ring,
            Part::Net,
            Part::Agent,
            Part::Learn,
            Part::Import,
            Part::Report,
        ]
    } else {
        cli.parts.clone()
    };
    let agent_bin = cli
        .agent
        .clone()
        .unwrap_or_else(|| workspace().join("target/release/cas-audit"));
    let needs_agent = [Part::Net, Part::Agent, Part::Learn, Part::Report];
    if parts.iter().any(|p| needs_agent.contains(p)) && !agent_bin.exists() {
        bail!(
            "agent binary {} not found (build it with `cargo xtask build`, or pass --agent)",
            agent_bin.display()
        );
    }
    let out_dir = cli
        .out
        .clone()
        .unwrap_or_else(|| workspace().join("target/bench"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    cas_audit_tests::cleanup_stale();
    let started = Instant::now();
    let date = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
        .unwrap_or_default();

    let prog = if parts.contains(&Part::Prog) {
        let cfg = if cli.quick {
            prog::Config {
                rounds: 1,
                repeat: 10_000,
                new_flows: 1_000,
            }
        } else {
            prog::Config {
                rounds: 5,
                repeat: 1_000_000,
                new_flows: 20_000,
            }
        };
        let set_list = vec![
            sets::builtin(),
            sets::synthetic(1_000),
            sets::synthetic(10_000),
            sets::synthetic(100_000),
        ];
        Some(prog::run(cfg, set_list)?)
    } else {
        None
    };

    let ring = if parts.contains(&Part::Ring) {
        if cli.quick {
            Some(ring::run(&[100_000], 0.5)?)
        } else {
            Some(ring::run(&[100_000, 200_000, 0], 3.0)?)
        }
    } else {
        None
    };

    let net = if parts.contains(&Part::Net) {
        let cfg = net::Config {
            rounds: if cli.quick { 1 } else { 5 },
            seconds: if cli.quick { 1 } else { 2 },
            udp_mbps: cli.udp_mbps,
            udp_len: 1200,
        };
        let ranges = sets::builtin().ranges;
        Some(net::run(cfg, &agent_bin, &ranges, &out_dir)?)
    } else {
        None
    };

    let agent = if parts.contains(&Part::Agent) {
        let ph = |name: &str, rate: u64, events: bool, seconds: f64| agent::Phase {
            name: name.into(),
            rate,
            events,
            seconds,
            ipfix: None,
        };
        let export = |rate: u64, on: bool, seconds: f64| agent::Phase {
            name: format!(
                "{rate} new flows/s, IPFIX {}",
                if on { "on" } else { "off" }
            ),
            rate,
            events: false,
            seconds,
            ipfix: Some(on),
        };
        let phases = if cli.quick {
            vec![
                ph("idle", 0, false, 1.0),
                ph("10,000 new allowed flows/s", 10_000, false, 1.0),
                ph("100,000 new flows/s with events", 100_000, true, 1.0),
                export(10_000, false, 1.0),
                export(10_000, true, 1.0),
            ]
        } else {
            vec![
                ph("idle", 0, false, 5.0),
                ph("10,000 new allowed flows/s", 10_000, false, 8.0),
                ph("10,000 new flows/s with events", 10_000, true, 8.0),
                ph("20,000 new flows/s with events", 20_000, true, 4.0),
                ph("25,000 new flows/s with events", 25_000, true, 4.0),
                ph("50,000 new flows/s with events", 50_000, true, 4.0),
                ph("75,000 new flows/s with events", 75_000, true, 4.0),
                ph("100,000 new flows/s with events", 100_000, true, 4.0),
                ph("200,000 new flows/s with events", 200_000, true, 4.0),
                export(10_000, false, 8.0),
                export(10_000, true, 8.0),
                export(100_000, false, 4.0),
                export(100_000, true, 4.0),
            ]
        };
        Some(agent::run(&agent_bin, &phases)?)
    } else {
        None
    };

    let learn = if parts.contains(&Part::Learn) {
        let ph = |name: &str, answers_per_s: u64, matching: bool, seconds: f64| learn::Phase {
            name: name.into(),
            answers_per_s,
            matching,
            seconds,
        };
        let (rounds, phases) = if cli.quick {
            let phases = vec![
                ph("idle", 0, false, 1.0),
                ph("500 answers/s, learned", 500, true, 1.0),
                ph("500 answers/s, no name of the set", 500, false, 1.0),
            ];
            (1, phases)
        } else {
            let phases = vec![
                ph("idle", 0, false, 4.0),
                ph("500 answers/s, learned", 500, true, 8.0),
                ph("2,000 answers/s, learned", 2_000, true, 4.0),
                ph("500 answers/s, no name of the set", 500, false, 8.0),
                ph("2,000 answers/s, no name of the set", 2_000, false, 4.0),
            ];
            (3, phases)
        };
        Some(learn::run(&agent_bin, &phases, rounds)?)
    } else {
        None
    };

    let import = if parts.contains(&Part::Import) {
        match import::data_dir(&workspace()) {
            Some(data) => {
                let bin = agent_bin.exists().then_some(agent_bin.as_path());
                Some(import::run(
                    &data,
                    bin,
                    &out_dir,
                    if cli.quick { 1 } else { 5 },
                )?)
            }
            None => {
                eprintln!("import: skipped, ../shared/data (the published files) is not beside the workspace");
                None
            }
        }
    } else {
        None
    };
    let evidence = if parts.contains(&Part::Report) {
        let cfg = if cli.quick {
            evidence::Config {
                records: 100_000,
                rounds: 1,
            }
        } else {
            evidence::Config {
                records: 1_000_000,
                rounds: 3,
            }
        };
        Some(evidence::run(&cfg, &agent_bin, &out_dir)?)
    } else {
        None
    };

    let mut targets = report::targets(prog.as_ref(), net.as_ref(), agent.as_ref(), import.as_ref());
    targets.extend(
        evidence
            .as_ref()
            .map(report::evidence_targets)
            .unwrap_or_default(),
    );
    let results = Results {
        schema: 1,
        label: cli.label.clone(),
        quick: cli.quick,
        date,
        revision: revision(),
        machine: Machine::probe(),
        prog,
        ring,
        net,
        agent,
        learn,
        import,
        evidence,
        targets,
        wall_s: started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_string_pretty(&results)?;
    let name = if cli.quick {
        "results-quick.json"
    } else {
        "results.json"
    };
    let path = out_dir.join(name);
    std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    std::fs::write(out_dir.join(format!("results-{}.json", cli.label)), &json)?;
    eprintln!("wrote {}", path.display());
    let md = report::markdown(&results);
    if !cli.quick || cli.markdown.is_some() {
        let md_path = cli
            .markdown
            .clone()
            .unwrap_or_else(|| workspace().join("BENCHMARKS.md"));
        report::write_markdown(&md_path, &results)?;
        eprintln!("updated section {:?} of {}", cli.label, md_path.display());
    }
    println!("{md}");
    Ok(())
}
