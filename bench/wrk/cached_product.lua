-- GET /api/v1/products/{id}/cached over ids 1..PRODUCTS (default 1000).
local n = tonumber(os.getenv("PRODUCTS") or "1000")
request = function()
  return wrk.format("GET", "/api/v1/products/" .. math.random(1, n) .. "/cached")
end
