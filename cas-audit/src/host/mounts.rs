//! Whether a BPF filesystem outlives this process: pins only keep the
//! datapath alive while some mount of their filesystem exists. A bpffs
//! mounted inside a mount namespace of the agent's own (`ip netns exec`
//! makes one, with a fresh `/sys`; so does a container without the host's
//! bpffs) goes away with that namespace when the agent exits, and the pins
//! with it. Compares the agent's mount namespace with PID 1's
//! (`/proc/self/ns/mnt` and `/proc/1/ns/mnt`, or, where PID 1's namespace
//! links are not readable, the mount ids of `/proc/self/mountinfo` and
//! `/proc/1/mountinfo`: a new mount namespace numbers its copies anew) and
//! looks for the filesystem's device in PID 1's `/proc/1/mountinfo`
//! (proc(5)).

use std::{os::unix::fs::MetadataExt, path::Path};

/// Who sees a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// PID 1 (the host, or the container's init) sees it: it outlives the agent.
    Host,
    /// Only the agent's own mount namespace has it: why.
    Private(String),
    /// Cannot tell (no access to PID 1's namespace): why.
    Unknown(String),
}

/// Whether this process's mount namespace is its own: `Ok(Some(why))` when
/// a mount made here would end with it, `Ok(None)` when PID 1 shares it.
///
/// # Errors
/// Why it cannot be told (PID 1's namespace is not readable).
pub fn own_namespace() -> Result<Option<String>, String> {
    // SAFETY: getpid cannot fail.
    if unsafe { libc::getpid() } == 1 {
        return Ok(Some(
            "cas-audit is PID 1 here (a container's init?): its mount namespace ends when it exits"
                .into(),
        ));
    }
    let same = match (
        std::fs::read_link("/proc/self/ns/mnt"),
        std::fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => {
            let read =
                |p: &str| std::fs::read_to_string(p).map_err(|e| format!("reading {p}: {e}"));
            mount_ids(&read("/proc/self/mountinfo")?) == mount_ids(&read("/proc/1/mountinfo")?)
        }
    };
    if same {
        Ok(None)
    } else {
        Ok(Some("this process runs in a mount namespace of its own (as under `ip netns exec`, which also mounts a fresh /sys)".into()))
    }
}

/// The mount ids (field 1) of a mountinfo text.
fn mount_ids(mountinfo: &str) -> std::collections::BTreeSet<&str> {
    mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// Who sees the filesystem `path` is on (a bpffs, normally).
pub fn reach(path: &Path) -> Reach {
    let why = match own_namespace() {
        Ok(None) => return Reach::Host,
        Ok(Some(why)) => why,
        Err(e) => return Reach::Unknown(e),
    };
    let dev = match std::fs::metadata(path) {
        Ok(m) => m.dev(),
        Err(e) => return Reach::Unknown(format!("{}: {e}", path.display())),
    };
    let info = match std::fs::read_to_string("/proc/1/mountinfo") {
        Ok(s) => s,
        Err(e) => return Reach::Unknown(format!("reading /proc/1/mountinfo: {e}")),
    };
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    if mountinfo_has(&info, major, minor) {
        Reach::Host
    } else {
        Reach::Private(format!(
            "{why}, and the BPF filesystem at {} is not mounted outside it",
            path.display()
        ))
    }
}

/// Whether `mountinfo` (the text of a `/proc/PID/mountinfo`) lists a bpf
/// filesystem of device `major:minor` (field 3; the type follows ` - `).
fn mountinfo_has(mountinfo: &str, major: u32, minor: u32) -> bool {
    let want = format!("{major}:{minor}");
    mountinfo.lines().any(|l| {
        let dev = l.split_whitespace().nth(2);
        let fstype = l
            .split_once(" - ")
            .and_then(|(_, rest)| rest.split_whitespace().next());
        dev == Some(want.as_str()) && fstype == Some("bpf")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_bpffs_by_its_device() {
        let info = "25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n\
                    40 25 0:35 / /sys/fs/bpf rw,nosuid shared:14 - bpf bpf rw,mode=700\n\
                    88 30 0:61 / /run/cas-bpf rw,relatime shared:40 - bpf bpf rw\n";
        assert!(mountinfo_has(info, 0, 35));
        assert!(mountinfo_has(info, 0, 61));
        // Another filesystem of that device number is not a bpffs.
        assert!(!mountinfo_has(info, 0, 23));
        assert!(!mountinfo_has(info, 0, 99));
        assert_eq!(
            mount_ids(info).into_iter().collect::<Vec<_>>(),
            ["25", "40", "88"]
        );
    }

    #[test]
    fn this_test_shares_pid_1s_namespace_or_says_why_not() {
        match own_namespace() {
            Ok(None) => assert_eq!(reach(Path::new("/")), Reach::Host),
            Ok(Some(why)) | Err(why) => assert!(!why.is_empty()),
        }
    }
}
