//! The `products` table: the catalogue, with stock.

use sqlx::{PgExecutor, PgPool};

use crate::{
    domain::{NewProduct, Page, Product, ProductChanges, ProductScope},
    Error, Result,
};

/// A product row with the market multiplier that applies to it (`market_multiplier_of!`): what pricing
/// reads from PostgreSQL, for a sale (locked) or a recalculation.
#[derive(Debug, sqlx::FromRow)]
pub struct ProductWithMarket {
    #[sqlx(flatten)]
    pub product: Product,
    pub market_multiplier: Option<rust_decimal::Decimal>,
}

#[tracing::instrument(skip(pool), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "products"))]
pub async fn create(pool: &PgPool, new: &NewProduct) -> Result<Product> {
    let sku = new.sku.clone().unwrap_or_else(generated_sku);
    sqlx::query_as::<_, Product>(concat!(
        "INSERT INTO products (sku, name, category, price, stock) VALUES ($1, $2, $3, $4, $5) RETURNING ",
        product_columns!()
    ))
    .bind(&sku)
    .bind(&new.name)
    .bind(&new.category)
    .bind(new.price)
    .bind(new.stock)
    .fetch_one(pool)
    .await
    .map_err(|e| match super::constraint_of(&e) {
        Some(("products_sku_key", _)) => Error::Conflict(format!("A product with sku {sku} already exists")),
        _ => e.into(),
    })
}

/// A SKU for a product created without one: short, unique in practice, never in the seed's `P-` range.
fn generated_sku() -> String {
    format!("SKU-{}", &uuid::Uuid::new_v4().simple().to_string()[..12].to_uppercase())
}

#[tracing::instrument(skip(db), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "products"))]
pub async fn find(db: impl PgExecutor<'_>, id: i64) -> Result<Option<Product>> {
    Ok(sqlx::query_as::<_, Product>(concat!("SELECT ", product_columns!(), " FROM products WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?)
}

/// The product or a `NotFound` naming it.
pub async fn get(db: impl PgExecutor<'_>, id: i64) -> Result<Product> {
    find(db, id).await?.ok_or_else(|| Error::NotFound(format!("Product {id} not found")))
}

#[tracing::instrument(skip(pool), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "products"))]
pub async fn find_by_sku(pool: &PgPool, sku: &str) -> Result<Option<Product>> {
    Ok(sqlx::query_as::<_, Product>(concat!("SELECT ", product_columns!(), " FROM products WHERE sku = $1"))
        .bind(sku)
        .fetch_optional(pool)
        .await?)
}

/// One page of products, oldest first, optionally filtered by a case-insensitive name fragment.
#[tracing::instrument(skip(pool), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "products"))]
pub async fn list(pool: &PgPool, search: Option<&str>, page: i64, page_size: i64) -> Result<Page<Product>> {
    let pattern = search.map(|s| format!("%{}%", escape_like(s)));
    let items = sqlx::query_as::<_, Product>(concat!(
        "SELECT ",
        product_columns!(),
        " FROM products WHERE ($1::text IS NULL OR name ILIKE $1)
         ORDER BY id LIMIT $2 OFFSET $3"
    ))
    .bind(&pattern)
    .bind(page_size)
    .bind((page - 1) * page_size)
    .fetch_all(pool)
    .await?;
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM products WHERE ($1::text IS NULL OR name ILIKE $1)")
            .bind(&pattern)
            .fetch_one(pool)
            .await?;
    Ok(Page::new(items, total, page, page_size))
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// Applies the given fields, leaving the others as they are.
#[tracing::instrument(skip(pool), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPDATE", db.collection.name = "products"))]
pub async fn update(pool: &PgPool, id: i64, changes: &ProductChanges) -> Result<Product> {
    sqlx::query_as::<_, Product>(concat!(
        "UPDATE products SET name = COALESCE($2, name), category = COALESCE($3, category),
                price = COALESCE($4, price), stock = COALESCE($5, stock)
         WHERE id = $1 RETURNING ",
        product_columns!()
    ))
    .bind(id)
    .bind(&changes.name)
    .bind(&changes.category)
    .bind(changes.price)
    .bind(changes.stock)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::NotFound(format!("Product {id} not found")))
}

/// Deletes a product that was never ordered. One with orders is refused: its orders must keep pointing at it.
#[tracing::instrument(skip(pool), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "DELETE", db.collection.name = "products"))]
pub async fn delete(pool: &PgPool, id: i64) -> Result<Product> {
    sqlx::query_as::<_, Product>(concat!("DELETE FROM products WHERE id = $1 RETURNING ", product_columns!()))
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(|e| match super::constraint_of(&e) {
            Some((_, code)) if code == "23503" => Error::Conflict(format!(
                "Product {id} has orders and cannot be deleted; set its stock to 0 to stop selling it"
            )),
            _ => e.into(),
        })?
        .ok_or_else(|| Error::NotFound(format!("Product {id} not found")))
}

/// Creates demo products `P-100`, `P-101`, ... up to `count` of them; products that exist are left alone.
#[tracing::instrument(skip(pool), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "products"))]
pub async fn seed(pool: &PgPool, count: i64, stock: i32) -> Result<u64> {
    const CATEGORIES: &str = "{electronics,books,home,toys,grocery,sports,fashion,garden}";
    let result = sqlx::query(
        "INSERT INTO products (sku, name, category, price, stock)
         SELECT 'P-' || (99 + n), 'Demo product ' || (99 + n),
                ($3::text[])[1 + (n % 8)],
                round((5 + (n * 7919 % 49500) / 100.0)::numeric, 2), $2
         FROM generate_series(1, $1::bigint) AS n
         ON CONFLICT (sku) DO NOTHING",
    )
    .bind(count)
    .bind(stock)
    .bind(CATEGORIES)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// The next `limit` products of `scope` after id `after`, in id order, each with its market signal: keyset
/// pagination for the bulk walk, one query per batch.
pub async fn batch_after(
    pool: &PgPool,
    scope: &ProductScope,
    after: i64,
    limit: i64,
) -> Result<Vec<ProductWithMarket>> {
    if scope.is_all() {
        return Ok(sqlx::query_as::<_, ProductWithMarket>(concat!(
            "SELECT ",
            locked_product_columns!(),
            ", ",
            market_multiplier_of!("products"),
            " AS market_multiplier FROM products WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?);
    }
    Ok(sqlx::query_as::<_, ProductWithMarket>(concat!(
        "SELECT ",
        locked_product_columns!(),
        ", ",
        market_multiplier_of!("products"),
        " AS market_multiplier FROM products
          WHERE id > $1 AND (id = ANY($3) OR category = ANY($4)) ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .bind(&scope.product_ids)
    .bind(&scope.categories)
    .fetch_all(pool)
    .await?)
}

/// How many products of `scope` come after id `after`.
pub async fn count_after(pool: &PgPool, scope: &ProductScope, after: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM products WHERE id > $1 AND ($2 OR id = ANY($3) OR category = ANY($4))",
    )
    .bind(after)
    .bind(scope.is_all())
    .bind(&scope.product_ids)
    .bind(&scope.categories)
    .fetch_one(pool)
    .await?)
}

/// The ids of the products of `scope` (not used for "all products").
pub async fn ids_in(pool: &PgPool, scope: &ProductScope) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar("SELECT id FROM products WHERE id = ANY($1) OR category = ANY($2)")
        .bind(&scope.product_ids)
        .bind(&scope.categories)
        .fetch_all(pool)
        .await?)
}

/// Ids of the products with these SKUs, as `(sku, id)`.
pub async fn ids_of_skus(pool: &PgPool, skus: &[String]) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as("SELECT sku, id FROM products WHERE sku = ANY($1)").bind(skus).fetch_all(pool).await?)
}
