"""Helpers shared by test files (plain functions; fixtures live in conftest.py)."""

import io
import tarfile

import numpy as np
import pandas as pd

from pipeline.cli import main


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
