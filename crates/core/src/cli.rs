//! Command lines, the same way for every binary: parsed with `clap` before anything else happens, so
//! `--help` and `--version` never read settings or open a connection, and a bad flag or value exits with
//! status 2 and one line naming it before anything is created or changed. A bad setting does the same
//! (`settings`).

use clap::Parser;

use crate::{config::ENV_VARS, Settings};

/// Parses this process's arguments into `C`; prints help or the version, or the error, and exits as
/// described above.
pub fn parse<C: Parser>() -> C {
    let command = C::command().after_long_help(environment_help()).after_help(environment_help());
    let parsed = command.try_get_matches().and_then(|matches| C::from_arg_matches(&matches));
    match parsed {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version: print and exit 0
        Err(e) => {
            let rendered = e.to_string();
            let first = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
            eprintln!("{first} (see --help)");
            std::process::exit(2);
        }
    }
}

/// The settings from the environment (`Settings::from_env`); a bad one is printed, naming the variable and
/// what it accepts, and the process exits with status 2 before anything is created or changed.
pub fn settings() -> Settings {
    match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("configuration error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn environment_help() -> String {
    format!(
        "Settings come from environment variables, each with a default (the README's Configuration table and \
         .env.example list them all): {}.",
        ENV_VARS.join(", ")
    )
}
