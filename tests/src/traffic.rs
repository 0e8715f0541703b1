//! Bounded UDP and TCP traffic helpers that run inside a namespace of a
//! [`Topology`].
//!
//! Every socket has [`IO_TIMEOUT`] read/write/connect timeouts, and every
//! background loop stops by itself after [`MAX_LIFETIME`] even if it is never
//! stopped explicitly.

use std::io::{ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::Topology;

/// Read, write and connect timeout of every socket made here.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a background sink or server keeps running if nobody stops it.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);

/// How often background loops look at their stop flag.
const POLL: Duration = Duration::from_millis(20);

/// Most connections a [`TcpServer`] accepts before it stops accepting.
pub const MAX_CONNECTIONS: usize = 10_000;

fn unspecified_for(dst: &SocketAddr) -> SocketAddr {
    match dst {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// Sends `count` UDP datagrams of `payload_len` bytes from namespace `ns` to
/// `dst`, from `bind` if given (else from an ephemeral port).
///
/// Each payload starts with its sequence number (big-endian u64, when it
/// fits) followed by filler bytes.
pub fn udp_send(
    topo: &Topology,
    ns: &str,
    bind: Option<SocketAddr>,
    dst: SocketAddr,
    count: usize,
    payload_len: usize,
) -> Result<()> {
    let bind = bind.unwrap_or_else(|| unspecified_for(&dst));
    topo.try_in_ns(ns, move || -> Result<()> {
        let sock = UdpSocket::bind(bind).with_context(|| format!("binding UDP {bind}"))?;
        sock.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut payload: Vec<u8> = (0..payload_len).map(|i| (i % 251) as u8).collect();
        for seq in 0..count {
            let tag = (seq as u64).to_be_bytes();
            let n = tag.len().min(payload.len());
            payload[..n].copy_from_slice(&tag[..n]);
            let sent = sock
                .send_to(&payload, dst)
                .with_context(|| format!("sending datagram {seq} from {bind} to {dst}"))?;
            anyhow::ensure!(
                sent == payload.len(),
                "short UDP send: {sent} of {}",
                payload.len()
            );
        }
        Ok(())
    })
    .and_then(|r| r)
    .with_context(|| format!("udp_send in {ns}"))
}

/// Receives and counts UDP datagrams on a background thread until stopped
/// (or dropped).
#[derive(Debug)]
pub struct UdpSink {
    local: SocketAddr,
    count: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
    sources: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// Starts a [`UdpSink`] bound to `addr` in namespace `ns`.
pub fn udp_sink(topo: &Topology, ns: &str, addr: SocketAddr) -> Result<UdpSink> {
    UdpSink::start(topo, ns, addr)
}

impl UdpSink {
    /// Binds `addr` in namespace `ns` (before returning, so nothing sent
    /// afterwards is missed) and starts counting datagrams.
    pub fn start(topo: &Topology, ns: &str, addr: SocketAddr) -> Result<UdpSink> {
        let sock = topo
            .try_in_ns(ns, move || UdpSocket::bind(addr))?
            .with_context(|| format!("binding UDP {addr} in {ns}"))?;
        sock.set_read_timeout(Some(POLL))?;
        grow_recv_buffer(&sock);
        let local = sock.local_addr()?;
        let count = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let sources = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (count, bytes, sources, stop) =
                (count.clone(), bytes.clone(), sources.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("udp-sink:{local}"))
                .spawn(move || {
                    let started = Instant::now();
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME {
                        match sock.recv_from(&mut buf) {
                            Ok((n, from)) => {
                                bytes.fetch_add(n, Ordering::Relaxed);
                                let mut s = sources.lock().unwrap_or_else(|e| e.into_inner());
                                if !s.contains(&from) {
                                    s.push(from);
                                }
                                drop(s);
                                count.fetch_add(1, Ordering::Release);
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    ErrorKind::WouldBlock
                                        | ErrorKind::TimedOut
                                        | ErrorKind::Interrupted
                                ) => {}
                            Err(e) => {
                                eprintln!("cas-audit-tests: udp sink {local}: {e}");
                                break;
                            }
                        }
                    }
                })?
        };
        Ok(UdpSink {
            local,
            count,
            bytes,
            sources,
            stop,
            handle: Some(handle),
        })
    }

    /// The bound address (useful when `addr` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Datagrams received so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Payload bytes received so far.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Distinct source addresses seen so far, in order of first arrival.
    pub fn sources(&self) -> Vec<SocketAddr> {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until at least `n` datagrams arrived or `timeout` passed;
    /// returns the count at that moment.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.count();
            if c >= n || Instant::now() >= deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the receiver thread and returns the number of datagrams received.
    pub fn stop(mut self) -> usize {
        self.shutdown();
        self.count()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Bytes of receive buffer a [`UdpSink`] asks for, so that a burst sent
/// faster than the sink thread drains it is not dropped at the socket.
pub const SINK_RCVBUF: usize = 8 << 20;

/// Raises the socket's receive buffer to [`SINK_RCVBUF`] with
/// `SO_RCVBUFFORCE` (root may exceed `net.core.rmem_max`), falling back to
/// `SO_RCVBUF`. Failure only means a smaller buffer, so it is just logged.
fn grow_recv_buffer(sock: &UdpSocket) {
    let size = SINK_RCVBUF as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: valid fd, option value is a c_int of the given length.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
    eprintln!(
        "cas-audit-tests: cannot enlarge UDP sink buffer: {}",
        std::io::Error::last_os_error()
    );
}

/// A TCP echo server in a namespace: each accepted connection gets back
/// everything it sends, and is closed once the client shuts down its side
/// (or after [`IO_TIMEOUT`] of silence).
#[derive(Debug)]
pub struct TcpServer {
    local: SocketAddr,
    served: Arc<AtomicUsize>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Listens on `addr` in namespace `ns` (before returning) and serves
    /// connections on a background thread.
    pub fn start(topo: &Topology, ns: &str, addr: SocketAddr) -> Result<TcpServer> {
        let listener = topo
            .try_in_ns(ns, move || TcpListener::bind(addr))?
            .with_context(|| format!("listening on TCP {addr} in {ns}"))?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let served = Arc::new(AtomicUsize::new(0));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (served, peers, stop) = (served.clone(), peers.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("tcp-echo:{local}"))
                .spawn(move || accept_loop(listener, local, served, peers, stop))?
        };
        Ok(TcpServer {
            local,
            served,
            peers,
            stop,
            handle: Some(handle),
        })
    }

    /// The listening address (useful when `addr` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Connections accepted so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Acquire)
    }

    /// Remote addresses of the connections accepted so far, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops accepting, waits for the open connections to finish (each is
    /// bounded by [`IO_TIMEOUT`]) and returns the number of connections served.
    pub fn stop(mut self) -> usize {
        self.shutdown();
        self.served()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(
    listener: TcpListener,
    local: SocketAddr,
    served: Arc<AtomicUsize>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed)
        && started.elapsed() < MAX_LIFETIME
        && served.load(Ordering::Relaxed) < MAX_CONNECTIONS
    {
        match listener.accept() {
            Ok((stream, peer)) => {
                peers.lock().unwrap_or_else(|e| e.into_inner()).push(peer);
                served.fetch_add(1, Ordering::Release);
                let spawned = std::thread::Builder::new()
                    .name(format!("tcp-echo:{peer}"))
                    .spawn(move || {
                        if let Err(e) = echo(stream) {
                            eprintln!("cas-audit-tests: echo server {local} <- {peer}: {e}");
                        }
                    });
                match spawned {
                    Ok(h) => workers.push(h),
                    Err(e) => eprintln!("cas-audit-tests: cannot spawn echo worker: {e}"),
                }
                workers.retain(|h| !h.is_finished());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                std::thread::sleep(POLL);
            }
            Err(e) => {
                eprintln!("cas-audit-tests: echo server {local}: accept: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
    drop(listener);
    for h in workers {
        let _ = h.join();
    }
}

fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

/// Connects from namespace `ns` to `dst` (from the fixed local address/port
/// `bind` if given, with `SO_REUSEADDR`), writes `payload`, shuts down the
/// write side, reads until EOF and returns what came back.
///
/// A fixed `bind` port may be reused for the same destination right after an
/// earlier exchange: Linux lets an explicitly bound `connect` take over its
/// own TIME_WAIT four-tuple when TCP timestamps are on (the default), and
/// otherwise the namespaces' `tcp_tw_reuse=1` plus a bounded retry on
/// `EADDRNOTAVAIL`/`EADDRINUSE` (up to 3 s) covers it.
pub fn tcp_exchange(
    topo: &Topology,
    ns: &str,
    bind: Option<SocketAddr>,
    dst: SocketAddr,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let payload = payload.to_vec();
    topo.try_in_ns(ns, move || -> Result<Vec<u8>> {
        let mut stream = connect(bind, dst)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.write_all(&payload).context("writing payload")?;
        stream
            .shutdown(Shutdown::Write)
            .context("shutting down write side")?;
        let mut back = Vec::new();
        stream.read_to_end(&mut back).context("reading reply")?;
        Ok(back)
    })
    .and_then(|r| r)
    .with_context(|| match bind {
        Some(b) => format!("tcp_exchange {b} -> {dst} in {ns}"),
        None => format!("tcp_exchange -> {dst} in {ns}"),
    })
}

fn connect(bind: Option<SocketAddr>, dst: SocketAddr) -> Result<TcpStream> {
    const RETRY_FOR: Duration = Duration::from_secs(3);
    let started = Instant::now();
    loop {
        let sock = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
        let attempt = (|| -> std::io::Result<()> {
            if let Some(b) = bind {
                sock.set_reuse_address(true)?;
                sock.bind(&SockAddr::from(b))?;
            }
            sock.connect_timeout(&SockAddr::from(dst), IO_TIMEOUT)
        })();
        match attempt {
            Ok(()) => return Ok(sock.into()),
            Err(e)
                if bind.is_some_and(|b| b.port() != 0)
                    && matches!(e.kind(), ErrorKind::AddrNotAvailable | ErrorKind::AddrInUse)
                    && started.elapsed() < RETRY_FOR =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e).context("connecting"),
        }
    }
}
