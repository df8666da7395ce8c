"""Mixed load on the production path: two serving replicas + a trainer + Redis on this machine, loopback only.

    python -m bench.load_production RUN_DIR                      # rates 100..700 req/s, 15 s each (~3 minutes)
    python -m bench.load_production RUN_DIR --rates 500 --seconds 30

It starts a Redis of its own (AOF, fsync on every write, in a temporary folder), ``pipeline serve --store
redis://... --workers 2 --explore-epsilon 0.1`` and ``pipeline train-stream --publish-every 5``, then sends an
open-loop mix: arrivals at a fixed rate (request i due at ``i / rate`` s), each a ``/recommend`` with
probability 0.8 or else ``/feedback`` (reward 1 with probability 0.1) on an item of an earlier, not yet
answered response.  Latency runs from the due time (queueing included: no coordinated omission).  Measured:

- recommend and feedback p50/p99/max per rate, and the highest rate whose median recommend p99 over
  ``--repeats`` steps is under ``--max-p99-ms``;
- recommends overlapping a trainer publish (from its commit to 1 s after, covering the replicas' reload):
  their largest latency, next to the largest outside those windows (a stall of the shared machine shows in
  both; one caused by publishing only in the first);
- staleness: from a feedback's acknowledgement to the first ``/health`` (polled every 50 ms) whose model
  includes it (the replicas refresh every 0.1 s; two workers share the port, so a poll reaches either).

Results go to ``bench/results/load_production.csv`` and print as JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd
import redis
import redis.asyncio
import uvloop

from bench.http_client import HttpError, Pool
from bench.load_serving import contexts_from_run
from pipeline.localserver import free_port, wait_until_up
from pipeline.serving.streams import StreamKeys, stream_id

PUBLISH_WINDOW = 1.0  # seconds after a commit during which the replicas reload


def quantiles(values: list[float]) -> dict:
    values = np.array(values) * 1000 if values else np.array([np.nan])
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "max_ms": float(values.max()), "n": int(np.isfinite(values).sum())}


class Mix:
    """One rate step: open-loop arrivals, the answered responses waiting for feedback, and what was measured."""

    def __init__(self, url: str, contexts: list[dict], rng: np.random.Generator):
        self.host, self.port = url.split("//")[1].split(":")[0], int(url.rsplit(":", 1)[1])
        self.bodies = [json.dumps({"context": context}).encode() for context in contexts]
        self.rng = rng
        self.waiting: deque = deque(maxlen=10_000)  # (request_id, item) not yet given feedback
        self.recommends: list[tuple[float, float]] = []  # (due, latency)
        self.feedbacks: list[float] = []
        self.acknowledged: list[tuple[str, float]] = []  # (feedback id, acknowledged at)
        self.errors = 0

    async def one(self, pool: Pool, i: int, due: float) -> None:
        try:
            if self.rng.random() < 0.2 and self.waiting:
                request_id, item = self.waiting.popleft()
                body = json.dumps({"request_id": request_id, "item_id": item, "reward": int(self.rng.random() < 0.1)})
                status, payload = await pool.request("POST", "/feedback", body.encode())
                done = time.perf_counter()
                if status != 200:
                    self.errors += 1
                    return
                self.feedbacks.append(done - due)
                self.acknowledged.append((json.loads(payload)["feedback_id"], time.time()))
            else:
                status, payload = await pool.request("POST", "/recommend", self.bodies[i % len(self.bodies)])
                done = time.perf_counter()
                if status != 200:
                    self.errors += 1
                    return
                answer = json.loads(payload)
                self.recommends.append((time.time() - (done - due), done - due))
                self.waiting.append((answer["request_id"], answer["items"][0]["item_id"]))
        except HttpError:
            self.errors += 1

    async def run(self, rate: float, seconds: float, connections: int) -> None:
        pool = Pool(self.host, self.port, connections)
        start = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.one(pool, i, due)))
        await asyncio.gather(*tasks)
        await pool.close()


async def watch(url: str, keys: StreamKeys, redis_url: str, stop: asyncio.Event) -> tuple[list, list]:
    """Poll /health (what the replicas include) and the published version (when the trainer committed)."""
    seen, publishes, last_published = [], [], None
    store = redis.asyncio.Redis.from_url(redis_url)
    pool = Pool(url.split("//")[1].split(":")[0], int(url.rsplit(":", 1)[1]), 1)
    while not stop.is_set():
        try:
            _, payload = await pool.request("GET", "/health")
            included = json.loads(payload)["included_feedback"].get("0")
            if included:
                seen.append((time.time(), stream_id(included)))
            published = await store.hget(keys.params(0), "published_at")
            if published is not None and published != last_published:
                last_published = published
                publishes.append(float(published))
        except (HttpError, redis.RedisError):
            pass
        await asyncio.sleep(0.05)
    await store.aclose()
    await pool.close()
    return seen, publishes


def staleness(acknowledged: list[tuple[str, float]], seen: list[tuple[float, tuple]]) -> list[float]:
    """Seconds from each acknowledgement to the first /health poll whose model includes that feedback id."""
    out = []
    for feedback_id, at in acknowledged:
        wanted = stream_id(feedback_id)
        first = next((when for when, included in seen if when >= at and included >= wanted), None)
        if first is not None:
            out.append(first - at)
    return out


async def step(url, redis_url, keys, contexts, rate, seconds, connections, seed) -> dict:
    mix = Mix(url, contexts, np.random.default_rng(seed))
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(url, keys, redis_url, stop))
    await mix.run(rate, seconds, connections)
    await asyncio.sleep(7)  # one more publish interval, so the last feedback can be seen included
    stop.set()
    seen, publishes = await watcher
    overlaps = [any(p <= started + latency and started <= p + PUBLISH_WINDOW for p in publishes)
                for started, latency in mix.recommends]
    during = [latency for (_, latency), overlap in zip(mix.recommends, overlaps) if overlap]
    outside = [latency for (_, latency), overlap in zip(mix.recommends, overlaps) if not overlap]
    stale = staleness(mix.acknowledged, seen)
    return {"rate": rate, "seconds": seconds, "errors": mix.errors,
            **{f"recommend_{k}": v for k, v in quantiles([lat for _, lat in mix.recommends]).items()},
            **{f"feedback_{k}": v for k, v in quantiles(mix.feedbacks).items()},
            "publishes": len(publishes), "recommends_during_publish": len(during),
            "max_ms_during_publish": max(during) * 1000 if during else None,
            # the same outside the publish windows: a stall of the machine shows in both, a publish's only in one
            "max_ms_outside_publish": max(outside) * 1000 if outside else None,
            "staleness_p50_s": float(np.percentile(stale, 50)) if stale else None,
            "staleness_p99_s": float(np.percentile(stale, 99)) if stale else None,
            "staleness_measured": len(stale), "feedback_acknowledged": len(mix.acknowledged)}


def start(command: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--policy", default="LinUCB")
    parser.add_argument("--rates", type=float, nargs="+", default=[100, 200, 300, 400, 500, 600, 700])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure every rate this many times, in a shuffled order (p99s on a shared machine move "
                             "2x between identical steps; the summary takes each rate's median)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--max-p99-ms", type=float, default=20.0)
    parser.add_argument("--appendfsync", default="always", choices=["always", "everysec"],
                        help="Redis' AOF policy (always, as the durability guarantee needs; everysec to see what "
                             "the fsync on every write costs)")
    parser.add_argument("--output", default="bench/results/load_production.csv")
    args = parser.parse_args()
    # SIGTERM (a `timeout`, a CI runner) unwinds like Ctrl-C, so the finally below stops what this started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    contexts = contexts_from_run(args.run_dir, args.policy, 2000)
    # The libraries loaded to read the run are 180,000 objects: a full collection of them took 110 ms and
    # stalled this client's event loop (charged to the service as latency). Freeze them out of the collector.
    gc.collect()
    gc.freeze()
    processes = []
    with tempfile.TemporaryDirectory() as folder:
        redis_port, port = free_port(), free_port()
        processes.append(start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "yes", "--appendfsync", args.appendfsync, "--dir", folder]))
        redis_url, url = f"redis://127.0.0.1:{redis_port}/0", f"http://127.0.0.1:{port}"
        namespace = "load"
        try:
            time.sleep(0.5)
            processes.append(start([sys.executable, "-m", "pipeline", "serve", str(args.run_dir), "--policy",
                                    args.policy, "--store", redis_url, "--store-namespace", namespace, "--port",
                                    str(port), "--workers", "2", "--explore-epsilon", "0.1"]))
            if wait_until_up(f"{url}/health") is None:
                raise SystemExit("the replicas did not start within 60 s")
            processes.append(start([sys.executable, "-m", "pipeline", "train-stream", str(args.run_dir), "--policy",
                                    args.policy, "--store", redis_url, "--store-namespace", namespace]))
            keys = StreamKeys(namespace)
            uvloop.run(Mix(url, contexts, np.random.default_rng(0)).run(100, 8, args.connections))  # warm-up, a publish
            rows = []
            order = [rate for _ in range(args.repeats) for rate in args.rates]
            if args.repeats > 1:  # so that a slow spell of the machine does not fall on one rate's repeats
                order = list(np.random.default_rng(0).permutation(order))
            for number, rate in enumerate(order):
                row = uvloop.run(step(url, redis_url, keys, contexts, float(rate), args.seconds, args.connections,
                                      number))
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(timeout=20)
    table = pd.DataFrame(rows).sort_values("rate", kind="stable")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.output, index=False)
    summary = table.groupby("rate").agg(steps=("errors", "size"), errors=("errors", "sum"),
                                        p99_median_ms=("recommend_p99_ms", "median"),
                                        p99_min_ms=("recommend_p99_ms", "min"), p99_max_ms=("recommend_p99_ms", "max"),
                                        max_during_publish_ms=("max_ms_during_publish", "max"),
                                        max_outside_publish_ms=("max_ms_outside_publish", "max"))
    print(summary.round(1).to_string())
    ok = summary[(summary["errors"] == 0) & (summary["p99_median_ms"] < args.max_p99_ms)]
    print(json.dumps({"highest_rate_with_median_recommend_p99_under_ms": args.max_p99_ms,
                      "rate": float(ok.index.max()) if len(ok) else None}))


if __name__ == "__main__":
    main()
