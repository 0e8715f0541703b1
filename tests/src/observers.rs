//! Independent observers for the namespace tests: `tshark` counting the
//! packets on an interface, `conntrack -L` telling the NAT mapping, `nft`
//! installing it. What they report is compared with the agent's records,
//! so the agent is never checked against itself. And the agent's
//! `/metrics`, scraped as Prometheus would.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::Topology;

/// How long tshark may take to start capturing.
const CAPTURE_START: Duration = Duration::from_secs(20);

/// A packet capture by `tshark` on one interface of a namespace, written
/// to a file and read back after [`Capture::stop`].
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
}

/// One captured frame: source, destination, ports, length, TCP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// IP source.
    pub src: IpAddr,
    /// IP destination.
    pub dst: IpAddr,
    /// TCP/UDP source port (0 for others).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Frame length on the wire (bytes).
    pub len: u64,
    /// tshark's TCP conversation index (`tcp.stream`): a new one for each
    /// connection, also on a reused 5-tuple; `None` for non-TCP.
    pub stream: Option<u32>,
}

impl Capture {
    /// Starts `tshark -i IFACE` in namespace `ns` with capture filter
    /// `filter` (pcap syntax) and waits until it captures.
    pub fn start(topo: &Topology, ns: &str, iface: &str, filter: &str) -> Result<Capture> {
        let file = std::env::temp_dir().join(format!(
            "cas-audit-capture-{}-{ns}-{iface}.pcapng",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&file);
        let mut child = topo
            .command(ns, "tshark")
            .args(["-n", "-q", "-i", iface, "-f", filter, "-w"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tshark")?;
        let err = child.stderr.take().context("tshark stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("Capturing on") {
                    let _ = tx.send(());
                }
            }
        });
        let deadline = Instant::now() + CAPTURE_START;
        loop {
            if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("tshark on {ns}/{iface} did not start capturing");
            }
        }
        Ok(Capture {
            child: Some(child),
            file,
        })
    }

    /// Stops the capture (SIGINT, so the file is complete) and reads every
    /// IP frame back with `tshark -r`.
    pub fn stop(mut self) -> Result<Vec<Frame>> {
        // Let the last frames reach the file.
        std::thread::sleep(Duration::from_millis(300));
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain syscall on our unreaped child.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.wait();
        }
        let out = Command::new("tshark")
            .args(["-n", "-r"])
            .arg(&self.file)
            .args(["-T", "fields", "-E", "separator=,"])
            .args([
                "-e", "ip.src", "-e", "ipv6.src", "-e", "ip.dst", "-e", "ipv6.dst",
            ])
            .args([
                "-e",
                "tcp.srcport",
                "-e",
                "udp.srcport",
                "-e",
                "tcp.dstport",
            ])
            .args(["-e", "udp.dstport", "-e", "frame.len", "-e", "tcp.stream"])
            .stdin(Stdio::null())
            .output()
            .context("running tshark -r")?;
        if !out.status.success() {
            bail!("tshark -r: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut frames = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() < 10 {
                continue;
            }
            let pick = |a: &str, b: &str| {
                if a.is_empty() {
                    b.to_string()
                } else {
                    a.to_string()
                }
            };
            let (Ok(src), Ok(dst)) = (pick(f[0], f[1]).parse(), pick(f[2], f[3]).parse()) else {
                continue;
            };
            frames.push(Frame {
                src,
                dst,
                sport: pick(f[4], f[5]).parse().unwrap_or(0),
                dport: pick(f[6], f[7]).parse().unwrap_or(0),
                len: f[8].parse().unwrap_or(0),
                stream: f[9].parse().ok(),
            });
        }
        Ok(frames)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Packets and bytes of `frames` that `f` selects.
pub fn count(frames: &[Frame], f: impl Fn(&Frame) -> bool) -> (u64, u64) {
    frames
        .iter()
        .filter(|x| f(x))
        .fold((0, 0), |(p, b), x| (p + 1, b + x.len))
}

/// A conntrack entry as `conntrack -L` prints it: the original direction's
/// and the reply direction's addresses and ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtLine {
    /// Original source, destination, source port, destination port.
    pub orig: (IpAddr, IpAddr, u16, u16),
    /// Reply source, destination, source port, destination port.
    pub reply: (IpAddr, IpAddr, u16, u16),
}

/// `conntrack -L -f FAMILY -p PROTO` in namespace `ns`: every entry.
pub fn conntrack_list(topo: &Topology, ns: &str, v6: bool, proto: &str) -> Result<Vec<CtLine>> {
    let mut cmd = topo.command(ns, "conntrack");
    cmd.args(["-L", "-f", if v6 { "ipv6" } else { "ipv4" }, "-p", proto]);
    let text = stdout_of(cmd, "conntrack -L")?;
    Ok(text.lines().filter_map(parse_conntrack_line).collect())
}

/// Runs `cmd` (named `what` in errors); its standard output if it succeeds.
fn stdout_of(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One line of `conntrack -L` (`tcp 6 119 TIME_WAIT src=.. dst=.. sport=..
/// dport=.. src=.. dst=.. sport=.. dport=.. [ASSURED] ...`).
pub fn parse_conntrack_line(line: &str) -> Option<CtLine> {
    let vals = |k: &str| -> Vec<&str> {
        line.split_whitespace()
            .filter_map(|t| t.strip_prefix(k))
            .collect()
    };
    let (src, dst, sport, dport) = (vals("src="), vals("dst="), vals("sport="), vals("dport="));
    if src.len() < 2 || dst.len() < 2 || sport.len() < 2 || dport.len() < 2 {
        return None;
    }
    let t = |i: usize| -> Option<(IpAddr, IpAddr, u16, u16)> {
        Some((
            src[i].parse().ok()?,
            dst[i].parse().ok()?,
            sport[i].parse().ok()?,
            dport[i].parse().ok()?,
        ))
    };
    Some(CtLine {
        orig: t(0)?,
        reply: t(1)?,
    })
}

/// Loads an nftables ruleset (`nft -f -`) in namespace `ns`.
pub fn nft(topo: &Topology, ns: &str, ruleset: &str) -> Result<()> {
    use std::io::Write;
    let mut child = topo
        .command(ns, "nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(ruleset.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft -f: {}\n{ruleset}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `GET /metrics` at `addr` from inside the gateway namespace of `topo`
/// (with an `Accept` header if given): the whole HTTP answer. Connecting
/// and reading each time out after 5 s (a panic).
pub fn scrape(topo: &Topology, addr: std::net::SocketAddr, accept: Option<&'static str>) -> String {
    topo.in_ns(topo.gw(), move || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .expect("connecting to the metrics endpoint");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let accept = accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default();
        c.write_all(format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{accept}\r\n").as_bytes())
            .expect("request");
        let mut resp = String::new();
        c.read_to_string(&mut resp).expect("response");
        resp
    })
}

/// `promtool check metrics` (Debian package prometheus) on `text`: exit 0
/// and nothing to say, else a panic with what it said.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is needed");
    // promtool stops reading at the first error: its verdict is the exit
    // status, not whether the whole text was taken.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes());
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}\n{said}\non:\n{text}",
        out.status
    );
}

/// The value of the sample `series` (`name{labels}`, labels as written,
/// in order) in a scrape.
pub fn sample(body: &str, series: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{body}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn conntrack_lines_parse() {
        let l = "tcp      6 119 TIME_WAIT src=198.51.100.2 dst=13.64.196.27 sport=40001 dport=8443 src=13.64.196.27 dst=203.0.113.1 sport=8443 dport=40001 [ASSURED] mark=0 use=1";
        let c = parse_conntrack_line(l).unwrap();
        assert_eq!(c.orig.0, "198.51.100.2".parse::<IpAddr>().unwrap());
        assert_eq!(c.reply.1, "203.0.113.1".parse::<IpAddr>().unwrap());
        assert_eq!((c.orig.2, c.reply.3), (40001, 40001));
        assert_eq!(
            parse_conntrack_line("conntrack v1.4.7: 1 flow entries"),
            None
        );
    }
}
