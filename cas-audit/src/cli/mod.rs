//! Command-line interface (clap derive). Flags and exit codes are a public
//! contract: see the README.

//!
//! The only module that knows clap: [`args`] turns the parsed flags into
//! the library's typed configs, [`values`] holds the value parsers.

pub mod args;
pub mod values;

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

use self::values::{
    choice, datacenter, duration, host, ipfix_target, listen_addr, port, purpose, region,
    ring_size, size, state, top,
};
use crate::{
    addrset::{export::ExportFormat, DataCenter, Purpose, Region},
    cmd::sets::ShowFormat,
    datapath::{pin::DEFAULT_PIN_DIR, IngressMode},
    output::{logging::LogFormat, metrics::ListenAddr, syslog::Format as SyslogFormat},
    report::{ReportFormat, StateFilter, TimeSpec},
};

/// Values of `--ingress`.
const INGRESS: &[&str] = &["auto", "xdp", "tc"];
/// Values of `sets export --format`.
const EXPORT_FORMATS: &[&str] = &["nft", "iptables", "ipset", "json"];
/// Values of `sets show --format`.
const SHOW_FORMATS: &[&str] = &["table", "json", "csv"];
/// Values of `report --format`.
const REPORT_FORMATS: &[&str] = &["table", "json"];
/// Values of `run --syslog-format`.
const SYSLOG_FORMATS: &[&str] = &["rfc5424", "cef"];
/// Values of `--log-format`.
const LOG_FORMATS: &[&str] = &["auto", "text", "journal"];

/// Audits traffic to and from Microsoft Defender for Cloud Apps (CAS) address ranges with eBPF.
#[derive(Debug, Parser)]
#[command(name = "cas-audit", version, propagate_version = true)]
pub struct Cli {
    /// More log output: -v the agent's own decisions (and the kernel
    /// programs' log), -vv also the libraries' (aya's loader, ...), -vvv
    /// everything. RUST_LOG replaces this.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log lines on standard error: text (a UTC timestamp and the level),
    /// journal (a syslog priority prefix such as <3>, no timestamp), or
    /// auto: journal when standard error is the journal (JOURNAL_STREAM).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "auto", value_parser = choice::<LogFormat>(LOG_FORMATS))]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The command tree, each (sub)command's long help (`--help`, the man
/// pages) ending with the exit codes it returns
/// ([`crate::error::exit_codes`]).
pub fn command() -> clap::Command {
    with_exit_codes(<Cli as clap::CommandFactory>::command(), "")
}

fn with_exit_codes(cmd: clap::Command, path: &str) -> clap::Command {
    let mut cmd = cmd.after_long_help(exit_status_text(path));
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        let sub = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        cmd = cmd.mut_subcommand(&name, |s| with_exit_codes(s, &sub));
    }
    cmd
}

/// The exit codes of `command` (`""`: every command), as `--help` shows them.
pub fn exit_status_text(command: &str) -> String {
    let mut t = String::from("Exit status:\n");
    for (code, meaning) in crate::error::exit_codes(command) {
        t.push_str(&format!("  {code}  {meaning}\n"));
    }
    t
}

/// Parses the command line; a usage error prints clap's message and exits
/// with 2.
pub fn parse() -> Cli {
    let m = command().get_matches();
    <Cli as clap::FromArgMatches>::from_arg_matches(&m).unwrap_or_else(|e| e.exit())
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to interfaces and report CAS flows live, as JSON lines and readable lines.
    Run(Box<RunArgs>),
    /// Firewall rollout check: connect to every required outbound CAS
    /// destination and show what happened to each attempt.
    Check(CheckArgs),
    /// Remove a datapath pinned by `run --pin`: detach its programs and
    /// delete its maps (their counters are lost).
    Detach(DetachArgs),
    /// Show a pinned datapath: links, programs, ranges, flow-table fill,
    /// counters since it was pinned.
    Status(StatusArgs),
    /// Address sets: list, show, diff, export as firewall rules, import a published page.
    #[command(subcommand)]
    Sets(SetsCommand),
    /// Check whether this machine can run cas-audit (only reads).
    ///
    /// One line per check, ok, warn or fail, with a hint when not ok: kernel
    /// version (TCX from 6.6), bpf system call, JIT, BTF, bpffs,
    /// capabilities (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN), memlock, and per
    /// interface its state, driver, and the ingress hook and TCX the agent
    /// would use. Nothing is attached.
    Doctor(DoctorArgs),
    /// Summarise saved records (`run --json FILE`, `run --log-dir DIR`).
    ///
    /// Flows, packets and bytes by data center, purpose, state, verdict,
    /// local host and local host + service port, the time they cover, and
    /// the destinations that were blocked. A DIR stands for its *.jsonl
    /// and *.jsonl.gz files in name order; - is standard input. Memory stays
    /// bounded whatever the size of the logs.
    Report(ReportArgs),
}

/// `cas-audit doctor` flags.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Interface to check (repeatable, or a comma list; default: every
    /// interface but loopback).
    #[arg(long = "iface", value_name = "IF", value_delimiter = ',')]
    pub ifaces: Vec<String>,
    /// Print one JSON document instead of the list.
    #[arg(long)]
    pub json: bool,
}

/// Selection of an address set and a part of it.
#[derive(Debug, Args)]
pub struct Selection {
    /// Built-in set name (see `sets list`) or set file; default: the built-in default set.
    #[arg(long = "set", value_name = "NAME|FILE")]
    pub set: Option<String>,
    /// Only these data centers (repeatable, or a comma list); entries without a data center are kept.
    #[arg(long = "datacenter", value_name = "DC", num_args = 1.., value_delimiter = ',', value_parser = datacenter)]
    pub datacenters: Vec<DataCenter>,
    /// Only these Azure regions (repeatable, or a comma list: westeurope, "West Europe", ...): an entry's
    /// own region, else its data center's; entries placed nowhere (mail) are kept.
    #[arg(long = "region", value_name = "REGION", num_args = 1.., value_delimiter = ',', value_parser = region)]
    pub regions: Vec<Region>,
    /// Only these purposes (repeatable, or a comma list): portal, access-session-controls,
    /// siem-agent, app-connector, dlp, mail, log-collector, auth-gateway, unknown.
    #[arg(long = "purpose", value_name = "P", num_args = 1.., value_delimiter = ',', value_parser = purpose)]
    pub purposes: Vec<Purpose>,
}

/// `cas-audit sets` subcommands.
#[derive(Debug, Subcommand)]
pub enum SetsCommand {
    /// Built-in sets and the given set files, with counts.
    List {
        /// Set files to list too.
        files: Vec<String>,
    },
    /// The entries and DNS names of a set.
    Show {
        /// The set and the part of it.
        #[command(flatten)]
        selection: Selection,
        /// Output format (--json is --format json).
        #[arg(long, default_value = "table", value_parser = choice::<ShowFormat>(SHOW_FORMATS))]
        format: ShowFormat,
        /// The selection as a set file (JSON) instead of a table.
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
    /// Added and removed prefixes per data center and purpose from A to B.
    Diff {
        /// The old set (name or file).
        a: String,
        /// The new set (name or file).
        b: String,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The set as a firewall allowlist.
    Export {
        /// The set and the part of it.
        #[command(flatten)]
        selection: Selection,
        /// nft (nftables), iptables (iptables-restore), ipset (ipset restore) or json.
        #[arg(long, value_parser = choice::<ExportFormat>(EXPORT_FORMATS))]
        format: ExportFormat,
        /// Write to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Import network-requirements pages (Markdown, as published), Azure Service Tags
    /// files (JSON, the weekly download or the REST form) and sets into one set file.
    ///
    /// The format of each input is recognised by its content. Several inputs are
    /// merged, as `sets merge` does. The report (standard error) says what each
    /// input gave, line by line for a page.
    Import {
        /// Pages, Service Tags files, set files or built-in set names.
        #[arg(value_name = "FILE", required = true)]
        inputs: Vec<String>,
        /// Name of the set (default: cas-YYYY-MM from a page's ms.date,
        /// tags-<cloud>-<date> for Service Tags, the names joined by + for several).
        #[arg(long)]
        name: Option<String>,
        /// Write the set file to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Merge sets, pages and Service Tags files into one set: each prefix keeps the
    /// union of its tags and the list of the sources that give it.
    Merge {
        /// Two or more set files, built-in set names, pages or Service Tags files.
        #[arg(value_name = "SET", num_args = 2.., required = true)]
        inputs: Vec<String>,
        /// Name of the merged set (default: the names joined by +).
        #[arg(long)]
        name: Option<String>,
        /// Write the set file to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// `cas-audit run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Interface to audit (repeatable, or a comma list). Egress and ingress are both watched.
    #[arg(
        long = "iface",
        value_name = "IF",
        required = true,
        value_delimiter = ','
    )]
    pub ifaces: Vec<String>,
    /// Address set to audit against: a built-in name (see `sets list`) or a set file.
    /// With it, each range's purposes decide its allowed ports (unless --allow-port).
    #[arg(long = "set", value_name = "NAME|FILE")]
    pub set: Option<String>,
    /// Only audit ranges of these purposes (repeatable, or a comma list).
    #[arg(long = "purpose", value_name = "P", num_args = 1.., value_delimiter = ',', value_parser = purpose)]
    pub purposes: Vec<Purpose>,
    /// Allowed service port for every range (repeatable, or a comma list: 443,80; replaces
    /// the default 443, 80, 11344 and, with --set, the set's per-purpose ports).
    #[arg(long = "allow-port", value_name = "PORT", num_args = 1.., value_delimiter = ',', value_parser = port)]
    pub allow_ports: Vec<u16>,
    /// Only audit ranges of this data center (repeatable, or a comma list): US1, US2, US3,
    /// EU1, EU2, "Gov US1" (or gov-us1), GCC, "GCC High". Ranges without a data center
    /// (mail) are always kept.
    #[arg(long = "datacenter", value_name = "DC", num_args = 1.., value_delimiter = ',', value_parser = datacenter)]
    pub datacenters: Vec<DataCenter>,
    /// Only audit ranges in this Azure region (repeatable, or a comma list: westeurope,
    /// "West Europe", ...): a range's own region, else its data center's. Ranges placed
    /// nowhere (mail) are kept.
    #[arg(long = "region", value_name = "REGION", num_args = 1.., value_delimiter = ',', value_parser = region)]
    pub regions: Vec<Region>,
    /// JSON lines on standard output (--json or --json -: then no readable lines), or
    /// written to the file PATH (created or truncated).
    #[arg(long, value_name = "PATH|-", num_args = 0..=1, default_missing_value = "-")]
    pub json: Option<String>,
    /// Also write the JSON lines into rotated files cas-audit-YYYYMMDDTHHMMSSZ.jsonl
    /// in DIR (created with mode 0750 if missing).
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Start a new log file before one would exceed BYTES (K, M, G, T: powers of 1024).
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = size, requires = "log_dir")]
    pub log_max_size: u64,
    /// Start a new log file once one is DURATION old (s, m, h, d).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = duration, requires = "log_dir")]
    pub log_max_age: Duration,
    /// Delete the oldest log files so that all of them stay within BYTES.
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = size, requires = "log_dir")]
    pub log_max_total: u64,
    /// Memory each output (the JSON lines, the readable lines, the log
    /// directory) may hold while its reader or disk is behind; what does not
    /// fit is dropped and counted (the summary's sinks), never waited for.
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = size)]
    pub output_buffer: u64,
    /// Stop after DURATION (seconds, or with s, m, h, d; default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub duration: Option<Duration>,
    /// Ingress hook: auto (native XDP on capable physical NICs, else TC), xdp or tc.
    #[arg(long, default_value = "auto", value_parser = choice::<IngressMode>(INGRESS))]
    pub ingress: IngressMode,
    /// Report a flow as expired after DURATION without packets.
    #[arg(long, value_name = "DURATION", default_value = "60", value_parser = duration)]
    pub idle_timeout: Duration,
    /// Size of the kernel flow table (LRU; evictions are reported as flows_evicted).
    #[arg(long, value_name = "N", default_value_t = cas_audit_common::sizes::MAX_FLOWS, value_parser = clap::value_parser!(u32).range(64..=16_777_216))]
    pub max_flows: u32,
    /// A flow whose first packet gets no answer within DURATION is
    /// `unanswered` (SYN retries count as one attempt).
    #[arg(long, value_name = "DURATION", default_value = "3", value_parser = duration)]
    pub answer_timeout: Duration,
    /// Size of the kernel event ring buffer: a power of two from 4K to 1G
    /// (suffixes K, M, G).
    #[arg(long, value_name = "BYTES", value_parser = ring_size)]
    pub ring_size: Option<u32>,
    /// Addresses learned from DNS answers and TLS ClientHellos for the
    /// set's DNS names that the kernel tries hold at once (more are
    /// counted in the summary's learned.overflow); 0 learns nothing.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(0..=65_536))]
    pub max_learned: u32,
    /// Shortest time a learned address stays, whatever its DNS TTL.
    #[arg(long, value_name = "DURATION", default_value = "60", value_parser = duration)]
    pub learn_ttl_min: Duration,
    /// Longest time a learned address stays, whatever its DNS TTL.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = duration)]
    pub learn_ttl_max: Duration,
    /// Pin the maps and links in DIR (default /sys/fs/bpf/cas-audit): the
    /// kernel keeps counting when the agent stops or dies, and a restarted
    /// agent with the same set takes over. `cas-audit detach` removes it.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = DEFAULT_PIN_DIR)]
    pub pin: Option<PathBuf>,
    /// Serve Prometheus metrics on ADDR: HOST:PORT (an address, [IPv6]:PORT
    /// or a host name: every address it resolves to) or :PORT (every
    /// address). Use a loopback address such as 127.0.0.1:9477 or
    /// localhost:9477 unless a firewall guards it.
    #[arg(long, value_name = "ADDR", value_parser = listen_addr)]
    pub metrics: Option<ListenAddr>,
    /// Live lines in UTC rather than local time.
    #[arg(long)]
    pub utc: bool,
    /// Export every flow reported for good (ended, expired, open at exit)
    /// as IPFIX (RFC 7011) over UDP to a collector at HOST:PORT (nfcapd,
    /// pmacct, ntopng, ...; IPFIX's port is 4739): one data record per
    /// direction that carried packets.
    #[arg(long, value_name = "HOST:PORT", value_parser = ipfix_target)]
    pub ipfix: Option<std::net::SocketAddr>,
    /// Send one syslog message per flagged or blocked flow to a SIEM:
    /// udp://HOST:PORT, tcp://HOST:PORT (octet-counted frames) or
    /// unix:PATH (a datagram socket such as /dev/log).
    #[arg(long, value_name = "udp://HOST:PORT|tcp://HOST:PORT|unix:PATH")]
    pub syslog: Option<crate::output::syslog::Target>,
    /// What the syslog messages say: rfc5424 (readable text, the record as
    /// structured data) or cef (a CEF event, for Sentinel, Splunk, QRadar).
    #[arg(long, default_value = "rfc5424", value_parser = choice::<SyslogFormat>(SYSLOG_FORMATS), requires = "syslog")]
    pub syslog_format: SyslogFormat,
    /// Also send one syslog message per flow reported for good (ended,
    /// expired, open at exit).
    #[arg(long, requires = "syslog")]
    pub syslog_ended: bool,
}

/// `cas-audit detach` flags.
#[derive(Debug, Args)]
pub struct DetachArgs {
    /// The pin directory of `run --pin`.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin: PathBuf,
}

/// `cas-audit status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The pin directory of `run --pin`.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin: PathBuf,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `cas-audit check` flags.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The set and the part of it to check.
    #[command(flatten)]
    pub selection: Selection,
    /// Interface the datapath watches while the check runs (shows who refused
    /// or rejected each attempt); without it, only the sockets' results.
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// How long each connection attempt may take before it is unanswered.
    #[arg(long, value_name = "DURATION", default_value = "5", value_parser = duration)]
    pub timeout: Duration,
    /// Connection attempts in flight at once.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// One JSON record per destination and a summary on standard output
    /// (--json or --json -: then no table is printed), or written to the
    /// file PATH.
    #[arg(long, value_name = "PATH|-", num_args = 0..=1, default_missing_value = "-")]
    pub json: Option<String>,
    /// Ingress hook of the datapath: auto, xdp or tc.
    #[arg(long, default_value = "auto", value_parser = choice::<IngressMode>(INGRESS))]
    pub ingress: IngressMode,
    /// Resolve the set's DNS names by asking this DNS server (ADDR or
    /// ADDR:PORT; default: the system resolver).
    #[arg(long, value_name = "ADDR", value_parser = resolver_addr)]
    pub resolver: Option<std::net::SocketAddr>,
    /// The tenant's name: its portal names (*.us.portal.cloudappsecurity.com
    /// and the like) are probed as NAME.us.portal.cloudappsecurity.com.
    #[arg(long, value_name = "NAME")]
    pub tenant: Option<String>,
    /// Complete a TLS handshake with each destination (but port 80) and
    /// verify its certificate against the system's roots: a certificate not
    /// valid for the name or not from a trusted root is `intercepted`.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: also trust the CA certificates in FILE (PEM; repeatable
    /// or comma-separated).
    #[arg(
        long = "ca-file",
        value_name = "FILE",
        value_delimiter = ',',
        requires = "tls"
    )]
    pub ca_files: Vec<PathBuf>,
    /// Reach every destination through this HTTP proxy with CONNECT:
    /// http://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<crate::rollout::proxy::Proxy>,
}

/// A DNS server: `ADDR` (port 53) or `ADDR:PORT`.
fn resolver_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s}: expected an address or address:port"))
}

/// `cas-audit report` flags.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Files written by `run --json FILE` or `--log-dir`, oldest first, plain or
    /// gzip-compressed; a directory stands for its *.jsonl and *.jsonl.gz files in
    /// name order; `-` is standard input.
    #[arg(value_name = "FILE|DIR|-", required = true)]
    pub paths: Vec<PathBuf>,
    /// Only flows seen at or after TIME: RFC 3339 (2026-11-22T10:00:00Z) or a
    /// duration before now (2h).
    #[arg(long, value_name = "TIME")]
    pub since: Option<TimeSpec>,
    /// Only flows first seen at or before TIME (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<TimeSpec>,
    /// Only flows in this final state (repeatable, or a comma list): pending, established,
    /// closed, reset, unanswered, refused, unreachable, or unknown (older records).
    #[arg(long = "state", value_name = "S", value_delimiter = ',', value_parser = state)]
    pub states: Vec<StateFilter>,
    /// Only flows to ranges of this data center (repeatable, or a comma list).
    #[arg(long = "datacenter", value_name = "DC", value_delimiter = ',', value_parser = datacenter)]
    pub datacenters: Vec<DataCenter>,
    /// Only flows to ranges of this purpose (repeatable, or a comma list).
    #[arg(long = "purpose", value_name = "P", value_delimiter = ',', value_parser = purpose)]
    pub purposes: Vec<Purpose>,
    /// Only flows of this local address, or of addresses in this prefix (repeatable, or a
    /// comma list).
    #[arg(long = "host", value_name = "ADDR|CIDR", value_delimiter = ',', value_parser = host)]
    pub hosts: Vec<IpNet>,
    /// Rows of every table (and every list of the JSON document): the N with the
    /// most flows; `all` for every row.
    #[arg(long, value_name = "N|all", default_value = "10", value_parser = top)]
    pub top: usize,
    /// One JSON document (compact, one line) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// The same as --json with `json`.
    #[arg(long, default_value = "table", hide = true, value_parser = choice::<ReportFormat>(REPORT_FORMATS))]
    pub format: ReportFormat,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{logdir::LogDirOptions, sink::JsonTarget};
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags() {
        let cli = Cli::try_parse_from([
            "cas-audit",
            "run",
            "--iface",
            "eth1",
            "--iface",
            "eth2",
            "--allow-port",
            "443",
            "8443",
            "--datacenter",
            "us1",
            "gov-us1",
            "gcc-high",
            "--region",
            "West US 2",
            "westeurope",
            "--json",
            "-",
            "--duration",
            "2.5",
            "--ingress",
            "tc",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        let c = r.config();
        assert_eq!(c.ifaces, vec!["eth1", "eth2"]);
        assert_eq!(c.ports.unwrap().iter().collect::<Vec<_>>(), vec![443, 8443]);
        assert_eq!(
            c.selection.datacenters,
            vec![DataCenter::Us1, DataCenter::GovUs1, DataCenter::GccHigh]
        );
        let regions: Vec<&str> = c.selection.regions.iter().map(|r| r.as_str()).collect();
        assert_eq!(regions, ["westus2", "westeurope"]);
        assert_eq!(c.json, Some(JsonTarget::Stdout));
        assert_eq!(c.duration, Some(Duration::from_millis(2500)));
        assert_eq!(c.ingress, IngressMode::Tc);
    }

    #[test]
    fn export_flags() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["cas-audit", "run", "--iface", "eth1"];
            args.extend(extra);
            match Cli::try_parse_from(args).map(|c| c.command) {
                Ok(Command::Run(r)) => Ok(r.config()),
                Ok(_) => panic!("not run"),
                Err(e) => Err(e),
            }
        };
        let c = parse(&[]).unwrap();
        assert_eq!((c.ipfix, c.syslog), (None, None));
        let c = parse(&[
            "--ipfix",
            "127.0.0.1:4739",
            "--syslog",
            "tcp://[2001:db8::1]:6514",
            "--syslog-format",
            "cef",
            "--syslog-ended",
        ])
        .unwrap();
        assert_eq!(c.ipfix, Some("127.0.0.1:4739".parse().unwrap()));
        let s = c.syslog.unwrap();
        assert_eq!(
            s.target,
            crate::output::syslog::Target::Tcp("[2001:db8::1]:6514".parse().unwrap())
        );
        assert_eq!((s.format, s.ended), (SyslogFormat::Cef, true));
        let s = parse(&["--syslog", "unix:/dev/log"])
            .unwrap()
            .syslog
            .unwrap();
        assert_eq!((s.format, s.ended), (SyslogFormat::Rfc5424, false));
        for bad in [
            &["--ipfix", "127.0.0.1"][..],
            &["--ipfix", "udp://127.0.0.1:4739"],
            &["--syslog", "127.0.0.1:514"],
            &["--syslog-format", "cef"],
            &["--syslog-ended"],
            &["--syslog", "udp://127.0.0.1:514", "--syslog-format", "leef"],
        ] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn output_buffer_flag() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["cas-audit", "run", "--iface", "eth1"];
            args.extend(extra);
            match Cli::try_parse_from(args).map(|c| c.command) {
                Ok(Command::Run(r)) => Ok(r.config().output_buffer),
                Ok(_) => panic!("not run"),
                Err(e) => Err(e),
            }
        };
        assert_eq!(parse(&[]).unwrap(), crate::output::sink::DEFAULT_BUFFER);
        assert_eq!(parse(&["--output-buffer", "64K"]).unwrap(), 64 << 10);
        assert_eq!(parse(&["--output-buffer", "0"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn log_dir_flags() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["cas-audit", "run", "--iface", "eth1"];
            args.extend(extra);
            match Cli::try_parse_from(args).map(|c| c.command) {
                Ok(Command::Run(r)) => Ok(r.config().log_dir),
                Ok(_) => panic!("not run"),
                Err(e) => Err(e),
            }
        };
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(
            parse(&["--log-dir", "/var/log/cas"]).unwrap(),
            Some(LogDirOptions::new("/var/log/cas"))
        );
        let o = parse(&[
            "--log-dir",
            "d",
            "--log-max-size",
            "500K",
            "--log-max-age",
            "2h",
            "--log-max-total",
            "1G",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(o.max_size, 500 << 10);
        assert_eq!(o.max_age, Duration::from_secs(7200));
        assert_eq!(o.max_total, 1 << 30);
        for bad in [
            &["--log-max-size", "1M"][..],
            &["--log-dir", "d", "--log-max-size", "0"],
            &["--log-dir", "d", "--log-max-size", "64MB"],
            &["--log-dir", "d", "--log-max-age", "1w"],
        ] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn report_flags() {
        let cli = Cli::try_parse_from([
            "cas-audit",
            "report",
            "/var/log/cas",
            "old.jsonl",
            "--since",
            "2h",
            "--until",
            "2026-11-22T10:00:00Z",
            "--state",
            "refused",
            "--state",
            "unknown",
            "--datacenter",
            "gov-us1",
            "--purpose",
            "dlp",
            "--host",
            "198.51.100.2",
            "--host",
            "2001:db8:1::/64",
            "--top",
            "3",
            "--format",
            "json",
        ])
        .unwrap();
        let Command::Report(r) = cli.command else {
            panic!("not report")
        };
        let now = time::macros::datetime!(2026-11-22 12:00 UTC);
        let c = r.config(now);
        assert_eq!(c.paths, [PathBuf::from("/var/log/cas"), "old.jsonl".into()]);
        assert_eq!(
            c.filters.since,
            Some(time::macros::datetime!(2026-11-22 10:00 UTC))
        );
        assert_eq!(
            c.filters.until,
            Some(time::macros::datetime!(2026-11-22 10:00 UTC))
        );
        assert_eq!(c.filters.states, [Some(crate::flow::State::Refused), None]);
        assert_eq!(c.filters.datacenters, [DataCenter::GovUs1]);
        assert_eq!(c.filters.purposes, [Purpose::Dlp]);
        assert_eq!(
            c.filters.hosts,
            [
                "198.51.100.2/32".parse::<IpNet>().unwrap(),
                "2001:db8:1::/64".parse().unwrap()
            ]
        );
        assert_eq!((c.top, c.format), (3, ReportFormat::Json));
        for bad in [
            &["report"][..],
            &["report", "d", "--state", "blocked"],
            &["report", "d", "--since", "yesterday"],
            &["report", "d", "--host", "lan"],
            &["report", "d", "--datacenter", "US9"],
            &["report", "d", "--format", "csv"],
            &["report", "d", "--top", "-1"],
        ] {
            let args = std::iter::once("cas-audit").chain(bad.iter().copied());
            assert_eq!(
                Cli::try_parse_from(args).unwrap_err().exit_code(),
                2,
                "{bad:?}"
            );
        }
    }

    fn run_config(extra: &[&str]) -> Result<crate::audit::RunConfig, clap::Error> {
        let mut args = vec!["cas-audit", "run"];
        args.extend(extra);
        match Cli::try_parse_from(args)?.command {
            Command::Run(r) => Ok(r.config()),
            _ => panic!("not run"),
        }
    }

    #[test]
    fn lists_are_repeated_flags_or_comma_lists() {
        let c = run_config(&[
            "--iface",
            "eth1,eth2",
            "--iface",
            "eth3",
            "--allow-port",
            "443,80",
            "--allow-port",
            "11344",
            "--datacenter",
            "US1,Gov US1",
            "--purpose",
            "portal,dlp",
        ])
        .unwrap();
        assert_eq!(c.ifaces, ["eth1", "eth2", "eth3"]);
        assert_eq!(
            c.ports.unwrap().iter().collect::<Vec<_>>(),
            vec![80, 443, 11344]
        );
        assert_eq!(
            c.selection.datacenters,
            [DataCenter::Us1, DataCenter::GovUs1]
        );
        assert_eq!(c.selection.purposes, [Purpose::Portal, Purpose::Dlp]);
        // A bad list says how to write one.
        let e = run_config(&["--iface", "x", "--allow-port", "443;80"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains(
                "\"443;80\" is not a port (1 to 65535) (several: --allow-port 443,80, or --allow-port repeated)"
            ),
            "{e}"
        );
        let e = run_config(&["--iface", "x", "--datacenter", "US1 EU2"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("(several: --datacenter US1,EU2, or --datacenter repeated)"),
            "{e}"
        );
    }

    #[test]
    fn json_is_asked_for_one_way() {
        use crate::output::sink::JsonTarget;
        assert_eq!(
            run_config(&["--iface", "x", "--json"]).unwrap().json,
            Some(JsonTarget::Stdout)
        );
        assert_eq!(
            run_config(&["--json", "--iface", "x"]).unwrap().json,
            Some(JsonTarget::Stdout)
        );
        assert_eq!(
            run_config(&["--iface", "x", "--json", "-"]).unwrap().json,
            Some(JsonTarget::Stdout)
        );
        assert_eq!(
            run_config(&["--iface", "x", "--json", "/var/log/x.jsonl"])
                .unwrap()
                .json,
            Some(JsonTarget::File("/var/log/x.jsonl".into()))
        );
        let job = |args: &[&str]| {
            let args = std::iter::once("cas-audit").chain(args.iter().copied());
            Cli::try_parse_from(args)
                .unwrap()
                .command
                .job(time::OffsetDateTime::UNIX_EPOCH)
        };
        use crate::cli::args::Job;
        // A flag before the paths does not take one of them.
        match job(&["report", "--json", "logs/", "old.jsonl"]) {
            Job::Report(r) => {
                assert_eq!(r.format, ReportFormat::Json);
                assert_eq!(r.paths, [PathBuf::from("logs/"), "old.jsonl".into()]);
            }
            _ => panic!("not report"),
        }
        match job(&["report", "-", "--format", "json"]) {
            Job::Report(r) => assert_eq!(r.format, ReportFormat::Json),
            _ => panic!("not report"),
        }
        match job(&["sets", "show", "--json"]) {
            Job::Sets(crate::cmd::sets::SetsConfig::Show { format, .. }) => {
                assert_eq!(format, ShowFormat::Json)
            }
            _ => panic!("not sets show"),
        }
        for args in [
            &["status", "--json"][..],
            &["doctor", "--json"],
            &["sets", "diff", "--json", "a", "b"],
            &["check", "--json"],
        ] {
            let a = std::iter::once("cas-audit").chain(args.iter().copied());
            assert!(Cli::try_parse_from(a).is_ok(), "{args:?}");
        }
    }

    #[test]
    fn metrics_top_and_durations() {
        let c = run_config(&[
            "--iface",
            "x",
            "--metrics",
            ":9477",
            "--duration",
            "10s",
            "--idle-timeout",
            "1.5h",
            "--utc",
        ])
        .unwrap();
        assert_eq!(c.metrics.unwrap().to_string(), ":9477");
        assert_eq!(c.duration, Some(Duration::from_secs(10)));
        assert_eq!(c.idle_timeout, Duration::from_secs(5400));
        assert!(c.utc);
        assert_eq!(
            run_config(&["--iface", "x", "--metrics", "localhost:9477"])
                .unwrap()
                .metrics
                .unwrap()
                .host
                .as_deref(),
            Some("localhost")
        );
        for bad in [&["--duration", "1e3"][..], &["--metrics", "9477"]] {
            let mut a = vec!["--iface", "x"];
            a.extend(bad);
            assert_eq!(run_config(&a).unwrap_err().exit_code(), 2, "{bad:?}");
        }
        let top = |v: &str| {
            let args = ["cas-audit", "report", "d", "--top", v];
            match Cli::try_parse_from(args).map(|c| c.command) {
                Ok(Command::Report(r)) => Ok(r.top),
                Ok(_) => panic!("not report"),
                Err(e) => Err(e.exit_code()),
            }
        };
        assert_eq!(top("3"), Ok(3));
        assert_eq!(top("all"), Ok(usize::MAX));
        assert_eq!(top("some"), Err(2));
    }

    #[test]
    fn every_help_ends_with_its_exit_codes() {
        let mut cmd = command();
        cmd.build();
        let help = |c: &mut clap::Command| c.render_long_help().to_string();
        let run = help(cmd.find_subcommand_mut("run").unwrap());
        assert!(
            run.contains("Exit status:\n  0  success\n  2  a usage"),
            "{run}"
        );
        assert!(run.contains("  3  a failure while running"), "{run}");
        assert!(!run.contains("  1  "), "{run}");
        let check = help(cmd.find_subcommand_mut("check").unwrap());
        assert!(
            check.contains("  1  some destination is not reachable"),
            "{check}"
        );
        let sets = cmd.find_subcommand_mut("sets").unwrap();
        let diff = help(sets.find_subcommand_mut("diff").unwrap());
        assert!(diff.contains("  1  the sets differ"), "{diff}");
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for args in [
            vec!["cas-audit", "run"],
            vec!["cas-audit", "run", "--iface", "x", "--allow-port", "0"],
            vec!["cas-audit", "run", "--iface", "x", "--allow-port", "70000"],
            vec!["cas-audit", "run", "--iface", "x", "--datacenter", "US9"],
            vec![
                "cas-audit",
                "run",
                "--iface",
                "x",
                "--region",
                "west/europe",
            ],
            vec!["cas-audit", "sets", "show", "--region", ""],
            vec!["cas-audit", "sets", "merge", "only-one.json"],
            vec!["cas-audit", "run", "--iface", "x", "--duration", "-1"],
            vec!["cas-audit", "run", "--iface", "x", "--ingress", "af_xdp"],
        ] {
            let e = Cli::try_parse_from(&args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }
}
