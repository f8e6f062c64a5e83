"""Imports flow one way: the core nouns import nothing of ours, domain actors only the actor API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOMAIN_ACTORS = ["actors/builtin.py", "actors/music.py", "actors/doorbell.py", "actors/clinic.py"]
LEAF_MODULES = {
    "router/errors.py": set(),
    "router/clock.py": set(),
    "router/envelope.py": {"router.errors"},
}


def our_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("router", "actors")}


@pytest.mark.parametrize("module", DOMAIN_ACTORS)
def test_domain_actors_import_only_the_actor_api_and_the_envelope(module: str) -> None:
    assert our_imports(ROOT / module) <= {"actors.api", "router.envelope"}


@pytest.mark.parametrize(("module", "allowed"), LEAF_MODULES.items())
def test_core_nouns_import_nothing_else_of_ours(module: str, allowed: set[str]) -> None:
    assert our_imports(ROOT / module) <= allowed


@pytest.mark.parametrize("module", DOMAIN_ACTORS)
def test_domain_actors_never_touch_redis_or_mqtt(module: str) -> None:
    text = (ROOT / module).read_text()
    assert "import redis" not in text
    assert "aiomqtt" not in text
