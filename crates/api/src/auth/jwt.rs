//! Shoppers' bearer tokens: JWTs issued by the storefront's identity provider, verified with `jsonwebtoken`
//! (signature, `exp` required, `nbf`, and `iss` / `aud` when configured). Keys: a shared HS256 secret
//! (`JWT_HS256_SECRET`) and/or a JWKS document of RS256 and ES256 public keys (`JWT_PUBLIC_KEYS_FILE`),
//! chosen by the token's `kid`, so several keys can be live at once while the provider rotates them.

use std::collections::HashMap;

use jsonwebtoken::{
    errors::ErrorKind,
    jwk::{JwkSet, KeyAlgorithm},
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use pricing_core::config::Secrets;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

/// The claims this service reads. `sub` is the shopper's id; `member` grants the member price; `location`
/// is the default ship-to region; `roles` containing `"admin"` grants the admin operations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShopperClaims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default)]
    pub member: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// The keys and rules shoppers' tokens are checked against.
pub struct TokenVerifier {
    hs256: Option<DecodingKey>,
    /// JWKS keys by `kid`, each with the one algorithm it may verify.
    public_keys: HashMap<String, (Algorithm, DecodingKey)>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

/// The longest `sub` kept (the `orders.user_id` column's limit).
const MAX_SUB_LEN: usize = 255;

impl TokenVerifier {
    /// From the configured secrets; a JWKS file that cannot be read or holds an unusable key is an error
    /// naming the file and the key, so a bad deployment stops at start-up.
    pub fn new(secrets: &Secrets) -> anyhow::Result<Self> {
        let hs256 = secrets
            .jwt_hs256_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes()))
            .transpose()?;
        let mut public_keys = HashMap::new();
        if let Some(path) = &secrets.jwt_public_keys_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("JWT_PUBLIC_KEYS_FILE={}: {e}", path.display()))?;
            let set: JwkSet = serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!("JWT_PUBLIC_KEYS_FILE={}: not a JWKS document: {e}", path.display())
            })?;
            for jwk in &set.keys {
                let kid = jwk.common.key_id.clone().ok_or_else(|| {
                    anyhow::anyhow!("JWT_PUBLIC_KEYS_FILE={}: every key needs a kid", path.display())
                })?;
                let alg = match jwk.common.key_algorithm {
                    Some(KeyAlgorithm::RS256) => Algorithm::RS256,
                    Some(KeyAlgorithm::ES256) => Algorithm::ES256,
                    other => anyhow::bail!(
                        "JWT_PUBLIC_KEYS_FILE={}: key {kid:?} has alg {other:?}; RS256 and ES256 are accepted",
                        path.display()
                    ),
                };
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| anyhow::anyhow!("JWT_PUBLIC_KEYS_FILE: key {kid:?}: {e}"))?;
                public_keys.insert(kid, (alg, key));
            }
        }
        Ok(Self {
            hs256,
            public_keys,
            issuer: secrets.jwt_issuer.clone(),
            audience: secrets.jwt_audience.clone(),
            leeway: secrets.jwt_leeway.as_secs(),
        })
    }

    /// The token's claims, or why it is refused, in words for the client (never the token itself).
    pub fn verify(&self, token: &str) -> Result<ShopperClaims, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "the token is not a JWT".to_string())?;
        let (alg, key) = match header.alg {
            Algorithm::HS256 => {
                (Algorithm::HS256, self.hs256.as_ref().ok_or("HS256 tokens are not accepted here")?)
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                let kid = header.kid.as_deref().ok_or("the token has no kid to choose its key by")?;
                let (alg, key) = self.public_keys.get(kid).ok_or("the token's kid names no known key")?;
                if *alg != header.alg {
                    return Err("the token's alg does not match its key".into());
                }
                (*alg, key)
            }
            other => return Err(format!("tokens signed with {other:?} are not accepted")),
        };
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let claims = jsonwebtoken::decode::<ShopperClaims>(token, key, &validation)
            .map_err(|e| refusal(e.kind()))?
            .claims;
        let sub_ok = !claims.sub.trim().is_empty()
            && claims.sub.chars().count() <= MAX_SUB_LEN
            && pricing_core::domain::is_printable_text(&claims.sub);
        if !sub_ok {
            return Err(format!("the token's sub must be 1 to {MAX_SUB_LEN} printable characters"));
        }
        let printable = |l: &String| pricing_core::domain::is_printable_text(l);
        if claims.location.as_ref().is_some_and(|l| l.chars().count() > 32 || !printable(l)) {
            return Err("the token's location must be at most 32 printable characters".into());
        }
        Ok(claims)
    }
}

/// Why a token was refused, for the client.
fn refusal(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::InvalidAudience => "the token is for another audience".into(),
        ErrorKind::InvalidIssuer => "the token is from another issuer".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        ErrorKind::InvalidAlgorithm => "the token's alg does not match its key".into(),
        _ => "the token is malformed".into(),
    }
}

/// Signs claims with an HS256 secret: what `pricing-api token` prints, for trying the api and for tests.
pub fn sign_hs256(secret: &str, claims: &ShopperClaims) -> anyhow::Result<String> {
    let key = EncodingKey::from_secret(secret.as_bytes())?;
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)?)
}
