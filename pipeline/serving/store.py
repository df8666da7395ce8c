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
