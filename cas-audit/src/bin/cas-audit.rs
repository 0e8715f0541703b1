//! The `cas-audit` binary: parse the command line, run the command, map
//! its result to the exit code, once.

use cas_audit::{
    cli::{self, args::Job},
    cmd,
    output::logging,
};

fn main() {
    let cli = cli::parse();
    logging::init(cli.verbose, cli.log_format);
    let result = match cli.command.job(time::OffsetDateTime::now_utc()) {
        Job::Run(c) => cmd::run::run(*c),
        Job::Check(c) => cmd::check::run(c),
        Job::Detach(c) => cmd::detach::run(c),
        Job::Status(c) => cmd::status::run(c),
        Job::Sets(c) => cmd::sets::run(c),
        Job::Doctor(c) => cmd::doctor::run(c),
        Job::Report(c) => cmd::report::run(c),
    };
    // A closed pipe ends the command quietly (its reader is gone).
    if let Err(e) = &result {
        if !e.is_broken_pipe() {
            logging::print_error(&e.lines());
        }
    }
    std::process::exit(cmd::exit_code(&result));
}
