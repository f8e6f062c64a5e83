"""The clinic board's figures against a day counted by hand: four patients, two hours after
opening. No server: the board is a function of the journeys, the queues and the time."""

from __future__ import annotations

from typing import Any

from actors.clinic import board

T0 = 1_800_000_000.0  # the clinic opens (midnight, for the test's day)
NOW = T0 + 7200  # two hours later


def times(**offsets: float) -> dict[str, float]:
    return {name: T0 + seconds for name, seconds in offsets.items()}


VISITS: list[dict[str, Any]] = [
    {  # A: the whole way through, early in the day
        "visit_id": "a", "patient_id": "A", "outcome": "vaccinated", "visit_s": 1400.0,
        "registration_desk": "desk-1", "vaccination_station": "station-1",
        **times(arrived_at=0, screened_at=60, registration_started_at=120, registered_at=300,
                vaccination_started_at=360, vaccinated_at=480, observation_started_at=490,
                observation_ends_at=1390, departed_at=1400),
    },
    {  # B: a fever, screened out
        "visit_id": "b", "patient_id": "B", "outcome": "screened_out", "visit_s": 30.0,
        **times(arrived_at=600, screened_at=620, departed_at=630),
    },
    {  # C: under observation now, 130 s left
        "visit_id": "c", "patient_id": "C",
        "registration_desk": "desk-2", "vaccination_station": "station-1",
        **times(arrived_at=6000, screened_at=6030, registration_started_at=6090,
                registered_at=6270, vaccination_started_at=6300, vaccinated_at=6420,
                observation_started_at=6430, observation_ends_at=7330),
    },
    {  # D: screened, waiting for a desk
        "visit_id": "d", "patient_id": "D", **times(arrived_at=6900, screened_at=6960),
    },
]  # fmt: skip
QUEUES = {"clinic.registration": board.Queue(waiting=1, in_service=0)}
DESKS = {"registration": ["desk-1", "desk-2", "desk-3"], "vaccination": ["station-1"]}


def rows_by_station() -> dict[str, dict[str, Any]]:
    rows = board.station_rows(VISITS, QUEUES, NOW, T0, DESKS)
    return {row[0]: dict(zip(board.COLUMNS, row, strict=True)) for row in rows}


def figures(row: dict[str, Any]) -> list[Any]:
    return [row[name] for name in board.COLUMNS[1:]]


def test_each_station_counts_its_queue_its_day_its_last_hour_and_its_times() -> None:
    rows = rows_by_station()
    # waiting, in service, done today, last hour, wait mean/p90, service mean/p90, utilisation
    assert figures(rows["arrival"]) == [0, 0, 4, 2, 42.5, 60.0, None, None, None]
    assert figures(rows["registration"]) == [1, 0, 2, 1, 60.0, 60.0, 180.0, 180.0, None]
    assert figures(rows["vaccination"]) == [0, 0, 2, 1, 45.0, 60.0, 120.0, 120.0, None]
    assert figures(rows["observation"]) == [0, 1, 1, 0, 10.0, 10.0, 910.0, 910.0, None]
    assert figures(rows["departure"]) == [0, 0, 2, 0, None, None, None, None, None]


def test_desks_show_who_served_whom_and_how_busy_they_were_in_the_last_hour() -> None:
    rows = rows_by_station()
    assert [name for name in rows if "/" in name] == [
        "registration/desk-1", "registration/desk-2", "registration/desk-3",
        "vaccination/station-1",
    ]  # fmt: skip
    # desk-1 served A two hours ago: nothing in the last hour. desk-2 served C for 180 s of it.
    assert figures(rows["registration/desk-1"]) == [None, None, 1, 0, 60.0, 60.0, 180.0, 180.0, 0.0]
    assert figures(rows["registration/desk-2"]) == [
        None,
        None,
        1,
        1,
        60.0,
        60.0,
        180.0,
        180.0,
        0.05,
    ]
    assert figures(rows["registration/desk-3"]) == [None, None, 0, 0, None, None, None, None, 0.0]
    assert rows["vaccination/station-1"]["done_today"] == 2
    assert rows["vaccination/station-1"]["utilisation"] == round(120 / 3600, 3)


def test_the_day_at_a_glance() -> None:
    summary = dict(zip(board.SUMMARY, board.summary_row(VISITS, 1, NOW, T0), strict=True))
    assert summary == {
        "arrived_today": 4, "in_clinic": 2, "observing": 1, "vaccinated": 2,
        "screened_out": 1, "referred": 0, "needs_attention": 1,
        "visit_mean_s": 715.0, "visit_p90_s": 1400.0, "departures_per_hour": 0,
    }  # fmt: skip


def test_who_is_under_observation_soonest_first() -> None:
    later = {**VISITS[2], "visit_id": "e", "observation_ends_at": T0 + 9000}
    watched = board.under_observation([later, *VISITS])
    assert [v["visit_id"] for v in watched] == ["c", "e"]


def test_yesterdays_steps_do_not_count_today() -> None:
    rows = board.station_rows(VISITS, {}, NOW + 86400, T0 + 86400, DESKS)
    done = {row[0]: row[3] for row in rows}
    assert set(done.values()) == {0}
