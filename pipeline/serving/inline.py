"""The laptop mode: one process serves and learns from feedback itself, with a durable ``SQLiteStore``.

Feedback is committed to the store's log (that is the acknowledgement) and learnt with ``partial_fit`` in
batches of ``batch_size`` by a *copy* of the model; each learnt batch is published to serving by a reference
swap, so learning never blocks ``/recommend``.  Every ``snapshot_every`` learnt events the model is pickled into
the store with the id of the last event it has learnt; at start-up the newest snapshot is loaded and the log
after it replayed, so no acknowledged feedback is lost when the process dies.

Request ids live in memory (the newest ``REMEMBERED_REQUESTS``): feedback for a request served before a
restart is refused.  The production path (``replica.py``) keeps them, and every served response, in Redis.
"""

import contextlib
import copy
import gc
import pickle
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse

from pipeline.serving.app import (FEEDBACK_INVALID, INVALID, TOO_LARGE, ErrorResponse, FeedbackResponse,
                                  HealthResponse, Metrics, RecommendResponse, excerpt, request_models, service_app)
from pipeline.serving.policy import ServedPolicy, item_key
from pipeline.serving.store import SQLiteStore
from pipeline.values import plain

REMEMBERED_REQUESTS = 100_000  # /recommend contexts kept for feedback naming their request id


class Service:
    """The policy, its learning buffer, the store and the counters; thread-safe."""

    def __init__(self, policy: ServedPolicy, store: SQLiteStore, batch_size: int, snapshot_every: int):
        """``store`` is a ``SQLiteStore`` or anything with its methods."""
        self.policy, self.store = policy, store
        self.base_version = policy.version
        self.batch_size, self.snapshot_every = batch_size, snapshot_every
        self.lock = threading.Lock()  # the learner, the pending events, the counters
        self.requests_lock = threading.Lock()  # the remembered requests (/recommend takes only this one)
        self.ingest_lock = threading.Lock()  # the order of the feedback log (taken before ``lock``)
        self.pending: list[tuple[int, dict, Any, float]] = []
        self.last_learnt = 0
        self.learnt_since_start = 0
        self.since_snapshot = 0
        self.requests: OrderedDict[str, tuple[dict, set, set]] = OrderedDict()  # context, returned, given
        self.clicks = 0
        self.feedback = 0
        self.replayed = self._restore()
        # Learning never touches the served model: a learner copy learns, and each learnt batch is published as a
        # fresh copy (a reference swap), so /recommend takes no lock that learning holds.
        self.learner = policy.learner()
        self.policy.version = self._version()

    def _version(self) -> str:
        return f"{self.base_version}@feedback-{self.last_learnt}"

    def _restore(self) -> int:
        snapshot = self.store.latest_snapshot()
        if snapshot is not None:
            self.last_learnt, blob = snapshot
            self.policy.replace_model(pickle.loads(blob))
        events = self.store.events_after(self.last_learnt)
        for start in range(0, len(events), self.batch_size):
            self._learn(events[start:start + self.batch_size])
        return len(events)

    def _learn(self, events: list[tuple[int, dict, Any, float]], learner: ServedPolicy | None = None) -> None:
        if events:
            (learner or self.policy).learn([e[1] for e in events], [e[2] for e in events], [e[3] for e in events])
            self.last_learnt = events[-1][0]
            self.since_snapshot += len(events)

    def remember(self, context: dict, items: list) -> str:
        """A request id for this context and the items returned (feedback naming the id may name only those)."""
        request_id = uuid.uuid4().hex
        with self.requests_lock:
            self.requests[request_id] = (context, {item_key(item) for item in items}, set())
            while len(self.requests) > REMEMBERED_REQUESTS:
                self.requests.popitem(last=False)
        return request_id

    def claim(self, request_id: str, item: Any) -> dict:
        """The context of ``request_id`` for feedback on ``item``, marking it given; ``HTTPException`` when the id
        is unknown, the item was not returned for it, or its feedback was already acknowledged."""
        with self.requests_lock:
            remembered = self.requests.get(request_id)
            if remembered is None:
                raise HTTPException(404, f"request_id {excerpt(request_id)} is unknown: not issued by this process, "
                                         f"or older than its last {REMEMBERED_REQUESTS} requests")
            context, returned, given = remembered
            if item_key(item) not in returned:
                raise HTTPException(422, f"item_id {excerpt(item)} was not in the list returned for this request_id")
            if item_key(item) in given:
                raise HTTPException(409, f"feedback on item_id {excerpt(item)} for this request_id was already "
                                         "acknowledged")
            given.add(item_key(item))
        return context

    def add_feedback(self, context: dict, item: Any, reward: float) -> int:
        # One lock around the append and the queueing, so events are learnt in the order of their ids: a
        # snapshot that says "learnt up to id N" then really holds every id up to N (with the append outside
        # the lock, id 5 could still be on its way to the queue when id 6 was learnt and snapshotted, and a
        # restart would skip it).
        with self.ingest_lock:
            feedback_id = self.store.append(context, item, reward)  # committed: acknowledged from here on
            with self.lock:
                self.feedback += 1
                self.clicks += int(reward > 0)
                self.pending.append((feedback_id, context, item, reward))
                if len(self.pending) >= self.batch_size:
                    self.flush()
        return feedback_id

    def flush(self) -> None:
        """Learn the pending events into the learner (caller holds the lock), publish a copy of it for serving and
        snapshot when due."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        self._learn(batch, self.learner)
        self.policy.publish(copy.deepcopy(self.learner.recommender), self._version())
        self.learnt_since_start += len(batch)
        if self.since_snapshot >= self.snapshot_every:
            self.snapshot()

    def snapshot(self) -> None:
        self.store.save_snapshot(self.last_learnt, pickle.dumps(self.learner.recommender))
        self.since_snapshot = 0


def create_inline_app(run_dir: Path, policy: str, store: Path, batch_size: int = 32, snapshot_every: int = 1000,
                      seed: int | None = None) -> FastAPI:
    served = ServedPolicy(run_dir, policy, seed=seed)
    service = Service(served, SQLiteStore(store), batch_size, snapshot_every)
    metrics = Metrics({"feedback": lambda: service.feedback, "clicks": lambda: service.clicks,
                       "events_learnt": lambda: service.learnt_since_start})
    RecommendRequest, FeedbackRequest = request_models(served)
    n_items = len(served.arms)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # The loaded model and libraries are long-lived: move them out of the cyclic collector's way, so its
        # full collections (tens of milliseconds with this many objects) stop landing on requests.
        gc.collect()
        gc.freeze()
        yield
        with service.lock:  # a clean stop learns what is pending and snapshots it
            service.flush()
            service.snapshot()
        service.store.close()

    app, routes = service_app("Bandit recommendation service (laptop mode)", metrics, lifespan)
    app.state.service = service

    @app.get("/health", response_model=None, responses={200: {"model": HealthResponse}})
    async def health() -> dict:
        return {"status": "ok", "policy": served.policy, "items": n_items, "model_version": served.version,
                "events_learnt_since_start": service.learnt_since_start, "replayed_at_start": service.replayed,
                "last_learnt_feedback_id": service.last_learnt}

    # async: scoring takes well under a millisecond, less than a hop to the thread pool would cost
    @app.post("/recommend", response_model=None,
              responses={200: {"model": RecommendResponse}, **TOO_LARGE, **INVALID})
    async def recommend(body: RecommendRequest) -> JSONResponse:  # type: ignore[valid-type]
        context = body.context.model_dump()
        k = body.k or served.recommender.top_k
        items = served.recommend(context, k)  # the published model: learning never holds it
        request_id = service.remember(context, [item["item_id"] for item in items])
        warnings = [f"{column}: {excerpt(context[column])} is {why}" for column, why in served.unusual(context)]
        return JSONResponse({"request_id": request_id, "policy": served.policy, "model_version": served.version,
                             "k": k, "items": items, "warnings": warnings})  # (see replica.py: no jsonable_encoder)

    @app.post("/feedback", response_model=None, responses={
        200: {"model": FeedbackResponse},
        404: {"model": ErrorResponse, "description": "unknown item_id or request_id"},
        409: {"model": ErrorResponse, "description": "feedback on this item for this request_id was already given"},
        **TOO_LARGE,
        **FEEDBACK_INVALID})
    def feedback(body: FeedbackRequest) -> dict:  # type: ignore[valid-type]
        if not served.knows(body.item_id):
            raise HTTPException(404, f"item_id {excerpt(body.item_id)} is not one of the policy's {n_items} items")
        context = service.claim(body.request_id, body.item_id)
        feedback_id = service.add_feedback(context, plain(served.arm(body.item_id)), float(body.reward))
        return {"feedback_id": feedback_id, "acknowledged": True}

    routes.update(route.path for route in app.routes)
    return app
