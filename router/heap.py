"""The cyclic garbage collector, set for a long-lived service that makes a few objects per event.

Two costs showed in the ingest-to-ack path with the collector's defaults (bench/README.md):
- every full collection walked what start-up had made (about 80,000 objects: the config's
  models, pyarrow and DuckDB for the lakes): some 50 ms each, one every 20,000 events or so;
- a young collection every 700 new objects caught the events then in flight, which survived
  it and were walked again, older, by the next collections.

So once the service has started, what start-up made is frozen (no collection walks it again;
it is freed as usual when nothing refers to it), and the young generation is collected every
`YOUNG_THRESHOLD` new objects, by when most events have come and gone.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000

_settled = False


def settle() -> None:
    """Freeze what the process made so far and collect the young less often; once per process
    (a test process may start many services)."""
    global _settled  # noqa: PLW0603 (one process, one settling)
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
