"""The actor API: everything a domain actor is written against, and nothing else.

Domain actors import from here alone: the base class, the context a handler is given, the
event envelope, and the failure that skips retries.
"""

from __future__ import annotations

from router.errors import PermanentFailure
from router.runtime.actor import Actor, Context, StreamFields
from router.streams.envelope import Envelope

__all__ = ["Actor", "Context", "Envelope", "PermanentFailure", "StreamFields"]
