//! `cargo xtask dist`: what an operator installs, in `target/dist/`.
//!
//! ```text
//! target/dist/
//!   cas-audit                     the release binary (with its eBPF object)
//!   cas-audit.service             systemd unit (packaging/)
//!   cas-audit.default             /etc/default/cas-audit example (packaging/)
//!   man/man1/cas-audit.1          man pages, one per (sub)command
//!   man/man1/cas-audit-run.1 ...
//!   completions/cas-audit.bash    bash, zsh (_cas-audit) and fish completions
//!   completions/_cas-audit
//!   completions/cas-audit.fish
//!   deb/cas-audit.service         the unit of the .deb (binary in /usr/bin)
//!   cas-audit_VERSION-1_ARCH.deb  the Debian package (cargo-deb, `cargo xtask dist`)
//! ```
//!
//! The man pages and completions come from the agent's clap definitions
//! (`cas_audit::cli::command`, with the exit codes in each long help) with clap_mangen and clap_complete; the agent
//! binary itself does not carry those crates. xtask uses the cas-audit
//! library without its `ebpf` feature, so building xtask never builds the
//! eBPF object.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use clap_complete::{Generator, Shell};
use clap_mangen::{
    roff::{bold, roman, Roff},
    Man,
};

/// Name of the binary, the man pages and the completions.
const BIN: &str = "cas-audit";

/// Files copied from `packaging/`.
const PACKAGING: [&str; 2] = ["cas-audit.service", "cas-audit.default"];

/// Shells completions are written for.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes `out` afresh: the binary `bin`, the packaging files from
/// `workspace/packaging`, man pages and completions. Returns the files
/// written.
pub fn dist(workspace: &Path, bin: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    if out.exists() {
        fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    let dest = out.join(BIN);
    fs::copy(bin, &dest).with_context(|| format!("copying {}", bin.display()))?;
    written.push(dest);
    for f in PACKAGING {
        let src = workspace.join("packaging").join(f);
        let dest = out.join(f);
        fs::copy(&src, &dest).with_context(|| format!("copying {}", src.display()))?;
        written.push(dest);
    }
    written.extend(man_pages(&out.join("man").join("man1"))?);
    written.extend(completions(&out.join("completions"))?);
    written.push(deb_unit(workspace, &out.join("deb"))?);
    Ok(written)
}

/// Where the packaged binary lives, and where the tarball-style install
/// puts it (`packaging/cas-audit.service`).
const DEB_BIN: &str = "/usr/bin/cas-audit";
const LOCAL_BIN: &str = "/usr/local/bin/cas-audit";

/// Writes the .deb's systemd unit into `dir`: `packaging/cas-audit.service`
/// with the binary in /usr/bin (Debian policy) instead of /usr/local/bin.
fn deb_unit(workspace: &Path, dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let src = workspace.join("packaging").join("cas-audit.service");
    let unit = fs::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
    anyhow::ensure!(
        unit.contains(&format!("ExecStart={LOCAL_BIN} ")),
        "{} does not start {LOCAL_BIN}",
        src.display()
    );
    let dest = dir.join("cas-audit.service");
    fs::write(&dest, unit.replace(LOCAL_BIN, DEB_BIN))
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(dest)
}

/// Writes one man page per command and subcommand into `dir`.
pub fn man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = cas_audit::cli::command().disable_help_subcommand(true);
    // Sets the subcommands' display names (cas-audit-run, cas-audit-sets-list).
    cmd.build();
    let mut written = Vec::new();
    for (name, page) in render_pages(&cmd)? {
        let path = dir.join(format!("{name}.1"));
        fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// (page name, roff text) for `cmd` and each of its subcommands, depth first.
fn render_pages(cmd: &clap::Command) -> Result<Vec<(String, Vec<u8>)>> {
    let mut pages = Vec::new();
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    // clap_mangen's sections, with EXIT STATUS, FILES and SEE ALSO before
    // VERSION, in the usual order of a man page.
    let man = Man::new(cmd.clone()).source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut page)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut page)?;
    }
    extra_sections(&name).to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    pages.push((name, page));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.extend(render_pages(sub)?);
    }
    Ok(pages)
}

/// EXIT STATUS, FILES and SEE ALSO, which clap does not describe.
fn extra_sections(name: &str) -> Roff {
    let mut roff = Roff::default();
    let sub = name.strip_prefix("cas-audit-").unwrap_or("");
    // The one exit-code policy (cas_audit::error::EXIT_CODES), as the
    // command's --help ends with it.
    let codes = cas_audit::error::exit_codes(&sub.replace('-', " "));
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in &codes {
        roff.control("TP", []);
        roff.text([bold(code.to_string())]);
        roff.text([roman(meaning.as_str())]);
    }
    if matches!(sub, "" | "run") {
        roff.control("SH", ["FILES"]);
        for (file, what) in [
            (
                "/etc/default/cas-audit",
                "CAS_AUDIT_ARGS: the arguments of cas-audit run for the systemd unit",
            ),
            (
                "cas-audit.service",
                "the systemd unit: cas-audit run with only CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN",
            ),
            (
                "/var/log/cas-audit/",
                "the one directory the unit may write JSON lines to",
            ),
        ] {
            roff.control("TP", []);
            roff.text([bold(file)]);
            roff.text([roman(what)]);
        }
    }
    let see: &[&str] = match sub {
        "" => &["cas-audit-doctor(1)", "systemd.exec(5)"],
        "run" => &["cas-audit(1)", "cas-audit-doctor(1)", "systemd.exec(5)"],
        "check" => &["cas-audit(1)", "cas-audit-doctor(1)"],
        s if s.starts_with("sets-") => &["cas-audit(1)", "cas-audit-sets(1)"],
        _ => &["cas-audit(1)"],
    };
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(see.join(", "))]);
    roff
}

/// Writes the bash, zsh and fish completions into `dir`.
pub fn completions(dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = cas_audit::cli::command();
    SHELLS
        .into_iter()
        .map(|shell| {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, BIN, &mut text);
            let mut text = String::from_utf8(text).context("a completion that is not UTF-8")?;
            if shell == Shell::Bash {
                text = fix_bash(&text);
            }
            let path = dir.join(shell.file_name(BIN));
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        })
        .collect()
}

/// Works around clap_complete's bash script for a binary name with a
/// hyphen (clap_complete 4.6): the loop that follows the words names the
/// state after `cas-audit run` `cas__audit__subcmd__run`, but the cases
/// that complete it are labelled `cas__subcmd__audit__subcmd__run`, so
/// nothing after the subcommand completed. One name for both.
fn fix_bash(script: &str) -> String {
    let prefix = BIN.replace('-', "__");
    let mangled = BIN.replace('-', "__subcmd__");
    script.replace(&mangled, &prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("xtask-dist-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Roff source as text: `\-` is a plain hyphen.
    fn text(path: &Path) -> String {
        fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .replace("\\-", "-")
    }

    /// The public contract: every subcommand and every `run` flag (README).
    const SUBCOMMANDS: [&str; 4] = ["run", "check", "sets", "doctor"];
    const RUN_FLAGS: [&str; 11] = [
        "--iface",
        "--set",
        "--purpose",
        "--allow-port",
        "--datacenter",
        "--json",
        "--duration",
        "--ingress",
        "--idle-timeout",
        "--max-flows",
        "--answer-timeout",
    ];

    #[test]
    fn man_pages_cover_subcommands_and_run_flags() {
        let dir = Scratch::new("man");
        let pages = man_pages(&dir.0).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for page in [
            "cas-audit.1",
            "cas-audit-run.1",
            "cas-audit-check.1",
            "cas-audit-doctor.1",
            "cas-audit-sets.1",
            "cas-audit-sets-list.1",
            "cas-audit-sets-export.1",
        ] {
            assert!(names.iter().any(|n| n == page), "{page} not in {names:?}");
        }

        let main = text(&dir.0.join("cas-audit.1"));
        assert!(main.contains("\n.TH cas-audit 1 "), "{main}");
        // The subcommands the CLI defines, and the contract's.
        let cli = cas_audit::cli::command();
        let defined: Vec<&str> = cli.get_subcommands().map(|s| s.get_name()).collect();
        for sub in SUBCOMMANDS {
            assert!(defined.contains(&sub), "{sub} not a subcommand");
        }
        for sub in defined {
            assert!(
                main.contains(&format!("cas-audit-{sub}(1)")),
                "the main page does not mention {sub}:\n{main}"
            );
        }
        assert!(main.contains(".SH \"EXIT STATUS\""), "{main}");

        let run = text(&dir.0.join("cas-audit-run.1"));
        for flag in RUN_FLAGS {
            assert!(run.contains(flag), "the run page lacks {flag}:\n{run}");
        }
        // ... and whatever flags `run` has beyond the contract.
        let run_cmd = cli.find_subcommand("run").unwrap();
        for arg in run_cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                assert!(
                    run.contains(&format!("--{long}")),
                    "run page lacks --{long}"
                );
            }
        }
        assert!(run.contains("/etc/default/cas-audit"), "{run}");

        // Every page says every code its command returns, from the one policy.
        for (page, cmd, has_1) in [
            ("cas-audit-run.1", "run", false),
            ("cas-audit-check.1", "check", true),
            ("cas-audit-report.1", "report", false),
            ("cas-audit-status.1", "status", false),
            ("cas-audit-detach.1", "detach", false),
            ("cas-audit-doctor.1", "doctor", true),
            ("cas-audit-sets-diff.1", "sets diff", true),
            ("cas-audit-sets-show.1", "sets show", false),
        ] {
            let t = text(&dir.0.join(page));
            let section = &t[t.find(".SH \"EXIT STATUS\"").expect(page)..];
            let codes = cas_audit::error::exit_codes(cmd);
            assert_eq!(codes.iter().any(|(c, _)| *c == 1), has_1, "{page}");
            for (code, meaning) in codes {
                assert!(
                    section.contains(&format!("\\fB{code}\\fR")) && section.contains(&meaning),
                    "{page} lacks exit code {code} ({meaning}):\n{section}"
                );
            }
        }

        let doctor = text(&dir.0.join("cas-audit-doctor.1"));
        assert!(
            doctor.contains("--iface") && doctor.contains("--json"),
            "{doctor}"
        );
    }

    #[test]
    fn completions_know_the_flags() {
        let dir = Scratch::new("completions");
        let files = completions(&dir.0).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["cas-audit.bash", "_cas-audit", "cas-audit.fish"]);
        let bash = fs::read_to_string(dir.0.join("cas-audit.bash")).unwrap();
        assert!(bash.contains("--iface"), "{bash}");
        assert!(bash.contains("doctor"), "{bash}");
        let zsh = fs::read_to_string(dir.0.join("_cas-audit")).unwrap();
        assert!(zsh.starts_with("#compdef cas-audit"), "{zsh}");
        let fish = fs::read_to_string(dir.0.join("cas-audit.fish")).unwrap();
        assert!(fish.contains("-l iface"), "{fish}");
    }

    /// What bash itself completes for `words` (the last one being
    /// completed), with the generated script sourced.
    fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let cword = words.len() - 1;
        let prev = if cword > 0 { words[cword - 1] } else { "" };
        let code = format!(
            "source '{}'; COMP_WORDS=({}); COMP_CWORD={cword}; \
             _cas__audit cas-audit '{}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            quoted.join(" "),
            words[cword],
        );
        let out = std::process::Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &code])
            .output()
            .expect("running bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn bash_completes_after_the_subcommand() {
        let dir = Scratch::new("bash");
        completions(&dir.0).unwrap();
        let script = dir.0.join("cas-audit.bash");
        assert_eq!(bash_completes(&script, &["cas-audit", "ru"]), ["run"]);
        assert_eq!(
            bash_completes(&script, &["cas-audit", "run", "--ipf"]),
            ["--ipfix"]
        );
        assert_eq!(
            bash_completes(&script, &["cas-audit", "run", "--syslog-format", ""]),
            ["rfc5424", "cef"]
        );
        assert_eq!(
            bash_completes(&script, &["cas-audit", "sets", "export", "--format", "ip"]),
            ["iptables", "ipset"]
        );
        assert_eq!(
            bash_completes(&script, &["cas-audit", "report", "--sta"]),
            ["--state"]
        );
        // The script as clap_complete writes it completes nothing there.
        let raw = dir.0.join("raw.bash");
        let mut text = Vec::new();
        clap_complete::generate(Shell::Bash, &mut cas_audit::cli::command(), BIN, &mut text);
        fs::write(&raw, text).unwrap();
        assert!(bash_completes(&raw, &["cas-audit", "run", "--ipf"]).is_empty());
    }

    #[test]
    fn dist_tree() {
        let dir = Scratch::new("tree");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        // Any file stands in for the release binary here.
        let fake_bin = dir.0.join("fake-bin");
        fs::write(&fake_bin, b"#!/bin/sh\n").unwrap();
        let out = dir.0.join("dist");
        fs::create_dir_all(out.join("stale")).unwrap();
        let files = dist(workspace, &fake_bin, &out).unwrap();
        assert!(!out.join("stale").exists());
        for f in [
            "cas-audit",
            "cas-audit.service",
            "cas-audit.default",
            "man/man1/cas-audit.1",
            "man/man1/cas-audit-run.1",
            "completions/cas-audit.bash",
            "completions/_cas-audit",
            "completions/cas-audit.fish",
            "deb/cas-audit.service",
        ] {
            assert!(out.join(f).is_file(), "{f} missing");
            assert!(files.contains(&out.join(f)), "{f} not reported");
        }
        let unit = fs::read_to_string(out.join("cas-audit.service")).unwrap();
        assert!(unit.contains("ExecStart=/usr/local/bin/cas-audit run $CAS_AUDIT_ARGS"));
        let deb = fs::read_to_string(out.join("deb/cas-audit.service")).unwrap();
        assert!(deb.contains("ExecStart=/usr/bin/cas-audit run $CAS_AUDIT_ARGS"));
        assert!(!deb.contains("/usr/local/bin"));
    }
}
