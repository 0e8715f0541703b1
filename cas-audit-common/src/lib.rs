//! The contract between the cas-audit kernel programs (`cas-audit-ebpf`)
//! and the agent (`cas-audit`).
//!
//! - [`names`]: map and program names, the sizes compiled into the object;
//! - [`wire`]: the types that cross the boundary (map keys and values,
//!   ring-buffer events) and the bitmap encodings, re-exported here;
//! - [`counter`]: the kernel's global counters and the one name of each;
//! - [`rules`]: every rule both sides apply (history letters, a new flow's
//!   state, the service port and verdict, a TCP flow's end).
//!
//! The crate is `no_std` so the kernel programs can use it; the `user`
//! feature adds [`aya::Pod`] and serde for the agent.
#![no_std]
#![warn(missing_docs)]

pub mod counter;
pub mod names;
pub mod rules;
pub mod wire;

pub use counter::{Counter, Counters};
pub use names::sizes;
pub use rules::{history, service_port, Verdict};
pub use wire::*;
