//! `pricing-api`'s command line, run as a process: help, version, and refusals that touch nothing.

#[path = "../../core/testing/cli_checks.rs"]
mod cli_checks;

use cli_checks::*;

const EXE: &str = env!("CARGO_BIN_EXE_pricing-api");

#[tokio::test]
async fn help_and_version_answer_without_touching_anything() {
    help_and_version_work(EXE, "pricing-api");
    let seed_help = run(EXE, &["seed", "--help"]);
    assert_eq!(seed_help.status.code(), Some(0));
    let text = stdout(&seed_help);
    assert!(text.contains("--products") && text.contains("[default: 1000]"), "{text}");
    assert!(text.contains("--stock") && text.contains("[default: 10000]"), "{text}");
    assert!(!database_exists().await, "--help created the database");
}

#[tokio::test]
async fn bad_command_lines_exit_2_naming_the_problem_and_create_nothing() {
    refused(EXE, &["--frobnicate"], "--frobnicate");
    refused(EXE, &["sede"], "sede");
    refused(EXE, &["seed", "--products"], "--products");
    refused(EXE, &["seed", "--products", "many"], "--products");
    refused(EXE, &["seed", "--products", "0"], "--products");
    refused(EXE, &["seed", "--stock", "-5"], "--stock");
    assert!(!database_exists().await, "a refused command line created the database");
}

#[test]
fn invalid_settings_name_the_variable_and_exit_non_zero() {
    let out = std::process::Command::new(EXE)
        .args(["seed", "--products", "1"])
        .env("DATABASE_MAX_CONNECTIONS", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("DATABASE_MAX_CONNECTIONS"), "{}", stderr(&out));
}
