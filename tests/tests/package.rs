//! The Debian package of `cargo xtask dist`, installed for real with
//! `dpkg -i` (then purged): the binary runs, the man pages are found by
//! `man`, bash completes after the subcommand from the installed script,
//! `/etc/default/cas-audit` is a conffile and the unit is installed but
//! neither enabled nor started.
//!
//! Runs when `CAS_AUDIT_DEB` names the .deb (`.ci/run` builds it with
//! `cargo xtask dist` and sets it); under CI (`CI=true`) without it, the
//! test fails instead of skipping. It installs into this machine (as
//! root): it refuses to run if a cas-audit package is already installed.

use std::path::Path;
use std::process::{Command, Output};

fn run(prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {prog}: {e}"))
}

fn ok(prog: &str, args: &[&str]) -> String {
    let out = run(prog, args);
    assert!(
        out.status.success(),
        "{prog} {args:?}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package when the test ends, whatever happened.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let out = run("dpkg", &["--purge", "cas-audit"]);
        if !out.status.success() {
            eprintln!(
                "dpkg --purge cas-audit failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn deb_installs_with_dpkg_and_works() {
    let Some(deb) = std::env::var_os("CAS_AUDIT_DEB") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must test the .deb: set CAS_AUDIT_DEB (cargo xtask dist builds it)"
        );
        eprintln!("SKIPPED deb_installs_with_dpkg_and_works: CAS_AUDIT_DEB is not set");
        return;
    };
    if !cas_audit_tests::require_root("deb_installs_with_dpkg_and_works") {
        return;
    }
    let deb = Path::new(&deb);
    assert!(deb.is_file(), "{} is not a file", deb.display());
    assert!(
        !run("dpkg", &["-s", "cas-audit"]).status.success(),
        "a cas-audit package is already installed here: this test would replace it"
    );
    let info = ok(
        "dpkg-deb",
        &["-f", deb.to_str().unwrap(), "Package", "Version"],
    );
    assert!(info.contains("Package: cas-audit"), "{info}");

    ok("dpkg", &["-i", deb.to_str().unwrap()]);
    let _installed = Installed;

    let version = ok("/usr/bin/cas-audit", &["--version"]);
    assert_eq!(
        version.trim(),
        format!("cas-audit {}", env!("CARGO_PKG_VERSION"))
    );
    for page in ["cas-audit", "cas-audit-run", "cas-audit-sets-export"] {
        let path = ok("man", &["-w", page]);
        assert_eq!(
            path.trim(),
            format!("/usr/share/man/man1/{page}.1.gz"),
            "man -w {page}"
        );
    }
    // bash-completion loads completions/cas-audit for the command cas-audit.
    let words = "COMP_WORDS=(cas-audit run --syslog-f); COMP_CWORD=2";
    let completed = ok(
        "bash",
        &[
            "--norc",
            "-c",
            &format!(
                "source /usr/share/bash-completion/completions/cas-audit; {words}; \
                 _cas__audit cas-audit --syslog-f run; echo \"${{COMPREPLY[@]}}\""
            ),
        ],
    );
    assert_eq!(completed.trim(), "--syslog-format");

    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "cas-audit"]);
    assert!(conffiles.contains("/etc/default/cas-audit"), "{conffiles}");
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/cas-audit.service")
        .expect("the unit is installed");
    assert!(unit.contains("ExecStart=/usr/bin/cas-audit run $CAS_AUDIT_ARGS"));
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/cas-audit.service").exists(),
        "the package enabled the unit"
    );
    for f in [
        "/usr/share/cas-audit/grafana/cas-audit.json",
        "/usr/share/cas-audit/cas-audit-run.schema.json",
        "/usr/share/zsh/vendor-completions/_cas-audit",
        "/usr/share/fish/vendor_completions.d/cas-audit.fish",
    ] {
        assert!(Path::new(f).is_file(), "{f} not installed");
    }
    drop(_installed);
    assert!(
        !Path::new("/usr/bin/cas-audit").exists(),
        "dpkg --purge left the binary"
    );
    assert!(
        !Path::new("/etc/default/cas-audit").exists(),
        "dpkg --purge left the conffile"
    );
}
