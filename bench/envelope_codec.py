"""The envelope's codec against msgpack's, on the same envelopes.

    .venv/bin/python -m bench.envelope_codec [--envelopes 20000] [--rounds 5] [--quick]

Every event the service takes is packed once on ingest and read once by its pool. This packs
and reads `--envelopes` music-interaction envelopes (`bench.loadgen.make_event`) two ways,
taking turns `--rounds` times: with msgpack as the service did before (one Packer reused,
`unpackb` to read), and with `Envelope.encode` and `Envelope.decode` (ormsgpack, msgpack's
bytes). It checks that both give the same bytes, and prints the CPU per envelope (medians) and
each as a ratio to msgpack's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import TYPE_CHECKING, Any

import msgpack

from bench.harness import Watch
from bench.loadgen import make_event
from router.streams.envelope import WIRE_VERSION, Envelope

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


def envelopes(count: int) -> list[Envelope]:
    ingest_ts = time.time()
    return [
        Envelope(f"e{seq}", "music.interaction", "music", make_event(seq), ingest_ts=ingest_ts)
        for seq in range(count)
    ]


def cpu_us_each(work: Callable[[], object], count: int) -> float:
    watch = Watch.start()
    work()
    return watch.elapsed()[1] / count * 1e6


def measure(count: int, rounds: int) -> dict[str, dict[str, float]]:
    """Median CPU µs per envelope to pack and to read, by codec."""
    items = envelopes(count)
    pack = msgpack.Packer(use_bin_type=True).pack
    packed = [pack((WIRE_VERSION, *e)) for e in items]
    if packed != [e.encode() for e in items]:
        raise SystemExit("the two codecs disagree on the bytes: the envelope's wire changed")

    def unpacked(data: bytes) -> object:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)

    def each(work: Callable[[Any], object], inputs: Sequence[Any]) -> Callable[[], None]:
        def run() -> None:  # nothing kept: the collector has no growing list to walk
            for value in inputs:
                work(value)

        return run

    ways = {
        "msgpack (Packer reused, unpackb)": (
            each(lambda e: pack((WIRE_VERSION, *e)), items),
            each(unpacked, packed),
        ),
        "Envelope.encode / decode (ormsgpack)": (
            each(Envelope.encode, items),
            each(Envelope.decode, packed),
        ),
    }
    samples: dict[str, dict[str, list[float]]] = {w: {"pack": [], "read": []} for w in ways}
    for _ in range(rounds):
        for way, (packing, reading) in ways.items():
            samples[way]["pack"].append(cpu_us_each(packing, count))
            samples[way]["read"].append(cpu_us_each(reading, count))
    return {
        way: {step: statistics.median(values) for step, values in steps.items()}
        for way, steps in samples.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.envelope_codec", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--envelopes", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2,000 envelopes, 2 rounds")
    args = parser.parse_args(argv)
    count, rounds = (2_000, 2) if args.quick else (args.envelopes, args.rounds)
    result = measure(count, rounds)
    base = next(iter(result.values()))
    print(f"{count:,} envelopes, {rounds} rounds, medians of CPU per envelope")
    print(f"{'codec':<40} {'pack':>9} {'vs':>6} {'read':>9} {'vs':>6}")
    for way, figures in result.items():
        pack, read = figures["pack"], figures["read"]
        print(
            f"{way:<40} {pack:7.2f}us {pack / base['pack']:5.2f}x"
            f" {read:7.2f}us {read / base['read']:5.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
