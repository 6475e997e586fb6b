//! The cache's Lua scripts, kept together because they share one rule: a versioned entry is written only
//! if the stored version is not newer. `versioned` and `products` run them; `lock` reuses
//! `DELETE_IF_EQUAL` for its compare-and-delete release.

/// Stored values look like `{version}|{json}`; `{version}|null` is a tombstone (the entry was invalidated
/// at that version). The script refuses to write when the stored version is newer, so a slow reader that
/// fetched an old row cannot overwrite the copy or tombstone a writer stored after a later commit. An equal
/// version may be rewritten: the value was computed from the same row (a recalculation refreshing it).
macro_rules! set_if_newer_lua {
    () => {
        r#"
local function set_if_newer(key, version, value, ttl)
    local current = redis.call('GET', key)
    if current then
        local sep = string.find(current, '|', 1, true)
        local v = sep and tonumber(string.sub(current, 1, sep - 1))
        if v and v > tonumber(version) then return 0 end
    end
    redis.call('SET', key, version .. '|' .. value, 'PX', ttl)
    return 1
end
"#
    };
}

/// `set_if_newer` for each key; ARGV holds version, value, ttl per key. Returns how many were written.
pub(super) const SET_IF_NEWER: &str = concat!(
    set_if_newer_lua!(),
    r#"
local written = 0
for i = 1, #KEYS do
    written = written + set_if_newer(KEYS[i], ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i])
end
return written
"#
);

/// After committed changes to products, in one round trip: each product's new row stored for `/cached`,
/// its pricing state replaced by a tombstone of the new version, and, for a sale, its orders counted per
/// product in the current demand bucket (the last key).
/// KEYS: product key, price key (per product), demand bucket. ARGV: product ttl ms, price ttl ms, demand
/// bucket ttl s, then per product: version, row json, id, orders sold (0: none).
pub(super) const PRODUCTS_CHANGED: &str = concat!(
    set_if_newer_lua!(),
    r#"
local sold = 0
for i = 1, (#KEYS - 1) / 2 do
    local at = 3 + 4 * (i - 1)
    local version, json, id, orders = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], tonumber(ARGV[at + 4])
    set_if_newer(KEYS[2 * i - 1], version, json, ARGV[1])
    set_if_newer(KEYS[2 * i], version, 'null', ARGV[2])
    if orders > 0 then
        redis.call('HINCRBY', KEYS[#KEYS], id, orders)
        sold = sold + orders
    end
end
if sold > 0 then redis.call('EXPIRE', KEYS[#KEYS], ARGV[3]) end
return 1
"#
);

/// Deletes a key only if it still holds the value that was read (a corrupt entry here, a lock's token in
/// `lock`).
pub(crate) const DELETE_IF_EQUAL: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;
