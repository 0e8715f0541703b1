//! Room kept free in a log directory for the run's last records: a file
//! of allocated blocks (`fallocate(2)`; zeros written where the file
//! system cannot allocate without writing) that the agent deletes just
//! before it writes its summary record, so that `log_records_lost`
//! reaches the directory even when the disk filled up while it ran.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

use super::LogDir;
use crate::units::size_text;

/// Name of the reserve file in the log directory (not a log file name:
/// `report` and the rotation never look at it).
pub const RESERVE_NAME: &str = ".cas-audit-reserve";

/// A reserve file holding allocated space.
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
}

impl Reserve {
    /// Allocates `bytes` in [`RESERVE_NAME`] of `dir`, reusing a reserve an
    /// agent that died left there. The file is created mode 0640 and never
    /// through a symbolic link (`O_NOFOLLOW`).
    ///
    /// # Errors
    /// The file cannot be created, is not a regular file, or the space is
    /// not there (`ENOSPC`, `EDQUOT`): then no reserve file is left.
    pub fn take(dir: &Path, bytes: u64) -> io::Result<Reserve> {
        let path = dir.join(RESERVE_NAME);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        // Blocks already allocated (a reserve left by an agent that died)
        // count: st_blocks is in 512-byte units.
        let res = if meta.blocks().saturating_mul(512) >= bytes && meta.len() >= bytes {
            Ok(())
        } else {
            allocate(&file, bytes)
        };
        if let Err(e) = res {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Reserve { path, bytes })
    }

    /// The bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Deletes the file: its space is free for the last records.
    pub fn release(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

impl LogDir {
    /// Keeps `bytes` allocated in the directory (in
    /// [`RESERVE_NAME`]) for the last records, until
    /// [`LogDir::release_reserve`]: enough for the summary record, so that
    /// its `log_records_lost` is written even when the disk filled up. A
    /// reserve that cannot be taken now (the disk is already full) is
    /// logged once and tried again at each new file and when writing works
    /// again.
    pub fn reserve(&mut self, bytes: u64) {
        self.reserve_wanted = bytes;
        self.take_reserve();
    }

    /// Frees the reserved space for the records that follow (the summary).
    pub fn release_reserve(&mut self) {
        self.reserve_wanted = 0;
        if let Some(r) = self.reserve.take() {
            log::debug!(
                "released the {} bytes kept free in {} for the last records",
                r.bytes(),
                self.opts.dir.display()
            );
            r.release();
        }
    }

    /// Bytes kept free now.
    pub fn reserved(&self) -> u64 {
        self.reserve.as_ref().map_or(0, |r| r.bytes())
    }

    pub(super) fn take_reserve(&mut self) {
        if self.reserve_wanted == 0 || self.reserve.is_some() {
            return;
        }
        match Reserve::take(&self.opts.dir, self.reserve_wanted) {
            Ok(r) => {
                if self.reserve_warned {
                    log::info!(
                        "keeping {} free in {} for the last records again",
                        size_text(r.bytes()),
                        self.opts.dir.display()
                    );
                    self.reserve_warned = false;
                }
                self.reserve = Some(r);
            }
            Err(e) if !self.reserve_warned => {
                log::warn!(
                    "cannot keep {} free in {} for the last records ({e}): if the disk fills up, the summary record and its log_records_lost may not be written there; tried again at the next file",
                    size_text(self.reserve_wanted),
                    self.opts.dir.display()
                );
                self.reserve_warned = true;
            }
            Err(_) => {}
        }
    }
}

/// Allocates the first `bytes` of `file`.
fn allocate(file: &File, bytes: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(bytes).map_err(io::Error::other)?;
    // SAFETY: an open file descriptor; mode 0 allocates and extends.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(e);
    }
    // No fallocate here (some network file systems): write the zeros.
    let mut f = file;
    let zeros = vec![0u8; 64 << 10];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_data()
}
