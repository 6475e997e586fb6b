-- POST /api/v1/price (or QUOTE_PATH: the bare ceiling's /q) for a product drawn from FIRST..LAST, half of them
-- members, a few locations.
local first = tonumber(os.getenv("FIRST") or "1")
local last = tonumber(os.getenv("LAST") or "1")
local path = os.getenv("QUOTE_PATH") or "/api/v1/price"
local locations = { "NY", "CA", "TX", "US" }
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local body = string.format('{"product_id":%d,"user_location":"%s","is_prime_member":%s}',
    math.random(first, last), locations[math.random(1, 4)], math.random() < 0.5 and "true" or "false")
  return wrk.format("POST", path, nil, body)
end
