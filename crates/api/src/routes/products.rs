//! `/api/v1/products`: the catalogue. Writes need the admin token and refresh the cached copy; `/cached`
//! reads through Redis (cache-aside) and falls back to PostgreSQL when Redis is unavailable.

use axum::{
    extract::State,
    http::{HeaderName, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use pricing_core::{
    db::products,
    domain::{NewProduct, Page, Product, ProductChanges},
    money,
};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::{
    auth::Admin,
    error::ApiResult,
    extract::{page_params, text_field, Id, Json, Query},
    ApiContext, ApiError,
};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/", get(list).post(create))
        .route("/{id}", get(read).put(update).delete(remove))
        .route("/{id}/cached", get(read_cached))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateProduct {
    sku: Option<String>,
    name: String,
    category: Option<String>,
    price: Decimal,
    stock: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateProduct {
    name: Option<String>,
    category: Option<String>,
    price: Option<Decimal>,
    stock: Option<i32>,
}

#[derive(Debug, Deserialize)]
struct ListParams {
    page: Option<i64>,
    page_size: Option<i64>,
    search: Option<String>,
}

fn check_name(name: &str) -> ApiResult<String> {
    text_field("name", name, 1, 255)
}

fn check_category(category: &str) -> ApiResult<String> {
    text_field("category", category, 1, 100)
}

fn check_sku(sku: &str) -> ApiResult<String> {
    let sku = sku.trim();
    // An all-digit SKU would read as a product id where clients may send either.
    let ok = (1..=64).contains(&sku.len())
        && !sku.chars().all(|c| c.is_ascii_digit())
        && sku.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(sku.to_string())
    } else {
        Err(ApiError::Validation(
            "sku must be 1 to 64 letters, digits, '-', '_' or '.', not digits only".into(),
        ))
    }
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

async fn create(
    _: Admin,
    State(ctx): State<ApiContext>,
    Json(body): Json<CreateProduct>,
) -> ApiResult<impl IntoResponse> {
    let new = NewProduct {
        sku: body.sku.as_deref().map(check_sku).transpose()?,
        name: check_name(&body.name)?,
        category: body
            .category
            .as_deref()
            .map(check_category)
            .transpose()?
            .unwrap_or_else(|| "general".into()),
        price: check_price(body.price)?,
        stock: check_stock(body.stock)?,
    };
    let product = products::create(&ctx.db, &new).await?;
    tracing::info!(product_id = product.id, sku = %product.sku, "product created");
    Ok((StatusCode::CREATED, axum::Json(product)))
}

async fn list(
    State(ctx): State<ApiContext>,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<Page<Product>>> {
    let (page, page_size) = page_params(params.page, params.page_size)?;
    let search = match params.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => Some(text_field("search", s, 1, 255)?),
        None => None,
    };
    Ok(axum::Json(products::list(&ctx.db, search.as_deref(), page, page_size).await?))
}

async fn read(State(ctx): State<ApiContext>, Id(id): Id) -> ApiResult<axum::Json<Product>> {
    Ok(axum::Json(products::get(&ctx.db, id).await?))
}

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Cache-aside: Redis first; on a miss, PostgreSQL, then a versioned write so a slower reader can never
/// put back a copy older than the one a writer just stored.
async fn read_cached(State(ctx): State<ApiContext>, Id(id): Id) -> ApiResult<impl IntoResponse> {
    let key = ctx.cache.keys.product(id);
    match ctx.cache.get_versioned::<Product>(&key).await {
        Ok(Some(product)) => {
            ctx.cache.count_lookup(true);
            return Ok(([(X_CACHE, "HIT")], axum::Json(product)));
        }
        Ok(None) => ctx.cache.count_lookup(false),
        Err(e) => tracing::warn!(error = %e, "cache read failed; serving from PostgreSQL"),
    }
    let product = products::get(&ctx.db, id).await?;
    if let Err(e) = ctx.cache.set_versioned(&key, product.version, &product, ctx.settings.cache_ttl).await {
        tracing::warn!(product_id = id, error = %e, "could not cache the product");
    }
    Ok(([(X_CACHE, "MISS")], axum::Json(product)))
}

async fn update(
    _: Admin,
    State(ctx): State<ApiContext>,
    Id(id): Id,
    Json(body): Json<UpdateProduct>,
) -> ApiResult<axum::Json<Product>> {
    let changes = ProductChanges {
        name: body.name.as_deref().map(check_name).transpose()?,
        category: body.category.as_deref().map(check_category).transpose()?,
        price: body.price.map(check_price).transpose()?,
        stock: body.stock.map(check_stock).transpose()?,
    };
    let product = products::update(&ctx.db, id, &changes).await?;
    ctx.products_changed(std::slice::from_ref(&product), false).await;
    tracing::info!(product_id = id, version = product.version, "product updated");
    Ok(axum::Json(product))
}

async fn remove(_: Admin, State(ctx): State<ApiContext>, Id(id): Id) -> ApiResult<StatusCode> {
    let deleted = products::delete(&ctx.db, id).await?;
    ctx.cache.product_deleted(&deleted, ctx.settings.cache_ttl.max(ctx.settings.price_cache_ttl)).await;
    tracing::info!(product_id = id, "product deleted");
    Ok(StatusCode::NO_CONTENT)
}
