//! Extractors that turn every malformed request into a 422 `{"detail": ...}` naming what was wrong, instead
//! of axum's plain-text rejections.

use axum::{
    extract::{rejection::JsonRejection, FromRequest, FromRequestParts, Request},
    http::{request::Parts, StatusCode},
};
use serde::de::DeserializeOwned;

use crate::{ApiContext, ApiError};

/// A JSON object body; malformed JSON, anything but an object (serde would read a struct from an array), a
/// wrong type or a missing field is a 422, a body over `MAX_BODY_BYTES` a 413.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<ApiContext> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, ctx: &ApiContext) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .is_some_and(|v| v == "application/json" || v.ends_with("+json"));
        if !json_type {
            return Err(ApiError::Validation(
                "Expected a JSON body with Content-Type: application/json".into(),
            ));
        }
        let RawBody(body) = RawBody::from_request(req, ctx).await?;
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::Validation("Invalid request body: expected a JSON object".into()));
        }
        axum::Json::<T>::from_bytes(&body)
            .map(|axum::Json(value)| Json(value))
            .map_err(|rejection| ApiError::Validation(json_detail(&rejection)))
    }
}

fn json_detail(rejection: &JsonRejection) -> String {
    match rejection {
        JsonRejection::JsonDataError(e) => format!(
            "Invalid request body: {}",
            e.body_text().trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        ),
        JsonRejection::JsonSyntaxError(e) => format!(
            "Malformed JSON: {}",
            e.body_text().trim_start_matches("Failed to parse the request body as JSON: ")
        ),
        JsonRejection::MissingJsonContentType(_) => {
            "Expected a JSON body with Content-Type: application/json".to_string()
        }
        other => other.body_text(),
    }
}

/// A path id: anything but an integer is a 422.
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::Validation(e.body_text()))?;
        raw.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(Id)
            .ok_or_else(|| ApiError::Validation(format!("id must be a positive integer, got {raw:?}")))
    }
}

/// A path segment as text: one that is not valid UTF-8 once percent-decoded (`%FF`) is a 422 in JSON, not
/// axum's plain-text 400.
pub struct PathText(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(text)| PathText(text))
            .map_err(|_| ApiError::Validation("the path segment is not valid UTF-8 text".into()))
    }
}

/// A raw request body whose size is capped by `MAX_BODY_BYTES`: over it, a 413 in JSON.
pub struct RawBody(pub axum::body::Bytes);

impl FromRequest<ApiContext> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, ctx: &ApiContext) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(req, ctx).await.map(RawBody).map_err(|rejection| {
            match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::PayloadTooLarge(ctx.settings.limits.max_body_bytes)
                }
                _ => ApiError::Validation(rejection.body_text()),
            }
        })
    }
}

/// Query parameters; a wrong type is a 422.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| ApiError::Validation(e.body_text()))
    }
}

/// Checks a client-supplied text field: trimmed, `min..=max` characters, printable
/// (`domain::is_printable_text`). Returns the trimmed text.
pub fn text_field(field: &str, value: &str, min: usize, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    let len = value.chars().count();
    if len < min {
        return Err(ApiError::Validation(format!("{field} must not be empty")));
    }
    if len > max {
        return Err(ApiError::Validation(format!("{field} must be at most {max} characters")));
    }
    if !pricing_core::domain::is_printable_text(value) {
        return Err(ApiError::Validation(format!(
            "{field} must not contain control characters or bidirectional overrides"
        )));
    }
    Ok(value.to_string())
}
