//! Facts about this machine, and the raw system calls behind them: the
//! only module that calls `bpf(2)`, `ioctl(2)`, `setrlimit(2)`, talks
//! netlink (to conntrack, and rtnetlink for the interfaces) or reads
//! `/proc` directly.

pub mod bpf;
pub mod caps;
pub mod clock;
pub mod conntrack;
pub mod fds;
pub mod fs;
pub mod links;
pub mod mounts;
pub mod netdev;

/// This machine's host name (`gethostname(2)`, the UTS namespace's), or
/// `localhost` when it cannot be read. The exporting `host` of every flow
/// record, IPFIX message and syslog message.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: a valid buffer and its length; the name is NUL-terminated
    // when it fits (HOST_NAME_MAX is 64 on Linux).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(0);
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "localhost".to_string(),
    }
}
