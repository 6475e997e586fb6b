-- Catalogue and orders: the truth of what is for sale and what was bought.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Shared trigger: every UPDATE stamps updated_at, so no query has to remember to.
CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TABLE products (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku         TEXT NOT NULL UNIQUE CHECK (length(sku) BETWEEN 1 AND 64),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    category    TEXT NOT NULL DEFAULT 'general' CHECK (length(category) BETWEEN 1 AND 100),
    price       NUMERIC(12, 2) NOT NULL CHECK (price > 0),
    stock       INT NOT NULL CHECK (stock >= 0),
    -- Bumped on every change: cache writes carry it so an older copy never replaces a newer one.
    version     BIGINT NOT NULL DEFAULT 1,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE FUNCTION bump_product_version() RETURNS trigger AS $$
BEGIN
    NEW.version := OLD.version + 1;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER products_bump_version BEFORE UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION bump_product_version();

-- `search` is a case-insensitive "name contains": a trigram index serves ILIKE '%term%'.
CREATE INDEX products_name_trgm ON products USING gin (name gin_trgm_ops);
CREATE INDEX products_category ON products (category, id);

CREATE TABLE orders (
    id                     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id                TEXT NULL CHECK (length(user_id) <= 255),
    status                 TEXT NOT NULL DEFAULT 'pending'
                           CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    total_price            NUMERIC(12, 2) NOT NULL CHECK (total_price >= 0),
    -- Processing deliveries so far; an order whose processing keeps crashing ends failed, not looping.
    attempts               INT NOT NULL DEFAULT 0,
    failure_reason         TEXT NULL,
    -- When a wake-up job was last put on the queue: the sweeper re-enqueues orders where this is old.
    last_enqueued_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    processing_started_at  TIMESTAMPTZ NULL,
    completed_at           TIMESTAMPTZ NULL
);

-- Only a change a client can see stamps updated_at (not the sweeper's re-enqueue bookkeeping).
CREATE TRIGGER orders_updated_at BEFORE UPDATE OF status, failure_reason ON orders
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Listing by status, newest first; the queue view (oldest pending first) reads the same index backwards.
CREATE INDEX orders_status_id ON orders (status, id);
CREATE INDEX orders_user_id ON orders (user_id, id) WHERE user_id IS NOT NULL;
-- The sweeper's query: unfinished orders whose wake-up is old.
CREATE INDEX orders_unfinished ON orders (last_enqueued_at) WHERE status IN ('pending', 'processing');

CREATE TABLE order_items (
    order_id    BIGINT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id  BIGINT NOT NULL REFERENCES products (id) ON DELETE RESTRICT,
    quantity    INT NOT NULL CHECK (quantity > 0),
    unit_price  NUMERIC(12, 2) NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, product_id)
);
-- Deleting a product checks for its orders through this index.
CREATE INDEX order_items_product_id ON order_items (product_id);

-- Order counts by status, kept exact by a trigger in the same transaction as each change. Spread over
-- shards (by backend) so concurrent orders do not queue on one counter row.
CREATE TABLE order_stats (
    status                    TEXT NOT NULL,
    shard                     INT NOT NULL,
    orders                    BIGINT NOT NULL DEFAULT 0,
    processing_seconds_total  DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (status, shard)
);

CREATE FUNCTION count_order_status() RETURNS trigger AS $$
DECLARE
    s INT := pg_backend_pid() % 16;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.status = OLD.status THEN
            RETURN NULL;
        END IF;
        INSERT INTO order_stats AS t (status, shard, orders) VALUES (OLD.status, s, -1)
            ON CONFLICT (status, shard) DO UPDATE SET orders = t.orders - 1;
    END IF;
    INSERT INTO order_stats AS t (status, shard, orders, processing_seconds_total)
        VALUES (NEW.status, s, 1,
                CASE WHEN NEW.status = 'completed' AND NEW.processing_started_at IS NOT NULL
                     THEN extract(epoch FROM (NEW.completed_at - NEW.processing_started_at)) ELSE 0 END)
        ON CONFLICT (status, shard) DO UPDATE
        SET orders = t.orders + 1,
            processing_seconds_total = t.processing_seconds_total + EXCLUDED.processing_seconds_total;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER orders_count_status AFTER INSERT OR UPDATE OF status ON orders
    FOR EACH ROW EXECUTE FUNCTION count_order_status();
