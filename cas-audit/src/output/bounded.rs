//! A sink that never blocks the agent: a bounded queue in front of a
//! thread of its own. The agent's loop only ever tries to enqueue (no
//! system call, no lock held by the worker); a full queue, a worker that
//! failed to deliver, or items still queued when the agent stops are
//! counted as dropped, so that `sent + dropped` is every item offered.
//!
//! Every sink of `run` is built on it: the JSON lines, the readable lines
//! and the log directory ([`super::sink`]), the IPFIX exporter
//! ([`super::ipfix`]) and the syslog sender ([`super::syslog`]). A queue is
//! bounded by the weight of what waits in it: a number of items, or bytes.
//! A sink that falls behind is noticed ([`Bounded::stall`]): the agent
//! says so once per stall, with the count, and goes on.

use std::{
    io,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        mpsc::{channel, Receiver, Sender},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// Items a worker takes from its queue at once, at most.
pub const MAX_BATCH: usize = 1024;

/// How often [`Bounded::sync`] and [`Bounded::close`] look at the worker.
const WAIT_STEP: Duration = Duration::from_millis(2);

/// What a sink did with the items offered to it, so far.
#[derive(Debug, Default)]
pub struct SinkStats {
    offered: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    /// Of the dropped, those the full queue refused.
    overflow: AtomicU64,
    /// Weight of the items waiting in the queue.
    queued: AtomicUsize,
    /// The first error the worker's writer met.
    error: Mutex<Option<io::Error>>,
}

impl SinkStats {
    /// Counts `n` items handed to the transport.
    pub fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` items lost (queue full, transport failed, agent stopped).
    pub fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Keeps `e` as the sink's failure (the first one only), for the agent
    /// to act on ([`Bounded::take_error`]).
    pub fn fail(&self, e: io::Error) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }

    /// The counts now.
    pub fn counts(&self) -> SinkCounts {
        SinkCounts {
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// Items offered and not yet sent or dropped (queued or being delivered).
    fn pending(&self) -> u64 {
        let c = self.counts();
        self.offered
            .load(Ordering::Relaxed)
            .saturating_sub(c.sent + c.dropped)
    }
}

/// A sink's counts, as the summary's `sinks` field writes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkCounts {
    /// Items handed to the transport (a UDP datagram sent, bytes written to
    /// a TCP stream, a pipe or a file): what was given away, not what arrived.
    pub sent: u64,
    /// Items lost: the queue was full, the transport failed or was not
    /// connected, or the agent stopped before they were sent.
    pub dropped: u64,
}

/// What a sink's thread does with the items it takes from the queue.
pub trait Deliver<T>: Send + 'static {
    /// Delivers `batch` (in the order offered), counting every item in
    /// `stats` as sent or dropped.
    fn deliver(&mut self, batch: &[T], stats: &SinkStats);
}

/// A change in whether a sink keeps up, from [`Bounded::stall`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Its queue overflowed: items are being dropped (`dropped`: the queue
    /// refused that many so far, in all).
    Began {
        /// Items the full queue refused so far.
        dropped: u64,
    },
    /// It caught up: its queue is empty and refused nothing since the last
    /// look (`dropped`: items refused during the stall).
    Ended {
        /// Items the full queue refused while it lasted.
        dropped: u64,
    },
}

/// A bounded queue and the thread that empties it.
pub struct Bounded<T> {
    name: &'static str,
    tx: Option<Sender<T>>,
    stats: Arc<SinkStats>,
    worker: Option<JoinHandle<()>>,
    /// Most weight waiting at once, and the weight of one item.
    limit: usize,
    weigh: fn(&T) -> usize,
    /// Overflows counted at the last [`Bounded::stall`], and at the start
    /// of the stall going on, if any.
    seen_overflow: u64,
    stalled_at: Option<u64>,
}

impl<T: Send + 'static> Bounded<T> {
    /// Starts a thread `cas-audit-NAME` that hands what is offered, in
    /// batches of up to [`MAX_BATCH`], to `deliver`; at most `capacity`
    /// items wait.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn spawn(
        name: &'static str,
        capacity: usize,
        deliver: impl Deliver<T>,
    ) -> io::Result<Bounded<T>> {
        Self::spawn_weighed(name, capacity, |_| 1, deliver)
    }

    /// [`Bounded::spawn`] with items of weight `weigh(item)` (bytes, say):
    /// at most `limit` of weight waits, but one item always fits in an
    /// empty queue. The worker's batch in hand is not counted, so the
    /// sink holds at most twice `limit`.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn spawn_weighed(
        name: &'static str,
        limit: usize,
        weigh: fn(&T) -> usize,
        mut deliver: impl Deliver<T>,
    ) -> io::Result<Bounded<T>> {
        let (tx, rx) = channel();
        let stats = Arc::new(SinkStats::default());
        let worker = {
            let stats = stats.clone();
            std::thread::Builder::new()
                .name(format!("cas-audit-{name}"))
                .spawn(move || work(&rx, weigh, &mut deliver, &stats))?
        };
        Ok(Bounded {
            name,
            tx: Some(tx),
            stats,
            worker: Some(worker),
            limit,
            weigh,
            seen_overflow: 0,
            stalled_at: None,
        })
    }

    /// The sink's name (`ipfix`, `syslog`, `json`, ...).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Queues `item`, or counts it dropped when the queue is full (or the
    /// thread is gone). Never blocks.
    pub fn offer(&self, item: T) {
        self.stats.offered.fetch_add(1, Ordering::Relaxed);
        let Some(tx) = &self.tx else {
            self.stats.dropped(1);
            return;
        };
        // One producer: the weight queued only shrinks between this check
        // and the add.
        let w = (self.weigh)(&item);
        let queued = self.stats.queued.load(Ordering::Relaxed);
        if queued > 0 && queued.saturating_add(w) > self.limit {
            self.stats.overflow.fetch_add(1, Ordering::Relaxed);
            self.stats.dropped(1);
            return;
        }
        self.stats.queued.fetch_add(w, Ordering::Relaxed);
        if tx.send(item).is_err() {
            self.stats.queued.fetch_sub(w, Ordering::Relaxed);
            self.stats.dropped(1);
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> SinkCounts {
        self.stats.counts()
    }

    /// The writer's first failure, once (later calls return `None`).
    pub fn take_error(&self) -> Option<io::Error> {
        self.stats
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Whether the sink fell behind or caught up since the last call (the
    /// agent calls it once a poll). A stall begins when the full queue
    /// refuses an item, and ends at a look that finds the queue empty and
    /// nothing refused since the previous look.
    pub fn stall(&mut self) -> Option<Stall> {
        let overflow = self.stats.overflow.load(Ordering::Relaxed);
        let new = overflow > self.seen_overflow;
        let before = std::mem::replace(&mut self.seen_overflow, overflow);
        match self.stalled_at {
            None if new => {
                self.stalled_at = Some(before);
                Some(Stall::Began { dropped: overflow })
            }
            Some(start) if !new && self.stats.pending() == 0 => {
                self.stalled_at = None;
                Some(Stall::Ended {
                    dropped: overflow - start,
                })
            }
            _ => None,
        }
    }

    /// Waits until `deadline` at most for the worker to send or drop every
    /// item offered so far; whether it did.
    pub fn sync(&self, deadline: Instant) -> bool {
        loop {
            if self.stats.pending() == 0 {
                return true;
            }
            if self.worker.as_ref().is_none_or(|w| w.is_finished()) || Instant::now() >= deadline {
                return self.stats.pending() == 0;
            }
            std::thread::sleep(WAIT_STEP);
        }
    }

    /// Closes the queue and waits, at most `grace`, for the thread to send
    /// what is queued; what it has not sent or dropped by then is counted
    /// dropped (the thread is left to the process's exit). Returns the
    /// final counts (an abandoned thread may still count afterwards: use
    /// these).
    pub fn close(&mut self, grace: Duration) -> SinkCounts {
        self.close_by(Instant::now() + grace)
    }

    /// [`Bounded::close`], waiting until `deadline` at most.
    pub fn close_by(&mut self, deadline: Instant) -> SinkCounts {
        self.tx = None;
        if let Some(worker) = self.worker.take() {
            while !worker.is_finished() && Instant::now() < deadline {
                std::thread::sleep(WAIT_STEP);
            }
            if worker.is_finished() {
                let _ = worker.join();
            }
        }
        let c = self.stats.counts();
        let pending = self.stats.pending();
        self.stats.dropped(pending);
        SinkCounts {
            sent: c.sent,
            dropped: c.dropped + pending,
        }
    }
}

/// A connection made at first use, and made again after a failure at most
/// once per `retry` (what is offered meanwhile is dropped by the caller).
#[derive(Debug)]
pub struct Lazy<C> {
    conn: Option<C>,
    retry_at: Option<Instant>,
    retry: Duration,
}

impl<C> Lazy<C> {
    /// No connection yet; failures wait `retry`.
    pub fn new(retry: Duration) -> Lazy<C> {
        Lazy {
            conn: None,
            retry_at: None,
            retry,
        }
    }

    /// The connection, made with `connect` if there is none and the last
    /// failure is `retry` old; `None` while it cannot be had (`what`
    /// names the target in the debug log).
    pub fn get(
        &mut self,
        now: Instant,
        what: &dyn std::fmt::Display,
        connect: impl FnOnce() -> std::io::Result<C>,
    ) -> Option<&mut C> {
        if self.conn.is_none() && self.retry_at.is_none_or(|t| now >= t) {
            match connect() {
                Ok(c) => {
                    self.conn = Some(c);
                    self.retry_at = None;
                }
                Err(e) => self.failed(now, what, &e),
            }
        }
        self.conn.as_mut()
    }

    /// Drops the connection after `e`; the next try is `retry` after `now`.
    pub fn failed(&mut self, now: Instant, what: &dyn std::fmt::Display, e: &std::io::Error) {
        log::debug!("{what}: {e}");
        self.conn = None;
        self.retry_at = Some(now + self.retry);
    }

    /// When the next connection attempt may be made, after a failure.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }
}

/// A non-blocking UDP socket connected to `addr`, from an ephemeral port
/// of the same family: sends never wait, a full socket buffer or an ICMP
/// error from the last datagram fails the send.
///
/// # Errors
/// No route to `addr`, or no socket.
pub fn connect_udp(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let any: std::net::SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(any)?;
    s.connect(addr)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn work<T>(
    rx: &Receiver<T>,
    weigh: fn(&T) -> usize,
    deliver: &mut impl Deliver<T>,
    stats: &SinkStats,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Ends when the queue is closed and empty.
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let w: usize = batch.iter().map(weigh).sum();
        stats.queued.fetch_sub(w, Ordering::Relaxed);
        deliver.deliver(&batch, stats);
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};

    /// Delivers after the gate opens; drops odd numbers.
    struct Gated(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<Vec<u32>>>);

    impl Deliver<u32> for Gated {
        fn deliver(&mut self, batch: &[u32], stats: &SinkStats) {
            let (lock, cv) = &*self.0;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            for n in batch {
                if n % 2 == 0 {
                    self.1.lock().unwrap().push(*n);
                    stats.sent(1);
                } else {
                    stats.dropped(1);
                }
            }
        }
    }

    #[test]
    fn a_stuck_worker_costs_only_counted_drops() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut sink = Bounded::spawn("test", 4, Gated(gate.clone(), got.clone())).unwrap();
        // The worker takes the first item and blocks; 4 more fill the
        // queue; the rest are dropped at once.
        let started = Instant::now();
        for n in 0..100u32 {
            sink.offer(n * 2);
            if n == 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        assert!(started.elapsed() < Duration::from_secs(1), "offer blocked");
        assert_eq!(sink.counts().dropped, 95);
        // Still stuck at close: the 5 taken or queued are dropped too.
        let c = sink.close(Duration::from_millis(50));
        assert_eq!(
            c,
            SinkCounts {
                sent: 0,
                dropped: 100
            }
        );
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
    }

    #[test]
    fn everything_offered_is_sent_or_dropped() {
        let gate = Arc::new((Mutex::new(true), Condvar::new()));
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut sink = Bounded::spawn("test", 1000, Gated(gate, got.clone())).unwrap();
        for n in 0..500u32 {
            sink.offer(n);
        }
        let c = sink.close(Duration::from_secs(5));
        assert_eq!(
            c,
            SinkCounts {
                sent: 250,
                dropped: 250
            }
        );
        let got = got.lock().unwrap();
        assert_eq!(*got, (0..500).filter(|n| n % 2 == 0).collect::<Vec<_>>());
        // Offers after close are dropped, never queued.
        sink.offer(1000);
        assert_eq!(sink.counts().dropped, 251);
    }

    /// Keeps what it is given, after the gate opens.
    struct Keep(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<Vec<Vec<u8>>>>);

    impl Deliver<Vec<u8>> for Keep {
        fn deliver(&mut self, batch: &[Vec<u8>], stats: &SinkStats) {
            let (lock, cv) = &*self.0;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.1.lock().unwrap().extend(batch.iter().cloned());
            stats.sent(batch.len() as u64);
        }
    }

    fn gate(open: bool) -> Arc<(Mutex<bool>, Condvar)> {
        Arc::new((Mutex::new(open), Condvar::new()))
    }

    fn open(g: &Arc<(Mutex<bool>, Condvar)>) {
        *g.0.lock().unwrap() = true;
        g.1.notify_all();
    }

    /// A byte-weighed queue holds at most its limit while the writer is
    /// stuck; one stall is reported once, with its count, and its end
    /// once the writer catches up.
    #[test]
    fn a_weighed_queue_holds_its_limit_and_reports_one_stall() {
        let g = gate(false);
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut sink =
            Bounded::spawn_weighed("test", 1000, Vec::len, Keep(g.clone(), got.clone())).unwrap();
        assert_eq!(sink.stall(), None);
        // The worker takes the first item and blocks; 10 items of 100
        // bytes fill the queue; 20 more are refused.
        sink.offer(vec![0; 100]);
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..30 {
            sink.offer(vec![1; 100]);
        }
        assert_eq!(
            sink.counts(),
            SinkCounts {
                sent: 0,
                dropped: 20
            }
        );
        assert_eq!(sink.stall(), Some(Stall::Began { dropped: 20 }));
        // Still behind: nothing new to say, even with more refused.
        sink.offer(vec![2; 100]);
        assert_eq!(sink.stall(), None);
        assert!(!sink.sync(Instant::now() + Duration::from_millis(20)));
        open(&g);
        assert!(sink.sync(Instant::now() + Duration::from_secs(5)));
        // The look after the last refusal saw it; the next finds it empty.
        assert_eq!(sink.stall(), Some(Stall::Ended { dropped: 21 }));
        assert_eq!(sink.stall(), None);
        // An item larger than the limit fits an empty queue.
        sink.offer(vec![3; 5000]);
        assert!(sink.sync(Instant::now() + Duration::from_secs(5)));
        let c = sink.close(Duration::from_secs(5));
        assert_eq!(
            c,
            SinkCounts {
                sent: 12,
                dropped: 21
            }
        );
        assert_eq!(got.lock().unwrap().len(), 12);
    }

    /// A writer's failure is kept for the agent, once.
    #[test]
    fn the_first_failure_is_kept() {
        struct Fails;
        impl Deliver<u32> for Fails {
            fn deliver(&mut self, batch: &[u32], stats: &SinkStats) {
                stats.dropped(batch.len() as u64);
                stats.fail(io::ErrorKind::BrokenPipe.into());
                stats.fail(io::Error::other("later"));
            }
        }
        let mut sink = Bounded::spawn("test", 10, Fails).unwrap();
        sink.offer(1);
        assert!(sink.sync(Instant::now() + Duration::from_secs(5)));
        let e = sink.take_error().expect("an error");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(sink.take_error().is_none());
        assert_eq!(sink.close(Duration::from_secs(1)).dropped, 1);
    }
}
