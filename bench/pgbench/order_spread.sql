-- The least an order does, spread over 1,000 rows: the machine's ceiling for spread orders.
\set id random(1, 1000)
BEGIN;
UPDATE bench_products SET stock = stock - 1 WHERE id = :id AND stock >= 1;
INSERT INTO bench_orders (product_id, total_price) VALUES (:id, 9.99);
COMMIT;
