//! `cargo xtask bench`: builds the agent and the benchmark crate (release,
//! with the eBPF object), installs iperf3 and nftables when missing (Debian,
//! as root), then runs `cas-audit-bench`, which writes
//! `target/bench/results.json` and its section of BENCHMARKS.md (see
//! BENCHMARKS.md for the method). `--quick`: one short round of everything,
//! for CI's smoke run; it leaves BENCHMARKS.md alone.

use std::process::Command;

use anyhow::{bail, Result};

use crate::{build_agent, cargo, ensure_toolchain, run, target_dir};

/// Tools the throughput and agent benchmarks run, with their Debian packages.
const TOOLS: [(&str, &str); 2] = [("iperf3", "iperf3"), ("nft", "nftables")];

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs the missing tools with apt-get (Debian/Ubuntu).
fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(tool, _)| !have(tool))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !have("apt-get") {
        bail!(
            "the benchmarks need {}: install them (no apt-get here)",
            missing.join(", ")
        );
    }
    run(Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Runs the benchmarks; `label` names the BENCHMARKS.md section, `args`
/// go to `cas-audit-bench` as they are.
pub fn bench(quick: bool, label: &str, args: &[String]) -> Result<()> {
    if !cas_audit_tests::is_root() {
        bail!("the benchmarks load BPF programs and create network namespaces: run `cargo xtask bench` as root");
    }
    ensure_toolchain()?;
    ensure_tools()?;
    let agent = build_agent(true)?;
    run(cargo()
        .args(["build", "--release", "-p", "cas-audit-bench"])
        .env("CAS_AUDIT_EBPF", "require"))?;
    let mut c = Command::new(target_dir().join("release").join("cas-audit-bench"));
    c.arg("--agent").arg(&agent).args(["--label", label]);
    if quick {
        c.arg("--quick");
    }
    run(c.args(args))
}
