"""server.events_per_turn (mlserve.server.eventloop): the event loop reads at most that many
ready sockets per turn, every ready socket gets its turn, and a server so capped still answers
every client (docs/benchmarks.md, "Sixth pass", for what it does under overload)."""

from __future__ import annotations

import asyncio
import gc
import selectors
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from support.data import populate, populated_settings
from support.servers import running

from mlserve.config import load_settings
from mlserve.errors import ConfigError
from mlserve.server.app import GC_YOUNG_THRESHOLD, create_app
from mlserve.server.eventloop import ConnectionGate, cap_ready_events
from mlserve.server.eventloop import _CappedEpoll as CappedEpoll

READY = 10


@contextmanager
def readable_pairs(count: int) -> Iterator[list[socket.socket]]:
    """`count` socket pairs whose reading ends have a byte waiting (level-triggered: they stay
    ready until read)."""
    pairs = [socket.socketpair() for _ in range(count)]
    try:
        for _, writer in pairs:
            writer.send(b"x")
        yield [reader for reader, _ in pairs]
    finally:
        for reader, writer in pairs:
            reader.close()
            writer.close()


def test_a_capped_loop_takes_that_many_ready_sockets_a_turn_and_each_in_turn() -> None:
    loop = asyncio.SelectorEventLoop(selectors.EpollSelector())
    try:
        assert cap_ready_events(loop, 3)
        selector = loop._selector  # type: ignore[attr-defined]
        with readable_pairs(READY) as readers:
            for reader in readers:
                selector.register(reader, selectors.EVENT_READ)
            seen: list[int] = []
            for _ in range(4):  # 3 + 3 + 3 + 1: nobody is reported twice before all once
                turn = [key.fd for key, _ in selector.select(0)]
                assert 1 <= len(turn) <= 3
                seen += turn
            assert sorted(seen[:READY]) == sorted(r.fileno() for r in readers)
            assert cap_ready_events(loop, 5)  # again: the cap changes, not a second wrapper
            assert len(selector.select(0)) == 5
            for reader in readers:
                selector.unregister(reader)
    finally:
        loop.close()


def test_no_cap_for_zero_nor_for_loops_without_epoll() -> None:
    for selector in (selectors.EpollSelector(), selectors.PollSelector()):
        loop = asyncio.SelectorEventLoop(selector)
        try:
            capped = cap_ready_events(
                loop, 0 if isinstance(selector, selectors.EpollSelector) else 3
            )
            assert not capped
            inner = getattr(loop._selector, "_selector", None)  # type: ignore[attr-defined]
            assert not isinstance(inner, CappedEpoll)
            with readable_pairs(READY) as readers:
                for reader in readers:
                    selector.register(reader, selectors.EVENT_READ)
                assert len(selector.select(0)) == READY  # every ready socket at once
                for reader in readers:
                    selector.unregister(reader)
        finally:
            loop.close()


def test_a_capped_loop_answers_every_client() -> None:
    clients = 60

    async def scenario() -> list[bytes]:
        assert cap_ready_events(asyncio.get_running_loop(), 2)

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            line = await reader.readline()
            writer.write(line.upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def client(i: int) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"client %d\n" % i)
            answer = await reader.readline()
            writer.close()
            return answer

        try:
            return await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(clients))), 30)
        finally:
            server.close()
            await server.wait_closed()

    loop = asyncio.SelectorEventLoop(selectors.EpollSelector())
    try:
        answers = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert answers == [b"CLIENT %d\n" % i for i in range(clients)]


def test_a_capped_loop_accepts_that_many_new_connections_a_turn() -> None:
    """asyncio accepts up to the listen backlog per turn (a task, transport and protocol each);
    capped, at most `cap` a turn, and every waiting connection is accepted in the end."""
    waiting, cap = 12, 3

    async def scenario() -> dict[int, int]:
        loop = asyncio.get_running_loop()
        assert cap_ready_events(loop, cap)  # before the server listens, as the lifespan does
        turns = 0

        def tick() -> None:  # runs once per loop turn
            nonlocal turns
            turns += 1
            loop.call_soon(tick)

        per_turn: dict[int, int] = {}
        accepted: list[Any] = []

        class Count(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                per_turn[turns] = per_turn.get(turns, 0) + 1
                accepted.append(transport)

        listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        clients = [socket.create_connection(listener.getsockname()) for _ in range(waiting)]
        try:  # all of them in the accept queue before the loop first looks
            server = await loop.create_server(Count, sock=listener, backlog=64)
            tick()
            for _ in range(200):
                if sum(per_turn.values()) == waiting:
                    break
                await asyncio.sleep(0)
            server.close()
            await server.wait_closed()
        finally:
            for transport in accepted:
                transport.close()
            await asyncio.sleep(0)  # the transports close on the next turn
            for client in clients:
                client.close()
        return per_turn

    loop = asyncio.SelectorEventLoop(selectors.EpollSelector())
    try:
        per_turn = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert sum(per_turn.values()) == waiting
    assert max(per_turn.values()) <= cap, per_turn
    assert len(per_turn) >= waiting // cap


def test_the_listening_socket_is_asked_every_turn_outside_the_cap() -> None:
    """Behind more ready connections than the cap, a listening socket with a client waiting is
    in every turn's events (it used to wait its turn behind all of them)."""
    loop = asyncio.SelectorEventLoop(selectors.EpollSelector())
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    try:
        assert cap_ready_events(loop, 3)
        loop._start_serving(asyncio.Protocol, listener, None, None, 16)  # type: ignore[attr-defined]
        selector = loop._selector  # type: ignore[attr-defined]
        with readable_pairs(READY) as readers, socket.create_connection(listener.getsockname()):
            for reader in readers:
                selector.register(reader, selectors.EVENT_READ)
            for _ in range(5):
                fds = [key.fd for key, _ in selector.select(0)]
                assert listener.fileno() in fds
                assert len(fds) <= 3 + 1
            for reader in readers:
                selector.unregister(reader)
        selector.unregister(listener)
        assert listener.fileno() not in {key.fd for key, _ in selector.select(0)}
    finally:
        loop.close()
        listener.close()


def test_past_the_cap_new_connections_are_refused_at_the_door() -> None:
    """While the gate's count is at its cap, each new connection gets the pre-rendered answer
    and is closed, with no protocol made; under the cap again, connections are served."""
    answer = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    gate = ConnectionGate(2, answer)
    made: list[Any] = []

    class Serve(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            made.append(transport)
            transport.write(b"served")
            transport.close()

    async def read_all(port: int, request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        data = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        writer.close()
        return data

    async def late(port: int, request: bytes) -> bytes:
        """A client that sends its request only after the server has refused it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.3)
        writer.write(request)
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return data

    async def scenario() -> tuple[list[bytes], bytes]:
        loop = asyncio.get_running_loop()
        assert cap_ready_events(loop, 4, gate)
        server = await loop.create_server(Serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            gate.connections = {"one", "two"}  # at the cap
            request = b"POST /api/predict HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}"
            refused = await asyncio.gather(
                *(read_all(port, request) for _ in range(8)),
                # a request in two parts, and one sent late: the 503, not a reset
                read_all(port, request[:-1]),
                late(port, request),
            )
            gate.connections = {"one"}  # under it again
            served = await read_all(port, request)
        finally:
            server.close()
            await server.wait_closed()
        return refused, served

    loop = asyncio.SelectorEventLoop(selectors.EpollSelector())
    try:
        refused, served = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert refused == [answer] * 10
    assert gate.refused == 10
    assert served == b"served" and len(made) == 1


def test_the_server_caps_its_loop_from_the_setting(tmp_path: Path) -> None:
    settings = populated_settings(tmp_path)
    assert settings.server.events_per_turn == 32  # the default
    with TestClient(create_app(settings)) as client:
        loop: Any = client.portal.call(asyncio.get_running_loop)  # type: ignore[union-attr]
        inner = loop._selector._selector
        assert isinstance(inner, CappedEpoll) and inner.cap == 32
        assert client.get("/api/ready").status_code == 200


def test_a_server_process_collects_garbage_less_often_once_loaded(tmp_path: Path) -> None:
    """After the models load, the heap is frozen and young collections run every 10,000
    allocations, not CPython's 700 (under 2,000 connections they took ~12 % of the time)."""
    settings = populated_settings(tmp_path)
    before = gc.get_threshold()
    try:
        with TestClient(create_app(settings, background_load=False, freeze_heap=True)) as client:
            assert client.get("/api/ready").status_code == 200
            assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
            assert GC_YOUNG_THRESHOLD == 10_000
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_negative_cap_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="events_per_turn"):
        load_settings(None, home=str(tmp_path), server={"events_per_turn": -1})


def test_a_server_taking_one_socket_a_turn_answers_every_connection(tmp_path: Path) -> None:
    """A real `mlserve serve` with server.events_per_turn = 1 and 40 connections at once:
    every prediction answered, each with its own text's label."""
    populate(tmp_path / "registry")
    texts = [f"{'great lovely' if i % 2 else 'awful terrible'} stay number {i}" for i in range(40)]
    env = {"MLSERVE_SERVER__EVENTS_PER_TURN": "1"}
    with running(tmp_path / "registry", tmp_path / "home", env=env) as server:

        async def predict_all() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=40)
            async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as http:
                return await asyncio.gather(
                    *(
                        http.post("/api/predict", json={"model": "sentiment", "text": t})
                        for t in texts
                    )
                )

        answers = asyncio.run(predict_all())
        expected = httpx.post(
            server.url + "/api/predict/batch",
            json={"model": "sentiment", "texts": texts},
            timeout=30,
        ).json()
    assert [a.status_code for a in answers] == [200] * len(texts)
    labels = [a.json()["prediction"] for a in answers]
    assert labels == [p["prediction"] for p in expected["predictions"]]
    assert set(labels) == {"pos", "neg"}
