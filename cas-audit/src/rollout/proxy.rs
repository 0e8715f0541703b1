//! `check --proxy http://HOST:PORT`: each destination through an explicit
//! proxy with `CONNECT host:port` (RFC 9110 section 9.3.6), as the SIEM
//! agent and the log collector reach the service when a proxy is set. The
//! proxy's answer tells a refusal by its policy (403 and other 4xx: the
//! proxy is what to fix) from a failure upstream (502: it could not
//! connect; 504: no answer in time). The status line is read with
//! httparse, hyper's parser.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::output::record::CheckResult;

/// Bytes of a proxy's answer read at most before the tunnel.
const MAX_HEAD: usize = 16 * 1024;

/// A proxy given as `http://HOST:PORT` (or `HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `HOST:PORT` as given.
    pub authority: String,
}

impl std::str::FromStr for Proxy {
    type Err = String;
    fn from_str(s: &str) -> Result<Proxy, String> {
        let rest = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
        if s.contains("://") && !s.starts_with("http://") {
            return Err(format!("{s}: only http:// proxies (CONNECT) are supported"));
        }
        match rest.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(Proxy {
                authority: rest.to_string(),
            }),
            _ => Err(format!("{s}: expected http://HOST:PORT")),
        }
    }
}

/// What the proxy did with a CONNECT.
#[derive(Debug)]
pub enum Tunnel {
    /// 2xx: the stream now reaches the destination.
    Open(TcpStream),
    /// Anything else, as a check result with what happened and the status.
    Closed(CheckResult, String, Option<u16>),
}

/// Asks `proxy` for a tunnel to `target` (`host:port`) within `timeout`.
pub async fn connect(proxy: &Proxy, target: &str, timeout: Duration) -> Tunnel {
    match tokio::time::timeout(timeout, open(proxy, target)).await {
        Ok(t) => t,
        Err(_) => Tunnel::Closed(
            CheckResult::Unanswered,
            format!(
                "the proxy {} did not answer CONNECT within {} s",
                proxy.authority,
                timeout.as_secs_f64()
            ),
            None,
        ),
    }
}

async fn open(proxy: &Proxy, target: &str) -> Tunnel {
    let p = &proxy.authority;
    let mut s = match TcpStream::connect(p.as_str()).await {
        Ok(s) => s,
        Err(e) => {
            return Tunnel::Closed(
                CheckResult::Unreachable,
                format!("the proxy {p} cannot be reached: {e}"),
                None,
            )
        }
    };
    let req =
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: cas-audit\r\n\r\n");
    if let Err(e) = s.write_all(req.as_bytes()).await {
        return Tunnel::Closed(
            CheckResult::Unreachable,
            format!("the proxy {p}: {e}"),
            None,
        );
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        // One byte past the head would be the tunnel's: read until the end
        // of the head only.
        let n = match s.read(&mut buf[..1]).await {
            Ok(0) => {
                return Tunnel::Closed(
                    CheckResult::Refused,
                    format!("the proxy {p} closed the connection without an answer"),
                    None,
                )
            }
            Ok(n) => n,
            Err(e) => {
                return Tunnel::Closed(CheckResult::Refused, format!("the proxy {p}: {e}"), None)
            }
        };
        head.extend_from_slice(&buf[..n]);
        if head.ends_with(b"\r\n\r\n") || head.len() > MAX_HEAD {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let code = match resp.parse(&head) {
        Ok(httparse::Status::Complete(_)) => resp.code.unwrap_or(0),
        _ => {
            return Tunnel::Closed(
                CheckResult::Refused,
                format!("the proxy {p} answered something that is not HTTP"),
                None,
            )
        }
    };
    let reason = resp.reason.unwrap_or("").to_string();
    let said = format!("{code} {reason}");
    match code {
        200..=299 => Tunnel::Open(s),
        502 => Tunnel::Closed(
            CheckResult::Unreachable,
            format!("the proxy {p} could not connect to it ({said})"),
            Some(code),
        ),
        504 => Tunnel::Closed(
            CheckResult::Unanswered,
            format!("the proxy {p} got no answer from it ({said})"),
            Some(code),
        ),
        _ => Tunnel::Closed(
            CheckResult::Refused,
            format!("the proxy {p} refuses CONNECT ({said})"),
            Some(code),
        ),
    }
}

/// The target of a CONNECT for a destination: its name when it has one
/// (the proxy resolves it), else its address.
pub fn target(name: Option<&str>, addr: SocketAddr) -> String {
    match name {
        Some(n) => format!("{n}:{}", addr.port()),
        None => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_addresses() {
        assert_eq!(
            "http://10.0.0.1:3128".parse::<Proxy>().unwrap().authority,
            "10.0.0.1:3128"
        );
        assert_eq!(
            "proxy.example:8080/".parse::<Proxy>().unwrap().authority,
            "proxy.example:8080"
        );
        assert!("https://p:1".parse::<Proxy>().is_err());
        assert!("http://p".parse::<Proxy>().is_err());
        assert_eq!(
            target(Some("ocsp.msocsp.com"), "203.0.113.1:80".parse().unwrap()),
            "ocsp.msocsp.com:80"
        );
        assert_eq!(
            target(None, "[2001:db8::1]:443".parse().unwrap()),
            "[2001:db8::1]:443"
        );
    }
}
