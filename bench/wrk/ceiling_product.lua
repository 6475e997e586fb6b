-- The bare ceiling's GET /p/{id} over ids 1..PRODUCTS (default 1000): the shape of cached_product.lua.
local n = tonumber(os.getenv("PRODUCTS") or "1000")
request = function()
  return wrk.format("GET", "/p/" .. math.random(1, n))
end
