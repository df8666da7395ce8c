"""A serving replica of the production path: scoring only, from parameters a trainer publishes to Redis.

Any number of replicas (``--workers N`` processes, on any number of machines) serve one policy from one Redis:

- at start and every ``refresh_every`` seconds a replica reads each partition's published version; a new one is
  loaded and the stacked scorer rebuilt in a worker thread, then swapped in by one reference assignment, so a
  request sees one consistent model and never waits for a rebuild;
- ``/recommend`` scores the context against every item (``LinearScorer``), explores with ``epsilon``
  (``exploration.py``) and returns the list; the response goes to the replica's served log just after
  (``served_log.py``: why after, and what that changes);
- ``/feedback`` runs the acceptance script of ``streams.py``: the event is appended to its item's partition
  of the feedback stream, durably, before the reply.  Nothing here learns: ``trainer.py`` does.

Only LinUCB, LinGreedy and LinTS have a state a trainer can publish in closed form (``A`` and ``b`` per arm,
from which a replica solves ``A^-1`` and ``beta``; seed 004 publishes ``A^-1`` and ``b``); every other policy
is refused here and served by the laptop mode (``inline.py``).
"""

import asyncio
import contextlib
import gc
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis
import redis.asyncio
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from scipy.special import expit

from pipeline.errors import ConfigError
from pipeline.scoring import LinearScorer, linear_arrays, top_k
from pipeline.serving.app import (FEEDBACK_INVALID, INVALID, TOO_LARGE, UNAVAILABLE, ErrorResponse, FeedbackResponse,
                                  HealthResponse, Metrics, RecommendResponse, excerpt, request_models, service_app)
from pipeline.serving.exploration import explore
from pipeline.serving.policy import ServedPolicy, item_key
from pipeline.serving.served_log import PENDING_RETRIES, ServedLog, ServedLogFull, served_entry, split_request_id
from pipeline.serving.streams import (FEEDBACK_SCRIPT, PartitionStatistics, StreamKeys, ensure_partitions,
                                      partition_of, ridge_solution, unpack_statistics)

STREAM_POLICIES = ("LinUCB", "LinGreedy", "LinTS")
FEEDBACK_REFUSALS = {
    "unknown": (404, "request_id {request} was not issued by this service, or has left the served log (or its "
                    "replica stopped before logging it)"),
    "expired": (404, "request_id {request} is older than the feedback window ({window} s)"),
    "not-shown": (422, "item_id {item} was not in the list returned for this request_id"),
    "duplicate": (409, "feedback on item_id {item} for this request_id was already acknowledged"),
}


@dataclass(frozen=True)
class ServedModel:
    """What one request reads, swapped as a whole: the scorer and the published versions it holds."""

    scorer: LinearScorer
    partitions: dict[int, PartitionStatistics]
    version: str


class Replica:
    def __init__(self, run_dir: Path, policy: str, url: str, namespace: str, partitions: int | None = None,
                 epsilon: float = 0.0, seed: int | None = None, feedback_window: float = 3600.0,
                 served_log_max: int = 1_000_000, propensity_draws: int = 200, refresh_every: float = 0.1,
                 explore_seed: int | None = None):
        self.served = ServedPolicy(run_dir, policy, seed=seed)
        arrays = linear_arrays(self.served.recommender)
        if arrays is None:
            raise ConfigError(f"--store {url[:60]}: the production path serves {', '.join(STREAM_POLICIES)} (their "
                              f"parameters can be published by a trainer); {policy!r} is not one of them. Serve it in "
                              "the laptop mode (a SQLite --store, the default), which learns in-process")
        self.kind, self.alpha = arrays["kind"], arrays["alpha"]
        # LinGreedy's own epsilon is the same uniform exploration: the two combine into one probability
        self.epsilon = epsilon + arrays["epsilon"] - epsilon * arrays["epsilon"]
        self.arms, self.base_betas, self.base_inverses = arrays["arms"], arrays["betas"], arrays["inverses"]
        self.arm_keys = [item_key(arm) for arm in self.arms]
        self.row_of = {key: row for row, key in enumerate(self.arm_keys)}
        self.keys = StreamKeys(namespace)
        self.url, self.window_ms = url, int(feedback_window * 1000)
        self.draws, self.refresh_every = propensity_draws, refresh_every
        # By default each process explores with its own stream of draws (replicas must not all explore alike); the
        # served log records every propensity, so evaluation never depends on replaying these draws.
        self.rng = np.random.default_rng(explore_seed if explore_seed is not None else [os.getpid(), time.time_ns()])
        self.aio = redis.asyncio.Redis.from_url(url)
        self.served_log = ServedLog(self.aio, self.keys, served_log_max)
        try:
            client = redis.Redis.from_url(url)
            self.partitions = ensure_partitions(client, self.keys, partitions, create=True)
            self.served_log.register(client)
            self.solved: dict[str, tuple[bytes, np.ndarray, np.ndarray]] = {}  # item -> (statistics, A^-1, beta)
            self.model = self._build({p: PartitionStatistics.from_hash(fields) for p in range(self.partitions)
                                      if (fields := client.hgetall(self.keys.params(p)))})
            client.close()
        except redis.RedisError as error:
            raise ConfigError(f"--store {url[:60]}: cannot reach Redis ({str(error)[:200]})") from None
        self.accept_feedback = self.aio.register_script(FEEDBACK_SCRIPT)
        self.counts = {"served": 0, "feedback": 0, "clicks": 0, "model_refreshes": 0}

    # ------------------------------------------------------------------------------------------ the model
    def _build(self, partitions: dict[int, PartitionStatistics]) -> ServedModel:
        """The run's parameters with every item a trainer has published replaced by its ``A^-1`` and ``beta``
        (solved again only for the items whose statistics changed)."""
        betas = self.base_betas.copy()
        inverses = None if self.base_inverses is None else self.base_inverses.copy()
        for published in partitions.values():
            for key, blob in published.arms.items():
                if key not in self.row_of:  # not an item of this run: another run's trainer on this namespace
                    continue
                if key not in self.solved or self.solved[key][0] != blob:
                    self.solved[key] = (blob, *ridge_solution(*unpack_statistics(blob)))
                _, inverse, beta = self.solved[key]
                betas[self.row_of[key]] = beta
                if inverses is not None:
                    inverses[self.row_of[key]] = inverse
        scorer = LinearScorer(self.arms, betas, inverses, self.kind, alpha=self.alpha)
        included = ",".join(f"p{p}:{partitions[p].last_id}" if p in partitions else f"p{p}:run"
                            for p in range(self.partitions))
        return ServedModel(scorer, partitions, f"{self.served.version}@{included}")

    async def refresh(self) -> bool:
        """Load the partitions whose published version changed; True when the served model was replaced."""
        current = self.model
        async with self.aio.pipeline(transaction=False) as pipe:
            for p in range(self.partitions):
                pipe.hget(self.keys.params(p), "version")
            versions = await pipe.execute()
        changed = [p for p, version in enumerate(versions) if version is not None and
                   (p not in current.partitions or current.partitions[p].version != version.decode())]
        if not changed:
            return False
        fresh = dict(current.partitions)
        for p in changed:
            fresh[p] = PartitionStatistics.from_hash(await self.aio.hgetall(self.keys.params(p)))
        self.model = await asyncio.to_thread(self._build, fresh)  # built off the event loop, swapped in one step
        self.counts["model_refreshes"] += 1
        return True

    async def refresh_forever(self, stop: asyncio.Event) -> None:
        """Refresh every ``refresh_every`` s until ``stop`` is set.  Stopped by the event, not by cancelling the
        task: a cancellation landing inside a redis-py pipeline could leave shutdown waiting for ever."""
        warned = False
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.refresh_every)
                return
            try:
                await self.refresh()
                warned = False
            except redis.RedisError as error:  # keep serving the model we have; say so once per outage
                if not warned:
                    print(f"replica: cannot refresh the model from Redis ({str(error)[:200]}); serving "
                          f"{self.model.version}", file=sys.stderr)
                    warned = True

    # ------------------------------------------------------------------------------------------ requests
    def rank(self, context: dict, k: int) -> tuple[ServedModel, np.ndarray, np.ndarray, dict, np.ndarray | None]:
        """The list to show (arm rows), the policy's scores for them, their propensities and LinUCB's bonus."""
        model = self.model  # one reference for the whole request
        vector = self.served.featurizer.transform_records([context])
        bonus = model.scorer.bonus(vector) if self.kind == "ucb" else None
        if self.kind == "ts":  # the served draw first, then more draws of the posterior for the propensities
            expectations = model.scorer.expectations(np.repeat(vector, self.draws, axis=0), self.rng)
        else:  # LinUCB's scores() would compute the bonus a second time
            expectations = vector @ model.scorer.betas.T + (bonus if bonus is not None else 0.0)
        lists, _ = top_k(expectations, k)
        shown, propensities = explore(lists, len(self.arms), self.epsilon, self.rng)
        return model, shown, expit(expectations[0, shown]), propensities, None if bonus is None else bonus[0][shown]

    def log_served(self, context: dict, model: ServedModel, shown: np.ndarray, scores: np.ndarray,
                   propensities: dict) -> str:
        """Queue the response for the served log (``served_log.py``) and return its request id."""
        fields = served_entry(context, [self.arm_keys[row] for row in shown], scores.tolist(), propensities,
                              model.version, self.epsilon)
        request_id = self.served_log.append(fields)
        self.counts["served"] += 1
        return request_id

    async def feedback(self, request_id: str, item: str, reward: int) -> str:
        issued = split_request_id(request_id)
        status, answer = "unknown", None
        if issued is not None:
            partition = partition_of(item, self.partitions)
            keys = [self.keys.served(issued[0]), self.keys.feedback(partition), self.keys.given(request_id, item)]
            for pause in (*PENDING_RETRIES, None):  # "pending": the serving replica has not appended it yet
                answer = await self.accept_feedback(keys=keys, args=[issued[1], request_id, item, reward,
                                                                     self.window_ms])
                status = answer[0].decode()
                if status != "pending" or pause is None:
                    break
                await asyncio.sleep(pause)
        if status != "ok":
            status = "unknown" if status == "pending" else status
            code, message = FEEDBACK_REFUSALS[status]
            raise HTTPException(code, message.format(request=excerpt(request_id), item=excerpt(item),
                                                     window=self.window_ms // 1000))
        self.counts["feedback"] += 1
        self.counts["clicks"] += int(reward > 0)
        return answer[1].decode()


def create_replica_app(run_dir: Path, policy: str, url: str, namespace: str | None = None, **options) -> FastAPI:
    replica = Replica(Path(run_dir), policy, url, namespace or f"bandit:{Path(run_dir).name}:{policy}", **options)
    served = replica.served
    metrics = Metrics({name: (lambda name=name: replica.counts[name]) for name in replica.counts})
    RecommendRequest, FeedbackRequest = request_models(served)
    n_items = len(replica.arms)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        gc.collect()
        gc.freeze()  # see inline.py
        stop = asyncio.Event()
        refresher = asyncio.create_task(replica.refresh_forever(stop))
        yield
        if not await replica.served_log.drain(timeout=10):
            replica.served_log.abandon()
        stop.set()
        # Each step bounded (asyncio.wait, unlike wait_for, does not wait for a cancellation to finish): a stopping
        # replica must not hang whatever Redis does (one did, in CI, when its refresher was cancelled mid-command).
        for step in (lambda: refresher, lambda: asyncio.ensure_future(replica.aio.aclose())):
            task = step()
            done, _ = await asyncio.wait({task}, timeout=10)
            if not done:
                task.cancel()
                print("replica: a shutdown step took over 10 s; abandoned", file=sys.stderr)

    app, routes = service_app("Bandit recommendation service (replica)", metrics, lifespan)
    app.state.replica = replica

    @app.exception_handler(redis.RedisError)
    async def store_down(request, error) -> JSONResponse:
        return JSONResponse({"detail": "the Redis store is unreachable; nothing was recorded or acknowledged, "
                                       "retry"}, status_code=503)

    @app.exception_handler(ServedLogFull)
    async def log_full(request, error) -> JSONResponse:
        return JSONResponse({"detail": f"the served log cannot reach Redis ({replica.served_log.max_unlogged} "
                                       "responses are waiting); nothing was served, retry"}, status_code=503)

    # Responses go through their response models: FastAPI (0.165) validates and serialises them in pydantic's
    # Rust core, as fast as returning a JSONResponse (measured); its older jsonable_encoder path cost 1.1 ms.
    @app.get("/health", response_model=HealthResponse)
    async def health() -> dict:
        model = replica.model
        return {"status": "ok", "policy": served.policy, "items": n_items, "model_version": model.version,
                "epsilon": replica.epsilon, "partitions": replica.partitions,
                "included_feedback": {str(p): params.last_id for p, params in model.partitions.items()},
                "events_learnt": sum(params.applied for params in model.partitions.values()),
                "served_log_backlog": len(replica.served_log.waiting)}

    @app.post("/recommend", response_model=RecommendResponse, responses={**TOO_LARGE, **INVALID, **UNAVAILABLE})
    async def recommend(body: RecommendRequest) -> dict:  # type: ignore[valid-type]
        context = body.context.model_dump()
        k = body.k or served.recommender.top_k
        model, shown, scores, propensities, bonus = replica.rank(context, k)
        request_id = replica.log_served(context, model, shown, scores, propensities)
        items = served.item_rows([replica.arms[row] for row in shown], scores, bonus, propensities["position"])
        warnings = [f"{column}: {excerpt(context[column])} is {why}" for column, why in served.unusual(context)]
        return {"request_id": request_id, "policy": served.policy, "model_version": model.version, "k": k,
                "items": items, "warnings": warnings}

    @app.post("/feedback", response_model=FeedbackResponse, responses={
        404: {"model": ErrorResponse, "description": "unknown item_id, or request_id unknown or too old"},
        409: {"model": ErrorResponse, "description": "feedback on this item for this request_id was already given"},
        **TOO_LARGE, **UNAVAILABLE,
        **FEEDBACK_INVALID})
    async def feedback(body: FeedbackRequest) -> dict:  # type: ignore[valid-type]
        if not served.knows(body.item_id):
            raise HTTPException(404, f"item_id {excerpt(body.item_id)} is not one of the policy's {n_items} items")
        feedback_id = await replica.feedback(body.request_id, item_key(body.item_id), int(body.reward))
        return {"feedback_id": feedback_id, "acknowledged": True}

    routes.update(route.path for route in app.routes)
    return app
