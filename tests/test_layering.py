"""Imports flow one way, along the data path; computed from the code, not listed by hand.

- No import cycles between modules, counting imports under `TYPE_CHECKING`: a cycle is a cycle.
- The stages of `router/` import only from their own stage or those before it.
- `router/` never imports `actors/`: the engine knows actors only by their import path.
- Domain actors import only the public API, `actors.api`, and never Redis or MQTT.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGES = ("router", "actors")

# The stages of router/, in the order they may import each other: each imports only from its
# own stage and the ones above it in this list.
STAGES = (
    (
        "foundation",
        ("errors", "redaction", "clock", "tasks", "backoff", "logs", "metrics", "loops", "heap"),
    ),
    ("config", ("config",)),
    ("storage", ("storage",)),
    ("streams", ("streams",)),
    ("routing", ("routing",)),
    ("ingress", ("ingress",)),
    ("notify", ("notify",)),
    ("fleet", ("fleet",)),
    ("runtime", ("runtime",)),
    ("ops", ("ops",)),
    ("embedded", ("embedded",)),
    ("service", ("service",)),
    ("commands", ("cli", "__main__", "testing")),
)
LEAVES = {
    "router.errors": set(),
    "router.clock": set(),
    "router.streams.envelope": {"router.errors"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


@cache
def imports_of(name: str) -> frozenset[str]:
    """The modules of ours that `name` imports, wherever the import stands."""
    known = modules()
    found: set[str] = set()
    for node in ast.walk(ast.parse(known[name].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            candidates = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c in known and c != name)
    return frozenset(found)


def cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for other in imports_of(name):
            if other not in index:
                visit(other)
                low[name] = min(low[name], low[other])
            elif other in stack:
                low[name] = min(low[name], index[other])
        if low[name] == index[name]:
            group = []
            while (member := stack.pop()) != name:
                group.append(member)
            if group:
                found.append(sorted([name, *group]))

    for name in modules():
        if name not in index:
            visit(name)
    return found


def stage_of(name: str) -> int:
    """The stage number of a router module."""
    first = name.split(".")[1]
    for number, (_, prefixes) in enumerate(STAGES):
        if first in prefixes:
            return number
    raise AssertionError(f"{name} belongs to no stage: add it to STAGES")


def router_modules() -> list[str]:
    return [name for name in modules() if name.startswith("router.") and name != "router"]


def test_there_are_no_import_cycles_not_even_behind_type_checking() -> None:
    assert cycles() == []


@pytest.mark.parametrize("name", router_modules())
def test_a_stage_imports_only_from_itself_and_the_stages_before_it(name: str) -> None:
    later = {
        other: STAGES[stage_of(other)][0]
        for other in imports_of(name)
        if other.startswith("router.") and stage_of(other) > stage_of(name)
    }
    assert not later, f"{name} ({STAGES[stage_of(name)][0]}) imports later stages: {later}"


@pytest.mark.parametrize("name", router_modules())
def test_the_engine_never_imports_the_actors_package(name: str) -> None:
    assert not {other for other in imports_of(name) if other.startswith("actors")}


@pytest.mark.parametrize(
    "name", [n for n in modules() if n.startswith("actors.") and n != "actors.api"]
)
def test_domain_actors_import_only_the_public_actor_api(name: str) -> None:
    """And their own workload's package: `actors.music.archive` may use `actors.music.lake`."""
    workload = ".".join(name.split(".")[:2])
    own = {other for other in imports_of(name) if other.startswith(f"{workload}.")}
    assert imports_of(name) - own <= {"actors.api"}
    text = modules()[name].read_text()
    assert "import redis" not in text
    assert "aiomqtt" not in text


@pytest.mark.parametrize(("name", "allowed"), LEAVES.items())
def test_the_core_nouns_import_almost_nothing_of_ours(name: str, allowed: set[str]) -> None:
    assert imports_of(name) <= allowed


def test_the_stages_cover_every_module_and_the_graph_is_not_empty() -> None:
    assert len(router_modules()) > 40
    assert sum(len(imports_of(name)) for name in modules()) > 100
    for name in router_modules():
        stage_of(name)
