//! The records of `check`: one per destination and a summary (the
//! `check` and `check-summary` types of [`super::record::Record`]).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::record::Timestamp;
use crate::{
    addrset::{DataCenter, Purpose},
    flow::State,
};

/// The result of one destination of a `check`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum CheckResult {
    /// The TCP handshake completed (with `--tls`: and a TLS handshake with a
    /// certificate valid for the name, from a trusted root).
    Reachable,
    /// Refused with a TCP RST (or by the `--proxy`: 403 and other 4xx).
    Refused,
    /// An ICMP error (or a local route or policy) said no (through a
    /// proxy: 502, it could not connect).
    #[default]
    Unreachable,
    /// No answer within the timeout (through a proxy: 504).
    Unanswered,
    /// A DNS name that does not resolve.
    Unresolved,
    /// `--tls`: the handshake completed with a certificate that is not
    /// valid for the name or not from a trusted root (TLS inspection).
    Intercepted,
    /// `--tls`: the TCP handshake completed, the TLS one did not.
    TlsFailed,
}

impl CheckResult {
    /// Every result, in table order.
    pub const ALL: [CheckResult; 7] = [
        CheckResult::Reachable,
        CheckResult::Refused,
        CheckResult::Unreachable,
        CheckResult::Unanswered,
        CheckResult::Unresolved,
        CheckResult::Intercepted,
        CheckResult::TlsFailed,
    ];

    /// The contract string.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Reachable => "reachable",
            CheckResult::Refused => "refused",
            CheckResult::Unreachable => "unreachable",
            CheckResult::Unanswered => "unanswered",
            CheckResult::Unresolved => "unresolved",
            CheckResult::Intercepted => "intercepted",
            CheckResult::TlsFailed => "tls-failed",
        }
    }
}

/// A `{"type":"check"}` record: one destination.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRecord {
    /// The address probed; null for a name that did not resolve (and for
    /// a name probed through `--proxy`, which the proxy resolves).
    pub address: Option<IpAddr>,
    /// The DNS name probed (null for a listed range's address).
    #[serde(default)]
    pub name: Option<String>,
    /// The set's name it stands for (`*.cas.ms` for `cas-audit-probe.cas.ms`).
    #[serde(default)]
    pub pattern: Option<String>,
    /// The TCP port.
    pub port: u16,
    /// The range it stands for.
    pub prefix: String,
    /// Data centers of the range.
    #[serde(default)]
    pub datacenters: Vec<DataCenter>,
    /// Purposes of the range.
    #[serde(default)]
    pub purposes: Vec<Purpose>,
    /// `reachable`, `refused`, `unreachable` or `unanswered`.
    pub result: CheckResult,
    /// The flow's state as the datapath saw it; null without `--iface`.
    #[serde(default)]
    pub state: Option<State>,
    /// The flow's Zeek-style history; null without `--iface`.
    #[serde(default)]
    pub history: Option<String>,
    /// Local address of the attempt (from the datapath); null if unknown.
    #[serde(default)]
    pub local_addr: Option<IpAddr>,
    /// Local port of the attempt.
    #[serde(default)]
    pub local_port: Option<u16>,
    /// Handshake time in milliseconds, for reachable destinations.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// ICMP/ICMPv6 type of the error that quoted the attempt.
    #[serde(default)]
    pub icmp_type: Option<u8>,
    /// Its code.
    #[serde(default)]
    pub icmp_code: Option<u8>,
    /// Who sent the ICMP error.
    #[serde(default)]
    pub reporter: Option<IpAddr>,
    /// TTL of the RST that refused the attempt.
    #[serde(default)]
    pub rst_ttl: Option<u8>,
    /// Hops to the RST's sender (1: a neighbour).
    #[serde(default)]
    pub rst_hops: Option<u8>,
    /// Packets sent for the attempt (from the datapath).
    #[serde(default)]
    pub packets_out: Option<u64>,
    /// Packets received.
    #[serde(default)]
    pub packets_in: Option<u64>,
    /// `--tls`: the issuer of the certificate the handshake got, when it
    /// was not valid (`intercepted`).
    #[serde(default)]
    pub issuer: Option<String>,
    /// `--proxy`: the proxy's HTTP status for the CONNECT, when not 2xx.
    #[serde(default)]
    pub proxy_status: Option<u16>,
    /// The socket error, if any.
    #[serde(default)]
    pub error: Option<String>,
    /// What happened, readable.
    #[serde(default)]
    pub detail: String,
}

/// The `{"type":"check-summary"}` record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckSummary {
    /// When the check ended.
    pub ts: Timestamp,
    /// The address set.
    pub set: String,
    /// The interface watched, if any.
    #[serde(default)]
    pub iface: Option<String>,
    /// Destinations checked.
    pub destinations: usize,
    /// Of those, reachable.
    pub reachable: usize,
    /// Refused.
    pub refused: usize,
    /// Unreachable.
    pub unreachable: usize,
    /// Unanswered.
    pub unanswered: usize,
    /// Names that did not resolve.
    #[serde(default)]
    pub unresolved: usize,
    /// `--tls`: intercepted.
    #[serde(default)]
    pub intercepted: usize,
    /// `--tls`: TLS handshakes that failed.
    #[serde(default)]
    pub tls_failed: usize,
    /// Wildcard names not probed (a tenant's names without `--tenant`).
    #[serde(default)]
    pub skipped: Vec<String>,
    /// True when every destination is reachable.
    pub ok: bool,
}
