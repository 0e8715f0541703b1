//! `check`'s named destinations: the set's outbound DNS names, each on its
//! ports. An exact name is resolved (the system resolver, or `--resolver
//! ADDR`); a wildcard is probed at a name it covers: the tenant's portal
//! names (`*.portal.cloudappsecurity.com`, `*.us.portal...`) at
//! `TENANT.<suffix>` with `--tenant TENANT` (skipped without it: only the
//! tenant knows its name), every other wildcard at [`PROBE_LABEL`]`.<suffix>`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use domain::base::{iana::Rtype, MessageBuilder, Name};

use crate::{
    addrset::{names::normalize, AddressSet, Connection, DataCenter, Purpose},
    names::dns,
};

/// The label a wildcard other than the tenant's portal names is probed
/// with: `*.cas.ms` is probed as `cas-audit-probe.cas.ms`. A firewall with
/// FQDN rules for the wildcard allows it; whether DNS answers for it depends
/// on the zone (a zone without a wildcard record says NXDOMAIN: `unresolved`).
pub const PROBE_LABEL: &str = "cas-audit-probe";

/// One name to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedDest {
    /// The name probed.
    pub name: String,
    /// The set's name it stands for (`*.cas.ms`), or the name itself.
    pub pattern: String,
    /// Its ports.
    pub ports: BTreeSet<u16>,
    /// Data centers of the set's names behind it.
    pub datacenters: BTreeSet<DataCenter>,
    /// Their purposes.
    pub purposes: BTreeSet<Purpose>,
}

/// Whether a wildcard stands for a tenant's own host names (the portal's).
fn tenant_wildcard(suffix: &str) -> bool {
    suffix.starts_with("portal.cloudappsecurity.") || suffix.contains(".portal.cloudappsecurity.")
}

/// The named destinations of `set` (outbound names), and the wildcards
/// left out (tenant names without `--tenant`).
pub fn named_destinations(set: &AddressSet, tenant: Option<&str>) -> (Vec<NamedDest>, Vec<String>) {
    let mut by: BTreeMap<String, NamedDest> = BTreeMap::new();
    let mut skipped = BTreeSet::new();
    for d in set
        .dns
        .iter()
        .filter(|d| d.direction == Connection::Outbound)
    {
        let pattern = normalize(&d.name);
        let name = match pattern.strip_prefix("*.") {
            None => pattern.clone(),
            Some(suffix) if tenant_wildcard(suffix) => match tenant {
                Some(t) => format!("{}.{suffix}", normalize(t)),
                None => {
                    skipped.insert(pattern.clone());
                    continue;
                }
            },
            Some(suffix) => format!("{PROBE_LABEL}.{suffix}"),
        };
        let e = by.entry(name.clone()).or_insert_with(|| NamedDest {
            name,
            pattern: pattern.clone(),
            ports: BTreeSet::new(),
            datacenters: BTreeSet::new(),
            purposes: BTreeSet::new(),
        });
        e.ports.extend(d.ports.iter().copied());
        e.datacenters.extend(d.datacenter);
        e.purposes.insert(d.purpose);
    }
    (by.into_values().collect(), skipped.into_iter().collect())
}

/// Resolves `name`: the first IPv4 and the first IPv6 address, with the
/// system resolver (getaddrinfo: /etc/hosts, /etc/resolv.conf) or by asking
/// `resolver` (A and AAAA over UDP). `Err`: why it did not resolve.
pub async fn resolve(
    name: &str,
    resolver: Option<SocketAddr>,
    timeout: Duration,
) -> Result<Vec<IpAddr>, String> {
    let all: Vec<IpAddr> = match resolver {
        None => match tokio::time::timeout(timeout, tokio::net::lookup_host((name, 0))).await {
            Ok(Ok(it)) => it.map(|a| a.ip()).collect(),
            Ok(Err(e)) => return Err(format!("does not resolve: {e}")),
            Err(_) => return Err(format!("no answer within {} s", timeout.as_secs_f64())),
        },
        Some(server) => {
            let mut v = query(name, Rtype::A, server, timeout).await?;
            v.extend(
                query(name, Rtype::AAAA, server, timeout)
                    .await
                    .unwrap_or_default(),
            );
            v
        }
    };
    let mut out = Vec::new();
    out.extend(all.iter().find(|a| a.is_ipv4()));
    out.extend(all.iter().find(|a| a.is_ipv6()));
    if out.is_empty() {
        return Err("no address in the answer".into());
    }
    Ok(out)
}

/// One question to `server` over UDP: the addresses of the answer.
async fn query(
    name: &str,
    rtype: Rtype,
    server: SocketAddr,
    timeout: Duration,
) -> Result<Vec<IpAddr>, String> {
    let qname: Name<Vec<u8>> = name.parse().map_err(|e| format!("bad name: {e}"))?;
    let mut b = MessageBuilder::new_vec().question();
    b.header_mut().set_rd(true);
    b.header_mut().set_id(rand_id());
    b.push((&qname, rtype)).map_err(|e| format!("query: {e}"))?;
    let msg = b.finish();
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let sock = tokio::net::UdpSocket::bind(any)
        .await
        .map_err(|e| format!("socket: {e}"))?;
    sock.connect(server)
        .await
        .map_err(|e| format!("resolver {server}: {e}"))?;
    sock.send(&msg)
        .await
        .map_err(|e| format!("resolver {server}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let n = match tokio::time::timeout(timeout, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err(format!("resolver {server}: {e}")),
        Err(_) => {
            return Err(format!(
                "resolver {server}: no answer within {} s",
                timeout.as_secs_f64()
            ))
        }
    };
    match dns::parse_response(&buf[..n], false) {
        Ok(a) => Ok(a.addrs.into_iter().map(|(a, _)| a).collect()),
        Err(e) => Err(format!("resolver {server}: {e}")),
    }
}

/// A query id: not predictable across runs (the clock's low bits).
fn rand_id() -> u16 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u16)
        .unwrap_or(0x5ca5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_take_the_tenant_or_the_probe_label() {
        let set = AddressSet::builtin();
        let (none, skipped) = named_destinations(&set, None);
        assert!(skipped.contains(&"*.us.portal.cloudappsecurity.com".to_string()));
        assert!(none
            .iter()
            .any(|d| d.name == "cas-audit-probe.cas.ms" && d.pattern == "*.cas.ms"));
        let ocsp = none
            .iter()
            .find(|d| d.name == "ocsp.msocsp.com")
            .expect("OCSP");
        assert_eq!(ocsp.ports, [80].into());
        assert_eq!(
            ocsp.purposes,
            [Purpose::SiemAgent, Purpose::LogCollector].into()
        );
        assert!(
            !none.iter().any(|d| d.name.starts_with("mail1.")),
            "inbound names are not probed"
        );
        let (with, skipped) = named_destinations(&set, Some("Contoso"));
        assert!(skipped.is_empty());
        let t = with
            .iter()
            .find(|d| d.name == "contoso.us.portal.cloudappsecurity.com")
            .expect("the tenant's US1 portal");
        assert_eq!(t.datacenters, [DataCenter::Us1].into());
    }
}
