"""The rollout store in Redis: create and compare-and-set, one running rollout per model,
leases on Redis's clock, additive windows that expire, replicas racing, and Redis down."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.net import free_port
from support.redis import RedisServer
from support.wait import wait_for

pytest.importorskip("redis", reason="the mlserve-sklearn[redis] extra is not installed")

from support.rollouts import counts, ended, next_step, running_state

from mlserve.config import load_settings
from mlserve.rollouts import (
    RolloutConflictError,
    RolloutState,
    RolloutsUnavailableError,
    WindowCounts,
    new_rollout_id,
    open_rollout_store,
)
from mlserve.rollouts.redis import WINDOW_TTL_S, RedisRolloutStore

pytestmark = pytest.mark.redis

Run = Callable[[Coroutine[Any, Any, Any]], Any]
REPLICAS = 4


@pytest.fixture
def open_store(make_backend: Callable[..., Any]) -> Callable[..., RedisRolloutStore]:
    """open_store(**kwargs): a store on a backend of its own (a "replica"), the test's prefix."""

    def make(**kwargs: Any) -> RedisRolloutStore:
        return RedisRolloutStore(make_backend(), **kwargs)

    return make


@pytest.fixture
def store(open_store: Callable[..., RedisRolloutStore]) -> RedisRolloutStore:
    return open_store()


# ---------------------------------------------------------------------------- create, replace
def test_create_stores_a_running_rollout_at_revision_1(
    store: RedisRolloutStore, run: Run, redis_client: Any, key_prefix: str
) -> None:
    state = running_state()
    created = run(store.create(state))

    assert created == dataclasses.replace(state, revision=1)
    assert run(store.get("iris")) == created
    assert run(store.get("other")) is None
    stored = redis_client.hgetall(f"{key_prefix}rollout:m:iris")
    assert (stored[b"id"], stored[b"status"], stored[b"revision"]) == (
        state.id.encode(),
        b"running",
        b"1",
    )


def test_create_refuses_a_state_that_is_not_running(store: RedisRolloutStore, run: Run) -> None:
    with pytest.raises(ValueError, match="running"):
        run(store.create(ended(running_state())))
    assert run(store.get("iris")) is None


def test_replace_at_the_stored_revision_writes_the_next_one(
    store: RedisRolloutStore, run: Run
) -> None:
    created = run(store.create(running_state()))
    written = run(store.replace(next_step(created), expected_revision=1))

    assert written is not None
    assert (written.revision, written.step, len(written.events)) == (2, 1, 2)
    assert run(store.get("iris")) == written
    again = run(store.replace(next_step(written), expected_revision=2))
    assert again is not None and again.revision == 3


def test_replace_with_a_stale_revision_writes_nothing(store: RedisRolloutStore, run: Run) -> None:
    created = run(store.create(running_state()))
    first = run(store.replace(next_step(created), expected_revision=1))
    late = run(store.replace(ended(created, "aborted"), expected_revision=1))

    assert late is None
    assert run(store.get("iris")) == first
    assert [s.id for s in run(store.running())] == [created.id]


def test_replace_of_another_rollout_id_writes_nothing(store: RedisRolloutStore, run: Run) -> None:
    created = run(store.create(running_state()))
    stranger = dataclasses.replace(next_step(created), id=new_rollout_id())

    assert run(store.replace(stranger, expected_revision=1)) is None
    assert run(store.replace(next_step(running_state("absent")), expected_revision=0)) is None
    assert run(store.get("iris")) == created
    assert run(store.get("absent")) is None


def test_a_second_running_rollout_of_a_model_is_a_conflict(
    open_store: Callable[..., RedisRolloutStore], run: Run
) -> None:
    replica_a, replica_b = open_store(), open_store()
    first = run(replica_a.create(running_state()))
    with pytest.raises(RolloutConflictError, match=first.id) as raised:
        run(replica_b.create(running_state()))

    assert raised.value.status_code == 409
    assert run(replica_b.get("iris")) == first
    assert run(replica_b.create(running_state("wine"))).revision == 1  # another model may


def test_a_rollout_replaces_the_ended_one_of_its_model(store: RedisRolloutStore, run: Run) -> None:
    first = run(store.create(running_state()))
    run(store.replace(ended(first, "rolled_back"), expected_revision=1))
    second = run(store.create(running_state()))

    assert second.revision == 1
    assert run(store.get("iris")) == second
    assert run(store.replace(ended(first), expected_revision=2)) is None  # the old one is gone


def test_running_lists_only_running_rollouts(
    open_store: Callable[..., RedisRolloutStore], run: Run
) -> None:
    store, other_replica = open_store(), open_store()
    iris = run(store.create(running_state("iris")))
    wine = run(store.create(running_state("wine")))
    digits = run(store.create(running_state("digits")))
    run(store.replace(ended(wine), expected_revision=1))

    assert run(other_replica.running()) == [digits, iris]
    run(store.replace(ended(iris, "aborted"), expected_revision=1))
    run(store.replace(ended(digits, "aborted"), expected_revision=1))
    assert run(other_replica.running()) == []


def test_replicas_racing_to_replace_one_revision_have_one_winner(
    open_store: Callable[..., RedisRolloutStore], run: Run
) -> None:
    replicas = [open_store() for _ in range(REPLICAS)]
    created = run(replicas[0].create(running_state()))

    async def race() -> list[RolloutState | None]:
        return await asyncio.gather(
            *(
                replica.replace(
                    dataclasses.replace(created, figures={"writer": i}), expected_revision=1
                )
                for i, replica in enumerate(replicas)
            )
        )

    written = run(race())

    winners = [w for w in written if w is not None]
    assert len(winners) == 1 and winners[0].revision == 2
    assert run(replicas[0].get("iris")) == winners[0]


def test_replicas_counting_through_compare_and_set_lose_no_update(
    open_store: Callable[..., RedisRolloutStore], run: Run
) -> None:
    replicas = [open_store() for _ in range(REPLICAS)]
    run(replicas[0].create(running_state()))
    per_replica = 20

    async def count(replica: RedisRolloutStore) -> None:
        for _ in range(per_replica):
            while True:
                state = await replica.get("iris")
                assert state is not None
                mine = dataclasses.replace(state, figures={"n": state.figures.get("n", 0) + 1})
                if await replica.replace(mine, expected_revision=state.revision) is not None:
                    break

    async def all_of_them() -> None:
        await asyncio.gather(*(count(replica) for replica in replicas))

    run(all_of_them())

    stored = run(replicas[0].get("iris"))
    assert stored.figures["n"] == REPLICAS * per_replica
    assert stored.revision == 1 + REPLICAS * per_replica


# ---------------------------------------------------------------------------- leases
def test_a_free_lease_is_taken_and_refused_to_others_while_live(
    open_store: Callable[..., RedisRolloutStore], run: Run
) -> None:
    replica_a, replica_b = open_store(), open_store()
    assert run(replica_a.acquire("iris", "a", 60.0))
    assert not run(replica_b.acquire("iris", "b", 60.0))
    assert run(replica_b.acquire("wine", "b", 60.0))  # leases are per model


def test_the_holder_renews_its_lease(
    store: RedisRolloutStore, run: Run, redis_client: Any, key_prefix: str
) -> None:
    assert run(store.acquire("iris", "a", 1.0))
    assert run(store.acquire("iris", "a", 120.0))

    assert 60_000 < redis_client.pttl(f"{key_prefix}rollout:lease:iris") <= 120_000
    assert not run(store.acquire("iris", "b", 1.0))


def test_an_expired_lease_goes_to_the_next_holder(store: RedisRolloutStore, run: Run) -> None:
    assert run(store.acquire("iris", "a", 0.2))
    assert not run(store.acquire("iris", "b", 60.0))

    wait_for(lambda: run(store.acquire("iris", "b", 60.0)), "b takes the expired lease", 5.0)
    assert not run(store.acquire("iris", "a", 60.0))


def test_only_the_holder_releases_a_lease(store: RedisRolloutStore, run: Run) -> None:
    assert run(store.acquire("iris", "a", 60.0))
    run(store.release("iris", "b"))
    assert not run(store.acquire("iris", "b", 60.0))
    run(store.release("iris", "a"))
    assert run(store.acquire("iris", "b", 60.0))
    run(store.release("absent", "a"))  # nothing to release: no error


def test_a_lease_needs_a_positive_ttl(store: RedisRolloutStore, run: Run) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        run(store.acquire("iris", "a", 0.0))


def test_replicas_racing_for_a_lease_have_one_holder(
    open_store: Callable[..., RedisRolloutStore], run: Run
) -> None:
    replicas = [open_store() for _ in range(REPLICAS)]

    async def race() -> list[bool]:
        return await asyncio.gather(
            *(replica.acquire("iris", f"r{i}", 60.0) for i, replica in enumerate(replicas))
        )

    taken = run(race())

    assert sorted(taken) == [False] * (REPLICAS - 1) + [True]


# ---------------------------------------------------------------------------- windows
def test_windows_add_up_by_rollout_step_and_version(store: RedisRolloutStore, run: Run) -> None:
    rollout = run(store.create(running_state()))
    slow_failure = counts(1, errors=1, seconds=2.0)
    run(store.add_windows([(rollout.id, 0, 1, counts(10)), (rollout.id, 0, 2, counts(3))]))
    run(store.add_windows([(rollout.id, 0, 2, slow_failure), (rollout.id, 1, 2, counts(7))]))
    run(store.add_windows([(rollout.id, 2, 1, WindowCounts())]))  # nothing to add
    run(store.add_windows([]))

    expected = counts(3)
    expected.merge(slow_failure)
    assert run(store.windows(rollout.id, 0)) == {1: counts(10), 2: expected}
    assert run(store.windows(rollout.id, 1)) == {2: counts(7)}
    assert run(store.windows(rollout.id, 2)) == {}
    assert run(store.windows("other", 0)) == {}


def test_windows_from_several_replicas_are_all_counted(
    open_store: Callable[..., RedisRolloutStore], run: Run
) -> None:
    replicas = [open_store() for _ in range(REPLICAS)]
    rollout = run(replicas[0].create(running_state()))
    rounds = 25

    async def write(replica: RedisRolloutStore) -> None:
        for _ in range(rounds):
            await replica.add_windows(
                [(rollout.id, 0, 1, counts(2, errors=1)), (rollout.id, 0, 2, counts(1))]
            )

    async def all_of_them() -> None:
        await asyncio.gather(*(write(replica) for replica in replicas))

    run(all_of_them())

    totals = run(replicas[1].windows(rollout.id, 0))
    writes = REPLICAS * rounds
    assert (totals[1].requests, totals[1].errors, sum(totals[1].buckets)) == (
        2 * writes,
        writes,
        2 * writes,
    )
    assert (totals[2].requests, totals[2].errors) == (writes, 0)


def test_windows_expire_and_a_new_rollout_drops_those_of_the_one_it_replaces(
    open_store: Callable[..., RedisRolloutStore], run: Run, redis_client: Any, key_prefix: str
) -> None:
    store = open_store(window_ttl_s=3600.0)
    first = run(store.create(running_state()))
    other = run(store.create(running_state("wine")))
    run(store.add_windows([(first.id, 0, 1, counts(5)), (first.id, 2, 1, counts(5))]))
    run(store.add_windows([(other.id, 0, 1, counts(5))]))
    run(store.replace(ended(first), expected_revision=1))

    assert 0 < redis_client.pttl(f"{key_prefix}rollout:w:{first.id}:0") <= 3_600_000
    assert run(store.windows(first.id, 2)) == {1: counts(5)}  # ended: still readable
    run(store.create(running_state()))

    assert run(store.windows(first.id, 0)) == {}
    assert run(store.windows(first.id, 2)) == {}
    assert run(store.windows(other.id, 0)) == {1: counts(5)}  # another model's: kept
    assert redis_client.keys(f"{key_prefix}rollout:w:*") == [
        f"{key_prefix}rollout:w:{other.id}:0".encode()
    ]
    assert WINDOW_TTL_S == 7 * 86400.0


# ---------------------------------------------------------------------------- factory, outages
def test_the_factory_uses_redis_when_there_is_a_backend(
    make_backend: Callable[..., Any], run: Run, tmp_path: Path
) -> None:
    settings = load_settings(None, home=str(tmp_path / "home"))
    store = run(open_rollout_store(settings, redis=make_backend()))

    assert isinstance(store, RedisRolloutStore)
    created = run(store.create(running_state()))
    assert run(store.get("iris")) == created
    run(store.close())
    assert not (settings.state_dir / "rollouts.sqlite3").exists()


def test_an_unreachable_redis_makes_rollouts_unavailable(
    make_backend: Callable[..., Any], dead_redis_url: str, run: Run
) -> None:
    store = RedisRolloutStore(make_backend(url=dead_redis_url))
    state = running_state()
    calls: list[Callable[[], Coroutine[Any, Any, Any]]] = [
        lambda: store.get("iris"),
        lambda: store.create(state),
        lambda: store.replace(state, expected_revision=1),
        lambda: store.running(),
        lambda: store.acquire("iris", "a", 10.0),
        lambda: store.release("iris", "a"),
        lambda: store.add_windows([(state.id, 0, 1, counts(1))]),
        lambda: store.windows(state.id, 0),
    ]
    for call in calls:
        with pytest.raises(RolloutsUnavailableError, match="Redis") as raised:
            run(call())
        assert raised.value.status_code == 503


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (to stop and start again), stopped at the end."""
    server = RedisServer(port=free_port(), folder=tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_redis_going_down_makes_rollouts_unavailable_until_it_is_back(
    own_redis: RedisServer, make_backend: Callable[..., Any], run: Run
) -> None:
    backend = make_backend(url=own_redis.url, prefix="mlst-outage:")
    store = RedisRolloutStore(backend)
    created = run(store.create(running_state()))

    own_redis.stop()
    with pytest.raises(RolloutsUnavailableError, match="unreachable"):
        run(store.get("iris"))
    with pytest.raises(RolloutsUnavailableError):
        run(store.replace(next_step(created), expected_revision=1))

    own_redis.start()  # appendonly: the rollout comes back with it
    wait_for(lambda: run(backend.ping()), "the backend sees Redis again", 10.0)
    assert run(store.get("iris")) == created
    assert run(store.replace(next_step(created), expected_revision=1)) is not None
