//! A process under test (normally the agent): started inside a namespace,
//! its stdout collected, its stderr watched for the ready line
//! (`auditing ...`), stopped with a signal, killed on drop. Shared by the
//! privileged test suites.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest wait for the agent's `auditing ` line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for the agent to exit after a signal (or by itself).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between the last packet and the stop signal.
pub const SETTLE: Duration = Duration::from_millis(500);

/// The agent binary: `$CAS_AUDIT_BIN`, else `<workspace>/target/debug/cas-audit`;
/// a panic says how to build it when it is missing.
pub fn agent_bin() -> PathBuf {
    let path = match std::env::var_os("CAS_AUDIT_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/cas-audit"),
    };
    assert!(
        path.is_file(),
        "cas-audit binary not found at {}: build it with \
         `CAS_AUDIT_EBPF=require cargo build -p cas-audit` (from the workspace root), \
         or point CAS_AUDIT_BIN at it",
        path.display()
    );
    path
}

/// `cas-audit ARGS` here, in the test's own namespace (commands that
/// attach nothing: `sets`, `report`).
pub fn agent_here(args: &[&str]) -> Command {
    let mut c = Command::new(agent_bin());
    c.args(args);
    c
}

/// `cas-audit ARGS` in namespace `ns` of `topo` (`run`, `check`, ...).
pub fn agent_in(topo: &crate::Topology, ns: &str, args: &[&str]) -> Command {
    let mut c = topo.command(ns, &agent_bin_str());
    c.args(args);
    c
}

/// [`agent_bin`] as a string (for [`crate::Topology::command`]).
pub fn agent_bin_str() -> String {
    agent_bin()
        .to_str()
        .expect("the binary path is not UTF-8")
        .to_owned()
}

/// A process started inside a namespace (normally the agent), with its
/// stdout collected and its stderr watched for the ready line. Killed with
/// SIGKILL on drop if still running.
pub struct Process {
    child: Option<Child>,
    pid: libc::pid_t,
    started: Instant,
    stdout: Option<JoinHandle<String>>,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
    ready: mpsc::Receiver<()>,
}

/// What a finished process left behind.
pub struct Exited {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything written to standard output.
    pub stdout: String,
    /// Everything written to standard error.
    pub stderr: String,
    /// From spawn to exit.
    pub elapsed: Duration,
}

impl Process {
    /// Starts `cmd` (with `RUST_LOG=info`, stdin closed, stdout and stderr
    /// collected) without waiting for it to be ready.
    pub fn spawn(mut cmd: Command) -> Process {
        // The ready line is logged at info level; do not let the caller's
        // RUST_LOG hide it.
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = format!("{cmd:?}");
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        let pid = child.id() as libc::pid_t;
        let mut out = child.stdout.take().expect("piped stdout");
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, ready) = mpsc::channel();
        let stderr_thread = {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    let is_ready = line.contains("auditing ");
                    {
                        let mut s = stderr.lock().unwrap_or_else(|e| e.into_inner());
                        s.push_str(&line);
                        s.push('\n');
                    }
                    if is_ready {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
            })
        };
        Process {
            child: Some(child),
            pid,
            started,
            stdout: Some(stdout),
            stderr,
            stderr_thread: Some(stderr_thread),
            ready,
        }
    }

    /// Standard error so far.
    pub fn stderr_now(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits (at most [`READY_TIMEOUT`]) for the `auditing ` line.
    pub fn wait_ready(&self) {
        match self.ready.recv_timeout(READY_TIMEOUT) {
            Ok(()) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "agent not ready after {READY_TIMEOUT:?}; stderr so far:\n{}",
                self.stderr_now()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stderr closed without the ready line: it exited.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "agent exited before it was ready; stderr:\n{}",
                    self.stderr_now()
                )
            }
        }
    }

    /// Sends `sig` to the agent and waits for it to exit.
    pub fn stop_with(self, sig: libc::c_int) -> Exited {
        // SAFETY: plain syscall; the pid is our unreaped child (`ip netns
        // exec` execs the agent in place), so it cannot have been recycled.
        let rc = unsafe { libc::kill(self.pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({}, {sig}): {}",
            self.pid,
            std::io::Error::last_os_error()
        );
        self.wait(EXIT_TIMEOUT)
    }

    /// SIGTERM, after letting the last packets settle.
    pub fn stop(self) -> Exited {
        std::thread::sleep(SETTLE);
        self.stop_with(libc::SIGTERM)
    }

    /// Waits at most `timeout` for the process to exit by itself; on timeout
    /// it is killed and the test fails.
    pub fn wait(mut self, timeout: Duration) -> Exited {
        let mut child = self.child.take().expect("child");
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "process {} did not exit within {timeout:?}; killed. stderr:\n{}",
                        self.pid,
                        self.stderr_now()
                    );
                }
                Err(e) => panic!("waiting for {}: {e}", self.pid),
            }
        };
        let elapsed = self.started.elapsed();
        let stdout = self
            .stdout
            .take()
            .expect("stdout reader")
            .join()
            .expect("stdout reader panicked");
        if let Some(h) = self.stderr_thread.take() {
            let _ = h.join();
        }
        Exited {
            status,
            stdout,
            stderr: self.stderr_now(),
            elapsed,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Process {
    /// The process id.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends `sig` without waiting.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain syscall on our unreaped child.
        let rc = unsafe { libc::kill(self.pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({}, {sig}): {}",
            self.pid,
            std::io::Error::last_os_error()
        );
    }

    /// Waits (at most `timeout`) until stderr contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr_now().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log after {timeout:?}:\n{}",
                self.stderr_now()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Exited {
    /// The exit code, or minus the signal that ended the process.
    pub fn code_or_signal(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        self.status
            .code()
            .unwrap_or_else(|| -self.status.signal().unwrap_or(0))
    }

    /// Asserts the process exited with status 0 (its standard error in
    /// the message).
    #[track_caller]
    pub fn assert_ok(&self) {
        assert_eq!(
            self.status.code(),
            Some(0),
            "exit status {:?}; stderr:\n{}",
            self.status,
            self.stderr
        );
    }

    /// Every non-empty line of standard output, parsed as JSON (a line
    /// that is not JSON fails the test).
    #[track_caller]
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The flow records (in order) and the summary of an agent `run` that
    /// exited 0; any other record type fails the test.
    #[track_caller]
    pub fn flows_and_summary(&self) -> (Vec<serde_json::Value>, serde_json::Value) {
        self.assert_ok();
        let mut flows = Vec::new();
        let mut summary = None;
        for v in self.json_lines() {
            match v["type"].as_str() {
                Some("flow") => flows.push(v),
                Some("summary") => summary = Some(v),
                other => panic!("unexpected record type {other:?}: {v}"),
            }
        }
        (flows, summary.expect("a summary record"))
    }
}
