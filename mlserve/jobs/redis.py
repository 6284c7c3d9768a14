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
(`jobs.ttl_s`) and Redis drops them (a failed job's results and unscored inputs with it).
Times come from Redis's clock (`TIME`), so leases mean the same to every replica and worker
whatever their own clocks say.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson

from mlserve.backends.redis import RedisBackend, RedisCaller, reply_text
from mlserve.jobs.base import (
    DEFAULT_MAX_ATTEMPTS,
    Chunk,
    ClaimOutcome,
    Job,
    JobNotCompletedError,
    JobNotFoundError,
    JobsUnavailableError,
    LeaseLostError,
    ResultPage,
    check_page,
    encode_chunks,
    iter_result_chunks,
    new_job_id,
    page_chunks,
    result_page,
)
from mlserve.jobs.redis_scripts import (
    CANCEL,
    CLAIM,
    FINISH,
    RELEASE,
    RENEW,
    SAVE_CHUNK,
    SUBMIT,
    SWEEP,
)
from mlserve.schemas import JobKind

__all__ = ["RedisJobStore", "parse_job"]

SWEEP_LIMIT = 100
MAX_BACKOFF_DOUBLINGS = 6  # a pending job is re-dispatched at most every grace * 64 s

_INT_FIELDS = frozenset({"version", "total", "done", "chunk_size", "attempts"})
_FLOAT_FIELDS = frozenset(
    {"created_at", "started_at", "finished_at", "expires_at", "lease_expires_at"}
)
_JOB_FIELDS = frozenset(Job.__dataclass_fields__)


def parse_job(reply: Sequence[Any] | Mapping[Any, Any]) -> Job:
    """A Job from a job hash: a dict, or a script's flat [field, value, field, value, ...]."""
    pairs = (
        reply.items() if isinstance(reply, Mapping) else zip(reply[0::2], reply[1::2], strict=False)
    )
    data: dict[str, Any] = {}
    for raw_field, raw_value in pairs:
        field, raw = reply_text(raw_field), reply_text(raw_value)
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
        self._call = RedisCaller(
            backend,
            store="job store",
            subject="async jobs are unavailable: their store (Redis)",
            error=JobsUnavailableError,
        )

    # ------------------------------------------------------------------ plumbing
    def _keys(self, job_id: str) -> tuple[str, str, str, str]:
        base = self.backend.key("job", job_id)
        return base, f"{base}:in", f"{base}:todo", f"{base}:out"

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
        chunks = encode_chunks(inputs, self.chunk_size)
        job_id = new_job_id()
        fields: list[Any] = [
            "id", job_id, "model", model, "version", version, "kind", kind,
            "total", len(inputs), "chunk_size", self.chunk_size,
        ]  # fmt: skip
        if model_reference is not None:
            fields += ["model_reference", model_reference]
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
            raise JobNotFoundError.of(job_id)
        return parse_job(fields)

    async def claim(
        self, job_id: str, owner: str, lease_s: float
    ) -> tuple[ClaimOutcome, Job | None]:
        """Take this job if nobody holds it (pending, given back, or its lease expired)."""
        job, data, todo, out = self._keys(job_id)
        reply = await self._call(
            self._claim,
            keys=[job, data, todo, self.watch_key, out],
            args=[job_id, owner, lease_s, self.max_attempts, self.ttl_s],
        )
        outcome: ClaimOutcome = reply_text(reply[0])  # type: ignore[assignment]
        return outcome, parse_job(reply[1:]) if len(reply) > 1 else None

    async def claim_next(self, owner: str, lease_s: float) -> Job | None:
        """The unfinished job that is longest due (for the in-process runner; Celery workers
        claim the job their task names)."""
        ids = await self._call(self.backend.client.zrange, self.watch_key, 0, SWEEP_LIMIT - 1)
        for raw in ids:
            outcome, job = await self.claim(reply_text(raw), owner, lease_s)
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
        outcome = reply_text(reply[0])
        if outcome == "missing":
            return LeaseLostError(f"job {job_id} was deleted")
        if outcome == "done":
            return LeaseLostError(f"a chunk of job {job_id} is already done")
        status = reply_text(reply[1]) if len(reply) > 1 else "?"
        holder = reply_text(reply[2]) if len(reply) > 2 else ""
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
        if reply_text(reply[0]) != "saved":
            raise self._lost(job_id, reply)
        return parse_job(reply[1:])

    async def _end(self, job_id: str, owner: str, status: str, error: str = "") -> Job:
        job, data, todo, out = self._keys(job_id)
        reply = await self._call(
            self._finish,
            keys=[job, data, todo, out, self.watch_key],
            args=[job_id, owner, status, error, self.ttl_s],
        )
        outcome = reply_text(reply[0])
        if outcome == "incomplete":
            raise ValueError(f"job {job_id} has {reply_text(reply[1])} chunk(s) without results")
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
        outcome = reply_text(reply[0])
        if outcome == "missing":
            raise JobNotFoundError.of(job_id)
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
            raise JobNotFoundError.of(job_id)

    async def _readable(self, job_id: str) -> Job:
        return JobNotCompletedError.check(await self.get(job_id))

    async def results(self, job_id: str, offset: int, limit: int) -> ResultPage:
        check_page(offset, limit)
        job = await self._readable(job_id)
        chunks = page_chunks(job, offset, limit)
        raws = (
            await self._call(
                self.backend.client.hmget, self._keys(job_id)[3], [str(c) for c in chunks]
            )
            if chunks
            else []
        )
        if any(raw is None for raw in raws):  # expired or deleted meanwhile
            raise JobNotFoundError.of(job_id)
        return result_page(job, offset, limit, raws)

    async def iter_results(
        self, job_id: str, offset: int = 0
    ) -> AsyncIterator[list[dict[str, Any]]]:
        job = await self._readable(job_id)
        out = self._keys(job_id)[3]

        async def read(chunk: int) -> bytes | None:
            data: bytes | None = await self._call(self.backend.client.hget, out, str(chunk))
            return data

        async for items in iter_result_chunks(job, offset, read):
            yield items

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
        return [reply_text(i) for i in ids]

    async def unfinished(self) -> int:
        """How many jobs are pending or running."""
        count: int = await self._call(self.backend.client.zcard, self.watch_key)
        return count
