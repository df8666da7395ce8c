"""A replica's served log: every response it returns, appended to its own Redis Stream just after the reply.

Each replica process writes ``{ns}:served:<tag>`` (``tag``: random, new at every start; the stream is listed in
``{ns}:served-logs`` for ``export-log``).  A request id is ``<tag>-<ms>-<seq>``, where ``<ms>-<seq>`` is the
entry's id in that stream, chosen by the replica (strictly increasing: only this process writes the stream).
So any replica finds the response a feedback names, and ``export-log`` reads each response once.

Why after the reply, not before: with ``appendfsync always`` Redis answers a write only once it is on disk, and
under load its fsyncs took up to 23-39 ms here (``LATENCY LATEST``).  Awaiting the append made every recommend
wait for the disk (p99 26-48 ms at 500 req/s; 12-14 ms without the wait, measured).  Kafka producers batch and
send after the fact for the same reason.  What it changes, and how each case is handled:

- **Feedback faster than the append** (a client that answers within a millisecond): the feedback script says
  ``pending`` when the id is beyond the newest entry of its stream, and the replica retries for up to 0.6 s.
- **A replica killed with -9** loses the responses it had not yet appended (milliseconds' worth): their
  feedback is refused as unknown.  A clean stop (SIGTERM, Ctrl-C) appends everything first.
- **Redis unreachable**: responses wait in memory, up to ``max_unlogged`` per replica, and are appended when
  Redis is back (in order; an entry already there is not written twice, since its id is fixed).  With the
  buffer full, ``/recommend`` answers 503 rather than serve a response that could never be evaluated.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sys
import time

import redis

from pipeline.serving.streams import ITEM_SEPARATOR, StreamKeys

REQUEST_ID = re.compile(r"^([0-9a-f]{1,16})-(\d{1,15}-\d{1,15})$")
MAX_BATCH = 1000  # entries per round trip
PENDING_RETRIES = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)  # seconds between feedback retries (0.6 s in all)


class ServedLogFull(Exception):
    """The replica holds ``max_unlogged`` responses Redis has not taken: it stops serving until Redis is back."""


def split_request_id(request_id: str) -> tuple[str, str] | None:
    """``(tag, entry id)`` of a request id this service could have issued, else None."""
    match = REQUEST_ID.match(request_id)
    return None if match is None else (match.group(1), match.group(2))


def served_entry(context: dict, item_keys: list[str], scores: list[float], propensities: dict, version: str,
                 epsilon: float) -> dict[str, str]:
    """The fields of one served response."""
    return {"context": json.dumps(context, separators=(",", ":")),
            "items": ITEM_SEPARATOR + ITEM_SEPARATOR.join(item_keys) + ITEM_SEPARATOR,
            "scores": json.dumps(scores), "propensities": json.dumps(propensities, separators=(",", ":")),
            "version": version, "epsilon": repr(epsilon)}


class ServedLog:
    """This replica's stream and the responses on their way to it, sent many per round trip: while one batch is
    in flight the next ones gather (a group commit: redis-py spent 0.26 ms of CPU per single ``XADD``, 0.05-0.08
    ms per entry in batches; measured)."""

    def __init__(self, client, keys: StreamKeys, maxlen: int, max_unlogged: int = 10_000):
        self.client, self.maxlen, self.max_unlogged = client, maxlen, max_unlogged
        self.tag = secrets.token_hex(5)
        self.key, self.registry = keys.served(self.tag), keys.served_logs
        self.waiting: list[tuple[str, dict]] = []
        self.sender: asyncio.Task | None = None
        self.last = (0, -1)  # the newest (ms, seq) issued
        self.rejected = 0  # entries Redis refused for good (reported; never expected)
        self.failing = False

    def register(self, sync_client) -> None:
        """List this replica's stream for ``export-log`` (before it serves anything)."""
        sync_client.sadd(self.registry, self.key)

    def append(self, fields: dict) -> str:
        """Queue one response and return its request id; Redis gets it in the next batch."""
        if len(self.waiting) >= self.max_unlogged:
            raise ServedLogFull()
        millis = max(time.time_ns() // 1_000_000, self.last[0])
        self.last = (millis, self.last[1] + 1 if millis == self.last[0] else 0)
        entry_id = f"{self.last[0]}-{self.last[1]}"
        self.waiting.append((entry_id, fields))
        if self.sender is None:
            self.sender = asyncio.create_task(self._send())
        return f"{self.tag}-{entry_id}"

    async def _send(self) -> None:
        pause = 0.05
        try:
            while self.waiting:
                batch = self.waiting[:MAX_BATCH]
                try:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for entry_id, fields in batch:
                            pipe.xadd(self.key, fields, id=entry_id, maxlen=self.maxlen, approximate=True)
                        answers = await pipe.execute(raise_on_error=False)
                except redis.RedisError as error:  # keep the batch, retry with a growing pause; say so once
                    if not self.failing:
                        print(f"replica: cannot append to the served log ({str(error)[:200]}); holding "
                              f"{len(self.waiting)} responses until Redis answers", file=sys.stderr)
                        self.failing = True
                    await asyncio.sleep(pause)
                    pause = min(2 * pause, 1.0)
                    continue
                del self.waiting[:len(batch)]
                self.failing, pause = False, 0.05
                for answer in answers:
                    # "equal or smaller": the entry is there already (a batch resent after its reply was lost)
                    if isinstance(answer, redis.ResponseError) and "equal or smaller" not in str(answer):
                        if not self.rejected:
                            print(f"replica: Redis refused a served-log entry ({str(answer)[:200]})", file=sys.stderr)
                        self.rejected += 1
        finally:
            self.sender = None

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued response is in Redis (at most ``timeout`` s); True when all are."""
        deadline = time.monotonic() + timeout
        while (self.waiting or self.sender is not None) and time.monotonic() < deadline:
            if self.sender is None:
                self.sender = asyncio.create_task(self._send())
            await asyncio.sleep(0.01)
        return not self.waiting

    def abandon(self) -> None:
        """Stop sending (a shutdown that could not drain): what is still waiting is lost, and said so."""
        if self.sender is not None:
            self.sender.cancel()
        if self.waiting:
            print(f"replica: {len(self.waiting)} responses were never appended to the served log (Redis "
                  "unreachable)", file=sys.stderr)


def served_logs(client, keys: StreamKeys) -> list[str]:
    """Every replica's served stream of a namespace, in a fixed order."""
    return sorted(key.decode() for key in client.smembers(keys.served_logs))
