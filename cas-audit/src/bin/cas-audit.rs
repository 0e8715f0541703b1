//! The `cas-audit` binary: a thin layer over the library.

use clap::Parser;

use std::{io::Write, path::Path};

use cas_audit::{
    cli::{Cli, Command, SetsCommand},
    error::{Error, EXIT_FAILURE},
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
        Command::Run(args) => rt.block_on(cas_audit::run::run(args.config())).map(|_| 0),
        Command::Detach(args) => detach(&args.pin),
        Command::Status(args) => cas_audit::status::status(&cas_audit::pin::PinDir::new(&args.pin))
            .and_then(|s| {
                let text = if args.json {
                    serde_json::to_string_pretty(&s).expect("serialisable") + "\n"
                } else {
                    cas_audit::status::text(&s)
                };
                let mut so = std::io::stdout().lock();
                so.write_all(text.as_bytes())
                    .and_then(|_| so.flush())
                    .map_err(Error::io("writing to standard output"))?;
                Ok(0)
            }),
        Command::Check(args) => rt
            .block_on(cas_audit::check::check(args.config()))
            .map(|(_, s)| if s.ok { 0 } else { EXIT_FAILURE }),
        Command::Sets(cmd) => sets(cmd),
        Command::Doctor(args) => cas_audit::doctor::doctor(&args.ifaces).and_then(|r| {
            let text = if args.json { r.json() + "\n" } else { r.text() };
            let mut so = std::io::stdout().lock();
            so.write_all(text.as_bytes())
                .and_then(|_| so.flush())
                .map_err(Error::io("writing to standard output"))?;
            Ok(r.exit_code())
        }),
        Command::Report(args) => {
            let cfg = args.config(time::OffsetDateTime::now_utc());
            cas_audit::summarize::report(&cfg).and_then(|text| {
                let mut so = std::io::stdout().lock();
                so.write_all(text.as_bytes())
                    .and_then(|_| so.flush())
                    .map(|_| 0)
                    .map_err(Error::io("writing to standard output"))
            })
        }
    };
    match result {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(e) => fail(e),
    }
}

/// Removes a pinned datapath; returns the exit code.
fn detach(dir: &Path) -> Result<i32, Error> {
    let pin = cas_audit::pin::PinDir::new(dir);
    if !dir.exists() {
        println!("nothing pinned in {}", dir.display());
        return Ok(0);
    }
    let removed = pin
        .remove()
        .map_err(|e| Error::Datapath(cas_audit::datapath::DatapathError::Pin(e)))?;
    for r in &removed {
        println!("removed {r}");
    }
    println!(
        "detached: {} pinned objects removed from {}",
        removed.len(),
        dir.display()
    );
    Ok(0)
}

/// Runs a `sets` subcommand; returns the exit code.
fn sets(cmd: SetsCommand) -> Result<i32, Error> {
    use cas_audit::sets;
    let print = |text: &str, out: Option<&Path>| -> Result<(), Error> {
        match out {
            Some(p) => {
                std::fs::write(p, text).map_err(Error::io(format!("writing {}", p.display())))
            }
            None => {
                let mut so = std::io::stdout().lock();
                so.write_all(text.as_bytes())
                    .and_then(|_| so.flush())
                    .map_err(Error::io("writing to standard output"))
            }
        }
    };
    match cmd {
        SetsCommand::List { files } => print(&sets::list(&files)?, None)?,
        SetsCommand::Show { selection, format } => {
            let s = sets::select(
                selection.set.as_deref(),
                &selection.datacenters,
                &selection.purposes,
            )?;
            print(&sets::show(&s, format), None)?;
        }
        SetsCommand::Diff { a, b, json } => {
            let (text, code) = sets::diff(&a, &b, json)?;
            print(&text, None)?;
            return Ok(code);
        }
        SetsCommand::Export {
            selection,
            format,
            out,
        } => {
            let s = sets::select(
                selection.set.as_deref(),
                &selection.datacenters,
                &selection.purposes,
            )?;
            print(&sets::export_set(&s, format), out.as_deref())?;
        }
        SetsCommand::Import { page, name, out } => {
            let (json, report) = sets::import(&page, name.as_deref())?;
            eprint!("{report}");
            print(&json, out.as_deref())?;
        }
    }
    Ok(0)
}

/// Prints the error and its causes and exits with its code.
fn fail(e: Error) -> ! {
    eprintln!("cas-audit: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        eprintln!("  caused by: {s}");
        src = s.source();
    }
    std::process::exit(e.exit_code());
}
