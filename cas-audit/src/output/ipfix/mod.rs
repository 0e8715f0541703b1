//! `run --ipfix HOST:PORT`: every flow reported for good (ended, expired,
//! or still open at exit) as IPFIX (RFC 7011) data records over UDP, from
//! a [`Bounded`] sink: a collector that is down or slow never blocks the
//! agent, and what could not be sent is counted.
//!
//! - Messages ([`encode`]) are at most [`MAX_MESSAGE`] octets.
//! - Templates go in the first message and are re-sent, as RFC 7011 §8.4
//!   asks of UDP exporters, every [`TEMPLATE_REFRESH`] and every
//!   [`TEMPLATE_REFRESH_MESSAGES`] messages (the IPFIX-MIB's
//!   templateRefreshTimeout and templateRefreshPacket), whichever comes
//!   first.
//! - The header's sequence number counts the data records of the
//!   observation domain sent before the message (§3.1); a message the
//!   socket refused still advances it, so the collector sees the gap.

pub mod encode;

use std::{
    collections::HashMap,
    io,
    net::{SocketAddr, ToSocketAddrs, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use self::encode::MessageBuilder;
use super::{
    bounded::{connect_udp, Bounded, Deliver, Lazy, SinkStats},
    record::FlowRecord,
};

/// Largest message, in octets: a UDP payload that fits a 1500-octet path
/// MTU with IPv6 and UDP headers (RFC 7011 §10.3.3 asks to stay under the
/// path MTU).
pub const MAX_MESSAGE: usize = 1400;
/// Templates are re-sent at least this often.
pub const TEMPLATE_REFRESH: Duration = Duration::from_secs(60);
/// ... and at least every this many messages.
pub const TEMPLATE_REFRESH_MESSAGES: u32 = 1000;
/// Wait after a failed connection (no route) before the next try.
pub const RETRY: Duration = Duration::from_secs(1);
/// The observation domain of every message.
pub const DOMAIN: u32 = 1;
/// Flow records that may wait for the exporter's thread; more are dropped
/// (and counted).
pub const QUEUE: usize = 65_536;

/// Resolves `HOST:PORT` (a name, an IPv4 address or a bracketed IPv6
/// address, and a port) to the collector's first address.
///
/// # Errors
/// The text is not `HOST:PORT`, or the name does not resolve.
pub fn resolve(target: &str) -> Result<SocketAddr, String> {
    target
        .to_socket_addrs()
        .map_err(|e| format!("--ipfix {target:?}: {e} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| format!("--ipfix {target:?}: the name has no address"))
}

/// The IPFIX exporter: a UDP socket connected to the collector.
pub struct Exporter {
    collector: SocketAddr,
    sock: Lazy<UdpSocket>,
    builder: MessageBuilder,
    sequence: u32,
    templates_sent: Option<Instant>,
    messages_since_templates: u32,
    ifindex: HashMap<String, u32>,
}

impl Exporter {
    /// An exporter to `collector`; its socket is connected at the first
    /// message (again [`RETRY`] after a failure: no route yet).
    pub fn new(collector: SocketAddr) -> Exporter {
        Exporter {
            collector,
            sock: Lazy::new(RETRY),
            builder: MessageBuilder::new(MAX_MESSAGE),
            sequence: 0,
            templates_sent: None,
            messages_since_templates: 0,
            ifindex: HashMap::new(),
        }
    }

    /// Starts the exporter's thread behind a bounded queue.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn spawn(collector: SocketAddr) -> io::Result<Bounded<Arc<FlowRecord>>> {
        Bounded::spawn("ipfix", QUEUE, Exporter::new(collector))
    }

    fn templates_due(&self, now: Instant) -> bool {
        match self.templates_sent {
            None => true,
            Some(at) => {
                now.duration_since(at) >= TEMPLATE_REFRESH
                    || self.messages_since_templates >= TEMPLATE_REFRESH_MESSAGES
            }
        }
    }

    /// The interface's index, looked up once per name (0 if unknown).
    fn ifindex(&mut self, iface: &str) -> u32 {
        if let Some(i) = self.ifindex.get(iface) {
            return *i;
        }
        let i = crate::host::netdev::ifindex(iface).unwrap_or(0);
        self.ifindex.insert(iface.to_string(), i);
        i
    }

    /// Sends `batch` in as few messages as fit; returns per message the
    /// number of flow records it carried and whether the socket took it.
    fn send(&mut self, batch: &[Arc<FlowRecord>], now: Instant) -> Vec<(u64, bool)> {
        let mut sent = Vec::new();
        let mut i = 0;
        while i < batch.len() {
            let templates = self.templates_due(now);
            self.builder.start(templates);
            let first = i;
            while i < batch.len() {
                let ifindex = self.ifindex(&batch[i].iface);
                if !self.builder.add(&batch[i], ifindex) {
                    break;
                }
                i += 1;
            }
            if i == first {
                // A record that does not fit a message on its own.
                sent.push((1, false));
                i += 1;
                continue;
            }
            let export_time = time::OffsetDateTime::now_utc().unix_timestamp() as u32;
            let (bytes, records) = self.builder.finish(export_time, self.sequence, DOMAIN);
            let collector = self.collector;
            let ok = match self.sock.get(now, &collector, || connect_udp(collector)) {
                Some(s) => s.send(bytes).is_ok(),
                None => false,
            };
            self.sequence = self.sequence.wrapping_add(records);
            if templates {
                self.templates_sent = Some(now);
                self.messages_since_templates = 0;
            } else {
                self.messages_since_templates += 1;
            }
            sent.push(((i - first) as u64, ok));
        }
        sent
    }
}

impl Deliver<Arc<FlowRecord>> for Exporter {
    fn deliver(&mut self, batch: &[Arc<FlowRecord>], stats: &SinkStats) {
        for (n, ok) in self.send(batch, Instant::now()) {
            if ok {
                stats.sent(n);
            } else {
                stats.dropped(n);
            }
        }
    }
}

#[cfg(test)]
mod tests;
