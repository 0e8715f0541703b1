//! TCP and UDP throughput (iperf3) from the lan namespace to a CAS address
//! in the cloud namespace, through the gateway, under three conditions:
//! nothing attached, cas-audit on the gateway's uplink (the real agent,
//! TC egress + TC ingress), and an nftables set with per-element counters
//! over the same prefixes in the gateway's forward hook. Rounds interleave
//! the conditions (rotated each round); ratios are per round, then medians.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cas_audit::addrset::Range;
use cas_audit_tests::Topology;
use ipnet::IpNet;
use serde::Serialize;
use serde_json::Value;

use crate::agentproc::{output_deadline, Agent};
use crate::sets::HIT4;
use crate::stats::{rotated, Stat};

const PORT: &str = "5201";

/// How much to measure.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Config {
    /// Rounds.
    pub rounds: usize,
    /// Seconds per iperf3 run.
    pub seconds: u32,
    /// Offered UDP rate, Mbit/s.
    pub udp_mbps: u32,
    /// UDP payload bytes.
    pub udp_len: u32,
}

/// The conditions compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// Nothing attached.
    None,
    /// The cas-audit agent on the uplink.
    CasAudit,
    /// nftables sets with per-element counters in the forward hook.
    NftSet,
}

impl Condition {
    const ALL: [Condition; 3] = [Condition::None, Condition::CasAudit, Condition::NftSet];

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Condition::None => "no program",
            Condition::CasAudit => "cas-audit",
            Condition::NftSet => "nftables set + counters",
        }
    }
}

/// One condition's figures.
#[derive(Debug, Clone, Serialize)]
pub struct CondResult {
    /// Which.
    pub condition: Condition,
    /// TCP goodput at the receiver, Gbit/s.
    pub tcp_gbps: Stat,
    /// TCP retransmissions per run.
    pub tcp_retransmits: Stat,
    /// UDP rate received, Mbit/s.
    pub udp_rx_mbps: Stat,
    /// UDP datagrams lost, percent.
    pub udp_loss_pct: Stat,
    /// TCP throughput relative to no program, per round.
    pub tcp_ratio: Stat,
    /// UDP received rate relative to no program, per round.
    pub udp_ratio: Stat,
    /// Proof the condition saw the traffic: packets the agent matched or
    /// the nftables element counter of the server address (last round).
    pub matched_packets: u64,
}

/// Results of this part.
#[derive(Debug, Clone, Serialize)]
pub struct NetResults {
    /// What was run.
    pub config: Config,
    /// IPv4 prefixes in the nftables set (covered prefixes dropped: an
    /// interval set refuses overlaps).
    pub nft_elements: usize,
    /// Per condition.
    pub conditions: Vec<CondResult>,
    /// Wall time, seconds.
    pub wall_s: f64,
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The nftables ruleset: a set per family with per-element counters and a
/// forward chain counting packets to and from them.
pub fn nft_ruleset(ranges: &[Range]) -> (String, usize) {
    let mut v4: Vec<IpNet> = Vec::new();
    let mut v6: Vec<IpNet> = Vec::new();
    for r in ranges {
        let covered = ranges
            .iter()
            .any(|o| o.prefix != r.prefix && o.prefix.contains(&r.prefix));
        if !covered {
            match r.prefix {
                IpNet::V4(_) => v4.push(r.prefix),
                IpNet::V6(_) => v6.push(r.prefix),
            }
        }
    }
    let elems = |v: &[IpNet]| {
        if v.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = v.iter().map(IpNet::to_string).collect();
            format!(" elements = {{ {} }}", list.join(", "))
        }
    };
    let mut s = String::new();
    let _ = writeln!(s, "table inet bench {{");
    let _ = writeln!(
        s,
        "  set cas4 {{ type ipv4_addr; flags interval; counter;{} }}",
        elems(&v4)
    );
    let _ = writeln!(
        s,
        "  set cas6 {{ type ipv6_addr; flags interval; counter;{} }}",
        elems(&v6)
    );
    s.push_str(
        "  chain forward {\n    type filter hook forward priority 0; policy accept;\n    \
         ip daddr @cas4 counter\n    ip saddr @cas4 counter\n    \
         ip6 daddr @cas6 counter\n    ip6 saddr @cas6 counter\n  }\n}\n",
    );
    (s, v4.len() + v6.len())
}

/// Runs the part with the agent binary `bin` and the agent's set `ranges`.
pub fn run(cfg: Config, bin: &Path, ranges: &[Range], tmp: &Path) -> Result<NetResults> {
    let started = Instant::now();
    let topo = Topology::new(&[HIT4.into()])?;
    let (ruleset, nft_elements) = nft_ruleset(ranges);
    let nft_file = tmp.join("bench.nft");
    std::fs::write(&nft_file, ruleset)?;
    let server = Server(
        topo.command(topo.cloud(), "iperf3")
            .args(["-s", "-B", &HIT4.to_string(), "-p", PORT])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s (apt-get install iperf3)")?,
    );
    thread::sleep(Duration::from_millis(500));

    let n = Condition::ALL.len();
    let mut tcp = vec![Vec::new(); n];
    let mut retr = vec![Vec::new(); n];
    let mut udp = vec![Vec::new(); n];
    let mut loss = vec![Vec::new(); n];
    let mut matched = vec![0u64; n];
    for round in 0..cfg.rounds {
        for cond in rotated(&Condition::ALL, round) {
            let i = Condition::ALL
                .iter()
                .position(|c| *c == cond)
                .expect("condition");
            let agent = match cond {
                Condition::CasAudit => Some(Agent::start(&topo, bin)?),
                Condition::NftSet => {
                    output_deadline(
                        topo.command(topo.gw(), "nft").arg("-f").arg(&nft_file),
                        Duration::from_secs(30),
                    )
                    .context("loading the nftables set (apt-get install nftables)")?;
                    None
                }
                Condition::None => None,
            };
            let (t, r) = iperf_tcp(&topo, cfg)?;
            let (u, l) = iperf_udp(&topo, cfg)?;
            eprintln!(
                "[net] round {} {:<24} TCP {t:6.2} Gbit/s ({r} retr)  UDP {u:7.1} Mbit/s ({l:.2} % lost)",
                round + 1,
                cond.name()
            );
            tcp[i].push(t);
            retr[i].push(r as f64);
            udp[i].push(u);
            loss[i].push(l);
            match cond {
                Condition::CasAudit => {
                    let out = agent.context("agent")?.stop()?;
                    matched[i] = out.summary["matched"].as_u64().unwrap_or(0);
                }
                Condition::NftSet => {
                    let listing = output_deadline(
                        topo.command(topo.gw(), "nft")
                            .args(["list", "set", "inet", "bench", "cas4"]),
                        Duration::from_secs(30),
                    )?;
                    matched[i] = element_packets(&listing, &HIT4.to_string());
                    output_deadline(
                        topo.command(topo.gw(), "nft")
                            .args(["delete", "table", "inet", "bench"]),
                        Duration::from_secs(30),
                    )?;
                }
                Condition::None => {}
            }
        }
    }
    drop(server);
    let ratio = |v: &[Vec<f64>], i: usize| -> Vec<f64> {
        v[i].iter().zip(&v[0]).map(|(x, b)| x / b).collect()
    };
    let conditions = Condition::ALL
        .iter()
        .enumerate()
        .map(|(i, c)| CondResult {
            condition: *c,
            tcp_gbps: Stat::of(tcp[i].clone()),
            tcp_retransmits: Stat::of(retr[i].clone()),
            udp_rx_mbps: Stat::of(udp[i].clone()),
            udp_loss_pct: Stat::of(loss[i].clone()),
            tcp_ratio: Stat::of(ratio(&tcp, i)),
            udp_ratio: Stat::of(ratio(&udp, i)),
            matched_packets: matched[i],
        })
        .collect();
    Ok(NetResults {
        config: cfg,
        nft_elements,
        conditions,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// `counter packets N` of element `addr` in an `nft list set` listing.
fn element_packets(listing: &str, addr: &str) -> u64 {
    let Some(at) = listing.find(&format!("{addr} counter packets ")) else {
        return 0;
    };
    listing[at..]
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.trim_end_matches(',').parse().ok())
        .unwrap_or(0)
}

fn iperf(topo: &Topology, cfg: Config, extra: &[String]) -> Result<Value> {
    let out = output_deadline(
        topo.command(topo.lan(), "iperf3")
            .args(["-c", &HIT4.to_string(), "-p", PORT, "-J"])
            .args(["--connect-timeout", "3000", "-t", &cfg.seconds.to_string()])
            .args(extra),
        Duration::from_secs(u64::from(cfg.seconds) + 30),
    )?;
    let v: Value = serde_json::from_str(&out).context("iperf3 -J output")?;
    if let Some(e) = v.get("error") {
        bail!("iperf3: {e}");
    }
    Ok(v)
}

/// Gbit/s received and retransmissions.
fn iperf_tcp(topo: &Topology, cfg: Config) -> Result<(f64, u64)> {
    let v = iperf(topo, cfg, &[])?;
    let end = &v["end"];
    let bps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: end.sum_received.bits_per_second")?;
    let retr = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    Ok((bps / 1e9, retr))
}

/// Mbit/s received and percent lost.
fn iperf_udp(topo: &Topology, cfg: Config) -> Result<(f64, f64)> {
    let extra = [
        "-u".to_string(),
        "-b".to_string(),
        format!("{}M", cfg.udp_mbps),
        "-l".to_string(),
        cfg.udp_len.to_string(),
    ];
    let v = iperf(topo, cfg, &extra)?;
    let sum = &v["end"]["sum"];
    let packets = sum["packets"].as_f64().context("iperf3: end.sum.packets")?;
    let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
    let secs = sum["seconds"].as_f64().unwrap_or(f64::from(cfg.seconds));
    let rx_mbps = (packets - lost) * f64::from(cfg.udp_len) * 8.0 / secs / 1e6;
    let pct = if packets > 0.0 {
        lost * 100.0 / packets
    } else {
        0.0
    };
    Ok((rx_mbps, pct))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn ruleset_drops_covered_prefixes() {
        let r = |p: &str| Range {
            prefix: p.parse().unwrap(),
            datacenters: BTreeSet::new(),
            purposes: BTreeSet::new(),
            ports: BTreeSet::new(),
        };
        let (s, n) = nft_ruleset(&[r("10.0.0.0/24"), r("10.0.0.5/32"), r("2001:db8::/32")]);
        assert_eq!(n, 2);
        assert!(s.contains("elements = { 10.0.0.0/24 }"), "{s}");
        assert!(s.contains("elements = { 2001:db8::/32 }"), "{s}");
        assert_eq!(
            element_packets(
                "elements = { 13.64.196.27 counter packets 12 bytes 100, 1.2.3.4 counter packets 0 bytes 0 }",
                "13.64.196.27"
            ),
            12
        );
    }
}
