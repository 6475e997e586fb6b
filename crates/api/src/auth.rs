//! Admin authentication for catalogue writes: `Authorization: Bearer <ADMIN_TOKEN>`. Reads and orders are public.

use axum::{extract::FromRequestParts, http::request::Parts};

use crate::{ApiContext, ApiError};

/// Present in a handler's arguments, it admits only requests carrying the admin token.
pub struct Admin;

impl FromRequestParts<ApiContext> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &ApiContext) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(ApiError::Unauthorized)?
            .trim();
        if constant_time_eq(token.as_bytes(), ctx.admin_token.as_bytes()) {
            Ok(Admin)
        } else {
            Err(ApiError::Forbidden)
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
