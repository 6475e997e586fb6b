-- POST /api/v1/orders for one unit of a product drawn from FIRST..LAST (one id: a hot product).
local first = tonumber(os.getenv("FIRST") or "1")
local last = tonumber(os.getenv("LAST") or "1000")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local body = '{"product_id":' .. math.random(first, last) .. ',"quantity":1}'
  return wrk.format("POST", "/api/v1/orders", nil, body)
end
-- Count answers by status, so the summary can tell sold from refused (out of stock).
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function() codes = {} end
response = function(status) codes[status] = (codes[status] or 0) + 1 end
done = function()
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("codes")
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("status %d: %d\n", k, v)) end
end
