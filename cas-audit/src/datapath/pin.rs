//! Pinned datapath state: the maps and the program links under a directory
//! of a BPF filesystem, so that the kernel keeps counting while the agent is
//! down (restart, upgrade, even SIGKILL) and a restarted agent takes over
//! without a gap.
//!
//! ```text
//! DIR/layout-v4-k40-s128-e80-n176-r32-v8-c18   layout marker (a directory:
//!                                              bpffs holds no regular files)
//! DIR/maps/CAS_*                          the data maps
//! DIR/links/egress-IFINDEX-IF             the TCX egress link
//! DIR/links/ingress-IFINDEX-IF            the TCX or XDP ingress link
//! ```
//!
//! bpffs reserves names with dots (`EPERM`), so a dot in an interface name
//! (a VLAN such as `eth1.100`) is written `%2e`.
//!
//! The maps are the state: a restarted agent reads the pinned tries and
//! port bitmaps and takes them over only if they hold exactly its ranges,
//! range ids and ports. The layout marker names the version and the sizes
//! of the shared types, because the kernel reopens a pinned map without
//! any check of its key or value size. Links are replaced in place with
//! `BPF_LINK_UPDATE`, so no packet passes uncounted.

use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
};

use cas_audit_common::{Counter, FlowEnded, FlowEvent, FlowKey, FlowStats, RangeStats, RangeValue};

use super::maps::PINNED_MAPS;
use crate::host::mounts::Reach;

/// Where the agent pins by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/cas-audit";

/// Version of the pinned layout: bumped whenever a shared type or a map
/// changes meaning.
pub const LAYOUT_VERSION: u32 = 4;

/// `statfs(2)` magic of a BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Errors of the pinned state.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The directory is not on a BPF filesystem.
    #[error("{0} is not on a BPF filesystem: mount one with `mount -t bpf bpf {1}`, or choose another --pin directory")]
    NotBpffs(PathBuf, PathBuf),
    /// The pinned state was written by an incompatible cas-audit.
    #[error("the pinned datapath in {dir} has {found}, this cas-audit needs {}: remove it with `cas-audit detach --pin {dir}` (its counters restart from zero)", PinDir::layout_name())]
    Layout {
        /// The pin directory.
        dir: PathBuf,
        /// What was found there.
        found: String,
    },
    /// The pinned state is incomplete (an agent died while creating it).
    #[error("the pinned state in {dir} is incomplete ({what}): remove it with `cas-audit detach --pin {dir}`")]
    Incomplete {
        /// The pin directory.
        dir: PathBuf,
        /// What is missing.
        what: String,
    },
    /// The BPF filesystem would not outlive the agent.
    #[error("pins in {dir} would not outlive cas-audit: {why}. Mount a BPF filesystem where the host sees it, outside this namespace (e.g. `mkdir -p /run/cas-audit-bpf && mount -t bpf bpf /run/cas-audit-bpf`, then `ip netns exec NS cas-audit run --pin /run/cas-audit-bpf/cas-audit ...`), or run without --pin")]
    Private {
        /// The pin directory.
        dir: PathBuf,
        /// Why not.
        why: String,
    },
    /// The pinned datapath audits other ranges or ports.
    #[error("the pinned datapath in {dir} audits other ranges or ports ({why}): restart with the set it was pinned with, or remove it with `cas-audit detach --pin {dir}` (its counters restart from zero)")]
    OtherSet {
        /// The pin directory.
        dir: PathBuf,
        /// The first difference found.
        why: String,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PinError {
    let path = path.to_path_buf();
    move |source| PinError::Io { what, path, source }
}

/// A pin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinDir {
    root: PathBuf,
}

/// What [`PinDir::prepare`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// A complete pinned datapath to take over.
    Resumed,
    /// Nothing pinned yet; `made_root`: the directory was created now.
    Fresh {
        /// Whether `prepare` created the directory.
        made_root: bool,
    },
}

/// Which hook a pinned link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LinkHook {
    /// TC egress.
    Egress,
    /// TC or XDP ingress.
    Ingress,
}

impl LinkHook {
    /// `egress` or `ingress`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkHook::Egress => "egress",
            LinkHook::Ingress => "ingress",
        }
    }
}

/// A pinned link file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PinnedLinkFile {
    /// Interface name.
    pub iface: String,
    /// Its index when the link was made.
    pub ifindex: u32,
    /// The hook.
    pub hook: LinkHook,
    /// The file.
    pub path: PathBuf,
}

impl PinDir {
    /// The directory `root` (not created yet).
    pub fn new(root: impl Into<PathBuf>) -> PinDir {
        PinDir { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where map `name` is pinned.
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    /// Where the link of `iface` (index `ifindex`) for `hook` is pinned.
    pub fn link_path(&self, iface: &str, ifindex: u32, hook: LinkHook) -> PathBuf {
        let name = iface.replace('%', "%25").replace('.', "%2e");
        self.root
            .join("links")
            .join(format!("{}-{ifindex}-{name}", hook.as_str()))
    }

    /// Name of the layout marker: the version and the sizes of the shared
    /// types.
    pub fn layout_name() -> String {
        format!(
            "layout-v{LAYOUT_VERSION}-k{}-s{}-e{}-n{}-r{}-v{}-c{}",
            size_of::<FlowKey>(),
            size_of::<FlowStats>(),
            size_of::<FlowEvent>(),
            size_of::<FlowEnded>(),
            size_of::<RangeStats>(),
            size_of::<RangeValue>(),
            Counter::COUNT,
        )
    }

    fn layouts(&self) -> Vec<String> {
        let Ok(rd) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("layout-"))
            .collect();
        v.sort();
        v
    }

    /// Whether a complete pinned datapath is there.
    pub fn exists(&self) -> bool {
        self.layouts().contains(&Self::layout_name())
    }

    /// Makes the directory ready: on a BPF filesystem that outlives the agent (mounting one at
    /// `/sys/fs/bpf` when the directory is below it and nothing is mounted
    /// there yet), with a compatible layout. [`Prepared::Resumed`] when a
    /// pinned datapath is already there. Nothing is created off a BPF
    /// filesystem: the nearest existing directory is checked first.
    ///
    /// # Errors
    /// [`PinError::Private`] for a filesystem only the agent's own mount
    /// namespace has (`ip netns exec`, a container without the host's
    /// bpffs): its pins would die with the agent.
    pub fn prepare(&self) -> Result<Prepared, PinError> {
        let default_root = Path::new("/sys/fs/bpf");
        if self.root.starts_with(default_root) && !is_bpffs(default_root) {
            if let Ok(Some(why)) = crate::host::mounts::own_namespace() {
                return Err(PinError::Private {
                    dir: self.root.clone(),
                    why: format!(
                        "{why}, where a BPF filesystem mounted on /sys/fs/bpf ends with it"
                    ),
                });
            }
            mount_bpffs(default_root)?;
        }
        let existing = self
            .root
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        if !is_bpffs(existing) {
            return Err(PinError::NotBpffs(self.root.clone(), self.root.clone()));
        }
        match crate::host::mounts::reach(existing) {
            Reach::Host => {}
            Reach::Private(why) => {
                return Err(PinError::Private {
                    dir: self.root.clone(),
                    why,
                })
            }
            Reach::Unknown(why) => log::warn!(
                "cannot tell whether the BPF filesystem of {} outlives cas-audit ({why}); its pins last as long as some mount of it does",
                self.root.display()
            ),
        }
        let made_root = !self.root.exists();
        let maps = self.root.join("maps");
        fs::create_dir_all(&maps).map_err(io_err("creating", &maps))?;
        let links = self.root.join("links");
        fs::create_dir_all(&links).map_err(io_err("creating", &links))?;
        let layouts = self.layouts();
        let want = Self::layout_name();
        if let Some(other) = layouts.iter().find(|l| **l != want) {
            return Err(PinError::Layout {
                dir: self.root.clone(),
                found: other.clone(),
            });
        }
        let pinned: Vec<&str> = PINNED_MAPS
            .iter()
            .copied()
            .filter(|n| self.map_path(n).exists())
            .collect();
        if layouts.is_empty() {
            if pinned.is_empty() {
                return Ok(Prepared::Fresh { made_root });
            }
            return Err(PinError::Incomplete {
                dir: self.root.clone(),
                what: format!("{} pinned maps but no layout marker", pinned.len()),
            });
        }
        if let Some(missing) = PINNED_MAPS.iter().find(|n| !pinned.contains(n)) {
            return Err(PinError::Incomplete {
                dir: self.root.clone(),
                what: format!("map {missing} missing"),
            });
        }
        Ok(Prepared::Resumed)
    }

    /// Marks the pinned maps complete (after they were filled): a directory
    /// without the marker is taken as incomplete.
    pub fn mark_complete(&self) -> Result<(), PinError> {
        let p = self.root.join(Self::layout_name());
        match fs::create_dir(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_err("creating", &p)(e)),
        }
    }

    /// The pinned link files.
    pub fn links(&self) -> Vec<PinnedLinkFile> {
        let Ok(rd) = fs::read_dir(self.root.join("links")) else {
            return Vec::new();
        };
        let mut out: Vec<PinnedLinkFile> = rd
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let mut parts = name.splitn(3, '-');
                let hook = match parts.next()? {
                    "egress" => LinkHook::Egress,
                    "ingress" => LinkHook::Ingress,
                    _ => return None,
                };
                let ifindex = parts.next()?.parse().ok()?;
                let iface = parts.next()?.replace("%2e", ".").replace("%25", "%");
                Some(PinnedLinkFile {
                    iface,
                    ifindex,
                    hook,
                    path: e.path(),
                })
            })
            .collect();
        out.sort();
        out
    }

    /// Removes everything pinned: links first (which detaches the programs
    /// unless a running agent still holds them), then maps and the layout
    /// marker, then the directory. Returns what was removed.
    pub fn remove(&self) -> Result<Vec<String>, PinError> {
        self.remove_keeping_root(false)
    }

    /// Undoes a fresh start that was refused: [`PinDir::remove`], keeping
    /// the directory itself unless `made_root` (the start created it).
    pub fn discard(&self, made_root: bool) {
        match self.remove_keeping_root(!made_root) {
            Ok(_) => log::info!("removed what this start pinned in {}", self.root.display()),
            Err(e) => log::warn!("removing what this start pinned: {e}"),
        }
    }

    fn remove_keeping_root(&self, keep_root: bool) -> Result<Vec<String>, PinError> {
        let mut removed = Vec::new();
        for l in self.links() {
            // Detach explicitly (BPF_LINK_DETACH): dropping the last
            // reference releases the link only later, asynchronously.
            match aya::programs::links::PinnedLink::from_pin(&l.path) {
                Ok(pinned) => {
                    let link = pinned.unpin().map_err(io_err("removing", &l.path))?;
                    if let Err(e) = aya::programs::links::Link::detach(link) {
                        log::warn!("detaching {}: {e}", l.path.display());
                    }
                }
                Err(e) => {
                    log::warn!("opening {}: {e}; removing the pin", l.path.display());
                    fs::remove_file(&l.path).map_err(io_err("removing", &l.path))?;
                }
            }
            removed.push(format!("link {} {}", l.iface, l.hook.as_str()));
        }
        for name in PINNED_MAPS {
            let p = self.map_path(name);
            match fs::remove_file(&p) {
                Ok(()) => removed.push(format!("map {name}")),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &p)(e)),
            }
        }
        let mut dirs: Vec<PathBuf> = self.layouts().iter().map(|l| self.root.join(l)).collect();
        dirs.extend([self.root.join("links"), self.root.join("maps")]);
        if !keep_root {
            dirs.push(self.root.clone());
        }
        for d in dirs {
            match fs::remove_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &d)(e)),
            }
        }
        Ok(removed)
    }
}

/// Whether `path` is on a BPF filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid path and a statfs buffer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

fn mount_bpffs(at: &Path) -> Result<(), PinError> {
    let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())
        .map_err(|e| io_err("mounting bpffs on", at)(std::io::Error::other(e)))?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io_err("mounting bpffs on", at)(
            std::io::Error::last_os_error(),
        ));
    }
    log::info!("mounted a BPF filesystem on {}", at.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_audit_common::names;

    #[test]
    fn layout_names_the_sizes() {
        assert_eq!(
            PinDir::layout_name(),
            "layout-v4-k40-s128-e80-n176-r32-v8-c18"
        );
    }

    #[test]
    fn paths() {
        let d = PinDir::new("/sys/fs/bpf/cas-audit");
        assert_eq!(
            d.link_path("eth1.100", 7, LinkHook::Ingress),
            Path::new("/sys/fs/bpf/cas-audit/links/ingress-7-eth1%2e100")
        );
        assert_eq!(
            d.map_path(names::FLOWS),
            Path::new("/sys/fs/bpf/cas-audit/maps/CAS_FLOWS")
        );
    }

    #[test]
    fn a_plain_directory_is_not_bpffs_and_nothing_is_left() {
        let d = std::env::temp_dir();
        assert!(!is_bpffs(&d));
        let root = d.join(format!("cas-audit-pin-test-{}", std::process::id()));
        let p = PinDir::new(root.join("deeper"));
        match p.prepare() {
            Err(e @ PinError::NotBpffs(..)) => assert_eq!(
                e.to_string(),
                format!(
                    "{} is not on a BPF filesystem: mount one with `mount -t bpf bpf {}`, or choose another --pin directory",
                    root.join("deeper").display(),
                    root.join("deeper").display()
                )
            ),
            other => panic!("{other:?}"),
        }
        assert!(!root.exists(), "a refused --pin created {}", root.display());
        fs::create_dir(&root).unwrap();
        let p = PinDir::new(&root);
        assert!(matches!(p.prepare(), Err(PinError::NotBpffs(..))));
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "left in {root:?}");
        fs::remove_dir(&root).unwrap();
    }
}
