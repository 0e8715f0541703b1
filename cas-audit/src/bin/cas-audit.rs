//! The `cas-audit` binary: parse the command line, run the command, map
//! its result to the exit code, once.

use clap::Parser;

use cas_audit::{
    cli::{args::Job, Cli},
    cmd,
    error::Error,
};

fn main() {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
    let result = match cli.command.job(time::OffsetDateTime::now_utc()) {
        Job::Run(c) => cmd::run::run(*c),
        Job::Check(c) => cmd::check::run(c),
        Job::Detach(c) => cmd::detach::run(c),
        Job::Status(c) => cmd::status::run(c),
        Job::Sets(c) => cmd::sets::run(c),
        Job::Doctor(c) => cmd::doctor::run(c),
        Job::Report(c) => cmd::report::run(c),
    };
    if let Err(e) = &result {
        report(e);
    }
    std::process::exit(cmd::exit_code(&result));
}

/// Prints the error and those of its causes that say something new.
fn report(e: &Error) {
    let top = e.to_string();
    eprintln!("cas-audit: {top}");
    let mut said = top;
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let text = s.to_string();
        if !said.contains(&text) {
            eprintln!("  caused by: {text}");
            said.push_str(&text);
        }
        src = s.source();
    }
}
