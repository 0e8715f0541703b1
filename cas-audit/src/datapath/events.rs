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

use std::{
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use aya::maps::{MapData, RingBuf};
use cas_audit_common::{record_kind, FlowEnded, FlowEvent, PayloadHeader};
use tokio::sync::mpsc;

/// How long the reader sleeps in `poll(2)` before it looks at the stop flag.
const POLL_MS: i32 = 100;
/// Events handed over at most per batch.
const BATCH: usize = 4096;

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

/// The reader thread; stop it with [`EventReader::stop`].
pub struct EventReader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<u64, std::io::Error>>>,
}

/// Starts draining `rings`. Batches arrive on the returned receiver; short
/// or unknown records (which the kernel never writes) are counted and dropped.
pub fn spawn(
    ring: Vec<RingBuf<MapData>>,
) -> std::io::Result<(EventReader, mpsc::UnboundedReceiver<Vec<RingRecord>>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("cas-audit-events".into())
        .spawn(move || read_loop(ring, flag, tx))?;
    Ok((
        EventReader {
            stop,
            thread: Some(thread),
        },
        rx,
    ))
}

impl EventReader {
    /// Stops the thread after it drained what the ring holds, and waits for
    /// it. Every event it read is in the channel when this returns.
    pub fn stop(mut self) -> std::io::Result<()> {
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
    tx: mpsc::UnboundedSender<Vec<RingRecord>>,
) -> Result<u64, std::io::Error> {
    let mut short = 0;
    loop {
        // Read the flag before draining, so that a stop requested after
        // the programs were detached is followed by one complete drain.
        let stopping = stop.load(Ordering::SeqCst);
        for ring in rings.iter_mut() {
            loop {
                let mut batch = Vec::new();
                while batch.len() < BATCH {
                    let Some(item) = ring.next() else { break };
                    match RingRecord::parse(&item) {
                        Some(r) => batch.push(r),
                        None => short += 1,
                    }
                }
                let full = batch.len() == BATCH;
                if !batch.is_empty() && tx.send(batch).is_err() {
                    // The receiver is gone: nobody wants the events any more.
                    return Ok(short);
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
            .map(|r| libc::pollfd {
                fd: r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: valid pollfds for the duration of the call.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, POLL_MS) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}
