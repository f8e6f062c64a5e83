"""The README, run as a user runs it: `make run` first, then every command it shows.

The commands are read from README.md itself (`tests/readme.py`). Each must match one check
below, so a README line that stops working fails `make test`, and a new line that nothing
checks fails `test_every_readme_command_has_a_check`.

The service commands run in a project directory of their own: a temporary directory holding
links to this checkout's Makefile, pyproject.toml, config.yaml, actors and .venv. So
`.switchyard/` and the embedded servers are the test's, and the one change made to a README
command is the HTTP port (`localhost:8080` becomes the test's free port; `switchyard publish`
reads it from SWITCHYARD_URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from readme import Command, readme_commands
from servers import BrokerServer, RedisServer, free_port, wait_for

from actors.api import Actor
from router.config import load_config, parse_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
ALL_CLASSES = sorted(load_config(REPO / "config.yaml").classes)
# doorbell.health handles only a doorbell changing state: the demo's flaky one, every 20 s
CLASSES = sorted(set(ALL_CLASSES) - {"doorbell.health"})
# a reaction is rare: the demo's first patient has one, then one in fifty
EVERY_FEW_SECONDS = sorted(set(CLASSES) - {"clinic.reaction"})
LINKED = ("Makefile", "pyproject.toml", "config.yaml", ".venv", "deploy")
TABLE_LINE = re.compile(r"^(?P<cls>[a-z][\w.-]+)\s+(?:\S+\s+){8}(?P<rate>[\d.]+)\s", re.M)


# --- running commands ---


@dataclass(slots=True)
class Ran:
    """A finished command: its exit code and output."""

    command: str
    code: int
    out: str
    err: str

    def ok(self) -> Ran:
        """Insist that it exited 0 and printed no traceback; returns itself."""
        assert self.code == 0, f"{self.command!r} exited {self.code}:\n{self.out}\n{self.err}"
        assert "Traceback" not in self.out + self.err, f"{self.command!r}:\n{self.err}"
        return self


@dataclass(slots=True)
class Project:
    """A project directory for one test, and the environment its commands run with."""

    root: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def run(self, command: str, timeout: float = 60, **env: str) -> Ran:  # noqa: ASYNC109
        """`command` in bash, as typed into a terminal in the project directory."""
        text = command.replace("localhost:8080", f"localhost:{self.port}")
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", text, cwd=self.root, env={**self.env, **env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        return Ran(command, proc.returncode, out.decode(), err.decode())

    async def interrupted(self, command: str, seen: str, timeout: float = 30) -> Ran:  # noqa: ASYNC109
        """`command` in a terminal of its own, Ctrl-C'd once `seen` is in its output."""
        async with self.started(command) as proc:
            await proc.wait_output(seen, timeout)
            return await proc.interrupt()

    @contextlib.asynccontextmanager
    async def started(self, command: str, **env: str) -> AsyncIterator[Running]:
        """`command` running in the background, its own process group as in a terminal."""
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", command, cwd=self.root, env={**self.env, **env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        running = Running(command, proc)
        try:
            yield running
        finally:
            await running.close()

    def leftovers(self) -> list[str]:
        """Processes still working in the project directory (the service, its servers)."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if Path(os.readlink(proc / "cwd")).is_relative_to(self.root):
                    found.append(f"{proc.name}: {(proc / 'cmdline').read_text()!r}")
        return found


class Running:
    """A background command whose output is read as it comes."""

    def __init__(self, command: str, proc: asyncio.subprocess.Process) -> None:
        self.command = command
        self.proc = proc
        self.output = ""
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"read:{command}")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.output += line.decode(errors="replace")
            self._changed.set()

    async def wait_output(self, pattern: str, timeout: float) -> None:  # noqa: ASYNC109
        await self.until(lambda text: re.search(pattern, text) is not None, timeout)

    async def until(self, predicate: Callable[[str], bool], timeout: float) -> None:  # noqa: ASYNC109
        """Wait until the output so far satisfies `predicate`."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self.output):
                    if self.proc.returncode is not None or self._reader.done():
                        raise AssertionError(f"{self.command!r} ended:\n{self.output[-3000:]}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.command!r}: not seen within {timeout}s:\n{self.output[-3000:]}"
            ) from None

    async def interrupt(self, timeout: float = 30) -> Ran:  # noqa: ASYNC109
        """Ctrl-C: SIGINT to the whole process group, then wait for the exit."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await self._reader
        return Ran(self.command, code, self.output, "")

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A fresh project directory linked to this checkout, with a free HTTP port."""
    stale = subprocess.run(
        ["make", "-q", ".venv/.installed"], cwd=REPO, capture_output=True, check=False
    )
    if stale.returncode != 0:
        pytest.fail("the venv is older than pyproject.toml: run `make test`, which refreshes it")
    root = tmp_path / "project"
    root.mkdir()
    for name in LINKED:
        (root / name).symlink_to(REPO / name)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env |= {"SWITCHYARD_HTTP_PORT": str(port), "SWITCHYARD_URL": f"http://127.0.0.1:{port}"}
    env.pop("MAKEFLAGS", None)  # the suite may itself run under make
    env.pop("MAKELEVEL", None)
    return Project(root, port, env)


# --- what the service says ---


async def metrics(project: Project) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The service's /metrics samples by (name, sorted labels)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{project.url}/metrics") as response,
    ):
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def handled(project: Project, cls: str, outcome: str = "ok", at_least: int = 1) -> None:
    """Wait until the service counts `at_least` events of `cls` finished with `outcome`."""
    key = ("switchyard_events_processed_total", (("class", cls), ("outcome", outcome)))

    async def enough() -> bool:
        return (await metrics(project)).get(key, 0) >= at_least

    await wait_for(enough, timeout=30, interval=0.2, message=f"{at_least} {cls} {outcome}")


async def ready(project: Project) -> None:
    async def answers() -> bool:
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{project.url}/readyz") as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(answers, timeout=30, interval=0.2, message="the service's /readyz")


def rates(table: str) -> dict[str, float]:
    """Per class, the rate column of the last status table in `table`."""
    return {
        m["cls"]: float(m["rate"]) for m in TABLE_LINE.finditer(table) if m["cls"] in ALL_CLASSES
    }


def flowing(output: str) -> bool:
    """Whether one status table so far shows every class of the three workloads handling."""
    return any(
        all(rates(table).get(cls, 0) > 0 for cls in EVERY_FEW_SECONDS)
        for table in output.split("instance(s) reporting")[1:]
    )


# --- the checks: what the README promises for each command ---

Verify = Callable[[Ran, Project], Awaitable[None]]


def owners_alerted(output: str) -> bool:
    """Whether the demo's owners' webhook has received a ring, the flaky doorbell's offline
    and online alerts, and the clinic's pager a reaction."""
    lines = re.findall(r"owners' webhook \(http://[^)]+\) received: (.*)", output)
    if not lines:
        return False
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (\w+)", lines[-1])}
    return all(counts.get(kind, 0) > 0 for kind in ("ring", "offline", "online", "reaction"))


def accepted(output: str) -> list[str]:
    """The classes of a 202 reply, in order."""
    return [a["class"] for a in json.loads(output)["accepted"]]


async def device_registered(ran: Ran, project: Project) -> None:
    assert ran.out.strip() == "registered front-door (owner ann)"


async def published_over_http(ran: Ran, project: Project) -> None:
    assert accepted(ran.out) == ["doorbell.button_press"]
    await handled(project, "doorbell.button_press")


async def published_over_mqtt(ran: Ran, project: Project) -> None:
    assert "published to doorbell/front-door/motion_detected at QoS 1" in ran.out
    await handled(project, "doorbell.motion")


async def clip_made(ran: Ran, project: Project) -> None:
    assert (project.root / "visitor.mp4").stat().st_size == 3_000_000


async def clip_stored(ran: Ran, project: Project) -> None:
    stored = json.loads(ran.out)
    assert stored["url"] == "/media/doorbell/front-door/visitor.mp4"
    assert stored["bytes"] == 3_000_000
    await handled(project, "doorbell.video_upload")  # announced once whole


async def clip_played_back(ran: Ran, project: Project) -> None:
    assert ran.out.strip() == "100"


async def music_posted(ran: Ran, project: Project) -> None:
    assert accepted(ran.out) == ["music.interactions", "music.interactions"]
    await handled(project, "music.interactions", at_least=2)  # both in the lake


async def questions_listed(ran: Ran, project: Project) -> None:
    for question in ("artists", "genres", "peak-times", "app-versions", "quality"):
        assert question in ran.out


async def genres_answered(ran: Ran, project: Project) -> None:
    [jazz] = [line.split() for line in ran.out.splitlines() if line.lstrip().startswith("jazz")]
    assert jazz[1] == "3"  # the like: +3


async def peak_times_answered(ran: Ran, project: Project) -> None:
    """The brief's own example event, Monday 2025-10-27 14:03, with the like beside it."""
    assert ["Mon", "14", "2", "1"] in [line.split() for line in ran.out.splitlines()]


async def app_versions_answered(ran: Ran, project: Project) -> None:
    assert ran.out.splitlines()[0].startswith("app_version,users,user_share,events")


async def artists_answered(ran: Ran, project: Project) -> None:
    answer = json.loads(ran.out)
    assert answer["rows"][0][:2] == ["Nina Simone", 3]
    assert answer["chart"]["kind"] == "bars"


async def patient_arrived(ran: Ran, project: Project) -> None:
    assert accepted(ran.out) == ["clinic.arrival"]
    await handled(project, "clinic.monitoring")  # screened, registered, vaccinated, observed


async def journey_shown(ran: Ran, project: Project) -> None:
    steps = [line.split("  ")[1].strip() for line in ran.out.splitlines()[2:] if "  " in line]
    assert steps[:3] == ["arrived", "screened", "at a registration desk"]
    assert "vaccination_station=station-1, nurse=A. Okafor" in ran.out
    assert "observation ends" in steps
    assert "departed" not in steps


async def pager_registered(ran: Ran, project: Project) -> None:
    assert ran.out.strip() == "registered observation (owner observation nurse)"


async def reaction_posted(ran: Ran, project: Project) -> None:
    assert accepted(ran.out) == ["clinic.reaction"]
    await handled(project, "clinic.reaction")  # paged over MQTT: clinic/observation/alerts


async def journey_served(ran: Ran, project: Project) -> None:
    answer = json.loads(ran.out)
    steps = [row[1] for row in answer["rows"]]
    assert "reaction" in steps
    assert [row[3] for row in answer["rows"] if row[1] == "reaction"] == [
        "severity=mild, note=rash on the arm"
    ]


async def board_shown(ran: Ran, project: Project) -> None:
    assert "The clinic today" in ran.out
    stations = [line.split()[0] for line in ran.out.splitlines() if line.startswith(("arrival",
                "registration", "vaccination", "observation", "departure"))]  # fmt: skip
    assert stations[:2] == ["arrival", "registration"]
    assert "registration/desk-4" in stations  # every desk, idle ones too
    assert "P1" in ran.out.split("Under observation")[1]


async def attention_listed(ran: Ran, project: Project) -> None:
    [row] = [line for line in ran.out.splitlines() if line.startswith("P2 ")]
    assert "registration" in row
    assert "registration is missing name" in row


async def status_table(ran: Ran, project: Project) -> None:
    assert "3 instance(s) reporting" in ran.out  # the service, its high and archive workers
    assert set(rates(ran.out)) == set(ALL_CLASSES)


async def motion_edited(ran: Ran, project: Project) -> None:
    config = load_config(project.root / "config.yaml")
    assert config.classes["doorbell.motion"].concurrency == 48
    assert config.classes["doorbell.button_press"].concurrency == 32  # only motion's


async def reloaded(ran: Ran, project: Project) -> None:
    assert ran.out.startswith("applied: ~doorbell.motion (config "), ran.out
    assert ran.out.rstrip().endswith("generation 2)")


async def classes_view(ran: Ran, project: Project) -> None:
    assert sorted(json.loads(ran.out)) == ALL_CLASSES


async def compliance_lines(ran: Ran, project: Project) -> None:
    lines = [line for line in ran.out.splitlines() if line.startswith("switchyard_sla_compl")]
    assert {re.search(r'class="([^"]+)"', line)[1] for line in lines} == set(ALL_CLASSES)  # type: ignore[index]


async def dead_lettered(ran: Ran, project: Project) -> None:
    assert accepted(ran.out) == ["clinic.registration"]
    await handled(project, "clinic.registration", "dead")  # at once: invalid data
    assert (await metrics(project)).get(
        (
            "switchyard_events_processed_total",
            (("class", "clinic.registration"), ("outcome", "retried")),
        )
    ) == 0


async def dead_letter_listed(ran: Ran, project: Project) -> None:
    assert "permanent" in ran.out
    assert "registration is missing name" in ran.out
    assert ran.out.rstrip().endswith("1 dead letter(s)")


async def dead_letter_replayed(ran: Ran, project: Project) -> None:
    assert "replayed 1 into clinic.registration" in ran.out  # not its own new dead letter too
    await handled(project, "clinic.registration", "dead", at_least=2)  # still no name


async def second_instance(ran: Ran, project: Project) -> None:
    """It joined `make serve`'s Redis (taking the ordered partitions that hash to it: of the
    three, none one time in eight) and left at Ctrl-C, handing back what it took."""
    assert "switchyard started" in ran.out
    assert "switchyard stopped" in ran.out
    status = (await project.run(".venv/bin/switchyard status")).ok()
    assert "3 instance(s) reporting" in status.out  # it (and its workers) left at once


@dataclass(frozen=True, slots=True)
class Check:
    """What the README promises for the commands matching `pattern`: verified after the
    command ran in the walk-through, or by the test named in `covered_by`."""

    pattern: str
    verify: Verify | None = None
    covered_by: str = ""
    interrupt_after: str | None = None  # runs until this is printed, then Ctrl-C

    def matches(self, command: Command) -> bool:
        return re.search(self.pattern, command.words) is not None


CHECKS = (
    Check(r"^make run$", covered_by="test_make_run_shows_every_class_flowing_and_stops_on_ctrl_c"),
    Check(r"^make test$", covered_by="the command that runs this suite: CI's .ci/run"),
    Check(r"^make serve$", covered_by="test_the_walk_through"),
    Check(r"^make check$", covered_by="make test: it runs make check, then this suite"),
    Check(r"^make unit$", covered_by="test_make_unit_and_bench_run"),
    Check(r"^make bench$", covered_by="test_make_unit_and_bench_run"),
    Check(
        r"^make prometheus$",
        covered_by="test_make_prometheus_runs_the_shipped_rules_against_the_service",
    ),
    Check(
        r"^SWITCHYARD_REDIS_URL=\S+ SWITCHYARD_MQTT_URL=\S+ make serve$",
        covered_by="test_make_serve_on_your_own_redis_and_broker",
    ),
    Check(r"doorbell device add front-door --owner ann", device_registered),
    Check(r"publish doorbell/front-door/button_press", published_over_http),
    Check(r"publish doorbell/front-door/motion_detected .* --url", published_over_mqtt),
    Check(r"^head -c 3000000 /dev/urandom > visitor.mp4", clip_made),
    Check(r"curl -s -XPUT .*/media/doorbell/front-door/visitor.mp4", clip_stored),
    Check(r"curl -s -r 1000000-1000099 .*visitor.mp4 \| wc -c", clip_played_back),
    Check(r"curl .*/events/music/10/events", music_posted),
    Check(r"switchyard analytics music$", questions_listed),
    Check(r"analytics music genres --user 10$", genres_answered),
    Check(r"analytics music peak-times --user 10 ", peak_times_answered),
    Check(r"analytics music app-versions --format csv$", app_versions_answered),
    Check(r"curl .*/analytics/music/artists\?user=10", artists_answered),
    Check(r"curl .*/events/clinic/arrival", patient_arrived),
    Check(r"switchyard clinic patient P1$", journey_shown),
    Check(r"clinic pager add observation", pager_registered),
    Check(r"curl .*/events/clinic/reaction", reaction_posted),
    Check(r"curl .*/clinic/patients/P1 \| python3 -m json.tool$", journey_served),
    Check(r"switchyard clinic board$", board_shown),
    Check(r"switchyard clinic attention$", attention_listed),
    Check(r"switchyard status$", status_table),
    Check(r"switchyard status --watch$", status_table, interrupt_after="instance\\(s\\) reporting"),
    Check(r"^sed -i .*concurrency: 32/concurrency: 48/", motion_edited),
    Check(r"switchyard reload$", reloaded),
    Check(
        r"switchyard reload --config config.yaml$",
        covered_by="tests/test_reload.py, the SIGHUP and `switchyard reload` test",
    ),
    Check(r"curl .*/classes \| python3 -m json.tool$", classes_view),
    Check(r"curl .*/metrics \| grep switchyard_sla_compliance_ratio$", compliance_lines),
    Check(r"curl .*/events/clinic/registration", dead_lettered),
    Check(r"dlq list --class clinic.registration$", dead_letter_listed),
    Check(r"dlq replay --class clinic.registration --all$", dead_letter_replayed),
    Check(
        r"SWITCHYARD_HTTP_PORT=0 .*switchyard run$",
        second_instance,
        interrupt_after='switchyard started", "level"',  # the service, not its lane worker
    ),
)


def check_of(command: Command) -> Check:
    [check] = [check for check in CHECKS if check.matches(command)]
    return check


def test_every_readme_command_has_a_check() -> None:
    commands = readme_commands(README.read_text())
    assert len(commands) >= len(CHECKS)
    for command in commands:
        found = [check for check in CHECKS if check.matches(command)]
        assert len(found) == 1, f"README command {command.words!r} matches {len(found)} checks"
    for check in CHECKS:
        assert any(check.matches(c) for c in commands), f"{check.pattern!r}: not in the README"
        if check.covered_by.startswith("test_"):
            assert callable(globals().get(check.covered_by)), check.covered_by


# --- the examples ---


def test_the_readme_config_example_is_a_valid_config() -> None:
    [example] = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    config = parse_config(example, "README.md", environ={})
    assert "music.like_song" in config.classes


def test_the_readme_actor_example_is_an_actor() -> None:
    [example] = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    namespace: dict[str, Any] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    actors = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, Actor)]
    assert [a.__name__ for a in actors if a is not Actor] == ["Registration"]


# --- the commands ---


async def test_make_run_shows_every_class_flowing_and_stops_on_ctrl_c(project: Project) -> None:
    """The README's first command: the demo on embedded servers, then Ctrl-C."""
    quick = {"SWITCHYARD_CLINIC_OBSERVATION_S": "1", "SWITCHYARD_MUSIC_ROLL_MS": "1000"}
    async with project.started("make run", **quick) as demo:  # departures, lake rows in seconds
        await demo.until(flowing, timeout=60)
        await demo.until(owners_alerted, timeout=90)  # a ring, a doorbell offline and back
        stopped = await demo.interrupt()

    assert "Traceback" not in stopped.out, stopped.out
    assert "switchyard demo: stopped cleanly" in stopped.out, stopped.out[-2000:]
    assert project.leftovers() == []


async def test_demo_with_a_duration_shows_every_class_and_exits_0(project: Project) -> None:
    ran = await project.run(
        ".venv/bin/switchyard demo --duration 10 --every 5",
        timeout=60,
        SWITCHYARD_CLINIC_OBSERVATION_S="1",
        SWITCHYARD_MUSIC_ROLL_MS="1000",
    )
    ran.ok()
    whole_run = ran.out.split("whole run:")[-1]
    assert all(rates(whole_run).get(cls, 0) > 0 for cls in CLASSES), whole_run
    assert ran.out.rstrip().endswith("switchyard demo: stopped cleanly")
    assert project.leftovers() == []


async def test_the_walk_through(project: Project) -> None:
    """With `make serve` running, each command of the walk-through, in the README's order."""
    walk = [c for c in readme_commands(README.read_text()) if check_of(c).verify is not None]
    serve = {"SWITCHYARD_LOG_FORMAT": "json", "SWITCHYARD_MUSIC_ROLL_MS": "300"}
    async with project.started("make serve", **serve) as service:
        await ready(project)
        for command in walk:
            check = check_of(command)
            if check.interrupt_after is None:
                ran = (await project.run(command.text)).ok()
            else:
                ran = (await project.interrupted(command.text, check.interrupt_after)).ok()
            assert command.shows(ran.out), f"README shows {command.shown!r}, got {ran.out!r}"
            assert check.verify is not None
            await check.verify(ran, project)
        stopped = await service.interrupt()

    assert '"drained": true' in stopped.out, stopped.out[-2000:]
    assert "Traceback" not in stopped.out
    assert project.leftovers() == []


async def test_make_serve_on_your_own_redis_and_broker(
    project: Project, tmp_path: Path, mqtt_broker: BrokerServer
) -> None:
    [command] = [c for c in readme_commands(README.read_text()) if c.words.endswith(" make serve")]
    redis = RedisServer(tmp_path / "own-redis")
    await redis.start()
    try:
        text = command.text.replace("host:6379", f"127.0.0.1:{redis.port}")
        text = text.replace("host:1883", f"127.0.0.1:{mqtt_broker.port}")
        async with project.started(text) as service:
            await ready(project)
            own = f"SWITCHYARD_REDIS_URL=redis://127.0.0.1:{redis.port} "
            (await project.run(own + ".venv/bin/switchyard doorbell device add d1 --owner a")).ok()
            publish = ".venv/bin/switchyard publish doorbell/d1/button_press '{}' --url "
            (await project.run(publish + mqtt_broker.url)).ok()
            await handled(project, "doorbell.button_press")
            await service.interrupt()
        assert not (project.root / ".switchyard" / "redis").exists()  # nothing embedded started
    finally:
        await redis.stop()
    assert project.leftovers() == []


@pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="needs prometheus (.ci/run installs it)"
)
async def test_make_prometheus_runs_the_shipped_rules_against_the_service(
    project: Project, http: aiohttp.ClientSession
) -> None:
    """`make prometheus`: ready, scraping `make run`'s address, every shipped rule loaded
    (tests/test_prometheus_real.py shows those rules fire against a real service)."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"

    async def asked(path: str) -> Any:
        try:
            async with http.get(f"{api}/{path}") as response:
                return (await response.json())["data"]
        except (aiohttp.ClientError, KeyError):
            return None

    async def rules() -> list[str]:
        groups = (await asked("rules") or {}).get("groups", [])
        return [rule["name"] for group in groups for rule in group["rules"]]

    async def targets() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await asked("targets") or {}).get("activeTargets", [])
        return found

    async with project.started("make prometheus", PROMETHEUS_PORT=str(port)) as running:
        loaded = await wait_for(rules, timeout=30)
        scraped = await wait_for(targets, timeout=30)
        await running.interrupt()
    assert "SwitchyardSLABudgetBurnFast" in loaded
    assert [t["scrapeUrl"] for t in scraped] == ["http://127.0.0.1:8080/metrics"]


async def test_make_unit_and_bench_run(tmp_path: Path) -> None:
    """The other targets the README names, run in the checkout (they work on its sources).
    `make unit` only collects here: this suite runs those tests itself, so the target is
    checked for what it selects, not run twice (`make check` runs first in `make test`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
    results = tmp_path / "bench.json"
    outputs = []
    for command, extra in (
        ("make unit", {"PYTEST_ADDOPTS": "--collect-only -q"}),
        (f"make bench BENCH_ARGS='--part throughput --no-peers --json {results}'", {}),
    ):
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", command, cwd=REPO, env=env | extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        async with asyncio.timeout(240):
            out, _ = await proc.communicate()
        assert proc.returncode == 0, f"{command}:\n{out.decode()[-3000:]}"
        outputs.append(out.decode())
    selected = re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", outputs[0])
    assert selected, outputs[0][-2000:]
    assert int(selected[1]) > 300  # the unit tests, and none of the integration ones
    assert "test_readme.py" not in outputs[0]
    figures = json.loads(results.read_text())
    assert figures["settings"]["parts"] == ["throughput"]
    assert figures["throughput"], "make bench measured nothing"
