"""The suite's own guard: a test that hangs fails, on either loop, and the run goes on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
HANGING = """
import asyncio
import pytest

@pytest.mark.timeout(2)
async def test_hangs() -> None:
    await asyncio.Event().wait()

async def test_after_it() -> None:
    pass
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_hung_test_fails_and_the_run_finishes(tmp_path: Path, loop: str) -> None:
    """On uvloop the default SIGALRM timeout was swallowed by the loop: the run hung."""
    (tmp_path / "test_probe.py").write_text(HANGING)
    env = {**os.environ, "SWITCHYARD_TEST_LOOP": loop, "PYTHONPATH": str(TESTS)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "1", "-p", "conftest", "-p",
         "no:cacheprovider", "--rootdir", str(tmp_path), "-c", os.devnull, "-o",
         "asyncio_mode=auto", str(tmp_path / "test_probe.py")],
        capture_output=True, text=True, env=env, timeout=45, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert "1 failed, 1 passed" in result.stdout, result.stdout[-2000:]
