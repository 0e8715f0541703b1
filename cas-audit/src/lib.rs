//! cas-audit: an eBPF auditor of traffic to and from Microsoft Defender for
//! Cloud Apps (CAS) address ranges.
//!
//! The library is built in layers; a module only uses the ones below it:
//!
//! | layer | modules | what |
//! |---|---|---|
//! | commands | [`cli`], [`cmd`] | clap (only in `cli`), one function per subcommand |
//! | features | [`audit`], [`rollout`], [`doctor`], [`report`] | `run`'s audit loop, `check`'s probes, `doctor`'s checks, `report`'s summaries |
//! | errors | [`error`] | the error every command returns, and its exit code |
//! | output | [`output`] | the JSON records (serde types, written and read back), readable lines and tables, sinks, the log directory, metrics |
//! | kernel | [`datapath`] | loading, attaching, pinning, every map read and write, the event ring |
//! | domain | [`flow`], [`addrset`], [`names`] | judging a flow (state, evidence, when it is reported, ports); the address sets, their files, import, export, diff; names learned from DNS answers and ClientHellos |
//! | machine | [`host`], [`units`], [`text`] | raw syscalls and facts about this machine; sizes and durations; text from outside made safe for each medium |
//!
//! Rules the kernel programs apply too (verdict, history, a flow's end,
//! counter names) come from `cas_audit_common`.
#![warn(missing_docs)]

pub mod addrset;
pub mod audit;
pub mod cli;
pub mod cmd;
pub mod datapath;
pub mod doctor;
pub mod error;
pub mod flow;
pub mod host;
pub mod names;
pub mod output;
pub mod report;
pub mod rollout;
pub mod text;
pub mod units;

/// The eBPF object built by `build.rs` (empty when built as a stub).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cas-audit-ebpf"));
