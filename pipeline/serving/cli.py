"""The serving commands: ``serve``, ``train-stream`` and ``export-log`` (``python -m pipeline COMMAND --help``)."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import socket
import sys
from pathlib import Path

from pipeline.errors import ConfigError, PipelineError

SERVE_ENVIRONMENT = "BANDIT_SERVE_OPTIONS"  # how `serve --workers N` hands its options to each worker process


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is a whole number from 1 to 65535; got {text[:40]!r}")
    return port


def _number(kind, text: str, low: float, high: float | None = None, low_inclusive: bool = True):
    """``text`` as ``kind`` within [low, high] (or (low, high] when ``low_inclusive`` is false)."""
    noun = "whole number" if kind is int else "number"
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {noun}; got {text[:40]!r}") from None
    too_low = value < low or (value == low and not low_inclusive)
    if too_low or (high is not None and value > high) or value != value:
        bound = f"{'at least' if low_inclusive else 'more than'} {low}" + (f" and at most {high}" if high else "")
        raise argparse.ArgumentTypeError(f"expected a {noun} {bound}; got {text[:40]}")
    return value


def positive_int(text: str) -> int:
    return _number(int, text, 1)


def positive_float(text: str) -> float:
    return _number(float, text, 0.0, high=1e7, low_inclusive=False)


def probability(text: str) -> float:
    return _number(float, text, 0.0, high=1.0)


def _store_options(command: argparse.ArgumentParser, required: bool) -> None:
    command.add_argument("run_dir", help="a run directory, e.g. runs/20261125-000705-default")
    command.add_argument("--policy", required=True, help="policy name as in the run's leaderboard, e.g. LinUCB")
    command.add_argument("--store", required=required,
                         help="redis://HOST:PORT/DB: the production path (replicas, stream, trainer)" +
                              ("" if required else "; or a SQLite file: the laptop mode that learns in-process "
                                                   "(default RUN_DIR/serving/POLICY.sqlite)"))
    command.add_argument("--store-namespace", help="prefix of the Redis keys (default: bandit:RUN:POLICY)")


def add_commands(commands) -> None:
    serve = commands.add_parser("serve", help="serve a run's trained policy over HTTP (FastAPI)",
                                description="serve a run's trained policy over HTTP (README: Serving)")
    _store_options(serve, required=False)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                                                            "0.0.0.0 exposes the service to the network)")
    serve.add_argument("--port", type=port_number, default=8000, help="TCP port, 1-65535 (default 8000)")
    serve.add_argument("--workers", type=positive_int, default=1, help="replica processes on this port (Redis only)")
    serve.add_argument("--explore-epsilon", type=probability, default=0.0,
                       help="Redis only: show a uniformly random list with this probability, so the served log can "
                            "evaluate other policies (default 0: no overlap beyond the policy's own lists)")
    serve.add_argument("--explore-seed", type=int,
                       help="Redis only: seed of the exploration draws (default: different in every process)")
    serve.add_argument("--partitions", type=positive_int,
                       help="Redis only: feedback partitions (by item), one trainer each at most; fixed by the first "
                            "replica of a namespace (default 1)")
    serve.add_argument("--feedback-window", type=positive_float, default=3600.0,
                       help="Redis only: seconds after a response during which its feedback is accepted")
    serve.add_argument("--served-log-max", type=positive_int, default=1_000_000,
                       help="Redis only: served responses each replica process keeps for feedback and export "
                            "(oldest dropped first)")
    serve.add_argument("--batch-size", type=positive_int, default=32,
                       help="SQLite only: feedback events per partial_fit")
    serve.add_argument("--snapshot-every", type=positive_int, default=1000,
                       help="SQLite only: learnt events between model snapshots")
    train = commands.add_parser("train-stream", help="learn from the feedback stream and publish to the replicas",
                                description="learn from a Redis feedback stream and publish serving parameters")
    _store_options(train, required=True)
    train.add_argument("--partition", type=int, action="append",
                       help="a partition this trainer owns (repeatable; default: all)")
    train.add_argument("--publish-every", type=positive_float, default=5.0, help="seconds between publishes (5)")
    train.add_argument("--lease-seconds", type=positive_float, default=10.0,
                       help="how long a stopped trainer's partitions stay reserved for it")
    export = commands.add_parser("export-log", help="write the served log as bring-your-own data with propensities",
                                 description="write the served log and its feedback as a bring-your-own data "
                                             "folder (interactions, items, a config) for `pipeline run`")
    _store_options(export, required=True)
    export.add_argument("--output", required=True, help="a new folder for interactions.csv, items.csv, config.yaml")


def serve(args) -> int:
    import uvicorn

    from pipeline.layout import safe_name
    from pipeline.rundir import check_complete_run

    check_complete_run(Path(args.run_dir))
    _check_can_listen(args.host, args.port)
    store = args.store or str(Path(args.run_dir) / "serving" / f"{safe_name(args.policy)}.sqlite")
    redis_store = store.startswith(("redis://", "rediss://", "unix://"))
    if redis_store:
        options = {"namespace": args.store_namespace, "epsilon": args.explore_epsilon,
                   "explore_seed": args.explore_seed, "partitions": args.partitions,
                   "feedback_window": args.feedback_window, "served_log_max": args.served_log_max}
    else:
        given = [flag for flag, value in (("--workers", args.workers != 1), ("--partitions", args.partitions),
                                          ("--explore-epsilon", args.explore_epsilon)) if value]
        if given:
            raise ConfigError(f"{', '.join(given)}: the laptop mode (a SQLite --store) is one process that learns "
                              "itself; give --store redis://... for replicas, exploration and partitions")
        options = {"batch_size": args.batch_size, "snapshot_every": args.snapshot_every}
    spec = {"run_dir": args.run_dir, "policy": args.policy, "store": store, **options}
    app = app_from_environment(spec)  # loaded and checked here: a mistake is one message, not one per worker
    if args.workers == 1:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    else:
        os.environ[SERVE_ENVIRONMENT] = json.dumps(spec)
        uvicorn.run("pipeline.serving.cli:app_from_environment", factory=True, workers=args.workers,
                    host=args.host, port=args.port, log_level="warning")
    return 0


def app_from_environment(spec: dict | None = None):
    """The app for ``spec`` (or the JSON in ``BANDIT_SERVE_OPTIONS``: how uvicorn's worker processes get it)."""
    from pipeline.serving.app import create_app

    if spec is None:  # a uvicorn worker process: it must not outlive its supervisor, even one killed with -9
        _terminate_with_parent()
    one_maths_thread()
    spec = dict(spec or json.loads(os.environ[SERVE_ENVIRONMENT]))
    return create_app(Path(spec.pop("run_dir")), spec.pop("policy"), spec.pop("store"), **spec)


def one_maths_thread() -> None:
    """One BLAS thread in a serving or training process.  A request multiplies one context by a few hundred
    items' parameters: OpenBLAS woke its threads for every such product and let them spin, which cost 0.3 ms of
    CPU per request and, with two replicas on two cores, a recommend p99 of 112 ms instead of 25 ms at 500
    req/s (measured).  Serving scales by processes (``--workers``), not by threads inside one request."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _terminate_with_parent() -> None:
    """SIGTERM this process when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``): uvicorn's workers would
    otherwise keep serving, orphaned, after a ``kill -9`` of ``serve --workers N``."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the supervisor's own shutdown still stops the workers
        pass
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():  # it died before the call above; exit now, since uvicorn
        print("serve: the supervising process is gone; this worker stops", file=sys.stderr)
        os._exit(1)  # would catch a SIGTERM at this point and hang on in its start-up


def _check_can_listen(host: str, port: int) -> None:
    """A port in use or an unknown address is the user's to fix (uvicorn would log it and exit with code 3)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as error:
        raise PipelineError(f"serve: cannot listen on {host[:100]}:{port} ({error.strerror or error}); choose another "
                            "--port, or a --host address of this machine") from None


def _redis_only(args) -> str:
    if not str(args.store).startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"--store {str(args.store)[:60]!r}: {args.command} reads a Redis store "
                          "(redis://HOST:PORT/DB)")
    return args.store_namespace or f"bandit:{Path(args.run_dir).name}:{args.policy}"


def train_stream(args) -> int:
    from pipeline.rundir import check_complete_run
    from pipeline.serving.trainer import StreamTrainer

    namespace = _redis_only(args)
    check_complete_run(Path(args.run_dir))
    one_maths_thread()  # it shares the machine with the replicas: threads spinning in it would slow them
    trainer = StreamTrainer(Path(args.run_dir), args.policy, args.store, namespace, args.partition,
                            lease_seconds=args.lease_seconds)
    print(f"train-stream: partitions {sorted(trainer.states)} of {namespace}, publishing every "
          f"{args.publish_every:g} s", file=sys.stderr)
    try:
        trainer.run(args.publish_every)
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM: run() committed what it had learnt
        code = interrupt.args[0] if interrupt.args and isinstance(interrupt.args[0], int) else signal.SIGINT
        print("train-stream: stopped; everything learnt is committed", file=sys.stderr)
        return 128 + code
    return 0


def export_log(args) -> int:
    from pipeline.rundir import check_complete_run
    from pipeline.serving.export import export_served_log

    namespace = _redis_only(args)
    check_complete_run(Path(args.run_dir))
    summary = export_served_log(Path(args.run_dir), args.policy, args.store, namespace, Path(args.output))
    print(summary)
    return 0


COMMANDS = {"serve": serve, "train-stream": train_stream, "export-log": export_log}
