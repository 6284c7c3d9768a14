"""Request ids: 32 hex digits, time-ordered, never repeated, not shared with a forked child."""

from __future__ import annotations

import os
import re
import time

from mlserve.server.ids import RequestIds


def test_ids_are_unique_hex_and_ordered_by_their_millisecond() -> None:
    make = RequestIds()
    ids = [make.new() for _ in range(5000)]  # several refills of the random block
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert len({i[12:] for i in ids}) == len(ids)  # the random part alone never repeats
    stamps = [int(i[:12], 16) for i in ids]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] - time.time_ns() // 1_000_000) < 60_000


def test_a_forked_child_draws_its_own_random_digits() -> None:
    make = RequestIds()
    make.new()  # the parent holds a partly used block
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        try:
            os.write(write, make.new().encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    parent = make.new()
    assert child[12:] != parent[12:]
