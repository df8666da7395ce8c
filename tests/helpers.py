"""Helpers shared by test files (plain functions; fixtures live in conftest.py)."""

import io
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cli import main
from pipeline.localserver import free_port


def run_cli(config_path, capsys, *extra):
    """``python -m pipeline run CONFIG --quiet ...`` in-process: (exit code, stderr)."""
    code = main(["run", str(config_path), "--quiet", *extra])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def assert_clean_failure(code, message, runs_dir, *fragments):
    """Exit 2, one paragraph naming every fragment, and nothing that looks like a run left behind."""
    assert code == 2
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    # Nothing that looks like a run, complete or partial (the features cache, .cache, is not a run).
    assert not runs_dir.exists() or [p for p in runs_dir.iterdir() if p.name != ".cache"] == []


def fake_obp_archive(path, rows=3000, seed=0):
    """An archive laid out like obp's source archive, with an OBD-format log drawn at random."""
    rng = np.random.default_rng(seed)
    log = pd.DataFrame({"timestamp": pd.date_range("2019-11-24", periods=rows, freq="min").astype(str),
                        "item_id": rng.integers(20, size=rows), "position": rng.integers(1, 4, size=rows),
                        "click": (rng.random(rows) < 0.05).astype(int), "propensity_score": 0.05,
                        **{f"user_feature_{i}": rng.choice(["aa", "bb", "cc"], rows) for i in range(4)},
                        "user-item_affinity_0": 0.0})
    items = pd.DataFrame({"item_id": range(20), "item_feature_0": rng.normal(size=20),
                          "item_feature_1": rng.choice(["x", "y"], 20)})
    with tarfile.open(path, "w:gz") as archive:
        for behavior in ("random", "bts"):
            for name, frame in ((f"obd/{behavior}/all/all.csv", log), (f"obd/{behavior}/all/item_context.csv", items)):
                data = frame.to_csv().encode()
                info = tarfile.TarInfo(f"obp-0.5.7/obp/dataset/{name}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))


#: A context of the synthetic shop, as /recommend takes it.
CONTEXT = {"device": "mobile", "daypart": "evening", "is_weekend": True, "age": 30, "gender": "female",
           "location": "urban", "traffic_source": "ads", "membership": "gold", "preferred_device": "mobile"}


def start_redis(folder: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """redis-server on loopback as .ci/run starts it (AOF, fsync on every write) with its files in ``folder``."""
    import redis

    port = port or free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "yes", "--appendfsync", "always", "--dir", str(folder)],
                              stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return server, url
        except redis.ConnectionError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"redis-server did not start on port {port}")


