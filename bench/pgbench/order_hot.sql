-- The least an order does, on one hot row: the machine's ceiling for hot-product orders.
BEGIN;
UPDATE bench_products SET stock = stock - 1 WHERE id = 1 AND stock >= 1;
INSERT INTO bench_orders (product_id, total_price) VALUES (1, 9.99);
COMMIT;
