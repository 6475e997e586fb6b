-- Each order line records why it cost what it did: an honoured quote, or the current dynamic price.
ALTER TABLE order_items
    ADD COLUMN price_source TEXT NOT NULL DEFAULT 'current' CHECK (price_source IN ('quote', 'current'));
