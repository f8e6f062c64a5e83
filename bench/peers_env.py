"""The peers' own venv, bench/.peers-venv: created on first use, never the project's venv.

    .venv/bin/python -m bench.peers_env          # create or repair it, then say what is in it

The suite calls `ensure()`: it returns the venv's python, or None and a reason when the venv
cannot be made (no network, no `venv` module), in which case the peers are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
DEFAULT_VENV = BENCH_DIR / ".peers-venv"
REQUIREMENTS = BENCH_DIR / "peers" / "requirements.txt"
STAMP = ".bench-requirements"  # inside the venv: the hash of what was installed
CHECK = "import arq, celery, dramatiq, redis, taskiq, taskiq_redis"
VERSIONS = (
    "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
    "('dramatiq', 'arq', 'celery', 'kombu', 'taskiq', 'taskiq-redis', 'redis')}))"
)
INSTALL_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class PeersEnv:
    python: Path | None
    reason: str = ""  # why there is no python
    versions: dict[str, str] | None = None


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _wanted() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


async def _run(*argv: str | Path, timeout: float) -> tuple[int, str]:  # noqa: ASYNC109
    """Run a command, echoing its output as progress; (exit code, last lines of output)."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv),
        cwd=PROJECT_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    tail: list[str] = []
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                if not line or "is ignored: it is neither a file nor a directory" in line:
                    continue  # pip's noise about optional local indexes
                tail = [*tail[-9:], line]
                _progress(f"  | {line}")
            await proc.wait()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return proc.returncode or 0, "\n".join(tail)


async def _ready(python: Path) -> bool:
    if not await asyncio.to_thread(python.exists):
        return False
    proc = await asyncio.create_subprocess_exec(
        str(python), "-c", CHECK, cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return await proc.wait() == 0


async def versions(python: Path) -> dict[str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(python), "-c", VERSIONS, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    loaded: dict[str, str] = json.loads(out or b"{}")
    return loaded


async def ensure(venv: Path = DEFAULT_VENV, *, create: bool = True) -> PeersEnv:
    """The peers' python, creating or updating the venv when needed."""
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    wanted = _wanted()
    current = stamp.read_text().strip() if stamp.exists() else ""
    if current == wanted and await _ready(python):
        return PeersEnv(python, versions=await versions(python))
    if not create:
        return PeersEnv(None, f"{venv} is missing or out of date (and --no-install was given)")
    if not await asyncio.to_thread(python.exists):
        _progress(f"creating the peers' venv {venv} (first use only; about 20 s)")
        await asyncio.to_thread(shutil.rmtree, venv, ignore_errors=True)
        code, tail = await _run(sys.executable, "-m", "venv", venv, timeout=120)
        if code != 0:
            return PeersEnv(None, f"python -m venv {venv} failed:\n{tail}")
    _progress(f"installing the peers into {venv} from {REQUIREMENTS.relative_to(PROJECT_ROOT)}")
    code, tail = await _run(
        python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
        "-r", REQUIREMENTS, timeout=INSTALL_TIMEOUT_S,
    )  # fmt: skip
    if code != 0 or not await _ready(python):
        return PeersEnv(None, f"pip install into {venv} failed (exit {code}):\n{tail}")
    stamp.write_text(wanted + "\n")
    found = await versions(python)
    _progress(f"peers' venv ready: {found}")
    return PeersEnv(python, versions=found)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers_env", description=__doc__)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    args = parser.parse_args(argv)
    env = asyncio.run(ensure(args.venv))
    if env.python is None:
        _progress(f"peers unavailable: {env.reason}")
        return 1
    print(f"{env.python}: {env.versions}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
