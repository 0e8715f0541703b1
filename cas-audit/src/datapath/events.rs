//! Draining the kernel's ring buffers on a thread of its own: flag events
//! ([`FlowEvent`]) and ended flows whose 5-tuple a new connection reused
//! ([`FlowEnded`]), in the order the kernel wrote them, and the payload
//! ring's DNS responses and ClientHellos ([`PayloadRecord`]).
//!
//! The ring buffer holds a few thousand events; at 100,000 new flagged
//! flows per second it fills in tens of milliseconds. The agent's main task
//! also reads the whole flow table every second, so the ring is drained by
//! a dedicated thread that does nothing else and hands batches of events to
//! the main task over a channel.
//!
//! The channel is bounded ([`QUEUE`] batches of at most [`BATCH`] records
//! and [`BATCH_BYTES`] of payload). While it is full, records read join
//! the batch in hand until that is full too; then the thread stops
//! draining the rings until the main task makes room, and the kernel
//! counts what the full rings cannot take (`events_lost`, `flows_lost`,
//! `payloads_lost`, each already reported) instead of the agent's memory
//! growing. The thread says so once per stall (at most once a minute).

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use aya::maps::{MapData, RingBuf};
use cas_audit_common::{record_kind, FlowEnded, FlowEvent, PayloadHeader};
use tokio::sync::mpsc;

/// How long the reader sleeps in `poll(2)` before it looks at the stop
/// flag (a stop request also wakes it at once).
const POLL_MS: i32 = 100;
/// How soon records kept back (the channel was full) are offered again.
const RETRY_MS: i32 = 5;
/// Events handed over at most per batch.
pub const BATCH: usize = 4096;
/// Payload bytes (DNS responses, ClientHellos) handed over at most per batch.
pub const BATCH_BYTES: usize = 256 << 10;
/// Batches waiting for the main task, at most (and one in the reader's
/// hand): with [`BATCH`] and [`BATCH_BYTES`], about 7 MiB of flag events
/// or 2.3 MiB of payloads.
pub const QUEUE: usize = 8;

/// One record of the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingRecord {
    /// A new disallowed flow.
    Flagged(FlowEvent),
    /// An ended flow, handed over before its entry was reset.
    Ended(FlowEnded),
    /// A DNS response or ClientHello (the payload ring).
    Payload(PayloadRecord),
}

/// A DNS response or ClientHello as the datapath handed it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRecord {
    /// Who sent it to whom, and how long it was.
    pub hdr: PayloadHeader,
    /// Its first `hdr.copied` bytes.
    pub data: Vec<u8>,
}

impl RingRecord {
    /// Reads a record as the kernel wrote it; `None` for a short or
    /// unknown one (which the kernel never writes).
    pub fn parse(item: &[u8]) -> Option<RingRecord> {
        let kind = u32::from_ne_bytes(item.get(..4)?.try_into().ok()?);
        match kind {
            record_kind::FLAGGED if item.len() >= size_of::<FlowEvent>() => {
                // SAFETY: a whole FlowEvent (plain data); read unaligned.
                Some(RingRecord::Flagged(unsafe {
                    std::ptr::read_unaligned(item.as_ptr().cast())
                }))
            }
            record_kind::ENDED if item.len() >= size_of::<FlowEnded>() => {
                // SAFETY: a whole FlowEnded (plain data); read unaligned.
                Some(RingRecord::Ended(unsafe {
                    std::ptr::read_unaligned(item.as_ptr().cast())
                }))
            }
            record_kind::PAYLOAD if item.len() >= size_of::<PayloadHeader>() => {
                // SAFETY: a whole PayloadHeader (plain data); read unaligned.
                let hdr: PayloadHeader = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                let data = item
                    .get(size_of::<PayloadHeader>()..)?
                    .get(..hdr.copied as usize)?
                    .to_vec();
                Some(RingRecord::Payload(PayloadRecord { hdr, data }))
            }
            _ => None,
        }
    }
}

/// The reader thread; stop it with [`EventReader::request_stop`], receive
/// until the channel ends, then [`EventReader::join`].
pub struct EventReader {
    stop: Arc<AtomicBool>,
    /// An eventfd in the thread's `poll(2)`: written to stop it at once.
    wake: Arc<OwnedFd>,
    thread: Option<JoinHandle<Result<u64, std::io::Error>>>,
}

/// Starts draining `rings`. Batches arrive on the returned receiver, at
/// most [`QUEUE`] waiting; short or unknown records (which the kernel never
/// writes) are counted and dropped.
pub fn spawn(
    ring: Vec<RingBuf<MapData>>,
) -> std::io::Result<(EventReader, mpsc::Receiver<Vec<RingRecord>>)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let stop = Arc::new(AtomicBool::new(false));
    // SAFETY: eventfd(2) returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor nobody else owns.
    let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
    let (flag, woken) = (stop.clone(), wake.clone());
    let thread = std::thread::Builder::new()
        .name("cas-audit-events".into())
        .spawn(move || read_loop(ring, flag, &woken, tx))?;
    Ok((
        EventReader {
            stop,
            wake,
            thread: Some(thread),
        },
        rx,
    ))
}

impl EventReader {
    /// Asks the thread to stop after one more complete drain of the rings;
    /// the receiver ends (`None`) once it did. Keep receiving until then:
    /// the thread waits for room in the channel.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write to our eventfd; it cannot fail but by
        // overflow, after 2^64 - 2 requests.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Waits for the thread, once the receiver ended (after
    /// [`EventReader::request_stop`]).
    pub fn join(mut self) -> std::io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Ok(short))) => {
                if short > 0 {
                    log::warn!("{short} short or unknown ring-buffer records ignored");
                }
                Ok(())
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(std::io::Error::other("the event reader panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for EventReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads until stopped; returns the number of short records seen.
fn read_loop(
    mut rings: Vec<RingBuf<MapData>>,
    stop: Arc<AtomicBool>,
    wake: &OwnedFd,
    tx: mpsc::Sender<Vec<RingRecord>>,
) -> Result<u64, std::io::Error> {
    let mut short = 0;
    let mut behind = Behind::default();
    // Records read and not handed over yet: while the channel is full, the
    // next records join them until the batch is full.
    let mut batch = Vec::new();
    let mut bytes = 0;
    loop {
        // Read the flag before draining, so that a stop requested after
        // the programs were detached is followed by one complete drain.
        let stopping = stop.load(Ordering::SeqCst);
        for ring in rings.iter_mut() {
            loop {
                while batch.len() < BATCH && bytes < BATCH_BYTES {
                    let Some(item) = ring.next() else { break };
                    bytes += item.len();
                    match RingRecord::parse(&item) {
                        Some(r) => batch.push(r),
                        None => short += 1,
                    }
                }
                let full = batch.len() == BATCH || bytes >= BATCH_BYTES;
                if !batch.is_empty() {
                    match behind.hand_over(&tx, std::mem::take(&mut batch), full || stopping) {
                        Handed::Yes => bytes = 0,
                        Handed::Kept(b) => batch = b,
                        // The receiver is gone: nobody wants the events any more.
                        Handed::Closed => return Ok(short),
                    }
                }
                if !full {
                    break;
                }
            }
        }
        if stopping {
            return Ok(short);
        }
        let mut pfds: Vec<libc::pollfd> = rings
            .iter()
            .map(|r| r.as_raw_fd())
            .chain([wake.as_raw_fd()])
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // Records kept back are tried again soon.
        let wait = if batch.is_empty() { POLL_MS } else { RETRY_MS };
        // SAFETY: valid pollfds for the duration of the call.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Least time between two messages about the agent falling behind.
const BEHIND_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether the main task is behind, for one message per stall (at most
/// one a minute).
#[derive(Debug, Default)]
struct Behind {
    /// When the stall going on began, and whether it was logged.
    since: Option<(std::time::Instant, bool)>,
    warned: Option<std::time::Instant>,
}

/// What became of a batch offered to the channel.
enum Handed {
    /// It is in the channel.
    Yes,
    /// The channel is full and the batch is not: it is kept, to grow.
    Kept(Vec<RingRecord>),
    /// The receiver is gone.
    Closed,
}

impl Behind {
    /// Hands `batch` over. While the channel is full, a batch that is not
    /// `full` is kept back (to take more records); a full one waits for
    /// room, and the rings are not drained meanwhile: the kernel counts
    /// what they cannot take.
    fn hand_over(
        &mut self,
        tx: &mpsc::Sender<Vec<RingRecord>>,
        batch: Vec<RingRecord>,
        full: bool,
    ) -> Handed {
        let batch = match tx.try_send(batch) {
            Ok(()) => {
                if let Some((t, true)) = self.since.take() {
                    log::info!(
                        "the agent caught up with the ring buffers after {} ms",
                        t.elapsed().as_millis()
                    );
                }
                return Handed::Yes;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Handed::Closed,
            Err(mpsc::error::TrySendError::Full(b)) if !full => return Handed::Kept(b),
            Err(mpsc::error::TrySendError::Full(b)) => b,
        };
        if self.since.is_none() {
            let now = std::time::Instant::now();
            let say = self.warned.is_none_or(|w| w.elapsed() >= BEHIND_INTERVAL);
            if say {
                log::warn!(
                    "the agent is behind the ring buffers: they are not drained until it catches up, and the kernel counts what they cannot hold (events_lost, flows_lost, payloads_lost)"
                );
                self.warned = Some(now);
            }
            self.since = Some((now, say));
        }
        match tx.blocking_send(batch) {
            Ok(()) => Handed::Yes,
            Err(_) => Handed::Closed,
        }
    }
}
