"""The benchmarks' watch: the share of the machine's CPU the host took during a run, printed
beside each latency run so a tail the host caused is not read as the service's."""

from __future__ import annotations

import pytest

from bench import harness
from bench.harness import Watch


def test_the_stolen_share_is_the_host_s_part_of_the_ticks_that_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readings = iter([(10, 1_000), (15, 1_100)])
    monkeypatch.setattr(harness, "machine_ticks", lambda: next(readings))
    assert Watch.start().stolen_share() == 0.05


def test_no_stolen_share_where_the_machine_s_ticks_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(harness, "machine_ticks", lambda: None)
    assert Watch.start().stolen_share() is None


def test_this_machine_s_ticks_are_read_where_linux_gives_them() -> None:
    ticks = harness.machine_ticks()
    if ticks is None:
        pytest.skip("no /proc/stat here")
    stolen, total = ticks
    assert 0 <= stolen <= total
    assert total > 0
