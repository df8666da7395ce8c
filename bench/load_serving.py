"""Load test of the recommendation service, loopback only, bounded in requests and time.

    python -m bench.load_serving RUN_DIR --policy LinUCB                   # 200 requests/s for 30 s
    python -m bench.load_serving RUN_DIR --policy LinUCB --find-max        # then steps up the rate

It starts ``python -m pipeline serve`` on a free 127.0.0.1 port (its own SQLite store in a temporary
folder) and sends ``POST /recommend`` at a fixed arrival rate (open loop: request i is due at ``i / rate``
seconds) over at most ``--connections`` concurrent connections.  Latency runs from the request's due time
to its response, so a server that falls behind is charged for the queueing too (no coordinated
omission).  Contexts are drawn from the run's own test events.  ``--find-max`` then tries rising rates for
``--step-seconds`` each and reports the highest whose p99 stays under ``--max-p99-ms`` with no errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from pipeline import layout
from pipeline.localserver import free_port, wait_until_up
from pipeline.serving.policy import ServedPolicy


def contexts_from_run(run_dir: Path, policy: str, n: int, seed: int = 0) -> list[dict]:
    served = ServedPolicy(run_dir, policy)
    info = json.loads((run_dir / layout.RUN_JSON).read_text())
    data_seed = info["seeds"][0]
    events = pd.read_parquet(run_dir / layout.parquet(layout.data_table(data_seed, "interactions")))
    users = pd.read_parquet(run_dir / layout.parquet(layout.data_table(data_seed, "users")))
    frame = events.sample(n=min(n, len(events)), random_state=seed).merge(users, on="user_id", how="left")
    columns = list(served.context_fields)
    return [{c: (v.item() if hasattr(v, "item") else v) for c, v in row.items()}
            for row in frame[columns].to_dict(orient="records")]


async def fire(url: str, contexts: list[dict], rate: float, seconds: float, connections: int) -> dict:
    total = int(rate * seconds)
    latencies, errors = [], 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    gate = asyncio.Semaphore(connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10.0) as client:
        start = time.perf_counter()

        async def one(i: int, due: float) -> None:
            nonlocal errors
            async with gate:
                try:
                    response = await client.post("/recommend", json={"context": contexts[i % len(contexts)]})
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
            if ok:
                latencies.append(time.perf_counter() - due)
            else:
                errors += 1

        tasks = []
        for i in range(total):  # each request is created at its due time (6,000 sleeping tasks would skew the start)
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    values = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"rate": rate, "requests": total, "errors": errors, "achieved_rate": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(values, 50)), "p90_ms": float(np.percentile(values, 90)),
            "p99_ms": float(np.percentile(values, 99)), "max_ms": float(values.max())}


def start_server(run_dir: Path, policy: str, store: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", str(run_dir), "--policy", policy,
                               "--port", str(port), "--store", str(store)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    if wait_until_up(f"{url}/health") is None:
        server.kill()
        raise SystemExit("the service did not start within 60 s")
    return server, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--policy", default="LinUCB")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--find-max", action="store_true")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--max-p99-ms", type=float, default=100.0)
    args = parser.parse_args()
    contexts = contexts_from_run(args.run_dir, args.policy, 2000)
    with tempfile.TemporaryDirectory() as folder:
        server, url = start_server(args.run_dir, args.policy, Path(folder) / "store.sqlite")
        try:
            asyncio.run(fire(url, contexts, 20, 2, args.connections))  # warm-up
            result = asyncio.run(fire(url, contexts, args.rate, args.seconds, args.connections))
            print(json.dumps(result))
            if args.find_max:
                best, rate = None, 25.0
                while rate <= 5000:
                    step = asyncio.run(fire(url, contexts, rate, args.step_seconds, args.connections))
                    print(json.dumps(step), flush=True)
                    if step["errors"] or step["p99_ms"] > args.max_p99_ms:
                        break
                    best, rate = step, rate * 1.5
                print(json.dumps({"highest_sustained_rate": best["rate"] if best else None,
                                  "p99_limit_ms": args.max_p99_ms}))
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
