//! cas-audit: an eBPF auditor of traffic to and from Microsoft Defender for
//! Cloud Apps (CAS) address ranges.
//!
//! The library reads like the domain: [`addrset`] holds the published CAS
//! address ranges, [`datapath`] loads and attaches the kernel programs that
//! count traffic to them, [`flow`] judges each flow's service port,
//! [`tracker`] decides when flows are reported and [`report`] writes the
//! JSON-lines records and tables. [`run`] ties them together for
//! `cas-audit run`; the binary is a thin layer over [`cli`].

pub mod addrset;
mod batch;
pub mod check;
pub mod cli;
pub mod datapath;
pub mod diff;
pub mod doctor;
pub mod error;
pub mod events;
pub mod export;
pub mod flow;
pub mod import;
pub mod logdir;
pub mod metrics;
pub mod netdev;
pub mod pin;
pub mod ports;
pub mod report;
pub mod run;
pub mod sets;
pub mod state;
pub mod status;
pub mod summarize;
pub mod tracker;
pub mod units;

/// The eBPF object built by `build.rs` (empty when built as a stub).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cas-audit-ebpf"));
