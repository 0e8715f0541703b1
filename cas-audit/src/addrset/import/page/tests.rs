//! The importer on hand-written pages and on the published ones.

use super::words::*;
use super::*;
use crate::addrset::Connection;
use DataCenter::*;
use Purpose::*;

const PAGE_2019: &str = "network-requirements-2019-11.md";
const PAGE_2017: &str = "network-requirements-2017-07.md";

/// A published page: from the shared seeds next to the repository
/// (`../shared/seeds`, the ground truth) when they are there, else the
/// copy kept in `cas-audit/data/seeds` (a clone elsewhere). Missing both
/// is a failure, not a skip: the built-in sets must be checked against
/// their pages.
fn page(file: &str) -> String {
    let shared = format!("{}/../../shared/seeds/{file}", env!("CARGO_MANIFEST_DIR"));
    let kept = format!("{}/data/seeds/{file}", env!("CARGO_MANIFEST_DIR"));
    let path = if std::path::Path::new(&shared).exists() {
        shared
    } else {
        kept
    };
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the published page {path} ({e}): it is needed to check the \
                 built-in address sets (they are imported from it)"
        )
    })
}

/// The kept copies are the shared pages, byte for byte (when the shared
/// seeds are there to compare with).
#[test]
fn kept_pages_are_the_shared_ones() {
    for file in [
        PAGE_2019,
        PAGE_2017,
        "connect-apps.md",
        "connect-exchange-online.md",
    ] {
        let shared = format!("{}/../../shared/seeds/{file}", env!("CARGO_MANIFEST_DIR"));
        let kept = format!("{}/data/seeds/{file}", env!("CARGO_MANIFEST_DIR"));
        let kept = std::fs::read(&kept).unwrap_or_else(|e| panic!("{kept}: {e}"));
        if let Ok(shared) = std::fs::read(&shared) {
            assert!(
                shared == kept,
                "{file}: the kept copy differs from {shared:?}",
                shared = file
            );
        }
    }
}

fn import(file: &str) -> Import {
    import_page(&page(file), file, None).unwrap_or_else(|e| panic!("importing {file}: {e}"))
}

fn err(text: &str) -> ImportError {
    import_page(text, "t.md", None).unwrap_err()
}

/// Imports `page` and compares with (or, with `CAS_AUDIT_REGENERATE=1`,
/// writes) the data file `data/<set>.json`.
fn check_data_file(file: &str, data: &str, embedded: &str) {
    let json = import(file).set.to_json();
    if std::env::var("CAS_AUDIT_REGENERATE").as_deref() == Ok("1") {
        let path = format!("{}/data/{data}", env!("CARGO_MANIFEST_DIR"));
        std::fs::write(&path, &json).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        eprintln!("wrote {path}");
        return;
    }
    assert!(
        json == embedded,
        "data/{data} is not the import of {file}: \
             rerun with CAS_AUDIT_REGENERATE=1 to rewrite it"
    );
}

#[test]
fn builtin_data_is_the_import_of_the_page() {
    check_data_file(
        PAGE_2019,
        "cas-2019-11.json",
        include_str!("../../../../data/cas-2019-11.json"),
    );
    check_data_file(
        PAGE_2017,
        "cas-2017-07.json",
        include_str!("../../../../data/cas-2017-07.json"),
    );
}

type Row = (&'static str, Purpose, Option<DataCenter>, usize, usize);

/// Section, purpose, data center, region (`""`: none), addresses, names.
type Count = (String, Purpose, Option<DataCenter>, String, usize, usize);

fn rows(imp: &Import) -> Vec<Count> {
    imp.counts
        .iter()
        .map(|c| {
            (
                c.section.clone(),
                c.purpose,
                c.datacenter,
                c.region
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                c.addresses,
                c.dns_names,
            )
        })
        .collect()
}

/// Rows without a region.
fn expect(rows: &[Row]) -> Vec<Count> {
    rows.iter()
        .map(|&(s, p, dc, a, d)| (s.to_owned(), p, dc, String::new(), a, d))
        .collect()
}

/// Distinct addresses per table row, counted on the page with
/// `grep -oE '[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(/[0-9]+)?' | sort -u | wc -l`
/// (the US3 access row lists 90 addresses, 82 distinct; app connector
/// US2 20/17, EU1 20/17; DLP US2 18/15, EU1 17/15), and the DNS names
/// by hand.
#[test]
fn counts_2019_11() {
    let imp = import(PAGE_2019);
    const P: &str = "Portal access";
    const A: &str = "Access and session controls";
    const S: &str = "SIEM agent connection";
    const C: &str = "App connector";
    const D: &str = "Third-party DLP integration";
    const M: &str = "Mail server";
    const L: &str = "Log collector";
    #[rustfmt::skip]
        let want: &[Row] = &[
            // 12 names for everyone, one per data center, 3 for GCC High.
            (P, Portal, None, 0, 12),
            (P, Portal, Some(Us1), 9, 1),
            (P, Portal, Some(Us2), 9, 1),
            (P, Portal, Some(Us3), 8, 1),
            (P, Portal, Some(Eu1), 9, 1),
            (P, Portal, Some(Eu2), 8, 1),
            (P, Portal, Some(GovUs1), 2, 1),
            (P, Portal, Some(GccHigh), 0, 3),
            (A, AccessSessionControls, None, 0, 1),
            (A, AccessSessionControls, Some(Us1), 70, 3),
            (A, AccessSessionControls, Some(Us2), 70, 3),
            (A, AccessSessionControls, Some(Us3), 82, 3),
            (A, AccessSessionControls, Some(Eu1), 70, 3),
            (A, AccessSessionControls, Some(Eu2), 60, 3),
            // The two OCSP hosts of the note.
            (S, SiemAgent, None, 0, 2),
            (S, SiemAgent, Some(Us1), 9, 0),
            (S, SiemAgent, Some(Us2), 9, 0),
            (S, SiemAgent, Some(Us3), 8, 0),
            (S, SiemAgent, Some(Eu1), 9, 0),
            (S, SiemAgent, Some(Eu2), 8, 0),
            (S, SiemAgent, Some(GovUs1), 2, 0),
            (C, AppConnector, Some(Us1), 21, 0),
            (C, AppConnector, Some(Us2), 17, 0),
            (C, AppConnector, Some(Us3), 10, 0),
            (C, AppConnector, Some(Eu1), 17, 0),
            (C, AppConnector, Some(Eu2), 10, 0),
            (C, AppConnector, Some(GovUs1), 3, 0),
            (D, Dlp, Some(Us1), 19, 0),
            (D, Dlp, Some(Us2), 15, 0),
            (D, Dlp, Some(Us3), 8, 0),
            (D, Dlp, Some(Eu1), 15, 0),
            (D, Dlp, Some(Eu2), 8, 0),
            // Six ranges, the MailChimp address and its name.
            (M, Mail, None, 7, 1),
            // The OCSP hosts, one blob host per data center.
            (L, LogCollector, None, 0, 2),
            (L, LogCollector, Some(Us1), 0, 1),
            (L, LogCollector, Some(Us2), 0, 1),
            (L, LogCollector, Some(Us3), 0, 1),
            (L, LogCollector, Some(Eu1), 0, 1),
            (L, LogCollector, Some(Eu2), 0, 1),
            (L, LogCollector, Some(GovUs1), 0, 1),
        ];
    assert_eq!(rows(&imp), expect(want));
    let set = &imp.set;
    assert_eq!(set.name, "cas-2019-11");
    assert_eq!(set.source, PAGE_2019);
    assert_eq!(set.published, "2019-11-01");
    // 45 portal + 352 access + 45 SIEM + 78 app connector + 65 DLP + 7 mail.
    assert_eq!(set.entries.len(), 592);
    assert_eq!(set.ranges().len(), 438);
    // 21 portal + 16 access + 2 SIEM + 1 mail + 8 log collector.
    assert_eq!(set.dns.len(), 48);
    assert_eq!(
        imp.warnings,
        [
            "line 81: ignored \"mod244533.us.portal.cloudappsecurity.com\", given as an \
                 example (not a requirement)",
            "line 187: ignored \"contoso.cloudappsecurity.com\", given as an example \
                 (not a requirement)",
        ]
    );
}

fn names(set: &AddressSet, purpose: Purpose, dc: Option<DataCenter>) -> Vec<String> {
    set.dns
        .iter()
        .filter(|d| d.purpose == purpose && d.datacenter == dc)
        .map(|d| d.name.clone())
        .collect()
}

#[test]
fn dns_names_2019_11() {
    let set = import(PAGE_2019).set;
    assert_eq!(
        names(&set, Portal, None),
        [
            "portal.cloudappsecurity.com",
            "*.portal.cloudappsecurity.com",
            "cdn.cloudappsecurity.com",
            "adaproddiscovery.azureedge.net",
            "*.s-microsoft.com",
            "*.msecnd.net",
            "dev.virtualearth.net",
            "*.cloudappsecurity.com",
            "flow.microsoft.com",
            "static2.sharepointonline.com",
            "dc.services.visualstudio.com",
            "*.blob.core.windows.net",
        ]
    );
    // The GCC High list, then the table's Gov US1 row.
    assert_eq!(
        names(&set, Portal, Some(GccHigh)),
        [
            "portal.cloudappsecurity.us",
            "*.portal.cloudappsecurity.us",
            "cdn.cloudappsecurity.com",
        ]
    );
    assert_eq!(
        names(&set, Portal, Some(GovUs1)),
        ["*.us1.portal.cloudappsecurity.us"]
    );
    assert_eq!(
        names(&set, Portal, Some(Us1)),
        ["*.us.portal.cloudappsecurity.com"]
    );
    // `\*.eu.portal.cloudappsecurity.com<` on the page.
    assert_eq!(
        names(&set, Portal, Some(Eu1)),
        ["*.eu.portal.cloudappsecurity.com"]
    );
    assert_eq!(names(&set, AccessSessionControls, None), ["*.cas.ms"]);
    assert_eq!(
        names(&set, AccessSessionControls, Some(Us1)),
        [
            "*.us1.cas.ms",
            "*.us1.access-control.cas.ms",
            "*.us1.saml.cas.ms"
        ]
    );
    assert_eq!(
        names(&set, LogCollector, Some(Us1)),
        ["adaprodconsole.blob.core.windows.net"]
    );
    assert_eq!(
        names(&set, LogCollector, Some(GovUs1)),
        ["gprd1usgvconsole1.blob.core.usgovcloudapi.net"]
    );
    assert_eq!(names(&set, Mail, None), ["mail1.cloudappsecurity.com"]);
    for purpose in [SiemAgent, LogCollector] {
        assert_eq!(
            names(&set, purpose, None),
            ["ocsp.msocsp.com", "ocsp.digicert.com"]
        );
    }
    for d in &set.dns {
        let ocsp = d.name.starts_with("ocsp.");
        assert_eq!(
            d.ports,
            if ocsp {
                vec![80]
            } else {
                d.purpose.default_ports().to_vec()
            },
            "{d:?}"
        );
        assert_eq!(d.direction, d.purpose.default_direction(), "{d:?}");
    }
    for e in &set.entries {
        assert_eq!(e.ports, e.purpose.default_ports(), "{e:?}");
        assert_eq!(e.direction, e.purpose.default_direction(), "{e:?}");
    }
    let mail = set
        .entries
        .iter()
        .find(|e| e.prefix.to_string() == "198.2.134.139/32");
    assert_eq!(mail.map(|e| (e.purpose, e.datacenter)), Some((Mail, None)));
}

#[test]
fn counts_2017_07() {
    let imp = import(PAGE_2017);
    const S: &str = "Cloud App Security System IP addresses";
    let want: &[Row] = &[
        (S, AppConnector, None, 10, 0),
        (S, Dlp, None, 10, 0),
        ("CAS portal URL and IP addresses", Portal, None, 1, 0),
    ];
    assert_eq!(rows(&imp), expect(want));
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    let set = &imp.set;
    assert_eq!(set.name, "cas-2017-07");
    assert_eq!(set.source, PAGE_2017);
    assert_eq!(set.published, "2017-07-03");
    assert_eq!(set.entries.len(), 21);
    assert_eq!(set.ranges().len(), 11);
    assert!(set.dns.is_empty());
    assert!(set.entries.iter().all(|e| e.datacenter.is_none()));
    let first: Vec<String> = set.entries[..10]
        .iter()
        .map(|e| e.prefix.to_string())
        .collect();
    assert_eq!(
        first,
        [
            "104.209.35.177/32",
            "13.91.98.185/32",
            "40.118.211.172/32",
            "13.93.216.68/32",
            "13.91.61.249/32",
            "13.93.233.42/32",
            "13.64.196.27/32",
            "13.64.198.97/32",
            "13.64.199.41/32",
            "13.64.198.19/32",
        ]
    );
    let portal = set.entries.last().unwrap();
    assert_eq!(portal.prefix.to_string(), "104.42.231.28/32");
    assert_eq!((portal.purpose, portal.ports.clone()), (Portal, vec![443]));
    let dlp = &set.entries[10];
    assert_eq!((dlp.purpose, dlp.direction), (Dlp, Connection::Inbound));
    assert_eq!(dlp.ports, [11344]);
}

#[test]
fn the_name_can_be_chosen() {
    let imp = import_page(&page(PAGE_2017), "old.md", Some("legacy")).unwrap();
    assert_eq!(imp.set.name, "legacy");
    assert_eq!(imp.set.source, "old.md");
}

const SYNTHETIC: &str = "\
---
title: Synthetic
ms.date: 3/9/2024
---
# Network requirements

## Portal access

| Data center | IP addresses | DNS name |
|---|---|---|
| US1 data center | 10.0.0.1<br>10.0.0.2<br></br>10.0.0.3 | \\*.us.portal.contoso.com |
| **EU2** | `10.0.1.1`  <BR/> 10.0.1.0/24 | https:\\//eu2.portal.contoso.net/ |
| US2 | Dynamic | |

For US Government GCC High customers, also allow:

    portal.contoso.us  
    10.0.2.1

Instead, open your tenant URL (for example tenant.portal.contoso.com).

## Access and session controls

> [!div class=\"mx-tableFixed\"]
>
> |Data center|IP addresses||DNS name|
> |----|----|----|----|
> |US2|10.1.0.1<br />10.1.0.2|10.1.0.3<br />10.1.0.1|\\*.us2.cas.ms<|
> |Gov US1|2001:db8::1<br />2001:db8:1::/48||*.gov.cas.ms|

## Mail server

- 100.64.2.0/24  
- **198.51.100.7**

Also allow 203.0.113.5 (mailer.contoso.com) on port 587.

## Firewall appliance

- 198.51.100.200
    appliance.contoso.com

## Next steps

See [the docs](https://docs.contoso.com/x) and ![a picture](media/x.png).
";

#[test]
fn synthetic_page() {
    let imp = import_page(SYNTHETIC, "synthetic.md", None).unwrap();
    let want: &[Row] = &[
        ("Portal access", Portal, Some(Us1), 3, 1),
        ("Portal access", Portal, Some(Eu2), 2, 1),
        ("Portal access", Portal, Some(GccHigh), 1, 1),
        (
            "Access and session controls",
            AccessSessionControls,
            Some(Us2),
            3,
            1,
        ),
        (
            "Access and session controls",
            AccessSessionControls,
            Some(GovUs1),
            2,
            1,
        ),
        ("Mail server", Mail, None, 3, 1),
        ("Firewall appliance", Unknown, None, 1, 1),
    ];
    assert_eq!(rows(&imp), expect(want));
    assert_eq!(
        imp.warnings,
        [
            "line 13: ignored table cell text \"Dynamic\"",
            "line 20: ignored \"tenant.portal.contoso.com\", given as an example (not a \
                 requirement)",
            "section \"Firewall appliance\" (line 38) is not a recognised section: \
                 kept 1 address and 1 DNS name with purpose unknown",
        ]
    );
    let set = &imp.set;
    assert_eq!(set.name, "cas-2024-03");
    assert_eq!(set.published, "2024-03-09");
    let entries: Vec<String> = set
        .entries
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {:?}",
                e.prefix,
                e.datacenter.map_or("-", DataCenter::as_str),
                e.purpose,
                e.ports
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            "10.0.0.1/32 US1 portal [443]",
            "10.0.0.2/32 US1 portal [443]",
            "10.0.0.3/32 US1 portal [443]",
            "10.0.1.1/32 EU2 portal [443]",
            "10.0.1.0/24 EU2 portal [443]",
            "10.0.2.1/32 GCC High portal [443]",
            "10.1.0.1/32 US2 access-session-controls [443]",
            "10.1.0.2/32 US2 access-session-controls [443]",
            "10.1.0.3/32 US2 access-session-controls [443]",
            "2001:db8::1/128 Gov US1 access-session-controls [443]",
            "2001:db8:1::/48 Gov US1 access-session-controls [443]",
            "100.64.2.0/24 - mail [25]",
            "198.51.100.7/32 - mail [25]",
            "203.0.113.5/32 - mail [587]",
            "198.51.100.200/32 - unknown [443]",
        ]
    );
    let dns: Vec<String> = set
        .dns
        .iter()
        .map(|d| {
            format!(
                "{} {} {} {:?}",
                d.name,
                d.datacenter.map_or("-", DataCenter::as_str),
                d.purpose,
                d.ports
            )
        })
        .collect();
    assert_eq!(
        dns,
        [
            "*.us.portal.contoso.com US1 portal [443]",
            "eu2.portal.contoso.net EU2 portal [443]",
            "portal.contoso.us GCC High portal [443]",
            "*.us2.cas.ms US2 access-session-controls [443]",
            "*.gov.cas.ms Gov US1 access-session-controls [443]",
            "mailer.contoso.com - mail [587]",
            "appliance.contoso.com - unknown [443]",
        ]
    );
    // The canonical file reads back to the same set.
    assert_eq!(AddressSet::from_json(&set.to_json()).unwrap(), *set);
}

/// A page version in `../shared/data/pages` (beside the repository, as in
/// CI). Missing is a failure: these are the versions the importer must
/// read.
fn shared_page(file: &str) -> Import {
    let path = format!(
        "{}/../../shared/data/pages/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read {path} ({e}): the shared data must be beside the clone")
    });
    import_page(&text, file, None).unwrap_or_else(|e| panic!("importing {file}: {e}"))
}

/// Expected counts: (section, purpose, data center, region, addresses,
/// names), sorted.
fn sorted(mut rows: Vec<Count>) -> Vec<Count> {
    rows.sort();
    rows
}

fn count(s: &str, p: Purpose, dc: Option<DataCenter>, r: &str, a: usize, d: usize) -> Count {
    (s.to_owned(), p, dc, r.to_owned(), a, d)
}

/// One row per data center of a per-data-center table: (data center,
/// distinct addresses, names).
fn per_dc(s: &str, p: Purpose, rows: &[(DataCenter, usize, usize)]) -> Vec<Count> {
    rows.iter()
        .map(|&(dc, a, d)| count(s, p, Some(dc), "", a, d))
        .collect()
}

/// The 2021-11 page (ms.date 2021-11-09). Addresses counted on the page by
/// table row, and per region label across the rows of a proxy table, with
/// `grep -oE '[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(/[0-9]+)?' | sort -u | wc -l`
/// (the US1 app-connector row has `40.83,.194.193`, read as
/// 40.83.194.193); names by hand.
#[test]
fn counts_2021_11() {
    let imp = shared_page("network-requirements-2021-11-08.md");
    const P: &str = "Portal access";
    const A: &str = "Access and session controls";
    const S: &str = "SIEM agent connection";
    const C: &str = "App connector";
    const D: &str = "Third-party DLP integration";
    let mut want = vec![
        count(P, Portal, None, "", 0, 12),
        count(P, Portal, Some(GccHigh), "", 0, 3),
        count(A, AccessSessionControls, None, "", 0, 15),
        count(A, AccessSessionControls, Some(Gcc), "", 0, 4),
        count(A, AccessSessionControls, Some(Gcc), "usgovvirginia", 7, 0),
        count(A, AccessSessionControls, Some(GccHigh), "", 0, 6),
        count(
            A,
            AccessSessionControls,
            Some(GccHigh),
            "usgovarizona",
            7,
            0,
        ),
        count(
            A,
            AccessSessionControls,
            Some(GccHigh),
            "usgovvirginia",
            7,
            0,
        ),
        count("Mail server", Mail, None, "", 7, 1),
    ];
    for (region, n) in [
        ("australiasoutheast", 13),
        ("brazilsouth", 12),
        ("canadacentral", 8),
        ("centralindia", 8),
        ("eastus", 14),
        ("northeurope", 13),
        ("southeastasia", 13),
        ("ukwest", 7),
        ("westeurope", 6),
        ("westus2", 13),
    ] {
        want.push(count(A, AccessSessionControls, None, region, n, 0));
    }
    #[rustfmt::skip]
    let portal = [(Us1, 9, 1), (Us2, 9, 1), (Us3, 8, 1), (Eu1, 9, 1), (Eu2, 8, 1), (GovUs1, 2, 1), (Gcc, 2, 3)];
    want.extend(per_dc(P, Portal, &portal));
    let siem = portal.map(|(dc, a, _)| (dc, a, 0));
    want.extend(per_dc(S, SiemAgent, &siem));
    #[rustfmt::skip]
    want.extend(per_dc(C, AppConnector, &[(Us1, 37, 0), (Us2, 33, 0), (Us3, 26, 0), (Eu1, 33, 0), (Eu2, 26, 0), (GovUs1, 3, 0), (Gcc, 2, 0)]));
    #[rustfmt::skip]
    want.extend(per_dc(D, Dlp, &[(Us1, 19, 0), (Us2, 15, 0), (Us3, 8, 0), (Eu1, 15, 0), (Eu2, 8, 0)]));
    #[rustfmt::skip]
    want.extend(per_dc("Log collector", LogCollector, &[(Us1, 0, 1), (Us2, 0, 1), (Us3, 0, 1), (Eu1, 0, 1), (Eu2, 0, 1), (GovUs1, 0, 1)]));
    assert_eq!(sorted(rows(&imp)), sorted(want));
    assert_eq!(
        imp.warnings,
        [
            "line 68: ignored \"mod244533.us.portal.cloudappsecurity.com\", given as an example \
             (not a requirement)",
            "line 151: read 40.83.194.193 for the address written with a stray comma",
            "line 205: ignored \"contoso.cloudappsecurity.com\", given as an example (not a \
             requirement)",
        ]
    );
    let set = &imp.set;
    assert_eq!(
        (set.name.as_str(), set.published.as_str()),
        ("cas-2021-11", "2021-11-09")
    );
    assert_eq!(set.entries.len(), 454);
    assert_eq!(set.ranges().len(), 295);
    assert_eq!(set.dns.len(), 56);
    // Every line that held an address is in the report.
    let lines: Vec<usize> = imp
        .lines
        .iter()
        .filter(|l| l.addresses > 0)
        .map(|l| l.line)
        .collect();
    #[rustfmt::skip]
    assert_eq!(lines, [59, 60, 61, 62, 63, 64, 65, 89, 90, 91, 109, 110, 111, 117, 118, 119, 127, 128,
        129, 130, 131, 132, 133, 151, 152, 153, 154, 155, 156, 157, 177, 178, 179, 180, 181, 187,
        188, 189, 190, 191, 192, 198]);
}

/// The 2024-11 page (ms.date 2024-02-29), counted as for 2021-11.
#[test]
fn counts_2024_11() {
    let imp = shared_page("network-requirements-2024-11-03.md");
    const P: &str = "Portal access";
    const A: &str = "Access and session controls";
    let mut want = vec![
        count(P, Portal, None, "", 0, 7),
        count(A, AccessSessionControls, None, "", 0, 9),
        count(A, AccessSessionControls, Some(Gcc), "", 0, 4),
        count(A, AccessSessionControls, Some(Gcc), "usgovarizona", 5, 0),
        count(A, AccessSessionControls, Some(Gcc), "usgovvirginia", 23, 0),
        count(A, AccessSessionControls, Some(GccHigh), "", 0, 5),
        count(
            A,
            AccessSessionControls,
            Some(GccHigh),
            "usgovarizona",
            12,
            0,
        ),
        count(
            A,
            AccessSessionControls,
            Some(GccHigh),
            "usgovvirginia",
            22,
            0,
        ),
        count("Mail server", Mail, None, "", 6, 0),
    ];
    for (region, n) in [
        ("australiasoutheast", 22),
        ("brazilsouth", 23),
        ("canadacentral", 22),
        ("centralindia", 21),
        ("eastasia", 12),
        ("eastus", 24),
        ("francecentral", 13),
        ("northeurope", 22),
        ("southeastasia", 13),
        ("ukwest", 18),
        ("westeurope", 18),
        ("westus2", 11),
        ("westus3", 15),
    ] {
        want.push(count(A, AccessSessionControls, None, region, n, 0));
    }
    #[rustfmt::skip]
    let portal = [(Us1, 11, 1), (Us2, 11, 1), (Us3, 10, 1), (Eu1, 11, 1), (Eu2, 10, 1), (GovUs1, 2, 1), (Gcc, 2, 1)];
    want.extend(per_dc(P, Portal, &portal));
    want.extend(per_dc(
        "SIEM agent connection",
        SiemAgent,
        &portal.map(|(dc, a, _)| (dc, a, 0)),
    ));
    #[rustfmt::skip]
    want.extend(per_dc("App connector", AppConnector, &[(Us1, 94, 0), (Us2, 73, 0), (Us3, 123, 0), (Eu1, 69, 0), (Eu2, 72, 0), (GovUs1, 45, 0), (Gcc, 46, 0)]));
    #[rustfmt::skip]
    want.extend(per_dc("Log collector", LogCollector, &[(Us1, 0, 1), (Us2, 0, 1), (Us3, 0, 1), (Eu1, 0, 1), (Eu2, 0, 1), (GovUs1, 0, 1), (Gcc, 0, 1)]));
    assert_eq!(sorted(rows(&imp)), sorted(want));
    assert_eq!(
        imp.warnings,
        ["line 53: ignored \"contoso.us.portal.cloudappsecurity.com\", given as an example (not \
          a requirement)"]
    );
    let set = &imp.set;
    assert_eq!(
        (set.name.as_str(), set.published.as_str()),
        ("cas-2024-02", "2024-02-29")
    );
    assert_eq!(set.entries.len(), 938);
    assert_eq!(set.ranges().len(), 829);
    assert_eq!(set.dns.len(), 39);
    // The proxy rows name their regions, and those entries their cloud.
    let e = set
        .entries
        .iter()
        .find(|e| e.prefix.to_string() == "52.244.144.65/32")
        .unwrap();
    assert_eq!(e.datacenter, Some(GccHigh));
    assert_eq!(e.region.as_ref().map(Region::as_str), Some("usgovarizona"));
    assert_eq!(e.cloud.as_deref(), Some("AzureGovernment"));
}

/// Shapes of page versions the importer was not built from (2023, 2025:
/// combined headings, headerless tables, separator rows longer than the
/// table, tables inside list items, region lists, GCC rows, column
/// headers naming data centers, any separator in a cell, a typo, curly
/// quotes, an authentication gateway, an unknown section).
const SHAPES: &str = "\
---
ms.date: 05/12/2025
---
# Network requirements

## Portal access, SIEM agent and log collector

Allow outbound port 443 to the **AzureFrontDoor.MicrosoftSecurity** service tag and:

|----|----|
|US1 data center|10.1.0.1|
|EU1 data center|10.1.0.2, 10.1.0.3  10.1.0.4;10.1.0.0/30 and 10.1.0.2|
|Gov US1|10.1.1.1<br />10.1.1.2|
|GCC High|10.1.2.1|

## App connector access and external DLP integration

1. Allow connections from these addresses:

   | Data center | IP addresses |
   |----|----|----|
   | US1 | 10.2.0.0/24, 10.2.1.1 |
   | US2 | 10.2.2.1, 10.2,.2.2, 10.2.2.1 |
   | US3 | Use the MicrosoftCloudAppSecurity service tag |

## Access and session controls

| | IP addresses | DNS name |
|--|--|--|
| **Session controls** | West Europe: 10.3.0.1, 10.3.0.2<br /><br />UK South: 10.3.1.1 | \\*.eu.cas.ms, *.eu2.cas.ms |
| **SAML proxy** | Atlantis North: 10.3.9.9 | |

For **US Government GCC** customers:

- US Gov Virginia: 10.3.2.1, 2001:db8:3::/48

## Authentication gateway

- 10.4.0.1
- 10.4.0.2

## Partner appliances

Allow \u{201c}10.5.0.1\u{201d} and 10.5.0.2 \u{2013} both.

|US1|EU2|
|---|---|
|10.5.1.1|10.5.2.1|

## Next steps

Nothing here.
";

#[test]
fn page_shapes_of_unseen_versions() {
    let imp = import_page(SHAPES, "shapes.md", None).unwrap();
    const P: &str = "Portal access, SIEM agent and log collector";
    const C: &str = "App connector access and external DLP integration";
    const A: &str = "Access and session controls";
    const G: &str = "Authentication gateway";
    const U: &str = "Partner appliances";
    let row = |s: &str, p, dc, r: &str, a, d| (s.to_owned(), p, dc, r.to_owned(), a, d);
    let mut want = Vec::new();
    for p in [Portal, SiemAgent, LogCollector] {
        want.extend([
            row(P, p, Some(Us1), "", 1, 0),
            row(P, p, Some(Eu1), "", 4, 0),
            row(P, p, Some(GovUs1), "", 2, 0),
            row(P, p, Some(GccHigh), "", 1, 0),
        ]);
    }
    for p in [AppConnector, Dlp] {
        want.extend([
            row(C, p, Some(Us1), "", 2, 0),
            row(C, p, Some(Us2), "", 2, 0),
        ]);
    }
    want.extend([
        row(A, AccessSessionControls, None, "", 0, 2),
        row(A, AccessSessionControls, None, "uksouth", 1, 0),
        row(A, AccessSessionControls, None, "westeurope", 2, 0),
        row(A, AccessSessionControls, Some(Gcc), "usgovvirginia", 2, 0),
        // "Atlantis North" is no region: kept without one.
        row(A, AccessSessionControls, None, "", 1, 0),
        row(G, AuthGateway, None, "", 2, 0),
        row(U, Unknown, None, "", 2, 0),
        row(U, Unknown, Some(Us1), "", 1, 0),
        row(U, Unknown, Some(Eu2), "", 1, 0),
    ]);
    let mut got = rows(&imp);
    got.sort();
    want.sort();
    // The DNS-only and the address-only "no place" rows of access and
    // session controls are one row.
    want.retain(|r| !(r.0 == A && r.2.is_none() && r.3.is_empty()));
    want.push(row(A, AccessSessionControls, None, "", 1, 2));
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        imp.warnings,
        [
            "line 23: read 10.2.2.2 for the address written with a stray comma",
            "section \"Partner appliances\" (line 42) is not a recognised section: kept 4 \
             addresses and 0 DNS names with purpose unknown",
        ]
    );
    let line = |n: usize| imp.lines.iter().find(|l| l.line == n).unwrap().clone();
    assert_eq!(
        line(8).notes,
        [
            "names the Service Tag AzureFrontDoor.MicrosoftSecurity: import a Service Tags file \
             for its addresses"
        ]
    );
    let eu1 = line(12);
    assert_eq!(
        (eu1.addresses, eu1.places.clone()),
        (5, vec!["EU1".to_owned()])
    );
    assert_eq!(eu1.purposes, [Portal, SiemAgent, LogCollector]);
    assert_eq!(
        line(24).notes,
        [
            "names the Service Tag MicrosoftCloudAppSecurity: import a Service Tags file for its \
          addresses"
        ]
    );
    let atl = line(31);
    assert_eq!(atl.places, ["-"]);
    assert_eq!(
        atl.notes,
        [
            "row \"SAML proxy\"",
            "\"Atlantis North\" is no known Azure region or data center: its addresses are \
             kept without it"
        ]
    );
    let set = &imp.set;
    let find = |prefix: &str| {
        set.entries
            .iter()
            .find(|e| e.prefix.to_string() == prefix)
            .unwrap_or_else(|| panic!("{prefix}"))
            .clone()
    };
    let we = find("10.3.0.1/32");
    assert_eq!(
        (we.region.as_ref().map(Region::as_str), we.cloud.as_deref()),
        (Some("westeurope"), Some("Public"))
    );
    let gov = find("2001:db8:3::/48");
    assert_eq!(gov.datacenter, Some(Gcc));
    assert_eq!(gov.cloud.as_deref(), Some("AzureGovernment"));
    let gw = find("10.4.0.1/32");
    assert_eq!(
        (gw.purpose, gw.direction, gw.ports.clone()),
        (AuthGateway, Connection::Outbound, vec![443])
    );
    let unknown = find("10.5.0.1/32");
    assert_eq!(
        (unknown.purpose, unknown.ports.clone()),
        (Unknown, vec![443])
    );
    assert_eq!(set.sources.len(), 1);
    assert_eq!(set.sources[0].id, "page-2025-05-12");
    assert!(set.entries.iter().all(|e| e.sources == ["page-2025-05-12"]));
    let names: Vec<&str> = set.dns.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["*.eu.cas.ms", "*.eu2.cas.ms"]);
}

/// The page with the first `from` replaced by `to`.
fn edited(file: &str, from: &str, to: &str) -> String {
    let text = page(file);
    assert!(text.contains(from), "{from:?} in {file}");
    text.replacen(from, to, 1)
}

#[test]
fn bad_addresses_name_their_line() {
    // The first US1 portal address (line 73 of the page).
    let text = edited(
        PAGE_2019,
        "|US1|13.64.26.88<br />",
        "|US1|13.64.26.888<br />",
    );
    let e = import_page(&text, PAGE_2019, None).unwrap_err();
    assert_eq!(
        e,
        ImportError::BadAddress {
            line: 73,
            text: "13.64.26.888".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "line 73: \"13.64.26.888\" is not a valid IP address or CIDR prefix"
    );
    // A mail range (line 170).
    let text = edited(PAGE_2019, "- 207.46.200.0/27", "- 10.0.0.0/33");
    assert_eq!(
        import_page(&text, PAGE_2019, None).unwrap_err().to_string(),
        "line 170: \"10.0.0.0/33\" is not a valid IP address or CIDR prefix"
    );
    // Host bits set: refused, as the set file it would give is refused.
    let text = edited(PAGE_2019, "- 207.46.200.0/27", "- 207.46.200.9/27");
    assert_eq!(
        import_page(&text, PAGE_2019, None).unwrap_err().to_string(),
        "line 170: prefix \"207.46.200.9/27\" has host bits set: it is neither the network \
         207.46.200.0/27 nor the one address 207.46.200.9/32, and is refused rather than guessed"
    );
    // The MailChimp address in prose (line 180).
    let text = edited(PAGE_2019, "sent: 198.2.134.139", "sent: 198.2.134.1399");
    assert_eq!(
        import_page(&text, PAGE_2019, None).unwrap_err(),
        ImportError::BadAddress {
            line: 180,
            text: "198.2.134.1399".into()
        }
    );
    // An indented address of the 2017 page, trailing spaces kept (line 44).
    let text = edited(PAGE_2017, "    13.93.216.68\n", "    13.93.216.680  \n");
    assert_eq!(
        import_page(&text, PAGE_2017, None).unwrap_err(),
        ImportError::BadAddress {
            line: 44,
            text: "13.93.216.680".into()
        }
    );
    // An IPv6 prefix in a synthetic list.
    let text = "---\nms.date: 1/2/2020\n---\n## Mail server\n\n- 2001:db8::/129\n";
    assert_eq!(
        err(text),
        ImportError::BadAddress {
            line: 6,
            text: "2001:db8::/129".into()
        }
    );
    // Three dotted numbers in a list are a truncated address.
    let text = "---\nms.date: 1/2/2020\n---\n## Mail server\n- 10.0.0\n";
    assert_eq!(
        err(text).to_string(),
        "line 5: \"10.0.0\" is not a valid IP address or CIDR prefix"
    );
}

#[test]
fn unknown_data_center_is_a_warning_and_keeps_the_row() {
    let text = edited(
        PAGE_2019,
        "> |US2|13.80.125.22<br />20.36",
        "> |US4|13.80.125.22<br />20.36",
    );
    let imp = import_page(&text, PAGE_2019, None).unwrap();
    assert!(
        imp.warnings.contains(
            &"line 74: unknown data center \"US4\": its addresses are kept without a data center"
                .to_owned()
        ),
        "{:?}",
        imp.warnings
    );
    // The row's 9 addresses are kept, for no data center.
    let row = imp
        .counts
        .iter()
        .find(|c| c.purpose == Portal && c.datacenter.is_none() && c.addresses > 0)
        .expect("the US4 row");
    assert_eq!(row.addresses, 9);
    let line = imp.lines.iter().find(|l| l.line == 74).unwrap();
    assert_eq!((line.addresses, line.dns_names), (9, 1));
    assert_eq!(line.places, ["-"]);
}

#[test]
fn pages_that_cannot_be_imported() {
    assert_eq!(err("## Portal access\n- 10.0.0.1\n"), ImportError::NoDate);
    assert_eq!(
        err("---\ntitle: x\n---\n## Portal access\n- 10.0.0.1\n").to_string(),
        "the page has no ms.date line in its front matter (expected e.g. `ms.date: 11/01/2019`)"
    );
    let e = err("---\ntitle: x\nms.date: 13/01/2019\n---\n");
    assert_eq!(
        e,
        ImportError::BadDate {
            line: 3,
            text: "13/01/2019".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "line 3: ms.date \"13/01/2019\" is not a date (expected MM/DD/YYYY)"
    );
    assert_eq!(
        err("---\nms.date: 2/30/2019\n---\n"),
        ImportError::BadDate {
            line: 2,
            text: "2/30/2019".into()
        }
    );
    let e = err("---\nms.date: 1/2/2020\n---\n## Something else\n- 10.0.0.1\n");
    assert_eq!(e, ImportError::NoSection);
    assert!(
        e.to_string()
            .starts_with("the page has no recognised section (expected headings"),
        "{e}"
    );
    let e = err("---\nms.date: 1/2/2020\n---\n## Portal access\nNothing yet.\n## Mail server\n");
    assert_eq!(
        e,
        ImportError::Empty {
            sections: vec!["Portal access".into(), "Mail server".into()]
        }
    );
    assert_eq!(
        e.to_string(),
        "the recognised sections (Portal access, Mail server) hold no IP address or DNS name"
    );
    // Other pages of the same documentation.
    let e = import_page(&page("connect-exchange-online.md"), "c.md", None).unwrap_err();
    assert_eq!(e, ImportError::NoSection);
    let e = import_page(&page("connect-apps.md"), "c.md", None).unwrap_err();
    assert_eq!(e, ImportError::NoDate);
}

#[test]
fn subsections_stay_in_their_section() {
    let text = "---\nms.date: 2020-01-02\n---\n## App connector\n### US1\n- 10.0.0.1\n\
                    ## Other\n- 10.0.0.2\n- 10.0.0.3\n";
    let imp = import_page(text, "t.md", None).unwrap();
    assert_eq!(imp.set.published, "2020-01-02");
    let want: &[Row] = &[
        ("App connector", AppConnector, None, 1, 0),
        ("Other", Unknown, None, 2, 0),
    ];
    assert_eq!(rows(&imp), expect(want));
    assert_eq!(
        imp.warnings,
        [
            "section \"Other\" (line 7) is not a recognised section: kept 2 addresses \
              and 0 DNS names with purpose unknown"
        ]
    );
}

#[test]
fn helpers() {
    assert_eq!(
        split_br("a<br>b<br />c<br/>d<br></br>e<BR />f"),
        ["a", "b", "c", "d", "", "e", "f"]
    );
    assert_eq!(split_br("x<y"), ["x<y"]);
    assert_eq!(parse_date("7/3/2017").as_deref(), Some("2017-07-03"));
    assert_eq!(parse_date("02/29/2020").as_deref(), Some("2020-02-29"));
    assert_eq!(parse_date("02/29/2019"), None);
    assert_eq!(parse_date("11/01/19"), None);
    assert_eq!(
        clean("https:\\//a.b.windows.net/"),
        ("a.b.windows.net".into(), true)
    );
    assert_eq!(
        clean("\\*.eu.portal.cloudappsecurity.com<"),
        ("*.eu.portal.cloudappsecurity.com".into(), false)
    );
    assert_eq!(clean("**13.64.26.88**"), ("13.64.26.88".into(), false));
    assert_eq!(clean("(2001:db8::)."), ("2001:db8::".into(), false));
    assert_eq!(datacenter_label("US1 data center"), Some(Us1));
    assert_eq!(datacenter_label("**Gov US1**"), Some(GovUs1));
    assert_eq!(datacenter_label("GCC High"), Some(GccHigh));
    assert_eq!(datacenter_label("GCC"), Some(Gcc));
    assert_eq!(datacenter_label("US Government GCC High"), Some(GccHigh));
    assert_eq!(datacenter_label("US Gov"), Some(GovUs1));
    assert_eq!(datacenter_label(""), None);
    assert_eq!(datacenter_label("US4"), None);
    assert_eq!(
        prose_ports("allow ports 80 and 443, then"),
        Some(vec![80, 443])
    );
    assert_eq!(prose_ports("the stunnel port number is 11344"), None);
    assert!(in_example("for example, open: x.com", 19));
    assert!(!in_example("see www.example.com. then x.com", 26));
    assert!(!in_example("for example this. then x.com", 23));
}

/// The quadratic `strip_links` the page reader had: find the first `](`,
/// replace, search again from the start.
fn strip_links_reference(text: &str) -> String {
    let mut out = text.to_owned();
    while let Some(mid) = out.find("](") {
        let Some(open) = out[..mid].rfind('[') else {
            break;
        };
        let Some(close) = out[mid + 2..].find(')').map(|c| mid + 2 + c) else {
            break;
        };
        let image = open > 0 && out.as_bytes()[open - 1] == b'!';
        let (start, replacement) = if image {
            (open - 1, String::new())
        } else {
            (open, out[open + 1..mid].to_owned())
        };
        out.replace_range(start..=close, &replacement);
    }
    out
}

/// The quadratic `in_example` the page reader had: every mention before
/// the word, searched again for every word.
fn in_example_reference(lower: &str, pos: usize) -> bool {
    let before = &lower[..pos];
    let part_of_name = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.');
    ["example", "e.g."]
        .iter()
        .flat_map(|w| before.match_indices(w).map(move |(i, _)| (i, i + w.len())))
        .filter(|&(start, end)| {
            !part_of_name(before[..start].chars().next_back())
                && (before[..end].ends_with('.') || !part_of_name(before[end..].chars().next()))
        })
        .map(|(_, end)| end)
        .max()
        .is_some_and(|k| !before[k..].contains(". "))
}

/// Pseudo-random strings over `alphabet` (xorshift: the same every run).
fn strings(alphabet: &[&str], count: usize, max_len: usize) -> Vec<String> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count)
        .map(|_| {
            let len = (next() % max_len as u64) as usize;
            (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect()
        })
        .collect()
}

/// The linear rewrites read every text as the quadratic originals did.
#[test]
fn linear_rewrites_agree_with_the_originals() {
    for s in strings(&["[", "]", "(", ")", "!", "a", "](", "b c"], 20_000, 14) {
        assert_eq!(strip_links(&s), strip_links_reference(&s), "{s:?}");
    }
    // Longer texts, dense in brackets: links whose removal makes another
    // `](` where their text starts, several deep.
    for s in strings(&["[", "]", "(", ")", "!", "a", "](", "]("], 50_000, 48) {
        assert_eq!(strip_links(&s), strip_links_reference(&s), "{s:?}");
    }
    for (s, want) in [
        ("[[[[x](a)](b)](c)](d) e", "x e"),
        ("[a][(b](c)](d)", "a"),
        ("[![img](i.png)](https://x) [t](u)", " t"),
        ("no link [here] (or here)", "no link [here] (or here)"),
        ("](x) [a](b)", "](x) [a](b)"),
        ("[a](b", "[a](b"),
    ] {
        assert_eq!(strip_links(s), want, "{s:?}");
        assert_eq!(strip_links_reference(s), want, "{s:?}");
    }
    let words = [
        "example", "e.g.", ". ", " ", "x.com", "www.", "a", ".", "1.2.3.4", ",",
    ];
    for s in strings(&words, 5_000, 12) {
        for pos in 0..=s.len() {
            assert_eq!(
                in_example(&s, pos),
                in_example_reference(&s, pos),
                "{s:?} at {pos}"
            );
        }
    }
}

/// A comma typed inside an address is repaired and reported once per
/// address, however many the address has.
#[test]
fn stray_commas_are_reported_once_per_address() {
    assert_eq!(
        repair_dotted("40.83,.194.193 and 1,.2,.3,.4"),
        (
            "40.83.194.193 and 1.2.3.4".to_string(),
            vec!["40.83.194.193".to_string(), "1.2.3.4".to_string()]
        )
    );
}

/// One prose line of 840 KB (the trial's size), every word an address
/// or a link, is read (the time it takes is measured by `cargo xtask
/// bench`, not here).
#[test]
fn a_long_prose_line_imports() {
    let mut line = String::new();
    while line.len() < 840_000 {
        line.push_str(
            "the portal at 13.64.196.27, see [docs](https://x.invalid), e.g. 13.64.196.28. ",
        );
    }
    let page = format!("---\nms.date: 3/9/2024\n---\n# Portal access\n\n{line}\n");
    let set = import_page(&page, "long.md", None).unwrap().set;
    let prefixes: Vec<String> = set.entries.iter().map(|e| e.prefix.to_string()).collect();
    assert_eq!(prefixes, ["13.64.196.27/32"]);
}
