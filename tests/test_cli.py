"""The `switchyard` command's config checking, as an operator runs it."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from router.cli import main
from router.cli.clinic_day import ClinicDay

ROOT = Path(__file__).parent.parent


def test_check_summarises_the_default_config_and_exits_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", "--config", str(ROOT / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "lanes (4, highest first): high (1 worker), medium, low, archive (1 worker)" in out
    assert "doorbell.button_press" in out
    assert "clinic.vaccination" in out


def test_check_lists_every_error_with_its_line_and_exits_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "lanes: [{name: high}]\n"
        "classes:\n"
        "  a.b: {lane: high, actor: 'actors.builtin:Log', colour: red}\n"
        "  c.d: {lane: high, actor: 'actors.builtin:Log', concurrency: 0}\n"
    )
    assert main(["check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 3: classes.a.b.colour: unknown key" in err
    assert "line 4: classes.c.d.concurrency:" in err


def test_check_refuses_an_actor_that_cannot_be_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "lanes: [{name: high}]\nclasses:\n  a.b:\n    lane: high\n    actor: actors.builtin:Nope\n"
    )
    assert main(["check", "--config", str(bad)]) == 2
    assert "line 5: classes.a.b.actor:" in capsys.readouterr().err


def test_the_module_runs_as_a_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "router", "check", "--config", str(ROOT / "config.yaml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    classes = ROOT.joinpath("config.yaml").read_text().count("\n    actor: ")  # one per class
    assert f"classes ({classes})" in result.stdout


def test_each_demo_clinic_day_has_patients_of_its_own() -> None:
    """`make run` keeps yesterday's visits in .switchyard: a new day's C0001 is not the old
    one (whose closed visit would hide the new one's reaction)."""
    first, second = ClinicDay(random.Random(1)), ClinicDay(random.Random(2))
    ids = [day.arrivals(day.started, 1.0)[0]["patient_id"] for day in (first, second)]
    assert ids[0] != ids[1]
    assert all(patient.endswith("-0001") for patient in ids)


@pytest.mark.parametrize("seed", range(40))
def test_every_demo_day_opens_with_a_well_patient_who_has_a_reaction(seed: int) -> None:
    """`make run` shows a reaction paged early whatever the dice say: the first patient is
    never the one screened out or sent back with a half-filled form."""
    day = ClinicDay(random.Random(seed))
    [first] = day.arrivals(day.started, 0.0)
    assert first["patient_id"] in day.watching
    assert first["symptoms"] == []
    assert first["temperature_c"] < 38
    assert all(first[field] for field in ("name", "birth_date"))
