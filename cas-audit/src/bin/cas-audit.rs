//! The `cas-audit` binary: a thin layer over the library.

use clap::Parser;

use cas_audit::{
    cli::{Cli, Command},
    error::EXIT_FAILURE,
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
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cas-audit: cannot start the runtime: {e}");
            std::process::exit(EXIT_FAILURE);
        }
    };
    let result = match cli.command {
        Command::Run(args) => rt.block_on(cas_audit::run::run(args.config())).map(|_| ()),
    };
    if let Err(e) = result {
        eprintln!("cas-audit: {e}");
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            eprintln!("  caused by: {s}");
            src = s.source();
        }
        std::process::exit(e.exit_code());
    }
}
