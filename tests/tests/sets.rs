//! `cas-audit sets import | merge | diff | show` on the data Microsoft
//! published (`../shared/data`, beside the repository, as in CI), through
//! the binary. Expected figures come from the input files, read here with
//! serde_json (and a brute-force containment for regions), never from the
//! agent's own output.
//!
//! Nothing here needs privileges or touches the network.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use ipnet::{IpNet, Ipv4Net};
use serde_json::Value;

use cas_audit_tests::process::{agent_bin, Process, EXIT_TIMEOUT};
use cas_audit_tests::shared_data;

const PAGE_2024: &str = "pages/network-requirements-2024-11-03.md";
const PAGE_2021: &str = "pages/network-requirements-2021-11-08.md";
const TAGS_2024: &str = "servicetags/ServiceTags_Public_20240610.json";
const TAGS_2025: &str = "servicetags/ServiceTags_Public_cn376_2025-11-10_mcas-excerpt.json";
const TAGS_GOV: &str = "servicetags/ServiceTags_AzureGovernment_20260720_mcas-excerpt.json";

/// A file of `../shared/data`, as a string.
fn data(file: &str) -> String {
    shared_data(file).to_str().expect("UTF-8 path").to_owned()
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("cas-audit-sets-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        Scratch(d)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("UTF-8").to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cas-audit ARGS`: exit code, stdout, stderr.
fn cas(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(agent_bin());
    cmd.args(args);
    let run = Process::spawn(cmd).wait(EXIT_TIMEOUT);
    (run.status.code().unwrap_or(-1), run.stdout, run.stderr)
}

fn json_file(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("reading JSON")).expect("JSON")
}

/// The addresses of IPv4 `(purpose, region)` groups the Service Tags file
/// gives, computed from its JSON: each global MicrosoftCloudAppSecurity
/// prefix in every region one of whose regional prefixes it contains or
/// lies in (or in region "" without one), as app-connector and dlp.
fn tag_groups(file: &str) -> BTreeMap<(String, String), BTreeSet<u32>> {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(data(file)).unwrap()).unwrap();
    let prefixes = |v: &Value| -> Vec<IpNet> {
        v["properties"]["addressPrefixes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().parse().unwrap())
            .collect()
    };
    let values = doc["values"].as_array().unwrap();
    let global = values
        .iter()
        .find(|v| v["name"] == "MicrosoftCloudAppSecurity")
        .map(prefixes)
        .unwrap();
    let regional: Vec<(String, Vec<IpNet>)> = values
        .iter()
        .filter_map(|v| {
            let r = v["name"]
                .as_str()?
                .strip_prefix("MicrosoftCloudAppSecurity.")?;
            Some((r.to_ascii_lowercase(), prefixes(v)))
        })
        .collect();
    let mut out: BTreeMap<(String, String), BTreeSet<u32>> = BTreeMap::new();
    for p in global.iter().filter(|p| p.addr().is_ipv4()) {
        let mut regions: Vec<&str> = regional
            .iter()
            .filter(|(_, qs)| qs.iter().any(|q| q.contains(p) || p.contains(q)))
            .map(|(r, _)| r.as_str())
            .collect();
        if regions.is_empty() {
            regions.push("");
        }
        for r in regions {
            for purpose in ["app-connector", "dlp"] {
                out.entry((purpose.into(), r.into()))
                    .or_default()
                    .extend(addresses(p));
            }
        }
    }
    out
}

/// Every IPv4 address of `p`.
fn addresses(p: &IpNet) -> Vec<u32> {
    match p.trunc() {
        IpNet::V4(n) => (u32::from(n.network())..=u32::from(n.broadcast())).collect(),
        IpNet::V6(_) => Vec::new(),
    }
}

#[test]
fn import_prints_what_each_file_gave() {
    let dir = Scratch::new("import");
    // A page.
    let out = dir.file("page.json");
    let (code, _, err) = cas(&["sets", "import", &data(PAGE_2024), "--out", &out]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "imported set cas-2024-02: 938 entries (829 distinct prefixes: 829 IPv4, 0 IPv6), \
             39 DNS names, from 1 source"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "  line 160 (App connector): 94 addresses, 0 DNS names -> app-connector US1\n"
        ),
        "{err}"
    );
    let set = json_file(&out);
    assert_eq!(set["schema"], 2);
    assert_eq!(set["sources"][0]["kind"], "page");
    // The US Government service tags: per region, as the JSON says.
    let out = dir.file("gov.json");
    let (code, _, err) = cas(&["sets", "import", &data(TAGS_GOV), "--out", &out]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "Service Tags, cloud AzureGovernment, changeNumber 402, dated 2026-07-20, 7 tags"
        ),
        "{err}"
    );
    let set = json_file(&out);
    let mut got: BTreeMap<(String, String), BTreeSet<u32>> = BTreeMap::new();
    for e in set["entries"].as_array().unwrap() {
        if e["purpose"] != "app-connector" && e["purpose"] != "dlp" {
            assert_eq!(e["shared"], true, "{e}");
            continue;
        }
        let p: IpNet = e["prefix"].as_str().unwrap().parse().unwrap();
        let r = e["region"].as_str().unwrap_or("").to_owned();
        assert_eq!(e["cloud"], "AzureGovernment");
        got.entry((e["purpose"].as_str().unwrap().into(), r))
            .or_default()
            .extend(addresses(&p));
    }
    assert_eq!(got, tag_groups(TAGS_GOV));
}

#[test]
fn merge_page_and_tags_keeps_each_prefix_sources() {
    let dir = Scratch::new("merge");
    let merged = dir.file("merged.json");
    let (code, _, err) = cas(&[
        "sets",
        "merge",
        &data(PAGE_2024),
        &data(TAGS_2025),
        "--name",
        "lab-merged",
        "--out",
        &merged,
    ]);
    assert_eq!(code, 0, "{err}");
    let set = json_file(&merged);
    assert_eq!(set["name"], "lab-merged");
    assert_eq!(set["published"], "2025-11-10");
    let ids: Vec<&str> = set["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["page-2024-02-29", "tags-public-2025-11-10"]);
    // Per prefix, the sources that list it: a page address that is also
    // in the tag names both.
    let mut by_prefix: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in set["entries"].as_array().unwrap() {
        let sources = e["sources"]
            .as_array()
            .expect("every entry names its sources");
        by_prefix
            .entry(e["prefix"].as_str().unwrap().into())
            .or_default()
            .extend(sources.iter().map(|s| s.as_str().unwrap().to_owned()));
    }
    let both = by_prefix.values().filter(|s| s.len() == 2).count();
    // Independently: page addresses (from the page's own import) that the
    // tag lists as written.
    let tags: Value =
        serde_json::from_str(&std::fs::read_to_string(data(TAGS_2025)).unwrap()).unwrap();
    let tag_prefixes: BTreeSet<String> = tags["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| {
            v["name"] == "MicrosoftCloudAppSecurity"
                || v["name"] == "AzureFrontDoor.MicrosoftSecurity"
        })
        .flat_map(|v| {
            v["properties"]["addressPrefixes"]
                .as_array()
                .unwrap()
                .iter()
        })
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    let page_only = dir.file("page.json");
    assert_eq!(
        cas(&["sets", "import", &data(PAGE_2024), "--out", &page_only]).0,
        0
    );
    let page_prefixes: BTreeSet<String> = json_file(&page_only)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["prefix"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(both, page_prefixes.intersection(&tag_prefixes).count());
    assert!(both > 0);
    assert_eq!(by_prefix.len(), page_prefixes.union(&tag_prefixes).count());
    // The provenance in sets show.
    let (code, csv, _) = cas(&["sets", "show", "--set", &merged, "--format", "csv"]);
    assert_eq!(code, 0);
    assert!(
        csv.starts_with(
            "kind,value,datacenter,purpose,direction,ports,region,cloud,shared,sources\n"
        ),
        "{csv}"
    );
    assert!(
        csv.contains(
            "prefix,2620:1ec:4a::/47,,portal,outbound,443,,Public,yes,tags-public-2025-11-10\n"
        ),
        "{csv}"
    );
    // And nothing changed when diffed against itself.
    assert_eq!(cas(&["sets", "diff", &merged, &merged]).0, 0);
}

/// Two weeks of Service Tags: `sets diff` gives, per purpose and region,
/// exactly the addresses one file has and the other has not.
#[test]
fn diff_of_two_tag_files_is_exact_by_coverage() {
    let dir = Scratch::new("diff");
    let (old, new) = (dir.file("old.json"), dir.file("new.json"));
    assert_eq!(
        cas(&["sets", "import", &data(TAGS_2024), "--out", &old]).0,
        0
    );
    assert_eq!(
        cas(&["sets", "import", &data(TAGS_2025), "--out", &new]).0,
        0
    );
    let (code, text, err) = cas(&["sets", "diff", &old, &new, "--json"]);
    assert_eq!(code, 1, "{err}");
    let d: Value = serde_json::from_str(&text).unwrap();
    let (a, b) = (tag_groups(TAGS_2024), tag_groups(TAGS_2025));
    let mut added: BTreeMap<(String, String), BTreeSet<u32>> = BTreeMap::new();
    let mut removed: BTreeMap<(String, String), BTreeSet<u32>> = BTreeMap::new();
    for g in d["groups"].as_array().unwrap() {
        let key = (
            g["purpose"].as_str().unwrap().to_owned(),
            g["region"].as_str().unwrap_or("").to_owned(),
        );
        for (field, into) in [("added", &mut added), ("removed", &mut removed)] {
            for p in g[field].as_array().unwrap() {
                let p: IpNet = p.as_str().unwrap().parse().unwrap();
                if let Some(key) = Some(key.clone()).filter(|_| p.addr().is_ipv4()) {
                    let set = into.entry(key).or_default();
                    for a in addresses(&p) {
                        assert!(set.insert(a), "{} listed twice", Ipv4Addr::from(a));
                    }
                }
            }
        }
    }
    let empty = BTreeSet::new();
    let keys: BTreeSet<&(String, String)> = a.keys().chain(b.keys()).collect();
    let mut want_added: BTreeMap<(String, String), BTreeSet<u32>> = BTreeMap::new();
    let mut want_removed: BTreeMap<(String, String), BTreeSet<u32>> = BTreeMap::new();
    for k in keys {
        let (ka, kb) = (a.get(k).unwrap_or(&empty), b.get(k).unwrap_or(&empty));
        let plus: BTreeSet<u32> = kb.difference(ka).copied().collect();
        let minus: BTreeSet<u32> = ka.difference(kb).copied().collect();
        if !plus.is_empty() {
            want_added.insert(k.clone(), plus);
        }
        if !minus.is_empty() {
            want_removed.insert(k.clone(), minus);
        }
    }
    // The Front Door tag (new in 2025) adds its own groups.
    let front_door: BTreeSet<&str> = ["portal", "siem-agent", "log-collector"].into();
    for (k, v) in &added {
        if front_door.contains(k.0.as_str()) {
            assert_eq!(
                (k.1.as_str(), v.len()),
                ("", 256 + 256 + 512 + 256),
                "{k:?}"
            );
        }
    }
    added.retain(|k, _| !front_door.contains(k.0.as_str()));
    let show = |m: &BTreeMap<(String, String), BTreeSet<u32>>| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect::<Vec<_>>()
    };
    assert_eq!(show(&added), show(&want_added));
    assert!(added == want_added, "added addresses differ");
    assert!(
        removed == want_removed,
        "{:?} != {:?}",
        show(&removed),
        show(&want_removed)
    );
    // A /30 equals its four /32s (host prefixes of the same addresses).
    let quad = dir.file("quad.json");
    let one = dir.file("one.json");
    let entry = |p: &str| format!(r#"{{"prefix": "{p}", "purpose": "dlp", "region": "westus"}}"#);
    let doc = |entries: Vec<String>| {
        format!(
            r#"{{"schema": 2, "name": "x", "source": "t", "published": "2024-01-01", "entries": [{}]}}"#,
            entries.join(", ")
        )
    };
    let n = Ipv4Net::new(Ipv4Addr::new(13, 72, 27, 216), 30).unwrap();
    std::fs::write(
        &quad,
        doc(n
            .hosts()
            .chain([n.network(), n.broadcast()])
            .map(|h| entry(&h.to_string()))
            .collect()),
    )
    .unwrap();
    std::fs::write(&one, doc(vec![entry(&n.to_string())])).unwrap();
    let (code, text, _) = cas(&["sets", "diff", &one, &quad]);
    assert_eq!(
        (code, text.as_str()),
        (0, "--- x (t)\n+++ x (t)\nno difference\n")
    );
}

#[test]
fn schema_1_files_and_bad_inputs() {
    let dir = Scratch::new("bad");
    let old = dir.file("old.json");
    std::fs::write(
        &old,
        r#"{"schema": 1, "name": "old", "source": "old.md", "published": "2019-11-01",
            "entries": [{"prefix": "13.64.196.27", "datacenter": "US1", "purpose": "dlp"}]}"#,
    )
    .unwrap();
    let (code, out, err) = cas(&["sets", "show", "--set", &old, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "{\n  \"schema\": 2,\n  \"name\": \"old\",\n  \"source\": \"old.md\",\n  \"published\": \
         \"2019-11-01\",\n  \"sources\": [\n    {\"id\": \"set-old\", \"kind\": \"set\", \"file\": \
         \"old.md\", \"published\": \"2019-11-01\"}\n  ],\n  \"entries\": [\n    {\"prefix\": \
         \"13.64.196.27/32\", \"datacenter\": \"US1\", \"purpose\": \"dlp\", \"direction\": \
         \"inbound\", \"ports\": [11344]}\n  ],\n  \"dns\": []\n}\n"
    );
    let neither = dir.file("neither.json");
    std::fs::write(&neither, "{\"foo\": 1}\n").unwrap();
    let (code, _, err) = cas(&["sets", "import", &neither]);
    assert_eq!(code, 2);
    assert!(
        err.contains("neither a Service Tags file (no \"values\") nor a set file (no \"schema\")"),
        "{err}"
    );
    let other = dir.file("ServiceTags_Public_20240101.json");
    std::fs::write(
        &other,
        r#"{"changeNumber": 1, "cloud": "Public", "values": [{"name": "AzureCloud", "properties": {"addressPrefixes": []}}]}"#,
    )
    .unwrap();
    let (code, _, err) = cas(&["sets", "import", &other]);
    assert_eq!(code, 2);
    assert!(
        err.contains("none of its 1 tags is MicrosoftCloudAppSecurity"),
        "{err}"
    );
    // A missing input is a usage error (exit 2, the exit-code policy).
    let (code, _, err) = cas(&["sets", "import", &dir.file("missing.json")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.json"), "{err}");
    let (code, _, err) = cas(&["sets", "merge", &data(PAGE_2021)]);
    assert_eq!(code, 2, "merge needs two inputs: {err}");
}
