"""The actor API: everything a domain actor is written against, and nothing else.

Domain actors import from here alone: the base class, the context a handler is given, the
event envelope, the failure that skips retries, the alert a handler has delivered to a
device's owner (`ctx.notify`) and the registered `Device`; and, for a workload that answers
questions over what it stored, the analytics types (`Query`, `Answer`, `Chart`, `QueryError`);
and, for one that keeps files or clips, the object store (`ObjectStore`, `ObjectInfo`).
"""

from __future__ import annotations

from router.errors import PermanentFailure
from router.notify.alert import Alert
from router.notify.device import Device
from router.ops.analytics import Answer, Chart, Query, QueryError
from router.runtime.actor import Actor, Context, StreamFields
from router.storage.objects import ObjectInfo, ObjectStore
from router.streams.envelope import Envelope

__all__ = [
    "Actor", "Alert", "Answer", "Chart", "Context", "Device", "Envelope", "ObjectInfo",
    "ObjectStore", "PermanentFailure", "Query", "QueryError", "StreamFields",
]  # fmt: skip
