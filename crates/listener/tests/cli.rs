//! `pricing-listener`'s command line, run as a process: help, version, and refusals that touch nothing.

#[path = "../../core/testing/cli_checks.rs"]
mod cli_checks;

use cli_checks::*;

const EXE: &str = env!("CARGO_BIN_EXE_pricing-listener");

#[tokio::test]
async fn help_version_and_bad_flags() {
    help_and_version_work(EXE, "pricing-listener");
    refused(EXE, &["--batch", "5"], "--batch");
    refused(EXE, &["serve"], "serve");
    bad_settings_are_refused(EXE);
    assert!(!database_exists().await, "the command line alone touched PostgreSQL");
}
