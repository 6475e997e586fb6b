-- POST /api/v1/publish-market-event with a unique event_id per request (thread id + counter), a
-- competitor_price signal for one of products 1..1000.
local counter = 0
thread_id = 0
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_id", next_thread)
end

request = function()
  counter = counter + 1
  local id = "api-" .. thread_id .. "-" .. counter
  local body = string.format(
    '{"event_id":"%s","event_type":"competitor_price","product_ids":[%d],"multiplier":1.05,"source":"bench"}',
    id, 1 + counter % 1000)
  return wrk.format("POST", "/api/v1/publish-market-event",
    { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. (os.getenv("TOKEN") or "") }, body)
end
