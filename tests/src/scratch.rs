//! Scratch places for the test suites, removed on drop even when a test
//! fails: a directory under /tmp, a BPF filesystem mounted on one.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory `/tmp/cas-audit-{area}-test-{pid}-{n}`, removed (with
/// what it holds) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates the next directory of `area` for this process.
    pub fn new(area: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = PathBuf::from(format!(
            "/tmp/cas-audit-{area}-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
        TempDir(p)
    }

    /// The path of `name` in the directory, as text (for command lines).
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("UTF-8").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A BPF filesystem mounted on a directory (created if missing), so that
/// pinning tests leave the host's /sys/fs/bpf alone (`ip netns exec`
/// would hide a mount made there anyway); unmounted and removed on drop.
pub struct Bpffs(pub PathBuf);

impl Bpffs {
    /// Mounts one on `dir`.
    pub fn mount(dir: PathBuf) -> Bpffs {
        let _ = std::fs::create_dir_all(&dir);
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mounting bpffs on {}", dir.display());
        Bpffs(dir)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}
