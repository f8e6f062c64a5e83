"""The demo's music listeners: interactions that look like a real app's, so the analytics have
something to find.

- Activity differs hugely between users (a Pareto draw): a few heavy listeners, many light.
- Artist popularity is Zipf-like over a catalogue, and each user leans to a few genres.
- Live interactions happen now; `history()` first replays a past week of them, with daily
  peaks (morning, lunch, evening) and busier weekends, as apps uploading their logs would,
  so the peak-times grid has a week to show. (Each past hour is a lake partition of its own:
  the history comes in a few large posts, not trickling in.)
- Each user keeps a device, platform and app version; app 9.0.0 skips more than the others,
  so the app-version breakdown has a release to catch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import random

GENRES = (
    "pop", "rock", "hip hop", "jazz", "electronic", "classical", "r&b", "afrobeat", "folk",
    "latin", "metal", "soul",
)  # fmt: skip
ARTISTS = 240
HOUR_WEIGHTS = (  # 00:00 to 23:00: a night low, a morning commute, lunch, a long evening peak
    2, 1, 1, 1, 1, 2, 4, 8, 10, 7, 5, 6, 8, 8, 6, 5, 6, 8, 10, 12, 13, 12, 9, 5,
)  # fmt: skip
WEEKEND_BOOST = 1.4
SETUPS = (  # device, platform, share of users
    ("phone", "ios", 34), ("phone", "android", 38), ("desktop", "web", 10),
    ("desktop", "macos", 6), ("speaker", "speaker-os", 7), ("car", "android-auto", 5),
)  # fmt: skip
APP_VERSIONS = (("8.9.2", 25, 0.25), ("8.10.0", 45, 0.25), ("9.0.0", 30, 0.45))  # share, skips
ACTIONS = (  # what a listener does next, by weight; plays are what is streamed
    ("play", 52), ("like_song", 8), ("add_to_playlist", 5), ("remove_from_playlist", 2),
    ("change_song", 10), ("select_channel", 4), ("remove_channel", 2),
)  # fmt: skip
SCREENS = ("now_playing", "home", "search", "library", "playlist", "radio")


@dataclass(frozen=True, slots=True)
class Listener:
    user_id: int
    activity: float  # relative events per unit of time
    device: str
    platform: str
    app_version: str
    skip_rate: float
    genres: tuple[str, ...]  # the genres this user leans to


class Listeners:
    """A population of listeners and the interactions they send."""

    def __init__(self, rng: random.Random, users: int, now: datetime | None = None) -> None:
        self.random = rng
        self.now = now
        self.artists = [
            (f"artist-{rank:03d}", rng.choice(GENRES)) for rank in range(1, ARTISTS + 1)
        ]
        self.popularity = [1 / rank**1.1 for rank in range(1, ARTISTS + 1)]
        self.listeners = [self._listener(user) for user in range(1, users + 1)]
        self.activity = [listener.activity for listener in self.listeners]

    def _listener(self, user: int) -> Listener:
        device, platform = self._pick([(d, p) for d, p, _ in SETUPS], [w for *_, w in SETUPS])
        version, skip_rate = self._pick(
            [(v, skips) for v, _, skips in APP_VERSIONS], [w for _, w, _ in APP_VERSIONS]
        )
        return Listener(
            user_id=user,
            activity=self.random.paretovariate(1.2),
            device=device,
            platform=platform,
            app_version=version,
            skip_rate=skip_rate,
            genres=tuple(self.random.sample(GENRES, 2)),
        )

    def interactions(self) -> list[tuple[str, dict[str, Any]]]:
        """One listener's next interactions, now (a play is its start and its end, or a skip)."""
        return self._interactions(self.now or datetime.now(UTC))

    def history(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        """About `count` interactions of the past week."""
        made: list[tuple[str, dict[str, Any]]] = []
        while len(made) < count:
            made += self._interactions(self._when())
        return made

    def _interactions(self, when: datetime) -> list[tuple[str, dict[str, Any]]]:
        listener = self.random.choices(self.listeners, self.activity)[0]
        action = self._pick([a for a, _ in ACTIONS], [w for _, w in ACTIONS])
        base = self._base(listener, when)
        topic = f"music/{listener.user_id}/events"
        if action != "play":
            return [(topic, base | {"action": action})]
        started = base | {"action": "play_start"}
        length = self.random.uniform(150, 300)
        if self.random.random() < listener.skip_rate:
            heard = round(self.random.uniform(3, 40), 1)
            ended = base | {"action": "skip_song", "seconds_listened": heard}
        else:
            complete = self.random.random() < 0.85
            heard = round(length if complete else self.random.uniform(40, length), 1)
            ended = base | {"action": "play_end", "seconds_listened": heard, "completed": complete}
        ended["timestamp"] = _iso(when + timedelta(seconds=heard))
        return [(topic, started), (topic, ended)]

    def _base(self, listener: Listener, when: datetime) -> dict[str, Any]:
        artist, genre = self._artist(listener)
        base = {
            "user_id": listener.user_id,
            "timestamp": _iso(when),
            "screen": self.random.choice(SCREENS),
            "section": self.random.choice(("top", "recent", "for_you", "charts")),
            "device": listener.device,
            "platform": listener.platform,
            "app_version": listener.app_version,
            "track": {"id": f"{artist}-t{self.random.randint(1, 40):02d}", "artist": artist,
                      "genre": genre},
            "channel": f"radio-{genre.replace(' ', '-')}" if self.random.random() < 0.2 else None,
            "playlist": f"pl-{self.random.randint(1, 9)}" if self.random.random() < 0.3 else None,
        }  # fmt: skip
        return {name: value for name, value in base.items() if value is not None}

    def _artist(self, listener: Listener) -> tuple[str, str]:
        """A popular artist (Zipf), mostly from the genres this listener leans to."""
        for _ in range(8):
            artist, genre = self.random.choices(self.artists, self.popularity)[0]
            if genre in listener.genres or self.random.random() < 0.25:
                return artist, genre
        return artist, genre

    def _when(self) -> datetime:
        """A moment of the past week, at the hours people listen most."""
        now = self.now or datetime.now(UTC)
        for _ in range(20):
            day = self.random.randrange(7)
            moment = now - timedelta(days=day)
            weight = WEEKEND_BOOST if moment.weekday() >= 5 else 1.0
            if self.random.random() < weight / WEEKEND_BOOST:
                break
        hour = self._pick(list(range(24)), list(HOUR_WEIGHTS))
        moment = moment.replace(hour=hour, minute=self.random.randrange(60), second=0)
        return min(moment, now)

    def _pick(self, options: list[Any], weights: list[float]) -> Any:
        return self.random.choices(options, weights)[0]


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
