"""TLS and passwords to the servers Switchyard depends on, as ops deploy them: a redis-server
on a TLS port with `requirepass`, and mosquitto on TLS with password auth, each with a CA the
test generates; the secrets read from files, as mounted Kubernetes Secrets are."""

from __future__ import annotations

import asyncio
import getpass
import shutil
import ssl
import subprocess
import sys
from typing import TYPE_CHECKING

import aiohttp
import pytest
from helpers import processed
from servers import free_port, redis_binary, server_process, wait_for

from router.config import parse_config

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from helpers import Serve

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
PASSWORD = "tls-test-SECRET-pw"


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, a server certificate it signed for 127.0.0.1 and a client certificate."""
    run = [
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 "
        "-subj /CN=switchyard-test-ca",
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
        "-subj /CN=127.0.0.1",
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
        "-out server.crt -days 1 -extfile ext",
        "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr "
        "-subj /CN=doorbell-gateway",
        "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
        "-out client.crt -days 1",
    ]
    (tmp_path / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for command in run:
        subprocess.run(command.split(), cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "password").write_text(PASSWORD + "\n")
    return tmp_path


@pytest.fixture
async def tls_redis(pki: Path) -> AsyncIterator[int]:
    """redis-server on a TLS port only, with `requirepass`."""
    port = free_port()
    async with server_process(
        port, redis_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(pki / "server.crt"), "--tls-key-file", str(pki / "server.key"),
        "--tls-ca-cert-file", str(pki / "ca.crt"), "--tls-auth-clients", "no",
        "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(pki),
    ):  # fmt: skip
        yield port


@pytest.fixture
async def tls_broker(pki: Path) -> AsyncIterator[int]:
    """mosquitto on TLS, no anonymous clients: user `ops` with the test's password."""
    if shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("needs mosquitto and mosquitto_passwd")
    port = free_port()
    users = [shutil.which("mosquitto_passwd") or "", "-b", "-c", str(pki / "users"), "ops"]
    await asyncio.to_thread(subprocess.run, [*users, PASSWORD], check=True)
    (pki / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pki / 'users'}\n"
        f"user {getpass.getuser()}\n"  # as root, mosquitto would switch to a user of its own
        f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n"
    )
    async with server_process(port, "mosquitto", "-c", str(pki / "mosquitto.conf")):
        yield port


def config_yaml(redis: str, pki: Path, mqtt: str = "url: 'off'") -> str:
    return f"""
redis:
  {redis}
mqtt: {{{mqtt}}}
http: {{port: 0}}
lanes: [{{name: high}}]
routes: [{{topic: "things/+", class: things}}]
classes: {{things: {{lane: high, actor: "actors.builtin:Log"}}}}
"""


async def test_redis_over_tls_with_a_password_from_a_file(
    serve: Serve, tls_redis: int, pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    redis = (
        f"{{url: 'rediss://127.0.0.1:{tls_redis}/0', ca_file: '{pki / 'ca.crt'}', "
        f"password_file: '{pki / 'password'}'}}"
    )
    config = parse_config(config_yaml(redis, pki).replace("redis:\n  ", "redis: "))
    assert config.redis.password == PASSWORD  # read from its file
    async with serve(config) as service:
        assert service.transport is not None
        await service.ingest.accept("things/1", [{"n": 1}], source="http")
        await wait_for(lambda: processed(service, "things") == 1, timeout=10)


async def test_a_tls_redis_without_its_ca_is_refused_clearly(tls_redis: int, pki: Path) -> None:
    redis = f"{{url: 'rediss://127.0.0.1:{tls_redis}/0', password_file: '{pki / 'password'}'}}"
    path = pki / "switchyard.yaml"
    path.write_text(config_yaml(redis, pki).replace("redis:\n  ", "redis: "))
    status = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "status", "--config", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(status.communicate(), 30)
    assert status.returncode == 1
    assert "certificate verify failed" in out.decode()
    assert PASSWORD not in out.decode()


async def test_mqtt_over_tls_with_password_auth(
    serve: Serve, redis_url: str, tls_broker: int, pki: Path
) -> None:
    mqtt = (
        f"url: 'mqtts://127.0.0.1:{tls_broker}', username: ops, "
        f"password_file: '{pki / 'password'}', ca_file: '{pki / 'ca.crt'}', "
        "subscriptions: ['things/+'], client_id: switchyard-tls-test"
    )
    config = parse_config(config_yaml(f"url: '{redis_url}'", pki, mqtt))
    async with serve(config) as service:
        await wait_for(
            lambda: service.metrics.registry.get_sample_value("switchyard_mqtt_connected"),
            timeout=15,
        )
        publish = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "router", "publish", "things/7", '{"n": 7}', "--url",
            f"mqtts://ops:{PASSWORD}@127.0.0.1:{tls_broker}", "--ca-file", str(pki / "ca.crt"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await publish.communicate()
        assert publish.returncode == 0, out.decode()
        await wait_for(lambda: processed(service, "things") == 1, timeout=10)
    assert b"published to things/7 at QoS 1" in out
    assert PASSWORD.encode() not in out


async def test_mutual_tls_on_the_http_listener(serve: Serve, redis_url: str, pki: Path) -> None:
    http = (
        f"{{port: 0, cert_file: '{pki / 'server.crt'}', key_file: '{pki / 'server.key'}', "
        f"client_ca_file: '{pki / 'ca.crt'}'}}"
    )
    config = parse_config(config_yaml(f"url: '{redis_url}'", pki).replace("{port: 0}", http))
    trusted = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    holder = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    holder.load_cert_chain(pki / "client.crt", pki / "client.key")
    async with serve(config) as service, aiohttp.ClientSession() as http_client:
        url = f"https://127.0.0.1:{service.http_port}/healthz"
        async with http_client.get(url, ssl=holder) as response:
            assert response.status == 200
        events = f"https://127.0.0.1:{service.http_port}/events/things/1"
        async with http_client.post(events, data=b'{"n": 1}', ssl=holder) as response:
            assert response.status == 202  # answered by the listener itself, over TLS
        with pytest.raises(aiohttp.ClientError):  # no client certificate: no handshake
            async with http_client.get(url, ssl=trusted) as response:
                await response.read()
