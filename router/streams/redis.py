"""Redis Streams I/O for the class streams: batched publish, group reads, batched acks, stats.

Every command on the hot path is batched: one script call per class per batch on the way
in, one XREADGROUP per fetch, one XACK (or one MULTI with retries and dead letters) per
settle.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import msgpack
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AskError, ResponseError

from router.streams import keys, records
from router.streams.records import RecordUpdate
from router.streams.transport import UNAVAILABLE, Extra, Outgoing, StreamStats, Written

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from router.streams.client import RedisClient
    from router.streams.line import Lines
    from router.streams.transport import Fields

BACKLOG_COUNT_LIMIT = 10_000
WRITE_PROBE_TTL_MS = 10_000
SCRIPT_ITEMS = 500  # events per enqueue call: one call must not hold Redis for long

# One server-side loop per class: a whole batch costs one command, not one per event.
# ARGV: now_ms, dedup window_ms, and the batch as one msgpack array of (dedup id or "",
# due_ms or "", envelope) triples: one argument instead of three per event is what makes
# packing the command cheap. An arrival whose dedup id was seen within the window is skipped
# (reply: false); one with a due time goes to the delay queue (reply: "delayed"); the rest
# are appended to the stream.
# The script reads before it writes, and its first write is one Redis refuses when it is out
# of memory: Redis checks memory once, at a script's first write, so a script that began by
# pruning (a write that frees memory) would go on to write past `maxmemory`. Old ids are
# pruned last for the same reason; an id older than the window counts as fresh meanwhile.
_ENQUEUE = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local items = ITEMS
local deduplicated = false
local out = {}
for i = 1, #items, 3 do
  local dedup, due, data = items[i], items[i + 1], items[i + 2]
  local fresh = true
  if dedup ~= '' then
    local seen = redis.call('ZSCORE', KEYS[2], dedup)
    fresh = not seen or tonumber(seen) <= now - window
    deduplicated = true
  end
  if not fresh then
    out[#out + 1] = false
  elseif due ~= '' then
    redis.call('ZADD', KEYS[3], due, data)
    out[#out + 1] = 'delayed'
  else
    out[#out + 1] = redis.call('XADD', KEYS[1], '*', 'e', data)
  end
  if fresh and dedup ~= '' then
    redis.call('ZADD', KEYS[2], now, dedup)
  end
end
if deduplicated then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
end
return out
"""
# The batch as one msgpack argument (Redis's Lua cmsgpack), or as plain arguments, three per
# event, for Redis twins whose Lua has no cmsgpack (`router.testing.fake_transport`).
_ENQUEUE_PACKED = _ENQUEUE.replace("ITEMS", "cmsgpack.unpack(ARGV[3])")
_ENQUEUE_FLAT = _ENQUEUE.replace("ITEMS", "{select(3, unpack(ARGV))}")


# Move due events from the delay queue back into the stream, atomically: safe to run from every
# instance at once. Returns {moved, score of the next due event or false}.
_PROMOTE = """
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] == nil or tonumber(first[2]) > tonumber(ARGV[1]) then
  return {0, first[2] or false}  -- nothing due: the idle case, one read
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'e', member)
  redis.call('ZREM', KEYS[1], member)
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, next_due[2] or false}
"""

# A partition lease: taken when free, kept when ours; another consumer's is left alone.
_HOLD = """
local owner = redis.call('GET', KEYS[1])
if owner == false or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
"""

_DROP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Replay a dead letter only if this caller removed it, so running a replay twice is harmless.
_MOVE_IF_DELETED = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
  return redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
end
return false
"""


# Settle handled entries: schedule retries, keep dead letters, acknowledge; one script on the
# partition's keys, so it is atomic on a single Redis and a cluster alike (a cluster client's
# MULTI is not usable from asyncio). KEYS: delay queue, dead letters, stream. ARGV: group,
# retry count, (due ms, data) per retry, dead-letter count, (field count, fields...) per dead
# letter, then the entry ids.
_SETTLE = """
local at = 2
for _ = 1, tonumber(ARGV[at]) do
  redis.call('ZADD', KEYS[1], ARGV[at + 1], ARGV[at + 2])
  at = at + 2
end
at = at + 1
for _ = 1, tonumber(ARGV[at]) do
  local count = tonumber(ARGV[at + 1])
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, at + 2, at + 1 + count))
  at = at + 1 + count
end
for first = at + 1, #ARGV, 500 do
  redis.call('XACK', KEYS[3], ARGV[1], unpack(ARGV, first, math.min(first + 499, #ARGV)))
end
return 1
"""


class RedisTransport:
    """The class streams of one consumer group, as seen by one consumer (this process)."""

    def __init__(
        self,
        redis: RedisClient,
        group: str,
        consumer: str,
        *,
        dedup_window_s: float = 600.0,
        packed_batches: bool = True,
        lines: Lines | None = None,
    ) -> None:
        self.redis = redis
        self.lines = lines  # the hot path's own connections (one server); None: the client's
        self.packed_batches = packed_batches
        self.group = group
        self.consumer = consumer
        self.dedup_window_ms = int(dedup_window_s * 1000)
        self._promote = redis.register_script(_PROMOTE)
        self._reader = _raw_reader(redis)
        self._move_if_deleted = redis.register_script(_MOVE_IF_DELETED)
        self._hold = redis.register_script(_HOLD)
        self._drop = redis.register_script(_DROP)
        self._settle = redis.register_script(_SETTLE)

    async def ensure_group(self, tag: str) -> None:
        """Create the class stream and its group, delivering from the start; idempotent."""
        try:
            await self.redis.xgroup_create(keys.stream(tag), self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def publish(
        self, items: Sequence[Outgoing], extra: Sequence[Extra] = ()
    ) -> list[bytes | None]:
        """Write envelopes into their tags (streams or delay queues) in one round trip.

        `extra` are (stream key, fields) entries (audit taps) and record updates, written in
        the same pipeline, after the envelopes.
        Returns, per item, its stream id, b"delayed", or None for a de-duplicated repeat.
        """
        return (await self.write(items, extra)).checked()

    async def write(
        self, items: Sequence[Outgoing], extra: Sequence[Extra] = (), *, line: str | None = None
    ) -> Written:
        """`publish`, with what Redis refuses returned entry by entry: a refused script call
        fails the items it carried, a refused extra entry only itself. Redis being unavailable
        (away, out of memory, read-only) is raised. A caller that writes one call at a time
        names its `line`, its own connection for the common case of one script call."""
        chunks = _chunks_by_tag(items)
        now_ms = int(time.time() * 1000)
        calls = [self._enqueue_args(tag, [items[i] for i in at], now_ms) for tag, at in chunks]
        replies: list[Any]
        if len(calls) == 1 and not extra:  # the common case: one command, no pipeline to build
            script, args = calls[0]
            try:
                stream = keys.stream(chunks[0][0])
                replies = [await self._call(line, stream, "EVAL", script, 3, *args)]
            except ResponseError as exc:
                replies = [exc]
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                for script, args in calls:
                    pipe.eval(script, 3, *args)
                for write in extra:
                    if isinstance(write, RecordUpdate):
                        pipe.eval(records.UPDATE, *write.script_args())
                    else:
                        pipe.xadd(write[0], _redis_fields(write[1]))
                replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, UNAVAILABLE):
                raise reply
        ids: list[bytes | Exception | None] = [None] * len(items)
        for (_, indexes), reply in zip(chunks, replies, strict=False):
            for n, index in enumerate(indexes):
                ids[index] = reply if isinstance(reply, Exception) else (reply[n] or None)
        extras = [r if isinstance(r, Exception) else None for r in replies[len(calls) :]]
        return Written(ids, extras)

    def _enqueue_args(
        self, tag: str, items: Sequence[Outgoing], now_ms: int
    ) -> tuple[str, list[str | int | bytes]]:
        """The script and the keys and arguments (3 keys) that write `items` into `tag`.

        EVAL, not a registered script: redis-py checks SCRIPT EXISTS before every pipeline
        carrying one, a second round trip; Redis caches the compiled body anyway.
        """
        batch: list[str | bytes] = []
        for item in items:
            due = "" if item.due is None else str(int(item.due * 1000))
            batch += [item.dedup_id or "", due, item.data]
        stream, seen, delayed = keys.stream(tag), keys.seen(tag), keys.delayed(tag)
        head: list[str | int | bytes] = [stream, seen, delayed, now_ms, self.dedup_window_ms]
        if not self.packed_batches:
            return _ENQUEUE_FLAT, head + batch
        # Strings, not msgpack's bin type: Redis's Lua msgpack reads only strings.
        packed: bytes = msgpack.packb(batch, use_bin_type=False)
        return _ENQUEUE_PACKED, [*head, packed]

    async def settle(
        self,
        tag: str,
        entry_ids: Sequence[bytes],
        retries: Sequence[tuple[float, bytes]] = (),
        dead: Sequence[Fields] = (),
    ) -> None:
        """Acknowledge entries, atomically with their retries and dead letters.

        One script on the partition's own keys (one cluster slot): an entry is never both
        acknowledged and lost, nor retried and still pending.
        """
        if not (entry_ids or retries or dead):
            return
        if not (retries or dead):  # the common case: one command
            stream = keys.stream(tag)
            await self._call(f"ack:{tag}", stream, "XACK", stream, self.group, *entry_ids)
            return
        args: list[Any] = [self.group, len(retries)]
        for due, data in retries:
            args += [due * 1000, data]
        args.append(len(dead))
        for fields in dead:
            flat = [part for pair in fields.items() for part in pair]
            args += [len(flat), *flat]
        args += entry_ids
        stream_keys = [keys.delayed(tag), keys.dead_letters(tag), keys.stream(tag)]
        await self._settle(keys=stream_keys, args=args)

    async def promote_due(self, tag: str, limit: int = 500) -> tuple[int, float | None]:
        """Move due delayed events into the stream; returns (moved, next due in Unix seconds)."""
        now_ms = int(time.time() * 1000)
        reply: Any = await self._promote(
            keys=[keys.delayed(tag), keys.stream(tag)], args=[now_ms, limit]
        )
        moved, next_due = int(reply[0]), reply[1]
        return moved, (float(next_due) / 1000 if next_due else None)

    async def move_if_deleted(self, source: str, entry_id: bytes, tag: str, data: bytes) -> bool:
        """Move an entry of `source` into partition `tag` as `data`, once however many callers
        try; True for the caller that moved it.

        Within one partition (a class's own dead letters) one script deletes and appends. An
        ingress reject rerouted into a class lives in another cluster slot: the event is written
        first, de-duplicated by the entry's id, then deleted, so neither a concurrent replay nor
        a crash between the two steps can double or lose it.
        """
        if keys.tag_of(source) == tag:
            args = [entry_id, data]
            return bool(await self._move_if_deleted(keys=[source, keys.stream(tag)], args=args))
        once = f"replay:{source}:{entry_id.decode()}"
        outgoing = Outgoing(keys.class_of(tag), data, dedup_id=once, tag=tag)
        [written] = await self.publish([outgoing])
        await self.redis.xdel(source, entry_id)
        return written is not None

    async def read(self, tag: str, count: int, block_ms: int) -> list[tuple[bytes, bytes | None]]:
        """Up to `count` new entries for this consumer, waiting up to `block_ms` for the first.

        Returns (stream id, envelope bytes or None when the entry has no envelope field).
        """
        stream = keys.stream(tag)
        command = ("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count,
                   "BLOCK", block_ms, "STREAMS", stream, ">")  # fmt: skip
        entries: list[tuple[bytes, bytes | None]]
        try:
            if self.lines is None:
                home = await self._home(stream)
                entries = await self._reader.execute_command(*command, **home)
            else:
                timeout_s = block_ms / 1000 + self.lines.timeout_s  # a blocked read is no fault
                try:
                    caller = f"read:{tag}"
                    reply = await _on_line(
                        self.lines, caller, stream, *command, timeout_s=timeout_s
                    )
                    entries = _read_entries(reply)
                except AskError:  # MOVED too: not run; the client follows, its callback parses
                    entries = await self._reader.execute_command(*command)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group(tag)  # the stream was deleted under us; start it afresh
            return []
        return entries

    async def _home(self, key: str) -> dict[str, Any]:
        """For a cluster, the node serving `key`, named to the client: left to find it, it asks
        one node which key an XREADGROUP names (COMMAND GETKEYS, twice) before every read,
        three round trips instead of one, and every read waits on that one node.

        A failure makes the client refresh its slot map before the next command; MOVED and ASK
        are followed as for any command.
        """
        if not isinstance(self._reader, RedisCluster):
            return {}
        await self._reader.initialize()  # a no-op unless a failure asked for a new slot map
        return {"target_nodes": self._reader.get_node_from_key(key)}

    async def _call(self, line: str | None, key: str, *command: Any) -> Any:
        """A hot-path command on the caller's line to `key`'s server, or through the client
        without lines (or when the cluster redirects it: the client follows MOVED and ASK)."""
        if line is None or self.lines is None:
            return await self.redis.execute_command(*command)
        try:
            return await _on_line(self.lines, line, key, *command)
        except AskError:  # MovedError is one too; a redirected command was not run
            return await self.redis.execute_command(*command)

    async def close(self) -> None:
        """Close the lines (the client is the caller's to close)."""
        if self.lines is not None:
            await self.lines.close()

    async def claim_idle(
        self, tag: str, min_idle_ms: int, count: int, cursor: bytes = b"0-0"
    ) -> tuple[bytes, list[tuple[bytes, bytes | None, int]]]:
        """Take over entries idle longer than `min_idle_ms` (their consumer died or stalled).

        Returns the cursor for the next call (b"0-0" when the scan wrapped) and, per claimed
        entry, (stream id, envelope bytes or None, times delivered including this one).
        """
        stream = keys.stream(tag)
        reply: Any = await self.redis.xautoclaim(
            stream, self.group, self.consumer, min_idle_ms, start_id=cursor, count=count
        )
        next_cursor, entries = reply[0], [(i, f) for i, f in reply[1] if f is not None]
        if not entries:
            return next_cursor, []
        # One lookup per claimed id: a range would also hold our own in-flight entries.
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.xpending_range(stream, self.group, min=entry_id, max=entry_id, count=1)
            answers = await pipe.execute()
        claimed = []
        for (entry_id, fields), answer in zip(entries, answers, strict=True):
            if answer and answer[0]["consumer"] in (self.consumer, self.consumer.encode()):
                delivered = int(answer[0]["times_delivered"])
                claimed.append((entry_id, fields.get(keys.ENVELOPE_FIELD), delivered))
        return next_cursor, claimed

    async def claim_from(
        self, tag: str, alive: Collection[str], count: int, min_idle_ms: int = 0
    ) -> list[tuple[bytes, bytes | None, int]]:
        """Take over the pending entries of every consumer but this one and those `alive`,
        oldest first, up to `count`: a dead instance's entries, or all of an ordered
        partition's when its lease changed hands. Per entry: (stream id, envelope bytes or
        None, times delivered including this one). `min_idle_ms` keeps two claimers from
        taking the same entry twice: the second finds it freshly claimed."""
        stream = keys.stream(tag)
        summary: Any = await self.redis.xpending(stream, self.group)
        owners = [_text(c["name"]) for c in summary.get("consumers") or []]
        gone = [c for c in owners if c != self.consumer and c not in alive]
        delivered: dict[bytes, int] = {}
        for consumer in gone:
            rows: Any = await self.redis.xpending_range(
                stream, self.group, min="-", max="+", count=count, consumername=consumer
            )
            delivered |= {_bytes(r["message_id"]): int(r["times_delivered"]) for r in rows}
        if not delivered:
            return []
        first: list[Any] = sorted(delivered, key=_id_key)[:count]
        reply: Any = await self.redis.xclaim(stream, self.group, self.consumer, min_idle_ms, first)
        return sorted(
            (
                (_bytes(entry_id), fields.get(keys.ENVELOPE_FIELD), delivered[_bytes(entry_id)] + 1)
                for entry_id, fields in reply
                if fields is not None
            ),
            key=lambda claimed: _id_key(claimed[0]),
        )

    async def hold_lease(self, tag: str, ttl_ms: int) -> bool:
        """Take, or keep, the lease of an ordered partition for `ttl_ms`; False while another
        consumer holds it. The lease holds this consumer's name, unique to the process run,
        so a process that lost its lease can never renew it (a fencing token)."""
        reply = await self._hold(keys=[keys.owner(tag)], args=[self.consumer, ttl_ms])
        return bool(reply)

    async def drop_lease(self, tag: str) -> None:
        """Give up the lease of an ordered partition, if it is still this consumer's."""
        await self._drop(keys=[keys.owner(tag)], args=[self.consumer])

    async def renew(self, tag: str, entry_ids: Sequence[bytes]) -> None:
        """Reset the idle time of entries still being handled, so nobody reclaims them."""
        if entry_ids:
            await self.redis.xclaim(
                keys.stream(tag), self.group, self.consumer, 0, list(entry_ids), justid=True
            )

    async def stats(self, tags: Sequence[str]) -> dict[str, StreamStats]:
        """Length, pending, backlog, oldest unfinished entry and dead letters of every class.

        Two pipelined round trips: the counts, then the first undelivered entry of each class
        with a backlog (and, on Redis before 7, which has no `lag`, a bounded count of them).
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            for tag in tags:
                pipe.xlen(keys.stream(tag))
                pipe.xinfo_groups(keys.stream(tag))
                pipe.xpending(keys.stream(tag), self.group)
                pipe.xlen(keys.dead_letters(tag))
                pipe.zcard(keys.delayed(tag))
            replies = await pipe.execute(raise_on_error=False)
        counts: dict[str, tuple[Any, Any, Any, Any, Any]] = {}
        undelivered: dict[str, Any] = {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for index, tag in enumerate(tags):
                length, groups, pending, dead, delayed = replies[5 * index : 5 * index + 5]
                if isinstance(length, Exception) or isinstance(groups, Exception):
                    continue
                group = _find_group(groups, self.group)
                counts[tag] = (length, group, pending, dead, delayed)
                last = group.get("last-delivered-id")
                if last is not None and group.get("lag") != 0:
                    start = b"(" + (last if isinstance(last, bytes) else str(last).encode())
                    limit = 1 if group.get("lag") is not None else BACKLOG_COUNT_LIMIT
                    pipe.xrange(keys.stream(tag), min=start, count=limit)
                    undelivered[tag] = None
            found = await pipe.execute() if undelivered else []
        for tag, entries in zip(list(undelivered), found, strict=True):
            undelivered[tag] = entries or []
        return {
            tag: _stream_stats(counts[tag], undelivered.get(tag) or [])
            if tag in counts
            else StreamStats()
            for tag in tags
        }

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def check_writable(self) -> None:
        """One small write with an expiry: raises what a write raises now (out of memory, a
        read-only replica), which a PING does not show."""
        await self.redis.set(keys.write_probe(self.consumer), b"1", px=WRITE_PROBE_TTL_MS)


async def _on_line(
    lines: Lines, caller: str, key: str, *command: Any, timeout_s: float | None = None
) -> Any:
    """`command` on `caller`'s line to `key`'s server; its reply as Redis sent it."""
    try:
        return await lines.to(caller, key).call(*command, timeout_s=timeout_s)
    except AskError:
        raise  # the cluster moved the key: no fault of the line
    except UNAVAILABLE:
        await lines.lost()
        raise


def _chunks_by_tag(items: Sequence[Outgoing]) -> list[tuple[str, list[int]]]:
    """The items' indexes grouped by partition, in runs of at most SCRIPT_ITEMS: one script
    call each."""
    by_tag: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        by_tag[item.partition].append(index)
    return [
        (tag, indexes[start : start + SCRIPT_ITEMS])
        for tag, indexes in by_tag.items()
        for start in range(0, len(indexes), SCRIPT_ITEMS)
    ]


def _raw_reader(redis: RedisClient) -> RedisClient:
    """A client whose XREADGROUP replies stay as Redis sent them: redis-py would build a dict
    of fields per entry, the largest cost of reading after the handler.

    For one server, a second client on the same connections; a cluster client cannot share
    its nodes, so its own parsing is set, and the transport must be its only XREADGROUP
    caller (the service's client is the transport's alone).
    """
    if isinstance(redis, RedisCluster):
        redis.set_response_callback("XREADGROUP", _read_entries)
        return redis
    reader = Redis(connection_pool=redis.connection_pool)
    reader.set_response_callback("XREADGROUP", _read_entries)
    return reader


def _read_entries(response: Any, **kwargs: Any) -> list[tuple[bytes, bytes | None]]:
    """(stream id, envelope bytes or None) per entry of a one-stream XREADGROUP reply.

    RESP3 sends {stream: entries}, RESP2 [[stream, entries]]; an entry is [id, [field, value,
    ...]], with no fields when it was deleted while pending.
    """
    if not response:
        return []
    streams = response.values() if isinstance(response, dict) else [s[1] for s in response]
    [entries] = streams
    return [(entry_id, _envelope_field(fields)) for entry_id, fields in entries]


def _envelope_field(fields: Sequence[bytes] | None) -> bytes | None:
    if not fields:
        return None
    if fields[0] == keys.ENVELOPE_FIELD:
        return fields[1]  # every entry Switchyard writes has this one field
    return dict(zip(fields[::2], fields[1::2], strict=True)).get(keys.ENVELOPE_FIELD)


def _redis_fields(fields: Fields) -> dict[Any, Any]:
    """redis-py's xadd wants an invariant dict type; any str-keyed mapping is fine at run time."""
    return dict(fields)


def _stream_stats(counts: tuple[Any, Any, Any, Any, Any], undelivered: Any) -> StreamStats:
    """One class's StreamStats from the replies that `stats` gathered: its counts (length,
    group, pending, dead letters, delayed) and its first undelivered entries."""
    length, group, pending, dead, delayed = counts
    lag = group.get("lag")
    backlog = int(lag) if lag is not None else len(undelivered)
    oldest = None if isinstance(pending, Exception) or not pending["pending"] else pending["min"]
    if backlog and undelivered:
        oldest = min(filter(None, [oldest, undelivered[0][0]]), key=_id_ms)
    return StreamStats(
        length=int(length),
        pending=int(group.get("pending") or 0),
        backlog=backlog,
        oldest_ms=_id_ms(oldest) if oldest else None,
        dead_letters=0 if isinstance(dead, Exception) else int(dead),
        delayed=0 if isinstance(delayed, Exception) else int(delayed),
    )


def _id_ms(entry_id: bytes | str) -> int:
    """The Unix milliseconds a stream id was created at."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


def _find_group(groups: Sequence[Mapping[Any, Any]], name: str) -> Mapping[str, Any]:
    for group in groups:
        decoded = {_text(k): v for k, v in group.items()}
        if _text(decoded.get("name")) == name:
            return decoded
    return {}


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _id_key(entry_id: bytes) -> tuple[int, int]:
    """A stream id as numbers, for sorting (b"10-2" before b"9-5" as text)."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
