//! The agent's cost per DNS answer (issue 13): CPU of the real agent per
//! answer it learns, and per answer that matches none of the set's names.
//!
//! Load: the paced AF_PACKET sender of [`crate::agent`] writes DNS
//! responses (UDP from port 53, built with `domain`'s `MessageBuilder`,
//! names compressed as resolvers do) from a resolver in the cloud namespace
//! (203.0.113.2) to the gateway's uplink address, as a resolver's answers
//! to a LAN client behind NAT cross the uplink. The datapath at the
//! uplink's TC ingress hands each to the agent on the payload ring; the
//! frames' destination MAC is not the gateway's, so its stack drops them
//! right after.
//!
//! Each response answers `t{i}.cas.ms` (the built-in set's `*.cas.ms`) or,
//! for the second case, `t{i}.example.net` (no name of the set) with
//! [`ANSWERS`] records at addresses no other response of the run names: A
//! records from the 480 addresses of 198.51.100.16-255 and
//! 203.0.113.16-255 (the test bed uses the first 16 of each), AAAA records
//! from 2001:db8:5eed::/48 for the rest. 480 addresses do not last a run,
//! so one response in [`a_every`] is an A query (one in 2 for the smallest
//! runs, about one in 17 at 2,000 answers/s for 4 s). TTL 300 s: nothing
//! expires during a run. The addresses only enter the agent's maps; no
//! packet goes to them.
//!
//! Each phase runs a fresh agent (`--max-learned 16384`, the built-in set);
//! rounds rotate the order of the phases. CPU is `utime + stime` over the
//! load, less what the idle phase of the same round used in as long; µs
//! per answer divides it by the answers the agent's summary counts:
//! `learned.answers` for the set's names, and for the others the answers
//! in the responses handed over (`dns_responses − payloads_lost`).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use cas_audit_tests::packet::Pkt;
use cas_audit_tests::Topology;
use domain::base::{
    iana::{Class, Rtype},
    message_builder::StaticCompressor,
    MessageBuilder, Name, Ttl,
};
use domain::rdata::{Aaaa, A};
use serde::Serialize;

use crate::agent::{send, EDGE_MAC, GW_UPLINK, NOT_GW_MAC};
use crate::agentproc::{cpu_seconds, rss_kib, Agent};
use crate::stats::{rotated, Stat};

/// Address records per response.
const ANSWERS: u64 = 2;
/// The resolver: the cloud namespace's address.
const RESOLVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// IPv4 answer addresses: 198.51.100.16-255, then 203.0.113.16-255.
const V4_POOL: u64 = 480;
/// The agent's arguments (besides `run --iface uplink ...`): room for
/// every answer of the largest phase.
const AGENT_ARGS: [&str; 2] = ["--max-learned", "16384"];

/// One load phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Name.
    pub name: String,
    /// Answers (address records) per second offered; 0: idle.
    pub answers_per_s: u64,
    /// Names of the set (`t{i}.cas.ms`) or not (`t{i}.example.net`).
    pub matching: bool,
    /// Seconds of load.
    pub seconds: f64,
}

/// One phase in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Round.
    pub round: usize,
    /// DNS responses sent.
    pub responses: u64,
    /// Answers sent per second.
    pub sent_per_s: f64,
    /// Summary `dns_responses`: responses the datapath handed over.
    pub dns_responses: u64,
    /// Summary `payloads_lost` (payload ring full).
    pub payloads_lost: u64,
    /// Summary `learned.answers`.
    pub learned_answers: u64,
    /// Summary `learned.added`.
    pub learned_added: u64,
    /// Summary `learned.overflow`.
    pub learned_overflow: u64,
    /// Summary `learned.unreadable`.
    pub unreadable: u64,
    /// Agent CPU seconds over the load.
    pub cpu_s: f64,
    /// Wall seconds of the load.
    pub wall_s: f64,
    /// Agent resident memory at the end of the load, MiB.
    pub rss_mib: f64,
    /// µs of agent CPU per answer, idle CPU taken off (0 when idle).
    pub us_per_answer: f64,
}

/// A phase over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    /// The phase.
    pub phase: Phase,
    /// Agent CPU over the load, percent of one core.
    pub cpu_pct: Stat,
    /// µs of agent CPU per answer (idle taken off).
    pub us_per_answer: Stat,
    /// Per round.
    pub runs: Vec<Run>,
}

/// Results of this part.
#[derive(Debug, Clone, Serialize)]
pub struct LearnResults {
    /// Rounds.
    pub rounds: usize,
    /// Per phase, in the order given.
    pub phases: Vec<PhaseResult>,
    /// Wall time, seconds.
    pub wall_s: f64,
}

/// Runs `rounds` rounds of `phases` (the first must be the idle one).
pub fn run(bin: &Path, phases: &[Phase], rounds: usize) -> Result<LearnResults> {
    let started = Instant::now();
    let topo = Topology::new(&[])?;
    let extra: Vec<String> = AGENT_ARGS.iter().map(|s| s.to_string()).collect();
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); phases.len()];
    for round in 0..rounds {
        let mut idle_rate = 0.0;
        // The idle phase first, for the others' baseline; the rest rotated.
        let order: Vec<usize> = (0..phases.len()).collect();
        let order: Vec<usize> = [0].into_iter().chain(rotated(&order[1..], round)).collect();
        for k in order {
            let ph = &phases[k];
            let r = run_phase(&topo, bin, &extra, ph, round, idle_rate)?;
            if ph.answers_per_s == 0 {
                idle_rate = r.cpu_s / r.wall_s;
            }
            eprintln!(
                "[learn] round {round} {:<36} sent {:>6.0} answers/s  handed over {:>6} (lost {})  learned {} (added {}, overflow {}, unreadable {})  CPU {:.3} s in {:.1} s  {:.1} µs/answer",
                ph.name, r.sent_per_s, r.dns_responses, r.payloads_lost, r.learned_answers,
                r.learned_added, r.learned_overflow, r.unreadable, r.cpu_s, r.wall_s, r.us_per_answer
            );
            runs[k].push(r);
        }
    }
    let phases = phases
        .iter()
        .zip(runs)
        .map(|(ph, runs)| PhaseResult {
            phase: ph.clone(),
            cpu_pct: Stat::of(runs.iter().map(|r| r.cpu_s * 100.0 / r.wall_s).collect()),
            us_per_answer: Stat::of(runs.iter().map(|r| r.us_per_answer).collect()),
            runs,
        })
        .collect();
    Ok(LearnResults {
        rounds,
        phases,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

fn run_phase(
    topo: &Topology,
    bin: &Path,
    extra: &[String],
    ph: &Phase,
    round: usize,
    idle_rate: f64,
) -> Result<Run> {
    let agent = Agent::start_with(topo, bin, extra)?;
    // Let start-up settle (first flow-table poll, allocations).
    thread::sleep(Duration::from_millis(1500));
    let pid = agent.pid();
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let responses = if ph.answers_per_s == 0 {
        thread::sleep(Duration::from_secs_f64(ph.seconds));
        0
    } else {
        let rate = ph.answers_per_s / ANSWERS;
        let n = (rate as f64 * ph.seconds) as u64;
        let every = a_every(n);
        let matching = ph.matching;
        send(topo, rate, n, ph.seconds, move |i| {
            response_frame(i, matching, every)
        })?
    };
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds(pid)? - cpu0;
    let (rss, _) = rss_kib(pid)?;
    let s = agent.stop()?.summary;
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let l = &s["learned"];
    let (dns_responses, payloads_lost) = (n(&s["dns_responses"]), n(&s["payloads_lost"]));
    let learned_answers = n(&l["answers"]);
    let answers = if ph.matching {
        learned_answers
    } else {
        dns_responses.saturating_sub(payloads_lost) * ANSWERS
    };
    let us_per_answer = if ph.answers_per_s == 0 || answers == 0 {
        0.0
    } else {
        (cpu_s - idle_rate * wall_s).max(0.0) / answers as f64 * 1e6
    };
    Ok(Run {
        round,
        responses,
        sent_per_s: (responses * ANSWERS) as f64 / wall_s,
        dns_responses,
        payloads_lost,
        learned_answers,
        learned_added: n(&l["added"]),
        learned_overflow: n(&l["overflow"]),
        unreadable: n(&l["unreadable"]),
        cpu_s,
        wall_s,
        rss_mib: rss as f64 / 1024.0,
        us_per_answer,
    })
}

/// One response in `a_every(n)` of a run of `n` is an A query: as many as
/// [`V4_POOL`] gives distinct addresses, at most every second one.
fn a_every(n: u64) -> u64 {
    n.div_ceil(V4_POOL / ANSWERS).max(2)
}

/// Address `k` of the IPv4 pool.
fn v4_addr(k: u64) -> Ipv4Addr {
    let k = k % V4_POOL;
    let host = 16 + (k % 240) as u8;
    if k < 240 {
        Ipv4Addr::new(198, 51, 100, host)
    } else {
        Ipv4Addr::new(203, 0, 113, host)
    }
}

/// The DNS response number `i` (DNS id `i`), with [`ANSWERS`] records.
fn dns_response(i: u64, matching: bool, every: u64) -> Vec<u8> {
    let qname = if matching {
        format!("t{i}.cas.ms")
    } else {
        format!("t{i}.example.net")
    };
    let qname = Name::<Vec<u8>>::from_str(&qname).expect("a valid name");
    let v4 = i.is_multiple_of(every);
    let target = StaticCompressor::new(Vec::new());
    let mut b = MessageBuilder::from_target(target)
        .expect("an empty message fits")
        .question();
    let h = b.header_mut();
    h.set_id(i as u16);
    h.set_qr(true);
    h.set_rd(true);
    h.set_ra(true);
    b.push((&qname, if v4 { Rtype::A } else { Rtype::AAAA }))
        .expect("the question fits");
    let mut b = b.answer();
    let ttl = Ttl::from_secs(300);
    for j in 0..ANSWERS {
        let pushed = if v4 {
            let addr = v4_addr(i / every * ANSWERS + j);
            b.push((&qname, Class::IN, ttl, A::new(addr)))
        } else {
            let k = i * ANSWERS + j;
            let addr = Ipv6Addr::new(0x2001, 0xdb8, 0x5eed, 0, 0, 0, (k >> 16) as u16, k as u16);
            b.push((&qname, Class::IN, ttl, Aaaa::new(addr)))
        };
        pushed.expect("the answer fits");
    }
    b.finish().into_target()
}

/// The frame of response `i`: resolver:53 → the gateway's uplink address,
/// a client port per response.
fn response_frame(i: u64, matching: bool, every: u64) -> Vec<u8> {
    let port = 1024 + (i % 64_512) as u16;
    Pkt::udp(RESOLVER, GW_UPLINK, 53, port)
        .data(dns_response(i, matching, every))
        .macs(NOT_GW_MAC, EDGE_MAC)
        .dont_fragment()
        .bytes()
}

/// The Markdown section of this part.
pub fn markdown(s: &mut String, r: &LearnResults) {
    let _ = writeln!(s, "### The agent's cost per DNS answer\n");
    let _ = writeln!(
        s,
        "The real agent (built-in set, `--max-learned 16384`) on the gateway; DNS \
         responses of {ANSWERS} answers each from a resolver to the gateway's uplink \
         address, injected at its TC ingress by a paced AF_PACKET sender, for names of \
         the set (`t{{i}}.cas.ms`: every answer learned) or not (`t{{i}}.example.net`). \
         {} rounds, a fresh agent per phase; CPU is percent of one core over the load; \
         µs per answer = (agent CPU − the idle phase's CPU in as long) / answers the \
         summary counts (median, min…max over rounds). Sums over rounds for the counts.\n",
        r.rounds
    );
    let _ = writeln!(
        s,
        "| phase | answers/s sent | responses sent | handed over (`dns_responses`) | `payloads_lost` | `learned.answers` | `learned.added` | overflow | agent CPU | µs per answer | RSS MiB |"
    );
    let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for p in &r.phases {
        let sum = |f: fn(&Run) -> u64| p.runs.iter().map(f).sum::<u64>();
        let med = |f: fn(&Run) -> f64| Stat::of(p.runs.iter().map(f).collect()).median;
        let us = &p.us_per_answer;
        let _ = writeln!(
            s,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {:.1} % | {} | {:.1} |",
            p.phase.name,
            med(|r| r.sent_per_s),
            sum(|r| r.responses),
            sum(|r| r.dns_responses),
            sum(|r| r.payloads_lost),
            sum(|r| r.learned_answers),
            sum(|r| r.learned_added),
            sum(|r| r.learned_overflow),
            p.cpu_pct.median,
            if p.phase.answers_per_s == 0 {
                "–".to_string()
            } else {
                format!("{:.1} ({:.1}…{:.1})", us.median, us.min, us.max)
            },
            med(|r| r.rss_mib),
        );
    }
    s.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::base::Message;

    #[test]
    fn responses_answer_their_name_at_distinct_addresses() {
        let every = a_every(2_000);
        assert_eq!(every, 9);
        let mut seen = std::collections::HashSet::new();
        for i in 0..2_000 {
            let msg = dns_response(i, i % 3 != 0, every);
            let m = Message::from_octets(msg).expect("a DNS message");
            assert!(m.header().qr());
            assert_eq!(m.header().id(), i as u16);
            let q = m.sole_question().expect("one question");
            let want = if i % 3 != 0 { "cas.ms" } else { "example.net" };
            assert_eq!(q.qname().to_string(), format!("t{i}.{want}"));
            let mut n = 0;
            for rr in m.answer().expect("answers").limit_to::<A>() {
                let rr = rr.expect("an A record");
                assert!(seen.insert(rr.data().addr().to_string()));
                assert_eq!(rr.ttl().as_secs(), 300);
                n += 1;
            }
            for rr in m.answer().expect("answers").limit_to::<Aaaa>() {
                assert!(seen.insert(rr.expect("an AAAA record").data().addr().to_string()));
                n += 1;
            }
            assert_eq!(n, ANSWERS, "response {i}");
            assert_eq!(q.qtype() == Rtype::A, i % every == 0);
        }
        assert_eq!(seen.len(), 4_000);
        // The test bed's own addresses are never an answer.
        assert!(!seen.contains("203.0.113.1") && !seen.contains("198.51.100.2"));
    }
}
