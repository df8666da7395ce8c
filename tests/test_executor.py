"""Executors (in-process, local processes, Ray) give identical results; the features cache; the bench."""

import importlib.util
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.runner import run_pipeline

from conftest import REPO

GRID = {  # two seeds x three policies (a LinUCB parameter grid, and ours with PyTorch), every evaluation stage on
    "seeds": [3, 4],
    "policies": {"LinUCB": {"learning_policy": "LinUCB", "grid": {"alpha": [0.5, 2.0]}},
                 "NeuralLinear": {"learning_policy": "NeuralLinear",
                                  "params": {"warm_start_epochs": 2, "retrain_every": 400}}},
}


def results(config_path, **executor) -> tuple[pd.DataFrame, pd.DataFrame]:
    config = load_config(config_path, [f"executor.{key}={value}" for key, value in executor.items()])
    outcome = run_pipeline(config, progress=False)
    metrics = outcome.metrics.drop(columns="run").sort_values(["seed", "policy", "metric", "k"]).reset_index(drop=True)
    lists = pd.read_parquet(outcome.path / "recommendations.parquet")
    return metrics, lists.sort_values(["seed", "policy", "context_id", "rank"]).reset_index(drop=True)


@pytest.fixture
def grid_config(write_config, tiny_settings):
    return write_config({**tiny_settings, **GRID})


def test_local_processes_give_the_in_process_results(grid_config):
    metrics, lists = results(grid_config, workers=1, threads_per_task=1)
    parallel_metrics, parallel_lists = results(grid_config, workers=2, threads_per_task=1)
    pd.testing.assert_frame_equal(parallel_metrics, metrics)
    pd.testing.assert_frame_equal(parallel_lists, lists)


HAS_RAY = importlib.util.find_spec("ray") is not None


@pytest.mark.skipif(not HAS_RAY and not os.environ.get("REQUIRE_RAY_TESTS"),
                    reason="Ray is an optional install: pip install -r requirements-ray.txt (make test installs it)")
def test_ray_tasks_give_the_local_results(grid_config, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local Ray instance, started and stopped by the run
    metrics, lists = results(grid_config, workers=1, threads_per_task=1)
    ray_metrics, ray_lists = results(grid_config, kind="ray", threads_per_task=1)
    pd.testing.assert_frame_equal(ray_metrics, metrics)
    pd.testing.assert_frame_equal(ray_lists, lists)


def test_ray_missing_is_a_clear_config_error(tiny_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like to import
    with pytest.raises(ConfigError, match="requirements-ray.txt"):
        run_pipeline(load_config(tiny_config, ["executor=ray"]), progress=False)


def test_executor_shorthand_and_bad_values(tiny_config):
    assert load_config(tiny_config, ["executor=ray"]).executor.kind == "ray"
    with pytest.raises(ConfigError, match="executor.kind"):
        load_config(tiny_config, ["executor.kind=spark"])


def test_features_are_cached_per_data_and_feature_config(tiny_config, tmp_path, monkeypatch):
    import pipeline.features

    builds = []
    real = pipeline.features.build_fold_features
    monkeypatch.setattr(pipeline.features, "build_fold_features", lambda *a: builds.append(1) or real(*a))
    first = run_pipeline(load_config(tiny_config), progress=False)
    cache = tmp_path / "runs" / ".cache" / "features"
    entries = set(cache.iterdir())
    assert len(entries) == 1 and len(builds) == 1
    second = run_pipeline(load_config(tiny_config), progress=False)
    assert set(cache.iterdir()) == entries and len(builds) == 1  # read from the cache, not built again
    pd.testing.assert_frame_equal(second.metrics.drop(columns="run"), first.metrics.drop(columns="run"))
    run_pipeline(load_config(tiny_config, ["features.exclude=[age]"]), progress=False)  # another feature config
    run_pipeline(load_config(tiny_config, ["data.synthetic.base_ctr=0.08"]), progress=False)  # other data
    assert len(set(cache.iterdir())) == 3
    run_pipeline(load_config(tiny_config, ["run.cache=false"]), progress=False)
    assert len(set(cache.iterdir())) == 3


def test_bench_compares_with_plain_mab2rec_and_writes_its_table(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pipeline", "bench", "--events", "3000", "--items", "40",
                           "--output-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| total" in done.stdout and "speed-up" in done.stdout
    [summary] = json.loads((tmp_path / "bench-3000x40.json").read_text())
    assert summary["deterministic_equal"] and summary["deterministic_max_abs_diff"] <= 1e-9
    assert summary["deterministic_identical_lists"] == 1.0 and summary["sampling_same_distribution"]
    assert summary["ours_s"] > 0 and summary["mab2rec_s"] > 0 and 0 < summary["ours_peak_gb"] < 4
    compared = pd.read_csv(next(tmp_path.glob("*-bench-3000x40")) / "bench_metrics.csv")
    assert set(compared["policy"]) == {"Random", "Popularity", "LinGreedy", "LinUCB", "LinTS", "ClustersTS"}
