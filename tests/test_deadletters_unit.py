"""A class's dead letters read as the console and `switchyard dlq` read them, on fakeredis:
the newest ones, and those named by entry or event id, page by page."""

from __future__ import annotations

from router.streams import keys
from router.streams.deadletters import DeadLetters
from router.testing import fake_transport


async def letters_of(count: int) -> DeadLetters:
    transport = fake_transport()
    letters = DeadLetters(transport.redis, transport, "work")
    for n in range(count):
        await transport.redis.xadd(keys.dead_letters("work"), {"id": f"e{n}", "reason": "x"})
    return letters


async def test_the_newest_are_the_last_added_oldest_first() -> None:
    letters = await letters_of(12)
    newest = await letters.newest(3)
    assert [letter.event_id() for letter in newest] == ["e9", "e10", "e11"]


async def test_chosen_pages_hold_only_what_was_named_by_entry_or_event_id() -> None:
    letters = await letters_of(5)
    every = [letter async for page in letters.chosen() for letter in page]
    by_entry = every[1].entry_id
    named = [letter async for page in letters.chosen([by_entry, "e3"]) for letter in page]
    assert [letter.event_id() for letter in every] == ["e0", "e1", "e2", "e3", "e4"]
    assert [letter.event_id() for letter in named] == ["e1", "e3"]


async def test_an_empty_selection_chooses_nothing_and_none_chooses_every_letter() -> None:
    """A console's "replay selected" with nothing selected sent `{"ids": []}`, which chose
    every dead letter of the class."""
    letters = await letters_of(3)
    assert [page async for page in letters.chosen([])] == []
    assert len([letter async for page in letters.chosen(None) for letter in page]) == 3
