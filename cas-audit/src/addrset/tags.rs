//! The tags of an entry: its [`DataCenter`], its [`Purpose`] (the section
//! of the page) and its [`Connection`] (who connects to whom).

use std::{borrow::Cow, fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::SetError;

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
/// Displayed and serialised as `US1`, `US2`, `US3`, `EU1`, `EU2` and `Gov US1`.
/// Parsing is case-insensitive and also accepts `gov-us1`, `govus1` and
/// `gov_us1` for [`DataCenter::GovUs1`].
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
    /// `Gov US1` (US Government, GCC High).
    GovUs1,
}

impl DataCenter {
    /// Every data center, in declaration order.
    pub const ALL: [DataCenter; 6] = [
        DataCenter::Us1,
        DataCenter::Us2,
        DataCenter::Us3,
        DataCenter::Eu1,
        DataCenter::Eu2,
        DataCenter::GovUs1,
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
        }
    }

    /// This data center's bit in a tag mask.
    pub(crate) const fn bit(self) -> u8 {
        1 << (self as u8)
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
    /// `"gov-us1"`, `"govus1"`, `"gov_us1"`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "us1" => Ok(DataCenter::Us1),
            "us2" => Ok(DataCenter::Us2),
            "us3" => Ok(DataCenter::Us3),
            "eu1" => Ok(DataCenter::Eu1),
            "eu2" => Ok(DataCenter::Eu2),
            "gov us1" | "gov-us1" | "govus1" | "gov_us1" => Ok(DataCenter::GovUs1),
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
/// `siem-agent`, `app-connector`, `dlp`, `mail`, `log-collector` and
/// `auth-gateway`. Parsing is case-insensitive and accepts `_` for `-`.
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
}

impl Purpose {
    /// Every purpose, in declaration order.
    pub const ALL: [Purpose; 8] = [
        Purpose::Portal,
        Purpose::AccessSessionControls,
        Purpose::SiemAgent,
        Purpose::AppConnector,
        Purpose::Dlp,
        Purpose::Mail,
        Purpose::LogCollector,
        Purpose::AuthGateway,
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
        }
    }

    /// The TCP ports used when a set file does not give `ports`: 443 for
    /// the HTTPS purposes; 11344 for `dlp` (the default port of the
    /// customer's stunnel, which the service connects to); 25 for `mail`
    /// (SMTP: the page gives no port for the mail servers, so this is an
    /// assumption).
    #[must_use]
    pub const fn default_ports(self) -> &'static [u16] {
        match self {
            Purpose::Portal
            | Purpose::AccessSessionControls
            | Purpose::SiemAgent
            | Purpose::AppConnector
            | Purpose::LogCollector
            | Purpose::AuthGateway => &[443],
            Purpose::Dlp => &[11344],
            Purpose::Mail => &[25],
        }
    }

    /// The direction used when a set file does not give `direction`:
    /// outbound (the customer connects) for `portal`,
    /// `access-session-controls`, `siem-agent`, `log-collector` and
    /// `auth-gateway`; inbound (the service connects) for `app-connector`,
    /// `dlp` and `mail`.
    #[must_use]
    pub const fn default_direction(self) -> Connection {
        match self {
            Purpose::Portal
            | Purpose::AccessSessionControls
            | Purpose::SiemAgent
            | Purpose::LogCollector
            | Purpose::AuthGateway => Connection::Outbound,
            Purpose::AppConnector | Purpose::Dlp | Purpose::Mail => Connection::Inbound,
        }
    }

    /// This purpose's bit in a tag mask.
    pub(crate) const fn bit(self) -> u8 {
        1 << (self as u8)
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
