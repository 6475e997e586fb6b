//! `/api/v1/products`: the catalogue over HTTP. Handlers check the request and call the catalogue use
//! case (`pricing_core::catalogue::Catalogue`), which reads and writes products and the cache; writes need
//! the admin token; `/cached` tells in `X-Cache` whether the row came from Redis.

use axum::{
    extract::State,
    http::{HeaderName, StatusCode},
    response::IntoResponse,
};
use pricing_core::{
    catalogue::{CacheOutcome, PricedProduct},
    config::Limits,
    domain::{self, NewProduct, Page, Product, ProductChanges},
    money,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::paging::PageParams;
use crate::{
    auth::Admin,
    error::{ApiResult, ErrorBody},
    extract::{text_field, Id, Json, Query},
    ApiContext, ApiError,
};

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, update, remove))
        .routes(routes!(read_cached))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateProduct {
    /// Letters, digits, `-`, `_` or `.`, not digits only; generated when absent.
    #[schema(pattern = "^(?![0-9]+$)[A-Za-z0-9._-]{1,64}$")]
    sku: Option<String>,
    #[schema(
        max_length = 255,
        pattern = "^(?=.*\\S)[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    name: String,
    /// `general` when absent.
    #[schema(
        max_length = 100,
        pattern = "^(?=.*\\S)[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    category: Option<String>,
    /// The list price the pricing model starts from: above 0, at most 2 decimal places.
    #[schema(exclusive_minimum = 0, maximum = 9_999_999_999.99, multiple_of = 0.01)]
    #[serde(deserialize_with = "money::from_json_text")]
    price: Decimal,
    #[schema(minimum = 0)]
    #[serde(deserialize_with = "pricing_core::domain::whole_i32")]
    stock: i32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateProduct {
    #[schema(
        max_length = 255,
        pattern = "^(?=.*\\S)[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    name: Option<String>,
    #[schema(
        max_length = 100,
        pattern = "^(?=.*\\S)[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    category: Option<String>,
    #[schema(exclusive_minimum = 0, maximum = 9_999_999_999.99, multiple_of = 0.01)]
    #[serde(default, deserialize_with = "money::from_json_text_opt")]
    price: Option<Decimal>,
    #[schema(minimum = 0)]
    #[serde(default, deserialize_with = "pricing_core::domain::whole_i32_opt")]
    stock: Option<i32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListFilter {
    /// Matches names and SKUs.
    /// Empty means no search.
    #[param(max_length = 255)]
    search: Option<String>,
}

fn check_name(name: &str, limits: &Limits) -> ApiResult<String> {
    text_field("name", name, 1, limits.max_text_len)
}

/// A category is at most 100 characters (its column's own check), or `MAX_TEXT_LEN` if lower.
fn check_category(category: &str, limits: &Limits) -> ApiResult<String> {
    text_field("category", category, 1, limits.max_text_len.min(100))
}

fn check_sku(sku: &str) -> ApiResult<String> {
    domain::validate_sku(sku).map_err(ApiError::Validation)
}

fn check_price(price: Decimal) -> ApiResult<Decimal> {
    money::validate_price("price", price).map_err(ApiError::Validation)?;
    Ok(price)
}

fn check_stock(stock: i32) -> ApiResult<i32> {
    if stock < 0 {
        return Err(ApiError::Validation("stock must be 0 or more".into()));
    }
    Ok(stock)
}

/// Adds a product.
#[utoipa::path(post, path = "", operation_id = "create_product", tag = "products", request_body = CreateProduct,
    security(("bearer" = [])),
    responses((status = 201, description = "Created", body = ProductView),
              (status = 409, description = "The SKU is taken", body = ErrorBody)))]
async fn create(
    _: Admin,
    State(ctx): State<ApiContext>,
    Json(body): Json<CreateProduct>,
) -> ApiResult<impl IntoResponse> {
    let new = NewProduct {
        sku: body.sku.as_deref().map(check_sku).transpose()?,
        name: check_name(&body.name, &ctx.settings.limits)?,
        category: body
            .category
            .as_deref()
            .map(|c| check_category(c, &ctx.settings.limits))
            .transpose()?
            .unwrap_or_else(|| "general".into()),
        price: check_price(body.price)?,
        stock: check_stock(body.stock)?,
    };
    Ok((StatusCode::CREATED, axum::Json(ProductView::from(ctx.catalogue.create(&new).await?))))
}

/// A product as clients see it: the row (`price` is the list price the pricing model starts from) and
/// `current_price`, what the default shopper (default location, not a member) pays for it now, from the
/// same pricing state a quote uses.
#[derive(Debug, Serialize, ToSchema)]
struct ProductView {
    #[serde(flatten)]
    product: Product,
    current_price: Decimal,
}

impl From<PricedProduct> for ProductView {
    fn from(PricedProduct { product, current_price }: PricedProduct) -> Self {
        Self { product, current_price }
    }
}

/// Lists products, oldest first (by id).
#[utoipa::path(get, path = "", operation_id = "list_products", tag = "products", params(PageParams, ListFilter),
    responses((status = 200, description = "A page of products", body = Page<ProductView>)))]
async fn list(
    State(ctx): State<ApiContext>,
    Query(paging): Query<PageParams>,
    Query(filter): Query<ListFilter>,
) -> ApiResult<axum::Json<Page<ProductView>>> {
    let (page, page_size) = paging.checked(&ctx.settings.limits)?;
    let search = match filter.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        // No product's name holds such characters (names with them are refused): nothing matches.
        Some(s) if !domain::is_printable_text(s) => {
            return Ok(axum::Json(Page::new(vec![], 0, page, page_size)));
        }
        Some(s) => Some(text_field("search", s, 1, ctx.settings.limits.max_text_len)?),
        None => None,
    };
    let page = ctx.catalogue.list(search.as_deref(), page, page_size).await?;
    let views = page.items.into_iter().map(ProductView::from).collect();
    Ok(axum::Json(Page::new(views, page.total, page.page, page.page_size)))
}

/// One product, from PostgreSQL.
#[utoipa::path(get, path = "/{id}", operation_id = "get_product", tag = "products", params(("id" = i64, Path, minimum = 1, description = "The product id")),
    responses((status = 200, description = "The product", body = ProductView),
              (status = 404, description = "No such product", body = ErrorBody)))]
async fn read(State(ctx): State<ApiContext>, Id(id): Id) -> ApiResult<axum::Json<ProductView>> {
    Ok(axum::Json(ctx.catalogue.get(id).await?.into()))
}

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// `X-Cache`: whether `/cached` found the product in Redis.
fn x_cache(outcome: CacheOutcome) -> &'static str {
    match outcome {
        CacheOutcome::Hit => "HIT",
        CacheOutcome::Miss => "MISS",
    }
}

/// Cache-aside: the cached row and its pricing state read from Redis in one round trip; on a miss,
/// PostgreSQL, then a versioned write so a slower reader can never put back a copy older than the one a
/// writer just stored.
#[utoipa::path(get, path = "/{id}/cached", operation_id = "get_cached_product", tag = "products", params(("id" = i64, Path, minimum = 1, description = "The product id")),
    responses((status = 200, description = "The product", body = ProductView,
               headers(("x-cache" = String, description = "HIT or MISS"))),
              (status = 404, description = "No such product", body = ErrorBody)))]
async fn read_cached(State(ctx): State<ApiContext>, Id(id): Id) -> ApiResult<impl IntoResponse> {
    let (priced, outcome) = ctx.catalogue.get_cached(id).await?;
    Ok(([(X_CACHE, x_cache(outcome))], axum::Json(ProductView::from(priced))))
}

/// Changes a product; absent fields stay as they are.
#[utoipa::path(put, path = "/{id}", operation_id = "update_product", tag = "products", params(("id" = i64, Path, minimum = 1, description = "The product id")), request_body = UpdateProduct,
    security(("bearer" = [])),
    responses((status = 200, description = "Updated", body = ProductView),
              (status = 404, description = "No such product", body = ErrorBody)))]
async fn update(
    _: Admin,
    State(ctx): State<ApiContext>,
    Id(id): Id,
    Json(body): Json<UpdateProduct>,
) -> ApiResult<axum::Json<ProductView>> {
    let changes = ProductChanges {
        name: body.name.as_deref().map(|n| check_name(n, &ctx.settings.limits)).transpose()?,
        category: body.category.as_deref().map(|c| check_category(c, &ctx.settings.limits)).transpose()?,
        price: body.price.map(check_price).transpose()?,
        stock: body.stock.map(check_stock).transpose()?,
    };
    Ok(axum::Json(ctx.catalogue.update(id, &changes).await?.into()))
}

/// Deletes a product that no order names.
#[utoipa::path(delete, path = "/{id}", operation_id = "delete_product", tag = "products", params(("id" = i64, Path, minimum = 1, description = "The product id")), security(("bearer" = [])),
    responses((status = 204, description = "Deleted"),
              (status = 404, description = "No such product", body = ErrorBody),
              (status = 409, description = "Orders name it", body = ErrorBody)))]
async fn remove(_: Admin, State(ctx): State<ApiContext>, Id(id): Id) -> ApiResult<StatusCode> {
    ctx.catalogue.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
