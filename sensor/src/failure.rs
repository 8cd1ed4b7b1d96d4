//! How a command fails: usage/configuration (exit 2, one line naming the bad
//! value) or at run time (exit 1, with the cause chain).

use std::process::ExitCode;

use crate::{config::ConfigError, kernel::watch::WatchError};

#[derive(Debug)]
pub enum Failure {
    Usage(String),
    Runtime(anyhow::Error),
}

impl Failure {
    pub fn report(self) -> ExitCode {
        match self {
            Failure::Usage(msg) => {
                eprintln!("sensor: error: {}", msg.replace('\n', " "));
                ExitCode::from(2)
            }
            Failure::Runtime(err) => {
                eprintln!("sensor: error: {err:#}");
                ExitCode::from(1)
            }
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Usage(e.to_string())
    }
}

impl From<WatchError> for Failure {
    fn from(e: WatchError) -> Self {
        Failure::Usage(e.to_string())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}
