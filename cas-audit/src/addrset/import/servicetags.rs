//! Importing an Azure Service Tags file into an [`AddressSet`].
//!
//! Microsoft publishes the address prefixes of Azure services weekly as JSON,
//! one file per cloud ("Azure IP Ranges and Service Tags – Public", "– US
//! Government", "– China"; <https://www.microsoft.com/download/details.aspx?id=56519>),
//! and through the REST API (`Service Tags - List`,
//! `az network list-service-tags`). The "Network requirements" page points
//! to two of its tags:
//!
//! * `MicrosoftCloudAppSecurity`: "the latest IP ranges" of Defender for
//!   Cloud Apps. The global tag (region `""`) is the complete list; the
//!   regional tags `MicrosoftCloudAppSecurity.<Region>` only say which Azure
//!   region a prefix is in. A global prefix takes the region of every
//!   regional prefix it contains or is contained in (containment, not
//!   text: a global `/30` and a regional tag's two `/32`s inside it are one
//!   place); a prefix of no regional tag has no region (since early 2025,
//!   about 400 of them). A regional prefix outside every global one is
//!   kept too, with a warning. Its entries are `app-connector` and `dlp`
//!   (inbound: the service connects from them to your apps and your DLP
//!   stunnel), the purposes of the page section that names this tag ("App
//!   connector access and external DLP integration").
//! * `AzureFrontDoor.MicrosoftSecurity` (since April 2025): the Front Door
//!   addresses of the portal, shared with other Microsoft security services
//!   such as Intune. Its entries are `portal`, `siem-agent` and
//!   `log-collector` (outbound, port 443: the page section "Portal access,
//!   SIEM agent and log collector" names it), marked `shared`.
//!
//! Every entry carries the file's `cloud` and the set's one [`Source`]:
//! kind `service-tags`, the file's `changeNumber` and `cloud`, each used
//! tag's `changeNumber` and prefix count, the file's date and SHA-256. The
//! date names the version (change numbers are not monotonic between
//! files): it comes from the file name (`ServiceTags_Public_20240610.json`,
//! `..._2025-11-10_...`), else from the caller ([`import_service_tags`]).
//!
//! Every published variant is read: the weekly download (`changeNumber` a
//! number) and the REST form (`id`, `name`, `type`, `nextLink` at the top,
//! `changeNumber` a string); files before August 2020 without `regionId`
//! and `networkFeatures`; `networkFeatures: null`; empty `addressPrefixes`;
//! CRLF or LF line endings, with or without a final newline, with or
//! without a byte-order mark. Other tags are read past without a look.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::IpNet;
use serde::Deserialize;

use crate::addrset::{
    host_bits, parse_prefix, AddressSet, Entry, Purpose, Region, Source, SourceKind, TagVersion,
};

/// The global Defender for Cloud Apps tag.
pub const MCAS_TAG: &str = "MicrosoftCloudAppSecurity";
/// The Front Door tag of the portal (shared).
pub const FRONT_DOOR_TAG: &str = "AzureFrontDoor.MicrosoftSecurity";

/// The purposes of the prefixes of [`MCAS_TAG`] and its regional tags.
pub const MCAS_PURPOSES: [Purpose; 2] = [Purpose::AppConnector, Purpose::Dlp];
/// The purposes of the prefixes of [`FRONT_DOOR_TAG`].
pub const FRONT_DOOR_PURPOSES: [Purpose; 3] =
    [Purpose::Portal, Purpose::SiemAgent, Purpose::LogCollector];

/// A `changeNumber`: a number in the download, a string in the REST form.
#[derive(Deserialize)]
#[serde(untagged)]
enum ChangeNumber {
    Number(u64),
    Text(String),
}

impl ChangeNumber {
    fn value(&self) -> Option<u64> {
        match self {
            ChangeNumber::Number(n) => Some(*n),
            ChangeNumber::Text(t) => t.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFile {
    #[serde(default)]
    change_number: Option<ChangeNumber>,
    #[serde(default)]
    cloud: Option<String>,
    values: Vec<RawTag>,
}

#[derive(Deserialize)]
struct RawTag {
    name: String,
    #[serde(default)]
    properties: Option<RawProperties>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProperties {
    #[serde(default)]
    change_number: Option<ChangeNumber>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    address_prefixes: Option<Vec<String>>,
}

/// What one tag of the file gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagReport {
    /// The tag's name.
    pub name: String,
    /// Its `changeNumber`.
    pub change_number: Option<u64>,
    /// The region it names (regional tags).
    pub region: Option<Region>,
    /// Its prefixes (IPv4, IPv6).
    pub prefixes: (usize, usize),
    /// What was done with them.
    pub used_as: String,
}

/// The result of [`import_service_tags`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The imported set.
    pub set: AddressSet,
    /// One line per tag used, in file order.
    pub tags: Vec<TagReport>,
    /// Prefixes per region of the global tag (`None`: in no regional tag).
    pub regions: Vec<(Option<Region>, usize)>,
    /// How many tags the file has in all.
    pub tags_in_file: usize,
    /// What needs a look.
    pub warnings: Vec<String>,
}

/// Why a Service Tags file cannot be imported.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TagsError {
    /// Not JSON of the Service Tags shape.
    #[error("not a Service Tags file: {message} (at line {line}, column {column})")]
    Json {
        /// 1-based line (0 if unknown).
        line: usize,
        /// 1-based column (0 if unknown).
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// None of the tags cas-audit reads.
    #[error(
        "none of its {tags} tags is {MCAS_TAG}, {MCAS_TAG}.<Region> or {FRONT_DOOR_TAG} \
         (is it an excerpt of another service?)"
    )]
    NoCasTag {
        /// Tags in the file.
        tags: usize,
    },
    /// A prefix of a tag that does not parse.
    #[error("tag {tag}: {text:?} is not an IP prefix")]
    BadPrefix {
        /// The tag.
        tag: String,
        /// The text.
        text: String,
    },
    /// A prefix of a tag with host bits set: the network or the one
    /// address? Refused (a set file holding it would be refused too).
    #[error(
        "tag {tag}: prefix {text:?} has host bits set: it is neither the network {network} \
         nor the one address {address}, and is refused rather than guessed"
    )]
    HostBits {
        /// The tag.
        tag: String,
        /// The prefix as written.
        text: String,
        /// The network it would be truncated to.
        network: IpNet,
        /// The address as a host prefix.
        address: IpNet,
    },
}

/// The date in a Service Tags file name, `YYYY-MM-DD`:
/// `ServiceTags_Public_20240610.json` or `..._2025-11-10_...`.
#[must_use]
pub fn date_in_name(name: &str) -> Option<String> {
    let b = name.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let digits = |from: usize, n: usize| (from..from + n).all(digit);
    (0..b.len())
        .filter(|&i| i == 0 || !digit(i - 1))
        .find_map(|i| {
            let text = if digits(i, 4)
                && b.get(i + 4) == Some(&b'-')
                && digits(i + 5, 2)
                && b.get(i + 7) == Some(&b'-')
                && digits(i + 8, 2)
                && !digit(i + 10)
            {
                name[i..i + 10].to_owned()
            } else if digits(i, 8) && !digit(i + 8) {
                format!(
                    "{}-{}-{}",
                    &name[i..i + 4],
                    &name[i + 4..i + 6],
                    &name[i + 6..i + 8]
                )
            } else {
                return None;
            };
            super::parse_date(&text)
        })
}

/// Imports a Service Tags file (see the module documentation).
///
/// `file` is its name (recorded in the set), `date` its date
/// (`YYYY-MM-DD`: [`date_in_name`], else what the caller knows, such as
/// the file's modification time); `name` defaults to
/// `tags-<cloud>-<date>`.
///
/// # Errors
/// [`TagsError::Json`] when the text is not a Service Tags document,
/// [`TagsError::NoCasTag`] without any tag cas-audit reads,
/// [`TagsError::BadPrefix`] for a prefix that does not parse.
pub fn import_service_tags(
    text: &str,
    file: &str,
    date: &str,
    name: Option<&str>,
) -> Result<Import, TagsError> {
    let raw: RawFile =
        serde_json::from_str(text.trim_start_matches('\u{feff}')).map_err(|e| TagsError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
    let cloud = raw.cloud.clone().filter(|c| !c.trim().is_empty());
    let mut source = Source::new(SourceKind::ServiceTags, file, date, text);
    if let Some(c) = &cloud {
        source.id = format!("tags-{}-{date}", c.to_ascii_lowercase());
    }
    source.cloud = cloud.clone();
    source.change_number = raw.change_number.as_ref().and_then(ChangeNumber::value);
    let mut warnings = Vec::new();
    if raw
        .change_number
        .as_ref()
        .is_some_and(|c| c.value().is_none())
    {
        warnings.push("the file's changeNumber is not a number: not kept".to_owned());
    }

    // The tags cas-audit reads, parsed.
    struct Tag {
        name: String,
        change_number: Option<u64>,
        region: Option<Region>,
        prefixes: Vec<IpNet>,
    }
    let mut global: Option<Tag> = None;
    let mut regional: Vec<Tag> = Vec::new();
    let mut front_door: Option<Tag> = None;
    for t in &raw.values {
        let suffix = t.name.strip_prefix(MCAS_TAG);
        let kind = match suffix {
            Some("") => 0,
            Some(s) if s.starts_with('.') => 1,
            _ if t.name == FRONT_DOOR_TAG => 2,
            _ => continue,
        };
        let props = t.properties.as_ref();
        let mut prefixes = Vec::new();
        for p in props
            .and_then(|p| p.address_prefixes.as_deref())
            .unwrap_or_default()
        {
            let prefix = parse_prefix(p).ok_or_else(|| TagsError::BadPrefix {
                tag: t.name.clone(),
                text: p.clone(),
            })?;
            if let Some((network, address)) = host_bits(&prefix) {
                return Err(TagsError::HostBits {
                    tag: t.name.clone(),
                    text: p.clone(),
                    network,
                    address,
                });
            }
            prefixes.push(prefix);
        }
        let region = match suffix.and_then(|s| s.strip_prefix('.')) {
            Some(s) => s
                .parse::<Region>()
                .ok()
                .or_else(|| props.and_then(|p| p.region.as_deref()?.parse().ok())),
            None => None,
        };
        let tag = Tag {
            name: t.name.clone(),
            change_number: props
                .and_then(|p| p.change_number.as_ref())
                .and_then(ChangeNumber::value),
            region,
            prefixes,
        };
        match kind {
            0 => global = Some(tag),
            1 => regional.push(tag),
            _ => front_door = Some(tag),
        }
    }
    if global.is_none() && regional.is_empty() && front_door.is_none() {
        return Err(TagsError::NoCasTag {
            tags: raw.values.len(),
        });
    }

    // Regions of the global prefixes, by containment either way.
    let mut regions_of: Vec<BTreeSet<Region>> =
        vec![BTreeSet::new(); global.as_ref().map_or(0, |g| g.prefixes.len())];
    let mut orphans: Vec<(IpNet, Region)> = Vec::new();
    if let Some(g) = &global {
        let index: HashMap<IpNet, usize> = g
            .prefixes
            .iter()
            .enumerate()
            .map(|(i, p)| (p.trunc(), i))
            .collect();
        // Prefix lengths in use, per family (IPv4, IPv6).
        let mut lens: [BTreeSet<u8>; 2] = Default::default();
        for p in index.keys() {
            lens[usize::from(p.addr().is_ipv6())].insert(p.prefix_len());
        }
        for r in &regional {
            let Some(region) = &r.region else {
                warnings.push(format!(
                    "tag {}: no region can be read from its name or its region field: its \
                     prefixes place nothing",
                    r.name
                ));
                continue;
            };
            for q in &r.prefixes {
                let lens = &lens[usize::from(q.addr().is_ipv6())];
                let hits = covering_or_inside(q, &index, lens, &g.prefixes);
                if hits.is_empty() {
                    orphans.push((*q, region.clone()));
                }
                for i in hits {
                    regions_of[i].insert(region.clone());
                }
            }
        }
    } else {
        for r in &regional {
            if let Some(region) = &r.region {
                orphans.extend(r.prefixes.iter().map(|q| (*q, region.clone())));
            }
        }
        if !regional.is_empty() {
            warnings.push(format!(
                "the file has no global {MCAS_TAG} tag: the regional tags' prefixes are taken \
                 as they are"
            ));
        }
    }
    if global.is_some() && !orphans.is_empty() {
        let shown: Vec<String> = orphans
            .iter()
            .take(5)
            .map(|(p, r)| format!("{p} ({r})"))
            .collect();
        warnings.push(format!(
            "{} prefixes of regional {MCAS_TAG} tags are in no prefix of the global tag (which \
             should hold them all): kept; {}",
            orphans.len(),
            shown.join(", ")
        ));
    }

    let ids = vec![source.id.clone()];
    let entry = |prefix: IpNet, region: Option<Region>, purpose: Purpose, shared: bool| Entry {
        cloud: cloud.clone(),
        region,
        shared,
        sources: ids.clone(),
        ..Entry::new(prefix, None, purpose)
    };
    let mut entries = Vec::new();
    let mut per_region: BTreeMap<Option<Region>, usize> = BTreeMap::new();
    if let Some(g) = &global {
        for (p, regions) in g.prefixes.iter().zip(&regions_of) {
            let places: Vec<Option<Region>> = if regions.is_empty() {
                vec![None]
            } else {
                regions.iter().cloned().map(Some).collect()
            };
            for r in places {
                *per_region.entry(r.clone()).or_default() += 1;
                for purpose in MCAS_PURPOSES {
                    entries.push(entry(*p, r.clone(), purpose, false));
                }
            }
        }
    }
    for (p, r) in &orphans {
        for purpose in MCAS_PURPOSES {
            entries.push(entry(*p, Some(r.clone()), purpose, false));
        }
    }
    if let Some(f) = &front_door {
        for p in &f.prefixes {
            for purpose in FRONT_DOOR_PURPOSES {
                entries.push(entry(*p, None, purpose, true));
            }
        }
    }

    let count = |t: &Tag| {
        let v6 = t.prefixes.iter().filter(|p| p.addr().is_ipv6()).count();
        (t.prefixes.len() - v6, v6)
    };
    let mut tags = Vec::new();
    let mut report = |t: &Tag, used_as: String| {
        source.tags.push(TagVersion {
            name: t.name.clone(),
            change_number: t.change_number,
            prefixes: t.prefixes.len(),
        });
        tags.push(TagReport {
            name: t.name.clone(),
            change_number: t.change_number,
            region: t.region.clone(),
            prefixes: count(t),
            used_as,
        });
    };
    let mcas = MCAS_PURPOSES.map(Purpose::as_str).join(", ");
    if let Some(g) = &global {
        report(g, format!("{mcas} (inbound)"));
    }
    for r in &regional {
        let region = r.region.as_ref().map_or("?".into(), ToString::to_string);
        report(r, format!("places global prefixes in {region}"));
    }
    if let Some(f) = &front_door {
        let fd = FRONT_DOOR_PURPOSES.map(Purpose::as_str).join(", ");
        report(f, format!("{fd} (outbound, shared)"));
    } else {
        warnings.push(format!(
            "no {FRONT_DOOR_TAG} tag (published since April 2025): the portal's Front Door \
             addresses are not in this set"
        ));
    }
    let set = AddressSet {
        name: name.map_or_else(|| source.id.clone(), str::to_owned),
        source: file.to_owned(),
        published: date.to_owned(),
        sources: vec![source],
        entries,
        dns: Vec::new(),
    };
    Ok(Import {
        set,
        tags,
        regions: per_region.into_iter().collect(),
        tags_in_file: raw.values.len(),
        warnings,
    })
}

/// The global prefixes (indices) that contain `q` or lie inside it; `lens`:
/// the prefix lengths of `q`'s family among them.
fn covering_or_inside(
    q: &IpNet,
    index: &HashMap<IpNet, usize>,
    lens: &BTreeSet<u8>,
    prefixes: &[IpNet],
) -> Vec<usize> {
    let mut hits = Vec::new();
    for &l in lens.iter().filter(|&&l| l <= q.prefix_len()) {
        let sup = match q {
            IpNet::V4(n) => ipnet::Ipv4Net::new(n.addr(), l).map(|s| IpNet::V4(s.trunc())),
            IpNet::V6(n) => ipnet::Ipv6Net::new(n.addr(), l).map(|s| IpNet::V6(s.trunc())),
        };
        if let Some(&i) = sup.ok().and_then(|s| index.get(&s)) {
            hits.push(i);
        }
    }
    if lens.iter().any(|&l| l > q.prefix_len()) {
        hits.extend(
            prefixes
                .iter()
                .enumerate()
                .filter(|(_, p)| p.prefix_len() > q.prefix_len() && q.contains(*p))
                .map(|(i, _)| i),
        );
    }
    hits
}

#[cfg(test)]
mod tests;
