//! Value parsers of the flags: one grammar for sizes and one for durations
//! ([`crate::units`]), and the choices of the library's enums (which do
//! not know clap).

use std::{net::IpAddr, str::FromStr, time::Duration};

use clap::builder::{PossibleValuesParser, TypedValueParser};
use ipnet::IpNet;

use crate::{
    addrset::{DataCenter, Purpose, Region},
    output::metrics::ListenAddr,
    report::StateFilter,
    units::{parse_duration, parse_size},
};

/// The hint of a list flag's error: several values are a comma list or
/// the flag repeated.
fn list_hint(flag: &str, example: &str) -> String {
    format!(" (several: {flag} {example}, or {flag} repeated)")
}

/// A parser accepting exactly `names`, shown in help and completions, each
/// read with `T`'s `FromStr`.
pub fn choice<T>(names: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    PossibleValuesParser::new(names).map(|s| s.parse::<T>().expect("one of the possible values"))
}

/// A data center, case-insensitive (`us1`, `Gov US1`, `gov-us1`).
pub fn datacenter(s: &str) -> Result<DataCenter, String> {
    s.parse::<DataCenter>()
        .map_err(|e| format!("{e}{}", list_hint("--datacenter", "US1,EU2")))
}

/// An Azure region (`westeurope`, `"West Europe"`).
pub fn region(s: &str) -> Result<Region, String> {
    s.parse::<Region>().map_err(|e| e.to_string())
}

/// A purpose.
pub fn purpose(s: &str) -> Result<Purpose, String> {
    s.parse::<Purpose>()
        .map_err(|e| format!("{e}{}", list_hint("--purpose", "portal,dlp")))
}

/// A service port, 1 to 65535.
pub fn port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "{s:?} is not a port (1 to 65535){}",
            list_hint("--allow-port", "443,80")
        )),
    }
}

/// A `report --state` value.
pub fn state(s: &str) -> Result<StateFilter, String> {
    s.parse::<StateFilter>()
        .map_err(|e| format!("{e}{}", list_hint("--state", "refused,unreachable")))
}

/// `report --top`: a count, or `all`.
pub fn top(s: &str) -> Result<usize, String> {
    if s == "all" {
        return Ok(usize::MAX);
    }
    s.parse::<usize>()
        .map_err(|_| format!("{s:?} is neither a number of rows nor `all`"))
}

/// A listening address ([`ListenAddr`]): `HOST:PORT`, `[V6]:PORT`, `:PORT`.
pub fn listen_addr(s: &str) -> Result<ListenAddr, String> {
    s.parse()
}

/// A positive duration ([`parse_duration`]).
pub fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// A positive size in bytes ([`parse_size`]).
pub fn size(s: &str) -> Result<u64, String> {
    parse_size(s)
}

/// The event ring's size: a [`parse_size`] size that is a power of two
/// from 4K to 1G.
pub fn ring_size(s: &str) -> Result<u32, String> {
    let bytes = parse_size(s)?;
    if !bytes.is_power_of_two() || !(4096..=1 << 30).contains(&bytes) {
        return Err(format!(
            "{s:?}: the ring buffer size must be a power of two from 4K to 1G"
        ));
    }
    Ok(bytes as u32)
}

/// An address (a host prefix) or a CIDR prefix.
pub fn host(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!(
                "{s:?} is neither an address nor a prefix (CIDR){}",
                list_hint("--host", "198.51.100.2,2001:db8::/32")
            )
        })
}

/// An IPFIX collector, `HOST:PORT`, resolved to its first address.
pub fn ipfix_target(s: &str) -> Result<std::net::SocketAddr, String> {
    crate::output::ipfix::resolve(s)
}
