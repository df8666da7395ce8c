"""The Redis side of the production path (seed 004 with Redis Streams in Kafka's place).

Keys, all under one hash tag ``{namespace}`` so a Redis Cluster keeps them on one node:

- ``{ns}:meta`` (hash): the number of feedback partitions, fixed when the first replica starts;
- ``{ns}:served:<tag>`` (stream, one per replica process, all listed in the set ``{ns}:served-logs``): every
  response the replica served (context, shown list, scores, propensities, model version); the request id is
  ``<tag>-<entry id>``, so a replica answers feedback for a request another replica served (``served_log.py``);
- ``{ns}:feedback:<p>`` (stream, one per partition): acknowledged feedback, partitioned by item (as Flink keys
  by item), each event carrying the request's context and the version that served it;
- ``{ns}:given:<request id>:<item>``: "feedback already given", expiring with the feedback window;
- ``{ns}:params:<p>`` (hash): the trainer's state, which is also what replicas serve: the sufficient statistics
  ``A`` and ``b`` of the partition's items it has learnt about, the last feedback id they include (all written
  together) and their version;
- ``{ns}:lease:<p>``: which trainer owns the partition (one at a time, or events would be counted twice).

Feedback is accepted by one Lua script (atomic in Redis): the request must exist and be younger than the
window, the item must be one it showed, and no feedback on that item may have been given; then the event is
appended.  A request newer than its served log's newest entry is ``pending`` (replicas append responses just
after returning them): the replica asks again.  With ``--appendonly yes --appendfsync always`` the append is on
disk before Redis replies, so the acknowledgement follows durability.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from pipeline.errors import ConfigError

FEEDBACK_GROUP = "trainers"
ITEM_SEPARATOR = "\t"  # shown items are stored as "\t7\t12\t3\t" so the script can test membership

# KEYS: the served stream of the replica that issued the request, feedback stream of the item's partition, the
# "given" key.  ARGV: the request's entry id in that served stream, request id, item key, reward, feedback window
# (ms).  Returns {status} or {"ok", feedback id}.
FEEDBACK_SCRIPT = """
local function parts(id)
  local millis, sequence = string.match(id, '^(%d+)%-(%d+)$')
  return tonumber(millis), tonumber(sequence)
end
local issued, sequence = parts(ARGV[1])
if not issued then return {'unknown'} end
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - issued > tonumber(ARGV[5]) then
  return {'expired'}
end
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entry == 0 then
  local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #newest == 0 then return {'pending'} end
  local last, last_sequence = parts(newest[1][1])
  if issued > last or (issued == last and sequence > last_sequence) then return {'pending'} end
  return {'unknown'}
end
local fields, served = entry[1][2], {}
for i = 1, #fields, 2 do served[fields[i]] = fields[i + 1] end
if not string.find(served['items'], '\\t' .. ARGV[3] .. '\\t', 1, true) then return {'not-shown'} end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[5]) then return {'duplicate'} end
local id = redis.call('XADD', KEYS[2], '*', 'request_id', ARGV[2], 'item', ARGV[3], 'reward', ARGV[4],
                      'context', served['context'], 'version', served['version'])
return {'ok', id}
"""

# KEYS: params hash, lease.  ARGV: lease token, last id, applied, version, time, then (field, statistics) pairs
# of the items learnt since the last commit.  The statistics and the offset are written in one step, and only by
# the trainer that holds the lease.
COMMIT_SCRIPT = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'last_id', ARGV[2], 'applied', ARGV[3], 'version', ARGV[4], 'published_at', ARGV[5])
return 1
"""

# KEYS: lease.  ARGV: token, milliseconds.  Takes a free lease or renews our own.
LEASE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class StreamKeys:
    """The key names of one served policy (``namespace``, default ``bandit:RUN:POLICY``)."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        tag = "{" + namespace + "}"
        self.meta, self.served_logs = f"{tag}:meta", f"{tag}:served-logs"
        self._tag = tag

    def served(self, replica: str) -> str:
        return f"{self._tag}:served:{replica}"

    def feedback(self, partition: int) -> str:
        return f"{self._tag}:feedback:{partition}"

    def given(self, request_id: str, item: str) -> str:
        return f"{self._tag}:given:{request_id}:{item}"

    def params(self, partition: int) -> str:
        return f"{self._tag}:params:{partition}"

    def lease(self, partition: int) -> str:
        return f"{self._tag}:lease:{partition}"


def partition_of(item_key: str, partitions: int) -> int:
    """The feedback partition of an item: a hash that is the same in every process (unlike ``hash``)."""
    return zlib.crc32(item_key.encode()) % partitions


def stream_id(text: str | bytes) -> tuple[int, int]:
    """A stream entry id as a comparable pair (``"1732590000000-3"`` -> ``(1732590000000, 3)``)."""
    text = text.decode() if isinstance(text, bytes) else text
    millis, _, sequence = text.partition("-")
    return int(millis), int(sequence or 0)


def decoded(fields: dict) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()}


def ensure_partitions(client, keys: StreamKeys, requested: int | None, create: bool) -> int:
    """The namespace's number of feedback partitions.  The first replica fixes it (``requested``, default 1);
    later replicas must agree; a trainer (``create=False``) needs a replica to have started first."""
    if create:
        client.hsetnx(keys.meta, "partitions", requested or 1)
    stored = client.hget(keys.meta, "partitions")
    if stored is None:
        raise ConfigError(f"Redis namespace {keys.namespace!r} has no served policy yet: start "
                          "`python -m pipeline serve ... --store redis://...` with the same namespace first")
    partitions = int(stored)
    if requested is not None and requested != partitions:
        raise ConfigError(f"--partitions {requested}: namespace {keys.namespace!r} already has {partitions} feedback "
                          "partitions (the trainers' state is keyed by them); use the same number or another "
                          "--store-namespace")
    return partitions


# ------------------------------------------------------------------------------------ published statistics
ARM_FIELD = b"arm:"  # field prefix of one item's statistics in ``{ns}:params:<p>``


def ridge_solution(A: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``A^-1`` and ``beta = A^-1 b`` of one arm, computed as MABWiser's ``_Linear`` computes them; the trainer,
    a restored trainer and every replica call this one function, so all of them hold the same numbers."""
    inverse = np.linalg.inv(A)
    return inverse, inverse @ b


def pack_statistics(A: np.ndarray, b: np.ndarray) -> bytes:
    """One arm's ``A`` (upper triangle: it is symmetric) and ``b`` as float64 bytes."""
    upper = np.triu_indices(len(b))
    return np.concatenate([A[upper], b]).astype("<f8").tobytes()


def unpack_statistics(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    values = np.frombuffer(blob, dtype="<f8")
    d = int((np.sqrt(9 + 8 * len(values)) - 3) / 2)  # len = d(d+1)/2 + d
    if d * (d + 3) // 2 != len(values):
        raise ValueError(f"{len(blob)} bytes are not the statistics of one arm")
    upper = np.triu_indices(d)
    A = np.zeros((d, d))
    A[upper] = values[:len(upper[0])]
    A.T[upper] = values[:len(upper[0])]
    return A, values[len(upper[0]):].copy()


@dataclass(frozen=True)
class PartitionStatistics:
    """What a trainer commits and publishes for a partition, in one hash: ``A`` and ``b`` of every item it has
    learnt about (the others keep the run's), the last feedback id they include, and the version.

    Seed 004's job publishes ``A^-1`` and ``b``; publishing ``A`` and ``b`` instead makes the commit also the
    trainer's exact state (one write, not two) and replicas invert what changed.  Each commit writes only the
    items learnt since the previous one: Redis fsyncs the commit before it serves anyone else (3-10 ms per MB
    here), so its size is every request's stall at a publish.
    """

    arms: dict[str, bytes]  # item key -> pack_statistics(A, b)
    version: str
    last_id: str
    applied: int

    @classmethod
    def from_hash(cls, fields: dict) -> "PartitionStatistics":
        arms = {field[len(ARM_FIELD):].decode(): blob for field, blob in fields.items() if field.startswith(ARM_FIELD)}
        return cls(arms, fields[b"version"].decode(), fields[b"last_id"].decode(), int(fields[b"applied"]))
