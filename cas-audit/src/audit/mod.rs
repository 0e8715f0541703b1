//! The audit `run` performs: attach the datapath, report flows live,
//! reload the set, follow the interfaces, summarise at exit.
//!
//! - this module: [`RunConfig`] and [`run`], the loop that waits on
//!   signals, the event ring, the kernel log and the poll timer;
//! - [`session`]: what one poll and one event do;
//! - [`reload`]: a new version of the set swapped in while running;
//! - [`ifaces`]: interfaces, by index, that are renamed, go down, vanish
//!   and come back (rtnetlink link events);
//! - [`evictions`]: flows the full kernel table pushed out before they were
//!   reported;
//! - [`learn`]: names learned from DNS answers and ClientHellos;
//! - [`nat`]: the inside host behind NAT, from connection tracking.

mod evictions;
mod ifaces;
mod learn;
mod nat;
mod reload;
mod session;

use std::{collections::HashMap, path::PathBuf, time::Duration};

use cas_audit_common::sizes;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use self::{
    ifaces::Interfaces,
    reload::{mtime, SetSource},
    session::{Session, LINGER},
};
use crate::{
    addrset::{AddressSet, Range, Selection},
    datapath::{
        attach::refuse_if_watched, events::EventReader, pin::LinkHook, Datapath, IngressMode,
        LoadOptions, PinDir,
    },
    error::Error,
    flow::{AllowedPorts, Tracker},
    host::{caps::preflight, clock::Clock, links::LinkMonitor, netdev},
    output::{
        human::LineTime,
        ipfix::Exporter,
        logdir::LogDir,
        metrics::ListenAddr,
        record::Summary,
        sink::{Export, JsonTarget, Output},
        syslog::{Sender, SyslogOptions},
    },
};

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Interfaces to attach to.
    pub ifaces: Vec<String>,
    /// Allowed service ports for every range (`--allow-port`); `None`: the
    /// set's per-purpose ports with `--set`, else the defaults.
    pub ports: Option<AllowedPorts>,
    /// The address set (a built-in name or a set file; `None`: the default
    /// built-in set) and the part of it audited.
    pub selection: Selection,
    /// JSON-lines output.
    pub json: Option<JsonTarget>,
    /// `--log-dir`: the JSON lines in rotated files too.
    pub log_dir: Option<crate::output::logdir::LogDirOptions>,
    /// `--output-buffer`: bytes each local output (JSON lines, readable
    /// lines, log directory) may hold while its writer is behind.
    pub output_buffer: u64,
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
    /// Names learned from DNS answers and ClientHellos (`--max-learned`,
    /// `--learn-ttl-min`, `--learn-ttl-max`).
    pub learn: crate::names::LearnOptions,
    /// Pin directory (`--pin`).
    pub pin: Option<PathBuf>,
    /// Serve Prometheus metrics here (`--metrics`).
    pub metrics: Option<ListenAddr>,
    /// Live lines in UTC rather than local time (`--utc`).
    pub utc: bool,
    /// Export flows as IPFIX to this collector (`--ipfix`).
    pub ipfix: Option<std::net::SocketAddr>,
    /// Send flagged and blocked flows to a SIEM (`--syslog*`).
    pub syslog: Option<SyslogOptions>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            ifaces: Vec::new(),
            ports: None,
            selection: Selection::default(),
            json: None,
            log_dir: None,
            output_buffer: crate::output::sink::DEFAULT_BUFFER,
            duration: None,
            ingress: IngressMode::Auto,
            poll_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_flows: sizes::MAX_FLOWS,
            answer_timeout: crate::flow::state::DEFAULT_ANSWER_TIMEOUT,
            ring_bytes: None,
            learn: crate::names::LearnOptions::default(),
            pin: None,
            metrics: None,
            ipfix: None,
            syslog: None,
            utc: false,
        }
    }
}

/// Runs the audit until SIGINT, SIGTERM or the end of `duration`; returns the summary.
///
/// Everything that can be refused is checked before anything is attached,
/// in this order: the interfaces (known, not repeated, not watched by
/// another cas-audit), the privileges, the set and the selection (read
/// before the signal handlers exist, so a SIGTERM stops a slow read), the
/// outputs (JSON file, log directory, metrics port). Any error until the
/// audit runs exits with 2 ([`Error::at_start`]); a refused start leaves
/// nothing attached or pinned.
pub async fn run(cfg: RunConfig) -> Result<Summary, Error> {
    if cfg.ifaces.is_empty() {
        return Err(Error::Usage("at least one --iface is needed".into()));
    }
    reserve_descriptors();
    let mut ifnames = HashMap::new();
    for (n, i) in cfg.ifaces.iter().enumerate() {
        if cfg.ifaces[..n].contains(i) {
            return Err(Error::Usage(format!("--iface {i} is given twice")));
        }
        ifnames.insert(
            netdev::ifindex(i).map_err(crate::datapath::DatapathError::from)?,
            i.clone(),
        );
    }
    preflight()?;
    for (ifindex, i) in &ifnames {
        // A pinned link of this interface is taken over, not refused.
        let pinned = cfg.pin.as_ref().is_some_and(|d| {
            PinDir::new(d)
                .link_path(i, *ifindex, LinkHook::Egress)
                .exists()
        });
        if pinned {
            log::debug!("{i}: a link pinned in the --pin directory, to take over");
        } else {
            refuse_if_watched(i)?;
            log::debug!("{i} (ifindex {ifindex}): no other cas-audit watches it");
        }
    }

    let source = SetSource {
        selection: cfg.selection.clone(),
        ports: cfg.ports.clone(),
        file: cfg
            .selection
            .set
            .as_ref()
            .filter(|n| AddressSet::builtin_named(n).is_none())
            .map(|n| (PathBuf::from(n), mtime(std::path::Path::new(n)))),
    };
    let set = source.load()?;
    let ranges = set.ranges();
    let policy = source.policy(&ranges);
    log::debug!(
        "set {} ({}): {} entries selected, {} distinct ranges; allowed ports {}",
        crate::text::shown(&set.name),
        source
            .file
            .as_ref()
            .map_or("built-in".into(), |(p, _)| p.display().to_string()),
        set.entries.len(),
        ranges.len(),
        policy
    );
    let matcher = crate::addrset::names::NameMatcher::new(&set.dns);
    let learning = cfg.learn.capacity > 0 && !matcher.is_empty();

    let json = cfg.json.as_ref().map(JsonTarget::open).transpose()?;
    let human = (cfg.json != Some(JsonTarget::Stdout)).then(|| {
        if cfg.utc {
            LineTime::utc()
        } else {
            LineTime::local()
        }
    });
    let mut log = cfg.log_dir.clone().map(LogDir::open).transpose()?;
    if let Some(l) = log.as_mut() {
        // The range ids the datapath will size its counters to (a pinned
        // one taken over may have more: the summary then lists only those
        // that counted).
        let ids = (ranges.len() as u32)
            .saturating_add(crate::datapath::RANGE_HEADROOM)
            .saturating_add(cfg.learn.capacity);
        l.reserve(summary_room(ids));
    }
    let host = crate::host::hostname();
    let exports = exports(&cfg, &host)?;
    let out = Output::new(
        json.map(|w| {
            (
                w,
                cfg.json.as_ref().map(JsonTarget::what).unwrap_or_default(),
            )
        }),
        human,
        usize::try_from(cfg.output_buffer).unwrap_or(usize::MAX),
    )
    .and_then(|o| o.with_log_dir(log))
    .map_err(Error::setup("starting the output threads"))?
    .with_exports(exports);
    let mut metrics = None;
    let mut _metrics_tasks = Vec::new();
    if let Some(addr) = &cfg.metrics {
        let m = std::sync::Arc::new(crate::output::metrics::Metrics::new(
            &set.name,
            &set.published,
        ));
        for (bound, task) in crate::output::metrics::serve_on(addr, m.clone())
            .await
            .map_err(Error::setup(format!("serving metrics on {addr}")))?
        {
            log::info!("metrics on http://{bound}/metrics");
            _metrics_tasks.push(task);
        }
        metrics = Some(m);
    }

    // Handlers before attaching: a signal that arrives while attaching
    // still stops the agent cleanly (detach, flush, exit 0) once it runs.
    let handler = |kind, name: &str| {
        signal(kind).map_err(Error::setup(format!("installing the {name} handler")))
    };
    let mut sigint = handler(SignalKind::interrupt(), "SIGINT")?;
    let mut sigterm = handler(SignalKind::terminate(), "SIGTERM")?;
    let mut sighup = handler(SignalKind::hangup(), "SIGHUP")?;

    let mut dp = Datapath::load_with(
        crate::EBPF_OBJECT,
        &ranges,
        &policy,
        &LoadOptions {
            max_flows: cfg.max_flows,
            ring_bytes: cfg.ring_bytes,
            pin: cfg.pin.clone().map(PinDir::new),
            set_name: set.name.clone(),
            learned: if learning { cfg.learn.capacity } else { 0 },
            handoff: learning,
        },
    )
    .map_err(|e| Error::from(e).at_start())?;
    // A pinned datapath taken over keeps its range ids (a reload or
    // another set may have moved them from the positions in the set), and
    // the ids of dropped ranges keep their counts.
    let mut ranges = ranges;
    let mut policy = policy;
    let mut active = vec![true; ranges.len()];
    if let Some(layout) = dp.taken_over() {
        ranges = layout.ranges.clone();
        active = layout.active.clone();
        policy = policy.for_layout(&ranges);
    }
    // Evictions are this agent's: a taken-over table brings the counts and
    // entries of the agent before.
    let early = dp.counters();
    let entries = dp.flows().map(|f| f.len());
    let evictions = match (early, entries, dp.counters()) {
        (Ok(early), Ok(entries), Ok(late)) => evictions::Evictions::start(&early, entries, &late),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            dp.abandon();
            return Err(Error::from(e).at_start());
        }
    };
    // Subscribed before attaching: no change after an attach goes unseen.
    let mut links = match watch_links() {
        Ok(l) => l,
        Err(e) => {
            dp.abandon();
            return Err(e.at_start());
        }
    };
    // Conntrack only announces the destruction of entries made while a
    // listener existed (`nf_conntrack_events` 2, the default): listening
    // before attaching covers every flow the datapath can see.
    let nat = nat::CtResolver::open();
    let (reader, mut events, mut logger) = match attach_all(&mut dp, &cfg, learning) {
        Ok(started) => started,
        Err(e) => {
            dp.abandon();
            return Err(e.at_start());
        }
    };
    let learner = learn::Learner::new(
        matcher,
        crate::names::LearnOptions {
            capacity: dp.learned_capacity(),
            ..cfg.learn
        },
        dp.learned_base(),
    );
    let audited: Vec<&Range> = ranges
        .iter()
        .zip(&active)
        .filter(|(_, a)| **a)
        .map(|(r, _)| r)
        .collect();
    let v6 = audited.iter().filter(|r| r.prefix.addr().is_ipv6()).count();
    log::info!(
        "auditing {} CAS ranges ({} IPv4, {} IPv6) of set {} on {}; allowed ports {}",
        audited.len(),
        audited.len() - v6,
        v6,
        crate::text::shown(&set.name),
        cfg.ifaces.join(", "),
        policy
    );
    if learning {
        log::info!(
            "learning the addresses of {} DNS names from DNS answers and ClientHellos: up to {} at once, each for its TTL within {} to {} s",
            set.dns.len(),
            learner.table.options().capacity,
            cfg.learn.ttl_floor.as_secs(),
            cfg.learn.ttl_cap.as_secs()
        );
    }

    let ifaces = Interfaces::new(dp.attachments().iter().map(|a| {
        let link = crate::host::links::Link {
            index: a.ifindex,
            name: a.iface.clone(),
            up: netdev::is_up(&a.iface).unwrap_or(false),
        };
        (a.iface.clone(), link)
    }));
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
        host,
        tracker: Tracker::new(
            cfg.idle_timeout.as_nanos() as u64,
            LINGER.as_nanos() as u64,
            cfg.answer_timeout,
        ),
        out,
        states: Default::default(),
        metrics,
        flow_capacity: 0,
        nat,
        learner,
        evictions,
    };
    s.flow_capacity = s.dp.map_capacity(cas_audit_common::names::FLOWS);

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
            guard = links.readable_mut() => {
                let mut guard = guard.map_err(Error::io("watching the interfaces"))?;
                let changes = guard.get_inner_mut().read();
                // read() stops at EAGAIN (or at an error, not retried at once).
                guard.clear_ready();
                match changes {
                    Ok(c) => s.on_links(&c),
                    Err(e) => log::warn!("reading interface events: {e}; the interfaces stay as last seen"),
                }
            }
            _ = tick.tick() => {
                if let Err(e) = links.get_mut().retry() {
                    log::debug!("asking for the list of interfaces again: {e}");
                }
                s.poll()?
            }
        }
    }

    // Detach first so the final figures are exact, then drain and report.
    // A pinned datapath stays attached and keeps counting for the next agent.
    s.dp.detach_all();
    if s.dp.pin_dir().is_some() {
        s.forget_learned();
    }
    if let Some(dir) = s.dp.pin_dir() {
        // Only a filesystem the host sees keeps the pins (a private one
        // was refused at start).
        let root = dir.root().display();
        match crate::host::mounts::reach(dir.root()) {
            crate::host::mounts::Reach::Host => log::info!(
                "the pinned datapath in {root} keeps counting; `cas-audit detach --pin {root}` removes it"
            ),
            crate::host::mounts::Reach::Private(why) | crate::host::mounts::Reach::Unknown(why) => log::warn!(
                "the pinned datapath in {root} keeps counting only while its BPF filesystem stays mounted ({why})"
            ),
        }
    }
    // The reader drains the rings once more and ends the channel.
    reader.request_stop();
    while let Some(batch) = events.recv().await {
        s.on_events(&batch)?;
    }
    reader.join().map_err(Error::io("reading the event ring"))?;
    if let Some(l) = logger.as_mut() {
        l.get_mut().flush();
    }
    s.poll()?;
    let summary = s.finish(&set.name, &cfg.ifaces)?;
    Ok(summary)
}

/// Raises the soft descriptor limit to the hard one, so that the agent's
/// own work (maps, links, log files, sockets) has the room the system
/// grants it; the metrics endpoint takes at most a quarter of it
/// ([`crate::output::metrics::Limits`]).
fn reserve_descriptors() {
    match crate::host::fds::raise_nofile() {
        Ok((before, after)) if after.soft > before.soft => log::debug!(
            "descriptor limit raised from {} to {} (the hard limit)",
            before.soft,
            after.soft
        ),
        Ok((_, now)) => log::debug!("descriptor limit {}", now.soft),
        Err(e) => log::warn!("raising the descriptor limit to the hard limit: {e}"),
    }
}

/// The interface events, polled by the run loop.
fn watch_links() -> Result<AsyncFd<LinkMonitor>, Error> {
    let monitor = LinkMonitor::open().map_err(Error::setup(
        "watching the interfaces (an rtnetlink socket)",
    ))?;
    // SAFETY: the monitor owns its socket, which stays open and the same
    // for as long as the AsyncFd owns the monitor.
    unsafe { AsyncFd::register_with_interest(monitor, Interest::READABLE) }
        .map_err(|e| Error::setup("watching the interfaces (an rtnetlink socket)")(e.into()))
}

/// Room for the summary record of a datapath with `range_ids` range
/// counters: a line per range that counted (listed, dropped or learned: a
/// prefix, up to 8 data centers and 9 purposes, a DNS name of at most 253
/// bytes and four counters fit in 1 KiB) and 64 KiB for the rest.
fn summary_room(range_ids: u32) -> u64 {
    (64 << 10) + u64::from(range_ids) * 1024
}

/// The exports `cfg` asks for, their threads started.
fn exports(cfg: &RunConfig, host: &str) -> Result<Vec<Export>, Error> {
    let mut exports = Vec::new();
    if let Some(addr) = cfg.ipfix {
        let sink = Exporter::spawn(addr).map_err(Error::io("starting the IPFIX exporter"))?;
        log::info!("exporting flows reported for good as IPFIX to {addr} (UDP)");
        exports.push(Export::ipfix(sink));
    }
    if let Some(o) = &cfg.syslog {
        let sink = Sender::spawn(o, host).map_err(Error::io("starting the syslog sender"))?;
        log::info!(
            "sending flagged and blocked flows{} to syslog {} ({})",
            if o.ended { " and every ended flow" } else { "" },
            o.target,
            o.format.as_str()
        );
        exports.push(Export::syslog(sink, o.ended));
    }
    Ok(exports)
}

/// The kernel log of the datapath, polled by the run loop.
type PolledLog = Option<AsyncFd<crate::datapath::KernelLog>>;
/// Batches of flag events from the reader thread.
type EventBatches = tokio::sync::mpsc::Receiver<Vec<crate::datapath::events::RingRecord>>;

/// Starts the event reader and the kernel log, and attaches to every
/// interface of `cfg`.
fn attach_all(
    dp: &mut Datapath,
    cfg: &RunConfig,
    learning: bool,
) -> Result<(EventReader, EventBatches, PolledLog), Error> {
    let logger = dp.take_logger();
    let mut rings = vec![dp.take_events()?];
    if learning {
        rings.push(dp.take_payloads()?);
    }
    let (reader, events) =
        crate::datapath::events::spawn(rings).map_err(Error::setup("starting the event reader"))?;
    // SAFETY: the logger's ring buffer owns its map fd, which stays open and
    // unchanged for as long as the AsyncFd owns it.
    let logger = match logger {
        Some(l) => Some(
            unsafe { AsyncFd::register_with_interest(l, Interest::READABLE) }
                .map_err(|e| Error::setup("polling the kernel log")(e.into()))?,
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
    Ok((reader, events, logger))
}
