"""CPU per recommend of one serving replica, without HTTP or a load generator: the app driven through its ASGI
interface against a real Redis, ``--requests`` requests, ``--concurrency`` at a time.

    python -m bench.replica_cpu RUN_DIR --redis redis://127.0.0.1:6390/0

Prints milliseconds of CPU and of wall time per request.  It separates what the service's own code costs
(ranking, validation, the served log) from the sockets, uvicorn and the machine, which ``load_production``
measures together; compare two versions of the code in one sitting, on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path

import uvloop

from bench.load_serving import contexts_from_run
from pipeline.serving.cli import one_maths_thread
from pipeline.serving.replica import create_replica_app


async def measure(app, bodies: list[bytes], requests: int, concurrency: int) -> tuple[float, float]:
    async def call(body: bytes) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/recommend", "raw_path": b"/recommend", "query_string": b"",
                 "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise SystemExit(f"/recommend answered {sent[0]['status']}: {sent[1].get('body', b'')[:300]!r}")

    async def client(start: int) -> None:
        for i in range(start, requests, concurrency):
            await call(bodies[i % len(bodies)])

    async with app.router.lifespan_context(app):
        for body in bodies[:50]:  # warm-up
            await call(body)
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client(start) for start in range(concurrency)))
        return (time.process_time() - cpu) / requests * 1000, (time.perf_counter() - wall) / requests * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--redis", required=True, help="redis://HOST:PORT/DB (a fresh namespace is used)")
    parser.add_argument("--policy", default="LinUCB")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--explore-epsilon", type=float, default=0.1)
    args = parser.parse_args()
    one_maths_thread()  # as `pipeline serve` does
    app = create_replica_app(args.run_dir, args.policy, args.redis, namespace=f"bench-{uuid.uuid4().hex}",
                             epsilon=args.explore_epsilon)
    bodies = [json.dumps({"context": context}).encode() for context in contexts_from_run(args.run_dir, args.policy, 500)]
    cpu, wall = uvloop.run(measure(app, bodies, args.requests, args.concurrency))
    print(json.dumps({"requests": args.requests, "concurrency": args.concurrency, "cpu_ms_per_request": round(cpu, 3),
                      "wall_ms_per_request": round(wall, 3)}))


if __name__ == "__main__":
    main()
