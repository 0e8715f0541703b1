//! Builds the eBPF object (`cas-audit-ebpf`, nightly, bpfel) and leaves it in
//! `OUT_DIR/cas-audit-ebpf` for the agent to embed.
//!
//! `CAS_AUDIT_EBPF` selects what happens:
//! - unset / `auto`: build it when the toolchain is there (nightly with
//!   rust-src, bpf-linker), otherwise embed an empty stub and warn, so that
//!   `cargo check` and clippy work without the eBPF toolchain;
//! - `require`: build it or fail (what `cargo xtask` uses);
//! - `stub`: never build it.
//!
//! Without the crate's `ebpf` feature (on by default) the stub is always
//! used: xtask depends on the library for its CLI definitions only.
//!
//! A binary with the stub refuses to attach with a message saying how to
//! build the real object.

use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{bail, Context as _};

const EBPF_PACKAGE: &str = "cas-audit-ebpf";

fn main() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(ebpf_stub)");
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir.parent().context("workspace root")?;
    let common = workspace.join("cas-audit-common");
    println!("cargo:rerun-if-changed={}", common.display());

    // Without the `ebpf` feature (a tool that only needs the library's
    // definitions), never build the object.
    let mode = if env::var_os("CARGO_FEATURE_EBPF").is_some() {
        println!("cargo:rerun-if-env-changed=CAS_AUDIT_EBPF");
        env::var("CAS_AUDIT_EBPF").unwrap_or_default()
    } else {
        "stub".to_string()
    };
    let build = match mode.as_str() {
        "stub" => false,
        "require" => true,
        "" | "auto" => match missing_toolchain() {
            None => true,
            Some(why) => {
                println!("cargo:warning=building cas-audit without its eBPF object ({why}); run `cargo xtask build` for a working binary");
                false
            }
        },
        other => bail!("CAS_AUDIT_EBPF={other}: expected auto, require or stub"),
    };

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join(EBPF_PACKAGE);
    if !build {
        println!("cargo:rustc-cfg=ebpf_stub");
        fs::write(&object, []).context("writing the stub object")?;
        return Ok(());
    }
    if let Some(why) = missing_toolchain() {
        bail!("CAS_AUDIT_EBPF=require but {why}; run `cargo xtask build`, which installs it");
    }
    let root = workspace.join(EBPF_PACKAGE);
    let root = root.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

/// Why the eBPF toolchain is unusable, if it is.
fn missing_toolchain() -> Option<String> {
    let linker = Command::new("bpf-linker").arg("--version").output();
    if !matches!(linker, Ok(ref o) if o.status.success()) {
        return Some("bpf-linker not found".into());
    }
    let src = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output();
    match src {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("rust-src")) =>
        {
            None
        }
        _ => Some("the nightly toolchain with rust-src is not installed".into()),
    }
}
