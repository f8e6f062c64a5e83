# mypy: ignore-errors
"""Celery with its Redis broker: one worker process, the `solo` pool (tasks run in the worker's
own process; prefork with concurrency 1 would add a second process), no result backend.

Priorities: `broker_transport_options` with `priority_steps` 0-9 and `queue_order_strategy:
priority`, prefetch multiplier 1 (as Celery's docs advise for priorities); no-op tasks are
sent with priority 9, high ones with 0 (0 is the most urgent on Redis).
"""

from __future__ import annotations

from celery import Celery

from bench.peers.common import PRIORITY, URL, main, record_high, tally

LOW, HIGH = 9, 0

app = Celery("bench_peer", broker=URL)
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1 if PRIORITY else 4,
)
if PRIORITY:
    app.conf.broker_transport_options = {
        "priority_steps": list(range(10)),
        "sep": ":",
        "queue_order_strategy": "priority",
    }


@app.task(name="noop")
def noop() -> None:
    tally.hit()


@app.task(name="high")
def high(sent: float) -> None:
    record_high(sent)


def fill(count: int) -> None:
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            noop.apply_async(producer=producer, priority=LOW if PRIORITY else None)


def send_high(sent: float) -> None:
    high.apply_async((sent,), priority=HIGH)


def worker() -> None:
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


if __name__ == "__main__":
    main(fill, worker, send_high)
