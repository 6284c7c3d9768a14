-- wrk script: POST a different text on every request to /api/predict (with the prediction
-- cache on, every request is a miss; compare with predict.lua, where all but the first hit).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
math.randomseed(os.time())  -- another sequence on every run: no repeats across runs
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil,
    '{"text": "The staff were friendly and the room was spotless ' .. n .. ' ' ..
    math.random(1, 1000000000) .. '"}')
end
