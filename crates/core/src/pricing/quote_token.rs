//! The quote token: a quote that carries itself. `quote_id` is `q1.{key id}.{claims}.{mac}`: the claims
//! (product, its pricing-state version and inputs, the shopper's parts, who, until when, under which rules)
//! as base64url JSON, and an HMAC-SHA256 of them with a server key (`QUOTE_SIGNING_KEY`). An order verifies
//! it and recomputes the price from the claims, so a quote needs no Redis write and no lookup, and a forged,
//! altered, expired or foreign token is refused. Several keys may be configured for rotation: the first
//! signs, every one verifies.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::{ProductPricing, Shopper};

const VERSION: &str = "q1";
/// The longest token `verify` reads (a real one is about 350 characters).
pub const MAX_TOKEN_LEN: usize = 1024;

/// What a quote promises, in short field names (they travel in every token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuoteClaims {
    #[serde(rename = "p")]
    pub product_id: i64,
    /// The pricing state's product-row version, and its inputs.
    #[serde(rename = "v")]
    pub version: i64,
    #[serde(rename = "b", with = "rust_decimal::serde::str")]
    pub base_price: Decimal,
    #[serde(rename = "d", with = "rust_decimal::serde::str")]
    pub demand: Decimal,
    #[serde(rename = "s", with = "rust_decimal::serde::str")]
    pub scarcity: Decimal,
    #[serde(rename = "m", with = "rust_decimal::serde::str")]
    pub market: Decimal,
    #[serde(rename = "l")]
    pub location: String,
    #[serde(rename = "pm")]
    pub is_member: bool,
    #[serde(rename = "u", skip_serializing_if = "Option::is_none", default)]
    pub user_id: Option<String>,
    /// `valid_until`, in Unix seconds.
    #[serde(rename = "e")]
    pub expires: i64,
    /// The pricing rules' fingerprint: a token made under other rules is not honoured.
    #[serde(rename = "r")]
    pub rules: u64,
}

impl QuoteClaims {
    pub fn new(
        pricing: &ProductPricing,
        shopper: &Shopper,
        user_id: Option<&str>,
        until: DateTime<Utc>,
        rules: u64,
    ) -> Self {
        Self {
            product_id: pricing.product_id,
            version: pricing.version,
            base_price: pricing.base_price,
            demand: pricing.demand_multiplier,
            scarcity: pricing.scarcity_multiplier,
            market: pricing.market_multiplier,
            location: shopper.location.clone(),
            is_member: shopper.is_member,
            user_id: user_id.map(str::to_string),
            expires: until.timestamp(),
            rules,
        }
    }

    pub fn valid_until(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.expires, 0).single().unwrap_or_default()
    }

    pub fn shopper(&self) -> Shopper {
        Shopper { location: self.location.clone(), is_member: self.is_member }
    }

    /// The pricing state the quote was priced from (only what the model reads).
    pub fn pricing(&self) -> ProductPricing {
        ProductPricing {
            product_id: self.product_id,
            sku: String::new(),
            version: self.version,
            base_price: self.base_price,
            demand_multiplier: self.demand,
            scarcity_multiplier: self.scarcity,
            market_multiplier: self.market,
            recent_orders: 0,
            stock: 0,
            computed_at: self.valid_until(),
        }
    }
}

/// The configured keys: the first signs, all verify.
pub struct QuoteSigner {
    keys: Vec<(String, Vec<u8>)>,
}

impl QuoteSigner {
    /// From `QUOTE_SIGNING_KEY` (comma-separated). The api refuses to start without one (or generates one
    /// in development, `config::Secrets::require`); a process that never quotes may have none, and then
    /// signs with a random key of its own that nothing else verifies.
    pub fn from_keys(configured: &[SecretString]) -> Self {
        let mut secrets: Vec<Vec<u8>> =
            configured.iter().map(|s| s.expose_secret().as_bytes().to_vec()).collect();
        if secrets.is_empty() {
            secrets.push(crate::config::generate_secret().expose_secret().as_bytes().to_vec());
        }
        let keys = secrets.into_iter().map(|s| (key_id(&s), s)).collect();
        Self { keys }
    }

    pub fn sign(&self, claims: &QuoteClaims) -> String {
        let (kid, key) = &self.keys[0];
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let mac = URL_SAFE_NO_PAD.encode(mac(key, kid, &body).finalize().into_bytes());
        format!("{VERSION}.{kid}.{body}.{mac}")
    }

    /// The claims of a token this service signed, with any configured key; `None` for anything else
    /// (malformed, altered, signed with an unknown key). Expiry and rules are the caller's to check.
    pub fn verify(&self, token: &str) -> Option<QuoteClaims> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let mut parts = token.split('.');
        let (version, kid, body, tag) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != VERSION || parts.next().is_some() {
            return None;
        }
        let (_, key) = self.keys.iter().find(|(id, _)| id == kid)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // `verify_slice` compares in constant time.
        mac(key, kid, body).verify_slice(&tag).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }
}

fn mac(key: &[u8], kid: &str, body: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(VERSION.as_bytes());
    mac.update(kid.as_bytes());
    mac.update(body.as_bytes());
    mac
}

/// A short public name for a key, so a token says which key verifies it without revealing it.
fn key_id(secret: &[u8]) -> String {
    Sha256::digest(secret)[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<SecretString> {
        names.iter().map(|n| SecretString::from(n.to_string())).collect()
    }

    fn claims() -> QuoteClaims {
        QuoteClaims {
            product_id: 7,
            version: 3,
            base_price: Decimal::new(1999, 2),
            demand: Decimal::ONE,
            scarcity: Decimal::new(105, 2),
            market: Decimal::ONE,
            location: "NY".into(),
            is_member: true,
            user_id: Some("alice".into()),
            expires: 2_000_000_000,
            rules: 42,
        }
    }

    #[test]
    fn a_signed_token_verifies_and_carries_its_claims() {
        let signer = QuoteSigner::from_keys(&keys(&["k1"]));
        let token = signer.sign(&claims());
        assert!(token.len() < 400, "{} characters", token.len());
        assert_eq!(signer.verify(&token), Some(claims()));
    }

    #[test]
    fn an_altered_or_foreign_token_is_refused() {
        let signer = QuoteSigner::from_keys(&keys(&["k1"]));
        let token = signer.sign(&claims());
        let mut cheaper = claims();
        cheaper.base_price = Decimal::new(1, 2);
        let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cheaper).unwrap());
        let parts: Vec<&str> = token.split('.').collect();
        let altered = format!("{}.{}.{forged_body}.{}", parts[0], parts[1], parts[3]);
        assert_eq!(signer.verify(&altered), None, "changed claims, old MAC");
        let other = QuoteSigner::from_keys(&keys(&["k2"]));
        assert_eq!(other.verify(&token), None, "signed with a key this service does not have");
        for garbage in ["", "q1", "q1.x.y.z", "q2.a.b.c", &format!("{token}.extra"), &"a".repeat(5000)] {
            assert_eq!(signer.verify(garbage), None, "{garbage:.40}");
        }
    }

    #[test]
    fn a_rotated_key_still_verifies_what_it_signed() {
        let old = QuoteSigner::from_keys(&keys(&["old"]));
        let token = old.sign(&claims());
        let rotated = QuoteSigner::from_keys(&keys(&["new", "old"]));
        assert_eq!(rotated.verify(&token), Some(claims()));
        assert_ne!(rotated.sign(&claims()).split('.').nth(1), token.split('.').nth(1), "the new key signs");
    }
}
