//! The `/metrics` endpoint: one `GET` per connection (HTTP/1.1 with
//! `Connection: close`, RFC 9112), bounded so that no client, however
//! many connections it opens or however slowly it reads, can take what
//! the agent needs for its own work.
//!
//! - **Connections**: at most [`Limits::connections`] at once: 64, and
//!   never more than a quarter of the process's descriptor limit, so
//!   the other three quarters stay the agent's (its maps, links, log
//!   files, sockets). One more is accepted, answered `503` without
//!   waiting and closed at once, and counted
//!   (`cas_audit_metrics_connections_refused_total`).
//! - **Time**: the request head must arrive within [`Limits::timeout`]
//!   (5 s), and the answer be taken within as long; a slower client is
//!   closed and counted (`..._timed_out_total`).
//! - **Bytes**: a request head longer than [`Limits::request_bytes`]
//!   (8 KiB) is answered `431` and closed (`..._too_large_total`).
//! - **Accept errors** (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, ...) pause
//!   accepting, 10 ms doubling up to 1 s, instead of retrying at once
//!   (which spins: the pending connection keeps the listener readable);
//!   counted (`..._accept_errors_total`) and logged once per burst.

use std::{
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc},
    time::{Duration, Instant},
};

use prometheus_client::{metrics::counter::Counter, registry::Registry};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use super::{text_format, ListenAddr, Metrics, OPENMETRICS, TEXT_004};

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest wait for a request head, and for the answer to be taken.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head read.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// First and longest pause after a failed accept.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What one listener allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more are refused.
    pub connections: usize,
    /// Time allowed to send the request head, and to take the answer.
    pub timeout: Duration,
    /// Longest request head, in bytes.
    pub request_bytes: usize,
}

impl Limits {
    /// The limits for a descriptor limit of `nofile` (the soft
    /// `RLIMIT_NOFILE`): [`MAX_CONNECTIONS`], at most a quarter of
    /// `nofile`, at least 1.
    pub fn for_nofile(nofile: u64) -> Limits {
        let quarter = usize::try_from(nofile / 4).unwrap_or(usize::MAX);
        Limits {
            connections: MAX_CONNECTIONS.min(quarter).max(1),
            timeout: CLIENT_TIMEOUT,
            request_bytes: MAX_REQUEST_BYTES,
        }
    }

    /// The limits for this process's descriptor limit now.
    pub fn for_process() -> Limits {
        let nofile = crate::host::fds::nofile().map_or(1024, |l| l.soft);
        Limits::for_nofile(nofile)
    }
}

type Counter64 = Counter<u64, AtomicU64>;

/// What the listeners refused or cut short, as metrics.
#[derive(Debug, Clone, Default)]
pub struct ListenerCounters {
    /// Connections closed at once: the limit of connections was reached.
    pub refused: Counter64,
    /// Connections closed because the client was too slow.
    pub timed_out: Counter64,
    /// Requests whose head was too long.
    pub too_large: Counter64,
    /// Failed accepts.
    pub accept_errors: Counter64,
}

impl ListenerCounters {
    /// The counters, registered in `registry`.
    pub fn register(registry: &mut Registry) -> ListenerCounters {
        let c = ListenerCounters::default();
        for (name, help, m) in [
            ("cas_audit_metrics_connections_refused", "Connections to the metrics endpoint closed at once because the most it serves at once were open", &c.refused),
            ("cas_audit_metrics_connections_timed_out", "Connections to the metrics endpoint closed because the client sent its request or took the answer too slowly", &c.timed_out),
            ("cas_audit_metrics_requests_too_large", "Requests to the metrics endpoint refused because their head was too long", &c.too_large),
            ("cas_audit_metrics_accept_errors", "Failed accepts on the metrics endpoint (out of descriptors, memory or buffers), each followed by a pause", &c.accept_errors),
        ] {
            registry.register(name, help, m.clone());
        }
        c
    }
}

/// Serves `GET /metrics` on every address `addr` stands for (`:PORT`: the
/// IPv6 wildcard, which takes IPv4 too, or the IPv4 one where IPv6 is off),
/// within [`Limits::for_process`] (computed once, for all of them).
/// Returns the bound addresses and their tasks.
///
/// # Errors
/// The host name does not resolve, or an address cannot be bound (in use,
/// not local, not allowed).
pub async fn serve_on(
    addr: &ListenAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<Vec<(SocketAddr, tokio::task::JoinHandle<()>)>> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let limits = Limits::for_process();
    // One budget of connections for every address.
    let permits = Arc::new(Semaphore::new(limits.connections));
    let Some(host) = &addr.host else {
        let any6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, addr.port));
        return match serve_with(any6, metrics.clone(), limits, permits.clone()).await {
            Ok(s) => Ok(vec![s]),
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                let any4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port));
                Ok(vec![serve_with(any4, metrics, limits, permits).await?])
            }
            Err(e) => Err(e),
        };
    };
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), addr.port))
        .await?
        .collect();
    addrs.sort();
    addrs.dedup();
    let mut out = Vec::new();
    for a in addrs {
        out.push(serve_with(a, metrics.clone(), limits, permits.clone()).await?);
    }
    Ok(out)
}

/// Serves `GET /metrics` on `addr` within [`Limits::for_process`] until
/// the task is dropped. Returns the bound address (useful with port 0).
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let limits = Limits::for_process();
    serve_with(
        addr,
        metrics,
        limits,
        Arc::new(Semaphore::new(limits.connections)),
    )
    .await
}

/// Serves `GET /metrics` on `addr` within `limits`, taking a permit of
/// `permits` for each connection served.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve_with(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    limits: Limits,
    permits: Arc<Semaphore>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener, bound, metrics, limits, permits));
    Ok((bound, task))
}

/// Accepts connections until dropped.
async fn accept_loop(
    listener: TcpListener,
    bound: SocketAddr,
    metrics: Arc<Metrics>,
    limits: Limits,
    permits: Arc<Semaphore>,
) {
    let counters = metrics.listener.clone();
    let mut failing: Option<(Instant, u64, Duration)> = None;
    let mut refused_since_last: u64 = 0;
    loop {
        let conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            Err(e) => {
                counters.accept_errors.inc();
                let (_, n, pause) = failing.get_or_insert_with(|| {
                    log::warn!(
                        "metrics on {bound}: accepting a connection failed ({e}); pausing accepts (up to {} s at a time) until it works again",
                        BACKOFF_MAX.as_secs()
                    );
                    (Instant::now(), 0, BACKOFF_FIRST)
                });
                *n += 1;
                let wait = *pause;
                *pause = (*pause * 2).min(BACKOFF_MAX);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        if let Some((since, n, _)) = failing.take() {
            log::info!(
                "metrics on {bound}: accepting again after {n} failed accepts in {:.1} s",
                since.elapsed().as_secs_f64()
            );
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            counters.refused.inc();
            if refused_since_last == 0 {
                log::warn!(
                    "metrics on {bound}: {} connections open, the most served at once: refusing more (counted in cas_audit_metrics_connections_refused_total)",
                    limits.connections
                );
            }
            refused_since_last += 1;
            // Best effort, never waiting: the socket's buffer is empty.
            let _ = conn.try_write(
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            drop(conn);
            continue;
        };
        if refused_since_last > 0 {
            log::info!(
                "metrics on {bound}: serving again after refusing {refused_since_last} connections"
            );
            refused_since_last = 0;
        }
        let metrics = metrics.clone();
        tokio::spawn(async move {
            answer(conn, &metrics, limits).await;
            drop(permit);
        });
    }
}

/// What the client sent.
enum Head {
    /// The request head (or what came before the client stopped sending).
    Complete(Vec<u8>),
    /// More than the limit without the end of the head.
    TooLarge,
}

/// Reads a request head: up to the blank line, at most `max` bytes.
async fn read_head(conn: &mut TcpStream, max: usize) -> std::io::Result<Head> {
    let mut buf = vec![0u8; max];
    let mut n = 0;
    while n < max {
        let m = conn.read(&mut buf[n..]).await?;
        if m == 0 {
            break;
        }
        // The blank line may straddle two reads.
        let from = n.saturating_sub(3);
        n += m;
        if buf[from..n].windows(4).any(|w| w == b"\r\n\r\n") {
            buf.truncate(n);
            return Ok(Head::Complete(buf));
        }
    }
    if n == max {
        return Ok(Head::TooLarge);
    }
    buf.truncate(n);
    Ok(Head::Complete(buf))
}

/// Serves one connection within `limits`.
async fn answer(mut conn: TcpStream, metrics: &Metrics, limits: Limits) {
    let counters = &metrics.listener;
    let head = match tokio::time::timeout(
        limits.timeout,
        read_head(&mut conn, limits.request_bytes),
    )
    .await
    {
        Err(_) => {
            counters.timed_out.inc();
            return;
        }
        Ok(Err(_)) => return,
        Ok(Ok(Head::TooLarge)) => {
            counters.too_large.inc();
            let resp = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            // Answer, then read (and drop) what the client still sends, so
            // that the close is not a reset that loses the answer; bounded
            // by the same time and by 16 heads' worth of bytes.
            let _ = tokio::time::timeout(limits.timeout, async {
                conn.write_all(resp).await?;
                conn.shutdown().await?;
                let mut sink = [0u8; 1024];
                let mut left = 16 * limits.request_bytes;
                while left > 0 {
                    match conn.read(&mut sink).await? {
                        0 => break,
                        n => left = left.saturating_sub(n),
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            return;
        }
        Ok(Ok(Head::Complete(h))) if h.is_empty() => return,
        Ok(Ok(Head::Complete(h))) => h,
    };
    let head = String::from_utf8_lossy(&head);
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let openmetrics = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("accept") && v.contains("application/openmetrics-text")
        })
    });
    let (status, ctype, body) = if method == "GET" && (path == "/metrics" || path == "/") {
        let om = metrics.render();
        if openmetrics {
            ("200 OK", OPENMETRICS, om)
        } else {
            ("200 OK", TEXT_004, text_format(&om))
        }
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".to_string())
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let sent = tokio::time::timeout(limits.timeout, async {
        conn.write_all(resp.as_bytes()).await?;
        conn.shutdown().await
    })
    .await;
    if sent.is_err() {
        counters.timed_out.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn connections_are_a_quarter_of_the_descriptors_at_most_64() {
        assert_eq!(Limits::for_nofile(1024).connections, 64);
        assert_eq!(Limits::for_nofile(65536).connections, 64);
        assert_eq!(Limits::for_nofile(128).connections, 32);
        assert_eq!(Limits::for_nofile(3).connections, 1);
        assert_eq!(Limits::for_nofile(u64::MAX).connections, 64);
    }

    /// A blocking client: sends `req`, returns everything it gets back.
    fn get(addr: SocketAddr, req: &[u8]) -> String {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(req).unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_slow_and_large_clients_are_bounded_and_counted() {
        let m = Arc::new(Metrics::new("s", "2024-01-01"));
        let limits = Limits {
            connections: 2,
            timeout: Duration::from_millis(300),
            request_bytes: 64,
        };
        let (addr, task) = serve_with(
            "127.0.0.1:0".parse().unwrap(),
            m.clone(),
            limits,
            Arc::new(Semaphore::new(limits.connections)),
        )
        .await
        .unwrap();
        let result = tokio::task::spawn_blocking(move || {
            // Two idle clients take both slots...
            let idle: Vec<_> = (0..2)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            std::thread::sleep(Duration::from_millis(100));
            // ...a third is refused at once, with a 503 (it sends nothing:
            // a request the server never reads would turn its close into a
            // reset).
            let third = get(addr, b"");
            assert!(third.starts_with("HTTP/1.1 503 "), "{third}");
            // The idle ones are closed after the timeout.
            for mut c in idle {
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut b = [0u8; 1];
                assert_eq!(c.read(&mut b).unwrap_or(0), 0, "closed by the server");
            }
            // A head longer than the limit.
            let big = get(addr, &[b'A'; 100]);
            assert!(big.starts_with("HTTP/1.1 431 "), "{big}");
            // And a scrape works again, the blank line split over two writes.
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\n\r").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            c.write_all(b"\n").unwrap();
            let mut ok = String::new();
            c.read_to_string(&mut ok).unwrap();
            ok
        })
        .await
        .unwrap();
        assert!(result.starts_with("HTTP/1.1 200 OK"), "{result}");
        assert!(
            result.contains("cas_audit_metrics_connections_refused_total 1\n"),
            "{result}"
        );
        assert!(
            result.contains("cas_audit_metrics_connections_timed_out_total 2\n"),
            "{result}"
        );
        assert!(
            result.contains("cas_audit_metrics_requests_too_large_total 1\n"),
            "{result}"
        );
        assert_eq!(m.listener.accept_errors.get(), 0);
        task.abort();
    }
}
