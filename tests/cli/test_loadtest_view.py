"""The live progress line of `mlserve loadtest`: aggregation over processes, bounded memory."""

from __future__ import annotations

from array import array

from mlserve.cli.loadtest_view import LiveView
from mlserve.loadtest import Progress


def test_live_view_aggregates_processes_and_renders_a_line() -> None:
    view = LiveView(processes=2)
    assert "warming up" in str(view.render())
    for index in (0, 1):
        view.update(
            index,
            Progress(
                elapsed=1.0, phase="measure", done=100, errors=index, window=array("d", [1.0, 3.0])
            ),
        )
    line = " ".join(str(view.render()).split())
    assert "200 requests" in line and "errors 1" in line
    assert "p50 1.00 ms p99 3.00 ms so far" in line
    assert "– req/s" in line  # two snapshots a moment apart give no rate yet


def test_live_view_percentiles_cover_the_whole_run_not_only_the_last_second() -> None:
    view = LiveView(processes=1, window_s=0.0)  # the last-second window holds only the newest
    slow = array("d", [100.0] * 60)
    fast = array("d", [1.0] * 40)
    view.update(0, Progress(elapsed=1.0, phase="measure", done=60, errors=0, window=slow))
    view.update(0, Progress(elapsed=2.0, phase="measure", done=100, errors=0, window=fast))
    line = " ".join(str(view.render()).split())

    assert "p50 100.0 ms p99 100.0 ms so far" in line  # 60 of the 100 so far took 100 ms
    assert "last 0 s: p99 1.00 ms" in line


def test_live_view_keeps_a_bounded_uniform_sample_of_a_long_run() -> None:
    view = LiveView(processes=1)
    for i in range(30):  # 150,000 latencies: 1 ms for the first 75,000, then 9 ms
        chunk = array("d", [1.0 if i < 15 else 9.0] * 5000)
        view.update(0, Progress(elapsed=i, phase="measure", done=5000 * (i + 1), errors=0,
                                window=chunk))  # fmt: skip

    assert len(view.sample) == LiveView.RESERVOIR
    share_fast = sum(1 for v in view.sample if v == 1.0) / len(view.sample)
    assert 0.45 < share_fast < 0.55  # uniform over the whole run, not the start or the end
