"""The actor API: everything a domain actor is written against, and nothing else.

Domain actors import from here alone: the base class, the context a handler is given, the
event envelope, and the failure that skips retries; and, for a workload that answers
questions over what it stored, the analytics types (`Query`, `Answer`, `Chart`, `QueryError`).
"""

from __future__ import annotations

from router.errors import PermanentFailure
from router.ops.analytics import Answer, Chart, Query, QueryError
from router.runtime.actor import Actor, Context, StreamFields
from router.streams.envelope import Envelope

__all__ = [
    "Actor", "Answer", "Chart", "Context", "Envelope", "PermanentFailure", "Query", "QueryError",
    "StreamFields",
]  # fmt: skip
