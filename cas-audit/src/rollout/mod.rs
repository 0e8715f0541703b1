//! `check`'s library: a firewall rollout check.
//!
//! Opens a TCP connection to every required outbound destination of the
//! selected address set (one address per range and port: the range's first
//! host address), while the datapath on `--iface` watches what really
//! happens to each attempt: who answered, who refused it, which router or
//! firewall sent an ICMP error. [`table`] writes the readable report.
//!
//! The set's DNS names are destinations too ([`names`]): resolved, each
//! address probed under its name (`unresolved` when there is none). With
//! `--tls` ([`tls`]) a reachable destination must also complete a TLS
//! handshake with a certificate valid for its name, from a trusted root
//! (`intercepted`, `tls-failed`); with `--proxy` ([`proxy`]) every
//! destination is reached through the proxy with CONNECT.

pub mod names;
pub mod proxy;
pub mod table;
pub mod tls;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::Write,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use cas_audit_common::{proto, FlowStats};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ipnet::IpNet;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpSocket, TcpStream},
    sync::Semaphore,
};

use crate::{
    addrset::Need,
    addrset::{AddressSet, Connection, DataCenter, Purpose, Selection},
    datapath::{Datapath, IngressMode},
    error::Error,
    flow::{
        addr_of,
        evidence::{self, history_string, hops_from_ttl, IcmpError},
        state::classify,
        AllowedPorts, PortPolicy, State,
    },
    host::{caps::preflight, netdev},
    output::{
        record::{CheckRecord, CheckResult, CheckSummary, RecordRef, Timestamp},
        sink::JsonTarget,
    },
};

/// Everything `check` needs.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// The address set (a built-in name or a set file; `None`: the default)
    /// and the part of it checked.
    pub selection: Selection,
    /// Interface the datapath watches; `None`: socket results only.
    pub iface: Option<String>,
    /// Time each connection attempt may take.
    pub timeout: Duration,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// JSON output: one record per destination and a summary.
    pub json: Option<JsonTarget>,
    /// Ingress hook of the datapath.
    pub ingress: IngressMode,
    /// Resolve names by asking this DNS server (`--resolver`); `None`: the
    /// system resolver.
    pub resolver: Option<SocketAddr>,
    /// The tenant's name, for its portal names (`--tenant`).
    pub tenant: Option<String>,
    /// Complete a TLS handshake and verify the certificate (`--tls`).
    pub tls: bool,
    /// More trusted roots for `--tls` (PEM files, `--ca-file`).
    pub ca_files: Vec<std::path::PathBuf>,
    /// Reach every destination through this proxy with CONNECT (`--proxy`).
    pub proxy: Option<proxy::Proxy>,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            selection: Selection::default(),
            iface: None,
            timeout: Duration::from_secs(5),
            concurrency: 32,
            json: None,
            ingress: IngressMode::Auto,
            resolver: None,
            tenant: None,
            tls: false,
            ca_files: Vec::new(),
            proxy: None,
        }
    }
}

/// One required outbound destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The DNS name probed (a named destination), and the set's name it
    /// stands for.
    pub name: Option<(String, String)>,
    /// The address probed (unspecified for a name through a proxy, which
    /// resolves it).
    pub addr: IpAddr,
    /// The TCP port.
    pub port: u16,
    /// The range it stands for.
    pub prefix: IpNet,
    /// Data centers of the entries behind it.
    pub datacenters: BTreeSet<DataCenter>,
    /// Purposes of the entries behind it.
    pub purposes: BTreeSet<Purpose>,
}

/// The address that stands for a range: a host entry's own address,
/// otherwise the range's first host address (network + 1; the network
/// address itself for /31, /32, /127 and /128).
pub fn probe_address(prefix: &IpNet) -> IpAddr {
    match prefix {
        IpNet::V4(n) if n.prefix_len() >= 31 => IpAddr::V4(n.addr()),
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 1)),
        IpNet::V6(n) if n.prefix_len() >= 127 => IpAddr::V6(n.addr()),
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + 1)),
    }
}

/// The outbound destinations of a set: one per range and port, tags merged.
pub fn destinations(set: &AddressSet) -> Vec<Destination> {
    let mut by: BTreeMap<(IpAddr, u16), Destination> = BTreeMap::new();
    for e in set
        .entries
        .iter()
        .filter(|e| e.direction == Connection::Outbound)
    {
        let addr = probe_address(&e.prefix);
        for &port in &e.ports {
            let d = by.entry((addr, port)).or_insert_with(|| Destination {
                name: None,
                addr,
                port,
                prefix: e.prefix.trunc(),
                datacenters: BTreeSet::new(),
                purposes: BTreeSet::new(),
            });
            d.datacenters.extend(e.datacenter);
            d.purposes.insert(e.purpose);
        }
    }
    by.into_values().collect()
}

/// What the socket saw.
#[derive(Debug, Clone, Default)]
struct Probe {
    local_port: Option<u16>,
    outcome: CheckResult,
    error: Option<String>,
    rtt: Option<Duration>,
    /// What happened, when the socket's outcome does not say it (TLS, proxy).
    detail: Option<String>,
    issuer: Option<String>,
    proxy_status: Option<u16>,
}

/// How a destination is probed besides the TCP handshake.
#[derive(Clone)]
struct Via {
    tls: Option<Arc<tls::Tls>>,
    proxy: Option<proxy::Proxy>,
    timeout: Duration,
}

/// Probes `d`: a TCP connection (directly or through the proxy), then the
/// TLS handshake with `--tls` (not on port 80: plain HTTP, OCSP).
async fn probe_dest(d: Destination, via: Via) -> Probe {
    let addr = SocketAddr::new(d.addr, d.port);
    let name = d.name.as_ref().map(|(n, _)| n.clone());
    let (mut p, stream) = match &via.proxy {
        Some(px) => {
            let start = Instant::now();
            match proxy::connect(px, &proxy::target(name.as_deref(), addr), via.timeout).await {
                proxy::Tunnel::Open(s) => (
                    Probe {
                        outcome: CheckResult::Reachable,
                        rtt: Some(start.elapsed()),
                        ..Probe::default()
                    },
                    Some(s),
                ),
                proxy::Tunnel::Closed(outcome, detail, status) => (
                    Probe {
                        outcome,
                        detail: Some(detail),
                        proxy_status: status,
                        ..Probe::default()
                    },
                    None,
                ),
            }
        }
        None => probe(addr, via.timeout, via.tls.is_some() && d.port != 80).await,
    };
    if let (Some(t), Some(s)) = (&via.tls, stream) {
        if d.port != 80 {
            match t.handshake(s, name.as_deref(), d.addr, via.timeout).await {
                tls::TlsOutcome::Verified => {}
                tls::TlsOutcome::Intercepted { why, issuer } => {
                    p.outcome = CheckResult::Intercepted;
                    p.detail = Some(format!("certificate not trusted: {why}; issuer {issuer}"));
                    p.issuer = Some(issuer);
                }
                tls::TlsOutcome::Failed(why) => {
                    p.outcome = CheckResult::TlsFailed;
                    p.detail = Some(why);
                }
            }
        }
    }
    p
}

/// Connects to `addr` within `timeout`; with `keep`, the open stream is
/// returned (for a TLS handshake) instead of closed.
async fn probe(addr: SocketAddr, timeout: Duration, keep: bool) -> (Probe, Option<TcpStream>) {
    let mut p = Probe {
        outcome: CheckResult::Unreachable,
        ..Probe::default()
    };
    let sock = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    };
    let sock = match sock {
        Ok(s) => s,
        Err(e) => {
            p.error = Some(format!("socket: {e}"));
            return (p, None);
        }
    };
    // Bind first so that the local port is known even when the attempt
    // fails: it finds the attempt's flow in the datapath.
    let any: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    if let Err(e) = sock.bind(any) {
        p.error = Some(format!("bind: {e}"));
        return (p, None);
    }
    p.local_port = sock.local_addr().ok().map(|a| a.port());
    let start = Instant::now();
    match tokio::time::timeout(timeout, sock.connect(addr)).await {
        Ok(Ok(stream)) if keep => {
            p.rtt = Some(start.elapsed());
            p.outcome = CheckResult::Reachable;
            return (p, Some(stream));
        }
        Ok(Ok(mut stream)) => {
            p.rtt = Some(start.elapsed());
            p.outcome = CheckResult::Reachable;
            // Close cleanly: our FIN, then wait (briefly) for the server's,
            // so that the attempt ends as `closed`, not reset by a close
            // with the connection half open.
            let _ = stream.shutdown().await;
            let mut buf = [0u8; 512];
            let _ = tokio::time::timeout(timeout.min(Duration::from_secs(2)), async {
                while let Ok(n) = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }
        Ok(Err(e)) => {
            p.outcome = match e.raw_os_error() {
                Some(libc::ECONNREFUSED) => CheckResult::Refused,
                Some(libc::ETIMEDOUT) => CheckResult::Unanswered,
                _ => CheckResult::Unreachable,
            };
            p.error = Some(e.to_string());
        }
        Err(_) => {
            p.outcome = CheckResult::Unanswered;
            p.error = Some(format!("no answer within {} s", timeout.as_secs_f64()));
        }
    }
    (p, None)
}

/// Finds the attempt's flow in a snapshot of the flow table.
fn find_flow<'a>(
    flows: &'a HashMap<(IpAddr, u16, u16), (IpAddr, FlowStats)>,
    d: &Destination,
    local_port: Option<u16>,
) -> Option<&'a (IpAddr, FlowStats)> {
    flows.get(&(d.addr, d.port, local_port?))
}

/// Combines what the socket and the datapath saw.
fn record(
    d: &Destination,
    p: &Probe,
    flow: Option<&(IpAddr, FlowStats)>,
    watched: bool,
    timeout: Duration,
) -> CheckRecord {
    let state = flow.map(|(_, st)| classify(proto::TCP, st, Duration::MAX, timeout));
    let icmp = flow.and_then(|(_, st)| IcmpError::of(st));
    let rst_ttl = flow.and_then(|(_, st)| (st.rst_ttl != 0).then_some(st.rst_ttl));
    // The socket decides reachability; the datapath may know better why an
    // attempt failed (an ICMP error the socket reported as a timeout).
    let result = match (p.outcome, state) {
        (CheckResult::Reachable, _) => CheckResult::Reachable,
        (_, Some(State::Refused)) => CheckResult::Refused,
        (_, Some(State::Unreachable)) => CheckResult::Unreachable,
        (o, _) => o,
    };
    let v6 = d.addr.is_ipv6();
    let detail = match result {
        _ if p.detail.is_some() => p.detail.clone().unwrap_or_default(),
        CheckResult::Unresolved | CheckResult::Intercepted | CheckResult::TlsFailed => {
            p.error.clone().unwrap_or_default()
        }
        CheckResult::Reachable => match p.rtt {
            Some(rtt) => format!("handshake in {:.1} ms", rtt.as_secs_f64() * 1000.0),
            None => "handshake completed".into(),
        },
        CheckResult::Refused => match evidence::blocked_by(None, rst_ttl, v6) {
            Some(t) => t,
            None if watched => "connection refused (RST not seen)".into(),
            None => "connection refused".into(),
        },
        CheckResult::Unreachable => match evidence::blocked_by(icmp, None, v6) {
            Some(t) => t,
            None => p.error.clone().unwrap_or_else(|| "unreachable".into()),
        },
        CheckResult::Unanswered => match flow {
            Some((_, st)) => format!(
                "no answer to {} SYN{} in {} s",
                st.packets_out,
                if st.packets_out == 1 { "" } else { "s" },
                timeout.as_secs_f64()
            ),
            None => format!("no answer in {} s", timeout.as_secs_f64()),
        },
    };
    CheckRecord {
        address: (!d.addr.is_unspecified()).then_some(d.addr),
        name: d.name.as_ref().map(|(n, _)| n.clone()),
        pattern: d.name.as_ref().map(|(_, p)| p.clone()),
        port: d.port,
        prefix: d.prefix.to_string(),
        datacenters: d.datacenters.iter().copied().collect(),
        purposes: d.purposes.iter().copied().collect(),
        result,
        state,
        history: flow.map(|(_, st)| history_string(st)),
        local_addr: flow.map(|(a, _)| *a),
        local_port: p.local_port,
        rtt_ms: p.rtt.map(|r| (r.as_secs_f64() * 1e6).round() / 1e3),
        icmp_type: icmp.map(|e| e.icmp_type),
        icmp_code: icmp.map(|e| e.icmp_code),
        reporter: icmp.map(|e| e.reporter),
        rst_ttl,
        rst_hops: rst_ttl.map(hops_from_ttl),
        packets_out: flow.map(|(_, st)| st.packets_out),
        packets_in: flow.map(|(_, st)| st.packets_in),
        issuer: p.issuer.clone(),
        proxy_status: p.proxy_status,
        error: p.error.clone(),
        detail,
    }
}

/// Resolves the named destinations, a few at a time (none through a
/// proxy: it resolves them; the address stays unspecified).
async fn futures_resolve(
    named: &[names::NamedDest],
    cfg: &CheckConfig,
) -> Vec<Result<Vec<IpAddr>, String>> {
    if cfg.proxy.is_some() {
        return named
            .iter()
            .map(|_| Ok(vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]))
            .collect();
    }
    let limit = Arc::new(Semaphore::new(cfg.concurrency.min(16)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, n) in named.iter().enumerate() {
        let (limit, name, resolver, timeout) =
            (limit.clone(), n.name.clone(), cfg.resolver, cfg.timeout);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, names::resolve(&name, resolver, timeout).await)
        });
    }
    let mut out: Vec<Result<Vec<IpAddr>, String>> = vec![Err("not resolved".into()); named.len()];
    while let Some(Ok((i, r))) = tasks.join_next().await {
        out[i] = r;
    }
    out
}

/// Runs the check; returns the records and the summary.
pub async fn check(cfg: CheckConfig) -> Result<(Vec<CheckRecord>, CheckSummary), Error> {
    if cfg.concurrency == 0 {
        return Err(Error::Usage("--concurrency must be at least 1".into()));
    }
    let set = cfg.selection.load_some(Need::Outbound)?;
    let mut dests = destinations(&set);
    let (named, skipped) = names::named_destinations(&set, cfg.tenant.as_deref());
    for w in &skipped {
        log::warn!("{w} is a tenant's name: not probed without --tenant NAME");
    }
    // Names: resolved here, unless the proxy resolves them.
    let mut unresolved: Vec<(Destination, Probe)> = Vec::new();
    let resolved = futures_resolve(&named, &cfg).await;
    for (n, addrs) in named.iter().zip(resolved) {
        let tags = |addr: IpAddr, port: u16| Destination {
            name: Some((n.name.clone(), n.pattern.clone())),
            addr,
            port,
            prefix: IpNet::from(addr),
            datacenters: n.datacenters.clone(),
            purposes: n.purposes.clone(),
        };
        for &port in &n.ports {
            match &addrs {
                Ok(addrs) => dests.extend(addrs.iter().map(|a| tags(*a, port))),
                Err(why) => unresolved.push((
                    tags(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                    Probe {
                        outcome: CheckResult::Unresolved,
                        detail: Some(format!("{} {why}", n.name)),
                        ..Probe::default()
                    },
                )),
            }
        }
    }
    let via = Via {
        tls: if cfg.tls {
            Some(Arc::new(tls::Tls::new(&cfg.ca_files)?))
        } else {
            None
        },
        proxy: cfg.proxy.clone(),
        timeout: cfg.timeout,
    };
    if dests.is_empty() && unresolved.is_empty() {
        return Err(Error::Usage(format!(
            "the selection of set {} has no outbound destinations to check",
            set.name
        )));
    }
    let mut json = cfg.json.as_ref().map(JsonTarget::open).transpose()?;
    let human = cfg.json != Some(JsonTarget::Stdout);

    // The datapath, when an interface is given.
    let mut dp = match &cfg.iface {
        Some(iface) => {
            netdev::ifindex(iface).map_err(crate::datapath::DatapathError::from)?;
            preflight()?;
            // The set's ranges, and the named destinations' addresses
            // outside them as host ranges, so that every attempt has a flow.
            let mut ranges = set.ranges();
            let mut extra: Vec<crate::addrset::Range> = Vec::new();
            for d in dests
                .iter()
                .filter(|d| d.name.is_some() && !d.addr.is_unspecified())
            {
                let host = IpNet::from(d.addr);
                if !ranges
                    .iter()
                    .chain(&extra)
                    .any(|r| r.prefix.contains(&d.addr))
                {
                    extra.push(crate::addrset::Range {
                        prefix: host,
                        datacenters: d.datacenters.clone(),
                        purposes: d.purposes.clone(),
                        ports: [d.port].into(),
                    });
                }
            }
            log::debug!("named addresses watched: {extra:?}");
            ranges.extend(extra);
            // Every port is "allowed": check judges reachability, not ports,
            // and needs no events.
            let policy = PortPolicy::global(AllowedPorts::from_ports(1..=u16::MAX));
            let mut dp =
                Datapath::load_with_policy(&ranges, &policy, cas_audit_common::sizes::MAX_FLOWS)
                    .map_err(|e| Error::from(e).at_start())?;
            let a = dp.attach(iface, cfg.ingress)?;
            log::info!(
                "watching {} (ifindex {}): egress {}, ingress {}",
                a.iface,
                a.ifindex,
                if a.tcx { "tcx" } else { "tc clsact" },
                a.ingress
            );
            Some(dp)
        }
        None => {
            log::warn!(
                "no --iface: results come from the sockets alone (no reporters, no RST distances)"
            );
            None
        }
    };
    // The summary counts the unresolved names too, and inbound entries
    // are never probed: say both here.
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let mut notes = String::new();
    if !unresolved.is_empty() {
        let n = unresolved.len();
        notes += &format!(
            "; {n} more name{} did not resolve (reported as unresolved)",
            plural(n)
        );
    }
    let inbound = set
        .entries
        .iter()
        .filter(|e| e.direction != Connection::Outbound)
        .count();
    if inbound > 0 {
        notes += &format!(
            "; {inbound} inbound entr{} (CAS connects to you) not probed",
            if inbound == 1 { "y" } else { "ies" }
        );
    }
    log::info!(
        "checking {} destinations of set {} ({} at a time, {} s timeout){notes}",
        dests.len(),
        crate::text::shown(&set.name),
        cfg.concurrency,
        cfg.timeout.as_secs_f64()
    );

    let bar = ProgressBar::with_draw_target(
        Some(dests.len() as u64),
        if human {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} destinations, {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let limit = Arc::new(Semaphore::new(cfg.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, d) in dests.iter().enumerate() {
        let limit = limit.clone();
        let (d, via) = (d.clone(), via.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, probe_dest(d, via).await)
        });
    }
    let mut probes: Vec<Option<Probe>> = vec![None; dests.len()];
    while let Some(res) = tasks.join_next().await {
        let (i, p) =
            res.map_err(|e| Error::io("a connection attempt")(std::io::Error::other(e)))?;
        if p.outcome != CheckResult::Reachable {
            bar.set_message(format!(
                "{} not reachable",
                probes
                    .iter()
                    .flatten()
                    .filter(|p| p.outcome != CheckResult::Reachable)
                    .count()
                    + 1
            ));
        }
        probes[i] = Some(p);
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Let late answers (RSTs, ICMP errors) reach the datapath, then read it.
    let mut flows = HashMap::new();
    if let Some(dp) = dp.as_mut() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let snapshot = dp.flows()?;
        log::debug!("{} flows in the datapath", snapshot.len());
        for (k, st) in snapshot {
            if k.proto == proto::TCP {
                flows.insert(
                    (
                        addr_of(k.family, &k.remote_addr),
                        k.remote_port,
                        k.local_port,
                    ),
                    (addr_of(k.family, &k.local_addr), st),
                );
            }
        }
        dp.detach_all();
    }

    let mut records: Vec<CheckRecord> = dests
        .iter()
        .zip(&probes)
        .filter_map(|(d, p)| {
            let p = p.as_ref()?;
            Some(record(
                d,
                p,
                find_flow(&flows, d, p.local_port),
                dp.is_some(),
                cfg.timeout,
            ))
        })
        .collect();
    records.extend(
        unresolved
            .iter()
            .map(|(d, p)| record(d, p, None, dp.is_some(), cfg.timeout)),
    );
    let total = dests.len() + unresolved.len();
    let count = |o: CheckResult| records.iter().filter(|r| r.result == o).count();
    let summary = CheckSummary {
        ts: Timestamp::now(),
        set: set.name.clone(),
        iface: cfg.iface.clone(),
        destinations: records.len(),
        reachable: count(CheckResult::Reachable),
        refused: count(CheckResult::Refused),
        unreachable: count(CheckResult::Unreachable),
        unanswered: count(CheckResult::Unanswered),
        unresolved: count(CheckResult::Unresolved),
        intercepted: count(CheckResult::Intercepted),
        tls_failed: count(CheckResult::TlsFailed),
        skipped,
        ok: records.len() == total && count(CheckResult::Reachable) == records.len(),
    };
    if let Some(w) = json.as_mut() {
        let io = Error::io("writing the JSON output");
        (|| -> std::io::Result<()> {
            for r in &records {
                serde_json::to_writer(&mut *w, &RecordRef::Check(r))?;
                w.write_all(b"\n")?;
            }
            serde_json::to_writer(&mut *w, &RecordRef::CheckSummary(&summary))?;
            w.write_all(b"\n")?;
            w.flush()
        })()
        .map_err(io)?;
    }
    if human {
        let mut so = std::io::stdout().lock();
        let text = table::tables(&records, &summary);
        so.write_all(crate::text::terminal(&text).as_bytes())
            .and_then(|_| so.flush())
            .map_err(Error::io("writing to standard output"))?;
    }
    Ok((records, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_addresses() {
        let p = |s: &str| probe_address(&s.parse().unwrap()).to_string();
        assert_eq!(p("13.64.196.27/32"), "13.64.196.27");
        assert_eq!(p("40.82.186.168/29"), "40.82.186.169");
        assert_eq!(p("198.51.100.6/31"), "198.51.100.6");
        assert_eq!(p("2001:db8:1::/48"), "2001:db8:1::1");
        assert_eq!(p("2001:db8::5/128"), "2001:db8::5");
    }

    #[test]
    fn builtin_destinations_are_the_outbound_entries() {
        let set = AddressSet::builtin();
        let d = destinations(&set);
        let out: BTreeSet<(IpAddr, u16)> = set
            .entries
            .iter()
            .filter(|e| e.direction == Connection::Outbound)
            .flat_map(|e| e.ports.iter().map(|&p| (probe_address(&e.prefix), p)))
            .collect();
        assert_eq!(d.len(), out.len());
        assert!(d.iter().all(|x| out.contains(&(x.addr, x.port))));
        // The nftables export counts 373 outbound 443 elements.
        assert_eq!(d.iter().filter(|x| x.port == 443).count(), 373);
    }
}
