"""Log lines reach stderr whole: lane workers share it with their parent, so a line written in
two pieces can be torn by another process's line (unbuffered Python writes each piece)."""

from __future__ import annotations

import io
import json
import sys
from typing import TYPE_CHECKING

import pytest
import structlog

from router.logs import configure_logging

if TYPE_CHECKING:
    from collections.abc import Iterator


class Writes(io.StringIO):
    """A stream that keeps every write() call apart."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    yield
    configure_logging("json", "info")  # on the real stderr again


@pytest.mark.usefixtures("restored_logging")
def test_a_json_log_line_is_one_write_ending_in_its_newline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = Writes()
    monkeypatch.setattr(sys, "stderr", stderr)  # here: pytest swaps stderr between phases
    configure_logging("json", "info")
    structlog.get_logger("switchyard.test").info("partition taken", partition="orders#1")
    [line] = stderr.calls
    assert line.endswith("\n")
    assert json.loads(line)["partition"] == "orders#1"
