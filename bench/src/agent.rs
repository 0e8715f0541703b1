//! The real agent under load: ring-buffer events consumed per second
//! without loss, and the agent's CPU and resident memory idle and at a
//! steady rate of new flows.
//!
//! Load: a paced AF_PACKET sender in the cloud namespace writes UDP frames
//! from CAS addresses (the built-in set's 65.55.234.192/26) to the gateway
//! onto the `edge` veth, each with a new (source address, destination
//! port) pair: every frame is a new flow at the gateway's TC ingress. The
//! frames carry a destination MAC that is not the gateway's, so the
//! gateway's stack drops them right after TC ingress (no replies, no
//! forwarding). Source port 443 makes allowed flows, 9999 disallowed ones
//! (one ring-buffer event each).
//!
//! Export phases ([`Phase::ipfix`]) compare the agent with and without
//! `--ipfix` at the same load of allowed flows: with `--idle-timeout 1`
//! flows are reported for good (and exported) while the load lasts, to a
//! UDP receiver in the cloud namespace that counts the messages; CPU is
//! measured over the load and the [`EXPORT_TAIL`] after it, when the last
//! flows expire.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cas_audit_tests::packet::Pkt;
use cas_audit_tests::traffic::udp_sink;
use cas_audit_tests::Topology;
use serde::Serialize;

use crate::agentproc::{cpu_seconds, rss_kib, Agent};

/// One load phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Name.
    pub name: String,
    /// New flows per second offered (0: idle).
    pub rate: u64,
    /// Disallowed (events) or allowed flows.
    pub events: bool,
    /// Seconds of load (CPU is measured over them).
    pub seconds: f64,
    /// An export phase: `Some(true)` with `--ipfix`, `Some(false)` the same
    /// without; `None` a plain phase.
    pub ipfix: Option<bool>,
}

/// Arguments of the export phases (on and off alike): flows expire, and
/// are reported, while the load lasts; the table holds them meanwhile.
const EXPORT_ARGS: [&str; 4] = ["--idle-timeout", "1", "--max-flows", "524288"];
/// Time after the load over which an export phase's CPU is still measured.
pub const EXPORT_TAIL: Duration = Duration::from_millis(2500);
/// Where the export phases send IPFIX: a counting UDP receiver on the
/// cloud namespace's veth.
const COLLECTOR_PORT: u16 = 4739;

/// Figures of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    /// The phase.
    pub phase: Phase,
    /// Frames the sender achieved per second.
    pub sent_per_s: f64,
    /// Frames sent.
    pub sent: u64,
    /// Packets the agent's datapath saw (summary `packets`).
    pub seen: u64,
    /// Flagged-flow records the agent wrote during the load, per second
    /// (the records of flows whose event was lost come later, from the
    /// flow-table poll, if the flow is still in the table).
    pub flagged_per_s: f64,
    /// Flagged-flow records in all.
    pub flagged: u64,
    /// Events the kernel could not queue (summary `events_lost`).
    pub events_lost: u64,
    /// Agent CPU over the load, percent of one core.
    pub cpu_pct: f64,
    /// Agent resident memory at the end of the load, MiB.
    pub rss_mib: f64,
    /// Agent peak resident memory, MiB.
    pub rss_peak_mib: f64,
    /// Export phases: flows the summary says were reported for good.
    pub flows_reported: u64,
    /// Export phases with IPFIX: flows sent and dropped (summary `sinks`),
    /// and IPFIX messages the receiver got.
    pub ipfix_sent: u64,
    /// See `ipfix_sent`.
    pub ipfix_dropped: u64,
    /// See `ipfix_sent`.
    pub ipfix_messages: u64,
}

/// Results of this part.
#[derive(Debug, Clone, Serialize)]
pub struct AgentResults {
    /// Per phase.
    pub phases: Vec<PhaseResult>,
    /// Highest rate of new flows with events the agent took without loss
    /// (among the phases run).
    pub lossless_events_per_s: u64,
    /// Wall time, seconds.
    pub wall_s: f64,
}

/// The gateway's uplink MAC is 02:ca:5a:00:00:03; frames to this one are
/// "other host" there and dropped after TC ingress.
pub const NOT_GW_MAC: [u8; 6] = [0x02, 0xca, 0x5a, 0, 0, 0x99];
/// The MAC of the cloud namespace's `edge`, the frames' source.
pub const EDGE_MAC: [u8; 6] = [0x02, 0xca, 0x5a, 0, 0, 0x04];
/// The built-in set's 65.55.234.192/26 (mail): 64 source addresses.
const CAS_NET: u32 = u32::from_be_bytes([65, 55, 234, 192]);
/// The gateway's uplink address, the frames' destination.
pub const GW_UPLINK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

/// Runs the phases, each with a fresh agent.
pub fn run(bin: &Path, phases: &[Phase]) -> Result<AgentResults> {
    let started = Instant::now();
    let topo = Topology::new(&[])?;
    let mut out = Vec::new();
    let mut next_flow = 0u64;
    for ph in phases {
        let collector = SocketAddr::new(Topology::CLOUD_ADDR4, COLLECTOR_PORT);
        let mut extra: Vec<String> = Vec::new();
        if ph.ipfix.is_some() {
            extra.extend(EXPORT_ARGS.iter().map(|s| s.to_string()));
        }
        if ph.ipfix == Some(true) {
            extra.extend(["--ipfix".to_string(), collector.to_string()]);
        }
        let receiver = match ph.ipfix {
            Some(true) => Some(udp_sink(&topo, topo.cloud(), collector)?),
            _ => None,
        };
        let agent = Agent::start_with(&topo, bin, &extra)?;
        // Let start-up settle (first flow-table poll, allocations).
        thread::sleep(Duration::from_millis(1500));
        let pid = agent.pid();
        let cpu0 = cpu_seconds(pid)?;
        let flagged0 = agent.flagged();
        let t0 = Instant::now();
        let sent = if ph.rate == 0 {
            thread::sleep(Duration::from_secs_f64(ph.seconds));
            0
        } else {
            let n = (ph.rate as f64 * ph.seconds) as u64;
            let first = next_flow;
            next_flow += n;
            let sport = if ph.events { 9999 } else { 443 };
            let frame = move |i| new_flow_frame(first + i, sport);
            send(&topo, ph.rate, n, ph.seconds, frame)?
        };
        let load_wall = t0.elapsed().as_secs_f64();
        if ph.ipfix.is_some() {
            thread::sleep(EXPORT_TAIL);
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid)? - cpu0;
        let (rss, hwm) = rss_kib(pid)?;
        let flagged_load = agent.flagged() - flagged0;
        let res = agent.stop()?;
        let ipfix = &res.summary["sinks"]["ipfix"];
        let ipfix_messages = receiver.map_or(0, |r| r.stop() as u64);
        let r = PhaseResult {
            phase: ph.clone(),
            sent_per_s: sent as f64 / load_wall,
            sent,
            seen: res.summary["packets"].as_u64().unwrap_or(0),
            flagged_per_s: flagged_load as f64 / wall,
            flagged: res.flagged,
            events_lost: res.summary["events_lost"].as_u64().unwrap_or(0),
            cpu_pct: cpu * 100.0 / wall,
            rss_mib: rss as f64 / 1024.0,
            rss_peak_mib: hwm as f64 / 1024.0,
            flows_reported: res.summary["flows"].as_u64().unwrap_or(0),
            ipfix_sent: ipfix["sent"].as_u64().unwrap_or(0),
            ipfix_dropped: ipfix["dropped"].as_u64().unwrap_or(0),
            ipfix_messages,
        };
        eprintln!(
            "[agent] {:<28} sent {:>8.0}/s  seen {:>8}  flagged {:>8.0}/s  lost {:>7}  CPU {:5.1} %  RSS {:.1} MiB (peak {:.1})  reported {}  ipfix {}/{} ({} messages)",
            ph.name, r.sent_per_s, r.seen, r.flagged_per_s, r.events_lost, r.cpu_pct, r.rss_mib, r.rss_peak_mib,
            r.flows_reported, r.ipfix_sent, r.ipfix_dropped, r.ipfix_messages
        );
        out.push(r);
    }
    let lossless_events_per_s = out
        .iter()
        .filter(|r| r.phase.events && r.events_lost == 0)
        .map(|r| r.phase.rate)
        .max()
        .unwrap_or(0);
    Ok(AgentResults {
        lossless_events_per_s,
        phases: out,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// Sends frames `frame(0)`, ..., `frame(n - 1)` at `rate` per second from
/// the cloud namespace onto the gateway's uplink; gives up after
/// `2 * seconds + 5` s. Returns the frames sent.
pub fn send(
    topo: &Topology,
    rate: u64,
    n: u64,
    seconds: f64,
    frame: impl Fn(u64) -> Vec<u8> + Send + 'static,
) -> Result<u64> {
    let limit = Duration::from_secs_f64(seconds * 2.0 + 5.0);
    topo.try_in_ns(topo.cloud(), move || -> Result<u64> {
        let sock = PacketSocket::open(Topology::CLOUD_IF)?;
        const BATCH: u64 = 32;
        let t0 = Instant::now();
        let mut sent = 0u64;
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH as usize);
        while sent < n {
            if t0.elapsed() > limit {
                break;
            }
            let due = ((t0.elapsed().as_secs_f64() * rate as f64) as u64).min(n);
            if due <= sent {
                thread::sleep(Duration::from_micros(100));
                continue;
            }
            let k = (due - sent).min(BATCH);
            batch.clear();
            batch.extend((0..k).map(|j| frame(sent + j)));
            sent += sock.send_all(&batch)?;
        }
        Ok(sent)
    })
    .and_then(|r| r)
}

/// The UDP frame of new flow number `flow` from source port `sport`.
fn new_flow_frame(flow: u64, sport: u16) -> Vec<u8> {
    let src = Ipv4Addr::from(CAS_NET + (flow % 64) as u32);
    // Ports 1024..65535 per source address.
    let dport = 1024 + ((flow / 64) % 64_512) as u16;
    Pkt::udp(src, GW_UPLINK, sport, dport)
        .payload(18)
        .macs(NOT_GW_MAC, EDGE_MAC)
        .dont_fragment()
        .bytes()
}

/// An AF_PACKET socket bound to one interface, for sending whole frames.
struct PacketSocket {
    fd: i32,
}

impl PacketSocket {
    fn open(iface: &str) -> Result<PacketSocket> {
        // SAFETY: plain socket(2); the fd is owned by the returned value.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        let sock = PacketSocket { fd };
        let ifindex = cas_audit::host::netdev::ifindex(iface)?;
        // SAFETY: a zeroed sockaddr_ll is valid; we fill the fields bind needs.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = 0;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("bind(AF_PACKET)");
        }
        let one: i32 = 1;
        // SAFETY: setsockopt with a valid int option value.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&one as *const i32).cast(),
                4,
            )
        };
        Ok(sock)
    }

    /// Sends every frame (sendmmsg, retrying on a full queue); returns how many.
    fn send_all(&self, frames: &[Vec<u8>]) -> Result<u64> {
        let mut iov: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdrs are valid; each points at one iovec above.
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut done = 0usize;
        let mut tries = 0;
        while done < msgs.len() {
            // SAFETY: msgs[done..] are valid mmsghdrs pointing at live buffers.
            let rc = unsafe {
                libc::sendmmsg(
                    self.fd,
                    msgs[done..].as_mut_ptr(),
                    (msgs.len() - done) as u32,
                    0,
                )
            };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                tries += 1;
                if tries > 1000 || e.raw_os_error() != Some(libc::ENOBUFS) {
                    bail!("sendmmsg(AF_PACKET): {e}");
                }
                thread::sleep(Duration::from_micros(50));
                continue;
            }
            done += rc as usize;
        }
        Ok(done as u64)
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: our own fd, closed once.
        unsafe { libc::close(self.fd) };
    }
}
