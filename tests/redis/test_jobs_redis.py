"""Async jobs in Redis: the store (leases, resume, expiry, dispatch sweeps), the worker's
runtime, the Celery wiring, and the HTTP routes while Redis is up and while it is down."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("redis", reason="the mlserve-sklearn[redis] extra is not installed")

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from fastapi.testclient import TestClient

from mlserve.config import Settings, load_settings
from mlserve.jobs import (
    JobNotCompletedError,
    JobNotFoundError,
    JobsUnavailableError,
    LeaseLostError,
)
from mlserve.jobs.redis import RedisJobStore
from mlserve.registry import Registry
from mlserve.server.app import create_app

Run = Callable[[Coroutine[Any, Any, Any]], Any]
LEASE = 10.0
TTL = 3600.0
WAIT_S = 20.0


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)  # polling interval of a bounded wait


@pytest.fixture
def open_store(make_backend: Callable[..., Any]) -> Callable[..., RedisJobStore]:
    """open_store(**kwargs): a store on its own backend (a "replica"), the test's prefix."""

    def make(**kwargs: Any) -> RedisJobStore:
        kwargs.setdefault("chunk_size", 3)
        kwargs.setdefault("ttl_s", TTL)
        kwargs.setdefault("dispatch_grace_s", 30.0)
        return RedisJobStore(make_backend(), **kwargs)

    return make


@pytest.fixture
def store(open_store: Callable[..., RedisJobStore]) -> RedisJobStore:
    return open_store()


def submit(run: Run, store: RedisJobStore, n: int = 7) -> Any:
    return run(
        store.submit(
            model_reference="sentiment@production",
            model="sentiment",
            version=3,
            kind="texts",
            inputs=[f"text {i}" for i in range(n)],
        )
    )


def claimed(run: Run, store: RedisJobStore, job_id: str, owner: str, lease: float = LEASE) -> Any:
    outcome, job = run(store.claim(job_id, owner, lease))
    assert outcome == "claimed", outcome
    return job


def finish_all(run: Run, store: RedisJobStore, job_id: str, owner: str) -> None:
    while (chunk := run(store.next_chunk(job_id))) is not None:
        results = [{"prediction": f"p{chunk.start + i}"} for i in range(len(chunk.inputs))]
        run(store.save_chunk_result(job_id, owner, chunk.index, results, LEASE))
    run(store.complete(job_id, owner))


# ---------------------------------------------------------------------------- the store
@pytest.mark.redis
def test_submit_stores_a_pending_job_split_into_chunks(store: RedisJobStore, run: Run) -> None:
    job = submit(run, store)
    again = run(store.get(job.id))
    first = run(store.next_chunk(job.id))

    assert job == again
    assert (job.status, job.total, job.done, job.chunk_size, job.chunks) == ("pending", 7, 0, 3, 3)
    assert (job.model_reference, job.model, job.version, job.kind) == (
        "sentiment@production",
        "sentiment",
        3,
        "texts",
    )
    assert job.created_at > 1_600_000_000  # Redis's clock: UNIX seconds
    assert (first.index, first.start, first.inputs) == (0, 0, ["text 0", "text 1", "text 2"])
    with pytest.raises(ValueError, match="at least one input"):
        run(store.submit(model_reference=None, model="m", version=1, kind="texts", inputs=[]))
    with pytest.raises(JobNotFoundError, match="no job 'nope'"):
        run(store.get("nope"))


@pytest.mark.redis
def test_a_held_lease_is_refused_to_others_and_only_the_owner_renews_it(
    store: RedisJobStore, run: Run
) -> None:
    job = submit(run, store)
    mine = claimed(run, store, job.id, "worker-a")
    outcome, seen = run(store.claim(job.id, "worker-b", LEASE))

    assert (mine.status, mine.lease_owner, mine.attempts) == ("running", "worker-a", 1)
    assert mine.started_at is not None and mine.lease_expires_at is not None
    assert outcome == "held" and seen.lease_owner == "worker-a"
    assert run(store.renew_lease(job.id, "worker-b", LEASE)) is False
    assert run(store.renew_lease(job.id, "worker-a", LEASE)) is True
    assert run(store.get(job.id)).lease_expires_at >= mine.lease_expires_at


@pytest.mark.redis
def test_an_expired_lease_lets_another_worker_resume_at_the_first_chunk_without_results(
    store: RedisJobStore, run: Run
) -> None:
    job = submit(run, store)
    claimed(run, store, job.id, "dies", lease=0.3)
    first = run(store.next_chunk(job.id))
    run(store.save_chunk_result(job.id, "dies", first.index, [{"p": i} for i in range(3)], 0.3))

    taken = wait_until(
        lambda: run(store.claim(job.id, "resumes", LEASE))[0] == "claimed", "lease expiry"
    )
    resumed = run(store.next_chunk(job.id))
    with pytest.raises(LeaseLostError, match="leased by resumes"):
        run(store.save_chunk_result(job.id, "dies", 1, [{"p": 3}], LEASE))

    assert taken
    assert run(store.get(job.id)).attempts == 1  # the dead worker saved a chunk: not counted
    assert (resumed.index, resumed.start, resumed.inputs) == (1, 3, ["text 3", "text 4", "text 5"])
    assert run(store.get(job.id)).done == 3  # the dead worker's chunk is kept


@pytest.mark.redis
def test_a_chunk_is_stored_once(store: RedisJobStore, run: Run) -> None:
    job = submit(run, store, n=4)
    claimed(run, store, job.id, "w")
    saved = run(store.save_chunk_result(job.id, "w", 0, [{"p": 0}] * 3, LEASE))
    with pytest.raises(LeaseLostError, match="already done"):
        run(store.save_chunk_result(job.id, "w", 0, [{"p": 9}] * 3, LEASE))

    assert saved.done == 3
    assert run(store.get(job.id)).done == 3
    assert run(store.next_chunk(job.id)).index == 1


@pytest.mark.redis
def test_complete_needs_every_chunk_then_the_job_expires_with_its_results(
    store: RedisJobStore, run: Run, redis_client: Any, key_prefix: str
) -> None:
    job = submit(run, store)
    claimed(run, store, job.id, "w")
    with pytest.raises(ValueError, match="3 chunk"):
        run(store.complete(job.id, "w"))
    finish_all(run, store, job.id, "w")
    done = run(store.get(job.id))

    assert (done.status, done.done, done.lease_owner) == ("completed", 7, None)
    assert done.expires_at == pytest.approx(done.finished_at + TTL)
    base = f"{key_prefix}job:{job.id}"
    assert 0 < redis_client.pttl(base) <= TTL * 1000
    assert 0 < redis_client.pttl(f"{base}:out") <= TTL * 1000
    assert not redis_client.exists(f"{base}:in", f"{base}:todo")
    assert redis_client.zscore(f"{key_prefix}jobs:watch", job.id) is None
    assert run(store.unfinished()) == 0


@pytest.mark.redis
def test_results_page_across_chunk_boundaries_and_stream_from_an_offset(
    store: RedisJobStore, run: Run
) -> None:
    job = submit(run, store)
    claimed(run, store, job.id, "w")
    with pytest.raises(JobNotCompletedError, match="is running"):
        run(store.results(job.id, 0, 10))
    finish_all(run, store, job.id, "w")

    page = run(store.results(job.id, 2, 4))
    tail = run(store.results(job.id, 6, 10))

    async def stream(offset: int) -> list[Any]:
        return [items async for items in store.iter_results(job.id, offset)]

    assert [r["prediction"] for r in page.items] == ["p2", "p3", "p4", "p5"]
    assert page.next_offset == 6
    assert [r["prediction"] for r in tail.items] == ["p6"] and tail.next_offset is None
    assert [[r["prediction"] for r in c] for c in run(stream(4))] == [["p4", "p5"], ["p6"]]


@pytest.mark.redis
def test_cancel_and_delete(store: RedisJobStore, run: Run, redis_client: Any) -> None:
    pending = submit(run, store)
    running = submit(run, store)
    claimed(run, store, running.id, "w")

    cancelled = run(store.cancel(pending.id))
    stopped = run(store.cancel(running.id))
    with pytest.raises(LeaseLostError, match="is cancelled"):
        run(store.save_chunk_result(running.id, "w", 0, [{"p": 0}] * 3, LEASE))
    again = run(store.cancel(pending.id))
    run(store.delete(pending.id))

    assert cancelled.status == stopped.status == "cancelled"
    assert again is None  # finished already: nothing changes
    with pytest.raises(JobNotFoundError):
        run(store.get(pending.id))
    with pytest.raises(JobNotFoundError):
        run(store.delete(pending.id))
    with pytest.raises(JobNotFoundError):
        run(store.cancel("nope"))


@pytest.mark.redis
def test_release_gives_the_job_back_without_counting_an_attempt(
    store: RedisJobStore, run: Run
) -> None:
    job = submit(run, store)
    claimed(run, store, job.id, "busy")
    run(store.release(job.id, "busy"))
    again = claimed(run, store, job.id, "other")

    assert again.attempts == 1
    assert again.lease_owner == "other"


@pytest.mark.redis
def test_a_job_whose_worker_keeps_dying_is_failed_after_max_attempts(
    open_store: Callable[..., RedisJobStore], run: Run
) -> None:
    store = open_store(max_attempts=2)
    job = submit(run, store)
    claimed(run, store, job.id, "one", lease=0.1)
    wait_until(lambda: run(store.claim(job.id, "two", 0.1))[0] == "claimed", "first expiry")
    outcome = wait_until(
        lambda: (o := run(store.claim(job.id, "three", LEASE))[0]) != "held" and o,
        "second expiry",
    )
    failed = run(store.get(job.id))

    assert outcome == "abandoned"
    assert failed.status == "failed"
    assert "stopped 2 times" in (failed.error or "")


@pytest.mark.redis
def test_two_replicas_never_claim_the_same_job(
    open_store: Callable[..., RedisJobStore], run: Run
) -> None:
    replica_a, replica_b = open_store(), open_store()
    job = submit(run, replica_a)

    async def race() -> list[Any]:
        claims = [
            (replica_a if i % 2 else replica_b).claim(job.id, f"w{i}", LEASE) for i in range(20)
        ]
        return await asyncio.gather(*claims)

    outcomes = [outcome for outcome, _ in run(race())]
    assert outcomes.count("claimed") == 1
    assert outcomes.count("held") == 19
    assert run(replica_b.claim_next("late", LEASE)) is None


@pytest.mark.redis
def test_claim_next_takes_unfinished_jobs_for_the_in_process_runner(
    store: RedisJobStore, run: Run
) -> None:
    first, second = submit(run, store), submit(run, store)
    taken = [run(store.claim_next(f"w{i}", LEASE)) for i in range(3)]

    assert {taken[0].id, taken[1].id} == {first.id, second.id}
    assert taken[2] is None


@pytest.mark.redis
def test_the_sweep_returns_jobs_nobody_works_on_and_looks_again_later(
    open_store: Callable[..., RedisJobStore], run: Run, redis_client: Any, key_prefix: str
) -> None:
    store = open_store(dispatch_grace_s=1.0)
    waiting = submit(run, store)  # its task was lost: nobody claims it
    working = submit(run, store)
    claimed(run, store, working.id, "alive")  # a live lease
    dying = submit(run, store)
    claimed(run, store, dying.id, "dies", lease=0.3)
    seen: list[str] = []

    def both_due() -> bool:
        seen.extend(run(store.due_for_dispatch()))
        return {waiting.id, dying.id} <= set(seen)

    wait_until(both_due, "both jobs due")
    now = float(redis_client.time()[0])
    pushed_back = {
        job_id: redis_client.zscore(f"{key_prefix}jobs:watch", job_id) - now
        for job_id in (waiting.id, dying.id)
    }

    assert sorted(seen) == sorted([waiting.id, dying.id])  # each once; never the live lease
    assert all(delay > 0 for delay in pushed_back.values()), pushed_back  # next look: later
    assert run(store.unfinished()) == 3


def test_an_unreachable_redis_makes_jobs_unavailable(
    make_backend: Callable[..., Any], dead_redis_url: str, run: Run
) -> None:
    store = RedisJobStore(make_backend(url=dead_redis_url))
    with pytest.raises(JobsUnavailableError, match="Redis"):
        submit(run, store)
    with pytest.raises(JobsUnavailableError):
        run(store.get("any"))


# ---------------------------------------------------------------------------- worker and server
@pytest.fixture
def iris(tmp_path: Path) -> tuple[Path, Any, Any]:
    """A registry with iris@production; the estimator and the iris features."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    estimator = LogisticRegression(max_iter=1000).fit(data.data, data.target_names[data.target])
    registry = Registry(tmp_path / "registry")
    registry.register_estimator(estimator, name="iris", aliases=["production"])
    return registry.root, estimator, data.data


def settings_for(registry: Path, home: Path, url: str, prefix: str, **sections: Any) -> Settings:
    return load_settings(
        None,
        home=str(home),
        registry={"path": str(registry)},
        jobs={"chunk_size": 40, "lease_s": 5.0, **sections.pop("jobs", {})},
        redis={"url": url, "key_prefix": prefix, "health_check_interval_s": 0.2},
        **sections,
    )


@pytest.fixture
def worker_runtime() -> Iterator[Callable[[Settings], Any]]:
    """start(settings): a started WorkerRuntime (what `mlserve worker` runs), closed after."""
    from mlserve.worker.app import WorkerRuntime

    runtimes: list[WorkerRuntime] = []

    def start(settings: Settings) -> WorkerRuntime:
        runtime = WorkerRuntime(settings)
        runtimes.append(runtime)
        runtime.start()
        return runtime

    yield start
    for runtime in runtimes:
        runtime.close()


@pytest.mark.redis
def test_a_job_accepted_by_one_replica_is_read_by_another_and_scored_by_a_worker(
    iris: tuple[Path, Any, Any],
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    worker_runtime: Callable[[Settings], Any],
) -> None:
    registry, estimator, x = iris
    settings = settings_for(registry, tmp_path / "home", redis_url, key_prefix)
    with (
        TestClient(create_app(settings)) as replica_a,
        TestClient(create_app(settings)) as replica_b,
    ):
        accepted = replica_a.post("/api/predict/async", json={"records": x.tolist()})
        job_id = accepted.json()["job_id"]
        seen_by_b = replica_b.get(f"/api/jobs/{job_id}")
        summary = worker_runtime(settings).run(job_id)  # in-process: no Celery needed
        finished = replica_b.get(f"/api/predict/async/{job_id}").json()
        lines = replica_a.get(f"/api/jobs/{job_id}/result", params={"format": "jsonl"})
        page = replica_b.get(f"/api/jobs/{job_id}/result", params={"offset": 100, "limit": 60})
        deleted = replica_b.delete(f"/api/jobs/{job_id}")
        gone = replica_a.get(f"/api/jobs/{job_id}")

    assert accepted.status_code == 202, accepted.text
    assert seen_by_b.status_code == 200
    assert seen_by_b.json()["status"] == "pending"
    assert summary == {"job_id": job_id, "outcome": "completed", "done": 150, "total": 150}
    assert finished["status"] == "completed"
    assert finished["progress"] == {"done": 150, "total": 150}
    predictions = [json.loads(line)["prediction"] for line in lines.text.splitlines()]
    assert predictions == list(estimator.predict(x))
    assert [p["prediction"] for p in page.json()["predictions"]] == predictions[100:150]
    assert page.json()["next_offset"] is None
    assert deleted.status_code == 204
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "job_not_found"


@pytest.mark.redis
def test_a_worker_started_before_a_model_was_registered_loads_it_for_the_job(
    tmp_path: Path,
    iris: tuple[Path, Any, Any],
    redis_url: str,
    key_prefix: str,
    worker_runtime: Callable[[Settings], Any],
    run: Run,
    make_backend: Callable[..., Any],
) -> None:
    registry, estimator, x = iris
    settings = settings_for(tmp_path / "late", tmp_path / "home", redis_url, key_prefix)
    runtime = worker_runtime(settings)  # over an empty registry
    Registry(tmp_path / "late").register_estimator(estimator, name="iris")
    store = RedisJobStore(make_backend(), chunk_size=40)
    job = run(
        store.submit(
            model_reference=None, model="iris", version=1, kind="records", inputs=x[:5].tolist()
        )
    )

    assert runtime.run(job.id)["outcome"] == "completed"
    page = run(store.results(job.id, 0, 10))
    assert [p["prediction"] for p in page.items] == list(estimator.predict(x[:5]))
    assert runtime.run(job.id)["outcome"] == "finished"  # a duplicate task: nothing to do


@pytest.mark.redis
def test_a_job_for_a_version_that_does_not_exist_fails_with_a_message(
    iris: tuple[Path, Any, Any],
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    worker_runtime: Callable[[Settings], Any],
    run: Run,
    make_backend: Callable[..., Any],
) -> None:
    registry, _, x = iris
    settings = settings_for(registry, tmp_path / "home", redis_url, key_prefix)
    runtime = worker_runtime(settings)
    store = RedisJobStore(make_backend())
    job = run(
        store.submit(
            model_reference=None, model="iris", version=9, kind="records", inputs=x[:2].tolist()
        )
    )

    assert runtime.run(job.id)["outcome"] == "failed"
    failed = run(store.get(job.id))
    assert "rows 0-1" in (failed.error or "")
    assert "version 9" in (failed.error or "") or "9" in (failed.error or "")


@pytest.mark.redis
def test_the_server_queues_a_celery_task_per_job_and_sweeps_again_for_lost_ones(
    iris: tuple[Path, Any, Any],
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    redis_client: Any,
) -> None:
    registry, _, x = iris
    settings = settings_for(
        registry, tmp_path / "home", redis_url, key_prefix, jobs={"lease_s": 1.0}
    )
    queue = f"{key_prefix}jobs"
    with TestClient(create_app(settings)) as server:
        accepted = server.post("/api/predict/async", json={"features": x[0].tolist()})
        job_id = accepted.json()["job_id"]
        wait_until(lambda: redis_client.llen(queue) >= 1, "the job's task queued")
        # No worker takes it: after the grace (the lease, 1 s) the sweeper queues it again.
        wait_until(lambda: redis_client.llen(queue) >= 2, "the task queued again")

    messages = [json.loads(m) for m in redis_client.lrange(queue, 0, -1)]
    assert {m["headers"]["task"] for m in messages} == {"mlserve.score_job"}
    assert all(job_id in m["headers"]["argsrepr"] for m in messages)


def test_the_celery_app_acknowledges_late_one_task_at_a_time(tmp_path: Path) -> None:
    pytest.importorskip("celery", reason="the mlserve-sklearn[redis] extra is not installed")
    from mlserve.jobs.celery import TASK_NAME, make_celery

    settings = load_settings(
        None, home=str(tmp_path), redis={"url": "redis://127.0.0.1:1/3", "key_prefix": "dep1:"}
    )
    conf = make_celery(settings).conf

    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_default_queue == "dep1:jobs"
    assert conf.broker_url == "redis://127.0.0.1:1/3"
    assert conf.task_ignore_result is True  # the job store holds status and results
    assert TASK_NAME == "mlserve.score_job"


def test_while_redis_is_down_jobs_answer_503_and_predictions_go_on(
    iris: tuple[Path, Any, Any], tmp_path: Path, dead_redis_url: str
) -> None:
    registry, estimator, x = iris
    settings = settings_for(registry, tmp_path / "home", dead_redis_url, "mlst-dead:")
    with TestClient(create_app(settings)) as server:
        submitted = server.post("/api/predict/async", json={"records": x[:3].tolist()})
        status = server.get("/api/jobs/0123456789abcdef")
        predicted = server.post("/api/predict", json={"features": x[0].tolist()})
        health = server.get("/api/health")

    assert submitted.status_code == 503
    assert submitted.json()["error"]["code"] == "jobs_unavailable"
    assert "Redis" in submitted.json()["error"]["message"]
    assert status.status_code == 503
    assert predicted.status_code == 200
    assert predicted.json()["prediction"] == estimator.predict(x[:1])[0]
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["dependencies"] == {"redis": "down"}


@pytest.mark.redis
def test_a_worker_whose_consumer_stalls_makes_it_reconnect(
    iris: tuple[Path, Any, Any],
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    redis_client: Any,
    worker_runtime: Callable[[Settings], Any],
) -> None:
    registry, _, _ = iris
    settings = settings_for(registry, tmp_path / "home", redis_url, key_prefix)
    runtime = worker_runtime(settings)
    reasons: list[str] = []
    runtime.on_stall = reasons.append

    runtime._redis_changed(False)  # what the backend's pings report around an outage
    runtime._redis_changed(True)
    assert reasons == ["Redis is back after an outage"]

    # A task waits in the queue while this worker is idle: its consumer is not reading.
    redis_client.lpush(f"{key_prefix}jobs", b"{}")
    wait_until(lambda: len(reasons) > 1, "the stall noticed", timeout=30)
    assert "wait in the queue while this worker is idle" in reasons[1]
