//! `cas-audit run`: attach, report flows live, summarise at exit.

use std::{collections::HashMap, io::Write, path::PathBuf, time::Duration};

use cas_audit_common::{history, sizes, Counter, Direction, FlowEvent, FlowStats};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use crate::{
    addrset::{AddressSet, DataCenter, Purpose, Range},
    datapath::{Datapath, IngressMode, LoadOptions},
    error::{preflight, Error},
    flow::Flow,
    logdir::LogDir,
    pin::PinDir,
    ports::{AllowedPorts, PortPolicy},
    report::{monotonic_ns, rfc3339, Clock, FlowRecord, Output, Reason, Summary},
    tracker::Tracker,
};

/// Where JSON lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonTarget {
    /// Standard output (`--json -`).
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Interfaces to attach to.
    pub ifaces: Vec<String>,
    /// Allowed service ports for every range (`--allow-port`); `None`: the
    /// set's per-purpose ports with `--set`, else the defaults.
    pub ports: Option<AllowedPorts>,
    /// The address set: a built-in name or a set file; `None`: the default built-in set.
    pub set: Option<String>,
    /// Restrict the set to these data centers (empty: all).
    pub datacenters: Vec<DataCenter>,
    /// Restrict the set to these purposes (empty: all).
    pub purposes: Vec<Purpose>,
    /// JSON-lines output.
    pub json: Option<JsonTarget>,
    /// `--log-dir`: the JSON lines in rotated files too.
    pub log_dir: Option<crate::logdir::LogDirOptions>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Ingress hook choice.
    pub ingress: IngressMode,
    /// How often the flow table is read.
    pub poll_interval: Duration,
    /// Idle time after which a flow is reported as expired.
    pub idle_timeout: Duration,
    /// Kernel flow-table size.
    pub max_flows: u32,
    /// Time a flow's first packet waits for an answer before the flow is
    /// unanswered.
    pub answer_timeout: Duration,
    /// Event ring-buffer size in bytes; `None`: the default.
    pub ring_bytes: Option<u32>,
    /// Pin directory (`--pin`).
    pub pin: Option<PathBuf>,
    /// Serve Prometheus metrics here (`--metrics`).
    pub metrics: Option<std::net::SocketAddr>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            ifaces: Vec::new(),
            ports: None,
            set: None,
            datacenters: Vec::new(),
            purposes: Vec::new(),
            json: None,
            log_dir: None,
            duration: None,
            ingress: IngressMode::Auto,
            poll_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_flows: sizes::MAX_FLOWS,
            answer_timeout: crate::state::DEFAULT_ANSWER_TIMEOUT,
            ring_bytes: None,
            pin: None,
            metrics: None,
        }
    }
}

/// Time an ended TCP flow waits for its last ACK before it is reported.
const LINGER: Duration = Duration::from_secs(2);

/// What the agent last saw of an audited interface.
#[derive(Debug, Clone, Copy)]
struct IfaceSeen {
    /// Its index while attached; `None` while it is gone.
    ifindex: Option<u32>,
    up: bool,
}

/// How the audited set is chosen, to load it again on a reload.
#[derive(Debug, Clone)]
struct SetSource {
    set: Option<String>,
    datacenters: Vec<DataCenter>,
    purposes: Vec<Purpose>,
    ports: Option<AllowedPorts>,
    /// The set file and its modification time, watched for changes.
    file: Option<(PathBuf, Option<std::time::SystemTime>)>,
}

impl SetSource {
    fn load(&self) -> Result<AddressSet, Error> {
        crate::sets::select(self.set.as_deref(), &self.datacenters, &self.purposes)
    }

    fn policy(&self, ranges: &[Range]) -> PortPolicy {
        match (&self.ports, &self.set) {
            (Some(p), _) => PortPolicy::global(p.clone()),
            (None, Some(_)) => PortPolicy::per_range(ranges),
            (None, None) => PortPolicy::global(AllowedPorts::default()),
        }
    }
}

fn mtime(p: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

struct Session {
    dp: Datapath,
    /// Every range id in use, the new set's and those a reload dropped.
    ranges: Vec<Range>,
    /// Whether the current set lists range `id`.
    active: Vec<bool>,
    source: SetSource,
    ifnames: HashMap<u32, String>,
    ingress: IngressMode,
    ifaces: Vec<(String, IfaceSeen)>,
    policy: PortPolicy,
    clock: Clock,
    tracker: Tracker,
    out: Output,
    /// Final states of the flows reported for good.
    states: std::collections::BTreeMap<crate::state::State, u64>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    flow_capacity: u32,
}

impl Session {
    fn write(&mut self, flow: &Flow, reason: Reason) -> Result<(), Error> {
        let range = self.ranges.get(flow.stats.range_id as usize);
        let iface = self
            .ifnames
            .get(&flow.key.ifindex)
            .cloned()
            .unwrap_or_else(|| format!("if{}", flow.key.ifindex));
        let state = flow.state(monotonic_ns(), self.tracker.answer_timeout());
        let rec = FlowRecord::new(flow, range, &iface, &self.clock, reason, state);
        if matches!(reason, Reason::Ended | Reason::Expired | Reason::Exit) {
            *self.states.entry(state).or_default() += 1;
            if let Some(m) = &self.metrics {
                m.reported(flow.verdict, state);
            }
        }
        self.out
            .flow(&rec)
            .map_err(Error::io("writing a flow record"))
    }

    /// A new disallowed flow from the ring buffer. The record shows the
    /// flow as of its first packet, from the event alone: no map lookup, so
    /// that bursts of events cost no syscalls.
    fn on_event(&mut self, ev: &FlowEvent) -> Result<(), Error> {
        let kinds = history::kinds(ev.key.proto, ev.tcp_flags as u32, true);
        let mut stats = FlowStats {
            first_seen_ns: ev.ts_ns,
            last_seen_ns: ev.ts_ns,
            range_id: ev.range_id,
            initiator: ev.initiator,
            first_dir: ev.dir,
            flagged: 1,
            history_mask: kinds,
            ..FlowStats::default()
        };
        for (slot, kind) in (0..history::KINDS)
            .filter(|k| kinds & (1 << k) != 0)
            .enumerate()
        {
            stats.history[slot] = history::letter(kind, true);
        }
        if ev.dir == Direction::Out as u8 {
            stats.packets_out = ev.packets.into();
            stats.bytes_out = ev.bytes.into();
            stats.tcp_flags_out = ev.tcp_flags.into();
        } else {
            stats.packets_in = ev.packets.into();
            stats.bytes_in = ev.bytes.into();
            stats.tcp_flags_in = ev.tcp_flags.into();
        }
        let flow = Flow::new(ev.key, stats, self.policy.for_range(stats.range_id));
        if self.tracker.flag(&flow) {
            self.write(&flow, Reason::Flagged)?;
        }
        Ok(())
    }

    /// Reloads the address set if its file changed since it was read.
    fn check_set_file(&mut self) {
        let Some((path, seen)) = self.source.file.clone() else {
            return;
        };
        let now = mtime(&path);
        if now != seen {
            self.source.file = Some((path.clone(), now));
            self.reload(&format!("{} changed", path.display()));
        }
    }

    /// Loads the set again and swaps it in atomically (see
    /// [`Datapath::reload`]); on any error the old set stays.
    fn reload(&mut self, why: &str) {
        let set = match self.source.load() {
            Ok(s) => s,
            Err(e) => {
                log::error!("reload ({why}) failed, keeping the current set: {e}");
                return;
            }
        };
        let mut ranges = self.ranges.clone();
        let mut active = vec![false; ranges.len()];
        let index: HashMap<ipnet::IpNet, usize> = ranges
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_placeholder())
            .map(|(id, r)| (r.prefix.trunc(), id))
            .collect();
        let (mut added, mut changed) = (Vec::new(), Vec::new());
        for r in set.ranges() {
            match index.get(&r.prefix.trunc()) {
                Some(&id) => {
                    if ranges[id] != r {
                        changed.push(r.prefix);
                    }
                    ranges[id] = r;
                    active[id] = true;
                }
                None => {
                    added.push(r.prefix);
                    ranges.push(r);
                    active.push(true);
                }
            }
        }
        let removed: Vec<ipnet::IpNet> = (0..self.active.len())
            .filter(|&id| self.active[id] && !active[id])
            .map(|id| ranges[id].prefix)
            .collect();
        // A re-listed range that had been dropped counts as added.
        for id in 0..self.active.len() {
            if !self.active[id] && active[id] {
                added.push(ranges[id].prefix);
            }
        }
        if added.is_empty() && removed.is_empty() && changed.is_empty() {
            log::info!("reload ({why}): set {} unchanged", set.name);
            return;
        }
        let policy = self.source.policy(&ranges);
        if let Err(e) = self.dp.reload(&ranges, &active, &policy) {
            log::error!("reload ({why}) failed, keeping the current set: {e}");
            return;
        }
        let show = |v: &[ipnet::IpNet]| {
            let mut s: Vec<String> = v.iter().take(10).map(|p| p.to_string()).collect();
            if v.len() > 10 {
                s.push(format!("and {} more", v.len() - 10));
            }
            s.join(", ")
        };
        log::info!(
            "reloaded set {} ({why}): +{} ranges, -{} ranges, {} changed; {} ranges audited",
            set.name,
            added.len(),
            removed.len(),
            changed.len(),
            active.iter().filter(|a| **a).count()
        );
        for (what, v) in [
            ("added", &added),
            ("removed", &removed),
            ("changed", &changed),
        ] {
            if !v.is_empty() {
                log::info!("  {what}: {}", show(v));
            }
        }
        self.ranges = ranges;
        self.active = active;
        self.policy = policy;
    }

    /// Notices interfaces that went down or up, disappeared, or came back
    /// (re-created: a new index), and re-attaches to those that returned.
    fn watch_interfaces(&mut self) {
        for i in 0..self.ifaces.len() {
            let (name, seen) = self.ifaces[i].clone();
            let now = crate::datapath::ifindex(&name).ok();
            let up = crate::datapath::is_up(&name).unwrap_or(false);
            let mut next = IfaceSeen { ifindex: now, up };
            match (seen.ifindex, now) {
                (Some(a), Some(b)) if a == b => {
                    if seen.up != up {
                        if up {
                            log::info!("{name} is up again; still attached");
                        } else {
                            log::warn!("{name} is down; the programs stay attached");
                        }
                    }
                }
                (Some(a), now) => {
                    log::warn!("{name} (ifindex {a}) disappeared; re-attaching when it returns");
                    self.dp.forget(&name);
                    next.ifindex = None;
                    if now.is_some() {
                        next.ifindex = self.reattach(&name);
                    }
                }
                (None, Some(_)) => next.ifindex = self.reattach(&name),
                (None, None) => {}
            }
            self.ifaces[i].1 = next;
        }
    }

    /// Attaches to an interface that came back; its index, or `None` to
    /// try again at the next poll.
    fn reattach(&mut self, name: &str) -> Option<u32> {
        match self.dp.attach(name, self.ingress) {
            Ok(a) => {
                log::info!(
                    "{} is back (ifindex {}): re-attached, egress {}, ingress {}",
                    a.iface,
                    a.ifindex,
                    if a.tcx { "tcx" } else { "tc clsact" },
                    a.ingress
                );
                self.ifnames.insert(a.ifindex, a.iface.clone());
                Some(a.ifindex)
            }
            Err(e) => {
                log::warn!("re-attaching to {name} failed: {e}; retrying");
                None
            }
        }
    }

    fn poll(&mut self) -> Result<(), Error> {
        self.watch_interfaces();
        self.check_set_file();
        let snapshot = self.dp.flows()?;
        if let Some(m) = self.metrics.clone() {
            let now = monotonic_ns();
            let answer = self.tracker.answer_timeout();
            let live: Vec<_> = snapshot
                .iter()
                .map(|(k, s)| {
                    let f = Flow::new(*k, *s, self.policy.for_range(s.range_id));
                    (f.verdict, f.state(now, answer))
                })
                .collect();
            let counters = self.dp.counters()?;
            let totals = self.dp.range_totals(self.ranges.len())?;
            m.update(&counters, &self.ranges, &totals, &live, self.flow_capacity);
            m.log_records_lost(self.out.log_records_lost());
        }
        let due = self.tracker.poll(snapshot, monotonic_ns(), &self.policy);
        let mut done = Vec::new();
        for (flow, reason) in &due {
            self.write(flow, *reason)?;
            if matches!(reason, Reason::Ended | Reason::Expired) {
                done.push(flow.key);
            }
        }
        self.dp.remove_flows(&done)?;
        self.flush()
    }

    fn on_events(&mut self, events: &[FlowEvent]) -> Result<(), Error> {
        for ev in events {
            self.on_event(ev)?;
        }
        self.flush()
    }

    fn flush(&mut self) -> Result<(), Error> {
        self.out
            .flush()
            .map_err(Error::io("writing the JSON lines"))
    }

    fn finish(&mut self, set_name: &str, ifaces: &[String]) -> Result<Summary, Error> {
        let snapshot = self.dp.flows()?;
        for (flow, reason) in self.tracker.finish_all(snapshot, &self.policy) {
            self.write(&flow, reason)?;
        }
        let c = self.dp.counters()?;
        let totals = self.dp.range_totals(self.ranges.len())?;
        let created = c.get(Counter::FlowsCreated);
        let mut s = Summary {
            kind: "summary",
            ts: rfc3339(time::OffsetDateTime::now_utc()),
            ranges: Summary::ranges_with_traffic(&self.ranges, &totals),
            flows: self.tracker.reported,
            disallowed: self.tracker.disallowed,
            events_lost: c.get(Counter::EventsLost),
            malformed: c.get(Counter::Malformed),
            flows_evicted: created.saturating_sub(self.tracker.reported),
            flow_insert_failed: c.get(Counter::FlowInsertFailed),
            log_records_lost: 0,
            packets: c.get(Counter::Packets),
            matched: c.get(Counter::Matched),
            not_ip: c.get(Counter::NotIp),
            fragments: c.get(Counter::Fragments),
            ext_header_limit: c.get(Counter::ExtHeaderLimit),
            icmp_errors: c.get(Counter::IcmpErrors),
            icmp_unmatched: c.get(Counter::IcmpUnmatched),
            states: self.states.clone(),
            set: set_name.to_string(),
            interfaces: ifaces.to_vec(),
            allowed_ports: self
                .policy
                .profiles()
                .iter()
                .flat_map(|p| p.iter())
                .collect::<std::collections::BTreeSet<u16>>()
                .into_iter()
                .collect(),
            port_policy: if self.policy.is_global() {
                "global"
            } else {
                "per-range"
            },
        };
        self.out
            .summary(&mut s)
            .map_err(Error::io("writing the summary"))?;
        Ok(s)
    }
}

/// Runs the audit until SIGINT, SIGTERM or the end of `duration`; returns the summary.
pub async fn run(cfg: RunConfig) -> Result<Summary, Error> {
    if cfg.ifaces.is_empty() {
        return Err(Error::Usage("at least one --iface is needed".into()));
    }
    let mut ifnames = HashMap::new();
    for i in &cfg.ifaces {
        ifnames.insert(crate::datapath::ifindex(i)?, i.clone());
    }
    preflight()?;
    // Handlers first: a signal that arrives while attaching still stops the
    // agent cleanly (detach, flush, exit 0) once it is running.
    let mut sigint = signal(SignalKind::interrupt()).map_err(Error::io("SIGINT handler"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(Error::io("SIGTERM handler"))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(Error::io("SIGHUP handler"))?;

    let source = SetSource {
        set: cfg.set.clone(),
        datacenters: cfg.datacenters.clone(),
        purposes: cfg.purposes.clone(),
        ports: cfg.ports.clone(),
        file: cfg
            .set
            .as_ref()
            .filter(|n| AddressSet::builtin_named(n).is_none())
            .map(|n| (PathBuf::from(n), mtime(std::path::Path::new(n)))),
    };
    let set = source.load()?;
    let ranges = set.ranges();
    let policy = source.policy(&ranges);

    let json: Option<Box<dyn Write + Send>> = match &cfg.json {
        None => None,
        // Block-buffered (stdout alone is line-buffered: one write(2) per
        // record); flushed after every batch of records.
        Some(JsonTarget::Stdout) => Some(Box::new(std::io::BufWriter::with_capacity(
            1 << 16,
            std::io::stdout(),
        ))),
        Some(JsonTarget::File(p)) => Some(Box::new(std::io::BufWriter::with_capacity(
            1 << 16,
            std::fs::File::create(p).map_err(Error::io(format!("creating {}", p.display())))?,
        ))),
    };
    let human = cfg.json != Some(JsonTarget::Stdout);
    let log = cfg.log_dir.clone().map(LogDir::open).transpose()?;

    let mut dp = Datapath::load_with(
        crate::EBPF_OBJECT,
        &ranges,
        &policy,
        &LoadOptions {
            max_flows: cfg.max_flows,
            ring_bytes: cfg.ring_bytes,
            pin: cfg.pin.clone().map(PinDir::new),
            set_name: set.name.clone(),
        },
    )?;
    // A pinned datapath taken over after a reload keeps its range ids:
    // place each range at its id, with placeholders for the ids of ranges
    // dropped before (their counters stay, their prefixes are unknown).
    let mut ranges = ranges;
    let mut policy = policy;
    let mut active = vec![true; ranges.len()];
    if let Some(ids) = dp.range_ids() {
        if ids.iter().enumerate().any(|(i, id)| *id as usize != i) {
            let len = ids.iter().max().map_or(0, |m| *m as usize + 1);
            let mut by_id = vec![Range::placeholder(); len];
            active = vec![false; len];
            for (r, id) in ranges.into_iter().zip(ids) {
                by_id[*id as usize] = r;
                active[*id as usize] = true;
            }
            ranges = by_id;
            policy = source.policy(&ranges);
        }
    }
    let logger = dp.take_logger();
    let (reader, mut events) =
        crate::events::spawn(dp.take_events()?).map_err(Error::io("starting the event reader"))?;
    // SAFETY: the logger's ring buffer owns its map fd, which stays open and
    // unchanged for as long as the AsyncFd owns it.
    let mut logger = match logger {
        Some(l) => Some(
            unsafe { AsyncFd::register_with_interest(l, Interest::READABLE) }
                .map_err(|e| Error::io("polling the kernel log")(e.into()))?,
        ),
        None => None,
    };
    for iface in &cfg.ifaces {
        let a = dp.attach(iface, cfg.ingress)?;
        log::info!(
            "attached to {} (ifindex {}): egress {}, ingress {}",
            a.iface,
            a.ifindex,
            if a.tcx { "tcx" } else { "tc clsact" },
            a.ingress
        );
    }
    let v6 = ranges.iter().filter(|r| r.prefix.addr().is_ipv6()).count();
    log::info!(
        "auditing {} CAS ranges ({} IPv4, {} IPv6) of set {} on {}; allowed ports {}",
        ranges.len(),
        ranges.len() - v6,
        v6,
        set.name,
        cfg.ifaces.join(", "),
        policy
    );

    let ifaces = cfg
        .ifaces
        .iter()
        .map(|i| {
            let seen = IfaceSeen {
                ifindex: crate::datapath::ifindex(i).ok(),
                up: crate::datapath::is_up(i).unwrap_or(false),
            };
            (i.clone(), seen)
        })
        .collect();
    let mut s = Session {
        dp,
        active,
        source,
        ranges,
        ifnames,
        ingress: cfg.ingress,
        ifaces,
        policy,
        clock: Clock::new(),
        tracker: Tracker::new(
            cfg.idle_timeout.as_nanos() as u64,
            LINGER.as_nanos() as u64,
            cfg.answer_timeout,
        ),
        out: Output::new(json, human).with_log_dir(log),
        states: Default::default(),
        metrics: None,
        flow_capacity: 0,
    };
    s.flow_capacity = s.dp.map_capacity(cas_audit_common::names::FLOWS);
    let mut _metrics_task = None;
    if let Some(addr) = cfg.metrics {
        let m = std::sync::Arc::new(crate::metrics::Metrics::new(&set.name, &set.published));
        let (bound, task) = crate::metrics::serve(addr, m.clone())
            .await
            .map_err(Error::io(format!("serving metrics on {addr}")))?;
        log::info!("metrics on http://{bound}/metrics");
        s.metrics = Some(m);
        _metrics_task = Some(task);
    }

    let deadline = async {
        match cfg.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(cfg.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            _ = sigint.recv() => { log::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
            _ = sighup.recv() => s.reload("SIGHUP"),
            _ = &mut deadline => { log::info!("duration reached: stopping"); break; }
            Some(batch) = events.recv() => s.on_events(&batch)?,
            guard = async {
                match logger.as_mut() {
                    Some(l) => l.readable_mut().await,
                    None => std::future::pending().await,
                }
            } => {
                let mut guard = guard.map_err(Error::io("reading the kernel log"))?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = tick.tick() => s.poll()?,
        }
    }

    // Detach first so the final figures are exact, then drain and report.
    // A pinned datapath stays attached and keeps counting for the next agent.
    s.dp.detach_all();
    if let Some(dir) = s.dp.pin_dir() {
        log::info!(
            "the pinned datapath in {} keeps counting; `cas-audit detach --pin {}` removes it",
            dir.root().display(),
            dir.root().display()
        );
    }
    reader.stop().map_err(Error::io("reading the event ring"))?;
    while let Ok(batch) = events.try_recv() {
        s.on_events(&batch)?;
    }
    if let Some(l) = logger.as_mut() {
        l.get_mut().flush();
    }
    s.poll()?;
    let summary = s.finish(&set.name, &cfg.ifaces)?;
    Ok(summary)
}
