//! From parsed flags to the library's typed configs.

use super::{
    CheckArgs, Command, DetachArgs, DoctorArgs, ReportArgs, RunArgs, SetsCommand, StatusArgs,
};
use crate::{
    audit::RunConfig,
    cmd::{
        detach::DetachConfig,
        doctor::DoctorConfig,
        sets::{Selection, SetsConfig, ShowFormat},
        status::StatusConfig,
    },
    flow::AllowedPorts,
    output::{logdir::LogDirOptions, sink::JsonTarget, syslog::SyslogOptions},
    report::{Filters, ReportConfig, ReportFormat},
    rollout::CheckConfig,
};

/// What the binary runs: a subcommand with its config.
#[derive(Debug, Clone)]
pub enum Job {
    /// `run` (boxed: by far the largest config).
    Run(Box<RunConfig>),
    /// `check`.
    Check(CheckConfig),
    /// `detach`.
    Detach(DetachConfig),
    /// `status`.
    Status(StatusConfig),
    /// `sets ...`.
    Sets(SetsConfig),
    /// `doctor`.
    Doctor(DoctorConfig),
    /// `report`.
    Report(ReportConfig),
}

impl Command {
    /// The job these flags describe; relative times are taken back from `now`.
    pub fn job(self, now: time::OffsetDateTime) -> Job {
        match self {
            Command::Run(a) => Job::Run(Box::new(a.config())),
            Command::Check(a) => Job::Check(a.config()),
            Command::Detach(DetachArgs { pin }) => Job::Detach(DetachConfig { pin }),
            Command::Status(StatusArgs { pin, json }) => Job::Status(StatusConfig { pin, json }),
            Command::Sets(c) => Job::Sets(c.config()),
            Command::Doctor(DoctorArgs { ifaces, json }) => {
                Job::Doctor(DoctorConfig { ifaces, json })
            }
            Command::Report(a) => Job::Report(a.config(now)),
        }
    }
}

impl super::Selection {
    /// The selection these flags describe.
    pub fn config(&self) -> Selection {
        Selection {
            set: self.set.clone(),
            datacenters: self.datacenters.clone(),
            regions: self.regions.clone(),
            purposes: self.purposes.clone(),
        }
    }
}

impl SetsCommand {
    /// The `sets` job these flags describe.
    pub fn config(self) -> SetsConfig {
        match self {
            SetsCommand::List { files } => SetsConfig::List { files },
            SetsCommand::Show {
                selection,
                format,
                json,
            } => SetsConfig::Show {
                selection: selection.config(),
                format: if json { ShowFormat::Json } else { format },
            },
            SetsCommand::Diff { a, b, json } => SetsConfig::Diff { a, b, json },
            SetsCommand::Export {
                selection,
                format,
                out,
            } => SetsConfig::Export {
                selection: selection.config(),
                format,
                out,
            },
            SetsCommand::Import { inputs, name, out }
            | SetsCommand::Merge { inputs, name, out } => SetsConfig::Import { inputs, name, out },
        }
    }
}

impl CheckArgs {
    /// The check configuration these flags describe.
    pub fn config(&self) -> CheckConfig {
        CheckConfig {
            selection: self.selection.config(),
            iface: self.iface.clone(),
            timeout: self.timeout,
            concurrency: self.concurrency as usize,
            json: self.json.as_deref().map(JsonTarget::parse),
            ingress: self.ingress,
            resolver: self.resolver,
            tenant: self.tenant.clone(),
            tls: self.tls,
            ca_files: self.ca_files.clone(),
            proxy: self.proxy.clone(),
        }
    }
}

impl ReportArgs {
    /// The report configuration these flags describe, relative times taken
    /// back from `now`.
    pub fn config(&self, now: time::OffsetDateTime) -> ReportConfig {
        ReportConfig {
            paths: self.paths.clone(),
            filters: Filters {
                since: self.since.map(|t| t.resolve(now)),
                until: self.until.map(|t| t.resolve(now)),
                states: self.states.iter().map(|s| s.0).collect(),
                datacenters: self.datacenters.clone(),
                purposes: self.purposes.clone(),
                hosts: self.hosts.clone(),
            },
            top: self.top,
            format: if self.json {
                ReportFormat::Json
            } else {
                self.format
            },
        }
    }
}

impl RunArgs {
    /// The run configuration these flags describe.
    pub fn config(&self) -> RunConfig {
        RunConfig {
            ifaces: self.ifaces.clone(),
            ports: (!self.allow_ports.is_empty())
                .then(|| AllowedPorts::from_flags(&self.allow_ports)),
            selection: Selection {
                set: self.set.clone(),
                datacenters: self.datacenters.clone(),
                regions: self.regions.clone(),
                purposes: self.purposes.clone(),
            },
            json: self.json.as_deref().map(JsonTarget::parse),
            log_dir: self.log_dir.as_ref().map(|dir| LogDirOptions {
                dir: dir.clone(),
                max_size: self.log_max_size,
                max_age: self.log_max_age,
                max_total: self.log_max_total,
            }),
            output_buffer: self.output_buffer,
            duration: self.duration,
            ingress: self.ingress,
            idle_timeout: self.idle_timeout,
            max_flows: self.max_flows,
            answer_timeout: self.answer_timeout,
            ring_bytes: self.ring_size,
            learn: crate::names::LearnOptions {
                capacity: self.max_learned,
                ttl_floor: self.learn_ttl_min,
                ttl_cap: self.learn_ttl_max,
            },
            pin: self.pin.clone(),
            metrics: self.metrics.clone(),
            utc: self.utc,
            ipfix: self.ipfix,
            syslog: self.syslog.clone().map(|target| SyslogOptions {
                target,
                format: self.syslog_format,
                ended: self.syslog_ended,
            }),
            ..RunConfig::default()
        }
    }
}
