//! `sensor`: the agent and its command line.

mod alerts;
mod audit;
mod cli;
mod cmd;
mod collect;
mod config;
mod detect;
mod enrich;
mod export;
mod failure;
mod kernel;
mod ledger;
mod tail;
mod util;

use std::process::ExitCode;

use clap::Parser as _;

use crate::{
    cli::{Cli, Command},
    failure::Failure,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_logging();
    let result = match cli.command {
        Command::Run(args) => cmd::run::main(*args),
        Command::Tail(args) => cmd::tail::main(args),
        Command::Check(args) => cmd::check::main(args),
        Command::Audit(cmd) => audit::main(cmd),
        Command::Ledger(args) => cmd::ledger::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// Help and version print as usual; every other parse error is one line.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            Failure::Usage(first.trim_start_matches("error: ").to_string()).report()
        }
    }
}

/// Logs go to stderr (stdout is for alerts and tables); `RUST_LOG` filters.
fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
