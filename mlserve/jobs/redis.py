"""The async-job store in Redis, shared by every replica and Celery worker (redis.url set).

Layout under `redis.key_prefix` (every read-modify-write is one Lua script, so atomic):

    job:<id>        hash   the Job's fields (status, progress, lease, timestamps, error)
    job:<id>:in     hash   chunk index -> inputs (JSON) still to score
    job:<id>:todo   zset   the chunk indices still to score (the lowest is next)
    job:<id>:out    hash   chunk index -> results (JSON)
    jobs:watch      zset   unfinished job id -> when to look at it again (dispatch sweeper)

A chunk's input goes as its results arrive, in the same script that checks the lease: what
is left is exactly the work to do, so a job taken over after a worker died resumes at its
first chunk without results, and a chunk is never stored twice. Finished jobs get a TTL
(`jobs.ttl_s`) and Redis drops them. Times come from Redis's clock (`TIME`), so leases mean
the same to every replica and worker whatever their own clocks say.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import orjson

from mlserve.backends.redis import RedisBackend, is_connection_error
from mlserve.errors import MlserveError
from mlserve.jobs import (
    DEFAULT_MAX_ATTEMPTS,
    Chunk,
    Job,
    JobNotCompletedError,
    JobNotFoundError,
    JobsUnavailableError,
    LeaseLostError,
    ResultPage,
    new_job_id,
)
from mlserve.schemas import JobKind

log = logging.getLogger(__name__)

ClaimOutcome = Literal["claimed", "missing", "finished", "held", "abandoned"]
SWEEP_LIMIT = 100
MAX_BACKOFF_DOUBLINGS = 6  # a pending job is re-dispatched at most every grace * 64 s
# Redis answered, but cannot take writes now: for clients that is "unavailable", not a bug.
UNAVAILABLE_REPLIES = ("OOM", "READONLY", "LOADING", "MASTERDOWN", "MISCONF", "NOREPLICAS")

_INT_FIELDS = frozenset({"version", "total", "done", "chunk_size", "attempts"})
_FLOAT_FIELDS = frozenset(
    {"created_at", "started_at", "finished_at", "expires_at", "lease_expires_at"}
)
_JOB_FIELDS = frozenset(Job.__dataclass_fields__)

PRELUDE = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
local function finished(st) return st == 'completed' or st == 'failed' or st == 'cancelled' end
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

# KEYS: job, in, todo, watch. ARGV: id, owner, lease_s, max_attempts, ttl_s.
# Returns {outcome, job fields...}.
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
  -- Its worker died max_attempts times in a row (a model that crashes the process?):
  -- another try would only kill another worker.
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', fmt(t),
             'expires_at', fmt(t + tonumber(ARGV[5])),
             'error', 'abandoned: the worker running it stopped ' .. attempts ..
                      ' times before it finished (see the worker logs)')
  redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_expires_at')
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[1])
  local ttl = math.ceil(tonumber(ARGV[5]) * 1000)
  redis.call('PEXPIRE', KEYS[1], ttl)
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
if redis.call('HGET', KEYS[1], 'status') ~= 'running'
   or redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[2] then
  return 0
end
local expires = now() + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'lease_expires_at', fmt(expires))
redis.call('ZADD', KEYS[2], expires, ARGV[1])
return 1
"""
)

# KEYS: job, in, todo, out, watch. ARGV: id, owner, chunk, data, rows, lease_s.
SAVE_CHUNK = (
    PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local st = redis.call('HGET', KEYS[1], 'status')
local owner = redis.call('HGET', KEYS[1], 'lease_owner')
if st ~= 'running' or owner ~= ARGV[2] then
  return {'lost', st, owner or ''}
end
if redis.call('HDEL', KEYS[2], ARGV[3]) == 0 then return {'done'} end
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
redis.call('HINCRBY', KEYS[1], 'done', tonumber(ARGV[5]))
local expires = now() + tonumber(ARGV[6])
redis.call('HSET', KEYS[1], 'lease_expires_at', fmt(expires))
redis.call('ZADD', KEYS[5], expires, ARGV[1])
return {'saved', unpack(redis.call('HGETALL', KEYS[1]))}
"""
)

# KEYS: job, in, todo, out, watch. ARGV: id, owner, status, error, ttl_s.
FINISH = (
    PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local st = redis.call('HGET', KEYS[1], 'status')
local owner = redis.call('HGET', KEYS[1], 'lease_owner')
if st ~= 'running' or owner ~= ARGV[2] then
  return {'lost', st, owner or ''}
end
if ARGV[3] == 'completed' then
  local left = redis.call('ZCARD', KEYS[3])
  local done = tonumber(redis.call('HGET', KEYS[1], 'done'))
  local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
  if left > 0 or done ~= total then return {'incomplete', tostring(left)} end
end
local t = now()
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'finished_at', fmt(t),
           'expires_at', fmt(t + tonumber(ARGV[5])))
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[4]) end
redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_expires_at')
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[5], ARGV[1])
local ttl = math.ceil(tonumber(ARGV[5]) * 1000)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[4], ttl)
return {'finished', unpack(redis.call('HGETALL', KEYS[1]))}
"""
)

# KEYS: job, watch. ARGV: id, owner, delay_s.
RELEASE = (
    PRELUDE
    + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running'
   or redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[2] then
  return 0
end
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
local t = now()
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', fmt(t),
           'expires_at', fmt(t + tonumber(ARGV[2])))
redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_expires_at')
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[5], ARGV[1])
local ttl = math.ceil(tonumber(ARGV[2]) * 1000)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[4], ttl)
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_job(reply: Sequence[Any] | Mapping[Any, Any]) -> Job:
    """A Job from a job hash: a dict, or a script's flat [field, value, field, value, ...]."""
    pairs = (
        reply.items() if isinstance(reply, Mapping) else zip(reply[0::2], reply[1::2], strict=False)
    )
    data: dict[str, Any] = {}
    for raw_field, raw_value in pairs:
        field, raw = _text(raw_field), _text(raw_value)
        if field not in _JOB_FIELDS:
            continue
        if field in _INT_FIELDS:
            data[field] = int(raw)
        elif field in _FLOAT_FIELDS:
            data[field] = float(raw)
        else:
            data[field] = raw
    data.setdefault("model_reference", None)
    return Job(**data)


def _not_found(job_id: str) -> JobNotFoundError:
    return JobNotFoundError(f"no job '{job_id}' (it may have expired or been deleted)")


class RedisJobStore:
    """JobStore in Redis (see the module docstring); every method is one round trip or one
    script. Raises JobsUnavailableError (503 jobs_unavailable) while Redis is unreachable."""

    def __init__(
        self,
        backend: RedisBackend,
        *,
        chunk_size: int = 500,
        ttl_s: float = 7 * 86400.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        dispatch_grace_s: float = 30.0,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.backend = backend
        self.chunk_size = chunk_size
        self.ttl_s = ttl_s
        self.max_attempts = max_attempts
        self.dispatch_grace_s = dispatch_grace_s
        client = backend.client
        self._submit = client.register_script(SUBMIT)
        self._claim = client.register_script(CLAIM)
        self._renew = client.register_script(RENEW)
        self._save = client.register_script(SAVE_CHUNK)
        self._finish = client.register_script(FINISH)
        self._release = client.register_script(RELEASE)
        self._cancel = client.register_script(CANCEL)
        self._sweep = client.register_script(SWEEP)
        self.watch_key = backend.key("jobs", "watch")

    # ------------------------------------------------------------------ plumbing
    def _keys(self, job_id: str) -> tuple[str, str, str, str]:
        base = self.backend.key("job", job_id)
        return base, f"{base}:in", f"{base}:todo", f"{base}:out"

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        backend = self.backend
        if not backend.available:
            raise self._unavailable()
        try:
            return await fn(*args, **kwargs)
        except MlserveError:
            raise
        except Exception as exc:
            if is_connection_error(exc):
                backend.failed(exc)
                raise self._unavailable() from None
            if any(str(exc).startswith(reply) for reply in UNAVAILABLE_REPLIES):
                log.warning("job store: redis refused a command: %s", exc)
                raise JobsUnavailableError(
                    f"async jobs are unavailable: their store (Redis) refused the request "
                    f"({str(exc).split(' ', 1)[0]}); retry later"
                ) from None
            raise

    @staticmethod
    def _unavailable() -> JobsUnavailableError:
        return JobsUnavailableError(
            "async jobs are unavailable: their store (Redis) is unreachable; retry in a moment"
        )

    # ------------------------------------------------------------------ JobStore
    async def submit(
        self,
        *,
        model_reference: str | None,
        model: str,
        version: int,
        kind: JobKind,
        inputs: Sequence[Any],
    ) -> Job:
        if not inputs:
            raise ValueError("a job needs at least one input")
        job_id = new_job_id()
        size = self.chunk_size
        fields: list[Any] = [
            "id", job_id, "model", model, "version", version, "kind", kind,
            "total", len(inputs), "chunk_size", size,
        ]  # fmt: skip
        if model_reference is not None:
            fields += ["model_reference", model_reference]
        chunks = [
            orjson.dumps(list(inputs[start : start + size]))
            for start in range(0, len(inputs), size)
        ]
        job, data, todo, _ = self._keys(job_id)
        flat = await self._call(
            self._submit,
            keys=[job, data, todo, self.watch_key],
            args=[job_id, self.dispatch_grace_s, len(fields) // 2, *fields, *chunks],
        )
        return parse_job(flat)

    async def get(self, job_id: str) -> Job:
        fields = await self._call(self.backend.client.hgetall, self._keys(job_id)[0])
        if not fields:
            raise _not_found(job_id)
        return parse_job(fields)

    async def claim(
        self, job_id: str, owner: str, lease_s: float
    ) -> tuple[ClaimOutcome, Job | None]:
        """Take this job if nobody holds it (pending, given back, or its lease expired)."""
        job, data, todo, _ = self._keys(job_id)
        reply = await self._call(
            self._claim,
            keys=[job, data, todo, self.watch_key],
            args=[job_id, owner, lease_s, self.max_attempts, self.ttl_s],
        )
        outcome: ClaimOutcome = _text(reply[0])  # type: ignore[assignment]
        return outcome, parse_job(reply[1:]) if len(reply) > 1 else None

    async def claim_next(self, owner: str, lease_s: float) -> Job | None:
        """The unfinished job that is longest due (for the in-process runner; Celery workers
        claim the job their task names)."""
        ids = await self._call(self.backend.client.zrange, self.watch_key, 0, SWEEP_LIMIT - 1)
        for raw in ids:
            outcome, job = await self.claim(_text(raw), owner, lease_s)
            if outcome == "claimed":
                return job
        return None

    async def renew_lease(self, job_id: str, owner: str, lease_s: float) -> bool:
        renewed = await self._call(
            self._renew, keys=[self._keys(job_id)[0], self.watch_key], args=[job_id, owner, lease_s]
        )
        return bool(int(renewed))

    async def next_chunk(self, job_id: str) -> Chunk | None:
        job, data, todo, _ = self._keys(job_id)
        client = self.backend.client
        first = await self._call(client.zrange, todo, 0, 0)
        if not first:
            return None
        index = int(first[0])
        pipe_result = await self._call(self._chunk_and_size, job, data, index)
        raw, size = pipe_result
        if raw is None:
            return None  # saved meanwhile: the caller asks again
        return Chunk(index, index * int(size), orjson.loads(raw))

    async def _chunk_and_size(self, job: str, data: str, index: int) -> tuple[Any, Any]:
        async with self.backend.client.pipeline(transaction=True) as pipe:
            pipe.hget(data, str(index))
            pipe.hget(job, "chunk_size")
            raw, size = await pipe.execute()
        return raw, size

    def _lost(self, job_id: str, reply: Sequence[Any]) -> LeaseLostError:
        outcome = _text(reply[0])
        if outcome == "missing":
            return LeaseLostError(f"job {job_id} was deleted")
        if outcome == "done":
            return LeaseLostError(f"a chunk of job {job_id} is already done")
        status = _text(reply[1]) if len(reply) > 1 else "?"
        holder = _text(reply[2]) if len(reply) > 2 else ""
        return LeaseLostError(f"job {job_id} is {status}, leased by {holder or None}")

    async def save_chunk_result(
        self, job_id: str, owner: str, chunk: int, results: Sequence[Any], lease_s: float
    ) -> Job:
        job, data, todo, out = self._keys(job_id)
        reply = await self._call(
            self._save,
            keys=[job, data, todo, out, self.watch_key],
            args=[job_id, owner, chunk, orjson.dumps(list(results)), len(results), lease_s],
        )
        if _text(reply[0]) != "saved":
            raise self._lost(job_id, reply)
        return parse_job(reply[1:])

    async def _end(self, job_id: str, owner: str, status: str, error: str = "") -> Job:
        job, data, todo, out = self._keys(job_id)
        reply = await self._call(
            self._finish,
            keys=[job, data, todo, out, self.watch_key],
            args=[job_id, owner, status, error, self.ttl_s],
        )
        outcome = _text(reply[0])
        if outcome == "incomplete":
            raise ValueError(f"job {job_id} has {_text(reply[1])} chunk(s) without results")
        if outcome != "finished":
            raise self._lost(job_id, reply)
        return parse_job(reply[1:])

    async def complete(self, job_id: str, owner: str) -> Job:
        return await self._end(job_id, owner, "completed")

    async def fail(self, job_id: str, owner: str, error: str) -> Job:
        return await self._end(job_id, owner, "failed", error)

    async def release(self, job_id: str, owner: str, delay_s: float = 0.0) -> None:
        await self._call(
            self._release,
            keys=[self._keys(job_id)[0], self.watch_key],
            args=[job_id, owner, delay_s],
        )

    async def cancel(self, job_id: str) -> Job | None:
        job, data, todo, out = self._keys(job_id)
        reply = await self._call(
            self._cancel, keys=[job, data, todo, out, self.watch_key], args=[job_id, self.ttl_s]
        )
        outcome = _text(reply[0])
        if outcome == "missing":
            raise _not_found(job_id)
        if outcome == "finished":
            return None
        return parse_job(reply[1:])

    async def delete(self, job_id: str) -> None:
        job, data, todo, out = self._keys(job_id)

        async def run() -> int:
            async with self.backend.client.pipeline(transaction=True) as pipe:
                pipe.delete(job)
                pipe.delete(data, todo, out)
                pipe.zrem(self.watch_key, job_id)
                deleted, *_ = await pipe.execute()
            return int(deleted)

        if await self._call(run) == 0:
            raise _not_found(job_id)

    async def _completed(self, job_id: str) -> Job:
        job = await self.get(job_id)
        if job.status != "completed":
            raise JobNotCompletedError.of(job)
        return job

    async def results(self, job_id: str, offset: int, limit: int) -> ResultPage:
        if offset < 0 or limit < 1:
            raise ValueError("offset must be >= 0 and limit >= 1")
        job = await self._completed(job_id)
        end = min(offset + limit, job.total)
        if offset >= end:
            return ResultPage(job, offset, [])
        size = job.chunk_size
        first, last = offset // size, (end - 1) // size
        raws = await self._call(
            self.backend.client.hmget,
            self._keys(job_id)[3],
            [str(c) for c in range(first, last + 1)],
        )
        items: list[dict[str, Any]] = []
        for raw in raws:
            if raw is None:  # expired or deleted meanwhile
                raise _not_found(job_id)
            items.extend(orjson.loads(raw))
        skip = offset - first * size
        return ResultPage(job, offset, items[skip : skip + (end - offset)])

    async def iter_results(
        self, job_id: str, offset: int = 0
    ) -> AsyncIterator[list[dict[str, Any]]]:
        job = await self._completed(job_id)
        out = self._keys(job_id)[3]
        chunk, skip = divmod(max(offset, 0), job.chunk_size)
        while True:
            raw = await self._call(self.backend.client.hget, out, str(chunk))
            if raw is None:
                return
            items: list[dict[str, Any]] = orjson.loads(raw)
            yield items[skip:] if skip else items
            chunk, skip = chunk + 1, 0

    async def purge_expired(self) -> int:
        """Nothing to do: finished jobs carry a TTL and Redis drops them itself."""
        return 0

    async def close(self) -> None:
        """The backend (shared with rate limits, the cache...) is closed by its owner."""

    # ------------------------------------------------------------------ dispatch sweeper
    async def due_for_dispatch(self, limit: int = SWEEP_LIMIT) -> list[str]:
        """Unfinished jobs nobody is working on (see SWEEP), to be dispatched again."""
        ids = await self._call(
            self._sweep,
            keys=[self.watch_key],
            args=[self.backend.key("job", ""), limit, self.dispatch_grace_s, MAX_BACKOFF_DOUBLINGS],
        )
        return [_text(i) for i in ids]

    async def unfinished(self) -> int:
        """How many jobs are pending or running."""
        count: int = await self._call(self.backend.client.zcard, self.watch_key)
        return count
