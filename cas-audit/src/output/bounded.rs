//! A sink that never blocks the agent: a bounded queue in front of a
//! thread of its own. The agent's loop only ever tries to enqueue (no
//! system call, no lock held by the worker); a full queue, a worker that
//! failed to deliver, or items still queued when the agent stops are
//! counted as dropped, so that `sent + dropped` is every item offered.
//!
//! The IPFIX exporter ([`super::ipfix`]) and the syslog sender
//! ([`super::syslog`]) are built on it.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// Items a worker takes from its queue at once, at most.
pub const MAX_BATCH: usize = 1024;

/// What a sink did with the items offered to it, so far.
#[derive(Debug, Default)]
pub struct SinkStats {
    offered: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
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

    /// The counts now.
    pub fn counts(&self) -> SinkCounts {
        SinkCounts {
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// A sink's counts, as the summary's `sinks` field writes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkCounts {
    /// Items handed to the transport (a UDP datagram sent, bytes written to
    /// a TCP stream): what the network was given, not what arrived.
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

/// A bounded queue and the thread that empties it.
pub struct Bounded<T> {
    name: &'static str,
    tx: Option<SyncSender<T>>,
    stats: Arc<SinkStats>,
    worker: Option<JoinHandle<()>>,
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
        mut deliver: impl Deliver<T>,
    ) -> std::io::Result<Bounded<T>> {
        let (tx, rx) = sync_channel(capacity);
        let stats = Arc::new(SinkStats::default());
        let worker = {
            let stats = stats.clone();
            std::thread::Builder::new()
                .name(format!("cas-audit-{name}"))
                .spawn(move || work(&rx, &mut deliver, &stats))?
        };
        Ok(Bounded {
            name,
            tx: Some(tx),
            stats,
            worker: Some(worker),
        })
    }

    /// The sink's name (`ipfix`, `syslog`).
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
        match tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.stats.dropped(1),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> SinkCounts {
        self.stats.counts()
    }

    /// Closes the queue and waits, at most `grace`, for the thread to send
    /// what is queued; what it has not sent or dropped by then is counted
    /// dropped (the thread is left to the process's exit). Returns the
    /// final counts (an abandoned thread may still count afterwards: use
    /// these).
    pub fn close(&mut self, grace: Duration) -> SinkCounts {
        self.tx = None;
        if let Some(worker) = self.worker.take() {
            let deadline = Instant::now() + grace;
            while !worker.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if worker.is_finished() {
                let _ = worker.join();
            }
        }
        let c = self.stats.counts();
        let offered = self.stats.offered.load(Ordering::Relaxed);
        let pending = offered.saturating_sub(c.sent + c.dropped);
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

fn work<T>(rx: &Receiver<T>, deliver: &mut impl Deliver<T>, stats: &SinkStats) {
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
}
