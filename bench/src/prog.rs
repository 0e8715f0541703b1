//! Nanoseconds per packet through `BPF_PROG_TEST_RUN`.
//!
//! For each address set, packet case and program type (TC egress, XDP
//! ingress) three programs of that type run on the same input: the empty
//! baseline, the parse-only baseline and the real program. Rounds
//! interleave sets, cases, hooks and programs (each round rotates every
//! order); the figures are medians over rounds, and the target metric is
//! the median of the per-round differences real − empty.
//!
//! Two methods:
//! - `repeat`: one `test_run` with `repeat` runs of one packet; the kernel
//!   reports the average time per run, timer overhead amortised.
//! - `distinct`: new flows need a different packet each time, so each of
//!   `new_flows` distinct packets gets its own `test_run` with repeat 1,
//!   and the kernel-reported times are averaged. Each such time includes
//!   one `ktime_get_ns` and the test loop's bookkeeping; the empty program
//!   measured the same way carries the same overhead, so real − empty is
//!   the program's own cost.

use std::net::IpAddr;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use aya::maps::{MapData, RingBuf};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use cas_audit::datapath::{Datapath, LoadOptions};
use cas_audit::flow::{AllowedPorts, PortPolicy};
use cas_audit_common::{names, Counter};
use cas_audit_tests::packet::{Pkt, ACK, ETH_P_8021Q, PSH, SYN};
use serde::Serialize;

use crate::sets::{self, BenchSet, HIT4, HIT6, LOCAL4, LOCAL6, MISS4, MISS6, NEAR4, NEAR6};
use crate::stats::{rotated, Stat};

/// How much to measure.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Config {
    /// Rounds (medians are over rounds).
    pub rounds: usize,
    /// `repeat` of the single-packet cases.
    pub repeat: u32,
    /// Distinct packets per new-flow measurement.
    pub new_flows: usize,
}

/// The program types measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// TC egress (`cas_tc_egress`): the packets go local → CAS.
    Tc,
    /// XDP ingress (`cas_xdp_ingress`): the packets come CAS → local.
    Xdp,
}

impl Hook {
    const ALL: [Hook; 2] = [Hook::Tc, Hook::Xdp];

    /// Empty, parse-only and real program.
    fn programs(self) -> [&'static str; 3] {
        match self {
            Hook::Tc => [
                names::PROG_BENCH_EMPTY_TC,
                names::PROG_BENCH_PARSE_TC,
                names::PROG_TC_EGRESS,
            ],
            Hook::Xdp => [
                names::PROG_BENCH_EMPTY_XDP,
                names::PROG_BENCH_PARSE_XDP,
                names::PROG_XDP_INGRESS,
            ],
        }
    }
}

/// The packet cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// IPv4, remote address in no range and in a /16 no range touches.
    V4Miss,
    /// IPv4, remote address in no range but in a /16 that has one: the
    /// prefilter passes, the trie misses.
    V4NearMiss,
    /// IPv6 miss (as [`Case::V4Miss`]).
    V6Miss,
    /// IPv6 near miss (as [`Case::V4NearMiss`]; synthetic sets only).
    V6NearMiss,
    /// IPv4 TCP ACK of an existing flow to a CAS address.
    V4Hit,
    /// IPv6 TCP ACK of an existing flow (synthetic sets only).
    V6Hit,
    /// [`Case::V4Hit`] with an 802.1Q tag.
    VlanV4Hit,
    /// [`Case::V4Hit`] measured like the new-flow cases (one test run per
    /// packet): calibrates what that method adds (cold caches after the
    /// syscall, timer) against the `repeat` figure.
    V4HitSingle,
    /// IPv4 TCP SYN opening a new flow to an allowed port (443).
    V4NewAllowed,
    /// IPv4 TCP SYN opening a new flow to a disallowed port (8443): a
    /// ring-buffer event.
    V4NewEvent,
    /// A DNS response (UDP from port 53, 120 bytes, not CAS) handed to the
    /// agent on the payload ring (one test run per packet, ring drained).
    V4Dns,
    /// A ClientHello (517 bytes, padded as browsers do) to port 443 of a
    /// non-CAS address, handed over likewise.
    V4Hello,
    /// A non-CAS TCP segment to port 443 with 517 bytes of application data
    /// (TLS record type 23): stays on the fast path.
    V4Https,
}

impl Case {
    const ALL: [Case; 13] = [
        Case::V4Miss,
        Case::V4NearMiss,
        Case::V6Miss,
        Case::V6NearMiss,
        Case::V4Hit,
        Case::V6Hit,
        Case::VlanV4Hit,
        Case::V4HitSingle,
        Case::V4NewAllowed,
        Case::V4NewEvent,
        Case::V4Dns,
        Case::V4Hello,
        Case::V4Https,
    ];

    /// The name used in the results.
    pub fn name(self) -> &'static str {
        match self {
            Case::V4Miss => "IPv4 miss",
            Case::V4NearMiss => "IPv4 miss, same /16 as a range",
            Case::V6Miss => "IPv6 miss",
            Case::V6NearMiss => "IPv6 miss, same /16 as a range",
            Case::V4Hit => "IPv4 hit, existing flow",
            Case::V6Hit => "IPv6 hit, existing flow",
            Case::VlanV4Hit => "VLAN-tagged IPv4 hit, existing flow",
            Case::V4HitSingle => "IPv4 hit, existing flow, one test run per packet",
            Case::V4NewAllowed => "IPv4 new flow, allowed port",
            Case::V4NewEvent => "IPv4 new flow, disallowed port (event)",
            Case::V4Dns => "IPv4 DNS response, handed to the agent",
            Case::V4Hello => "IPv4 ClientHello to 443, handed to the agent",
            Case::V4Https => "IPv4 miss, TLS data to 443 (not a ClientHello)",
        }
    }

    /// Measured with one test run per packet.
    fn distinct(self) -> bool {
        matches!(
            self,
            Case::V4HitSingle | Case::V4NewAllowed | Case::V4NewEvent | Case::V4Dns | Case::V4Hello
        )
    }

    /// Every packet opens a new flow.
    fn new_flows(self) -> bool {
        matches!(self, Case::V4NewAllowed | Case::V4NewEvent)
    }

    fn needs_v6_ranges(self) -> bool {
        matches!(self, Case::V6NearMiss | Case::V6Hit)
    }

    /// Remote address, remote port, TCP flags and VLAN tag of the case.
    fn shape(self) -> (IpAddr, u16, u8, Option<u16>) {
        match self {
            Case::V4Miss => (MISS4.into(), 443, ACK, None),
            Case::V4NearMiss => (NEAR4.into(), 443, ACK, None),
            Case::V6Miss => (MISS6.into(), 443, ACK, None),
            Case::V6NearMiss => (NEAR6.into(), 443, ACK, None),
            Case::V4Hit => (HIT4.into(), 443, ACK, None),
            Case::V6Hit => (HIT6.into(), 443, ACK, None),
            Case::VlanV4Hit => (HIT4.into(), 443, ACK, Some(100)),
            Case::V4HitSingle => (HIT4.into(), 443, ACK, None),
            Case::V4NewAllowed => (HIT4.into(), 443, SYN, None),
            Case::V4NewEvent => (HIT4.into(), 8443, SYN, None),
            Case::V4Dns | Case::V4Hello | Case::V4Https => (MISS4.into(), 443, ACK | PSH, None),
        }
    }

    /// Whether the real program hands each packet to the agent.
    fn handed_over(self) -> bool {
        matches!(self, Case::V4Dns | Case::V4Hello)
    }

    /// The hand-off cases' frame (the same for both hooks: traffic between
    /// two non-CAS hosts).
    fn payload_frame(self) -> Option<Vec<u8>> {
        let (remote, _, flags, _) = self.shape();
        let f = match self {
            Case::V4Dns => Pkt::udp(remote, LOCAL4, 53, 40_000).payload(120).bytes(),
            Case::V4Hello | Case::V4Https => {
                let mut b = Pkt::tcp(LOCAL4, remote, 40_000, 443, flags)
                    .payload(517)
                    .bytes();
                let at = b.len() - 517;
                let kind = if self == Case::V4Hello { 22 } else { 23 };
                b[at..at + 6].copy_from_slice(&[kind, 3, 1, 2, 0, 1]);
                b
            }
            _ => return None,
        };
        Some(f)
    }

    /// The frames for `hook`: one, or `n` distinct new flows for `round`.
    fn frames(self, hook: Hook, round: usize, n: usize) -> Vec<Vec<u8>> {
        if let Some(f) = self.payload_frame() {
            return if self.distinct() { vec![f; n] } else { vec![f] };
        }
        let (remote, rport, flags, vlan) = self.shape();
        let local: IpAddr = if remote.is_ipv4() {
            if self.new_flows() {
                // A fresh local address per round: every flow is new.
                IpAddr::from([198, 51, 100, 10 + (round % 200) as u8])
            } else {
                LOCAL4.into()
            }
        } else {
            LOCAL6.into()
        };
        let build = |lport: u16| {
            let p = match hook {
                Hook::Tc => Pkt::tcp(local, remote, lport, rport, flags),
                // Ingress: the CAS side answers. A SYN-ACK does not tell
                // who opened the flow, so the service port is the remote
                // (CAS) port, as for the egress SYN.
                Hook::Xdp => {
                    let f = if flags == SYN { SYN | ACK } else { flags };
                    Pkt::tcp(remote, local, rport, lport, f)
                }
            }
            .dont_fragment();
            match vlan {
                Some(v) => p.vlan(ETH_P_8021Q, v).bytes(),
                None => p.bytes(),
            }
        };
        if self.new_flows() {
            // 20000.. keeps clear of the allowed local ports (80, 443, 11344).
            (0..n).map(|i| build(20_000 + i as u16)).collect()
        } else if self.distinct() {
            vec![build(40_000); n]
        } else {
            vec![build(40_000)]
        }
    }
}

/// Results of one (set, case, hook).
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Set name.
    pub set: String,
    /// Case name.
    pub case: String,
    /// Case id.
    pub case_id: Case,
    /// Program type.
    pub hook: Hook,
    /// `repeat N` or `distinct N`.
    pub method: String,
    /// ns per packet, empty program.
    pub empty_ns: Stat,
    /// ns per packet, parse-only program.
    pub parse_ns: Stat,
    /// ns per packet, real program.
    pub real_ns: Stat,
    /// Per-round real − empty: the target metric.
    pub delta_ns: Stat,
    /// Events the real program could not queue (should be 0).
    pub events_lost: u64,
}

/// Per-set facts.
#[derive(Debug, Clone, Serialize)]
pub struct SetInfo {
    /// Set name.
    pub name: String,
    /// IPv4 prefixes.
    pub v4: usize,
    /// IPv6 prefixes.
    pub v6: usize,
    /// Share of IPv4 /16s the prefilter passes to the trie.
    pub prefilter_fill_v4: f64,
    /// Share of IPv6 /16s the prefilter passes to the trie.
    pub prefilter_fill_v6: f64,
    /// Seconds to load the datapath with this set.
    pub load_s: f64,
}

/// Everything this part measured.
#[derive(Debug, Clone, Serialize)]
pub struct ProgResults {
    /// What was run.
    pub config: Config,
    /// The sets.
    pub sets: Vec<SetInfo>,
    /// One entry per (set, case, hook).
    pub cases: Vec<CaseResult>,
    /// Wall time of this part, seconds.
    pub wall_s: f64,
}

struct Loaded {
    set: BenchSet,
    dp: Datapath,
    ring: RingBuf<MapData>,
    payloads: RingBuf<MapData>,
}

fn load(set: BenchSet) -> Result<(Loaded, SetInfo)> {
    sets::check_plan(&set)?;
    let t = Instant::now();
    // As `run` loads it: DNS responses and ClientHellos handed over.
    let mut dp = Datapath::load_with(
        cas_audit::EBPF_OBJECT,
        &set.ranges,
        &PortPolicy::global(AllowedPorts::default()),
        &LoadOptions {
            handoff: true,
            ..LoadOptions::default()
        },
    )
    .with_context(|| format!("loading the datapath with set {}", set.name))?;
    let load_s = t.elapsed().as_secs_f64();
    for name in [names::PROG_BENCH_EMPTY_TC, names::PROG_BENCH_PARSE_TC] {
        let p: &mut SchedClassifier = dp
            .ebpf_mut()
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
            .try_into()?;
        p.load().with_context(|| format!("loading {name}"))?;
    }
    for name in [names::PROG_BENCH_EMPTY_XDP, names::PROG_BENCH_PARSE_XDP] {
        let p: &mut Xdp = dp
            .ebpf_mut()
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
            .try_into()?;
        p.load().with_context(|| format!("loading {name}"))?;
    }
    let ring = dp.take_events()?;
    let payloads = dp.take_payloads()?;
    let v6 = set
        .ranges
        .iter()
        .filter(|r| r.prefix.addr().is_ipv6())
        .count();
    let info = SetInfo {
        name: set.name.clone(),
        v4: set.ranges.len() - v6,
        v6,
        prefilter_fill_v4: sets::prefilter_fill(&set, true),
        prefilter_fill_v6: sets::prefilter_fill(&set, false),
        load_s,
    };
    Ok((
        Loaded {
            set,
            dp,
            ring,
            payloads,
        },
        info,
    ))
}

/// One test run of program `name` on `data`; returns the kernel's average
/// ns per run.
fn run_once(dp: &mut Datapath, hook: Hook, name: &str, data: &[u8], repeat: u32) -> Result<f64> {
    let prog = dp
        .ebpf_mut()
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing"))?;
    let opts = TestRunOptions {
        data_in: Some(data),
        repeat,
        ..Default::default()
    };
    let res = match hook {
        Hook::Tc => {
            let p: &mut SchedClassifier = prog.try_into()?;
            p.test_run(opts)
        }
        Hook::Xdp => {
            let p: &mut Xdp = prog.try_into()?;
            p.test_run(opts)
        }
    }
    .with_context(|| format!("test run of {name}"))?;
    Ok(res.duration.as_nanos() as f64)
}

fn drain(ring: &mut RingBuf<MapData>) -> u64 {
    let mut n = 0;
    while ring.next().is_some() {
        n += 1;
    }
    n
}

/// Empties the flow table (between new-flow batches, so each batch starts
/// from the same state).
fn clear_flows(dp: &mut Datapath) -> Result<()> {
    let keys: Vec<_> = dp.flows()?.into_iter().map(|(k, _)| k).collect();
    dp.remove_flows(&keys)?;
    Ok(())
}

/// Samples of one (set, case, hook): per program, per round.
#[derive(Default, Clone)]
struct Samples {
    per_prog: [Vec<f64>; 3],
    events_lost: u64,
}

/// Runs the whole matrix.
pub fn run(cfg: Config, set_list: Vec<BenchSet>) -> Result<ProgResults> {
    let started = Instant::now();
    let mut loaded = Vec::new();
    let mut infos = Vec::new();
    for s in set_list {
        eprintln!(
            "[prog] loading set {} ({} prefixes)",
            s.name,
            s.ranges.len()
        );
        let (l, i) = load(s)?;
        loaded.push(l);
        infos.push(i);
    }
    let keys: Vec<(usize, Case, Hook)> = (0..loaded.len())
        .flat_map(|s| Case::ALL.into_iter().map(move |c| (s, c)))
        .filter(|(s, c)| !c.needs_v6_ranges() || loaded[*s].set.has_v6)
        .flat_map(|(s, c)| Hook::ALL.into_iter().map(move |h| (s, c, h)))
        .collect();
    let mut samples = vec![Samples::default(); keys.len()];
    let set_ids: Vec<usize> = (0..loaded.len()).collect();
    for round in 0..cfg.rounds {
        let t = Instant::now();
        for s in rotated(&set_ids, round) {
            for case in rotated(&Case::ALL, round) {
                for hook in rotated(&Hook::ALL, round) {
                    let Some(k) = keys.iter().position(|x| *x == (s, case, hook)) else {
                        continue;
                    };
                    measure(&mut loaded[s], case, hook, round, cfg, &mut samples[k])?;
                }
            }
        }
        eprintln!(
            "[prog] round {}/{} done in {:.1} s",
            round + 1,
            cfg.rounds,
            t.elapsed().as_secs_f64()
        );
    }
    let cases = keys
        .iter()
        .zip(samples)
        .map(|(&(s, case, hook), smp)| {
            let [e, p, r] = smp.per_prog;
            let delta: Vec<f64> = r.iter().zip(&e).map(|(r, e)| r - e).collect();
            CaseResult {
                set: loaded[s].set.name.clone(),
                case: case.name().into(),
                case_id: case,
                hook,
                method: if case.distinct() {
                    format!("one test run per packet, {} packets", cfg.new_flows)
                } else {
                    format!("repeat {}", cfg.repeat)
                },
                empty_ns: Stat::of(e),
                parse_ns: Stat::of(p),
                real_ns: Stat::of(r),
                delta_ns: Stat::of(delta),
                events_lost: smp.events_lost,
            }
        })
        .collect();
    Ok(ProgResults {
        config: cfg,
        sets: infos,
        cases,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

fn measure(
    l: &mut Loaded,
    case: Case,
    hook: Hook,
    round: usize,
    cfg: Config,
    out: &mut Samples,
) -> Result<()> {
    let progs = hook.programs();
    let order = rotated(&[0usize, 1, 2], round);
    let frames = case.frames(hook, round, cfg.new_flows);
    for i in order {
        let before = l.dp.counters()?;
        if case.distinct() {
            let mut total = 0.0;
            for (j, f) in frames.iter().enumerate() {
                total += run_once(&mut l.dp, hook, progs[i], f, 1)?;
                // 256 KiB hold about 3,600 events, the payload ring
                // about 480 hand-offs: drain well before.
                if j % 1000 == 999 {
                    drain(&mut l.ring);
                }
                if j % 200 == 199 {
                    drain(&mut l.payloads);
                }
            }
            drain(&mut l.ring);
            drain(&mut l.payloads);
            out.per_prog[i].push(total / frames.len() as f64);
        } else {
            let ns = run_once(&mut l.dp, hook, progs[i], &frames[0], cfg.repeat)?;
            out.per_prog[i].push(ns);
        }
        if i == 2 {
            let after = l.dp.counters()?;
            let d = |c: Counter| after.get(c) - before.get(c);
            check(case, &l.set.name, hook, &frames, cfg.repeat, d)?;
            out.events_lost += d(Counter::EventsLost);
            if case.new_flows() {
                clear_flows(&mut l.dp)?;
            }
        }
    }
    Ok(())
}

/// Checks that the real program did what the case is about (matched every
/// packet or none, created every flow, emitted every event), so that a
/// wrong packet cannot pass for a fast path.
fn check(
    case: Case,
    set: &str,
    hook: Hook,
    frames: &[Vec<u8>],
    repeat: u32,
    delta: impl Fn(Counter) -> u64,
) -> Result<()> {
    let runs = if case.distinct() {
        frames.len() as u64
    } else {
        u64::from(repeat)
    };
    let hit = !matches!(
        case,
        Case::V4Miss
            | Case::V4NearMiss
            | Case::V6Miss
            | Case::V6NearMiss
            | Case::V4Dns
            | Case::V4Hello
            | Case::V4Https
    );
    let want_matched = if hit { runs } else { 0 };
    let want_created = if case.new_flows() {
        runs
    } else {
        delta(Counter::FlowsCreated)
    };
    let want_events = if case == Case::V4NewEvent { runs } else { 0 };
    let handed = delta(Counter::DnsResponses) + delta(Counter::ClientHellos);
    let lost = delta(Counter::PayloadsLost);
    anyhow::ensure!(
        handed == if case.handed_over() { runs } else { 0 } && lost == 0,
        "{set} / {} / {hook:?}: {handed} payloads handed over ({lost} lost), expected {}",
        case.name(),
        if case.handed_over() { runs } else { 0 }
    );
    let got = (
        delta(Counter::Packets),
        delta(Counter::Matched),
        delta(Counter::FlowsCreated),
        delta(Counter::Events) + delta(Counter::EventsLost),
    );
    let want = (runs, want_matched, want_created, want_events);
    anyhow::ensure!(
        got == want && delta(Counter::FlowsCreated) <= 1.max(want_created),
        "{set} / {} / {hook:?}: the real program counted (packets, matched, flows created, events) = {got:?}, expected {want:?}",
        case.name()
    );
    Ok(())
}
