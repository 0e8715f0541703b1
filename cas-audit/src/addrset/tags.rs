//! The tags of an entry: its [`DataCenter`], its Azure [`Region`], its
//! [`Purpose`] (the section of the page) and its [`Connection`] (who
//! connects to whom).
//!
//! # Data centers and Azure regions
//!
//! A Defender for Cloud Apps tenant lives in one data center (the portal's
//! "About" box names it); Azure's Service Tags name Azure regions instead.
//! [`DataCenter::region`] is the correspondence cas-audit uses, from the log
//! collector's blob hosts on the "Network requirements" pages, whose names
//! carry the region (`prod03use2console1`: East US 2), and from the
//! regional `MicrosoftCloudAppSecurity.<Region>` tags, which hold the
//! data centers' addresses:
//!
//! | data center | Azure region | cloud |
//! |---|---|---|
//! | US1 | `westus` | Public |
//! | US2 | `eastus2` | Public |
//! | US3 | `westus2` | Public |
//! | EU1 | `westeurope` | Public |
//! | EU2 | `uksouth` | Public |
//! | Gov US1 | `usgovvirginia` | AzureGovernment |
//! | GCC | `usgovvirginia` (blob host `gccm1usgvconsole1`) | AzureGovernment |
//! | GCC High | `usgovvirginia` (served by Gov US1) | AzureGovernment |

use std::{borrow::Cow, fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::SetError;

/// The cloud (Service Tags' `cloud` field) of Azure Government.
pub const CLOUD_GOVERNMENT: &str = "AzureGovernment";
/// The cloud of Azure operated by 21Vianet in China.
pub const CLOUD_CHINA: &str = "China";
/// The cloud of public (commercial) Azure.
pub const CLOUD_PUBLIC: &str = "Public";

/// How text, tables and metric labels name "no data center": an entry
/// every data center uses, such as the mail servers (JSON writes `null`;
/// the export's JSON says `"global": true`).
pub const NO_DATACENTER: &str = "global";

/// A data center as text: its name, or [`NO_DATACENTER`].
pub fn datacenter_text(dc: Option<DataCenter>) -> Cow<'static, str> {
    Cow::Borrowed(dc.map_or(NO_DATACENTER, DataCenter::as_str))
}

/// A Defender for Cloud Apps data center, as shown in the portal's "About" box.
///
/// Displayed and serialised as `US1`, `US2`, `US3`, `EU1`, `EU2`, `Gov US1`,
/// `GCC` and `GCC High`. Parsing is case-insensitive; `-`, `_` and no space
/// stand for a space (`gov-us1`, `govus1`, `gcc_high`, `gcchigh`).
///
/// `GCC` and `GCC High` are the US Government community clouds the pages
/// give addresses of under those names ("For US Government GCC High
/// customers"); a GCC High tenant's data center is `Gov US1`, so it needs
/// both (`--datacenter "Gov US1" --datacenter "GCC High"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DataCenter {
    /// `US1`.
    Us1,
    /// `US2`.
    Us2,
    /// `US3`.
    Us3,
    /// `EU1`.
    Eu1,
    /// `EU2`.
    Eu2,
    /// `Gov US1` (US Government: the data center of GCC High tenants).
    GovUs1,
    /// `GCC`: addresses the pages give for US Government GCC customers.
    Gcc,
    /// `GCC High`: addresses the pages give for US Government GCC High
    /// customers.
    GccHigh,
}

impl DataCenter {
    /// Every data center, in declaration order.
    pub const ALL: [DataCenter; 8] = [
        DataCenter::Us1,
        DataCenter::Us2,
        DataCenter::Us3,
        DataCenter::Eu1,
        DataCenter::Eu2,
        DataCenter::GovUs1,
        DataCenter::Gcc,
        DataCenter::GccHigh,
    ];

    /// The canonical spelling, e.g. `"Gov US1"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            DataCenter::Us1 => "US1",
            DataCenter::Us2 => "US2",
            DataCenter::Us3 => "US3",
            DataCenter::Eu1 => "EU1",
            DataCenter::Eu2 => "EU2",
            DataCenter::GovUs1 => "Gov US1",
            DataCenter::Gcc => "GCC",
            DataCenter::GccHigh => "GCC High",
        }
    }

    /// The Azure region the data center runs in (see the module
    /// documentation for where the correspondence comes from).
    #[must_use]
    pub fn region(self) -> Region {
        Region(
            match self {
                DataCenter::Us1 => "westus",
                DataCenter::Us2 => "eastus2",
                DataCenter::Us3 => "westus2",
                DataCenter::Eu1 => "westeurope",
                DataCenter::Eu2 => "uksouth",
                DataCenter::GovUs1 | DataCenter::Gcc | DataCenter::GccHigh => "usgovvirginia",
            }
            .to_owned(),
        )
    }

    /// This data center's bit in a tag mask.
    pub(crate) const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for DataCenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataCenter {
    type Err = SetError;

    /// Parses a data center name case-insensitively (`"us1"`, `"Gov US1"`,
    /// `"gov-us1"`, `"govus1"`, `"gov_us1"`, `"gcc high"`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key: String = s
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '_'))
            .collect::<String>()
            .to_ascii_lowercase();
        match key.as_str() {
            "us1" => Ok(DataCenter::Us1),
            "us2" => Ok(DataCenter::Us2),
            "us3" => Ok(DataCenter::Us3),
            "eu1" => Ok(DataCenter::Eu1),
            "eu2" => Ok(DataCenter::Eu2),
            "govus1" => Ok(DataCenter::GovUs1),
            "gcc" => Ok(DataCenter::Gcc),
            "gcchigh" => Ok(DataCenter::GccHigh),
            _ => Err(SetError::UnknownDataCenter {
                index: None,
                value: s.to_owned(),
            }),
        }
    }
}

impl Serialize for DataCenter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DataCenter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The name as written (records: millions of them) without an
        // allocation; any other spelling through `FromStr`.
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        match DataCenter::ALL.iter().find(|x| x.as_str() == text) {
            Some(x) => Ok(*x),
            None => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Why an address is needed: which section of the network requirements page
/// it comes from.
///
/// Displayed, serialised and parsed as `portal`, `access-session-controls`,
/// `siem-agent`, `app-connector`, `dlp`, `mail`, `log-collector`,
/// `auth-gateway` and `unknown`. Parsing is case-insensitive and accepts `_`
/// for `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    /// `portal`: access to the web portal (outbound).
    Portal,
    /// `access-session-controls`: the reverse proxy used by access and
    /// session controls (outbound).
    AccessSessionControls,
    /// `siem-agent`: the SIEM agent's connection to the service (outbound).
    SiemAgent,
    /// `app-connector`: API connectors reaching third-party apps (inbound).
    AppConnector,
    /// `dlp`: third-party DLP (ICAP over stunnel) integration (inbound).
    Dlp,
    /// `mail`: notification mail servers (inbound).
    Mail,
    /// `log-collector`: log collector uploads (outbound).
    LogCollector,
    /// `auth-gateway`: authentication gateway.
    AuthGateway,
    /// `unknown`: addresses of a page section the importer does not
    /// recognise (kept, never dropped, and named in a warning). Outbound,
    /// port 443 by default: every address the pages ever listed without a
    /// port is reached over HTTPS, and outbound is the direction a firewall
    /// rollout restricts, so `check` probes them and exports allow them.
    Unknown,
}

impl Purpose {
    /// Every purpose, in declaration order.
    pub const ALL: [Purpose; 9] = [
        Purpose::Portal,
        Purpose::AccessSessionControls,
        Purpose::SiemAgent,
        Purpose::AppConnector,
        Purpose::Dlp,
        Purpose::Mail,
        Purpose::LogCollector,
        Purpose::AuthGateway,
        Purpose::Unknown,
    ];

    /// The canonical spelling, e.g. `"access-session-controls"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Purpose::Portal => "portal",
            Purpose::AccessSessionControls => "access-session-controls",
            Purpose::SiemAgent => "siem-agent",
            Purpose::AppConnector => "app-connector",
            Purpose::Dlp => "dlp",
            Purpose::Mail => "mail",
            Purpose::LogCollector => "log-collector",
            Purpose::AuthGateway => "auth-gateway",
            Purpose::Unknown => "unknown",
        }
    }

    /// The TCP ports used when a set file does not give `ports`: 443 for
    /// the HTTPS purposes (and `unknown`); 11344 for `dlp` (the default port
    /// of the customer's stunnel, which the service connects to); 25 for
    /// `mail` (SMTP: the page gives no port for the mail servers, so this is
    /// an assumption).
    #[must_use]
    pub const fn default_ports(self) -> &'static [u16] {
        match self {
            Purpose::Portal
            | Purpose::AccessSessionControls
            | Purpose::SiemAgent
            | Purpose::AppConnector
            | Purpose::LogCollector
            | Purpose::AuthGateway
            | Purpose::Unknown => &[443],
            Purpose::Dlp => &[11344],
            Purpose::Mail => &[25],
        }
    }

    /// The direction used when a set file does not give `direction`:
    /// outbound (the customer connects) for `portal`,
    /// `access-session-controls`, `siem-agent`, `log-collector`,
    /// `auth-gateway` and `unknown`; inbound (the service connects) for
    /// `app-connector`, `dlp` and `mail`.
    #[must_use]
    pub const fn default_direction(self) -> Connection {
        match self {
            Purpose::Portal
            | Purpose::AccessSessionControls
            | Purpose::SiemAgent
            | Purpose::LogCollector
            | Purpose::AuthGateway
            | Purpose::Unknown => Connection::Outbound,
            Purpose::AppConnector | Purpose::Dlp | Purpose::Mail => Connection::Inbound,
        }
    }

    /// This purpose's bit in a tag mask.
    pub(crate) const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Purpose {
    type Err = SetError;

    /// Parses a purpose case-insensitively, accepting `_` in place of `-`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        Purpose::ALL
            .into_iter()
            .find(|p| p.as_str() == wanted)
            .ok_or_else(|| SetError::UnknownPurpose {
                index: None,
                value: s.to_owned(),
            })
    }
}

impl Serialize for Purpose {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Purpose {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The name as written (records: millions of them) without an
        // allocation; any other spelling through `FromStr`.
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        match Purpose::ALL.iter().find(|x| x.as_str() == text) {
            Some(x) => Ok(*x),
            None => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Connection of the traffic relative to the customer's network.
///
/// Displayed, serialised and parsed (case-insensitively) as `outbound` and
/// `inbound`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Connection {
    /// The customer's hosts connect to these addresses.
    Outbound,
    /// The service connects from these addresses to the customer.
    Inbound,
}

impl Connection {
    /// Both directions.
    pub const ALL: [Connection; 2] = [Connection::Outbound, Connection::Inbound];

    /// The canonical spelling: `"outbound"` or `"inbound"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Connection::Outbound => "outbound",
            Connection::Inbound => "inbound",
        }
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Connection {
    type Err = SetError;

    /// Parses `outbound` or `inbound`, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "outbound" => Ok(Connection::Outbound),
            "inbound" => Ok(Connection::Inbound),
            _ => Err(SetError::UnknownDirection {
                index: None,
                value: s.to_owned(),
            }),
        }
    }
}

impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a place is: its own region, else its data center's
/// ([`DataCenter::region`]); `None` for a place of every data center. The
/// one rule `--region` selects by.
#[must_use]
pub fn location(datacenter: Option<DataCenter>, region: Option<&Region>) -> Option<Region> {
    region
        .cloned()
        .or_else(|| datacenter.map(DataCenter::region))
}

/// An Azure region, by its Azure Resource Manager name: lower case letters
/// and digits, e.g. `westeurope`, `westus2`, `usgovvirginia`.
///
/// Parsing takes the display name too ("West Europe", "US Gov Virginia",
/// "West US 2") and the Service Tags suffix (`WestEurope`): case is
/// ignored and spaces, `-` and `_` are dropped. Any such name parses (a
/// region Azure opens tomorrow must not break an import);
/// [`Region::is_known`] says whether it is one of [`KNOWN_REGIONS`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Region(String);

/// The Azure regions cas-audit knows by name (Public, US Government and
/// China clouds, from the regions list of Azure Resource Manager and the
/// regional Service Tags), to tell a region label on a page from other
/// text. A region missing here still parses.
pub const KNOWN_REGIONS: &[&str] = &[
    "australiacentral",
    "australiacentral2",
    "australiaeast",
    "australiasoutheast",
    "austriaeast",
    "belgiumcentral",
    "brazilsouth",
    "brazilsoutheast",
    "canadacentral",
    "canadaeast",
    "centralindia",
    "centralus",
    "centraluseuap",
    "chilecentral",
    "denmarkeast",
    "eastasia",
    "eastus",
    "eastus2",
    "eastus2euap",
    "francecentral",
    "francesouth",
    "germanynorth",
    "germanywestcentral",
    "indonesiacentral",
    "israelcentral",
    "italynorth",
    "japaneast",
    "japanwest",
    "jioindiacentral",
    "jioindiawest",
    "koreacentral",
    "koreasouth",
    "malaysiasouth",
    "malaysiawest",
    "mexicocentral",
    "newzealandnorth",
    "northcentralus",
    "northeurope",
    "norwayeast",
    "norwaywest",
    "polandcentral",
    "qatarcentral",
    "southafricanorth",
    "southafricawest",
    "southcentralus",
    "southeastasia",
    "southindia",
    "spaincentral",
    "swedencentral",
    "swedensouth",
    "switzerlandnorth",
    "switzerlandwest",
    "taiwannorth",
    "taiwannorthwest",
    "uaecentral",
    "uaenorth",
    "uksouth",
    "ukwest",
    "westcentralus",
    "westeurope",
    "westindia",
    "westus",
    "westus2",
    "westus3",
    // US Government.
    "usdodcentral",
    "usdodeast",
    "usgovarizona",
    "usgoviowa",
    "usgovtexas",
    "usgovvirginia",
    // China (21Vianet).
    "chinaeast",
    "chinaeast2",
    "chinaeast3",
    "chinanorth",
    "chinanorth2",
    "chinanorth3",
];

impl Region {
    /// The ARM name, e.g. `"westeurope"`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is one of [`KNOWN_REGIONS`].
    #[must_use]
    pub fn is_known(&self) -> bool {
        KNOWN_REGIONS.contains(&self.0.as_str())
    }

    /// The cloud the region belongs to, by its name: `usgov*` and `usdod*`
    /// are [`CLOUD_GOVERNMENT`], `china*` [`CLOUD_CHINA`], every other one
    /// [`CLOUD_PUBLIC`].
    #[must_use]
    pub fn cloud(&self) -> &'static str {
        if self.0.starts_with("usgov") || self.0.starts_with("usdod") {
            CLOUD_GOVERNMENT
        } else if self.0.starts_with("china") {
            CLOUD_CHINA
        } else {
            CLOUD_PUBLIC
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Region {
    type Err = SetError;

    /// "West Europe", `WestEurope`, `west-europe`, `westeurope`: one region.
    ///
    /// # Errors
    /// [`SetError::BadRegion`] for an empty name or one with characters
    /// other than ASCII letters, digits, spaces, `-` and `_`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let ok = !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_'));
        let name: String = t
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if !ok || name.is_empty() {
            return Err(SetError::BadRegion {
                index: None,
                value: s.to_owned(),
            });
        }
        Ok(Region(name))
    }
}

impl Serialize for Region {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
