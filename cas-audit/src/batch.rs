//! Reading a whole BPF hash map with `BPF_MAP_LOOKUP_BATCH`.
//!
//! aya 0.14 reads maps one key at a time: two syscalls per entry, about
//! 190 ms for a full 65,536-flow table on the 2-core test VM. The batch
//! command copies thousands of entries per syscall. Kernels before 5.6 (or
//! maps without batch support) answer `EINVAL`/`ENOTSUPP`; the caller then
//! falls back to the per-key walk.

use std::{
    io,
    mem::{size_of, MaybeUninit},
    os::fd::{AsRawFd, BorrowedFd},
};

/// `BPF_MAP_LOOKUP_BATCH` from `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Kernel's `ENOTSUPP` (not in libc: an internal errno that leaks to users).
const ENOTSUPP: i32 = 524;
/// Entries asked for per syscall.
const CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Why a batch read did not happen.
#[derive(Debug)]
pub enum BatchError {
    /// The kernel or map does not support batch lookups.
    Unsupported,
    /// Another failure.
    Io(io::Error),
}

/// Reads every entry of the hash map behind `fd`, whose keys are `K` and
/// values `V` (plain old data of exactly the map's key and value sizes).
///
/// Entries that change during the read may be seen in either state; an
/// entry deleted or inserted meanwhile may be missed, as with any walk.
pub fn lookup_all<K: Copy, V: Copy>(fd: BorrowedFd<'_>) -> Result<Vec<(K, V)>, BatchError> {
    let mut out = Vec::new();
    let mut chunk = CHUNK;
    // The hash map's batch token is a bucket index (u32); keep room to spare.
    let mut token_in = [0u8; 16];
    let mut token_out = [0u8; 16];
    let mut first = true;
    loop {
        let mut keys: Vec<MaybeUninit<K>> = Vec::with_capacity(chunk);
        let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(chunk);
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                token_in.as_mut_ptr() as u64
            },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the attribute points at buffers of `chunk` keys and values
        // and at 16-byte tokens, all alive for the call; the kernel writes at
        // most `count` entries and reports how many it wrote in `count`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
        let got = attr.count as usize;
        if got > chunk {
            return Err(BatchError::Io(io::Error::other(
                "the kernel returned more entries than asked for",
            )));
        }
        match err.as_ref().and_then(io::Error::raw_os_error) {
            None | Some(libc::ENOENT) => {
                // SAFETY: the kernel initialised the first `got` entries.
                unsafe {
                    keys.set_len(got);
                    values.set_len(got);
                }
                out.extend(
                    keys.into_iter()
                        .zip(values)
                        // SAFETY: as above.
                        .map(|(k, v)| unsafe { (k.assume_init(), v.assume_init()) }),
                );
                if err.is_some() {
                    // ENOENT: the walk is complete.
                    return Ok(out);
                }
                token_in = token_out;
                first = false;
            }
            // A bucket holds more entries than the chunk: retry larger.
            Some(libc::ENOSPC) if chunk < 1 << 20 => chunk *= 4,
            Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(ENOTSUPP) if first => {
                return Err(BatchError::Unsupported)
            }
            _ => return Err(BatchError::Io(err.expect("an error"))),
        }
    }
}
