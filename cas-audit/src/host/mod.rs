//! Facts about this machine, and the raw system calls behind them: the
//! only module that calls `bpf(2)`, `ioctl(2)`, talks netlink to conntrack or
//! reads `/proc` directly.

pub mod bpf;
pub mod caps;
pub mod clock;
pub mod conntrack;
pub mod fs;
pub mod mounts;
pub mod netdev;
