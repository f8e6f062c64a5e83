"""How long the stats loop's report holds the event loop, against a pass over the registry.

    .venv/bin/python -m bench.status_report [--config config.yaml] [--reports 50] [--quick]

Every `redis.stats_interval_s` (2 s by default) each instance builds its report (per class:
rate, p50 and p99 since the previous one) on the event loop, so for that long no event moves.
This builds the metrics of a config's classes, with every latency histogram filled, and times
`Reporter.report` against one pass over the whole registry (how the report read its figures
before), taking turns. It prints the median milliseconds of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from bench.harness import Watch
from router.config import load_config
from router.metrics import Metrics
from router.ops.status import Reporter

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from router.config import Config


def filled_metrics(config: Config) -> Metrics:
    targets = [cls.sla.target_ms / 1000 for cls in config.classes.values() if cls.sla]
    metrics = Metrics(CollectorRegistry(), targets)
    for name, cls in config.classes.items():
        metrics.declare_class(name, cls.lane)
        metrics.processed.labels(name, "ok").inc(1_000)
        for bound in metrics.latency.labels(name, cls.lane)._upper_bounds:  # every bucket used
            metrics.latency.labels(name, cls.lane).observe(min(bound, 1e9))
    return metrics


def ms_each(work: Callable[[], object]) -> float:
    watch = Watch.start()
    work()
    return watch.elapsed()[0] * 1e3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.status_report", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--config", type=Path, default=Path("config.yaml"))
    parser.add_argument("--reports", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="5 reports")
    args = parser.parse_args(argv)
    config = load_config(args.config, environ={})
    metrics = filled_metrics(config)
    reporter = Reporter(config, metrics)
    report, registry_pass = [], []
    for second in range(1, 1 + (5 if args.quick else args.reports)):
        report.append(ms_each(partial(reporter.report, float(second), {}, {})))
        registry_pass.append(ms_each(lambda: list(metrics.registry.collect())))
    whole, own = statistics.median(registry_pass), statistics.median(report)
    families = len(list(metrics.registry.collect()))
    print(f"{args.config}: {len(config.classes)} classes, {families} metric families")
    print(f"one pass over the whole registry (the former report) {whole:8.2f} ms   1.00x")
    print(f"Reporter.report                                      {own:8.2f} ms {own / whole:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
