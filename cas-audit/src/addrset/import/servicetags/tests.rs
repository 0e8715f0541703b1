//! The Service Tags importer on every shared file, its published variants
//! and broken input. Expected figures are computed here from the JSON with
//! serde_json and a brute-force containment check, not by the importer.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::*;
use crate::addrset::{Connection, DataCenter};

const FILES: [&str; 5] = [
    "ServiceTags_Public_20240610.json",
    "ServiceTags_Public_20230213_mcas-excerpt.json",
    "ServiceTags_Public_cn376_2025-11-10_mcas-excerpt.json",
    "ServiceTags_AzureGovernment_20260720_mcas-excerpt.json",
    "ServiceTags_China_20260720_mcas-excerpt.json",
];

/// A file of `../shared/data/servicetags` (beside the repository, as in CI).
fn shared(file: &str) -> String {
    let path = format!(
        "{}/../../shared/data/servicetags/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read {path} ({e}): the shared data must be beside the clone")
    })
}

fn import(text: &str, file: &str) -> Import {
    let date = date_in_name(file).expect("a dated name");
    import_service_tags(text, file, &date, None).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// What the file says, read with serde_json: per tag name, its prefixes.
fn tags_of(text: &str) -> BTreeMap<String, Vec<IpNet>> {
    let doc: Value = serde_json::from_str(text).unwrap();
    doc["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let prefixes = v["properties"]["addressPrefixes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| p.as_str().unwrap().parse().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            (v["name"].as_str().unwrap().to_owned(), prefixes)
        })
        .collect()
}

/// Distinct prefixes per (purpose, region) the file should give: global
/// prefixes placed in every regional tag one of whose prefixes contains
/// them or lies inside them (checked pair by pair), the Front Door tag's
/// prefixes without a region.
fn expected(text: &str) -> BTreeMap<(Purpose, String), BTreeSet<IpNet>> {
    let tags = tags_of(text);
    let mut want: BTreeMap<(Purpose, String), BTreeSet<IpNet>> = BTreeMap::new();
    let global = tags
        .get("MicrosoftCloudAppSecurity")
        .cloned()
        .unwrap_or_default();
    for p in &global {
        let mut regions: Vec<String> = tags
            .iter()
            .filter_map(|(name, ps)| {
                let region = name.strip_prefix("MicrosoftCloudAppSecurity.")?;
                ps.iter()
                    .any(|q| q.contains(p) || p.contains(q))
                    .then(|| region.to_ascii_lowercase())
            })
            .collect();
        if regions.is_empty() {
            regions.push(String::new());
        }
        for r in regions {
            for purpose in [Purpose::AppConnector, Purpose::Dlp] {
                want.entry((purpose, r.clone())).or_default().insert(*p);
            }
        }
    }
    for p in tags
        .get("AzureFrontDoor.MicrosoftSecurity")
        .into_iter()
        .flatten()
    {
        for purpose in [Purpose::Portal, Purpose::SiemAgent, Purpose::LogCollector] {
            want.entry((purpose, String::new())).or_default().insert(*p);
        }
    }
    want
}

fn got(set: &AddressSet) -> BTreeMap<(Purpose, String), BTreeSet<IpNet>> {
    let mut got: BTreeMap<(Purpose, String), BTreeSet<IpNet>> = BTreeMap::new();
    for e in &set.entries {
        let region = e
            .region
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        got.entry((e.purpose, region)).or_default().insert(e.prefix);
    }
    got
}

#[test]
fn every_shared_file_imports_with_the_counts_of_its_json() {
    for file in FILES {
        let text = shared(file);
        let imp = import(&text, file);
        let set = &imp.set;
        let want = expected(&text);
        assert_eq!(got(set), want, "{file}");
        let doc: Value = serde_json::from_str(&text).unwrap();
        let src = &set.sources[0];
        assert_eq!(src.kind, SourceKind::ServiceTags);
        assert_eq!(src.cloud.as_deref(), doc["cloud"].as_str(), "{file}");
        assert_eq!(src.change_number, doc["changeNumber"].as_u64(), "{file}");
        assert_eq!(imp.tags_in_file, doc["values"].as_array().unwrap().len());
        // Every tag used, with its change number and prefix count.
        let used: Vec<(String, Option<u64>, usize)> = doc["values"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| {
                let n = v["name"].as_str().unwrap();
                n == "MicrosoftCloudAppSecurity"
                    || n.starts_with("MicrosoftCloudAppSecurity.")
                    || n == "AzureFrontDoor.MicrosoftSecurity"
            })
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_owned(),
                    v["properties"]["changeNumber"].as_u64(),
                    v["properties"]["addressPrefixes"].as_array().unwrap().len(),
                )
            })
            .collect();
        let recorded: Vec<(String, Option<u64>, usize)> = src
            .tags
            .iter()
            .map(|t| (t.name.clone(), t.change_number, t.prefixes))
            .collect();
        // The report lists the global tag, the regional ones, then Front Door.
        let mut a = used.clone();
        let mut b = recorded.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{file}");
        for e in &set.entries {
            assert_eq!(e.datacenter, None);
            assert_eq!(e.cloud.as_deref(), doc["cloud"].as_str());
            assert_eq!(e.sources, std::slice::from_ref(&src.id));
            assert_eq!(
                e.shared,
                e.purpose != Purpose::AppConnector && e.purpose != Purpose::Dlp
            );
            let out = matches!(
                e.purpose,
                Purpose::Portal | Purpose::SiemAgent | Purpose::LogCollector
            );
            assert_eq!(e.direction == Connection::Outbound, out, "{e:?}");
        }
    }
}

/// The figures of the issue and of the data's README, as plain numbers.
#[test]
fn known_figures() {
    let imp = import(&shared(FILES[2]), FILES[2]);
    let g = got(&imp.set);
    let all = |p: Purpose| -> BTreeSet<IpNet> {
        g.iter()
            .filter(|((q, _), _)| *q == p)
            .flat_map(|(_, s)| s.iter().copied())
            .collect()
    };
    assert_eq!(all(Purpose::AppConnector).len(), 2302);
    assert_eq!(g[&(Purpose::AppConnector, String::new())].len(), 401);
    let fd = all(Purpose::Portal);
    assert_eq!(fd.len(), 7);
    assert_eq!(fd.iter().filter(|p| p.addr().is_ipv6()).count(), 3);
    assert_eq!(imp.set.sources[0].id, "tags-public-2025-11-10");
    assert_eq!(imp.set.published, "2025-11-10");
    // The full 2024-06 download: 2,604 tags, 699 global prefixes.
    let imp = import(&shared(FILES[0]), FILES[0]);
    assert_eq!(imp.tags_in_file, 2604);
    assert_eq!(imp.set.ranges().len(), 699);
    assert!(imp
        .warnings
        .iter()
        .any(|w| w.contains("no AzureFrontDoor.MicrosoftSecurity")));
    // US Government: a global /30 is two /32s of USGovVirginia.
    let imp = import(&shared(FILES[3]), FILES[3]);
    let e = imp
        .set
        .entries
        .iter()
        .find(|e| e.prefix.to_string() == "13.72.27.216/30")
        .unwrap();
    assert_eq!(e.region.as_ref().map(Region::as_str), Some("usgovvirginia"));
    assert_eq!(e.location(), DataCenter::GovUs1.region().into());
}

/// The same content in every published variant gives the same entries.
#[test]
fn published_variants() {
    let file = FILES[4];
    let text = shared(file);
    let base = import(&text, file).set.entries;
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    // CRLF, no final newline, a byte-order mark.
    let crlf = format!("\u{feff}{}", text.trim_end().replace('\n', "\r\n"));
    assert_eq!(import(&crlf, file).set.entries, base);
    // The REST form: id, name, type, nextLink; changeNumbers as strings.
    doc["id"] = "/subscriptions/x/providers/Microsoft.Network/serviceTags/Public".into();
    doc["name"] = "Public".into();
    doc["type"] = "Microsoft.Network/serviceTags".into();
    doc["nextLink"] = Value::Null;
    doc["changeNumber"] = doc["changeNumber"].to_string().into();
    for v in doc["values"].as_array_mut().unwrap() {
        let n = v["properties"]["changeNumber"].to_string();
        v["properties"]["changeNumber"] = n.into();
    }
    let rest = import(&serde_json::to_string_pretty(&doc).unwrap(), file);
    assert_eq!(rest.set.entries, base);
    assert_eq!(rest.set.sources[0].change_number, Some(405));
    assert_eq!(rest.set.sources[0].tags[0].change_number, Some(1));
    // Before August 2020: no regionId, no networkFeatures; and an empty
    // regional tag.
    for v in doc["values"].as_array_mut().unwrap() {
        let props = v["properties"].as_object_mut().unwrap();
        props.remove("regionId");
        props.remove("networkFeatures");
    }
    let east = doc["values"]
        .as_array()
        .unwrap()
        .iter()
        .position(|v| v["name"] == "MicrosoftCloudAppSecurity.ChinaEast")
        .unwrap();
    let removed: IpNet = doc["values"][east]["properties"]["addressPrefixes"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    doc["values"][east]["properties"]["addressPrefixes"] = Value::Array(Vec::new());
    let old = import(&serde_json::to_string(&doc).unwrap(), file);
    let expect: Vec<Entry> = base
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if e.prefix == removed {
                e.region = None;
            }
            e
        })
        .collect();
    assert_eq!(old.set.entries, expect);
    assert_eq!(old.set.sources[0].tags[east].prefixes, 0);
}

#[test]
fn dates_in_names() {
    assert_eq!(
        date_in_name("ServiceTags_Public_20240610.json").as_deref(),
        Some("2024-06-10")
    );
    assert_eq!(
        date_in_name("ServiceTags_Public_cn376_2025-11-10_mcas-excerpt.json").as_deref(),
        Some("2025-11-10")
    );
    assert_eq!(date_in_name("ServiceTags_Public_20241399.json"), None);
    assert_eq!(date_in_name("tags-123456789.json"), None);
    assert_eq!(date_in_name("servicetags.json"), None);
}

#[test]
fn broken_files() {
    let err = |t: &str| import_service_tags(t, "x.json", "2024-01-01", None).unwrap_err();
    assert!(matches!(err("{\"values\": 3}"), TagsError::Json { .. }));
    assert!(err("{\"values\": [}")
        .to_string()
        .starts_with("not a Service Tags file: "));
    let other = r#"{"changeNumber": 1, "cloud": "Public", "values": [
        {"name": "AzureCloud", "id": "AzureCloud", "properties": {"addressPrefixes": ["10.0.0.0/8"]}}]}"#;
    assert_eq!(
        err(other).to_string(),
        "none of its 1 tags is MicrosoftCloudAppSecurity, MicrosoftCloudAppSecurity.<Region> or \
         AzureFrontDoor.MicrosoftSecurity (is it an excerpt of another service?)"
    );
    let bad = r#"{"cloud": "Public", "values": [
        {"name": "MicrosoftCloudAppSecurity", "properties": {"addressPrefixes": ["10.0.0.0/33"]}}]}"#;
    assert_eq!(
        err(bad),
        TagsError::BadPrefix {
            tag: "MicrosoftCloudAppSecurity".into(),
            text: "10.0.0.0/33".into()
        }
    );
    // Host bits set (found by the service_tags fuzz target): refused, as
    // the set file it would give is refused.
    let hosty = r#"{"cloud": "China", "values": [
        {"name": "MicrosoftCloudAppSecurity", "properties": {"addressPrefixes": ["40.73.172.32/14"]}}]}"#;
    assert_eq!(
        err(hosty).to_string(),
        "tag MicrosoftCloudAppSecurity: prefix \"40.73.172.32/14\" has host bits set: it is \
         neither the network 40.72.0.0/14 nor the one address 40.73.172.32/32, and is refused \
         rather than guessed"
    );
    // A regional prefix outside the global tag is kept, with a warning.
    let orphan = r#"{"changeNumber": "x", "cloud": "Public", "values": [
        {"name": "MicrosoftCloudAppSecurity", "properties": {"addressPrefixes": ["10.0.0.0/30"]}},
        {"name": "MicrosoftCloudAppSecurity.WestEurope", "properties": {"region": "westeurope",
         "addressPrefixes": ["10.0.0.1/32", "10.9.0.1/32"]}}]}"#;
    let imp = import_service_tags(orphan, "x.json", "2024-01-01", None).unwrap();
    let placed: Vec<(String, Option<String>)> = imp
        .set
        .entries
        .iter()
        .filter(|e| e.purpose == Purpose::Dlp)
        .map(|e| {
            (
                e.prefix.to_string(),
                e.region.as_ref().map(ToString::to_string),
            )
        })
        .collect();
    assert_eq!(
        placed,
        [
            ("10.0.0.0/30".to_owned(), Some("westeurope".to_owned())),
            ("10.9.0.1/32".into(), Some("westeurope".into()))
        ]
    );
    assert_eq!(imp.set.sources[0].change_number, None);
    assert_eq!(
        imp.warnings[..2],
        [
            "the file's changeNumber is not a number: not kept".to_owned(),
            "1 prefixes of regional MicrosoftCloudAppSecurity tags are in no prefix of the global \
             tag (which should hold them all): kept; 10.9.0.1/32 (westeurope)"
                .to_owned()
        ]
    );
}
