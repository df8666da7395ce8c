"""The recommendation service's HTTP contract, shared by its two modes.

- ``GET /health``: status, policy, number of items, the model version served;
- ``POST /recommend``: ``{"context": {...raw columns...}, "k": 5}`` -> top-k items with scores, a request id
  and warnings about context values unlike the training data;
- ``POST /feedback``: ``{"request_id", "item_id", "reward"}`` for an item that request returned, once;
  acknowledged once the event is durably stored;
- ``GET /metrics``: request counts by route, latency quantiles, clicks, in Prometheus' text format.

Modes (``create_app`` picks by the store):
- a ``redis://`` store: the production path of seed 004 (``replica.py``): scoring only, from parameters a
  separate trainer (``trainer.py``) publishes; every response logged; feedback appended to a Redis Stream;
- a SQLite file: one process for a laptop (``inline.py``) that learns from feedback itself, off the request path.
"""

import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from pipeline.serving.policy import ServedPolicy

MAX_BODY_BYTES = 64 * 1024
EXCERPT_CHARS = 60  # the most of a client's value any response repeats
MAX_REPORTED_ERRORS = 20  # validation errors listed in one 422 response
MAX_LEVEL_CHARS = 200  # a categorical context value: bounds what a stored context can weigh
MAX_NUMERIC = 1e15  # a numeric context value's magnitude


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


class FeedbackInvalidResponse(BaseModel):
    detail: list[ValidationIssue] | str = Field(description="the body's issues, or one sentence when the item was "
                                                            "not in the list returned for the request")


FEEDBACK_INVALID = {422: {"model": FeedbackInvalidResponse,
                          "description": "invalid body, or an item the request did not return"}}


class HealthResponse(BaseModel):
    status: Literal["ok"]
    policy: str
    items: int
    model_version: str = Field(description="the run's model, then @ the feedback it has learnt up to")
    model_config = ConfigDict(extra="allow")  # mode-specific counters


class RecommendedItem(BaseModel):
    model_config = ConfigDict(extra="allow")  # the item table's columns: name, category, price, ...
    item_id: int | str
    score: float
    exploration_bonus: float | None = Field(None, description="LinUCB only")
    propensity: float | None = Field(None, description="the probability the serving policy shows this item at this "
                                                       "position for this context (production mode)")


class RecommendResponse(BaseModel):
    request_id: str = Field(description="name it in /feedback on one of these items")
    policy: str
    model_version: str
    k: int
    items: list[RecommendedItem]
    warnings: list[str] = Field(description="context values unlike any in training (unseen levels, values far "
                                            "outside the training range)")


class FeedbackResponse(BaseModel):
    feedback_id: int | str
    acknowledged: bool = Field(description="true once the event is durably in the log")


TOO_LARGE = {413: {"model": ErrorResponse, "description": f"body over {MAX_BODY_BYTES} bytes"}}
UNAVAILABLE = {503: {"model": ErrorResponse, "description": "the store is unreachable; nothing was acknowledged"}}
INVALID = {422: {"model": ValidationErrorResponse, "description": "a field is missing, unknown, mistyped, "
                                                                   "out of range or not finite"}}


class LimitAndMeasure:
    """Pure ASGI middleware: rejects bodies over ``MAX_BODY_BYTES`` (413; by their length header, or as a body
    without one arrives) and times every request, labelled by route (``unmatched`` for any other path).

    (Starlette's ``BaseHTTPMiddleware`` costs about a millisecond per request, more than the scoring.)
    """

    def __init__(self, app, metrics: "Metrics", routes: set[str]):
        self.app, self.metrics, self.routes = app, metrics, routes

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
            self.metrics.observe(label, 413, time.perf_counter() - started)
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
        self.metrics.observe(label, status[0], time.perf_counter() - started)




class Metrics:
    """Request counts and latencies by route, plus counters a mode adds (``counters``: name -> current value)."""

    def __init__(self, counters: dict[str, Callable[[], float]]):
        self.counts: dict[tuple[str, int], int] = defaultdict(int)
        self.latencies: dict[str, deque] = defaultdict(lambda: deque(maxlen=10_000))
        self.counters = counters

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.counts[(route, status)] += 1
        self.latencies[route].append(seconds)

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
        for name, value in self.counters.items():
            lines += [f"# TYPE bandit_{name}_total counter", f"bandit_{name}_total {value()}"]
        return "\n".join(lines) + "\n"


def _context_model(policy: ServedPolicy) -> type[BaseModel]:
    """The request schema for a context: the raw columns the run's featurizer was fitted on."""
    fields = {}
    for column, kind in policy.context_fields.items():
        if kind == "numeric":  # finite and bounded: 1e308 used to overflow the scaling into NaN scores (a 500)
            fields[column] = (float | bool, Field(..., allow_inf_nan=False, ge=-MAX_NUMERIC, le=MAX_NUMERIC))
        else:
            fields[column] = (Annotated[str, Field(max_length=MAX_LEVEL_CHARS)] | int | bool, ...)
    return create_model("Context", __config__=ConfigDict(extra="forbid"), **fields)


def request_models(served: ServedPolicy) -> tuple[type[BaseModel], type[BaseModel]]:
    """The bodies of /recommend and /feedback for this policy's contexts and items."""
    Context = _context_model(served)
    n_items = len(served.arms)

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        context: Context  # type: ignore[valid-type]
        k: int | None = Field(None, ge=1, le=n_items, description="list length (default: the run's top_k)")

    class FeedbackRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        request_id: str = Field(description="the id /recommend returned", min_length=1, max_length=64,
                                pattern=r"^[0-9A-Za-z-]+$")
        item_id: int | str = Field(description="one of the items that request returned")
        reward: Literal[0, 1] | bool

    return RecommendRequest, FeedbackRequest


def service_app(title: str, metrics: Metrics, lifespan) -> tuple[FastAPI, set[str]]:
    """A FastAPI app with the body limit, the route-labelled metrics, 422s that never echo values, and
    /metrics; the mode adds the other routes and then fills the returned set with ``app.routes``' paths."""
    app = FastAPI(title=title, version="2", lifespan=lifespan)
    routes: set[str] = set()
    app.add_middleware(LimitAndMeasure, metrics=metrics, routes=routes)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_errors(error.errors())}, status_code=422)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_text() -> str:
        return metrics.prometheus()

    return app, routes


def create_app(run_dir: Path, policy: str, store: str | Path, **options) -> FastAPI:
    """The service for ``policy`` of ``run_dir``: the production path for a ``redis://`` store
    (``replica.create_replica_app``), else the laptop mode on a SQLite file (``inline.create_inline_app``)."""
    if str(store).startswith(("redis://", "rediss://", "unix://")):
        from pipeline.serving.replica import create_replica_app

        return create_replica_app(run_dir, policy, str(store), **options)
    from pipeline.serving.inline import create_inline_app

    return create_inline_app(run_dir, policy, Path(store), **options)
