//! The API description, generated: each handler's `#[utoipa::path]` and each type's `ToSchema` are
//! collected by the router itself (`utoipa_axum::routes!`), so a route cannot exist without its description.
//! This module adds what every operation shares (the error answers, the admin token), the older `/orders`
//! aliases, and serves the result at `/openapi.json` with an interactive page at `/docs` whose assets are
//! compiled into the binary (it works with no internet access).

use axum::Router;
use utoipa::{
    openapi::{
        path::{Operation, PathItem},
        response::ResponseBuilder,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
        Deprecated, OpenApi, RefOr,
    },
    Modify, OpenApi as _, PartialSchema, ToSchema,
};
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ErrorBody;

/// Where the page and the description are served.
pub const DOCS_PATH: &str = "/docs";
pub const SPEC_PATH: &str = "/openapi.json";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Pricing Engine",
        description = "Dynamic prices and oversell-proof orders. Errors are `{\"detail\": \"...\"}`. Callers: \
                       a guest (no token) gets guest prices and guest checkout, each guest order reached with \
                       its `X-Order-Token`; a shopper sends `Authorization: Bearer <JWT>` (its `sub`, `member`, \
                       `location` and `roles` claims are trusted once verified); catalogue writes, market \
                       events and recalculations need the admin token or a JWT with the `admin` role."
    ),
    tags(
        (name = "products", description = "The catalogue"),
        (name = "pricing", description = "Price quotes"),
        (name = "orders", description = "Buying, reading and cancelling orders"),
        (name = "market events", description = "Market signals that move prices"),
        (name = "tasks", description = "Price recalculations"),
        (name = "health", description = "Liveness, readiness, metrics"),
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The starting document the router adds its paths to.
pub fn base() -> OpenApi {
    ApiDoc::openapi()
}

/// The finished description: the router's paths, the shared answers, and an alias under `alias` of every
/// path under `prefix` (the older order service's clients call `/orders/...`: the same handlers, marked
/// deprecated).
pub fn finish(mut api: OpenApi, prefix: &str, alias: &str) -> OpenApi {
    let aliases: Vec<(String, PathItem)> = api
        .paths
        .paths
        .iter()
        .filter_map(|(path, item)| {
            let rest = path.strip_prefix(prefix)?;
            Some((format!("{alias}{rest}"), legacy_alias(item.clone())))
        })
        .collect();
    api.paths.paths.extend(aliases);
    SharedAnswers.modify(&mut api);
    api
}

fn legacy_alias(mut item: PathItem) -> PathItem {
    for op in operations(&mut item) {
        op.operation_id = op.operation_id.take().map(|id| format!("{id}_legacy"));
        op.deprecated = Some(Deprecated::True);
    }
    item
}

/// The page and the description, as routes.
pub fn docs<S: Clone + Send + Sync + 'static>(api: OpenApi) -> Router<S> {
    SwaggerUi::new(DOCS_PATH).url(SPEC_PATH, api).into()
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch]
        .into_iter()
        .filter_map(Option::as_mut)
}

/// Adds to every operation the answers any request can get, so no handler has to repeat them: 422 (bad
/// input), 503 (a backing service down, or the request timeout), 413 where there is a body, 401/403 where
/// the admin token is needed, and the `bearer` security scheme itself.
struct SharedAnswers;

impl Modify for SharedAnswers {
    fn modify(&self, api: &mut OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            "bearer".into(),
            RefOr::T(SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A shopper's JWT, or the operators' ADMIN_TOKEN"))
                    .build(),
            )),
        );
        components.security_schemes.insert(
            "order_token".into(),
            RefOr::T(SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Order-Token",
                "A guest order's order_access_token: reaches that one order",
            )))),
        );
        components.schemas.insert(ErrorBody::name().into(), ErrorBody::schema());
        for item in api.paths.paths.values_mut() {
            for op in operations(item) {
                let mut shared = vec![
                    ("422", "The request is not valid: `detail` says which field and why"),
                    ("503", "A backing service is unavailable, or the request took longer than REQUEST_TIMEOUT_MS"),
                ];
                if op.request_body.is_some() {
                    shared.push(("413", "The body is larger than MAX_BODY_BYTES"));
                }
                let requirements = serde_json::to_value(&op.security).unwrap_or_default();
                let reads_bearer = requirements.to_string().contains("\"bearer\"");
                let bearer_only = requirements.as_array().is_some_and(|r| r.len() == 1) && reads_bearer;
                if reads_bearer {
                    shared.push(("401", "The bearer token is missing where one is required, or not valid"));
                }
                let for_any_shopper =
                    op.operation_id.as_deref().is_some_and(|id| id.starts_with("list_orders"));
                if bearer_only && !for_any_shopper {
                    shared.push((
                        "403",
                        "The bearer token is neither the admin token nor a JWT with the admin role",
                    ));
                }
                for (status, description) in shared {
                    op.responses.responses.entry(status.into()).or_insert_with(|| error(description));
                }
            }
        }
    }
}

/// A documented error answer: an `ErrorBody`.
pub fn error(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(ErrorBody::name())))),
        )
        .build()
        .into()
}
