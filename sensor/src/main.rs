//! `sensor`: the agent and its command line.

mod agent;
mod alerts;
mod audit;
mod blind;
mod check;
mod cli;
mod collect;
mod config;
mod container;
mod destination;
mod detect;
mod failure;
mod fdinfo;
mod http;
mod labels;
mod loader;
mod metrics;
mod offsets;
mod paths;
mod pipeline;
mod pods;
mod privilege;
mod procmeta;
mod resident;
mod size;
mod sysinfo;
mod tail;
mod tamper;
mod trail;
mod watch;
mod webconfig;

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
        Command::Run(args) => agent::main(*args),
        Command::Tail(args) => tail::client::main(args),
        Command::Check(args) => check::main(args),
        Command::Audit(cmd) => audit::main(cmd),
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
