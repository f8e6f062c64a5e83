"""`deploy/security.yaml`, the secure settings, laid over the repository's config.yaml: a
config that validates, whose secrets come from files, and that refuses no token."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from router.config import parse_config
from router.ingress.access import Access

REPO = Path(__file__).parent.parent
SECRETS = ("redis-password", "mqtt-password", "webhook-secret", "token-music", "token-doorbell",
           "token-clinic", "token-read")  # fmt: skip


def test_the_secure_settings_make_a_valid_config_with_every_secret_from_its_file(
    tmp_path: Path,
) -> None:
    for name in SECRETS:
        (tmp_path / name).write_text(f"{name}-value\n")
    merged = yaml.safe_load((REPO / "config.yaml").read_text())
    merged.update(yaml.safe_load((REPO / "deploy" / "security.yaml").read_text()))
    environ = {"SWITCHYARD_SECRETS": str(tmp_path), "SWITCHYARD_ADMIN_TOKEN": "admin-value"}
    config = parse_config(yaml.safe_dump(merged), "deploy/security.yaml", environ)
    assert config.redis.password == "redis-password-value"
    assert config.mqtt.password == "mqtt-password-value"
    assert config.notify.webhook_secret == "webhook-secret-value"
    access = Access.from_config(config.http.tokens, environ)
    gateway = access.grant("token-doorbell-value")
    assert gateway is not None
    assert gateway.covers("doorbell/front-door/button_press")
    assert not gateway.covers("clinic/arrival")
    operator = access.grant("admin-value")
    assert operator is not None
    assert operator.allows("admin")


def test_a_missing_secret_file_is_named_with_its_line(tmp_path: Path) -> None:
    merged = yaml.safe_load((REPO / "config.yaml").read_text())
    merged.update(yaml.safe_load((REPO / "deploy" / "security.yaml").read_text()))
    with pytest.raises(Exception, match=r"redis\.password_file.*cannot read"):
        parse_config(
            yaml.safe_dump(merged), "deploy/security.yaml", {"SWITCHYARD_SECRETS": str(tmp_path)}
        )
