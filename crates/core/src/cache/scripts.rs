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

/// After committed changes to products of one id range, in one call: each product's new row stored for
/// `/cached`, and its pricing state replaced by a tombstone of the new version.
/// KEYS: product key, price key (per product). ARGV: product ttl ms, price ttl ms, then per product:
/// version, row json.
pub(super) const PRODUCTS_CHANGED: &str = concat!(
    set_if_newer_lua!(),
    r#"
for i = 1, #KEYS / 2 do
    local version, json = ARGV[1 + 2 * i], ARGV[2 + 2 * i]
    set_if_newer(KEYS[2 * i - 1], version, json, ARGV[1])
    set_if_newer(KEYS[2 * i], version, 'null', ARGV[2])
end
return 1
"#
);

/// Deletes a key only if it still holds the value that was read (a corrupt entry here, a lock's token in
/// `lock`).
pub(crate) const DELETE_IF_EQUAL: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// One script call's keys and arguments, built before it is sent, so the slot test (`cache::slots`) can
/// check that its keys share a slot.
#[derive(Debug, Default)]
pub(super) struct ScriptCall {
    pub keys: Vec<String>,
    pub args: Vec<Vec<u8>>,
}

impl ScriptCall {
    pub fn key(&mut self, key: String) -> &mut Self {
        self.keys.push(key);
        self
    }

    pub fn arg(&mut self, arg: impl redis::ToRedisArgs) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    /// Runs `script` with these keys and arguments (`EVALSHA`, loading the script where a node lacks it).
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        conn: &mut impl redis::aio::ConnectionLike,
    ) -> redis::RedisResult<T> {
        let mut invocation = script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        for arg in &self.args {
            invocation.arg(arg.as_slice());
        }
        invocation.invoke_async(conn).await
    }
}
