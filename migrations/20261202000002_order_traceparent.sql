-- The W3C trace context of the request that placed each order. A job the sweeper enqueues again (its
-- first one was lost) runs in a trace of its own, linked to this one, so the order's story stays findable.
ALTER TABLE orders ADD COLUMN traceparent text;
