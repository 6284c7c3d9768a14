"""The Lua scripts of the Redis job store (mlserve.jobs.redis, which describes the layout):
each read-modify-write of a job is one script, so it is atomic."""

from __future__ import annotations

__all__ = ["CANCEL", "CLAIM", "FINISH", "RELEASE", "RENEW", "SAVE_CHUNK", "SUBMIT", "SWEEP"]

PRELUDE = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
local function finished(st) return st == 'completed' or st == 'failed' or st == 'cancelled' end
-- Why `owner` may not write to the job now: {'missing'}, or {'lost', status, lease holder};
-- nil when it holds the job's lease.
local function not_held(job, owner)
  if redis.call('EXISTS', job) == 0 then return {'missing'} end
  local st = redis.call('HGET', job, 'status')
  local holder = redis.call('HGET', job, 'lease_owner')
  if st ~= 'running' or holder ~= owner then return {'lost', st, holder or ''} end
  return nil
end
-- The holder keeps the job `id` lease_s more from now (the sweeper looks at it then).
local function extend_lease(job, watch, id, lease_s)
  local expires = now() + lease_s
  redis.call('HSET', job, 'lease_expires_at', fmt(expires))
  redis.call('ZADD', watch, expires, id)
end
-- End the job `id` at time t with `status`: no lease, out of the watch set; its hash and
-- results expire ttl_s later. A failed job keeps the inputs it did not score until then too;
-- a completed job has none left, a cancelled one drops them.
local function close_job(t, id, status, ttl_s, job, inputs, todo, watch, out)
  redis.call('HSET', job, 'status', status, 'finished_at', fmt(t), 'expires_at', fmt(t + ttl_s))
  redis.call('HDEL', job, 'lease_owner', 'lease_expires_at')
  redis.call('ZREM', watch, id)
  local ttl = math.ceil(ttl_s * 1000)
  if status == 'failed' then
    redis.call('PEXPIRE', inputs, ttl)
    redis.call('PEXPIRE', todo, ttl)
  else
    redis.call('DEL', inputs, todo)
  end
  redis.call('PEXPIRE', job, ttl)
  redis.call('PEXPIRE', out, ttl)
end
"""

# KEYS: job, in, todo, watch. ARGV: id, grace_s, n_fields, field/value pairs..., chunks...
SUBMIT = (
    PRELUDE
    + """
local t = now()
local n = tonumber(ARGV[3])
local fields = {'created_at', fmt(t), 'status', 'pending', 'done', 0, 'attempts', 0,
                'dispatches', 0}
for i = 4, 3 + 2 * n do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local c = 0
for i = 4 + 2 * n, #ARGV do
  redis.call('HSET', KEYS[2], c, ARGV[i])
  redis.call('ZADD', KEYS[3], c, c)
  c = c + 1
end
redis.call('ZADD', KEYS[4], t + tonumber(ARGV[2]), ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""
)

# KEYS: job, in, todo, watch, out. ARGV: id, owner, lease_s, max_attempts, ttl_s.
# Returns {outcome, job fields...}. `attempts` counts the claims since the job last saved a
# chunk (SAVE_CHUNK resets it): only a job that max_attempts workers in a row died on without
# progress is given up.
CLAIM = (
    PRELUDE
    + """
local t = now()
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return {'missing'}
end
local st = redis.call('HGET', KEYS[1], 'status')
if finished(st) then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return {'finished', unpack(redis.call('HGETALL', KEYS[1]))}
end
local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_expires_at'))
if st == 'running' and lease ~= nil and lease > t then
  return {'held', unpack(redis.call('HGETALL', KEYS[1]))}
end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if st == 'running' and redis.call('HEXISTS', KEYS[1], 'lease_owner') == 1
   and attempts >= tonumber(ARGV[4]) then
  -- Its worker died max_attempts times in a row without saving a chunk (a model that crashes
  -- the process?): another try would only kill another worker.
  redis.call('HSET', KEYS[1], 'error', 'abandoned: the worker running it stopped ' ..
             attempts .. ' times in a row without saving a chunk (see the worker logs)')
  close_job(t, ARGV[1], 'failed', tonumber(ARGV[5]), KEYS[1], KEYS[2], KEYS[3], KEYS[4],
            KEYS[5])
  return {'abandoned', unpack(redis.call('HGETALL', KEYS[1]))}
end
local expires = t + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'status', 'running', 'lease_owner', ARGV[2],
           'lease_expires_at', fmt(expires), 'attempts', attempts + 1, 'dispatches', 0)
redis.call('HSETNX', KEYS[1], 'started_at', fmt(t))
redis.call('ZADD', KEYS[4], expires, ARGV[1])
return {'claimed', unpack(redis.call('HGETALL', KEYS[1]))}
"""
)

# KEYS: job, watch. ARGV: id, owner, lease_s. Returns 1 when renewed.
RENEW = (
    PRELUDE
    + """
if not_held(KEYS[1], ARGV[2]) then return 0 end
extend_lease(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[3]))
return 1
"""
)

# KEYS: job, in, todo, out, watch. ARGV: id, owner, chunk, data, rows, lease_s.
SAVE_CHUNK = (
    PRELUDE
    + """
local lost = not_held(KEYS[1], ARGV[2])
if lost then return lost end
if redis.call('HDEL', KEYS[2], ARGV[3]) == 0 then return {'done'} end
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
redis.call('HINCRBY', KEYS[1], 'done', tonumber(ARGV[5]))
-- Progress: the attempts that count against the job start again from here.
redis.call('HSET', KEYS[1], 'attempts', 0)
extend_lease(KEYS[1], KEYS[5], ARGV[1], tonumber(ARGV[6]))
return {'saved', unpack(redis.call('HGETALL', KEYS[1]))}
"""
)

# KEYS: job, in, todo, out, watch. ARGV: id, owner, status, error, ttl_s.
FINISH = (
    PRELUDE
    + """
local lost = not_held(KEYS[1], ARGV[2])
if lost then return lost end
if ARGV[3] == 'completed' then
  local left = redis.call('ZCARD', KEYS[3])
  local done = tonumber(redis.call('HGET', KEYS[1], 'done'))
  local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
  if left > 0 or done ~= total then return {'incomplete', tostring(left)} end
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[4]) end
close_job(now(), ARGV[1], ARGV[3], tonumber(ARGV[5]), KEYS[1], KEYS[2], KEYS[3], KEYS[5], KEYS[4])
return {'finished', unpack(redis.call('HGETALL', KEYS[1]))}
"""
)

# KEYS: job, watch. ARGV: id, owner, delay_s.
RELEASE = (
    PRELUDE
    + """
if not_held(KEYS[1], ARGV[2]) then return 0 end
local at = now() + tonumber(ARGV[3])
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
redis.call('HDEL', KEYS[1], 'lease_owner')
-- Not held against the job's attempts: it was given back, not abandoned.
redis.call('HSET', KEYS[1], 'lease_expires_at', fmt(at), 'attempts', math.max(attempts - 1, 0),
           'dispatches', 0)
redis.call('ZADD', KEYS[2], at, ARGV[1])
return 1
"""
)

# KEYS: job, in, todo, out, watch. ARGV: id, ttl_s.
CANCEL = (
    PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if finished(redis.call('HGET', KEYS[1], 'status')) then return {'finished'} end
close_job(now(), ARGV[1], 'cancelled', tonumber(ARGV[2]), KEYS[1], KEYS[2], KEYS[3], KEYS[5],
          KEYS[4])
return {'cancelled', unpack(redis.call('HGETALL', KEYS[1]))}
"""
)

# KEYS: watch. ARGV: job key prefix, limit, grace_s, max doublings.
# Unfinished jobs due for a look: jobs nobody claimed in time (the task was lost, or every
# worker is busy) and jobs whose worker stopped renewing its lease. Each is returned (to be
# dispatched again) and its next look pushed back, doubling while nobody takes it; finished
# or vanished ids leave the set. One replica at a time gets a given id.
SWEEP = (
    PRELUDE
    + """
local t = now()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', fmt(t), 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  local st = redis.call('HGET', key, 'status')
  if not st or finished(st) then
    redis.call('ZREM', KEYS[1], id)
  else
    local lease = tonumber(redis.call('HGET', key, 'lease_expires_at'))
    if st == 'running' and lease ~= nil and lease > t
       and redis.call('HEXISTS', key, 'lease_owner') == 1 then
      redis.call('ZADD', KEYS[1], lease, id)
    else
      local n = redis.call('HINCRBY', key, 'dispatches', 1)
      local wait = tonumber(ARGV[3]) * (2 ^ math.min(n - 1, tonumber(ARGV[4])))
      redis.call('ZADD', KEYS[1], t + wait, id)
      out[#out + 1] = id
    end
  end
end
return out
"""
)
