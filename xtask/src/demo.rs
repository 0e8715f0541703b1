//! `cargo xtask demo`: the agent on a throwaway gateway, against scripted
//! allowed and disallowed traffic to simulated CAS endpoints.
//!
//! Topology (all in network namespaces created here and removed on exit):
//! a LAN host (198.51.100.2) routes through a gateway whose `uplink` faces a
//! "cloud" namespace that owns real CAS addresses on its loopback. The
//! gateway does NAT, as most do (nftables: masquerade behind 203.0.113.1,
//! and a port forward of 203.0.113.1:11344 to the LAN's DLP stunnel). The
//! agent runs on the gateway's uplink, as it would on a real gateway, and
//! names the inside host of every flow (connection tracking).

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr},
    path::Path,
    process::{Child, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use cas_audit_tests::{
    observers::nft,
    traffic::{tcp_exchange, udp_send, TcpServer, UdpSink},
    Topology,
};

/// US1 app connector and DLP source.
const APP_CONNECTOR: &str = "13.64.196.27";
/// US1 access and session controls.
const SESSION_PROXY: &str = "40.81.63.1";
/// Portal and SIEM agent, several data centers.
const PORTAL: &str = "52.183.75.62";
/// Mail range (no data center).
const MAIL: &str = "65.55.234.193";

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("address"), port)
}

/// Stops the agent (SIGINT) if the demo fails half-way.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One scripted piece of traffic.
type Step<'a> = Box<dyn Fn() -> Result<()> + 'a>;

fn step(what: &str) {
    eprintln!("\x1b[1m==> {what}\x1b[0m");
}

/// Runs the demo with the agent binary `bin` for `seconds`.
pub fn run(bin: &Path, seconds: u64) -> Result<()> {
    if !cas_audit_tests::is_root() {
        bail!("the demo creates network namespaces and loads BPF programs: run it as root");
    }
    cas_audit_tests::cleanup_stale();
    let cloud: Vec<IpAddr> = [APP_CONNECTOR, SESSION_PROXY, PORTAL, MAIL]
        .iter()
        .map(|a| a.parse().expect("address"))
        .collect();
    step("creating namespaces: lan (198.51.100.2) -> gw (uplink 203.0.113.1) -> cloud (simulated CAS endpoints)");
    let topo = Topology::new(&cloud)?;
    step("the gateway masquerades the LAN behind 203.0.113.1 and forwards 203.0.113.1:11344 to the LAN stunnel 198.51.100.2:11344 (nftables)");
    nft(
        &topo,
        topo.gw(),
        "table ip nat {
 chain pre { type nat hook prerouting priority dstnat; iifname \"uplink\" tcp dport 11344 dnat to 198.51.100.2:11344; }
 chain post { type nat hook postrouting priority srcnat; oifname \"uplink\" ip saddr 198.51.100.0/24 masquerade; }
}
",
    )?;
    let json = std::env::temp_dir().join(format!("cas-audit-demo-{}.jsonl", std::process::id()));

    step(&format!(
        "starting cas-audit on the gateway's uplink for {seconds} s (JSON lines to {})",
        json.display()
    ));
    let mut child = topo
        .command(topo.gw(), bin.to_str().context("binary path")?)
        .args(["run", "--iface", Topology::GW_UPLINK, "--ingress", "tc"])
        .arg("--duration")
        .arg(seconds.to_string())
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the agent")?;
    let stderr = child.stderr.take().context("agent stderr")?;
    let agent = Agent(child);
    let (ready_tx, ready_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("auditing ") {
                let _ = ready_tx.send(());
            }
            eprintln!("{line}");
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .context("the agent did not attach within 20 s")?;
    let started = Instant::now();

    // Listeners on the simulated CAS side and on the LAN.
    let servers = [
        TcpServer::start(&topo, topo.cloud(), sa(PORTAL, 443))?,
        TcpServer::start(&topo, topo.cloud(), sa(SESSION_PROXY, 443))?,
        TcpServer::start(&topo, topo.cloud(), sa(SESSION_PROXY, 8080))?,
        TcpServer::start(&topo, topo.lan(), sa("198.51.100.2", 11344))?,
        TcpServer::start(&topo, topo.lan(), sa("198.51.100.2", 25))?,
    ];
    let sink = UdpSink::start(&topo, topo.cloud(), sa(APP_CONNECTOR, 8443))?;
    let pause = Duration::from_millis((seconds * 1000 / 10).clamp(200, 1000));

    let script: Vec<(&str, Step)> = vec![
        (
            "LAN -> portal 52.183.75.62:443 (TCP, allowed)",
            Box::new(|| {
                tcp_exchange(
                    &topo,
                    topo.lan(),
                    None,
                    sa(PORTAL, 443),
                    b"GET / HTTP/1.1\r\n\r\n",
                )
                .map(drop)
            }),
        ),
        (
            "LAN -> session proxy 40.81.63.1:443 (TCP, allowed)",
            Box::new(|| {
                tcp_exchange(
                    &topo,
                    topo.lan(),
                    None,
                    sa(SESSION_PROXY, 443),
                    &[0x16; 600],
                )
                .map(drop)
            }),
        ),
        (
            "LAN -> app connector 13.64.196.27:8443, 5 UDP datagrams (port not allowed)",
            Box::new(|| udp_send(&topo, topo.lan(), None, sa(APP_CONNECTOR, 8443), 5, 200)),
        ),
        (
            "LAN -> session proxy 40.81.63.1:8080 (TCP, port not allowed)",
            Box::new(|| {
                tcp_exchange(&topo, topo.lan(), None, sa(SESSION_PROXY, 8080), b"CONNECT").map(drop)
            }),
        ),
        (
            "CAS 13.64.196.27 -> gateway 203.0.113.1:11344, forwarded to the LAN stunnel 198.51.100.2:11344 (DLP, allowed)",
            Box::new(|| {
                tcp_exchange(
                    &topo,
                    topo.cloud(),
                    Some(sa(APP_CONNECTOR, 0)),
                    sa("203.0.113.1", 11344),
                    b"ICAP",
                )
                .map(drop)
            }),
        ),
        (
            "CAS mail range 65.55.234.193 -> LAN 198.51.100.2:25 (SMTP, not an allowed port)",
            Box::new(|| {
                tcp_exchange(
                    &topo,
                    topo.cloud(),
                    Some(sa(MAIL, 0)),
                    sa("198.51.100.2", 25),
                    b"EHLO",
                )
                .map(drop)
            }),
        ),
        (
            "LAN -> 203.0.113.2:443, not a CAS address (ignored)",
            Box::new(|| udp_send(&topo, topo.lan(), None, sa("203.0.113.2", 443), 3, 100)),
        ),
    ];
    for (what, action) in &script {
        step(what);
        action().with_context(|| format!("demo traffic: {what}"))?;
        thread::sleep(pause);
    }
    drop(script);
    drop(sink);
    drop(servers);

    // The agent stops by itself at the end of --duration and prints its summary.
    let mut agent = agent;
    let child = &mut agent.0;
    let remaining = Duration::from_secs(seconds + 15).saturating_sub(started.elapsed());
    let deadline = Instant::now() + remaining;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the agent did not stop at the end of --duration");
        }
        thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        bail!("the agent exited with {status}");
    }
    let records = std::fs::read_to_string(&json).unwrap_or_default();
    let n = records.lines().count();
    step(&format!(
        "{n} JSON records in {}; the flow through the port forward, then the summary:",
        json.display()
    ));
    if let Some(fwd) = records.lines().rfind(|l| l.contains("\"nat\":\"dnat\"")) {
        println!("{fwd}");
    }
    if let Some(last) = records.lines().last() {
        println!("{last}");
    }
    drop(topo);
    step("namespaces removed");
    Ok(())
}
