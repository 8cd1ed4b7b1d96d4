//! The flags of `sensor run`, made from the key table: `--config FILE`,
//! `--dry-run`, and one flag per [`KEYS`] entry, kept as text for the same
//! parsers the YAML keys go through.

use std::{collections::BTreeMap, path::PathBuf};

use clap::{builder::PathBufValueParser, Arg, ArgAction, ArgMatches, Args, FromArgMatches};

use super::keys::KEYS;

#[derive(Debug, Default, Clone)]
pub struct RunArgs {
    /// YAML configuration file.
    pub config: Option<PathBuf>,
    /// Validate, print the configuration and the watch set, exit.
    pub dry_run: bool,
    /// The keys given as flags, by name, each with its values.
    pub flags: BTreeMap<&'static str, Vec<String>>,
}

impl RunArgs {
    /// These flags as if given on the command line.
    #[cfg(test)]
    pub fn with(mut self, name: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        let key = super::keys::find(name).unwrap_or_else(|| panic!("no key {name}"));
        self.flags
            .entry(key.name)
            .or_default()
            .push(value.as_ref().to_string_lossy().into_owned());
        self
    }
}

impl FromArgMatches for RunArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut out = RunArgs::default();
        out.update_from_arg_matches(m)?;
        Ok(out)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        if let Some(p) = m.get_one::<PathBuf>("config") {
            self.config = Some(p.clone());
        }
        self.dry_run |= m.get_flag("dry-run");
        for k in &KEYS {
            if let Some(values) = m.get_many::<String>(k.name) {
                self.flags.insert(k.name, values.cloned().collect());
            }
        }
        Ok(())
    }
}

impl Args for RunArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let cmd = cmd
            .arg(
                Arg::new("config")
                    .long("config")
                    .value_name("FILE")
                    .value_parser(PathBufValueParser::new())
                    .help("YAML file with the keys below (flags win)"),
            )
            .arg(
                Arg::new("dry-run")
                    .long("dry-run")
                    .action(ArgAction::SetTrue)
                    .help("Validate the configuration and the watch set, print them, exit"),
            );
        cmd.args(KEYS.iter().map(|k| {
            Arg::new(k.name)
                .long(k.name)
                .value_name(k.value)
                .help(format!(
                    "{} [default: {}]",
                    k.help,
                    k.default.replace('`', "")
                ))
                .allow_hyphen_values(k.numeric())
                .action(if k.repeatable {
                    ArgAction::Append
                } else {
                    ArgAction::Set
                })
        }))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}
