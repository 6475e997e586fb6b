//! The api's secrets: the admin token, the quote signing keys and the shoppers' token keys. Each comes from
//! its variable or from a file named by `<NAME>_FILE` (the Docker secrets convention), is at least
//! [`MIN_SECRET_BYTES`] long, and is held as a [`SecretString`], whose `Debug` prints no value, so a
//! secret cannot reach a log line by accident. A missing secret stops the api at start-up, unless
//! `APP_ENV=development`, where one is generated and only the fact is logged, never the value.

use std::{path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};

/// The shortest secret accepted: 32 bytes, the HMAC-SHA256 key size.
pub const MIN_SECRET_BYTES: usize = 32;

/// Where the process runs: `development` generates missing secrets, anything else refuses to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

impl AppEnv {
    pub(super) fn from_env() -> anyhow::Result<Self> {
        match super::env::get("APP_ENV").unwrap_or_default().trim() {
            "development" => Ok(AppEnv::Development),
            "" | "production" => Ok(AppEnv::Production),
            other => anyhow::bail!("APP_ENV={other:?} is invalid: use development or production"),
        }
    }
}

/// The api's secrets and how shoppers' tokens are checked.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// `ADMIN_TOKEN`: the operators' static bearer token.
    pub admin_token: Option<SecretString>,
    /// `QUOTE_SIGNING_KEY` (comma-separated): the first signs quotes, every one verifies (rotation).
    pub quote_signing_keys: Vec<SecretString>,
    /// `JWT_HS256_SECRET`: the shared secret of HS256 shopper tokens.
    pub jwt_hs256_secret: Option<SecretString>,
    /// `JWT_PUBLIC_KEYS_FILE`: a JWKS document of RS256/ES256 public keys, chosen by `kid`.
    pub jwt_public_keys_file: Option<PathBuf>,
    /// `JWT_ISSUER` / `JWT_AUDIENCE`: checked when set.
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// `JWT_LEEWAY_SECS`: clock skew allowed on `exp` and `nbf`.
    pub jwt_leeway: Duration,
}

/// The variables of the three secrets, as messages name them.
const ADMIN: &str = "ADMIN_TOKEN";
const QUOTE: &str = "QUOTE_SIGNING_KEY";
const JWT: &str = "JWT_HS256_SECRET";

impl Secrets {
    pub(super) fn from_env() -> anyhow::Result<Self> {
        let quote_signing_keys = match secret_var(QUOTE)? {
            Some(list) => list
                .expose_secret()
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| checked(QUOTE, k))
                .collect::<anyhow::Result<_>>()?,
            None => Vec::new(),
        };
        Ok(Self {
            admin_token: secret_var(ADMIN)?.map(|s| checked(ADMIN, s.expose_secret())).transpose()?,
            quote_signing_keys,
            jwt_hs256_secret: secret_var(JWT)?.map(|s| checked(JWT, s.expose_secret())).transpose()?,
            jwt_public_keys_file: super::env::get("JWT_PUBLIC_KEYS_FILE")
                .filter(|v| !v.is_empty())
                .map(Into::into),
            jwt_issuer: super::env::get("JWT_ISSUER").filter(|v| !v.is_empty()),
            jwt_audience: super::env::get("JWT_AUDIENCE").filter(|v| !v.is_empty()),
            jwt_leeway: Duration::from_secs(super::parse("JWT_LEEWAY_SECS", 30)?),
        })
    }

    /// Makes sure the api has every secret it needs: in development a missing one is generated (and only
    /// that fact logged); anywhere else a missing one is an error naming the variables that set it.
    pub fn require(&mut self, app_env: AppEnv) -> anyhow::Result<()> {
        let jwt_configured = self.jwt_hs256_secret.is_some() || self.jwt_public_keys_file.is_some();
        let names: Vec<&str> = [
            (self.admin_token.is_none(), ADMIN),
            (self.quote_signing_keys.is_empty(), QUOTE),
            (!jwt_configured, JWT),
        ]
        .into_iter()
        .filter_map(|(missing, name)| missing.then_some(name))
        .collect();
        if names.is_empty() {
            return Ok(());
        }
        if app_env != AppEnv::Development {
            anyhow::bail!(
                "{} not set: set each (or <NAME>_FILE, a file holding it), at least {MIN_SECRET_BYTES} bytes; \
                 JWT_PUBLIC_KEYS_FILE may stand in for JWT_HS256_SECRET. APP_ENV=development generates \
                 missing ones instead",
                names.join(", ")
            );
        }
        for name in names {
            let generated = generate_secret();
            match name {
                ADMIN => self.admin_token = Some(generated),
                QUOTE => self.quote_signing_keys = vec![generated],
                _ => self.jwt_hs256_secret = Some(generated),
            }
            tracing::warn!(
                "{name} is not set: generated one for this process (APP_ENV=development); it changes on \
                 restart and no other process shares it. Set {name} or {name}_FILE to choose it"
            );
        }
        Ok(())
    }
}

/// A random secret of 32 bytes, as 64 hex digits.
pub fn generate_secret() -> SecretString {
    let bytes: [u8; MIN_SECRET_BYTES] = rand::random();
    SecretString::from(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// `NAME`, or else the contents of the file `NAME_FILE` names (a set `NAME` wins, so a value in `.env`
/// overrides compose's shared file). Surrounding whitespace is removed (a file's last newline; HTTP removes
/// it from a header value too, so it could never match).
fn secret_var(name: &str) -> anyhow::Result<Option<SecretString>> {
    let direct = super::env::get(name).filter(|v| !v.trim().is_empty());
    let file = super::env::get(&format!("{name}_FILE")).filter(|v| !v.trim().is_empty());
    let value = match (direct, file) {
        (Some(value), _) => value,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("{name}_FILE={path:?} cannot be read: {e}"))?,
        (None, None) => return Ok(None),
    };
    Ok(Some(SecretString::from(value.trim().to_string())))
}

/// The secret, if it is long enough; the error names the variable, never the value.
fn checked(name: &str, value: &str) -> anyhow::Result<SecretString> {
    let value = value.trim();
    anyhow::ensure!(
        value.len() >= MIN_SECRET_BYTES,
        "{name} must be at least {MIN_SECRET_BYTES} bytes (it has {}); generate one with `openssl rand -hex 32`",
        value.len()
    );
    Ok(SecretString::from(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_refused_without_showing_them() {
        let err = checked(ADMIN, "short-but-secret").unwrap_err().to_string();
        assert!(err.contains("ADMIN_TOKEN must be at least 32 bytes"), "{err}");
        assert!(!err.contains("short-but-secret"), "{err}");
        let ok = checked(ADMIN, &format!("  {}  ", "a".repeat(32))).unwrap();
        assert_eq!(ok.expose_secret(), "a".repeat(32), "trimmed as HTTP trims the header");
    }

    #[test]
    fn missing_secrets_stop_production_and_are_generated_in_development() {
        let err = Secrets::default().require(AppEnv::Production).unwrap_err().to_string();
        assert!(err.contains("ADMIN_TOKEN, QUOTE_SIGNING_KEY, JWT_HS256_SECRET not set"), "{err}");
        let mut dev = Secrets::default();
        dev.require(AppEnv::Development).unwrap();
        assert_eq!(dev.admin_token.unwrap().expose_secret().len(), 64);
        assert_eq!(dev.quote_signing_keys.len(), 1);
        assert!(dev.jwt_hs256_secret.is_some());
        let mut jwks_only = Secrets {
            admin_token: Some(generate_secret()),
            quote_signing_keys: vec![generate_secret()],
            jwt_public_keys_file: Some("/keys.json".into()),
            ..Default::default()
        };
        jwks_only.require(AppEnv::Production).expect("a JWKS file stands in for the HS256 secret");
        assert!(jwks_only.jwt_hs256_secret.is_none());
    }
}
