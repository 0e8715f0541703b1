//! `cargo xtask`: build, test, demo and lint cas-audit.
//!
//! - `cargo xtask [build]`: installs what is missing (nightly rust-src,
//!   bpf-linker 0.10.2), builds the eBPF object with nightly and the agent
//!   with stable: `target/release/cas-audit`, self-contained.
//! - `cargo xtask test`: unit tests, BPF_PROG_TEST_RUN tests and namespace
//!   tests with real traffic (needs root).
//! - `cargo xtask demo`: a throwaway three-namespace topology with simulated
//!   CAS endpoints, the agent on the gateway's uplink for about ten seconds
//!   against scripted allowed and disallowed traffic.
//! - `cargo xtask lint`: rustfmt, clippy for the agent and for the eBPF crate.
//! - `cargo xtask run -- ARGS`: builds and runs the agent.
//! - `cargo xtask dist`: the release binary, man pages, shell completions,
//!   the systemd unit and its default file in `target/dist/`, and the .deb
//!   of them all (cargo-deb).

mod bench;
mod demo;
mod dist;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

const BPF_LINKER_VERSION: &str = "0.10.2";
/// cargo-deb builds the .deb of `cargo xtask dist` (installed when missing).
const CARGO_DEB_VERSION: &str = "3.8.0";
const EBPF_TOOLCHAIN: &str = "nightly";

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, test and demo cas-audit")]
struct Cli {
    #[command(subcommand)]
    command: Option<Task>,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain if missing and build target/release/cas-audit.
    Build,
    /// Run every test: unit, BPF_PROG_TEST_RUN and namespace tests (needs root).
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the self-contained demo in throwaway network namespaces (needs root).
    Demo {
        /// How long the agent watches, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// rustfmt --check, clippy -D warnings for the agent and the eBPF crate.
    Lint,
    /// Benchmarks (needs root): ns per packet, throughput, the agent under
    /// load; writes target/bench/results.json and BENCHMARKS.md.
    Bench {
        /// One short round of everything (CI smoke run); leaves BENCHMARKS.md alone.
        #[arg(long)]
        quick: bool,
        /// Section of BENCHMARKS.md to write (e.g. before / after a change).
        #[arg(long, default_value = "latest")]
        label: String,
        /// Extra arguments for cas-audit-bench (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build the release binary and write target/dist/: the binary, man pages,
    /// shell completions, the systemd unit and its default file, and a .deb
    /// of them (cargo-deb, installed if missing).
    Dist,
    /// Build, then run the agent with ARGS.
    Run {
        /// Arguments for cas-audit.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Task::Build) {
        Task::Build => {
            ensure_toolchain()?;
            let bin = build_agent(true)?;
            println!("built {}", bin.display());
            Ok(())
        }
        Task::Test { args } => test(&args),
        Task::Demo { seconds } => {
            ensure_toolchain()?;
            let bin = build_agent(true)?;
            demo::run(&bin, seconds)
        }
        Task::Lint => lint(),
        Task::Bench { quick, label, args } => bench::bench(quick, &label, &args),
        Task::Dist => {
            ensure_toolchain()?;
            let bin = build_agent(true)?;
            let out = target_dir().join("dist");
            for f in dist::dist(&workspace(), &bin, &out)? {
                println!("{}", f.display());
            }
            println!("{}", deb(&out)?.display());
            Ok(())
        }
        Task::Run { args } => {
            ensure_toolchain()?;
            let bin = build_agent(true)?;
            let status = Command::new(&bin).args(&args).status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace());
    c
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let o = cmd.output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Installs the nightly rust-src component and bpf-linker when missing.
fn ensure_toolchain() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        EBPF_TOOLCHAIN,
        "--installed",
    ]))
    .context(
        "the nightly toolchain is needed for the eBPF build (rustup toolchain list shows none)",
    )?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ]))?;
    }
    let linker = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    cargo_install_unless(&linker, "bpf-linker", BPF_LINKER_VERSION)
}

/// `cargo install KRATE@VERSION --locked` unless `installed` (what the
/// tool says of its version) names that version.
fn cargo_install_unless(installed: &str, krate: &str, version: &str) -> Result<()> {
    if installed.contains(version) {
        return Ok(());
    }
    run(cargo().args(["install", &format!("{krate}@{version}"), "--locked"]))
}

/// Builds the .deb of the release binary and what `dist` staged in `out`
/// (cargo-deb, installed if missing); returns its path.
fn deb(out: &Path) -> Result<PathBuf> {
    // The package's assets name the staged files by their path in the
    // workspace (cas-audit/Cargo.toml, [package.metadata.deb]).
    if out != workspace().join("target").join("dist") {
        bail!(
            "the .deb is built from target/dist in the workspace; unset CARGO_TARGET_DIR ({})",
            out.display()
        );
    }
    let installed = output(cargo().args(["deb", "--version"])).unwrap_or_default();
    cargo_install_unless(&installed, "cargo-deb", CARGO_DEB_VERSION)?;
    let listing = output(
        cargo().args([
            "deb",
            "-p",
            "cas-audit",
            "--no-build",
            "--output",
            out.to_str()
                .context("a target directory that is not UTF-8")?,
        ]),
    )
    .context("cargo deb failed")?;
    let deb = listing
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .context("cargo deb printed no .deb path")?;
    Ok(PathBuf::from(deb.trim()))
}

/// Builds the agent with its eBPF object; returns the binary's path.
fn build_agent(release: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "-p", "cas-audit"])
        .env("CAS_AUDIT_EBPF", "require");
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir().join(profile).join("cas-audit"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

fn test(args: &[String]) -> Result<()> {
    if !cas_audit_tests::is_root() {
        bail!("the datapath and namespace tests load BPF programs and create network namespaces: run `cargo xtask test` as root");
    }
    ensure_toolchain()?;
    cas_audit_tests::cleanup_stale();
    let bin = build_agent(false)?;
    run(cargo()
        // The eBPF crate is built (for bpfel) by cas-audit's build script.
        .args(["test", "--workspace", "--exclude", "cas-audit-ebpf"])
        .args(args)
        .env("CAS_AUDIT_EBPF", "require")
        .env("CAS_AUDIT_BIN", &bin)
        .env(cas_audit_tests::REQUIRE_ROOT_ENV, "1"))
}

fn lint() -> Result<()> {
    ensure_toolchain()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo()
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            "cas-audit-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .env("CAS_AUDIT_EBPF", "require"))?;
    // The fuzz targets (a workspace of their own, fuzz/): formatting only.
    // CI builds them after the tests; their clippy run would check again
    // the ~25 dependencies whose features differ from the workspace's
    // (about 1.5 min on 2 cores), so it is run by hand (README).
    run(cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]))?;
    // The eBPF crate, for its own target.
    run(Command::new("rustup")
        .current_dir(workspace())
        .args([
            "run",
            EBPF_TOOLCHAIN,
            "cargo",
            "clippy",
            "-p",
            "cas-audit-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ])
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env("CARGO_TARGET_DIR", target_dir().join("ebpf-lint")))
}
