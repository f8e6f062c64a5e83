"""The container image, compose and Kubernetes files in deploy/, checked without a container
engine or a cluster.

- The Dockerfile is parsed: multi-stage, an unprivileged user, a HEALTHCHECK on /healthz,
  SIGTERM to stop; and the command it runs (`switchyard run --config ...`) is run here from the
  project, with the environment the Dockerfile and compose give it: it serves `/healthz`,
  reaches ready, takes events with the tokens it was given and drains on SIGTERM, exit 0,
  within the grace period the compose file and the Deployment give it.
- deploy/compose.yaml validates against the Compose Specification's JSON schema (vendored,
  deploy/compose/compose-spec.json); its Prometheus config passes promtool; its Mosquitto
  config runs on the local mosquitto and admits the two logins only.
- Every manifest in deploy/k8s/ validates with kubernetes-validate (the official schemas,
  offline, strict); KEDA's ScaledObject and TriggerAuthentication, custom resources, validate
  against KEDA's own CRD schemas (vendored, deploy/k8s/keda/crds/) and name what exists.
- The container config (deploy/compose/config.yaml, the ConfigMap's text) is config.yaml with
  only `http` changed, and validates with the environment each deployment gives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import grp
import json
import os
import re
import shlex
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiomqtt
import jsonschema
import kubernetes_validate
import pytest
import pytest_asyncio
import yaml
from servers import free_port, wait_for

from router.config import Config, parse_config
from router.ingress.access import Access

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping

    import aiohttp

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose"
K8S = DEPLOY / "k8s"
IMAGE_CONFIG = "/etc/switchyard/config.yaml"  # where compose and the Deployment mount it
SWITCHYARD_SERVICES = ("switchyard-1", "switchyard-2")
# kubernetes-validate's floor in pyproject.toml bundles 1.30; the newest it bundles is checked too.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())


# --- reading the files ---


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (keyword, arguments), continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the image's last stage, from its FROM on."""
    instructions = dockerfile()
    last = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last:]


def one(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [arguments for kw, arguments in stage if kw == keyword]
    assert len(found) == 1, f"{keyword}: {found}"
    return found[0]


def image_environment() -> dict[str, str]:
    """What the runtime stage's ENV instructions set (PATH left out: it names image paths)."""
    environment: dict[str, str] = {}
    for keyword, arguments in final_stage():
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                environment[name] = value
    environment.pop("PATH", None)
    return environment


def image_command() -> list[str]:
    """ENTRYPOINT + CMD, both in exec form."""
    stage = final_stage()
    entrypoint: list[str] = json.loads(one(stage, "ENTRYPOINT"))
    command: list[str] = json.loads(one(stage, "CMD"))
    return entrypoint + command


def healthcheck() -> tuple[dict[str, str], list[str]]:
    """The HEALTHCHECK's options and its exec-form command."""
    options, _, command = one(final_stage(), "HEALTHCHECK").partition(" CMD ")
    flags = dict(flag.removeprefix("--").split("=", 1) for flag in options.split())
    exec_form: list[str] = json.loads(command)
    return flags, exec_form


def seconds(duration: str | int) -> float:
    """A compose or Docker duration ("30s", "1m30s", "500ms") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts, f"not a duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def example_env() -> dict[str, str]:
    """deploy/compose/example.env: the variables compose interpolates."""
    values: dict[str, str] = {}
    for line in (COMPOSE / "example.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


_COMPOSE_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, variables: Mapping[str, str]) -> Any:
    """Compose's interpolation of `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$`."""
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        if variables.get(name):
            return variables[name]
        assert operator is None or "?" not in operator, f"${name} unset: {argument}"
        return argument or ""

    return _COMPOSE_VARIABLE.sub(substitute, value)


def compose() -> dict[str, Any]:
    """deploy/compose.yaml as YAML reads it (anchors and merge keys resolved)."""
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def compose_environment(service: str) -> dict[str, str]:
    """A service's environment once compose has interpolated it from example.env."""
    environment = interpolate(compose()["services"][service].get("environment", {}), example_env())
    return {name: str(value) for name, value in environment.items()}


def container_config_text() -> str:
    return (COMPOSE / "config.yaml").read_text()


def parse_container_config(environ: Mapping[str, str]) -> Config:
    return parse_config(container_config_text(), "deploy/compose/config.yaml", environ)


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object in deploy/k8s/ and deploy/k8s/keda/ (not the vendored CRDs)."""
    for path in sorted([*K8S.glob("*.yaml"), *(K8S / "keda").glob("*.yaml")]):
        for doc in load_all(path):
            yield path, doc


def manifest(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [doc for _, doc in manifests() if doc["kind"] == kind]
    if name is not None:
        found = [doc for doc in found if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = manifest("Deployment")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    [only] = pod_spec()["containers"]
    assert isinstance(only, dict)
    return only


def pod_environment() -> dict[str, str]:
    """What a pod's container gets: the image's ENV, the Secret (envFrom), the literal env."""
    environment = image_environment()
    for source in container().get("envFrom", []):
        secret = manifest("Secret", source["secretRef"]["name"])
        environment.update(secret["stringData"])
    for variable in container().get("env", []):
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
        elif variable["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            environment[variable["name"]] = "switchyard-5d8f7c9b4-abcde"  # a pod's name
    return environment


# --- the Dockerfile ---


def test_the_dockerfile_builds_a_venv_and_runs_it_unprivileged() -> None:
    instructions = dockerfile()
    stages = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert len(stages) >= 2, "a build stage and a runtime stage"
    assert stages[0].endswith(" AS build")
    assert any(
        keyword == "RUN" and "pip install ." in arguments for keyword, arguments in instructions
    )
    stage = final_stage()
    assert any(
        keyword == "COPY" and arguments.startswith("--from=build /opt/venv")
        for keyword, arguments in stage
    )
    user = one(stage, "USER").split(":")[0]
    assert user not in ("root", "0"), "the image must not run as root"
    assert user.isdigit(), "numeric, so Kubernetes' runAsNonRoot can check it"
    assert int(user) == pod_spec()["securityContext"]["runAsUser"]
    assert "8080" in one(stage, "EXPOSE").split()
    assert one(stage, "STOPSIGNAL") == "SIGTERM"
    assert image_command() == ["switchyard", "run", "--config", IMAGE_CONFIG]
    options, command = healthcheck()
    assert command[:2] == ["python", "-c"], "the standard library, no curl in the image"
    assert "/healthz" in command[2]
    assert seconds(options["timeout"]) < seconds(options["interval"])
    environment = image_environment()
    assert environment["SWITCHYARD_HTTP_HOST"] == "0.0.0.0"  # allowed: the config has tokens


def test_the_build_context_leaves_local_state_out() -> None:
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignored, "everything left out but what the image installs"
    copied = [arguments for keyword, arguments in dockerfile() if keyword == "COPY"]
    for arguments in copied:
        if arguments.startswith("--from="):
            continue
        for source in shlex.split(arguments)[:-1]:
            assert f"!{source.rstrip('/')}/" in ignored or f"!{source}" in ignored, source
            assert (REPO / source).exists(), source


def test_grace_periods_outlast_the_drain() -> None:
    """SIGKILL comes only after service.drain_timeout_s, with room for the preStop pause."""
    services = compose()["services"]
    environment = {**image_environment(), **compose_environment("switchyard-1")}
    drain = parse_container_config(environment).service.drain_timeout_s
    for name in SWITCHYARD_SERVICES:
        assert services[name]["stop_signal"] == "SIGTERM"
        assert seconds(services[name]["stop_grace_period"]) >= drain + 10, name
    spec = pod_spec()
    pause = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] >= pause + drain + 10
    assert parse_container_config(pod_environment()).service.drain_timeout_s == drain


# --- the container config ---


def test_the_container_config_is_config_yaml_with_tokens_on_http() -> None:
    container_config = yaml.safe_load(container_config_text())
    repo_config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert set(container_config) == set(repo_config)
    for section in repo_config:
        if section != "http":
            assert container_config[section] == repo_config[section], (
                f"{section}: deploy/compose/config.yaml differs from config.yaml"
            )
    # The repository's config refuses the image's host: it has no tokens.
    with pytest.raises(Exception, match="not loopback and no tokens"):
        parse_config((REPO / "config.yaml").read_text(), "config.yaml", image_environment())


def test_the_configmap_holds_the_container_config() -> None:
    configmap = manifest("ConfigMap", "switchyard-config")
    assert configmap["data"]["config.yaml"] == container_config_text()
    [volume] = [v for v in pod_spec()["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == "switchyard-config"
    [mount] = [m for m in container()["volumeMounts"] if m["name"] == volume["name"]]
    assert f"{mount['mountPath']}/config.yaml" == IMAGE_CONFIG


@pytest.mark.parametrize("service", SWITCHYARD_SERVICES)
def test_each_compose_instance_gets_a_valid_config_with_its_tokens(service: str) -> None:
    environment = {**image_environment(), **compose_environment(service)}
    config = parse_container_config(environment)
    assert config.redis.url == "redis://redis:6379/0"
    assert config.mqtt.url == "mqtt://mosquitto:1883"
    assert config.mqtt.client_id == service
    assert config.mqtt.shared_group == "switchyard"
    assert config.mqtt.password == example_env()["SWITCHYARD_MQTT_PASSWORD"]
    assert config.notify.webhook_secret == example_env()["SWITCHYARD_WEBHOOK_SECRET"]
    assert config.http.host == "0.0.0.0"
    assert config.http.metrics_port == 9464
    access = Access.from_config(config.http.tokens, environment)
    gateway = access.grant(example_env()["SWITCHYARD_TOKEN_DOORBELL"])
    assert gateway is not None
    assert gateway.covers("doorbell/front-door/button_press")
    assert not gateway.covers("clinic/arrival")


def test_the_pods_get_a_valid_config_with_their_tokens() -> None:
    environment = pod_environment()
    config = parse_container_config(environment)
    assert config.mqtt.client_id == "switchyard-5d8f7c9b4-abcde"
    assert config.mqtt.shared_group == "switchyard"
    assert config.media is not None
    assert config.media.store.startswith("s3://")
    for name, cls in config.classes.items():
        if "lake" in cls.options:
            assert str(cls.options["lake"]).startswith("s3://"), name
    access = Access.from_config(config.http.tokens, environment)
    assert access.grant(environment["SWITCHYARD_ADMIN_TOKEN"]) is not None


# --- compose ---


def test_the_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads((COMPOSE / "compose-spec.json").read_text())
    assert schema["title"] == "Compose Specification"
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, "\n".join(errors)


def test_the_compose_file_runs_two_instances_on_the_shared_services() -> None:
    document = compose()
    services = document["services"]
    assert services["redis"]["command"] == ["redis-server", "--appendonly", "yes"]
    assert services["mosquitto"]["image"] == "eclipse-mosquitto:2"
    host_ports = set()
    for name in SWITCHYARD_SERVICES:
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert f"./compose/config.yaml:{IMAGE_CONFIG}:ro" in service["volumes"]
        assert "healthcheck" in service
        [published] = service["ports"]
        host_ports.add(published.rsplit(":", 2)[-2])
        assert published.endswith(":8080")
    assert len(host_ports) == len(SWITCHYARD_SERVICES), "each instance on a host port of its own"
    client_ids = {
        compose_environment(name)["SWITCHYARD_MQTT_CLIENT_ID"] for name in SWITCHYARD_SERVICES
    }
    assert len(client_ids) == len(SWITCHYARD_SERVICES)


def test_every_compose_variable_is_in_the_example_env() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    used = {match.group(1) for match in _COMPOSE_VARIABLE.finditer(text) if match.group(1)}
    assert used <= set(example_env()), sorted(used - set(example_env()))
    # and no secret is written into the compose file itself
    for name in used:
        assert example_env()[name] not in text


def test_every_file_compose_mounts_exists() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is missing"


def test_grafana_is_provisioned_from_the_mounted_dashboards() -> None:
    grafana = compose()["services"]["grafana"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    providers = DEPLOY / "grafana" / "provisioning" / "dashboards"
    paths = [
        provider["options"]["path"]
        for path in sorted(providers.glob("*.y*ml"))
        for provider in yaml.safe_load(path.read_text()).get("providers", [])
    ]
    assert paths, f"no dashboard provider in {providers}"
    assert all(path.startswith("/var/lib/grafana/dashboards") for path in paths), paths
    datasources = DEPLOY / "grafana" / "provisioning" / "datasources"
    urls = [
        source.get("url", "")
        for path in sorted(datasources.glob("*.y*ml"))
        for source in yaml.safe_load(path.read_text()).get("datasources", [])
        if source.get("type") == "prometheus"
    ]
    assert urls, f"no Prometheus data source in {datasources}"
    hosts = {urlsplit(url).hostname for url in urls}
    assert "prometheus" in hosts, f"Grafana must reach compose's `prometheus` service: {urls}"


async def test_the_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`)")
    prometheus = compose()["services"]["prometheus"]
    for volume in prometheus["volumes"]:  # the files where the container has them
        source, _, target = volume.partition(":")
        if source.startswith("."):
            placed = tmp_path / target.split(":")[0].lstrip("/")
            placed.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(DEPLOY / source, placed)
    process = await asyncio.create_subprocess_exec(
        promtool, "check", "config", str(tmp_path / "etc/prometheus/prometheus.yml"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, output.decode()
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["job_name"] == "switchyard"  # what the alert rules select
    [targets] = job["static_configs"]
    port = parse_container_config(compose_environment("switchyard-1")).http.metrics_port
    assert sorted(targets["targets"]) == [f"{name}:{port}" for name in SWITCHYARD_SERVICES]


# --- the compose broker, run here with its own config ---


@dataclass(frozen=True)
class ComposeBroker:
    url: str
    passwords: dict[str, str]  # by user


@pytest_asyncio.fixture
async def compose_broker(tmp_path: Path) -> AsyncIterator[ComposeBroker | None]:
    """Mosquitto run by the compose service's own command and config, their /mosquitto paths
    moved into the test's directory: None when mosquitto is not installed."""
    mosquitto, passwd = shutil.which("mosquitto"), shutil.which("mosquitto_passwd")
    if mosquitto is None or passwd is None:
        yield None
        return
    root = tmp_path / "mosquitto"
    (root / "config").mkdir(parents=True)
    (root / "data").mkdir()
    port = free_port()
    user, group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
    conf = (COMPOSE / "mosquitto.conf").read_text().replace("/mosquitto/", f"{root}/")
    conf = re.sub(r"^listener 1883$", f"listener {port} 127.0.0.1", conf, flags=re.MULTILINE)
    (root / "config" / "mosquitto.conf").write_text(f"{conf}\nuser {user}\n")  # as root too
    shutil.copy(COMPOSE / "mosquitto.acl", root / "config" / "mosquitto.acl")
    service = compose()["services"]["mosquitto"]
    [script] = interpolate(service["command"], example_env())
    script = script.replace("/mosquitto/", f"{root}/").replace("/usr/sbin/mosquitto", mosquitto)
    script = script.replace("mosquitto:mosquitto", f"{user}:{group}")
    environment = {**os.environ, **compose_environment("mosquitto")}
    process = await asyncio.create_subprocess_exec(
        *service["entrypoint"], script, env=environment,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_for(lambda: _listening(port), timeout=10, message="the compose mosquitto")
        passwords = {
            "switchyard": environment["SWITCHYARD_MQTT_PASSWORD"],
            "devices": environment["MQTT_DEVICES_PASSWORD"],
        }
        yield ComposeBroker(f"mqtt://127.0.0.1:{port}", passwords)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


def mqtt_login(broker: ComposeBroker, user: str | None, client_id: str) -> aiomqtt.Client:
    parts = urlsplit(broker.url)
    return aiomqtt.Client(
        parts.hostname or "127.0.0.1",
        parts.port or 1883,
        identifier=client_id,
        username=user,
        password=broker.passwords[user] if user else None,
        protocol=aiomqtt.ProtocolVersion.V5,
    )


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(10):
        async for message in client.messages:
            return message
    raise AssertionError("the subscription ended")


@pytest.mark.integration
async def test_the_compose_broker_admits_the_two_logins_only(
    compose_broker: ComposeBroker | None,
) -> None:
    if compose_broker is None:
        pytest.skip("needs mosquitto and mosquitto_passwd on PATH")
    with pytest.raises(aiomqtt.MqttError):
        async with mqtt_login(compose_broker, None, "anonymous"):
            pass
    async with (
        mqtt_login(compose_broker, "switchyard", "switchyard-1") as service,
        mqtt_login(compose_broker, "devices", "doorbell-front") as device,
    ):
        await service.subscribe("$share/switchyard/doorbell/+/button_press", qos=1)
        await device.subscribe("doorbell/front/alerts", qos=1)
        await device.publish("doorbell/front/button_press", b'{"priority": "high"}', qos=1)
        message = await next_message(service)
        assert str(message.topic) == "doorbell/front/button_press"
        await service.publish("doorbell/front/alerts", b'{"alert": "ring"}', qos=1)
        alert = await next_message(device)
        assert str(alert.topic) == "doorbell/front/alerts"


# --- the image's command, run from the project ---


@dataclass
class Running:
    process: asyncio.subprocess.Process
    environment: dict[str, str]
    http: str
    metrics: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest_asyncio.fixture
async def image_command_running(
    redis_url: str, compose_broker: ComposeBroker | None, tmp_path: Path
) -> AsyncIterator[Running]:
    """`switchyard run --config <the compose config>` as the image runs it: the Dockerfile's
    ENV and switchyard-1's compose environment, the working directory its own; Redis, the
    broker (the compose one when mosquitto is installed, else MQTT off) and the ports are
    the test's. It listens on 0.0.0.0 as in the container: that is what needs the tokens."""
    http_port, metrics_port = free_port(), free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    environment.update(image_environment())
    environment.update(compose_environment("switchyard-1"))
    workdir = tmp_path / "var-lib-switchyard"  # the image's WORKDIR and HOME
    workdir.mkdir()
    environment.update(
        HOME=str(workdir),
        SWITCHYARD_REDIS_URL=redis_url,
        SWITCHYARD_MQTT_URL=compose_broker.url if compose_broker else "off",
        SWITCHYARD_HTTP_PORT=str(http_port),
        SWITCHYARD_METRICS_PORT=str(metrics_port),
    )
    command = [arg.replace(IMAGE_CONFIG, str(COMPOSE / "config.yaml")) for arg in image_command()]
    executable = Path(sys.executable).parent / command[0]  # the venv's console script
    log = tmp_path / "switchyard.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            str(executable), *command[1:], cwd=workdir, env=environment,
            stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink,
        )  # fmt: skip
    running = Running(
        process,
        environment,
        f"http://127.0.0.1:{http_port}",
        f"http://127.0.0.1:{metrics_port}",
        log,
    )
    try:
        yield running
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def status_of(http: aiohttp.ClientSession, url: str, **headers: str) -> int:
    try:
        async with http.get(url, headers=headers) as response:
            return response.status
    except OSError:
        return 0


async def run_probe(command: list[str], environment: Mapping[str, str]) -> int:
    """A HEALTHCHECK command, its `python` the project's interpreter; its exit code."""
    argv = [sys.executable if command[0] == "python" else command[0], *command[1:]]
    process = await asyncio.create_subprocess_exec(*argv, env=dict(environment))
    return await asyncio.wait_for(process.wait(), timeout=30)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ingested(metrics: str, cls: str, source: str) -> float:
    pattern = re.compile(
        r'^switchyard_events_ingested_total\{[^}]*class="' + re.escape(cls) + r'"[^}]*'
        r'source="' + re.escape(source) + r'"[^}]*\} (\S+)$',
        re.MULTILINE,
    )
    return sum(float(value) for value in pattern.findall(metrics))


@pytest.mark.integration
@pytest.mark.timeout(150)
async def test_the_image_command_serves_takes_events_and_drains_on_sigterm(
    image_command_running: Running,
    compose_broker: ComposeBroker | None,
    http: aiohttp.ClientSession,
) -> None:
    running = image_command_running
    await wait_for(lambda: _healthy(http, running), timeout=60, interval=0.2, message="/healthz")
    _, liveness = healthcheck()
    assert await run_probe(liveness, running.environment) == 0, "the image's HEALTHCHECK"
    await wait_for(lambda: _ready(http, running), timeout=60, interval=0.2, message="/readyz ready")
    readiness = compose()["services"]["switchyard-1"]["healthcheck"]["test"]
    assert readiness[0] == "CMD"
    assert await run_probe(readiness[1:], running.environment) == 0, "compose's healthcheck"

    await _takes_events_with_its_tokens(http, running)
    if compose_broker is not None:
        async with mqtt_login(compose_broker, "devices", "doorbell-back") as device:
            await device.publish("doorbell/back/button_press", b'{"priority": "high"}', qos=1)

        async def from_mqtt() -> bool:
            async with http.get(f"{running.metrics}/metrics") as response:
                return ingested(await response.text(), "doorbell.button_press", "mqtt") >= 1

        await wait_for(from_mqtt, timeout=20, interval=0.2, message="an MQTT event ingested")

    grace = seconds(compose()["services"]["switchyard-1"]["stop_grace_period"])
    running.process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.wait_for(running.process.wait(), timeout=grace)
    except TimeoutError:
        pytest.fail(f"still running {grace}s after SIGTERM:\n{running.output()}")
    assert code == 0, running.output()
    # A probe after the exit fails: the HEALTHCHECK does report an unhealthy container.
    assert await run_probe(liveness, running.environment) != 0


async def _healthy(http: aiohttp.ClientSession, running: Running) -> bool:
    if running.process.returncode is not None:
        raise AssertionError(f"exited {running.process.returncode}:\n{running.output()}")
    return await status_of(http, f"{running.http}/healthz") == 200


async def _ready(http: aiohttp.ClientSession, running: Running) -> bool:
    if running.process.returncode is not None:
        raise AssertionError(f"exited {running.process.returncode}:\n{running.output()}")
    return await status_of(http, f"{running.http}/readyz") == 200


async def _takes_events_with_its_tokens(http: aiohttp.ClientSession, running: Running) -> None:
    tokens = example_env()
    url = f"{running.http}/events/doorbell/front/button_press"
    event = {"priority": "high"}
    music, doorbell = (bearer(tokens[f"SWITCHYARD_TOKEN_{name}"]) for name in ("MUSIC", "DOORBELL"))
    async with http.post(url, json=event) as response:
        assert response.status == 401
    async with http.post(url, json=event, headers=music) as response:
        assert response.status == 403  # a token for other topics
    async with http.post(url, json=event, headers=doorbell) as response:
        assert response.status == 202, await response.text()
        [accepted] = (await response.json())["accepted"]
        assert accepted["class"] == "doorbell.button_press"
    assert await status_of(http, f"{running.http}/metrics") == 401
    read = bearer(tokens["SWITCHYARD_TOKEN_READ"])
    assert await status_of(http, f"{running.http}/metrics", **read) == 200
    assert await status_of(http, f"{running.metrics}/metrics") == 200  # Prometheus: no token


# --- Kubernetes ---


def test_every_kubernetes_manifest_validates_against_the_official_schemas() -> None:
    checked = []
    for path, doc in manifests():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # custom resources: KEDA's own schemas, below
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(part) for part in exc.path)
                pytest.fail(f"{path.name}: {doc['kind']} at {where}: {exc.message} ({version})")
        checked.append(doc["kind"])
    assert sorted(checked) == sorted(
        ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service"]
    )
    for crd in sorted((K8S / "keda" / "crds").glob("*.yaml")):  # the vendored CRDs themselves
        for doc in load_all(crd):
            kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_the_deployment_is_probed_drained_and_unprivileged() -> None:
    deployment = manifest("Deployment")
    assert deployment["spec"]["replicas"] == 2
    spec, box = pod_spec(), container()
    config = parse_container_config(pod_environment())
    ports = {port["name"]: port["containerPort"] for port in box["ports"]}
    assert ports == {"http": config.http.port, "metrics": config.http.metrics_port}
    assert box["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert box["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert box["args"] == image_command()[1:]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert box["securityContext"]["readOnlyRootFilesystem"] is True
    assert box["securityContext"]["allowPrivilegeEscalation"] is False
    assert box["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= set(box["resources"])
    writable = {mount["mountPath"] for mount in box["volumeMounts"] if not mount.get("readOnly")}
    assert {"/tmp", image_workdir()} <= writable, "the read-only root's writable places"
    labels = spec_labels(deployment)
    for kind in ("Service", "PodDisruptionBudget"):
        selector = manifest(kind)["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), kind
    assert manifest("PodDisruptionBudget")["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def image_workdir() -> str:
    return one(final_stage(), "WORKDIR")


def spec_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    return labels


def strict_crd_schema(crd: dict[str, Any]) -> dict[str, Any]:
    """The served version's OpenAPI schema, with unknown fields refused where the CRD lists
    the fields (as the API server prunes them: a misspelt key would be silently dropped)."""
    [version] = [v for v in crd["spec"]["versions"] if v.get("served")]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for child in node.values():
                close(child)
        elif isinstance(node, list):
            for child in node:
                close(child)

    close(schema)
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def keda_schema(kind: str) -> dict[str, Any]:
    for path in (K8S / "keda" / "crds").glob("*.yaml"):
        for crd in load_all(path):
            if crd["spec"]["names"]["kind"] == kind:
                return strict_crd_schema(crd)
    raise AssertionError(f"no vendored CRD for {kind}")


def test_the_keda_resources_validate_against_kedas_crds() -> None:
    kinds = []
    for path, doc in manifests():
        if not doc["apiVersion"].startswith("keda.sh/"):
            continue
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        validator = jsonschema.Draft7Validator(keda_schema(doc["kind"]))
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, f"{path.name} {doc['kind']}:\n" + "\n".join(errors)
        kinds.append(doc["kind"])
    assert sorted(kinds) == ["ScaledObject", "TriggerAuthentication"]


def test_the_autoscaler_scales_the_deployment_on_class_backlog() -> None:
    scaled = manifest("ScaledObject")["spec"]
    deployment = manifest("Deployment")
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert scaled["minReplicaCount"] == deployment["spec"]["replicas"]
    assert scaled["minReplicaCount"] > manifest("PodDisruptionBudget")["spec"]["minAvailable"]
    assert scaled["maxReplicaCount"] > scaled["minReplicaCount"]
    environment = pod_environment()
    config = parse_container_config(environment)
    redis_host = urlsplit(config.redis.url)
    authentication = manifest("TriggerAuthentication")
    secret = manifest("Secret")
    for reference in authentication["spec"]["secretTargetRef"]:
        assert reference["name"] == secret["metadata"]["name"]
        assert reference["key"] in secret["stringData"]
    assert secret["stringData"]["REDIS_PASSWORD"] == redis_host.password
    assert scaled["triggers"]
    for trigger in scaled["triggers"]:
        assert trigger["type"] == "redis-streams"
        assert trigger["authenticationRef"]["name"] == authentication["metadata"]["name"]
        metadata = trigger["metadata"]
        assert metadata["address"] == f"{redis_host.hostname}:{redis_host.port}"
        assert metadata["consumerGroup"] == config.redis.group
        match = re.fullmatch(r"sy:\{([^}#]+)\}:stream", metadata["stream"])
        assert match, metadata["stream"]
        cls = config.classes[match.group(1)]
        assert cls.partitions == 1, "one trigger per partition stream: sy:{<class>#i}:stream"
        assert cls.mode in ("queue", "batch"), "more pods do not speed up an owned partition"
        assert int(metadata["lagCount"]) > int(metadata["activationLagCount"]) >= 0
