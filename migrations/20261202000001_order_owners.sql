-- Who may see and change an order. `user_id` is now the verified shopper (the `sub` of their token); a
-- guest's order has no `user_id`, keeps the label its client sent as `guest_label` (it grants nothing), and
-- is reached with its order access token, of which only SHA-256 digests are kept (a replayed guest order
-- gets a fresh token; the last few stay valid).
ALTER TABLE orders
    ADD COLUMN guest_label TEXT NULL CHECK (length(guest_label) <= 255),
    ADD COLUMN access_token_hashes BYTEA[] NULL;

-- The user_id of earlier orders was whatever the request said, never verified: it becomes a label, so no
-- shopper inherits orders someone else placed in their name.
UPDATE orders SET guest_label = user_id, user_id = NULL WHERE user_id IS NOT NULL;
