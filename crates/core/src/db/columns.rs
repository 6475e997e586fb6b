//! Column lists and SQL fragments shared by several queries, as macros so each query stays one
//! `&'static str` (sqlx 0.9 wants SQL it can see is not built from input).

macro_rules! product_columns {
    () => {
        "id, sku, name, category, price, stock, version, created_at, updated_at"
    };
}

/// The same, qualified, for queries that join or update `FROM` another table.
macro_rules! locked_product_columns {
    () => {
        "products.id, products.sku, products.name, products.category, products.price, products.stock, \
         products.version, products.created_at, products.updated_at"
    };
}

macro_rules! order_columns {
    () => {
        "id, user_id, guest_label, status, total_price, attempts, failure_reason, created_at, updated_at, \
         processing_started_at, completed_at"
    };
}

/// The scope key of a `market_multipliers` row: this prefix and a product's id, or the next one and a
/// category's name. Written once for both sides: `db::market::product_scope`/`category_scope` build keys in
/// Rust, `market_multiplier_of!` in SQL (there the key depends on each row's id and category, so it is built
/// in the statement rather than bound).
macro_rules! product_scope_prefix {
    () => {
        "product:"
    };
}

macro_rules! category_scope_prefix {
    () => {
        "category:"
    };
}

/// The market multiplier that applies to the product row aliased `$p`: two primary-key lookups (twice as
/// fast over a million rows as one lookup of both scopes sorted). The rule "a product's own signal beats
/// its category's" is written here once.
macro_rules! market_multiplier_of {
    ($p:literal) => {
        concat!(
            "coalesce((SELECT m.multiplier FROM market_multipliers m WHERE m.scope = '",
            product_scope_prefix!(),
            "' || ",
            $p,
            ".id), (SELECT m.multiplier FROM market_multipliers m WHERE m.scope = '",
            category_scope_prefix!(),
            "' || ",
            $p,
            ".category))"
        )
    };
}

/// A sweep's "take what was lost": up to `$2` rows of `$table` matching `$filter` whose `$stamp` is older
/// than `$1` seconds, oldest first, skipping rows another sweeper holds, stamped now so the next sweep
/// leaves them alone; returns `$returning` of each. The one shape of the sweepers' claims (the orders'
/// sweep in `orders/processing.rs` still writes its own).
macro_rules! take_stale {
    (table: $table:literal, key: $key:literal, stamp: $stamp:literal, filter: $filter:literal,
     returning: $returning:literal) => {
        concat!(
            "UPDATE ",
            $table,
            " SET ",
            $stamp,
            " = now() WHERE ",
            $key,
            " IN (",
            "SELECT ",
            $key,
            " FROM ",
            $table,
            " WHERE ",
            $stamp,
            " < now() - make_interval(secs => $1) AND (",
            $filter,
            ")",
            " ORDER BY ",
            $stamp,
            " LIMIT $2 FOR UPDATE SKIP LOCKED)",
            " RETURNING ",
            $returning
        )
    };
}

/// Whether the caller binding `$2` (admin), `$3` (owner's `sub`) and `$4` (an order access token's digest)
/// may reach the row of `orders`: the one rule of `orders::OrderAccess`, in SQL.
macro_rules! order_access {
    () => {
        "($2::bool OR orders.user_id = $3::text OR $4::bytea = ANY(orders.access_token_hashes))"
    };
}
