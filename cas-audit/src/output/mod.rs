//! What leaves the agent: the JSON records (one set of serde types, written
//! by `run` and `check` and read back by `report`), readable lines and
//! tables, where records go, the log directory, the metrics endpoint, the
//! log on standard error, and the exports to other systems (IPFIX
//! collectors, SIEMs over syslog), each behind a bounded queue that never
//! blocks the agent.

pub mod bounded;
pub mod check_record;
pub mod human;
pub mod ipfix;
pub mod logdir;
pub mod logging;
pub mod metrics;
pub mod record;
pub mod sink;
pub mod syslog;
pub mod writer;

/// An output file that cannot be created.
#[derive(Debug, thiserror::Error)]
#[error("creating {}: {source}", path.display())]
pub struct OpenError {
    /// The file.
    pub path: std::path::PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}
