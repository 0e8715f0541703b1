//! The raw `bpf(2)` calls aya does not make for us: reading a whole hash
//! map with `BPF_MAP_LOOKUP_BATCH`, and `doctor`'s probes (may the system
//! call be used, are programs JIT-compiled, the memlock limit).
//!
//! # Batch lookups
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

/// What happened when the `bpf` system call was tried (creating a one-entry
/// array map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpfProbe {
    /// The map was created (and closed).
    Usable,
    /// `ENOSYS`: the kernel has no BPF system call.
    NoSyscall,
    /// `EPERM` / `EACCES`: not allowed for this process.
    Denied,
    /// Another error (errno).
    Other(i32),
}

/// Soft RLIMIT_MEMLOCK; `None` when unlimited.
pub fn memlock() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0
        || r.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(r.rlim_cur)
}

/// Writes `v` at byte `off` of a `union bpf_attr` buffer (native endian).
fn put_u32(attr: &mut [u8], off: usize, v: u32) {
    attr[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

/// Writes `v` at byte `off` of a `union bpf_attr` buffer (native endian).
fn put_u64(attr: &mut [u8], off: usize, v: u64) {
    attr[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// `bpf(cmd, attr)`: the descriptor or value returned, or errno. The kernel
/// accepts an attr larger than it knows whose tail is zero.
fn sys_bpf(cmd: libc::c_long, attr: &[u8]) -> Result<libc::c_long, i32> {
    // SAFETY: `attr` is valid for its length during the call, and every
    // pointer written into it points to memory that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(rc)
    }
}

fn close(fd: libc::c_long) {
    // SAFETY: a descriptor the kernel just gave us, closed once.
    unsafe { libc::close(fd as libc::c_int) };
}

/// Tries `bpf(BPF_MAP_CREATE)` for a one-entry array map and closes it.
pub fn probe_bpf() -> BpfProbe {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    // map_type, key_size, value_size, max_entries, map_flags, inner_map_fd,
    // numa_node, map_name[16] (offset 28).
    let mut attr = [0u8; 128];
    for (i, v) in [BPF_MAP_TYPE_ARRAY, 4, 4, 1].into_iter().enumerate() {
        put_u32(&mut attr, 4 * i, v);
    }
    attr[28..38].copy_from_slice(b"cas_doctor");
    match sys_bpf(BPF_MAP_CREATE, &attr) {
        Ok(fd) => {
            close(fd);
            BpfProbe::Usable
        }
        Err(libc::ENOSYS) => BpfProbe::NoSyscall,
        Err(libc::EPERM | libc::EACCES) => BpfProbe::Denied,
        Err(e) => BpfProbe::Other(e),
    }
}

/// Loads a two-instruction socket filter (`r0 = 0; exit`), never attached,
/// and asks the kernel whether it was JIT-compiled; closes it. `None` when
/// it cannot be loaded (no privilege).
pub fn probe_jit() -> Option<bool> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
    // struct bpf_insn: code, regs, off, imm. mov64 r0, 0; exit.
    let insns: [[u8; 8]; 2] = [[0xb7, 0, 0, 0, 0, 0, 0, 0], [0x95, 0, 0, 0, 0, 0, 0, 0]];
    let license = b"GPL\0";
    // prog_type, insn_cnt, insns (u64 at 8), license (u64 at 16), ...
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_SOCKET_FILTER);
    put_u32(&mut attr, 4, insns.len() as u32);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    let fd = sys_bpf(BPF_PROG_LOAD, &attr).ok()?;
    // struct bpf_prog_info: type, id, tag[8], jited_prog_len (offset 16), ...
    let mut info = [0u8; 256];
    // bpf_fd, info_len, info (u64 at 8).
    let mut attr = [0u8; 16];
    put_u32(&mut attr, 0, fd as u32);
    put_u32(&mut attr, 4, info.len() as u32);
    put_u64(&mut attr, 8, info.as_mut_ptr() as u64);
    let rc = sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr);
    close(fd);
    rc.ok()?;
    let jited_len = u32::from_ne_bytes(info[16..20].try_into().expect("4 bytes"));
    Some(jited_len > 0)
}
