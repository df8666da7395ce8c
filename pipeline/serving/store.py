"""Durable serving state: an append-only feedback log and model snapshots, in SQLite.

A feedback event is acknowledged only after its row is committed (WAL journal, ``synchronous=FULL``), so a
crash never loses an acknowledged event.  A snapshot stores the pickled model together with the id of the
last event it has learnt; a restarted service loads the newest snapshot and replays the log after it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path


class SQLiteStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "context TEXT NOT NULL, item TEXT NOT NULL, reward REAL NOT NULL, created REAL NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "last_feedback_id INTEGER NOT NULL, model BLOB NOT NULL, created REAL NOT NULL)")

    def append(self, context: dict, item, reward: float) -> int:
        """Commit one feedback event; returns its id (the acknowledgement)."""
        with self._lock:
            cursor = self._db.execute("INSERT INTO feedback (context, item, reward, created) VALUES (?, ?, ?, ?)",
                                      (json.dumps(context), json.dumps(item), float(reward), time.time()))
            return int(cursor.lastrowid)

    def events_after(self, last_id: int) -> list[tuple[int, dict, object, float]]:
        with self._lock:
            rows = self._db.execute("SELECT id, context, item, reward FROM feedback WHERE id > ? ORDER BY id",
                                    (last_id,)).fetchall()
        return [(row[0], json.loads(row[1]), json.loads(row[2]), row[3]) for row in rows]

    def save_snapshot(self, last_feedback_id: int, model: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT INTO snapshots (last_feedback_id, model, created) VALUES (?, ?, ?)",
                             (last_feedback_id, model, time.time()))
            # Older snapshots are no longer needed to restore; keep the newest two.
            self._db.execute("DELETE FROM snapshots WHERE id NOT IN (SELECT id FROM snapshots ORDER BY id DESC LIMIT 2)")

    def latest_snapshot(self) -> tuple[int, bytes] | None:
        with self._lock:
            row = self._db.execute("SELECT last_feedback_id, model FROM snapshots ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def close(self) -> None:
        self._db.close()


class RedisStore:
    """The same log and snapshots in Redis (a list of JSON events and two keys), for a shared, external store.

    An event is acknowledged once ``RPUSH`` returned; its id is its 1-based position in the list.  Durability
    across a Redis restart is the Redis server's own (run it with ``--appendonly yes --appendfsync always``).
    """

    def __init__(self, url: str, namespace: str):
        import redis

        self._redis = redis.Redis.from_url(url)
        self._redis.ping()
        self._log, self._snapshot = f"{namespace}:feedback", f"{namespace}:snapshot"

    def append(self, context: dict, item, reward: float) -> int:
        return int(self._redis.rpush(self._log, json.dumps([context, item, float(reward), time.time()])))

    def events_after(self, last_id: int) -> list[tuple[int, dict, object, float]]:
        rows = self._redis.lrange(self._log, last_id, -1)
        return [(last_id + i + 1, *json.loads(row)[:3]) for i, row in enumerate(rows)]

    def save_snapshot(self, last_feedback_id: int, model: bytes) -> None:
        self._redis.hset(self._snapshot, mapping={"last_feedback_id": last_feedback_id, "model": model})

    def latest_snapshot(self) -> tuple[int, bytes] | None:
        saved = self._redis.hgetall(self._snapshot)
        return None if not saved else (int(saved[b"last_feedback_id"]), saved[b"model"])

    def close(self) -> None:
        self._redis.close()


def open_store(spec: str | Path, namespace: str):
    """A ``redis://`` URL opens a ``RedisStore``; anything else is a SQLite file path."""
    if str(spec).startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(str(spec), namespace)
    return SQLiteStore(Path(spec))
