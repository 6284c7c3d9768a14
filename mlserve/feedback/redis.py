"""The feedback store in Redis, shared by every replica (redis.url set).

Layout under `redis.key_prefix` (the record writes are one Lua script per chunk, so atomic):

    fb:p:<id>                    hash  model, version, input_hash, predicted, confidence,
                                       created_at, and label, labelled_at once labelled;
                                       expires at created_at + retention (PEXPIREAT)
    fb:all                       zset  every prediction id by created_at: expiry and the
                                       max_records bound walk it from the oldest
    fb:l:<model>:<version>       zset  a version's labelled prediction ids by created_at
    fb:t:<model>:<version>:<t>   hash  the minute starting at t: per predicted class, the count
                                       (n|<class>), confidences counted and summed (cn|, cs|) and
                                       their bins (b|<class>|<bin>); expires with the retention
    fb:seen                      hash  "<model>/<version>" → when it last predicted

Each flush evicts, in the same script, what is past retention and what is beyond max_records
(oldest first), from every set it is in; reads also ignore anything older than the retention,
so expiry is exact whenever the purge runs. Times are the recording process's wall clock.
Computed key names share the prefix, so a `{tag}` in redis.key_prefix keeps them in one slot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mlserve.backends.redis import RedisBackend, RedisCaller, reply_text
from mlserve.feedback.base import (
    CONFIDENCE_BINS,
    TALLY_BUCKET_S,
    ClassTally,
    Entry,
    FeedbackUnavailableError,
    LabelOutcome,
    StoredPrediction,
    Tally,
    VersionData,
    bucket_of,
    first_bucket,
    merge_tallies,
    record_values,
    tally_records,
)

__all__ = ["RedisFeedbackStore"]

SCRIPT_BATCH = 1000  # predictions per ADD script call (a script blocks Redis while it runs)
READ_BATCH = 1000  # hashes read per pipeline round trip
PURGE_BATCH = 10_000

PRELUDE = """
local prefix = ARGV[1]
local function pkey(id) return prefix .. 'fb:p:' .. id end
local function lkey(m, v) return prefix .. 'fb:l:' .. m .. ':' .. v end
local all = prefix .. 'fb:all'
local function unlink(id)
  local mv = redis.call('HMGET', pkey(id), 'model', 'version')
  if mv[1] then
    redis.call('ZREM', lkey(mv[1], mv[2]), id)
    redis.call('DEL', pkey(id))
  end
  redis.call('ZREM', all, id)
end
"""

# ARGV: prefix, max_records, cutoff, retention_ms, purge_batch,
#       then per prediction: id, model, version, input_hash, predicted, confidence|'', created_at
ADD = (
    PRELUDE
    + """
local max_records = tonumber(ARGV[2])
local retention_ms = tonumber(ARGV[4])
local seen = {}
for i = 6, #ARGV, 7 do
  local id, m, v = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local created = ARGV[i + 6]
  unlink(id)  -- an id seen before now names this prediction
  local key = pkey(id)
  local fields = {'model', m, 'version', v, 'input_hash', ARGV[i + 3],
                  'predicted', ARGV[i + 4], 'created_at', created}
  if ARGV[i + 5] ~= '' then
    fields[#fields + 1] = 'confidence'
    fields[#fields + 1] = ARGV[i + 5]
  end
  redis.call('HSET', key, unpack(fields))
  redis.call('PEXPIREAT', key, string.format('%.0f', tonumber(created) * 1000 + retention_ms))
  redis.call('ZADD', all, created, id)
  local name = m .. '/' .. v
  if not seen[name] or tonumber(created) > tonumber(seen[name]) then seen[name] = created end
end
for name, created in pairs(seen) do
  local last = redis.call('HGET', prefix .. 'fb:seen', name)
  if not last or tonumber(last) < tonumber(created) then
    redis.call('HSET', prefix .. 'fb:seen', name, created)
  end
end
local expired = redis.call('ZRANGEBYSCORE', all, '-inf', '(' .. ARGV[3], 'LIMIT', 0,
                           tonumber(ARGV[5]))
for _, id in ipairs(expired) do unlink(id) end
local excess = redis.call('ZCARD', all) - max_records
if excess > 0 then
  for _, id in ipairs(redis.call('ZRANGE', all, 0, excess - 1)) do unlink(id) end
end
return #expired
"""
)

# ARGV: prefix, cutoff, now, retention_ms, then pairs: id, label. Returns 0 unknown,
# 1 accepted (first label), 2 replaced, per pair.
SET_LABELS = (
    PRELUDE
    + """
local cutoff = tonumber(ARGV[2])
local out = {}
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  local f = redis.call('HMGET', pkey(id), 'model', 'version', 'created_at', 'label')
  if not f[1] or tonumber(f[3]) < cutoff then
    out[#out + 1] = 0
  else
    redis.call('HSET', pkey(id), 'label', ARGV[i + 1], 'labelled_at', ARGV[3])
    redis.call('ZADD', lkey(f[1], f[2]), f[3], id)
    redis.call('PEXPIRE', lkey(f[1], f[2]), tonumber(ARGV[4]))
    if f[4] then out[#out + 1] = 2 else out[#out + 1] = 1 end
  end
end
return out
"""
)

FIELDS = ("model", "version", "input_hash", "predicted", "confidence", "created_at", "label")
PAIR_FIELDS = ("label", "predicted")


def _parse_tally(fields: Mapping[Any, Any]) -> Tally:
    """A minute's hash (n|<class>, cn|<class>, cs|<class>, b|<class>|<bin>) as a Tally."""
    tally: Tally = {}
    for raw_name, raw_value in fields.items():
        name, value = _text(raw_name) or "", _text(raw_value) or "0"
        kind, _, rest = name.partition("|")
        if kind == "b":
            predicted, _, index = rest.rpartition("|")
            if index.isdigit() and int(index) < CONFIDENCE_BINS:
                tally.setdefault(predicted, ClassTally()).bins[int(index)] += int(value)
            continue
        counts = tally.setdefault(rest, ClassTally())
        if kind == "n":
            counts.n += int(value)
        elif kind == "cn":
            counts.confidence_n += int(value)
        elif kind == "cs":
            counts.confidence_sum += float(value)
    return tally


def _text(value: Any) -> str | None:
    return None if value is None else reply_text(value)


class RedisFeedbackStore:
    """FeedbackStore in Redis (see the module docstring). Raises FeedbackUnavailableError (503
    feedback_unavailable) while Redis is unreachable; the recorder keeps predictions in its
    bounded buffer meanwhile and writes them when Redis is back."""

    def __init__(
        self,
        backend: RedisBackend,
        *,
        retention_s: float = 7 * 86400.0,
        max_records: int = 1_000_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.retention_s = retention_s
        self.max_records = max_records
        self.clock = clock
        self.prefix = backend.key_prefix
        client = backend.client
        self._add = client.register_script(ADD)
        self._set_labels = client.register_script(SET_LABELS)
        self._call = RedisCaller(
            backend,
            store="feedback store",
            subject="feedback is unavailable: its store (Redis)",
            error=FeedbackUnavailableError,
        )

    # ------------------------------------------------------------------ plumbing
    def _key(self, *parts: str | int) -> str:
        return self.backend.key("fb", *parts)

    def _cutoff(self) -> float:
        return self.clock() - self.retention_s

    async def _hashes(self, ids: Sequence[str], fields: Sequence[str]) -> list[list[Any]]:
        """HMGET `fields` of each id's record (a list of None for a missing record)."""
        out: list[list[Any]] = []
        client = self.backend.client
        for start in range(0, len(ids), READ_BATCH):
            async with client.pipeline(transaction=False) as pipe:
                for request_id in ids[start : start + READ_BATCH]:
                    pipe.hmget(self._key("p", request_id), *fields)
                out.extend(await self._call(pipe.execute))
        return out

    # ------------------------------------------------------------------ FeedbackStore
    async def add(self, batch: Sequence[Entry]) -> None:
        records = record_values(batch)  # a batch's rows one by one
        retention_ms = int(self.retention_s * 1000)
        for start in range(0, len(records), SCRIPT_BATCH):
            args: list[Any] = [
                self.prefix,
                self.max_records,
                repr(self._cutoff()),
                retention_ms,
                PURGE_BATCH,
            ]
            for *fields, confidence, created in records[start : start + SCRIPT_BATCH]:
                args += [
                    *fields,
                    "" if confidence is None else repr(float(confidence)),
                    repr(created),
                ]
            await self._call(self._add, keys=[], args=args)
        async with self.backend.client.pipeline(transaction=False) as pipe:
            for (model, version, bucket), tally in tally_records(records).items():
                key = self._tally_key(model, version, bucket)
                for predicted, counts in tally.items():
                    pipe.hincrby(key, f"n|{predicted}", counts.n)
                    if counts.confidence_n:
                        pipe.hincrby(key, f"cn|{predicted}", counts.confidence_n)
                        pipe.hincrbyfloat(key, f"cs|{predicted}", counts.confidence_sum)
                    for i, n in enumerate(counts.bins):
                        if n:
                            pipe.hincrby(key, f"b|{predicted}|{i}", n)
                # Kept while a window can still count it.
                pipe.pexpireat(key, int((bucket + self.retention_s + TALLY_BUCKET_S) * 1000))
            await self._call(pipe.execute)

    def _tally_key(self, model: str, version: int, bucket: float) -> str:
        return self._key("t", model, version, int(bucket))

    async def _tallies_by_bucket(
        self, model: str, version: int, since: float
    ) -> list[Tally | None]:
        """The tally of each minute from the first one starting at or after `since` to now
        (None for a minute without predictions)."""
        client = self.backend.client
        buckets = range(int(first_bucket(since)), int(self.clock()) + 1, int(TALLY_BUCKET_S))
        out: list[Tally | None] = []
        for start in range(0, len(buckets), READ_BATCH):
            async with client.pipeline(transaction=False) as pipe:
                for bucket in buckets[start : start + READ_BATCH]:
                    pipe.hgetall(self._tally_key(model, version, bucket))
                replies = await self._call(pipe.execute)
            out.extend(_parse_tally(reply) if reply else None for reply in replies)
        return out

    async def lookup(self, ids: Sequence[str]) -> dict[str, StoredPrediction]:
        unique = list(dict.fromkeys(ids))
        cutoff = self._cutoff()
        rows = await self._hashes(unique, (*FIELDS, "labelled_at"))
        out: dict[str, StoredPrediction] = {}
        for request_id, row in zip(unique, rows, strict=True):
            model, version, digest, predicted, confidence, created, label, labelled = map(
                _text, row
            )
            if model is None or version is None or created is None or float(created) < cutoff:
                continue
            out[request_id] = StoredPrediction(
                id=request_id,
                model=model,
                version=int(version),
                input_hash=digest or "",
                predicted=predicted or "",
                confidence=float(confidence) if confidence is not None else None,
                created_at=float(created),
                label=label,
                labelled_at=float(labelled) if labelled is not None else None,
            )
        return out

    async def set_labels(self, items: Sequence[tuple[str, str]]) -> list[LabelOutcome]:
        if not items:
            return []
        args: list[Any] = [
            self.prefix,
            repr(self._cutoff()),
            repr(self.clock()),
            int(self.retention_s * 1000),
        ]
        for request_id, label in items:
            args += [request_id, label]
        codes = await self._call(self._set_labels, keys=[], args=args)
        names: dict[int, LabelOutcome] = {0: "unknown", 1: "accepted", 2: "replaced"}
        return [names[int(code)] for code in codes]

    async def _live_versions(self) -> list[tuple[str, int]]:
        seen = await self._call(self.backend.client.hgetall, self._key("seen"))
        since = first_bucket(self._cutoff())
        out: list[tuple[str, int]] = []
        for name, last in seen.items():
            model, _, number = (_text(name) or "").rpartition("/")
            if model and number.isdigit() and bucket_of(float(_text(last) or 0)) >= since:
                out.append((model, int(number)))
        return sorted(out)

    async def versions(self, model: str) -> list[int]:
        return [v for m, v in await self._live_versions() if m == model]

    async def keys(self) -> list[tuple[str, int]]:
        return await self._live_versions()

    async def version_data(
        self,
        model: str,
        version: int,
        *,
        rolling: int,
        windows: Mapping[str, float] | None,
        drift_window_s: float,
    ) -> VersionData:
        client = self.backend.client
        now = self.clock()
        cutoff = now - self.retention_s
        lkey = self._key("l", model, version)
        async with client.pipeline(transaction=False) as pipe:
            pipe.zcount(lkey, repr(cutoff), "+inf")
            pipe.zrevrangebyscore(lkey, "+inf", repr(cutoff), start=0, num=rolling)
            if windows:
                oldest = max(cutoff, now - max(windows.values()))
                pipe.zrangebyscore(lkey, repr(oldest), "+inf", withscores=True)
            replies = await self._call(pipe.execute)
        labelled, rolling_ids = replies[:2]
        pairs: list[tuple[str, str]] = []
        rolling_rows = await self._hashes([_text(i) or "" for i in rolling_ids], PAIR_FIELDS)
        for row in rolling_rows:
            label, predicted = map(_text, row)
            if label is not None and predicted is not None:
                pairs.append((label, predicted))
        counted: dict[str, dict[tuple[str, str], int]] = {}
        if windows:
            scored = [(_text(i) or "", float(s)) for i, s in replies[2]]
            rows = await self._hashes([i for i, _ in scored], PAIR_FIELDS)
            for name, seconds in windows.items():
                since = max(cutoff, now - seconds)
                window: dict[tuple[str, str], int] = {}
                for (_, created), row in zip(scored, rows, strict=True):
                    label, predicted = map(_text, row)
                    if created >= since and label is not None and predicted is not None:
                        window[(label, predicted)] = window.get((label, predicted), 0) + 1
                counted[name] = window
        drift_since = first_bucket(max(cutoff, now - drift_window_s))
        predictions = 0
        recent: Tally = {}
        for bucket_start, tally in zip(
            range(int(first_bucket(cutoff)), int(now) + 1, int(TALLY_BUCKET_S)),
            await self._tallies_by_bucket(model, version, cutoff),
            strict=True,
        ):
            if tally is None:
                continue
            predictions += sum(c.n for c in tally.values())
            if bucket_start >= drift_since:
                merge_tallies(recent, tally)
        return VersionData(
            predictions=predictions,
            labelled=int(labelled),
            rolling=pairs,
            windows=counted,
            recent=recent,
        )

    async def count(self) -> int:
        count: int = await self._call(self.backend.client.zcard, self._key("all"))
        return count

    async def close(self) -> None:
        """Nothing of its own to close: the backend's client belongs to the app."""
