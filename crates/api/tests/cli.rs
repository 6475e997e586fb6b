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
    bad_settings_are_refused(EXE);
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

/// The api's secrets, for the process: none set (in production) stops it before it touches anything.
fn serve(env: &[(&str, &str)]) -> std::process::Output {
    let (url, _) = untouched_database_url();
    let mut cmd = std::process::Command::new(EXE);
    cmd.arg("serve").env("DATABASE_URL", url).env("API_ADDR", "127.0.0.1:0");
    for var in ["APP_ENV", "ADMIN_TOKEN", "QUOTE_SIGNING_KEY", "JWT_HS256_SECRET", "JWT_PUBLIC_KEYS_FILE"] {
        cmd.env_remove(var).env_remove(format!("{var}_FILE"));
    }
    cmd.envs(env.iter().copied()).output().unwrap()
}

#[tokio::test]
async fn missing_or_short_secrets_stop_the_api_naming_them_never_showing_them() {
    let out = serve(&[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("ADMIN_TOKEN, QUOTE_SIGNING_KEY, JWT_HS256_SECRET not set"), "{err}");
    assert!(err.contains("APP_ENV=development"), "says how to try it without secrets: {err}");

    let short = "short-admin-token";
    let out = serve(&[("ADMIN_TOKEN", short)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("ADMIN_TOKEN must be at least 32 bytes"), "{err}");
    assert!(!err.contains(short) && !stdout(&out).contains(short), "the value is never shown");
    assert!(!database_exists().await, "a refused start created the database");
}

#[test]
fn token_signs_a_shoppers_jwt_with_the_secret_from_its_file() {
    let secret = "a-jwt-secret-read-from-a-file-0123456789";
    let file = std::env::temp_dir().join(format!("jwt-secret-{}", std::process::id()));
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let out = std::process::Command::new(EXE)
        .args(["token", "--sub", "shopper-1", "--member", "--location", "NY"])
        .env_remove("JWT_HS256_SECRET")
        .env("JWT_HS256_SECRET_FILE", &file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let token = stdout(&out).trim().to_string();
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()).unwrap();
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &key,
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
    )
    .expect("signed with the file's secret (its newline trimmed)")
    .claims;
    assert_eq!(claims["sub"], "shopper-1");
    assert_eq!(claims["member"], true);
    assert_eq!(claims["location"], "NY");

    let out = std::process::Command::new(EXE)
        .args(["token", "--sub", "x"])
        .env_remove("JWT_HS256_SECRET")
        .env_remove("JWT_HS256_SECRET_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("JWT_HS256_SECRET"), "{}", stderr(&out));
    let _ = std::fs::remove_file(file);
}
