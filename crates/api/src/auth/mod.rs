//! Who is calling, from `Authorization: Bearer <token>`: the operators' static `ADMIN_TOKEN`, a shopper's
//! JWT (`jwt.rs`), or nobody (a guest). What each may do is stated by the extractor a handler takes:
//! [`Caller`] (anyone; a guest gets guest prices and guest checkout) or [`Admin`] (the admin token, or a
//! JWT with the `admin` role). A token that is present but bad is always a 401 saying why, never a guest.

pub mod jwt;

use axum::{extract::FromRequestParts, http::request::Parts};
use pricing_core::{
    domain::Buyer,
    orders::{access_token_hash, OrderAccess},
};
use secrecy::{ExposeSecret, SecretString};

use crate::{ApiContext, ApiError};

pub use jwt::{ShopperClaims, TokenVerifier};

/// What the api checks bearer tokens against.
pub struct Identity {
    pub admin_token: SecretString,
    pub tokens: TokenVerifier,
}

/// A shopper, as their verified token says.
#[derive(Debug, Clone)]
pub struct Shopper {
    pub sub: String,
    pub member: bool,
    pub location: Option<String>,
    pub admin: bool,
}

/// Whoever sent the request.
#[derive(Debug, Clone)]
pub enum Caller {
    Guest,
    Shopper(Shopper),
    /// The static `ADMIN_TOKEN` of operators' scripts.
    Operator,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Operator => true,
            Caller::Shopper(s) => s.admin,
            Caller::Guest => false,
        }
    }

    /// The verified shopper, if any.
    pub fn shopper(&self) -> Option<&Shopper> {
        match self {
            Caller::Shopper(s) => Some(s),
            _ => None,
        }
    }

    /// The verified shopper's id: what owns their orders and binds their quotes.
    pub fn user_id(&self) -> Option<&str> {
        self.shopper().map(|s| s.sub.as_str())
    }

    /// Who buys: the verified shopper, or a guest with the label their client sent (it grants nothing).
    pub fn buyer(&self, guest_label: Option<String>) -> Buyer {
        match self.user_id() {
            Some(sub) => Buyer::Shopper(sub.to_string()),
            None => Buyer::Guest { label: guest_label },
        }
    }

    /// The shopper's pricing inputs: the location the request names (a ship-to region is the shopper's
    /// choice), else the token's default; membership only from a verified token, never from the body.
    pub fn pricing_inputs<'a>(&'a self, requested_location: Option<&'a str>) -> PricingInputs<'a> {
        let shopper = self.shopper();
        let token_location = shopper.and_then(|s| s.location.as_deref());
        let location = requested_location.filter(|l| !l.trim().is_empty()).or(token_location);
        let mut from_token = Vec::new();
        if shopper.is_some() {
            from_token.extend(["user_id", "is_prime_member"]);
        }
        if location.is_some() && location == token_location && requested_location != location {
            from_token.push("user_location");
        }
        PricingInputs { location, member: shopper.is_some_and(|s| s.member), from_token }
    }

    /// What this caller, with an `X-Order-Token` if sent, may reach among orders.
    pub fn order_access(&self, order_token: Option<&str>) -> OrderAccess {
        OrderAccess {
            admin: self.is_admin(),
            owner: self.user_id().map(str::to_string),
            token_hash: order_token.map(access_token_hash),
        }
    }
}

/// A shopper's inputs to a price, and which of them came from their verified token.
pub struct PricingInputs<'a> {
    pub location: Option<&'a str>,
    pub member: bool,
    pub from_token: Vec<&'static str>,
}

impl FromRequestParts<ApiContext> for Caller {
    type Rejection = ApiError;

    /// The caller `admission` resolved for this request, or resolved now.
    async fn from_request_parts(parts: &mut Parts, ctx: &ApiContext) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            Some(caller) => Ok(caller.clone()),
            None => Caller::resolve(&parts.headers, ctx),
        }
    }
}

impl Caller {
    /// Who sent these headers: no `Authorization` is a guest; a bearer token must be the admin token or a
    /// JWT that verifies, or the request is refused (401, saying why).
    pub fn resolve(headers: &axum::http::HeaderMap, ctx: &ApiContext) -> Result<Self, ApiError> {
        let Some(header) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Ok(Caller::Guest);
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| ApiError::InvalidToken("send Authorization: Bearer <token>".into()))?;
        if constant_time_eq(token.as_bytes(), ctx.identity.admin_token.expose_secret().as_bytes()) {
            return Ok(Caller::Operator);
        }
        let claims = ctx.identity.tokens.verify(token).map_err(ApiError::InvalidToken)?;
        Ok(Caller::Shopper(Shopper {
            admin: claims.roles.iter().any(|r| r == "admin"),
            sub: claims.sub,
            member: claims.member,
            location: claims.location,
        }))
    }
}

/// Present in a handler's arguments, it admits only admins: the admin token, or a token with the `admin`
/// role. No token is a 401, a shopper's token a 403.
pub struct Admin;

impl FromRequestParts<ApiContext> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &ApiContext) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, ctx).await? {
            caller if caller.is_admin() => Ok(Admin),
            Caller::Guest => Err(ApiError::Unauthorized),
            _ => Err(ApiError::Forbidden),
        }
    }
}

/// Compares in constant time (`subtle`), and compares digests, so neither how much of a guess was right nor
/// the token's length shows in the response time.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}
