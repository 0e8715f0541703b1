//! The firewall exports, loaded by the real tools.
//!
//! Every validation that loads rules (`nft -c -f` / `nft -f`,
//! `iptables-restore --test` / `--noflush`, `ipset restore`) runs inside a
//! network namespace created by the test (`ip netns add`) and deleted again
//! when the test ends, even when it fails; nothing touches the root
//! namespace. What is loaded is listed back and compared element by element
//! with the prefixes the test expects, computed here independently of the
//! exporter: per (direction, family, ports) group, the distinct prefixes
//! (truncated) that no other prefix of the group covers.
//!
//! The tests need root and `nft`, `iptables`, `iptables-restore` and
//! `ipset`; without them each one prints SKIPPED, or fails when
//! `CAS_AUDIT_REQUIRE_ROOT` is set (as in CI).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use cas_audit::addrset::export::{export, ExportFormat};
use cas_audit::addrset::import::load_input;
use cas_audit::addrset::{AddressSet, Connection, DataCenter};
use cas_audit_tests::{netns_command, require_root, shared_data, NS_PREFIX, REQUIRE_ROOT_ENV};
use ipnet::IpNet;

// ---------------------------------------------------------------------------
// Preconditions, namespaces, commands
// ---------------------------------------------------------------------------

/// The absolute path of `tool` (searching `PATH` and the sbin directories,
/// which a non-login root shell may lack).
fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// The tools' paths, in the order asked for, when running as root with all
/// of them installed; otherwise `None` after printing SKIPPED, or a panic
/// when `CAS_AUDIT_REQUIRE_ROOT` is set.
fn require_tools(test: &str, tools: &[&str]) -> Option<Vec<PathBuf>> {
    if !require_root(test) {
        return None;
    }
    let found: Vec<Option<PathBuf>> = tools.iter().map(|t| find_tool(t)).collect();
    let missing: Vec<&str> = tools
        .iter()
        .zip(&found)
        .filter(|(_, p)| p.is_none())
        .map(|(t, _)| *t)
        .collect();
    if missing.is_empty() {
        return Some(found.into_iter().flatten().collect());
    }
    let missing = missing.join(", ");
    if std::env::var_os(REQUIRE_ROOT_ENV).is_some() {
        panic!(
            "{test} needs {missing} (apt-get install nftables iptables ipset) \
             and {REQUIRE_ROOT_ENV} is set"
        );
    }
    eprintln!("SKIPPED {test}: {missing} not installed (apt-get install nftables iptables ipset)");
    None
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A bare network namespace (`casa{pid}n{k}-export`, so that the test bed's
/// stale-namespace sweep recognises it), deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "{NS_PREFIX}{}n{}-export",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .stdin(Stdio::null())
            .output()
            .expect("running ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns { name }
    }

    /// Runs `tool ARGS` in the namespace with `input` on stdin; panics with
    /// its stderr unless it succeeds; returns its stdout.
    fn run(&self, tool: &Path, args: &[&str], input: Option<&str>) -> String {
        let out = self.try_run(tool, args, input);
        assert!(
            out.status.success(),
            "`{} {}` in {} failed ({}): {}",
            tool.display(),
            args.join(" "),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    fn try_run(&self, tool: &Path, args: &[&str], input: Option<&str>) -> std::process::Output {
        let mut cmd = netns_command(&self.name, &tool.to_string_lossy());
        cmd.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning ip netns exec");
        let writer = input.map(|text| {
            let mut stdin = child.stdin.take().expect("stdin");
            let text = text.to_owned();
            std::thread::spawn(move || stdin.write_all(text.as_bytes()))
        });
        let out = child.wait_with_output().expect("waiting for the tool");
        if let Some(w) = writer {
            w.join().expect("stdin writer").expect("writing stdin");
        }
        out
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("ip netns del {}: {e}", self.name),
        }
    }
}

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "cas-audit-export-{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).expect("writing temporary file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------
// The expected allowlist, computed independently
// ---------------------------------------------------------------------------

/// Connection, IPv6?, ports.
type Key = (Connection, bool, Vec<u16>);

/// Per group, the distinct truncated prefixes not covered by another one.
fn expected(set: &AddressSet) -> BTreeMap<Key, BTreeSet<IpNet>> {
    let mut groups: BTreeMap<Key, BTreeSet<IpNet>> = BTreeMap::new();
    for e in &set.entries {
        let mut ports = e.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        groups
            .entry((e.direction, e.prefix.addr().is_ipv6(), ports))
            .or_default()
            .insert(e.prefix.trunc());
    }
    for prefixes in groups.values_mut() {
        let all: Vec<IpNet> = prefixes.iter().copied().collect();
        prefixes.retain(|p| !all.iter().any(|q| q != p && q.contains(p)));
    }
    groups
}

/// `out4-443`, `in6-80-443`: the group's id (nft uses `_` for `-`, ipset
/// prepends `cas-`).
fn group_id((direction, v6, ports): &Key) -> String {
    let dir = match direction {
        Connection::Outbound => "out",
        Connection::Inbound => "in",
    };
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("{dir}{}-{}", if *v6 { 6 } else { 4 }, ports.join("-"))
}

/// A listed address or prefix as an [`IpNet`] (a bare address is a host prefix).
fn parse_net(text: &str) -> IpNet {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .unwrap_or_else(|_| panic!("unexpected element {text:?}"))
}

/// The builtin set, every single-data-center subset, and the set with no
/// data center at all (only the global mail servers).
fn builtin_variants() -> Vec<(String, AddressSet)> {
    let mut out = vec![("builtin".to_owned(), AddressSet::builtin())];
    for dc in DataCenter::ALL {
        let mut set = AddressSet::builtin();
        set.retain_datacenters(&[dc]);
        out.push((dc.to_string(), set));
    }
    let mut set = AddressSet::builtin();
    set.retain_datacenters(&[]);
    out.push(("global only".to_owned(), set));
    out
}

/// A set with duplicate, covered, adjacent, unaligned and IPv6 prefixes and
/// a two-port group, built from a builtin entry so that it does not depend
/// on every field of `Entry`.
fn crafted() -> AddressSet {
    let mut set = AddressSet::builtin();
    let template = set.entries[0].clone();
    let make = |prefix: &str, direction: Connection, ports: &[u16]| {
        let mut e = template.clone();
        e.prefix = prefix.parse().unwrap();
        e.direction = direction;
        e.ports = ports.to_vec();
        e
    };
    use Connection::{Inbound, Outbound};
    set.name = "crafted".into();
    set.entries = vec![
        make("100.64.2.10/32", Outbound, &[443]),
        make("100.64.2.10/32", Outbound, &[443]),
        make("100.64.2.11/32", Outbound, &[443]),
        make("100.64.2.12/32", Outbound, &[443]),
        make("198.51.100.0/24", Outbound, &[443]),
        make("198.51.100.77/32", Outbound, &[443]),
        make("198.51.100.130/25", Outbound, &[443]),
        make("198.51.101.0/24", Outbound, &[443]),
        make("203.0.113.9/32", Outbound, &[443, 80]),
        make("2001:db8::/32", Outbound, &[443]),
        make("2001:db8:1::1/128", Outbound, &[443]),
        make("2001:db9::1/128", Outbound, &[443]),
        make("2001:db8:ffff::/48", Inbound, &[11344]),
        make("203.0.113.0/24", Inbound, &[25]),
        make("203.0.113.64/26", Inbound, &[25]),
    ];
    set.dns.clear();
    set
}

fn empty() -> AddressSet {
    let mut set = AddressSet::builtin();
    set.name = "empty".into();
    set.entries.clear();
    set.dns.clear();
    set
}

// ---------------------------------------------------------------------------
// JSON (no privileges needed)
// ---------------------------------------------------------------------------

#[test]
fn builtin_figures() {
    let set = AddressSet::builtin();
    assert_eq!(set.entries.len(), 592);
    let distinct: BTreeSet<IpNet> = set.entries.iter().map(|e| e.prefix.trunc()).collect();
    assert_eq!(distinct.len(), 438);
    let groups = expected(&set);
    let sizes: Vec<(String, usize)> = groups.iter().map(|(k, p)| (group_id(k), p.len())).collect();
    assert_eq!(
        sizes,
        [
            ("out4-443".to_owned(), 373),
            ("in4-25".to_owned(), 7),
            ("in4-443".to_owned(), 72),
            ("in4-11344".to_owned(), 65),
        ]
    );
    // Every distinct prefix is in some group.
    let listed: BTreeSet<IpNet> = groups.values().flatten().copied().collect();
    assert_eq!(listed, distinct);
}

#[test]
fn json_matches_the_expected_groups() {
    let mut variants = builtin_variants();
    variants.push(("crafted".to_owned(), crafted()));
    variants.push(("empty".to_owned(), empty()));
    for (label, set) in variants {
        let text = export(&set, ExportFormat::Json);
        let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(doc["set"], set.name.as_str(), "{label}");
        assert_eq!(doc["source"], set.source.as_str(), "{label}");
        assert_eq!(doc["published"], set.published.as_str(), "{label}");
        let want = expected(&set);
        let rules = doc["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), want.len(), "{label}");
        for (rule, (key, prefixes)) in rules.iter().zip(&want) {
            assert_eq!(rule["id"], group_id(key).as_str(), "{label}");
            assert_eq!(rule["direction"], key.0.as_str(), "{label}");
            assert_eq!(rule["family"], if key.1 { "ipv6" } else { "ipv4" });
            assert_eq!(rule["protocol"], "tcp");
            assert_eq!(rule["ports"], serde_json::json!(key.2), "{label}");
            let got: Vec<IpNet> = rule["prefixes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| parse_net(p.as_str().unwrap()))
                .collect();
            // Sorted by address, so as a set and as a list they agree.
            let want: Vec<IpNet> = prefixes.iter().copied().collect();
            assert_eq!(got, want, "{label} {}", group_id(key));
        }
        assert_eq!(
            doc["dns"].as_array().unwrap().len(),
            set.dns
                .iter()
                .map(|d| (d.direction, d.ports.clone(), d.name.clone()))
                .collect::<BTreeSet<_>>()
                .len(),
            "{label}"
        );
        // Deterministic.
        assert_eq!(export(&set, ExportFormat::Json), text);
    }
}

// ---------------------------------------------------------------------------
// nft
// ---------------------------------------------------------------------------

/// Sets (name -> elements) and rule counts per chain of table inet cas_audit.
fn nft_listing(
    ns: &Netns,
    nft: &Path,
) -> (BTreeMap<String, BTreeSet<IpNet>>, BTreeMap<String, usize>) {
    let text = ns.run(nft, &["-j", "list", "table", "inet", "cas_audit"], None);
    let doc: serde_json::Value = serde_json::from_str(&text).expect("nft JSON");
    let mut sets = BTreeMap::new();
    let mut rules: BTreeMap<String, usize> = BTreeMap::new();
    for item in doc["nftables"].as_array().expect("nftables array") {
        if let Some(set) = item.get("set") {
            let elems: Vec<IpNet> = set
                .get("elem")
                .and_then(|e| e.as_array())
                .map(|e| {
                    e.iter()
                        .map(|el| match el {
                            serde_json::Value::String(s) => parse_net(s),
                            other => {
                                let p = &other["prefix"];
                                let addr = p["addr"]
                                    .as_str()
                                    .unwrap_or_else(|| panic!("unexpected nft element {other}"));
                                parse_net(&format!("{addr}/{}", p["len"]))
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let name = set["name"].as_str().unwrap().to_owned();
            let distinct: BTreeSet<IpNet> = elems.iter().copied().collect();
            assert_eq!(distinct.len(), elems.len(), "duplicates listed in {name}");
            sets.insert(name, distinct);
        }
        if let Some(rule) = item.get("rule") {
            *rules
                .entry(rule["chain"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    (sets, rules)
}

/// Checks, loads and lists back `set`'s nft export in `ns` (replacing what
/// an earlier load left there).
fn nft_load_and_compare(ns: &Netns, nft: &Path, label: &str, set: &AddressSet) {
    let text = export(set, ExportFormat::Nft);
    let file = TempFile::new("nft", &text);
    ns.run(nft, &["-c", "-f", file.path()], None);
    ns.run(nft, &["-f", file.path()], None);
    let (sets, rules) = nft_listing(ns, nft);
    let want = expected(set);
    let want_sets: BTreeMap<String, BTreeSet<IpNet>> = want
        .iter()
        .map(|(k, p)| (group_id(k).replace('-', "_"), p.clone()))
        .collect();
    assert_eq!(sets, want_sets, "{label}: nft sets");
    let per_dir = |d: Connection| want.keys().filter(|k| k.0 == d).count();
    assert_eq!(
        rules.get("cas_outbound").copied().unwrap_or(0),
        per_dir(Connection::Outbound),
        "{label}"
    );
    assert_eq!(
        rules.get("cas_inbound").copied().unwrap_or(0),
        per_dir(Connection::Inbound),
        "{label}"
    );
    let chains = ns.run(nft, &["list", "chains", "inet"], None);
    assert!(chains.contains("chain cas_outbound {"), "{label}: {chains}");
    assert!(chains.contains("chain cas_inbound {"), "{label}: {chains}");
    let total: usize = sets.values().map(BTreeSet::len).sum();
    eprintln!("nft {label}: {} sets, {total} elements", sets.len());
}

#[test]
fn nft_builtin_and_per_datacenter() {
    let test = "nft_builtin_and_per_datacenter";
    let Some(tools) = require_tools(test, &["ip", "nft"]) else {
        return;
    };
    let nft = &tools[1];
    let ns = Netns::new();
    // One namespace: every load must replace the previous table entirely
    // (e.g. Gov US1 has no DLP set, so in4_11344 must disappear).
    for (label, set) in builtin_variants() {
        nft_load_and_compare(&ns, nft, &label, &set);
    }
    nft_load_and_compare(&ns, nft, "builtin again", &AddressSet::builtin());
    // Nothing else was created.
    let tables = ns.run(nft, &["list", "tables"], None);
    assert_eq!(tables.trim(), "table inet cas_audit");
}

#[test]
fn nft_crafted_and_empty_sets() {
    let test = "nft_crafted_and_empty_sets";
    let Some(tools) = require_tools(test, &["ip", "nft"]) else {
        return;
    };
    let nft = &tools[1];
    let ns = Netns::new();
    let set = crafted();
    nft_load_and_compare(&ns, nft, "crafted", &set);
    let (sets, _) = nft_listing(&ns, nft);
    // Covered and duplicate prefixes are gone; adjacent ones stay apart.
    let out4: Vec<String> = sets["out4_443"].iter().map(ToString::to_string).collect();
    assert_eq!(
        out4,
        [
            "100.64.2.10/32",
            "100.64.2.11/32",
            "100.64.2.12/32",
            "198.51.100.0/24",
            "198.51.101.0/24"
        ]
    );
    assert_eq!(sets["in4_25"].len(), 1);
    assert_eq!(sets["out6_443"].len(), 2);
    let chain = ns.run(
        nft,
        &["list", "chain", "inet", "cas_audit", "cas_outbound"],
        None,
    );
    assert!(
        chain.contains("ip daddr @out4_80_443 tcp dport { 80, 443 } accept"),
        "{chain}"
    );
    nft_load_and_compare(&ns, nft, "empty", &empty());
}

/// The usage example in the nft header works as documented: include the
/// export, then add a base chain jumping to both chains, in one load.
#[test]
fn nft_documented_usage_loads() {
    let test = "nft_documented_usage_loads";
    let Some(tools) = require_tools(test, &["ip", "nft"]) else {
        return;
    };
    let nft = &tools[1];
    let ns = Netns::new();
    let text = export(&AddressSet::builtin(), ExportFormat::Nft);
    let export_file = TempFile::new("nft", &text);
    let start = text
        .lines()
        .position(|l| l.starts_with("#   include \""))
        .expect("usage example in the header");
    let mut example = Vec::new();
    for line in text.lines().skip(start) {
        let line = line.strip_prefix("#   ").expect("example line");
        example.push(line.to_owned());
        if line == "}" {
            break;
        }
    }
    example[0] = format!("include \"{}\"", export_file.path());
    assert!(example.iter().any(|l| l.contains("jump cas_outbound")));
    let wrapper = TempFile::new("nft-usage", &(example.join("\n") + "\n"));
    ns.run(nft, &["-c", "-f", wrapper.path()], None);
    ns.run(nft, &["-f", wrapper.path()], None);
    let chain = ns.run(
        nft,
        &["list", "chain", "inet", "cas_audit", "forward"],
        None,
    );
    assert!(
        chain.contains("hook forward priority filter; policy drop;"),
        "{chain}"
    );
    assert!(chain.contains("jump cas_outbound"), "{chain}");
    assert!(chain.contains("jump cas_inbound"), "{chain}");
    // Reloading the pair is idempotent.
    ns.run(nft, &["-f", wrapper.path()], None);
}

// ---------------------------------------------------------------------------
// iptables
// ---------------------------------------------------------------------------

/// The `-A` lines of `chain` in `iptables -S`.
fn iptables_rules(ns: &Netns, iptables: &Path, chain: &str) -> Vec<String> {
    ns.run(iptables, &["-S", chain], None)
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_owned)
        .collect()
}

/// Tests, loads and lists back `set`'s iptables export in `ns`.
fn iptables_load_and_compare(
    ns: &Netns,
    restore: &Path,
    iptables: &Path,
    label: &str,
    set: &AddressSet,
) {
    let text = export(set, ExportFormat::Iptables);
    ns.run(restore, &["--test"], Some(&text));
    ns.run(restore, &["--noflush"], Some(&text));
    let want = expected(set);
    for (direction, chain, flag) in [
        (Connection::Outbound, "CAS-OUTBOUND", "-d"),
        (Connection::Inbound, "CAS-INBOUND", "-s"),
    ] {
        let got = iptables_rules(ns, iptables, chain);
        // Exactly the file's rules, in the file's order (the file is in
        // the canonical form `iptables -S` prints).
        let file_rules: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {chain} ")))
            .map(str::to_owned)
            .collect();
        assert_eq!(got, file_rules, "{label} {chain}");
        // One rule per IPv4 prefix and port match.
        let count: usize = want
            .iter()
            .filter(|(k, _)| k.0 == direction && !k.1)
            .map(|(k, p)| p.len() * k.2.len().div_ceil(15))
            .sum();
        assert_eq!(got.len(), count, "{label} {chain}");
        // And exactly the expected prefixes.
        let got_nets: BTreeSet<(String, IpNet)> = got
            .iter()
            .map(|r| {
                let mut words = r.split_whitespace();
                let net = words.by_ref().skip_while(|w| *w != flag).nth(1).unwrap();
                let port = r.split("-m ").nth(1).unwrap().trim().to_owned();
                (port, parse_net(net))
            })
            .collect();
        let want_nets: BTreeSet<(String, IpNet)> = want
            .iter()
            .filter(|(k, _)| k.0 == direction && !k.1)
            .flat_map(|(k, p)| {
                let port = if k.2.len() == 1 {
                    format!("tcp --dport {}", k.2[0])
                } else {
                    let ports: Vec<String> = k.2.iter().map(u16::to_string).collect();
                    format!("multiport --dports {}", ports.join(","))
                };
                p.iter().map(move |n| (port.clone(), *n))
            })
            .collect();
        assert_eq!(got_nets, want_nets, "{label} {chain}");
        eprintln!("iptables {label}: {chain} {} rules", got.len());
    }
    let v6: usize = want.iter().filter(|(k, _)| k.1).map(|(_, p)| p.len()).sum();
    if v6 > 0 {
        assert!(
            text.contains(&format!("# Left out: {v6} IPv6 prefix")),
            "{text}"
        );
    } else {
        assert!(!text.contains("# Left out:"), "{text}");
    }
}

#[test]
fn iptables_builtin_and_per_datacenter() {
    let test = "iptables_builtin_and_per_datacenter";
    let Some(tools) = require_tools(test, &["ip", "iptables-restore", "iptables"]) else {
        return;
    };
    let (restore, iptables) = (&tools[1], &tools[2]);
    let ns = Netns::new();
    let mut first = true;
    for (label, set) in builtin_variants() {
        iptables_load_and_compare(&ns, restore, iptables, &label, &set);
        if first {
            // The documented jumps; --noflush reloads must keep them.
            ns.run(iptables, &["-A", "FORWARD", "-j", "CAS-OUTBOUND"], None);
            ns.run(iptables, &["-A", "FORWARD", "-j", "CAS-INBOUND"], None);
            first = false;
        }
    }
    iptables_load_and_compare(&ns, restore, iptables, "crafted", &crafted());
    iptables_load_and_compare(&ns, restore, iptables, "empty", &empty());
    iptables_load_and_compare(
        &ns,
        restore,
        iptables,
        "builtin again",
        &AddressSet::builtin(),
    );
    assert_eq!(
        iptables_rules(&ns, iptables, "FORWARD"),
        ["-A FORWARD -j CAS-OUTBOUND", "-A FORWARD -j CAS-INBOUND"]
    );
}

// ---------------------------------------------------------------------------
// ipset
// ---------------------------------------------------------------------------

/// Members of every set (`ipset list`), and the header's entry counts
/// (`ipset list -t`).
fn ipset_listing(ns: &Netns, ipset: &Path) -> BTreeMap<String, (usize, BTreeSet<IpNet>)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut name = String::new();
    for line in ns.run(ipset, &["list", "-t"], None).lines() {
        if let Some(n) = line.strip_prefix("Name: ") {
            name = n.to_owned();
        } else if let Some(n) = line.strip_prefix("Number of entries: ") {
            counts.insert(name.clone(), n.trim().parse().unwrap());
        }
    }
    let mut out = BTreeMap::new();
    for (name, count) in counts {
        let text = ns.run(ipset, &["list", &name], None);
        let members: Vec<IpNet> = text
            .lines()
            .skip_while(|l| *l != "Members:")
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| parse_net(l.split_whitespace().next().unwrap()))
            .collect();
        let distinct: BTreeSet<IpNet> = members.iter().copied().collect();
        assert_eq!(distinct.len(), members.len(), "duplicates in {name}");
        out.insert(name, (count, distinct));
    }
    out
}

/// Restores `set`'s ipset export in `ns` and compares every set it names.
fn ipset_load_and_compare(ns: &Netns, ipset: &Path, label: &str, set: &AddressSet) {
    let text = export(set, ExportFormat::Ipset);
    ns.run(ipset, &["restore"], Some(&text));
    let listed = ipset_listing(ns, ipset);
    for (key, prefixes) in expected(set) {
        let name = format!("cas-{}", group_id(&key));
        let (count, members) = listed
            .get(&name)
            .unwrap_or_else(|| panic!("{label}: set {name} missing"));
        assert_eq!(*count, prefixes.len(), "{label} {name}");
        assert_eq!(members, &prefixes, "{label} {name}");
        eprintln!("ipset {label}: {name} {count} entries");
    }
}

#[test]
fn ipset_builtin_and_per_datacenter() {
    let test = "ipset_builtin_and_per_datacenter";
    let Some(tools) = require_tools(test, &["ip", "ipset"]) else {
        return;
    };
    let ipset = &tools[1];
    // A fresh namespace per load: ipset restore refills the sets it names
    // and leaves others alone, so a reused namespace could hide a set
    // missing from an export.
    for (label, set) in builtin_variants() {
        let ns = Netns::new();
        ipset_load_and_compare(&ns, ipset, &label, &set);
        let names: BTreeSet<String> = ipset_listing(&ns, ipset).into_keys().collect();
        let want: BTreeSet<String> = expected(&set)
            .keys()
            .map(|k| format!("cas-{}", group_id(k)))
            .collect();
        assert_eq!(names, want, "{label}");
    }
    // Reloading refills: a subset over the full set leaves the subset.
    let ns = Netns::new();
    ipset_load_and_compare(&ns, ipset, "builtin", &AddressSet::builtin());
    let mut us1 = AddressSet::builtin();
    us1.retain_datacenters(&[DataCenter::Us1]);
    ipset_load_and_compare(&ns, ipset, "US1 over builtin", &us1);
    ipset_load_and_compare(&ns, ipset, "builtin again", &AddressSet::builtin());
}

#[test]
fn ipset_crafted_and_documented_usage() {
    let test = "ipset_crafted_and_documented_usage";
    let Some(tools) = require_tools(test, &["ip", "ipset", "iptables", "ip6tables"]) else {
        return;
    };
    let (ipset, iptables, ip6tables) = (&tools[1], &tools[2], &tools[3]);
    let ns = Netns::new();
    let set = crafted();
    ipset_load_and_compare(&ns, ipset, "crafted", &set);
    let text = export(&set, ExportFormat::Ipset);
    // Every usage line of the header works against the restored sets.
    let mut used = 0;
    for line in text.lines() {
        let Some(cmd) = line.strip_prefix("#   ") else {
            continue;
        };
        let mut words = cmd.split_whitespace();
        let tool = match words.next() {
            Some("iptables") => iptables,
            Some("ip6tables") => ip6tables,
            _ => continue,
        };
        let args: Vec<&str> = words.collect();
        ns.run(tool, &args, None);
        used += 1;
    }
    assert_eq!(used, expected(&set).len());
    let rules = ns.run(ip6tables, &["-S", "FORWARD"], None);
    assert!(
        rules.contains("-m set --match-set cas-out6-443 dst"),
        "{rules}"
    );
    // The empty export restores nothing and fails nothing.
    ns.run(
        ipset,
        &["restore"],
        Some(&export(&empty(), ExportFormat::Ipset)),
    );
}

// ---------------------------------------------------------------------------
// A set merged from a published page and a Service Tags file
// ---------------------------------------------------------------------------

/// The 2024-11 page merged with the 2025-11 Service Tags excerpt (whose
/// Front Door tag holds IPv6 prefixes), from `../shared/data`.
fn merged_page_and_tags() -> AddressSet {
    let sets: Vec<AddressSet> = [
        "pages/network-requirements-2024-11-03.md",
        "servicetags/ServiceTags_Public_cn376_2025-11-10_mcas-excerpt.json",
    ]
    .iter()
    .map(|f| {
        let path = shared_data(f);
        load_input(path.to_str().expect("UTF-8"), None)
            .unwrap_or_else(|e| panic!("{e} (the shared data is test input)"))
            .into_set()
    })
    .collect();
    AddressSet::merge(&sets, Some("merged"))
}

/// nft, iptables and ipset load the merged set's exports, IPv4 and IPv6,
/// element for element.
#[test]
fn merged_page_and_tags_set_loads_in_every_tool() {
    let test = "merged_page_and_tags_set_loads_in_every_tool";
    let Some(tools) = require_tools(
        test,
        &["ip", "nft", "iptables-restore", "iptables", "ipset"],
    ) else {
        return;
    };
    let set = merged_page_and_tags();
    let groups = expected(&set);
    // IPv6 from the Front Door tag: three prefixes, outbound 443.
    let v6: Vec<(String, usize)> = groups
        .iter()
        .filter(|(k, _)| k.1)
        .map(|(k, p)| (group_id(k), p.len()))
        .collect();
    assert_eq!(v6, [("out6-443".to_owned(), 3)]);
    let ns = Netns::new();
    nft_load_and_compare(&ns, &tools[1], "merged", &set);
    iptables_load_and_compare(&ns, &tools[2], &tools[3], "merged", &set);
    let ns = Netns::new();
    ipset_load_and_compare(&ns, &tools[4], "merged", &set);
    let names: BTreeSet<String> = ipset_listing(&ns, &tools[4]).into_keys().collect();
    assert!(names.contains("cas-out6-443"), "{names:?}");
}
