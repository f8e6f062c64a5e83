"""Who may post, read and administer over HTTP; the listener's limits against slow and idle
clients; and no secret in any output. Against a real redis-server (one with `requirepass`
for the secrets)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

import pytest
from helpers import Quiet
from servers import free_port, listening, redis_binary, server_process, wait_for

from router.config import parse_config
from router.errors import ConfigError
from router.ingress.access import need_of
from router.ops.views import Views

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

    import aiohttp
    from helpers import Serve

    from router.config import Config
    from router.service.service import Service

READ_TOKEN = "read-SECRET-token-0001"
DOORBELL_TOKEN = "doorbell-SECRET-token-0002"
ADMIN_TOKEN = "admin-SECRET-token-0003"


def secured_yaml(redis_url: str, admin_file: Path, http: str = "") -> str:
    read_hash = hashlib.sha256(READ_TOKEN.encode()).hexdigest()
    return f"""
redis: {{url: "{redis_url}"}}
http:
  port: 0
  tokens:
    - {{name: doorbell-gateway, env: TEST_DOORBELL_TOKEN, topics: ["doorbell/#"]}}
    - {{name: dashboards, sha256: {read_hash}, role: read}}
    - {{name: operator, file: "{admin_file}", role: admin}}
  {http}
lanes: [{{name: high}}]
routes:
  - {{topic: "doorbell/+/+", class: rings}}
  - {{topic: "clinic/+", class: rings}}
classes:
  rings: {{lane: high, actor: "actors.builtin:Log"}}
"""


@pytest.fixture
def secured(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("TEST_DOORBELL_TOKEN", DOORBELL_TOKEN)
    admin_file = tmp_path / "admin-token"
    admin_file.write_text(ADMIN_TOKEN + "\n")
    return parse_config(secured_yaml(redis_url, admin_file))


async def ask(
    http: aiohttp.ClientSession,
    service: Service,
    method: str,
    path: str,
    token: str | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"http://127.0.0.1:{service.http_port}{path}"
    async with http.request(method, url, headers=headers, **kwargs) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


# --- access ---


async def test_posting_needs_a_known_token_within_its_topics(
    serve: Serve, secured: Config, http: aiohttp.ClientSession
) -> None:
    ring = {"priority": "high"}
    async with serve(secured) as service:
        no_token = await ask(http, service, "POST", "/events/doorbell/d1/button_press", json=ring)
        wrong = await ask(http, service, "POST", "/events/doorbell/d1/x", "guess-0000", json=ring)
        posted = await ask(
            http, service, "POST", "/events/doorbell/d1/button_press", DOORBELL_TOKEN, json=ring
        )
        elsewhere = await ask(http, service, "POST", "/events/clinic/arrival", DOORBELL_TOKEN,
                              json=ring)  # fmt: skip
        reader = await ask(http, service, "POST", "/events/doorbell/d1/x", READ_TOKEN, json=ring)
        admin = await ask(http, service, "POST", "/events/clinic/arrival", ADMIN_TOKEN, json=ring)
    assert no_token == (401, {"error": "a bearer token is needed"})
    assert wrong == (401, {"error": "the token is not known"})
    assert posted[0] == 202
    assert elsewhere == (
        403, {"error": "token 'doorbell-gateway' may not post to 'clinic/arrival'"}
    )  # fmt: skip
    assert reader == (403, {"error": "token 'dashboards' may not ingest here"})
    assert admin[0] == 202


async def test_views_need_a_read_token_and_the_health_checks_none(
    serve: Serve, secured: Config, http: aiohttp.ClientSession
) -> None:
    async with serve(secured) as service:
        answers = {
            (path, who): (await ask(http, service, "GET", path, token))[0]
            for path in ("/metrics", "/classes", "/healthz", "/readyz", "/ui", "/ui/state")
            for who, token in (("nobody", None), ("ingest", DOORBELL_TOKEN), ("read", READ_TOKEN))
        }
    assert answers == {
        ("/metrics", "nobody"): 401, ("/metrics", "ingest"): 403, ("/metrics", "read"): 200,
        ("/classes", "nobody"): 401, ("/classes", "ingest"): 403, ("/classes", "read"): 200,
        ("/healthz", "nobody"): 200, ("/healthz", "ingest"): 200, ("/healthz", "read"): 200,
        ("/readyz", "nobody"): 200, ("/readyz", "ingest"): 200, ("/readyz", "read"): 200,
        ("/ui", "nobody"): 200, ("/ui", "ingest"): 200, ("/ui", "read"): 200,
        ("/ui/state", "nobody"): 401, ("/ui/state", "ingest"): 403, ("/ui/state", "read"): 200,
    }  # fmt: skip


async def test_a_replay_from_the_console_needs_an_admin_token(
    serve: Serve, secured: Config, http: aiohttp.ClientSession
) -> None:
    path, body = "/ui/dead-letters/rings/replay", {"all": True}
    async with serve(secured) as service:
        reader = await ask(http, service, "POST", path, READ_TOKEN, json=body)
        admin = await ask(http, service, "POST", path, ADMIN_TOKEN, json=body)
    assert reader == (403, {"error": "token 'dashboards' may not admin here"})
    assert admin == (200, {"class": "rings", "replayed": 0, "skipped": []})


def test_an_open_listener_must_be_on_loopback_unless_said_so(redis_url: str) -> None:
    base = f"""
redis: {{url: "{redis_url}"}}
lanes: [{{name: high}}]
classes: {{rings: {{lane: high, actor: "actors.builtin:Log"}}}}
"""
    with pytest.raises(ConfigError, match=r"host 0\.0\.0\.0 is not loopback and no tokens are set"):
        parse_config(base + "http: {host: 0.0.0.0}")
    assert parse_config(base + "http: {host: 0.0.0.0, allow_unauthenticated: true}")
    hashed = hashlib.sha256(b"x" * 16).hexdigest()
    assert parse_config(base + f"http: {{host: 0.0.0.0, tokens: [{{name: a, sha256: {hashed}}}]}}")
    with pytest.raises(ConfigError, match=r"exactly one of sha256, env or file"):
        parse_config(base + f"http: {{tokens: [{{name: a, sha256: {hashed}, env: X}}]}}")


async def test_a_token_that_cannot_be_read_stops_the_start_naming_it_not_its_value(
    serve: Serve, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_DOORBELL_TOKEN", raising=False)
    config = parse_config(secured_yaml(redis_url, tmp_path / "missing"))
    with pytest.raises(ConfigError) as refused:
        async with serve(config):
            pass
    said = str(refused.value)
    assert "token 'doorbell-gateway': $TEST_DOORBELL_TOKEN is not set" in said
    assert "token 'operator': cannot read" in said


async def test_a_metrics_listener_serves_prometheus_without_a_token(
    serve: Serve, redis_url: str, tmp_path: Path, http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("TEST_DOORBELL_TOKEN", DOORBELL_TOKEN)
    (tmp_path / "admin").write_text(ADMIN_TOKEN)
    port = free_port()
    config = parse_config(secured_yaml(redis_url, tmp_path / "admin", f"metrics_port: {port}"))
    async with serve(config) as service:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            scraped = response.status, await response.text()
        main = (await ask(http, service, "GET", "/metrics"))[0]
    assert scraped[0] == 200
    assert "switchyard_events_ingested_total" in scraped[1]
    assert main == 401


# --- limits ---


async def test_fifty_scrapers_cost_one_rendering() -> None:
    class Counting(Quiet):
        renders = 0

        async def exposition(self) -> bytes:
            Counting.renders += 1
            await asyncio.sleep(0.05)  # a rendering that takes a while, as 152 KB does
            return b"# rendered\n"

    views = Views(Counting(), metrics_every_s=5.0)
    bodies = await asyncio.gather(*(views._exposition() for _ in range(50)))
    assert Counting.renders == 1
    assert set(bodies) == {b"# rendered\n"}


@pytest.fixture
def limited(redis_url: str) -> Config:
    return parse_config(f"""
redis: {{url: "{redis_url}"}}
http: {{port: 0, idle_timeout_s: 1, body_timeout_s: 1, max_connections_per_client: 5}}
lanes: [{{name: high}}]
routes: [{{topic: "things/+", class: things}}]
classes: {{things: {{lane: high, actor: "actors.builtin:Log"}}}}
""")


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection (what it sent before is skipped). A reset is
    closed too: a socket closed with bytes it had not read yet (a header the slow client sent
    meanwhile) resets the connection instead of ending it."""
    try:
        return await reader.read(65536) == b""
    except ConnectionResetError:
        return True


async def test_idle_and_slow_header_connections_are_closed_and_health_stays_up(
    serve: Serve, limited: Config, http: aiohttp.ClientSession
) -> None:
    async with serve(limited) as service:
        idle = [await asyncio.open_connection("127.0.0.1", service.http_port) for _ in range(3)]
        slow_reader, slow = await asyncio.open_connection("127.0.0.1", service.http_port)
        slow.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

        async def trickle() -> None:
            while not slow.is_closing():
                slow.write(b"X-Slow: 1\r\n")  # a header now and then, never the blank line
                await asyncio.sleep(0.2)

        trickling = asyncio.create_task(trickle())
        try:
            for reader, _ in idle:
                assert await asyncio.wait_for(closed(reader), timeout=5)
            assert await asyncio.wait_for(closed(slow_reader), timeout=5)
            assert (await ask(http, service, "GET", "/healthz"))[0] == 200
        finally:
            trickling.cancel()
            for _, writer in [*idle, (slow_reader, slow)]:
                writer.close()


async def test_a_slow_body_gets_408_and_nothing_is_written(serve: Serve, limited: Config) -> None:
    async with serve(limited) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
        writer.write(
            b"POST /events/things/1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"a":'
        )
        reply = await asyncio.wait_for(reader.read(65536), timeout=5)
        writer.close()
    assert reply.startswith(b"HTTP/1.1 408")
    assert service.metrics.registry.get_sample_value(
        "switchyard_events_ingested_total", {"class": "things", "lane": "high", "source": "http"}
    ) in (None, 0.0)


async def test_one_client_holds_at_most_its_share_of_connections(
    serve: Serve, limited: Config, http: aiohttp.ClientSession
) -> None:
    async with serve(limited) as service:
        held = [await asyncio.open_connection("127.0.0.1", service.http_port) for _ in range(8)]
        states = await asyncio.gather(
            *(asyncio.wait_for(closed(reader), timeout=0.5) for reader, _ in held[5:])
        )
        for _, writer in held[:5]:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = [await asyncio.wait_for(reader.readline(), timeout=5) for reader, _ in held[:5]]
        for _, writer in held:
            writer.close()
    assert states == [True, True, True]  # the sixth and after: closed at once
    assert answers == [b"HTTP/1.1 200 OK\r\n"] * 5


# --- secrets ---

REDIS_PASSWORD = "redis-SECRET-pw-5555"
MQTT_PASSWORD = "mqtt-SECRET-pw-6666"
WEBHOOK_SECRET = "hook-SECRET-7777"
SECRETS = (REDIS_PASSWORD, MQTT_PASSWORD, WEBHOOK_SECRET, DOORBELL_TOKEN, ADMIN_TOKEN)


@pytest.fixture
async def guarded_redis(tmp_path: Path) -> AsyncIterator[int]:
    """A redis-server of the test's own, with `requirepass`."""
    port = free_port()
    async with server_process(
        port, redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--requirepass", REDIS_PASSWORD, "--dir", str(tmp_path),
    ):  # fmt: skip
        yield port


async def switchyard(*argv: str, env: Mapping[str, str], timeout: float = 30) -> str:  # noqa: ASYNC109
    """A `switchyard` command as a user runs it: its stdout and stderr together."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", *argv, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.terminate()
        out, _ = await process.communicate()
    return out.decode(errors="replace")


async def test_no_secret_in_any_output(
    guarded_redis: int, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Known passwords and tokens set, then every surface read: the commands, a failed start,
    the service's log lines, its views while the broker is away, and a publish's error."""
    port, metrics_port, dead_broker = free_port(), free_port(), free_port()
    (tmp_path / "admin").write_text(ADMIN_TOKEN)
    config = tmp_path / "switchyard.yaml"
    config.write_text(
        secured_yaml("${REDIS_URL}", tmp_path / "admin", f"metrics_port: {metrics_port}").replace(
            "port: 0", f"port: {port}"
        )
        + f"""
mqtt: {{url: "mqtt://ops:{MQTT_PASSWORD}@127.0.0.1:{dead_broker}", subscriptions: ["doorbell/#"]}}
notify: {{webhook_secret: "${{HOOK_SECRET}}"}}
service: {{log_format: json}}
"""
    )
    good = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{guarded_redis}/0"
    env = {"REDIS_URL": good, "HOOK_SECRET": WEBHOOK_SECRET, "TEST_DOORBELL_TOKEN": DOORBELL_TOKEN}
    said = [
        await switchyard("check", "--config", str(config), env=env),
        await switchyard("status", "--config", str(config), env=env),
        await switchyard("run", "--config", str(config), timeout=8,  # a wrong password
                         env={**env, "REDIS_URL": good.replace("SECRET", "WRONG")}),
        await switchyard("publish", "doorbell/d1/button_press", "{}", "--url",
                         f"mqtt://ops:{MQTT_PASSWORD}@127.0.0.1:{dead_broker}", env=env),
    ]  # fmt: skip
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "run", "--config", str(config), env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        await wait_for(lambda: listening(port), timeout=20)
        for path in ("/readyz", "/healthz"):  # the broker is away: readyz says so
            async with http.get(f"http://127.0.0.1:{port}{path}") as response:
                said.append(await response.text())
        headers = {"Authorization": f"Bearer {READ_TOKEN}"}
        for path in ("/classes", "/metrics"):
            async with http.get(f"http://127.0.0.1:{port}{path}", headers=headers) as response:
                said.append(await response.text())
        async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            said.append(await response.text())
    finally:
        service.terminate()
        out, _ = await asyncio.wait_for(service.communicate(), 20)
        said.append(out.decode(errors="replace"))
    everything = "\n".join(said)
    assert "mqtt broker unavailable" in everything  # the surfaces were reached
    assert "refused" in said[2].lower() or "auth" in said[2].lower(), said[2][-2000:]
    leaked = [secret for secret in SECRETS if secret in everything]
    assert leaked == [], everything[-3000:]


@pytest.mark.parametrize(
    ("method", "path", "need"),
    [
        ("GET", "/healthz", None), ("GET", "/ui", None), ("GET", "/clinic", None),
        ("GET", "/analytics/music", None), ("GET", "/analytics/music/artists", "read"),
        ("GET", "/clinic/board", "read"), ("GET", "/clinic/patients/P1", "read"),
        ("GET", "/ui/state", "read"), ("POST", "/events/doorbell/d1/x", "ingest"),
        ("PUT", "/media/doorbell/d1/clip.mp4", "ingest"), ("POST", "/analytics/music", "admin"),
        ("POST", "/admin/reload", "admin"), ("PUT", "/doorbell/devices/d1", "admin"),
    ],
)  # fmt: skip
def test_what_each_request_needs(method: str, path: str, need: str | None) -> None:
    """Pages are open (they hold nothing, and a browser sends no token with a page load);
    what they fetch, and everything else, is not."""
    assert need_of(method, path) == need
