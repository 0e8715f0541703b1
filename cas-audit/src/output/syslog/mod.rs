//! `run --syslog TARGET --syslog-format rfc5424|cef`: one message per
//! flagged or blocked flow (and, with `--syslog-ended`, per flow reported
//! for good) to a SIEM, from a [`Bounded`] sink: a SIEM that is down or
//! slow never blocks the agent, and what could not be sent is counted.
//!
//! - [`format`]: the messages: RFC 5424 (header and structured data
//!   formatted by the `fasyslog` crate) carrying either readable text with
//!   the record as structured data, or a CEF event; the severity mapped
//!   from the verdict and state ([`format::severity`]).
//! - this module: the transports: UDP (RFC 5426, one message per
//!   datagram), TCP (RFC 6587 §3.4.1 octet counting: `LEN SP MSG`) and a
//!   local datagram socket (`unix:/dev/log`, as rsyslog's imuxsock and
//!   journald read it).

pub mod format;

use std::{
    io::{self, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket},
    os::unix::net::UnixDatagram,
    path::PathBuf,
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

pub use self::format::Format;
use super::{
    bounded::{connect_udp, Bounded, Deliver, Lazy, SinkStats},
    record::FlowRecord,
};

/// Longest wait for a TCP connection to the SIEM.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a write to the SIEM may block.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Wait after a failed connection or write before the next try (messages
/// meanwhile are dropped and counted).
pub const RETRY: Duration = Duration::from_secs(1);
/// Messages that may wait for the sender's thread; more are dropped.
pub const QUEUE: usize = 16_384;

/// Where messages go: `udp://HOST:PORT`, `tcp://HOST:PORT` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// UDP datagrams (RFC 5426).
    Udp(SocketAddr),
    /// A TCP stream, octet-counted frames (RFC 6587).
    Tcp(SocketAddr),
    /// A local datagram socket (such as `/dev/log`).
    Unix(PathBuf),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        let resolve = |hp: &str| -> Result<SocketAddr, String> {
            hp.to_socket_addrs()
                .map_err(|e| format!("{s:?}: {e} (expected HOST:PORT)"))?
                .next()
                .ok_or_else(|| format!("{s:?}: the name has no address"))
        };
        if let Some(hp) = s.strip_prefix("udp://") {
            Ok(Target::Udp(resolve(hp)?))
        } else if let Some(hp) = s.strip_prefix("tcp://") {
            Ok(Target::Tcp(resolve(hp)?))
        } else if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("{s:?}: no socket path after unix:"));
            }
            Ok(Target::Unix(PathBuf::from(path)))
        } else {
            Err(format!(
                "{s:?}: expected udp://HOST:PORT, tcp://HOST:PORT or unix:PATH"
            ))
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Udp(a) => write!(f, "udp://{a}"),
            Target::Tcp(a) => write!(f, "tcp://{a}"),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// `run --syslog*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogOptions {
    /// Where messages go.
    pub target: Target,
    /// What they say.
    pub format: Format,
    /// Also one message per flow reported for good (ended, expired, exit).
    pub ended: bool,
}

/// An open connection.
enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Unix(UnixDatagram),
}

/// The sender: formats records and writes them to the target, connecting
/// (again) when needed.
pub struct Sender {
    target: Target,
    format: Format,
    context: fasyslog::format::SyslogContext,
    conn: Lazy<Conn>,
    frames: Vec<u8>,
}

impl Sender {
    /// A sender to `opts.target` for the host `host`; it connects at its
    /// first message.
    pub fn new(opts: &SyslogOptions, host: &str) -> Sender {
        let mut context = fasyslog::format::SyslogContext::const_new();
        context
            .facility(format::FACILITY)
            .hostname(host)
            .appname(format::APP_NAME)
            .procid(std::process::id().to_string());
        Sender {
            target: opts.target.clone(),
            format: opts.format,
            context,
            conn: Lazy::new(RETRY),
            frames: Vec::new(),
        }
    }

    /// Starts the sender's thread behind a bounded queue.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn spawn(opts: &SyslogOptions, host: &str) -> io::Result<Bounded<Arc<FlowRecord>>> {
        Bounded::spawn("syslog", QUEUE, Sender::new(opts, host))
    }

    fn connect(target: &Target) -> io::Result<Conn> {
        Ok(match target {
            Target::Udp(addr) => Conn::Udp(connect_udp(*addr)?),
            Target::Tcp(addr) => {
                let s = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)?;
                s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                s.set_nodelay(true)?;
                Conn::Tcp(s)
            }
            Target::Unix(path) => {
                let s = UnixDatagram::unbound()?;
                s.connect(path)?;
                s.set_nonblocking(true)?;
                Conn::Unix(s)
            }
        })
    }

    /// Sends the messages of `batch`; returns how many were handed to the
    /// transport (the others are lost).
    fn send(&mut self, batch: &[Arc<FlowRecord>], now: Instant) -> u64 {
        let messages: Vec<String> = batch
            .iter()
            .map(|r| format::message(&self.context, self.format, r))
            .collect();
        let mut frames = std::mem::take(&mut self.frames);
        let target = &self.target;
        let sent = match self.conn.get(now, target, || Sender::connect(target)) {
            None => 0,
            Some(Conn::Udp(s)) => messages
                .iter()
                .filter(|m| s.send(m.as_bytes()).is_ok())
                .count() as u64,
            Some(Conn::Unix(s)) => messages
                .iter()
                .filter(|m| s.send(m.as_bytes()).is_ok())
                .count() as u64,
            Some(Conn::Tcp(s)) => {
                frames.clear();
                for m in &messages {
                    // RFC 6587 §3.4.1: MSG-LEN SP SYSLOG-MSG.
                    let _ = write!(frames, "{} {m}", m.len());
                }
                match s.write_all(&frames) {
                    Ok(()) => messages.len() as u64,
                    Err(e) => {
                        // Some frames may have gone out: they are counted
                        // lost, so the count of losses is an upper bound.
                        self.conn.failed(now, &self.target, &e);
                        0
                    }
                }
            }
        };
        self.frames = frames;
        sent
    }
}

impl Deliver<Arc<FlowRecord>> for Sender {
    fn deliver(&mut self, batch: &[Arc<FlowRecord>], stats: &SinkStats) {
        let sent = self.send(batch, Instant::now());
        stats.sent(sent);
        stats.dropped(batch.len() as u64 - sent);
    }
}

#[cfg(test)]
mod tests;
