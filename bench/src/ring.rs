//! The event ring buffer alone: how many events per second the kernel side
//! produces and a bare consumer (poll + drain, no processing) takes,
//! without the agent's per-event work. One thread runs `cas_tc_egress`
//! through `BPF_PROG_TEST_RUN` on distinct new disallowed flows as fast as
//! it can (or paced); another polls the ring buffer and drains it.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use cas_audit::datapath::Datapath;
use cas_audit::flow::AllowedPorts;
use cas_audit_common::{names, sizes, Counter};
use cas_audit_tests::packet::{Pkt, SYN};
use serde::Serialize;

use crate::sets::{self, HIT4};

/// Results of this part.
#[derive(Debug, Clone, Serialize)]
pub struct RingResults {
    /// Per rate.
    pub runs: Vec<RingResult>,
    /// Flows in the table at the end (the LRU table is full by then).
    pub table_flows: usize,
    /// Milliseconds to read that table as the agent does once a second
    /// (`Datapath::flows`: one syscall per key and one per value).
    pub snapshot_ms: f64,
}

/// Figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RingResult {
    /// Offered events per second (0: as fast as one producer thread goes).
    pub offered: u64,
    /// Seconds.
    pub seconds: f64,
    /// Events produced per second (kernel `Events` + `EventsLost`).
    pub produced_per_s: f64,
    /// Events the consumer read per second.
    pub consumed_per_s: f64,
    /// Events the kernel could not queue.
    pub lost: u64,
}

/// Runs each rate (0: unpaced) for `seconds`.
pub fn run(rates: &[u64], seconds: f64) -> Result<RingResults> {
    let set = sets::builtin();
    let mut dp = Datapath::load(&set.ranges, &AllowedPorts::default(), sizes::MAX_FLOWS)?;
    let mut ring = dp.take_events()?;
    let mut out = Vec::new();
    let mut next = 0u64;
    for &rate in rates {
        let before = dp.counters()?;
        let stop = Arc::new(AtomicBool::new(false));
        let consumed = Arc::new(AtomicU64::new(0));
        let consumer = {
            let (stop, consumed) = (stop.clone(), consumed.clone());
            thread::spawn(move || {
                let fd = ring.as_raw_fd();
                loop {
                    let mut p = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, 50) };
                    let mut n = 0;
                    while ring.next().is_some() {
                        n += 1;
                    }
                    consumed.fetch_add(n, Ordering::Relaxed);
                    if n == 0 && stop.load(Ordering::Relaxed) {
                        return ring;
                    }
                }
            })
        };
        let t0 = Instant::now();
        let mut sent = 0u64;
        let prog: &mut SchedClassifier = dp
            .ebpf_mut()
            .program_mut(names::PROG_TC_EGRESS)
            .ok_or_else(|| anyhow!("program missing"))?
            .try_into()?;
        while t0.elapsed().as_secs_f64() < seconds {
            if rate > 0 && sent as f64 >= t0.elapsed().as_secs_f64() * rate as f64 {
                thread::sleep(Duration::from_micros(50));
                continue;
            }
            for _ in 0..64 {
                let flow = next + sent;
                // 40,000 ports per local address, 200 addresses.
                let f = new_flow_frame(flow);
                prog.test_run(TestRunOptions {
                    data_in: Some(&f),
                    ..Default::default()
                })?;
                sent += 1;
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        next += sent;
        thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        ring = consumer
            .join()
            .map_err(|_| anyhow!("ring consumer panicked"))?;
        let after = dp.counters()?;
        let d = |c: Counter| after.get(c) - before.get(c);
        let r = RingResult {
            offered: rate,
            seconds: wall,
            produced_per_s: (d(Counter::Events) + d(Counter::EventsLost)) as f64 / wall,
            consumed_per_s: consumed.load(Ordering::Relaxed) as f64 / wall,
            lost: d(Counter::EventsLost),
        };
        eprintln!(
            "[ring] offered {:>7}/s: produced {:>8.0}/s, consumed {:>8.0}/s, lost {}",
            rate, r.produced_per_s, r.consumed_per_s, r.lost
        );
        out.push(r);
    }
    let t = Instant::now();
    let table_flows = dp.flows()?.len();
    let snapshot_ms = t.elapsed().as_secs_f64() * 1000.0;
    eprintln!("[ring] reading the flow table ({table_flows} flows) took {snapshot_ms:.0} ms");
    Ok(RingResults {
        runs: out,
        table_flows,
        snapshot_ms,
    })
}

/// The SYN of new disallowed flow number `flow`: 40,000 ports per local
/// address, 200 addresses.
fn new_flow_frame(flow: u64) -> Vec<u8> {
    let local = IpAddr::from([198, 51, 100, 10 + ((flow / 40_000) % 200) as u8]);
    let port = 20_000 + (flow % 40_000) as u16;
    Pkt::tcp(local, HIT4, port, 8443, SYN)
        .dont_fragment()
        .bytes()
}
