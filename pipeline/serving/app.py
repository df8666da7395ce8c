"""The recommendation service: FastAPI over a ``ServedPolicy`` and a durable ``SQLiteStore``.

- ``GET /health``: status, policy, number of items, model version, events learnt since start;
- ``POST /recommend``: ``{"context": {...raw columns...}, "k": 5}`` -> top-k items with scores and item names;
- ``POST /feedback``: ``{"request_id" | "context", "item_id", "reward"}``: committed to the log (that is the
  acknowledgement), learnt with ``partial_fit`` in batches of ``batch_size``;
- ``GET /metrics``: request counts, latency quantiles, clicks, in Prometheus' text format.

The store is SQLite by default or Redis when a ``redis://`` URL is given.  Every ``snapshot_every`` learnt
events the model is pickled into the store with the id of the last event it
has learnt; at start-up the newest snapshot is loaded and the log after it replayed, so no acknowledged
feedback is lost when the process dies.
"""


import contextlib
import copy
import gc
import pickle
import threading
import time
import uuid
from collections import OrderedDict, defaultdict, deque
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from pipeline.serving.policy import ServedPolicy, item_key
from pipeline.serving.store import SQLiteStore, open_store
from pipeline.values import plain

MAX_BODY_BYTES = 64 * 1024
REMEMBERED_REQUESTS = 100_000  # /recommend contexts kept for feedback that names only the request id
EXCERPT_CHARS = 60  # the most of a client's value any response repeats
MAX_REPORTED_ERRORS = 20  # validation errors listed in one 422 response


def excerpt(value: Any) -> str:
    """A client-sent value as a response may mention it: its repr, cut to ``EXCERPT_CHARS``."""
    text = repr(value)
    return text if len(text) <= EXCERPT_CHARS else f"{text[:EXCERPT_CHARS]}... ({len(text)} characters)"


def validation_errors(errors: list[dict]) -> list[dict]:
    """FastAPI's 422 details without the offending input (which may be NaN, not JSON, or megabytes long): the
    field's location (each part cut to an excerpt), the message and the error type; at most 20."""
    return [{"loc": [part if isinstance(part, int) else excerpt(part).strip("'") for part in error["loc"]],
             "msg": error["msg"][:200], "type": error["type"]} for error in errors[:MAX_REPORTED_ERRORS]]


# ----------------------------------------------------------------------------------- response schemas
# Declared for the OpenAPI (``responses=``) without validating every response at run time (that would cost
# more than the scoring).
class ErrorResponse(BaseModel):
    detail: str = Field(description="what was wrong; any value the client sent appears as a short excerpt only")


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="where in the body, each part cut to 60 characters")
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    detail: list[ValidationIssue] = Field(description="at most 20 issues; the offending values are not repeated")


class HealthResponse(BaseModel):
    status: Literal["ok"]
    policy: str
    items: int
    model_version: str = Field(description="the run's model, @feedback-<id of the last feedback learnt>")
    events_learnt_since_start: int
    replayed_at_start: int
    last_learnt_feedback_id: int


class RecommendedItem(BaseModel):
    model_config = ConfigDict(extra="allow")  # the item table's columns: name, category, price, ...
    item_id: int | str
    score: float
    exploration_bonus: float | None = Field(None, description="LinUCB only")


class RecommendResponse(BaseModel):
    request_id: str = Field(description="name it in /feedback on one of these items")
    policy: str
    k: int
    items: list[RecommendedItem]
    warnings: list[str] = Field(description="context values unlike any in training (unseen levels, values far "
                                            "outside the training range)")


class FeedbackResponse(BaseModel):
    feedback_id: int
    acknowledged: bool = Field(description="true once the event is durably in the log")


TOO_LARGE = {413: {"model": ErrorResponse, "description": f"body over {MAX_BODY_BYTES} bytes"}}
INVALID = {422: {"model": ValidationErrorResponse, "description": "a field is missing, unknown, mistyped, "
                                                                   "out of range or not finite"}}


class Service:
    """The policy, its learning buffer, the store and the counters; thread-safe."""

    def __init__(self, policy: ServedPolicy, store: SQLiteStore, batch_size: int, snapshot_every: int):
        """``store`` is a ``SQLiteStore`` or anything with its methods (``RedisStore``)."""
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
        self.counts: dict[tuple[str, int], int] = defaultdict(int)
        self.latencies: dict[str, deque] = defaultdict(lambda: deque(maxlen=10_000))
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
                raise HTTPException(404, f"request_id {excerpt(request_id)} is unknown (or too old); send the context")
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

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.counts[(endpoint, status)] += 1
        self.latencies[endpoint].append(seconds)

    def prometheus(self) -> str:
        lines = ["# HELP bandit_requests_total Requests served, by endpoint and status.",
                 "# TYPE bandit_requests_total counter"]
        lines += [f'bandit_requests_total{{endpoint="{e}",status="{s}"}} {n}' for (e, s), n in sorted(self.counts.items())]
        lines += ["# HELP bandit_request_latency_seconds Latency over the last 10,000 requests per endpoint.",
                  "# TYPE bandit_request_latency_seconds summary"]
        for endpoint, values in sorted(self.latencies.items()):
            for q in (0.5, 0.9, 0.99):
                lines.append(f'bandit_request_latency_seconds{{endpoint="{endpoint}",quantile="{q}"}} '
                             f"{float(np.quantile(list(values), q)):.6f}")
        lines += ["# TYPE bandit_feedback_total counter", f"bandit_feedback_total {self.feedback}",
                  "# TYPE bandit_clicks_total counter", f"bandit_clicks_total {self.clicks}",
                  "# TYPE bandit_events_learnt_total counter", f"bandit_events_learnt_total {self.learnt_since_start}"]
        return "\n".join(lines) + "\n"


class LimitAndMeasure:
    """Pure ASGI middleware: rejects bodies over ``MAX_BODY_BYTES`` (413; by their length header, or as a body
    without one arrives) and times every request, labelled by route (``unmatched`` for any other path).

    (Starlette's ``BaseHTTPMiddleware`` costs about a millisecond per request, more than the scoring.)
    """

    def __init__(self, app, service: Service):
        self.app, self.service = app, service

    def __init__(self, app, service: Service, routes: set[str]):
        self.app, self.service, self.routes = app, service, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]
        # metrics are labelled by route, never by the raw path a client sent (unbounded, and it could inject lines)
        label = scope["path"] if scope["path"] in self.routes else "unmatched"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            response = JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
            await response(scope, receive, send)
            self.service.observe(label, 413, time.perf_counter() - started)
            return
        received = 0

        async def limited():  # a body without a length (chunked) is counted as it arrives
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise HTTPException(413, f"request body over {MAX_BODY_BYTES} bytes")
            return message

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        # Only a body without a length is counted here: with one, the server already holds the body to that length,
        # and every other request keeps the server's own receive (the hot path stays as it was).
        await self.app(scope, limited if length is None else receive, sending)
        self.service.observe(label, status[0], time.perf_counter() - started)


def _context_model(policy: ServedPolicy) -> type[BaseModel]:
    """The request schema for a context: the raw columns the run's featurizer was fitted on."""
    fields = {}
    for column, kind in policy.context_fields.items():
        annotation = (str | int | bool) if kind == "categorical" else (float | bool)
        fields[column] = (annotation, Field(..., allow_inf_nan=False) if kind == "numeric" else ...)
    return create_model("Context", __config__=ConfigDict(extra="forbid"), **fields)


def create_app(run_dir: Path, policy: str, store: str | Path, batch_size: int = 32, snapshot_every: int = 1000,
               seed: int | None = None, namespace: str | None = None) -> FastAPI:
    """``store``: a SQLite file path or a ``redis://`` URL; ``namespace`` prefixes the Redis keys."""
    served = ServedPolicy(run_dir, policy, seed=seed)
    store = open_store(store, namespace or f"bandit:{Path(run_dir).name}:{policy}")
    service = Service(served, store, batch_size, snapshot_every)
    Context = _context_model(served)
    n_items = len(served.arms)

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        context: Context  # type: ignore[valid-type]
        k: int | None = Field(None, ge=1, le=n_items, description="list length (default: the run's top_k)")

    class FeedbackRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        request_id: str | None = Field(None, description="the id /recommend returned, or give the context")
        context: Context | None = None  # type: ignore[valid-type]
        item_id: int | str
        reward: Literal[0, 1] | bool

        @model_validator(mode="after")
        def _one_context(self):
            if (self.request_id is None) == (self.context is None):
                raise ValueError("give exactly one of request_id and context")
            return self

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

    app = FastAPI(title="Bandit recommendation service", version="1", lifespan=lifespan)
    app.state.service = service

    routes: set[str] = set()  # filled below, once the routes exist
    app.add_middleware(LimitAndMeasure, service=service, routes=routes)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_errors(error.errors())}, status_code=422)

    @app.get("/health", response_model=None, responses={200: {"model": HealthResponse}})
    async def health() -> dict:
        return {"status": "ok", "policy": served.policy, "items": n_items, "model_version": served.version,
                "events_learnt_since_start": service.learnt_since_start, "replayed_at_start": service.replayed,
                "last_learnt_feedback_id": service.last_learnt}

    # async: scoring takes well under a millisecond, less than a hop to the thread pool would cost
    @app.post("/recommend", response_model=None,
              responses={200: {"model": RecommendResponse}, **TOO_LARGE, **INVALID})
    async def recommend(body: RecommendRequest) -> dict:
        context = body.context.model_dump()
        k = body.k or served.recommender.top_k
        items = served.recommend(context, k)  # the published model: learning never holds it
        request_id = service.remember(context, [item["item_id"] for item in items])
        warnings = [f"{column}: {excerpt(context[column])} is {why}" for column, why in served.unusual(context)]
        return {"request_id": request_id, "policy": served.policy, "k": k, "items": items, "warnings": warnings}

    @app.post("/feedback", response_model=None, responses={
        200: {"model": FeedbackResponse},
        404: {"model": ErrorResponse, "description": "unknown item_id or request_id"},
        409: {"model": ErrorResponse, "description": "feedback on this item for this request_id was already given"},
        **TOO_LARGE,
        422: {"model": ValidationErrorResponse, "description": "invalid body, or an item the request did not return"}})
    def feedback(body: FeedbackRequest) -> dict:
        if not served.knows(body.item_id):
            raise HTTPException(404, f"item_id {excerpt(body.item_id)} is not one of the policy's {n_items} items")
        if body.request_id is not None:
            context = service.claim(body.request_id, body.item_id)
        else:
            context = body.context.model_dump()
        feedback_id = service.add_feedback(context, plain(served.arm(body.item_id)), float(body.reward))
        return {"feedback_id": feedback_id, "acknowledged": True}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        return service.prometheus()

    routes.update(route.path for route in app.routes)
    return app
