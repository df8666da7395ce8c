"""The trainer of the production path: seed 004's Flink job, on Redis Streams.

``python -m pipeline train-stream RUN_DIR --policy NAME --store redis://...`` owns some (default: all) of the
namespace's feedback partitions.  For each it

1. restores its state (the sufficient statistics ``A`` and ``b`` of its items) and the id of the last event
   that state includes, or starts from the run's trained model;
2. reads the partition's stream in the consumer group ``trainers``: first the entries it was given before a
   crash and never acknowledged, then new ones; any entry at or below the restored id is already in the state
   and is skipped, every other one is learnt (``partial_fit``: ``A += x x^T``, ``b += r x`` for LinUCB/LinTS);
3. every ``publish_every`` seconds (5, as seed 004) writes, in one atomic script, the statistics of the items
   learnt since the last commit, the last id and a new version, then acknowledges the entries it covers.  The
   replicas serve from those statistics (``streams.PartitionStatistics``): the state is the publication.

A kill -9 at any moment loses only uncommitted work, which the restarted trainer reads again from the stream:
each event is in the model exactly once.  A partition has one owner at a time (a lease renewed while the
trainer runs; the commit checks it), since two owners would count events twice.  Partitions are by item
(``streams.partition_of``), as Flink keys by item: each trainer updates only its items' models and publishes
only their parameters, and replicas merge the partitions.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import redis

from pipeline.errors import ConfigError
from pipeline.scoring import linear_arrays
from pipeline.serving.policy import ServedPolicy
from pipeline.serving.replica import STREAM_POLICIES
from pipeline.serving.streams import (ARM_FIELD, COMMIT_SCRIPT, FEEDBACK_GROUP, LEASE_SCRIPT, PartitionStatistics,
                                      StreamKeys, decoded, ensure_partitions, pack_statistics, ridge_solution,
                                      stream_id, unpack_statistics)

CONSUMER = "trainer"  # one owner per partition (the lease), so one consumer name keeps its pending entries
READ_COUNT = 1000  # entries per read, learnt as one batch
LINGER = 0.2  # seconds between reads that found less than READ_COUNT (each read costs a few Redis calls)



def learn_linear(learner: ServedPolicy, contexts: list[dict], items: list[str], rewards: list[float]) -> None:
    """Seed 004's update, ``A += x x^T``, ``b += r x`` for every event, then ``A^-1`` and ``beta = A^-1 b`` for
    the arms that changed, written into MABWiser's own arm models (LinUCB, LinTS and LinGreedy share them).

    This is what MABWiser's ``partial_fit`` computes (its ``_Linear.fit``), but MABWiser spends about 22 ms per
    call whatever the batch (it walks every arm); a trainer that learns each read as it comes needs less.
    """
    vectors = learner.featurizer.transform_records(contexts)
    models = learner.recommender.mab._imp.arm_to_model  # as scoring.py reads them; mabwiser is pinned
    rewards = np.asarray(rewards, dtype=float)
    keys = np.array(items)
    for key in dict.fromkeys(items):
        rows = keys == key
        model, x = models[learner.arm(key)], vectors[rows]
        model.A = model.A + x.T @ x
        model.Xty = model.Xty + x.T @ rewards[rows]
        model.A_inv, model.beta = ridge_solution(model.A, model.Xty)


def arm_statistics(learner: ServedPolicy, key: str) -> bytes:
    """What a commit stores for one item: its ``A`` and ``b`` (MABWiser's ``Xty``)."""
    model = learner.recommender.mab._imp.arm_to_model[learner.arm(key)]
    return pack_statistics(model.A, model.Xty)


def restore_statistics(learner: ServedPolicy, committed: PartitionStatistics) -> None:
    """Write committed statistics back into the learner's arm models (``A^-1`` and ``beta`` recomputed exactly
    as ``learn_linear`` computes them, so a restored trainer equals one that never stopped)."""
    models = learner.recommender.mab._imp.arm_to_model
    for key, blob in committed.arms.items():
        model = models[learner.arm(key)]
        model.A, model.Xty = unpack_statistics(blob)
        model.A_inv, model.beta = ridge_solution(model.A, model.Xty)


class LostLease(RuntimeError):
    """Another trainer took a partition over (this one stalled past its lease): stop without committing."""


class PartitionState:
    """One partition's learner, the last feedback id it includes, and the entries read but not acknowledged."""

    def __init__(self, partition: int, learner: ServedPolicy, saved: dict):
        self.partition, self.learner = partition, learner
        if saved:
            committed = PartitionStatistics.from_hash(saved)
            restore_statistics(learner, committed)
            self.last_id, self.applied = committed.last_id, committed.applied
        else:
            self.last_id, self.applied = "0-0", 0
        self.unacknowledged: list[bytes] = []
        self.changed: set[str] = set()  # items learnt since the last commit


class StreamTrainer:
    def __init__(self, run_dir: Path, policy: str, url: str, namespace: str, partitions: list[int] | None = None,
                 lease_seconds: float = 10.0, seed: int | None = None):
        self.keys, self.lease_ms = StreamKeys(namespace), int(lease_seconds * 1000)
        self.token = uuid.uuid4().hex
        try:
            self.client = redis.Redis.from_url(url)
            total = ensure_partitions(self.client, self.keys, None, create=False)
        except redis.RedisError as error:
            raise ConfigError(f"--store {url[:60]}: cannot reach Redis ({str(error)[:200]})") from None
        owned = list(range(total)) if not partitions else partitions
        if any(not 0 <= p < total for p in owned):
            raise ConfigError(f"--partition {owned}: namespace {namespace!r} has partitions 0 to {total - 1}")
        self.commit_script = self.client.register_script(COMMIT_SCRIPT)
        self.lease_script = self.client.register_script(LEASE_SCRIPT)
        self.run_dir, self.policy, self.seed, self.total = run_dir, policy, seed, total
        self.states: dict[int, PartitionState] = {}
        for p in owned:
            self._load(p)

    def _load(self, p: int) -> None:
        """(Re)start partition ``p`` from its committed state: take the lease, restore, read what is pending."""
        learner = ServedPolicy(self.run_dir, self.policy, seed=self.seed)
        if linear_arrays(learner.recommender) is None:
            raise ConfigError(f"train-stream: {self.policy!r} is not one of {', '.join(STREAM_POLICIES)}, the "
                              "policies the production path publishes; serve it in the laptop mode (SQLite --store)")
        self._acquire(p)
        self.states[p] = PartitionState(p, learner, self.client.hgetall(self.keys.params(p)))
        try:
            self.client.xgroup_create(self.keys.feedback(p), FEEDBACK_GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:  # BUSYGROUP: created by an earlier run
            if "BUSYGROUP" not in str(error):
                raise
        self._drain_pending(p)

    def _acquire(self, partition: int) -> None:
        """Take the partition's lease, waiting for a stopped owner's to expire (a killed trainer's does)."""
        waited = False
        while not self.lease_script(keys=[self.keys.lease(partition)], args=[self.token, self.lease_ms]):
            if not waited:
                print(f"train-stream: partition {partition} is owned by another trainer; waiting for its lease "
                      f"(at most {self.lease_ms / 1000:g} s after it stops)", file=sys.stderr)
                waited = True
            time.sleep(0.2)

    def _renew(self) -> None:
        for p in self.states:
            if not self.lease_script(keys=[self.keys.lease(p)], args=[self.token, self.lease_ms]):
                raise LostLease(f"partition {p} was taken over by another trainer")

    def _drain_pending(self, p: int) -> None:
        """Entries given to this partition's consumer before a crash and never acknowledged: those after the
        restored id are learnt now, the others were in the committed state already."""
        after = "0"
        while entries := self.client.xreadgroup(FEEDBACK_GROUP, CONSUMER, {self.keys.feedback(p): after},
                                                count=READ_COUNT)[0][1]:
            self._learn(self.states[p], entries)
            after = entries[-1][0]

    def poll(self, block_ms: int) -> int:
        """Read and learn new entries (waiting up to ``block_ms``); the number of events learnt."""
        streams = {self.keys.feedback(p): ">" for p in self.states}
        learnt = 0
        for stream, entries in self.client.xreadgroup(FEEDBACK_GROUP, CONSUMER, streams, count=READ_COUNT,
                                                      block=block_ms) or []:
            learnt += self._learn(self.states[int(stream.decode().rsplit(":", 1)[1])], entries)
        return learnt

    def _learn(self, state: PartitionState, entries: list) -> int:
        last = stream_id(state.last_id)
        fresh = [(entry_id, decoded(fields)) for entry_id, fields in entries if stream_id(entry_id) > last]
        state.unacknowledged += [entry_id for entry_id, _ in entries]
        if fresh:
            learn_linear(state.learner, [json.loads(f["context"]) for _, f in fresh], [f["item"] for _, f in fresh],
                         [float(f["reward"]) for _, f in fresh])
            state.last_id, state.applied = fresh[-1][0].decode(), state.applied + len(fresh)
            state.changed.update(f["item"] for _, f in fresh)
        return len(fresh)

    def publish(self) -> int:
        """Commit and publish every partition with news; the number published."""
        published = 0
        for p, state in self.states.items():
            if state.changed:
                self._commit(state)
                published += 1
            if state.unacknowledged:  # entries covered by the committed state (or skipped as already in it)
                self.client.xack(self.keys.feedback(p), FEEDBACK_GROUP, *state.unacknowledged)
                state.unacknowledged = []
        return published

    def _commit(self, state: PartitionState) -> None:
        p = state.partition
        pairs = [value for key in sorted(state.changed)
                 for value in (ARM_FIELD + key.encode(), arm_statistics(state.learner, key))]
        done = self.commit_script(keys=[self.keys.params(p), self.keys.lease(p)],
                                  args=[self.token, state.last_id, state.applied, f"p{p}:{state.last_id}",
                                        repr(time.time()), *pairs])
        if not done:
            raise LostLease(f"partition {p} was taken over by another trainer before this commit")
        state.changed = set()

    def run(self, publish_every: float, stop_after: float | None = None) -> None:
        """Learn and publish until interrupted (Ctrl-C/SIGTERM commit what was learnt) or ``stop_after`` s.

        When Redis goes away the trainer waits for it and then restarts every partition from its committed
        state, as a restarted process would: whatever it learnt since is read again from the stream (which
        Redis may even have lost if it crashed, so the in-memory state cannot be trusted)."""
        gc.collect()
        gc.freeze()  # the loaded libraries: full collections of them took 110 ms each (see inline.py)
        started = time.monotonic()
        next_publish = started + publish_every
        try:
            while stop_after is None or time.monotonic() - started < stop_after:
                try:
                    self._renew()
                    wait = max(1, min(1000, int((next_publish - time.monotonic()) * 1000)))
                    if self.poll(block_ms=wait) < READ_COUNT:  # let events gather: fewer, larger reads
                        time.sleep(max(0.0, min(LINGER, next_publish - time.monotonic())))
                    if time.monotonic() >= next_publish:
                        self.publish()
                        next_publish = time.monotonic() + publish_every
                except (redis.ConnectionError, redis.TimeoutError) as error:
                    self._reconnect(error)
        finally:
            if sys.exc_info()[0] not in (LostLease, redis.ConnectionError, redis.TimeoutError):
                self.publish()
            with contextlib.suppress(redis.RedisError):
                for p in self.states:  # hand the partitions over at once
                    if self.client.get(self.keys.lease(p)) == self.token.encode():
                        self.client.delete(self.keys.lease(p))

    def _reconnect(self, error: Exception) -> None:
        print(f"train-stream: lost Redis ({str(error)[:200]}); waiting for it, then restarting from the committed "
              "state", file=sys.stderr)
        while True:
            time.sleep(0.5)
            try:
                self.client.ping()
                for p in list(self.states):
                    self._load(p)
                print("train-stream: Redis is back; resumed", file=sys.stderr)
                return
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                continue
