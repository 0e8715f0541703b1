//! The real agent binary, run in the gateway namespace, and bounded child
//! processes.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cas_audit_tests::Topology;

/// Longest any agent run may last (its `--duration`), whatever happens to
/// the benchmark.
const AGENT_MAX_S: u64 = 300;

/// A running `cas-audit run` on the gateway's uplink (TC ingress). Stopped
/// with SIGINT on [`Agent::stop`] or drop.
pub struct Agent {
    child: Option<Child>,
    flagged: Arc<AtomicU64>,
    last: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
    stderr_tail: Arc<Mutex<Vec<String>>>,
}

/// What an agent run wrote.
#[derive(Debug, Clone, Default)]
pub struct AgentOutput {
    /// Flow records with reason "flagged".
    pub flagged: u64,
    /// The summary record.
    pub summary: serde_json::Value,
}

impl Agent {
    /// Starts `bin run --iface uplink --ingress tc --json -` in the gateway
    /// namespace and waits (at most 30 s) until it says it is auditing.
    pub fn start(topo: &Topology, bin: &Path) -> Result<Agent> {
        Agent::start_with(topo, bin, &[])
    }

    /// [`Agent::start`] with `extra` arguments for `run`.
    pub fn start_with(topo: &Topology, bin: &Path, extra: &[String]) -> Result<Agent> {
        let mut child = topo
            .command(topo.gw(), bin.to_str().context("agent path")?)
            .args(["run", "--iface", Topology::GW_UPLINK, "--ingress", "tc"])
            .args(["--json", "-", "--duration", &AGENT_MAX_S.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the agent")?;
        let flagged = Arc::new(AtomicU64::new(0));
        let last = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().context("agent stdout")?;
        let reader = {
            let (flagged, last) = (flagged.clone(), last.clone());
            thread::spawn(move || {
                // Counts flagged records in big reads; keeps the summary.
                let mut buf = vec![0u8; 1 << 16];
                let mut cur: Vec<u8> = Vec::new();
                let needle = b"\"reason\":\"flagged\"";
                while let Ok(n) = stdout.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut rest = &buf[..n];
                    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
                        cur.extend_from_slice(&rest[..i]);
                        rest = &rest[i + 1..];
                        // "reason" is the third field, well within
                        // the first 120 bytes.
                        let head = &cur[..cur.len().min(120)];
                        if head.windows(needle.len()).any(|w| w == needle) {
                            flagged.fetch_add(1, Ordering::Relaxed);
                        }
                        if cur.starts_with(b"{\"type\":\"summary\"") {
                            *last.lock().expect("lock") =
                                String::from_utf8_lossy(&cur).into_owned();
                        }
                        cur.clear();
                    }
                    cur.extend_from_slice(rest);
                }
            })
        };
        let stderr = child.stderr.take().context("agent stderr")?;
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        {
            let tail = stderr_tail.clone();
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("auditing ") {
                        let _ = ready_tx.send(());
                    }
                    let mut t = tail.lock().expect("lock");
                    t.push(line);
                    if t.len() > 20 {
                        t.remove(0);
                    }
                }
            });
        }
        let mut agent = Agent {
            child: Some(child),
            flagged,
            last,
            reader: Some(reader),
            stderr_tail,
        };
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let tail = agent.stderr_tail.lock().expect("lock").join("\n");
            agent.kill();
            bail!("the agent did not start auditing within 30 s:\n{tail}");
        }
        Ok(agent)
    }

    /// The agent's pid (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Flagged records so far.
    pub fn flagged(&self) -> u64 {
        self.flagged.load(Ordering::Relaxed)
    }

    /// SIGINT, then waits (at most 60 s) for the summary.
    pub fn stop(mut self) -> Result<AgentOutput> {
        let mut child = self.child.take().context("agent already stopped")?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = wait_deadline(&mut child, Duration::from_secs(60))?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let last = self.last.lock().expect("lock").clone();
        if !status.success() || last.is_empty() {
            let tail = self.stderr_tail.lock().expect("lock").join("\n");
            bail!("the agent ended with {status} and no summary:\n{tail}");
        }
        Ok(AgentOutput {
            flagged: self.flagged.load(Ordering::Relaxed),
            summary: serde_json::from_str(&last).context("the agent's summary")?,
        })
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            if wait_deadline(&mut c, Duration::from_secs(10)).is_err() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for `child` at most `limit`; kills it (SIGKILL) past that and fails.
pub fn wait_deadline(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            bail!("process {} did not end within {limit:?}", child.id());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to completion within `limit`; returns its standard output,
/// failing with its standard error if it fails.
pub fn output_deadline(cmd: &mut Command, limit: Duration) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let t_out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_deadline(&mut child, limit).with_context(|| format!("{cmd:?}"))?;
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    if !status.success() {
        bail!("{cmd:?} failed ({status}): {}", stderr.trim());
    }
    Ok(stdout)
}

/// CPU seconds (user + system) of process `pid`.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("/proc/PID/stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// `VmRSS` and `VmHWM` (peak) of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}
